// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
//
// anyedge XDP fast path: the per-source admission guard (crates/anyedge-guard)
// moved in front of the network stack. Userspace (crates/anyedge-xdp/src/lib.rs)
// owns every map; this program only reads the rules and keeps rate state.
//
// Verdict for one received frame, in the order of anyedge_guard::Guard::admit:
//
//   not IPv4/IPv6 (after at most one VLAN tag)     -> PASS  (pass_not_ip)
//   L2/L3 header truncated or invalid              -> PASS  (pass_unparsed; the stack drops it)
//   destination not a service address             -> PASS  (pass_not_service)
//   source in the allow list                       -> PASS  (pass_allowlist; everything, fragments too)
//   source in the deny list                        -> DROP  (drop_deny; any protocol, any port)
//   IP fragment (v4 MF/offset, v6 fragment header) -> DROP  (drop_fragment)
//   extension headers too many / L4 truncated      -> DROP  (drop_malformed)
//   TCP SYN without ACK to a TCP service port      -> GCRA per /24 (v4) or /64 + /48 x4 (v6),
//                                                     then per address  (drop_syn_rate_*)
//   UDP to a DNS port                              -> the same with the DNS rates (drop_dns_rate_*)
//   otherwise                                      -> PASS  (pass)
//
// A packet that passes (pass, pass_allowlist, pass_not_service) then goes
// through the tunnel step (tunnel.h): to a tunnel service it is encapsulated
// to its node (or dropped / answered there, with the tunnel's own per-service
// counters); the guard counter still says the guard let it through. One
// program rather than a tail call: an interface holds one XDP program, and
// the guard's parse is reused instead of done twice.
//
// Addresses live in one 128-bit space like anyedge_guard::prefix::Prefix:
// IPv4 a.b.c.d is ::ffff:a.b.c.d and an IPv4 /n is a /(n+96). So one LPM trie
// per list serves both families and an IPv4-mapped IPv6 source is the IPv4
// source (the guard's canonical()).
//
// The layouts below are mirrored in src/lib.rs; change both together.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* Counter indices (src/lib.rs: Counter). */
enum {
	C_PASS = 0,
	C_PASS_ALLOWLIST = 1,
	C_PASS_NOT_SERVICE = 2,
	C_PASS_NOT_IP = 3,
	C_PASS_UNPARSED = 4,
	C_DROP_DENY = 5,
	C_DROP_FRAGMENT = 6,
	C_DROP_MALFORMED = 7,
	C_DROP_SYN_RATE_PREFIX = 8,
	C_DROP_SYN_RATE_ADDRESS = 9,
	C_DROP_DNS_RATE_PREFIX = 10,
	C_DROP_DNS_RATE_ADDRESS = 11,
	C_COUNT = 12,
};

/* Port classes (AE_PORTS values, bit flags). */
#define PORT_TCP_SERVICE 1
#define PORT_UDP_DNS 2

/* Rate classes and levels (index into config.rate). */
#define CLASS_SYN 0
#define CLASS_DNS 1
#define LEVEL_ADDRESS 0 /* /32, /128 */
#define LEVEL_NET 1     /* IPv4 /24, IPv6 /64 */
#define LEVEL_WIDE 2    /* IPv6 /48 (userspace gives it 4x rate and burst) */

#define TCP_FLAG_BYTE_SYN 0x02
#define TCP_FLAG_BYTE_ACK 0x10

/* config.flags */
#define CFG_ANY_DESTINATION 1

/* IPv6 extension headers walked before the L4 header. */
#define MAX_EXT_HEADERS 8
#define MAX_L4_OFFSET (18 + 40 + MAX_EXT_HEADERS * 2048)

/* 4-byte aligned (no 64-bit member): struct lpm_key must be 20 bytes. */
struct addr {
	union {
		__u8 b[16];
		__u32 w[4];
	};
};

/* Identical to aya::maps::lpm_trie::Key<[u8; 16]> (packed, 20 bytes). */
struct lpm_key {
	__u32 prefixlen;
	struct addr a;
};
_Static_assert(sizeof(struct lpm_key) == 20, "lpm_key layout");

/* GCRA parameters in nanoseconds: emission interval t, tolerance tau.
 * t == 0: no limit at this level. */
struct gcra {
	__u64 t;
	__u64 tau;
};

/* AE_CONFIG[0]; userspace writes it as [u64; 13]. */
struct config {
	__u64 flags;
	struct gcra rate[2][3]; /* [class][level] */
};
_Static_assert(sizeof(struct config) == 13 * 8, "config layout (CONFIG_WORDS)");

/* AE_RATES key: the source (masked to the level's prefix) and what it is. */
struct rate_key {
	struct addr a;
	__u8 plen; /* in the 128-bit space: 128, 120 (v4 /24), 64, 48 */
	__u8 class;
	__u16 pad;
};
_Static_assert(sizeof(struct rate_key) == 20, "rate_key layout");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct lpm_key);
	__type(value, __u32);
} AE_ALLOW SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct lpm_key);
	__type(value, __u32);
} AE_DENY SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} AE_CONFIG SEC(".maps");

/* Destination port (host order) -> PORT_* flags. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u16);
	__type(value, __u32);
} AE_PORTS SEC(".maps");

/* Service destination addresses (128-bit space) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr);
	__type(value, __u32);
} AE_SERVICES SEC(".maps");

/* GCRA state: theoretical arrival time (ns, bpf_ktime_get_ns clock). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct rate_key);
	__type(value, __u64);
} AE_RATES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} AE_COUNTERS SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* What the L3 parser found. */
struct pkt {
	struct addr src;
	struct addr dst;
	__u32 l4_off; /* L4 header offset from the frame start (when l4_ok) */
	__u8 proto;   /* L4 protocol */
	__u8 v4;      /* source is IPv4 (or IPv4-mapped IPv6) */
	__u8 fragment;
	__u8 l4_ok;   /* extension header chain walked to its end */
	__u8 ipv4;    /* an IPv4 header (not IPv6) */
	__u8 pad[3];
};

static __always_inline int verdict(__u32 reason, int action)
{
	__u64 *c = bpf_map_lookup_elem(&AE_COUNTERS, &reason);

	if (c)
		*c += 1;
	return action;
}

static __always_inline void v4_mapped(struct addr *out, __be32 a)
{
	out->w[0] = 0;
	out->w[1] = 0;
	out->w[2] = bpf_htonl(0xffff);
	out->w[3] = a;
}

static __always_inline int is_v4_mapped(const struct addr *a)
{
	return a->w[0] == 0 && a->w[1] == 0 && a->w[2] == bpf_htonl(0xffff);
}

static __always_inline int in_list(void *trie, const struct addr *a)
{
	struct lpm_key k;

	k.prefixlen = 128;
	k.a = *a;
	return bpf_map_lookup_elem(trie, &k) != NULL;
}

/* Returns 0 when the IPv4 header is usable. */
static __always_inline int parse_v4(void *data, void *cur, void *end, struct pkt *p)
{
	struct iphdr *ip = cur;
	__u8 vihl;

	if ((void *)(ip + 1) > end)
		return -1;
	vihl = *(__u8 *)ip; /* version and IHL without the endian-dependent bitfields */
	if ((vihl >> 4) != 4 || (vihl & 0xf) < 5)
		return -1;
	v4_mapped(&p->src, ip->saddr);
	v4_mapped(&p->dst, ip->daddr);
	p->v4 = 1;
	p->ipv4 = 1;
	p->proto = ip->protocol;
	p->fragment = (ip->frag_off & bpf_htons(0x3fff)) != 0; /* MF or offset */
	p->l4_off = (__u32)(cur - data) + (__u32)(vihl & 0xf) * 4;
	p->l4_ok = 1;
	return 0;
}

/* Returns 0 when the IPv6 header is usable (the extension chain may not be:
 * then l4_ok is 0). */
static __always_inline int parse_v6(void *data, void *cur, void *end, struct pkt *p)
{
	struct ipv6hdr *ip6 = cur;
	__u8 nh;
	int i;

	if ((void *)(ip6 + 1) > end)
		return -1;
	if ((*(__u8 *)ip6 >> 4) != 6)
		return -1;
	__builtin_memcpy(&p->src, &ip6->saddr, 16);
	__builtin_memcpy(&p->dst, &ip6->daddr, 16);
	p->v4 = is_v4_mapped(&p->src);
	nh = ip6->nexthdr;
	cur = ip6 + 1;
	p->l4_ok = 0;

#pragma unroll
	for (i = 0; i < MAX_EXT_HEADERS; i++) {
		struct ipv6_opt_hdr *h = cur;

		if (nh == IPPROTO_FRAGMENT) {
			p->fragment = 1;
			p->proto = nh;
			return 0;
		}
		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		    nh != IPPROTO_AH) {
			p->proto = nh;
			p->l4_off = (__u32)(cur - data);
			p->l4_ok = 1;
			return 0;
		}
		if ((void *)(h + 1) > end)
			return 0; /* truncated chain: l4_ok stays 0 */
		if (nh == IPPROTO_AH)
			cur += ((__u32)h->hdrlen + 2) * 4;
		else
			cur += ((__u32)h->hdrlen + 1) * 8;
		nh = h->nexthdr;
	}
	if (nh == IPPROTO_FRAGMENT) {
		p->fragment = 1;
		p->proto = nh;
	} else if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		   nh != IPPROTO_AH) {
		p->proto = nh;
		p->l4_off = (__u32)(cur - data);
		p->l4_ok = 1;
	}
	/* else: more than MAX_EXT_HEADERS extension headers, l4_ok stays 0 */
	return 0;
}

/* GCRA exactly as anyedge_guard::gcra::Gcra::check. 1: conforms. */
static __always_inline int gcra_check(const struct gcra *g, struct rate_key *k, __u64 now)
{
	__u64 *state, tat, t0, next;

	if (g->t == 0)
		return 1;
	state = bpf_map_lookup_elem(&AE_RATES, k);
	tat = state ? *state : 0;
	t0 = tat > now ? tat : now;
	if (t0 - now > g->tau)
		return 0;
	next = t0 + g->t;
	if (next < t0)
		next = ~0ULL;
	/* Plain read-modify-write: two CPUs racing on one source may each pass
	 * a packet the other would have dropped; the rate stays bounded. */
	if (state)
		*state = next;
	else
		bpf_map_update_elem(&AE_RATES, k, &next, BPF_ANY);
	return 1;
}

/* Aggregates first, then the address (Guard::admit's order). Returns the
 * drop counter, or -1 when the packet conforms. */
static __always_inline int rate_check(const struct config *cfg, int class, const struct pkt *p)
{
	const struct gcra *r = cfg->rate[class & 1];
	__u64 now = bpf_ktime_get_ns();
	struct rate_key k;
	int drop_prefix = class == CLASS_SYN ? C_DROP_SYN_RATE_PREFIX : C_DROP_DNS_RATE_PREFIX;
	int drop_address = class == CLASS_SYN ? C_DROP_SYN_RATE_ADDRESS : C_DROP_DNS_RATE_ADDRESS;

	__builtin_memset(&k, 0, sizeof(k));
	k.class = class;
	if (r[LEVEL_NET].t != 0) {
		k.a = p->src;
		if (p->v4) {
			k.a.b[15] = 0;
			k.plen = 120;
		} else {
			k.a.w[2] = 0;
			k.a.w[3] = 0;
			k.plen = 64;
		}
		if (!gcra_check(&r[LEVEL_NET], &k, now))
			return drop_prefix;
		if (!p->v4) {
			k.a.w[1] &= bpf_htonl(0xffff0000);
			k.plen = 48;
			if (!gcra_check(&r[LEVEL_WIDE], &k, now))
				return drop_prefix;
		}
	}
	if (r[LEVEL_ADDRESS].t != 0) {
		k.a = p->src;
		k.plen = 128;
		if (!gcra_check(&r[LEVEL_ADDRESS], &k, now))
			return drop_address;
	}
	return -1;
}

#include "tunnel.h"

SEC("xdp")
int anyedge_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *cur;
	__u16 eproto;
	__u32 zero = 0;
	struct config *cfg;
	struct pkt p;
	void *l4;
	int class = -1;
	int vlan = 0;

	if ((void *)(eth + 1) > end)
		return verdict(C_PASS_UNPARSED, XDP_PASS);
	eproto = eth->h_proto;
	cur = eth + 1;
	if (eproto == bpf_htons(ETH_P_8021Q) || eproto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = cur;

		if ((void *)(vh + 1) > end)
			return verdict(C_PASS_UNPARSED, XDP_PASS);
		eproto = vh->proto;
		cur = vh + 1;
		vlan = 1;
	}

	__builtin_memset(&p, 0, sizeof(p));
	if (eproto == bpf_htons(ETH_P_IP)) {
		if (parse_v4(data, cur, end, &p) < 0)
			return verdict(C_PASS_UNPARSED, XDP_PASS);
	} else if (eproto == bpf_htons(ETH_P_IPV6)) {
		if (parse_v6(data, cur, end, &p) < 0)
			return verdict(C_PASS_UNPARSED, XDP_PASS);
	} else {
		return verdict(C_PASS_NOT_IP, XDP_PASS);
	}

	cfg = bpf_map_lookup_elem(&AE_CONFIG, &zero);
	if (!cfg)
		return verdict(C_PASS_UNPARSED, XDP_PASS);
	if (!(cfg->flags & CFG_ANY_DESTINATION) && !bpf_map_lookup_elem(&AE_SERVICES, &p.dst))
		return verdict(C_PASS_NOT_SERVICE, tunnel(ctx, &p, vlan));
	if (in_list(&AE_ALLOW, &p.src))
		return verdict(C_PASS_ALLOWLIST, tunnel(ctx, &p, vlan));
	if (in_list(&AE_DENY, &p.src))
		return verdict(C_DROP_DENY, XDP_DROP);
	if (p.fragment)
		return verdict(C_DROP_FRAGMENT, XDP_DROP);
	/* The offset bound is for the verifier: a real one is below 18 + 40 +
	 * 8 * 2048. */
	if (!p.l4_ok || p.l4_off > MAX_L4_OFFSET)
		return verdict(C_DROP_MALFORMED, XDP_DROP);
	l4 = data + p.l4_off;

	if (p.proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		__u16 port;
		__u32 *flags;

		if ((void *)(th + 1) > end)
			return verdict(C_DROP_MALFORMED, XDP_DROP);
		/* byte 13: CWR ECE URG ACK PSH RST SYN FIN */
		if ((((__u8 *)th)[13] & (TCP_FLAG_BYTE_SYN | TCP_FLAG_BYTE_ACK)) == TCP_FLAG_BYTE_SYN) {
			port = bpf_ntohs(th->dest);
			flags = bpf_map_lookup_elem(&AE_PORTS, &port);
			if (flags && (*flags & PORT_TCP_SERVICE))
				class = CLASS_SYN;
		}
	} else if (p.proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		__u16 port;
		__u32 *flags;

		if ((void *)(uh + 1) > end)
			return verdict(C_DROP_MALFORMED, XDP_DROP);
		port = bpf_ntohs(uh->dest);
		flags = bpf_map_lookup_elem(&AE_PORTS, &port);
		if (flags && (*flags & PORT_UDP_DNS))
			class = CLASS_DNS;
	}
	if (class >= 0) {
		int drop = rate_check(cfg, class, &p);

		if (drop >= 0)
			return verdict(drop, XDP_DROP);
	}
	return verdict(C_PASS, tunnel(ctx, &p, vlan));
}

/* The tunnel step's next hop uses bpf_fib_lookup, a GPL-only helper: this
 * file (and tunnel.h) is dual licensed, and the object loaded into the
 * kernel is used under GPL-2.0. The Rust crates stay Apache-2.0. */
char LICENSE[] SEC("license") = "GPL";
