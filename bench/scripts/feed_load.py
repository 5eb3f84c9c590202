#!/usr/bin/env python3
"""Write throughput with change-feed subscribers, and the feed's end-to-end latency.

Starts `bookd serve` (a fresh data directory, durable), starts SUBSCRIBERS threads that each
follow `GET /v1/changes` with long polls (`wait_ms=1000`, `limit=1000`) from the feed's end, then
runs `bookd bench --addr` against the node. Prints one JSON line: the bench's commands/s, the
changes each subscriber received, and the latency from a change's `at_ms` (the node's stamp of
the command, before its fsync) to its arrival at a subscriber, p50/p99/max in ms over every
change every subscriber received (clocks are the same machine's).

  bench/scripts/feed_load.py --bin target/release/bookd --workload flash-sale --subscribers 100
  bench/scripts/feed_load.py ... --subscriber-bin target/release/examples/feed_subscribers

Also reports the node's own CPU over the bench (/proc/PID/stat, user + system, in cores) and the
changes it sent (/metrics `bookd_feed_changes_sent_total`), so the cost of fan-out per delivered
change is a figure of the node alone. `--subscriber-nice N` runs the subscribers at a lower
priority, a stand-in for subscribers on other machines: they use what the node leaves.
"""
import argparse, json, os, shutil, subprocess, tempfile, threading, time, urllib.request

def follow(http, stop, stats, index):
    with urllib.request.urlopen(f"http://{http}/v1/changes", timeout=30) as response:
        cursor = json.loads(response.read())["cursor"]
    received, latencies = 0, []
    while not stop.is_set():
        url = f"http://{http}/v1/changes?cursor={cursor}&limit=1000&wait_ms=1000"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                page = json.loads(response.read())
        except OSError:
            continue
        now_ms = time.time() * 1000
        for change in page["changes"]:
            received += 1
            if received % 10 == 0:
                latencies.append(now_ms - change["at_ms"])
        cursor = page["cursor"]
    stats[index] = (received, latencies)

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def changes_sent(http):
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("bookd_feed_changes_sent_total "):
                return int(float(line.split()[1]))
    return 0

def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 2)

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/release/bookd")
    parser.add_argument("--workload", default="flash-sale")
    parser.add_argument("--clients", type=int, default=1024)
    parser.add_argument("--duration", default="20s")
    parser.add_argument("--subscribers", type=int, default=0)
    parser.add_argument("--subscriber-bin", help="follow over the binary protocol with this "
                        "program (bench/examples/feed_subscribers.rs) instead of HTTP long polls")
    parser.add_argument("--subscriber-nice", type=int, default=0,
                        help="niceness of the binary subscribers' process (0: the node's own)")
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="bookd-feed-")
    node = subprocess.Popen([args.bin, "serve", "--data-dir", data, "--http", "127.0.0.1:0",
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        http = binary = None
        for line in node.stdout:
            if line.startswith("bookd ready"):
                parts = dict(part.split("=", 1) for part in line.split()[2:])
                http, binary = parts["http"], parts["binary"]
                break
        rust = None
        if args.subscriber_bin and args.subscribers:
            seconds = int(args.duration.rstrip("s")) + 7
            command = [args.subscriber_bin, binary, str(args.subscribers), str(seconds)]
            if args.subscriber_nice:
                command = ["nice", "-n", str(args.subscriber_nice)] + command
            rust = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        python_subscribers = 0 if rust else args.subscribers
        stop, stats = threading.Event(), [None] * python_subscribers
        threads = [threading.Thread(target=follow, args=(http, stop, stats, i), daemon=True)
                   for i in range(python_subscribers)]
        for thread in threads:
            thread.start()
        cpu_before, sent_before, started = cpu_seconds(node.pid), changes_sent(http), time.time()
        bench = subprocess.run([args.bin, "bench", "--workload", args.workload, "--addr", binary,
                                "--clients", str(args.clients), "--duration", args.duration,
                                "--json"], capture_output=True, text=True, check=True)
        report = json.loads(bench.stdout)
        elapsed = time.time() - started
        node_cores = (cpu_seconds(node.pid) - cpu_before) / elapsed
        sent_per_s = (changes_sent(http) - sent_before) / elapsed
        usage = {"node_cores": round(node_cores, 2), "changes_sent_per_s": round(sent_per_s),
                "node_cpu_us_per_command": round(node_cores * 1e6 / max(report["commands_per_s"], 1), 2)}
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        if rust:
            subscribers = json.loads(rust.communicate(timeout=120)[0])
            print(json.dumps({"workload": args.workload, "subscribers": args.subscribers,
                              "protocol": "binary",
                              "commands_per_s": round(report["commands_per_s"]), **usage, **subscribers}))
            return
        latencies = [l for s in stats if s for l in s[1]]
        received = [s[0] for s in stats if s]
        print(json.dumps({
            "workload": args.workload, "subscribers": args.subscribers,
            "commands_per_s": round(report["commands_per_s"]), **usage,
            "changes_received_min": min(received) if received else None,
            "feed_latency_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                                "max": percentile(latencies, 1.0)},
        }))
    finally:
        node.terminate()
        node.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)

if __name__ == "__main__":
    main()
