// Package kubeconfig loads the API client configuration of weft's in-cluster
// components (agent, CNI installer, operator): the kubeconfig file a flag
// names, or the pod's in-cluster configuration when the flag is empty.
package kubeconfig

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Load returns the REST config of the kubeconfig file at path, or the
// in-cluster config when path is "".
func Load(path string) (*rest.Config, error) {
	if path != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("load in-cluster API config (outside a cluster, pass --kubeconfig): %w", err)
	}
	return rc, nil
}
