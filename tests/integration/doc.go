// Package integration holds tests of weft's API surface against a real
// Kubernetes API server (the local cluster of package tests/cluster): the
// CRDs the chart installs, their validation, status subresources and printer
// columns, and the Go types in api/ that clients use to read and write them.
// They need root (the harness creates network namespaces) and run with
// `go test -p 1`; without root they skip, unless WEFT_REQUIRE_PRIVILEGED=1
// makes them fail.
//
// This package holds tests only; nothing outside tests/ may import it.
package integration
