package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

// nodeFSExec runs CNI plugins the way the node's kubelet would see them:
// with the node's own directories (Config.CNINodeDirs, taken from under
// Config.Root) at their real paths, in a mount namespace of the plugin's
// own. Emulated nodes share one host file system, so a plugin that a
// DaemonSet installed through hostPath volumes (and the paths it wrote into
// the conflist) resolve to that node's files.
type nodeFSExec struct {
	invoke.Exec // FindInPath, Decode
	shim        string
	mounts      []shimMount
}

func newNodeFSExec(cfg Config, base invoke.Exec) *nodeFSExec {
	e := &nodeFSExec{Exec: base, shim: cfg.ShimPath}
	for _, d := range cfg.CNINodeDirs {
		d = filepath.Clean(d)
		e.mounts = append(e.mounts, shimMount{Source: filepath.Join(cfg.Root, d), Target: d})
	}
	return e
}

// ExecPlugin runs the plugin through the shim, with the same contract as
// invoke.RawExec: stdout is the result, a CNI error on stdout becomes the
// returned error.
func (e *nodeFSExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	var mounts []shimMount
	for _, m := range e.mounts {
		if err := os.MkdirAll(m.Source, 0o755); err != nil {
			return nil, fmt.Errorf("create node dir %s: %w", m.Source, err)
		}
		mounts = append(mounts, m)
	}
	argv, err := shimArgs(e.shim, shimSpec{Mounts: mounts}, pluginPath, nil)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = environ
	c.Stdin = bytes.NewReader(stdinData)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		var cniErr types.Error
		if json.Unmarshal(stdout.Bytes(), &cniErr) == nil && (cniErr.Code != 0 || cniErr.Msg != "") {
			return nil, &cniErr
		}
		return nil, fmt.Errorf("run cni plugin %s: %w: %s", filepath.Base(pluginPath), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}
