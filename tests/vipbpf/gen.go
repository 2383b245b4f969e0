package vipbpf

// Regenerate with `go generate ./tests/vipbpf/...` (clang and llvm-strip in
// PATH; the Makefile pins BPF2GO_CC=clang-14). The output, vip_bpfel.go and
// vip_bpfel.o, is committed.
//go:generate go tool bpf2go -tags linux -target bpfel -type frontend -type backend -type vip_stats vip vip.c -- -I../../bpf/headers
