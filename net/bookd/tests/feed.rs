//! The change feed of the real `bookd` binary on loopback: a feed read page by page before a
//! SIGKILL is served again, change for change and cursor for cursor, after the restart; a
//! standby serves the primary's feed, and once promoted resumes a cursor of the old primary with
//! exactly the changes made after it; a consumer of server-sent events dropped in the middle of
//! the stream resumes with `Last-Event-ID` without a gap or a repeat; what a live reader was
//! served before a SIGKILL in the middle of writes is still there after the restart, and its
//! last cursor resumes there. Every feed read is also replayed by a consumer that knows only the
//! changes: each change's absolute counts follow from the ones before it, and the last ones are
//! what the node serves.
//!
//! A cursor is a position in each shard's log, and one place between two changes can be
//! written more than one way (after the last change of a record, or at the start of the next
//! one), depending on where a page ended; reads that page differently are compared with
//! `equivalent`, the same read repeated with `same_changes`, cursors and all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bookd_testkit::SplitMix64;
use serde_json::{json, Value};
use support::{run_bookd, Bookd};

/// Bound of every wait on a condition.
const WAIT: Duration = Duration::from_secs(120);
/// Changes per page of the JSON reads.
const PAGE: usize = 50;

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The feed's current end: where a consumer starting now goes on from.
fn feed_end(node: &Bookd) -> String {
    let (status, page) = node.request("GET", "/v1/changes", None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["changes"], json!([]), "without a cursor the feed starts at its end");
    page["cursor"].as_str().unwrap().to_string()
}

/// A whole feed read from one cursor, page by page.
#[derive(Debug)]
struct FeedRead {
    changes: Vec<Value>,
    /// (the cursor a page was read from, the index of its first change).
    pages: Vec<(String, usize)>,
    /// The cursor of the first empty page.
    end: String,
}

fn read_feed(node: &Bookd, from: &str, query: &str, limit: usize) -> FeedRead {
    let mut read = FeedRead { changes: Vec::new(), pages: Vec::new(), end: from.to_string() };
    for _ in 0..100_000 {
        let path = format!("/v1/changes?cursor={}&limit={limit}{query}", read.end);
        let (status, page) = node.request("GET", &path, None);
        assert_eq!(status, 200, "{path}: {page}");
        let changes = page["changes"].as_array().unwrap();
        assert!(changes.len() <= limit, "{} changes in a page of {limit}", changes.len());
        let next = page["cursor"].as_str().unwrap().to_string();
        if changes.is_empty() {
            read.end = next;
            return read;
        }
        read.pages.push((std::mem::replace(&mut read.end, next), read.changes.len()));
        read.changes.extend(changes.iter().cloned());
    }
    panic!("the feed from {from} does not end");
}

/// `left` and `right` are the same changes; on a difference, says where.
fn same_changes(left: &[Value], right: &[Value], what: &str) {
    for (index, (a, b)) in left.iter().zip(right).enumerate() {
        assert_eq!(
            a, b,
            "{what}: change {index} differs (cursors {} and {})",
            a["cursor"], b["cursor"]
        );
    }
    assert_eq!(
        left.len(),
        right.len(),
        "{what}: {} changes against {} (first extra: {:?})",
        left.len(),
        right.len(),
        left.get(right.len()).or(right.get(left.len()))
    );
}

/// Each partition's changes in order, without their cursors.
fn by_partition(changes: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut partitions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for change in without_cursors(changes) {
        partitions.entry(text(&change, "partition").to_string()).or_default().push(change);
    }
    partitions
}

/// The changes without their cursors.
fn without_cursors(changes: &[Value]) -> Vec<Value> {
    changes
        .iter()
        .map(|change| {
            let mut change = change.clone();
            change.as_object_mut().unwrap().remove("cursor");
            change
        })
        .collect()
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}"))
}

fn number(value: &Value, field: &str) -> u64 {
    value[field].as_u64().unwrap_or_else(|| panic!("no {field} in {value}"))
}

/// A cursor's positions: (lsn, skip) per shard.
fn positions(cursor: &str) -> Vec<(u64, u32)> {
    let body = cursor.strip_prefix('c').unwrap_or_else(|| panic!("cursor {cursor}"));
    body.split('_')
        .map(|part| {
            let (lsn, skip) = part.split_once('.').unwrap_or_else(|| panic!("cursor {cursor}"));
            (lsn.parse().unwrap(), skip.parse().unwrap())
        })
        .collect()
}

/// The shard of each change: the position its cursor moved from the one before (from `start`).
fn shards_of(start: &str, changes: &[Value]) -> Vec<usize> {
    let mut previous = positions(start);
    changes
        .iter()
        .map(|change| {
            let now = positions(text(change, "cursor"));
            let moved: Vec<usize> = (0..now.len()).filter(|&s| now[s] != previous[s]).collect();
            // One shard moves for a change (others only where a page ended on a shard).
            let shard = *moved
                .iter()
                .find(|&&s| now[s].1 > 0)
                .unwrap_or_else(|| panic!("{change}: no position after a change"));
            previous = now;
            shard
        })
        .collect()
}

/// Indices of the changes whose cursor is inside a record: the next change of that shard is
/// of the same record.
fn inside_records(start: &str, changes: &[Value]) -> Vec<usize> {
    let shards = shards_of(start, changes);
    let mut inside = Vec::new();
    for index in 0..changes.len() {
        let shard = shards[index];
        let Some(next) = (index + 1..changes.len()).find(|&n| shards[n] == shard) else {
            continue;
        };
        let here = positions(text(&changes[index], "cursor"))[shard];
        let there = positions(text(&changes[next], "cursor"))[shard];
        if here.0 == there.0 {
            inside.push(index);
        }
    }
    inside
}

/// The same changes, each with a cursor that resumes at the same place: per shard, the same
/// position, or the end of a record (lsn, n after its n changes) against the start of a later
/// one with no change of the feed between (`lsn' > lsn`, skip 0). The feed spells a position
/// in a shard either way, depending on where a page ended.
fn equivalent(left: &[Value], right: &[Value], what: &str) {
    same_changes(&without_cursors(left), &without_cursors(right), what);
    for (index, (a, b)) in left.iter().zip(right).enumerate() {
        let (a, b) = (positions(text(a, "cursor")), positions(text(b, "cursor")));
        for (x, y) in a.iter().zip(&b) {
            let (early, late) = if x <= y { (x, y) } else { (y, x) };
            assert!(
                early == late || (late.1 == 0 && late.0 > early.0 && early.1 > 0),
                "{what}: change {index}: cursors {a:?} and {b:?} are not the same place"
            );
        }
    }
}

/// (partition, resource) → the resource as the last change touching it left it.
type Resources = BTreeMap<(String, String), Value>;

/// Applies `changes` as a consumer that knows only them: every change's counts must be the
/// previous ones moved by its op (nothing missing, nothing twice), every cursor is new. Returns
/// each resource's last state.
fn replay(changes: &[Value]) -> Resources {
    let mut resources = Resources::new();
    let mut cursors = BTreeSet::new();
    for (index, change) in changes.iter().enumerate() {
        let at = |message: &str| format!("change {index} {change}: {message}");
        assert!(cursors.insert(text(change, "cursor").to_string()), "{}", at("cursor repeated"));
        let partition = text(change, "partition").to_string();
        let op = text(change, "op");
        let touched = change["resources"].as_array().unwrap();
        for resource in touched {
            assert_eq!(text(resource, "partition"), partition, "{}", at("partition"));
            assert_eq!(
                number(resource, "available"),
                number(resource, "capacity")
                    - number(resource, "held")
                    - number(resource, "confirmed"),
                "{}",
                at("available")
            );
        }
        match op {
            "delete_partition" => {
                assert!(touched.is_empty(), "{}", at("resources of a deletion"));
                let before = resources.len();
                resources.retain(|(p, _), _| *p != partition);
                assert_eq!(
                    change["removed"]["resources"].as_u64(),
                    Some((before - resources.len()) as u64),
                    "{}",
                    at("resources removed")
                );
            }
            "put_resource" => {
                assert_eq!(touched.len(), 1, "{}", at("one resource"));
                let resource = &touched[0];
                let key = (partition.clone(), text(resource, "id").to_string());
                let (held, confirmed) = resources
                    .get(&key)
                    .map_or((0, 0), |old| (number(old, "held"), number(old, "confirmed")));
                assert_eq!(
                    (number(resource, "held"), number(resource, "confirmed")),
                    (held, confirmed),
                    "{}",
                    at("a put keeps the counts")
                );
                resources.insert(key, resource.clone());
            }
            _ => {
                let hold = &change["hold"];
                let status = match op {
                    "hold" | "extend" => "held",
                    "confirm" => "confirmed",
                    "release" => "released",
                    "expire" => "expired",
                    "cancel" => "cancelled",
                    other => panic!("{}", at(&format!("unknown op {other}"))),
                };
                assert_eq!(text(hold, "status"), status, "{}", at("hold status"));
                assert_eq!(text(hold, "partition"), partition, "{}", at("hold partition"));
                let items = hold["items"].as_array().unwrap();
                assert_eq!(items.len(), touched.len(), "{}", at("a resource per item"));
                for item in items {
                    let id = text(item, "resource");
                    let quantity = number(item, "quantity");
                    let key = (partition.clone(), id.to_string());
                    let old =
                        resources.get(&key).unwrap_or_else(|| panic!("{}", at("unknown resource")));
                    let (held, confirmed) = (number(old, "held"), number(old, "confirmed"));
                    let expected = match op {
                        "hold" => (held + quantity, confirmed),
                        "confirm" => (held - quantity, confirmed + quantity),
                        "release" | "expire" => (held - quantity, confirmed),
                        "cancel" => (held, confirmed - quantity),
                        _ => (held, confirmed),
                    };
                    let new = touched
                        .iter()
                        .find(|resource| resource["id"] == id)
                        .unwrap_or_else(|| panic!("{}", at("item's resource missing")));
                    assert_eq!(
                        number(new, "capacity"),
                        number(old, "capacity"),
                        "{}",
                        at("capacity")
                    );
                    assert_eq!(
                        (number(new, "held"), number(new, "confirmed")),
                        expected,
                        "{}",
                        at(&format!("counts of {id} after {op}"))
                    );
                    resources.insert(key, new.clone());
                }
            }
        }
    }
    resources
}

/// What a client did, to know which changes the feed must show.
struct Workload {
    rng: SplitMix64,
    tag: String,
    serial: u64,
    /// Partitions ever written.
    partitions: Vec<String>,
    /// The partition deleted in the middle (and written again after); it gets no short holds.
    doomed: String,
    /// Per partition: resource id → capacity.
    resources: BTreeMap<String, BTreeMap<String, u64>>,
    held: Vec<(String, String)>,
    confirmed: Vec<(String, String)>,
    /// Holds with a short ttl, left to expire on their own: (partition, id).
    short: Vec<(String, String)>,
    /// Whether some holds get a short ttl.
    short_holds: bool,
    /// After a request got no answer: per partition, how many of `expected` were acknowledged.
    unsure: Option<BTreeMap<String, usize>>,
    /// Per partition, the changes of the commands sent, in order: (op, hold or resource id).
    /// Expiries are not in it (they come when the node's clock says).
    expected: BTreeMap<String, Vec<(String, String)>>,
}

const RESOURCES_PER_PARTITION: usize = 4;

impl Workload {
    fn new(seed: u64, tag: &str, partitions: usize) -> Workload {
        let partitions: Vec<String> = (0..partitions).map(|p| format!("{tag}-p{p}")).collect();
        Workload {
            rng: SplitMix64::new(seed),
            tag: tag.to_string(),
            serial: 0,
            doomed: partitions[0].clone(),
            partitions,
            resources: BTreeMap::new(),
            held: Vec::new(),
            confirmed: Vec::new(),
            short: Vec::new(),
            short_holds: true,
            unsure: None,
            expected: BTreeMap::new(),
        }
    }

    fn expect(&mut self, partition: &str, op: &str, key: &str) {
        self.expected.entry(partition.to_string()).or_default().push((op.into(), key.into()));
    }

    fn pick(&mut self, of: usize) -> usize {
        self.rng.next_mod(of as u64) as usize
    }

    fn take(list: &mut Vec<(String, String)>, at: usize) -> (String, String) {
        list.swap_remove(at)
    }

    /// The next command (as in a batch), with the model moved as if it succeeded.
    fn next_command(&mut self) -> Value {
        self.serial += 1;
        let at = self.pick(self.partitions.len());
        let partition = self.partitions[at].clone();
        let have = self.resources.get(&partition).map_or(0, BTreeMap::len);
        let choice = if have == 0 { 0 } else { self.rng.next_mod(10) };
        match choice {
            5 if !self.held.is_empty() => {
                let at = self.pick(self.held.len());
                let (partition, id) = Workload::take(&mut self.held, at);
                self.expect(&partition, "confirm", &id);
                self.confirmed.push((partition.clone(), id.clone()));
                json!({"op": "confirm", "partition": partition, "id": id})
            }
            6 if !self.held.is_empty() => {
                let at = self.pick(self.held.len());
                let (partition, id) = Workload::take(&mut self.held, at);
                self.expect(&partition, "release", &id);
                json!({"op": "release", "partition": partition, "id": id})
            }
            7 if !self.confirmed.is_empty() => {
                let at = self.pick(self.confirmed.len());
                let (partition, id) = Workload::take(&mut self.confirmed, at);
                self.expect(&partition, "cancel", &id);
                json!({"op": "cancel", "partition": partition, "id": id})
            }
            8 if !self.held.is_empty() => {
                let at = self.pick(self.held.len());
                let (partition, id) = self.held[at].clone();
                self.expect(&partition, "extend", &id);
                let ttl = 600_000 + self.rng.next_mod(60_000);
                json!({"op": "extend", "partition": partition, "id": id, "ttl_ms": ttl})
            }
            1..=4 => {
                let short = self.short_holds && choice == 4 && partition != self.doomed;
                let id = format!("{}-h{}", self.tag, self.serial);
                let names: Vec<String> = self.resources[&partition].keys().cloned().collect();
                let first = self.pick(names.len());
                let mut items =
                    vec![json!({"resource": names[first], "quantity": 1 + self.rng.next_mod(3)})];
                if names.len() > 1 && self.rng.next_mod(2) == 0 {
                    let second = (first + 1 + self.pick(names.len() - 1)) % names.len();
                    items.push(
                        json!({"resource": names[second], "quantity": 1 + self.rng.next_mod(3)}),
                    );
                }
                self.expect(&partition, "hold", &id);
                let ttl = if short {
                    self.short.push((partition.clone(), id.clone()));
                    50 + self.rng.next_mod(400)
                } else {
                    self.held.push((partition.clone(), id.clone()));
                    600_000
                };
                json!({"op": "hold", "partition": partition, "id": id, "items": items, "ttl_ms": ttl})
            }
            _ => {
                let resources = self.resources.entry(partition.clone()).or_default();
                let id = if resources.len() < RESOURCES_PER_PARTITION
                    && (resources.is_empty() || self.rng.next_mod(2) == 0)
                {
                    format!("r{}", resources.len())
                } else {
                    let names: Vec<String> = resources.keys().cloned().collect();
                    names[self.rng.next_mod(names.len() as u64) as usize].clone()
                };
                // Always a new capacity (a put of the same one changes nothing), never below use.
                let capacity = resources.get(&id).map_or(10_000, |c| c + 1 + self.rng.next_mod(9));
                self.resources.get_mut(&partition).unwrap().insert(id.clone(), capacity);
                self.expect(&partition, "put_resource", &id);
                json!({"op": "put_resource", "partition": partition, "id": id, "capacity": capacity})
            }
        }
    }

    /// The commands that delete the doomed partition: its live holds are released first (a
    /// partition with live holds is not deleted).
    fn delete_doomed(&mut self) -> Vec<Value> {
        let doomed = self.doomed.clone();
        let mut commands = Vec::new();
        let live: Vec<(String, String)> =
            self.held.iter().filter(|(p, _)| *p == doomed).cloned().collect();
        for (partition, id) in live {
            self.expect(&partition, "release", &id);
            commands.push(json!({"op": "release", "partition": partition, "id": id}));
        }
        self.resources.remove(&doomed);
        self.held.retain(|(p, _)| *p != doomed);
        self.confirmed.retain(|(p, _)| *p != doomed);
        self.expect(&doomed, "delete_partition", "");
        commands.push(json!({"op": "delete_partition", "partition": doomed}));
        commands
    }

    /// Holds of one partition with the same short ttl, made together: they expire in the same
    /// tick, whose record holds all their expiries (so cursors fall inside records). `None`
    /// when the partition has no resource yet.
    fn short_burst(&mut self, size: usize) -> Option<Vec<Value>> {
        let at = 1 + self.pick(self.partitions.len() - 1);
        let partition = self.partitions[at].clone();
        let names: Vec<String> = self.resources.get(&partition)?.keys().cloned().collect();
        let ttl = 100 + self.rng.next_mod(300);
        let mut commands = Vec::new();
        for _ in 0..size {
            self.serial += 1;
            let id = format!("{}-h{}", self.tag, self.serial);
            let resource = &names[self.pick(names.len())];
            self.expect(&partition, "hold", &id);
            self.short.push((partition.clone(), id.clone()));
            commands.push(json!({"op": "hold", "partition": partition, "id": id,
                "items": [{"resource": resource, "quantity": 1}], "ttl_ms": ttl}));
        }
        Some(commands)
    }

    /// `steps` commands, some one by one over their own routes and some in batches, with now
    /// and then a burst of short holds; the doomed partition is deleted after `delete_after` of
    /// them, if given.
    fn run(&mut self, node: &Bookd, steps: usize, delete_after: Option<usize>) {
        assert!(self.try_run(&node.http, steps, delete_after), "bookd went away");
    }

    /// [`Workload::run`] on `http`; false when a request got no answer (the node went away).
    /// Then `unsure` holds, per partition, how many of `expected` were acknowledged for sure.
    fn try_run(&mut self, http: &str, steps: usize, delete_after: Option<usize>) -> bool {
        let mut done = 0;
        let mut deleted = false;
        while done < steps {
            let acknowledged: BTreeMap<String, usize> =
                self.expected.iter().map(|(p, ops)| (p.clone(), ops.len())).collect();
            let answered = if !deleted && delete_after.is_some_and(|after| done >= after) {
                deleted = true;
                self.delete_doomed().iter().all(|command| try_send_one(http, command))
            } else {
                let burst = (2 + self.pick(5)).min(steps - done);
                let short = if self.short_holds && self.rng.next_mod(8) == 0 {
                    self.short_burst(burst)
                } else {
                    None
                };
                if let Some(commands) = short {
                    done += burst;
                    try_send_batch(http, &commands)
                } else if self.rng.next_mod(3) == 0 {
                    let size = (2 + self.pick(12)).min(steps - done);
                    let commands: Vec<Value> = (0..size).map(|_| self.next_command()).collect();
                    done += size;
                    try_send_batch(http, &commands)
                } else {
                    let command = self.next_command();
                    done += 1;
                    try_send_one(http, &command)
                }
            };
            if !answered {
                self.unsure = Some(acknowledged);
                return false;
            }
        }
        true
    }
}

/// Sends a batch; false when it got no answer. Every command must succeed.
fn try_send_batch(http: &str, commands: &[Value]) -> bool {
    let body = json!({"commands": commands}).to_string();
    let Ok((status, answer)) = support::request(http, "POST", "/v1/batch", None, Some(&body))
    else {
        return false;
    };
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), commands.len());
    for (command, result) in commands.iter().zip(results) {
        let status = result["status"].as_u64().unwrap_or(0);
        assert!(status == 200 || status == 201, "{command}: {result}");
    }
    true
}

fn send_one(node: &Bookd, command: &Value) {
    assert!(try_send_one(&node.http, command), "{command}: no answer");
}

/// Sends a command over its own route; false when it got no answer. It must succeed.
fn try_send_one(http: &str, command: &Value) -> bool {
    let partition = text(command, "partition");
    let base = format!("/v1/partitions/{partition}");
    let (method, path, body) = match text(command, "op") {
        "put_resource" => (
            "PUT",
            format!("{base}/resources/{}", text(command, "id")),
            Some(json!({"capacity": command["capacity"]})),
        ),
        "hold" => (
            "POST",
            format!("{base}/holds"),
            Some(
                json!({"id": command["id"], "items": command["items"], "ttl_ms": command["ttl_ms"]}),
            ),
        ),
        "extend" => (
            "POST",
            format!("{base}/holds/{}/extend", text(command, "id")),
            Some(json!({"ttl_ms": command["ttl_ms"]})),
        ),
        "delete_partition" => ("DELETE", base.clone(), None),
        verb => ("POST", format!("{base}/holds/{}/{verb}", text(command, "id")), None),
    };
    let body = body.map(|body| body.to_string());
    let Ok((status, answer)) = support::request(http, method, &path, None, body.as_deref()) else {
        return false;
    };
    assert!(status == 200 || status == 201, "{command}: {status} {answer}");
    true
}

/// Checks `changes` against what the workload did: per partition, the acknowledged commands'
/// changes in their order (from `since`, the workload's expectations before they were made), and
/// every short hold made meanwhile expired exactly once.
fn check_ops(
    workload: &Workload,
    since: &BTreeMap<String, Vec<(String, String)>>,
    short_since: usize,
    changes: &[Value],
) {
    let mut seen: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut expired = Vec::new();
    for change in changes {
        let partition = text(change, "partition").to_string();
        let op = text(change, "op");
        let key = match op {
            "put_resource" => text(&change["resources"][0], "id").to_string(),
            "delete_partition" => String::new(),
            _ => text(&change["hold"], "id").to_string(),
        };
        if op == "expire" {
            expired.push((partition, key));
        } else {
            seen.entry(partition).or_default().push((op.to_string(), key));
        }
    }
    let mut expected = BTreeMap::new();
    for (partition, ops) in &workload.expected {
        let before = since.get(partition).map_or(0, Vec::len);
        if ops.len() > before {
            expected.insert(partition.clone(), ops[before..].to_vec());
        }
    }
    assert_eq!(seen, expected, "the acknowledged commands' changes, per partition, in order");
    expired.sort();
    let mut short = workload.short[short_since..].to_vec();
    short.sort();
    assert_eq!(expired, short, "every short hold expired once");
}

/// Waits until the feed from `start` shows every short hold of the workload expired.
fn wait_for_expiries(node: &Bookd, start: &str, workload: &Workload) {
    wait_until("the short holds to expire", || {
        let read = read_feed(node, start, "", 1000);
        read.changes.iter().filter(|change| change["op"] == "expire").count()
            == workload.short.len()
    });
}

/// What the node serves is what the changes left: each resource, listed and read alone; the
/// resources of the deleted partition that were not made again are gone.
fn check_state(node: &Bookd, workload: &Workload, resources: &Resources) {
    for partition in &workload.partitions {
        let (status, listing) =
            node.request("GET", &format!("/v1/partitions/{partition}/resources"), None);
        assert_eq!(status, 200, "{listing}");
        let listed: Vec<&Value> = listing["resources"].as_array().unwrap().iter().collect();
        let implied: Vec<&Value> =
            resources.iter().filter(|((p, _), _)| p == partition).map(|(_, value)| value).collect();
        assert_eq!(listed, implied, "{partition}: listed against implied by the feed");
        for index in 0..RESOURCES_PER_PARTITION {
            let path = format!("/v1/partitions/{partition}/resources/r{index}");
            let (status, resource) = node.request("GET", &path, None);
            match resources.get(&(partition.clone(), format!("r{index}"))) {
                Some(implied) => assert_eq!((status, &resource), (200, implied), "{path}"),
                None => assert_eq!(status, 404, "{path}: {resource}"),
            }
        }
    }
}

#[test]
fn the_feed_survives_kill_9() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    let args = ["--shards", "3"];
    let node = Bookd::serve(&dir, &args);
    let start = feed_end(&node);
    let mut workload = Workload::new(21, "k", 6);
    workload.run(&node, 400, Some(200));
    wait_for_expiries(&node, &start, &workload);

    let before = read_feed(&node, &start, "", PAGE);
    check_ops(&workload, &BTreeMap::new(), 0, &before.changes);
    let resources = replay(&before.changes);
    check_state(&node, &workload, &resources);
    assert!(before.changes.len() >= 400, "{} changes", before.changes.len());
    assert!(before.changes.iter().any(|change| change["op"] == "delete_partition"));
    // Remembered: some pages' cursors (where a page of the read began), and some changes'
    // cursors, among them cursors inside a record (a tick's expiries share one).
    let pages: Vec<(String, usize)> = before.pages.iter().step_by(3).cloned().collect();
    let inside = inside_records(&start, &before.changes);
    assert!(inside.len() >= 3, "only {} cursors inside a record", inside.len());
    eprintln!(
        "{} changes in {} pages, {} cursors inside a record",
        before.changes.len(),
        before.pages.len(),
        inside.len()
    );
    let count = before.changes.len();
    let mut changes: Vec<usize> = vec![0, 1, count / 3, count / 2, count - 2, count - 1];
    changes.extend(inside.iter().step_by((inside.len() / 4).max(1)));
    let mut remembered = Vec::new();
    for (cursor, rest) in &pages {
        // From where a page began, the same pages again, cursors and all.
        let read = read_feed(&node, cursor, "", PAGE);
        same_changes(&read.changes, &before.changes[*rest..], &format!("from page {cursor}"));
        remembered.push((cursor.clone(), *rest, PAGE, read.changes));
    }
    for index in changes {
        let cursor = text(&before.changes[index], "cursor").to_string();
        for limit in [PAGE, 7] {
            // From a change's cursor the pages end elsewhere, and a cursor may spell the same
            // place otherwise (see `equivalent`): the same changes, equivalent cursors.
            let read = read_feed(&node, &cursor, "", limit);
            equivalent(&read.changes, &before.changes[index + 1..], &format!("from {cursor}"));
            remembered.push((cursor.clone(), index + 1, limit, read.changes));
        }
    }
    let (status, listing) =
        node.request("GET", &format!("/v1/partitions/{}/resources", workload.partitions[1]), None);
    assert_eq!(status, 200);
    assert_eq!(listing["cursor"], before.end.as_str(), "a listing's cursor is the feed's end");

    node.kill9();
    let node = Bookd::serve(&dir, &args);
    let after = read_feed(&node, &start, "", PAGE);
    same_changes(&after.changes, &before.changes, "after the restart, from the start");
    assert_eq!(after.pages, before.pages, "the same pages");
    assert_eq!(after.end, before.end, "the same end");
    // Every read from a remembered cursor is what it was before, cursors and all.
    for (cursor, _, limit, served) in &remembered {
        let read = read_feed(&node, cursor, "", *limit);
        same_changes(
            &read.changes,
            served,
            &format!("after the restart, from {cursor} by {limit}"),
        );
    }
    check_state(&node, &workload, &replay(&after.changes));
    assert_eq!(feed_end(&node), before.end, "nothing was added by the restart");
    assert!(node.terminate().success());
}

/// Follows the feed from `from` with long polls until the node stops answering; every change
/// read is pushed to `read`.
fn follow_until_gone(http: &str, from: &str, read: &std::sync::Mutex<Vec<Value>>) {
    let mut cursor = from.to_string();
    for _ in 0..1_000_000 {
        let path = format!("/v1/changes?cursor={cursor}&limit={PAGE}&wait_ms=500");
        let Ok((status, page)) = support::request(http, "GET", &path, None, None) else {
            return;
        };
        assert_eq!(status, 200, "{page}");
        let page: Value = serde_json::from_str(&page).unwrap();
        read.lock().unwrap().extend(page["changes"].as_array().unwrap().iter().cloned());
        cursor = text(&page, "cursor").to_string();
    }
    panic!("the node did not go away");
}

#[test]
fn what_the_feed_served_survives_a_kill_9_in_the_middle_of_writes() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    let args = ["--shards", "2"];
    let node = Bookd::serve(&dir, &args);
    let start = feed_end(&node);
    let mut workload = Workload::new(24, "w", 4);
    workload.run(&node, 40, None);
    // A writer and a live reader; the node is killed once the reader has seen a few hundred
    // changes, in the middle of the writes.
    let served = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for _ in 0..500 {
                if !workload.try_run(&node.http, 20, None) {
                    return;
                }
            }
            panic!("the writes did not stop");
        });
        let reader = scope.spawn(|| follow_until_gone(&node.http, &start, &served));
        let deadline = Instant::now() + WAIT;
        while served.lock().unwrap().len() < 300 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        support::signal(&node.child, libc::SIGKILL);
        writer.join().unwrap();
        reader.join().unwrap();
    });
    let mut node = node;
    support::wait_bounded(&mut node.child);
    drop(node);
    let served = served.into_inner().unwrap();
    assert!(served.len() >= 300, "the reader saw {} changes", served.len());
    let unsure = workload.unsure.clone().expect("the writer saw the node go");

    let node = Bookd::serve(&dir, &args);
    // Holds made before the kill expire after the restart: wait for every short one there is.
    let made: BTreeSet<String> = workload.short.iter().map(|(_, id)| id.clone()).collect();
    let mut after = read_feed(&node, &start, "", PAGE);
    wait_until("the short holds to expire", || {
        after = read_feed(&node, &start, "", PAGE);
        let held = after
            .changes
            .iter()
            .filter(|c| c["op"] == "hold" && made.contains(text(&c["hold"], "id")));
        let expired = after.changes.iter().filter(|c| c["op"] == "expire");
        held.count() == expired.count()
    });
    // Per partition, what was served before the kill comes first, unchanged.
    let (served_by, after_by) = (by_partition(&served), by_partition(&after.changes));
    for (partition, changes) in &served_by {
        let all = &after_by[partition];
        assert!(changes.len() <= all.len(), "{partition}: served more than there is");
        assert_eq!(changes[..], all[..changes.len()], "{partition}: served before the kill");
    }
    // Every acknowledged command is there, in order, and at most the one in flight besides.
    for (partition, expected) in &workload.expected {
        let ops: Vec<(String, String)> = after_by
            .get(partition)
            .into_iter()
            .flatten()
            .filter(|change| change["op"] != "expire")
            .map(|change| {
                let key = match text(change, "op") {
                    "put_resource" => text(&change["resources"][0], "id"),
                    "delete_partition" => "",
                    _ => text(&change["hold"], "id"),
                };
                (text(change, "op").to_string(), key.to_string())
            })
            .collect();
        let acknowledged = unsure.get(partition).copied().unwrap_or(0);
        assert!(
            ops.len() >= acknowledged && expected.starts_with(&ops),
            "{partition}: {} changes, {acknowledged} acknowledged, {} sent",
            ops.len(),
            expected.len()
        );
    }
    eprintln!(
        "served {} changes before the kill, {} after the restart, {} commands sent",
        served.len(),
        after.changes.len(),
        workload.expected.values().map(Vec::len).sum::<usize>()
    );
    // The last cursor the reader had resumes on the restarted node with the rest.
    let last = text(served.last().unwrap(), "cursor");
    let rest = read_feed(&node, last, "", PAGE);
    let mut joined = served.clone();
    joined.extend(rest.changes.iter().cloned());
    assert_eq!(by_partition(&joined), after_by, "resumed after the restart");
    let resources = replay(&after.changes);
    for ((partition, id), resource) in &resources {
        let path = format!("/v1/partitions/{partition}/resources/{id}");
        assert_eq!(node.request("GET", &path, None), (200, resource.clone()), "{path}");
    }
    assert!(node.terminate().success());
}

/// Every shard's durable log position.
fn durable_lsns(node: &Bookd) -> Vec<u64> {
    let (code, status) = node.request("GET", "/v1/status", None);
    assert_eq!(code, 200, "{status}");
    status["shards"].as_array().unwrap().iter().map(|s| number(s, "durable_lsn")).collect()
}

#[test]
fn a_standby_serves_the_same_feed() {
    let temp = tempfile::tempdir().unwrap();
    let primary = Bookd::serve(&temp.path().join("primary"), &["--shards", "2"]);
    let standby = Bookd::start(
        "standby",
        &temp.path().join("standby"),
        &["--primary", &primary.binary, "--shards", "2"],
    );
    let start = feed_end(&primary);
    let mut workload = Workload::new(22, "s", 5);
    workload.run(&primary, 300, Some(120));
    wait_for_expiries(&primary, &start, &workload);
    wait_until("the standby to catch up", || durable_lsns(&primary) == durable_lsns(&standby));
    // A long poll on the standby is answered when a change made on the primary reaches it.
    let end = feed_end(&standby);
    let started = Instant::now();
    let page = std::thread::scope(|scope| {
        let poll = scope.spawn(|| {
            let path = format!("/v1/changes?cursor={end}&wait_ms=30000");
            standby.request("GET", &path, None)
        });
        workload.short_holds = false; // nothing may expire later
        let command = workload.next_command();
        workload.short_holds = true;
        send_one(&primary, &command);
        poll.join().unwrap()
    });
    assert_eq!(page.0, 200, "{}", page.1);
    assert_eq!(page.1["changes"].as_array().map(Vec::len), Some(1), "{}", page.1);
    assert!(started.elapsed() < Duration::from_secs(25), "the poll waited it out");
    wait_until("the standby to catch up", || durable_lsns(&primary) == durable_lsns(&standby));

    let on_primary = read_feed(&primary, &start, "", PAGE);
    let on_standby = read_feed(&standby, &start, "", PAGE);
    check_ops(&workload, &BTreeMap::new(), 0, &on_primary.changes);
    same_changes(&on_standby.changes, &on_primary.changes, "the standby's feed");
    assert_eq!(on_standby.pages, on_primary.pages);
    assert_eq!(on_standby.end, on_primary.end);
    assert_eq!(feed_end(&standby), on_primary.end, "the standby's end is the primary's");
    // From any change's cursor, the same read on both.
    let inside = inside_records(&start, &on_primary.changes);
    assert!(!inside.is_empty(), "no cursor inside a record");
    let half = on_primary.changes.len() / 2;
    for index in [0, inside[inside.len() / 2], half, on_primary.changes.len() - 1] {
        let cursor = text(&on_primary.changes[index], "cursor");
        let there = read_feed(&primary, cursor, "", 7);
        let here = read_feed(&standby, cursor, "", 7);
        same_changes(&here.changes, &there.changes, &format!("from {cursor} on both"));
        equivalent(&here.changes, &on_primary.changes[index + 1..], &format!("from {cursor}"));
    }
    check_state(&standby, &workload, &replay(&on_standby.changes));

    // The primary goes; the standby is promoted and takes more changes.
    let old_end = on_primary.end.clone();
    let old_last = text(on_primary.changes.last().unwrap(), "cursor").to_string();
    let (since, short_since) = (workload.expected.clone(), workload.short.len());
    primary.kill9();
    let (promoted, out, err) = run_bookd(&["promote", "--http", &standby.http]);
    assert!(promoted.success(), "promote failed: {out} {err}");
    workload.run(&standby, 200, None);
    wait_for_expiries(&standby, &start, &workload);

    let new = read_feed(&standby, &old_end, "", PAGE);
    check_ops(&workload, &since, short_since, &new.changes);
    assert!(new.changes.len() >= 200, "{} new changes", new.changes.len());
    let from_last = read_feed(&standby, &old_last, "", PAGE);
    equivalent(&from_last.changes, &new.changes, "from the old primary's last change");
    // From the start: the old primary's changes, then the new ones. (The cursors of the old
    // ones may be spelled otherwise: where a page ended on a shard whose log ended then is not
    // where it ends on a log that has grown since.)
    let whole = read_feed(&standby, &start, "", PAGE);
    let mut expected = on_primary.changes.clone();
    expected.extend(new.changes.iter().cloned());
    equivalent(&whole.changes, &expected, "the promoted node's whole feed");
    check_ops(&workload, &BTreeMap::new(), 0, &whole.changes);
    check_state(&standby, &workload, &replay(&whole.changes));
    assert!(standby.terminate().success());
}

/// A raw connection reading a server-sent event stream.
struct EventStream {
    stream: TcpStream,
    /// Bytes received and not yet taken apart.
    raw: Vec<u8>,
    /// Whether the response head was read; then the body is chunked or not.
    chunked: Option<bool>,
    /// The body so far, de-chunked.
    body: Vec<u8>,
}

impl EventStream {
    fn open(addr: &str, query: &str, last_event_id: Option<&str>) -> EventStream {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let last = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let request = format!(
            "GET /v1/changes{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{last}\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        EventStream { stream, raw: Vec::new(), chunked: None, body: Vec::new() }
    }

    /// Reads until `count` events are complete; returns each one's (id, data), in order.
    fn events(&mut self, count: usize) -> Vec<(String, Value)> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.take_apart();
            let events = self.complete_events();
            if events.len() >= count {
                return events;
            }
            assert!(Instant::now() < deadline, "{} of {count} events came", events.len());
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the event stream ended after {} events", events.len()),
                Ok(read) => self.raw.extend_from_slice(&chunk[..read]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => panic!("reading the event stream: {error}"),
            }
        }
    }

    /// Moves what `raw` holds into `body`: the head first, then whole chunks.
    fn take_apart(&mut self) {
        if self.chunked.is_none() {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(head.contains("content-type: text/event-stream"), "{head}");
            self.chunked = Some(head.contains("transfer-encoding: chunked"));
            self.raw.drain(..end + 4);
        }
        if self.chunked == Some(false) {
            self.body.append(&mut self.raw);
            return;
        }
        loop {
            let Some(line) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            if self.raw.len() < line + 2 + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[line + 2..line + 2 + size]);
            self.raw.drain(..line + 2 + size + 2);
        }
    }

    /// The complete events of the body (blocks ended by a blank line), heartbeats left out.
    fn complete_events(&self) -> Vec<(String, Value)> {
        let text = String::from_utf8(self.body.clone()).expect("UTF-8 events");
        let mut events = Vec::new();
        let mut blocks: Vec<&str> = text.split("\n\n").collect();
        blocks.pop(); // not ended yet (or empty)
        for block in blocks {
            if block.lines().all(|line| line.starts_with(':')) {
                continue;
            }
            let field = |name: &str| block.lines().find_map(|line| line.strip_prefix(name));
            assert_eq!(field("event: "), Some("change"), "{block}");
            let id = field("id: ").unwrap_or_else(|| panic!("no id: {block}"));
            let data = field("data: ").unwrap_or_else(|| panic!("no data: {block}"));
            events.push((id.to_string(), serde_json::from_str(data).unwrap()));
        }
        events
    }
}

/// Reads `count` events from a stream, checks each id is its change's cursor, and returns them.
fn stream_changes(stream: &mut EventStream, count: usize) -> Vec<(String, Value)> {
    let events = stream.events(count);
    for (id, change) in &events {
        assert_eq!(change["cursor"], id.as_str(), "an event's id is its change's cursor");
    }
    events
}

#[test]
fn a_consumer_killed_mid_stream_resumes_without_gap_or_repeat() {
    let temp = tempfile::tempdir().unwrap();
    let node = Bookd::serve(&temp.path().join("node"), &["--shards", "2"]);
    let start = feed_end(&node);
    let mut workload = Workload::new(23, "e", 4);
    workload.run(&node, 300, Some(150));
    wait_for_expiries(&node, &start, &workload);
    let total = read_feed(&node, &start, "", 1000).changes.len();
    // From here on no hold expires on its own: every change is one the test makes.
    workload.short_holds = false;

    // The stream sends all of them in one go; the consumer goes after reading a part.
    let mut first = EventStream::open(&node.http, &format!("?cursor={start}"), None);
    let mut seen = stream_changes(&mut first, 120);
    seen.truncate(120);
    drop(first);
    // More changes while no one listens; the consumer comes back after the last event it saw
    // (`Last-Event-ID` wins over the query's cursor).
    workload.run(&node, 100, None);
    let last = seen.last().unwrap().0.clone();
    let mut second = EventStream::open(&node.http, &format!("?cursor={start}"), Some(&last));
    let so_far = total - 120 + 100;
    let resumed = stream_changes(&mut second, so_far);
    assert_eq!(resumed.len(), so_far, "no more than the changes made");
    seen.extend(resumed);
    // Live: changes are made while it listens, and it goes again in the middle of them.
    let live = 80;
    let mut third = std::thread::scope(|scope| {
        let writer = scope.spawn(|| workload.run(&node, live, None));
        let resumed = stream_changes(&mut second, so_far + 30);
        seen.extend(resumed.into_iter().skip(so_far));
        drop(second);
        let last = seen.last().unwrap().0.clone();
        let third = EventStream::open(&node.http, "", Some(&last));
        writer.join().unwrap();
        third
    });
    let left = total + 100 + live - seen.len();
    // One more change after all of them: the next event after the rest is that one.
    let marker = json!({"op": "put_resource", "partition": workload.partitions[1], "id": "r0", "capacity": 999_999});
    send_one(&node, &marker);
    let tail = stream_changes(&mut third, left + 1);
    assert_eq!(tail.len(), left + 1, "nothing but the changes after the last event");
    let (_, last_change) = tail.last().unwrap();
    assert_eq!(
        (text(last_change, "op"), number(&last_change["resources"][0], "capacity")),
        ("put_resource", 999_999)
    );
    workload.resources.get_mut(&workload.partitions[1]).unwrap().insert("r0".into(), 999_999);
    let partition = workload.partitions[1].clone();
    workload.expect(&partition, "put_resource", "r0");
    seen.extend(tail);
    drop(third);

    // The concatenation is the feed, read afterwards as JSON from the same start.
    let json_feed = read_feed(&node, &start, "", PAGE);
    let streamed: Vec<Value> = seen.iter().map(|(_, change)| change.clone()).collect();
    check_ops(&workload, &BTreeMap::new(), 0, &streamed);
    check_ops(&workload, &BTreeMap::new(), 0, &json_feed.changes);
    assert_eq!(by_partition(&streamed), by_partition(&json_feed.changes));
    // A consumer of the events alone (no event twice, counts that add up) ends where one of the
    // JSON feed does.
    assert_eq!(replay(&streamed), replay(&json_feed.changes));
    // What was streamed from a still log is what the JSON feed serves in pages as large as the
    // stream's, cursors and all, and in pages of its own size the same changes in the same
    // order with cursors at the same places. (The events read while changes were being made
    // may come in another order across shards, as the merge by time does not wait for a shard
    // that is behind; per partition the order is the log's, checked above.)
    let still = total + 100;
    let whole = read_feed(&node, &start, "", 1000);
    same_changes(&streamed[..120], &whole.changes[..120], "the first stream");
    let resumed = read_feed(&node, &seen[119].0, "", 1000);
    same_changes(&streamed[120..still], &resumed.changes[..still - 120], "the second stream");
    equivalent(&streamed[..still], &json_feed.changes[..still], "the events read from a still log");
    // Every event's id resumes the JSON feed with the rest of what was streamed.
    for index in [0, 118, 119, 120, still - 1, still + 10, seen.len() - 2] {
        let rest = read_feed(&node, &seen[index].0, "", 7);
        assert_eq!(
            by_partition(&rest.changes),
            by_partition(&streamed[index + 1..]),
            "the JSON feed from event {index}"
        );
    }
    check_state(&node, &workload, &replay(&json_feed.changes));
    assert!(node.terminate().success());
}
