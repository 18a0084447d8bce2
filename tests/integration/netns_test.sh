#!/usr/bin/env bash
# netns_test.sh — a chain over slow links: 3 workers, each in a network
# namespace behind a 50 Mbit/s tbf-shaped link (bench/netns.sh), the
# coordinator in the root namespace:
#   - an fp32 and an int8 job both finish;
#   - int8's step time is clearly below fp32's (< 0.6x: the links bound the
#     step, and int8 sends a quarter of the bytes);
#   - each job's adapter is bit-identical to `splitchain finetune --cuts` with
#     the same encoding (one process, no network): shaping changes the time,
#     never the result.
# Exits 77 (ctest: skipped) with a 'skip:' line where namespaces cannot be
# made (not root, no ip/tc, no veth or tbf) or another run holds them.
#   netns_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
NETNS=$ROOT/bench/netns.sh
RATE=50

rc=0
bash "$NETNS" check || rc=$?
if [ $rc -ne 0 ]; then echo "skip: network namespaces cannot be made here"; exit 77; fi

# Whatever happens: stop the processes, then remove the namespaces.
trap '"$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
      bash "$NETNS" down >/dev/null 2>&1 || true' EXIT

# A model with little compute per activation byte, so that the links bound a
# step: 2048 tokens a step, 1 MiB of fp32 activations per hop each way.
"$SC" make-model --out model --preset llama-tiny --layers 3 --heads 4 --kv-heads 2 --embd 128 \
  --inner 64 --vocab 300 --positions 64 --seed 7 >/dev/null || { bad "make-model"; finish; exit 1; }
find "$ROOT/docs" "$ROOT/common/model" -type f | sort | xargs cat > all.txt
head -c 60000 all.txt > data.txt
OPTS=(--steps 5 --batch 8 --seq 64 --micro 4 --rank 4 --alpha 8 --targets all --lr 3e-3
      --min-lr 3e-4 --warmup 2 --seed 11)

# Namespaces: wait a little if another run (the benchmark) holds them.
for i in $(seq 1 30); do
  rc=0
  SC_NETNS_OWNER=$$ bash "$NETNS" up 3 "$RATE" || rc=$?
  [ $rc -eq 75 ] || break
  sleep 2
done
case $rc in
  0) ok "3 namespaces at $RATE Mbit/s" ;;
  75) echo "skip: the namespaces stayed busy (another netns.sh user) for 60 s"; exit 77 ;;
  77) echo "skip: network namespaces cannot be made here"; exit 77 ;;
  *) bad "netns.sh up: status $rc"; finish; exit 1 ;;
esac

# Plaintext (--insecure): the test's certificates name 127.0.0.1 only.
use_insecure
export SPLITCHAIN_COORDINATOR=tcp://10.77.1.1:$SC_PORT
start_coordinator 10000
for i in 1 2 3; do
  bash "$NETNS" exec "$i" env OMP_NUM_THREADS=1 "$BUILD/worker/splitchain-worker" \
    --coordinator "$SPLITCHAIN_COORDINATOR" --name "ns-$i" --threads 1 --probe-every-s 0 \
    --listen "tcp://10.77.$i.2:0" --data "tcp://10.77.$i.2:0" --insecure \
    >>"cluster/worker-$i.log" 2>&1 &
  echo $! > "cluster/worker-$i.pid"
done
for _ in $(seq 1 150); do
  n=$(sqlite3 cluster/splitchain.db "select count(*) from workers where state = 'idle'
        and data_addr like 'tcp://10.77.%'" 2>/dev/null || echo 0)
  [ "${n:-0}" = 3 ] && break
  sleep 0.2
done
[ "${n:-0}" = 3 ] && ok "3 workers registered from their namespaces" ||
  { bad "workers registered: ${n:-0}"; finish; exit 1; }

declare -A step_s
for w in fp32 int8; do
  job=$("$SC" submit --model model --data data.txt "${OPTS[@]}" --stages 3 --wire "$w" \
        --checkpoint-every 5 --name "netns-$w")
  if ! timeout 120 "$SC" watch "$job" >/dev/null; then
    bad "$w: job $job ended $(state "$job")"
    continue
  fi
  # The mean step time after the first step (connections, buffers).
  step_s[$w]=$(sqlite3 cluster/splitchain.db "select printf('%.3f', avg(step_s)) from metrics
                 where job_id = $job and step > 1")
  c=$(cuts "$job")
  "$SC" export "$job" --out "chain-$w" >/dev/null
  "$SC" finetune --model model --data data.txt "${OPTS[@]}" --wire "$w" --cuts "$c" \
    --threads 1 --quiet --out "one-$w" || bad "$w: finetune --cuts $c"
  if same_adapter "one-$w" "chain-$w"; then
    ok "$w: the shaped chain (cuts $c, ${step_s[$w]} s/step) = one process, bit for bit"
  else bad "$w: the shaped chain and one process differ (cuts $c)"; fi
done
if [ -n "${step_s[fp32]:-}" ] && [ -n "${step_s[int8]:-}" ]; then
  r=$(awk -v a="${step_s[int8]}" -v b="${step_s[fp32]}" 'BEGIN {printf "%.2f", a / b}')
  if awk -v r="$r" 'BEGIN {exit !(r < 0.6)}'; then
    ok "int8 steps take ${r}x fp32's at $RATE Mbit/s (${step_s[int8]} vs ${step_s[fp32]} s)"
  else bad "int8 steps take ${r}x fp32's at $RATE Mbit/s, want < 0.6"; fi
fi
finish
