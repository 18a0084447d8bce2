#!/usr/bin/env bash
# launch.sh — a coordinator and N workers on this machine, as separate
# processes, for trying splitchain or testing it; stops them cleanly.
#   deploy/launch.sh start DIR [N]   start in DIR (database, logs, pid files)
#   deploy/launch.sh stop DIR        stop all of them (SIGTERM, then SIGKILL)
#   deploy/launch.sh status DIR
# Environment: SC_BIN (folder of the binaries, default build/), SC_PORT
# (coordinator port, default 7700), SC_THREADS (BLAS threads per worker, 1),
# SC_WORKER_ARGS (more splitchain-worker flags, e.g. "--memory-reserve 2G"),
# SC_MODEL_ROOT / SC_DATA_ROOT (the coordinator's --model-root / --data-root,
# default the current directory), SPLITCHAIN_JOIN_TOKEN_FILE (the cluster's
# join token; default DIR/join.token, made on first start).
# The first start also adds an admin user and keeps its token in
# DIR/admin.token (mode 600): export SPLITCHAIN_TOKEN=$(cat DIR/admin.token).
# Mutual TLS: the certificates in SC_TLS_DIR (coordinator, worker and cli,
# from deploy/certs.sh), else ones made in DIR/certs; SC_INSECURE=1 runs
# plaintext tcp:// instead (--insecure). For the CLI against a TLS cluster:
#   export SPLITCHAIN_TLS_CERT=CERTS/cli.pem SPLITCHAIN_TLS_KEY=CERTS/cli.key \
#          SPLITCHAIN_TLS_CA=CERTS/ca.pem
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SC_BIN:-$ROOT/build}
PORT=${SC_PORT:-7700}
THREADS=${SC_THREADS:-1}
cmd=${1:-}
DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || { sed -n '2,19p' "$0" >&2; exit 2; }
read -r -a WORKER_ARGS <<< "${SC_WORKER_ARGS:-}"

coordinator_bin() { echo "$BIN/coordinator/splitchain-coordinator"; }
worker_bin() { echo "$BIN/worker/splitchain-worker"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

case $cmd in
start)
  N=${3:-3}
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if alive "$DIR/coordinator.pid"; then
    echo "launch: a coordinator already runs for $DIR (pid $(cat "$DIR/coordinator.pid"))" >&2
    exit 1
  fi
  if [ "${SC_INSECURE:-0}" = 1 ]; then
    SCHEME=tcp
    COORD_SEC=(--insecure)
    WORKER_SEC=(--insecure)
  else
    CERTS=${SC_TLS_DIR:-$DIR/certs}
    if [ ! -f "$CERTS/coordinator.pem" ] || [ ! -f "$CERTS/worker.pem" ] ||
       [ ! -f "$CERTS/cli.pem" ]; then
      "$ROOT/deploy/certs.sh" "$CERTS" coordinator worker cli >/dev/null
    fi
    CERTS=$(cd "$CERTS" && pwd)
    SCHEME=tls+tcp
    COORD_SEC=(--tls-cert "$CERTS/coordinator.pem" --tls-key "$CERTS/coordinator.key"
               --tls-ca "$CERTS/ca.pem")
    WORKER_SEC=(--tls-cert "$CERTS/worker.pem" --tls-key "$CERTS/worker.key"
                --tls-ca "$CERTS/ca.pem")
    export SPLITCHAIN_TLS_CERT=$CERTS/cli.pem SPLITCHAIN_TLS_KEY=$CERTS/cli.key \
      SPLITCHAIN_TLS_CA=$CERTS/ca.pem
  fi
  URL="$SCHEME://127.0.0.1:$PORT"
  JOIN=${SPLITCHAIN_JOIN_TOKEN_FILE:-$DIR/join.token}
  if [ ! -s "$JOIN" ]; then
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$JOIN")
  fi
  if [ ! -s "$DIR/admin.token" ]; then
    (umask 077 && "$(coordinator_bin)" --db "$DIR/splitchain.db" users add admin --admin \
      > "$DIR/admin.token" 2>/dev/null) || { echo "launch: cannot add the admin user" >&2; exit 1; }
  fi
  export SPLITCHAIN_TOKEN=${SPLITCHAIN_TOKEN:-$(cat "$DIR/admin.token")}
  logged=0
  [ ! -f "$DIR/coordinator.log" ] || logged=$(wc -l < "$DIR/coordinator.log")
  "$(coordinator_bin)" --listen "$URL" --db "$DIR/splitchain.db" --join-token-file "$JOIN" \
    "${COORD_SEC[@]}" \
    --model-root "${SC_MODEL_ROOT:-$PWD}" --data-root "${SC_DATA_ROOT:-$PWD}" \
    >>"$DIR/coordinator.log" 2>&1 &
  echo $! > "$DIR/coordinator.pid"
  # Up when its log says it listens; a coordinator that exits first (its
  # address in use, a bad flag) fails the start.
  coordinator_exited() {
    echo "launch: the coordinator exited at start:" >&2
    tail -n 5 "$DIR/coordinator.log" >&2
    "$0" stop "$DIR" >/dev/null 2>&1 || true
    exit 1
  }
  for _ in $(seq 1 100); do
    tail -n +"$((logged + 1))" "$DIR/coordinator.log" | grep -q ' listening on ' && break
    alive "$DIR/coordinator.pid" || coordinator_exited
    sleep 0.1
  done
  # Each worker runs under supervise.sh, which starts it again when it exits
  # asking its supervisor for a fresh process (status 3: its device failed;
  # 4: a socket close stuck in nng), as the systemd unit's Restart=on-failure
  # does; worker-N.pid names the running process.
  for i in $(seq 1 "$N"); do
    rm -f "$DIR/worker-$i.pid"
    "$ROOT/deploy/supervise.sh" "$DIR/worker-$i.pid" "$DIR/worker-$i.log" \
      env OMP_NUM_THREADS="$THREADS" "$(worker_bin)" --coordinator "$URL" --name "worker-$i" \
      --join-token-file "$JOIN" \
      --listen "$SCHEME://127.0.0.1:0" --data "$SCHEME://127.0.0.1:0" --threads "$THREADS" \
      "${WORKER_SEC[@]}" ${WORKER_ARGS[@]+"${WORKER_ARGS[@]}"} &
  done
  for i in $(seq 1 "$N"); do
    for _ in $(seq 1 50); do [ -s "$DIR/worker-$i.pid" ] && break; sleep 0.02; done
  done
  # Ready when every worker is registered.
  n=0
  for _ in $(seq 1 100); do
    alive "$DIR/coordinator.pid" || coordinator_exited
    n=$("$BIN/cli/splitchain" workers --coordinator "$URL" --json 2>/dev/null |
        grep -o '"state":"idle"' | wc -l || true)
    [ "$n" -ge "$N" ] && break
    sleep 0.2
  done
  [ "$n" -ge "$N" ] ||
    echo "launch: $n of $N workers registered within 20 s; the others may still (see $DIR/worker-*.log)" >&2
  echo "launch: coordinator at $URL (database $DIR/splitchain.db), $N workers; logs in $DIR"
  echo "launch: the admin's token: export SPLITCHAIN_TOKEN=\$(cat $DIR/admin.token)"
  [ "$SCHEME" = tcp ] || echo "launch: TLS certificates in $CERTS (the CLI's: cli.pem, cli.key, ca.pem)"
  ;;
stop)
  for f in "$DIR"/worker-*.pid "$DIR"/coordinator.pid; do
    [ -f "$f" ] || continue
    if alive "$f"; then kill -TERM "$(cat "$f")" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 50); do
    left=0
    for f in "$DIR"/*.pid; do [ -f "$f" ] && alive "$f" && left=1; done
    [ $left -eq 0 ] && break
    sleep 0.2
  done
  for f in "$DIR"/*.pid; do
    [ -f "$f" ] || continue
    if alive "$f"; then kill -KILL "$(cat "$f")" 2>/dev/null || true; fi
    rm -f "$f"
  done
  echo "launch: stopped"
  ;;
status)
  for f in "$DIR"/*.pid; do
    [ -f "$f" ] || continue
    if alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
    else echo "$(basename "$f" .pid): not running"; fi
  done
  ;;
*) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
