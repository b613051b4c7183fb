// SPDX-License-Identifier: Apache-2.0
//
// anyedge node-side decapsulation (issue 13): the other end of the PoP's
// tunnel forwarding (tunnel.h). An XDP program on the node's receiving
// interface; no kernel tunnel module needed. Userspace
// (crates/anyedge-xdp/src/decap.rs, `anyedge node attach`) owns the maps.
//
//   not IPIP / IP6IP6 / GUE to the configured port -> PASS (d_pass_not_encap)
//   outer source not a configured PoP prefix       -> DROP (d_drop_not_from_pop):
//                                                      nobody else can hand the
//                                                      node a forged client address
//   truncated, inner version not the announced one -> DROP (d_drop_malformed)
//   inner destination not a configured VIP         -> DROP (d_drop_not_vip)
//   otherwise: outer headers stripped, PASS        -> (d_decap); the stack sees the
//                                                      client's packet to the VIP on lo
//
// Addresses live in the guard's 128-bit space (IPv4 as IPv4-mapped IPv6).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

enum {
	D_PASS_NOT_ENCAP = 0,
	D_DECAP = 1,
	D_DROP_NOT_FROM_POP = 2,
	D_DROP_NOT_VIP = 3,
	D_DROP_MALFORMED = 4,
	D_COUNT = 5,
};

struct addr {
	union {
		__u8 b[16];
		__u32 w[4];
	};
};

struct lpm_key {
	__u32 prefixlen;
	struct addr a;
};
_Static_assert(sizeof(struct lpm_key) == 20, "lpm_key layout");

struct decap_config {
	__be16 gue_port; /* 0: no GUE */
	__u16 pad;
};

/* PoP source prefixes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct lpm_key);
	__type(value, __u32);
} AE_DECAP_FROM SEC(".maps");

/* VIPs this node serves. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr);
	__type(value, __u32);
} AE_DECAP_VIPS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decap_config);
} AE_DECAP_CONFIG SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, D_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} AE_DECAP_COUNTERS SEC(".maps");

static __always_inline int dverdict(__u32 reason, int action)
{
	__u64 *c = bpf_map_lookup_elem(&AE_DECAP_COUNTERS, &reason);

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

SEC("xdp")
int anyedge_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	const __u32 zero = 0;
	const struct decap_config *cfg = bpf_map_lookup_elem(&AE_DECAP_CONFIG, &zero);
	struct lpm_key from;
	struct addr vip;
	__u8 proto, mac[12];
	__u32 olen;
	__u8 *inner;
	int inner_v4;

	if (!cfg || (void *)(eth + 1) > end)
		return dverdict(D_PASS_NOT_ENCAP, XDP_PASS);
	from.prefixlen = 128;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || *(__u8 *)ip != 0x45)
			return dverdict(D_PASS_NOT_ENCAP, XDP_PASS);
		if (ip->frag_off & bpf_htons(0x3fff))
			return dverdict(D_PASS_NOT_ENCAP, XDP_PASS);
		proto = ip->protocol;
		v4_mapped(&from.a, ip->saddr);
		olen = 20;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return dverdict(D_PASS_NOT_ENCAP, XDP_PASS);
		proto = ip6->nexthdr;
		__builtin_memcpy(&from.a, &ip6->saddr, 16);
		olen = 40;
	} else {
		return dverdict(D_PASS_NOT_ENCAP, XDP_PASS);
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *uh = (void *)(eth + 1) + olen;

		if ((void *)(uh + 1) > end)
			return dverdict(D_PASS_NOT_ENCAP, XDP_PASS);
		if (cfg->gue_port == 0 || uh->dest != cfg->gue_port)
			return dverdict(D_PASS_NOT_ENCAP, XDP_PASS);
		olen += 8;
	} else if (proto != 4 && proto != 41) {
		return dverdict(D_PASS_NOT_ENCAP, XDP_PASS);
	}
	if (!bpf_map_lookup_elem(&AE_DECAP_FROM, &from))
		return dverdict(D_DROP_NOT_FROM_POP, XDP_DROP);

	inner = (void *)(eth + 1) + olen;
	if ((void *)(inner + 1) > end)
		return dverdict(D_DROP_MALFORMED, XDP_DROP);
	inner_v4 = (inner[0] >> 4) == 4;
	if ((proto == 4 && !inner_v4) || (proto == 41 && (inner[0] >> 4) != 6) ||
	    (!inner_v4 && (inner[0] >> 4) != 6))
		return dverdict(D_DROP_MALFORMED, XDP_DROP);
	if (inner_v4) {
		struct iphdr *ip = (void *)inner;

		if ((void *)(ip + 1) > end)
			return dverdict(D_DROP_MALFORMED, XDP_DROP);
		v4_mapped(&vip, ip->daddr);
	} else {
		struct ipv6hdr *ip6 = (void *)inner;

		if ((void *)(ip6 + 1) > end)
			return dverdict(D_DROP_MALFORMED, XDP_DROP);
		__builtin_memcpy(&vip, &ip6->daddr, 16);
	}
	if (!bpf_map_lookup_elem(&AE_DECAP_VIPS, &vip))
		return dverdict(D_DROP_NOT_VIP, XDP_DROP);

	__builtin_memcpy(mac, eth, 12);
	if (bpf_xdp_adjust_head(ctx, (int)olen))
		return dverdict(D_DROP_MALFORMED, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return dverdict(D_DROP_MALFORMED, XDP_DROP);
	__builtin_memcpy(eth, mac, 12);
	eth->h_proto = inner_v4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	return dverdict(D_DECAP, XDP_PASS);
}

char LICENSE[] SEC("license") = "Apache-2.0";
