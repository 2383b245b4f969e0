package cniplugin

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
)

func TestParseConfig(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    Config // only the plugin's own fields are compared
		wantErr string
	}{
		"defaults": {
			in: `{"cniVersion":"1.0.0","name":"pods","type":"weft-cni"}`,
			want: Config{AgentSocket: cniv1.DefaultSocket, Kubeconfig: DefaultKubeconfig,
				ExcludeNamespaces: DefaultExcludeNamespaces, TimeoutSeconds: 10},
		},
		"all fields": {
			in: `{"cniVersion":"1.0.0","name":"pods","type":"weft-cni","agentSocket":"/run/a.sock","kubeconfig":"/etc/k",
				"failOpen":true,"excludeNamespaces":["infra"],"timeoutSeconds":3,"logFile":"/var/log/weft-cni.log"}`,
			want: Config{AgentSocket: "/run/a.sock", Kubeconfig: "/etc/k", FailOpen: true,
				ExcludeNamespaces: []string{"infra"}, TimeoutSeconds: 3, LogFile: "/var/log/weft-cni.log"},
		},
		"explicit empty exclusions": {
			in: `{"cniVersion":"1.0.0","name":"pods","type":"weft-cni","excludeNamespaces":[]}`,
			want: Config{AgentSocket: cniv1.DefaultSocket, Kubeconfig: DefaultKubeconfig,
				ExcludeNamespaces: []string{}, TimeoutSeconds: 10},
		},
		"unknown fields ignored": {
			in: `{"cniVersion":"1.0.0","name":"pods","type":"weft-cni","runtimeConfig":{"x":1},"future":true}`,
			want: Config{AgentSocket: cniv1.DefaultSocket, Kubeconfig: DefaultKubeconfig,
				ExcludeNamespaces: DefaultExcludeNamespaces, TimeoutSeconds: 10},
		},
		"with prevResult": {
			in: `{"cniVersion":"1.0.0","name":"pods","type":"weft-cni","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.0.5/24"}]}}`,
			want: Config{AgentSocket: cniv1.DefaultSocket, Kubeconfig: DefaultKubeconfig,
				ExcludeNamespaces: DefaultExcludeNamespaces, TimeoutSeconds: 10},
		},
		"not json":             {in: `{"type":`, wantErr: "decode config"},
		"relative socket":      {in: `{"type":"weft-cni","agentSocket":"cni.sock"}`, wantErr: `agentSocket "cni.sock" is not an absolute path`},
		"relative kubeconfig":  {in: `{"type":"weft-cni","kubeconfig":"kc"}`, wantErr: `kubeconfig "kc" is not an absolute path`},
		"relative log file":    {in: `{"type":"weft-cni","logFile":"log"}`, wantErr: `logFile "log" is not an absolute path`},
		"negative timeout":     {in: `{"type":"weft-cni","timeoutSeconds":-1}`, wantErr: "timeoutSeconds -1 out of range"},
		"huge timeout":         {in: `{"type":"weft-cni","timeoutSeconds":100000}`, wantErr: "timeoutSeconds 100000 out of range"},
		"timeout not a number": {in: `{"type":"weft-cni","timeoutSeconds":"10"}`, wantErr: "decode config"},
		"empty exclusion":      {in: `{"type":"weft-cni","excludeNamespaces":[""]}`, wantErr: "excludeNamespaces has an empty name"},
		"bad prevResult": {
			in:      `{"cniVersion":"1.0.0","name":"pods","type":"weft-cni","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}}`,
			wantErr: "parse prevResult",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.in))
			if tt.wantErr != "" {
				var ce *ConfigError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &ce) {
					t.Fatalf("ParseConfig(%s) = %v, want a ConfigError containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig(%s) = %v", tt.in, err)
			}
			if got.AgentSocket != tt.want.AgentSocket || got.Kubeconfig != tt.want.Kubeconfig || got.FailOpen != tt.want.FailOpen ||
				!slices.Equal(got.ExcludeNamespaces, tt.want.ExcludeNamespaces) || got.TimeoutSeconds != tt.want.TimeoutSeconds || got.LogFile != tt.want.LogFile {
				t.Errorf("ParseConfig(%s) = %+v, want %+v", tt.in, *got, tt.want)
			}
			if want := strings.Contains(tt.in, "prevResult"); (got.PrevResult != nil) != want {
				t.Errorf("prevResult parsed = %v, want %v", got.PrevResult != nil, want)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"pods","type":"weft-cni"}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"pods","type":"weft-cni","timeoutSeconds":5,"excludeNamespaces":["a"],"prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.1/24","interface":0}],"interfaces":[{"name":"eth0","sandbox":"/x"}]}}`))
	f.Add([]byte(`{"agentSocket":"/a","kubeconfig":"/k","logFile":"/l","failOpen":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseConfig(%q) error %v is not a ConfigError", data, err)
			}
			return
		}
		if c.AgentSocket == "" || c.Kubeconfig == "" || c.TimeoutSeconds < 1 || c.ExcludeNamespaces == nil {
			t.Fatalf("ParseConfig(%q) = %+v: defaults missing", data, c)
		}
		if c.PrevResult != nil {
			// What ADD does with an accepted prevResult must not panic.
			_, _ = podIPs(c.PrevResult)
			_ = (&Plugin{stdout: io.Discard}).printResult(c)
		}
	})
}

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func TestDecide(t *testing.T) {
	enabled := map[string]string{LabelMesh: MeshEnabled}
	tests := map[string]struct {
		exclude   []string // nil: defaults
		ns        *corev1.Namespace
		pod       *corev1.Pod
		want      bool
		reasonSub string
	}{
		"enrolled namespace":   {ns: ns("shop", enabled), pod: &corev1.Pod{}, want: true, reasonSub: "labelled weft.io/mesh=enabled"},
		"unlabelled namespace": {ns: ns("shop", nil), pod: &corev1.Pod{}, reasonSub: "not labelled"},
		"label disabled on namespace": {
			ns: ns("shop", map[string]string{LabelMesh: MeshDisabled}), pod: &corev1.Pod{}, reasonSub: "not labelled",
		},
		"label other value":            {ns: ns("shop", map[string]string{LabelMesh: "true"}), pod: &corev1.Pod{}, reasonSub: "not labelled"},
		"kube-system even if labelled": {ns: ns("kube-system", enabled), pod: &corev1.Pod{}, reasonSub: "excluded"},
		"kube-system with custom exclusions": {
			exclude: []string{"infra"}, ns: ns("kube-system", enabled), pod: &corev1.Pod{}, reasonSub: "excluded",
		},
		"weft-system by default": {ns: ns("weft-system", enabled), pod: &corev1.Pod{}, reasonSub: "excluded"},
		"custom exclusion":       {exclude: []string{"infra"}, ns: ns("infra", enabled), pod: &corev1.Pod{}, reasonSub: "excluded"},
		"weft-system not excluded by custom list": {
			exclude: []string{"infra"}, ns: ns("weft-system", enabled), pod: &corev1.Pod{}, want: true,
		},
		"pod opted out": {
			ns: ns("shop", enabled), pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelMesh: MeshDisabled}}},
			reasonSub: "pod is labelled weft.io/mesh=disabled",
		},
		"pod label enabled is no opt-out": {
			ns: ns("shop", enabled), pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelMesh: MeshEnabled}}}, want: true,
		},
		"pod label without namespace label": {
			ns: ns("shop", nil), pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelMesh: MeshEnabled}}},
			reasonSub: "not labelled",
		},
		"host network": {ns: ns("shop", enabled), pod: &corev1.Pod{Spec: corev1.PodSpec{HostNetwork: true}}, reasonSub: "host network"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := &Config{ExcludeNamespaces: DefaultExcludeNamespaces}
			if tt.exclude != nil {
				cfg.ExcludeNamespaces = tt.exclude
			}
			got := Decide(cfg, tt.ns, tt.pod)
			if got.Enroll != tt.want || !strings.Contains(got.Reason, tt.reasonSub) {
				t.Errorf("Decide(ns %s %v, pod %v) = %+v, want enroll %v with reason containing %q", tt.ns.Name, tt.ns.Labels, tt.pod.Labels, got, tt.want, tt.reasonSub)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    podRef
		wantOK  bool
		wantErr bool
	}{
		"kubelet args": {
			in:   "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
			want: podRef{Namespace: "shop", Name: "web-1", UID: "u-1"}, wantOK: true,
		},
		"no uid":          {in: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1", want: podRef{Namespace: "shop", Name: "web-1"}, wantOK: true},
		"empty":           {in: ""},
		"not kubernetes":  {in: "IgnoreUnknown=1;FOO=bar"},
		"trailing ;":      {in: "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;", want: podRef{Namespace: "a", Name: "b"}, wantOK: true},
		"value with =":    {in: "X=a=b;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b", want: podRef{Namespace: "a", Name: "b"}, wantOK: true},
		"name without ns": {in: "K8S_POD_NAME=b", wantErr: true},
		"not key value":   {in: "K8S_POD_NAMESPACE", wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok, err := parseArgs(tt.in)
			if (err != nil) != tt.wantErr || ok != tt.wantOK || got != tt.want {
				t.Errorf("parseArgs(%q) = %+v, %v, %v; want %+v, %v, error %v", tt.in, got, ok, err, tt.want, tt.wantOK, tt.wantErr)
			}
		})
	}
}
