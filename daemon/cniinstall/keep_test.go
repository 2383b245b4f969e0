package cniinstall

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// node is a node's CNI dirs with a primary CNI's conflist in them.
type node struct {
	dir, conf, bin, conflist, primary string
	cfg                               Config
}

func newNode(t *testing.T) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{dir: dir, conf: filepath.Join(dir, "net.d"), bin: filepath.Join(dir, "bin")}
	n.conflist = filepath.Join(n.conf, "10-pods.conflist")
	n.primary = `{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"ptp","ipam":{"type":"host-local"}}]}`
	mustWrite(t, n.conflist, n.primary, 0o644)
	mustWrite(t, filepath.Join(dir, "weft-cni"), "#!binary", 0o755)
	mustWrite(t, filepath.Join(dir, "token"), "tok1\n", 0o600)
	mustWrite(t, filepath.Join(dir, "ca.crt"), "CA", 0o644)
	n.cfg = Config{ConfDir: n.conf, BinDir: n.bin, Binary: filepath.Join(dir, "weft-cni"),
		HostSocket: "/var/run/weft/cni.sock", HostKubeconfig: "/etc/cni/net.d/weft-cni.kubeconfig",
		TokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "ca.crt"), APIServer: "https://10.96.0.1:443",
		Every: time.Hour}
	return n
}

func mustWrite(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func (n *node) chained() bool {
	var c struct{ Plugins []map[string]any }
	data, _ := os.ReadFile(n.conflist)
	if json.Unmarshal(data, &c) != nil {
		return false
	}
	for _, p := range c.Plugins {
		if p["type"] == PluginType {
			return true
		}
	}
	return false
}

func (n *node) token() string {
	var kc struct {
		Users []struct{ User struct{ Token string } }
	}
	data, _ := os.ReadFile(filepath.Join(n.conf, "weft-cni.kubeconfig"))
	if json.Unmarshal(data, &kc) != nil || len(kc.Users) != 1 {
		return ""
	}
	return kc.Users[0].User.Token
}

// start runs f until the test ends (or stop is called) and fails the test
// on its error.
func start(t *testing.T, f func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("installer: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestRunRechainsWhenThePrimaryRewrites: the primary CNI rewriting its
// conflist (atomically, or in place) drops weft-cni; the conf dir watch puts
// it back at once, long before the hourly re-check.
func TestRunRechainsWhenThePrimaryRewrites(t *testing.T) {
	n := newNode(t)
	start(t, func(ctx context.Context) error { return Run(ctx, n.cfg, discard()) })
	waitFor(t, "weft-cni chained", n.chained)

	// Our own writes do not feed the watch back: the files settle.
	conflistIno, kubeconfigIno := inode(t, n.conflist), inode(t, filepath.Join(n.conf, "weft-cni.kubeconfig"))
	<-time.After(300 * time.Millisecond)
	if a, b := inode(t, n.conflist), inode(t, filepath.Join(n.conf, "weft-cni.kubeconfig")); a != conflistIno || b != kubeconfigIno {
		t.Errorf("installer keeps rewriting its own files (conflist inode %d→%d, kubeconfig %d→%d)", conflistIno, a, kubeconfigIno, b)
	}

	tmp := filepath.Join(n.conf, ".tmp")
	mustWrite(t, tmp, n.primary, 0o644)
	if err := os.Rename(tmp, n.conflist); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "weft-cni re-chained after an atomic rewrite", n.chained)

	mustWrite(t, n.conflist, n.primary, 0o644) // truncate and write in place
	waitFor(t, "weft-cni re-chained after an in-place rewrite", n.chained)

	if err := os.Remove(n.conflist); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, n.conflist, n.primary, 0o644)
	waitFor(t, "weft-cni re-chained after the conflist was removed and recreated", n.chained)
}

func TestRunRefreshesTheToken(t *testing.T) {
	n := newNode(t)
	n.cfg.Every = 20 * time.Millisecond
	start(t, func(ctx context.Context) error { return Run(ctx, n.cfg, discard()) })
	waitFor(t, "kubeconfig with the first token", func() bool { return n.token() == "tok1" })
	mustWrite(t, filepath.Join(n.dir, "token"), "tok2\n", 0o600) // the kubelet rotated it
	waitFor(t, "kubeconfig with the rotated token", func() bool { return n.token() == "tok2" })
}

func TestKeep(t *testing.T) {
	tests := map[string]struct {
		uninstalling bool
		wantChained  bool
	}{
		"upgrade or restart keeps the entry": {uninstalling: false, wantChained: true},
		"uninstall removes the entry":        {uninstalling: true, wantChained: false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			n := newNode(t)
			// Unix socket paths are short: not under t.TempDir().
			sockDir, err := os.MkdirTemp("", "weft-cni-keep")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(sockDir) })
			n.cfg.AgentSocket = filepath.Join(sockDir, "cni.sock")
			asked := make(chan struct{}, 1)
			stop := start(t, func(ctx context.Context) error {
				return Keep(ctx, n.cfg, func(ctx context.Context) bool {
					if ctx.Err() != nil {
						t.Errorf("uninstalling called with an ended context")
					}
					asked <- struct{}{}
					return tt.uninstalling
				}, discard())
			})
			<-time.After(300 * time.Millisecond)
			if n.chained() {
				t.Fatal("weft-cni chained before the agent's socket accepts connections")
			}
			l, err := net.Listen("unix", n.cfg.AgentSocket)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			waitFor(t, "weft-cni chained once the agent listens", n.chained)
			stop()
			select {
			case <-asked:
			default:
				t.Fatal("Keep stopped without asking whether this is an uninstall")
			}
			if got := n.chained(); got != tt.wantChained {
				t.Errorf("after stop, weft-cni chained = %v, want %v", got, tt.wantChained)
			}
			_, err = os.Stat(filepath.Join(n.bin, PluginType))
			if binThere := err == nil; binThere != tt.wantChained {
				t.Errorf("after stop, binary installed = %v, want %v", binThere, tt.wantChained)
			}
			if conf, _ := os.ReadFile(n.conflist); !strings.Contains(string(conf), `"ptp"`) {
				t.Errorf("primary plugin lost: %s", conf)
			}
		})
	}
}
