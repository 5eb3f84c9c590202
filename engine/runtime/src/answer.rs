//! How a shard answers the ops of one message: as engine results ([`OpResult`], with views
//! of the state), or encoded on the shard thread into bytes the caller sends as they are.
//!
//! The encoded form is the data path of the binary protocol: a command's reply is written
//! from its receipt while the state it describes is at hand, so the single writer builds no
//! views (no allocation, no reference count) for a connection thread to free. The encoder is
//! the caller's (the wire format is the protocol's, not the runtime's).

use tokio::sync::oneshot;

use bookd_engine::{Command, Engine, OpResult, OutcomeRef, Receipt, Refusal};

/// Writes answers in a caller's wire format, on the shard thread.
pub trait Encoder: Send + Sync + std::fmt::Debug {
    /// The reply of a command that took effect, read in place right after it was applied.
    fn outcome(&self, outcome: &OutcomeRef<'_>, buf: &mut Vec<u8>);
    /// Any other answer: a refusal, a read's result, or the node's own (overloaded,
    /// read-only, replication timeout, unavailable).
    fn result(&self, result: &OpResult, buf: &mut Vec<u8>);
}

/// The top bit of an entry of [`Encoded::ends`]: the answer is of a command that took effect.
const TOOK_EFFECT: u32 = 1 << 31;

/// Encoded answers, one per op, in order.
#[derive(Debug, Default)]
pub struct Encoded {
    bytes: Vec<u8>,
    /// Where each answer ends in `bytes`, with [`TOOK_EFFECT`] set for a command that took
    /// effect (so a replication timeout can rewrite exactly those). A message's answers are
    /// far below 2 GiB: ops per message and bytes per answer are bounded by the limits.
    ends: Vec<u32>,
}

impl Encoded {
    pub(crate) fn with_capacity(answers: usize) -> Encoded {
        Encoded { bytes: Vec::with_capacity(answers * 64), ends: Vec::with_capacity(answers) }
    }

    /// `count` answers, each `result`, as the node answers ops it could not run.
    pub fn repeat(encoder: &dyn Encoder, result: &OpResult, count: usize) -> Encoded {
        let mut encoded = Encoded::with_capacity(count);
        for _ in 0..count {
            encoded.push_result(encoder, result);
        }
        encoded
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every answer, one after the other.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The answer at `index`.
    pub fn answer(&self, index: usize) -> &[u8] {
        let end = (self.ends[index] & !TOOK_EFFECT) as usize;
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before] & !TOOK_EFFECT);
        &self.bytes[start as usize..end]
    }

    fn took_effect(&self, index: usize) -> bool {
        self.ends[index] & TOOK_EFFECT != 0
    }

    /// Appends one answer that `write` encodes.
    fn push(&mut self, took_effect: bool, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.bytes);
        let end = self.bytes.len();
        assert!(end < TOOK_EFFECT as usize, "a message's answers exceed 2 GiB");
        let end = end as u32;
        self.ends.push(if took_effect { end | TOOK_EFFECT } else { end });
    }

    /// Appends `result` as `encoder` writes it.
    pub(crate) fn push_result(&mut self, encoder: &dyn Encoder, result: &OpResult) {
        self.push(false, |buf| encoder.result(result, buf));
    }

    /// Appends `other`'s answer at `index`.
    pub(crate) fn push_answer(&mut self, other: &Encoded, index: usize) {
        let took_effect = other.took_effect(index);
        self.push(took_effect, |buf| buf.extend_from_slice(other.answer(index)));
    }
}

/// What one op did on the shard, before it is answered.
pub(crate) enum Applied<'a> {
    /// A command the engine ran: its receipt or refusal.
    Command(&'a Command, Result<Receipt, Refusal>),
    /// A read's result, or the shard's own answer.
    Other(OpResult),
}

/// Where a message's answers go, and the answers gathered so far.
#[derive(Debug)]
pub(crate) enum Answers {
    Results { results: Vec<OpResult>, reply: oneshot::Sender<Vec<OpResult>> },
    Encoded { encoded: Encoded, encoder: &'static dyn Encoder, reply: oneshot::Sender<Encoded> },
}

impl Answers {
    pub(crate) fn results(ops: usize, reply: oneshot::Sender<Vec<OpResult>>) -> Answers {
        Answers::Results { results: Vec::with_capacity(ops), reply }
    }

    pub(crate) fn encoded(
        ops: usize,
        encoder: &'static dyn Encoder,
        reply: oneshot::Sender<Encoded>,
    ) -> Answers {
        Answers::Encoded { encoded: Encoded::with_capacity(ops), encoder, reply }
    }

    /// Answers an op that did `applied`, reading what the reply shows from `engine` now.
    pub(crate) fn push(&mut self, engine: &Engine, applied: Applied<'_>) {
        match self {
            Answers::Results { results, .. } => results.push(match applied {
                Applied::Command(command, result) => {
                    OpResult::Command(result.map(|receipt| engine.outcome_for(command, &receipt)))
                }
                Applied::Other(result) => result,
            }),
            Answers::Encoded { encoded, encoder, .. } => match applied {
                Applied::Command(command, Ok(receipt)) => {
                    let outcome = engine.outcome_ref(command, &receipt);
                    encoded.push(true, |buf| encoder.outcome(&outcome, buf));
                }
                Applied::Command(_, Err(refusal)) => {
                    let result = OpResult::Command(Err(refusal));
                    encoded.push(false, |buf| encoder.result(&result, buf));
                }
                Applied::Other(result) => encoded.push(false, |buf| encoder.result(&result, buf)),
            },
        }
    }

    /// How many ops are answered.
    pub(crate) fn len(&self) -> usize {
        match self {
            Answers::Results { results, .. } => results.len(),
            Answers::Encoded { encoded, .. } => encoded.len(),
        }
    }

    /// Sends the answers. A caller that gave up waiting has dropped its receiver: nothing to do.
    pub(crate) fn send(self) {
        match self {
            Answers::Results { results, reply } => drop(reply.send(results)),
            Answers::Encoded { encoded, reply, .. } => drop(reply.send(encoded)),
        }
    }

    /// The answers of a batch whose standbys did not acknowledge it in time: commands that
    /// took effect answer `ReplicationTimeout`; refusals and reads keep their answers.
    pub(crate) fn timed_out(self) -> Answers {
        match self {
            Answers::Results { results, reply } => {
                let results = results
                    .into_iter()
                    .map(|result| match result {
                        OpResult::Command(Ok(_)) => OpResult::ReplicationTimeout,
                        other => other,
                    })
                    .collect();
                Answers::Results { results, reply }
            }
            Answers::Encoded { encoded: answered, encoder, reply } => {
                let mut encoded = Encoded::with_capacity(answered.len());
                for index in 0..answered.len() {
                    if answered.took_effect(index) {
                        encoded
                            .push(false, |buf| encoder.result(&OpResult::ReplicationTimeout, buf));
                    } else {
                        encoded.push_answer(&answered, index);
                    }
                }
                Answers::Encoded { encoded, encoder, reply }
            }
        }
    }

    /// Answers `Unavailable` for `ops` ops (the log failed: whether they took effect is
    /// unknown).
    pub(crate) fn unavailable(self, ops: usize) {
        match self {
            Answers::Results { reply, .. } => drop(reply.send(vec![OpResult::Unavailable; ops])),
            Answers::Encoded { encoder, reply, .. } => {
                drop(reply.send(Encoded::repeat(encoder, &OpResult::Unavailable, ops)));
            }
        }
    }
}
