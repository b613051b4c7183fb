#!/usr/bin/env bash
# Tunnel forwarding benchmark (forwarding = "tunnel"), side by side in one
# run, across network namespaces joined by veth pairs (root needed):
#
#   cli c0 198.18.1.2 <-> p0 198.18.1.1  pop  p1 198.18.3.1 <-> n0 198.18.3.2  node
#                                                                VIP 198.18.200.1 on lo
# rows:
#   direct          wrk -> nginx on the node (routed through the PoP's kernel)
#   haproxy         wrk -> HAProxy (mode tcp, send-proxy-v2) on the PoP -> nginx proxy_protocol
#   anyedge proxy   wrk -> anyedge forwarding = "proxy" on the PoP -> nginx proxy_protocol
#   anyedge tunnel  wrk -> VIP: anyedge's XDP program on p0 encapsulates (IPIP) to the
#                   node, `anyedge node attach` decapsulates, nginx (no proxy_protocol)
#                   answers; replies go back through the PoP's kernel as routed packets
#                   (DSR: in a real network they would not touch the PoP at all)
#
# Columns: keep-alive req/s, new connections/s (Connection: close), 1 GiB
# download GB/s, 200 MB upload GB/s (all unpinned, native XDP), and PoP CPU
# per request in microseconds, measured like for like in a second phase:
#   CPU 1 is the PoP's, CPU 0 everyone else's. The balancer processes run
#   on CPU 1; the PoP's veths (p0, p1) steer their receive work to CPU 1 and
#   the client's and node's (c0, n0) to CPU 0 (RPS); wrk and nginx run on
#   CPU 0. A row's PoP CPU is then all the time CPU 1 was busy (user,
#   system, softirq, irq: the process, the kernel's TCP and routing work,
#   the XDP program), less what it was busy with nothing running (measured
#   before each run), per keep-alive request. In this phase the PoP's XDP
#   program is attached in generic (skb) mode: native XDP on a veth runs on
#   the CPU that sent the packet (the client's), before RPS could move it;
#   generic XDP runs after RPS, on CPU 1, and costs more than native (the
#   socket buffer is already built), so the tunnel's number is an upper
#   bound. The node's decapsulation runs generic too, on CPU 0. The
#   direct row's PoP CPU is the PoP routing the packets.
#   Also printed, as before: the balancer process's own CPU time and the
#   XDP program's run time (kernel BPF statistics), which leave out softirq.
# Then the packets per second the program forwards on one core
# (crates/anyedge-xdp/examples/tunnel_pps.rs: BPF_PROG_TEST_RUN, see there
# what it includes), next to Katran's published 5.16 Mpps/core.
#
#   bench/tunnel.sh [ROUNDS] [SECONDS]
#   CPU_ONLY=1 bench/tunnel.sh [ROUNDS] [SECONDS]    (the CPU phase only)
#
# Each balancer gets THREADS threads (default 1). Every load is bounded
# (SECONDS per wrk run, one download per row per round). Everything
# started here is stopped by PID; the namespaces are deleted at the end.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
THREADS=${THREADS:-1}
CONNS=${CONNS:-50}
DL_SIZE=${DL_SIZE:-1G}
UL_SIZE=${UL_SIZE:-200M}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, XDP)"; exit 1; }
for b in nginx haproxy wrk curl bpftool ethtool; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "missing $b (apt-get install nginx haproxy wrk curl bpftool ethtool)"; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
BPFTOOL=$(command -v bpftool || echo /usr/sbin/bpftool)
ANYEDGE_XDP_REQUIRE=1 cargo build --release -q -p anyedge
ANYEDGE_XDP_REQUIRE=1 cargo build --release -q -p anyedge-xdp --example tunnel_pps
TGT=${CARGO_TARGET_DIR:-target}
BIN=$TGT/release/anyedge
PPS=$TGT/release/examples/tunnel_pps

W=$(mktemp -d /tmp/anyedge-tunnel-bench.XXXXXX)
N=aetb$$
CLI=$N-cli; POP=$N-pop; NODE=$N-node
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in $CLI $POP $NODE; do ip netns del "$ns" 2>/dev/null || true; done
  sysctl -qw kernel.bpf_stats_enabled=0 || true
  rm -rf "$W"
}
trap cleanup EXIT
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

VIP=198.18.200.1
for ns in $CLI $POP $NODE; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done
ip -n $CLI link add c0 type veth peer name p0 netns $POP
ip -n $POP link add p1 type veth peer name n0 netns $NODE
nsx $CLI ip addr add 198.18.1.2/24 dev c0; nsx $CLI ip link set c0 up
nsx $POP ip addr add 198.18.1.1/24 dev p0; nsx $POP ip link set p0 up
nsx $POP ip addr add 198.18.3.1/24 dev p1; nsx $POP ip link set p1 mtu 1600 up
nsx $NODE ip addr add 198.18.3.2/24 dev n0; nsx $NODE ip link set n0 mtu 1600 up
nsx $NODE ip addr add $VIP/32 dev lo
nsx $CLI ip route add default via 198.18.1.1
nsx $NODE ip route add default via 198.18.3.1
nsx $POP sysctl -qw net.ipv4.ip_forward=1
nsx $NODE sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.n0.rp_filter=0
# veth test bed: a partial checksum is not completed across an XDP redirect
nsx $CLI ethtool -K c0 tx off >/dev/null

# nginx on the node: 8080 plain (direct), 8081 proxy_protocol (the proxies'
# backend), VIP:80 plain (the tunnel)
mkdir -p "$W/nginx/tmp" "$W/www"
truncate -s "$DL_SIZE" "$W/www/big"
cat > "$W/nginx/nginx.conf" <<NG
daemon off;
master_process off;
worker_rlimit_nofile 65536;
error_log $W/nginx/error.log error;
pid $W/nginx/nginx.pid;
events { worker_connections 32768; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 10000000;
  client_max_body_size 0;
  client_body_temp_path $W/nginx/tmp/b; proxy_temp_path $W/nginx/tmp/p;
  fastcgi_temp_path $W/nginx/tmp/f; uwsgi_temp_path $W/nginx/tmp/u; scgi_temp_path $W/nginx/tmp/s;
  server {
    listen 198.18.3.2:8080 backlog=8192;
    listen 198.18.3.2:8081 proxy_protocol backlog=8192;
    listen $VIP:80 backlog=8192;
    root $W/www;
    location = / { return 200 "ok\n"; }
    # uploads: nginx reads the body and discards it
    location = /upload { return 200 "ok\n"; }
  }
}
NG
ip netns exec $NODE "$NGINX" -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" & PIDS+=($!); NGINX_PID=$!

ip netns exec $NODE "$BIN" node attach --interface n0 --vips $VIP --from 198.18.9.0/24 --mode native > "$W/attach.log" & PIDS+=($!); ATT_N=$!
# native veth XDP_TX back to the client needs a program on its end too
ip netns exec $CLI "$BIN" node attach --interface c0 --vips 192.0.2.1 --from 192.0.2.1/32 --mode native > /dev/null & PIDS+=($!); ATT_C=$!

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
  bind 198.18.1.1:81 backlog 8192
  default_backend be
backend be
  server s1 198.18.3.2:8081 send-proxy-v2
HA
ip netns exec $POP "$HAPROXY" -f "$W/haproxy.cfg" -db & PIDS+=($!); HAP_PID=$!

cat > "$W/anyedge.toml" <<AE
[pop]
name = "bench"
workers = $THREADS
[xdp]
interfaces = ["p0"]
mode = "native"
tunnel_source_v4 = "198.18.9.0/24"
[[service]]
name = "proxy"
listen = ["198.18.1.1:82"]
backlog = 8192
balance = "round_robin"
proxy_unique_id = false
proxy_pop_tlv = false
proxy_sni = false
[service.health]
kind = "tcp"
interval = "1s"
rise = 1
[[service.backend]]
name = "node"
address = "198.18.3.2:8081"
[[service]]
name = "tunnel"
listen = ["$VIP:80"]
forwarding = "tunnel"
underlay_mtu = 1600
[service.health]
kind = "tcp"
interval = "1s"
rise = 1
[[service.backend]]
name = "node"
address = "198.18.3.2:8080"
proxy_protocol = "none"
AE
RUST_LOG=info ip netns exec $POP "$BIN" run -c "$W/anyedge.toml" 2> "$W/anyedge.log" & PIDS+=($!); AE_PID=$!

programmed() { # log file
  for _ in $(seq 100); do grep -q 'XDP tunnel: service programmed.*eligible=\["node"\]' "$1" && return 0; sleep 0.1; done
  echo "tunnel not programmed:" >&2; cat "$1" >&2; exit 1
}
up() { # host port
  for _ in $(seq 200); do nsx $CLI bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing answers on $1:$2; logs in $W" >&2; cat "$W/anyedge.log" >&2; exit 1
}
programmed "$W/anyedge.log"
up 198.18.3.2 8080; up 198.18.1.1 81; up 198.18.1.1 82; up $VIP 80
# the PIDs above are `ip netns exec` wrappers, which exec the program
prog_id() { nsx $POP "$BPFTOOL" -j net show dev p0 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[0]["xdp"][0]["id"])'; }
PROG_ID=$(prog_id)
sysctl -qw kernel.bpf_stats_enabled=1
run_ns() { "$BPFTOOL" -j prog show id "$PROG_ID" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("run_time_ns", 0))'; }

rps() { nsx $CLI wrk -t1 -c"$CONNS" -d"${SECS}s" "$@" 2>/dev/null | awk '/Requests\/sec/ {print $2}'; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# A transfer counts only if it completed: status 200 and every byte moved
# (else the row says FAIL and why, on stderr).
DL_BYTES=$(stat -c %s "$W/www/big")
UL_BYTES=$(numfmt --from=iec "$UL_SIZE")
dl() {
  nsx $CLI curl -s -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "http://$1/big" |
    awk -v want="$DL_BYTES" -v to="$1" '$1 == 200 && $2 == want { printf "%.3f", $3/1e9; next }
      { printf "FAIL"; printf "download via %s incomplete: status %s, %s of %s bytes\n", to, $1, $2, want > "/dev/stderr" }'
}
ul() {
  head -c "$UL_SIZE" /dev/zero | nsx $CLI curl -s -o /dev/null -w '%{http_code} %{size_upload} %{speed_upload}' -H 'Expect:' --data-binary @- "http://$1/upload" |
    awk -v want="$UL_BYTES" -v to="$1" '$1 == 200 && $2 == want { printf "%.3f", $3/1e9; next }
      { printf "FAIL"; printf "upload via %s incomplete: status %s, %s of %s bytes\n", to, $1, $2, want > "/dev/stderr" }'
}

declare -A R
ROWS="direct haproxy proxy tunnel"
addr() { case $1 in direct) echo 198.18.3.2:8080;; haproxy) echo 198.18.1.1:81;; proxy) echo 198.18.1.1:82;; tunnel) echo $VIP:80;; esac; }
for r in $(seq "$ROUNDS"); do
  [ -z "${CPU_ONLY:-}" ] || break
  for who in $ROWS; do
    a=$(addr $who)
    case $who in haproxy) pid=$HAP_PID;; proxy) pid=$AE_PID;; *) pid=;; esac
    t0=0; n0=0
    [ -n "$pid" ] && t0=$(ticks $pid)
    [ $who = tunnel ] && n0=$(run_ns)
    ka=$(rps "http://$a/")
    cpu=-
    if [ -n "$pid" ]; then
      cpu=$(awk -v r="$ka" -v s="$SECS" -v t=$(( $(ticks $pid) - t0 )) -v hz="$HZ" 'BEGIN { if (r > 0) printf "%.2f", (t/hz)*1e6/(r*s); else print 0 }')
    elif [ $who = tunnel ]; then
      cpu=$(awk -v r="$ka" -v s="$SECS" -v n=$(( $(run_ns) - n0 )) 'BEGIN { if (r > 0) printf "%.3f", n/1e3/(r*s); else print 0 }')
    fi
    R[$who,ka]+="$ka "
    R[$who,own]+="$cpu "
    R[$who,close]+="$(rps -H 'Connection: close' "http://$a/") "
    R[$who,dl]+="$(dl $a) "
    R[$who,ul]+="$(ul $a) "
  done
  echo "round $r: $(for w in $ROWS; do printf '%s ka=%s close=%s dl=%s ul=%s cpu=%s | ' $w "${R[$w,ka]}" "${R[$w,close]}" "${R[$w,dl]}" "${R[$w,ul]}" "${R[$w,own]}"; done)" >&2
done

# Phase 2: PoP CPU per request, like for like (see the top of this file).
[ "$(nproc)" -ge 2 ] || { echo "the CPU phase needs 2 CPUs" >&2; exit 1; }
cpu1_busy() { awk '$1 == "cpu1" { print $2+$3+$4+$7+$8+$9 }' /proc/stat; }
cpu1_softirq() { awk '$1 == "cpu1" { print $8 }' /proc/stat; }
now() { date +%s.%N; }
# the PoP's anyedge again, its XDP program in generic mode, on CPU 1
kill "$AE_PID"; wait "$AE_PID" 2>/dev/null || true
sed 's/^mode = "native"/mode = "generic"/' "$W/anyedge.toml" > "$W/anyedge-generic.toml"
grep -q '^mode = "generic"' "$W/anyedge-generic.toml"
RUST_LOG=info ip netns exec $POP taskset -c 1 "$BIN" run -c "$W/anyedge-generic.toml" 2> "$W/anyedge-generic.log" & PIDS+=($!); AE_PID=$!
# the node's decapsulation generic too (after RPS, on CPU 0); the client's
# program only served native XDP_TX towards it
kill "$ATT_N" "$ATT_C"; wait "$ATT_N" "$ATT_C" 2>/dev/null || true
ip netns exec $NODE taskset -c 0 "$BIN" node attach --interface n0 --vips $VIP --from 198.18.9.0/24 --mode generic > "$W/attach-generic.log" & PIDS+=($!)
programmed "$W/anyedge-generic.log"
# (no `| grep -q`: under pipefail, grep quitting early fails bpftool's write)
xdp_on_p0() { nsx $POP "$BPFTOOL" net show dev p0; }
for _ in $(seq 100); do [[ $(xdp_on_p0) == *"p0("*") generic"* ]] && break; sleep 0.1; done
[[ $(xdp_on_p0) == *"p0("*") generic"* ]] || { echo "XDP not generic on p0:" >&2; xdp_on_p0 >&2; exit 1; }
PROG_ID=$(prog_id)
up $VIP 80; up 198.18.1.1 82
taskset -apc 1 "$HAP_PID" >/dev/null
taskset -apc 0 "$NGINX_PID" >/dev/null
rps_to() { nsx "$1" sh -c "echo $3 > /sys/class/net/$2/queues/rx-0/rps_cpus"; }
rps_to $POP p0 2; rps_to $POP p1 2; rps_to $CLI c0 1; rps_to $NODE n0 1
for r in $(seq "$ROUNDS"); do
  for who in $ROWS; do
    a=$(addr $who)
    # what CPU 1 does with no load, per second
    b0=$(cpu1_busy); t0=$(now); sleep 1; b1=$(cpu1_busy); t1=$(now)
    idle=$(awk -v b=$((b1 - b0)) -v d="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b-a }')" -v hz="$HZ" 'BEGIN { print b/hz/d }')
    case $who in haproxy) pid=$HAP_PID;; proxy) pid=$AE_PID;; *) pid=;; esac
    p0=0; [ -n "$pid" ] && p0=$(ticks $pid)
    b0=$(cpu1_busy); s0=$(cpu1_softirq); t0=$(now)
    n=$(nsx $CLI taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" "http://$a/" 2>/dev/null | awk '/requests in/ {print $1}')
    b1=$(cpu1_busy); s1=$(cpu1_softirq); t1=$(now)
    p1=0; [ -n "$pid" ] && p1=$(ticks $pid)
    R[$who,cpu]+="$(awk -v b=$((b1 - b0)) -v hz="$HZ" -v idle="$idle" -v t0="$t0" -v t1="$t1" -v n="$n" \
      'BEGIN { busy = b/hz - idle*(t1-t0); if (busy < 0) busy = 0; if (n > 0) printf "%.2f", busy*1e6/n; else print "FAIL" }') "
    # its parts: the process (user + system), CPU 1's softirq; and the rate
    R[$who,cpu_proc]+="$(awk -v t=$((p1 - p0)) -v hz="$HZ" -v n="$n" 'BEGIN { if (n > 0) printf "%.2f", t/hz*1e6/n; else print "-" }') "
    R[$who,cpu_sirq]+="$(awk -v t=$((s1 - s0)) -v hz="$HZ" -v n="$n" 'BEGIN { if (n > 0) printf "%.2f", t/hz*1e6/n; else print "-" }') "
    R[$who,cpu_rps]+="$(awk -v n="$n" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.0f", n/(t1-t0) }') "
  done
  echo "CPU round $r: $(for w in $ROWS; do printf '%s pop_cpu_us=%s process=%s softirq=%s req/s=%s | ' $w "${R[$w,cpu]}" "${R[$w,cpu_proc]}" "${R[$w,cpu_sirq]}" "${R[$w,cpu_rps]}"; done)" >&2
done

# (a round whose transfer failed makes the median FAIL: no number for it)
median() { tr ' ' '\n' | awk '$1 != "" && $1 != "-"' | sort -g | awk '$1 == "FAIL" {f=1} {a[NR]=$1} END {if (f) print "FAIL"; else if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
printf '| %-15s | %16s | %11s | %11s | %14s | %22s |\n' path "keep-alive req/s" "new conn/s" "1 GiB GB/s" "200 MB up GB/s" "PoP CPU us/request"
printf '|%s|%s|%s|%s|%s|%s|\n' -----------------  ------------------ ------------- ------------- ---------------- ------------------------
declare -A M
for w in $ROWS; do
  for m in ka close dl ul cpu own cpu_proc cpu_sirq cpu_rps; do M[$w,$m]=$(echo "${R[$w,$m]:-}" | median); done
  name=$w; [ $w = proxy ] && name="anyedge proxy"; [ $w = tunnel ] && name="anyedge tunnel"; [ $w = haproxy ] && name="HAProxy $("$HAPROXY" -v | awk 'NR==1 {print $3}')"
  printf '| %-15s | %16s | %11s | %11s | %14s | %22s |\n' "$name" "${M[$w,ka]}" "${M[$w,close]}" "${M[$w,dl]}" "${M[$w,ul]}" "${M[$w,cpu]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
echo
echo "tunnel / HAProxy: keep-alive $(ratio "${M[tunnel,ka]}" "${M[haproxy,ka]}")x (target >= 1.5), new connections $(ratio "${M[tunnel,close]}" "${M[haproxy,close]}")x (target >= 1.5), PoP CPU per request $(ratio "${M[tunnel,cpu]}" "${M[haproxy,cpu]}")x (target <= 0.2)"
echo "(PoP CPU per request: all of CPU 1's busy time, the PoP's own CPU, less its idle load, per keep-alive request; XDP generic in that phase, an upper bound for the tunnel)"
echo "(PoP CPU parts, us per request: $(for w in $ROWS; do printf '%s: process %s, softirq %s, at %s req/s; ' $w "${M[$w,cpu_proc]}" "${M[$w,cpu_sirq]}" "${M[$w,cpu_rps]}"; done))"
echo "(only the process / only the XDP program, unpinned, leaving out softirq: $(for w in haproxy proxy tunnel; do printf '%s %s us  ' $w "${M[$w,own]}"; done))"
echo "(threads per balancer: $THREADS, wrk: 1 thread $CONNS connections ${SECS}s, rounds: $ROUNDS, medians; client, PoP and node share this machine's $(nproc) cores)"
echo
echo "XDP program, one core: $("$PPS" 200000) (Katran, published: 5.16 Mpps/core; a different machine and NIC, for context only)"
