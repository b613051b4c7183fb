#!/usr/bin/env bash
# DDoS absorption benchmark (root; network namespaces + veth). A PoP running
# anyedge (also serving authoritative DNS for example.com) in front of nginx
# (`proxy_protocol`), an attacker host and a legitimate client, each in its
# own namespace. Two floods, each run with the protection layers added one by
# one (the same attack every time):
#
#   TCP flood: wrk opens new connections as fast as it can (`Connection:
#     close`, 200 connections) while the client makes one HTTP request every
#     20 ms. Layers: none, userspace (the guard), xdp (guard + XDP fast path).
#   DNS flood: dnsperf sends random-subdomain (NXDOMAIN) queries at its
#     maximum rate while the client asks for h0..h9.example.com A every 20 ms.
#     Layers: none, rrl (response rate limiting), xdp (RRL + per-source DNS
#     rate in the XDP fast path).
#
# Per run: legit success %, legit median / max latency, attack rate sent and
# what came back / got through, and what each layer absorbed per second (from
# the daemon's own counters: XDP drops, guard drops, RRL drops + slips), and
# the anyedge process's CPU. Two tables of medians over ROUNDS at the end.
#
#   bench/guard.sh [SECONDS] [ROUNDS]      (defaults 5 s, 3 rounds; medians)
#
# Bounded: each run lasts SECONDS (+1 s for dnsperf's query timeout); traffic
# stays inside the namespaces. Exits non-zero when the XDP fast path cannot
# attach (its layer is then reported as n/a, the other layers still run).
set -euo pipefail
SECS=${1:-5}
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
for try in 1 2 3; do   # others may be mid-edit: retry the build a little later
  cargo build --release -q -p anyedge && break
  [ "$try" = 3 ] && { echo "build failed" >&2; exit 1; }
  echo "build failed; retrying in 60 s" >&2; sleep 60
done
BIN=$PWD/target/release/anyedge
for t in nginx wrk dnsperf kdig curl jq; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
P=g$$
W=$(mktemp -d /tmp/anyedge-guard.XXXXXX)
PIDS=()   # long-lived helpers (nginx)
AE=""     # the daemon of the current run
CL=""     # the legit client loop of the current run
cleanup() {
  for p in $AE $CL "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in pop att cli; do ip netns del "$P-$n" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
for n in pop att cli; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
ip -n "$P-pop" link add to-att type veth peer name eth0 netns "$P-att"
ip -n "$P-pop" link add to-cli type veth peer name eth0 netns "$P-cli"
ip -n "$P-pop" addr add 198.18.1.1/24 dev to-att; ip -n "$P-att" addr add 198.18.1.2/24 dev eth0
ip -n "$P-pop" addr add 198.18.2.1/24 dev to-cli; ip -n "$P-cli" addr add 198.18.2.2/24 dev eth0
for l in "pop to-att" "pop to-cli" "att eth0" "cli eth0"; do set -- $l; ip -n "$P-$1" link set "$2" up; done

mkdir -p "$W/nginx/tmp"
cat > "$W/nginx/nginx.conf" <<NG
daemon off; master_process off;
error_log $W/nginx/error.log error; pid $W/nginx/nginx.pid;
events { worker_connections 16384; }
http {
  access_log $W/nginx/access.log;
  log_format pp '\$proxy_protocol_addr';
  client_body_temp_path $W/nginx/tmp/b; proxy_temp_path $W/nginx/tmp/p;
  fastcgi_temp_path $W/nginx/tmp/f; uwsgi_temp_path $W/nginx/tmp/u; scgi_temp_path $W/nginx/tmp/s;
  server { listen 127.0.0.1:8080 proxy_protocol backlog=8192; access_log $W/nginx/access.log pp; location / { return 200 "ok\n"; } }
}
NG
ip netns exec "$P-pop" nginx -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" & PIDS+=($!)

# The zone the PoP serves, and the attacker's query file: 100k random names
# under example.com (every one NXDOMAIN), A and AAAA.
cat > "$W/example.com.zone" <<'Z'
$ORIGIN example.com.
$TTL 300
@    SOA ns1 hostmaster 1 7200 3600 1209600 60
@    NS  ns1
ns1  A   198.18.2.1
Z
for i in $(seq 0 9); do echo "h$i A 192.0.2.$((10 + i))" >> "$W/example.com.zone"; done
cat > "$W/dns-client.sh" <<'C'
# $1 = seconds; one line per query: "ok MS" (NOERROR with an answer; kdig's
# own round-trip time) or "fail MS" (wall time until kdig gave up)
end=$((SECONDS + $1)); i=0
while [ $SECONDS -lt $end ]; do
  i=$((i + 1)); t0=${EPOCHREALTIME/./}
  o=$(kdig +retry=0 +timeout=1 @198.18.2.1 "h$((i % 10)).example.com" A 2>&1) || true
  t1=${EPOCHREALTIME/./}
  if [[ $o == *"status: NOERROR"* && $o =~ ANSWER:\ [1-9] && $o =~ \ in\ ([0-9.]+)\ ms ]]; then
    echo "ok ${BASH_REMATCH[1]}"
  else
    echo "fail $(( (t1 - t0) / 1000 ))"
  fi
  sleep 0.02
done
C
awk 'BEGIN { srand(42); for (i = 0; i < 100000; i++) { s = ""; n = 6 + int(rand() * 10)
  for (j = 0; j < n; j++) s = s sprintf("%c", 97 + int(rand() * 26))
  print s ".example.com " (i % 4 ? "A" : "AAAA") } }' > "$W/queries.txt"

config() {  # $1 = tcp-none | tcp-userspace | tcp-xdp | dns-none | dns-rrl | dns-xdp
  local guard=0 rrl=0 xdp=0
  case $1 in
    tcp-userspace) guard=1 ;;
    tcp-xdp) guard=1; xdp=1 ;;
    dns-rrl) rrl=1 ;;
    dns-xdp) guard=1; rrl=1; xdp=1 ;;
  esac
  cat <<AE
[pop]
name = "bench"
workers = 1
[admin]
listen = "127.0.0.1:9180"
AE
  [ $guard = 1 ] && printf '[guard]\nnew_connections_per_address = { per_second = 50, burst = 50 }\nmax_connections_per_address = 64\n'
  [ $xdp = 1 ] && printf '[xdp]\ninterfaces = ["to-att"]\nmode = "generic"\ndns_queries_per_address = { per_second = 100, burst = 100 }\n'
  cat <<AE
[dns]
listen = ["0.0.0.0:53"]
workers = 1
[[dns.zone]]
name = "example.com"
file = "$W/example.com.zone"
AE
  [ $rrl = 1 ] && printf '[dns.rrl]\nrate = 20\nburst = 50\nslip = 2\n'
  cat <<AE
[[service]]
name = "web"
listen = ["0.0.0.0:80"]
backlog = 8192
[service.health]
kind = "tcp"
interval = "1s"
rise = 1
[[service.backend]]
name = "nginx"
address = "127.0.0.1:8080"
AE
}

status() { ip netns exec "$P-pop" curl -s -m 2 http://127.0.0.1:9180/api/v1/status || echo '{}'; }
# counters from a status document: xdp drops, guard drops, rrl drops + slips, udp queries
counters() {
  jq -r '[([.xdp.counters[]? | select(.drop) | .packets] | add // 0),
          ([(.guard.drops // {}) | .. | numbers] | add // 0),
          ((.dns.stats.rrl_dropped // 0) + (.dns.stats.rrl_slipped // 0)),
          (.dns.stats.udp_queries // 0)] | @tsv'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
softirq_ticks() { awk '/^cpu / {print $8}' /proc/stat; }
HZ=$(getconf CLK_TCK)
pct() { awk -v d="$1" -v hz="$HZ" -v s="$SECS" 'BEGIN { printf "%.0f", 100 * d / hz / s }'; }
per_s() { awk -v n="$1" -v s="$SECS" 'BEGIN { printf "%.0f", n / s }'; }

RC=0
XDP_OK=1
declare -A R
start_daemon() {  # $1 = mode; sets AE; returns 1 when the XDP fast path did not attach
  config "$1" > "$W/ae.toml"
  ip netns exec "$P-pop" "$BIN" run -c "$W/ae.toml" 2>"$W/ae-$1.log" & AE=$!
  local i
  for i in $(seq 50); do   # ready when the admin API answers (5 s at most)
    ip netns exec "$P-pop" curl -s -m 1 -o /dev/null http://127.0.0.1:9180/api/v1/status && break
    sleep 0.1
  done
  sleep 1   # health check rise
  case $1 in *xdp)
    for i in $(seq 30); do grep -q 'XDP fast path' "$W/ae-$1.log" && break; sleep 0.1; done
    grep -q 'XDP fast path attached' "$W/ae-$1.log" || {
      echo "XDP fast path unavailable for layer $1:" >&2
      grep -i 'xdp' "$W/ae-$1.log" | tail -3 >&2
      return 1; } ;;
  esac
}
stop_daemon() {
  kill "$AE" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$AE" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$AE" 2>/dev/null || true
  wait "$AE" 2>/dev/null || true
  AE=""
}
legit_stats() {  # $1 = mode; reads $W/legit.out ("ok|fail MS" lines), sets LEGIT
  local total ok
  total=$(wc -l < "$W/legit.out"); ok=$(grep -c '^ok ' "$W/legit.out" || true)
  R[$1,ok]+="$(awk -v o="$ok" -v t="$total" 'BEGIN { printf "%.2f", t ? 100*o/t : 0 }') "
  R[$1,p50]+="$(awk '{print $2}' "$W/legit.out" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') "
  R[$1,max]+="$(awk '{print $2}' "$W/legit.out" | sort -g | tail -1) "
  LEGIT="$ok/$total"
}
measure_start() { read -r C0_XDP C0_GUARD C0_RRL C0_UDP < <(status | counters); T0_CPU=$(cpu_ticks "$AE"); T0_SI=$(softirq_ticks); }
measure_end() {  # $1 = mode
  read -r C1_XDP C1_GUARD C1_RRL C1_UDP < <(status | counters)
  R[$1,xdp]+="$(per_s $((C1_XDP - C0_XDP))) "
  R[$1,guard]+="$(per_s $((C1_GUARD - C0_GUARD))) "
  R[$1,rrl]+="$(per_s $((C1_RRL - C0_RRL))) "
  R[$1,udp]+="$(per_s $((C1_UDP - C0_UDP))) "
  CPU=$(pct $(( $(cpu_ticks "$AE") - T0_CPU )))
  R[$1,cpu]+="$CPU "
  SI=$(pct $(( $(softirq_ticks) - T0_SI )))
}

tcp_run() {  # $1 = mode
  : > "$W/nginx/access.log"
  measure_start
  # legit client: one request per 20 ms, records success and time (ms)
  ip netns exec "$P-cli" bash -c "end=\$((SECONDS+$SECS)); while [ \$SECONDS -lt \$end ]; do
      curl -s -m 2 -o /dev/null -w '%{http_code} %{time_total}\n' http://198.18.2.1/ || echo '000 2'; sleep 0.02; done" |
    awk '{ print ($1 == 200 ? "ok" : "fail"), $2 * 1000 }' > "$W/legit.out" &
  CL=$!
  ip netns exec "$P-att" wrk -t1 -c200 -d"${SECS}s" -H 'Connection: close' http://198.18.1.1/ > "$W/wrk.out" 2>&1 || true
  wait "$CL" || true; CL=""
  measure_end "$1"
  local att reached
  legit_stats "$1"
  # wrk: completed requests + socket errors = connection attempts handled
  att=$(awk '/requests in/ {r=$1} /Socket errors/ {gsub(/,/,""); e=$4+$6+$8+$10} END {print r+e}' "$W/wrk.out")
  R[$1,att]+="$(per_s "$att") "
  reached=$(grep -c '^198.18.1.2$' "$W/nginx/access.log" || true)
  R[$1,reach]+="$(per_s "$reached") "
  echo "round $r $1: legit $LEGIT, attack attempts/s $(per_s "$att"), reached backend/s $(per_s "$reached")," \
    "xdp drops/s $(per_s $((C1_XDP - C0_XDP))), guard drops/s $(per_s $((C1_GUARD - C0_GUARD)))," \
    "anyedge CPU $CPU%, host softirq $SI%" >&2
}

dns_run() {  # $1 = mode
  measure_start
  # legit client: one query per 20 ms for h0..h9.example.com A (kdig: one try,
  # 1 s timeout; a truncated answer is retried over TCP, as a resolver would)
  ip netns exec "$P-cli" bash "$W/dns-client.sh" "$SECS" > "$W/legit.out" &
  CL=$!
  ip netns exec "$P-att" dnsperf -s 198.18.1.1 -d "$W/queries.txt" -l "$SECS" -c 4 -q 60000 -t 0.5 \
    -O suppress=timeout > "$W/dnsperf.out" 2>&1 || true
  wait "$CL" || true; CL=""
  measure_end "$1"
  local sent answered
  legit_stats "$1"
  sent=$(awk '/Queries sent:/ {print $3}' "$W/dnsperf.out"); sent=${sent:-0}
  answered=$(awk '/Queries completed:/ {print $3}' "$W/dnsperf.out"); answered=${answered:-0}
  R[$1,att]+="$(per_s "$sent") "
  R[$1,back]+="$(per_s "$answered") "
  echo "round $r $1: legit $LEGIT, attack sent/s $(per_s "$sent"), answered/s $(per_s "$answered")," \
    "xdp drops/s $(per_s $((C1_XDP - C0_XDP))), rrl drops+slips/s $(per_s $((C1_RRL - C0_RRL)))," \
    "udp queries seen/s $(per_s $((C1_UDP - C0_UDP))), anyedge CPU $CPU%, host softirq $SI%" >&2
}

for r in $(seq "$ROUNDS"); do
  for part in tcp dns; do
    for layer in none $([ $part = tcp ] && echo userspace || echo rrl) xdp; do
      mode=$part-$layer
      if [ $layer = xdp ] && [ $XDP_OK = 0 ]; then continue; fi
      if ! start_daemon "$mode"; then XDP_OK=0; RC=1; stop_daemon; continue; fi
      ${part}_run "$mode"
      stop_daemon
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
m() { echo "${R[$1]:-}" | median; }
echo
echo "TCP flood (new connections) - medians of $ROUNDS rounds x ${SECS}s"
printf '%-10s %10s %12s %12s %14s %17s %15s %17s %12s\n' layer "legit ok %" "legit p50 ms" "legit max ms" \
  "attack conn/s" "reached backend/s" "xdp absorbed/s" "guard absorbed/s" "anyedge CPU%"
for l in none userspace xdp; do
  k=tcp-$l
  printf '%-10s %10s %12s %12s %14s %17s %15s %17s %12s\n' "$l" "$(m "$k,ok")" "$(m "$k,p50")" "$(m "$k,max")" \
    "$(m "$k,att")" "$(m "$k,reach")" "$(m "$k,xdp")" "$(m "$k,guard")" "$(m "$k,cpu")"
done
echo
echo "DNS flood (random-subdomain NXDOMAIN) - medians of $ROUNDS rounds x ${SECS}s"
printf '%-10s %10s %12s %12s %14s %16s %15s %15s %16s %12s\n' layer "legit ok %" "legit p50 ms" "legit max ms" \
  "attack sent/s" "attack answered/s" "xdp absorbed/s" "rrl absorbed/s" "udp to daemon/s" "anyedge CPU%"
for l in none rrl xdp; do
  k=dns-$l
  printf '%-10s %10s %12s %12s %14s %16s %15s %15s %16s %12s\n' "$l" "$(m "$k,ok")" "$(m "$k,p50")" "$(m "$k,max")" \
    "$(m "$k,att")" "$(m "$k,back")" "$(m "$k,xdp")" "$(m "$k,rrl")" "$(m "$k,udp")" "$(m "$k,cpu")"
done
cat <<EOF

Layers (cumulative within each flood):
  none       no protection: the daemon accepts / answers everything.
  userspace  the userspace guard: [guard] 50 new connections/s per source address (burst 50), 64 open
             per address; refused connections are accepted and closed by the daemon (guard absorbed/s).
  rrl        DNS response rate limiting in the daemon: 20 responses/s per (source /24, answer kind,
             name; NXDOMAIN per zone), burst 50, slip 2 (every 2nd limited response sent truncated,
             the rest dropped); rrl absorbed/s = limited responses (dropped + slipped).
  xdp        the above plus the XDP fast path on the PoP's attacker-facing veth (generic mode): the
             guard's per-source SYN rate and 100 DNS queries/s per source (burst 100) enforced in the
             kernel before a socket sees the packet; xdp absorbed/s = packets its drop counters count
             (SYN retransmissions count again).
Attackers: one source each; TCP = wrk, 200 connections, a new connection per request (closed loop:
its rate falls when the PoP stops answering: SYNs dropped in XDP stall its connections); DNS =
dnsperf, 4 sockets, up to 60000 queries outstanding, 0.5 s timeout (so it keeps sending when
nothing comes back), 100k random names under example.com (all NXDOMAIN). Legitimate client:
another source, one request / query every 20 ms (HTTP 200, or h0..h9.example.com A NOERROR with an
answer = ok; a failure counts at its timeout). anyedge CPU% = the daemon's user+sys time (100 = one
core); the veth receive path and XDP generic run in softirq (host-wide, in the per-run lines), not
in the daemon. Per-second figures are over SECONDS; the daemon's counters are read before and after.
EOF
[ $XDP_OK = 1 ] || echo "XDP fast path unavailable: the xdp layer was not measured (see the daemon log above)."
exit $RC
