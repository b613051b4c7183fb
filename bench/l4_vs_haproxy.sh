#!/usr/bin/env bash
# L4 forwarding benchmark: anyedge vs HAProxy (mode tcp, send-proxy-v2), side
# by side in one run, both in front of the same nginx `proxy_protocol`
# backend on loopback. Prints medians and the ratios anyedge/HAProxy.
#
#   bench/l4_vs_haproxy.sh [ROUNDS] [SECONDS]
#   ONLY=log bench/l4_vs_haproxy.sh [ROUNDS] [SECONDS]   (the access-log row only)
#
# Also, in the same anyedge process: new connections/s with the access log
# on (JSON to a file) against the same service without it, and their ratio.
#
# Both balancers get the same number of threads (THREADS, default 1). Loads
# are bounded: each wrk run lasts SECONDS, each download is 1 GiB once per
# round. Only loopback is used. Everything started here is stopped by PID.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
THREADS=${THREADS:-1}
CONNS=${CONNS:-50}
DL_SIZE=${DL_SIZE:-1G}
IDLE=${IDLE:-5000}   # idle connections held open for the memory row
ONLY=${ONLY:-all}    # all | log
cd "$(dirname "$0")/.."
# the idle-memory row holds IDLE client connections (and as many to the backend)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for b in nginx haproxy wrk curl; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "missing $b (apt-get install nginx haproxy wrk curl)"; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
cargo build --release -q -p anyedge
BIN=target/release/anyedge

W=$(mktemp -d /tmp/anyedge-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

P_NGINX=18080; P_HAP=18081; P_AE=18082; P_AE_RAW=18083; P_AE_INSP=18084; P_AE_LOG=18085
mkdir -p "$W/nginx/tmp" "$W/www"
truncate -s "$DL_SIZE" "$W/www/big"
echo ok > "$W/www/small"
cat > "$W/nginx/nginx.conf" <<NG
daemon off;
master_process off;
error_log $W/nginx/error.log error;
pid $W/nginx/nginx.pid;
events { worker_connections 32768; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 10000000;
  client_body_temp_path $W/nginx/tmp/b; proxy_temp_path $W/nginx/tmp/p;
  fastcgi_temp_path $W/nginx/tmp/f; uwsgi_temp_path $W/nginx/tmp/u; scgi_temp_path $W/nginx/tmp/s;
  server {
    listen 127.0.0.1:$P_NGINX proxy_protocol backlog=8192;
    root $W/www;
    location = / { return 200 "ok\n"; }
  }
}
NG
"$NGINX" -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" & PIDS+=($!)

cat > "$W/haproxy.cfg" <<HA
global
  nbthread $THREADS
  maxconn 9000
defaults
  mode tcp
  timeout connect 3s
  timeout client 300s
  timeout server 300s
frontend fe
  bind 127.0.0.1:$P_HAP backlog 8192
  default_backend be
backend be
  server s1 127.0.0.1:$P_NGINX send-proxy-v2
HA
"$HAPROXY" -f "$W/haproxy.cfg" -db & PIDS+=($!); HAP_PID=$!

# One [[service]] in front of nginx: name, port, extra lines.
service() {
  cat <<AE
[[service]]
name = "$1"
listen = ["127.0.0.1:$2"]
backlog = 8192
$3
[service.health]
kind = "tcp"
interval = "1s"
rise = 1
[[service.backend]]
name = "nginx"
address = "127.0.0.1:$P_NGINX"
AE
}
LEAN='balance = "round_robin"
proxy_unique_id = false
proxy_pop_tlv = false
proxy_sni = false'
{
  printf '[pop]\nname = "bench"\nworkers = %s\n' "$THREADS"
  # only the service bench-log writes an access log
  printf '[access_log]\nenabled = false\nformat = "json"\npath = "%s"\n' "$W/access.log"
  service bench $P_AE "$LEAN"
  # the same with its access log on
  service bench-log $P_AE_LOG "$LEAN
access_log = true"
  # the same, forwarding at once without reading the client's first bytes
  # (as HAProxy's mode tcp does): the idle-memory row compares these two
  service bench-raw $P_AE_RAW "$LEAN
inspect = false"
} > "$W/anyedge.toml"
RUST_LOG=warn "$BIN" run -c "$W/anyedge.toml" & PIDS+=($!); AE_PID=$!
# a second anyedge for the idle-memory row with the default inspect = true
# (its own process, so each row measures a fresh heap)
{
  printf '[pop]\nname = "bench-inspect"\nworkers = %s\n' "$THREADS"
  service bench-inspect $P_AE_INSP ""
} > "$W/anyedge-insp.toml"
RUST_LOG=warn "$BIN" run -c "$W/anyedge-insp.toml" & PIDS+=($!); AE2_PID=$!

for p in $P_NGINX $P_HAP $P_AE $P_AE_RAW $P_AE_INSP $P_AE_LOG; do
  up=0
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && { up=1; break; }; sleep 0.05; done
  [ $up = 1 ] || { echo "nothing listening on port $p; see the errors above" >&2; exit 1; }
done
sleep 1.5  # anyedge: first health check passes

rps() { wrk -t1 -c"$CONNS" -d"${SECS}s" "$@" 2>/dev/null | awk '/Requests\/sec/ {print $2}'; }
# CPU time (clock ticks, user+system) a balancer process has used so far
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
dl() { curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$1/big" | awk '{printf "%.3f", $1/1e9}'; }

declare -A R
# CPU ticks of anyedge's access-log writer thread, lines in the log so far
writer_ticks() { grep -l '^anyedge-accessl' /proc/$AE_PID/task/*/comm | sed 's/comm$/stat/' | xargs -r cat | awk '{s+=$14+$15} END {print s+0}'; }
log_lines() { wc -l < "$W/access.log" 2>/dev/null || echo 0; }
# Memory per idle connection: IDLE clients connect and send nothing; the
# balancer's RSS growth (and its descriptors, so we know every connection
# reached the backend: 2 per connection) divided by IDLE, in bytes.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
nfds() { ls "/proc/$1/fd" | wc -l; }
idle_mem() { # port pid fds-per-connection
  local before fd0 after n
  before=$(rss_kb "$2"); fd0=$(nfds "$2")
  python3 - "$1" "$IDLE" "$W/idle.$1" <<'PY' &
import socket, sys, time
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = []
for _ in range(n):
    held.append(socket.create_connection(("127.0.0.1", port)))
open(ready, "w").close()
time.sleep(30)  # bounded: killed by the caller once measured
PY
  local cpid=$!
  for _ in $(seq 300); do
    [ -e "$W/idle.$1" ] && [ $(( $(nfds "$2") - fd0 )) -ge $(( IDLE * $3 )) ] && break
    sleep 0.05
  done
  sleep 0.3
  after=$(rss_kb "$2"); n=$(( $(nfds "$2") - fd0 ))
  kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
  rm -f "$W/idle.$1"
  [ "$n" -ge $(( IDLE * $3 )) ] || echo "warning: only $n new descriptors on port $1 (want $(( IDLE * $3 )))" >&2
  # wait until the balancer has closed them again
  for _ in $(seq 200); do [ $(( $(nfds "$2") - fd0 )) -le 2 ] && break; sleep 0.05; done
  awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN { printf "%.0f", (a-b)*1024/n }'
}
# Measured once, first, on fresh processes: a heap that already served
# load (or an earlier idle round) reuses freed memory and would show less.
if [ "$ONLY" = all ]; then
R[haproxy,idle]="$(idle_mem $P_HAP $HAP_PID 2)"
R[anyedge,idle]="$(idle_mem $P_AE_RAW $AE_PID 2)"
R[anyedge,idle_inspect]="$(idle_mem $P_AE_INSP $AE2_PID 1)"
echo "idle bytes/connection: haproxy ${R[haproxy,idle]} | anyedge inspect=false ${R[anyedge,idle]} | anyedge inspect=true ${R[anyedge,idle_inspect]}" >&2
fi

for r in $(seq "$ROUNDS"); do
  for who in haproxy anyedge; do
    [ "$ONLY" = all ] || continue
    port=$P_HAP; pid=$HAP_PID; [ $who = anyedge ] && { port=$P_AE; pid=$AE_PID; }
    t0=$(ticks $pid)
    ka=$(rps "http://127.0.0.1:$port/")
    t1=$(ticks $pid)
    R[$who,ka]+="$ka "
    # keep-alive requests per CPU-second of the balancer: efficiency, less
    # sensitive than req/s to the kernel and the other processes sharing the cores
    R[$who,eff]+="$(awk -v r="$ka" -v s="$SECS" -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN { if (t > 0) printf "%.0f", r*s/(t/hz); else print 0 }') "
    R[$who,close]+="$(rps -H 'Connection: close' "http://127.0.0.1:$port/") "
    R[$who,dl]+="$(dl $port) "
  done
  # new connections/s with the access log off and on, back to back (in
  # turn first, so a drift of the machine's load favours neither)
  # (and per CPU-second of the anyedge process, its log writer included)
  logrun() { # off|on port
    local t0 t1 n w0 w1 l0 l1
    w0=$(writer_ticks); l0=$(log_lines)
    t0=$(ticks $AE_PID); n=$(rps -H 'Connection: close' "http://127.0.0.1:$2/"); t1=$(ticks $AE_PID)
    w1=$(writer_ticks); l1=$(log_lines)
    R[log,$1]+="$n "
    # the writer thread's CPU time per line written (formatting + write)
    [ "$1" = on ] && R[log,writer_us]+="$(awk -v t=$((w1 - w0)) -v l=$((l1 - l0)) -v hz="$HZ" 'BEGIN { if (l > 0) printf "%.2f", t/hz/l*1e6; else print 0 }') "
    R[log,${1}_eff]+="$(awk -v r="$n" -v s="$SECS" -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN { if (t > 0) printf "%.0f", r*s/(t/hz); else print 0 }') "
  }
  if [ $((r % 2)) = 1 ]; then logrun off $P_AE; logrun on $P_AE_LOG; else logrun on $P_AE_LOG; logrun off $P_AE; fi
  echo "round $r: haproxy ka=${R[haproxy,ka]:-} close=${R[haproxy,close]:-} dl=${R[haproxy,dl]:-} | anyedge ka=${R[anyedge,ka]:-} close=${R[anyedge,close]:-} dl=${R[anyedge,dl]:-} | access log off=${R[log,off]:-} on=${R[log,on]:-}" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
printf '%-28s %14s %14s %8s %8s\n' metric haproxy anyedge ratio target
for m in ka eff close dl idle; do
  [ "$ONLY" = all ] || continue
  h=$(echo "${R[haproxy,$m]}" | median); a=$(echo "${R[anyedge,$m]}" | median)
  case $m in ka) name="keep-alive req/s"; t=1.2;; eff) name="keep-alive req/CPU-second"; t=-;; close) name="new connections/s"; t=1.0;; dl) name="1 GiB download GB/s"; t=1.2;; idle) name="idle connection bytes (RSS)"; t=-;; esac
  ratio=$(awk -v a="$a" -v h="$h" 'BEGIN { if (h > 0) printf "%.2f", a/h; else print "n/a" }')
  [ "$t" = - ] && t="" || t=">=$t"
  printf '%-28s %14s %14s %8s %8s\n' "$name" "$h" "$a" "$ratio" "$t"
done
off=$(echo "${R[log,off]}" | median); on=$(echo "${R[log,on]}" | median)
printf '%-28s %14s %14s %8s %8s\n' "" "log off" "log on" "" ""
printf '%-28s %14s %14s %8s %8s\n' "new conn/s, access log" "$off" "$on" \
  "$(awk -v a="$on" -v h="$off" 'BEGIN { if (h > 0) printf "%.2f", a/h; else print "n/a" }')" ">=0.95"
off=$(echo "${R[log,off_eff]}" | median); on=$(echo "${R[log,on_eff]}" | median)
printf '%-28s %14s %14s %8s %8s\n' "new conn/CPU-second, log" "$off" "$on" \
  "$(awk -v a="$on" -v h="$off" 'BEGIN { if (h > 0) printf "%.2f", a/h; else print "n/a" }')" ""
lines=$(log_lines)
echo "(access log: JSON to a file, $lines lines written; both services in the same anyedge process; writer thread CPU per line: $(echo "${R[log,writer_us]}" | median) us)"
echo "(idle: $IDLE connections held open once, on fresh processes; anyedge with inspect=false forwards at once as HAProxy mode tcp does; lower is better; with the default inspect=true: ${R[anyedge,idle_inspect]:-} bytes, the connection waits for its first bytes before a backend is chosen)"
echo "(threads per balancer: $THREADS, wrk: 1 thread $CONNS connections ${SECS}s, rounds: $ROUNDS, medians)"
