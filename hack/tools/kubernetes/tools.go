//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools
