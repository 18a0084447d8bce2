# load.sh — sourced by run.sh and pipeline.sh: how busy the machine's CPUs
# are, so that a measurement waits for (and reports) other processes' work.
# Uses MAXLOAD (CPUs; default 0.2) and WAIT (seconds; default 300).
HZ=$(getconf CLK_TCK)
MAXLOAD=${MAXLOAD:-0.2}
WAIT=${WAIT:-300}

# CPU-seconds all processes spent busy so far (steal included).
busy_s() { awk -v hz="$HZ" '/^cpu /{printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz}' /proc/stat; }

# Exit status 0 when LOAD <= MAXLOAD.
quiet() { awk -v a="$1" -v m="$MAXLOAD" 'BEGIN {exit !(a <= m)}'; }

# Waits until the CPUs were no more than MAXLOAD busy over 2 seconds (with
# nothing of ours running), for up to WAIT seconds; then goes on regardless.
wait_quiet() {
  local b0 b1 load waited=0
  while :; do
    b0=$(busy_s); sleep 2; b1=$(busy_s)
    load=$(awk -v a="$b0" -v b="$b1" 'BEGIN {printf("%.2f", (b - a) / 2)}')
    quiet "$load" && return 0
    waited=$((waited + 2))
    if [ "$waited" -ge "$WAIT" ]; then
      echo "  other processes still keep $load CPUs busy after ${WAIT} s: measuring anyway" >&2
      return 0
    fi
  done
}
