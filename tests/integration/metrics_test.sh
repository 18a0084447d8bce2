#!/usr/bin/env bash
# metrics_test.sh — the Prometheus endpoints (--metrics-listen): a job on
# two workers scraped while it runs and after; every scrape passes
# `promtool check metrics`; the figures agree with `splitchain status`;
# a bad --metrics-listen is refused at start; malformed HTTP leaves the
# daemons serving; the Grafana dashboard asks only for exported metrics.
#   metrics_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
URL=$SPLITCHAIN_COORDINATOR
COORD=$BUILD/coordinator/splitchain-coordinator
WORKER=$BUILD/worker/splitchain-worker
command -v promtool >/dev/null || { bad "promtool is missing (deploy/install-deps.sh installs prometheus)"; finish; exit 1; }

# where LOG: the metrics URL a daemon logged at start ("metrics on URL").
where() {
  local i
  for i in $(seq 1 100); do
    u=$(sed -n 's/.*metrics on \(http:[^ ]*\).*/\1/p' "$1" | tail -1)
    [ -n "$u" ] && { echo "$u"; return 0; }
    sleep 0.1
  done
  return 1
}
# scrape URL FILE: GET the metrics into FILE; fails on any HTTP error.
scrape() { curl -sf --max-time 10 -o "$2" "$1"; }
# value FILE METRIC LABEL-MATCH: the first sample of METRIC whose labels
# contain LABEL-MATCH (a literal, e.g. 'job_id="1"').
value() { grep "^$2{" "$1" | grep -F "$3" | head -1 | awk '{print $NF}'; }

start_coordinator 5000 --metrics-listen 127.0.0.1:0
CM=$(where cluster/coordinator.log) && ok "coordinator serves metrics at $CM" \
  || { bad "coordinator logged no metrics address"; finish; exit 1; }
for i in 1 2; do
  "$WORKER" --coordinator "$URL" --name "w$i" --threads 1 --metrics-listen 127.0.0.1:0 \
    "${WORKER_NET[@]}" >>"cluster/worker-$i.log" 2>&1 &
  echo $! > "cluster/worker-$i.pid"
done
WM1=$(where cluster/worker-1.log) && WM2=$(where cluster/worker-2.log) \
  && ok "workers serve metrics at $WM1 and $WM2" || bad "a worker logged no metrics address"
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 2 ] && break
  sleep 0.1
done

STEPS=200
job=$("$SC" submit --model model --data data.txt "${LONG_JOB_OPTS[@]/150/$STEPS}" --stages 2 \
  --eval-split 0.1 --eval-every 10 --name 'metrics "quoted" \job')
for _ in $(seq 1 600); do s=$(step_of "$job"); [ "${s:-0}" -ge 6 ] && break; sleep 0.05; done
scrape "$CM" c1.prom && ok "scraped the coordinator" || bad "coordinator scrape failed"
s1=$(value c1.prom splitchain_job_step "job_id=\"$job\"")
# The second scrape once status says the job has gone past the first's step.
for _ in $(seq 1 600); do s=$(step_of "$job"); [ "${s:-0}" -gt "${s1:-0}" ] && break; sleep 0.05; done
scrape "$CM" c2.prom || bad "second coordinator scrape failed"
s2=$(value c2.prom splitchain_job_step "job_id=\"$job\"")
[ -n "$s1" ] && [ -n "$s2" ] && awk -v a="$s1" -v b="$s2" 'BEGIN { exit !(b > a) }' \
  && ok "the job's step grows between scrapes ($s1 -> $s2)" || bad "step '$s1' -> '$s2'"
grep -q 'job_name="metrics \\"quoted\\" \\\\job"' c1.prom \
  && ok "a job name's quote and backslash are escaped" || bad "job name not escaped"
for w in w1 w2; do
  age=$(value c2.prom splitchain_worker_heartbeat_age_seconds "worker=\"$w\"")
  awk -v a="${age:-x}" 'BEGIN { exit !(a != "x" && a >= 0 && a < 3) }' \
    && ok "$w's heartbeat age is small ($age s)" || bad "$w heartbeat age '$age'"
  up=$(value c2.prom splitchain_worker_up "worker=\"$w\"")
  [ "$up" = 1 ] && ok "$w is up" || bad "$w up '$up'"
done
used=$(grep -c '^splitchain_worker_job_slots_used{.*} 1$' c1.prom)
[ "$used" = 2 ] && ok "both workers use a job slot" || bad "$used workers use a slot"
hops=$(grep -c "^splitchain_job_hop_step_bytes{job_id=\"$job\".*} [1-9][0-9]*$" c1.prom)
[ "$hops" = 2 ] && ok "bytes per hop for both stages" || bad "$hops hop samples"
# A worker's memory comes with its heartbeats (every 200 ms), the first one
# after its segment was made: that one may still be on its way.
for _ in $(seq 1 25); do
  scrape "$CM" mem.prom || true
  mem=$(grep -c '^splitchain_worker_memory_used_bytes{.*} [1-9][0-9]*$' mem.prom)
  [ "$mem" = 2 ] && break
  sleep 0.2
done
[ "$mem" = 2 ] && ok "both workers report memory in use" || bad "$mem workers report memory"
grep -q "^splitchain_job_step{job_id=\"$job\",.*state=\"running\"}" c1.prom \
  && ok "the running job is labelled running" || bad "running job's state label"

"$SC" watch "$job" >/dev/null 2>&1 && ok "job finished" || bad "job: $(state "$job")"
scrape "$CM" c3.prom || bad "final coordinator scrape failed"
want=$("$SC" status "$job" --json | python3 -c 'import json,sys; print(repr(json.load(sys.stdin)["loss"]))')
got=$(value c3.prom splitchain_job_loss "job_id=\"$job\"")
# status --json prints 15 significant digits (cJSON); the database has all 17.
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-14 * abs(a))" \
  "$want" "${got:-nan}" && ok "loss equals splitchain status's ($got vs $want)" \
  || bad "loss $got, status says $want"
exact=$(python3 -c 'import sqlite3, sys
print(repr(sqlite3.connect(sys.argv[1]).execute("select last_loss from jobs where id = ?", (int(sys.argv[2]),)).fetchone()[0]))' \
  cluster/splitchain.db "$job")
python3 -c "import sys; sys.exit(float(sys.argv[1]) != float(sys.argv[2]))" "$exact" "${got:-nan}" \
  && ok "loss equals the database's to the last bit" || bad "loss $got, database $exact"
grep -q "^splitchain_job_step{job_id=\"$job\",.*state=\"done\"} $STEPS$" c3.prom \
  && ok "done job exported at step $STEPS" || bad "done job's step/state"
grep -q "^splitchain_job_eval_loss{job_id=\"$job\"" c3.prom && ok "eval loss exported" \
  || bad "no eval loss"
sub=$(value c3.prom splitchain_rpc_requests_total 'method="Coordinator.Submit"')
[ "$sub" = 1 ] && ok "one Coordinator.Submit counted" || bad "Coordinator.Submit requests '$sub'"

for i in 1 2; do
  u=$([ $i = 1 ] && echo "$WM1" || echo "$WM2")
  scrape "$u" "w$i.prom" || bad "w$i scrape failed"
  for dir in sent received; do
    b=$(grep "^splitchain_worker_dataplane_${dir}_bytes_total{" "w$i.prom" | awk '{s += $NF} END {print s + 0}')
    awk -v b="$b" 'BEGIN { exit !(b > 0) }' && ok "w$i $dir $b data-plane bytes" \
      || bad "w$i $dir bytes '$b'"
  done
  calls=$(value "w$i.prom" splitchain_rpc_requests_total 'method="Worker.Step"')
  [ "${calls:-0}" -ge "$STEPS" ] 2>/dev/null && ok "w$i counted $calls Worker.Step requests" \
    || bad "w$i Worker.Step requests '$calls'"
  st=$(value "w$i.prom" splitchain_worker_steps_total "w$i")
  [ "${st:-0}" -ge 1 ] 2>/dev/null && ok "w$i computed $st steps" || bad "w$i steps '$st'"
  age=$(value "w$i.prom" splitchain_worker_coordinator_heartbeat_age_seconds "w$i")
  awk -v a="${age:-x}" 'BEGIN { exit !(a != "x" && a < 3) }' \
    && ok "w$i's coordinator heartbeat age is small ($age s)" || bad "w$i heartbeat age '$age'"
done
# The workers' link probes (a few seconds after they register) reach the links gauges.
for _ in $(seq 1 60); do
  scrape "$CM" c5.prom && grep -q '^splitchain_link_rtt_seconds{from="w1",to="coordinator"} ' c5.prom && break
  sleep 0.5
done
grep -q '^splitchain_link_bandwidth_bytes_per_second{from="w1",to="coordinator"} [1-9]' c5.prom \
  && ok "measured links exported" || bad "no link from w1 to the coordinator"
for f in c1 c2 c3 c5 w1 w2; do
  if out=$(promtool check metrics < "$f.prom" 2>&1); then ok "promtool check metrics: $f"
  else bad "promtool on $f: $out"; fi
done

# Malformed and unexpected requests: answered or dropped, the daemon lives.
python3 - "$CM" "$WM1" <<'PY' && ok "malformed HTTP answered without harm" || bad "malformed HTTP"
import socket, sys, urllib.parse, urllib.request, urllib.error
for url in sys.argv[1:]:
    u = urllib.parse.urlparse(url)
    for junk in (b"\x00\xff garbage\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n",
                 b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n",
                 b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\nab",
                 b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 20000 + b"\r\n", b""):
        s = socket.create_connection((u.hostname, u.port), timeout=5)
        try:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.recv(4096)
        except OSError:
            pass
        s.close()
    for path, method, want in (("/nope", "GET", 404), ("/metrics", "POST", 405)):
        try:
            urllib.request.urlopen(urllib.request.Request(
                url.replace("/metrics", path), method=method, data=b"" if method == "POST" else None), timeout=5)
            sys.exit(f"{method} {path}: no error")
        except urllib.error.HTTPError as e:
            if e.code != want:
                sys.exit(f"{method} {path}: {e.code}, want {want}")
PY
scrape "$CM" c4.prom && scrape "$WM1" w1b.prom && ok "both still scrape after the junk" \
  || bad "a scrape failed after the junk"
kill -0 "$(cat cluster/coordinator.pid)" && kill -0 "$(cat cluster/worker-1.pid)" \
  && ok "coordinator and worker still run" || bad "a daemon died"

# A bad --metrics-listen is refused at start, before anything is opened.
for v in nonsense 127.0.0.1 127.0.0.1:99999 ':9400' 'host:9x' '[::1:9400' '127.0.0.1:'; do
  "$COORD" --db bad.db --listen tcp://127.0.0.1:0 --metrics-listen "$v" >bad.log 2>&1
  rc=$?
  [ $rc = 2 ] && grep -q "metrics-listen expects HOST:PORT" bad.log \
    && ok "coordinator refuses --metrics-listen '$v'" || bad "coordinator '$v': rc $rc: $(cat bad.log)"
  "$WORKER" --coordinator "$URL" --metrics-listen "$v" >bad.log 2>&1
  rc=$?
  [ $rc = 2 ] && grep -q "metrics-listen expects HOST:PORT" bad.log \
    && ok "worker refuses --metrics-listen '$v'" || bad "worker '$v': rc $rc: $(cat bad.log)"
done
[ ! -e bad.db ] && ok "no database made by a refused start" || bad "bad.db was made"
taken=${CM#http://}; taken=${taken%/metrics}
timeout 20 "$COORD" --db busy.db --listen tcp://127.0.0.1:0 --insecure --metrics-listen "$taken" \
  >busy.log 2>&1
rc=$?
[ $rc = 1 ] && grep -q "cannot serve metrics there" busy.log \
  && ok "a port in use is refused ($(tail -1 busy.log))" || bad "port in use: rc $rc: $(cat busy.log)"

# Every metric the Grafana dashboard queries is one the daemons export.
python3 - "$ROOT/deploy/grafana/splitchain.json" c3.prom w1.prom <<'PY' \
  && ok "the dashboard's queries use exported metrics only" || bad "dashboard metrics"
import json, re, sys
dash = json.load(open(sys.argv[1]))
exported = set()
for f in sys.argv[2:]:
    for line in open(f):
        if line.startswith("# TYPE "):
            exported.add(line.split()[2])
exprs, strings = [], []  # the panels' queries; every string (variables' queries too)
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "expr" and isinstance(v, str):
                exprs.append(v)
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
    elif isinstance(o, str):
        strings.append(o)
walk(dash)
if len(exprs) < 6:
    sys.exit(f"only {len(exprs)} queries in the dashboard")
used = {m for e in strings for m in re.findall(r"\bsplitchain_[a-z0-9_]+", e)}
missing = sorted(used - exported)
if missing:
    sys.exit(f"not exported: {missing}")
for want in ("splitchain_job_loss", "splitchain_job_eval_loss", "splitchain_job_tokens_per_second",
             "splitchain_job_hop_step_bytes", "splitchain_worker_heartbeat_age_seconds",
             "splitchain_worker_memory_used_bytes"):
    if want not in used:
        sys.exit(f"the dashboard shows no {want}")
PY
finish
