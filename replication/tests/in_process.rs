//! Replication in one process, from a seed: two or three runtimes over write-ahead logs in temp
//! directories, connected by the in-memory transport. Catch-up from empty, snapshot-first
//! catch-up, the synchronous gate, promotion, divergence after a failover (and re-seeding), a
//! lower-epoch primary refused, reconnection after a dropped connection, a standby that
//! snapshots its own log and restarts from it, a snapshot streamed in many small pieces, a
//! standby whose disk is full (records, then a snapshot) that waits and catches up by itself, and
//! (against a primary the test plays) a snapshot replaced midway or broken by a piece out of order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_engine::{Command, EngineLimits, Hold, Item, Op, OpResult, PutResource, Release};
use bookd_replication::{
    Connector, FollowEnd, MemoryTransport, ReplicatedNode, Role, Transport, TransportError,
};
use bookd_runtime::testing::TestLog;
use bookd_runtime::{
    recover_shard, DataDir, RawRead, Runtime, RuntimeConfig, ShardConfig, ShardLog,
};
use bookd_testkit::SplitMix64;
use tokio::sync::watch;

const SHARDS: usize = 2;

struct TestNode {
    node: Arc<ReplicatedNode>,
    _dir: Arc<DataDir>,
}

struct Options {
    standby_of: Option<Arc<ReplicatedNode>>,
    sync_standbys: usize,
    timeout: Duration,
    segment_size_bytes: u64,
    reseed: bool,
    snapshot_log_bytes: u64,
    /// Lets a test cut the standby's connections (see `MemoryConnector::stop`).
    connections: Option<Arc<std::sync::Mutex<watch::Receiver<bool>>>>,
    /// While set, the node's logs have no room for a primary's records or snapshots.
    full: Option<Arc<AtomicBool>>,
    /// The primary's largest snapshot piece.
    snapshot_piece_bytes: Option<usize>,
    /// A standby of a primary the test plays itself.
    scripted: Option<ScriptedConnector>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            standby_of: None,
            sync_standbys: 0,
            timeout: Duration::from_secs(10),
            segment_size_bytes: 1024 * 1024,
            reseed: false,
            snapshot_log_bytes: 1 << 30,
            connections: None,
            full: None,
            snapshot_piece_bytes: None,
            scripted: None,
        }
    }
}

/// A standby's way to its primary: a fresh memory pair per connection, the primary's side
/// served by a task.
struct MemoryConnector {
    primary: Arc<ReplicatedNode>,
    /// What ends the primary's side of the connections made from now on.
    stop: Arc<std::sync::Mutex<watch::Receiver<bool>>>,
}

impl Connector for MemoryConnector {
    type Transport = MemoryTransport;

    async fn connect(&self) -> Result<MemoryTransport, TransportError> {
        let (ours, theirs) = MemoryTransport::pair();
        let stop = self.stop.lock().unwrap().clone();
        let served = self.primary.serve_standby(theirs, "memory".into(), stop);
        tokio::spawn(served);
        Ok(ours)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

fn open(path: &Path, options: Options, stop: &watch::Receiver<bool>) -> TestNode {
    let dir = Arc::new(DataDir::open(path, Some(SHARDS), SHARDS).unwrap());
    let wal = bookd_wal::Options {
        segment_size_bytes: options.segment_size_bytes,
        ..bookd_wal::Options::default()
    };
    let mut epoch = dir.epoch().unwrap();
    let mut shards = Vec::new();
    for index in 0..SHARDS {
        let recovered = recover_shard(&dir, index, wal, EngineLimits::default()).unwrap();
        epoch = epoch.max(recovered.epoch);
        let log: Box<dyn ShardLog> = match &options.full {
            Some(full) => Box::new(TestLog::new(recovered.log).with_standby_full(full.clone())),
            None => Box::new(recovered.log),
        };
        shards.push((recovered.engine, log));
    }
    let config = RuntimeConfig {
        shard: ShardConfig {
            sync_standbys: options.sync_standbys,
            replication_timeout: options.timeout,
            snapshot_log_bytes: options.snapshot_log_bytes,
            ..RuntimeConfig::default().shard
        },
        epoch,
        writable: options.standby_of.is_none() && options.scripted.is_none(),
        ..RuntimeConfig::default()
    };
    let runtime = Arc::new(Runtime::start(config, shards).unwrap());
    let persist_dir = dir.clone();
    let persist: bookd_replication::EpochStore =
        Arc::new(move |epoch| persist_dir.set_epoch(epoch));
    if let Some(connector) = options.scripted {
        let node = ReplicatedNode::standby(runtime, 0, persist, "scripted".into());
        node.start_following(connector, false);
        return TestNode { node: Arc::new(node), _dir: dir };
    }
    let node = match options.standby_of {
        None => {
            let node = ReplicatedNode::primary(runtime, options.sync_standbys, persist);
            if let Some(bytes) = options.snapshot_piece_bytes {
                node.primary_side().set_snapshot_piece_bytes(bytes);
            }
            node
        }
        Some(primary) => {
            let node =
                ReplicatedNode::standby(runtime, options.sync_standbys, persist, "memory".into());
            let stop = options
                .connections
                .unwrap_or_else(|| Arc::new(std::sync::Mutex::new(stop.clone())));
            node.start_following(MemoryConnector { primary, stop }, options.reseed);
            node
        }
    };
    TestNode { node: Arc::new(node), _dir: dir }
}

/// A primary the test plays itself: each connection's other end is handed to the test.
struct ScriptedConnector {
    connections: tokio::sync::mpsc::UnboundedSender<MemoryTransport>,
}

impl Connector for ScriptedConnector {
    type Transport = MemoryTransport;

    async fn connect(&self) -> Result<MemoryTransport, TransportError> {
        let (ours, theirs) = MemoryTransport::pair();
        self.connections
            .send(theirs)
            .map_err(|_| TransportError::Io(std::io::Error::other("test ended")))?;
        Ok(ours)
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

/// Stops a node and waits for its shards, so its directory can be opened again.
async fn close(node: TestNode) {
    node.node.stop_following().await;
    let TestNode { node, _dir } = node;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut node = node;
    let runtime = loop {
        match Arc::try_unwrap(node) {
            Ok(inner) => {
                let runtime = inner.runtime().clone();
                drop(inner);
                break runtime;
            }
            Err(shared) => node = shared,
        }
        assert!(Instant::now() < deadline, "node still shared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut runtime = runtime;
    let runtime = loop {
        match Arc::try_unwrap(runtime) {
            Ok(runtime) => break runtime,
            Err(shared) => runtime = shared,
        }
        assert!(Instant::now() < deadline, "runtime still shared (a replication session?)");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::task::spawn_blocking(move || runtime.shutdown()).await.unwrap();
    drop(_dir);
}

fn partition(index: u64) -> String {
    format!("p{index}")
}

fn setup_ops() -> Vec<Op> {
    (0..4)
        .flat_map(|p| {
            (0..5).map(move |r| {
                Op::Command(Command::PutResource(PutResource {
                    partition: partition(p).as_str().into(),
                    resource: format!("r{r}").as_str().into(),
                    capacity: 1_000,
                }))
            })
        })
        .collect()
}

/// `count` seeded holds and releases; returns how many commands succeeded.
/// A primary at `dir/a` with the workloads' resources set up and `count` commands tagged "x"
/// loaded from seed `seed`: the node, its runtime, the generator (for more load later) and how
/// many commands succeeded.
async fn loaded_primary(
    dir: &Path,
    stop: &watch::Receiver<bool>,
    seed: u64,
    count: usize,
) -> (TestNode, Arc<Runtime>, SplitMix64, usize) {
    let primary = open(&dir.join("a"), Options::default(), stop);
    let runtime = primary.node.runtime().clone();
    runtime.execute(setup_ops()).await;
    let mut rng = SplitMix64::new(seed);
    let loaded = load(&runtime, &mut rng, "x", count).await;
    (primary, runtime, rng, loaded)
}

async fn load(runtime: &Runtime, rng: &mut SplitMix64, tag: &str, count: usize) -> usize {
    let mut ops = Vec::new();
    for index in 0..count {
        let p = partition(rng.next_mod(4));
        let hold_id = format!("{tag}-{}", index / 2);
        if index % 2 == 1 && rng.next_mod(3) == 0 {
            ops.push(Op::Command(Command::Release(Release {
                partition: p.as_str().into(),
                hold: hold_id.as_str().into(),
            })));
            continue;
        }
        ops.push(Op::Command(Command::Hold(Hold {
            partition: p.as_str().into(),
            hold: format!("{tag}-{index}").as_str().into(),
            items: vec![Item {
                resource: format!("r{}", rng.next_mod(5)).as_str().into(),
                quantity: 1 + rng.next_mod(3),
            }],
            ttl_ms: None,
            reference: None,
        })));
    }
    let mut ok = 0;
    for chunk in ops.chunks(50) {
        ok += runtime
            .execute(chunk.to_vec())
            .await
            .iter()
            .filter(|r| matches!(r, OpResult::Command(Ok(_))))
            .count();
    }
    ok
}

/// Every resource as read on `runtime`.
async fn reads(runtime: &Runtime) -> Vec<OpResult> {
    let ops = (0..4)
        .flat_map(|p| {
            (0..5).map(move |r| Op::GetResource {
                partition: partition(p).as_str().into(),
                id: format!("r{r}").as_str().into(),
            })
        })
        .collect();
    runtime.execute(ops).await
}

async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A standby of `primary` on `path` (with `options`, whose `standby_of` is set here), once it
/// has caught up with `primary_runtime`: the node and its runtime.
async fn caught_up_standby(
    path: &Path,
    primary: &TestNode,
    primary_runtime: &Runtime,
    options: Options,
    stop: &watch::Receiver<bool>,
) -> (TestNode, Arc<Runtime>) {
    let options = Options { standby_of: Some(primary.node.clone()), ..options };
    let standby = open(path, options, stop);
    let standby_runtime = standby.node.runtime().clone();
    wait_for("catch-up", async || caught_up(primary_runtime, &standby_runtime).await).await;
    (standby, standby_runtime)
}

async fn caught_up(primary: &Runtime, standby: &Runtime) -> bool {
    let p = primary.status().await;
    let s = standby.status().await;
    p.iter().zip(&s).all(|(p, s)| p.durable_lsn == s.durable_lsn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_catches_up_from_empty_and_follows() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let (primary, runtime, mut rng, loaded) = loaded_primary(temp.path(), &stop, 1, 400).await;
    assert!(loaded > 0);
    let (standby, standby_runtime) =
        caught_up_standby(&temp.path().join("b"), &primary, &runtime, Options::default(), &stop)
            .await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    // It follows new writes, and refuses its own.
    load(&runtime, &mut rng, "y", 200).await;
    wait_for("follow", async || caught_up(&runtime, &standby_runtime).await).await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    assert_eq!(standby_runtime.execute(setup_ops()[..1].to_vec()).await, vec![OpResult::ReadOnly]);
    let status = primary.node.primary_side().status();
    assert_eq!(status.len(), 1, "one standby connected");
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_behind_the_kept_log_gets_a_snapshot_first() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let small = Options { segment_size_bytes: 64 * 1024, ..Options::default() };
    let primary = open(&temp.path().join("a"), small, &stop);
    let runtime = primary.node.runtime().clone();
    runtime.execute(setup_ops()).await;
    let mut rng = SplitMix64::new(2);
    load(&runtime, &mut rng, "x", 3_000).await;
    runtime.checkpoint().await.unwrap();
    load(&runtime, &mut rng, "y", 100).await;
    runtime.checkpoint().await.unwrap();
    load(&runtime, &mut rng, "z", 100).await;
    let unavailable = matches!(
        runtime.read_raw(0, 1, 1).await.unwrap(),
        bookd_runtime::RawRead::Unavailable { .. }
    );
    assert!(unavailable, "the primary no longer keeps its first records");
    let (standby, standby_runtime) =
        caught_up_standby(&temp.path().join("b"), &primary, &runtime, Options::default(), &stop)
            .await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    let state = standby.node.standby_state().unwrap().status();
    assert!(state.snapshots_installed >= 1, "{state:?}");
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_gate_waits_for_one_standby() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let primary = open(
        &temp.path().join("a"),
        Options { sync_standbys: 1, timeout: Duration::from_millis(200), ..Options::default() },
        &stop,
    );
    let runtime = primary.node.runtime().clone();
    // No standby: the command takes effect here but is not acknowledged.
    let results = runtime.execute(setup_ops()).await;
    assert!(results.iter().all(|r| *r == OpResult::ReplicationTimeout), "{results:?}");
    let (standby, standby_runtime) =
        caught_up_standby(&temp.path().join("b"), &primary, &runtime, Options::default(), &stop)
            .await;
    let mut rng = SplitMix64::new(3);
    let ok = load(&runtime, &mut rng, "x", 200).await;
    assert!(ok > 100, "acknowledged with a standby: {ok}");
    // Everything acknowledged is on the standby's disk already.
    let acknowledged = runtime.status().await;
    let on_standby = standby_runtime.status().await;
    for (p, s) in acknowledged.iter().zip(&on_standby) {
        assert!(s.durable_lsn >= p.durable_lsn, "{p:?} {s:?}");
    }
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_promotion_divergence_and_reseed() {
    let (stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let (a_path, b_path) = (temp.path().join("a"), temp.path().join("b"));
    let a = open(&a_path, Options::default(), &stop);
    let a_runtime = a.node.runtime().clone();
    a_runtime.execute(setup_ops()).await;
    let mut rng = SplitMix64::new(4);
    load(&a_runtime, &mut rng, "x", 300).await;
    let b =
        open(&b_path, Options { standby_of: Some(a.node.clone()), ..Options::default() }, &stop);
    let b_runtime = b.node.runtime().clone();
    wait_for("catch-up", async || caught_up(&a_runtime, &b_runtime).await).await;
    // The network parts: B stops hearing from A, which takes more writes B never gets.
    b.node.stop_following().await;
    load(&a_runtime, &mut rng, "lost", 50).await;

    // Promotion: epoch raised and persisted, an epoch record, writable, well under a second.
    let started = Instant::now();
    let epoch = b.node.promote().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(epoch, 2);
    assert_eq!(b.node.role(), Role::Primary);
    assert!(elapsed < Duration::from_secs(1), "promotion took {elapsed:?}");
    let again = b.node.promote().await;
    assert!(matches!(again, Err(bookd_replication::PromoteError::AlreadyPrimary)), "{again:?}");
    load(&b_runtime, &mut rng, "after", 100).await;
    let b_reads = reads(&b_runtime).await;

    // The old primary comes back as a standby of B: its log holds records B never had.
    drop(a_runtime);
    let _ = stop_sender.send(true);
    close(a).await;
    let (stop_sender, stop) = watch::channel(false);
    let a =
        open(&a_path, Options { standby_of: Some(b.node.clone()), ..Options::default() }, &stop);
    let ended = a.node.follower_end(Duration::from_secs(20)).await;
    match ended {
        Some(FollowEnd::Refused(reason)) => {
            assert!(reason.contains("diverged"), "{reason}");
            assert!(reason.contains("shard"), "{reason}");
        }
        other => panic!("divergence not detected: {other:?}"),
    }
    let a_runtime = a.node.runtime().clone();
    assert_ne!(reads(&a_runtime).await, b_reads, "nothing was mixed into the old primary");
    drop(a_runtime);
    close(a).await;

    // With --reseed it replaces its log by B's snapshots and follows.
    let a = open(
        &a_path,
        Options { standby_of: Some(b.node.clone()), reseed: true, ..Options::default() },
        &stop,
    );
    let a_runtime = a.node.runtime().clone();
    wait_for("re-seed", async || caught_up(&b_runtime, &a_runtime).await).await;
    assert_eq!(reads(&a_runtime).await, b_reads);
    assert_eq!(a_runtime.epoch(), 2, "the re-seeded standby is in the new epoch");

    // B, in epoch 2, refuses to follow... and A as a primary would be refused by B: a node of a
    // higher epoch never follows a lower one.
    drop(a_runtime);
    drop(b_runtime);
    let _ = stop_sender.send(true);
    close(a).await;
    close(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_of_a_lower_epoch_is_refused() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let old = open(&temp.path().join("old"), Options::default(), &stop);
    old.node.runtime().execute(setup_ops()).await;
    // A standby that has seen epoch 3 (a newer primary).
    let newer_path = temp.path().join("newer");
    {
        let dir = DataDir::open(&newer_path, Some(SHARDS), SHARDS).unwrap();
        dir.set_epoch(3).unwrap();
    }
    let standby = open(
        &newer_path,
        Options { standby_of: Some(old.node.clone()), ..Options::default() },
        &stop,
    );
    match standby.node.follower_end(Duration::from_secs(20)).await {
        Some(FollowEnd::Refused(reason)) => assert!(reason.contains("epoch"), "{reason}"),
        other => panic!("a lower-epoch primary was followed: {other:?}"),
    }
    let empty = standby.node.runtime().status().await;
    assert!(empty.iter().all(|shard| shard.last_lsn == 0), "nothing was replicated");
    close(standby).await;
    close(old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reconnects_after_its_connection_drops_and_resumes() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let (primary, runtime, mut rng, _) = loaded_primary(temp.path(), &stop, 5, 200).await;
    let (cut, first) = watch::channel(false);
    let connections = Arc::new(std::sync::Mutex::new(first));
    let options = Options { connections: Some(connections.clone()), ..Options::default() };
    let (standby, standby_runtime) =
        caught_up_standby(&temp.path().join("b"), &primary, &runtime, options, &stop).await;
    // The network drops the connection; later connections are not cut.
    let (_keep, next) = watch::channel(false);
    *connections.lock().unwrap() = next;
    cut.send(true).unwrap();
    load(&runtime, &mut rng, "y", 200).await;
    let state = standby.node.standby_state().unwrap().clone();
    wait_for("a second session", async || state.status().sessions >= 2).await;
    wait_for("resume", async || caught_up(&runtime, &standby_runtime).await).await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    assert_eq!(state.status().snapshots_installed, 0, "resumed from its own log");
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_snapshots_its_own_log_and_restarts_from_it() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let (primary, runtime, mut rng, _) = loaded_primary(temp.path(), &stop, 6, 2_000).await;
    let standby_options = || Options {
        standby_of: Some(primary.node.clone()),
        snapshot_log_bytes: 16 * 1024,
        segment_size_bytes: 64 * 1024,
        ..Options::default()
    };
    let b_path = temp.path().join("b");
    let standby = open(&b_path, standby_options(), &stop);
    let standby_runtime = standby.node.runtime().clone();
    wait_for("catch-up", async || caught_up(&runtime, &standby_runtime).await).await;
    // Snapshots are written in the background: wait for the standby's first.
    wait_for("the standby snapshots its replicated log", async || {
        standby_runtime.latest_snapshot(0).await.is_ok_and(|snapshot| snapshot.is_some())
    })
    .await;
    drop(standby_runtime);
    close(standby).await;
    load(&runtime, &mut rng, "y", 300).await;
    let standby = open(&b_path, standby_options(), &stop);
    let standby_runtime = standby.node.runtime().clone();
    wait_for("resume", async || caught_up(&runtime, &standby_runtime).await).await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}

/// A primary whose log no longer holds its first records (small segments, two checkpoints).
async fn trimmed_primary(
    dir: &Path,
    stop: &watch::Receiver<bool>,
    piece_bytes: Option<usize>,
) -> (TestNode, Arc<Runtime>, SplitMix64) {
    let options = Options {
        segment_size_bytes: 64 * 1024,
        snapshot_piece_bytes: piece_bytes,
        ..Options::default()
    };
    let primary = open(&dir.join("a"), options, stop);
    let runtime = primary.node.runtime().clone();
    runtime.execute(setup_ops()).await;
    let mut rng = SplitMix64::new(8);
    load(&runtime, &mut rng, "x", 3_000).await;
    runtime.checkpoint().await.unwrap();
    load(&runtime, &mut rng, "y", 100).await;
    runtime.checkpoint().await.unwrap();
    load(&runtime, &mut rng, "z", 100).await;
    for shard in 0..SHARDS {
        let read = runtime.read_raw(shard, 1, 1).await.unwrap();
        assert!(
            matches!(read, RawRead::Unavailable { .. }),
            "shard {shard} keeps its first records"
        );
    }
    (primary, runtime, rng)
}

/// No staging or replaced log is left beside any shard's log.
fn no_install_leftovers(path: &Path) {
    for shard in 0..SHARDS {
        for suffix in ["install", "retired"] {
            let leftover = path.join(format!("shard-{shard:03}.{suffix}"));
            assert!(!leftover.exists(), "{} left behind", leftover.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sent_in_many_small_pieces_catches_a_standby_up() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    // Pieces shorter than the snapshot file's header: it spans several, and so does the state.
    let (primary, runtime, mut rng) = trimmed_primary(temp.path(), &stop, Some(33)).await;
    let b_path = temp.path().join("b");
    let (standby, standby_runtime) =
        caught_up_standby(&b_path, &primary, &runtime, Options::default(), &stop).await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    let state = standby.node.standby_state().unwrap().status();
    assert_eq!(state.snapshots_installed, SHARDS as u64, "{state:?}");
    let sent = primary.node.primary_side().metrics().snapshots_sent_total.load(Ordering::Relaxed);
    assert_eq!(sent, SHARDS as u64);
    no_install_leftovers(&b_path);
    // It follows from there.
    load(&runtime, &mut rng, "after", 200).await;
    wait_for("follow", async || caught_up(&runtime, &standby_runtime).await).await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_disk_fills_waits_serves_reads_and_catches_up_once_there_is_room() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let (primary, runtime, mut rng, _) = loaded_primary(temp.path(), &stop, 9, 300).await;
    let full = Arc::new(AtomicBool::new(false));
    let options = Options { full: Some(full.clone()), ..Options::default() };
    let (standby, standby_runtime) =
        caught_up_standby(&temp.path().join("b"), &primary, &runtime, options, &stop).await;
    let state = standby.node.standby_state().unwrap().clone();
    let before = reads(&standby_runtime).await;

    // The disk fills; the primary goes on taking writes.
    full.store(true, Ordering::SeqCst);
    load(&runtime, &mut rng, "during", 300).await;
    wait_for("the standby to find its disk full", async || {
        state.status().disk_full_since.iter().any(Option::is_some)
    })
    .await;
    // Nothing of the new records is taken, reads are served, and the status says it is behind.
    assert_eq!(reads(&standby_runtime).await, before);
    let status = state.status();
    assert_eq!(status.state, "following", "{status:?}");
    let behind = (0..SHARDS).any(|s| status.primary_durable_lsns[s] > status.applied_lsns[s]);
    assert!(behind, "{status:?}");
    let mut metrics = String::new();
    standby.node.render_metrics(&mut metrics);
    assert!(metrics.contains("bookd_replication_disk_full{shard=\""), "{metrics}");

    // Room again: it catches up by itself, with nothing lost or skipped.
    full.store(false, Ordering::SeqCst);
    wait_for("catch-up after the stall", async || caught_up(&runtime, &standby_runtime).await)
        .await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    let status = state.status();
    assert!(status.disk_full_since.iter().all(Option::is_none), "{status:?}");
    assert_eq!(status.snapshots_installed, 0, "{status:?}");
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_install_on_a_full_disk_is_refused_cleanly_and_retried() {
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let (primary, runtime, _) = trimmed_primary(temp.path(), &stop, Some(4096)).await;
    let full = Arc::new(AtomicBool::new(true));
    let b_path = temp.path().join("b");
    let standby = open(
        &b_path,
        Options {
            standby_of: Some(primary.node.clone()),
            full: Some(full.clone()),
            ..Options::default()
        },
        &stop,
    );
    let standby_runtime = standby.node.runtime().clone();
    let state = standby.node.standby_state().unwrap().clone();
    wait_for("the install to be refused for space", async || {
        let status = state.status();
        status.disk_full_since.iter().any(Option::is_some)
            && status.error.as_deref().is_some_and(|error| error.contains("disk full"))
    })
    .await;
    // Asked again and refused again, with nothing installed or left behind meanwhile.
    let sessions = state.status().sessions;
    wait_for("a retry", async || state.status().sessions > sessions).await;
    assert_eq!(state.status().snapshots_installed, 0);
    no_install_leftovers(&b_path);
    assert!(standby_runtime.status().await.iter().all(|shard| shard.last_lsn == 0));
    full.store(false, Ordering::SeqCst);
    wait_for("catch-up", async || caught_up(&runtime, &standby_runtime).await).await;
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    assert!(state.status().disk_full_since.iter().all(Option::is_none));
    no_install_leftovers(&b_path);
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}

/// The scripted primary's side of the standby's next connection, after SUBSCRIBE and WELCOME.
async fn scripted_session(
    connected: &mut tokio::sync::mpsc::UnboundedReceiver<MemoryTransport>,
    durable_lsns: &[u64],
) -> MemoryTransport {
    use bookd_replication::Message;
    let next = tokio::time::timeout(Duration::from_secs(30), connected.recv());
    let mut transport = next.await.expect("the standby did not connect").unwrap();
    assert!(matches!(next_from(&mut transport).await, Some(Message::Subscribe { .. })));
    let welcome = Message::Welcome { epoch: 1, durable_lsns: durable_lsns.to_vec() };
    transport.send(&welcome).await.unwrap();
    transport
}

/// The next message from a standby; `None` once it closed.
async fn next_from(standby: &mut MemoryTransport) -> Option<bookd_replication::Message> {
    let deadline = Duration::from_secs(30);
    let received = tokio::time::timeout(deadline, standby.recv()).await;
    received.expect("the standby went silent").ok().flatten()
}

/// Waits until the standby acknowledges `lsn` on `shard`, with a heartbeat every 100 ms as a
/// primary sends them (so a slow install is not taken for a silent primary).
async fn wait_for_ack(standby: &mut MemoryTransport, shard: u16, lsn: u64, durable_lsns: &[u64]) {
    use bookd_replication::Message;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no ACK of {shard}/{lsn}");
        let received = tokio::time::timeout(Duration::from_millis(100), standby.recv()).await;
        match received {
            Err(_) => {
                let durable_lsns = durable_lsns.to_vec();
                standby.send(&Message::Heartbeat { time_ms: 0, durable_lsns }).await.unwrap();
            }
            Ok(Ok(Some(Message::Ack { shard: s, synced_lsn })))
                if s == shard && synced_lsn == lsn =>
            {
                return
            }
            Ok(Ok(Some(Message::Ack { .. }))) => {}
            other => panic!("waiting for ACK {shard}/{lsn}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_drops_a_broken_or_replaced_snapshot_and_starts_over() {
    use bookd_replication::Message;
    use std::io::Read;
    let (_stop_sender, stop) = watch::channel(false);
    let temp = tempfile::tempdir().unwrap();
    let (primary, runtime, _, _) = loaded_primary(temp.path(), &stop, 10, 400).await;
    let lsns = runtime.checkpoint().await.unwrap();
    let mut files = Vec::new();
    for shard in 0..SHARDS {
        let source = runtime.latest_snapshot(shard).await.unwrap().unwrap();
        let mut file = Vec::new();
        let mut reader = source.reader;
        tokio::task::spawn_blocking(move || reader.read_to_end(&mut file).map(|_| file))
            .await
            .unwrap()
            .map(|file| files.push(file))
            .unwrap();
    }
    let (connections, mut connected) = tokio::sync::mpsc::unbounded_channel();
    let b_path = temp.path().join("b");
    let standby = open(
        &b_path,
        Options { scripted: Some(ScriptedConnector { connections }), ..Options::default() },
        &stop,
    );
    let state = standby.node.standby_state().unwrap().clone();
    let standby_runtime = standby.node.runtime().clone();
    let piece = |shard: usize, offset: usize, len: usize| Message::Snapshot {
        shard: shard as u16,
        lsn: lsns[shard],
        total_bytes: files[shard].len() as u64,
        offset: offset as u64,
        bytes: files[shard][offset..(offset + len).min(files[shard].len())].to_vec(),
    };
    // Half a snapshot of shard 0, then a new one from offset 0: the first is dropped.
    let mut transport = scripted_session(&mut connected, &lsns).await;
    let half = files[0].len() / 2;
    for offset in (0..half).step_by(1000) {
        transport.send(&piece(0, offset, 1000)).await.unwrap();
    }
    for offset in (0..files[0].len()).step_by(777) {
        transport.send(&piece(0, offset, 777)).await.unwrap();
    }
    wait_for_ack(&mut transport, 0, lsns[0], &lsns).await;
    assert_eq!(state.status().snapshots_installed, 1);
    no_install_leftovers(&b_path);

    // Shard 1: a piece that does not continue the last one ends the session; nothing changes.
    transport.send(&piece(1, 0, 100)).await.unwrap();
    transport.send(&piece(1, 300, 100)).await.unwrap();
    while next_from(&mut transport).await.is_some() {}
    // The follower records why the session ended as it ends it, which may be after it closes.
    wait_for("the session's error", async || state.status().error.is_some()).await;
    assert_eq!(standby_runtime.status().await[1].last_lsn, 0, "nothing of it was installed");
    let error = state.status().error.unwrap_or_default();
    assert!(error.contains("expected 100"), "{error}");

    // The next session starts the snapshot over and installs it.
    let mut transport = scripted_session(&mut connected, &lsns).await;
    no_install_leftovers(&b_path);
    for offset in (0..files[1].len()).step_by(4096) {
        transport.send(&piece(1, offset, 4096)).await.unwrap();
    }
    wait_for_ack(&mut transport, 1, lsns[1], &lsns).await;
    assert_eq!(state.status().snapshots_installed, 2);
    assert_eq!(reads(&standby_runtime).await, reads(&runtime).await);
    no_install_leftovers(&b_path);
    drop(transport);
    drop(runtime);
    drop(standby_runtime);
    close(standby).await;
    close(primary).await;
}
