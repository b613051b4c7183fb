#!/usr/bin/env bash
# Authoritative DNS benchmark: anyedge vs Knot DNS and NSD, side by side in one
# run, each with one worker, pinned to the same CPU, serving the same
# generated zone (bench/dns_zone_gen.py) to dnsperf pinned to the other CPU.
# Mixes, each dnsperf run bounded by DURATION seconds:
#   udp_hit  existing names/types over UDP (A, AAAA, MX, TXT, CNAME chains,
#            wildcard expansions, referrals below a delegation): all NOERROR
#   udp_nx   random labels under the apex over UDP (random-subdomain attack):
#            all NXDOMAIN
#   tcp_hit  the udp_hit queries over TCP, persistent pipelined connections
# (All threads of each server are re-pinned after start: knotd sets the CPU
# affinity of its UDP workers itself, which would put it beside dnsperf.)
# SERVERS may also name anyedge_tap: anyedge with dnstap on ([dns.dnstap],
# sample DNSTAP_SAMPLE, default 1 = every query and response) and Debian's
# fstrm_capture as the collector, writing to a file (deleted after each run)
# on the server's CPU (its cost counts against the server); the summary then
# adds the ratio tap/ae.
# Servers run one at a time, in interleaved rounds (knot, nsd, anyedge, knot,
# ...), each started fresh per round and sanity-checked with dig first.
# Then a load test: wall time from process start until a 1-million-record zone
# answers (its last name, polled with dig) and the memory after the load
# (PSS summed over the process tree: NSD forks its server from the loader).
# Prints medians, the ratios anyedge/knot and anyedge/nsd, and RESULT lines.
#
#   bench/dns_vs_knot_nsd.sh [ROUNDS] [DURATION]     (defaults 3, 10)
#
# Environment: ROUNDS, DURATION, WARMUP (2 s of unmeasured udp_hit after each
# start), MIXES ("udp_hit udp_nx tcp_hit"), CLIENTS (8), OUTSTANDING (200),
# ZONE_RECORDS (26000: ~10k names), LOAD_RECORDS (1000000; 0 skips the load
# test), LOAD_ROUNDS (ROUNDS; ROUNDS=0 LOAD_ROUNDS=3 runs only the load test),
# LOAD_TIMEOUT (120 s), SERVERS ("knot nsd anyedge"), SERVER_CPU (1),
# CLIENT_CPU (0), SERVER_QUOTA (0; N caps each server at N% of its CPU with a
# cgroup v1 CFS quota, so that the server and not dnsperf is the bottleneck:
# on 2 CPUs, dnsperf saturates its CPU near 200k q/s), NICE (0; e.g. -10, for servers and dnsperf alike, to be less
# disturbed by other work on the machine), SKIP_BUILD=1 (use
# target/release/anyedge as it is), ANYEDGE_BIN (another anyedge binary, e.g.
# a baseline; no build), PERF=1 (one extra, unmeasured udp_hit run per server
# under `perf record`, then its top symbols), SMOKE=1 (CI: 1 round of 2 s, a
# small zone, no load test; about 25 s after the build).
# Per run, stderr also shows the server's CPU use and queries per server
# CPU-second (less sensitive to dnsperf being the bottleneck or to other load
# on the machine), dnsperf's CPU use, and how busy each CPU was.
# Exits non-zero if a server fails to start, fails its dig sanity check, or
# answers a mix with an unexpected RCODE. Lost queries and missed targets are
# reported, not fatal. Only loopback is used; everything started here is
# stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "FAIL: $*" >&2; exit 1; }
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  ROUNDS=1; DURATION=2; WARMUP=1; ZONE_RECORDS=${ZONE_RECORDS:-2600}; LOAD_RECORDS=0; PERF=0
else
  ROUNDS=${1:-${ROUNDS:-3}}
  DURATION=${2:-${DURATION:-10}}
  ZONE_RECORDS=${ZONE_RECORDS:-26000}
  LOAD_RECORDS=${LOAD_RECORDS:-1000000}
fi
LOAD_ROUNDS=${LOAD_ROUNDS:-$ROUNDS}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-200}
SERVERS=${SERVERS:-knot nsd anyedge}
MIXES=${MIXES:-udp_hit udp_nx tcp_hit}
for m in $MIXES; do case $m in udp_hit|udp_nx|tcp_hit) ;; *) die "unknown mix $m";; esac; done
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PERF=${PERF:-0}
NICE=${NICE:-0}
SERVER_QUOTA=${SERVER_QUOTA:-0}
PIN_S=(nice -n "$NICE" taskset -c "$SERVER_CPU")
PIN_C=(nice -n "$NICE" taskset -c "$CLIENT_CPU")
LOAD_TIMEOUT=${LOAD_TIMEOUT:-120}
ORIGIN=example.com.

. bench/lib/dns.sh  # KNOTD, NSD, start_dns_server ...
for b in "$KNOTD" "$NSD" dnsperf dig python3 taskset; do
  command -v "$b" >/dev/null || { echo "missing $b (apt-get install knot nsd dnsperf dnsutils python3 util-linux)" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "warning: fewer than 2 CPUs; server and dnsperf share CPU 0" >&2
  SERVER_CPU=0; CLIENT_CPU=0
fi
if [ -n "${ANYEDGE_BIN:-}" ]; then BIN=$(realpath "$ANYEDGE_BIN")
else
  [ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p anyedge
  BIN=$PWD/target/release/anyedge
fi
[ -x "$BIN" ] || die "no $BIN"
GEN=$PWD/bench/dns_zone_gen.py

W=$(mktemp -d /tmp/anyedge-dnsbench.XXXXXX)
PIDS=()      # every process started here (servers, perf)
TAPPID=""    # anyedge_tap's collector (fstrm_capture)
TAPDIR=""
CG=""
cleanup() {
  if [ -n "$SPID" ]; then stop_server; fi
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [ -n "$CG" ]; then rmdir "$CG" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

# --- zones and query files --------------------------------------------------
facts() {  # facts FILE KEY -> value printed by the generator
  tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k {print $2}'
}
python3 "$GEN" zone "$ORIGIN" "$ZONE_RECORDS" "$W/bench.zone" >"$W/bench.facts"
python3 "$GEN" queries "$ORIGIN" "$ZONE_RECORDS" hit 200000 "$W/hit.queries"
python3 "$GEN" queries "$ORIGIN" "$ZONE_RECORDS" nx 200000 "$W/nx.queries"
CHECK_NAME=$(facts "$W/bench.facts" check_name); CHECK_A=$(facts "$W/bench.facts" check_a)
echo "zone: $(cat "$W/bench.facts")" >&2

# --- helpers (servers, ports, CPU ticks, memory: bench/lib/dns.sh) ------------
start_server() {  # start_server WHO ZONEFILE -> SPID, SPORT (not waiting for it)
  local who=$1 tap=""
  if [ "$who" = anyedge_tap ]; then
    command -v fstrm_capture >/dev/null || die "anyedge_tap needs fstrm_capture (apt-get install fstrm-bin)"
    TAPDIR=$(mktemp -d "$W/tap.XXXX")
    "${PIN_S[@]}" fstrm_capture -t protobuf:dnstap.Dnstap -u "$TAPDIR/tap.sock" -w "$TAPDIR/tap.fstrm" >"$TAPDIR/tap.log" 2>&1 &
    TAPPID=$!; PIDS+=("$TAPPID")
    for _ in $(seq 50); do [ -S "$TAPDIR/tap.sock" ] && break; sleep 0.1; done
    tap=$(printf '[dns.dnstap]\nsocket = "%s"\nsample = %s' "$TAPDIR/tap.sock" "${DNSTAP_SAMPLE:-1}")
    who=anyedge
  fi
  start_dns_server "$who" "$2" "" "$tap"
  PIDS+=("$SPID")
}
stop_server() {
  local p
  stop_dns_server
  for _ in $(seq 50); do [ -z "$(ss -Hlntu "sport = :$SPORT" 2>/dev/null)" ] && break; sleep 0.1; done
  if [ -n "$TAPPID" ]; then  # the collector: what it wrote, then its file goes
    p=$(ticks "$TAPPID")
    stop_pid "$TAPPID"; TAPPID=""
    echo "dnstap collector: $(grep -o 'wrote [0-9]* frames, [0-9]* bytes' "$TAPDIR/tap.log" | tail -1), $(awk -v t="$p" -v hz="$HZ" 'BEGIN { printf "%.1f", t / hz }') CPU-s since its start" >&2
    rm -f "$TAPDIR/tap.fstrm"
  fi
}

sanity() {  # sanity WHO: NOERROR with the right A over UDP and TCP, NXDOMAIN for a random name
  local who=$1 got nx
  wait_answer "$SPORT" "$CHECK_NAME" "$CHECK_A" 60 || { server_log "$who"; die "$who did not answer $CHECK_NAME A on port $SPORT"; }
  got=$(answer_a "$SPORT" "$CHECK_NAME" +tcp)
  [ "$got" = "NOERROR $CHECK_A " ] || { server_log "$who"; die "$who over TCP: $CHECK_NAME A -> '$got', want 'NOERROR $CHECK_A'"; }
  nx="nx$RANDOM$RANDOM.$ORIGIN"
  got=$(answer_a "$SPORT" "$nx")
  [ "$got" = "NXDOMAIN " ] || { server_log "$who"; die "$who: $nx A -> '$got', want NXDOMAIN"; }
}

pin_tree() {  # every thread of the server on SERVER_CPU: knotd binds its UDP workers to CPUs itself
  local p t bad=""
  for p in $(tree "$SPID"); do
    taskset -a -cp "$SERVER_CPU" "$p" >/dev/null 2>&1 || true
    for t in /proc/"$p"/task/*; do
      [ "$(taskset -cp "${t##*/}" 2>/dev/null | awk '{print $NF}')" = "$SERVER_CPU" ] || bad+=" ${t##*/}"
    done
  done
  [ -z "$bad" ] || die "$1: threads not pinned to CPU $SERVER_CPU:$bad"
  if [ -n "$CG" ]; then
    for p in $(tree "$SPID"); do for t in /proc/"$p"/task/*; do echo "${t##*/}" >"$CG/tasks"; done; done
  fi
}
udp_drops() { awk '/^Udp:/ && !h {h=1; next} /^Udp:/ {print $6}' /proc/net/snmp; }  # RcvbufErrors, machine-wide
cpu_stat() {  # cpu_stat N -> "total idle" jiffies of CPU N (anyone's work, softirqs included)
  awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6}' /proc/stat
}
busy() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[1] - x[1]; printf "%.0f", (t > 0 ? 100 * (t - (y[2] - x[2])) / t : 0) }'; }
BAD=()
warmup() {  # an unmeasured run: the first seconds after start are slower (caches, page faults, idle CPUs)
  [ "$WARMUP" -gt 0 ] || return 0
  "${PIN_C[@]}" dnsperf -s 127.0.0.1 -p "$SPORT" -d "$W/hit.queries" -l "$WARMUP" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 >/dev/null 2>&1 || true
}
perf_one() {  # perf_one WHO MIX -> "qps lost server_cpu% q_per_server_cpu_s client_cpu% cpuS_busy% cpuC_busy% drops avg_response_bytes"
  local who=$1 mix=$2 mode=udp file=$W/hit.queries want=NOERROR t0 t1 d0 d1 s0 s1 c0 c1 w0 w1 out qps lost rc rsz cl
  case $mix in udp_nx) file=$W/nx.queries; want=NXDOMAIN;; tcp_hit) mode=tcp;; esac
  t0=$(ticks "$SPID"); d0=$(udp_drops); s0=$(cpu_stat "$SERVER_CPU"); c0=$(cpu_stat "$CLIENT_CPU"); w0=$(date +%s%N)
  # `times` in the subshell: CPU time of dnsperf (its children's line)
  out=$( ("${PIN_C[@]}" dnsperf -m "$mode" -s 127.0.0.1 -p "$SPORT" -d "$file" -l "$DURATION" \
        -c "$CLIENTS" -q "$OUTSTANDING" -t 2 || true; times) 2>&1)
  t1=$(ticks "$SPID"); d1=$(udp_drops); s1=$(cpu_stat "$SERVER_CPU"); c1=$(cpu_stat "$CLIENT_CPU"); w1=$(date +%s%N)
  qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' <<<"$out")
  lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
  rc=$(awk -F': *' '/Response codes:/ {print $2}' <<<"$out")
  rsz=$(awk '/Average packet size:/ {print $NF}' <<<"$out")
  # dnsperf's CPU over its wall time (it outlives DURATION while it waits for lost queries)
  cl=$(tail -1 <<<"$out" | awk -v s="$(((w1 - w0) / 1000000))e-3" '{ t = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); t += p[1] * 60 + p[2] } printf "%.0f", 100 * t / s }')
  if [ -z "$qps" ] || [ -z "$lost" ]; then
    echo "$out" | tail -20 >&2; server_log "$who"; die "$who $mix: dnsperf printed no statistics"
  fi
  # every answer of a mix has the same RCODE: anything else is a wrong answer
  if [ "$qps" != 0 ] && ! [[ "$rc" =~ ^$want\ [0-9]+\ \(100\.00%\)$ ]]; then
    echo "$who $mix: response codes '$rc', want only $want" >>"$W/bad"  # (runs in a subshell)
  fi
  echo "$qps $lost $(awk -v t=$((t1 - t0)) -v hz="$HZ" -v s="$DURATION" -v q="$qps" \
     'BEGIN { c = t / hz; printf "%.0f %.0f", 100 * c / s, (c > 0 ? q * s / c : 0) }') $cl $(busy "$s0" "$s1") $(busy "$c0" "$c1") $((d1 - d0)) ${rsz:-0}"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
sum() { tr ' ' '\n' | grep -v '^$' | awk '{s+=$1} END {print s+0}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a/b; else print "n/a" }'; }
has() { [[ " $SERVERS " == *" $1 "* ]]; }

# SERVER_QUOTA=N: the server may use N% of its CPU (cgroup v1 CFS bandwidth,
# 10 ms periods), so that it, not dnsperf, is the bottleneck
if [ "$SERVER_QUOTA" -gt 0 ]; then
  [ -w /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] || die "SERVER_QUOTA needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
  CG=/sys/fs/cgroup/cpu/anyedge-dnsbench.$$
  mkdir "$CG"
  echo 10000 >"$CG/cpu.cfs_period_us"
  echo $((SERVER_QUOTA * 100)) >"$CG/cpu.cfs_quota_us"
fi

# --- throughput rounds --------------------------------------------------------
declare -A R
RESULTS=()
echo "== throughput: $ROUNDS round(s) x ${DURATION}s per mix; servers on CPU $SERVER_CPU${CG:+ (at most $SERVER_QUOTA% of it)}, dnsperf on CPU $CLIENT_CPU (-c $CLIENTS -q $OUTSTANDING)" >&2
for r in $(seq "$ROUNDS"); do
  for who in $SERVERS; do
    start_server "$who" "$W/bench.zone"
    sanity "$who"
    pin_tree "$who"
    warmup
    for mix in $MIXES; do
      read -r qps lost cpu eff ccpu sbusy cbusy drops rsz < <(perf_one "$who" "$mix")
      R[$who,$mix,qps]+="$qps "; R[$who,$mix,lost]+="$lost "; R[$who,$mix,cpu]+="$cpu "; R[$who,$mix,eff]+="$eff "
      printf 'round %d %-8s %-8s %8s q/s  lost %-5s server %3s%% CPU, %7s q/CPU-s | dnsperf %3s%% | CPU%s busy %3s%%, CPU%s busy %3s%% | UDP rcvbuf drops (machine) %s | avg response %s B\n' \
        "$r" "$who" "$mix" "$qps" "$lost" "$cpu" "$eff" "$ccpu" "$SERVER_CPU" "$sbusy" "$CLIENT_CPU" "$cbusy" "$drops" "$rsz" >&2
    done
    stop_server
  done
done

# --- optional profile -------------------------------------------------------
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
  echo "== perf: one extra udp_hit run per server (not in the medians), top symbols" >&2
  for who in $SERVERS; do
    start_server "$who" "$W/bench.zone"; sanity "$who"; pin_tree "$who"
    perf record -q -F 999 -g -o "$W/perf.$who" -p "$(tree "$SPID" | paste -sd,)" -- sleep "$DURATION" >/dev/null 2>&1 &
    PP=$!; PIDS+=("$PP")
    perf_one "$who" udp_hit >/dev/null
    wait "$PP" || true
    echo "--- $who (udp_hit, self time)"
    perf report -i "$W/perf.$who" --stdio --no-children --sort dso,sym -q 2>/dev/null \
      | awk '/^ +[0-9.]+%/ && n++ < 25' || true
    stop_server
  done
fi

# --- load test ----------------------------------------------------------------
declare -A L
if [ "$LOAD_RECORDS" -gt 0 ] && [ "$LOAD_ROUNDS" -gt 0 ]; then
  python3 "$GEN" zone "$ORIGIN" "$LOAD_RECORDS" "$W/big.zone" >"$W/big.facts"
  BIG_NAME=$(facts "$W/big.facts" last_name); BIG_A=$(facts "$W/big.facts" last_a)
  echo "== load: $(cat "$W/big.facts") ($(du -m "$W/big.zone" | cut -f1) MB), $LOAD_ROUNDS round(s)" >&2
  declare -A SKIP=()
  for r in $(seq "$LOAD_ROUNDS"); do
    for who in $SERVERS; do
      [ -n "${SKIP[$who]:-}" ] && continue
      t0=$(date +%s%N)
      start_server "$who" "$W/big.zone"
      if ! wait_answer "$SPORT" "$BIG_NAME" "$BIG_A" "$LOAD_TIMEOUT"; then
        server_log "$who"
        echo "load round $r $who: $BIG_NAME not served within ${LOAD_TIMEOUT}s (or the server exited); skipping it in later load rounds" >&2
        BAD+=("$who: the $LOAD_RECORDS-record zone did not answer within ${LOAD_TIMEOUT}s (LOAD_TIMEOUT)")
        SKIP[$who]=1; L[$who,secs]+=">$LOAD_TIMEOUT "
        stop_server
        continue
      fi
      t1=$(date +%s%N)
      sleep 1  # let post-load work settle before reading memory
      read -r _ pss hwm < <(mem_kib "$SPID")  # PSS: shared pages counted once
      secs=$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.2f", d / 1e9 }')
      L[$who,secs]+="$secs "; L[$who,rss]+="$((pss / 1024)) "; L[$who,hwm]+="$((hwm / 1024)) "
      printf 'load round %d %-8s %6ss to answer, memory %5s MiB (PSS, process tree), peak RSS %5s MiB\n' \
        "$r" "$who" "$secs" "$((pss / 1024))" "$((hwm / 1024))" >&2
      stop_server
    done
  done
fi

# --- summary ------------------------------------------------------------------
if [ "$ROUNDS" -gt 0 ]; then
  echo
  echo "== DNS: medians of $ROUNDS round(s), ${DURATION}s each; one worker per server on CPU $SERVER_CPU${CG:+ (at most $SERVER_QUOTA% of it)}; dnsperf -c $CLIENTS -q $OUTSTANDING on CPU $CLIENT_CPU"
  printf '%-9s' mix; for who in $SERVERS; do printf ' %11s' "$who"; done
  has anyedge && has knot && printf ' %9s' ae/knot; has anyedge && has nsd && printf ' %9s' ae/nsd
  has anyedge && has anyedge_tap && printf ' %9s' tap/ae
  printf '  %s\n' "lost (sum over rounds) / server CPU % / queries per server CPU-second"
  for mix in $MIXES; do
    declare -A M=()
    for who in $SERVERS; do
      M[$who]=$(echo "${R[$who,$mix,qps]}" | median)
      M[$who,lost]=$(echo "${R[$who,$mix,lost]}" | sum)
      M[$who,cpu]=$(echo "${R[$who,$mix,cpu]}" | median)
      M[$who,eff]=$(echo "${R[$who,$mix,eff]}" | median)
    done
    printf '%-9s' "$mix"; for who in $SERVERS; do printf ' %11s' "${M[$who]}"; done
    line="RESULT dns_${mix}_qps"; lline="RESULT dns_${mix}_lost"; eline="RESULT dns_${mix}_queries_per_cpu_second"
    for who in $SERVERS; do line+=" $who=${M[$who]}"; lline+=" $who=${M[$who,lost]}"; eline+=" $who=${M[$who,eff]}"; done
    if has anyedge && has knot; then
      printf ' %9s' "$(ratio "${M[anyedge]}" "${M[knot]}")"
      line+=" anyedge/knot=$(ratio "${M[anyedge]}" "${M[knot]}")"; eline+=" anyedge/knot=$(ratio "${M[anyedge,eff]}" "${M[knot,eff]}")"
    fi
    if has anyedge && has nsd; then
      printf ' %9s' "$(ratio "${M[anyedge]}" "${M[nsd]}")"
      line+=" anyedge/nsd=$(ratio "${M[anyedge]}" "${M[nsd]}")"; eline+=" anyedge/nsd=$(ratio "${M[anyedge,eff]}" "${M[nsd,eff]}")"
    fi
    if has anyedge && has anyedge_tap; then
      printf ' %9s' "$(ratio "${M[anyedge_tap]}" "${M[anyedge]}")"
      line+=" anyedge_tap/anyedge=$(ratio "${M[anyedge_tap]}" "${M[anyedge]}")"; eline+=" anyedge_tap/anyedge=$(ratio "${M[anyedge_tap,eff]}" "${M[anyedge,eff]}")"
    fi
    printf ' '; for who in $SERVERS; do printf ' %s:%s/%s%%/%s' "$who" "${M[$who,lost]}" "${M[$who,cpu]}" "${M[$who,eff]}"; done; echo
    RESULTS+=("$line" "$lline" "$eline")
  done
fi
if [ "$LOAD_RECORDS" -gt 0 ] && [ "$LOAD_ROUNDS" -gt 0 ]; then
  echo
  echo "== load $(facts "$W/big.facts" records)-record zone: medians of $LOAD_ROUNDS round(s)"
  printf '%-22s' metric; for who in $SERVERS; do printf ' %9s' "$who"; done
  has anyedge && has knot && printf ' %9s' ae/knot; has anyedge && has nsd && printf ' %9s' ae/nsd; echo
  for m in secs rss hwm; do
    case $m in secs) name="start to answer (s)"; key=load_seconds;; rss) name="memory, PSS (MiB)"; key=load_memory_mib;; hwm) name="peak RSS (MiB)"; key=load_peak_rss_mib;; esac
    declare -A M=()
    line="RESULT $key"
    printf '%-22s' "$name"
    for who in $SERVERS; do
      if [[ "${L[$who,secs]:-}" == *">"* ]]; then M[$who]="n/a"; [ $m = secs ] && M[$who]="timeout"
      else M[$who]=$(echo "${L[$who,$m]:-}" | median); fi
      printf ' %9s' "${M[$who]}"; line+=" $who=${M[$who]}"
    done
    has anyedge && has knot && { printf ' %9s' "$(ratio "${M[anyedge]}" "${M[knot]}")"; line+=" anyedge/knot=$(ratio "${M[anyedge]}" "${M[knot]}")"; }
    has anyedge && has nsd && { printf ' %9s' "$(ratio "${M[anyedge]}" "${M[nsd]}")"; line+=" anyedge/nsd=$(ratio "${M[anyedge]}" "${M[nsd]}")"; }
    echo
    RESULTS+=("$line")
  done
fi
echo
printf '%s\n' "${RESULTS[@]}"
echo "(targets: qps anyedge/knot >= 1.0 and anyedge/nsd >= 1.0 per mix, zero lost queries; load: lower is better)"
[ -f "$W/bad" ] && while read -r l; do BAD+=("$l"); done <"$W/bad"
if [ ${#BAD[@]} -gt 0 ]; then
  printf 'FAIL: %s\n' "${BAD[@]}" >&2
  exit 1
fi
