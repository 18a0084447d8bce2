#!/usr/bin/env bash
# links_test.sh — workers measure the links between them and to the
# coordinator at register; `splitchain links --json`, the links table and
# the v_links view show every pair with rtt_ms > 0 and mbit_s > 0; a worker
# that joins later is measured by the others, and one started with
# --probe-every-s 1 measures again; bad echoes and malformed reports are
# refused or ignored (tests/links_poke.c), never stored; the planner's
# reason names the measured links.
#   links_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
DB=cluster/splitchain.db
q() { sqlite3 "$DB" "$1"; }
# jq-less JSON: the CLI's array, queried with SQLite's json functions.
jq_count() { sqlite3 :memory: "select count(*) from json_each(readfile('$1')) where $2"; }

"$ROOT/deploy/launch.sh" start cluster 3 >/dev/null || { bad "cluster start"; finish; exit 1; }

# 3 workers: 6 worker-to-worker links and 3 to the coordinator.
for _ in $(seq 1 150); do
  "$SC" links --json > links.json 2>/dev/null
  [ "$(jq_count links.json "json_extract(value, '\$.rtt_ms') > 0 and json_extract(value, '\$.mbit_s') > 0")" -ge 9 ] && break
  sleep 0.2
done
pairs=$(jq_count links.json "json_extract(value, '\$.from') like 'worker-%' and
  json_extract(value, '\$.to') like 'worker-%' and json_extract(value, '\$.from') <>
  json_extract(value, '\$.to') and json_extract(value, '\$.rtt_ms') > 0 and
  json_extract(value, '\$.mbit_s') > 0")
[ "$pairs" = 6 ] && ok "links --json: all 6 worker pairs with rtt_ms > 0 and mbit_s > 0" \
  || bad "links --json: $pairs worker pairs: $(cat links.json)"
tocoord=$(jq_count links.json "json_extract(value, '\$.to') = 'coordinator' and
  json_extract(value, '\$.to_worker') = 0 and json_extract(value, '\$.rtt_ms') > 0 and
  json_extract(value, '\$.mbit_s') > 0")
[ "$tocoord" = 3 ] && ok "links --json: every worker measured the coordinator" \
  || bad "links to the coordinator: $tocoord"
"$SC" links > links.txt
head -1 links.txt | grep -q "RTT MS" && [ "$(grep -c '^worker-' links.txt)" = 9 ] \
  && ok "links prints a table of 9 links" || bad "links table: $(cat links.txt)"

# The table and the view, read with sqlite3.
n=$(q "select count(*) from links where rtt_ms > 0 and mbit_s > 0 and measured_ms > 0")
[ "$n" = 9 ] && ok "links table: 9 rows" || bad "links table rows: $n"
n=$(q "select count(*) from links where to_worker = 0 and from_worker in (select id from workers)")
[ "$n" = 3 ] && ok "links table: the coordinator is worker 0" || bad "links to worker 0: $n"
n=$(q "select count(*) from v_links where from_name like 'worker-%' and to_name like 'worker-%'
       and rtt_ms > 0 and mbit_s > 0 and age_s >= -1 and age_s < 120")
[ "$n" = 6 ] && ok "v_links: worker pairs by name, with their age" || bad "v_links pairs: $n"
n=$(q "select count(*) from v_links where to_name = 'coordinator'")
[ "$n" = 3 ] && ok "v_links: names the coordinator" || bad "v_links to the coordinator: $n"

# Bad input: refused, or answered and not stored.
id=$("$SC" workers --json | sed 's/},{/}\n{/g' | grep '"name":"worker-1"' |
     sed -n 's/.*"worker":\([0-9]*\).*/\1/p')
addr=$("$SC" workers --json | sed 's/},{/}\n{/g' | grep '"name":"worker-1"' |
       sed -n 's/.*"address":"\([^"]*\)".*/\1/p')
if "$BUILD/tests/links_poke" "$SPLITCHAIN_COORDINATOR" "$addr" "$id" worker-1 worker-2 > poke.txt
then ok "links_poke: bad echoes refused, malformed reports answered"
else bad "links_poke: $(grep FAIL poke.txt)"; fi
n=$(q "select count(*) from links where rtt_ms = 123.456 or mbit_s = 123.456 or rtt_ms <= 0
       or mbit_s <= 0 or from_worker = to_worker or measured_ms <= 0")
[ "$n" = 0 ] && ok "no malformed measurement stored" || bad "$n malformed links stored"
n=$(q "select count(*) from links")
[ "$n" = 9 ] && ok "still 9 links" || bad "links after the poke: $n"
n=$(grep -c "reported a link to .* ignored" cluster/coordinator.log)
[ "$n" -ge 10 ] && ok "each malformed measurement logged ($n)" || bad "ignored lines logged: $n"

# A worker that joins is measured by the others; with --probe-every-s 1 it
# measures its own links again.
OMP_NUM_THREADS=1 "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" \
  --name worker-4 --threads 1 --probe-every-s 1 "${WORKER_NET[@]}" \
  >>cluster/worker-4.log 2>&1 &
echo $! > cluster/worker-4.pid
for _ in $(seq 1 100); do
  n=$(q "select count(*) from v_links where to_name = 'worker-4'")
  m=$(q "select count(*) from v_links where from_name = 'worker-4'")
  [ "$n" = 3 ] && [ "$m" = 4 ] && break
  sleep 0.2
done
[ "$n" = 3 ] && ok "a worker that joins is measured by the 3 others" || bad "links to worker-4: $n"
[ "$m" = 4 ] && ok "the joining worker measured its 4 links" || bad "links from worker-4: $m"
t1=$(q "select measured_ms from v_links where from_name = 'worker-4' and to_name = 'coordinator'")
# Measured again within a few probe periods (each report may wait out a
# busy coordinator: up to 10 s here, a loaded machine's margin).
for _ in $(seq 1 50); do
  sleep 0.2
  t2=$(q "select measured_ms from v_links where from_name = 'worker-4' and to_name = 'coordinator'")
  [ -n "$t1" ] && [ "${t2:-0}" -gt "$t1" ] && break
done
[ -n "$t1" ] && [ "${t2:-0}" -gt "$t1" ] && ok "--probe-every-s 1 measures again ($t1 -> $t2)" \
  || bad "no new measurement: $t1 -> $t2"
t3=$(q "select measured_ms from v_links where from_name = 'worker-1' and to_name = 'coordinator'")
sleep 1
t4=$(q "select measured_ms from v_links where from_name = 'worker-1' and to_name = 'coordinator'")
[ "$t3" = "$t4" ] && ok "the default interval does not measure again within seconds" \
  || bad "worker-1 measured again: $t3 -> $t4"

# The planner counts the links: the placement's reason says which.
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 3 --name links)
if "$SC" watch "$job" >/dev/null; then
  reason=$(q "select reason from placements where job_id = $job and stage = 0")
  echo "$reason" | grep -q "4 of 4 link directions measured" &&
    echo "$reason" | grep -q "MB per hop per step" && ok "placement reason names the links" \
    || bad "placement reason: $reason"
  # 3 one-thread workers on this machine: their rates are shared when it
  # has fewer than 3 CPUs, else taken as measured (nproc without the
  # OpenMP variables that it would obey: the CPUs a worker may run on).
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  if [ "$cpus" -lt 3 ]; then
    echo "$reason" | grep -q "threads of the chain's CPU workers share its machine's $cpus CPUs" \
      && ok "placement reason: the workers share $cpus CPUs" || bad "no sharing noted: $reason"
  else
    echo "$reason" | grep -q "share its machine" && bad "sharing noted with $cpus CPUs: $reason" \
      || ok "placement reason: $cpus CPUs, no sharing"
  fi
else
  bad "job $job ended $(state "$job")"
fi
finish
