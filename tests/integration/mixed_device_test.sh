#!/usr/bin/env bash
# mixed_device_test.sh — a chain of a CPU worker and a CUDA worker trains the
# adapters one CPU process trains, to fp32 rounding: nothing above the
# backend knows the device. The CUDA worker is splitchain-worker-emu, the
# worker built with the CUDA backend's own code on the emulated device of
# tests/cuda_emu, unless SC_CUDA_WORKER names another: tests/gpu/run.sh sets
# the real splitchain-worker on a GPU machine.
#   mixed_device_test.sh BUILD_DIR WORK_DIR
source "$(dirname "$0")/lib.sh" "$1" "$2"
CUDA_WORKER=${SC_CUDA_WORKER:-$BUILD/tests/cuda_emu/splitchain-worker-emu}
make_fixture
reference ref
"$ROOT/deploy/launch.sh" start cluster 1 >/dev/null || { bad "cluster start"; finish; exit 1; }
OMP_NUM_THREADS=1 "$CUDA_WORKER" --coordinator "$SPLITCHAIN_COORDINATOR" --name worker-cuda \
  --device cuda:0 "${WORKER_NET[@]}" --threads 1 \
  >>cluster/worker-cuda.log 2>&1 &
cuda_pid=$!
echo $cuda_pid > cluster/worker-cuda.pid # launch.sh stop ends every worker-*.pid
for _ in $(seq 1 100); do
  n=$("$SC" workers --json | grep -o '"state":"idle"' | wc -l)
  [ "$n" -ge 2 ] && break
  kill -0 "$cuda_pid" 2>/dev/null || break
  sleep 0.2
done
if ! kill -0 "$cuda_pid" 2>/dev/null && grep -q "opening the device" cluster/worker-cuda.log; then
  echo "skip: the CUDA worker sees no device: $(tail -1 cluster/worker-cuda.log)"
  "$ROOT/deploy/launch.sh" stop "$WORK/cluster" >/dev/null 2>&1
  exit 77
fi
if "$SC" workers --json | grep -q '"name":"worker-cuda"[^}]*"device":"cuda:0"'; then
  ok "the CUDA worker registered with device cuda:0"
else
  bad "no idle worker-cuda on cuda:0: $("$SC" workers --json)"
  tail -5 cluster/worker-cuda.log
  finish
  exit 1
fi

# Each reports its own device's memory: the machine's RAM, the GPU's.
mem_of() { "$SC" workers --json | grep -o "\"name\":\"$1\"[^}]*" |
  sed -n 's/.*"memory_bytes":\([0-9]*\).*/\1/p'; }
cpu_mem=$(mem_of worker-1)
gpu_mem=$(mem_of worker-cuda)
if [ -n "$gpu_mem" ] && [ "${gpu_mem:-0}" -gt 0 ] && [ "$gpu_mem" != "$cpu_mem" ]; then
  ok "the CUDA worker reports its device's memory ($gpu_mem bytes; the CPU worker $cpu_mem)"
else
  bad "memory reported: cuda worker '$gpu_mem', cpu worker '$cpu_mem'"
fi

job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 \
      --checkpoint-every 3 --name mixed)
if "$SC" watch "$job" >/dev/null; then ok "2-stage CPU + CUDA job finished"
else bad "job $job ended $(state "$job")"; fi
devices=$(sqlite3 cluster/splitchain.db "select group_concat(w.device, ' ') from
  (select * from placements where job_id = $job order by stage) p
  join workers w on w.id = p.worker_id")
case "$devices" in
  *cpu*cuda:0* | *cuda:0*cpu*) ok "stages placed on both devices ($devices)" ;;
  *) bad "placement devices: '$devices'" ;;
esac
"$SC" export "$job" --out mixed >/dev/null || bad "export"

# The adapters agree to fp32 rounding: the loss each gives on the same batch.
l_fp32=$(loss_of mixed)
close_loss "trained as by one CPU process" "$(loss_of ref)" "$l_fp32"

# --tf32 reaches the GPU stage (its GEMMs round their operands: another
# result) and no further (still close to the CPU's).
job=$("$SC" submit --model model --data data.txt "${JOB_OPTS[@]}" --stages 2 --tf32 \
      --name mixed-tf32)
"$SC" watch "$job" >/dev/null 2>&1 || bad "TF32 job $job ended $(state "$job")"
"$SC" export "$job" --out mixed-tf32 >/dev/null || bad "export of the TF32 job"
"$SC" status "$job" --json | grep -q '"tf32":true' && ok "status shows the job's recipe with tf32" ||
  bad "status --json: $("$SC" status "$job" --json)"
"$SC" status "$job" | grep -q "TF32 (on GPUs) GEMMs" || bad "status: no TF32 in the recipe line"
l_tf32=$(loss_of mixed-tf32)
[ -n "$l_tf32" ] && [ "$l_tf32" != "$l_fp32" ] && ok "--tf32 changed the GPU stage's arithmetic" ||
  bad "--tf32 gave the fp32 loss $l_fp32 ('$l_tf32')"
awk -v a="$(loss_of ref)" -v b="$l_tf32" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 2e-3 * a) }' &&
  ok "TF32 loss $l_tf32 within 2e-3 of the CPU's" || bad "TF32 loss $l_tf32 far from the CPU's"
if same_adapter ref mixed; then echo "note: adapters are even bit-identical"; fi
grep -q "device cuda:0" cluster/worker-cuda.log && ok "worker log names its device" ||
  bad "worker-cuda.log does not name cuda:0"
finish
