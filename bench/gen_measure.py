"""gen_measure.py — runs one command of bench/generate_bench.sh and prints the
last JSON line it wrote, with "foreign_load" added: the CPUs that other
processes kept busy meanwhile (from /proc/stat, less the command's own CPU
time and that of --pids, the chain's worker processes), so that a disturbed
run can be spotted and rerun.

    gen_measure.py [--pids PID,PID] -- COMMAND ARG...
"""

import json
import os
import resource
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / HZ  # user nice system irq softirq steal


def pid_cpu_s(pids):
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            total += (int(v[11]) + int(v[12])) / HZ  # utime stime
        except OSError:
            pass
    return total


def main():
    args = sys.argv[1:]
    pids = []
    if args[:1] == ["--pids"]:
        pids = [p for p in args[1].split(",") if p]
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, w0, t0 = busy_s(), pid_cpu_s(pids), time.time()
    out = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout
    b1, w1, t1 = busy_s(), pid_cpu_s(pids), time.time()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime) + (w1 - w0)
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    d = json.loads(line)
    d["foreign_load"] = round(max(0.0, (b1 - b0 - own) / (t1 - t0)), 2)
    print(json.dumps(d))


if __name__ == "__main__":
    main()
