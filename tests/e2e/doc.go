// Package e2e holds end-to-end tests that run on the local cluster (package
// tests/cluster). They need root and run with `go test -p 1`.
package e2e
