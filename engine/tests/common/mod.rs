//! Shared generators for the engine's property tests: random histories of commands, queries and
//! time steps over a small universe (2–3 partitions, a few resources of tiny capacity, hold ids
//! reused often), so refusals, idempotent repeats, conflicts and exact-expiry instants are common.
//! Time in a history never goes backwards.
#![allow(dead_code)]

use bookd_engine::limits::{CAPACITY_MAX, QUANTITY_MAX};
use bookd_engine::{
    Cancel, Command, Confirm, Engine, Extend, Hold, HoldStatus, Item, ListQuery, Outcome,
    PutResource, Refusal, Release,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// The time of the first step of every history (Unix ms).
pub const T0: u64 = 1_700_000_000_000;

/// Resource ids, chosen so prefixes and byte order are interesting ("a-10" < "a-2").
pub const RESOURCES: [&str; 6] = ["a", "a-1", "a-10", "a-2", "b", "b.x"];

/// How the clock moves before a step.
#[derive(Debug, Clone)]
pub enum TimeStep {
    /// The same millisecond as the previous step.
    Same,
    /// A few milliseconds later.
    Plus(u64),
    /// Onto (offset 0), just before (-1) or just after (+1) the expiry of a live hold, picked
    /// among the live holds by the runner; `Same` when no hold is live.
    OnExpiry { pick: Index, offset: i8 },
}

/// One step of a history: a command, an explicit tick, or a query.
#[derive(Debug, Clone)]
pub enum Action {
    Command(Command),
    Tick,
    List { partition: String, query: ListQuery },
    GetResource { partition: String, id: String },
    GetHold { partition: String, id: String },
}

#[derive(Debug, Clone)]
pub struct Step {
    pub time: TimeStep,
    pub action: Action,
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
            let at = *pick.get(&future);
            match offset {
                -1 => at - 1,
                0 => at,
                _ => at + 1,
            }
        }
    }
}

/// The expiries of the engine's live holds, read from its public image.
pub fn engine_live_expiries(engine: &Engine) -> Vec<u64> {
    let held = HoldStatus::Held as u8;
    engine
        .image()
        .partitions
        .iter()
        .flat_map(|p| p.holds.iter())
        .filter(|h| h.status == held)
        .map(|h| h.expires_at_ms)
        .collect()
}

/// Runs one action on the engine at `now_ms`. Queries tick first, as the shard does.
pub fn engine_step(engine: &mut Engine, now_ms: u64, action: &Action) -> EngineResult {
    match action {
        Action::Command(command) => EngineResult::Command(engine.apply(now_ms, command)),
        Action::Tick => EngineResult::Tick(engine.tick(now_ms)),
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
    }
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

// ---------------------------------------------------------------------------------------------
// Generators. A history is generated as raw steps, then resolved: a raw step may say "repeat the
// k-th earlier hold command" or "confirm the hold of the k-th earlier hold command", which is how
// idempotent repeats, conflicts and transitions of real holds become frequent.

#[derive(Debug, Clone)]
enum RawAction {
    Action(Action),
    /// Repeat an earlier hold command, items shuffled, perhaps changed so it conflicts.
    RepeatHold {
        pick: Index,
        rotate: usize,
        change: Change,
        ttl_ms: Option<u64>,
    },
    /// A hold command (confirm, release, cancel, extend) on the hold of an earlier hold command.
    OnEarlier {
        pick: Index,
        verb: Verb,
        other_partition: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum Change {
    None,
    QuantityPlusOne,
    DropItem,
    AddItem,
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Confirm,
    Release,
    Cancel,
    Extend(u64),
}

#[derive(Debug, Clone)]
struct RawStep {
    time: TimeStep,
    action: RawAction,
}

fn bad_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        String::new(),
        "a b".to_string(),
        "x".repeat(65),
        "é".to_string(),
        "a/b".to_string(),
    ])
}

fn partition() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(vec!["p0", "p1"]).prop_map(String::from),
        2 => Just("p2".to_string()),
        1 => bad_name(),
    ]
}

fn resource_id() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => prop::sample::select(RESOURCES.to_vec()).prop_map(String::from),
        1 => Just("zz".to_string()),
        1 => bad_name(),
    ]
}

fn hold_id() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => (0..6u32).prop_map(|n| format!("h{n}")),
        6 => (0..60u32).prop_map(|n| format!("h{n}")),
        1 => bad_name(),
    ]
}

fn capacity() -> impl Strategy<Value = u64> {
    prop_oneof![
        20 => 0..=5u64,
        3 => 6..=12u64,
        1 => Just(CAPACITY_MAX),
        1 => Just(CAPACITY_MAX + 1),
        1 => Just(u64::MAX),
    ]
}

fn quantity() -> impl Strategy<Value = u64> {
    prop_oneof![
        24 => 1..=3u64,
        4 => 4..=6u64,
        1 => Just(0),
        1 => Just(QUANTITY_MAX),
        1 => Just(QUANTITY_MAX + 1),
    ]
}

fn ttl() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => 1..=30u64,
        2 => 31..=3_000u64,
        1 => Just(86_400_000u64),
        1 => prop::sample::select(vec![0u64, 86_400_001, u64::MAX]),
    ]
}

fn items() -> impl Strategy<Value = Vec<Item>> {
    let item = |(resource, quantity)| Item { resource, quantity };
    prop_oneof![
        // Distinct known resources.
        24 => (prop::sample::subsequence(RESOURCES.to_vec(), 1..=3), prop::collection::vec(quantity(), 3))
            .prop_map(|(ids, qs)| ids.into_iter().zip(qs).map(|(r, q)| Item { resource: r.into(), quantity: q }).collect()),
        // Anything, duplicates and unknown or bad resources included.
        8 => prop::collection::vec((resource_id(), quantity()).prop_map(item), 1..=4),
        1 => Just(Vec::new()),
        1 => prop::sample::select(vec![64usize, 65]).prop_map(|n| {
            (0..n).map(|i| Item { resource: format!("x{i}"), quantity: 1 }).collect()
        }),
    ]
}

fn reference() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(None),
        2 => Just(Some("order-1".to_string())),
        1 => Just(Some("r".repeat(256))),
        1 => Just(Some("r".repeat(257))),
    ]
}

fn list_query() -> impl Strategy<Value = ListQuery> {
    let prefix = prop::sample::select(vec!["", "", "a", "a-", "a-1", "b", "c", "a b"]);
    let after = prop_oneof![
        3 => Just(None),
        2 => prop::sample::select(RESOURCES.to_vec()).prop_map(|s| Some(s.to_string())),
        1 => prop::sample::select(vec!["", "0", "a-0", "zzz", "a b"]).prop_map(|s| Some(s.to_string())),
    ];
    let limit = prop_oneof![
        2 => Just(None),
        4 => (1..=4u64).prop_map(Some),
        1 => prop::sample::select(vec![0u64, 1_000, 1_001]).prop_map(Some),
    ];
    (prefix, after, limit).prop_map(|(prefix, after, limit)| ListQuery {
        prefix: prefix.to_string(),
        after,
        limit,
    })
}

fn time_step() -> impl Strategy<Value = TimeStep> {
    prop_oneof![
        4 => Just(TimeStep::Same),
        8 => (1..=10u64).prop_map(TimeStep::Plus),
        1 => (11..=2_000u64).prop_map(TimeStep::Plus),
        1 => prop::sample::select(vec![600_000u64, 86_400_000, 100_000_000]).prop_map(TimeStep::Plus),
        4 => (any::<Index>(), -1..=1i8).prop_map(|(pick, offset)| TimeStep::OnExpiry { pick, offset }),
    ]
}

fn verb() -> impl Strategy<Value = Verb> {
    prop_oneof![
        4 => Just(Verb::Confirm),
        3 => Just(Verb::Release),
        3 => Just(Verb::Cancel),
        2 => ttl().prop_map(Verb::Extend),
    ]
}

fn raw_action() -> impl Strategy<Value = RawAction> {
    let put =
        (partition(), resource_id(), capacity()).prop_map(|(partition, resource, capacity)| {
            Command::PutResource(PutResource { partition, resource, capacity })
        });
    let hold = (partition(), hold_id(), items(), prop::option::weighted(0.8, ttl()), reference())
        .prop_map(|(partition, hold, items, ttl_ms, reference)| {
            Command::Hold(Hold { partition, hold, items, ttl_ms, reference })
        });
    let literal_verb =
        (partition(), hold_id(), verb()).prop_map(|(p, h, verb)| with_verb(p, h, verb));
    let change = prop_oneof![
        6 => Just(Change::None),
        1 => Just(Change::QuantityPlusOne),
        1 => Just(Change::DropItem),
        1 => Just(Change::AddItem),
    ];
    prop_oneof![
        4 => put.prop_map(|c| RawAction::Action(Action::Command(c))),
        6 => hold.prop_map(|c| RawAction::Action(Action::Command(c))),
        3 => (any::<Index>(), any::<usize>(), change, prop::option::of(1..=30u64))
            .prop_map(|(pick, rotate, change, ttl_ms)| RawAction::RepeatHold { pick, rotate, change, ttl_ms }),
        9 => (any::<Index>(), verb(), prop::bool::weighted(0.1))
            .prop_map(|(pick, verb, other_partition)| RawAction::OnEarlier { pick, verb, other_partition }),
        2 => literal_verb.prop_map(|c| RawAction::Action(Action::Command(c))),
        2 => Just(RawAction::Action(Action::Tick)),
        1 => (partition(), list_query()).prop_map(|(partition, query)| RawAction::Action(Action::List { partition, query })),
        1 => (partition(), resource_id()).prop_map(|(partition, id)| RawAction::Action(Action::GetResource { partition, id })),
        1 => (partition(), hold_id()).prop_map(|(partition, id)| RawAction::Action(Action::GetHold { partition, id })),
    ]
}

fn with_verb(partition: String, hold: String, verb: Verb) -> Command {
    match verb {
        Verb::Confirm => Command::Confirm(Confirm { partition, hold }),
        Verb::Release => Command::Release(Release { partition, hold }),
        Verb::Cancel => Command::Cancel(Cancel { partition, hold }),
        Verb::Extend(ttl_ms) => Command::Extend(Extend { partition, hold, ttl_ms }),
    }
}

/// Turns raw steps into concrete steps, resolving references to earlier hold commands.
fn resolve(raw: Vec<RawStep>) -> Vec<Step> {
    let mut holds: Vec<Hold> = Vec::new();
    let mut steps = Vec::with_capacity(raw.len());
    for RawStep { time, action } in raw {
        let action = match action {
            RawAction::Action(action) => action,
            RawAction::RepeatHold { pick, rotate, change, ttl_ms } if !holds.is_empty() => {
                let mut hold = pick.get(&holds).clone();
                hold.ttl_ms = ttl_ms;
                if !hold.items.is_empty() {
                    let len = hold.items.len();
                    hold.items.rotate_left(rotate % len);
                }
                match change {
                    Change::None => {}
                    Change::QuantityPlusOne => {
                        if let Some(item) = hold.items.first_mut() {
                            item.quantity += 1;
                        }
                    }
                    Change::DropItem => {
                        hold.items.pop();
                    }
                    Change::AddItem => {
                        let unused = RESOURCES
                            .iter()
                            .find(|r| hold.items.iter().all(|item| item.resource != **r));
                        let resource = unused.copied().unwrap_or("zz");
                        hold.items.push(Item { resource: resource.into(), quantity: 1 });
                    }
                }
                Action::Command(Command::Hold(hold))
            }
            RawAction::OnEarlier { pick, verb, other_partition } if !holds.is_empty() => {
                let hold = pick.get(&holds);
                let mut partition = hold.partition.clone();
                if other_partition {
                    partition = if partition == "p0" { "p1".into() } else { "p0".into() };
                }
                Action::Command(with_verb(partition, hold.hold.clone(), verb))
            }
            RawAction::RepeatHold { .. } | RawAction::OnEarlier { .. } => Action::Tick,
        };
        if let Action::Command(Command::Hold(hold)) = &action {
            holds.push(hold.clone());
        }
        steps.push(Step { time, action });
    }
    steps
}

/// A random history of `len` steps.
pub fn history(len: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = Vec<Step>> {
    let step = (time_step(), raw_action()).prop_map(|(time, action)| RawStep { time, action });
    prop::collection::vec(step, len).prop_map(resolve)
}

pub fn scratch_timing() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    fn t<S: Strategy>(name: &str, s: S, runner: &mut proptest::test_runner::TestRunner) {
        let start = std::time::Instant::now();
        for _ in 0..10_000 { let _ = s.new_tree(runner).unwrap().current(); }
        eprintln!("{name}: {:?}", start.elapsed() / 10_000);
    }
    t("time", time_step(), &mut runner);
    t("raw_action", raw_action(), &mut runner);
    t("items", items(), &mut runner);
    t("list", list_query(), &mut runner);
    t("verb", verb(), &mut runner);
    t("hold_id", hold_id(), &mut runner);
    t("partition", partition(), &mut runner);
}
