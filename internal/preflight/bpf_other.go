//go:build !linux

package preflight

import "errors"

func statfsMagic(string) (int64, error) { return 0, errors.ErrUnsupported }

func checkBPF() []Result {
	var rs []Result
	for _, name := range []string{"cgroup_sock_addr", "sock_ops", "sched_cls", "helpers", "tcx", "load"} {
		rs = append(rs, Result{Name: name, Status: StatusFail, Detail: "eBPF checks need Linux", Hint: "run weft check on a Linux node"})
	}
	return rs
}
