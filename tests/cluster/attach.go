package cluster

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Attach opens a running cluster that another process owns (for the
// weft-cluster command's status and exec). Stop is not available on it.
func Attach(stateRoot, runID string) (*Cluster, error) {
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	dir := filepath.Join(clustersDir(stateRoot), runID)
	st, err := readState(dir)
	if err != nil {
		return nil, fmt.Errorf("attach cluster %s: %w", runID, err)
	}
	if !ownerAlive(dir) {
		return nil, fmt.Errorf("attach cluster %s: its owner (pid %d) is not running", runID, st.OwnerPID)
	}
	cgRoot, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	repo, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	tools, err := loadToolchain(repo)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:    Config{Name: st.Name, Nodes: len(st.Nodes), CNI: st.CNI, StateRoot: stateRoot, Log: slog.New(slog.DiscardHandler)},
		run:    &run{dir: dir, state: st},
		addr:   addressPlan{slot: st.Slot},
		tools:  tools,
		bin:    filepath.Join(repo, "bin"),
		cgroup: filepath.Join(cgRoot, cgroupParent, st.RunID),
		done:   true, // not ours to stop
	}
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("load admin kubeconfig: %w", err)
	}
	c.RestConfig = rc
	if c.Client, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, fmt.Errorf("create admin client: %w", err)
	}
	return c, nil
}
