//! Model-based test: long random histories run against the engine and against a small,
//! obviously-correct model of CONTRACT.md's "Model" section (plain BTreeMaps, a linear scan for
//! expiry); every result and, after every step, every resource and hold must agree.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bookd_engine::{Command, Engine, HoldView, ListQuery, Outcome, Refusal, ResourceView};
use common::{engine_step, next_time, Action, EngineResult, Step, T0};
use proptest::prelude::*;

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
}

#[derive(Debug, Clone, Default)]
struct Part {
    resources: BTreeMap<String, Res>,
    holds: BTreeMap<String, ModelHold>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    parts: BTreeMap<String, Part>,
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
        for part in self.parts.values_mut() {
            for hold in part.holds.values_mut() {
                if hold.status == Status::Held && hold.expires_at_ms <= now_ms {
                    hold.status = Status::Expired;
                    for (r, q) in &hold.items {
                        part.resources.get_mut(r).unwrap().held -= q;
                    }
                    expired += 1;
                }
            }
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
                };
                part.holds.insert(c.hold.clone(), hold);
                Ok(Out::Hold { hold: self.hold_view(&c.partition, &c.hold), existing: false })
            }
            Command::Confirm(c) => self.on_hold(now_ms, &c.partition, &c.hold, None, Verb::Confirm),
            Command::Release(c) => self.on_hold(now_ms, &c.partition, &c.hold, None, Verb::Release),
            Command::Cancel(c) => self.on_hold(now_ms, &c.partition, &c.hold, None, Verb::Cancel),
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

    fn live_expiries(&self) -> Vec<u64> {
        let holds = self.parts.values().flat_map(|p| p.holds.values());
        holds.filter(|h| h.status == Status::Held).map(|h| h.expires_at_ms).collect()
    }

    /// The model's own invariant: counters are the sums over holds, and within capacity.
    fn check(&self) {
        for (name, part) in &self.parts {
            for (id, res) in &part.resources {
                let sum = |status: Status| -> u64 {
                    let holds = part.holds.values().filter(|h| h.status == status);
                    holds.flat_map(|h| &h.items).filter(|(r, _)| r == id).map(|(_, q)| q).sum()
                };
                assert_eq!((res.held, res.confirmed), (sum(Status::Held), sum(Status::Confirmed)));
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

/// Compares the whole state at `now_ms`: every partition, resource and hold.
fn compare_state(engine: &mut Engine, model: &mut Model, now_ms: u64) -> Result<(), String> {
    engine.tick(now_ms);
    model.advance(now_ms);
    model.check();
    engine.check_invariants()?;
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
        for id in part.holds.keys() {
            let actual = engine.hold(name, id).map(|h| hold_v(&h));
            same(actual.as_ref().map(Clone::clone), Ok(model.hold_view(name, id)))?;
        }
    }
    Ok(())
}

/// Runs a history against a fresh engine and model; Err describes the first disagreement.
fn run(steps: &[Step]) -> Result<(), String> {
    let mut engine = Engine::default();
    let mut model = Model::default();
    let mut now_ms = T0;
    for (index, step) in steps.iter().enumerate() {
        now_ms = next_time(now_ms, &step.time, &model.live_expiries());
        let got = engine_step(&mut engine, now_ms, &step.action);
        let context = |e: String| format!("step {index} at {now_ms}: {:?}: {e}", step.action);
        compare_step(&mut model, now_ms, &step.action, &got).map_err(context)?;
        compare_state(&mut engine, &mut model, now_ms).map_err(context)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 4_096, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_model(steps in common::history(200..500)) {
        if std::env::var("SKIP_RUN").is_err() { if let Err(problem) = run(&steps) {
            prop_assert!(false, "{}", problem);
        } }
    }
}
