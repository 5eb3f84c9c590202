//! The commands that change state, one file per verb, and the one dispatch `match`.
//!
//! Every command runs in two phases: `validate` (stateless: names, limits, shapes; refuses with
//! `invalid`) and `execute` (reads the state to decide, then mutates; once it starts mutating it
//! cannot fail). A refused command changes nothing but the clock, which every command advances.

mod cancel;
mod confirm;
mod delete_partition;
mod extend;
mod hold;
mod put_resource;
mod release;

pub use cancel::Cancel;
pub use confirm::Confirm;
pub use delete_partition::DeletePartition;
pub use extend::Extend;
pub use hold::{Hold, Item};
pub use put_resource::PutResource;
pub use release::Release;

use crate::change::ChangeOp;
use crate::error::Refusal;
use crate::lifecycle::{effect, Effect, HoldVerb};
use crate::state::Engine;
use crate::view::{HoldRef, HoldStatus, HoldView, OutcomeRef, ResourceRef, ResourceView};

/// A state-changing command, as written to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    PutResource(PutResource),
    Hold(Hold),
    Confirm(Confirm),
    Release(Release),
    Cancel(Cancel),
    Extend(Extend),
    DeletePartition(DeletePartition),
}

/// What a successful command returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `put_resource`: the resource, and whether it was created (201) or changed (200).
    Resource { resource: ResourceView, created: bool },
    /// Every hold command: the hold, and for `hold` whether the id already existed (200) or the
    /// hold is new (201). `existing` is false for the other commands.
    Hold { hold: HoldView, existing: bool },
    /// `delete_partition`: the partition and what was removed with it.
    PartitionDeleted { partition: std::sync::Arc<str>, resources: u32, holds: u32 },
}

/// What a successful command decided, before any reply is built: the record it acted on, and
/// the values of that record that can still change, as they were right after the command.
/// Plain data, no allocation and no reference counts, so replay (recovery, standbys) and the
/// benchmarks pay nothing for replies; [`Engine::outcome`] builds the reply's views from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// `put_resource`: the resource's dense indices and its counts.
    Resource {
        partition: u32,
        resource: u32,
        capacity: u64,
        held: u64,
        confirmed: u64,
        created: bool,
    },
    /// Every hold command: the hold's slot, status and expiry.
    Hold { slot: u32, status: HoldStatus, expires_at_ms: u64, existing: bool },
    /// `delete_partition`: how many resources and holds were removed.
    PartitionDeleted { resources: u32, holds: u32 },
}

impl Receipt {
    /// Whether the hold already existed (a repeated `hold`) or the resource was changed rather
    /// than created.
    pub fn existed(&self) -> bool {
        match *self {
            Receipt::Resource { created, .. } => !created,
            Receipt::Hold { existing, .. } => existing,
            Receipt::PartitionDeleted { .. } => false,
        }
    }
}

impl Command {
    /// The partition the command acts on; commands are routed to shards by it.
    pub fn partition(&self) -> &str {
        match self {
            Command::PutResource(command) => &command.partition,
            Command::Hold(command) => &command.partition,
            Command::Confirm(command) => &command.partition,
            Command::Release(command) => &command.partition,
            Command::Cancel(command) => &command.partition,
            Command::Extend(command) => &command.partition,
            Command::DeletePartition(command) => &command.partition,
        }
    }

    /// The hold id the command names (every command but `put_resource`).
    pub fn hold_id(&self) -> Option<&str> {
        match self {
            Command::PutResource(_) | Command::DeletePartition(_) => None,
            Command::Hold(command) => Some(&command.hold),
            Command::Confirm(command) => Some(&command.hold),
            Command::Release(command) => Some(&command.hold),
            Command::Cancel(command) => Some(&command.hold),
            Command::Extend(command) => Some(&command.hold),
        }
    }

    /// The contract's name of the operation (`op` in a batch).
    pub fn op(&self) -> &'static str {
        match self {
            Command::PutResource(_) => "put_resource",
            Command::Hold(_) => "hold",
            Command::Confirm(_) => "confirm",
            Command::Release(_) => "release",
            Command::Cancel(_) => "cancel",
            Command::Extend(_) => "extend",
            Command::DeletePartition(_) => "delete_partition",
        }
    }

    /// Stateless validation: names and limits. Reads nothing but the command.
    pub fn validate(&self) -> Result<(), Refusal> {
        match self {
            Command::PutResource(command) => command.validate(),
            Command::Hold(command) => command.validate(),
            Command::Confirm(command) => command.validate(),
            Command::Release(command) => command.validate(),
            Command::Cancel(command) => command.validate(),
            Command::Extend(command) => command.validate(),
            Command::DeletePartition(command) => command.validate(),
        }
    }
}

impl Engine {
    /// Applies `command` at time `now_ms` (Unix ms, chosen by the caller and recorded in the
    /// log). Time never runs backwards: an earlier `now_ms` counts as the engine's clock.
    /// Holds due by then expire first, so a confirm at or after `expires_at_ms` finds the hold
    /// expired. An invalid command changes nothing at all.
    pub fn apply(&mut self, now_ms: u64, command: &Command) -> Result<Outcome, Refusal> {
        let receipt = self.apply_receipt(now_ms, command)?;
        Ok(self.outcome_for(command, &receipt))
    }

    /// The reply of `command` from its `receipt`, with views of the state: [`Engine::outcome`],
    /// and for `delete_partition` the partition's name, which only the command still has.
    pub fn outcome_for(&self, command: &Command, receipt: &Receipt) -> Outcome {
        match *receipt {
            Receipt::PartitionDeleted { resources, holds } => Outcome::PartitionDeleted {
                partition: command.partition().into(),
                resources,
                holds,
            },
            receipt => self.outcome(&receipt),
        }
    }

    /// [`Engine::apply`] without building the reply: the same decision and the same state change,
    /// returned as a [`Receipt`]. Turn it into the reply with [`Engine::outcome`] before the next
    /// command if one is needed.
    ///
    /// Names are checked lazily: a name found in an index was checked when it was stored, so
    /// only a lookup that fails (or a new name about to be stored) runs the full validation,
    /// whose error then comes first. Every lookup happens before the clock moves, so an invalid
    /// command still changes nothing at all.
    #[inline]
    pub fn apply_receipt(&mut self, now_ms: u64, command: &Command) -> Result<Receipt, Refusal> {
        match command {
            Command::PutResource(command) => {
                command.validate()?;
                self.advance(now_ms);
                command.execute(self)
            }
            Command::Hold(command) => command.apply(self, now_ms),
            Command::Confirm(command) => self.apply_to_hold(
                now_ms,
                (&command.partition, &command.hold),
                || command.validate(),
                |engine, slot, _| command.execute(engine, slot),
            ),
            Command::Release(command) => self.apply_to_hold(
                now_ms,
                (&command.partition, &command.hold),
                || command.validate(),
                |engine, slot, _| command.execute(engine, slot),
            ),
            Command::Cancel(command) => self.apply_to_hold(
                now_ms,
                (&command.partition, &command.hold),
                || command.validate(),
                |engine, slot, _| command.execute(engine, slot),
            ),
            Command::Extend(command) => {
                if validate_ttl(command.ttl_ms).is_err() {
                    command.validate()?;
                }
                self.apply_to_hold(
                    now_ms,
                    (&command.partition, &command.hold),
                    || command.validate(),
                    |engine, slot, now_ms| command.execute(engine, slot, now_ms),
                )
            }
            Command::DeletePartition(command) => {
                command.validate()?;
                self.advance(now_ms);
                command.execute(self)
            }
        }
    }

    /// A command on an existing hold: find it before the clock moves (validating only if it
    /// is not found), advance the clock, then `execute(engine, slot, now_ms)`.
    #[inline]
    fn apply_to_hold(
        &mut self,
        now_ms: u64,
        (partition, id): (&str, &str),
        validate: impl FnOnce() -> Result<(), Refusal>,
        execute: impl FnOnce(&mut Engine, u32, u64) -> Result<Receipt, Refusal>,
    ) -> Result<Receipt, Refusal> {
        let Ok(slot) = self.find_hold(partition, id) else {
            // An invalid name is never stored, so it is never found: the validation error
            // comes first, and the clock does not move. Else the clock moves (as for every
            // refused command).
            validate()?;
            self.advance(now_ms);
            return Err(Refusal::HoldNotFound);
        };
        let (now_ms, _) = self.advance(now_ms);
        if !self.holds[slot as usize].is_used() {
            // Its retention ended as the clock moved: forgotten, as if never there.
            return Err(Refusal::HoldNotFound);
        }
        execute(self, slot, now_ms)
    }
}

/// How many commands ahead a batch asks for a command's hold bucket (see
/// [`Engine::prefetch_hold`]): enough work in between to cover a miss to memory.
pub const PREFETCH_AHEAD: usize = 4;

impl Engine {
    /// Asks the CPU for the index bucket of the hold `command` names, for a caller that will
    /// apply it a few commands from now ([`PREFETCH_AHEAD`]). A new hold id's bucket is
    /// anywhere in a table of every hold id of its partition, so it is usually a miss to
    /// memory, the largest single cost of a `hold` on a hot partition (a third of a flash-sale
    /// command's time); asked for early, it overlaps with the commands before. A hint: it
    /// changes nothing. (Asking for a hold's items' buckets too was measured, and bought
    /// nothing on the hotel workload for its hashing.)
    #[inline]
    pub fn prefetch_hold(&self, command: &Command) {
        let Some(hold) = command.hold_id() else {
            return;
        };
        if let Some(part) = self.partition_hint(command.partition()) {
            part.holds.prefetch(self.hash(hold));
        }
    }
}

impl Engine {
    /// The reply of a command that returned `receipt`: the record's names and items from the
    /// state (they never change once created), its counts, status and expiry from the receipt.
    /// The receipt must come from this engine. A deleted partition's reply is built by
    /// [`Engine::apply`], which has its name; here its name is empty.
    pub fn outcome(&self, receipt: &Receipt) -> Outcome {
        match *receipt {
            Receipt::Resource { partition, resource, capacity, held, confirmed, created } => {
                let part = &self.partitions[partition as usize];
                let resource = ResourceView {
                    partition: part.name.clone(),
                    id: part.resources[resource as usize].id.clone(),
                    capacity,
                    held,
                    confirmed,
                };
                Outcome::Resource { resource, created }
            }
            Receipt::Hold { slot, status, expires_at_ms, existing } => {
                let mut hold = self.hold_view(slot);
                hold.status = status;
                hold.expires_at_ms = expires_at_ms;
                Outcome::Hold { hold, existing }
            }
            Receipt::PartitionDeleted { resources, holds } => {
                Outcome::PartitionDeleted { partition: "".into(), resources, holds }
            }
        }
    }

    /// The reply of `command`, read in place from its `receipt`: what [`Engine::outcome`]
    /// builds, borrowed instead of copied. Read it before the next command changes the state.
    pub fn outcome_ref<'a>(&'a self, command: &'a Command, receipt: &Receipt) -> OutcomeRef<'a> {
        match *receipt {
            Receipt::Resource { partition, resource, capacity, held, confirmed, created } => {
                let part = &self.partitions[partition as usize];
                let resource = ResourceRef {
                    partition: &part.name,
                    id: &part.resources[resource as usize].id,
                    capacity,
                    held,
                    confirmed,
                };
                OutcomeRef::Resource { resource, created }
            }
            Receipt::Hold { slot, status, expires_at_ms, existing } => {
                let hold = HoldRef { status, expires_at_ms, ..self.hold_ref(slot) };
                OutcomeRef::Hold { hold, existing }
            }
            // The partition is gone: its name comes from the command.
            Receipt::PartitionDeleted { resources, holds } => {
                OutcomeRef::PartitionDeleted { partition: command.partition(), resources, holds }
            }
        }
    }

    /// Does to the hold at `slot` what `verb` does in its status (the lifecycle table);
    /// `expires_at_ms` is the new expiry of an `extend`.
    pub(crate) fn follow_lifecycle(
        &mut self,
        slot: u32,
        verb: HoldVerb,
        expires_at_ms: u64,
    ) -> Result<Receipt, Refusal> {
        match effect(verb, self.holds[slot as usize].status) {
            Effect::Move(to) => {
                self.transition(slot, to);
                self.note_hold(ChangeOp::of_status(to), slot);
            }
            Effect::Extend => {
                self.set_expiry(slot, expires_at_ms);
                self.note_hold(ChangeOp::Extend, slot);
            }
            Effect::Unchanged => {}
            Effect::Refuse(refusal) => return Err(refusal),
        }
        Ok(self.hold_receipt(slot, false))
    }

    pub(crate) fn hold_receipt(&self, slot: u32, existing: bool) -> Receipt {
        let hold = &self.holds[slot as usize];
        Receipt::Hold { slot, status: hold.status, expires_at_ms: hold.expires_at_ms, existing }
    }

    pub(crate) fn resource_receipt(&self, partition: u32, resource: u32, created: bool) -> Receipt {
        let record = &self.partitions[partition as usize].resources[resource as usize];
        Receipt::Resource {
            partition,
            resource,
            capacity: record.capacity,
            held: record.held,
            confirmed: record.confirmed,
            created,
        }
    }
}

/// Validation shared by the commands that name an existing hold.
fn validate_hold_ref(partition: &str, hold: &str) -> Result<(), Refusal> {
    crate::name::check_name("partition", partition)?;
    crate::name::check_name("id", hold)
}

/// Refuses a `ttl_ms` outside the contract's range.
fn validate_ttl(ttl_ms: u64) -> Result<(), Refusal> {
    use crate::limits::{HOLD_TTL_MS_MAX, HOLD_TTL_MS_MIN};
    if (HOLD_TTL_MS_MIN..=HOLD_TTL_MS_MAX).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(Refusal::invalid(
            "ttl_ms",
            concat!(
                "must be between ",
                crate::limits::hold_ttl_ms_min!(),
                " and ",
                crate::limits::hold_ttl_ms_max!()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn prefetching_a_hold_changes_nothing_whatever_it_names() {
        let mut engine = engine_with(10);
        engine.apply(T0, &hold("p", "h", &[("r", 1)], None)).unwrap();
        let before = engine.image();
        for command in [
            hold("p", "h", &[("r", 1)], None),
            hold("p", "new", &[("r", 1)], None),
            hold("missing", "h", &[("r", 1)], None),
            hold("", "", &[], Some(0)),
            confirm("p", "h"),
            cancel("nope", "x"),
            release("p", "missing"),
            extend("p", "h", 5),
            put("p", "r", 3),
        ] {
            engine.prefetch_hold(&command);
        }
        assert_eq!(engine.image(), before);
        assert_eq!(engine.check_invariants(), Ok(()));
        assert_eq!(status(engine.apply(T0, &confirm("p", "h"))), Ok(crate::HoldStatus::Confirmed));
    }
}
