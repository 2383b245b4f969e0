package mountinfo

import (
	"strings"
	"testing"
)

func TestCgroup2RootFrom(t *testing.T) {
	tests := map[string]struct {
		in, want string
		err      bool
	}{
		"hybrid":  {in: "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", want: "/sys/fs/cgroup/unified"},
		"pure v2": {in: "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n", want: "/sys/fs/cgroup"},
		"escaped": {in: `30 23 0:26 / /mnt/my\040cg rw - cgroup2 none rw` + "\n", want: "/mnt/my cg"},
		"v1 only": {in: "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", err: true},
		"garbage": {in: "not a mountinfo line\n\n", err: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Cgroup2RootFrom(strings.NewReader(tt.in))
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("Cgroup2RootFrom() = %q, %v; want %q, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}
