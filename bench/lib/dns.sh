# Shared by the DNS benchmarks (bench/dns_*.sh; sourced, not run): start
# Knot DNS, NSD or anyedge on loopback serving one zone, wait until it
# answers, stop it by PID, and measure a process tree.
#
# The sourcing script sets, before calling these:
#   W       its work directory (each server gets a fresh one below it)
#   ORIGIN  the zone's apex, e.g. example.com.
#   BIN     the anyedge binary
#   PIN_S   (array, optional) the command prefix that pins a server, default
#           (taskset -c "$SERVER_CPU")
#   die     a function that prints FAIL and exits
# and gets:
#   SPID    the running server's PID ("" when none), SPORT its port, SDIR
#           its directory (its log: $SDIR/log)
# Everything started here is stopped by PID.

export PATH=$PATH:/usr/sbin
KNOTD=${KNOTD:-$(command -v knotd || echo /usr/sbin/knotd)}
NSD=${NSD:-$(command -v nsd || echo /usr/sbin/nsd)}
HZ=$(getconf CLK_TCK)
SPID=""
SPORT=""
SDIR=""

stop_pid() {  # stop_pid PID [SECONDS]: SIGTERM, SIGKILL after SECONDS (default 5: a server busy loading may not act on TERM)
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq $((${2:-5} * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

free_port() {  # a port no UDP/TCP socket uses, below the ephemeral range
  local p lo
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range)
  for _ in $(seq 200); do
    p=$((10000 + RANDOM % (lo - 10000)))
    if [ -z "$(ss -Hantu "sport = :$p" 2>/dev/null)" ]; then echo "$p"; return; fi
  done
  die "no free port"
}

tree() {  # PID and all its descendants
  local p=$1 c
  echo "$p"
  for c in $(pgrep -P "$p" 2>/dev/null || true); do tree "$c"; done
}

ticks() {  # CPU clock ticks (user+system, all threads) of a process tree
  local t=0 p
  for p in $(tree "$1"); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12+$13}')))
  done
  echo $t
}

mem_kib() {  # "RSS PSS HWM" in KiB: RSS and PSS summed over the tree (PSS counts shared pages once), the largest peak RSS
  local rss=0 pss=0 hwm=0 p v
  for p in $(tree "$1"); do
    v=$(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); rss=$((rss + ${v:-0}))
    v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); pss=$((pss + ${v:-0}))
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); [ "${v:-0}" -gt $hwm ] && hwm=$v
  done
  echo "$rss $pss $hwm"
}

# start_dns_server WHO ZONEFILE [ZONE_EXTRA [EXTRA]]: writes the config of
# WHO (knot | nsd | anyedge) serving ZONEFILE as $ORIGIN with one worker on
# a free port and starts it in the background (not waiting for it): SPID,
# SPORT, SDIR. ZONE_EXTRA: more lines of the zone's settings (Knot: e.g.
# `module: mod-onlinesign/os`; anyedge: e.g. `dnssec = {...}`). EXTRA: more
# configuration (Knot: top-level sections placed before the template, e.g.
# `mod-onlinesign:`; anyedge: tables after the zone, e.g. `[admin]`,
# `[dns.dnstap]`). NSD takes neither.
start_dns_server() {
  local who=$1 zone=$2 zextra=${3:-} extra=${4:-} d
  local -a pin=(taskset -c "${SERVER_CPU:-1}")
  [ -n "${PIN_S+x}" ] && pin=("${PIN_S[@]}")
  SPORT=$(free_port)
  d=$(mktemp -d "$W/$who.XXXX"); SDIR=$d
  case $who in
    knot)
      cat >"$d/knot.conf" <<KN
server:
    rundir: "$d"
    listen: 127.0.0.1@$SPORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$d"
$extra
template:
  - id: default
    storage: "$d"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: $ORIGIN
    file: "$zone"
$zextra
KN
      "${pin[@]}" "$KNOTD" -c "$d/knot.conf" >"$d/log" 2>&1 &
      ;;
    nsd)
      cat >"$d/nsd.conf" <<NS
server:
    server-count: 1
    ip-address: 127.0.0.1
    port: $SPORT
    username: ""
    chroot: ""
    zonesdir: "$d"
    pidfile: "$d/nsd.pid"
    xfrdfile: "$d/xfrd.state"
    zonelistfile: "$d/zone.list"
    database: ""
    logfile: "$d/log"
    verbosity: 0
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: $ORIGIN
    zonefile: "$zone"
NS
      nsd-checkconf "$d/nsd.conf" >&2 || die "nsd-checkconf rejected $d/nsd.conf"
      "${pin[@]}" "$NSD" -d -c "$d/nsd.conf" >>"$d/log" 2>&1 &
      ;;
    anyedge)
      cat >"$d/anyedge.toml" <<AE
[pop]
name = "bench"
workers = 1
[dns]
listen = ["127.0.0.1:$SPORT"]
workers = 1
[[dns.zone]]
name = "$ORIGIN"
file = "$zone"
$zextra
$extra
AE
      RUST_LOG=warn "${pin[@]}" "$BIN" run -c "$d/anyedge.toml" >"$d/log" 2>&1 &
      ;;
    *) die "unknown server $who" ;;
  esac
  SPID=$!
}

stop_dns_server() {  # stop_dns_server [SECONDS]: the running server (NSD: its main process too, a child of the one started)
  local p
  [ -f "$SDIR/nsd.pid" ] && p=$(cat "$SDIR/nsd.pid") && kill "$p" 2>/dev/null || true
  stop_pid "$SPID" "${1:-5}"
  SPID=""
}

server_log() { echo "--- $1 log ($SDIR/log):" >&2; tail -20 "$SDIR/log" >&2 || true; }

answer_a() {  # answer_a PORT NAME [+tcp] -> "STATUS A-records..." (one line)
  local out
  out=$(dig +norec +time=1 +tries=1 ${3:-} -p "$1" @127.0.0.1 "$2" A +noall +comments +answer 2>/dev/null) || { echo "NOANSWER"; return; }
  echo "$(grep -o 'status: [A-Z]*' <<<"$out" | head -1 | cut -d' ' -f2) $(awk '$4 == "A" {print $5}' <<<"$out" | sort | tr '\n' ' ')"
}

wait_answer() {  # wait_answer PORT NAME EXPECTED_A TIMEOUT_S: polls until the A record is served (1: the server exited or time ran out)
  local deadline=$(($(date +%s) + $4))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$SPID" 2>/dev/null || return 1
    [ "$(answer_a "$1" "$2")" = "NOERROR $3 " ] && return 0
    sleep 0.02
  done
  return 1
}

wait_signed() {  # wait_signed PORT NAME TIMEOUT_S: polls until NAME A is answered with an RRSIG (DO) (1: exited or timed out)
  local t0
  t0=$(date +%s.%N)
  while [ "$(awk -v a="$t0" -v b="$(date +%s.%N)" -v m="$3" 'BEGIN {print (b - a < m)}')" = 1 ]; do
    kill -0 "$SPID" 2>/dev/null || return 1
    dig +norec +dnssec +time=1 +tries=1 -p "$1" @127.0.0.1 "$2" A 2>/dev/null | grep -q RRSIG && return 0
    sleep 0.05
  done
  return 1
}
