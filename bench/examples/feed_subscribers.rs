//! Change-feed subscribers for a benchmark: N binary-protocol subscriptions to a node's feed,
//! from its current end, for a number of seconds; prints one JSON line with the changes each
//! received and the latency from a change's `at_ms` (the node's stamp of its command) to its
//! arrival, p50/p99/max in ms over every change of every subscriber.
//!
//!   cargo run --release -p bookd-bench --example feed_subscribers -- ADDR SUBSCRIBERS SECONDS

use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_client::{ClientConfig, Subscription};
use hdrhistogram::Histogram;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(count), Some(seconds)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: feed_subscribers ADDR SUBSCRIBERS SECONDS");
        std::process::exit(2);
    };
    let count: usize = count.parse().unwrap_or(1);
    let seconds: u64 = seconds.parse().unwrap_or(10);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let latencies = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)
            .unwrap_or_else(|_| std::process::exit(1)),
    ));
    let mut tasks = Vec::new();
    for _ in 0..count {
        let (addr, latencies) = (addr.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut subscription = Subscription::new(&addr, ClientConfig::default(), None, None);
            let mut received = 0u64;
            let mut local = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).ok();
            while Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(Ok(next)) = tokio::time::timeout(left, subscription.next()).await else {
                    break;
                };
                received += 1;
                if let Some(local) = local.as_mut() {
                    let _ = local.record(now_ms().saturating_sub(next.change.at_ms).max(1));
                }
            }
            if let (Some(local), Ok(mut all)) = (local, latencies.lock()) {
                let _ = all.add(local);
            }
            received
        }));
    }
    let mut received = Vec::new();
    for task in tasks {
        received.push(task.await.unwrap_or(0));
    }
    let all = latencies.lock().map(|h| h.clone()).unwrap_or_else(|_| std::process::exit(1));
    println!(
        "{{\"subscribers\":{count},\"changes_received_min\":{},\"changes_received_max\":{},\"feed_latency_ms\":{{\"p50\":{},\"p99\":{},\"max\":{}}}}}",
        received.iter().min().unwrap_or(&0),
        received.iter().max().unwrap_or(&0),
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.max()
    );
}
