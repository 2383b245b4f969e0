package preflight

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseKernelRelease(t *testing.T) {
	tests := []struct {
		name, release string
		want          KernelVersion
		wantErr       bool
	}{
		{name: "this machine", release: "6.18.44-fc-v1045", want: KernelVersion{6, 18, 44}},
		{name: "debian", release: "5.10.0-21-amd64", want: KernelVersion{5, 10, 0}},
		{name: "trailing newline", release: "6.6.7\n", want: KernelVersion{6, 6, 7}},
		{name: "no patch", release: "6.1", want: KernelVersion{6, 1, 0}},
		{name: "release candidate", release: "6.9.0-rc1+", want: KernelVersion{6, 9, 0}},
		{name: "no patch with suffix", release: "6.6-arch1", want: KernelVersion{6, 6, 0}},
		{name: "four parts", release: "4.19.0.1", want: KernelVersion{4, 19, 0}},
		{name: "major only", release: "6", wantErr: true},
		{name: "empty", release: "", wantErr: true},
		{name: "garbage", release: "linux", wantErr: true},
		{name: "overflow", release: "99999999999999999999.1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKernelRelease(tt.release)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseKernelRelease(%q) = %v, %v; want %v, error %v", tt.release, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCheckKernel(t *testing.T) {
	tests := []struct {
		name, release string
		want          Status
		wantDetail    string
	}{
		{name: "this machine", release: "6.18.44-fc-v1045\n", want: StatusPass, wantDetail: "kernel 6.18.44-fc-v1045"},
		{name: "tcx minimum", release: "6.6.0", want: StatusPass, wantDetail: "kernel 6.6.0"},
		{name: "below tcx", release: "6.5.13", want: StatusWarn, wantDetail: "kernel 6.5.13 is older than 6.6 (tcx)"},
		{name: "minimum", release: "5.10.0-21-amd64", want: StatusWarn, wantDetail: "kernel 5.10.0-21-amd64 is older than 6.6 (tcx)"},
		{name: "below minimum", release: "5.4.0-150-generic", want: StatusFail, wantDetail: "kernel 5.4.0-150-generic is older than 5.10"},
		{name: "old major, big minor", release: "4.19.300", want: StatusFail, wantDetail: "kernel 4.19.300 is older than 5.10"},
		{name: "unparsable", release: "linux", want: StatusFail, wantDetail: `parse kernel release "linux": want major.minor`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkKernel(tt.release)
			if got.Name != "kernel" || got.Status != tt.want || got.Detail != tt.wantDetail {
				t.Errorf("checkKernel(%q) = %+v; want status %s, detail %q", tt.release, got, tt.want, tt.wantDetail)
			}
			if (got.Hint == "") != (tt.want == StatusPass) {
				t.Errorf("checkKernel(%q) hint = %q; want a hint exactly when not passing", tt.release, got.Hint)
			}
		})
	}
}

func TestCheckBTF(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(full, make([]byte, 3<<19), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       Status
		wantDetail string
	}{
		{name: "present", path: full, want: StatusPass, wantDetail: full + " (1.5 MiB)"},
		{name: "empty", path: empty, want: StatusFail, wantDetail: empty + " is not a BTF file (mode -rw-------, 0 bytes)"},
		{name: "directory", path: dir, want: StatusFail},
		{name: "missing", path: filepath.Join(dir, "nope"), want: StatusFail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkBTF(tt.path)
			if got.Status != tt.want || tt.wantDetail != "" && got.Detail != tt.wantDetail {
				t.Errorf("checkBTF(%q) = %+v; want status %s, detail %q", tt.path, got, tt.want, tt.wantDetail)
			}
		})
	}
}
