//! The PostgreSQL peer: hold/confirm/release/cancel as PL/pgSQL functions over a `resources`
//! and a `holds` table with the contract's semantics (all or nothing, no oversell — also a CHECK
//! constraint — idempotent hold ids), called over a pool of connections that gives each
//! connection to one client at a time (more clients queue, as behind a pooler); and a local
//! PostgreSQL started on loopback in a temporary directory (as an unprivileged user when root).
//!
//! Deadlock freedom: every function locks the resource rows it will change in id order
//! (`ORDER BY id FOR UPDATE`) before changing any.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bookd_engine::Command;
use tokio::sync::Semaphore;
use tokio_postgres::{NoTls, Statement};

use super::cpu::pin_command;
use super::redis::{find_in_path, free_port};
use super::{Answer, BenchError, Driver};

const SCHEMA_SQL: &str = r#"
CREATE TABLE IF NOT EXISTS resources (
  partition text NOT NULL, id text NOT NULL, capacity bigint NOT NULL,
  held bigint NOT NULL DEFAULT 0, confirmed bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (partition, id), CHECK (held >= 0 AND confirmed >= 0 AND held + confirmed <= capacity));
CREATE TABLE IF NOT EXISTS holds (
  partition text NOT NULL, id text NOT NULL, status text NOT NULL,
  resources text[] NOT NULL, quantities bigint[] NOT NULL, expires_at_ms bigint NOT NULL,
  PRIMARY KEY (partition, id));
CREATE OR REPLACE FUNCTION bookd_now_ms() RETURNS bigint LANGUAGE sql AS
  $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
CREATE OR REPLACE FUNCTION bookd_hold(p text, h text, rs text[], qs bigint[], ttl_ms bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  old holds%ROWTYPE;
  granted int;
BEGIN
  SELECT * INTO old FROM holds WHERE partition = p AND id = h;
  IF FOUND THEN
    IF old.resources = rs AND old.quantities = qs THEN RETURN 'existing'; END IF;
    RETURN 'hold_id_conflict';
  END IF;
  PERFORM 1 FROM resources WHERE partition = p AND id = ANY(rs) ORDER BY id FOR UPDATE;
  SELECT count(*) INTO granted FROM resources r JOIN unnest(rs, qs) AS x(rid, q) ON r.id = x.rid
    WHERE r.partition = p AND r.capacity - r.held - r.confirmed >= x.q;
  IF granted <> cardinality(rs) THEN
    IF (SELECT count(*) FROM resources WHERE partition = p AND id = ANY(rs)) <> cardinality(rs) THEN
      RETURN 'resource_not_found';
    END IF;
    RETURN 'insufficient_capacity';
  END IF;
  UPDATE resources r SET held = r.held + x.q FROM unnest(rs, qs) AS x(rid, q)
    WHERE r.partition = p AND r.id = x.rid;
  INSERT INTO holds VALUES (p, h, 'held', rs, qs, bookd_now_ms() + ttl_ms);
  RETURN 'ok';
END $$;
CREATE OR REPLACE FUNCTION bookd_move(p text, h text, action text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  hold holds%ROWTYPE;
BEGIN
  SELECT * INTO hold FROM holds WHERE partition = p AND id = h FOR UPDATE;
  IF NOT FOUND THEN RETURN 'hold_not_found'; END IF;
  PERFORM 1 FROM resources WHERE partition = p AND id = ANY(hold.resources) ORDER BY id FOR UPDATE;
  IF hold.status = 'held' AND bookd_now_ms() >= hold.expires_at_ms THEN
    UPDATE resources r SET held = r.held - x.q FROM unnest(hold.resources, hold.quantities) AS x(rid, q)
      WHERE r.partition = p AND r.id = x.rid;
    UPDATE holds SET status = 'expired' WHERE partition = p AND id = h;
    hold.status := 'expired';
  END IF;
  IF action = 'confirm' THEN
    IF hold.status = 'confirmed' THEN RETURN 'ok'; END IF;
    IF hold.status <> 'held' THEN RETURN 'hold_' || hold.status; END IF;
    UPDATE resources r SET held = r.held - x.q, confirmed = r.confirmed + x.q
      FROM unnest(hold.resources, hold.quantities) AS x(rid, q) WHERE r.partition = p AND r.id = x.rid;
    UPDATE holds SET status = 'confirmed' WHERE partition = p AND id = h;
  ELSIF action = 'release' THEN
    IF hold.status IN ('released', 'expired') THEN RETURN 'ok'; END IF;
    IF hold.status <> 'held' THEN RETURN 'hold_' || hold.status; END IF;
    UPDATE resources r SET held = r.held - x.q
      FROM unnest(hold.resources, hold.quantities) AS x(rid, q) WHERE r.partition = p AND r.id = x.rid;
    UPDATE holds SET status = 'released' WHERE partition = p AND id = h;
  ELSE
    IF hold.status = 'cancelled' THEN RETURN 'ok'; END IF;
    IF hold.status = 'held' THEN RETURN 'hold_not_confirmed'; END IF;
    IF hold.status <> 'confirmed' THEN RETURN 'hold_' || hold.status; END IF;
    UPDATE resources r SET confirmed = r.confirmed - x.q
      FROM unnest(hold.resources, hold.quantities) AS x(rid, q) WHERE r.partition = p AND r.id = x.rid;
    UPDATE holds SET status = 'cancelled' WHERE partition = p AND id = h;
  END IF;
  RETURN 'ok';
END $$;
CREATE OR REPLACE FUNCTION bookd_confirm(p text, h text) RETURNS text LANGUAGE sql AS
  $$ SELECT bookd_move(p, h, 'confirm') $$;
CREATE OR REPLACE FUNCTION bookd_release(p text, h text) RETURNS text LANGUAGE sql AS
  $$ SELECT bookd_move(p, h, 'release') $$;
CREATE OR REPLACE FUNCTION bookd_cancel(p text, h text) RETURNS text LANGUAGE sql AS
  $$ SELECT bookd_move(p, h, 'cancel') $$;
"#;

const PUT_SQL: &str = "INSERT INTO resources (partition, id, capacity) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
     ON CONFLICT (partition, id) DO UPDATE SET capacity = EXCLUDED.capacity";

/// What went wrong with PostgreSQL: its server, a connection, a statement or the pool.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL is not installed (apt-get install postgresql: initdb and postgres under \
         /usr/lib/postgresql/*/bin)"
    )]
    NotInstalled,
    /// A tool of the server's setup (`what`: `chown`, `initdb`) could not be run.
    #[error("{what}: {source}")]
    Tool { what: &'static str, source: std::io::Error },
    /// A tool of the server's setup exited with an error; `stderr` is what it said.
    #[error("{what} failed: {stderr}")]
    ToolFailed { what: &'static str, stderr: String },
    #[error("cannot start postgres: {0}")]
    Start(#[source] std::io::Error),
    #[error("postgres did not accept connections within 30 s")]
    NotReady,
    #[error("postgres: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("schema: {0}")]
    Schema(#[source] tokio_postgres::Error),
    #[error("prepare: {0}")]
    Prepare(#[source] tokio_postgres::Error),
    #[error("pool closed")]
    PoolClosed,
    #[error("pool poisoned")]
    PoolPoisoned,
    #[error("no idle connection behind a permit")]
    NoIdleConnection,
    #[error("postgres setup: {0}")]
    Setup(#[source] tokio_postgres::Error),
}

/// One connection and its prepared statements.
struct Connection {
    client: tokio_postgres::Client,
    hold: Statement,
    confirm: Statement,
    release: Statement,
    cancel: Statement,
    put: Statement,
}

struct Pool {
    idle: Mutex<Vec<Connection>>,
    /// One permit per idle connection; FIFO, so waiting clients queue as behind a pooler.
    permits: Semaphore,
}

/// A pool of PostgreSQL connections; a command borrows one for its single statement.
#[derive(Clone)]
pub struct PostgresDriver {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PostgresDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDriver").finish_non_exhaustive()
    }
}

impl PostgresDriver {
    /// Opens `connections` connections with `config` (a libpq-style string), creates the
    /// schema and prepares the statements.
    pub async fn connect(
        config: &str,
        connections: usize,
    ) -> Result<PostgresDriver, PostgresError> {
        let mut idle = Vec::with_capacity(connections.max(1));
        for index in 0..connections.max(1) {
            let (client, connection) =
                tokio_postgres::connect(config, NoTls).await.map_err(PostgresError::Connect)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            if index == 0 {
                client.batch_execute(SCHEMA_SQL).await.map_err(PostgresError::Schema)?;
            }
            let prepare = |sql: &'static str| {
                let client = &client;
                async move { client.prepare(sql).await.map_err(PostgresError::Prepare) }
            };
            let hold = prepare("SELECT bookd_hold($1, $2, $3, $4, $5)").await?;
            let confirm = prepare("SELECT bookd_confirm($1, $2)").await?;
            let release = prepare("SELECT bookd_release($1, $2)").await?;
            let cancel = prepare("SELECT bookd_cancel($1, $2)").await?;
            let put = prepare(PUT_SQL).await?;
            idle.push(Connection { client, hold, confirm, release, cancel, put });
        }
        let permits = Semaphore::new(idle.len());
        Ok(PostgresDriver { pool: Arc::new(Pool { idle: Mutex::new(idle), permits }) })
    }

    /// Borrows an idle connection, waiting in line when all are busy; it goes back to the pool
    /// when the guard is dropped.
    async fn checkout(&self) -> Result<Checkout<'_>, PostgresError> {
        let permit = self.pool.permits.acquire().await.map_err(|_| PostgresError::PoolClosed)?;
        let connection = self
            .pool
            .idle
            .lock()
            .map_err(|_| PostgresError::PoolPoisoned)?
            .pop()
            .ok_or(PostgresError::NoIdleConnection)?;
        Ok(Checkout { pool: &self.pool, connection: Some(connection), _permit: permit })
    }
}

/// A borrowed connection; returned to the pool (before its permit) when dropped.
struct Checkout<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let (Some(connection), Ok(mut idle)) = (self.connection.take(), self.pool.idle.lock()) {
            idle.push(connection);
        }
    }
}

impl std::ops::Deref for Checkout<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match &self.connection {
            Some(connection) => connection,
            None => unreachable!("a checkout holds its connection until dropped"),
        }
    }
}

impl Driver for PostgresDriver {
    async fn execute(&self, command: &Command) -> Answer {
        let connection = match self.checkout().await {
            Ok(connection) => connection,
            Err(error) => return Answer::Failed(error.to_string()),
        };
        let client = &connection.client;
        let row = match command {
            Command::Hold(hold) => {
                let resources: Vec<&str> =
                    hold.items.iter().map(|item| item.resource.as_str()).collect();
                let quantities: Vec<i64> =
                    hold.items.iter().map(|item| item.quantity as i64).collect();
                let ttl = hold.ttl_ms.unwrap_or(crate::HOLD_TTL_MS) as i64;
                let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                    [&hold.partition, &hold.hold, &resources, &quantities, &ttl];
                client.query_one(&connection.hold, &args).await
            }
            Command::Confirm(c) => {
                client.query_one(&connection.confirm, &[&c.partition, &c.hold]).await
            }
            Command::Release(c) => {
                client.query_one(&connection.release, &[&c.partition, &c.hold]).await
            }
            Command::Cancel(c) => {
                client.query_one(&connection.cancel, &[&c.partition, &c.hold]).await
            }
            other => return Answer::Failed(format!("postgres peer does not run {}", other.op())),
        };
        match row.and_then(|row| row.try_get::<_, String>(0)) {
            Ok(code) if code == "ok" || code == "existing" => Answer::Ok,
            Ok(code) => Answer::Refused(super::redis::static_code(code.as_bytes())),
            Err(error) => Answer::Failed(format!("postgres: {error}")),
        }
    }

    async fn setup_batch(&self, commands: Vec<Command>) -> Result<(), BenchError> {
        let (mut partitions, mut ids, mut capacities) = (Vec::new(), Vec::new(), Vec::new());
        for command in &commands {
            let Command::PutResource(put) = command else {
                return Err(BenchError::SetupCommand(command.op()));
            };
            partitions.push(put.partition.as_str());
            ids.push(put.resource.as_str());
            capacities.push(put.capacity as i64);
        }
        let connection = self.checkout().await?;
        connection
            .client
            .execute(&connection.put, &[&partitions, &ids, &capacities])
            .await
            .map(|_| ())
            .map_err(|error| PostgresError::Setup(error).into())
    }
}

/// A PostgreSQL server started for one comparison, stopped when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    child: Child,
    bin: PathBuf,
    data: PathBuf,
    /// Set when root: the unprivileged user the server runs as.
    user: Option<&'static str>,
    /// libpq-style connection settings.
    pub config: String,
    _dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Runs `initdb` and starts `postgres` on a free loopback port with `synchronous_commit`
    /// on (durable) or off (relaxed), on CPU `cpu` only if given (`--pin`; every process of
    /// the server inherits it). As root, the server runs as `nobody` (via `runuser`). `Err`
    /// says why not (for example, not installed).
    pub async fn start(relaxed: bool, cpu: Option<usize>) -> Result<PostgresServer, BenchError> {
        let bin = postgres_bin().ok_or(PostgresError::NotInstalled)?;
        let dir = tempfile::tempdir().map_err(BenchError::TempDir)?;
        let data = dir.path().join("data");
        let user = if is_root() { Some("nobody") } else { None };
        if let Some(user) = user {
            run(Process::new("chown").arg(user).arg(dir.path()), "chown")?;
        }
        let mut initdb = as_user(user, &bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8"]);
        initdb.args(["--locale=C", "--no-sync"]);
        run(&mut initdb, "initdb")?;
        let port = free_port()?;
        let mut postgres = as_user(user, &bin.join("postgres"));
        postgres.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(dir.path());
        let synchronous_commit = if relaxed { "off" } else { "on" };
        for setting in [
            "listen_addresses=127.0.0.1".to_string(),
            format!("synchronous_commit={synchronous_commit}"),
            "fsync=on".into(),
            "max_connections=300".into(),
            "shared_buffers=1GB".into(),
            "max_wal_size=4GB".into(),
        ] {
            postgres.arg("-c").arg(setting);
        }
        if let Some(cpu) = cpu {
            pin_command(&mut postgres, cpu);
        }
        let child = postgres
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(PostgresError::Start)?;
        let config = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let server = PostgresServer { child, bin, data, user, config, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((client, connection)) = tokio_postgres::connect(&server.config, NoTls).await {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                if client.simple_query("SELECT 1").await.is_ok() {
                    return Ok(server);
                }
            }
            if Instant::now() >= deadline {
                return Err(PostgresError::NotReady.into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id the server was started as: the postmaster, or `runuser` as root, whose
    /// child the postmaster is. Either way every process of the server descends from it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let mut stop = as_user(self.user, &self.bin.join("pg_ctl"));
        stop.arg("-D").arg(&self.data).args(["stop", "-m", "fast", "-w", "-t", "20"]);
        let stopped = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !matches!(stopped, Ok(status) if status.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb` and `postgres`, or the one on `PATH`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).or_else(|| {
        let initdb = find_in_path("initdb")?;
        let bin = std::fs::canonicalize(initdb).ok()?.parent()?.to_path_buf();
        bin.join("postgres").is_file().then_some(bin)
    })
}

/// Whether this process runs as root (the owner of `/proc/self` is the process's user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|metadata| metadata.uid() == 0).unwrap_or(false)
}

/// `program`, run as `user` through `runuser` when one is given.
fn as_user(user: Option<&str>, program: &Path) -> Process {
    match user {
        Some(user) => {
            let mut command = Process::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        None => Process::new(program),
    }
}

fn run(command: &mut Process, what: &'static str) -> Result<(), PostgresError> {
    let output = command.output().map_err(|source| PostgresError::Tool { what, source })?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(PostgresError::ToolFailed { what, stderr })
    }
}
