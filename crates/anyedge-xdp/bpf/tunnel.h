// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
//
// anyedge tunnel forwarding (issue 13), included by guard.bpf.c: one XDP
// program per interface, so the guard judges first and a packet the guard
// lets through is then matched against the tunnel services. Userspace
// (crates/anyedge-xdp/src/tunnel.rs) owns every map; the layouts below are
// mirrored there, change both together.
//
// For a packet to a tunnel VIP:port/protocol (IPv4 or IPv6, TCP or UDP):
//
//   IPv4 options                                -> DROP  (t_drop_ip_options)
//   any fragment (v4 MF/offset, v6 frag header) -> DROP  (t_drop_fragment; also
//                                                  non-first fragments to any
//                                                  tunnel VIP address)
//   L4 header truncated                          -> DROP  (t_drop_malformed)
//   ICMP error quoting a VIP flow                -> encapsulated to that flow's node
//                                                  (t_tx_icmp); other ICMP to a VIP
//                                                  address -> PASS (t_pass_icmp)
//   flow in the connection table, backend alive -> encapsulated to it (t_tx_flow)
//   else the Maglev ring of the service         -> encapsulated (t_tx_new; a TCP
//                                                  segment without SYN: t_tx_unknown)
//   ring empty                                   -> DROP  (t_drop_no_backend)
//   inner packet + encapsulation > underlay MTU  -> ICMP "fragmentation needed" /
//                                                  "packet too big" back (t_icmp_too_big),
//                                                  v4 without DF: DROP (t_drop_too_big)
//   next hop: bpf_fib_lookup on the outer header -> TX / redirect; neighbour not
//                                                  resolved yet: PASS the encapsulated
//                                                  packet so the kernel forwards it and
//                                                  resolves it (t_pass_neigh); no route:
//                                                  DROP (t_drop_no_route)
//
// The ring index is SipHash-1-3 of the client address (anyedge_lb::maglev::
// hash_ip, same fixed key) mod the ring size: the proxy path's Maglev slot,
// so a client maps to the same node in both modes and from every PoP.

/* <linux/icmp.h> pulls in libc headers the bpf target cannot build: the
 * few ICMP constants and the header as used here. */
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_TIME_EXCEEDED 11
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_PARAMPROB 4

struct tun_icmp_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 unused;
	__be16 mtu; /* v4 "fragmentation needed"; v6: the 32-bit MTU spans both */
};

#define TUN_RING_SIZE 65537 /* anyedge_lb::maglev::DEFAULT_TABLE_SIZE */
#define TUN_NO_BACKEND 0xffffffffu

/* Tunnel verdicts (src/tunnel.rs: TunnelVerdict), per service. */
enum {
	T_TX_NEW = 0,
	T_TX_FLOW = 1,
	T_TX_UNKNOWN = 2,
	T_TX_ICMP = 3,
	T_PASS_NEIGH = 4,
	T_PASS_ICMP = 5,
	T_ICMP_TOO_BIG = 6,
	T_DROP_TOO_BIG = 7,
	T_DROP_NO_BACKEND = 8,
	T_DROP_FRAGMENT = 9,
	T_DROP_IP_OPTIONS = 10,
	T_DROP_MALFORMED = 11,
	T_DROP_NO_ROUTE = 12,
	T_DROP_ENCAP = 13,
	T_COUNT = 14,
};

/* tun_service.flags */
#define TS_GUE 1

/* tun_backend.flags */
#define TB_ALIVE 1
#define TB_V4 2

struct tun_vip_key {
	struct addr a;
	__be16 port;
	__u8 proto;
	__u8 pad;
};
_Static_assert(sizeof(struct tun_vip_key) == 20, "tun_vip_key layout");

struct tun_service {
	__u32 id;    /* < max services: ring and counter index */
	__u32 flags; /* TS_* */
	__u16 mtu;   /* underlay MTU: largest outer IP packet */
	__be16 gue_port;
};
_Static_assert(sizeof(struct tun_service) == 12, "tun_service layout");

struct tun_backend {
	struct addr a; /* IPv4 as IPv4-mapped */
	__u32 flags;   /* TB_* */
};
_Static_assert(sizeof(struct tun_backend) == 20, "tun_backend layout");

struct tun_flow {
	struct addr src;
	struct addr dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};
_Static_assert(sizeof(struct tun_flow) == 40, "tun_flow layout");

/* Outer source addresses: base | (flow hash & host mask), per family. */
struct tun_config {
	__be32 src4;
	__be32 src4_hostmask;
	struct addr src6;
	__be32 src6_hostmask; /* applied to the last 32 bits */
};
_Static_assert(sizeof(struct tun_config) == 28, "tun_config layout");

struct tun_bytes {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct tun_vip_key);
	__type(value, struct tun_service);
} AE_TUN_VIPS SEC(".maps");

/* VIP address -> a service id (for counting fragments and ICMP). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct addr);
	__type(value, __u32);
} AE_TUN_ADDRS SEC(".maps");

/* service id * TUN_RING_SIZE + slot -> backend id. max_entries is set by
 * userspace (max services * TUN_RING_SIZE). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16 * TUN_RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} AE_TUN_RING SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct tun_backend);
} AE_TUN_BACKENDS SEC(".maps");

/* Established flows -> backend id. One table (a flow that moves CPU keeps
 * its node), with per-CPU LRU lists (BPF_F_NO_COMMON_LRU: no lock shared by
 * CPUs on insert/evict); bounded, the least recently used go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 1 << 20);
	__type(key, struct tun_flow);
	__type(value, __u32);
} AE_TUN_CONNS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tun_config);
} AE_TUN_CONFIG SEC(".maps");

/* service id * T_COUNT + verdict -> packets (per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 16 * T_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} AE_TUN_COUNTERS SEC(".maps");

/* backend id -> packets and inner bytes forwarded (per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct tun_bytes);
} AE_TUN_BACKEND_COUNTERS SEC(".maps");

static __always_inline int tverdict(__u32 svc, __u32 v, int action)
{
	__u32 k = svc * T_COUNT + v;
	__u64 *c = bpf_map_lookup_elem(&AE_TUN_COUNTERS, &k);

	if (c)
		*c += 1;
	return action;
}

/* SipHash-1-3, fixed key, for a 4- or 16-byte message (anyedge_lb::maglev::
 * sip13 with K_CLIENT). Hand-written: there is no BPF library for it and it
 * must equal the proxy path's hash bit for bit (tests pin it). */
#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = ROTL(v1, 13);                                                                 \
		v1 ^= v0;                                                                          \
		v0 = ROTL(v0, 32);                                                                 \
		v2 += v3;                                                                          \
		v3 = ROTL(v3, 16);                                                                 \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = ROTL(v3, 21);                                                                 \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = ROTL(v1, 17);                                                                 \
		v1 ^= v2;                                                                          \
		v2 = ROTL(v2, 32);                                                                 \
	} while (0)

static __always_inline __u64 le64(const __u8 *b)
{
	return (__u64)b[0] | (__u64)b[1] << 8 | (__u64)b[2] << 16 | (__u64)b[3] << 24 |
	       (__u64)b[4] << 32 | (__u64)b[5] << 40 | (__u64)b[6] << 48 | (__u64)b[7] << 56;
}

static __always_inline __u64 client_hash(const struct addr *a, int v4)
{
	const __u64 k0 = 0x616e796564676503ULL, k1 = 0x636c69656e746970ULL;
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;
	__u64 m;

	if (v4) {
		const __u8 *b = &a->b[12];

		m = (__u64)b[0] | (__u64)b[1] << 8 | (__u64)b[2] << 16 | (__u64)b[3] << 24 |
		    (4ULL << 56);
	} else {
		m = le64(&a->b[0]);
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
		m = le64(&a->b[8]);
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
		m = 16ULL << 56;
	}
	v3 ^= m;
	SIPROUND;
	v0 ^= m;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* Cheap per-flow mix for the outer source (not the ring: that is the
 * client hash). */
static __always_inline __u32 flow_mix(const struct tun_flow *f)
{
	__u32 h = f->src.w[0] ^ f->src.w[1] ^ f->src.w[2] ^ f->src.w[3];

	h ^= ((__u32)f->sport << 16) | f->dport;
	h ^= f->proto;
	h *= 0x9e3779b1u;
	h ^= h >> 15;
	h *= 0x85ebca77u;
	h ^= h >> 13;
	return h;
}

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Sum of n 16-bit words at p (n a compile-time constant). */
static __always_inline __u64 csum_words(const void *p, int n)
{
	const __u16 *w = p;
	__u64 s = 0;
	int i;

#pragma unroll
	for (i = 0; i < n; i++)
		s += w[i];
	return s;
}

/* Next hop for the outer header at data + 14 and transmit. */
static __always_inline int tun_xmit(struct xdp_md *ctx, __u32 svc, int outer_v4, __u32 verdict_tx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct bpf_fib_lookup fib;
	int rc;

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.ifindex = ctx->ingress_ifindex;
	if (outer_v4) {
		struct iphdr *ip = data + sizeof(*eth);

		if ((void *)(ip + 1) > end)
			return tverdict(svc, T_DROP_ENCAP, XDP_DROP);
		fib.family = 2; /* AF_INET */
		fib.tos = ip->tos;
		fib.l4_protocol = ip->protocol;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	} else {
		struct ipv6hdr *ip6 = data + sizeof(*eth);

		if ((void *)(ip6 + 1) > end)
			return tverdict(svc, T_DROP_ENCAP, XDP_DROP);
		fib.family = 10; /* AF_INET6 */
		fib.l4_protocol = ip6->nexthdr;
		fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	}
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		if (fib.ifindex == ctx->ingress_ifindex)
			return tverdict(svc, verdict_tx, XDP_TX);
		return tverdict(svc, verdict_tx, bpf_redirect(fib.ifindex, 0));
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return tverdict(svc, T_PASS_NEIGH, XDP_PASS);
	return tverdict(svc, T_DROP_NO_ROUTE, XDP_DROP);
}

/* Pushes the outer header(s) in front of the IP packet at data + 14 and
 * sends it to backend b. inner_v4: the inner packet's family. */
static __always_inline int tun_encap(struct xdp_md *ctx, const struct tun_service *s,
				     const struct tun_backend *b, const struct tun_flow *f,
				     int inner_v4, __u32 verdict_tx, __u32 bid)
{
	const __u32 zero = 0;
	const struct tun_config *cfg = bpf_map_lookup_elem(&AE_TUN_CONFIG, &zero);
	int outer_v4 = (b->flags & TB_V4) != 0;
	int gue = (s->flags & TS_GUE) != 0;
	int ip_len = outer_v4 ? 20 : 40;
	int olen = ip_len + (gue ? 8 : 0);
	__u32 inner_len, h = flow_mix(f);
	void *data, *end;
	struct ethhdr *eth;
	__u8 inner_tos;
	__u8 inner_proto = inner_v4 ? 4 /* IPPROTO_IPIP */ : 41 /* IPPROTO_IPV6 */;
	__u8 outer_proto = gue ? IPPROTO_UDP : inner_proto;
	struct tun_bytes *bc;

	if (!cfg)
		return tverdict(s->id, T_DROP_ENCAP, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + sizeof(struct ethhdr) + 2 > end)
		return tverdict(s->id, T_DROP_ENCAP, XDP_DROP);
	inner_len = (__u32)(end - data) - sizeof(struct ethhdr);
	{
		__u8 *v = data + sizeof(struct ethhdr);

		inner_tos = inner_v4 ? v[1] : (__u8)((v[0] << 4) | (v[1] >> 4));
	}
	if (bpf_xdp_adjust_head(ctx, -olen))
		return tverdict(s->id, T_DROP_ENCAP, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)eth + sizeof(*eth) + 48 > end)
		return tverdict(s->id, T_DROP_ENCAP, XDP_DROP);
	/* The received MACs until tun_xmit sets the next hop's: a packet
	 * passed to the stack must still be addressed to this host. */
	__builtin_memcpy(eth, (void *)eth + olen, 12);
	eth->h_proto = outer_v4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	if (outer_v4) {
		struct iphdr *ip = (void *)(eth + 1);

		*(__u8 *)ip = 0x45;
		ip->tos = inner_tos;
		ip->tot_len = bpf_htons(inner_len + olen);
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000); /* DF: sizes were checked */
		ip->ttl = 64;
		ip->protocol = outer_proto;
		ip->check = 0;
		ip->saddr = cfg->src4 | (bpf_htonl(h) & cfg->src4_hostmask);
		ip->daddr = b->a.w[3];
		ip->check = csum_fold(csum_words(ip, 10));
		if (gue) {
			struct udphdr *uh = (void *)(ip + 1);

			uh->source = bpf_htons(0x8000 | (h & 0x3fff));
			uh->dest = s->gue_port;
			uh->len = bpf_htons(inner_len + 8);
			uh->check = 0;
		}
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u32 first = bpf_htonl(0x60000000u | ((__u32)inner_tos << 20) | (h & 0xfffff));

		__builtin_memcpy(ip6, &first, 4);
		ip6->payload_len = bpf_htons(inner_len + (gue ? 8 : 0));
		ip6->nexthdr = outer_proto;
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, &cfg->src6, 16);
		ip6->saddr.in6_u.u6_addr32[3] =
			cfg->src6.w[3] | (bpf_htonl(h) & cfg->src6_hostmask);
		__builtin_memcpy(&ip6->daddr, &b->a, 16);
		if (gue) {
			struct udphdr *uh = (void *)(ip6 + 1);

			uh->source = bpf_htons(0x8000 | (h & 0x3fff));
			uh->dest = s->gue_port;
			uh->len = bpf_htons(inner_len + 8);
			/* Zero UDP checksum over IPv6 for tunnels (RFC 6935/6936);
			 * the node's decap program takes it off before the stack. */
			uh->check = 0;
		}
	}
	bc = bpf_map_lookup_elem(&AE_TUN_BACKEND_COUNTERS, &bid);
	if (bc) {
		bc->packets += 1;
		bc->bytes += inner_len;
	}
	return tun_xmit(ctx, s->id, outer_v4, verdict_tx);
}

/* Answers a packet too big for the underlay with ICMP "fragmentation
 * needed" (v4) / "packet too big" (v6) from the VIP, quoting the inner IP
 * header and 8 bytes. The frame has no IPv4 options (dropped earlier). */
static __always_inline int tun_too_big(struct xdp_md *ctx, __u32 svc, int v4, __u16 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[12];
	int grow = v4 ? 28 : 48;
	int total = v4 ? 70 : 110;

	if ((void *)(eth + 1) > end)
		return tverdict(svc, T_DROP_MALFORMED, XDP_DROP);
	if (v4) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return tverdict(svc, T_DROP_MALFORMED, XDP_DROP);
		if (!(ip->frag_off & bpf_htons(0x4000)))
			return tverdict(svc, T_DROP_TOO_BIG, XDP_DROP);
	}
	__builtin_memcpy(mac, eth->h_source, 6);
	__builtin_memcpy(mac + 6, eth->h_dest, 6);
	if (bpf_xdp_adjust_head(ctx, -grow))
		return tverdict(svc, T_DROP_ENCAP, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + total > end)
		return tverdict(svc, T_DROP_ENCAP, XDP_DROP);
	if (bpf_xdp_adjust_tail(ctx, total - (int)(end - data)))
		return tverdict(svc, T_DROP_ENCAP, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + total > end)
		return tverdict(svc, T_DROP_ENCAP, XDP_DROP);
	eth = data;
	__builtin_memcpy(eth->h_dest, mac, 6);
	__builtin_memcpy(eth->h_source, mac + 6, 6);
	if (v4) {
		struct iphdr *ip = (void *)(eth + 1);
		struct tun_icmp_hdr *ic = (void *)(ip + 1);
		struct iphdr *orig = (void *)(ic + 1);

		eth->h_proto = bpf_htons(ETH_P_IP);
		*(__u8 *)ip = 0x45;
		ip->tos = 0;
		ip->tot_len = bpf_htons(56);
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = 64;
		ip->protocol = IPPROTO_ICMP;
		ip->check = 0;
		ip->saddr = orig->daddr;
		ip->daddr = orig->saddr;
		ip->check = csum_fold(csum_words(ip, 10));
		ic->type = ICMP_DEST_UNREACH;
		ic->code = ICMP_FRAG_NEEDED;
		ic->checksum = 0;
		ic->unused = 0;
		ic->mtu = bpf_htons(mtu);
		ic->checksum = csum_fold(csum_words(ic, 18));
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct tun_icmp_hdr *ic = (void *)(ip6 + 1);
		struct ipv6hdr *orig = (void *)(ic + 1);
		__u32 first = bpf_htonl(0x60000000u);
		__u64 sum;

		eth->h_proto = bpf_htons(ETH_P_IPV6);
		__builtin_memcpy(ip6, &first, 4);
		ip6->payload_len = bpf_htons(56);
		ip6->nexthdr = IPPROTO_ICMPV6;
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, &orig->daddr, 16);
		__builtin_memcpy(&ip6->daddr, &orig->saddr, 16);
		ic->type = ICMPV6_PKT_TOOBIG;
		ic->code = 0;
		ic->checksum = 0;
		ic->unused = 0;
		ic->mtu = bpf_htons(mtu);
		/* pseudo-header: addresses, upper-layer length, next header */
		sum = csum_words(&ip6->saddr, 16) + bpf_htons(56) + bpf_htons(IPPROTO_ICMPV6);
		sum += csum_words(ic, 28);
		ic->checksum = csum_fold(sum);
	}
	tverdict(svc, T_ICMP_TOO_BIG, 0);
	return XDP_TX;
}

/* Backend for a flow of service s: the connection table, else the ring.
 * Returns the backend id or TUN_NO_BACKEND; *verdict the tx verdict. */
static __always_inline __u32 tun_pick(const struct tun_service *s, const struct tun_flow *f, int v4,
				      int syn, __u32 *verdict, const struct tun_backend **out)
{
	__u32 *known = bpf_map_lookup_elem(&AE_TUN_CONNS, f);
	const struct tun_backend *b;
	__u32 slot, key, *bid;

	if (known) {
		__u32 id = *known;

		b = bpf_map_lookup_elem(&AE_TUN_BACKENDS, &id);
		if (b && (b->flags & TB_ALIVE)) {
			*verdict = T_TX_FLOW;
			*out = b;
			return id;
		}
	}
	slot = (__u32)(client_hash(&f->src, v4) % TUN_RING_SIZE);
	key = s->id * TUN_RING_SIZE + slot;
	bid = bpf_map_lookup_elem(&AE_TUN_RING, &key);
	if (!bid || *bid == TUN_NO_BACKEND)
		return TUN_NO_BACKEND;
	key = *bid;
	b = bpf_map_lookup_elem(&AE_TUN_BACKENDS, &key);
	if (!b || !(b->flags & TB_ALIVE))
		return TUN_NO_BACKEND;
	bpf_map_update_elem(&AE_TUN_CONNS, f, &key, BPF_ANY);
	*verdict = syn ? T_TX_NEW : T_TX_UNKNOWN;
	*out = b;
	return key;
}

/* ICMP to a VIP address: an error quoting one of the VIP's flows goes to
 * that flow's node (path MTU discovery keeps working with DSR); anything
 * else is left to the stack. l4 points at the ICMP header. */
static __always_inline int tun_icmp(struct xdp_md *ctx, const struct pkt *p, __u32 addr_svc)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 off = p->l4_off;
	struct tun_vip_key vk;
	struct tun_flow f;
	const struct tun_service *s;
	const struct tun_backend *b = 0;
	__u32 verdict = T_TX_ICMP, bid;
	__u8 *ic;

	if (off > MAX_L4_OFFSET)
		return tverdict(addr_svc, T_DROP_MALFORMED, XDP_DROP);
	ic = data + off;
	if ((void *)(ic + 8) > end)
		return tverdict(addr_svc, T_DROP_MALFORMED, XDP_DROP);
	__builtin_memset(&vk, 0, sizeof(vk));
	__builtin_memset(&f, 0, sizeof(f));
	if (p->ipv4) {
		struct iphdr *q = (void *)(ic + 8);
		__u8 *ports;

		if (ic[0] != ICMP_DEST_UNREACH && ic[0] != ICMP_TIME_EXCEEDED)
			return tverdict(addr_svc, T_PASS_ICMP, XDP_PASS);
		if ((void *)(q + 1) > end)
			return tverdict(addr_svc, T_DROP_MALFORMED, XDP_DROP);
		if (*(__u8 *)q != 0x45)
			return tverdict(addr_svc, T_DROP_MALFORMED, XDP_DROP);
		ports = (void *)(q + 1);
		if ((void *)(ports + 4) > end)
			return tverdict(addr_svc, T_DROP_MALFORMED, XDP_DROP);
		v4_mapped(&vk.a, q->saddr);
		v4_mapped(&f.src, q->daddr);
		vk.proto = q->protocol;
		__builtin_memcpy(&vk.port, ports, 2);
		__builtin_memcpy(&f.dport, ports, 2);
		__builtin_memcpy(&f.sport, ports + 2, 2);
	} else {
		struct ipv6hdr *q = (void *)(ic + 8);
		__u8 *ports;

		if (ic[0] < ICMPV6_DEST_UNREACH || ic[0] > ICMPV6_PARAMPROB)
			return tverdict(addr_svc, T_PASS_ICMP, XDP_PASS);
		if ((void *)(q + 1) > end)
			return tverdict(addr_svc, T_DROP_MALFORMED, XDP_DROP);
		ports = (void *)(q + 1);
		if ((void *)(ports + 4) > end)
			return tverdict(addr_svc, T_DROP_MALFORMED, XDP_DROP);
		__builtin_memcpy(&vk.a, &q->saddr, 16);
		__builtin_memcpy(&f.src, &q->daddr, 16);
		vk.proto = q->nexthdr;
		__builtin_memcpy(&vk.port, ports, 2);
		__builtin_memcpy(&f.dport, ports, 2);
		__builtin_memcpy(&f.sport, ports + 2, 2);
	}
	s = bpf_map_lookup_elem(&AE_TUN_VIPS, &vk);
	if (!s)
		return tverdict(addr_svc, T_PASS_ICMP, XDP_PASS);
	f.dst = vk.a;
	f.proto = vk.proto;
	/* The quoted flow's node (the table's if it is alive there, else the
	 * ring's), without creating an entry for it. */
	{
		__u32 *known = bpf_map_lookup_elem(&AE_TUN_CONNS, &f);
		__u32 key, *r;

		if (known) {
			key = *known;
			b = bpf_map_lookup_elem(&AE_TUN_BACKENDS, &key);
			if (b && (b->flags & TB_ALIVE)) {
				bid = key;
				goto found;
			}
		}
		key = s->id * TUN_RING_SIZE + (__u32)(client_hash(&f.src, is_v4_mapped(&f.src)) % TUN_RING_SIZE);
		r = bpf_map_lookup_elem(&AE_TUN_RING, &key);
		if (!r || *r == TUN_NO_BACKEND)
			return tverdict(s->id, T_DROP_NO_BACKEND, XDP_DROP);
		key = *r;
		bid = key;
		b = bpf_map_lookup_elem(&AE_TUN_BACKENDS, &key);
		if (!b || !(b->flags & TB_ALIVE))
			return tverdict(s->id, T_DROP_NO_BACKEND, XDP_DROP);
	}
found:
	return tun_encap(ctx, s, b, &f, p->ipv4, verdict, bid);
}

/* The tunnel step, after the guard let the packet through. Returns the XDP
 * action; XDP_PASS for anything that is not tunnel traffic. */
static __always_inline int tunnel(struct xdp_md *ctx, const struct pkt *p, int vlan)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 *addr_svc = bpf_map_lookup_elem(&AE_TUN_ADDRS, &p->dst);
	__u32 asvc;
	struct tun_vip_key vk;
	struct tun_flow f;
	const struct tun_service *s;
	const struct tun_backend *b = 0;
	__u32 verdict = T_TX_NEW, bid;
	int syn = 0, ip_v4 = p->ipv4;
	__u32 pkt_len;

	if (!addr_svc)
		return XDP_PASS;
	asvc = *addr_svc;
	/* Tagged frames are left to the stack (the encapsulation has no tag). */
	if (vlan)
		return XDP_PASS;
	if (p->fragment)
		return tverdict(asvc, T_DROP_FRAGMENT, XDP_DROP);
	if (!p->l4_ok || p->l4_off > MAX_L4_OFFSET)
		return tverdict(asvc, T_DROP_MALFORMED, XDP_DROP);
	if (ip_v4 && p->l4_off != sizeof(struct ethhdr) + 20)
		return tverdict(asvc, T_DROP_IP_OPTIONS, XDP_DROP);
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)
		return tun_icmp(ctx, p, asvc);
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return XDP_PASS;

	__builtin_memset(&vk, 0, sizeof(vk));
	__builtin_memset(&f, 0, sizeof(f));
	vk.a = p->dst;
	vk.proto = p->proto;
	{
		__u8 *l4 = data + p->l4_off;

		if (p->proto == IPPROTO_TCP) {
			struct tcphdr *th = (void *)l4;

			if ((void *)(th + 1) > end)
				return tverdict(asvc, T_DROP_MALFORMED, XDP_DROP);
			syn = (l4[13] & (TCP_FLAG_BYTE_SYN | TCP_FLAG_BYTE_ACK)) == TCP_FLAG_BYTE_SYN;
			vk.port = th->dest;
			f.sport = th->source;
		} else {
			struct udphdr *uh = (void *)l4;

			if ((void *)(uh + 1) > end)
				return tverdict(asvc, T_DROP_MALFORMED, XDP_DROP);
			syn = 1; /* a datagram without a table entry starts a flow */
			vk.port = uh->dest;
			f.sport = uh->source;
		}
	}
	s = bpf_map_lookup_elem(&AE_TUN_VIPS, &vk);
	if (!s)
		return XDP_PASS; /* another port of the address: not tunnelled */
	f.src = p->src;
	f.dst = p->dst;
	f.dport = vk.port;
	f.proto = vk.proto;

	pkt_len = (__u32)(end - data) - sizeof(struct ethhdr);
	{
		__u32 over = (s->flags & TS_GUE) ? 8 : 0;
		/* the outer family is the backend's; check with the larger (v6)
		 * header when unknown yet: decided below once b is known */
		bid = tun_pick(s, &f, p->v4, syn, &verdict, &b);
		if (bid == TUN_NO_BACKEND || !b)
			return tverdict(s->id, T_DROP_NO_BACKEND, XDP_DROP);
		over += (b->flags & TB_V4) ? 20 : 40;
		if (pkt_len + over > s->mtu) {
			__u32 inner_mtu = s->mtu > over ? s->mtu - over : 0;

			return tun_too_big(ctx, s->id, ip_v4, (__u16)inner_mtu);
		}
	}
	return tun_encap(ctx, s, b, &f, ip_v4, verdict, bid);
}
