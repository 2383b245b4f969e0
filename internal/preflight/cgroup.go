package preflight

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/<pid>/mountinfo (proc(5)). It is a plain value.
type Mount struct {
	Root       string // the path within the filesystem that forms this mount's root
	MountPoint string
	FSType     string
	Source     string
}

// ParseMountinfo parses mountinfo text. Lines it cannot parse are skipped.
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime [optional…] - cgroup2 cgroup2 rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 1 {
			continue
		}
		m := Mount{Root: unescapeOctal(fields[3]), MountPoint: unescapeOctal(fields[4]), FSType: tail[0]}
		if len(tail) > 1 {
			m.Source = unescapeOctal(tail[1])
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeOctal undoes mountinfo's \ooo escapes (space, tab, newline, \).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkCgroup2 finds the cgroup v2 mount the outbound programs attach to
// (the first, as bpf/redirect.Cgroup2Root picks) and names the layout:
// "hybrid" when cgroup v1 hierarchies are mounted too, else "unified".
func checkCgroup2(mounts []Mount) Result {
	r := Result{Name: "cgroup2"}
	var v2 *Mount
	v1 := 0
	for i := range mounts {
		switch mounts[i].FSType {
		case "cgroup2":
			if v2 == nil {
				v2 = &mounts[i]
			}
		case "cgroup":
			v1++
		}
	}
	if v2 == nil {
		r.Status, r.Detail = StatusFail, fmt.Sprintf("no cgroup2 mount in mountinfo (%d cgroup v1 mounts)", v1)
		r.Hint = "mount cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy=1"
		return r
	}
	layout := "unified host"
	if v1 > 0 {
		layout = "hybrid host"
	}
	if v2.Root != "/" {
		r.Status = StatusWarn
		r.Detail = fmt.Sprintf("cgroup2 at %s (%s) shows cgroup %s, not the root", v2.MountPoint, layout, v2.Root)
		r.Hint = "programs attached there see only that subtree: run weft check (and the agent) in the host's cgroup namespace"
		return r
	}
	r.Status, r.Detail = StatusPass, fmt.Sprintf("cgroup2 at %s (%s)", v2.MountPoint, layout)
	return r
}

func checkCgroup2Host() Result {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Result{Name: "cgroup2", Status: StatusFail, Detail: fmt.Sprintf("open mountinfo: %v", err), Hint: "weft runs on Linux with /proc mounted"}
	}
	defer f.Close()
	mounts, err := ParseMountinfo(f)
	if err != nil {
		return Result{Name: "cgroup2", Status: StatusFail, Detail: err.Error(), Hint: "weft runs on Linux with /proc mounted"}
	}
	return checkCgroup2(mounts)
}
