//! The three workloads over HTTP/JSON with `/v1/batch`, against a running `bookd serve`: each of
//! `--connections` keep-alive connections carries `--clients / --connections` closed-loop clients
//! whose next commands travel together in one batch; every command's latency is its batch's
//! round trip. For issue 4's figures; the binary protocol is the fast path (`bookd bench`).
//!
//! Run: `cargo run --release -p bookd-bench --example http_batch -- --addr 127.0.0.1:8080
//! --workload hotel --clients 1024 --connections 64 --seconds 10`

use std::time::{Duration, Instant};

use bookd_bench::{ClientLoop, Counters, Workload};
use bookd_engine::{Command, Item};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest response accepted, in bytes.
const RESPONSE_SIZE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// What stopped the example: a flag, the connection, or an answer.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("no workload {0}")]
    UnknownWorkload(String),
    #[error("{flag}: {source}")]
    NotANumber { flag: &'static str, source: std::num::ParseIntError },
    #[error("unknown flag {0}")]
    UnknownFlag(String),
    #[error("need at least one client per connection")]
    TooFewClients,
    #[error("connect {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("connection closed")]
    Closed,
    #[error("no usable Content-Length")]
    NoContentLength,
    #[error("bad batch reply: {0}")]
    BadReply(#[source] serde_json::Error),
    #[error("setup refused with {0}")]
    SetupRefused(u16),
    #[error(transparent)]
    Histogram(#[from] hdrhistogram::CreationError),
    #[error("a batch answer has the wrong number of results")]
    ResultCount,
}

struct Args {
    addr: String,
    workload: Workload,
    clients: usize,
    connections: usize,
    seconds: u64,
    setup: bool,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        addr: "127.0.0.1:8080".into(),
        workload: Workload::Hotel,
        clients: 1024,
        connections: 64,
        seconds: 10,
        setup: true,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| Error::MissingValue(flag.clone()));
        let number = |flag: &'static str| {
            move |source: std::num::ParseIntError| Error::NotANumber { flag, source }
        };
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--workload" => {
                let name = value()?;
                args.workload = Workload::from_name(&name).ok_or(Error::UnknownWorkload(name))?;
            }
            "--clients" => args.clients = value()?.parse().map_err(number("--clients"))?,
            "--connections" => {
                args.connections = value()?.parse().map_err(number("--connections"))?
            }
            "--seconds" => args.seconds = value()?.parse().map_err(number("--seconds"))?,
            "--no-setup" => args.setup = false,
            other => return Err(Error::UnknownFlag(other.to_string())),
        }
    }
    if args.connections == 0 || args.clients < args.connections {
        return Err(Error::TooFewClients);
    }
    Ok(args)
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    stream: BufReader<TcpStream>,
    addr: String,
    body: Vec<u8>,
}

impl Connection {
    async fn open(addr: &str) -> Result<Connection, Error> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Connect { addr: addr.to_string(), source })?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream: BufReader::new(stream), addr: addr.into(), body: Vec::new() })
    }

    /// POSTs `body` to `/v1/batch`; returns the response body.
    async fn batch(&mut self, body: &[u8]) -> Result<&[u8], Error> {
        let head = format!(
            "POST /v1/batch HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(Error::Closed);
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let length =
            length.filter(|&n| n <= RESPONSE_SIZE_MAX_BYTES).ok_or(Error::NoContentLength)?;
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok(&self.body)
    }
}

/// Appends `command` as one `/v1/batch` element.
fn push_json(out: &mut String, command: &Command) {
    use std::fmt::Write as _;
    let _ = match command {
        Command::PutResource(c) => write!(
            out,
            r#"{{"op":"put_resource","partition":"{}","id":"{}","capacity":{}}}"#,
            c.partition, c.resource, c.capacity
        ),
        Command::Hold(c) => {
            let _ = write!(
                out,
                r#"{{"op":"hold","partition":"{}","id":"{}","items":["#,
                c.partition, c.hold
            );
            for (index, Item { resource, quantity }) in c.items.iter().enumerate() {
                let comma = if index == 0 { "" } else { "," };
                let _ = write!(out, r#"{comma}{{"resource":"{resource}","quantity":{quantity}}}"#);
            }
            let ttl = c.ttl_ms.map(|t| format!(r#","ttl_ms":{t}"#)).unwrap_or_default();
            write!(out, "]{ttl}}}")
        }
        Command::Confirm(c) => {
            write!(out, r#"{{"op":"confirm","partition":"{}","id":"{}"}}"#, c.partition, c.hold)
        }
        Command::Release(c) => {
            write!(out, r#"{{"op":"release","partition":"{}","id":"{}"}}"#, c.partition, c.hold)
        }
        Command::Cancel(c) => {
            write!(out, r#"{{"op":"cancel","partition":"{}","id":"{}"}}"#, c.partition, c.hold)
        }
        Command::Extend(c) => write!(
            out,
            r#"{{"op":"extend","partition":"{}","id":"{}","ttl_ms":{}}}"#,
            c.partition, c.hold, c.ttl_ms
        ),
        Command::DeletePartition(c) => {
            write!(out, r#"{{"op":"delete_partition","partition":"{}"}}"#, c.partition)
        }
    };
}

#[derive(serde::Deserialize)]
struct BatchReply {
    results: Vec<BatchResult>,
}

#[derive(serde::Deserialize)]
struct BatchResult {
    status: u16,
}

/// Statuses of a `/v1/batch` answer.
fn statuses(body: &[u8]) -> Result<Vec<u16>, Error> {
    let reply: BatchReply = serde_json::from_slice(body).map_err(Error::BadReply)?;
    Ok(reply.results.into_iter().map(|r| r.status).collect())
}

async fn setup(addr: &str, workload: Workload) -> Result<(), Error> {
    let mut connection = Connection::open(addr).await?;
    let mut commands = workload.setup().peekable();
    let mut body = String::new();
    while commands.peek().is_some() {
        body.clear();
        body.push_str(r#"{"commands":["#);
        // 500 elements stay well under the 64 KiB body limit.
        for (index, command) in commands.by_ref().take(500).enumerate() {
            if index > 0 {
                body.push(',');
            }
            push_json(&mut body, &command);
        }
        body.push_str("]}");
        let reply = connection.batch(body.as_bytes()).await?;
        if let Some(status) = statuses(reply)?.into_iter().find(|s| !matches!(s, 200 | 201)) {
            return Err(Error::SetupRefused(status));
        }
    }
    Ok(())
}

struct Outcome {
    counters: Counters,
    latency_us: hdrhistogram::Histogram<u64>,
}

async fn connection_loop(
    args: &Args,
    index: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Result<Outcome, Error> {
    let per_connection = args.clients / args.connections;
    let prefix = format!("h{}-{index}-", start.elapsed().as_nanos() % 1_000_000_007);
    let mut clients: Vec<ClientLoop> = (0..per_connection)
        .map(|c| {
            args.workload.client(index as u64, c as u32).with_id_prefix(&format!("{prefix}{c}-"))
        })
        .collect();
    let mut connection = Connection::open(&args.addr).await?;
    let mut latency_us = hdrhistogram::Histogram::new(3)?;
    let mut counters = Counters::default();
    let mut body = String::new();
    while Instant::now() < end {
        body.clear();
        body.push_str(r#"{"commands":["#);
        for (c, client) in clients.iter_mut().enumerate() {
            if c > 0 {
                body.push(',');
            }
            push_json(&mut body, client.next_command());
        }
        body.push_str("]}");
        let sent = Instant::now();
        let reply = connection.batch(body.as_bytes()).await?;
        let statuses = statuses(reply)?;
        let elapsed_us = sent.elapsed().as_micros() as u64;
        if statuses.len() != clients.len() {
            return Err(Error::ResultCount);
        }
        let measuring = sent >= measure_from;
        for (client, status) in clients.iter_mut().zip(statuses) {
            client.on_reply(matches!(status, 200 | 201));
            if measuring {
                let _ = latency_us.record(elapsed_us.max(1));
            }
        }
        if measuring {
            for client in &mut clients {
                counters.add(&client.take_counters());
            }
        } else {
            for client in &mut clients {
                client.take_counters();
            }
        }
    }
    Ok(Outcome { counters, latency_us })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("http_batch: {error}");
            std::process::exit(2);
        }
    };
    if args.setup {
        if let Err(error) = setup(&args.addr, args.workload).await {
            eprintln!("http_batch: setup: {error}");
            std::process::exit(1);
        }
    }
    let args = std::sync::Arc::new(args);
    let start = Instant::now();
    let warmup = Duration::from_secs(2);
    let measure_from = start + warmup;
    let end = measure_from + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.connections)
        .map(|index| {
            let args = args.clone();
            tokio::spawn(
                async move { connection_loop(&args, index, start, measure_from, end).await },
            )
        })
        .collect();
    let mut counters = Counters::default();
    let mut latency_us =
        hdrhistogram::Histogram::<u64>::new(3).unwrap_or_else(|_| std::process::exit(1));
    for task in tasks {
        match task.await {
            Ok(Ok(outcome)) => {
                counters.add(&outcome.counters);
                let _ = latency_us.add(&outcome.latency_us);
            }
            Ok(Err(error)) => eprintln!("http_batch: connection failed: {error}"),
            Err(error) => eprintln!("http_batch: task failed: {error}"),
        }
    }
    let seconds = args.seconds as f64;
    println!(
        "{} over HTTP /v1/batch: {} clients on {} connections, {} s: {:.0} commands/s, {:.0} {}/s; \
         latency per command p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        args.workload.name(),
        args.clients,
        args.connections,
        args.seconds,
        counters.commands as f64 / seconds,
        args.workload.successes(&counters) as f64 / seconds,
        args.workload.success_name(),
        latency_us.value_at_quantile(0.5),
        latency_us.value_at_quantile(0.99),
        latency_us.value_at_quantile(0.999),
        latency_us.max(),
    );
}
