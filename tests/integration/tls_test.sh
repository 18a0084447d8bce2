#!/usr/bin/env bash
# tls_test.sh — transport security: a job over mutual TLS on 3 workers
# trains bit-identically to one process; a worker whose certificate another
# CA signed, and a plaintext client, are refused at the handshake (recorded
# as events); daemons refuse plaintext or certificate-less TLS addresses
# unless --insecure; a data-plane dialer with the right hello but a wrong
# secret is closed before any tensor.
#   tls_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
make_fixture
reference ref
DB=cluster/splitchain.db
COORD=$BUILD/coordinator/splitchain-coordinator
WORKER=$BUILD/worker/splitchain-worker
sql() { sqlite3 -cmd '.timeout 5000' "$DB" "$1"; }


# --- deploy/certs.sh: keys 0600, the CA kept, the names asked for, usage errors
[ "$(stat -c %a "$TLS_DIR/ca.key")" = 600 ] && [ "$(stat -c %a "$TLS_DIR/worker.key")" = 600 ] &&
  ok "certs.sh: keys are mode 0600" || bad "certs.sh: key modes $(stat -c %a "$TLS_DIR"/*.key)"
ca_before=$(sha256sum < "$TLS_DIR/ca.pem")
bash "$ROOT/deploy/certs.sh" "$TLS_DIR" edge=host1.example,10.0.0.5 >/dev/null
san=$(openssl x509 -in "$TLS_DIR/edge.pem" -noout -ext subjectAltName)
[ "$(sha256sum < "$TLS_DIR/ca.pem")" = "$ca_before" ] &&
  openssl verify -CAfile "$TLS_DIR/ca.pem" "$TLS_DIR/edge.pem" >/dev/null &&
  grep -q "DNS:edge" <<<"$san" && grep -q "DNS:host1.example" <<<"$san" &&
  grep -q "IP Address:10.0.0.5" <<<"$san" && grep -q "IP Address:127.0.0.1" <<<"$san" &&
  ok "certs.sh: the CA kept, extra names and addresses in the SANs" || bad "certs.sh: $san"
bash "$ROOT/deploy/certs.sh" "$TLS_DIR" >/dev/null 2>err.txt; rc=$?
[ $rc -eq 2 ] && grep -q "usage\|certs.sh DIR NAME" err.txt && ok "certs.sh without a name: usage, exit 2" ||
  bad "certs.sh without a name: exit $rc: $(cat err.txt)"
bash "$ROOT/deploy/certs.sh" "$TLS_DIR" "../evil" >/dev/null 2>err.txt; rc=$?
[ $rc -eq 2 ] && grep -q "bad party name" err.txt && ok "certs.sh: a bad name refused" ||
  bad "certs.sh ../evil: exit $rc: $(cat err.txt)"

# --- Refused at start: plaintext without --insecure, TLS without certificates, bad files
p=$((SC_PORT + 5))
"$COORD" --listen "tcp://127.0.0.1:$p" --db start.db >/dev/null 2>err.txt; rc=$?
[ $rc -ne 0 ] && grep -q -- "is plaintext: use tls+tcp://.*--insecure" err.txt &&
  ok "coordinator on tcp:// without --insecure: exit $rc, names the fix" ||
  bad "coordinator on tcp://: exit $rc: $(cat err.txt)"
"$WORKER" --coordinator "tcp://127.0.0.1:$p" >/dev/null 2>err.txt; rc=$?
[ $rc -ne 0 ] && grep -q -- "--coordinator tcp://127.0.0.1:$p is plaintext" err.txt &&
  ok "worker dialing tcp:// without --insecure: exit $rc" ||
  bad "worker on tcp://: exit $rc: $(cat err.txt)"
"$COORD" --listen "tls+tcp://127.0.0.1:$p" --db start.db >/dev/null 2>err.txt; rc=$?
[ $rc -ne 0 ] && grep -q -- "TLS address but no certificate was given: pass --tls-cert" err.txt &&
  ok "tls+tcp:// without certificates: exit $rc" || bad "tls+tcp:// without certs: $(cat err.txt)"
printf 'garbage\n' > junk.pem
"$COORD" --listen "tls+tcp://127.0.0.1:$p" --db start.db --tls-cert junk.pem \
  --tls-key "$TLS_DIR/coordinator.key" --tls-ca "$TLS_DIR/ca.pem" >/dev/null 2>err.txt; rc=$?
[ $rc -ne 0 ] && grep -q "certificate file junk.pem is not a PEM certificate" err.txt &&
  ok "corrupt certificate: exit $rc, names the file" || bad "corrupt certificate: $(cat err.txt)"
"$WORKER" --coordinator "tls+tcp://127.0.0.1:$p" --tls-cert "$TLS_DIR/worker.pem" \
  --tls-key "$TLS_DIR/cli.key" --tls-ca "$TLS_DIR/ca.pem" >/dev/null 2>err.txt; rc=$?
[ $rc -ne 0 ] && grep -q "cli.key does not belong to certificate" err.txt &&
  ok "worker with another party's key: exit $rc" || bad "mismatched key: $(cat err.txt)"
"$WORKER" --coordinator "tls+tcp://127.0.0.1:$p" --tls-cert "$TLS_DIR/worker.pem" \
  --tls-key "$TLS_DIR/worker.key" --tls-ca nowhere.pem >/dev/null 2>err.txt; rc=$?
[ $rc -ne 0 ] && grep -q "cannot read CA file nowhere.pem" err.txt &&
  ok "unreadable CA file: exit $rc, names the file" || bad "missing CA: $(cat err.txt)"

# --- --insecure: a warning at start and at every register, recorded as an event
mkdir -p plain
"$COORD" --listen "tcp://127.0.0.1:$p" --db plain/p.db --insecure >plain/coord.log 2>&1 &
pc=$!
"$WORKER" --coordinator "tcp://127.0.0.1:$p" --name plainw --threads 1 --insecure \
  >plain/worker.log 2>&1 &
pw=$!
for _ in $(seq 1 100); do
  [ "$(sqlite3 -cmd '.timeout 5000' plain/p.db "select count(*) from events
       where kind = 'plaintext_register'" 2>/dev/null)" = 1 ] && break
  sleep 0.1
done
grep -q "warn.*--insecure: plaintext" plain/coord.log && grep -q "warn.*--insecure: plaintext" plain/worker.log &&
  ok "--insecure: both daemons warn at start" || bad "--insecure: no warning at start"
[ "$(sqlite3 -cmd '.timeout 5000' plain/p.db "select count(*) from events
     where kind = 'plaintext_register' and message like 'worker plainw registered over plaintext%'")" = 1 ] &&
  grep -q "warn.*plainw registered over plaintext" plain/coord.log &&
  ok "--insecure: the register is warned of and recorded" || bad "--insecure: register not recorded"
kill $pw $pc; wait $pw $pc 2>/dev/null

# --- A job over TLS on 3 workers: bit-identical to one process
"$ROOT/deploy/launch.sh" start cluster 3 >/dev/null || { bad "cluster start"; finish; exit 1; }
[ "$("$SC" workers --json | grep -o '"address":"tls+tcp://' | wc -l)" = 3 ] &&
  ok "3 workers registered over TLS" || bad "workers: $("$SC" workers)"
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 3 --name tls)
if "$SC" watch "$job" >/dev/null && "$SC" export "$job" --out out-tls >/dev/null &&
   same_adapter ref out-tls; then ok "3 stages over TLS: bit-identical to one process"
else bad "3 stages over TLS: job $job $(state "$job"), adapters differ or missing"; fi

# --- A worker whose certificate another CA signed: refused at the handshake
bash "$ROOT/deploy/certs.sh" rogue-ca rogue >/dev/null
before=$(sql "select count(*) from events where kind = 'tls_refused'")
"$WORKER" --coordinator "$SPLITCHAIN_COORDINATOR" --name rogue --threads 1 \
  --tls-cert rogue-ca/rogue.pem --tls-key rogue-ca/rogue.key --tls-ca rogue-ca/ca.pem \
  >rogue.log 2>&1 &
rogue=$!
for _ in $(seq 1 50); do
  [ "$(sql "select count(*) from events where kind = 'tls_refused'")" -gt "$before" ] && break
  sleep 0.1
done
sleep 1
[ "$(sql "select count(*) from events where kind = 'tls_refused'
          and message like '%refused at the TLS handshake%'")" -gt "$before" ] &&
  ok "foreign CA's worker: refusal recorded (tls_refused)" || bad "foreign worker: no event"
[ "$(sql "select count(*) from workers where name = 'rogue'")" = 0 ] &&
  ok "foreign CA's worker never registered" || bad "the rogue worker registered"
kill $rogue 2>/dev/null; wait $rogue 2>/dev/null

# --- A plaintext client on the TLS port; the CLI without certificates
before=$(sql "select count(*) from events where kind = 'tls_refused'")
out=$("$SC" workers --coordinator "tcp://127.0.0.1:$SC_PORT" --timeout-ms 1500 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "a TLS coordinator needs a tls+tcp:// address" <<<"$out" &&
  ok "plaintext CLI on the TLS port: exit 1, says why" || bad "plaintext CLI: exit $rc: $out"
for _ in $(seq 1 30); do
  [ "$(sql "select count(*) from events where kind = 'tls_refused'")" -gt "$before" ] && break
  sleep 0.1
done
[ "$(sql "select count(*) from events where kind = 'tls_refused'")" -gt "$before" ] &&
  ok "plaintext client: refusal recorded" || bad "plaintext client: no tls_refused event"
out=$(env -u SPLITCHAIN_TLS_CERT -u SPLITCHAIN_TLS_KEY -u SPLITCHAIN_TLS_CA "$SC" workers 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "is a TLS address: give --tls-cert FILE" <<<"$out" &&
  ok "CLI without certificates: exit 1, says which" || bad "CLI without certs: exit $rc: $out"
out=$(env -u SPLITCHAIN_TLS_CERT -u SPLITCHAIN_TLS_KEY -u SPLITCHAIN_TLS_CA "$SC" workers \
      --tls-cert "$TLS_DIR/cli.pem" --tls-key "$TLS_DIR/cli.key" --tls-ca "$TLS_DIR/ca.pem" 2>&1)
grep -q "worker-1" <<<"$out" && ok "CLI with --tls-* flags" || bad "CLI --tls-* flags: $out"

# --- A data-plane dialer with the right hello but a wrong secret. pair0
# holds one connection per hop, so the dialer takes stage 1's listener while
# stage 0's worker (paused) cannot dial yet; stage 1's first receive screens
# it, and stage 0, resumed, then connects.
kill -STOP "$(cat cluster/worker-1.pid)"
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 3 \
      --workers worker-1,worker-2,worker-3 --name secret)
addr=$(sql "select data_addr from workers where name = 'worker-2'")
for _ in $(seq 1 50); do
  [ "$(sql "select count(*) from placements where job_id = $job")" = 3 ] && break
  sleep 0.1
done
"$BUILD/tests/stale_dialer" "$addr" "$job" 1 0 6 3000 "$(printf '%064d' 7)" >/dev/null &
stale=$!
sleep 1
kill -CONT "$(cat cluster/worker-1.pid)"
wrong="kind = 'dataplane_refused' and message like '%placement 1 stage 0 with a wrong secret%'"
for _ in $(seq 1 100); do
  [ "$(sql "select count(*) from events where $wrong")" -ge 1 ] && break
  sleep 0.1
done
[ "$(sql "select count(*) from events where $wrong")" -ge 1 ] &&
  ok "wrong data-plane secret: closed at its hello, recorded" ||
  bad "wrong secret: no refusal recorded"
wait $stale
if "$SC" watch "$job" >/dev/null && "$SC" export "$job" --out out-secret >/dev/null &&
   same_adapter ref out-secret; then ok "that job still trains bit-identically"
else bad "job $job after the foreign dialer: $(state "$job")"; fi
finish
