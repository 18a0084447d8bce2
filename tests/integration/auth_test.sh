#!/usr/bin/env bash
# auth_test.sh — only the cluster's own parties get in (docs/security.md):
# the join token, users and their tokens, job owners, the path roots, the
# limits, and workers that take control only from their coordinator. Each
# refusal must come with the right error and be recorded as an event; an
# authorised job still trains bit-identically to one process.
#   auth_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
COORD=$BUILD/coordinator/splitchain-coordinator
POKE=$BUILD/tests/auth_poke
DB=cluster/splitchain.db
make_fixture
reference ref >/dev/null
q() { sqlite3 "$DB" "$1"; }
events() { q "select count(*) from events where kind = 'auth_denied' and message like '$1'"; }
# refused WHAT WANT CMD...: CMD exits 1 and says WANT.
refused() {
  local what=$1 want=$2 out rc
  shift 2
  out=$("$@" 2>&1); rc=$?
  if [ $rc -eq 1 ] && grep -q -- "$want" <<< "$out"; then ok "$what"
  else bad "$what: exit $rc: $out"; fi
}

# --- the coordinator's own start: a join token, or --insecure.
refused "no --join-token-file and no --insecure: refuses to start" "--insecure" \
  sh -c "env -u SPLITCHAIN_JOIN_TOKEN_FILE '$COORD' --listen ipc://$WORK/x.ipc --db x.db; [ \$? -eq 2 ] && exit 1"
env -u SPLITCHAIN_JOIN_TOKEN_FILE "$COORD" --listen tcp://127.0.0.1:0 --db x.db --insecure \
  > insecure.log 2>&1 &
pid=$!
for _ in $(seq 1 50); do grep -q "any host" insecure.log && break; sleep 0.1; done
grep -q "ANY host" insecure.log && ok "--insecure: starts and says that any host may join" \
  || bad "--insecure: $(cat insecure.log)"
kill "$pid"; wait "$pid" 2>/dev/null

# --- users: add prints a token once, list never shows one, revoke.
alice=$("$COORD" --db "$DB" users add alice 2>/dev/null)
bob=$("$COORD" --db "$DB" users add bob 2>/dev/null)
flooder=$("$COORD" --db "$DB" users add flooder 2>/dev/null)
[[ $alice == sct_* ]] && [ ${#alice} -eq 68 ] && [ "$alice" != "$bob" ] \
  && ok "users add prints a new sct_ token" || bad "users add printed '$alice'"
list=$("$COORD" --db "$DB" users list)
grep -q "^[0-9]* *alice *no " <<< "$list" && grep -q "^[0-9]* *admin *yes " <<< "$list" &&
  ! grep -q "sct_" <<< "$list" && ok "users list: names and admin flags, no tokens" \
  || bad "users list: $list"
q "select token_sha256 from users" | grep -q sct_ && bad "a token stored in clear" \
  || ok "only the tokens' hashes are stored"
refused "users add of a taken name" "exists already" "$COORD" --db "$DB" users add alice
refused "users add of a bad name" "only letters" "$COORD" --db "$DB" users add "a/b"

start_coordinator 5000 --max-jobs-per-user 2 --rate-limit 20 --rate-burst 40
for i in 1 2; do
  "$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --name "w$i" \
    --threads 1 --join-token-file "$SPLITCHAIN_JOIN_TOKEN_FILE" "${WORKER_NET[@]}" \
    >> "cluster/worker-$i.log" 2>&1 &
  echo $! > "cluster/worker-$i.pid"
done
for _ in $(seq 1 100); do
  [ "$("$SC" workers --json 2>/dev/null | grep -o '"state":"idle"' | wc -l)" -ge 2 ] && break
  sleep 0.2
done

# --- workers: a wrong or missing join token is refused at Register.
echo "not-the-token" > wrong.token
"$BUILD/worker/splitchain-worker" --coordinator "$SPLITCHAIN_COORDINATOR" --name intruder \
  --threads 1 --join-token-file wrong.token "${WORKER_NET[@]}" > intruder.log 2>&1 &
p1=$!
env -u SPLITCHAIN_JOIN_TOKEN_FILE "$BUILD/worker/splitchain-worker" --name stranger \
  --coordinator "$SPLITCHAIN_COORDINATOR" --threads 1 "${WORKER_NET[@]}" > stranger.log 2>&1 &
p2=$!
for _ in $(seq 1 50); do
  [ "$(events '%Register%wrong join token%')" -ge 1 ] && [ "$(events '%Register%no join token%')" -ge 1 ] && break
  sleep 0.2
done
"$SC" workers | grep -qE "intruder|stranger" && bad "a worker without the join token joined" \
  || ok "workers without the join token are not registered"
grep -q "UNAUTHENTICATED: a wrong join token" intruder.log && ok "a wrong join token: UNAUTHENTICATED" \
  || bad "intruder: $(tail -2 intruder.log)"
grep -q "UNAUTHENTICATED: no join token" stranger.log && ok "no join token: UNAUTHENTICATED" \
  || bad "stranger: $(tail -2 stranger.log)"
[ "$(events '%Register%wrong join token%')" -ge 1 ] && [ "$(events '%Register%no join token%')" -ge 1 ] \
  && ok "both refusals are events" || bad "join refusals not recorded"
kill "$p1" "$p2"; wait "$p1" "$p2" 2>/dev/null

# --- the CLI's token: none, a made-up one, a file others may read.
mkdir -p home/.config/splitchain
refused "no token: not authorised" "not authorised: no API token" \
  env -u SPLITCHAIN_TOKEN HOME="$WORK/home" "$SC" jobs
refused "a made-up token: not authorised" "not authorised: the API token is unknown or revoked" \
  env SPLITCHAIN_TOKEN=sct_0123 "$SC" jobs
echo "$alice" > home/.config/splitchain/token
chmod 644 home/.config/splitchain/token
refused "a token file others may read is refused" "chmod 600" \
  env -u SPLITCHAIN_TOKEN HOME="$WORK/home" "$SC" jobs
chmod 600 home/.config/splitchain/token
env -u SPLITCHAIN_TOKEN HOME="$WORK/home" "$SC" jobs >/dev/null 2>&1 \
  && ok "a token file of mode 600 is used" || bad "the token file of mode 600 was not used"
[ "$(events '%no API token%')" -ge 1 ] && [ "$(events '%unknown or revoked%')" -ge 1 ] \
  && ok "token refusals are events" || bad "token refusals not recorded"

# --- alice's job trains bit-identically to one process.
export SPLITCHAIN_TOKEN=$alice
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 --name alices)
if "$SC" watch "$job" >/dev/null && "$SC" export "$job" --out alice-adapter >/dev/null &&
   same_adapter ref alice-adapter; then ok "alice's 2-stage job: bit-identical to one process"
else bad "alice's job $job: $(state "$job")"; fi
[ "$(q "select u.name from jobs j join users u on u.id = j.owner_id where j.id = $job")" = alice ] \
  && ok "the job's owner is alice" || bad "job $job's owner"

# --- bob may not touch it.
export SPLITCHAIN_TOKEN=$bob
for cmd in status cancel "export --out bob-adapter" watch; do
  # shellcheck disable=SC2086
  refused "bob: ${cmd%% *} of alice's job is refused" "not authorised: job $job is not yours" \
    "$SC" $cmd "$job"
done
refused "bob: generate with alice's job is refused" "not authorised" \
  "$SC" generate --job "$job" --prompt-ids 1,2 --max-new-tokens 2
"$SC" jobs | grep -q alices && bad "bob's jobs list shows alice's job" || ok "bob's jobs: not alice's"
SPLITCHAIN_TOKEN=$alice "$SC" jobs | grep -q alices && ok "alice's jobs: hers" || bad "alice's jobs list"
SPLITCHAIN_TOKEN=$(cat cluster/admin.token) "$SC" status "$job" >/dev/null \
  && ok "an admin may see any job" || bad "the admin was refused job $job"
[ "$(events "%bob was refused job $job%")" -ge 5 ] && ok "bob's refusals are events" \
  || bad "bob's refusals: $(events "%bob was refused job $job%") events"
refused "a user may not register models" "not an admin" "$SC" models add m1 model
"$COORD" --db "$DB" users revoke bob >/dev/null
refused "a revoked token: not authorised" "unknown or revoked" "$SC" jobs

# --- paths: only under the roots, and the answer tells nothing of the outside.
export SPLITCHAIN_TOKEN=$alice
mkdir -p sub && ln -sf /etc/hostname leak.txt && ln -sfn /etc etc-link
for case in "absolute elsewhere:/etc/hostname" "..:$WORK/sub/../../x/data.txt" \
            "a symbolic link out:$WORK/leak.txt" "a directory link out:$WORK/etc-link/hostname"; do
  what=${case%%:*}
  out=$("$POKE" submit "$SPLITCHAIN_COORDINATOR" "$WORK/model" "${case#*:}")
  grep -q "^INVALID_ARGUMENT: data file .* (--data-root\|^INVALID_ARGUMENT: data file .*--data-root" <<< "$out" \
    && ok "data path, $what: refused" || bad "data path, $what: $out"
done
a=$("$POKE" submit "$SPLITCHAIN_COORDINATOR" "$WORK/model" /etc/hostname | sed 's#/etc/hostname#P#')
b=$("$POKE" submit "$SPLITCHAIN_COORDINATOR" "$WORK/model" /etc/no-such-file | sed 's#/etc/no-such-file#P#')
[ "$a" = "$b" ] && ok "the same answer for a file outside that exists and one that does not" \
  || bad "outside answers differ: '$a' vs '$b'"
a=$("$POKE" submit "$SPLITCHAIN_COORDINATOR" "$WORK/leak.txt" "$WORK/data.txt" | sed 's#leak.txt#P#')
b=$("$POKE" submit "$SPLITCHAIN_COORDINATOR" "$WORK/nolink.txt" "$WORK/data.txt" | sed 's#nolink.txt#P#')
[ "$a" = "$b" ] && grep -q "model-root" <<< "$a" && ok "model path: a link out reads as a missing file" \
  || bad "model answers: '$a' vs '$b'"
cp data.txt ../auth-outside.txt
refused "the CLI's ../ path outside the root is refused" "outside the coordinator's --data-root" \
  "$SC" submit --model model --data ../auth-outside.txt "${JOB_OPTS[@]}" --stages 1
rm -f ../auth-outside.txt
[ "$(events '%data file%--data-root%')" -ge 5 ] && ok "path refusals are events" \
  || bad "path refusals: $(events '%data file%--data-root%') events"

# --- a worker takes control only from the coordinator.
waddr=$(SPLITCHAIN_TOKEN=$(cat cluster/admin.token) "$SC" workers --json |
        sed 's/},{/}\n{/g' | grep '"name":"w1"' | sed -n 's/.*"address":"\([^"]*\)".*/\1/p')
for m in Worker.Assign Worker.Step Worker.Release Worker.GetState; do
  out=$("$POKE" call "$waddr" "$m")
  grep -q "^PERMISSION_DENIED: $m: this worker takes it only from its coordinator" <<< "$out" \
    && ok "$m straight to a worker: PERMISSION_DENIED" || bad "$m: $out"
done
out=$("$POKE" call "$waddr" Worker.Assign "$alice")
grep -q "^PERMISSION_DENIED" <<< "$out" && ok "a user's token does not make a coordinator" \
  || bad "Worker.Assign with alice's token: $out"
for _ in $(seq 1 20); do [ "$(events '%refused a Worker.Assign%')" -ge 1 ] && break; sleep 0.2; done
[ "$(events '%refused a Worker.Assign%')" -ge 1 ] && ok "the worker's refusals are events" \
  || bad "no event of the worker's refusals"

# --- limits: queued + running jobs per user, and the request rate.
j1=$("$SC" submit --model model --data data.txt "${LONG_JOB_OPTS[@]}" --stages 2 --name long1)
j2=$("$SC" submit --model model --data data.txt "${LONG_JOB_OPTS[@]}" --stages 2 --name long2)
refused "a third queued job: over --max-jobs-per-user" "RESOURCE_EXHAUSTED: user alice has 2 jobs" \
  "$SC" submit --model model --data data.txt "${LONG_JOB_OPTS[@]}" --stages 2
"$SC" cancel "$j1" >/dev/null; "$SC" cancel "$j2" >/dev/null
# Six submits at once against the cap of 2: two are queued, not six.
pids=()
for i in 1 2 3 4 5 6; do
  "$SC" submit --model model --data data.txt "${LONG_JOB_OPTS[@]}" --stages 2 --name "race$i" \
    > "race$i.out" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
took=$(grep -lx '[0-9]*' race?.out | wc -l)
capped=$(grep -l "RESOURCE_EXHAUSTED: user alice has 2 jobs" race?.out | wc -l)
[ "$took" = 2 ] && [ "$capped" = 4 ] && ok "six submits at once: 2 queued, 4 over the cap" \
  || bad "six submits at once: $took queued, $capped over the cap ($(cat race?.out | tr '\n' ' '))"
for f in race?.out; do grep -qx '[0-9]*' "$f" && "$SC" cancel "$(cat "$f")" >/dev/null; done
[ "$(events '%alice is at the job cap%')" -ge 1 ] && ok "the cap's refusal is an event" \
  || bad "no job-cap event"
rss() { awk '/VmRSS/ {print $2}' "/proc/$(cat cluster/coordinator.pid)/status"; }
warm=$(rss)
SPLITCHAIN_TOKEN=$flooder "$POKE" flood "$SPLITCHAIN_COORDINATOR" 6 > flood.txt &
fp=$!
answered=0
for _ in $(seq 1 10); do
  t0=$(date +%s%N)
  "$SC" jobs >/dev/null 2>&1 && [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 2000 ] &&
    answered=$((answered + 1))
  sleep 0.4
done
wait "$fp"
# The first flood warms the coordinator up (its RPC threads' buffers and
# malloc arenas: 16-36 MiB measured); a second must not add to it (24-84
# KiB measured over three more).
before=$(rss)
SPLITCHAIN_TOKEN=$flooder "$POKE" flood "$SPLITCHAIN_COORDINATOR" 6 > flood2.txt
after=$(rss)
echo "coordinator RSS: $warm KiB before the first flood, $before KiB after it, $after KiB after" \
  "a second; floods: $(tr '\n' ' ' < flood.txt)/ $(tr '\n' ' ' < flood2.txt)"
[ "$answered" -eq 10 ] && ok "during a flood, another user's requests are answered (10 of 10, < 2 s)" \
  || bad "during the flood: $answered of 10 answered in time"
grep -q "^RESOURCE_EXHAUSTED [0-9]" flood.txt && ok "the flooder is held to --rate-limit" \
  || bad "flood: $(cat flood.txt)"
grep -q "^RESOURCE_EXHAUSTED [0-9]" flood2.txt && [ $((after - before)) -lt 4096 ] &&
  ok "memory stays bounded (a second flood: +$((after - before)) KiB)" ||
  bad "a second flood grew RSS by $((after - before)) KiB ($(cat flood2.txt))"
[ "$(events '%flooder is over the request-rate limit%')" -ge 1 ] && ok "rate refusals are events" \
  || bad "no rate-limit event"
[ "$(q "select count(*) from events where kind = 'auth_denied'")" -lt 2000 ] \
  && ok "refusal events are bounded in rate" || bad "too many auth events"
finish
