package redirect

// Regenerate with `go generate ./bpf/...` (clang and llvm-strip in PATH; the
// Makefile pins BPF2GO_CC=clang-14). The output, redirect_bpfel.go and
// redirect_bpfel.o, is committed.
//go:generate go tool bpf2go -tags linux -target bpfel -type pod_info -type ingress_config -type orig_addr -type orig_key -type counter_set -type datapath_event redirect redirect.c -- -I../headers
