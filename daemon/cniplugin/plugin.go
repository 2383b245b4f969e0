package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
)

// SupportedVersions are the CNI spec versions the plugin speaks. CHECK needs
// 0.4.0 or later and STATUS 1.1.0 (enforced by skel).
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// About is printed when the plugin runs without CNI_COMMAND.
const About = "weft-cni: weft's chained CNI plugin (enrolls pods of meshed namespaces before they start)"

// CNI error codes of this plugin (100 and up are plugin specific).
const (
	// ErrCodeNotEnrolled: CHECK found a pod that belongs in the mesh but
	// the agent has not enrolled.
	ErrCodeNotEnrolled uint = 100
	// errCodePluginNotAvailable is the spec's STATUS error "plugin not
	// available" (CNI 1.1.0).
	errCodePluginNotAvailable uint = 50
)

const failOpenHint = "set failOpen to start pods unmeshed"

// DependencyError reports that the plugin cannot mesh a pod that may belong
// in the mesh because the agent or the API server cannot be reached or the
// agent refused. Config.FailOpen turns it into a warning; otherwise the CNI
// command fails with code 11 (try again later).
type DependencyError struct {
	// Msg says what went wrong, naming the pod and the dependency.
	Msg string
	Err error
}

func (e *DependencyError) Error() string {
	return fmt.Sprintf("weft-cni: %s: %v (%s)", e.Msg, e.Err, failOpenHint)
}
func (e *DependencyError) Unwrap() error { return e.Err }

// Plugin implements the CNI commands. Its zero value is not usable; create
// it with New. Each CNI invocation is one process, so a Plugin is used by
// one command at a time.
type Plugin struct {
	newKube  func(cfg *Config) (Kube, error)
	newAgent func(cfg *Config) Agent
	stdout   io.Writer
	stderr   io.Writer
}

// New returns the plugin with its real clients, writing the CNI result to
// stdout and, without a logFile, warnings to stderr.
func New() *Plugin {
	return &Plugin{
		newKube: func(cfg *Config) (Kube, error) { return newAPIKube(cfg.Kubeconfig, cfg.Timeout()) },
		newAgent: func(cfg *Config) Agent {
			return newSocketAgent(cfg.AgentSocket)
		},
		stdout: os.Stdout,
		stderr: os.Stderr,
	}
}

// Funcs are the plugin's command handlers for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status}
}

// Main runs one CNI command (cmd/weft-cni).
func Main() {
	skel.PluginMainFuncs(New().Funcs(), SupportedVersions, About)
}

// Add handles CNI ADD: it enrolls a pod that belongs in the mesh through the
// agent and passes the previous result through unchanged.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	start := time.Now()
	cfg, err := ParseConfig(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	log, closeLog := p.logger(cfg)
	defer closeLog()
	log = log.With("cmd", "ADD", "containerID", args.ContainerID, "netns", args.Netns)
	if cfg.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "weft-cni: no prevResult: weft-cni is a chained plugin and must follow a plugin that sets up the pod's interface (e.g. bridge or ptp)", "")
	}
	ref, ok, err := parseArgs(args.Args)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "weft-cni: "+err.Error(), "")
	}
	if !ok {
		log.Info("not a Kubernetes pod: passing through")
		return p.printResult(cfg)
	}
	log = log.With("pod", ref.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout())
	defer cancel()

	d, err := p.decide(ctx, cfg, ref)
	if err == nil && d.Enroll {
		var resp cniv1.Response
		resp, err = p.enroll(ctx, cfg, args, ref)
		if err == nil && !resp.Enrolled {
			d = Decision{Reason: "agent left the pod out of the mesh: " + resp.Reason}
			log.Warn("agent declined to enroll pod", "reason", resp.Reason)
		}
	}
	if err != nil {
		var dep *DependencyError
		if errors.As(err, &dep) && cfg.FailOpen {
			log.Warn("starting pod unmeshed (failOpen)", "err", err, "took", time.Since(start))
			return p.printResult(cfg)
		}
		log.Error("refuse pod", "err", err, "took", time.Since(start))
		return toCNIError(err)
	}
	log.Info("pod handled", "enrolled", d.Enroll, "reason", d.Reason, "took", time.Since(start))
	return p.printResult(cfg)
}

// Check handles CNI CHECK: a pod that belongs in the mesh must be enrolled.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	cfg, err := ParseConfig(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	log, closeLog := p.logger(cfg)
	defer closeLog()
	log = log.With("cmd", "CHECK", "containerID", args.ContainerID)
	if cfg.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "weft-cni: no prevResult: weft-cni is a chained plugin", "")
	}
	ref, ok, err := parseArgs(args.Args)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "weft-cni: "+err.Error(), "")
	}
	if !ok {
		return nil
	}
	log = log.With("pod", ref.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout())
	defer cancel()
	d, err := p.decide(ctx, cfg, ref)
	if err == nil && d.Enroll {
		var resp cniv1.Response
		req, rerr := addRequest(cfg, args, ref)
		if rerr != nil {
			return toCNIError(rerr)
		}
		resp, err = p.newAgent(cfg).Check(ctx, req)
		if err != nil {
			err = agentError(cfg, ref, "check", err)
		} else if !resp.Enrolled {
			return types.NewError(ErrCodeNotEnrolled, fmt.Sprintf("weft-cni: pod %s belongs in the mesh (%s) but the weft agent at %s has not enrolled it: %s", ref, d.Reason, cfg.AgentSocket, resp.Error), "")
		}
	}
	if err != nil {
		var dep *DependencyError
		if errors.As(err, &dep) && cfg.FailOpen {
			log.Warn("cannot check pod (failOpen)", "err", err)
			return nil
		}
		return toCNIError(err)
	}
	log.Info("pod checked", "enrolled", d.Enroll, "reason", d.Reason)
	return nil
}

// Del handles CNI DEL: it tells the agent, best effort, and never fails.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	start := time.Now()
	cfg, err := ParseConfig(args.StdinData)
	if err != nil {
		// A broken config must not leak the pod's other resources: the
		// runtime would retry DEL forever.
		fmt.Fprintf(p.stderr, "weft-cni: DEL of %s ignored: %v\n", args.ContainerID, err)
		return nil
	}
	log, closeLog := p.logger(cfg)
	defer closeLog()
	log = log.With("cmd", "DEL", "containerID", args.ContainerID)
	ref, ok, err := parseArgs(args.Args)
	if err != nil || !ok || cfg.Excluded(ref.Namespace) {
		log.Info("nothing to release", "args", args.Args, "err", err)
		return nil
	}
	log = log.With("pod", ref.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout())
	defer cancel()
	req := cniv1.DelRequest{
		Version: cniv1.Version, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		PodNamespace: ref.Namespace, PodName: ref.Name, PodUID: ref.UID,
	}
	if err := p.newAgent(cfg).Del(ctx, req); err != nil {
		log.Warn("tell agent about deleted pod (ignored)", "err", err, "took", time.Since(start))
		return nil
	}
	log.Info("pod released", "took", time.Since(start))
	return nil
}

// Status handles CNI STATUS (1.1.0): the plugin can serve ADD when the agent
// answers on its socket, or always with failOpen.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	cfg, err := ParseConfig(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	if cfg.FailOpen {
		return nil
	}
	conn, err := net.DialTimeout("unix", cfg.AgentSocket, time.Second)
	if err != nil {
		return types.NewError(errCodePluginNotAvailable, fmt.Sprintf("weft-cni: the weft agent at %s is unreachable: %v", cfg.AgentSocket, err), "")
	}
	conn.Close()
	return nil
}

// decide reads the pod's namespace (and, if that is enrolled, the pod) from
// the API server and decides.
func (p *Plugin) decide(ctx context.Context, cfg *Config, ref podRef) (Decision, error) {
	if cfg.Excluded(ref.Namespace) {
		return Decision{Reason: "namespace " + ref.Namespace + " is excluded"}, nil
	}
	apiErr := func(err error) error {
		return &DependencyError{
			Msg: fmt.Sprintf("cannot tell whether pod %s belongs in the mesh: the API server could not be read with kubeconfig %s", ref, cfg.Kubeconfig),
			Err: err,
		}
	}
	kube, err := p.newKube(cfg)
	if err != nil {
		return Decision{}, apiErr(err)
	}
	ns, err := kube.Namespace(ctx, ref.Namespace)
	if err != nil {
		return Decision{}, apiErr(err)
	}
	if d := NamespaceEnrolled(cfg, ns); !d.Enroll {
		return d, nil
	}
	pod, err := kube.Pod(ctx, ref.Namespace, ref.Name)
	if err != nil {
		return Decision{}, apiErr(err)
	}
	if ref.UID != "" && string(pod.UID) != ref.UID {
		return Decision{}, apiErr(fmt.Errorf("pod %s has UID %s, CNI_ARGS name UID %s (pod recreated?)", ref, pod.UID, ref.UID))
	}
	return Decide(cfg, ns, pod), nil
}

func (p *Plugin) enroll(ctx context.Context, cfg *Config, args *skel.CmdArgs, ref podRef) (cniv1.Response, error) {
	req, err := addRequest(cfg, args, ref)
	if err != nil {
		return cniv1.Response{}, err
	}
	resp, err := p.newAgent(cfg).Add(ctx, req)
	if err != nil {
		return resp, agentError(cfg, ref, "enroll", err)
	}
	return resp, nil
}

// agentError words a failed agent call for the operator.
func agentError(cfg *Config, ref podRef, verb string, err error) error {
	var unreachable *UnreachableError
	var refused *RefusedError
	switch {
	case errors.As(err, &unreachable):
		return &DependencyError{
			Msg: fmt.Sprintf("pod %s is in an enrolled namespace but the weft agent at %s is unreachable", ref, cfg.AgentSocket),
			Err: unreachable.Err,
		}
	case errors.As(err, &refused):
		return &DependencyError{
			Msg: fmt.Sprintf("pod %s is in an enrolled namespace but the weft agent at %s refused to %s it (HTTP %d)", ref, cfg.AgentSocket, verb, refused.Status),
			Err: errors.New(refused.Msg),
		}
	}
	return fmt.Errorf("%s pod %s: %w", verb, ref, err)
}

func addRequest(cfg *Config, args *skel.CmdArgs, ref podRef) (cniv1.AddRequest, error) {
	ips, err := podIPs(cfg.PrevResult)
	if err != nil {
		return cniv1.AddRequest{}, err
	}
	return cniv1.AddRequest{
		Version: cniv1.Version, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		PodNamespace: ref.Namespace, PodName: ref.Name, PodUID: ref.UID, IPs: ips,
	}, nil
}

// podIPs returns the addresses prevResult assigned inside the pod (those of
// host-side interfaces are skipped).
func podIPs(prev types.Result) ([]netip.Addr, error) {
	r, err := types100.NewResultFromResult(prev)
	if err != nil {
		return nil, fmt.Errorf("convert prevResult: %w", err)
	}
	var ips []netip.Addr
	for _, ip := range r.IPs {
		if i := ip.Interface; i != nil && *i >= 0 && *i < len(r.Interfaces) && r.Interfaces[*i].Sandbox == "" {
			continue
		}
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		ips = append(ips, a.Unmap())
	}
	return ips, nil
}

func (p *Plugin) printResult(cfg *Config) error {
	res, err := cfg.PrevResult.GetAsVersion(cfg.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("weft-cni: convert prevResult to %s: %v", cfg.CNIVersion, err), "")
	}
	if err := res.PrintTo(p.stdout); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("weft-cni: print result: %v", err), "")
	}
	return nil
}

// logger returns the command's logger: JSON into logFile, or warnings and
// errors as text on stderr. Never stdout, which carries the result.
func (p *Plugin) logger(cfg *Config) (*slog.Logger, func()) {
	if cfg.LogFile != "" {
		f, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			h := slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})
			return slog.New(h).With("component", "weft-cni", "pid", os.Getpid()), func() { f.Close() }
		}
		fmt.Fprintf(p.stderr, "weft-cni: open log file: %v\n", err)
	}
	h := slog.NewTextHandler(p.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	return slog.New(h).With("component", "weft-cni"), func() {}
}

// toCNIError maps an error to the CNI error the runtime sees.
func toCNIError(err error) error {
	var cniErr *types.Error
	var dep *DependencyError
	var cfgErr *ConfigError
	switch {
	case errors.As(err, &cniErr):
		return cniErr
	case errors.As(err, &dep):
		return types.NewError(types.ErrTryAgainLater, dep.Error(), "")
	case errors.As(err, &cfgErr):
		return types.NewError(types.ErrInvalidNetworkConfig, cfgErr.Error(), "")
	}
	return types.NewError(types.ErrInternal, "weft-cni: "+err.Error(), "")
}
