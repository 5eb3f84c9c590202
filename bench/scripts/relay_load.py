#!/usr/bin/env python3
"""The relay's throughput into NATS JetStream and its lag, under write load.

Starts `nats-server -js` (loopback, a fresh store), `bookd serve` (a fresh data directory,
durable) and `bookd relay --metrics`, runs `bookd bench --addr` against the node, and samples the
relay's /metrics every second. Prints one JSON line: the bench's commands/s, the changes the
relay published, its changes/s during the bench and until it caught up, its lag (ms, the age of
the last change published when the stream took it) p50/max over the samples taken during the
bench, and how long after the bench it took to catch up.

  bench/scripts/relay_load.py --bin target/release/bookd --workload flash-sale --duration 20s
"""
import argparse, json, os, shutil, socket, subprocess, tempfile, time, urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relay_metrics(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {line.split()[0]: int(line.split()[1]) for line in text.splitlines()
            if line.startswith("bookd_relay_")}


def wait_port(port, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default="target/release/bookd")
    parser.add_argument("--workload", default="flash-sale")
    parser.add_argument("--clients", type=int, default=1024)
    parser.add_argument("--duration", default="20s")
    args = parser.parse_args()
    temp = tempfile.mkdtemp(prefix="bookd-relay-")
    processes = []
    try:
        nats_port = free_port()
        processes.append(subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd",
             os.path.join(temp, "nats")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(nats_port)
        node = subprocess.Popen([args.bin, "serve", "--data-dir", os.path.join(temp, "node"),
                                 "--http", "127.0.0.1:0", "--listen", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        processes.append(node)
        for line in node.stdout:
            if line.startswith("bookd ready"):
                parts = dict(part.split("=", 1) for part in line.split()[2:])
                break
        metrics_port = free_port()
        metrics = f"127.0.0.1:{metrics_port}"
        processes.append(subprocess.Popen(
            [args.bin, "relay", "--nats", f"nats://127.0.0.1:{nats_port}", "--http",
             parts["http"], "--metrics", metrics], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        wait_port(metrics_port)
        bench = subprocess.Popen([args.bin, "bench", "--workload", args.workload, "--addr",
                                  parts["binary"], "--clients", str(args.clients), "--duration",
                                  args.duration, "--json"], stdout=subprocess.PIPE, text=True)
        started, samples = time.time(), []
        while bench.poll() is None:
            time.sleep(1)
            samples.append((time.time(), relay_metrics(metrics)))
        report = json.loads(bench.communicate()[0])
        bench_end = time.time()
        # Until the relay is at the feed's end and has stopped moving for 3 s.
        last, still = None, 0
        while time.time() < bench_end + 300 and still < 3:
            time.sleep(1)
            now = relay_metrics(metrics)
            samples.append((time.time(), now))
            moving = last is None or now.get("bookd_relay_published_total") != last
            still = 0 if moving or not now.get("bookd_relay_caught_up") else still + 1
            last = now.get("bookd_relay_published_total")
        caught_up_at = next((t for t, m in samples if t >= bench_end and
                             m.get("bookd_relay_published_total") == last), bench_end)
        published = last or 0
        in_bench = [m.get("bookd_relay_published_total", 0) for t, m in samples if t <= bench_end]
        lags = sorted(m.get("bookd_relay_lag_ms", 0) for t, m in samples if t <= bench_end)
        print(json.dumps({
            "workload": args.workload,
            "commands_per_s": round(report["commands_per_s"]),
            "relay_published": published,
            "relay_changes_per_s_during_bench":
                round((in_bench[-1] if in_bench else 0) / max(bench_end - started, 1e-9)),
            "relay_changes_per_s_overall": round(published / max(caught_up_at - started, 1e-9)),
            "relay_lag_ms": {"p50": lags[len(lags) // 2] if lags else None,
                             "max": lags[-1] if lags else None},
            "caught_up_s_after_bench": round(caught_up_at - bench_end, 1),
        }))
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
