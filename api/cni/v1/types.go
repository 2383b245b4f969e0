package cniv1

import (
	"errors"
	"fmt"
	"net/netip"
)

// Version is the value of the version field of every v1 request.
const Version = "v1"

// DefaultSocket is where the agent listens by default.
const DefaultSocket = "/var/run/weft/cni.sock"

// Request paths.
const (
	PathAdd   = "/v1/pods/add"
	PathDel   = "/v1/pods/del"
	PathCheck = "/v1/pods/check"
)

// ContentType is the media type of request and response bodies.
const ContentType = "application/json"

// MaxBodyBytes bounds a request body; receivers reject larger ones.
const MaxBodyBytes = 1 << 20

// AddRequest asks the agent to enroll a pod (add) or whether it is enrolled
// (check). Its fields are what the container runtime told the plugin.
type AddRequest struct {
	// Version is [Version].
	Version string `json:"version"`
	// ContainerID is CNI_CONTAINERID: the pod sandbox's ID.
	ContainerID string `json:"containerID"`
	// Netns is CNI_NETNS: the path of the pod's network namespace
	// (e.g. /var/run/netns/cni-1234), valid in the agent's mount namespace.
	Netns string `json:"netns"`
	// IfName is CNI_IFNAME, the pod's interface (usually eth0).
	IfName string `json:"ifName"`
	// PodNamespace, PodName and PodUID identify the pod (from CNI_ARGS
	// K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID).
	PodNamespace string `json:"podNamespace"`
	PodName      string `json:"podName"`
	PodUID       string `json:"podUID,omitempty"`
	// IPs are the pod's addresses from the previous plugin's result.
	IPs []netip.Addr `json:"ips,omitempty"`
}

// DelRequest asks the agent to release a pod. Netns may be empty: DEL may
// come after the namespace is gone.
type DelRequest struct {
	Version      string `json:"version"`
	ContainerID  string `json:"containerID"`
	Netns        string `json:"netns,omitempty"`
	IfName       string `json:"ifName,omitempty"`
	PodNamespace string `json:"podNamespace"`
	PodName      string `json:"podName"`
	PodUID       string `json:"podUID,omitempty"`
}

// Response is the body of every answer.
type Response struct {
	// Enrolled reports whether the pod is (now) in the mesh.
	Enrolled bool `json:"enrolled"`
	// Reason says why a pod was not enrolled, for logs and events.
	Reason string `json:"reason,omitempty"`
	// Error is set on every non-200 answer (and on check when the pod is
	// not enrolled).
	Error string `json:"error,omitempty"`
}

// ErrInvalid is matched (errors.Is) by every validation error of this
// package.
var ErrInvalid = errors.New("invalid request")

// VersionError reports a request of another protocol version.
type VersionError struct {
	Got string
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("unsupported protocol version %q (this agent speaks %q)", e.Got, Version)
}

// Is makes a VersionError match ErrInvalid.
func (e *VersionError) Is(target error) bool { return target == ErrInvalid }

// FieldError reports a missing or malformed required field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("field %s: %s", e.Field, e.Msg) }

// Is makes a FieldError match ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Validate checks the version and the fields the agent needs to enroll.
func (r AddRequest) Validate() error {
	if r.Version != Version {
		return &VersionError{Got: r.Version}
	}
	if err := required("containerID", r.ContainerID); err != nil {
		return err
	}
	if err := required("netns", r.Netns); err != nil {
		return err
	}
	if err := required("podNamespace", r.PodNamespace); err != nil {
		return err
	}
	if err := required("podName", r.PodName); err != nil {
		return err
	}
	for i, ip := range r.IPs {
		if !ip.IsValid() {
			return &FieldError{Field: fmt.Sprintf("ips[%d]", i), Msg: "not an IP address"}
		}
	}
	return nil
}

// Validate checks the version and the fields the agent needs to release a
// pod: the container ID, or else the pod's namespace and name.
func (r DelRequest) Validate() error {
	if r.Version != Version {
		return &VersionError{Got: r.Version}
	}
	if r.ContainerID == "" && (r.PodNamespace == "" || r.PodName == "") {
		return &FieldError{Field: "containerID", Msg: "required unless podNamespace and podName are set"}
	}
	return nil
}

func required(field, v string) error {
	if v == "" {
		return &FieldError{Field: field, Msg: "required"}
	}
	return nil
}
