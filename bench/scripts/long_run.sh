#!/usr/bin/env bash
# A long run of one workload against a real `bookd serve`: starts the node on a fresh temporary
# data directory (loopback, ports chosen by the system), runs `bookd bench` against it with a
# window per --interval, samples the node's RSS and the data directory's size into a CSV, stops
# the node with SIGTERM, and prints a summary (median and worst window, longest answer,
# unanswered commands, peak and final RSS, disk used). With --recover it then restarts the node
# on the same data directory and times its recovery.
#
# Invariant: every process it starts is stopped on any exit (traps), and the data directory is
# removed unless --keep-data.
#
# Usage: bench/scripts/long_run.sh [options] [-- extra `bookd serve` flags]
#   --workload W        flash-sale | seat-map | hotel | sell-out   (default flash-sale)
#   --duration D        measured window, e.g. 10m, 600s            (default 10m)
#   --warmup D          warm-up before it                          (default 5s)
#   --interval D        window length                              (default 10s)
#   --clients N         closed-loop clients                        (default 1024)
#   --connections M     pipelined connections                      (default 64)
#   --sample S          seconds between RSS / disk samples         (default 10)
#   --out DIR           where results go (default ./long-run-W-YYYYmmdd-HHMMSS)
#   --bin PATH          the bookd binary (default target/release/bookd)
#   --ready-timeout S   seconds to wait for `bookd ready`          (default 600)
#   --recover           restart on the same data directory and time recovery
#   --keep-data         keep the data directory (its path is printed)
# Example: bench/scripts/long_run.sh --workload hotel --duration 10m --recover -- --hold-retention 1h
# Needs: bash, jq, du, /proc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORKLOAD=flash-sale
DURATION=10m
WARMUP=5s
INTERVAL=10s
CLIENTS=1024
CONNECTIONS=64
SAMPLE_S=10
OUT=""
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/bookd"
READY_TIMEOUT_S=600
RECOVER=0
KEEP_DATA=0
SERVE_FLAGS=()

die() {
    echo "long_run: $*" >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --workload) WORKLOAD="${2:?}"; shift 2 ;;
        --duration) DURATION="${2:?}"; shift 2 ;;
        --warmup) WARMUP="${2:?}"; shift 2 ;;
        --interval) INTERVAL="${2:?}"; shift 2 ;;
        --clients) CLIENTS="${2:?}"; shift 2 ;;
        --connections) CONNECTIONS="${2:?}"; shift 2 ;;
        --sample) SAMPLE_S="${2:?}"; shift 2 ;;
        --out) OUT="${2:?}"; shift 2 ;;
        --bin) BIN="${2:?}"; shift 2 ;;
        --ready-timeout) READY_TIMEOUT_S="${2:?}"; shift 2 ;;
        --recover) RECOVER=1; shift ;;
        --keep-data) KEEP_DATA=1; shift ;;
        --) shift; SERVE_FLAGS=("$@"); break ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

command -v jq >/dev/null || die "needs jq"
[[ -x "$BIN" ]] || die "no bookd binary at $BIN (build it: cargo build --release -p bookd, or pass --bin)"
[[ "$SAMPLE_S" =~ ^[0-9]+$ && "$SAMPLE_S" -gt 0 ]] || die "--sample must be a whole number of seconds"
[[ "$READY_TIMEOUT_S" =~ ^[0-9]+$ ]] || die "--ready-timeout must be a whole number of seconds"

OUT="${OUT:-./long-run-$WORKLOAD-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
DATA="$(mktemp -d "${TMPDIR:-/tmp}/bookd-long-run.XXXXXX")"
SERVER_PID=""
SAMPLER_PID=""
BENCH_PID=""

now() { date +%s.%N; }

# Stops whatever is still running; removes the data directory unless kept.
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    if [[ -n "$SAMPLER_PID" ]] && kill -0 "$SAMPLER_PID" 2>/dev/null; then
        kill "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "$KEEP_DATA" -eq 0 ]]; then
        rm -rf "$DATA"
    else
        echo "long_run: data directory kept at $DATA" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts `bookd serve` on $DATA with ports 0; every stdout line is prefixed with its time, so
# the `bookd ready` line tells how long the start took. Sets SERVER_PID, READY_AT, BINARY_ADDR.
start_server() {
    local log="$1"
    : >"$log"
    STARTED_AT="$(now)"
    "$BIN" serve --data-dir "$DATA" --http 127.0.0.1:0 --listen 127.0.0.1:0 "${SERVE_FLAGS[@]}" \
        2>"${log%.log}.stderr.log" \
        > >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done >>"$log") &
    SERVER_PID=$!
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    local ready=""
    while [[ -z "$ready" ]]; do
        ready="$(grep -m1 ' bookd ready ' "$log" || true)"
        if [[ -z "$ready" ]]; then
            kill -0 "$SERVER_PID" 2>/dev/null ||
                die "bookd serve exited before it was ready (see ${log%.log}.stderr.log)"
            [[ $SECONDS -lt $deadline ]] || die "bookd serve not ready after ${READY_TIMEOUT_S} s"
            sleep 0.05
        fi
    done
    READY_AT="${ready%% *}"
    BINARY_ADDR="$(sed -n 's/.* binary=\([^ ]*\).*/\1/p' <<<"$ready")"
    [[ -n "$BINARY_ADDR" ]] || die "cannot read the binary address from: $ready"
}

# Resident set of a process in kB (0 once it is gone).
rss_kb() { awk '/^VmRSS:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# Peak resident set of a process in kB, as the kernel counted it.
hwm_kb() { awk '/^VmHWM:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
disk_bytes() { du -sb "$DATA" 2>/dev/null | cut -f1; }

# Sends SIGTERM and waits for the node to exit; sets STOP_STATUS to its exit status.
stop_server() {
    kill -TERM "$SERVER_PID"
    STOP_STATUS=0
    wait "$SERVER_PID" || STOP_STATUS=$?
    SERVER_PID=""
}

echo "long_run: $WORKLOAD for $DURATION (+$WARMUP warm-up), windows of $INTERVAL, $CLIENTS clients over $CONNECTIONS connections" >&2
echo "long_run: data $DATA, results $OUT, serve flags: ${SERVE_FLAGS[*]:-none}" >&2

start_server "$OUT/serve.log"
echo "long_run: bookd ready on $BINARY_ADDR (pid $SERVER_PID)" >&2

SAMPLES="$OUT/samples.csv"
echo "t_s,rss_kb,disk_bytes" >"$SAMPLES"
RUN_START="$(now)"
(
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        printf '%.1f,%s,%s\n' "$(awk -v a="$(now)" -v b="$RUN_START" 'BEGIN { print a - b }')" \
            "$(rss_kb "$SERVER_PID")" "$(disk_bytes)" >>"$SAMPLES"
        sleep "$SAMPLE_S"
    done
) &
SAMPLER_PID=$!

# In the background and waited for, so a signal to this script stops the run at once.
BENCH_STATUS=0
"$BIN" bench --addr "$BINARY_ADDR" --workload "$WORKLOAD" --duration "$DURATION" \
    --warmup "$WARMUP" --interval "$INTERVAL" --json --clients "$CLIENTS" \
    --connections "$CONNECTIONS" --windows-plot "$OUT/windows.svg" \
    >"$OUT/bench.json" 2>"$OUT/bench.log" &
BENCH_PID=$!
wait "$BENCH_PID" || BENCH_STATUS=$?
BENCH_PID=""

kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
END_RSS_KB="$(rss_kb "$SERVER_PID")"
HWM_KB="$(hwm_kb "$SERVER_PID")"
END_DISK="$(disk_bytes)"
printf '%.1f,%s,%s\n' "$(awk -v a="$(now)" -v b="$RUN_START" 'BEGIN { print a - b }')" \
    "$END_RSS_KB" "$END_DISK" >>"$SAMPLES"
stop_server
RUN_STOP_STATUS="$STOP_STATUS"
[[ "$BENCH_STATUS" -eq 0 ]] || die "bookd bench failed ($BENCH_STATUS); see $OUT/bench.log"

PEAK_SAMPLED_KB="$(awk -F, 'NR > 1 && $2 > max { max = $2 } END { print max + 0 }' "$SAMPLES")"

RECOVERY=""
if [[ "$RECOVER" -eq 1 ]]; then
    start_server "$OUT/recover.log"
    RECOVERY_S="$(awk -v a="$READY_AT" -v b="$STARTED_AT" 'BEGIN { printf "%.3f", a - b }')"
    RECOVERY_RSS_KB="$(rss_kb "$SERVER_PID")"
    stop_server
    RECOVERY_STOP="$STOP_STATUS"
    RECOVERY="$(printf 'recovery          %s s to ready, RSS after ready %s MiB, exit %s' \
        "$RECOVERY_S" "$(awk -v k="$RECOVERY_RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')" "$RECOVERY_STOP")"
fi

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
{
    jq -r '
        (.windows | length) as $n
        | (if $n > 0 then .duration_s / $n else 0 end) as $iv
        | "workload          \(.workload), \(.clients) clients, \(.connections) connections, \(.duration_s) s",
          "commands          \(.commands) (\(.commands_per_s | floor)/s), p99 \(.latency_us.p99) µs",
          (if $n == 0 then "windows           none" else
            ([.windows[] | .commands / $iv] | sort) as $s
            | (if $n % 2 == 1 then $s[($n - 1) / 2] else ($s[$n / 2 - 1] + $s[$n / 2]) / 2 end) as $median
            | (.windows | min_by(.commands)) as $worst
            | (.windows | max_by(.p99_us)) as $slowest
            | "windows           \($n) × \($iv) s",
              "median window     \($median | floor) commands/s",
              "worst window      \($worst.commands / $iv | floor) commands/s at \($worst.t_s) s: \(if $median > 0 then ($worst.commands / $iv / $median * 1000 | floor) / 1000 else 0 end) × the median",
              "highest p99       \($slowest.p99_us) µs (window at \($slowest.t_s) s)"
          end),
          "max answer        \(.latency_us.max) µs",
          "unanswered        \(.unanswered)",
          (if .workload == "sell-out" then
            "sell-out          \(.success.units_sold) of \(.success.units) units sold, sold out at \(.success.sold_out_at_s // "never") s, \(.success.refusals_per_s_after_sell_out // "no") holds refused/s after"
          else empty end)
    ' "$OUT/bench.json"
    # The kernel's high-water mark and the samples are each approximate: the larger of the two.
    PEAK_KB=$((HWM_KB > PEAK_SAMPLED_KB ? HWM_KB : PEAK_SAMPLED_KB))
    echo "peak RSS          $(mib "$PEAK_KB") MiB (high-water mark $(mib "$HWM_KB") MiB, highest sample $(mib "$PEAK_SAMPLED_KB") MiB)"
    echo "RSS at the end    $(mib "$END_RSS_KB") MiB"
    echo "disk used         $(awk -v b="$END_DISK" 'BEGIN { printf "%.1f", b / 1048576 }') MiB"
    echo "node exit         $RUN_STOP_STATUS after SIGTERM"
    [[ -z "$RECOVERY" ]] || echo "$RECOVERY"
    echo "files             $OUT/{bench.json,windows.svg,samples.csv,serve.log}"
} | tee "$OUT/summary.txt"
