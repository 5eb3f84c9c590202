#!/usr/bin/env python3
"""Node CPU per command: the node pinned to one core, `bookd bench` to the other.

Starts `bookd serve` (one shard, a fresh data directory, durable) under `taskset -c NODE_CPU`,
drives it with `bookd bench --addr` under `taskset -c BENCH_CPU`, and over a window inside the
bench's measured phase reads the node's CPU time (/proc/PID/stat: user + system) and its
command count (/metrics: bookd_commands_total + bookd_queries_total). Prints one JSON line:
the node's CPU microseconds per command, its commands/s and its core utilisation in the window.

  bench/scripts/node_cpu.py --bin target/release/bookd --workload flash-sale --seconds 12
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time, urllib.request

def metrics_commands(http):
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("bookd_commands_total", "bookd_queries_total")):
            total += float(line.rsplit(" ", 1)[1])
    return total

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields after the command name: state is [0], utime [11], stime [12] (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/release/bookd")
    parser.add_argument("--workload", default="flash-sale")
    parser.add_argument("--clients", type=int, default=1024)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5, help="seconds before the window")
    parser.add_argument("--seconds", type=int, default=12, help="length of the window")
    parser.add_argument("--node-cpu", default="0")
    parser.add_argument("--bench-cpu", default="1")
    parser.add_argument("serve_args", nargs="*", help="more flags for `bookd serve` (after --)")
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="bookd-node-cpu-")
    node = subprocess.Popen(
        ["taskset", "-c", args.node_cpu, args.bin, "serve", "--data-dir", data, "--http", "127.0.0.1:0",
         "--listen", "127.0.0.1:0", "--shards", "1", *args.serve_args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, BOOKD_LOG="warn"))
    try:
        http = binary = None
        for line in node.stdout:
            if line.startswith("bookd ready"):
                parts = dict(kv.split("=", 1) for kv in line.split()[2:])
                http, binary = parts["http"], parts["binary"]
                break
        if http is None:
            sys.exit("the node did not start")
        # The bench measures after its own warmup; the window sits inside its measured phase.
        bench_warmup, margin = 2, 3
        duration = args.warmup - bench_warmup + args.seconds + margin
        interval = duration  # one window: the bench refuses a duration its interval does not divide
        bench = subprocess.Popen(
            ["taskset", "-c", args.bench_cpu, args.bin, "bench", "--addr", binary, "--workload", args.workload,
             "--clients", str(args.clients), "--connections", str(args.connections),
             "--warmup", f"{bench_warmup}s", "--duration", f"{duration}s", "--interval", f"{interval}s",
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(args.warmup)
        cpu0, commands0, t0 = cpu_seconds(node.pid), metrics_commands(http), time.monotonic()
        time.sleep(args.seconds)
        cpu1, commands1, t1 = cpu_seconds(node.pid), metrics_commands(http), time.monotonic()
        _, errors = bench.communicate(timeout=duration + 120)
        if bench.returncode != 0:
            sys.exit(f"bookd bench failed: {errors.strip()}")
        commands = commands1 - commands0
        report = {
            "workload": args.workload, "clients": args.clients, "connections": args.connections,
            "window_s": round(t1 - t0, 2), "commands": int(commands),
            "commands_per_s": round(commands / (t1 - t0)),
            "node_cpu_us_per_command": round((cpu1 - cpu0) * 1e6 / commands, 2) if commands else None,
            "node_core_utilisation": round((cpu1 - cpu0) / (t1 - t0), 3),
        }
        print(json.dumps(report))
    finally:
        node.terminate()
        node.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)

if __name__ == "__main__":
    main()
