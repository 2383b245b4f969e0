package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
)

// fakeKube serves namespaces and pods from maps.
type fakeKube struct {
	namespaces map[string]*corev1.Namespace
	pods       map[string]*corev1.Pod // by ns/name
	err        error
	podGets    int
}

func (k *fakeKube) Namespace(_ context.Context, name string) (*corev1.Namespace, error) {
	if k.err != nil {
		return nil, k.err
	}
	if n, ok := k.namespaces[name]; ok {
		return n, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
}

func (k *fakeKube) Pod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	k.podGets++
	if p, ok := k.pods[namespace+"/"+name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

// fakeAgent records requests.
type fakeAgent struct {
	resp   cniv1.Response
	err    error
	adds   []cniv1.AddRequest
	checks []cniv1.AddRequest
	dels   []cniv1.DelRequest
}

func (a *fakeAgent) Add(_ context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	a.adds = append(a.adds, req)
	return a.resp, a.err
}

func (a *fakeAgent) Check(_ context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	a.checks = append(a.checks, req)
	return a.resp, a.err
}

func (a *fakeAgent) Del(_ context.Context, req cniv1.DelRequest) error {
	a.dels = append(a.dels, req)
	return a.err
}

const prevResult = `{"cniVersion":"1.0.0",
	"interfaces":[{"name":"cni0","mac":"aa:aa:aa:aa:aa:aa"},{"name":"veth1","mac":"bb:bb:bb:bb:bb:bb"},{"name":"eth0","mac":"cc:cc:cc:cc:cc:cc","sandbox":"/run/netns/p1"}],
	"ips":[{"address":"10.244.0.1/24","interface":0},{"address":"10.244.0.7/24","gateway":"10.244.0.1","interface":2}],
	"routes":[{"dst":"0.0.0.0/0"}]}`

func stdin(t *testing.T, extra string, withPrev bool) []byte {
	t.Helper()
	s := `{"cniVersion":"1.0.0","name":"pods","type":"weft-cni","agentSocket":"/run/weft/cni.sock"` + extra
	if withPrev {
		s += `,"prevResult":` + prevResult
	}
	return []byte(s + "}")
}

func testPlugin(k *fakeKube, a *fakeAgent) (*Plugin, *bytes.Buffer) {
	var out bytes.Buffer
	return &Plugin{
		newKube:  func(*Config) (Kube, error) { return k, nil },
		newAgent: func(*Config) Agent { return a },
		stdout:   &out,
		stderr:   io.Discard,
	}, &out
}

func kube() *fakeKube {
	return &fakeKube{
		namespaces: map[string]*corev1.Namespace{
			"shop":  ns("shop", map[string]string{LabelMesh: MeshEnabled}),
			"plain": ns("plain", nil),
		},
		pods: map[string]*corev1.Pod{
			"shop/web-1":  {ObjectMeta: metav1.ObjectMeta{Name: "web-1", UID: "u-1"}},
			"shop/opted":  {ObjectMeta: metav1.ObjectMeta{Name: "opted", UID: "u-2", Labels: map[string]string{LabelMesh: MeshDisabled}}},
			"plain/web-1": {ObjectMeta: metav1.ObjectMeta{Name: "web-1", UID: "u-3"}},
		},
	}
}

func k8sArgs(ns, name, uid string) string {
	return fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=%s", ns, name, uid)
}

func TestAdd(t *testing.T) {
	unreachable := &UnreachableError{Socket: "/run/weft/cni.sock", Err: errors.New("dial unix /run/weft/cni.sock: connect: no such file or directory")}
	tests := map[string]struct {
		extra      string
		noPrev     bool
		args       string
		kubeErr    error
		agent      fakeAgent
		wantAdds   int
		wantCode   uint // 0: success
		wantErrSub string
	}{
		"enrolled pod":         {args: k8sArgs("shop", "web-1", "u-1"), agent: fakeAgent{resp: cniv1.Response{Enrolled: true}}, wantAdds: 1},
		"agent declines":       {args: k8sArgs("shop", "web-1", "u-1"), agent: fakeAgent{resp: cniv1.Response{Reason: "listens on 15001"}}, wantAdds: 1},
		"unlabelled namespace": {args: k8sArgs("plain", "web-1", "u-3")},
		"opted-out pod":        {args: k8sArgs("shop", "opted", "u-2")},
		"excluded namespace":   {args: k8sArgs("kube-system", "coredns", "u-9"), kubeErr: errors.New("must not be asked")},
		"not a kubernetes pod": {args: "IgnoreUnknown=1", kubeErr: errors.New("must not be asked")},
		"no prevResult":        {noPrev: true, args: k8sArgs("shop", "web-1", "u-1"), wantCode: types.ErrInvalidNetworkConfig, wantErrSub: "chained plugin"},
		"malformed args":       {args: "K8S_POD_NAME=x", wantCode: types.ErrInvalidEnvironmentVariables, wantErrSub: "malformed CNI_ARGS"},
		"bad config":           {extra: `,"timeoutSeconds":-5`, args: k8sArgs("shop", "web-1", "u-1"), wantCode: types.ErrInvalidNetworkConfig, wantErrSub: "timeoutSeconds"},
		"uid mismatch":         {args: k8sArgs("shop", "web-1", "u-old"), wantCode: types.ErrTryAgainLater, wantErrSub: "pod recreated?"},
		"pod missing":          {args: k8sArgs("shop", "ghost", ""), wantCode: types.ErrTryAgainLater, wantErrSub: `pods "ghost" not found`},
		"agent unreachable": {
			args: k8sArgs("shop", "web-1", "u-1"), agent: fakeAgent{err: unreachable}, wantAdds: 1, wantCode: types.ErrTryAgainLater,
			wantErrSub: "weft-cni: pod shop/web-1 is in an enrolled namespace but the weft agent at /run/weft/cni.sock is unreachable: dial unix /run/weft/cni.sock: connect: no such file or directory (set failOpen to start pods unmeshed)",
		},
		"agent unreachable, failOpen": {extra: `,"failOpen":true`, args: k8sArgs("shop", "web-1", "u-1"), agent: fakeAgent{err: unreachable}, wantAdds: 1},
		"agent refuses": {
			args: k8sArgs("shop", "web-1", "u-1"), agent: fakeAgent{err: &RefusedError{Socket: "/run/weft/cni.sock", Status: 500, Msg: "enroll pod shop/web-1: ztunnel not connected"}},
			wantAdds: 1, wantCode: types.ErrTryAgainLater, wantErrSub: "refused to enroll it (HTTP 500): enroll pod shop/web-1: ztunnel not connected (set failOpen",
		},
		"api server down": {
			args: k8sArgs("shop", "web-1", "u-1"), kubeErr: errors.New("dial tcp 10.0.0.1:6443: connect: connection refused"),
			wantCode: types.ErrTryAgainLater, wantErrSub: "cannot tell whether pod shop/web-1 belongs in the mesh: the API server could not be read with kubeconfig /etc/cni/net.d/weft-cni.kubeconfig: dial tcp",
		},
		"api server down, failOpen": {extra: `,"failOpen":true`, args: k8sArgs("shop", "web-1", "u-1"), kubeErr: errors.New("connection refused")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			k := kube()
			k.err = tt.kubeErr
			a := tt.agent
			p, out := testPlugin(k, &a)
			err := p.Add(&skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/p1", IfName: "eth0", Args: tt.args, StdinData: stdin(t, tt.extra, !tt.noPrev)})
			if len(a.adds) != tt.wantAdds {
				t.Errorf("agent got %d AddRequests, want %d", len(a.adds), tt.wantAdds)
			}
			if tt.wantCode != 0 {
				var ce *types.Error
				if !errors.As(err, &ce) || ce.Code != tt.wantCode || !strings.Contains(ce.Msg, tt.wantErrSub) {
					t.Fatalf("Add = %v (%T), want CNI error %d containing %q", err, err, tt.wantCode, tt.wantErrSub)
				}
				if out.Len() != 0 {
					t.Errorf("failed Add printed %q", out)
				}
				return
			}
			if err != nil {
				t.Fatalf("Add = %v", err)
			}
			var got, want map[string]any
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("decode result %q: %v", out, err)
			}
			_ = json.Unmarshal([]byte(prevResult), &want)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("result = %v, want prevResult unchanged %v", got, want)
			}
			if tt.wantAdds > 0 {
				req := a.adds[0]
				wantReq := cniv1.AddRequest{Version: cniv1.Version, ContainerID: "c1", Netns: "/run/netns/p1", IfName: "eth0",
					PodNamespace: "shop", PodName: "web-1", PodUID: "u-1", IPs: []netip.Addr{netip.MustParseAddr("10.244.0.7")}}
				if fmt.Sprint(req) != fmt.Sprint(wantReq) {
					t.Errorf("AddRequest = %+v, want %+v", req, wantReq)
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tests := map[string]struct {
		args       string
		extra      string
		agent      fakeAgent
		wantChecks int
		wantCode   uint
	}{
		"enrolled":           {args: k8sArgs("shop", "web-1", "u-1"), agent: fakeAgent{resp: cniv1.Response{Enrolled: true}}, wantChecks: 1},
		"not enrolled":       {args: k8sArgs("shop", "web-1", "u-1"), agent: fakeAgent{resp: cniv1.Response{Error: "pod not enrolled"}}, wantChecks: 1, wantCode: ErrCodeNotEnrolled},
		"agent down":         {args: k8sArgs("shop", "web-1", "u-1"), agent: fakeAgent{err: &UnreachableError{Err: errors.New("refused")}}, wantChecks: 1, wantCode: types.ErrTryAgainLater},
		"agent down, open":   {args: k8sArgs("shop", "web-1", "u-1"), extra: `,"failOpen":true`, agent: fakeAgent{err: &UnreachableError{Err: errors.New("refused")}}, wantChecks: 1},
		"not meant for mesh": {args: k8sArgs("plain", "web-1", "u-3")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			a := tt.agent
			p, _ := testPlugin(kube(), &a)
			err := p.Check(&skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/p1", IfName: "eth0", Args: tt.args, StdinData: stdin(t, tt.extra, true)})
			if len(a.checks) != tt.wantChecks {
				t.Errorf("agent got %d checks, want %d", len(a.checks), tt.wantChecks)
			}
			var ce *types.Error
			switch {
			case tt.wantCode == 0 && err != nil:
				t.Errorf("Check = %v, want success", err)
			case tt.wantCode != 0 && (!errors.As(err, &ce) || ce.Code != tt.wantCode):
				t.Errorf("Check = %v, want CNI error %d", err, tt.wantCode)
			}
		})
	}
}

func TestDelNeverFails(t *testing.T) {
	tests := map[string]struct {
		stdin    string
		args     string
		netns    string
		agentErr error
		wantDels int
	}{
		"agent told":     {args: k8sArgs("shop", "web-1", "u-1"), netns: "/run/netns/p1", wantDels: 1},
		"no netns":       {args: k8sArgs("shop", "web-1", "u-1"), wantDels: 1},
		"agent down":     {args: k8sArgs("shop", "web-1", "u-1"), agentErr: &UnreachableError{Err: errors.New("refused")}, wantDels: 1},
		"excluded":       {args: k8sArgs("kube-system", "coredns", "u")},
		"not kubernetes": {args: ""},
		"malformed args": {args: "garbage"},
		"broken config":  {stdin: `{"cniVersion":"1.0.0","name":"pods","type":"weft-cni","timeoutSeconds":-1}`, args: k8sArgs("shop", "web-1", "u-1")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			a := fakeAgent{err: tt.agentErr}
			p, out := testPlugin(kube(), &a)
			in := []byte(tt.stdin)
			if tt.stdin == "" {
				in = stdin(t, "", false)
			}
			if err := p.Del(&skel.CmdArgs{ContainerID: "c1", Netns: tt.netns, IfName: "eth0", Args: tt.args, StdinData: in}); err != nil {
				t.Errorf("Del = %v, want nil", err)
			}
			if len(a.dels) != tt.wantDels {
				t.Fatalf("agent got %d DelRequests, want %d", len(a.dels), tt.wantDels)
			}
			if tt.wantDels > 0 && (a.dels[0].ContainerID != "c1" || a.dels[0].Netns != tt.netns || a.dels[0].PodUID != "u-1") {
				t.Errorf("DelRequest = %+v", a.dels[0])
			}
			if out.Len() != 0 {
				t.Errorf("Del printed %q", out)
			}
		})
	}
}

func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tbLogWriter{tb}, nil))
}

type tbLogWriter struct{ tb testing.TB }

func (w tbLogWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
