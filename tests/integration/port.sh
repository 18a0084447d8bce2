# port.sh — sc_pick_port: a TCP port for a test cluster's coordinator on
# 127.0.0.1, with the few above it (SC_PORT + 1 .. + 8: a tensor listener,
# extra servers) free too. It lies below the kernel's ephemeral range
# (net.ipv4.ip_local_port_range), so the automatic local port of some
# other socket (a worker's listener on port 0, any outgoing connection)
# cannot take it between this pick and the coordinator's listen; and nothing
# answers on it now. Sourced by lib.sh and bench/pipeline.sh.
sc_pick_port() {
  local low rest span p try
  read -r low rest < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  span=$((low - 10000 - 8))
  [ "$span" -ge 1000 ] || { low=60000; span=20000; } # an odd range: the old pick
  for try in 1 2 3 4 5 6 7 8; do
    p=$((low - 8 - span + RANDOM % span))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || break
  done
  echo "$p"
}
