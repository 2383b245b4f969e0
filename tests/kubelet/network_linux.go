package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// netnsDir is where `ip netns` keeps named network namespaces.
const netnsDir = "/run/netns"

// podNetwork attaches pods to the node's CNI network. It is safe for
// concurrent use (each call execs its own plugins).
type podNetwork struct {
	cni     *libcni.CNIConfig
	confDir string
	prefix  string
	log     *slog.Logger
}

func newPodNetwork(cfg Config, log *slog.Logger) *podNetwork {
	cache := filepath.Join(cfg.Root, "var/lib/cni/cache")
	// An explicit exec: libcni's lazy default is not safe for concurrent use.
	var exec invoke.Exec = &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	if len(cfg.CNINodeDirs) > 0 && cfg.ShimPath != "" {
		exec = newNodeFSExec(cfg, exec)
	}
	return &podNetwork{
		cni:     libcni.NewCNIConfigWithCacheDir([]string{cfg.CNIBinDir}, cache, exec),
		confDir: cfg.CNIConfDir,
		prefix:  cfg.NetnsPrefix,
		log:     log,
	}
}

// netnsName names a pod's network namespace.
func (n *podNetwork) netnsName(uid string) string {
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return n.prefix + uid
}

// confList loads the first *.conflist of the conf dir, in lexical order.
func (n *podNetwork) confList() (*libcni.NetworkConfigList, error) {
	files, err := filepath.Glob(filepath.Join(n.confDir, "*.conflist"))
	if err != nil {
		return nil, fmt.Errorf("list cni configs: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("load cni config: no *.conflist in %s", n.confDir)
	}
	list, err := libcni.NetworkConfFromFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("load cni config %s: %w", files[0], err)
	}
	return list, nil
}

// ready reports whether a network configuration is present, which is when
// kubelet reports the node's network as ready.
func (n *podNetwork) ready() bool {
	files, _ := filepath.Glob(filepath.Join(n.confDir, "*.conflist"))
	return len(files) > 0
}

func runIP(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes2str(out))
	}
	return nil
}

func bytes2str(b []byte) string { return strings.TrimSpace(string(b)) }

// createNetns creates the named network namespace with lo up and returns its
// path. A leftover namespace of the same name is deleted first.
func createNetns(ctx context.Context, name string) (string, error) {
	path := filepath.Join(netnsDir, name)
	if _, err := os.Stat(path); err == nil {
		if err := deleteNetns(ctx, name); err != nil {
			return "", err
		}
	}
	if err := runIP(ctx, "netns", "add", name); err != nil {
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := runIP(ctx, "-n", name, "link", "set", "lo", "up"); err != nil {
		_ = deleteNetns(ctx, name)
		return "", fmt.Errorf("set lo up in netns %s: %w", name, err)
	}
	return path, nil
}

// deleteNetns deletes a named network namespace; a missing one is no error.
func deleteNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := runIP(ctx, "netns", "delete", name); err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// podNetIdentity is what CNI needs to know about a pod.
type podNetIdentity struct {
	UID, Namespace, Name string
}

func (n *podNetwork) runtimeConf(id podNetIdentity, netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id.UID,
		NetNS:       netns,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", id.Namespace},
			{"K8S_POD_NAME", id.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", id.UID},
			{"K8S_POD_UID", id.UID},
		},
	}
}

// setUp creates the pod's network namespace and runs CNI ADD in it. It
// returns the namespace's path and the pod's IPs; on error nothing is left.
func (n *podNetwork) setUp(ctx context.Context, id podNetIdentity) (string, []string, error) {
	list, err := n.confList()
	if err != nil {
		return "", nil, err
	}
	name := n.netnsName(id.UID)
	path, err := createNetns(ctx, name)
	if err != nil {
		return "", nil, err
	}
	rt := n.runtimeConf(id, path)
	res, err := n.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		_ = n.cni.DelNetworkList(context.WithoutCancel(ctx), list, rt)
		_ = deleteNetns(context.WithoutCancel(ctx), name)
		return "", nil, fmt.Errorf("add pod %s/%s to network %s: %w", id.Namespace, id.Name, list.Name, err)
	}
	ips, err := resultIPs(res)
	if err != nil {
		_ = n.tearDown(context.WithoutCancel(ctx), id)
		return "", nil, err
	}
	return path, ips, nil
}

// resultIPs returns the addresses a CNI result assigned inside the sandbox
// (addresses of host-side interfaces are skipped).
func resultIPs(res cnitypes.Result) ([]string, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("convert cni result: %w", err)
	}
	var ips []string
	for _, ip := range r.IPs {
		if i := ip.Interface; i != nil && *i >= 0 && *i < len(r.Interfaces) && r.Interfaces[*i].Sandbox == "" {
			continue
		}
		ips = append(ips, ip.Address.IP.String())
	}
	if len(ips) == 0 {
		return nil, errors.New("read cni result: no pod IP")
	}
	return ips, nil
}

// tearDown runs CNI DEL for the pod (with the configuration cached at ADD
// time when there is one) and deletes its network namespace.
func (n *podNetwork) tearDown(ctx context.Context, id podNetIdentity) error {
	name := n.netnsName(id.UID)
	path := filepath.Join(netnsDir, name)
	if _, err := os.Stat(path); err != nil {
		path = ""
	}
	var errs []error
	atts, err := n.cni.GetCachedAttachments(id.UID)
	if err != nil {
		errs = append(errs, fmt.Errorf("read cni cache: %w", err))
	}
	if len(atts) == 0 {
		// Without a cache entry there may still be IPAM state: DEL with the
		// current configuration is idempotent.
		if list, err := n.confList(); err == nil {
			if err := n.cni.DelNetworkList(ctx, list, n.runtimeConf(id, path)); err != nil {
				errs = append(errs, fmt.Errorf("delete pod %s/%s from network %s: %w", id.Namespace, id.Name, list.Name, err))
			}
		}
	}
	for _, att := range atts {
		if err := n.delAttachment(ctx, att, path); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteNetns(ctx, name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// delAttachment runs CNI DEL for one cached attachment.
func (n *podNetwork) delAttachment(ctx context.Context, att *libcni.NetworkAttachment, netns string) error {
	list, err := libcni.NetworkConfFromBytes(att.Config)
	if err != nil {
		return fmt.Errorf("parse cached cni config of %s: %w", att.ContainerID, err)
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    att.ContainerID,
		NetNS:          netns,
		IfName:         att.IfName,
		Args:           att.CniArgs,
		CapabilityArgs: att.CapabilityArgs,
	}
	if err := n.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("delete %s from network %s: %w", att.ContainerID, att.Network, err)
	}
	return nil
}

// cleanLeftovers undoes the networking of a previous emulator run: CNI DEL
// for every cached attachment and deletion of every namespace with the prefix.
func (n *podNetwork) cleanLeftovers(ctx context.Context) error {
	var errs []error
	atts, err := n.cni.GetCachedAttachments("")
	if err != nil {
		errs = append(errs, fmt.Errorf("read cni cache: %w", err))
	}
	for _, att := range atts {
		netns := att.NetNS
		if _, err := os.Stat(netns); netns == "" || err != nil {
			netns = ""
		}
		n.log.Info("cleaning leftover pod network", "containerID", att.ContainerID, "netns", netns)
		if err := n.delAttachment(ctx, att, netns); err != nil {
			errs = append(errs, err)
		}
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list netns: %w", err))
	}
	for _, e := range entries {
		if n.prefix != "" && strings.HasPrefix(e.Name(), n.prefix) {
			n.log.Info("deleting leftover netns", "netns", e.Name())
			if err := deleteNetns(ctx, e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
