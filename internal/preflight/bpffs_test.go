package preflight

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

// fakeStatfs serves magics by path; other paths do not exist.
func fakeStatfs(magics map[string]int64) statfsFunc {
	return func(path string) (int64, error) {
		if m, ok := magics[path]; ok {
			return m, nil
		}
		return 0, &fs.PathError{Op: "statfs", Path: path, Err: fs.ErrNotExist}
	}
}

func TestCheckBPFFS(t *testing.T) {
	const (
		sysfs = 0x62656572
		tmpfs = 0x01021994
	)
	tests := []struct {
		name, pinRoot string
		magics        map[string]int64
		statfs        statfsFunc
		want          Status
		wantDetail    string
	}{
		{
			name: "mounted", pinRoot: "/sys/fs/bpf",
			magics: map[string]int64{"/sys/fs/bpf": bpffsMagic, "/sys/fs": sysfs},
			want:   StatusPass, wantDetail: "/sys/fs/bpf is a bpffs",
		},
		{
			name: "trailing slash", pinRoot: "/sys/fs/bpf/",
			magics: map[string]int64{"/sys/fs/bpf": bpffsMagic},
			want:   StatusPass, wantDetail: "/sys/fs/bpf is a bpffs",
		},
		{
			name: "pin dir not created yet", pinRoot: "/sys/fs/bpf/weft/node-1",
			magics: map[string]int64{"/sys/fs/bpf": bpffsMagic},
			want:   StatusPass, wantDetail: "/sys/fs/bpf/weft/node-1 does not exist yet; /sys/fs/bpf is a bpffs",
		},
		{
			name: "not mounted", pinRoot: "/sys/fs/bpf",
			magics: map[string]int64{"/sys/fs/bpf": sysfs},
			want:   StatusFail, wantDetail: "/sys/fs/bpf is on sysfs (magic 0x62656572), not a bpffs",
		},
		{
			name: "missing pin dir on tmpfs", pinRoot: "/run/weft/bpf",
			magics: map[string]int64{"/run": tmpfs},
			want:   StatusFail, wantDetail: "/run/weft/bpf does not exist yet; /run is on tmpfs (magic 0x1021994), not a bpffs",
		},
		{
			name: "unknown filesystem", pinRoot: "/x",
			magics: map[string]int64{"/x": 0x1234},
			want:   StatusFail, wantDetail: "/x is on an unknown filesystem (magic 0x1234), not a bpffs",
		},
		{
			name: "statfs error", pinRoot: "/secret",
			statfs: func(string) (int64, error) { return 0, fmt.Errorf("permission denied") },
			want:   StatusFail, wantDetail: "statfs /secret: permission denied",
		},
		{
			name: "nothing exists", pinRoot: "/a/b",
			want: StatusFail, wantDetail: "statfs /: statfs /: file does not exist",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			statfs := tt.statfs
			if statfs == nil {
				statfs = fakeStatfs(tt.magics)
			}
			got := checkBPFFS(tt.pinRoot, statfs)
			if got.Name != "bpffs" || got.Status != tt.want || got.Detail != tt.wantDetail {
				t.Errorf("checkBPFFS(%q) = %+v; want status %s, detail %q", tt.pinRoot, got, tt.want, tt.wantDetail)
			}
			if (got.Hint == "") != (tt.want == StatusPass) || got.Hint != "" && !strings.Contains(got.Hint, "mount -t bpf bpf "+tt.pinRoot+")") {
				t.Errorf("checkBPFFS(%q) hint = %q; want a hint to mount the pin root exactly when not passing", tt.pinRoot, got.Hint)
			}
		})
	}
}
