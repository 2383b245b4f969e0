package install

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.yaml from the chart")

const (
	chart       = "helm/weft"
	kubeVersion = "1.36.0" // the chart requires >=1.30; helm template assumes 1.20 otherwise
	namespace   = "weft-system"
)

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm is the helm binary hack/tools.sh caches under .cache/bin (or
// $WEFT_CACHE/bin) for hack/versions.env's HELM_VERSION, built when cold,
// as tests/cluster finds it.
func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		repo, err := filepath.Abs("..")
		if err != nil {
			helmErr = err
			return
		}
		version, err := toolVersion(filepath.Join(repo, "hack", "versions.env"), "HELM_VERSION")
		if err != nil {
			helmErr = err
			return
		}
		cache := filepath.Join(repo, ".cache")
		if c := os.Getenv("WEFT_CACHE"); c != "" {
			cache = c
		}
		dir := filepath.Join(cache, "bin", "helm-"+version)
		if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
			cmd := exec.Command("bash", filepath.Join(repo, "hack", "tools.sh"), "helm")
			if out, err := cmd.CombinedOutput(); err != nil {
				helmErr = fmt.Errorf("build helm %s with hack/tools.sh: %w\n%s", version, err, out)
				return
			}
		}
		helmPath = filepath.Join(dir, "helm")
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

func toolVersion(path, key string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read tool versions: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s missing from %s", key, path)
}

// runHelm runs helm with args and returns its stdout, and its stderr as
// the error's text on failure.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func template(t *testing.T, set ...string) (string, error) {
	t.Helper()
	args := []string{"template", "weft", chart, "-n", namespace, "--kube-version", kubeVersion}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return runHelm(t, args...)
}

// generated is what differs on every render: the file-mode CA the chart
// generates when its Secret does not exist.
var generated = regexp.MustCompile(`(?m)^(  ca\.(crt|key): ).+$`)

var goldens = []struct {
	name string
	set  []string
}{
	{name: "default"},
	{name: "operator-disabled", set: []string{"operator.enabled=false"}},
	{name: "cni-disabled", set: []string{"cni.enabled=false"}},
}

// TestTemplateGolden: what the chart installs, for the default values and
// the two switches that change the most, is exactly testdata/<name>.yaml.
// A change of the chart shows up as a diff of what it installs.
func TestTemplateGolden(t *testing.T) {
	for _, tt := range goldens {
		t.Run(tt.name, func(t *testing.T) {
			out, err := template(t, tt.set...)
			if err != nil {
				t.Fatal(err)
			}
			out = generated.ReplaceAllString(out, "${1}<generated at install>")
			golden := filepath.Join("testdata", tt.name+".yaml")
			if *update {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./install -update writes it)", err)
			}
			if out != string(want) {
				t.Errorf("helm template --set %v differs from %s (go test ./install -update rewrites it):\n%s", tt.set, golden, lineDiff(string(want), out))
			}
		})
	}
}

// lineDiff is a short (-want +got) of the first differing lines.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d:\n", i+1)
	for j := i; j < i+8; j++ {
		if j < len(w) {
			fmt.Fprintf(&b, "-%s\n", w[j])
		}
		if j < len(g) {
			fmt.Fprintf(&b, "+%s\n", g[j])
		}
	}
	return b.String()
}

// TestSchemaRefusesBadValues: values.schema.json makes helm template (and
// install, upgrade, lint) refuse a bad value, naming the value and what
// it may be.
func TestSchemaRefusesBadValues(t *testing.T) {
	tests := map[string]struct {
		set  string
		want []string // in helm's message
	}{
		"policy mode":            {set: "policy.mode=bogus", want: []string{"/policy/mode", "permissive", "strict"}},
		"log level":              {set: "agent.logLevel=loud", want: []string{"/agent/logLevel", "debug", "info"}},
		"misspelt value":         {set: "agent.logLevl=debug", want: []string{"/agent", "logLevl", "not allowed"}},
		"unknown top-level":      {set: "ztunnell.enabled=false", want: []string{"ztunnell", "not allowed"}},
		"port out of range":      {set: "agent.flows.port=70000", want: []string{"/agent/flows/port"}},
		"ring size not a number": {set: "agent.flows.ringSize=lots", want: []string{"/agent/flows/ringSize"}},
		"enabled not a boolean":  {set: "cni.enabled=maybe", want: []string{"/cni/enabled", "boolean"}},
		"pull policy":            {set: "image.pullPolicy=Sometimes", want: []string{"/image/pullPolicy", "IfNotPresent"}},
		"duration":               {set: "operator.certLifetime=a day", want: []string{"/operator/certLifetime"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := template(t, tt.set)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded; want the schema to refuse it", tt.set)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("helm template --set %s failed without %q in its message:\n%v", tt.set, w, err)
				}
			}
		})
	}
	// What tests/cluster, tests/bench and hack/demo.sh pass stays valid.
	if _, err := template(t, "agent.pinRoot=/sys/fs/bpf/weft-x-$(NODE_NAME)", "agent.cgroupPath=/sys/fs/cgroup/weft/x",
		"ztunnel.enabled=true", "operator.enabled=false", "operator.certLifetime=20s", "ztunnel.certLifetime=1m0s",
		"ztunnel.goMaxProcs=1", "agent.logLevel=debug", "ztunnel.logLevel=debug", "policy.mode=strict"); err != nil {
		t.Errorf("values the harness passes are refused: %v", err)
	}
}

func TestLint(t *testing.T) {
	if out, err := runHelm(t, "lint", "--strict", chart); err != nil {
		t.Errorf("helm lint --strict: %v\n%s", err, out)
	}
	if out, err := runHelm(t, "lint", chart, "--set", "policy.mode=bogus"); err == nil {
		t.Errorf("helm lint --set policy.mode=bogus passed:\n%s", out)
	}
}

// TestHostPathsSayWhy: every hostPath volume the chart mounts has a
// comment right above it saying what it is for (the chart's privileges
// are documented where they are granted).
func TestHostPathsSayWhy(t *testing.T) {
	for _, tt := range goldens {
		out, err := template(t, tt.set...)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(out, "\n")
		for i := 1; i+1 < len(lines); i++ {
			name, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "- name: ")
			if !ok || !strings.HasPrefix(strings.TrimSpace(lines[i+1]), "hostPath:") {
				continue
			}
			if !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
				t.Errorf("%s: hostPath volume %s has no comment saying why it is mounted", tt.name, name)
			}
		}
	}
}
