# lib.sh — shared helpers of the integration tests: a cluster of real
# processes on this machine (deploy/launch.sh), small models, and checks.
#   source lib.sh BUILD_DIR WORK_DIR
set -u
BUILD=$1
WORK=$2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SC=$BUILD/cli/splitchain
REFTOOL=$BUILD/tests/sc_reftool
export SC_BIN=$BUILD SC_THREADS=1 OMP_NUM_THREADS=1
# shellcheck source=tests/integration/port.sh
. "$ROOT/tests/integration/port.sh"
SC_PORT=$(sc_pick_port)
export SC_PORT
export SPLITCHAIN_COORDINATOR=tls+tcp://127.0.0.1:$SC_PORT
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
# Every test runs authenticated: one join token for every worker, and an
# admin user (in the database every test's cluster uses) whose token the CLI
# presents. The coordinator opens models and data only under $WORK.
(umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > join.token)
export SPLITCHAIN_JOIN_TOKEN_FILE=$WORK/join.token
mkdir -p cluster
(umask 077 && "$BUILD/coordinator/splitchain-coordinator" --db cluster/splitchain.db \
  users add admin --admin > cluster/admin.token 2>/dev/null) || { echo "FAIL admin user"; exit 1; }
export SPLITCHAIN_TOKEN
SPLITCHAIN_TOKEN=$(cat cluster/admin.token)
export SC_MODEL_ROOT=$WORK SC_DATA_ROOT=$WORK

# Every cluster speaks mutual TLS: one CA and certificates per test run
# (deploy/certs.sh). The CLI (and the test tools) take theirs from the
# environment, launch.sh its daemons' from SC_TLS_DIR; daemons started here
# take COORD_TLS / WORKER_NET. use_insecure switches a test to plaintext.
TLS_DIR=$WORK/certs
bash "$ROOT/deploy/certs.sh" "$TLS_DIR" coordinator worker cli >/dev/null ||
  { echo "FAIL deploy/certs.sh"; exit 1; }
export SC_TLS_DIR=$TLS_DIR
export SPLITCHAIN_TLS_CERT=$TLS_DIR/cli.pem SPLITCHAIN_TLS_KEY=$TLS_DIR/cli.key \
  SPLITCHAIN_TLS_CA=$TLS_DIR/ca.pem
COORD_TLS=(--tls-cert "$TLS_DIR/coordinator.pem" --tls-key "$TLS_DIR/coordinator.key"
           --tls-ca "$TLS_DIR/ca.pem")
WORKER_TLS=(--tls-cert "$TLS_DIR/worker.pem" --tls-key "$TLS_DIR/worker.key"
            --tls-ca "$TLS_DIR/ca.pem")
WORKER_NET=(--listen tls+tcp://127.0.0.1:0 --data tls+tcp://127.0.0.1:0 "${WORKER_TLS[@]}")
use_insecure() {
  export SPLITCHAIN_COORDINATOR=tcp://127.0.0.1:$SC_PORT SC_INSECURE=1
  unset SC_TLS_DIR
  COORD_TLS=(--insecure)
  WORKER_TLS=(--insecure)
  WORKER_NET=(--listen tcp://127.0.0.1:0 --data tcp://127.0.0.1:0 --insecure)
}
PASS=0
FAIL=0

ok() { echo "ok   $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL $*"; FAIL=$((FAIL + 1)); }
finish() {
  "$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  echo "$PASS passed, $FAIL failed"
  if [ "$FAIL" -ne 0 ]; then
    for f in "$WORK"/cluster/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
    [ -f "$WORK/cluster/splitchain.db" ] && { echo "--- the last events"
      sqlite3 -cmd '.timeout 2000' "$WORK/cluster/splitchain.db" "select * from (select id,
        job_id, worker_id, kind, substr(message, 1, 200) from events order by id desc
        limit 20) order by id" 2>&1; }
  fi
  [ "$FAIL" -eq 0 ]
}
trap '"$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true' EXIT

# A small model and data every test shares.
make_fixture() {
  "$SC" make-model --out model --layers 4 --heads 4 --embd 64 --vocab 300 --positions 64 \
    --random-norms --seed 7 >/dev/null
  find "$ROOT/docs" "$ROOT/common/util" "$ROOT/common/backend/sc_backend.h" "$ROOT/common/model" -type f | sort | xargs cat 2>/dev/null | head -c 60000 > data.txt
}

# Job options shared by the single-process reference and the cluster.
JOB_OPTS=(--steps 6 --batch 2 --seq 16 --micro 4 --rank 4 --alpha 8 --targets all
          --lr 3e-3 --min-lr 3e-4 --warmup 2 --weight-decay 0.01 --clip 0.5 --seed 11)

# A job long enough (150 steps) to be interrupted mid-way, for the tests
# that kill a process while it runs.
LONG_JOB_OPTS=(--steps 150 --batch 4 --seq 32 --micro 2 --rank 4 --alpha 8 --targets all
               --lr 3e-3 --min-lr 3e-4 --warmup 2 --weight-decay 0.01 --clip 0.5 --seed 11)

# reference OUT_DIR: the single-process engine's adapter after the job.
reference() {
  "$SC" finetune --model model --data data.txt "${JOB_OPTS[@]}" --threads 1 --quiet --out "$1"
}

# state JOB: the job's state word.
state() { "$SC" status "$1" --json | sed -n 's/.*"state":"\([a-z]*\)".*/\1/p'; }
# step JOB: steps completed.
step_of() { "$SC" status "$1" --json | sed -n 's/.*"step":\([0-9]*\).*/\1/p'; }

# wait_state JOB STATE SECONDS
wait_state() {
  local i
  for i in $(seq 1 $(($3 * 5))); do
    [ "$(state "$1")" = "$2" ] && return 0
    sleep 0.2
  done
  return 1
}

# start_coordinator LOST_AFTER_MS [OPTION...]: a coordinator on
# $SPLITCHAIN_COORDINATOR with its state in cluster/ and 200 ms heartbeats
# (launch.sh stop ends it).
start_coordinator() {
  mkdir -p cluster
  "$BUILD/coordinator/splitchain-coordinator" --listen "$SPLITCHAIN_COORDINATOR" \
    --db cluster/splitchain.db --heartbeat-ms 200 --lost-after-ms "$1" "${COORD_TLS[@]}" \
    --model-root "$SC_MODEL_ROOT" --data-root "$SC_DATA_ROOT" "${@:2}" \
    >>cluster/coordinator.log 2>&1 &
  echo $! > cluster/coordinator.pid
}

# start_worker N [OPTION...]: worker wN of $SPLITCHAIN_COORDINATOR (one
# thread, WORKER_NET) under deploy/supervise.sh, as deploy/launch.sh and the
# systemd unit run one: started again when it exits asking its supervisor
# for a fresh process (status 3: its device failed; 4: a socket close stuck
# in nng 1.5.2, which a paused or killed neighbour can provoke).
# worker-N.pid names the running process; killed by a signal, it stays down
# until started again.
start_worker() {
  local i=$1
  shift
  rm -f "cluster/worker-$i.pid"
  "$ROOT/deploy/supervise.sh" "cluster/worker-$i.pid" "cluster/worker-$i.log" \
    "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --name "w$i" \
    --threads 1 "${WORKER_NET[@]}" "$@" &
  for _ in $(seq 1 50); do [ -s "cluster/worker-$i.pid" ] && break; sleep 0.02; done
}

# loss_of ADAPTER_DIR: the loss the adapter gives on step 6's batch of the
# shared fixture (JOB_OPTS' batch, sequence, micro-batches and seed).
loss_of() {
  "$REFTOOL" grad --model model --data data.txt --batch 2 --seq 16 --micro 4 --step 6 \
    --seed 11 --adapter "$1" --out "$1.grad.safetensors" | awk '{print $2}'
}

# close_loss WHAT A B: passes when losses A and B agree to 1e-5 (relative),
# the fp32 rounding a CUDA stage may add to a CPU run.
close_loss() {
  if awk -v a="$2" -v b="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-5 * a) }'
  then ok "$1: loss $3 vs $2"
  else bad "$1: loss $3 vs $2"; fi
}

# cuts JOB: the layers where the job's stages 1.. begin, as finetune --cuts
# wants them.
cuts() {
  "$SC" status "$1" --json | python3 -c 'import json,sys
p = sorted(json.load(sys.stdin)["placement"], key=lambda s: s["stage"])
print(",".join(str(s["first_layer"]) for s in p[1:]))'
}

# same_adapter A B: the two PEFT adapters hold bit-identical tensors.
same_adapter() { cmp -s "$1/adapter_model.safetensors" "$2/adapter_model.safetensors"; }
# same_evals JOB WANT: how many of WANT's lines "STEP LOSS" (finetune's eval
# losses, 17 digits: SQLite reads them back to the same doubles) the job's
# metrics hold exactly.
same_evals() {
  local s v same=0
  while read -r s v; do
    same=$((same + $(sqlite3 cluster/splitchain.db "select count(*) from metrics
                     where job_id = $1 and step = $s and eval_loss = $v")))
  done <<< "$2"
  echo "$same"
}
