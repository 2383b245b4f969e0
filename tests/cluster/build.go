package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// RepoRoot finds the weft checkout: $WEFT_REPO, else the nearest directory
// above the working directory or the executable whose go.mod is weft's.
func RepoRoot() (string, error) {
	if r := os.Getenv("WEFT_REPO"); r != "" {
		return r, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for d := dir; ; d = filepath.Dir(d) {
			data, err := os.ReadFile(filepath.Join(d, "go.mod"))
			if err == nil && strings.HasPrefix(string(data), "module github.com/weftmesh/weft\n") {
				return d, nil
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return "", errors.New("find weft repository: no go.mod of github.com/weftmesh/weft above the working directory (set WEFT_REPO)")
}

// toolchain locates the binaries hack/tools.sh builds and caches by version.
type toolchain struct {
	repo     string
	versions map[string]string
	cache    string
}

func loadToolchain(repo string) (*toolchain, error) {
	f, err := os.Open(filepath.Join(repo, "hack", "versions.env"))
	if err != nil {
		return nil, fmt.Errorf("read tool versions: %w", err)
	}
	defer f.Close()
	t := &toolchain{repo: repo, versions: map[string]string{}, cache: filepath.Join(repo, ".cache", "bin")}
	if c := os.Getenv("WEFT_CACHE"); c != "" {
		t.cache = filepath.Join(c, "bin")
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			t.versions[k] = v
		}
	}
	return t, sc.Err()
}

var toolBuild sync.Mutex // one hack/tools.sh at a time per process

// path returns the cached binary of a tool, building it with hack/tools.sh
// when the cache is cold.
func (t *toolchain) path(part, versionKey, dirName, binary string) (string, error) {
	v, ok := t.versions[versionKey]
	if !ok {
		return "", fmt.Errorf("tool version %s missing from hack/versions.env", versionKey)
	}
	dir := filepath.Join(t.cache, dirName+"-"+v)
	if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
		toolBuild.Lock()
		defer toolBuild.Unlock()
		if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
			cmd := exec.Command("bash", filepath.Join(t.repo, "hack", "tools.sh"), part)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				return "", fmt.Errorf("build %s %s with hack/tools.sh: %w", part, v, err)
			}
		}
	}
	return filepath.Join(dir, binary), nil
}

func (t *toolchain) kube(binary string) (string, error) {
	return t.path("k8s", "KUBERNETES_VERSION", "kubernetes", binary)
}
func (t *toolchain) etcd() (string, error) { return t.path("etcd", "ETCD_VERSION", "etcd", "etcd") }
func (t *toolchain) coredns() (string, error) {
	return t.path("coredns", "COREDNS_VERSION", "coredns", "coredns")
}
func (t *toolchain) cniDir() (string, error) {
	p, err := t.path("cni", "CNI_PLUGINS_VERSION", "cni", "bridge")
	return filepath.Dir(p), err
}

var (
	buildOnce sync.Once
	buildErr  error
)

// buildHarnessBinaries builds weft's binaries, the node emulator and the
// test apps into <repo>/bin once per process, so tests always run the code they were
// compiled with (the Go build cache makes a warm build take about a second).
func buildHarnessBinaries(repo string) (string, error) {
	bin := filepath.Join(repo, "bin")
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/...", "./tests/cmd/...")
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build harness binaries: %w\n%s", err, out)
		}
	})
	return bin, buildErr
}
