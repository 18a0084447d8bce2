#!/usr/bin/env bash
# stall_test.sh — a step that stops advancing while every worker still
# heartbeats (a stage paused for less than lost-after, as a host under
# memory pressure or a stuck link would look) is a fault: the coordinator
# interrupts the job after its stall limit, records why (job_stalled), and
# resumes it from its checkpoint; the adapter is the uninterrupted run's.
# Also: `splitchain status` shows the seconds since the last step and the
# limit, automatic (5 s floor for short steps) or --stall-after-ms.
#   stall_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
JOB_OPTS=(--steps 12000 --batch 2 --seq 16 --micro 2 --rank 4 --alpha 8 --targets all
          --lr 3e-3 --min-lr 3e-4 --warmup 2 --weight-decay 0.01 --clip 0.5 --seed 11)
reference ref
URL=$SPLITCHAIN_COORDINATOR
DB=cluster/splitchain.db
num() { "$SC" status "$1" --json | sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p"; }

# --- the automatic limit: 10x the recent step time, at least 5 s
start_coordinator 5000
for i in 1 2; do start_worker $i; done
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 --checkpoint-every 7)
for _ in $(seq 1 600); do s=$(step_of "$job"); [ "${s:-0}" -ge 10 ] && break; sleep 0.05; done
lim=$(num "$job" stall_after_s)
since=$(num "$job" since_step_s)
[ "$lim" = 5 ] && ok "automatic stall limit: 5 s for steps of milliseconds" || bad "stall limit '$lim'"
awk -v s="$since" 'BEGIN { exit !(s != "" && s >= 0 && s < 2) }' && ok "status: last step $since s ago" \
  || bad "since_step_s '$since'"
"$SC" status "$job" | grep -q "last step .* s ago" && ok "status shows the last step's age" \
  || bad "status text: $("$SC" status "$job")"

# --- a fixed limit of 1 s; a stage paused 2.5 s (heartbeats stop for less
# than lost-after, 5 s) stalls the step: interrupted, resumed, same result
kill -TERM "$(cat cluster/coordinator.pid)"
for _ in $(seq 1 100); do kill -0 "$(cat cluster/coordinator.pid)" 2>/dev/null || break; sleep 0.1; done
kill -0 "$(cat cluster/coordinator.pid)" 2>/dev/null && bad "the coordinator did not stop on SIGTERM within 10 s" \
  || ok "the coordinator stopped on SIGTERM"
start_coordinator 5000 --stall-after-ms 1000
for _ in $(seq 1 200); do l=$(num "$job" stall_after_s 2>/dev/null); [ "$l" = 1 ] && break; sleep 0.1; done
[ "$l" = 1 ] && ok "--stall-after-ms 1000: limit 1 s" || bad "stall limit '$l' with --stall-after-ms 1000"
victim=$("$SC" status "$job" --json | sed -n 's/.*"worker_name":"\(w[0-9]\)".*/\1/p' | tail -1)
kill -STOP "$(cat "cluster/worker-${victim#w}.pid")"
sleep 2.5
kill -CONT "$(cat "cluster/worker-${victim#w}.pid")"
msg=$(sqlite3 "$DB" "select message from events where job_id = $job and kind = 'job_stalled'")
[ -n "$msg" ] && ok "stall recorded: $msg" || bad "no job_stalled event"
lost=$(sqlite3 "$DB" "select count(*) from events where kind = 'worker_lost'")
[ "$lost" = 0 ] && ok "no worker was counted lost (the stall, not heartbeats, ended the step)" \
  || bad "$lost worker_lost events"
# Workers registering again with a restarted coordinator refuse nothing on
# the way: their other calls keep the old session meanwhile (answered
# "unknown session", not an event), never the join token.
denied=$(sqlite3 "$DB" "select count(*) from events where kind = 'auth_denied'")
[ "$denied" = 0 ] && ok "no auth_denied events across the coordinator's restart" \
  || bad "$denied auth_denied events: $(sqlite3 "$DB" "select message from events where kind = 'auth_denied'")"
if timeout 300 "$SC" watch "$job" >/dev/null 2>&1; then ok "job finished after the stall"; else bad "job: $(state "$job")"; fi
"$SC" export "$job" --out resumed >/dev/null
same_adapter ref resumed && ok "adapters equal an uninterrupted run's" \
  || bad "adapters differ from an uninterrupted run's"
finish
