//! Model-based test: long random histories run against the engine and against a small,
//! obviously-correct model of the rules for resources and holds in docs/API.md (plain BTreeMaps,
//! a linear scan for expiry); every result and, after every step, every resource and hold must
//! agree.

// Test helpers outside #[test] functions may unwrap too (clippy.toml covers only the latter).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bookd_engine::{
    Command, Engine, HoldStatus, HoldView, ListQuery, Outcome, Refusal, ResourceView,
};
use common::{
    engine_step, history, next_time, resolve, Action, EngineResult, Existing, Profile, Step, T0,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

// ---------------------------------------------------------------------------------------------
// The model. Written from the contract, not from the engine.

const CAPACITY_MAX: u64 = (1 << 53) - 1;
const QUANTITY_MAX: u64 = (1 << 32) - 1;
const TTL_MS_MAX: u64 = 86_400_000;
const TTL_MS_DEFAULT: u64 = 600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Held,
    Confirmed,
    Released,
    Expired,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::Confirmed => "confirmed",
            Status::Released => "released",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Res {
    capacity: u64,
    held: u64,
    confirmed: u64,
}

#[derive(Debug, Clone)]
struct ModelHold {
    status: Status,
    /// In request order.
    items: Vec<(String, u64)>,
    expires_at_ms: u64,
    reference: Option<String>,
    /// When it was released, expired or cancelled: it is forgotten `RETENTION_MS` later.
    ended_at_ms: Option<u64>,
}

/// The engine's default hold retention, which the model's engine keeps.
const RETENTION_MS: u64 = bookd_engine::limits::HOLD_RETENTION_MS_DEFAULT;

#[derive(Debug, Clone, Default)]
struct Part {
    resources: BTreeMap<String, Res>,
    holds: BTreeMap<String, ModelHold>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    parts: BTreeMap<String, Part>,
    /// (partition, hold id) of every hold a command or expiry touched since the runner last
    /// looked, so it can compare those after every step and all holds now and then.
    touched: Vec<(String, String)>,
}

/// A refusal as the contract describes it. `Invalid` lists every field that is wrong; the
/// engine must name one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Denied {
    Invalid(BTreeSet<String>),
    ResourceNotFound(String),
    HoldNotFound,
    InsufficientCapacity { resource: String, requested: u64, available: u64 },
    HoldIdConflict,
    HoldExpired,
    HoldReleased,
    HoldConfirmed,
    HoldNotConfirmed,
    HoldCancelled,
    CapacityBelowUsage { capacity: u64, used: u64 },
}

impl Denied {
    fn code(&self) -> &'static str {
        match self {
            Denied::Invalid(_) => "invalid",
            Denied::ResourceNotFound(_) => "resource_not_found",
            Denied::HoldNotFound => "hold_not_found",
            Denied::InsufficientCapacity { .. } => "insufficient_capacity",
            Denied::HoldIdConflict => "hold_id_conflict",
            Denied::HoldExpired => "hold_expired",
            Denied::HoldReleased => "hold_released",
            Denied::HoldConfirmed => "hold_confirmed",
            Denied::HoldNotConfirmed => "hold_not_confirmed",
            Denied::HoldCancelled => "hold_cancelled",
            Denied::CapacityBelowUsage { .. } => "capacity_below_usage",
        }
    }
}

/// A resource as the contract shows it: (partition, id, capacity, held, confirmed).
type ResV = (String, String, u64, u64, u64);

/// A hold as the contract shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HoldV {
    partition: String,
    id: String,
    status: &'static str,
    items: Vec<(String, u64)>,
    expires_at_ms: u64,
    reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Resource { resource: ResV, created: bool },
    Hold { hold: HoldV, existing: bool },
}

fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
}

/// Adds `field` to `bad` when `ok` is false.
fn need(bad: &mut BTreeSet<String>, ok: bool, field: impl Into<String>) {
    if !ok {
        bad.insert(field.into());
    }
}

fn invalid_unless_empty(bad: BTreeSet<String>) -> Result<(), Denied> {
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Denied::Invalid(bad))
    }
}

impl Model {
    /// Expires every held hold whose expiry is at or before `now_ms`; returns how many.
    fn advance(&mut self, now_ms: u64) -> u32 {
        let mut expired = 0;
        for (name, part) in self.parts.iter_mut() {
            for (id, hold) in part.holds.iter_mut() {
                if hold.status == Status::Held && hold.expires_at_ms <= now_ms {
                    hold.status = Status::Expired;
                    hold.ended_at_ms = Some(hold.expires_at_ms);
                    self.touched.push((name.clone(), id.clone()));
                    for (r, q) in &hold.items {
                        part.resources.get_mut(r).unwrap().held -= q;
                    }
                    expired += 1;
                }
            }
        }
        // Ended holds are forgotten once their retention has passed.
        for part in self.parts.values_mut() {
            part.holds.retain(|_, hold| hold.ended_at_ms.is_none_or(|e| e + RETENTION_MS > now_ms));
        }
        expired
    }

    fn hold_view(&self, p: &str, h: &str) -> HoldV {
        let hold = &self.parts[p].holds[h];
        HoldV {
            partition: p.into(),
            id: h.into(),
            status: hold.status.as_str(),
            items: hold.items.clone(),
            expires_at_ms: hold.expires_at_ms,
            reference: hold.reference.clone(),
        }
    }

    fn resource_view(&self, p: &str, r: &str) -> ResV {
        let res = &self.parts[p].resources[r];
        (p.into(), r.into(), res.capacity, res.held, res.confirmed)
    }

    fn apply(&mut self, now_ms: u64, command: &Command) -> Result<Out, Denied> {
        let hold_ref = match command {
            Command::PutResource(_) => None,
            Command::DeletePartition(_) => panic!("the model generates no deletions"),
            Command::Hold(c) => Some((&c.partition, &c.hold)),
            Command::Confirm(c) => Some((&c.partition, &c.hold)),
            Command::Release(c) => Some((&c.partition, &c.hold)),
            Command::Cancel(c) => Some((&c.partition, &c.hold)),
            Command::Extend(c) => Some((&c.partition, &c.hold)),
        };
        if let Some((p, h)) = hold_ref {
            self.touched.push((p.clone(), h.clone()));
        }
        match command {
            Command::PutResource(c) => {
                let mut bad = BTreeSet::new();
                need(&mut bad, is_name(&c.partition), "partition");
                need(&mut bad, is_name(&c.resource), "id");
                need(&mut bad, c.capacity <= CAPACITY_MAX, "capacity");
                invalid_unless_empty(bad)?;
                self.advance(now_ms);
                let part = self.parts.entry(c.partition.clone()).or_default();
                let created = !part.resources.contains_key(&c.resource);
                let res = part.resources.entry(c.resource.clone()).or_default();
                if c.capacity < res.held + res.confirmed {
                    let used = res.held + res.confirmed;
                    return Err(Denied::CapacityBelowUsage { capacity: c.capacity, used });
                }
                res.capacity = c.capacity;
                let resource = self.resource_view(&c.partition, &c.resource);
                Ok(Out::Resource { resource, created })
            }
            Command::Hold(c) => {
                let mut bad = BTreeSet::new();
                need(&mut bad, is_name(&c.partition), "partition");
                need(&mut bad, is_name(&c.hold), "id");
                need(&mut bad, (1..=64).contains(&c.items.len()), "items");
                for (i, item) in c.items.iter().enumerate() {
                    need(&mut bad, is_name(&item.resource), format!("items[{i}].resource"));
                    let q_ok = (1..=QUANTITY_MAX).contains(&item.quantity);
                    need(&mut bad, q_ok, format!("items[{i}].quantity"));
                    let dups = c.items.iter().filter(|o| o.resource == item.resource).count();
                    need(&mut bad, dups == 1, format!("items[{i}].resource"));
                }
                let ttl_ok = c.ttl_ms.is_none_or(|t| (1..=TTL_MS_MAX).contains(&t));
                need(&mut bad, ttl_ok, "ttl_ms");
                need(&mut bad, c.reference.as_ref().is_none_or(|r| r.len() <= 256), "ref");
                invalid_unless_empty(bad)?;
                self.advance(now_ms);
                let requested: Vec<(String, u64)> =
                    c.items.iter().map(|i| (i.resource.clone(), i.quantity)).collect();
                let empty = Part::default();
                let part = self.parts.get(&c.partition).unwrap_or(&empty);
                if let Some(existing) = part.holds.get(&c.hold) {
                    let mut a = existing.items.clone();
                    let mut b = requested.clone();
                    a.sort();
                    b.sort();
                    if a != b {
                        return Err(Denied::HoldIdConflict);
                    }
                    let hold = self.hold_view(&c.partition, &c.hold);
                    return Ok(Out::Hold { hold, existing: true });
                }
                for (r, q) in &requested {
                    let Some(res) = part.resources.get(r) else {
                        return Err(Denied::ResourceNotFound(r.clone()));
                    };
                    let available = res.capacity - res.held - res.confirmed;
                    if *q > available {
                        return Err(Denied::InsufficientCapacity {
                            resource: r.clone(),
                            requested: *q,
                            available,
                        });
                    }
                }
                let part = self.parts.get_mut(&c.partition).unwrap();
                for (r, q) in &requested {
                    part.resources.get_mut(r).unwrap().held += q;
                }
                let hold = ModelHold {
                    status: Status::Held,
                    items: requested,
                    expires_at_ms: now_ms + c.ttl_ms.unwrap_or(TTL_MS_DEFAULT),
                    reference: c.reference.clone(),
                    ended_at_ms: None,
                };
                part.holds.insert(c.hold.clone(), hold);
                Ok(Out::Hold { hold: self.hold_view(&c.partition, &c.hold), existing: false })
            }
            Command::Confirm(c) => self.on_hold(now_ms, &c.partition, &c.hold, None, Verb::Confirm),
            Command::Release(c) => self.on_hold(now_ms, &c.partition, &c.hold, None, Verb::Release),
            Command::Cancel(c) => self.on_hold(now_ms, &c.partition, &c.hold, None, Verb::Cancel),
            Command::DeletePartition(_) => panic!("the model generates no deletions"),
            Command::Extend(c) => {
                self.on_hold(now_ms, &c.partition, &c.hold, Some(c.ttl_ms), Verb::Extend)
            }
        }
    }

    /// confirm, release, cancel and extend: the contract's state diagram.
    fn on_hold(
        &mut self,
        now_ms: u64,
        p: &str,
        h: &str,
        ttl_ms: Option<u64>,
        verb: Verb,
    ) -> Result<Out, Denied> {
        let mut bad = BTreeSet::new();
        need(&mut bad, is_name(p), "partition");
        need(&mut bad, is_name(h), "id");
        need(&mut bad, ttl_ms.is_none_or(|t| (1..=TTL_MS_MAX).contains(&t)), "ttl_ms");
        invalid_unless_empty(bad)?;
        self.advance(now_ms);
        let part = self.parts.get_mut(p).ok_or(Denied::HoldNotFound)?;
        let hold = part.holds.get_mut(h).ok_or(Denied::HoldNotFound)?;
        use Status::*;
        let to = match (verb, hold.status) {
            (Verb::Confirm, Held) => Confirmed,
            (Verb::Release, Held) => Released,
            (Verb::Cancel, Confirmed) => Cancelled,
            (Verb::Extend, Held) => {
                hold.expires_at_ms = now_ms + ttl_ms.unwrap();
                Held
            }
            // Repeats of a command that already took effect succeed unchanged.
            (Verb::Confirm, Confirmed)
            | (Verb::Release, Released | Expired)
            | (Verb::Cancel, Cancelled) => hold.status,
            (Verb::Cancel, Held) => return Err(Denied::HoldNotConfirmed),
            (_, Confirmed) => return Err(Denied::HoldConfirmed),
            (_, Released) => return Err(Denied::HoldReleased),
            (_, Expired) => return Err(Denied::HoldExpired),
            (_, Cancelled) => return Err(Denied::HoldCancelled),
        };
        for (r, q) in &hold.items {
            let res = part.resources.get_mut(r).unwrap();
            match (hold.status, to) {
                (Held, Confirmed) => {
                    res.held -= q;
                    res.confirmed += q;
                }
                (Held, Released) => res.held -= q,
                (Confirmed, Cancelled) => res.confirmed -= q,
                _ => {}
            }
        }
        if hold.status != to && matches!(to, Released | Cancelled) {
            hold.ended_at_ms = Some(now_ms);
        }
        hold.status = to;
        Ok(Out::Hold { hold: self.hold_view(p, h), existing: false })
    }

    fn list(&self, p: &str, q: &ListQuery) -> Result<(Vec<ResV>, Option<String>), Denied> {
        let mut bad = BTreeSet::new();
        need(&mut bad, is_name(p), "partition");
        need(&mut bad, q.prefix.is_empty() || is_name(&q.prefix), "prefix");
        need(&mut bad, q.after.as_ref().is_none_or(|a| is_name(a)), "after");
        need(&mut bad, q.limit.is_none_or(|l| (1..=1_000).contains(&l)), "limit");
        invalid_unless_empty(bad)?;
        let limit = q.limit.unwrap_or(100) as usize;
        let Some(part) = self.parts.get(p) else { return Ok((Vec::new(), None)) };
        let matching: Vec<&String> = part
            .resources
            .keys()
            .filter(|id| id.starts_with(&q.prefix))
            .filter(|id| q.after.as_ref().is_none_or(|a| id.as_str() > a.as_str()))
            .collect();
        let page: Vec<ResV> =
            matching.iter().take(limit).map(|id| self.resource_view(p, id)).collect();
        let next = if matching.len() > limit { page.last().map(|r| r.1.clone()) } else { None };
        Ok((page, next))
    }

    fn get_resource(&self, p: &str, r: &str) -> Result<ResV, Denied> {
        let mut bad = BTreeSet::new();
        need(&mut bad, is_name(p), "partition");
        need(&mut bad, is_name(r), "id");
        invalid_unless_empty(bad)?;
        match self.parts.get(p).and_then(|part| part.resources.get(r)) {
            Some(_) => Ok(self.resource_view(p, r)),
            None => Err(Denied::ResourceNotFound(r.into())),
        }
    }

    fn get_hold(&self, p: &str, h: &str) -> Result<HoldV, Denied> {
        let mut bad = BTreeSet::new();
        need(&mut bad, is_name(p), "partition");
        need(&mut bad, is_name(h), "id");
        invalid_unless_empty(bad)?;
        match self.parts.get(p).and_then(|part| part.holds.get(h)) {
            Some(_) => Ok(self.hold_view(p, h)),
            None => Err(Denied::HoldNotFound),
        }
    }

    /// Every hold, in (partition, id) order, for the runner to pick targets from.
    fn existing(&self) -> Vec<Existing> {
        let mut existing = Vec::new();
        for (partition, part) in &self.parts {
            for (id, hold) in &part.holds {
                existing.push(Existing {
                    partition: partition.clone(),
                    id: id.clone(),
                    items: hold.items.clone(),
                    status: match hold.status {
                        Status::Held => HoldStatus::Held,
                        Status::Confirmed => HoldStatus::Confirmed,
                        Status::Released => HoldStatus::Released,
                        Status::Expired => HoldStatus::Expired,
                        Status::Cancelled => HoldStatus::Cancelled,
                    },
                    expires_at_ms: hold.expires_at_ms,
                });
            }
        }
        existing
    }

    fn live_expiries(&self) -> Vec<u64> {
        let holds = self.parts.values().flat_map(|p| p.holds.values());
        holds.filter(|h| h.status == Status::Held).map(|h| h.expires_at_ms).collect()
    }

    /// The model's own invariant: counters are the sums over holds, and within capacity.
    fn check(&self) {
        for (name, part) in &self.parts {
            let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for hold in part.holds.values() {
                for (r, q) in &hold.items {
                    let sum = sums.entry(r.as_str()).or_default();
                    match hold.status {
                        Status::Held => sum.0 += q,
                        Status::Confirmed => sum.1 += q,
                        _ => {}
                    }
                }
            }
            for (id, res) in &part.resources {
                let sum = sums.get(id.as_str()).copied().unwrap_or_default();
                assert_eq!((res.held, res.confirmed), sum, "model counters of {name}/{id}");
                assert!(res.held + res.confirmed <= res.capacity, "model oversold {name}/{id}");
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Confirm,
    Release,
    Cancel,
    Extend,
}

// ---------------------------------------------------------------------------------------------
// Comparing the engine with the model.

fn res_v(view: &ResourceView) -> ResV {
    (view.partition.to_string(), view.id.to_string(), view.capacity, view.held, view.confirmed)
}

fn hold_v(view: &HoldView) -> HoldV {
    HoldV {
        partition: view.partition.to_string(),
        id: view.id.to_string(),
        status: view.status.as_str(),
        items: view.items.iter().map(|i| (i.resource.to_string(), u64::from(i.quantity))).collect(),
        expires_at_ms: view.expires_at_ms,
        reference: view.reference.as_ref().map(|r| r.to_string()),
    }
}

fn out_v(outcome: &Outcome) -> Out {
    match outcome {
        Outcome::Resource { resource, created } => {
            Out::Resource { resource: res_v(resource), created: *created }
        }
        Outcome::Hold { hold, existing } => Out::Hold { hold: hold_v(hold), existing: *existing },
        Outcome::PartitionDeleted { .. } => panic!("the model generates no deletions"),
    }
}

/// Checks that the engine's refusal is the model's: same code, same details.
fn same_refusal(actual: &Refusal, expected: &Denied) -> Result<(), String> {
    let ok = actual.code() == expected.code()
        && match (actual, expected) {
            (Refusal::Invalid { field, .. }, Denied::Invalid(fields)) => fields.contains(field),
            (Refusal::ResourceNotFound { resource }, Denied::ResourceNotFound(r)) => {
                **resource == **r
            }
            (
                Refusal::InsufficientCapacity { resource, requested, available },
                Denied::InsufficientCapacity { resource: r, requested: q, available: a },
            ) => (&**resource, requested, available) == (r.as_str(), q, a),
            (
                Refusal::CapacityBelowUsage { capacity, used },
                Denied::CapacityBelowUsage { capacity: c, used: u },
            ) => (capacity, used) == (c, u),
            (Refusal::HoldNotFound, Denied::HoldNotFound)
            | (Refusal::HoldIdConflict, Denied::HoldIdConflict)
            | (Refusal::HoldExpired, Denied::HoldExpired)
            | (Refusal::HoldReleased, Denied::HoldReleased)
            | (Refusal::HoldConfirmed, Denied::HoldConfirmed)
            | (Refusal::HoldNotConfirmed, Denied::HoldNotConfirmed)
            | (Refusal::HoldCancelled, Denied::HoldCancelled) => true,
            _ => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!("engine refused with {actual:?}, model with {expected:?}"))
    }
}

fn same<A: PartialEq + std::fmt::Debug>(
    actual: Result<A, &Refusal>,
    expected: Result<A, Denied>,
) -> Result<(), String> {
    match (&actual, &expected) {
        (Ok(a), Ok(e)) if a == e => Ok(()),
        (Err(a), Err(e)) => same_refusal(a, e),
        _ => Err(format!("engine gave {actual:?}, model {expected:?}")),
    }
}

/// Runs the action on the model and compares with what the engine answered.
fn compare_step(
    model: &mut Model,
    now_ms: u64,
    action: &Action,
    got: &EngineResult,
) -> Result<(), String> {
    match (action, got) {
        (Action::Command(command), EngineResult::Command(actual)) => {
            same(actual.as_ref().map(out_v), model.apply(now_ms, command))
        }
        (Action::Tick, EngineResult::Tick(expired)) => {
            same(Ok(*expired), Ok(model.advance(now_ms)))
        }
        (Action::List { partition, query }, EngineResult::Page(actual)) => {
            model.advance(now_ms);
            let actual = actual.as_ref().map(|page| {
                let next = page.next.as_ref().map(|n| n.to_string());
                (page.resources.iter().map(res_v).collect::<Vec<_>>(), next)
            });
            same(actual, model.list(partition, query))
        }
        (Action::GetResource { partition, id }, EngineResult::Resource(actual)) => {
            model.advance(now_ms);
            same(actual.as_ref().map(res_v), model.get_resource(partition, id))
        }
        (Action::GetHold { partition, id }, EngineResult::Hold(actual)) => {
            model.advance(now_ms);
            same(actual.as_ref().map(hold_v), model.get_hold(partition, id))
        }
        _ => Err("engine answered another kind of action".into()),
    }
}

/// Compares the whole state at `now_ms`: every partition and resource, and every hold when
/// `all_holds` (otherwise only their number and how many are live).
fn compare_state(
    engine: &mut Engine,
    model: &mut Model,
    now_ms: u64,
    all_holds: bool,
) -> Result<(), String> {
    engine.tick(now_ms);
    model.advance(now_ms);
    if all_holds {
        model.check();
    }
    engine.check_invariants().map_err(|violation| violation.to_string())?;
    let stats = engine.stats();
    let holds = model.parts.values().map(|p| p.holds.len()).sum::<usize>();
    let live = model.live_expiries().len();
    let resources = model.parts.values().map(|p| p.resources.len()).sum::<usize>();
    let counts = (stats.partitions as usize, stats.resources as usize, stats.holds as usize);
    if counts != (model.parts.len(), resources, holds) || stats.holds_live as usize != live {
        return Err(format!("engine stats {stats:?}, model {counts:?} with {live} live"));
    }
    if engine.clock_ms() != now_ms {
        return Err(format!("engine clock {} != {now_ms}", engine.clock_ms()));
    }
    for (name, part) in &model.parts {
        let page = engine
            .list_resources(name, &ListQuery { limit: Some(1_000), ..ListQuery::default() })
            .map_err(|e| format!("listing {name}: {e}"))?;
        let actual: Vec<ResV> = page.resources.iter().map(res_v).collect();
        let expected: Vec<ResV> =
            part.resources.keys().map(|r| model.resource_view(name, r)).collect();
        if actual != expected || page.next.is_some() {
            return Err(format!("resources of {name}: engine {actual:?}, model {expected:?}"));
        }
        for view in &page.resources {
            if view.held + view.confirmed > view.capacity {
                return Err(format!("oversold: {view:?}"));
            }
        }
        if all_holds {
            for id in part.holds.keys() {
                let actual = engine.hold(name, id);
                same(actual.as_ref().map(hold_v), Ok(model.hold_view(name, id)))?;
            }
        }
    }
    // The holds this step touched, and that a refused hold left no trace.
    for (p, h) in std::mem::take(&mut model.touched) {
        let actual = engine.hold(&p, &h);
        same(actual.as_ref().map(hold_v), model.get_hold(&p, &h))?;
    }
    Ok(())
}

/// How often each kind of step happened (`op:code`, `op:ok:status`, ...), to check that the
/// generators reach every interesting case, and the expiry queue's length over time.
#[derive(Debug, Default)]
struct Tally {
    kinds: BTreeMap<String, u64>,
    queue_len_max: usize,
    queue_len_drop_max: usize,
}

impl Tally {
    fn add(&mut self, kind: impl Into<String>) {
        *self.kinds.entry(kind.into()).or_default() += 1;
    }

    fn count(&self, kind: &str) -> u64 {
        self.kinds.get(kind).copied().unwrap_or(0)
    }

    fn record(&mut self, action: &Action, got: &EngineResult, on_expiry: bool) {
        let kind = match (action, got) {
            (Action::Command(command), EngineResult::Command(result)) => match result {
                Ok(Outcome::Resource { created, .. }) => {
                    format!("put_resource:{}", if *created { "created" } else { "changed" })
                }
                Ok(Outcome::Hold { hold, existing }) => {
                    let existing = if *existing { ":existing" } else { "" };
                    format!("{}:ok{existing}:{}", command.op(), hold.status.as_str())
                }
                Ok(Outcome::PartitionDeleted { .. }) => "delete_partition:ok".into(),
                Err(refusal) => format!("{}:{}", command.op(), refusal.code()),
            },
            (Action::Tick, EngineResult::Tick(expired)) => {
                format!("tick:{}", if *expired > 0 { "expired" } else { "none" })
            }
            (Action::List { .. }, EngineResult::Page(Ok(page))) => {
                format!("list:ok:{}", if page.next.is_some() { "next" } else { "last" })
            }
            (Action::List { .. }, EngineResult::Page(Err(refusal))) => {
                format!("list:{}", refusal.code())
            }
            (_, EngineResult::Resource(result)) => format!("get_resource:{}", code(result)),
            (_, EngineResult::Hold(result)) => format!("get_hold:{}", code(result)),
            _ => "mismatched".into(),
        };
        if on_expiry {
            self.add(format!("on_expiry:{kind}"));
        }
        self.add(kind);
    }
}

fn code<T>(result: &Result<T, Refusal>) -> &'static str {
    result.as_ref().map_or_else(Refusal::code, |_| "ok")
}

/// Runs a history against a fresh engine and model; Err describes the first disagreement.
fn run(steps: &[Step], tally: &mut Tally) -> Result<(), String> {
    let mut engine = Engine::default();
    let mut model = Model::default();
    let mut now_ms = T0;
    for (index, step) in steps.iter().enumerate() {
        let live = model.live_expiries();
        let needs_existing =
            matches!(step.action, Action::OnExisting { .. } | Action::RepeatExisting { .. });
        let existing = if needs_existing { model.existing() } else { Vec::new() };
        now_ms = next_time(now_ms, &step.time, &live);
        let action = resolve(&step.action, &existing, now_ms);
        let got = engine_step(&mut engine, now_ms, &action);
        let context = |e: String| format!("step {index} at {now_ms}: {action:?}: {e}");
        compare_step(&mut model, now_ms, &action, &got).map_err(context)?;
        let holds = engine.stats().holds;
        // Every hold after every step, but only now and then once there are very many (the
        // churn history): in between, the holds a step touched, the counts and every resource.
        let all_holds = holds <= 200 || index % 256 == 0 || index + 1 == steps.len();
        compare_state(&mut engine, &mut model, now_ms, all_holds).map_err(context)?;
        tally.record(&action, &got, live.contains(&now_ms));
        let queue_len = engine.stats().expiry_queue_len;
        tally.queue_len_drop_max =
            tally.queue_len_drop_max.max(tally.queue_len_max.saturating_sub(queue_len));
        tally.queue_len_max = tally.queue_len_max.max(queue_len);
    }
    Ok(())
}

/// Runs `cases` random histories of `len` steps; returns what they covered.
fn check_many(cases: u32, len: std::ops::Range<usize>, profile: Profile) -> Tally {
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 20_000,
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let tally = RefCell::new(Tally::default());
    let started = Instant::now();
    let result = runner.run(&history(len, profile), |steps| {
        let mut tally = tally.borrow_mut();
        run(&steps, &mut tally).map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("the engine disagrees with the model: {failure}");
    }
    let tally = tally.into_inner();
    let steps: u64 =
        tally.kinds.iter().filter(|(k, _)| !k.starts_with("on_expiry:")).map(|(_, n)| n).sum();
    eprintln!("{profile:?}: {cases} histories, {steps} steps in {:?}", started.elapsed());
    tally
}

#[test]
fn engine_agrees_with_the_model() {
    let tally = check_many(256, 200..500, Profile::Mixed);
    for (kind, count) in &tally.kinds {
        eprintln!("{count:>8} {kind}");
    }
    // Every interesting case must come up, and often.
    let must = [
        "put_resource:created",
        "put_resource:changed",
        "put_resource:capacity_below_usage",
        "put_resource:invalid",
        "hold:ok:held",
        "hold:ok:existing:held",
        "hold:ok:existing:confirmed",
        "hold:ok:existing:released",
        "hold:ok:existing:expired",
        "hold:ok:existing:cancelled",
        "hold:hold_id_conflict",
        "hold:insufficient_capacity",
        "hold:resource_not_found",
        "hold:invalid",
        "confirm:ok:confirmed",
        "confirm:hold_expired",
        "confirm:hold_released",
        "confirm:hold_cancelled",
        "confirm:hold_not_found",
        "confirm:invalid",
        "release:ok:released",
        "release:ok:expired",
        "release:hold_confirmed",
        "release:hold_cancelled",
        "cancel:ok:cancelled",
        "cancel:hold_not_confirmed",
        "cancel:hold_released",
        "cancel:hold_expired",
        "extend:ok:held",
        "extend:hold_confirmed",
        "extend:hold_released",
        "extend:hold_expired",
        "extend:hold_cancelled",
        "extend:invalid",
        "tick:expired",
        "list:ok:next",
        "list:ok:last",
        "list:invalid",
        "get_resource:ok",
        "get_resource:resource_not_found",
        "get_hold:ok",
        "get_hold:hold_not_found",
        "on_expiry:confirm:hold_expired",
        "on_expiry:extend:hold_expired",
        "on_expiry:tick:expired",
    ];
    for kind in must {
        // Exact-expiry instants are rarer; everything else comes up hundreds of times.
        let least = if kind.starts_with("on_expiry:") { 5 } else { 20 };
        assert!(tally.count(kind) >= least, "only {} steps of kind {kind}", tally.count(kind));
    }
}

/// Many fresh holds, extends, confirms and releases: the expiry queue fills with stale entries
/// and is compacted, and the engine must still agree with the model.
#[test]
fn engine_agrees_with_the_model_through_expiry_queue_compaction() {
    let tally = check_many(1, 7_500..7_501, Profile::Churn);
    eprintln!(
        "expiry queue: max {}, largest drop {}",
        tally.queue_len_max, tally.queue_len_drop_max
    );
    for (kind, count) in &tally.kinds {
        eprintln!("{count:>8} {kind}");
    }
    assert!(tally.queue_len_max >= 4_000, "the expiry queue never reached compaction size");
    assert!(tally.queue_len_drop_max >= 1_000, "the expiry queue was never compacted");
}
