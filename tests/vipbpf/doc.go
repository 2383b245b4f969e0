// Package vipbpf is a test-only Service-VIP rewriter: a cgroup/connect4
// program (vip.c) that, like Cilium's socket load balancer, rewrites a
// connect() to a configured VIP:port to that service's backend ip:port. The
// tests of this package prove that weft's outbound redirection (bpf/redirect)
// and such a third-party connect4 program coexist in either attach order.
//
// It is test harness: only tests/ may import it, and it must never import a
// weft component (daemon, ztunnel, l7proxy, operator).
package vipbpf
