package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// Names of what the root tests create start with these and carry the test
// process's PID, so a later run can reap what a killed run left.
const (
	testNetnsPrefix  = "wkt-"
	testCgroupPrefix = "weft-kubelet-test-"
	nodeTestEnv      = "WEFT_KUBELET_NODE_TEST"
	testAppImage     = "weft.test/app"
)

// cniBinDir finds the reference CNI plugins built by hack/tools.sh cni.
func cniBinDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("WEFT_CNI_BIN")
	if dir == "" {
		dir, _ = filepath.Abs("../../.cache/bin/cni-v1.9.0")
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			tb.Fatalf("CNI plugin %s missing in %s (run: bash hack/tools.sh cni): %v", p, dir, err)
		}
	}
	return dir
}

func pidAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil || syscall.Kill(pid, 0) == syscall.EPERM
}

// ownerPID parses the PID out of "<prefix><pid>-...".
func ownerPID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	s, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(s)
	return pid, err == nil
}

// reapStale removes network namespaces and cgroups of test runs whose
// process is gone.
func reapStale(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if pid, ok := ownerPID(e.Name(), testNetnsPrefix); ok && !pidAlive(pid) {
				tb.Logf("reaping stale netns %s", e.Name())
				_ = deleteNetns(ctx, e.Name())
			}
		}
	}
	mnt, err := cgroup2Mount()
	if err != nil {
		tb.Fatal(err)
	}
	if entries, err := os.ReadDir(mnt); err == nil {
		for _, e := range entries {
			if pid, ok := ownerPID(e.Name(), testCgroupPrefix); ok && !pidAlive(pid) {
				tb.Logf("reaping stale cgroup %s", e.Name())
				_ = removeCgroup(ctx, filepath.Join(mnt, e.Name()))
			}
		}
	}
}

// nodeTestConfig is what the parent test hands the emulator it runs in the
// node's network namespace.
type nodeTestConfig struct {
	Config Config `json:"config"`
	// MountDir is a host directory for the test's mount points; the parent
	// test removes it.
	MountDir string `json:"mountDir"`
}

// TestNodeEmulator runs the emulator, with a fake API client, in a throwaway
// node network namespace with the real CNI bridge and host-local plugins and
// the real shim, and checks that nothing is left behind.
func TestNodeEmulator(t *testing.T) {
	requirePrivileged(t)
	reapStale(t)
	cniBin := cniBinDir(t)
	id := fmt.Sprintf("%d-%04x", os.Getpid(), rand.N(1<<16))
	nodeNetns := testNetnsPrefix + id
	ctx := context.Background()
	if _, err := createNetns(ctx, nodeNetns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNetns(ctx, nodeNetns) })
	// The node's address, for hostNetwork pods and their probes.
	if err := runIP(ctx, "-n", nodeNetns, "addr", "add", "192.0.2.10/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	mountDir := filepath.Join("/run", testCgroupPrefix+id)
	t.Cleanup(func() { _ = os.RemoveAll(mountDir) })
	mnt, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	cgroupRoot := filepath.Join(mnt, testCgroupPrefix+id)
	t.Cleanup(func() {
		if err := removeCgroup(ctx, cgroupRoot); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	root := t.TempDir()
	confDir := filepath.Join(root, "etc/cni/net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "test-pods", "plugins": [{
		"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
		"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/24"}]], "dataDir": %q}}]}`,
		filepath.Join(root, "var/lib/cni/networks"))
	if err := os.WriteFile(filepath.Join(confDir, "10-test.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	podPrefix := testNetnsPrefix + id + "-"
	cfg := Config{
		NodeName:          "node-1",
		NodeIP:            "192.0.2.10",
		Kubeconfig:        "unused-with-a-fake-client",
		Root:              root,
		CNIConfDir:        confDir,
		CNIBinDir:         cniBin,
		CgroupRoot:        cgroupRoot,
		NetnsPrefix:       podPrefix,
		Images:            map[string]string{testAppImage: self},
		ClusterDNS:        "10.96.0.10",
		ClusterDomain:     "cluster.local",
		ShimPath:          self,
		HeartbeatInterval: time.Second,
	}
	js, err := json.Marshal(nodeTestConfig{Config: cfg, MountDir: mountDir})
	if err != nil {
		t.Fatal(err)
	}
	// Like the cluster harness, start the emulator inside the node netns.
	cmd := exec.Command("nsenter", "--net="+filepath.Join(netnsDir, nodeNetns), "--",
		self, "-test.run=^TestNodeEmulatorInNode$", "-test.v", "-test.count=1", "-test.timeout=120s")
	cmd.Env = append(os.Environ(), nodeTestEnv+"="+string(js))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("emulator test in node netns:\n%s", out.String())
	if err != nil {
		t.Fatalf("emulator test in node netns: %v", err)
	}
	if !strings.Contains(out.String(), "--- PASS: TestNodeEmulatorInNode") {
		t.Fatal("emulator test in node netns did not pass")
	}

	// Nothing of the pods survives the emulator.
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), podPrefix) {
			t.Errorf("pod netns %s left behind", e.Name())
		}
	}
	pods, _ := os.ReadDir(filepath.Join(cgroupRoot, "kubepods"))
	for _, e := range pods {
		if e.IsDir() {
			t.Errorf("pod cgroup %s left behind", e.Name())
		}
	}
	if leases, _ := filepath.Glob(filepath.Join(root, "var/lib/cni/networks/test-pods/10.*")); len(leases) > 0 {
		t.Errorf("IPAM leases left behind: %v", leases)
	}
}

// TestNodeEmulatorInNode is TestNodeEmulator's part inside the node netns.
func TestNodeEmulatorInNode(t *testing.T) {
	js := os.Getenv(nodeTestEnv)
	if js == "" {
		t.Skip("run by TestNodeEmulator")
	}
	var nt nodeTestConfig
	if err := json.Unmarshal([]byte(js), &nt); err != nil {
		t.Fatal(err)
	}
	cfg := nt.Config
	cfg.setDefaults()
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": "CA"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "cfg"}, Data: map[string]string{"GREETING": "hello"}},
	)
	client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		req := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		req.Status.Token = "token-for-" + req.Spec.BoundObjectRef.Name
		req.Status.ExpirationTimestamp = metav1.NewTime(time.Now().Add(time.Hour))
		return true, req, nil
	})
	em := startEmulator(t, cfg, client)

	pods := client.CoreV1().Pods("app")
	getPod := func(name string) *corev1.Pod {
		p, err := pods.Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return p
	}
	create := func(p *corev1.Pod) *corev1.Pod {
		t.Helper()
		p.Namespace = "app"
		p.UID = k8stypes.UID(fmt.Sprintf("%08x-0000-4000-8000-%012x", rand.Uint32(), rand.Uint64()&(1<<48-1)))
		p.Spec.NodeName = cfg.NodeName
		out, err := pods.Create(context.Background(), p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ready := func(p *corev1.Pod) bool {
		c, ok := findCondition(p.Status.Conditions, corev1.PodReady)
		return ok && c.Status == corev1.ConditionTrue
	}
	appEnv := []corev1.EnvVar{
		{Name: "WEFT_KUBELET_TEST_APP", Value: "http"},
		{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "MSG", Value: "$(GREETING) from $(POD_NAME)"},
	}
	// Mount points missing on the host are created there: keep the test's
	// under MountDir.
	greetingPath := filepath.Join(nt.MountDir, "greeting")
	workDir := filepath.Join(nt.MountDir, "work")
	hostDir := filepath.Join(nt.MountDir, "host")
	create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			InitContainers: []corev1.Container{{
				Name: "init", Image: testAppImage,
				Command:      []string{"/bin/sh", "-c", "echo init > " + workDir + "/init.txt"},
				VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: workDir}},
			}},
			Containers: []corev1.Container{{
				Name: "app", Image: testAppImage + ":v1",
				Env:     appEnv,
				EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}},
				LivenessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					Exec: &corev1.ExecAction{Command: []string{"cat", workDir + "/init.txt"}}}},
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
					Command: []string{"/bin/sh", "-c", "echo bye > " + hostDir + "/prestop"}}}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "scratch", MountPath: workDir},
					{Name: "host", MountPath: hostDir},
					{Name: "cfg", MountPath: greetingPath, SubPath: "GREETING"},
					{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
					Path: "/var/lib/hooks", Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}},
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
						Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				}}}},
			},
		},
	})
	hostnet := create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hostnet"},
		Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{
			Name: "app", Image: testAppImage,
			Env: []corev1.EnvVar{{Name: "WEFT_KUBELET_TEST_APP", Value: "http"}, {Name: "TEST_APP_PORT", Value: "18080"}},
			ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
				TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(18080)}}},
		}}},
	})
	crash := create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crash"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: testAppImage,
			Env: []corev1.EnvVar{{Name: "WEFT_KUBELET_TEST_APP", Value: "exit3"}}}}},
	})
	job := create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "job"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{
			Name: "c", Image: testAppImage, Command: []string{"/bin/sh", "-c", "test \"$(hostname)\" = job"}}}},
	})
	create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unknown"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/nope:v1"}}},
	})

	waitFor(t, 30*time.Second, "pod web ready", func() bool {
		p := getPod("web")
		return p != nil && p.Status.Phase == corev1.PodRunning && ready(p)
	})
	web := getPod("web")
	podIP := web.Status.PodIP
	if !strings.HasPrefix(podIP, "10.250.0.") || web.Status.HostIP != cfg.NodeIP {
		t.Errorf("podIP, hostIP = %s, %s, want 10.250.0.x, %s", podIP, web.Status.HostIP, cfg.NodeIP)
	}
	if st := web.Status.InitContainerStatuses; len(st) != 1 || st[0].State.Terminated == nil || st[0].State.Terminated.Reason != reasonCompleted {
		t.Errorf("init container status = %+v, want Completed", st)
	}

	t.Run("container process", func(t *testing.T) {
		pid, cg := containerPID(t, em.k, web.UID, "app")
		if got, want := inode(t, fmt.Sprintf("/proc/%d/ns/net", pid)), inode(t, filepath.Join(netnsDir, em.k.net.netnsName(string(web.UID)))); got != want {
			t.Errorf("container netns inode = %d, want the pod netns %d", got, want)
		}
		if got, self := inode(t, fmt.Sprintf("/proc/%d/ns/mnt", pid)), inode(t, "/proc/self/ns/mnt"); got == self {
			t.Errorf("container shares the emulator's mount namespace")
		}
		cgLine := readFile(t, fmt.Sprintf("/proc/%d/cgroup", pid))
		if want := "/kubepods/pod" + string(web.UID) + "/app\n"; !strings.Contains(cgLine, want) {
			t.Errorf("/proc/%d/cgroup = %q, want it to contain %q", pid, cgLine, want)
		}
		run := func(argv ...string) (string, error) {
			out, err := execInContainer(context.Background(), cfg.ShimPath, pid, []string{"PATH=" + defaultPath}, "/", cg, argv, 5*time.Second)
			return string(out), err
		}
		// Read through the shim's join path: /proc/<pid>/root would resolve
		// absolute symlinks (/var/run) in this mount namespace.
		cat := func(p string) string {
			out, err := run("cat", p)
			if err != nil {
				t.Errorf("cat %s in container: %v: %s", p, err, out)
			}
			return out
		}
		if got := cat("/etc/resolv.conf"); got != "search app.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n" {
			t.Errorf("container resolv.conf = %q", got)
		}
		if got := cat("/etc/hosts"); !strings.Contains(got, podIP+"\tweb\n") {
			t.Errorf("container hosts = %q, want %s web", got, podIP)
		}
		if got := cat("/var/run/secrets/kubernetes.io/serviceaccount/token"); got != "token-for-web" {
			t.Errorf("container token = %q", got)
		}
		if got := cat(workDir + "/init.txt"); got != "init\n" {
			t.Errorf("init container output = %q", got)
		}
		if got := cat(greetingPath); got != "hello" {
			t.Errorf("subPath mount = %q, want hello", got)
		}
		if out, err := run("/bin/sh", "-c", "echo x > /var/run/secrets/kubernetes.io/serviceaccount/x"); err == nil {
			t.Errorf("write to the read-only token volume succeeded: %s", out)
		}
		if out, err := run("/bin/hostname"); err != nil || strings.TrimSpace(out) != "web" {
			t.Errorf("hostname in container = %q, %v, want web", out, err)
		}
		environ := strings.Split(readFile(t, fmt.Sprintf("/proc/%d/environ", pid)), "\x00")
		for _, want := range []string{"POD_IP=" + podIP, "MSG=hello from web", "GREETING=hello", "HOSTNAME=web",
			"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT_HTTPS=443", "WEB_SERVICE_HOST=10.96.0.20",
			"WEB_PORT_80_TCP=tcp://10.96.0.20:80"} {
			if !slices.Contains(environ, want) {
				t.Errorf("container environment lacks %s: %q", want, environ)
			}
		}
		resp, err := http.Get("http://" + podIP + ":8080/env")
		if err != nil {
			t.Fatalf("reach the pod from the node: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "POD_NAME=web") {
			t.Errorf("pod /env = %q", body)
		}
	})

	t.Run("host network", func(t *testing.T) {
		waitFor(t, 30*time.Second, "hostnet pod ready", func() bool {
			p := getPod("hostnet")
			return p != nil && ready(p) && p.Status.PodIP == cfg.NodeIP
		})
		pid, cg := containerPID(t, em.k, hostnet.UID, "app")
		if got, want := inode(t, fmt.Sprintf("/proc/%d/ns/net", pid)), inode(t, "/proc/self/ns/net"); got != want {
			t.Errorf("hostNetwork container netns = %d, want the node's %d", got, want)
		}
		out, err := execInContainer(context.Background(), cfg.ShimPath, pid, []string{"PATH=" + defaultPath}, "/", cg, []string{"/bin/hostname"}, 5*time.Second)
		if err != nil || strings.TrimSpace(string(out)) != cfg.NodeName {
			t.Errorf("hostname in hostNetwork container = %q, %v, want %s", out, err, cfg.NodeName)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, em.k.net.netnsName(string(hostnet.UID)))); !os.IsNotExist(err) {
			t.Errorf("hostNetwork pod has a netns: %v", err)
		}
	})

	t.Run("crash loop", func(t *testing.T) {
		waitFor(t, 30*time.Second, "crash pod restarted twice", func() bool {
			p := getPod("crash")
			if p == nil || len(p.Status.ContainerStatuses) != 1 {
				return false
			}
			st := p.Status.ContainerStatuses[0]
			lt := st.LastTerminationState.Terminated
			return st.RestartCount >= 2 && lt != nil && lt.ExitCode == 3 && p.Status.Phase == corev1.PodRunning
		})
	})

	t.Run("completed pod releases its network", func(t *testing.T) {
		waitFor(t, 30*time.Second, "job succeeded", func() bool {
			p := getPod("job")
			return p != nil && p.Status.Phase == corev1.PodSucceeded
		})
		waitFor(t, 10*time.Second, "job netns and cgroup removed", func() bool {
			_, errNS := os.Stat(filepath.Join(netnsDir, em.k.net.netnsName(string(job.UID))))
			_, errCG := os.Stat(em.k.podCgroup(job.UID))
			return os.IsNotExist(errNS) && os.IsNotExist(errCG)
		})
	})

	t.Run("unknown image", func(t *testing.T) {
		waitFor(t, 30*time.Second, "ErrImagePull", func() bool {
			p := getPod("unknown")
			if p == nil || len(p.Status.ContainerStatuses) != 1 {
				return false
			}
			w := p.Status.ContainerStatuses[0].State.Waiting
			return w != nil && (w.Reason == reasonErrImagePull || w.Reason == reasonImagePullBackOff) && p.Status.Phase == corev1.PodPending
		})
	})

	t.Run("node status", func(t *testing.T) {
		waitFor(t, 10*time.Second, "node ready and lease", func() bool {
			n, err := client.CoreV1().Nodes().Get(context.Background(), cfg.NodeName, metav1.GetOptions{})
			if err != nil {
				return false
			}
			_, err = client.CoordinationV1().Leases(leaseNamespace).Get(context.Background(), cfg.NodeName, metav1.GetOptions{})
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && c.Reason == "KubeletReady" {
					return err == nil && n.Status.NodeInfo.ContainerRuntimeVersion == containerRuntimeVersion &&
						n.Status.Allocatable.Pods().Value() == 110
				}
			}
			return false
		})
	})

	t.Run("graceful deletion", func(t *testing.T) {
		pid, _ := containerPID(t, em.k, web.UID, "app")
		cg := em.k.podCgroup(web.UID)
		netns := filepath.Join(netnsDir, em.k.net.netnsName(string(web.UID)))
		p := getPod("web")
		p.DeletionTimestamp = ptr.To(metav1.Now())
		p.DeletionGracePeriodSeconds = ptr.To[int64](30)
		start := time.Now()
		if _, err := pods.Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "web deleted by the emulator", func() bool { return getPod("web") == nil })
		t.Logf("graceful deletion took %v", time.Since(start))
		if _, err := os.Stat(netns); !os.IsNotExist(err) {
			t.Errorf("netns %s still exists: %v", netns, err)
		}
		if _, err := os.Stat(cg); !os.IsNotExist(err) {
			t.Errorf("cgroup %s still exists: %v", cg, err)
		}
		if _, err := os.Stat(em.k.podDir(web.UID)); !os.IsNotExist(err) {
			t.Errorf("pod dir still exists: %v", err)
		}
		if pidAlive(pid) {
			t.Errorf("container process %d still alive", pid)
		}
		if got, err := os.ReadFile(filepath.Join(cfg.Root, "var/lib/hooks/prestop")); err != nil || string(got) != "bye\n" {
			t.Errorf("preStop hook output = %q, %v, want bye", got, err)
		}
	})

	t.Run("force deletion", func(t *testing.T) {
		cg := em.k.podCgroup(crash.UID)
		if err := pods.Delete(context.Background(), "crash", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "crash pod torn down", func() bool {
			_, err := os.Stat(cg)
			return os.IsNotExist(err)
		})
	})

	// Stopping the emulator stops the remaining pods but keeps their objects.
	hostnetPID, _ := containerPID(t, em.k, hostnet.UID, "app")
	em.stop(t)
	if pidAlive(hostnetPID) {
		t.Errorf("hostnet container %d survives the emulator", hostnetPID)
	}
	assertNoPodNetns(t, cfg.NetnsPrefix)

	t.Run("restart cleans leftovers and continues restart counts", func(t *testing.T) {
		// What a killed emulator leaves: a pod network, a netns and a
		// process in a pod cgroup.
		k, err := newKubelet(cfg, testLogger(t), client)
		if err != nil {
			t.Fatal(err)
		}
		ghost := podNetIdentity{UID: "0badc0de-0000-4000-8000-000000000000", Namespace: "app", Name: "ghost"}
		netns, _, err := k.net.setUp(context.Background(), ghost)
		if err != nil {
			t.Fatal(err)
		}
		p, err := startProc(context.Background(), procSpec{
			ShimPath: cfg.ShimPath, Binary: "/bin/sleep", Args: []string{"600"}, Env: []string{"PATH=" + defaultPath},
			Shim:   shimSpec{Netns: netns, Hostname: "ghost"},
			Cgroup: filepath.Join(k.podCgroup(k8stypes.UID(ghost.UID)), "c"), LogPath: filepath.Join(cfg.Root, "ghost.log"),
		})
		if err != nil {
			t.Fatal(err)
		}
		waited := make(chan struct{})
		go func() { p.wait(); close(waited) }()
		leases, _ := filepath.Glob(filepath.Join(cfg.Root, "var/lib/cni/networks/test-pods/10.*"))

		em := startEmulator(t, cfg, client)
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			t.Fatal("leftover process survives the emulator's start")
		}
		waitFor(t, 10*time.Second, "leftover netns and IPAM lease removed", func() bool {
			_, err := os.Stat(netns)
			for _, l := range leases {
				if data, err := os.ReadFile(l); err == nil && strings.Contains(string(data), ghost.UID) {
					return false
				}
			}
			return os.IsNotExist(err)
		})
		waitFor(t, 30*time.Second, "hostnet pod restarted", func() bool {
			p := getPod("hostnet")
			if p == nil || len(p.Status.ContainerStatuses) != 1 {
				return false
			}
			st := p.Status.ContainerStatuses[0]
			return ready(p) && st.RestartCount == 1 && st.LastTerminationState.Terminated != nil
		})
		if p := getPod("job"); p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("finished job phase = %s after restart, want Succeeded", p.Status.Phase)
		}
		em.stop(t)
		assertNoPodNetns(t, cfg.NetnsPrefix)
	})
}

// emulator is a running kubelet of a test.
type emulator struct {
	k      *kubelet
	cancel context.CancelFunc
	done   chan error
}

func startEmulator(tb testing.TB, cfg Config, client *fake.Clientset) *emulator {
	tb.Helper()
	k, err := newKubelet(cfg, testLogger(tb), client)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	em := &emulator{k: k, cancel: cancel, done: make(chan error, 1)}
	go func() { em.done <- k.run(ctx) }()
	tb.Cleanup(func() { em.stop(tb) })
	return em
}

// stop cancels the emulator and waits for Run to return.
func (em *emulator) stop(tb testing.TB) {
	tb.Helper()
	if em.done == nil {
		return
	}
	em.cancel()
	select {
	case err := <-em.done:
		if err != nil {
			tb.Errorf("run() = %v", err)
		}
	case <-time.After(40 * time.Second):
		tb.Fatal("run() did not return after cancel")
	}
	em.done = nil
}

// containerPID returns the main process of a running container and its
// cgroup, as the cluster harness finds it.
func containerPID(tb testing.TB, k *kubelet, uid k8stypes.UID, ctr string) (int, string) {
	tb.Helper()
	cg := filepath.Join(k.podCgroup(uid), ctr)
	procs, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(procs))
	if len(f) == 0 {
		tb.Fatalf("container %s has no process", ctr)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		tb.Fatal(err)
	}
	return pid, cg
}

func inode(tb testing.TB, path string) uint64 {
	tb.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		tb.Fatal(err)
	}
	return st.Ino
}

func assertNoPodNetns(tb testing.TB, prefix string) {
	tb.Helper()
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			tb.Errorf("netns %s left after stop", e.Name())
		}
	}
}
