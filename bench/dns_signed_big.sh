#!/usr/bin/env bash
# Load time and memory of a big pre-signed zone (issue 12, item 4): a zone of
# RECORDS records (default 1,000,000; bench/dns_zone_gen.py) signed once by
# ldns-signzone (ECDSA P-256 KSK + ZSK, NSEC3 iterations 0 no salt, or NSEC
# with DENIAL=nsec), then served by anyedge, Knot (signing off) and NSD, one
# at a time, each pinned to SERVER_CPU, LOAD_ROUNDS times. Per server: wall
# time from process start until the zone's last name answers with its RRSIG
# (dig +dnssec, polled), then memory: RSS and PSS summed over the process
# tree (NSD forks its server from the loader; PSS counts shared pages once).
# Prints medians and ratios anyedge/knot, anyedge/nsd. Not run in CI.
#
#   bench/dns_signed_big.sh [LOAD_ROUNDS]     (default 3)
#
# Environment: RECORDS (1000000), DENIAL (nsec3 | nsec), SERVERS ("knot nsd
# anyedge"), SERVER_CPU (1), LOAD_TIMEOUT (300 s), KEEP=DIR (keep the signed
# zone in DIR and reuse it on the next run: signing 1M records takes minutes
# of CPU), SKIP_BUILD=1. Loopback only; everything started is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin
die() { echo "FAIL: $*" >&2; exit 1; }
LOAD_ROUNDS=${1:-${LOAD_ROUNDS:-3}}
RECORDS=${RECORDS:-1000000}
DENIAL=${DENIAL:-nsec3}
SERVERS=${SERVERS:-knot nsd anyedge}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
ORIGIN=example.com.
for b in knotd nsd dig ldns-signzone ldns-keygen taskset python3; do command -v "$b" >/dev/null || die "missing $b"; done
if [ "${SKIP_BUILD:-0}" != 1 ]; then cargo build --release -q -p anyedge; fi
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/anyedge
[ -x "$BIN" ] || die "no $BIN"
GEN=$PWD/bench/dns_zone_gen.py
W=$(mktemp -d /tmp/anyedge-dnsbig.XXXXXX)
Z=${KEEP:-$W}
mkdir -p "$Z"
. bench/lib/dns.sh  # start_dns_server, stop_dns_server, wait_signed, mem_kib ...
cleanup() { [ -n "$SPID" ] && stop_server; rm -rf "$W"; }
trap cleanup EXIT

SIGNED=$Z/big-$RECORDS-$DENIAL.signed
if [ ! -s "$SIGNED" ] || [ ! -s "$SIGNED.facts" ]; then
  python3 "$GEN" zone "$ORIGIN" "$RECORDS" "$Z/big.zone" >"$SIGNED.facts"
  (
    cd "$Z"
    ksk=$(ldns-keygen -a ECDSAP256SHA256 -k "$ORIGIN")
    zsk=$(ldns-keygen -a ECDSAP256SHA256 "$ORIGIN")
    n3=(); [ "$DENIAL" = nsec3 ] && n3=(-n -t 0)
    t0=$(date +%s)
    ldns-signzone "${n3[@]}" -f "$SIGNED" -o "$ORIGIN" big.zone "$ksk" "$zsk"
    echo "signed by ldns-signzone in $(($(date +%s) - t0)) s" >&2
    rm -f big.zone
  )
fi
LAST=$(tr ' ' '\n' <"$SIGNED.facts" | awk -F= '$1 == "last_name" {print $2}')
echo "zone: $(cat "$SIGNED.facts"); signed file $(du -h "$SIGNED" | cut -f1), $(wc -l <"$SIGNED") lines" >&2

stop_server() { stop_dns_server 10; }  # a server busy loading may take a while to act on TERM

declare -A T RSS PSS
for round in $(seq "$LOAD_ROUNDS"); do
  for who in $SERVERS; do
    t0=$(date +%s.%N)
    start_dns_server "$who" "$SIGNED"
    ok=""
    wait_signed "$SPORT" "$LAST" "$LOAD_TIMEOUT" && ok=1
    t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
    [ -n "$ok" ] || { tail -20 "$SDIR/log" >&2; die "$who: $LAST not answered signed within $LOAD_TIMEOUT s"; }
    sleep 1  # let loaders exit and the allocator settle
    read -r r p _ < <(mem_kib "$SPID")
    r=$((r / 1024)); p=$((p / 1024))
    printf 'round %s %-8s load %.1f s  RSS %s MiB  PSS %s MiB\n' "$round" "$who" "$t" "$r" "$p" >&2
    T[$who]+="$t "; RSS[$who]+="$r "; PSS[$who]+="$p "
    stop_server
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }
echo "medians of $LOAD_ROUNDS rounds, $RECORDS records signed ($DENIAL)"
printf '%-8s %10s %10s %10s\n' server "load_s" "RSS_MiB" "PSS_MiB"
for who in $SERVERS; do
  printf '%-8s %10.1f %10s %10s\n' "$who" "$(echo "${T[$who]}" | median)" "$(echo "${RSS[$who]}" | median)" "$(echo "${PSS[$who]}" | median)"
done
for peer in knot nsd; do
  [ -n "${T[$peer]:-}" ] && [ -n "${T[anyedge]:-}" ] || continue
  awk -v at="$(echo "${T[anyedge]}" | median)" -v pt="$(echo "${T[$peer]}" | median)" \
    -v ar="$(echo "${RSS[anyedge]}" | median)" -v pr="$(echo "${RSS[$peer]}" | median)" -v peer="$peer" \
    'BEGIN {printf "RESULT big_signed anyedge/%s load_time=%.2f rss=%.2f\n", peer, at / pt, ar / pr}'
done
