// Package tests holds weft's end-to-end tests. They run against the local
// cluster of package tests/cluster: a real Kubernetes control plane with nodes
// and pods as network namespaces on this machine.
package tests
