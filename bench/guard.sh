#!/usr/bin/env bash
# DDoS absorption benchmark (root; network namespaces + veth). A PoP running
# anyedge in front of nginx (`proxy_protocol`), an attacker host opening new
# connections as fast as it can (wrk, `Connection: close`, 200 connections),
# and a legitimate client making one request every 20 ms. Runs the same
# attack without and with the userspace guard, and prints per run:
#   legit success %, legit median / max latency, attack connections/s the PoP
#   absorbed, and attack connections/s that reached the backend.
#
#   bench/guard.sh [SECONDS] [ROUNDS]      (defaults 5 s, 3 rounds; medians)
#
# Bounded: each run lasts SECONDS; traffic stays inside the namespaces.
# (The XDP layer does not exist yet: only "none" and "userspace" are run.)
set -euo pipefail
SECS=${1:-5}
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
cargo build --release -q -p anyedge
BIN=$PWD/target/release/anyedge
P=g$$
W=$(mktemp -d /tmp/anyedge-guard.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
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

config() {  # $1 = none | userspace
  cat <<AE
[pop]
name = "bench"
workers = 1
$( [ "$1" = userspace ] && printf '[guard]\nnew_connections_per_address = { per_second = 50, burst = 50 }\nmax_connections_per_address = 64\n' )
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

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
declare -A R
for r in $(seq "$ROUNDS"); do
  for mode in none userspace; do
    config "$mode" > "$W/ae.toml"
    ip netns exec "$P-pop" "$BIN" run -c "$W/ae.toml" 2>"$W/ae-$mode.log" & AE=$!
    sleep 1.5
    : > "$W/nginx/access.log"
    # legit client: one request per 20 ms, records http code and time
    ip netns exec "$P-cli" bash -c "end=\$((SECONDS+$SECS)); while [ \$SECONDS -lt \$end ]; do curl -s -m 2 -o /dev/null -w '%{http_code} %{time_total}\n' http://198.18.2.1/ || echo '000 2'; sleep 0.02; done" > "$W/legit.out" &
    CL=$!
    ip netns exec "$P-att" wrk -t1 -c200 -d"${SECS}s" -H 'Connection: close' http://198.18.1.1/ > "$W/wrk.out" 2>&1 || true
    wait "$CL" || true
    kill "$AE"; wait "$AE" 2>/dev/null || true
    total=$(wc -l < "$W/legit.out"); ok=$(grep -c '^200 ' "$W/legit.out" || true)
    R[$mode,ok]+="$(awk -v o="$ok" -v t="$total" 'BEGIN { printf "%.2f", t ? 100*o/t : 0 }') "
    R[$mode,p50]+="$(awk '{print $2*1000}' "$W/legit.out" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') "
    R[$mode,max]+="$(awk '{print $2*1000}' "$W/legit.out" | sort -g | tail -1) "
    # wrk: completed requests + socket errors = connection attempts handled
    att=$(awk '/requests in/ {r=$1} /Socket errors/ {gsub(/,/,""); e=$4+$6+$8+$10} END {print r+e}' "$W/wrk.out")
    R[$mode,att]+="$(( att / SECS )) "
    reached=$(grep -c '^198.18.1.2$' "$W/nginx/access.log" || true)
    R[$mode,reach]+="$(( reached / SECS )) "
    echo "round $r $mode: legit ${ok}/${total}, attack attempts/s $(( att / SECS )), reached backend/s $(( reached / SECS ))" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
printf '%-10s %10s %12s %12s %18s %18s\n' layer "legit ok %" "legit p50 ms" "legit max ms" "attack conns/s" "reached backend/s"
for mode in none userspace; do
  printf '%-10s %10s %12s %12s %18s %18s\n' "$mode" "$(echo "${R[$mode,ok]}" | median)" "$(echo "${R[$mode,p50]}" | median)" \
    "$(echo "${R[$mode,max]}" | median)" "$(echo "${R[$mode,att]}" | median)" "$(echo "${R[$mode,reach]}" | median)"
done
echo "(attacker: 1 source, wrk 200 connections, new connection per request; guard: 50 new conns/s per address, 64 open; medians of $ROUNDS rounds x ${SECS}s)"
