// Package bench holds weft's benchmarks on the local cluster (package
// tests/cluster): they need root, take minutes, and are compiled only with
// -tags bench (make bench-enroll), one package at a time like the e2e tests.
// Results are ratios and deltas within one run, with the CPU busy time of
// every measurement window, as ARCHITECTURE.md §9 asks. It imports nothing
// from tests/e2e.
package bench
