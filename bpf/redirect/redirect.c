// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * weft traffic redirection, in the pod's network namespace
 * (ARCHITECTURE.md §3.1).
 *
 * Outbound, attached once at the cgroup v2 root:
 *   cgroup/connect4, cgroup/connect6   rewrite a TCP connect() from an
 *                                      enrolled netns to ztunnel's outbound
 *                                      listener 127.0.0.1:<outbound_port>
 *                                      in that same netns, and remember the
 *                                      original destination by socket cookie
 *   sockops                            re-key it by (netns cookie, src ip,
 *                                      src port) once the local port is
 *                                      known, for ztunnel to look up
 *   cgroup/getpeername4/6,             keep the app's view of the connection
 *   cgroup/getsockname4/6              unchanged
 *
 * Inbound, tcx ingress on the pod's eth0 (attached inside the pod netns):
 *   a TCP SYN that no existing socket owns is assigned (bpf_sk_assign) to
 *   ztunnel's in-pod plaintext listener (inbound_port, 15006); SYNs to the
 *   HBONE port (15008) and from the node's probe address pass; if no listener
 *   can take the SYN it is dropped (fail closed).
 *
 * Where a program gives up on a connection it should redirect (a map update
 * fails, no listener can take an inbound SYN) it writes a datapath_event to
 * the events ring buffer; events that do not fit are counted in events_lost.
 *
 * Only IPv4 is meshed. IPv4-mapped IPv6 destinations (::ffff:a.b.c.d) are
 * handled by connect6/getpeername6/getsockname6 like IPv4; pure IPv6 passes.
 */

#include "vmlinux.h"
#include "bpf_helpers.h"
#include "bpf_endian.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Not in vmlinux.h: preprocessor constants of the UAPI headers. */
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define ETH_P_IP 0x0800
#define IP_OFFSET 0x1fff
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
#define LOOPBACK4 0x7f000001 /* 127.0.0.1, host order */

/* tcx verdicts (enum tcx_action_base; Debian's 6.1 UAPI headers lack it). */
#define WEFT_TCX_NEXT -1
#define WEFT_TCX_PASS 0
#define WEFT_TCX_DROP 2

/* Defaults for zero fields of pod_info / ingress_config. */
#define DEFAULT_OUTBOUND_PORT 15001
#define DEFAULT_INBOUND_PORT 15006
#define DEFAULT_HBONE_PORT 15008
#define ETH_HLEN 14

/*
 * Sockets whose mark matches (mark & weft_mark_mask) == weft_mark are never
 * redirected: ztunnel marks every socket it creates in a pod netns. The Go
 * package exports the defaults as SocketMark/SocketMarkMask and may override
 * them before loading.
 */
volatile const __u32 weft_mark = 0x539;
volatile const __u32 weft_mark_mask = 0xfff;

/*
 * Value of mesh_netns: one enrolled pod netns. Ports are host byte order,
 * addresses network byte order.
 */
struct pod_info {
	__u32 pod_id;
	__u32 flags; /* reserved, 0 */
	__be32 ip4; /* the pod's own IPv4: connects to it are not redirected */
	__u16 outbound_port; /* ztunnel's listener on 127.0.0.1; 0 = 15001 */
	__u16 pad;
};

/*
 * Value of ingress_cfg, keyed by the pod's IPv4 address (network byte
 * order): the tcx program's per-pod settings. tc programs cannot learn the
 * pod netns (bpf_get_netns_cookie(skb) reports the netns of skb->sk, which a
 * packet arriving from another netns does not have: init_net), and an
 * ifindex is only unique within its netns; the destination of an inbound SYN
 * is the pod IP, which is unique among this agent's pods.
 */
struct ingress_config {
	__u64 netns_cookie; /* the pod netns, for the agent's bookkeeping */
	__be32 probe_ip4; /* SYNs from this source (kubelet probes) pass; 0 = none */
	__u16 inbound_port; /* ztunnel's plaintext listener; 0 = 15006 */
	__u16 hbone_port; /* passes untouched; 0 = 15008 */
	__u32 flags; /* reserved, 0 */
	__u32 pad;
};

/* Original destination of a redirected connection. */
struct orig_addr {
	__be32 ip4; /* original destination address */
	__be16 port; /* original destination port, network byte order */
	__u8 family; /* AF_INET, or AF_INET6 for a v4-mapped destination */
	__u8 pad;
	__u32 pod_id; /* pod_info.pod_id of the client */
	__be32 local_ip4; /* the pod IP getsockname reports instead of 127.0.0.1 */
};

/* Key of orig_dst: the redirected connection as ztunnel's listener sees its peer. */
struct orig_key {
	__u64 netns_cookie;
	__be32 src_ip4;
	__u16 src_port; /* host byte order */
	__u16 pad;
};

/* Counters, one per-CPU copy; the Go side sums them. */
struct counter_set {
	__u64 redirected;
	__u64 skipped_udp; /* not a TCP stream socket */
	__u64 skipped_loopback;
	__u64 skipped_self; /* destination is the pod's own IP */
	__u64 skipped_marked; /* ztunnel's own sockets */
	__u64 skipped_bound_dev; /* SO_BINDTODEVICE */
	__u64 skipped_ipv6; /* pure IPv6 destination (not meshed) */
	__u64 inbound_assigned;
	__u64 inbound_drop_no_listener;
	__u64 probe_pass;
	__u64 errors;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* netns cookie */
	__type(value, struct pod_info);
} mesh_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __be32); /* pod IPv4 */
	__type(value, struct ingress_config);
} ingress_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* socket cookie */
	__type(value, struct orig_addr);
} sk_orig SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct orig_key);
	__type(value, struct orig_addr);
} orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counter_set);
} counters SEC(".maps");

/*
 * Kinds of datapath_event: connect() could not record the original
 * destination in sk_orig (the app gets EPERM); sockops could not update
 * orig_dst; an inbound SYN was dropped for want of a listener; or because
 * bpf_sk_assign failed.
 */
#define EVENT_REDIRECT_RECORD_FAILED 1
#define EVENT_ORIG_DST_UPDATE_FAILED 2
#define EVENT_INBOUND_NO_LISTENER 3
#define EVENT_INBOUND_ASSIGN_FAILED 4

/*
 * A connection the datapath gave up on, for the agent's flow log. Addresses
 * and ports are network byte order; a zero field is unknown.
 */
struct datapath_event {
	__u64 timestamp_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 netns_cookie;
	__u64 cgroup_id; /* of the connecting task (connect4/6 only), or 0 */
	__u32 kind; /* EVENT_* */
	__s32 err; /* negative errno of the failed helper, or 0 */
	__be32 src_ip4;
	__be32 dst_ip4;
	__be16 src_port;
	__be16 dst_port;
	__u32 pad;
};

/* Makes clang emit the BTF of datapath_event for bpf2go; never read. */
const struct datapath_event *const unused_datapath_event __attribute__((unused)) = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Events that did not fit in the ring buffer, one per-CPU copy. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} events_lost SEC(".maps");

static __always_inline void emit(__u32 kind, long err, __u64 netns,
				 __u64 cgroup, __be32 src_ip4, __be16 src_port,
				 __be32 dst_ip4, __be16 dst_port)
{
	struct datapath_event *e;
	__u32 zero = 0;
	__u64 *lost;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		lost = bpf_map_lookup_elem(&events_lost, &zero);
		if (lost)
			(*lost)++;
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	e->netns_cookie = netns;
	e->cgroup_id = cgroup;
	e->kind = kind;
	e->err = (__s32)err;
	e->src_ip4 = src_ip4;
	e->dst_ip4 = dst_ip4;
	e->src_port = src_port;
	e->dst_port = dst_port;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

#define COUNT(field)                                                          \
	do {                                                                  \
		__u32 zero = 0;                                               \
		struct counter_set *c = bpf_map_lookup_elem(&counters, &zero);   \
		if (c)                                                        \
			c->field++;                                           \
	} while (0)

static __always_inline int is_loopback4(__be32 ip)
{
	/* 127.0.0.0/8, and 0.0.0.0 which connect() treats as "this host". */
	return ip == 0 || (bpf_ntohl(ip) >> 24) == 127;
}

static __always_inline __u16 outbound_port(const struct pod_info *pod)
{
	return pod->outbound_port ? pod->outbound_port : DEFAULT_OUTBOUND_PORT;
}

/*
 * should_redirect applies the outbound skip rules, counting each skip.
 * dst is the IPv4 destination in network byte order.
 */
static __always_inline int should_redirect(struct bpf_sock_addr *ctx,
					   const struct pod_info *pod,
					   __u32 type, __be32 dst)
{
	struct bpf_sock *sk;

	if (type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP) {
		COUNT(skipped_udp);
		return 0;
	}
	if (is_loopback4(dst)) {
		COUNT(skipped_loopback);
		return 0;
	}
	if (pod->ip4 && dst == pod->ip4) {
		COUNT(skipped_self);
		return 0;
	}
	sk = ctx->sk;
	if (!sk) {
		COUNT(errors);
		return 0;
	}
	if ((sk->mark & weft_mark_mask) == weft_mark) {
		COUNT(skipped_marked);
		return 0;
	}
	if (sk->bound_dev_if) {
		COUNT(skipped_bound_dev);
		return 0;
	}
	return 1;
}

/* record remembers the original destination by socket cookie; 0 on failure. */
static __always_inline int record(struct bpf_sock_addr *ctx,
				  const struct pod_info *pod, __be32 dst,
				  __be16 port, __u8 family)
{
	struct orig_addr v;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	long err;

	__builtin_memset(&v, 0, sizeof(v));
	v.ip4 = dst;
	v.port = port;
	v.family = family;
	v.pod_id = pod->pod_id;
	v.local_ip4 = pod->ip4;
	err = bpf_map_update_elem(&sk_orig, &cookie, &v, BPF_ANY);
	if (err) {
		COUNT(errors);
		emit(EVENT_REDIRECT_RECORD_FAILED, err, bpf_get_netns_cookie(ctx),
		     bpf_get_current_cgroup_id(), pod->ip4, 0, dst, port);
		return 0;
	}
	return 1;
}

/* forget drops what an earlier connect() of a reused TCP socket (connect
 * with AF_UNSPEC, then connect again) recorded. */
static __always_inline void forget(struct bpf_sock_addr *ctx, __u32 type)
{
	__u64 cookie;

	if (type != SOCK_STREAM)
		return;
	cookie = bpf_get_socket_cookie(ctx);
	bpf_map_delete_elem(&sk_orig, &cookie);
}

SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	struct pod_info *pod = bpf_map_lookup_elem(&mesh_netns, &netns);
	__u32 type;
	__be32 dst;

	if (!pod)
		return 1;
	/* Context fields are read once, into locals: clang would otherwise
	 * share one modified ctx pointer between the paths, which the
	 * verifier rejects. */
	type = ctx->type;
	dst = ctx->user_ip4;
	if (!should_redirect(ctx, pod, type, dst)) {
		forget(ctx, type);
		return 1;
	}
	/* Fail closed: a connection ztunnel cannot route must not leave in
	 * plaintext; the app gets EPERM. */
	if (!record(ctx, pod, dst, (__be16)ctx->user_port, AF_INET))
		return 0;
	ctx->user_ip4 = bpf_htonl(LOOPBACK4);
	ctx->user_port = bpf_htons(outbound_port(pod));
	COUNT(redirected);
	return 1;
}

static __always_inline int is_v4mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

SEC("cgroup/connect6")
int weft_connect6(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	struct pod_info *pod = bpf_map_lookup_elem(&mesh_netns, &netns);
	__u32 ip6[4];
	__u32 type;
	__be32 dst;

	if (!pod)
		return 1;
	type = ctx->type;
	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	if (!is_v4mapped(ip6)) {
		if (type == SOCK_STREAM)
			COUNT(skipped_ipv6);
		forget(ctx, type);
		return 1;
	}
	dst = ip6[3];
	if (!should_redirect(ctx, pod, type, dst)) {
		forget(ctx, type);
		return 1;
	}
	if (!record(ctx, pod, dst, (__be16)ctx->user_port, AF_INET6))
		return 0;
	ctx->user_ip6[3] = bpf_htonl(LOOPBACK4);
	ctx->user_port = bpf_htons(outbound_port(pod));
	COUNT(redirected);
	return 1;
}

/*
 * lookup_orig finds what connect() recorded for the socket of a
 * getpeername/getsockname call. For MPTCP the connect hook ran on the first
 * subflow, whose cookie differs from the MPTCP socket the app holds; that
 * socket carries the subflow's addresses, so look up the sockops entry
 * instead (only for MPTCP sockets connected to 127.0.0.1).
 */
static __always_inline struct orig_addr *lookup_orig(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_addr *o = bpf_map_lookup_elem(&sk_orig, &cookie);
	struct bpf_sock *sk;
	struct orig_key key;

	if (o)
		return o;
	sk = ctx->sk;
	if (!sk || sk->protocol != IPPROTO_MPTCP ||
	    sk->dst_ip4 != bpf_htonl(LOOPBACK4))
		return NULL;
	__builtin_memset(&key, 0, sizeof(key));
	key.netns_cookie = bpf_get_netns_cookie(ctx);
	key.src_ip4 = sk->src_ip4;
	key.src_port = (__u16)sk->src_port;
	return bpf_map_lookup_elem(&orig_dst, &key);
}

SEC("cgroup/getpeername4")
int weft_getpeer4(struct bpf_sock_addr *ctx)
{
	struct orig_addr *o = lookup_orig(ctx);

	if (o) {
		ctx->user_ip4 = o->ip4;
		ctx->user_port = o->port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int weft_getpeer6(struct bpf_sock_addr *ctx)
{
	struct orig_addr *o = lookup_orig(ctx);

	if (o) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = o->ip4;
		ctx->user_port = o->port;
	}
	return 1;
}

/* getsockname: a redirected socket's local address is 127.0.0.1; report the
 * pod IP it would have had. A socket bound elsewhere is left alone. */
SEC("cgroup/getsockname4")
int weft_getsock4(struct bpf_sock_addr *ctx)
{
	struct orig_addr *o = lookup_orig(ctx);

	if (o && o->local_ip4 && ctx->user_ip4 == bpf_htonl(LOOPBACK4))
		ctx->user_ip4 = o->local_ip4;
	return 1;
}

SEC("cgroup/getsockname6")
int weft_getsock6(struct bpf_sock_addr *ctx)
{
	struct orig_addr *o = lookup_orig(ctx);
	__u32 ip6[4];

	if (!o || !o->local_ip4)
		return 1;
	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	if (is_v4mapped(ip6) && ip6[3] == bpf_htonl(LOOPBACK4))
		ctx->user_ip6[3] = o->local_ip4;
	return 1;
}

/*
 * sockops: at TCP_CONNECT_CB the local port of an active open is assigned
 * and the SYN is not sent yet, so ztunnel's accept() always finds the entry.
 * ACTIVE_ESTABLISHED refreshes it (the LRU may have evicted it meanwhile).
 */
SEC("sockops")
int weft_sockops(struct bpf_sock_ops *skops)
{
	struct orig_key key;
	struct orig_addr *o;
	__u64 cookie;
	__u32 op = skops->op;
	long err;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB &&
	    op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;

	cookie = bpf_get_socket_cookie(skops);
	o = bpf_map_lookup_elem(&sk_orig, &cookie);

	__builtin_memset(&key, 0, sizeof(key));
	key.netns_cookie = bpf_get_netns_cookie(skops);
	/* For a v4-mapped AF_INET6 socket local_ip4 is the IPv4 address too. */
	key.src_ip4 = skops->local_ip4;
	key.src_port = (__u16)skops->local_port;

	if (!o) {
		/* A connection that is not redirected, in an enrolled netns,
		 * may reuse the source of an old redirected one: drop the
		 * stale entry so ztunnel never sees it. */
		if (op == BPF_SOCK_OPS_TCP_CONNECT_CB &&
		    bpf_map_lookup_elem(&mesh_netns, &key.netns_cookie))
			bpf_map_delete_elem(&orig_dst, &key);
		return 1;
	}
	err = bpf_map_update_elem(&orig_dst, &key, o, BPF_ANY);
	if (err) {
		COUNT(errors);
		/* No cgroup id: sockops has bpf_get_current_cgroup_id only
		 * on recent kernels. */
		emit(EVENT_ORIG_DST_UPDATE_FAILED, err, key.netns_cookie, 0,
		     key.src_ip4,
		     bpf_htons(key.src_port), o->ip4, o->port);
	}
	return 1;
}

/* Minimal packet headers, read with bpf_skb_load_bytes (works on non-linear
 * skbs; no CO-RE). */
struct weft_iphdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct weft_tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;
	__u8 flags;
};

/*
 * tcx ingress on the pod's eth0 (an Ethernet device: veth). Untouched packets
 * get TCX_NEXT, so programs attached after this one still run.
 */
SEC("tcx/ingress")
int weft_ingress(struct __sk_buff *skb)
{
	struct ingress_config *cfg;
	struct weft_iphdr ip;
	struct weft_tcphdr tcp;
	struct bpf_sock_tuple t;
	struct bpf_sock *sk;
	__u16 inbound_port = DEFAULT_INBOUND_PORT;
	__u16 hbone_port = DEFAULT_HBONE_PORT;
	__u32 ihl, state;
	__u64 netns;
	long err;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return WEFT_TCX_NEXT;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
		return WEFT_TCX_NEXT;
	if ((ip.ver_ihl >> 4) != 4 || ip.protocol != IPPROTO_TCP)
		return WEFT_TCX_NEXT;
	if (ip.frag_off & bpf_htons(IP_OFFSET))
		return WEFT_TCX_NEXT; /* not the first fragment: no TCP header */
	ihl = (ip.ver_ihl & 0xf) * 4;
	if (ihl < sizeof(ip))
		return WEFT_TCX_NEXT;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + ihl, &tcp, sizeof(tcp)))
		return WEFT_TCX_NEXT;

	/* Only a new connection's SYN is steered; everything else passes. */
	if ((tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return WEFT_TCX_NEXT;

	/* Without a config for the destination the defaults apply: steer to
	 * 15006 (fail closed), no probe exception. */
	cfg = bpf_map_lookup_elem(&ingress_cfg, &ip.daddr);
	if (cfg) {
		if (cfg->inbound_port)
			inbound_port = cfg->inbound_port;
		if (cfg->hbone_port)
			hbone_port = cfg->hbone_port;
	}
	if (tcp.dest == bpf_htons(hbone_port))
		return WEFT_TCX_NEXT; /* ztunnel listens on the HBONE port itself */
	if (cfg && cfg->probe_ip4 && ip.saddr == cfg->probe_ip4) {
		COUNT(probe_pass);
		return WEFT_TCX_NEXT;
	}

	__builtin_memset(&t, 0, sizeof(t));
	t.ipv4.saddr = ip.saddr;
	t.ipv4.daddr = ip.daddr;
	t.ipv4.sport = tcp.source;
	t.ipv4.dport = tcp.dest;

	/* A socket that already owns this 4-tuple (a retransmitted SYN of a
	 * pending handshake, a connection made before enrollment) keeps it. A
	 * listener or a TIME_WAIT socket does not own it. */
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		state = sk->state;
		bpf_sk_release(sk);
		if (state != BPF_TCP_LISTEN && state != BPF_TCP_TIME_WAIT)
			return WEFT_TCX_NEXT;
	}

	/* The inbound listener, bound to the destination (pod) address or to
	 * the wildcard address, in this netns (the device's). */
	t.ipv4.dport = bpf_htons(inbound_port);
	sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	netns = cfg ? cfg->netns_cookie : 0;
	if (!sk) {
		COUNT(inbound_drop_no_listener);
		emit(EVENT_INBOUND_NO_LISTENER, 0, netns, 0, ip.saddr,
		     tcp.source, ip.daddr, tcp.dest);
		return WEFT_TCX_DROP;
	}
	if (sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		COUNT(inbound_drop_no_listener);
		emit(EVENT_INBOUND_NO_LISTENER, 0, netns, 0, ip.saddr,
		     tcp.source, ip.daddr, tcp.dest);
		return WEFT_TCX_DROP;
	}
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		COUNT(errors);
		emit(EVENT_INBOUND_ASSIGN_FAILED, err, netns, 0, ip.saddr,
		     tcp.source, ip.daddr, tcp.dest);
		return WEFT_TCX_DROP;
	}
	COUNT(inbound_assigned);
	return WEFT_TCX_PASS;
}
