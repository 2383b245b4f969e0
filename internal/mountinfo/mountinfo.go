// Package mountinfo reads /proc/self/mountinfo: where the cgroup v2
// hierarchy is mounted (/sys/fs/cgroup on pure-v2 hosts,
// /sys/fs/cgroup/unified on hybrid ones — never hard-code it). It must not
// import any weft component.
package mountinfo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ErrNoCgroup2 means no cgroup2 file system is mounted.
var ErrNoCgroup2 = errors.New("find cgroup2 mount: none in /proc/self/mountinfo")

// Cgroup2Root returns the mount point of the (first) cgroup2 file system.
func Cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("open mountinfo: %w", err)
	}
	defer f.Close()
	return Cgroup2RootFrom(f)
}

// Cgroup2RootFrom is Cgroup2Root over a mountinfo text.
func Cgroup2RootFrom(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fsType, _, _ := strings.Cut(post, " ")
		fields := strings.Fields(pre)
		if fsType != "cgroup2" || len(fields) < 5 {
			continue
		}
		return Unescape(fields[4]), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", ErrNoCgroup2
}

// Unescape undoes mountinfo's octal escapes (\040 for a space).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
