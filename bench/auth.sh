# shellcheck shell=bash
# bench/auth.sh — sourced by the benches that start a cluster: every one runs
# authenticated (docs/security.md) with a join token for its workers
# ($SPLITCHAIN_JOIN_TOKEN_FILE, which the daemons read), an admin user for
# its CLI calls ($SPLITCHAIN_TOKEN) and the coordinator's roots at WORK
# ($SC_MODEL_ROOT, $SC_DATA_ROOT, as deploy/launch.sh reads them).
#   bench_auth BUILD DATABASE WORK     the database the coordinator will use
bench_auth() {
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$3/join.token")
  export SPLITCHAIN_JOIN_TOKEN_FILE=$3/join.token SC_MODEL_ROOT=$3 SC_DATA_ROOT=$3
  mkdir -p "$(dirname "$2")"
  SPLITCHAIN_TOKEN=$("$1/coordinator/splitchain-coordinator" --db "$2" users add bench --admin \
                     2>/dev/null) || { echo "bench: cannot add the bench user" >&2; return 1; }
  export SPLITCHAIN_TOKEN
}
