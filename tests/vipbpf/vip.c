// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * A minimal socket load balancer, the test stand-in for Cilium's (or any
 * other) cgroup/connect4 Service-VIP rewriter: a connect() to a VIP:port in
 * the services map is rewritten to that service's one backend. It rewrites
 * any socket type and any netns, and has no getpeername hook, so an app sees
 * the backend as its peer. It never rejects a connect.
 */

#include "vmlinux.h"
#include "bpf_helpers.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Key of services: a Service VIP, both fields network byte order. */
struct frontend {
	__be32 ip4;
	__be16 port;
	__u16 pad;
};

/* Value of services: where connects to the VIP go, network byte order. */
struct backend {
	__be32 ip4;
	__be16 port;
	__u16 pad;
};

/* Counters, one per-CPU copy; the Go side sums them. */
struct vip_stats {
	__u64 rewritten; /* connects to a VIP, rewritten to its backend */
	__u64 passed; /* connects to anything else */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct frontend);
	__type(value, struct backend);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vip_stats);
} stats SEC(".maps");

SEC("cgroup/connect4")
int vip_connect4(struct bpf_sock_addr *ctx)
{
	struct frontend key;
	struct backend *be;
	struct vip_stats *s;
	__u32 zero = 0;

	__builtin_memset(&key, 0, sizeof(key));
	key.ip4 = ctx->user_ip4;
	key.port = (__be16)ctx->user_port;
	be = bpf_map_lookup_elem(&services, &key);
	s = bpf_map_lookup_elem(&stats, &zero);
	if (!be) {
		if (s)
			s->passed++;
		return 1;
	}
	ctx->user_ip4 = be->ip4;
	ctx->user_port = be->port;
	if (s)
		s->rewritten++;
	return 1;
}
