#!/usr/bin/env python3
"""Zone and dnsperf query files for bench/dns_vs_knot_nsd.sh.

    dns_zone_gen.py zone    ORIGIN RECORDS OUT.zone      # prints the facts the script checks
    dns_zone_gen.py queries ORIGIN RECORDS hit|nx N OUT  # N dnsperf query lines

The zone is deterministic for a given RECORDS (seeded): SOA, 2 NS with glue,
`hostN` names with A and AAAA (every 4th also MX and TXT, every 10th also an
`aliasN` CNAME to it), a wildcard `*.wild`, and a delegation `sub` with glue.
Names are generated until about RECORDS resource records are written.

The "hit" mix asks only for names/types that exist (plus wildcard expansions
and names below the delegation, answered with a referral): every answer is
NOERROR. The "nx" mix asks for random labels under the apex: every answer is
NXDOMAIN (a random-subdomain attack).
"""
import random
import sys


def host_counts(records):
    """Number of hostN names so that the zone has about `records` RRs."""
    fixed = 1 + 2 + 2 + 1 + 1 + 1  # SOA, NS x2, glue x2, wildcard, sub NS, sub glue
    # per 20 names: 40 A/AAAA + 5 MX + 5 TXT + 2 CNAME = 52 RRs
    return max(20, int((records - fixed) * 20 / 52))


def rr_of(i):
    """The types host i owns (and whether it has an alias)."""
    t = ["A", "AAAA"]
    if i % 4 == 0:
        t += ["MX", "TXT"]
    return t, i % 10 == 0


def a_of(i):
    return "10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)


def zone(origin, records, out):
    n = host_counts(records)
    count = 0
    with open(out, "w") as f:
        w = f.write
        w("$ORIGIN %s\n$TTL 3600\n" % origin)
        w("@ IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 3600\n")
        w("@ IN NS ns1\n@ IN NS ns2\n")
        w("ns1 IN A 192.0.2.53\nns2 IN A 192.0.2.54\n")
        w("*.wild IN A 192.0.2.80\n")
        w("sub IN NS ns.sub\nns.sub IN A 192.0.2.99\n")
        count += 8
        lines = []
        for i in range(n):
            types, alias = rr_of(i)
            h = "host%d" % i
            lines.append("%s IN A %s\n" % (h, a_of(i)))
            lines.append("%s IN AAAA 2001:db8::%x:%x\n" % (h, i >> 16, i & 0xFFFF))
            if "MX" in types:
                lines.append("%s IN MX 10 mail%d\n" % (h, i % 7))
                lines.append('%s IN TXT "v=spf1 ip4:%s -all"\n' % (h, a_of(i)))
            if alias:
                lines.append("alias%d IN CNAME %s\n" % (i, h))
            count += len(types) + (1 if alias else 0)
            if len(lines) > 8192:
                w("".join(lines))
                lines = []
        w("".join(lines))
    # facts for the sanity checks: a known record, the last host
    last = n - 1
    print("hosts=%d records=%d check_name=host1.%s check_a=%s last_name=host%d.%s last_a=%s"
          % (n, count, origin, a_of(1), last, origin, a_of(last)))


def label(rng, k):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(k))


def queries(origin, records, mix, count, out):
    n = host_counts(records)
    rng = random.Random(4242 if mix == "hit" else 4343)
    with open(out, "w") as f:
        lines = []
        for _ in range(count):
            if mix == "nx":
                # random labels under the apex (never a hostN/aliasN name)
                lines.append("%s.%s A\n" % (label(rng, rng.randint(8, 16)), origin))
                continue
            r = rng.random()
            i = rng.randrange(n)
            if r < 0.40:
                lines.append("host%d.%s A\n" % (i, origin))
            elif r < 0.60:
                lines.append("host%d.%s AAAA\n" % (i, origin))
            elif r < 0.70:
                lines.append("host%d.%s MX\n" % (i - i % 4, origin))
            elif r < 0.80:
                lines.append("host%d.%s TXT\n" % (i - i % 4, origin))
            elif r < 0.90:
                lines.append("alias%d.%s A\n" % (i - i % 10, origin))
            elif r < 0.95:
                lines.append("%s.wild.%s A\n" % (label(rng, 6), origin))
            else:
                lines.append("www%d.sub.%s A\n" % (i, origin))
        f.write("".join(lines))


def main(argv):
    if len(argv) >= 4 and argv[1] == "zone":
        zone(argv[2], int(argv[3]), argv[4])
    elif len(argv) >= 6 and argv[1] == "queries":
        queries(argv[2], int(argv[3]), argv[4], int(argv[5]), argv[6])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
