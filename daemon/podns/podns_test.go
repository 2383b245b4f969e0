package podns

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func writeProc(t *testing.T, root string, pid, cgroup, stat string) {
	t.Helper()
	dir := filepath.Join(root, pid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644)
	os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644)
}

func stat(pid, comm string, start string) string {
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime priority nice threads itreal starttime …
	return pid + " (" + comm + ") S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 " + start + " 0 0\n"
}

func TestScan(t *testing.T) {
	root := t.TempDir()
	const a = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	const b = "11111111-2222-3333-4444-555555555555"
	writeProc(t, root, "100", "0::/weft/x/node0/kubepods/pod"+a+"/app/1\n", stat("100", "app", "500"))
	writeProc(t, root, "90", "0::/weft/x/node0/kubepods/pod"+a+"/sidecar/1\n", stat("90", "my (odd) name", "400"))
	writeProc(t, root, "200", "12:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice/cri-containerd-x.scope\n0::/\n", stat("200", "nginx", "700"))
	writeProc(t, root, "300", "0::/user.slice\n", stat("300", "bash", "1"))
	writeProc(t, root, "self", "0::/\n", "")

	got, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Process{a: {PID: 90, StartTime: 400}, b: {PID: 200, StartTime: 700}}
	if len(got) != len(want) {
		t.Fatalf("Scan = %v, want %v", got, want)
	}
	for uid, p := range want {
		if got[uid] != p {
			t.Errorf("Scan[%s] = %+v, want %+v", uid, got[uid], p)
		}
	}
}

// TestListeningTCPPorts reads this test process's own namespace.
func TestListeningTCPPorts(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	ports, err := ListeningTCPPorts("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !ports[port] {
		t.Errorf("ListeningTCPPorts misses our listener on %d: %v", port, ports)
	}
}
