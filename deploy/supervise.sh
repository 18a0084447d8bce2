#!/usr/bin/env bash
# supervise.sh PIDFILE LOG COMMAND [ARG...] — runs a worker as its
# supervisor would: started again whenever it exits asking for a fresh
# process (status 3: its device failed; 4: a socket close stuck in nng), as
# the systemd unit's Restart=on-failure does. PIDFILE names the running
# process (a signal sent to it ends the loop with it); LOG gets its output,
# appended. Exits with the command's last status. Used by launch.sh and the
# integration tests.
set -u
[ $# -ge 3 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
pidfile=$1 log=$2
shift 2
while :; do
  "$@" >>"$log" 2>&1 &
  echo $! > "$pidfile"
  wait $!
  rc=$?
  { [ $rc -eq 3 ] || [ $rc -eq 4 ]; } || exit $rc
  echo "supervise: $(basename "$pidfile" .pid) exited with status $rc: starting it again" >>"$log"
done
