package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
	"github.com/weftmesh/weft/daemon/cniserver"
)

// netnsPrefix names every network namespace this file creates, followed by
// the creating process's PID.
const netnsPrefix = "weftcnit-"

// requirePrivileged skips without root, or fails when CI demands privileged
// tests (WEFT_REQUIRE_PRIVILEGED=1): a skip must not look like a pass there.
func requirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WEFT_REQUIRE_PRIVILEGED") == "1" {
		tb.Fatal("test needs root (network namespaces) and WEFT_REQUIRE_PRIVILEGED=1 is set")
	}
	tb.Skip("test needs root (network namespaces)")
}

// referencePlugins is the directory of the reference CNI plugins.
func referencePlugins(tb testing.TB) string {
	tb.Helper()
	dir, err := filepath.Abs("../../.cache/bin/cni-v1.9.0")
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			tb.Fatalf("CNI plugin %s missing in %s (run: bash hack/tools.sh cni): %v", p, dir, err)
		}
	}
	return dir
}

// buildPlugin builds cmd/weft-cni into dir.
func buildPlugin(tb testing.TB, dir string) string {
	tb.Helper()
	out := filepath.Join(dir, "weft-cni")
	cmd := exec.Command("go", "build", "-o", out, "github.com/weftmesh/weft/cmd/weft-cni")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build weft-cni: %v\n%s", err, b)
	}
	return out
}

func ipCmd(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// reapStaleNetns deletes namespaces of this file whose creator is dead.
func reapStaleNetns(tb testing.TB) {
	tb.Helper()
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), netnsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its owner still runs
		}
		tb.Logf("deleting stale netns %s", e.Name())
		_ = exec.Command("ip", "netns", "delete", e.Name()).Run()
	}
}

// newNetns creates a named network namespace with lo up, deleted (with every
// device in it) when the test ends.
func newNetns(tb testing.TB, suffix string) string {
	tb.Helper()
	name := fmt.Sprintf("%s%d-%s", netnsPrefix, os.Getpid(), suffix)
	_ = exec.Command("ip", "netns", "delete", name).Run()
	ipCmd(tb, "netns", "add", name)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	ipCmd(tb, "-n", name, "link", "set", "lo", "up")
	return filepath.Join("/run/netns", name)
}

// inNetns runs f on a locked OS thread that has entered the namespace at
// path; the thread is discarded afterwards. Processes f starts inherit the
// namespace, and sockets f creates live in it.
func inNetns(tb testing.TB, path string, f func() error) error {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// fakeAPIServer serves namespaces and pods as the API server's JSON, on
// 127.0.0.1 of the node netns. Only for this unit-level test.
type fakeAPIServer struct {
	url        string
	namespaces map[string]*corev1.Namespace
	pods       map[string]*corev1.Pod

	mu       sync.Mutex // guards the fields below
	requests []string
}

func startFakeAPIServer(t *testing.T, nodeNetns string, namespaces []*corev1.Namespace, pods []*corev1.Pod) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{namespaces: map[string]*corev1.Namespace{}, pods: map[string]*corev1.Pod{}}
	for _, n := range namespaces {
		n.TypeMeta = metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"}
		f.namespaces[n.Name] = n
	}
	for _, p := range pods {
		p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		f.pods[p.Namespace+"/"+p.Name] = p
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/{name}", func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		f.reply(w, f.namespaces[r.PathValue("name")], "namespaces", r.PathValue("name"))
	})
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		f.reply(w, f.pods[r.PathValue("ns")+"/"+r.PathValue("name")], "pods", r.PathValue("name"))
	})
	srv := httptest.NewUnstartedServer(mux)
	var ln net.Listener
	if err := inNetns(t, nodeNetns, func() (err error) {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("listen in node netns: %v", err)
	}
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fakeAPIServer) record(r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
}

func (f *fakeAPIServer) reply(w http.ResponseWriter, obj any, resource, name string) {
	w.Header().Set("Content-Type", "application/json")
	if obj == nil || (resource == "namespaces" && obj.(*corev1.Namespace) == nil) || (resource == "pods" && obj.(*corev1.Pod) == nil) {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"%s %q not found","details":{"name":%q,"kind":%q}}`, resource, name, name, resource)
		return
	}
	_ = json.NewEncoder(w).Encode(obj)
}

// writeKubeconfig writes a kubeconfig for server (no credentials).
func writeKubeconfig(t *testing.T, dir, server string) string {
	t.Helper()
	path := filepath.Join(dir, "weft-cni.kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, server)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// recordingEnroller records what the agent was asked.
type recordingEnroller struct {
	mu       sync.Mutex      // guards the fields below
	enrolled map[string]bool // by container ID
	adds     []cniv1.AddRequest
	checks   []cniv1.AddRequest
	dels     []cniv1.DelRequest
}

func (r *recordingEnroller) CNIAdd(_ context.Context, req cniv1.AddRequest) (cniv1.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.adds = append(r.adds, req)
	if r.enrolled == nil {
		r.enrolled = map[string]bool{}
	}
	r.enrolled[req.ContainerID] = true
	return cniv1.Response{Enrolled: true}, nil
}

func (r *recordingEnroller) CNIDel(_ context.Context, req cniv1.DelRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dels = append(r.dels, req)
	delete(r.enrolled, req.ContainerID)
	return nil
}

func (r *recordingEnroller) CNICheck(_ context.Context, req cniv1.AddRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, req)
	if r.enrolled[req.ContainerID] {
		return nil
	}
	return fmt.Errorf("container %s: %w", req.ContainerID, cniserver.ErrNotEnrolled)
}

// forget drops every enrollment, as an agent that lost its state would.
func (r *recordingEnroller) forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enrolled = nil
}

func (r *recordingEnroller) take() (adds, checks []cniv1.AddRequest, dels []cniv1.DelRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	adds, checks, dels = r.adds, r.checks, r.dels
	r.adds, r.checks, r.dels = nil, nil, nil
	return adds, checks, dels
}

// chain is a CNI network of bridge + host-local, then weft-cni.
type chain struct {
	t       *testing.T
	cni     *libcni.CNIConfig
	node    string // node netns path
	dataDir string
}

func (c *chain) conflist(version string, weft map[string]any) *libcni.NetworkConfigList {
	c.t.Helper()
	plugins := []any{map[string]any{
		"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
		"ipam": map[string]any{
			"type": "host-local", "ranges": [][]map[string]string{{{"subnet": "10.250.0.0/24"}}},
			"dataDir": c.dataDir,
		},
	}}
	if weft != nil {
		w := map[string]any{"type": "weft-cni"}
		for k, v := range weft {
			w[k] = v
		}
		plugins = append(plugins, w)
	}
	data, err := json.Marshal(map[string]any{"cniVersion": version, "name": "weft-test", "plugins": plugins})
	if err != nil {
		c.t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		c.t.Fatalf("parse conflist %s: %v", data, err)
	}
	return list
}

func podRuntimeConf(netns, ns, name, uid string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: "ctr-" + uid, NetNS: netns, IfName: "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", "ctr-" + uid}, {"K8S_POD_UID", uid},
		},
	}
}

func (c *chain) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, time.Duration, error) {
	var res types.Result
	var took time.Duration
	err := inNetns(c.t, c.node, func() (err error) {
		start := time.Now()
		res, err = c.cni.AddNetworkList(context.Background(), list, rt)
		took = time.Since(start)
		return err
	})
	return res, took, err
}

func (c *chain) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return inNetns(c.t, c.node, func() error { return c.cni.CheckNetworkList(context.Background(), list, rt) })
}

func (c *chain) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return inNetns(c.t, c.node, func() error { return c.cni.DelNetworkList(context.Background(), list, rt) })
}

// sandboxIPs are the result's addresses on interfaces inside the pod.
func sandboxIPs(t *testing.T, res types.Result) []netip.Addr {
	t.Helper()
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	var ips []netip.Addr
	for _, ip := range r.IPs {
		if ip.Interface != nil && r.Interfaces[*ip.Interface].Sandbox != "" {
			a, _ := netip.AddrFromSlice(ip.Address.IP)
			ips = append(ips, a.Unmap())
		}
	}
	return ips
}

// TestChain runs the real weft-cni binary behind the real bridge and
// host-local plugins, through libcni, in throwaway namespaces, against a
// cniserver with a recording Enroller and a fake API server.
func TestChain(t *testing.T) {
	requirePrivileged(t)
	refPlugins := referencePlugins(t)
	reapStaleNetns(t)
	binDir := t.TempDir()
	buildPlugin(t, binDir)

	dir := t.TempDir()
	node := newNetns(t, "node")
	api := startFakeAPIServer(t, node,
		[]*corev1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{LabelMesh: MeshEnabled}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
		},
		[]*corev1.Pod{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "uid-web-1"}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "plain", Name: "web-1", UID: "uid-plain-1"}},
		})
	kubeconfig := writeKubeconfig(t, dir, api.url)
	deadKubeconfig := writeKubeconfig(t, t.TempDir(), "http://127.0.0.1:1")

	socket := filepath.Join(dir, "run", "cni.sock")
	enroller := &recordingEnroller{}
	srv := cniserver.New(socket, enroller, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cniserver Run = %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("cniserver Run = %v", err)
	}
	downSocket := filepath.Join(dir, "down", "cni.sock")

	c := &chain{
		t:       t,
		cni:     libcni.NewCNIConfigWithCacheDir([]string{refPlugins, binDir}, filepath.Join(dir, "cache"), nil),
		node:    node,
		dataDir: filepath.Join(dir, "ipam"),
	}
	logFile := filepath.Join(dir, "weft-cni.log")
	weft := func(socket, kubeconfig string, failOpen bool) map[string]any {
		return map[string]any{"agentSocket": socket, "kubeconfig": kubeconfig, "failOpen": failOpen, "logFile": logFile}
	}
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(logFile)
			t.Logf("weft-cni log:\n%s", data)
		}
	})
	podNum := 0
	newPod := func(t *testing.T) string {
		podNum++
		return newNetns(t, fmt.Sprintf("pod%d", podNum))
	}

	t.Run("enrolled namespace", func(t *testing.T) {
		for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
			t.Run(v, func(t *testing.T) {
				pod := newPod(t)
				list := c.conflist(v, weft(socket, kubeconfig, false))
				rt := podRuntimeConf(pod, "shop", "web-1", "uid-web-1")
				res, took, err := c.add(list, rt)
				if err != nil {
					t.Fatalf("ADD: %v", err)
				}
				t.Logf("ADD bridge+weft-cni (CNI %s) took %v", v, took)
				if res.Version() != v {
					t.Errorf("result version %s, want %s", res.Version(), v)
				}
				ips := sandboxIPs(t, res)
				adds, _, _ := enroller.take()
				if len(adds) != 1 {
					t.Fatalf("agent got %d AddRequests, want 1: %+v", len(adds), adds)
				}
				got := adds[0]
				want := cniv1.AddRequest{Version: cniv1.Version, ContainerID: rt.ContainerID, Netns: pod, IfName: "eth0",
					PodNamespace: "shop", PodName: "web-1", PodUID: "uid-web-1", IPs: ips}
				if len(ips) != 1 || fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("AddRequest = %+v, want %+v (result IPs %v)", got, want, ips)
				}
				if v == "0.4.0" || v == "1.0.0" || v == "1.1.0" {
					if err := c.check(list, rt); err != nil {
						t.Errorf("CHECK: %v", err)
					}
					if _, checks, _ := enroller.take(); len(checks) != 1 || checks[0].Netns != pod {
						t.Errorf("agent got checks %+v, want one for %s", checks, pod)
					}
				}
				if err := c.del(list, rt); err != nil {
					t.Errorf("DEL: %v", err)
				}
				if _, _, dels := enroller.take(); len(dels) != 1 || dels[0].ContainerID != rt.ContainerID || dels[0].Netns != pod || dels[0].PodUID != "uid-web-1" {
					t.Errorf("agent got DelRequests %+v, want one for %s", dels, rt.ContainerID)
				}
			})
		}
	})

	t.Run("result passes through", func(t *testing.T) {
		// The same pod through bridge alone and through bridge+weft-cni
		// gets the same result, bar what differs per attachment (the
		// host veth's name, MACs, the address IPAM hands out).
		pod := newPod(t)
		rt := podRuntimeConf(pod, "plain", "web-1", "uid-plain-1")
		bare := c.conflist("1.0.0", nil)
		want, tookBare, err := c.add(bare, rt)
		if err != nil {
			t.Fatalf("ADD bridge alone: %v", err)
		}
		if err := c.del(bare, rt); err != nil {
			t.Fatal(err)
		}
		chained := c.conflist("1.0.0", weft(socket, kubeconfig, false))
		got, tookChained, err := c.add(chained, rt)
		if err != nil {
			t.Fatalf("ADD chained: %v", err)
		}
		t.Cleanup(func() { _ = c.del(chained, rt) })
		strip := func(r types.Result) string {
			r100, _ := types100.NewResultFromResult(r)
			for i, ifc := range r100.Interfaces {
				r100.Interfaces[i].Mac = ""
				if strings.HasPrefix(ifc.Name, "veth") {
					r100.Interfaces[i].Name = "veth*"
				}
			}
			for _, ip := range r100.IPs {
				ip.Address.IP = ip.Address.IP.Mask(ip.Address.Mask)
			}
			b, _ := json.Marshal(r100)
			return string(b)
		}
		if strip(got) != strip(want) {
			t.Errorf("chained result\n%s\nwant bridge's\n%s", strip(got), strip(want))
		}
		t.Logf("ADD latency: bridge alone %v, bridge+weft-cni (namespace not enrolled) %v", tookBare, tookChained)
	})

	t.Run("namespace not enrolled", func(t *testing.T) {
		api.mu.Lock()
		api.requests = nil
		api.mu.Unlock()
		pod := newPod(t)
		list := c.conflist("1.0.0", weft(socket, kubeconfig, false))
		rt := podRuntimeConf(pod, "plain", "web-1", "uid-plain-1")
		if _, _, err := c.add(list, rt); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		t.Cleanup(func() { _ = c.del(list, rt) })
		if adds, _, _ := enroller.take(); len(adds) != 0 {
			t.Errorf("agent got AddRequests %+v for a pod of an unlabelled namespace", adds)
		}
		api.mu.Lock()
		defer api.mu.Unlock()
		if want := []string{"GET /api/v1/namespaces/plain"}; !slices.Equal(api.requests, want) {
			t.Errorf("API requests = %v, want %v", api.requests, want)
		}
	})

	t.Run("agent down fails closed", func(t *testing.T) {
		pod := newPod(t)
		list := c.conflist("1.0.0", weft(downSocket, kubeconfig, false))
		rt := podRuntimeConf(pod, "shop", "web-1", "uid-web-1")
		_, _, err := c.add(list, rt)
		t.Cleanup(func() { _ = c.del(list, rt) })
		var ce *types.Error
		want := fmt.Sprintf("weft-cni: pod shop/web-1 is in an enrolled namespace but the weft agent at %s is unreachable: ", downSocket)
		if !errors.As(err, &ce) || ce.Code != types.ErrTryAgainLater || !strings.HasPrefix(ce.Msg, want) || !strings.HasSuffix(ce.Msg, "(set failOpen to start pods unmeshed)") {
			t.Fatalf("ADD = %v, want CNI error 11 starting %q", err, want)
		}
		t.Logf("ADD error: %v", err)
	})

	t.Run("agent down with failOpen", func(t *testing.T) {
		pod := newPod(t)
		list := c.conflist("1.0.0", weft(downSocket, kubeconfig, true))
		rt := podRuntimeConf(pod, "shop", "web-1", "uid-web-1")
		res, _, err := c.add(list, rt)
		if err != nil {
			t.Fatalf("ADD with failOpen: %v", err)
		}
		t.Cleanup(func() { _ = c.del(list, rt) })
		if len(sandboxIPs(t, res)) != 1 {
			t.Errorf("result %v has no pod IP", res)
		}
		if data, _ := os.ReadFile(logFile); !strings.Contains(string(data), "starting pod unmeshed (failOpen)") {
			t.Errorf("log file has no failOpen warning")
		}
	})

	t.Run("API server down fails closed", func(t *testing.T) {
		pod := newPod(t)
		list := c.conflist("1.0.0", weft(socket, deadKubeconfig, false))
		rt := podRuntimeConf(pod, "shop", "web-1", "uid-web-1")
		_, _, err := c.add(list, rt)
		t.Cleanup(func() { _ = c.del(list, rt) })
		var ce *types.Error
		if !errors.As(err, &ce) || ce.Code != types.ErrTryAgainLater || !strings.Contains(ce.Msg, "cannot tell whether pod shop/web-1 belongs in the mesh") {
			t.Fatalf("ADD = %v, want CNI error 11 naming the API server", err)
		}
		if adds, _, _ := enroller.take(); len(adds) != 0 {
			t.Errorf("agent got %+v", adds)
		}
	})

	t.Run("DEL without agent or netns", func(t *testing.T) {
		list := c.conflist("1.0.0", weft(downSocket, deadKubeconfig, false))
		rt := podRuntimeConf("", "shop", "gone", "uid-gone")
		if err := c.del(list, rt); err != nil {
			t.Errorf("DEL of a vanished pod with the agent down: %v", err)
		}
		// Twice: DEL is idempotent.
		if err := c.del(list, rt); err != nil {
			t.Errorf("second DEL: %v", err)
		}
	})

	t.Run("CHECK of a pod the agent lost", func(t *testing.T) {
		pod := newPod(t)
		list := c.conflist("1.0.0", weft(socket, kubeconfig, false))
		rt := podRuntimeConf(pod, "shop", "web-1", "uid-web-1")
		if _, _, err := c.add(list, rt); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.del(list, rt) })
		enroller.forget()
		err := c.check(list, rt)
		var ce *types.Error
		if !errors.As(err, &ce) || ce.Code != ErrCodeNotEnrolled {
			t.Errorf("CHECK = %v, want CNI error %d", err, ErrCodeNotEnrolled)
		}
	})

	t.Run("VERSION", func(t *testing.T) {
		info, err := c.cni.GetVersionInfo(context.Background(), "weft-cni")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
		if got := info.SupportedVersions(); !slices.Equal(got, want) {
			t.Errorf("VERSION = %v, want %v", got, want)
		}
	})

	t.Run("STATUS", func(t *testing.T) {
		if err := c.cni.GetStatusNetworkList(context.Background(), c.conflist("1.1.0", weft(socket, kubeconfig, false))); err != nil {
			t.Errorf("STATUS with the agent up: %v", err)
		}
		if err := c.cni.GetStatusNetworkList(context.Background(), c.conflist("1.1.0", weft(downSocket, kubeconfig, false))); err == nil {
			t.Errorf("STATUS with the agent down succeeded")
		}
	})

	// What the kernel holds of this test goes with the node netns.
	if leases, _ := filepath.Glob(filepath.Join(c.dataDir, "weft-test", "10.*")); len(leases) > 0 {
		t.Errorf("IPAM leases left after DEL: %v", leases)
	}
}
