#!/usr/bin/env bash
# dbfull_test.sh — the coordinator's database on a filesystem that fills up
# while a job runs. The database lives on a small tmpfs mounted for the test
# (where mounting is refused, or DBFULL_NO_MOUNT=1: the coordinator's file
# size limit is lowered to its database's size with prlimit, SIGXFSZ
# ignored, so that its writes fail with EFBIG instead). After the job's
# first checkpoints the filesystem is filled to the last byte (or the limit
# lowered). Then:
#   - the coordinator logs the failed writes and keeps serving reads:
#     status, jobs, workers and the export of the last checkpoint;
#   - no committed checkpoint is lost or changed: the adapter exported just
#     after the disk filled is exported identically while it stays full, the
#     newest checkpoint's step does not move and PRAGMA integrity_check is ok;
#   - once space is freed (the limit lifted) the job checkpoints again, the failure is recorded
#     as an event, the job finishes, and its adapter is bit-identical to the
#     single-process run's.
#   dbfull_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
JOB_OPTS=(--steps 120 --batch 2 --seq 16 --micro 2 --rank 4 --alpha 8 --targets all
          --lr 3e-3 --min-lr 3e-4 --warmup 2 --weight-decay 0.01 --clip 0.5 --seed 11)
EVERY=10
"$SC" finetune --model model --data data.txt "${JOB_OPTS[@]}" --threads 1 --quiet --out ref

FS=$WORK/fs
mkdir -p "$FS" cluster
MOUNTED=0
if [ "${DBFULL_NO_MOUNT:-0}" != 1 ] && mount -t tmpfs -o size=16m tmpfs "$FS" 2>/dev/null; then
  MOUNTED=1
  ok "database on a 16 MiB tmpfs"
else
  # Not root, or a container that refuses mounts: the same failure by
  # another way, a file-size limit on the running coordinator.
  echo "no tmpfs: the coordinator's file-size limit (prlimit) makes its writes fail"
fi
cleanup() {
  "$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
  [ "$MOUNTED" -eq 1 ] && umount "$FS" 2>/dev/null
}
trap cleanup EXIT
DB=$FS/splitchain.db
LOG=cluster/coordinator.log
# This database is not lib.sh's: its own admin user for the CLI.
SPLITCHAIN_TOKEN=$("$BUILD/coordinator/splitchain-coordinator" --db "$DB" users add admin --admin) ||
  { bad "admin user"; finish; exit 1; }
(
  trap '' XFSZ # ignored across exec: a write past the size limit fails with EFBIG
  exec "$BUILD/coordinator/splitchain-coordinator" --listen "$SPLITCHAIN_COORDINATOR" \
    --db "$DB" --heartbeat-ms 200 --lost-after-ms 3000 --keep-checkpoints 2 "${COORD_TLS[@]}" \
    --model-root "$SC_MODEL_ROOT" --data-root "$SC_DATA_ROOT"
) >>"$LOG" 2>&1 &
echo $! > cluster/coordinator.pid
for i in 1 2; do
  "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --name "w$i" \
    --threads 1 "${WORKER_NET[@]}" >>"cluster/worker-$i.log" 2>&1 &
  echo $! > "cluster/worker-$i.pid"
done
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 2 ] && break
  sleep 0.1
done
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 --checkpoint-every $EVERY)
[ -n "$job" ] || { bad "submit"; finish; exit; }

sql() { sqlite3 -readonly -cmd '.timeout 5000' "$DB" "$1"; }
ckpt_step() { sql "select coalesce(max(step), 0) from checkpoints where job_id = $job"; }
for _ in $(seq 1 600); do [ "$(ckpt_step)" -ge $((2 * EVERY)) ] && break; sleep 0.1; done
[ "$(ckpt_step)" -ge $((2 * EVERY)) ] && ok "two checkpoints before the disk fills" ||
  bad "no checkpoint of step $((2 * EVERY)) within 60 s"

# --- fill the filesystem (or the coordinator's file-size limit) ----------
pid=$(cat cluster/coordinator.pid)
if [ "$MOUNTED" -eq 1 ]; then
  dd if=/dev/zero of="$FS/filler" bs=4k 2>/dev/null
  avail=$(df --output=avail -k "$FS" | tail -1 | tr -d ' ')
  [ "$avail" -eq 0 ] && ok "the filesystem is full" || bad "the filesystem still has ${avail} KiB"
else
  size=$(stat -c %s "$DB")
  prlimit --pid "$pid" --fsize="$size:unlimited" &&
    ok "the coordinator's files are limited to $size bytes" || bad "prlimit"
fi
full_at=$(ckpt_step)
# The export just after the disk filled: what every later export must give.
"$SC" export "$job" --out full1 >/dev/null && ok "export while full (step $full_at)" ||
  bad "export while full"
full_at=$(ckpt_step)

# --- while full: errors logged, reads served, nothing committed lost ------
for _ in $(seq 1 300); do
  grep -qiE "database or disk is full|disk I/O error|too large" "$LOG" && break
  sleep 0.1
done
if grep -qiE "database or disk is full|disk I/O error|too large" "$LOG"; then
  ok "the coordinator logs the failed writes: $(grep -iE -m1 "database or disk is full|disk I/O error|too large" "$LOG" | cut -c1-160)"
else
  bad "no failed write in the coordinator's log"
fi
# Let the job try to checkpoint a few times while full.
sleep 8
"$SC" status "$job" >/dev/null && ok "status answers while full" || bad "status while full"
"$SC" jobs >/dev/null && ok "jobs answers while full" || bad "jobs while full"
"$SC" workers >/dev/null && ok "workers answers while full" || bad "workers while full"
if "$SC" export "$job" --out full2 >/dev/null && same_adapter full1 full2; then
  ok "the last checkpoint exports identically while full"
else
  bad "the export while full changed or failed"
fi
[ "$(ckpt_step)" = "$full_at" ] && ok "the newest checkpoint is still step $full_at" ||
  bad "the newest checkpoint moved from $full_at to $(ckpt_step) on a full disk"
ic=$(sql "pragma integrity_check")
[ "$ic" = "ok" ] && ok "integrity_check ok while full" || bad "integrity_check: $ic"
n=$(sql "select count(*) from checkpoints where job_id = $job")
[ "${n:-0}" -ge 1 ] && ok "$n checkpoint rows intact" || bad "no checkpoint row left"
kill -0 "$pid" 2>/dev/null && ok "the coordinator is still running" || bad "the coordinator died"

# --- space returns: checkpoints resume, the job finishes -----------------
if [ "$MOUNTED" -eq 1 ]; then rm -f "$FS/filler"; else prlimit --pid "$pid" --fsize=unlimited; fi
for _ in $(seq 1 600); do [ "$(ckpt_step)" -gt "$full_at" ] && break; sleep 0.1; done
[ "$(ckpt_step)" -gt "$full_at" ] && ok "checkpoints resume once space is freed (step $(ckpt_step))" ||
  bad "no checkpoint after space was freed"
wait_state "$job" done 300 && ok "the job finishes" || bad "job state $(state "$job")"
ev=$(sql "select count(*) from events where job_id = $job and kind = 'db_write_failed'")
[ "${ev:-0}" -ge 1 ] && ok "the refused writes are recorded as an event once space returns" ||
  bad "no db_write_failed event after space returned"
if "$SC" export "$job" --out final >/dev/null && same_adapter ref final; then
  ok "the final adapter is bit-identical to the single-process run's"
else
  bad "the final adapter differs from the single-process run's"
fi
finish
