#!/usr/bin/env bash
# netns.sh — slow links on one machine, for tests and benchmarks: N network
# namespaces sc-ns1..sc-nsN, each joined to the root namespace by a veth pair
# whose two ends are rate-limited with a token bucket (tc tbf), so that a
# process in sc-nsI talks to the root namespace over one shaped link and to a
# process in sc-nsJ over two (sc-nsI's uplink, then the root's downlink into
# sc-nsJ; the root namespace forwards between them).
#   bench/netns.sh check               exit 0 if namespaces can be made here, else 77
#   bench/netns.sh up N RATE_MBIT      build sc-ns1..sc-nsN (1 <= N <= 250) at RATE_MBIT
#   bench/netns.sh down                remove them all (idempotent)
#   bench/netns.sh exec I CMD [ARG...] run CMD inside sc-nsI (its exit status)
#   bench/netns.sh status              what is up
# Addresses: 10.77.I.1/24 on the root side (veth sc-vethI), 10.77.I.2/24 in
# sc-nsI (veth sc-vethIn, default route via 10.77.I.1; lo up). A process in
# sc-nsI reaches the root namespace at 10.77.I.1 and sc-nsJ at 10.77.J.2.
# net.ipv4.ip_forward is set to 1 while the namespaces are up and put back to
# its earlier value by `down`.
# Shaping: `tc qdisc add dev <each veth end> root tbf rate RATEmbit
# burst B latency 50ms`, B = max(64 KiB, 2 ms at RATE) (64 KiB at <= 262
# Mbit/s, 250 KB at 1000): at least one 64 KiB GSO super-packet (so tbf never
# splits them) and enough tokens that the timer's granularity does not cost
# rate; latency 50 ms bounds the queue (limit = RATE x 50 ms + B), deep enough
# that TCP keeps the link full. Measured here with one TCP stream: 94.9 of
# 100, 19.4 of 20 and 956 of 1000 Mbit/s of payload (tbf counts Ethernet
# frames: the ~4% left is TCP/IP headers). SC_NETNS_BURST and
# SC_NETNS_LATENCY (tc syntax: 32kb, 20ms) override the two.
# Latency: the kernel here has no netem, so nothing adds a propagation delay.
# The data plane has a test-only hook instead: SPLITCHAIN_TEST_LINK_DELAY_MS=D
# in a worker's environment makes every tensor it receives arrive no sooner
# than D ms after its sender stamped it (one-way latency on the data plane
# only; RPCs and link probes see none). Set it on the workers, e.g.
#   bench/netns.sh exec 2 env SPLITCHAIN_TEST_LINK_DELAY_MS=20 splitchain-worker ...
# Ownership and cleanup: `up` records its owner, the process in SC_NETNS_OWNER
# (default: the caller, $PPID), and starts a watcher that runs `down` when the
# owner is gone, so a caller that dies (even by SIGKILL) leaves nothing
# behind; callers should still `trap 'bench/netns.sh down' EXIT`. `up` also
# removes what it built if it fails half-way, and `down` kills what still
# runs inside the namespaces (SIGTERM, then SIGKILL) before it removes them.
# `up` while namespaces of a live owner are up fails with status 75 (busy);
# namespaces of a dead owner are removed first. State: /run/splitchain-netns.
# Exit status: 0 ok, 1 error, 2 usage, 75 busy, 77 namespaces cannot be made
# here (not root, no ip or tc, no netns, veth or tbf): callers skip.
set -euo pipefail
STATE=${SC_NETNS_STATE:-/run/splitchain-netns}
LOCK=$STATE.lock
EX_SKIP=77
EX_BUSY=75

usage() { sed -n '2,13p' "$0" >&2; exit 2; }
say() { echo "netns: $*" >&2; }
skip() { echo "netns: cannot make network namespaces here: $*" >&2; exit $EX_SKIP; }

# The lock serialises up, down and the watcher (fd 9).
lock() {
  mkdir -p "$(dirname "$LOCK")"
  exec 9>"$LOCK"
  flock 9
}

# 0 when this machine can make namespaces, veths and tbf qdiscs; else a
# message on stderr and status 77.
check() {
  [ "$(id -u)" = 0 ] || skip "not root (uid $(id -u))"
  local t
  for t in ip tc flock; do command -v "$t" >/dev/null || skip "no '$t' command"; done
  local probe=sc-nsprobe$$
  trap 'ip link del sc-pr$$ 2>/dev/null; ip netns del sc-nsprobe$$ 2>/dev/null' EXIT
  ip netns add "$probe" 2>/dev/null || skip "'ip netns add' failed"
  if ! ip link add sc-pr$$ type veth peer name sc-pr$$n 2>/dev/null; then
    ip netns del "$probe" 2>/dev/null || true
    skip "no veth support"
  fi
  local ok=1
  ip link set sc-pr$$n netns "$probe" 2>/dev/null || ok=0
  tc qdisc add dev sc-pr$$ root tbf rate 10mbit burst 64kb latency 50ms 2>/dev/null || ok=2
  ip link del sc-pr$$ 2>/dev/null || true
  ip netns del "$probe" 2>/dev/null || true
  trap - EXIT
  [ $ok = 1 ] || { [ $ok = 0 ] && skip "cannot move a veth into a namespace"; skip "no tbf qdisc"; }
}

# Kills what runs in sc-nsI: SIGTERM, up to 5 s, then SIGKILL.
kill_inside() {
  local ns=$1 i
  local -a pids
  read -ra pids <<<"$(ip netns pids "$ns" 2>/dev/null | paste -sd' ' || true)"
  [ ${#pids[@]} -gt 0 ] || return 0
  say "stopping processes still in $ns: ${pids[*]}"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for i in $(seq 1 50); do
    read -ra pids <<<"$(ip netns pids "$ns" 2>/dev/null | paste -sd' ' || true)"
    [ ${#pids[@]} -gt 0 ] || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  sleep 0.2
}

# Removes every sc-nsI and sc-vethI, restores ip_forward. Holds the lock.
teardown() {
  local ns i v fwd
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^sc-ns[0-9]+$/ {print $1}'); do
    kill_inside "$ns"
  done
  # Deleting one end of a veth deletes both; a namespace's deletion removes
  # its end only asynchronously, so the root ends go first, explicitly.
  for v in $(ip -o link show 2>/dev/null | sed -n 's/^[0-9]*: \(sc-veth[0-9]*\)@.*/\1/p'); do
    ip link del "$v" 2>/dev/null || true
  done
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^sc-ns[0-9]+$/ {print $1}'); do
    ip netns del "$ns" 2>/dev/null || true
  done
  for i in $(seq 1 50); do
    ip -o link show 2>/dev/null | grep -q ': sc-veth[0-9]*[@:]' || break
    sleep 0.1
  done
  if [ -f "$STATE/ip_forward" ]; then
    fwd=$(cat "$STATE/ip_forward")
    echo "$fwd" > /proc/sys/net/ipv4/ip_forward
  fi
  # The watcher, if it is still this script's (its pid may have been reused).
  local wp
  wp=$(cat "$STATE/watcher" 2>/dev/null || true)
  if [ -n "$wp" ] && [ "$wp" != "${SC_NETNS_SELF:-}" ] &&
     tr '\0' ' ' < "/proc/$wp/cmdline" 2>/dev/null | grep -q 'netns.sh _watch '; then
    kill -KILL "$wp" 2>/dev/null || true
  fi
  rm -rf "$STATE"
}

burst_for() { # RATE_MBIT -> tc burst: max(64 KiB, 2 ms at RATE)
  local b=$(($1 * 1000000 / 8 / 500))
  [ "$b" -ge 65536 ] || b=65536
  echo "${b}b"
}

shape() { # [ip -n NS] DEV RATE
  local rate=$3
  local burst=${SC_NETNS_BURST:-$(burst_for "$rate")} lat=${SC_NETNS_LATENCY:-50ms}
  if [ "$1" = root ]; then
    tc qdisc add dev "$2" root tbf rate "${rate}mbit" burst "$burst" latency "$lat"
  else
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "${rate}mbit" burst "$burst" latency "$lat"
  fi
}

up() {
  local n=$1 rate=$2 owner=${SC_NETNS_OWNER:-$PPID} i ns v
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || usage
  [[ "$rate" =~ ^[0-9]+$ ]] && [ "$rate" -ge 1 ] || usage
  check
  lock
  if [ -f "$STATE/owner" ]; then
    local o
    o=$(cat "$STATE/owner")
    if kill -0 "$o" 2>/dev/null; then
      say "busy: namespaces are up for process $o ($(cat "$STATE/desc" 2>/dev/null))"
      exit $EX_BUSY
    fi
    say "removing the namespaces of process $o, which is gone"
  fi
  teardown
  mkdir -p "$STATE"
  cat /proc/sys/net/ipv4/ip_forward > "$STATE/ip_forward"
  echo "$owner" > "$STATE/owner"
  echo "$n namespaces at $rate Mbit/s" > "$STATE/desc"
  # Half-built: remove it all (we hold the lock).
  # shellcheck disable=SC2154
  trap 'st=$?; if [ $st -ne 0 ]; then say "up failed: removing what it built"; teardown; fi' EXIT
  echo 1 > /proc/sys/net/ipv4/ip_forward
  for i in $(seq 1 "$n"); do
    ns=sc-ns$i v=sc-veth$i
    ip netns add "$ns"
    ip link add "$v" type veth peer name "${v}n"
    ip link set "${v}n" netns "$ns"
    ip addr add "10.77.$i.1/24" dev "$v"
    ip link set "$v" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "10.77.$i.2/24" dev "${v}n"
    ip -n "$ns" link set "${v}n" up
    ip -n "$ns" route add default via "10.77.$i.1"
    shape root "$v" "$rate"
    shape "$ns" "${v}n" "$rate"
  done
  # The watcher: `down` once the owner is gone.
  if [ "${SC_NETNS_NO_WATCHER:-0}" != 1 ]; then
    setsid bash "$0" _watch "$owner" </dev/null >/dev/null 2>&1 9>&- &
    echo $! > "$STATE/watcher"
  fi
  trap - EXIT
  say "up: $n namespaces (sc-ns1..sc-ns$n, 10.77.I.2) at $rate Mbit/s each way, burst" \
    "${SC_NETNS_BURST:-$(burst_for "$rate")}, latency ${SC_NETNS_LATENCY:-50ms}; owner $owner"
}

watch_owner() {
  local owner=$1
  trap '' HUP INT TERM # only `down` (SIGKILL) or the owner's end stops it
  while kill -0 "$owner" 2>/dev/null; do sleep 1; done
  lock
  # Only if the namespaces are still this owner's.
  if [ -f "$STATE/owner" ] && [ "$(cat "$STATE/owner")" = "$owner" ]; then
    SC_NETNS_SELF=$$ teardown
  fi
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case $cmd in
  check) check; echo "netns: network namespaces, veth and tbf work here" ;;
  up) [ $# -eq 2 ] || usage; up "$1" "$2" ;;
  down)
    [ $# -eq 0 ] || usage
    [ "$(id -u)" = 0 ] || skip "not root"
    command -v ip >/dev/null || skip "no 'ip' command"
    lock
    teardown
    ;;
  exec)
    [ $# -ge 2 ] && [[ "$1" =~ ^[0-9]+$ ]] || usage
    i=$1
    shift
    ip netns list | awk '{print $1}' | grep -qx "sc-ns$i" || { say "sc-ns$i is not up"; exit 1; }
    exec ip netns exec "sc-ns$i" "$@"
    ;;
  status)
    if [ -f "$STATE/owner" ]; then
      echo "up: $(cat "$STATE/desc"), owner $(cat "$STATE/owner")" \
        "($(kill -0 "$(cat "$STATE/owner")" 2>/dev/null && echo alive || echo gone))"
    else echo "down"; fi
    ip netns list 2>/dev/null | awk '$1 ~ /^sc-ns[0-9]+$/ {print "  " $1}'
    ;;
  _watch) watch_owner "$1" ;;
  *) usage ;;
esac
