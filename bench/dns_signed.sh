#!/usr/bin/env bash
# Signed-zone DNS benchmark (issue 12, item 3): anyedge vs Knot DNS (and NSD)
# in one run, each server with one worker pinned to SERVER_CPU, dnsperf with
# DO=1 (-D) pinned to CLIENT_CPU, same generated zone (bench/dns_zone_gen.py).
#
# Part "presigned": the zone signed once by ldns-signzone (ECDSA P-256 KSK +
#   ZSK; NSEC3 iterations 0, no salt, or NSEC with DENIAL=nsec), the same
#   signed file served by anyedge, Knot (signing off) and NSD.
# Part "online": the unsigned zone signed when asked: anyedge with
#   `dnssec = { keys = [CSK], denial = "compact" }` (RFC 9824: positive
#   RRsets signed at load, each negative answer signed per response through
#   a bounded cache) against Knot with mod-onlinesign (every answer signed
#   per response; default policy, ECDSA P-256). NSD has no online signing.
# Mixes (each a dnsperf run of DURATION s):
#   hit  existing names/types (A, AAAA, MX, TXT, CNAME, wildcard, referral;
#        under compact denial a wildcard answer is signed at the query name,
#        so anyedge online signs a few per second here too, mostly cached)
#   nx   random labels under the apex (random-subdomain flood): NXDOMAIN
#        (NOERROR + NXNAME for compact denial and Knot's black lies)
# Servers run one at a time in interleaved rounds, each started fresh per
# round and checked with dig (RRSIG in the DO answer) first. For anyedge
# online, the new counters (/metrics: anyedge_dns_signatures_total,
# anyedge_dns_signature_cache_total{result}) give signatures computed per
# second and the cache hit rate of each run.
# Per run also queries answered per server CPU-second (ticks of the server's
# process tree; less sensitive to other load on a shared machine).
# Prints medians of q/s, q/CPU-s and lost queries, ratios anyedge/knot and
# anyedge/nsd, and RESULT lines.
#
#   bench/dns_signed.sh [ROUNDS] [DURATION]     (defaults 3, 10)
#
# Environment: PARTS ("presigned online"), DENIAL (nsec3 | nsec, presigned
# part; default nsec3), ZONE_RECORDS (26000), CLIENTS (8), OUTSTANDING (200),
# SERVER_CPU (1), CLIENT_CPU (0), SKIP_BUILD=1 (target/release/anyedge as it
# is), SMOKE=1 (1 round of 2 s, small zone: ~30 s). Needs knot, nsd, dnsperf,
# dnsutils, ldnsutils, curl. Loopback only; everything started here is
# stopped by PID. Lost queries and missed targets are reported, not fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "FAIL: $*" >&2; exit 1; }
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  ROUNDS=1; DURATION=2; ZONE_RECORDS=${ZONE_RECORDS:-2600}
else
  ROUNDS=${1:-${ROUNDS:-3}}
  DURATION=${2:-${DURATION:-10}}
  ZONE_RECORDS=${ZONE_RECORDS:-26000}
fi
PARTS=${PARTS:-presigned online}
DENIAL=${DENIAL:-nsec3}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-200}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
ORIGIN=example.com.
for b in knotd nsd dnsperf dig ldns-signzone ldns-keygen curl taskset python3; do
  command -v "$b" >/dev/null || PATH=$PATH:/usr/sbin command -v "$b" >/dev/null || die "missing $b"
done
export PATH=$PATH:/usr/sbin
if [ "${SKIP_BUILD:-0}" != 1 ]; then cargo build --release -q -p anyedge; fi
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/anyedge
[ -x "$BIN" ] || die "no $BIN"
GEN=$PWD/bench/dns_zone_gen.py
W=$(mktemp -d /tmp/anyedge-dnssigned.XXXXXX)
. bench/lib/dns.sh  # start_dns_server, stop_dns_server, wait_signed, ticks ...
cleanup() { [ -n "$SPID" ] && stop_server; rm -rf "$W"; }
trap cleanup EXIT

# --- zones, keys, query files ----------------------------------------------
python3 "$GEN" zone "$ORIGIN" "$ZONE_RECORDS" "$W/plain.zone" >"$W/facts"
python3 "$GEN" queries "$ORIGIN" "$ZONE_RECORDS" hit 200000 "$W/hit.q"
python3 "$GEN" queries "$ORIGIN" "$ZONE_RECORDS" nx 200000 "$W/nx.q"
CHECK_NAME=$(tr ' ' '\n' <"$W/facts" | awk -F= '$1 == "check_name" {print $2}')
(
  cd "$W"
  ksk=$(ldns-keygen -a ECDSAP256SHA256 -k "$ORIGIN")
  zsk=$(ldns-keygen -a ECDSAP256SHA256 "$ORIGIN")
  n3=(); [ "$DENIAL" = nsec3 ] && n3=(-n -t 0)
  t0=$(date +%s.%N)
  ldns-signzone "${n3[@]}" -f signed.zone -o "$ORIGIN" plain.zone "$ksk" "$zsk"
  echo "presigned zone: $(grep -c . signed.zone) lines, signed by ldns-signzone ($DENIAL) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s" >&2
)
STEM=$("$BIN" dns keygen --zone "$ORIGIN" --algorithm ecdsap256 --csk --out "$W")
echo "zone: $(cat "$W/facts")" >&2

start_server() {  # start_server WHO (anyedge|knot|nsd) MODE (presigned|online)
  local who=$1 mode=$2 zone zextra="" extra=""
  APORT=""
  zone=$W/signed.zone; [ "$mode" = online ] && zone=$W/plain.zone
  case $who in
    knot)
      if [ "$mode" = online ]; then
        extra=$'mod-onlinesign:\n  - id: os'
        zextra="    module: mod-onlinesign/os"
      fi
      ;;
    anyedge)
      APORT=$(free_port)
      [ "$mode" = online ] && zextra="dnssec = { keys = [\"$STEM\"], denial = \"compact\" }"
      extra=$(printf '[admin]\nlisten = "127.0.0.1:%s"\ntoken = "bench-token-0123456789abcdef"' "$APORT")
      ;;
  esac
  start_dns_server "$who" "$zone" "$zextra" "$extra"
  wait_signed "$SPORT" "$CHECK_NAME" 30 || { tail -20 "$SDIR/log" >&2; die "$who ($mode): no signed answer for $CHECK_NAME"; }
  # knotd pins its UDP workers itself: re-pin every thread to SERVER_CPU
  local p; for p in $(tree "$SPID"); do taskset -a -cp "$SERVER_CPU" "$p" >/dev/null 2>&1 || true; done
  # warm-up, unmeasured
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$SPORT" -D -d "$W/hit.q" -l 1 -c "$CLIENTS" -q "$OUTSTANDING" >/dev/null 2>&1 || true
}
stop_server() { stop_dns_server; }
metric() {  # metric NAME_AND_LABELS: from anyedge's /metrics
  curl -s "http://127.0.0.1:$APORT/metrics" | awk -v k="$1" '$1 == k {print $2}'
}

declare -A QPS LOST RC SIGS HITR QCPU
run_mix() {  # run_mix KEY MIX
  local out s0=0 h0=0 m0=0 s1 h1 m1
  if [ -n "$APORT" ]; then
    s0=$(metric anyedge_dns_signatures_total); h0=$(metric 'anyedge_dns_signature_cache_total{result="hit"}')
    m0=$(metric 'anyedge_dns_signature_cache_total{result="miss"}')
  fi
  local c0 c1
  c0=$(ticks "$SPID")
  out=$(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$SPORT" -D -d "$W/$2.q" -l "$DURATION" \
    -c "$CLIENTS" -q "$OUTSTANDING" -t 2 2>&1) || true
  c1=$(ticks "$SPID")
  local q l r n cpus
  q=$(awk '/Queries per second/ {printf "%.0f", $4}' <<<"$out")
  n=$(awk '/Queries completed/ {print $3}' <<<"$out")
  cpus=$(awk -v n="${n:-0}" -v t="$((c1 - c0))" -v hz="$HZ" 'BEGIN {printf "%.0f", (t > 0 ? n * hz / t : 0)}')
  QCPU[$1]+="$cpus "
  l=$(awk '/Queries lost/ {print $3}' <<<"$out")
  r=$(awk '/Response codes/ {$1 = $2 = ""; gsub(/^ +/, ""); print}' <<<"$out")
  QPS[$1]+="$q "; LOST[$1]+="$l "; RC[$1]=$r
  local extra=""
  if [ -n "$APORT" ]; then
    s1=$(metric anyedge_dns_signatures_total); h1=$(metric 'anyedge_dns_signature_cache_total{result="hit"}')
    m1=$(metric 'anyedge_dns_signature_cache_total{result="miss"}')
    local rate hr
    rate=$(awk -v a="$s0" -v b="$s1" -v d="$DURATION" 'BEGIN {printf "%.0f", (b - a) / d}')
    hr=$(awk -v h="$((h1 - h0))" -v m="$((m1 - m0))" 'BEGIN {printf "%.1f", ((h + m) > 0 ? 100 * h / (h + m) : 0)}')
    SIGS[$1]+="$rate "; HITR[$1]+="$hr "
    extra=" signatures/s=$rate cache_hit=$hr%"
  fi
  echo "  $1: $q q/s ($cpus per server CPU-s) lost=$l rcodes: $r$extra" >&2
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }

KEYS=()
for round in $(seq "$ROUNDS"); do
  for part in $PARTS; do
    case $part in
      presigned) servers="knot nsd anyedge" ;;
      online) servers="knot anyedge" ;;
      *) die "unknown part $part" ;;
    esac
    for who in $servers; do
      echo "round $round $part $who" >&2
      start_server "$who" "$part"
      for mix in hit nx; do
        k="$part/$mix/$who"
        [ "$round" = 1 ] && KEYS+=("$k")
        run_mix "$k" "$mix"
      done
      stop_server
    done
  done
done

echo
echo "medians of $ROUNDS rounds x ${DURATION}s, zone $ZONE_RECORDS records, DO=1 (presigned: $DENIAL)"
printf '%-26s %10s %10s %8s %10s %10s  %s\n' run "q/s" "q/CPU-s" lost "sigs/s" "cache_hit" "rcodes (last run)"
for k in "${KEYS[@]}"; do
  printf '%-26s %10s %10s %8s %10s %10s  %s\n' "$k" "$(echo "${QPS[$k]}" | median)" "$(echo "${QCPU[$k]}" | median)" "$(echo "${LOST[$k]}" | median)" \
    "$(echo "${SIGS[$k]:-}" | median)" "$(echo "${HITR[$k]:-}" | median)" "${RC[$k]}"
done
for part in $PARTS; do
  for mix in hit nx; do
    ae=$(echo "${QPS[$part/$mix/anyedge]}" | median)
    kn=$(echo "${QPS[$part/$mix/knot]}" | median)
    line="RESULT $part $mix anyedge=$ae knot=$kn anyedge/knot=$(awk -v a="$ae" -v b="$kn" 'BEGIN {printf "%.2f", a / b}')"
    if [ -n "${QPS[$part/$mix/nsd]:-}" ]; then
      ns=$(echo "${QPS[$part/$mix/nsd]}" | median)
      line+=" nsd=$ns anyedge/nsd=$(awk -v a="$ae" -v b="$ns" 'BEGIN {printf "%.2f", a / b}')"
    fi
    line+=" per_cpu_s_anyedge/knot=$(awk -v a="$(echo "${QCPU[$part/$mix/anyedge]}" | median)" -v b="$(echo "${QCPU[$part/$mix/knot]}" | median)" 'BEGIN {printf "%.2f", a / b}')"
    line+=" lost_anyedge=$(echo "${LOST[$part/$mix/anyedge]}" | median)"
    [ "$part" = online ] && line+=" signatures_per_s=$(echo "${SIGS[$part/$mix/anyedge]}" | median) cache_hit_pct=$(echo "${HITR[$part/$mix/anyedge]}" | median)"
    echo "$line"
  done
done
