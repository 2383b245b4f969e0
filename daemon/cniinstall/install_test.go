package cniinstall

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestInstallChainsAndUninstalls(t *testing.T) {
	dir := t.TempDir()
	conf, bin := filepath.Join(dir, "net.d"), filepath.Join(dir, "bin")
	os.MkdirAll(conf, 0o755)
	primary := `{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local"}}]}`
	os.WriteFile(filepath.Join(conf, "10-pods.conflist"), []byte(primary), 0o644)
	os.WriteFile(filepath.Join(conf, "99-other.conflist"), []byte(primary), 0o644)
	os.WriteFile(filepath.Join(dir, "weft-cni"), []byte("#!binary"), 0o755)
	os.WriteFile(filepath.Join(dir, "token"), []byte("tok123\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("CA"), 0o644)
	cfg := Config{ConfDir: conf, BinDir: bin, Binary: filepath.Join(dir, "weft-cni"),
		HostSocket: "/var/run/weft/cni.sock", HostKubeconfig: "/etc/cni/net.d/weft-cni.kubeconfig",
		TokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "ca.crt"), APIServer: "https://10.96.0.1:443",
		Every: time.Hour}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- Run(ctx, cfg, discard()) }()
	var plugins []map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var c struct{ Plugins []map[string]any }
		data, _ := os.ReadFile(filepath.Join(conf, "10-pods.conflist"))
		if json.Unmarshal(data, &c) == nil && len(c.Plugins) == 2 {
			plugins = c.Plugins
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(plugins) != 2 || plugins[0]["type"] != "bridge" || plugins[1]["type"] != PluginType || plugins[1]["agentSocket"] != cfg.HostSocket {
		t.Fatalf("chained conflist plugins = %v", plugins)
	}
	if ipam, _ := plugins[0]["ipam"].(map[string]any); ipam["type"] != "host-local" {
		t.Errorf("primary plugin's config was not kept: %v", plugins[0])
	}
	if other, _ := os.ReadFile(filepath.Join(conf, "99-other.conflist")); string(other) != primary {
		t.Errorf("a conflist the runtime does not use was edited")
	}
	if b, err := os.ReadFile(filepath.Join(bin, PluginType)); err != nil || string(b) != "#!binary" {
		t.Errorf("binary not installed: %v", err)
	}
	var kc struct {
		Users []struct{ User struct{ Token string } }
	}
	data, _ := os.ReadFile(filepath.Join(conf, "weft-cni.kubeconfig"))
	if err := json.Unmarshal(data, &kc); err != nil || len(kc.Users) != 1 || kc.Users[0].User.Token != "tok123" {
		t.Errorf("kubeconfig = %s (%v)", data, err)
	}
	// Idempotent: a second pass changes nothing.
	if changed, err := ensureChained(cfg); err != nil || changed {
		t.Errorf("second ensureChained = %v, %v; want no change", changed, err)
	}
	if err := Uninstall(cfg); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(conf, "10-pods.conflist")); json.Valid(data) {
		var c struct{ Plugins []map[string]any }
		json.Unmarshal(data, &c)
		if len(c.Plugins) != 1 || c.Plugins[0]["type"] != "bridge" {
			t.Errorf("after uninstall plugins = %v", c.Plugins)
		}
	}
	for _, p := range []string{filepath.Join(conf, "weft-cni.kubeconfig"), filepath.Join(bin, PluginType)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after uninstall", p)
		}
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestNoConflist(t *testing.T) {
	if _, err := primaryConflist(t.TempDir()); err == nil {
		t.Fatal("primaryConflist of an empty dir: no error")
	}
}
