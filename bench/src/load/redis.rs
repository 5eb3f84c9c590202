//! The Redis peer: a small pipelined RESP client (each connection one writer and one reader task,
//! answers matched in order) with hold/confirm/release/cancel as Lua scripts (SCRIPT LOAD, then
//! EVALSHA), and a local `redis-server` started on loopback in a temporary directory.
//!
//! Data: resource `r:{partition}:{id}` is a hash `cap`, `held`, `conf`; hold `h:{partition}:{id}`
//! is a hash `st` (status), `it` (`"resource quantity …"`), `exp` (ms). Each script runs
//! atomically, so a hold is all or nothing and `held + conf ≤ cap` always; a hold id that exists
//! answers `existing` for the same items, `hold_id_conflict` otherwise.

use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_engine::Command;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::cpu::pin_command;
use super::{Answer, BenchError, Driver};

/// Requests queued on one connection before callers wait.
const QUEUE_REQUESTS_MAX: usize = 4_096;
/// Requests sent but not yet answered on one connection.
const PENDING_REQUESTS_MAX: usize = 65_536;
/// Largest bulk reply accepted (ours are a few bytes).
const BULK_SIZE_MAX_BYTES: usize = 1 << 20;
/// Requests written together in one `write`.
const WRITE_BATCH_REQUESTS_MAX: usize = 1_024;

const HOLD_LUA: &str = r#"
local items = ARGV[3]
local existing = redis.call('HGET', KEYS[1], 'it')
if existing then
  if existing == items then return 'existing' end
  return 'hold_id_conflict'
end
local keys, quantities = {}, {}
for resource, quantity in string.gmatch(items, '(%S+) (%S+)') do
  local key = 'r:' .. ARGV[1] .. ':' .. resource
  local row = redis.call('HMGET', key, 'cap', 'held', 'conf')
  if not row[1] then return 'resource_not_found' end
  quantity = tonumber(quantity)
  if tonumber(row[1]) - tonumber(row[2]) - tonumber(row[3]) < quantity then
    return 'insufficient_capacity'
  end
  keys[#keys + 1] = key
  quantities[#quantities + 1] = quantity
end
for i = 1, #keys do redis.call('HINCRBY', keys[i], 'held', quantities[i]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'st', 'held', 'it', items, 'exp', now + tonumber(ARGV[2]))
return 'ok'
"#;

/// Shared by confirm, release and cancel: moves a hold's units between `held` and `conf`.
const MOVE_LUA: &str = r#"
local function move(items, held, conf)
  for resource, quantity in string.gmatch(items, '(%S+) (%S+)') do
    local key = 'r:' .. ARGV[1] .. ':' .. resource
    if held ~= 0 then redis.call('HINCRBY', key, 'held', held * tonumber(quantity)) end
    if conf ~= 0 then redis.call('HINCRBY', key, 'conf', conf * tonumber(quantity)) end
  end
end
local row = redis.call('HMGET', KEYS[1], 'st', 'it', 'exp')
local status, items = row[1], row[2]
if not status then return 'hold_not_found' end
if status == 'held' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now >= tonumber(row[3]) then
    move(items, -1, 0)
    redis.call('HSET', KEYS[1], 'st', 'expired')
    status = 'expired'
  end
end
"#;

const CONFIRM_LUA: &str = r#"
if status == 'confirmed' then return 'ok' end
if status ~= 'held' then return 'hold_' .. status end
move(items, -1, 1)
redis.call('HSET', KEYS[1], 'st', 'confirmed')
return 'ok'
"#;

const RELEASE_LUA: &str = r#"
if status == 'released' or status == 'expired' then return 'ok' end
if status ~= 'held' then return 'hold_' .. status end
move(items, -1, 0)
redis.call('HSET', KEYS[1], 'st', 'released')
return 'ok'
"#;

const CANCEL_LUA: &str = r#"
if status == 'cancelled' then return 'ok' end
if status == 'held' then return 'hold_not_confirmed' end
if status ~= 'confirmed' then return 'hold_' .. status end
move(items, 0, -1)
redis.call('HSET', KEYS[1], 'st', 'cancelled')
return 'ok'
"#;

const PUT_LUA: &str = r#"
redis.call('HSET', KEYS[1], 'cap', ARGV[1])
redis.call('HSETNX', KEYS[1], 'held', 0)
redis.call('HSETNX', KEYS[1], 'conf', 0)
return 'ok'
"#;

/// What went wrong with Redis: its server, a connection, or a reply.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis-server is not installed (apt-get install redis-server)")]
    NotInstalled,
    #[error("cannot start redis-server: {0}")]
    Start(#[source] std::io::Error),
    #[error("redis-server did not accept connections within 10 s")]
    NotReady,
    #[error("redis at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    /// The connection's tasks are gone: a request could not be queued or answered.
    #[error("redis connection closed")]
    Closed,
    /// An earlier reply on the connection failed, so the replies after it are out of step.
    #[error("redis connection lost")]
    Lost,
    #[error(transparent)]
    Read(std::io::Error),
    #[error("redis closed the connection")]
    EndOfStream,
    #[error("bad integer {0:?}")]
    BadInteger(String),
    #[error("bad bulk size {0:?}")]
    BadBulkSize(String),
    #[error("bulk reply of {0} bytes")]
    BulkTooLarge(usize),
    #[error("unexpected RESP type byte {0:#x}")]
    TypeByte(u8),
    #[error(transparent)]
    ScriptSha(#[from] std::string::FromUtf8Error),
    /// SCRIPT LOAD answered something else than a SHA1 (the reply, debug-printed).
    #[error("SCRIPT LOAD answered {0}")]
    ScriptLoad(String),
    /// A setup script answered something else than `ok` (the reply, debug-printed).
    #[error("redis setup answered {0}")]
    Setup(String),
}

/// One RESP reply (arrays are not needed by these scripts).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
}

struct Request {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Resp, RedisError>>,
}

/// The SHA1s of the loaded scripts.
#[derive(Debug, Default)]
struct Scripts {
    hold: String,
    confirm: String,
    release: String,
    cancel: String,
    put: String,
}

/// A pool of pipelined connections to one Redis; clients are pinned to a connection.
#[derive(Debug, Clone)]
pub struct RedisDriver {
    connections: Arc<Vec<mpsc::Sender<Request>>>,
    scripts: Arc<Scripts>,
    pin: Option<usize>,
    next: Arc<AtomicUsize>,
}

impl RedisDriver {
    /// Opens `connections` connections to `addr` and loads the scripts.
    pub async fn connect(addr: &str, connections: usize) -> Result<RedisDriver, RedisError> {
        let mut senders = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|source| RedisError::Connect { addr: addr.to_string(), source })?;
            let _ = stream.set_nodelay(true);
            senders.push(spawn_connection(stream));
        }
        let mut driver = RedisDriver {
            connections: Arc::new(senders),
            scripts: Arc::new(Scripts::default()),
            pin: None,
            next: Arc::new(AtomicUsize::new(0)),
        };
        let load = |body: String| {
            let driver = driver.clone();
            async move {
                match driver.call(&[b"SCRIPT", b"LOAD", body.as_bytes()]).await? {
                    Resp::Bulk(Some(sha)) => Ok(String::from_utf8(sha)?),
                    other => Err(RedisError::ScriptLoad(format!("{other:?}"))),
                }
            }
        };
        let scripts = Scripts {
            hold: load(HOLD_LUA.to_string()).await?,
            confirm: load(format!("{MOVE_LUA}{CONFIRM_LUA}")).await?,
            release: load(format!("{MOVE_LUA}{RELEASE_LUA}")).await?,
            cancel: load(format!("{MOVE_LUA}{CANCEL_LUA}")).await?,
            put: load(PUT_LUA.to_string()).await?,
        };
        driver.scripts = Arc::new(scripts);
        Ok(driver)
    }

    /// Queues one request; the receiver gets its reply.
    async fn send(&self, args: &[&[u8]]) -> Result<ReplyReceiver, RedisError> {
        let mut bytes =
            Vec::with_capacity(16 + args.iter().map(|arg| arg.len() + 16).sum::<usize>());
        encode(args, &mut bytes);
        let index = match self.pin {
            Some(index) => index,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        } % self.connections.len();
        let (reply, answer) = oneshot::channel();
        self.connections[index]
            .send(Request { bytes, reply })
            .await
            .map_err(|_| RedisError::Closed)?;
        Ok(answer)
    }

    /// Queues a workload command's script call; the receiver gets its reply.
    async fn send_command(&self, command: &Command) -> Result<ReplyReceiver, Answer> {
        let (sha, partition, hold) = match command {
            Command::Hold(hold) => (&self.scripts.hold, &hold.partition, &hold.hold),
            Command::Confirm(c) => (&self.scripts.confirm, &c.partition, &c.hold),
            Command::Release(c) => (&self.scripts.release, &c.partition, &c.hold),
            Command::Cancel(c) => (&self.scripts.cancel, &c.partition, &c.hold),
            other => return Err(Answer::Failed(format!("redis peer does not run {}", other.op()))),
        };
        let key = format!("h:{partition}:{hold}");
        let sent = if let Command::Hold(hold) = command {
            let mut items = String::with_capacity(hold.items.len() * 16);
            for item in &hold.items {
                if !items.is_empty() {
                    items.push(' ');
                }
                items.push_str(&item.resource);
                items.push(' ');
                items.push_str(&item.quantity.to_string());
            }
            let ttl = hold.ttl_ms.unwrap_or(crate::HOLD_TTL_MS).to_string();
            let args: [&[u8]; 7] = [
                b"EVALSHA",
                sha.as_bytes(),
                b"1",
                key.as_bytes(),
                partition.as_bytes(),
                ttl.as_bytes(),
                items.as_bytes(),
            ];
            self.send(&args).await
        } else {
            let args: [&[u8]; 5] =
                [b"EVALSHA", sha.as_bytes(), b"1", key.as_bytes(), partition.as_bytes()];
            self.send(&args).await
        };
        sent.map_err(|error| Answer::Failed(error.to_string()))
    }

    async fn call(&self, args: &[&[u8]]) -> Result<Resp, RedisError> {
        self.send(args).await?.await.map_err(|_| RedisError::Closed)?
    }
}

impl Driver for RedisDriver {
    fn for_client(&self, client: usize) -> Self {
        RedisDriver { pin: Some(client % self.connections.len()), ..self.clone() }
    }

    async fn execute(&self, command: &Command) -> Answer {
        match self.send_command(command).await {
            Ok(reply) => answer_of(reply.await),
            Err(answer) => answer,
        }
    }

    fn batches(&self) -> bool {
        true
    }

    /// Redis pipelining: every command is written to the pinned connection before the first
    /// reply is awaited.
    async fn execute_many(&self, commands: &[&Command]) -> Vec<Answer> {
        let mut pending = Vec::with_capacity(commands.len());
        for command in commands {
            pending.push(self.send_command(command).await);
        }
        let mut answers = Vec::with_capacity(commands.len());
        for sent in pending {
            answers.push(match sent {
                Ok(reply) => answer_of(reply.await),
                Err(answer) => answer,
            });
        }
        answers
    }

    async fn setup_batch(&self, commands: Vec<Command>) -> Result<(), BenchError> {
        let mut answers = Vec::with_capacity(commands.len());
        for command in &commands {
            let Command::PutResource(put) = command else {
                return Err(BenchError::SetupCommand(command.op()));
            };
            let key = format!("r:{}:{}", put.partition, put.resource);
            let capacity = put.capacity.to_string();
            let args: [&[u8]; 5] = [
                b"EVALSHA",
                self.scripts.put.as_bytes(),
                b"1",
                key.as_bytes(),
                capacity.as_bytes(),
            ];
            answers.push(self.send(&args).await?);
        }
        for answer in answers {
            match answer.await.map_err(|_| RedisError::Closed)? {
                Ok(Resp::Bulk(Some(ok))) if ok == b"ok" => {}
                other => return Err(RedisError::Setup(format!("{other:?}")).into()),
            }
        }
        Ok(())
    }
}

/// The receiving end of one queued request.
type ReplyReceiver = oneshot::Receiver<Result<Resp, RedisError>>;

/// A script's reply as the bench's answer.
fn answer_of(reply: Result<Result<Resp, RedisError>, oneshot::error::RecvError>) -> Answer {
    match reply {
        Ok(Ok(Resp::Bulk(Some(text)))) => match text.as_slice() {
            b"ok" | b"existing" => Answer::Ok,
            code => Answer::Refused(static_code(code)),
        },
        Ok(Ok(other)) => Answer::Failed(format!("redis answered {other:?}")),
        Ok(Err(error)) => Answer::Failed(error.to_string()),
        Err(_) => Answer::Failed(RedisError::Closed.to_string()),
    }
}

/// A refusal code as a static string (the scripts only return the contract's codes).
pub(crate) fn static_code(code: &[u8]) -> &'static str {
    const CODES: [&str; 8] = [
        "insufficient_capacity",
        "hold_id_conflict",
        "resource_not_found",
        "hold_not_found",
        "hold_expired",
        "hold_released",
        "hold_confirmed",
        "hold_cancelled",
    ];
    CODES
        .iter()
        .chain(["hold_not_confirmed"].iter())
        .find(|known| known.as_bytes() == code)
        .copied()
        .unwrap_or("refused")
}

/// Appends `args` as a RESP array of bulk strings.
fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Starts the writer and reader tasks of one connection; returns its request queue.
fn spawn_connection(stream: TcpStream) -> mpsc::Sender<Request> {
    let (read, mut write) = stream.into_split();
    let (sender, mut requests) = mpsc::channel::<Request>(QUEUE_REQUESTS_MAX);
    let (pending_sender, mut pending) =
        mpsc::channel::<oneshot::Sender<Result<Resp, RedisError>>>(PENDING_REQUESTS_MAX);
    tokio::spawn(async move {
        let mut buffer = Vec::with_capacity(64 * 1024);
        while let Some(first) = requests.recv().await {
            buffer.clear();
            let mut batch = vec![first];
            while batch.len() < WRITE_BATCH_REQUESTS_MAX {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            for request in batch {
                buffer.extend_from_slice(&request.bytes);
                if pending_sender.send(request.reply).await.is_err() {
                    return;
                }
            }
            if write.write_all(&buffer).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, read);
        while let Some(reply) = pending.recv().await {
            let answer = read_reply(&mut reader).await;
            let failed = answer.is_err();
            let _ = reply.send(answer);
            if failed {
                // The stream is out of step: fail everything still waiting.
                pending.close();
                while let Some(reply) = pending.recv().await {
                    let _ = reply.send(Err(RedisError::Lost));
                }
                return;
            }
        }
    });
    sender
}

/// Reads one RESP reply (no arrays).
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Resp, RedisError> {
    let mut line = Vec::with_capacity(64);
    let read = reader.read_until(b'\n', &mut line).await.map_err(RedisError::Read)?;
    if read < 3 || !line.ends_with(b"\r\n") {
        return Err(RedisError::EndOfStream);
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    match line[0] {
        b'+' => Ok(Resp::Simple(text)),
        b'-' => Ok(Resp::Error(text)),
        b':' => text.parse().map(Resp::Integer).map_err(|_| RedisError::BadInteger(text)),
        b'$' => {
            let size: i64 = text.parse().map_err(|_| RedisError::BadBulkSize(text))?;
            if size < 0 {
                return Ok(Resp::Bulk(None));
            }
            let size = size as usize;
            if size > BULK_SIZE_MAX_BYTES {
                return Err(RedisError::BulkTooLarge(size));
            }
            let mut bulk = vec![0; size + 2];
            reader.read_exact(&mut bulk).await.map_err(RedisError::Read)?;
            bulk.truncate(size);
            Ok(Resp::Bulk(Some(bulk)))
        }
        other => Err(RedisError::TypeByte(other)),
    }
}

/// A `redis-server` started for one comparison, stopped (killed) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port with an append-only file fsynced on every
    /// write (`always`, durable) or once a second (`everysec`, relaxed), on CPU `cpu` only if
    /// given (`--pin`). `Err` says why not (for example, not installed).
    pub async fn start(relaxed: bool, cpu: Option<usize>) -> Result<RedisServer, BenchError> {
        let binary = find_in_path("redis-server").ok_or(RedisError::NotInstalled)?;
        let dir = tempfile::tempdir().map_err(BenchError::TempDir)?;
        let port = free_port()?;
        let mut redis = Process::new(binary);
        if let Some(cpu) = cpu {
            pin_command(&mut redis, cpu);
        }
        let child = redis
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync"])
            .arg(if relaxed { "everysec" } else { "always" })
            .args(["--daemonize", "no", "--protected-mode", "no", "--maxclients", "10000"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(RedisError::Start)?;
        let server = RedisServer { child, addr: format!("127.0.0.1:{port}"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&server.addr).await.is_err() {
            if Instant::now() >= deadline {
                return Err(RedisError::NotReady.into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }

    /// The process id of `redis-server`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `name` on `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(BenchError::NoFreePort)?;
    listener.local_addr().map(|addr| addr.port()).map_err(BenchError::PortUnknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_resp_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&[b"EVALSHA", b"ab", b"1"], &mut out);
        assert_eq!(out, b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n");
    }

    #[tokio::test]
    async fn replies_of_each_kind_parse() {
        let bytes: &[u8] = b"+OK\r\n-ERR no\r\n:42\r\n$2\r\nok\r\n$-1\r\n";
        let mut reader = BufReader::new(bytes);
        assert_eq!(read_reply(&mut reader).await.unwrap(), Resp::Simple("OK".into()));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Resp::Error("ERR no".into()));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Resp::Integer(42));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Resp::Bulk(Some(b"ok".to_vec())));
        assert_eq!(read_reply(&mut reader).await.unwrap(), Resp::Bulk(None));
        assert!(matches!(read_reply(&mut reader).await, Err(RedisError::EndOfStream)));
    }

    #[test]
    fn refusal_codes_are_kept() {
        assert_eq!(static_code(b"insufficient_capacity"), "insufficient_capacity");
        assert_eq!(static_code(b"hold_not_confirmed"), "hold_not_confirmed");
        assert_eq!(static_code(b"weird"), "refused");
    }
}
