// Package cniinstall puts weft's chained CNI plugin on a node, as Istio's
// install-cni does: it copies the weft-cni binary into the node's CNI bin
// dir, appends weft-cni to the primary network's conflist (keeping everything
// else of it), and keeps a kubeconfig for the plugin — holding the current
// ServiceAccount token of the pod it runs in — fresh. It watches the CNI conf
// dir, so that when the primary CNI rewrites its conflist (its own agent
// restarting, an upgrade) weft-cni is chained again at once.
//
// Keep is the long-running installer (weft-cni install, a container of the
// chart's weft-agent pod): the plugin entry is left in place when it stops
// for anything but an uninstall, so new pods of enrolled namespaces fail
// closed while the agent is away instead of starting unmeshed; on an
// uninstall it removes the entry, the kubeconfig and the binary. Run is the
// installer without that (weft-agent --cni-install); Uninstall (weft-agent
// --cleanup) removes the installation.
//
// The package must not import other weft components, nor a Kubernetes
// client: it only edits files.
package cniinstall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// PluginType is weft-cni's "type" in a conflist.
const PluginType = "weft-cni"

// Config says where the node's CNI files are, as this process sees them
// (ConfDir, BinDir) and as the node's runtime will (the Host* paths written
// into the conflist and kubeconfig).
type Config struct {
	ConfDir, BinDir string
	// Binary is the weft-cni executable to install.
	Binary string
	// HostSocket and HostKubeconfig are the plugin's agent socket and
	// kubeconfig paths on the node.
	HostSocket, HostKubeconfig string
	FailOpen                   bool
	// TokenFile and CAFile are this pod's ServiceAccount credentials; APIServer
	// is the URL the plugin uses (from KUBERNETES_SERVICE_HOST/PORT).
	TokenFile, CAFile, APIServer string
	// Every is how often the conflist entry and token are re-checked
	// besides on each change in ConfDir (default 30s).
	Every time.Duration
	// AgentSocket, for Keep, is the agent's CNI socket as this process
	// sees it: weft-cni is chained only once it accepts connections, so a
	// first install does not hold back every new pod of the node until an
	// agent is running. Empty: chain at once.
	AgentSocket string
}

// Run installs, then keeps the installation current until ctx ends: on every
// change in cfg.ConfDir and every cfg.Every it re-chains weft-cni into the
// primary conflist and rewrites the kubeconfig when the token changed.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.Every == 0 {
		cfg.Every = 30 * time.Second
	}
	if err := installBinary(cfg); err != nil {
		return err
	}
	// Watch before the first pass: a rewrite during it is not missed.
	changes, stop, err := watchDir(cfg.ConfDir)
	if err != nil {
		log.Warn("watch the CNI conf dir; re-checking it only every interval", "confDir", cfg.ConfDir, "every", cfg.Every, "err", err)
	}
	defer stop()
	timer := time.NewTimer(cfg.Every)
	defer timer.Stop()
	for {
		if changed, err := writeKubeconfig(cfg); err != nil {
			log.Warn("refresh cni kubeconfig", "err", err)
		} else if changed {
			log.Debug("wrote cni kubeconfig", "path", filepath.Join(cfg.ConfDir, filepath.Base(cfg.HostKubeconfig)))
		}
		changed, err := ensureChained(cfg)
		if err != nil {
			log.Warn("chain weft-cni", "err", err)
		} else if changed {
			log.Info("chained weft-cni into the node's CNI config", "confDir", cfg.ConfDir)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-changes:
			// A writer that is not atomic may be mid-write: let it finish
			// (a partial file only costs one more pass).
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
			drain(changes)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(cfg.Every)
	}
}

func drain(c <-chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// Keep is the long-running installer: it waits for cfg.AgentSocket, then
// Run; when ctx ends it asks uninstalling and removes the installation
// only when that reports true — on any other stop (an upgrade, a restart,
// a drain) weft-cni stays chained. uninstalling gets a context of its own,
// as ctx has ended by then.
func Keep(ctx context.Context, cfg Config, uninstalling func(context.Context) bool, log *slog.Logger) error {
	runErr := func() error {
		if cfg.AgentSocket != "" {
			if err := waitForSocket(ctx, cfg.AgentSocket, log); err != nil || ctx.Err() != nil {
				return err
			}
		}
		return Run(ctx, cfg, log)
	}()
	if !uninstalling(context.WithoutCancel(ctx)) {
		log.Info("not an uninstall: leaving weft-cni chained", "confDir", cfg.ConfDir)
		return runErr
	}
	if err := Uninstall(cfg); err != nil {
		return errors.Join(runErr, fmt.Errorf("uninstall weft-cni: %w", err))
	}
	log.Info("uninstall: removed weft-cni from the node's CNI config", "confDir", cfg.ConfDir)
	return runErr
}

// waitForSocket returns once path accepts a connection, or ctx ends.
func waitForSocket(ctx context.Context, path string, log *slog.Logger) error {
	var d net.Dialer
	logged := time.Time{}
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "unix", path)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if time.Since(logged) > 30*time.Second {
			log.Info("waiting for the agent's CNI socket before chaining weft-cni", "socket", path, "err", err)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Uninstall removes weft-cni from the conflist, its kubeconfig and binary.
func Uninstall(cfg Config) error {
	var errs []error
	if path, err := primaryConflist(cfg.ConfDir); err == nil {
		if err := editConflist(path, func(plugins []any) ([]any, bool) {
			out := plugins[:0]
			for _, p := range plugins {
				if !isWeft(p) {
					out = append(out, p)
				}
			}
			return out, len(out) != len(plugins)
		}); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range []string{filepath.Join(cfg.ConfDir, filepath.Base(cfg.HostKubeconfig)), filepath.Join(cfg.BinDir, PluginType)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func installBinary(cfg Config) error {
	src, err := os.Open(cfg.Binary)
	if err != nil {
		return fmt.Errorf("install weft-cni: %w", err)
	}
	defer src.Close()
	if err := os.MkdirAll(cfg.BinDir, 0o755); err != nil {
		return fmt.Errorf("install weft-cni: %w", err)
	}
	dst := filepath.Join(cfg.BinDir, PluginType)
	tmp, err := os.CreateTemp(cfg.BinDir, ".weft-cni-*")
	if err != nil {
		return fmt.Errorf("install weft-cni: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("install weft-cni: copy: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("install weft-cni: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install weft-cni: %w", err)
	}
	// Rename: a runtime executing the old binary keeps its inode.
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install weft-cni: %w", err)
	}
	return nil
}

// writeKubeconfig writes the plugin's kubeconfig with the current token,
// only when it differs from the file there; it reports whether it wrote.
func writeKubeconfig(cfg Config) (bool, error) {
	token, err := os.ReadFile(cfg.TokenFile)
	if err != nil {
		return false, fmt.Errorf("read service account token: %w", err)
	}
	ca, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return false, fmt.Errorf("read service account ca: %w", err)
	}
	kc := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "weft-cni",
		"clusters": []any{map[string]any{"name": "local", "cluster": map[string]any{
			"server": cfg.APIServer, "certificate-authority-data": ca,
		}}},
		"users":    []any{map[string]any{"name": "weft-cni", "user": map[string]any{"token": strings.TrimSpace(string(token))}}},
		"contexts": []any{map[string]any{"name": "weft-cni", "context": map[string]any{"cluster": "local", "user": "weft-cni"}}},
	}
	data, err := json.MarshalIndent(kc, "", "  ")
	if err != nil {
		return false, err
	}
	path := filepath.Join(cfg.ConfDir, filepath.Base(cfg.HostKubeconfig))
	// Unchanged: no write, so the conf dir watch does not see our own edit.
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	return true, writeAtomic(path, data, 0o600)
}

// ensureChained appends weft-cni to the primary conflist, or updates its
// entry; it reports whether the file changed.
func ensureChained(cfg Config) (bool, error) {
	path, err := primaryConflist(cfg.ConfDir)
	if err != nil {
		return false, err
	}
	entry := map[string]any{
		"type": PluginType, "agentSocket": cfg.HostSocket, "kubeconfig": cfg.HostKubeconfig, "failOpen": cfg.FailOpen,
	}
	changed := false
	err = editConflist(path, func(plugins []any) ([]any, bool) {
		for i, p := range plugins {
			if isWeft(p) {
				old, _ := json.Marshal(p)
				now, _ := json.Marshal(entry)
				if !bytes.Equal(old, now) {
					plugins[i], changed = entry, true
				}
				return plugins, changed
			}
		}
		changed = true
		return append(plugins, entry), true
	})
	return changed, err
}

func isWeft(p any) bool {
	m, ok := p.(map[string]any)
	return ok && m["type"] == PluginType
}

// primaryConflist is the file the runtime uses: the first *.conflist in
// lexical order.
func primaryConflist(dir string) (string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "*.conflist"))
	if err != nil {
		return "", err
	}
	sort.Strings(matches)
	if len(matches) == 0 {
		return "", fmt.Errorf("find the node's CNI config: no *.conflist in %s (is the primary CNI installed?)", dir)
	}
	return matches[0], nil
}

func editConflist(path string, edit func([]any) ([]any, bool)) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	plugins, ok := conf["plugins"].([]any)
	if !ok {
		return fmt.Errorf("parse %s: no plugins list", path)
	}
	plugins, changed := edit(plugins)
	if !changed {
		return nil
	}
	conf["plugins"] = plugins
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, out, 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp.Chmod(mode)
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// APIServerFromEnv is the in-cluster API URL, as client-go builds it.
func APIServerFromEnv() string {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return ""
	}
	return "https://" + net.JoinHostPort(host, port)
}
