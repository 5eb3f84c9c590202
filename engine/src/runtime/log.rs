//! The narrow interface between a shard and its write-ahead log, the encoding of commands into
//! log records, and an in-memory log for tests.
//!
//! A shard appends one record per successful command, then commits once per batch (group commit);
//! only after `commit` returns does it answer the batch. A commit error is fatal: durability is
//! unknown, so the node stops.

use crate::command::Command;

/// Record kind of a logged command (the WAL treats kinds as opaque).
pub const RECORD_KIND_COMMAND: u8 = 1;

/// Errors of a shard log. Every one is fatal to the shard that sees it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("write-ahead log failed: {0}")]
    Failed(String),
}

/// What a shard needs from its log.
pub trait ShardLog: Send + 'static {
    /// Appends a command record stamped `timestamp_ms` in `epoch`; returns its log position.
    /// It is not durable until [`ShardLog::commit`] returns.
    fn append(&mut self, epoch: u64, timestamp_ms: u64, payload: &[u8]) -> Result<u64, LogError>;
    /// Makes every appended record durable as the sync policy says; returns the durable position.
    fn commit(&mut self) -> Result<u64, LogError>;
    /// Makes every appended record durable now, whatever the sync policy (clean shutdown).
    fn sync(&mut self) -> Result<u64, LogError>;
    /// Position of the last appended record (0 when empty).
    fn last_lsn(&self) -> u64;
    /// Position of the last durable record.
    fn durable_lsn(&self) -> u64;
    /// Bytes appended since the last snapshot; the shard snapshots when this grows too large.
    fn bytes_since_snapshot(&self) -> u64;
    /// Durably stores a snapshot of the state after record `lsn`, then drops what it makes
    /// unnecessary (as the retention setting allows).
    fn write_snapshot(&mut self, lsn: u64, state: &[u8]) -> Result<(), LogError>;
}

/// Appends the log payload of `command` to `out`.
pub fn encode_command(command: &Command, out: &mut Vec<u8>) {
    let start = out.len();
    let buffer = std::mem::take(out);
    match rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(command, buffer) {
        Ok(buffer) => *out = buffer,
        // Serialising owned strings and vectors into a growable buffer cannot fail.
        Err(error) => panic!("invariant broken: command serialisation failed: {error}"),
    }
    debug_assert!(out.len() > start);
}

/// Decodes a log payload written by [`encode_command`], checking it in full.
pub fn decode_command(payload: &[u8]) -> Result<Command, String> {
    rkyv::from_bytes::<Command, rkyv::rancor::Error>(payload).map_err(|error| error.to_string())
}

/// An in-memory log: everything appended is "durable" at commit. For tests of the runtime.
#[derive(Debug, Default, Clone)]
pub struct MemoryLog {
    /// (lsn, epoch, timestamp_ms, payload) of every appended record.
    pub records: Vec<(u64, u64, u64, Vec<u8>)>,
    pub durable_lsn: u64,
    pub snapshots: Vec<(u64, Vec<u8>)>,
    pub bytes_since_snapshot: u64,
    /// When set, commit fails once this many commits have succeeded.
    pub fail_commit_after: Option<u64>,
    pub commits: u64,
}

impl ShardLog for MemoryLog {
    fn append(&mut self, epoch: u64, timestamp_ms: u64, payload: &[u8]) -> Result<u64, LogError> {
        let lsn = self.last_lsn() + 1;
        self.records.push((lsn, epoch, timestamp_ms, payload.to_vec()));
        self.bytes_since_snapshot += payload.len() as u64;
        Ok(lsn)
    }

    fn commit(&mut self) -> Result<u64, LogError> {
        if self.fail_commit_after.is_some_and(|limit| self.commits >= limit) {
            return Err(LogError::Failed("injected sync failure".into()));
        }
        self.commits += 1;
        self.durable_lsn = self.last_lsn();
        Ok(self.durable_lsn)
    }

    fn sync(&mut self) -> Result<u64, LogError> {
        self.commit()
    }

    fn last_lsn(&self) -> u64 {
        self.records.last().map_or(0, |record| record.0)
    }

    fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }

    fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    fn write_snapshot(&mut self, lsn: u64, state: &[u8]) -> Result<(), LogError> {
        self.snapshots.push((lsn, state.to_vec()));
        self.bytes_since_snapshot = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::test_support::*;

    #[test]
    fn commands_round_trip_through_the_log_encoding() {
        let commands = [
            put("p", "r", 7),
            hold("p", "h", &[("r", 2), ("s", 1)], Some(5)),
            confirm("p", "h"),
            release("p", "h"),
            cancel("p", "h"),
            extend("p", "h", 9),
        ];
        let mut buffer = Vec::new();
        for command in &commands {
            buffer.clear();
            encode_command(command, &mut buffer);
            assert_eq!(&decode_command(&buffer).unwrap(), command);
        }
    }

    #[test]
    fn damaged_payloads_are_refused_not_panicked_on() {
        let mut buffer = Vec::new();
        encode_command(&hold("p", "h", &[("r", 2)], None), &mut buffer);
        assert!(decode_command(&buffer[..buffer.len() - 3]).is_err());
        assert!(decode_command(&[]).is_err());
        for position in 0..buffer.len() {
            let mut damaged = buffer.clone();
            damaged[position] ^= 0xff;
            let _ = decode_command(&damaged);
        }
    }
}
