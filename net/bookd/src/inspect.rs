//! `bookd wal verify` and `bookd wal dump`: read-only inspection of a data directory.
//!
//! `verify` checks what start-up checks, and more: every record's checksum and position, every
//! snapshot's checksum and state, and a full replay of each shard (newest snapshot + the records
//! after it) through the state machine. It never writes. Exit 0 when clean; otherwise the first
//! bad file and offset are named and the exit status is 1.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use bookd_engine::{Command, Engine, EngineLimits};
use bookd_runtime::{
    apply_record, decode_command, read_shard_count, shard_path, RECORD_KIND_COMMAND,
};
use bookd_wal::recovery::{list_snapshots, plan, read_snapshot, replay};
use bookd_wal::{MmapStorage, RecordView, Replay, SnapshotReader, WalError};

/// Replays into a scratch engine, only to check.
struct Check {
    engine: Engine,
}

impl Replay for Check {
    fn snapshot(&mut self, snapshot: &mut SnapshotReader) -> Result<(), bookd_wal::ReplayRefusal> {
        let bytes = snapshot.read_to_vec()?;
        self.engine = Engine::from_snapshot_bytes(&bytes, EngineLimits::default())?;
        Ok(())
    }

    fn record(&mut self, record: &RecordView<'_>) -> Result<(), bookd_wal::ReplayRefusal> {
        let header = &record.header;
        Ok(apply_record(&mut self.engine, header.kind, header.timestamp_ms, record.payload)?)
    }
}

/// Checks one shard's log directory; returns a one-line summary.
pub fn verify_shard(path: &Path) -> Result<String, WalError> {
    let report = bookd_wal::verify_dir(path)?;
    let mut storage = MmapStorage::open_read_only(path)?;
    for (lsn, name) in list_snapshots(&storage)? {
        if let Ok(snapshot) = read_snapshot(&storage, lsn, &name)? {
            if let Err(error) =
                Engine::from_snapshot_bytes(&snapshot.bytes, EngineLimits::default())
            {
                let file = path.join("snapshots").join(&name);
                return Err(WalError::corrupt(file, 0, format!("snapshot state: {error}")));
            }
        }
    }
    let mut planned = plan(&mut storage, false)?;
    let replayed = replay(&storage, &mut planned, &mut Check { engine: Engine::default() })?;
    let records = match report.records {
        0 => "no records".to_string(),
        n => format!("{n} records (lsn {}..={})", report.first_lsn, report.last_lsn),
    };
    let mut summary = format!(
        "{records} in {} segments, {} snapshots, {replayed} replayed",
        report.segments, report.snapshots
    );
    if let Some((file, offset)) = report.torn_tail {
        let _ = write!(
            summary,
            "; a torn record at {}:{offset} was never acknowledged and will be cut at start-up",
            file.display()
        );
    }
    Ok(summary)
}

pub fn verify(data_dir: &Path) -> ExitCode {
    let shards = match read_shard_count(data_dir) {
        Ok(shards) => shards,
        Err(error) => {
            eprintln!("bookd wal verify: {error}");
            return ExitCode::FAILURE;
        }
    };
    for shard in 0..shards {
        match verify_shard(&shard_path(data_dir, shard)) {
            Ok(summary) => println!("shard {shard}: ok: {summary}"),
            Err(error) => {
                eprintln!("bookd wal verify: shard {shard}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("ok: {shards} shards verified");
    ExitCode::SUCCESS
}

pub fn dump(data_dir: &Path) -> ExitCode {
    let shards = match read_shard_count(data_dir) {
        Ok(shards) => shards,
        Err(error) => {
            eprintln!("bookd wal dump: {error}");
            return ExitCode::FAILURE;
        }
    };
    for shard in 0..shards {
        let mut visit = |record: &RecordView<'_>, _: &Path, _: u64| {
            println!("{}", describe_record(shard, record));
        };
        if let Err(error) = bookd_wal::dump_dir(shard_path(data_dir, shard), &mut visit) {
            eprintln!("bookd wal dump: shard {shard}: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// One line describing a record: its header, then the command's fields.
pub fn describe_record(shard: usize, record: &RecordView<'_>) -> String {
    let header = &record.header;
    let mut line = format!(
        "shard={shard} lsn={} epoch={} timestamp_ms={}",
        header.lsn, header.epoch, header.timestamp_ms
    );
    if header.kind != RECORD_KIND_COMMAND {
        let _ = write!(line, " kind={} bytes={}", header.kind, record.payload.len());
        return line;
    }
    match decode_command(record.payload) {
        Ok(command) => {
            line.push(' ');
            describe_command(&mut line, &command);
        }
        Err(error) => {
            let _ = write!(line, " undecodable={error:?}");
        }
    }
    line
}

fn describe_command(line: &mut String, command: &Command) {
    let _ = write!(line, "op={} partition={}", command.op(), command.partition());
    let _ = match command {
        Command::PutResource(c) => write!(line, " id={} capacity={}", c.resource, c.capacity),
        Command::Hold(c) => {
            let items: Vec<String> =
                c.items.iter().map(|item| format!("{}:{}", item.resource, item.quantity)).collect();
            let ttl = c.ttl_ms.map_or_else(|| "default".to_string(), |ttl| ttl.to_string());
            let reference =
                c.reference.as_deref().map(|r| format!(" ref={r:?}")).unwrap_or_default();
            write!(line, " id={} items={} ttl_ms={ttl}{reference}", c.hold, items.join(","))
        }
        Command::Confirm(c) => write!(line, " id={}", c.hold),
        Command::Release(c) => write!(line, " id={}", c.hold),
        Command::Cancel(c) => write!(line, " id={}", c.hold),
        Command::Extend(c) => write!(line, " id={} ttl_ms={}", c.hold, c.ttl_ms),
        // The partition is already on the line.
        Command::DeletePartition(_) => Ok(()),
    };
}
