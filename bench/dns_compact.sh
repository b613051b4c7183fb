#!/usr/bin/env bash
# Cost of RFC 9824 compact denial (an NSEC made and signed per negative
# answer) against the NXDOMAIN of an NSEC3 zone signed at load (proofs are
# index lookups), in one anyedge (release, one worker) pinned to SERVER_CPU,
# dnsperf with DO pinned to CLIENT_CPU. Mixes, DURATION seconds each,
# interleaved over ROUNDS rounds:
#   nsec3_nx     random names under nsec3.test. (NXDOMAIN + 3 NSEC3 + RRSIGs)
#   compact_nx   random names under compact.test. (every answer a cache
#                miss: one Ed25519 / ECDSA signing per query)
#   compact_hot  1000 names under compact.test. repeated (signature cache hits)
# Prints the median q/s of each and the ratios compact/nsec3.
#
#   bench/dns_compact.sh [ROUNDS] [DURATION]    (defaults 3, 5)
#
# Environment: ALG (ed25519 | ecdsap256, default ecdsap256), SKIP_BUILD=1,
# SERVER_CPU (1), CLIENT_CPU (0), CLIENTS (4), OUTSTANDING (100).
# Loopback only; everything started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-${ROUNDS:-3}}
DURATION=${2:-${DURATION:-5}}
ALG=${ALG:-ecdsap256}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-100}
PORT=${PORT:-25353}
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -p anyedge >&2
BIN=${CARGO_TARGET_DIR:-target}/release/anyedge
W=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

ZONE='$TTL 3600
@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300
  IN NS ns1
ns1 IN A 192.0.2.1
www IN A 192.0.2.10
'
CFG="[pop]
name = \"bench\"
[dns]
listen = [\"127.0.0.1:$PORT\"]
workers = 1
"
for z in nsec3 compact; do
  printf '$ORIGIN %s.test.\n%s' "$z" "$ZONE" >"$W/$z.zone"
  stem=$("$BIN" dns keygen --zone "$z.test." --algorithm "$ALG" --csk --out "$W")
  CFG+="
[[dns.zone]]
name = \"$z.test.\"
file = \"$W/$z.zone\"
dnssec = { keys = [\"$stem\"], denial = \"$z\" }
"
done
echo "$CFG" >"$W/anyedge.toml"
python3 - "$W" <<'EOF'
import random, sys
w = sys.argv[1]
r = random.Random(7)
def rnd(): return ''.join(r.choice('abcdefghijklmnopqrstuvwxyz0123456789') for _ in range(12))
for z in ('nsec3', 'compact'):
    with open(f'{w}/{z}_nx.q', 'w') as f:
        for _ in range(500000):
            f.write(f'{rnd()}.{z}.test. A\n')
hot = [rnd() for _ in range(1000)]
with open(f'{w}/compact_hot.q', 'w') as f:
    for i in range(500000):
        f.write(f'{hot[i % 1000]}.compact.test. A\n')
EOF
taskset -c "$SERVER_CPU" "$BIN" run -c "$W/anyedge.toml" >"$W/log" 2>&1 &
PID=$!
for _ in $(seq 100); do dig +short @127.0.0.1 -p "$PORT" www.compact.test A >/dev/null 2>&1 && break; sleep 0.1; done
dig +dnssec +norec @127.0.0.1 -p "$PORT" nope.compact.test A | grep -q 'TYPE128' || { echo "FAIL: no compact answer" >&2; exit 1; }

declare -A R
for round in $(seq "$ROUNDS"); do
  for mix in nsec3_nx compact_nx compact_hot; do
    q=$(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -D -d "$W/$mix.q" -l "$DURATION" \
      -c "$CLIENTS" -q "$OUTSTANDING" 2>/dev/null | awk '/Queries per second/ {print $4}')
    echo "round $round $mix: $q q/s" >&2
    R[$mix]+="$q "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n3=$(echo "${R[nsec3_nx]}" | median)
cn=$(echo "${R[compact_nx]}" | median)
ch=$(echo "${R[compact_hot]}" | median)
echo "RESULT alg=$ALG nsec3_nx=$n3 compact_nx=$cn compact_hot=$ch"
awk -v a="$cn" -v b="$ch" -v n="$n3" 'BEGIN {printf "RESULT ratio compact_nx/nsec3_nx=%.2f compact_hot/nsec3_nx=%.2f\n", a/n, b/n}'
