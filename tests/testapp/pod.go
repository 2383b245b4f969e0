package testapp

import "os"

// PodInfo identifies the pod the process runs in, as the Kubernetes downward
// API exposes it through the environment. A PodInfo is a plain value and safe
// for concurrent use.
type PodInfo struct {
	Name      string // POD_NAME, else the host name
	Namespace string // POD_NAMESPACE
	Node      string // NODE_NAME
	IP        string // POD_IP
}

// PodInfoFromEnv reads the pod's identity from POD_NAME, POD_NAMESPACE,
// NODE_NAME and POD_IP. When POD_NAME is unset it falls back to
// os.Hostname, which in a pod is the pod name too.
func PodInfoFromEnv() PodInfo {
	return podInfoFrom(os.Getenv, os.Hostname)
}

func podInfoFrom(getenv func(string) string, hostname func() (string, error)) PodInfo {
	p := PodInfo{
		Name:      getenv("POD_NAME"),
		Namespace: getenv("POD_NAMESPACE"),
		Node:      getenv("NODE_NAME"),
		IP:        getenv("POD_IP"),
	}
	if p.Name == "" {
		if h, err := hostname(); err == nil {
			p.Name = h
		}
	}
	return p
}
