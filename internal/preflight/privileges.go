package preflight

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Capability numbers (capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
)

var capNames = map[int]string{capNetAdmin: "CAP_NET_ADMIN", capSysAdmin: "CAP_SYS_ADMIN", capBPF: "CAP_BPF"}

// ParseCapEff returns the effective capability mask from the text of
// /proc/<pid>/status ("CapEff:\t000001ffffffffff").
func ParseCapEff(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
		}
		return mask, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	return 0, fmt.Errorf("read status: no CapEff line")
}

// checkPrivileges judges the effective capabilities of the process: loading
// and attaching needs CAP_BPF (implied by CAP_SYS_ADMIN, and all there is
// before Linux 5.8), tcx and sockops need CAP_NET_ADMIN, cgroup attach and
// setns need CAP_SYS_ADMIN (bpf/redirect's requirements).
func checkPrivileges(capEff uint64, euid int) Result {
	has := func(c int) bool { return capEff&(1<<c) != 0 }
	var held, missing []string
	for _, c := range []int{capBPF, capNetAdmin, capSysAdmin} {
		switch {
		case has(c):
			held = append(held, capNames[c])
		case c == capBPF && has(capSysAdmin):
			// CAP_SYS_ADMIN covers bpf(2); say so rather than fail.
			held = append(held, "CAP_BPF (via CAP_SYS_ADMIN)")
		default:
			missing = append(missing, capNames[c])
		}
	}
	r := Result{Name: "privileges"}
	if len(missing) == 0 {
		r.Status, r.Detail = StatusPass, fmt.Sprintf("uid %d, effective %s", euid, strings.Join(held, " "))
		return r
	}
	r.Status = StatusFail
	r.Detail = fmt.Sprintf("uid %d lacks %s (CapEff %#x)", euid, strings.Join(missing, " "), capEff)
	r.Hint = "run as root (sudo weft check) or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN, as the agent runs"
	return r
}

func checkPrivilegesHost() Result {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return Result{Name: "privileges", Status: StatusFail, Detail: fmt.Sprintf("open status: %v", err), Hint: "weft runs on Linux with /proc mounted"}
	}
	defer f.Close()
	capEff, err := ParseCapEff(f)
	if err != nil {
		return Result{Name: "privileges", Status: StatusFail, Detail: err.Error(), Hint: "weft runs on Linux with /proc mounted"}
	}
	return checkPrivileges(capEff, os.Geteuid())
}
