package preflight

import (
	"strings"
	"testing"
)

// mountinfo of this machine (a hybrid host), trimmed.
const hybridMountinfo = `23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
46 23 0:40 / /sys/fs/bpf rw,relatime - bpf bpf rw,mode=700
`

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name, in string
		want     []Mount
	}{
		{
			name: "optional fields",
			in:   "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate\n",
			want: []Mount{{Root: "/", MountPoint: "/sys/fs/cgroup", FSType: "cgroup2", Source: "cgroup2"}},
		},
		{
			name: "escapes",
			in:   `30 24 0:26 /a\134b /mnt/cg\040two\011x rw - cgroup2 my\040src rw` + "\n",
			want: []Mount{{Root: `/a\b`, MountPoint: "/mnt/cg two\tx", FSType: "cgroup2", Source: "my src"}},
		},
		{
			name: "bad escape kept",
			in:   `30 24 0:26 / /mnt/a\9 rw - tmpfs t rw` + "\n",
			want: []Mount{{Root: "/", MountPoint: `/mnt/a\9`, FSType: "tmpfs", Source: "t"}},
		},
		{
			name: "garbage lines skipped",
			in:   "nonsense\n1 2 3 - x\n\n46 23 0:40 / /sys/fs/bpf rw - bpf bpf rw\n",
			want: []Mount{{Root: "/", MountPoint: "/sys/fs/bpf", FSType: "bpf", Source: "bpf"}},
		},
		{name: "empty", in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMountinfo(strings.NewReader(tt.in))
			if err != nil || !equalMounts(got, tt.want) {
				t.Errorf("ParseMountinfo(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func equalMounts(a, b []Mount) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCheckCgroup2(t *testing.T) {
	tests := []struct {
		name, mountinfo string
		want            Status
		wantDetail      string
	}{
		{
			name: "hybrid", mountinfo: hybridMountinfo,
			want: StatusPass, wantDetail: "cgroup2 at /sys/fs/cgroup/unified (hybrid host)",
		},
		{
			name:      "unified",
			mountinfo: "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
			want:      StatusPass, wantDetail: "cgroup2 at /sys/fs/cgroup (unified host)",
		},
		{
			name: "first cgroup2 mount wins",
			mountinfo: "30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n" +
				"90 24 0:26 / /run/other rw - cgroup2 cgroup2 rw\n",
			want: StatusPass, wantDetail: "cgroup2 at /sys/fs/cgroup (unified host)",
		},
		{
			name:      "v1 only",
			mountinfo: "33 25 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
			want:      StatusFail, wantDetail: "no cgroup2 mount in mountinfo (1 cgroup v1 mounts)",
		},
		{
			name:      "subtree mount",
			mountinfo: "30 24 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			want:      StatusWarn, wantDetail: "cgroup2 at /sys/fs/cgroup (unified host) shows cgroup /kubepods/pod1, not the root",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts, err := ParseMountinfo(strings.NewReader(tt.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			got := checkCgroup2(mounts)
			if got.Name != "cgroup2" || got.Status != tt.want || got.Detail != tt.wantDetail {
				t.Errorf("checkCgroup2(%q) = %+v; want status %s, detail %q", tt.mountinfo, got, tt.want, tt.wantDetail)
			}
			if (got.Hint == "") != (tt.want == StatusPass) {
				t.Errorf("checkCgroup2 hint = %q; want a hint exactly when not passing", got.Hint)
			}
		})
	}
}
