//! Shared generators for the engine's property tests: random histories of commands, queries and
//! time steps over a small universe (3 partitions, 6 resources of tiny capacity, hold ids reused
//! often), so refusals, idempotent repeats, conflicts and exact-expiry instants are common.
//! Time in a history never goes backwards.
#![allow(dead_code)]

use bookd_engine::limits::{CAPACITY_MAX, QUANTITY_MAX};
use bookd_engine::{
    Cancel, Command, Confirm, Engine, Extend, Hold, HoldStatus, Item, ListQuery, Outcome,
    PutResource, Refusal, Release,
};
use bookd_testkit::SplitMix64;
use proptest::prelude::*;

/// The time of the first step of every history (Unix ms).
pub const T0: u64 = 1_700_000_000_000;

/// Resource ids, chosen so prefixes and byte order are interesting ("a-10" < "a-2").
pub const RESOURCES: [&str; 6] = ["a", "a-1", "a-10", "a-2", "b", "b.x"];

/// How the clock moves before a step.
#[derive(Debug, Clone)]
pub enum TimeStep {
    /// The same millisecond as the previous step.
    Same,
    /// Some milliseconds later.
    Plus(u64),
    /// Onto (offset 0), just before (-1) or just after (+1) the expiry of a live hold, picked
    /// among the live holds by the runner; `Same` when no hold is live.
    OnExpiry { pick: usize, offset: i8 },
}

/// A verb on an existing hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Confirm,
    Release,
    Cancel,
    Extend(u64),
}

/// How a repeated hold command differs from the hold it repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    QuantityPlusOne,
    DropItem,
    AddItem,
}

/// One step of a history: a command, an explicit tick, or a query. `OnExisting` and
/// `RepeatExisting` name a hold that exists when the step runs; [`resolve`] turns them into
/// commands.
#[derive(Debug, Clone)]
pub enum Action {
    Command(Command),
    /// A verb on an existing hold, preferring holds where the verb would take effect.
    OnExisting {
        pick: u64,
        verb: Verb,
        other_partition: bool,
    },
    /// The command that made an existing hold, items rotated, perhaps changed.
    RepeatExisting {
        pick: u64,
        rotate: usize,
        change: Change,
        ttl_ms: Option<u64>,
    },
    Tick,
    List {
        partition: String,
        query: ListQuery,
    },
    GetResource {
        partition: String,
        id: String,
    },
    GetHold {
        partition: String,
        id: String,
    },
}

#[derive(Debug, Clone)]
pub struct Step {
    pub time: TimeStep,
    pub action: Action,
}

/// A hold that exists, as the runner sees it before a step.
#[derive(Debug, Clone)]
pub struct Existing {
    pub partition: String,
    pub id: String,
    /// In the order the hold was made with.
    pub items: Vec<(String, u64)>,
    pub status: HoldStatus,
    pub expires_at_ms: u64,
}

/// The time of a step that follows `now_ms`, given the expiries of the live holds.
pub fn next_time(now_ms: u64, time: &TimeStep, live_expiries_ms: &[u64]) -> u64 {
    match time {
        TimeStep::Same => now_ms,
        TimeStep::Plus(delta_ms) => now_ms + delta_ms,
        TimeStep::OnExpiry { pick, offset } => {
            let mut future: Vec<u64> =
                live_expiries_ms.iter().copied().filter(|&at| at > now_ms).collect();
            future.sort_unstable();
            if future.is_empty() {
                return now_ms;
            }
            let at = future[pick % future.len()];
            match offset {
                -1 => at - 1,
                0 => at,
                _ => at + 1,
            }
        }
    }
}

/// Turns `OnExisting` and `RepeatExisting` into commands on one of `existing` at `now_ms`
/// (a tick when no hold exists); other actions are returned as they are.
pub fn resolve(action: &Action, existing: &[Existing], now_ms: u64) -> Action {
    if existing.is_empty() {
        return match action {
            Action::OnExisting { .. } | Action::RepeatExisting { .. } => Action::Tick,
            other => other.clone(),
        };
    }
    match *action {
        Action::OnExisting { pick, verb, other_partition } => {
            let target = choose(existing, pick, now_ms, verb);
            let mut partition = target.partition.clone();
            if other_partition {
                partition = if partition == "p0" { "p1".into() } else { "p0".into() };
            }
            Action::Command(with_verb(partition, target.id.clone(), verb))
        }
        Action::RepeatExisting { pick, rotate, change, ttl_ms } => {
            let target = &existing[(pick % existing.len() as u64) as usize];
            let mut items: Vec<Item> = target
                .items
                .iter()
                .map(|(resource, quantity)| Item {
                    resource: resource.clone(),
                    quantity: *quantity,
                })
                .collect();
            let len = items.len();
            items.rotate_left(rotate % len);
            match change {
                Change::None => {}
                Change::QuantityPlusOne => items[0].quantity += 1,
                Change::DropItem => {
                    items.pop();
                }
                Change::AddItem => {
                    let unused = RESOURCES.iter().find(|r| items.iter().all(|i| i.resource != **r));
                    let resource = unused.copied().unwrap_or("zz");
                    items.push(Item { resource: resource.into(), quantity: 1 });
                }
            }
            Action::Command(Command::Hold(Hold {
                partition: target.partition.clone(),
                hold: target.id.clone(),
                items,
                ttl_ms,
                reference: None,
            }))
        }
        _ => action.clone(),
    }
}

/// Picks the target of a verb: often a hold the verb takes effect on (and one expiring right
/// now), sometimes any hold, so refusals of every state come up too.
fn choose(existing: &[Existing], pick: u64, now_ms: u64, verb: Verb) -> &Existing {
    let wanted = match verb {
        Verb::Cancel => HoldStatus::Confirmed,
        _ => HoldStatus::Held,
    };
    let expiring: Vec<&Existing> = existing
        .iter()
        .filter(|e| e.status == HoldStatus::Held && e.expires_at_ms == now_ms)
        .collect();
    let fitting: Vec<&Existing> = existing.iter().filter(|e| e.status == wanted).collect();
    let roll = pick % 100;
    let pick = (pick / 100) as usize;
    if roll < 30 && !expiring.is_empty() {
        expiring[pick % expiring.len()]
    } else if roll < 75 && !fitting.is_empty() {
        fitting[pick % fitting.len()]
    } else {
        &existing[pick % existing.len()]
    }
}

fn with_verb(partition: String, hold: String, verb: Verb) -> Command {
    match verb {
        Verb::Confirm => Command::Confirm(Confirm { partition, hold }),
        Verb::Release => Command::Release(Release { partition, hold }),
        Verb::Cancel => Command::Cancel(Cancel { partition, hold }),
        Verb::Extend(ttl_ms) => Command::Extend(Extend { partition, hold, ttl_ms }),
    }
}

/// The holds of an engine, read from its public image (partitions and holds in id order).
pub fn engine_existing(engine: &Engine) -> Vec<Existing> {
    let mut existing = Vec::new();
    for partition in engine.image().partitions {
        for hold in &partition.holds {
            let items = hold
                .items
                .iter()
                .map(|item| {
                    let resource = partition.resources[item.resource as usize].id.clone();
                    (resource, u64::from(item.quantity))
                })
                .collect();
            existing.push(Existing {
                partition: partition.name.clone(),
                id: hold.id.clone(),
                items,
                status: HoldStatus::from_u8(hold.status).expect("a known status"),
                expires_at_ms: hold.expires_at_ms,
            });
        }
    }
    existing
}

/// The expiries of the live holds among `existing`.
pub fn live_expiries(existing: &[Existing]) -> Vec<u64> {
    existing.iter().filter(|e| e.status == HoldStatus::Held).map(|e| e.expires_at_ms).collect()
}

/// What the engine answered to one action.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineResult {
    Command(Result<Outcome, Refusal>),
    Tick(u32),
    Page(Result<bookd_engine::ResourcePage, Refusal>),
    Resource(Result<bookd_engine::ResourceView, Refusal>),
    Hold(Result<bookd_engine::HoldView, Refusal>),
}

/// Runs one resolved action on the engine at `now_ms`. Queries tick first, as the shard does.
pub fn engine_step(engine: &mut Engine, now_ms: u64, action: &Action) -> EngineResult {
    match action {
        Action::Command(command) => EngineResult::Command(engine.apply(now_ms, command)),
        Action::List { partition, query } => {
            engine.tick(now_ms);
            EngineResult::Page(engine.list_resources(partition, query))
        }
        Action::GetResource { partition, id } => {
            engine.tick(now_ms);
            EngineResult::Resource(engine.resource(partition, id))
        }
        Action::GetHold { partition, id } => {
            engine.tick(now_ms);
            EngineResult::Hold(engine.hold(partition, id))
        }
        Action::Tick | Action::OnExisting { .. } | Action::RepeatExisting { .. } => {
            EngineResult::Tick(engine.tick(now_ms))
        }
    }
}

/// The time and the resolved action of `step` after `now_ms`, on `engine`'s holds.
pub fn engine_resolve(engine: &Engine, now_ms: u64, step: &Step) -> (u64, Action) {
    let needs_existing = matches!(step.time, TimeStep::OnExpiry { .. })
        || matches!(step.action, Action::OnExisting { .. } | Action::RepeatExisting { .. });
    let existing = if needs_existing { engine_existing(engine) } else { Vec::new() };
    let now_ms = next_time(now_ms, &step.time, &live_expiries(&existing));
    (now_ms, resolve(&step.action, &existing, now_ms))
}

/// Runs a whole history on `engine` from time `now_ms`; returns every result and the last time.
pub fn run_engine(
    engine: &mut Engine,
    mut now_ms: u64,
    steps: &[Step],
) -> (Vec<EngineResult>, u64) {
    let mut results = Vec::with_capacity(steps.len());
    for step in steps {
        let (now, action) = engine_resolve(engine, now_ms, step);
        now_ms = now;
        results.push(engine_step(engine, now_ms, &action));
    }
    (results, now_ms)
}

// ---------------------------------------------------------------------------------------------
// Generators. Proptest generates one `u64` per step (cheap, and shrinking removes steps); each is
// decoded into a step with a small deterministic RNG, weighted toward the interesting cases.

/// How a step's parts are chosen from the shared generator. Modulo reductions (`next_mod`), so
/// the failures proptest recorded (`determinism.proptest-regressions`) decode to the same steps.
pub trait Choose {
    /// Uniform in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64;
    /// True with probability `percent`/100.
    fn percent(&mut self, percent: u64) -> bool;
    fn pick<'a, T>(&mut self, choices: &'a [T]) -> &'a T;
    /// An index into `weights`, chosen with those relative weights.
    fn weighted(&mut self, weights: &[u64]) -> usize;
}

impl Choose for SplitMix64 {
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_mod(high - low + 1)
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.next_mod(100) < percent
    }

    fn pick<'a, T>(&mut self, choices: &'a [T]) -> &'a T {
        &choices[self.next_mod(choices.len() as u64) as usize]
    }

    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut roll = self.next_mod(weights.iter().sum::<u64>());
        for (index, &weight) in weights.iter().enumerate() {
            if roll < weight {
                return index;
            }
            roll -= weight;
        }
        unreachable!("roll below the sum of weights")
    }
}

/// Which steps a history favours: `Mixed` is everything; `Churn` makes many fresh holds and
/// extends with long ttls, so the expiry queue fills with stale entries and gets compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Mixed,
    Churn,
}

fn bad_name(rng: &mut SplitMix64) -> String {
    match rng.range(0, 4) {
        0 => String::new(),
        1 => "a b".into(),
        2 => "x".repeat(65),
        3 => "é".into(),
        _ => "a/b".into(),
    }
}

/// A valid partition; "p2" is rare, so it often has no resources.
fn partition(rng: &mut SplitMix64) -> String {
    if rng.percent(8) {
        "p2".into()
    } else {
        rng.pick(&["p0", "p1"]).to_string()
    }
}

fn hold_id(rng: &mut SplitMix64, profile: Profile) -> String {
    match profile {
        Profile::Mixed if rng.percent(60) => format!("h{}", rng.range(0, 5)),
        Profile::Mixed => format!("h{}", rng.range(0, 59)),
        Profile::Churn => format!("c{}", rng.next_u64() % 1_000_000),
    }
}

fn capacity(rng: &mut SplitMix64) -> u64 {
    match rng.weighted(&[20, 3, 1]) {
        0 => rng.range(0, 5),
        1 => rng.range(6, 12),
        _ => CAPACITY_MAX,
    }
}

fn quantity(rng: &mut SplitMix64) -> u64 {
    match rng.weighted(&[50, 35, 12, 3]) {
        0 => 1,
        1 => rng.range(2, 3),
        2 => rng.range(4, 6),
        _ => QUANTITY_MAX,
    }
}

fn ttl(rng: &mut SplitMix64, profile: Profile) -> u64 {
    if profile == Profile::Churn && rng.percent(90) {
        return rng.range(50_000, 3_600_000);
    }
    match rng.weighted(&[10, 2, 1]) {
        0 => rng.range(1, 30),
        1 => rng.range(31, 3_000),
        _ => 86_400_000,
    }
}

/// 1–3 distinct known resources, sometimes one unknown.
fn items(rng: &mut SplitMix64) -> Vec<Item> {
    let mut ids: Vec<&str> = RESOURCES.to_vec();
    let len = rng.weighted(&[5, 3, 2]) + 1;
    let mut items: Vec<Item> = (0..len)
        .map(|_| {
            let id = ids.remove((rng.next_u64() % ids.len() as u64) as usize);
            Item { resource: id.into(), quantity: quantity(rng) }
        })
        .collect();
    if rng.percent(5) {
        items.push(Item { resource: "zz".into(), quantity: 1 });
    }
    items
}

fn reference(rng: &mut SplitMix64) -> Option<String> {
    match rng.weighted(&[6, 2, 1]) {
        0 => None,
        1 => Some("order-1".into()),
        _ => Some("r".repeat(256)),
    }
}

/// Makes a valid hold command invalid in one way.
fn break_hold(rng: &mut SplitMix64, hold: &mut Hold) {
    match rng.range(0, 9) {
        0 => hold.partition = bad_name(rng),
        1 => hold.hold = bad_name(rng),
        2 => hold.items.clear(),
        3 => {
            hold.items = (0..65).map(|i| Item { resource: format!("x{i}"), quantity: 1 }).collect()
        }
        4 => {
            let again = hold.items[0].clone();
            hold.items.push(again);
        }
        5 => hold.items[0].quantity = *rng.pick(&[0, QUANTITY_MAX + 1, u64::MAX]),
        6 => hold.ttl_ms = Some(*rng.pick(&[0, 86_400_001, u64::MAX])),
        7 => hold.reference = Some("r".repeat(257)),
        _ => hold.items[0].resource = bad_name(rng),
    }
}

fn list_query(rng: &mut SplitMix64) -> ListQuery {
    let prefix = rng.pick(&["", "", "a", "a-", "a-1", "b", "c", "a b"]).to_string();
    let after = match rng.weighted(&[3, 2, 1]) {
        0 => None,
        1 => Some(rng.pick(&RESOURCES).to_string()),
        _ => Some(rng.pick(&["", "0", "a-0", "zzz", "a b"]).to_string()),
    };
    let limit = match rng.weighted(&[2, 4, 1]) {
        0 => None,
        1 => Some(rng.range(1, 4)),
        _ => Some(*rng.pick(&[0, 1_000, 1_001])),
    };
    ListQuery { prefix, after, limit }
}

fn time_step(rng: &mut SplitMix64, profile: Profile) -> TimeStep {
    let weights = match profile {
        Profile::Mixed => [4, 8, 1, 1, 4],
        Profile::Churn => [4, 8, 0, 0, 0],
    };
    match rng.weighted(&weights) {
        0 => TimeStep::Same,
        1 => TimeStep::Plus(rng.range(1, 10)),
        2 => TimeStep::Plus(rng.range(11, 2_000)),
        3 => TimeStep::Plus(*rng.pick(&[600_000, 86_400_000, 100_000_000])),
        _ => TimeStep::OnExpiry { pick: rng.next_u64() as usize, offset: *rng.pick(&[-1, 0, 1]) },
    }
}

fn verb(rng: &mut SplitMix64, profile: Profile) -> Verb {
    let weights = match profile {
        Profile::Mixed => [4, 3, 3, 2],
        Profile::Churn => [1, 1, 0, 40],
    };
    match rng.weighted(&weights) {
        0 => Verb::Confirm,
        1 => Verb::Release,
        2 => Verb::Cancel,
        _ if rng.percent(95) => Verb::Extend(ttl(rng, profile)),
        _ => Verb::Extend(*rng.pick(&[0, 86_400_001])),
    }
}

fn put_resource(rng: &mut SplitMix64, profile: Profile) -> Command {
    let capacity = match profile {
        Profile::Mixed => capacity(rng),
        Profile::Churn => rng.range(1_000, 100_000),
    };
    let mut put = PutResource {
        partition: partition(rng),
        resource: rng.pick(&RESOURCES).to_string(),
        capacity,
    };
    match rng.weighted(&[92, 3, 3, 2]) {
        0 => {}
        1 => put.partition = bad_name(rng),
        2 => put.resource = bad_name(rng),
        _ => put.capacity = *rng.pick(&[CAPACITY_MAX + 1, u64::MAX]),
    }
    Command::PutResource(put)
}

fn hold(rng: &mut SplitMix64, profile: Profile) -> Command {
    let mut hold = Hold {
        partition: partition(rng),
        hold: hold_id(rng, profile),
        items: items(rng),
        ttl_ms: if rng.percent(85) { Some(ttl(rng, profile)) } else { None },
        reference: reference(rng),
    };
    if profile == Profile::Mixed && rng.percent(12) {
        break_hold(rng, &mut hold);
    }
    Command::Hold(hold)
}

/// A verb on a hold named directly: often unknown, sometimes an invalid name.
fn on_named(rng: &mut SplitMix64, profile: Profile) -> Command {
    let mut partition = partition(rng);
    let mut hold = hold_id(rng, profile);
    match rng.weighted(&[8, 1, 1]) {
        0 => {}
        1 => partition = bad_name(rng),
        _ => hold = bad_name(rng),
    }
    with_verb(partition, hold, verb(rng, profile))
}

/// A valid partition for a query, or sometimes an invalid name.
fn query_partition(rng: &mut SplitMix64) -> String {
    let name = partition(rng);
    query_name(rng, name)
}

fn query_name(rng: &mut SplitMix64, name: String) -> String {
    if rng.percent(10) {
        bad_name(rng)
    } else {
        name
    }
}

/// Decodes one step from `seed`.
pub fn step(seed: u64, profile: Profile) -> Step {
    let mut rng = SplitMix64::new(seed);
    let rng = &mut rng;
    let time = time_step(rng, profile);
    let weights: [u64; 9] = match profile {
        // put, hold, repeat, on existing, on named, tick, list, get resource, get hold
        Profile::Mixed => [5, 7, 3, 10, 2, 2, 1, 1, 1],
        Profile::Churn => [1, 2, 0, 22, 0, 1, 0, 0, 0],
    };
    let action = match rng.weighted(&weights) {
        0 => Action::Command(put_resource(rng, profile)),
        1 => Action::Command(hold(rng, profile)),
        2 => Action::RepeatExisting {
            pick: rng.next_u64(),
            rotate: rng.range(0, 2) as usize,
            change: *rng.pick(&[
                Change::None,
                Change::None,
                Change::None,
                Change::QuantityPlusOne,
                Change::DropItem,
                Change::AddItem,
            ]),
            ttl_ms: if rng.percent(50) { Some(rng.range(1, 30)) } else { None },
        },
        3 => Action::OnExisting {
            // Churn always aims at a hold the verb takes effect on (see `choose`).
            pick: match profile {
                Profile::Mixed => rng.next_u64(),
                Profile::Churn => rng.next_u64() / 100 * 100 + 50,
            },
            verb: verb(rng, profile),
            other_partition: profile == Profile::Mixed && rng.percent(5),
        },
        4 => Action::Command(on_named(rng, profile)),
        6 => {
            let partition = query_partition(rng);
            Action::List { partition, query: list_query(rng) }
        }
        7 => {
            let partition = query_partition(rng);
            let id = if rng.percent(10) { "zz".into() } else { rng.pick(&RESOURCES).to_string() };
            Action::GetResource { partition, id: query_name(rng, id) }
        }
        8 => {
            let partition = query_partition(rng);
            let id = hold_id(rng, profile);
            Action::GetHold { partition, id: query_name(rng, id) }
        }
        _ => Action::Tick,
    };
    Step { time, action }
}

/// A random history of `len` steps.
pub fn history(
    len: impl Into<prop::collection::SizeRange>,
    profile: Profile,
) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(any::<u64>(), len)
        .prop_map(move |seeds| seeds.into_iter().map(|seed| step(seed, profile)).collect())
}

/// A fixed history of `len` steps, the same on every run.
pub fn fixed_history(len: u64, profile: Profile) -> Vec<Step> {
    let mut rng = SplitMix64::new(len);
    (0..len).map(|_| step(rng.next_u64(), profile)).collect()
}
