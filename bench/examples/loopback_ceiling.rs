//! The ceiling the machine puts on any closed-loop request/response system over loopback TCP:
//! an echo server that does nothing but read a 32-byte frame and write it back, and `--clients`
//! closed-loop clients over `--connections` connections (pipelined, one frame per round trip per
//! client), both on tokio in this process, as `bookd bench` runs an embedded node. Whatever bookd,
//! Redis or PostgreSQL do per command comes on top of this.
//!
//! Run: `cargo run --release -p bookd-bench --example loopback_ceiling -- [--clients 64]
//! [--connections 64] [--seconds 5] [--threads 2]` (`--threads`: tokio workers on each side).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FRAME_SIZE_BYTES: usize = 32;

fn main() -> std::io::Result<()> {
    let (mut clients, mut connections, mut seconds, mut threads) = (64u64, 64u64, 5u64, 2u64);
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let value = words.next().and_then(|v| v.parse::<u64>().ok());
        match (word.as_str(), value) {
            ("--clients", Some(v)) => clients = v.max(1),
            ("--connections", Some(v)) => connections = v.max(1),
            ("--seconds", Some(v)) => seconds = v.clamp(1, 600),
            ("--threads", Some(v)) => threads = v.clamp(1, 64),
            _ => {
                eprintln!(
                    "usage: loopback_ceiling [--clients N] [--connections M] [--seconds S] \
                     [--threads T]"
                );
                std::process::exit(2);
            }
        }
    }
    let connections = connections.min(clients);
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()?;
    let listener = server.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    server.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .enable_all()
        .build()?;
    let done = Arc::new(AtomicBool::new(false));
    let round_trips = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    client.block_on(async {
        let mut tasks = Vec::new();
        for connection in 0..connections {
            // Clients of this connection: its share of `clients`, each one frame in flight.
            let in_flight = clients / connections + u64::from(connection < clients % connections);
            let (done, round_trips) = (done.clone(), round_trips.clone());
            tasks.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let frames = vec![7u8; FRAME_SIZE_BYTES * in_flight as usize];
                let mut replies = vec![0u8; frames.len()];
                // All clients of a connection send together and wait together: the most
                // favourable batching a pipelined client can do.
                while !done.load(Ordering::Relaxed) {
                    stream.write_all(&frames).await?;
                    stream.read_exact(&mut replies).await?;
                    round_trips.fetch_add(in_flight, Ordering::Relaxed);
                }
                Ok::<(), std::io::Error>(())
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        done.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let total = round_trips.load(Ordering::Relaxed);
    println!(
        "{clients} clients over {connections} connections: {total} round trips in {elapsed:.1} s = {:.0} round trips/s",
        total as f64 / elapsed
    );
    Ok(())
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
