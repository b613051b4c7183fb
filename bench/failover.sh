#!/usr/bin/env bash
# Failover benchmark in the multi-PoP lab (`anyedge lab up`; root needed).
# For each fault, the time from the fault to the router's route change and
# the number of failed requests of a client loop running throughout:
#   (a) PoP1's backend dies          target <= fall x interval + 200 ms (= 600 ms)
#   (b) PoP1's anyedge stops silently (SIGSTOP; BFD)   <= 3 x BFD interval + 100 ms (= 400 ms)
#       and is killed with kill -9 (the kernel closes its BGP session)
#   (c) planned drain of PoP1 (admin API)             zero failed requests
#
#   bench/failover.sh [ROUNDS]       prints per-round values and medians
#
# Bounded: ROUNDS rounds, each fault waits at most 5 s; the client loop sends
# one request at a time to the lab's anycast address only.
set -euo pipefail
ROUNDS=${1:-5}
cd "$(dirname "$0")/.."
cargo build --release -q -p anyedge
BIN=$PWD/target/release/anyedge
NAME=fo$$
DIR=$(mktemp -d /tmp/anyedge-failover.XXXXXX)
CLIENT_PID=
cleanup() {
  [ -n "$CLIENT_PID" ] && kill "$CLIENT_PID" 2>/dev/null || true
  "$BIN" lab down --name "$NAME" --dir "$DIR/lab" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
"$BIN" lab up --name "$NAME" --dir "$DIR/lab" >/dev/null
L=$DIR/lab
TOKEN=lab-admin-token-0123456789

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
hops() { ip -n "$NAME-router" route show 192.0.2.10 | grep -c via || true; }
# waits (max 5 s) until the router has $1 next hops; prints the elapsed ms since $2
wait_hops() {
  local want=$1 t0=$2 end=$(( $(now_ms) + 5000 ))
  while [ "$(hops)" != "$want" ]; do
    [ "$(now_ms)" -gt "$end" ] && { echo "timeout"; return; }
  done
  echo $(( $(now_ms) - t0 ))
}
client_start() {
  : > "$DIR/client.out"
  ip netns exec "$NAME-client" bash -c \
    'for i in $(seq 20000); do curl -s -m 1 -o /dev/null -w "%{http_code}\n" http://192.0.2.10/ || echo 000; done' \
    >> "$DIR/client.out" 2>/dev/null &
  CLIENT_PID=$!
  sleep 0.3
}
client_stop() {  # prints failed requests
  kill "$CLIENT_PID" 2>/dev/null || true; wait "$CLIENT_PID" 2>/dev/null || true; CLIENT_PID=
  grep -vc '^200$' "$DIR/client.out" || true
}
admin() { ip netns exec "$NAME-pop1" curl -s -X POST -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:9180/api/v1/pop/$1" >/dev/null; }
start_nginx() {
  ip netns exec "$NAME-be1" nginx -p "$L/be1" -e "$L/be1/error.log" -c "$L/be1/nginx.conf" >/dev/null 2>&1 &
  echo $! > "$L/be1.pid"; disown $!
}
start_pop1() {
  ip netns exec "$NAME-pop1" "$BIN" run -c "$L/pop1.toml" >> "$L/pop1.log" 2>&1 &
  echo $! > "$L/pop1.pid"; disown $!
}

declare -A R
wait_hops 2 "$(now_ms)" >/dev/null
for r in $(seq "$ROUNDS"); do
  # (a) backend failure
  client_start; t0=$(now_ms); kill -9 "$(cat "$L/be1.pid")"
  R[a_ms]+="$(wait_hops 1 "$t0") "; sleep 0.3; R[a_fail]+="$(client_stop) "
  start_nginx; wait_hops 2 "$(now_ms)" >/dev/null
  # (b) silent PoP (BFD)
  client_start; t0=$(now_ms); kill -STOP "$(cat "$L/pop1.pid")"
  R[b_ms]+="$(wait_hops 1 "$t0") "; sleep 0.3; R[b_fail]+="$(client_stop) "
  kill -CONT "$(cat "$L/pop1.pid")"; wait_hops 2 "$(now_ms)" >/dev/null
  # (b') kill -9
  client_start; t0=$(now_ms); kill -9 "$(cat "$L/pop1.pid")"
  R[k_ms]+="$(wait_hops 1 "$t0") "; sleep 0.3; R[k_fail]+="$(client_stop) "
  start_pop1; wait_hops 2 "$(now_ms)" >/dev/null
  # (c) planned drain
  client_start; t0=$(now_ms); admin drain
  R[c_ms]+="$(wait_hops 1 "$t0") "; sleep 0.5; R[c_fail]+="$(client_stop) "
  admin undrain; wait_hops 2 "$(now_ms)" >/dev/null
  echo "round $r: a=${R[a_ms]}/${R[a_fail]} b=${R[b_ms]}/${R[b_fail]} kill9=${R[k_ms]}/${R[k_fail]} c=${R[c_ms]}/${R[c_fail]} (ms/failed)" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
printf '%-34s %14s %16s %s\n' fault "route change ms" "failed requests" target
printf '%-34s %14s %16s %s\n' "(a) backend failure" "$(echo "${R[a_ms]}" | median)" "$(echo "${R[a_fail]}" | median)" "<= 600 ms"
printf '%-34s %14s %16s %s\n' "(b) silent PoP, BFD 100ms x3" "$(echo "${R[b_ms]}" | median)" "$(echo "${R[b_fail]}" | median)" "<= 400 ms"
printf '%-34s %14s %16s %s\n' "(b') kill -9 of anyedge" "$(echo "${R[k_ms]}" | median)" "$(echo "${R[k_fail]}" | median)" "<= 400 ms"
printf '%-34s %14s %16s %s\n' "(c) planned drain" "$(echo "${R[c_ms]}" | median)" "$(echo "${R[c_fail]}" | median)" "0 failed"
echo "(medians over $ROUNDS rounds; health interval 200 ms, fall 2; BFD 100 ms x 3)"
