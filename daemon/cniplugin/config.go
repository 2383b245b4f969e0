package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	cniv1 "github.com/weftmesh/weft/api/cni/v1"
)

// Defaults of Config.
const (
	DefaultKubeconfig     = "/etc/cni/net.d/weft-cni.kubeconfig"
	DefaultTimeoutSeconds = 10
	maxTimeoutSeconds     = 300
)

// DefaultExcludeNamespaces are never enrolled when excludeNamespaces is not
// set. kube-system is excluded even when it is.
var DefaultExcludeNamespaces = []string{"kube-system", "weft-system"}

// Config is the plugin's entry in the network configuration list:
//
//	{"type": "weft-cni", "agentSocket": "/var/run/weft/cni.sock",
//	 "kubeconfig": "/etc/cni/net.d/weft-cni.kubeconfig", "failOpen": false,
//	 "excludeNamespaces": ["kube-system", "weft-system"],
//	 "timeoutSeconds": 10, "logFile": ""}
type Config struct {
	types.NetConf

	// AgentSocket is the agent's unix socket (default cniv1.DefaultSocket).
	AgentSocket string `json:"agentSocket"`
	// Kubeconfig is used to read namespaces and pods from the API server
	// (default DefaultKubeconfig).
	Kubeconfig string `json:"kubeconfig"`
	// FailOpen lets ADD (and CHECK) succeed, unmeshed, when the agent or the
	// API server cannot be reached or the agent refuses.
	FailOpen bool `json:"failOpen"`
	// ExcludeNamespaces are never enrolled (default
	// DefaultExcludeNamespaces); kube-system always is.
	ExcludeNamespaces []string `json:"excludeNamespaces"`
	// TimeoutSeconds bounds one CNI command (API server and agent together),
	// default DefaultTimeoutSeconds.
	TimeoutSeconds int `json:"timeoutSeconds"`
	// LogFile receives JSON logs when set; otherwise warnings go to stderr.
	LogFile string `json:"logFile"`
}

// Timeout is TimeoutSeconds as a duration.
func (c *Config) Timeout() time.Duration { return time.Duration(c.TimeoutSeconds) * time.Second }

// Excluded reports whether namespace ns is never enrolled.
func (c *Config) Excluded(ns string) bool {
	return ns == "kube-system" || slices.Contains(c.ExcludeNamespaces, ns)
}

// ConfigError reports an invalid plugin configuration.
type ConfigError struct {
	Err error
}

func (e *ConfigError) Error() string { return "weft-cni: invalid configuration: " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// ParseConfig decodes the plugin's configuration (CNI stdin), fills in
// defaults, validates it and parses prevResult when there is one.
func ParseConfig(stdin []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, &ConfigError{Err: fmt.Errorf("decode config: %w", err)}
	}
	if c.AgentSocket == "" {
		c.AgentSocket = cniv1.DefaultSocket
	}
	if c.Kubeconfig == "" {
		c.Kubeconfig = DefaultKubeconfig
	}
	if c.ExcludeNamespaces == nil {
		c.ExcludeNamespaces = slices.Clone(DefaultExcludeNamespaces)
	}
	if c.TimeoutSeconds == 0 {
		c.TimeoutSeconds = DefaultTimeoutSeconds
	}
	var errs []error
	if !filepath.IsAbs(c.AgentSocket) {
		errs = append(errs, fmt.Errorf("agentSocket %q is not an absolute path", c.AgentSocket))
	}
	if !filepath.IsAbs(c.Kubeconfig) {
		errs = append(errs, fmt.Errorf("kubeconfig %q is not an absolute path", c.Kubeconfig))
	}
	if c.LogFile != "" && !filepath.IsAbs(c.LogFile) {
		errs = append(errs, fmt.Errorf("logFile %q is not an absolute path", c.LogFile))
	}
	if c.TimeoutSeconds < 0 || c.TimeoutSeconds > maxTimeoutSeconds {
		errs = append(errs, fmt.Errorf("timeoutSeconds %d out of range 1..%d", c.TimeoutSeconds, maxTimeoutSeconds))
	}
	for _, ns := range c.ExcludeNamespaces {
		if ns == "" {
			errs = append(errs, errors.New("excludeNamespaces has an empty name"))
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, &ConfigError{Err: err}
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.NetConf); err != nil {
			return nil, &ConfigError{Err: fmt.Errorf("parse prevResult: %w", err)}
		}
	}
	return &c, nil
}
