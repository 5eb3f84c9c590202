//! The log's record payloads, pinned: golden byte vectors written by hand from the documented
//! layout (version 2 both ways, version 1 read), and a committed log per version that must
//! replay to the same state in every later build.
//!
//! If a vector or the committed records no longer match what the encoders write, the written
//! layout changed: that needs a new payload version (and a new fixture beside these), with
//! the decoders of the older versions kept so that these tests still pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bookd_engine::{
    Cancel, Command, Confirm, DeletePartition, Engine, EngineLimits, Extend, Hold, HoldStatus,
    Item, PutResource, Release,
};
use bookd_runtime::{
    apply_record, decode_command, decode_command_changes, decode_epoch, decode_settings,
    decode_tick, encode_command, encode_command_changes, encode_epoch, encode_settings,
    encode_tick, encode_tick_changes, recover_shard, DataDir, Settings, Tick, RECORD_KIND_COMMAND,
    RECORD_KIND_EPOCH, RECORD_KIND_SETTINGS, RECORD_KIND_TICK,
};

/// Bytes from hex written one field a line: whitespace is ignored, `//` starts a comment.
fn hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits in {text}");
    (0..digits.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&digits[at..at + 2], 16).unwrap())
        .collect()
}

fn encoded(command: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(command, &mut out);
    out
}

fn item(resource: &str, quantity: u64) -> Item {
    Item { resource: resource.into(), quantity }
}

fn hold(hold: &str, items: Vec<Item>, ttl_ms: Option<u64>, reference: Option<&str>) -> Command {
    Command::Hold(Hold {
        partition: "p".into(),
        hold: hold.into(),
        items,
        ttl_ms,
        reference: reference.map(Into::into),
    })
}

/// Every command, each with its payload as the layout documents it.
fn command_vectors() -> Vec<(&'static str, Command, Vec<u8>)> {
    vec![
        (
            "put_resource",
            Command::PutResource(PutResource {
                partition: "hotel-1".into(),
                resource: "room-101".into(),
                capacity: 2,
            }),
            hex("
                01                  // version 1
                01                  // tag 1: put_resource
                07 686f74656c2d31   // partition \"hotel-1\"
                08 726f6f6d2d313031 // resource \"room-101\"
                0200000000000000    // capacity 2
            "),
        ),
        (
            "put_resource with 64-byte names",
            Command::PutResource(PutResource {
                partition: "a".repeat(64),
                resource: "b".repeat(64),
                capacity: (1 << 53) - 1,
            }),
            hex("
                01 01
                40                  // partition: 64 bytes of \"a\"
                6161616161616161616161616161616161616161616161616161616161616161
                6161616161616161616161616161616161616161616161616161616161616161
                40                  // resource: 64 bytes of \"b\"
                6262626262626262626262626262626262626262626262626262626262626262
                6262626262626262626262626262626262626262626262626262626262626262
                ffffffffffff1f00    // capacity 2^53 - 1
            "),
        ),
        (
            "hold of 3 items with a ref and no ttl",
            hold("h1", vec![item("a", 1), item("b", 2), item("c", 300)], None, Some("order-7")),
            hex("
                01                  // version 1
                02                  // tag 2: hold
                01 70               // partition \"p\"
                02 6831             // hold \"h1\"
                03                  // 3 items
                01 61 0100000000000000  // \"a\" x 1
                01 62 0200000000000000  // \"b\" x 2
                01 63 2c01000000000000  // \"c\" x 300
                00                  // no ttl
                01 0700 6f726465722d37  // ref: 7 bytes, \"order-7\"
            "),
        ),
        (
            "hold with a ttl and no ref",
            hold("h2", vec![item("a", 5)], Some(60_000), None),
            hex("
                01 02
                01 70               // partition \"p\"
                02 6832             // hold \"h2\"
                01                  // 1 item
                01 61 0500000000000000  // \"a\" x 5
                01 60ea000000000000 // ttl 60000
                00                  // no ref
            "),
        ),
        (
            "hold with 64-byte names, the largest quantity and ttl, an empty ref",
            Command::Hold(Hold {
                partition: "a".repeat(64),
                hold: "h".repeat(64),
                items: vec![item(&"r".repeat(64), u64::from(u32::MAX))],
                ttl_ms: Some(86_400_000),
                reference: Some(String::new()),
            }),
            hex("
                01 02
                40                  // partition: 64 bytes of \"a\"
                6161616161616161616161616161616161616161616161616161616161616161
                6161616161616161616161616161616161616161616161616161616161616161
                40                  // hold: 64 bytes of \"h\"
                6868686868686868686868686868686868686868686868686868686868686868
                6868686868686868686868686868686868686868686868686868686868686868
                01                  // 1 item
                40                  // resource: 64 bytes of \"r\"
                7272727272727272727272727272727272727272727272727272727272727272
                7272727272727272727272727272727272727272727272727272727272727272
                ffffffff00000000    // quantity 2^32 - 1
                01 005c260500000000 // ttl 86400000
                01 0000             // ref present, 0 bytes
            "),
        ),
        (
            "confirm",
            Command::Confirm(Confirm { partition: "p".into(), hold: "h1".into() }),
            hex("01 03 01 70 02 6831"),
        ),
        (
            "release",
            Command::Release(Release { partition: "p".into(), hold: "h1".into() }),
            hex("01 04 01 70 02 6831"),
        ),
        (
            "cancel",
            Command::Cancel(Cancel { partition: "p".into(), hold: "h1".into() }),
            hex("01 05 01 70 02 6831"),
        ),
        (
            "extend",
            Command::Extend(Extend {
                partition: "p".into(),
                hold: "h1".into(),
                ttl_ms: 86_400_000,
            }),
            hex("
                01 06 01 70 02 6831
                005c260500000000    // ttl 86400000
            "),
        ),
        (
            "delete_partition",
            Command::DeletePartition(DeletePartition { partition: "hotel-1".into() }),
            hex("01 07 07 686f74656c2d31"),
        ),
    ]
}

/// The empty changes section of a version 2 record: a 4-byte list with a count of 0.
const NO_CHANGES: &str = "04000000 00000000";

/// A vector of version 1 as version 2 writes it: the new version byte, the same fields, an
/// empty changes section.
fn as_v2(v1: &[u8]) -> Vec<u8> {
    let mut bytes = v1.to_vec();
    bytes[0] = 2;
    bytes.extend(hex(NO_CHANGES));
    bytes
}

#[test]
fn every_command_has_its_documented_bytes_both_ways() {
    for (name, command, v1) in command_vectors() {
        let bytes = as_v2(&v1);
        assert_eq!(encoded(&command), bytes, "{name}: encoding");
        assert_eq!(decode_command(&bytes), Ok(command.clone()), "{name}: decoding");
        // Version 1, as older logs hold it, still reads.
        assert_eq!(decode_command(&v1), Ok(command), "{name}: decoding version 1");
    }
}

#[test]
fn a_command_carries_its_change_in_the_documented_bytes() {
    let mut engine = Engine::default();
    engine.capture_changes(true);
    engine.apply(1_000, &put("p", "a", 5)).unwrap();
    engine.apply(1_000, &hold("h1", vec![item("a", 1)], Some(1_000), None)).unwrap();
    let mut ignored = Vec::new();
    engine.drain_changes(&mut ignored);
    let confirm = Command::Confirm(Confirm { partition: "p".into(), hold: "h1".into() });
    engine.apply(1_500, &confirm).unwrap();
    let mut out = Vec::new();
    encode_command_changes(&confirm, &mut engine, &mut out);
    let bytes = hex("
        02                  // version
        03 01 70 02 68 31   // confirm p/h1
        3b000000            // changes section: 59 bytes
        01000000            // one change
        03                  // op: confirm
        dc05000000000000    // at_ms 1500
        01 70               // partition p
        02 68 31            // hold h1
        01                  // status: confirmed
        d007000000000000    // expires_at_ms 2000
        00                  // no ref
        01                  // one item
        01 61 01000000      // resource a, quantity 1
        0500000000000000    // capacity 5
        0000000000000000    // held 0
        0100000000000000    // confirmed 1
    ");
    assert_eq!(out, bytes);
    let (decoded, changes) = decode_command_changes(&bytes).unwrap();
    assert_eq!(decoded, confirm);
    let changes = bookd_engine::change::decode_changes(changes.unwrap()).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].resources[0].confirmed, 1);
}

#[test]
fn epoch_tick_and_settings_have_their_documented_bytes_both_ways() {
    for (epoch, bytes) in
        [(2, hex("02 0200000000000000")), (0x0102_0304_0506_0708, hex("02 0807060504030201"))]
    {
        let mut out = Vec::new();
        encode_epoch(epoch, &mut out);
        assert_eq!(out, bytes);
        assert_eq!(decode_epoch(&bytes), Ok(epoch));
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert_eq!(decode_epoch(&v1), Ok(epoch));
    }
    let mut out = Vec::new();
    encode_tick(3, &mut out);
    let bytes = hex(&format!("02 03000000 {NO_CHANGES}"));
    assert_eq!(out, bytes);
    let tick = decode_tick(&bytes).unwrap();
    assert_eq!(tick.expired, Some(3));
    assert_eq!(tick.changes, Some(&hex("00000000")[..]));
    assert_eq!(decode_tick(&hex("01")), Ok(Tick { expired: None, changes: None }));
    let settings = Settings { hold_retention_ms: 3_600_000 };
    let bytes = hex("02 80ee360000000000");
    let mut out = Vec::new();
    encode_settings(&settings, &mut out);
    assert_eq!(out, bytes);
    assert_eq!(decode_settings(&bytes), Ok(settings));
    assert_eq!(decode_settings(&hex("01 80ee360000000000")), Ok(settings));
}

#[test]
fn a_payload_of_version_3_is_refused_naming_the_version() {
    let message = "record payload version 3 is not one this build reads (1, 2)";
    for (name, _, v1) in command_vectors() {
        let mut bytes = as_v2(&v1);
        bytes[0] = 3;
        assert_eq!(decode_command(&bytes).unwrap_err().to_string(), message, "{name}");
    }
    assert_eq!(decode_epoch(&hex("03 0200000000000000")).unwrap_err().to_string(), message);
    assert_eq!(decode_tick(&hex("03")).unwrap_err().to_string(), message);
    assert_eq!(decode_settings(&hex("03 80ee360000000000")).unwrap_err().to_string(), message);
    // Replay refuses it too, naming the version, and the engine is unchanged.
    let mut engine = Engine::default();
    let payload = hex(&format!("03 01 01 70 01 72 0100000000000000 {NO_CHANGES}"));
    let error = apply_record(&mut engine, RECORD_KIND_COMMAND, 1, &payload).unwrap_err();
    assert!(error.to_string().contains(message), "{error}");
    assert_eq!(engine.stats().resources, 0);
}

#[test]
fn a_tick_that_does_not_match_the_state_is_refused() {
    let mut engine = Engine::default();
    let mut payload = Vec::new();
    encode_tick(1, &mut payload);
    let error = apply_record(&mut engine, RECORD_KIND_TICK, 1, &payload).unwrap_err();
    assert!(error.to_string().contains("expired 1 holds, replay finds 0 due"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// The committed log.

const T0: u64 = 1_700_000_000_000;

/// A fixture's directory: `records.bin` holds the framed records as the log ships them
/// (`Wal::read_raw`); `data/` is a whole data directory (format 2, one shard, 4 KiB segments).
/// Version 1 was written by the build that wrote version 1; version 2 by this one.
fn fixture_dir(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/payload-v{version}"))
}

/// The fixture's history: (epoch, time, what).
enum Step {
    Command(Command),
    Settings(u64),
    Tick,
    Epoch,
}

fn options() -> bookd_wal::Options {
    bookd_wal::Options { segment_size_bytes: 4096, ..bookd_wal::Options::default() }
}

fn on(hold: &str, items: Vec<Item>, ttl_ms: Option<u64>, reference: Option<&str>) -> Command {
    Command::Hold(Hold {
        partition: "hotel-1".into(),
        hold: hold.into(),
        items,
        ttl_ms,
        reference: reference.map(Into::into),
    })
}

fn put(partition: &str, resource: &str, capacity: u64) -> Command {
    Command::PutResource(PutResource {
        partition: partition.into(),
        resource: resource.into(),
        capacity,
    })
}

/// The fixture's history: every kind and every command but `delete_partition` (whose bytes
/// the vectors pin).
fn fixture_history() -> Vec<(u64, u64, Step)> {
    let hotel = || "hotel-1".to_string();
    vec![
        (1, 0, Step::Command(put("hotel-1", "room-101", 2))),
        (1, 0, Step::Command(put("hotel-1", "room-102", 2))),
        (1, 0, Step::Settings(3_600_000)),
        (
            1,
            1,
            Step::Command(on(
                "h1",
                vec![item("room-101", 1), item("room-102", 1)],
                None,
                Some("order-1"),
            )),
        ),
        (1, 2, Step::Command(on("h2", vec![item("room-101", 1)], Some(1_000), None))),
        (1, 3, Step::Command(Command::Confirm(Confirm { partition: hotel(), hold: "h1".into() }))),
        // h2 expires at T0 + 1002.
        (1, 1_002, Step::Tick),
        (1, 1_003, Step::Command(on("h3", vec![item("room-101", 1)], Some(5_000), None))),
        (
            1,
            1_004,
            Step::Command(Command::Release(Release { partition: hotel(), hold: "h3".into() })),
        ),
        (2, 2_000, Step::Epoch),
        (2, 2_001, Step::Command(on("h4", vec![item("room-101", 1)], Some(60_000), None))),
        (
            2,
            2_002,
            Step::Command(Command::Extend(Extend {
                partition: hotel(),
                hold: "h4".into(),
                ttl_ms: 120_000,
            })),
        ),
        (2, 2_003, Step::Command(on("h5", vec![item("room-102", 1)], None, Some("")))),
        (
            2,
            2_004,
            Step::Command(Command::Confirm(Confirm { partition: hotel(), hold: "h5".into() })),
        ),
        (
            2,
            2_005,
            Step::Command(Command::Cancel(Cancel { partition: hotel(), hold: "h5".into() })),
        ),
        (2, 3_000, Step::Tick),
    ]
}

/// The records this build writes for the fixture's history, as (kind, epoch, timestamp,
/// payload): made by an engine with change capture on, as a shard makes them.
fn fixture_records() -> Vec<(u8, u64, u64, Vec<u8>)> {
    let mut engine = Engine::default();
    engine.capture_changes(true);
    let mut records = Vec::new();
    for (epoch, at, step) in fixture_history() {
        let now_ms = T0 + at;
        let mut payload = Vec::new();
        let kind = match step {
            Step::Command(command) => {
                engine.apply(now_ms, &command).unwrap();
                encode_command_changes(&command, &mut engine, &mut payload);
                RECORD_KIND_COMMAND
            }
            Step::Settings(hold_retention_ms) => {
                encode_settings(&Settings { hold_retention_ms }, &mut payload);
                apply_record(&mut engine, RECORD_KIND_SETTINGS, now_ms, &payload).unwrap();
                RECORD_KIND_SETTINGS
            }
            Step::Tick => {
                let expired = engine.expire_due(now_ms, usize::MAX);
                encode_tick_changes(expired, &mut engine, &mut payload);
                RECORD_KIND_TICK
            }
            Step::Epoch => {
                encode_epoch(epoch, &mut payload);
                RECORD_KIND_EPOCH
            }
        };
        records.push((kind, epoch, now_ms, payload));
    }
    records
}

/// The state the fixture's records leave.
fn assert_fixture_state(engine: &Engine) {
    assert_eq!(engine.check_invariants(), Ok(()));
    let counts = |id: &str| {
        let view = engine.resource("hotel-1", id).unwrap();
        (view.capacity, view.held, view.confirmed)
    };
    assert_eq!(counts("room-101"), (2, 1, 1), "h4 held, h1 confirmed");
    assert_eq!(counts("room-102"), (2, 0, 1), "h1 confirmed, h5 cancelled");
    let status = |id: &str| engine.hold("hotel-1", id).unwrap().status;
    assert_eq!(status("h1"), HoldStatus::Confirmed);
    assert_eq!(status("h2"), HoldStatus::Expired);
    assert_eq!(status("h3"), HoldStatus::Released);
    assert_eq!(status("h4"), HoldStatus::Held);
    assert_eq!(status("h5"), HoldStatus::Cancelled);
    let h1 = engine.hold("hotel-1", "h1").unwrap();
    assert_eq!(h1.reference.as_deref(), Some("order-1"));
    assert_eq!(h1.items.len(), 2);
    assert_eq!(engine.hold("hotel-1", "h5").unwrap().reference.as_deref(), Some(""));
    assert_eq!(engine.hold("hotel-1", "h4").unwrap().expires_at_ms, T0 + 2_002 + 120_000);
    let stats = engine.stats();
    assert_eq!((stats.partitions, stats.resources, stats.holds_live), (1, 2, 1));
    assert_eq!(engine.clock_ms(), T0 + 3_000);
    assert_eq!(engine.hold_retention_ms(), 3_600_000);
}

/// Writes the fixture with this build: the data directory through the WAL, then its records as
/// `read_raw` returns them.
fn write_fixture(target: &Path) {
    struct Nothing;
    impl bookd_wal::Replay for Nothing {
        fn snapshot(
            &mut self,
            _: &mut bookd_wal::SnapshotReader,
        ) -> Result<(), bookd_wal::ReplayRefusal> {
            Ok(())
        }
        fn record(
            &mut self,
            _: &bookd_wal::RecordView<'_>,
        ) -> Result<(), bookd_wal::ReplayRefusal> {
            Ok(())
        }
    }
    let temp = tempfile::tempdir().unwrap();
    let raw = {
        let dir = DataDir::open(temp.path(), Some(1), 1).unwrap();
        let (mut wal, _) =
            bookd_wal::Wal::open_dir(dir.shard_path(0), options(), &mut Nothing).unwrap();
        for (kind, epoch, timestamp_ms, payload) in fixture_records() {
            wal.append(kind, epoch, timestamp_ms, &payload).unwrap();
        }
        wal.sync().unwrap();
        wal.read_raw(1, 1 << 20).unwrap()
    };
    let data = target.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).unwrap();
    }
    std::fs::create_dir_all(data.join("shard-000/wal")).unwrap();
    std::fs::write(target.join("records.bin"), raw).unwrap();
    std::fs::copy(temp.path().join("bookd.meta"), data.join("bookd.meta")).unwrap();
    for entry in std::fs::read_dir(temp.path().join("shard-000/wal")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "seg") {
            std::fs::copy(&path, data.join("shard-000/wal").join(path.file_name().unwrap()))
                .unwrap();
        }
    }
}

/// The fixture's framed records, each checked by the WAL's decoder.
fn committed_records(raw: &[u8]) -> Vec<bookd_wal::RecordView<'_>> {
    let mut records = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let view = bookd_wal::record::decode(rest).unwrap();
        rest = &rest[view.raw.len()..];
        records.push(view);
    }
    records
}

/// The committed records are what this build writes. With `BOOKD_WRITE_FIXTURES=1` the fixture
/// is written first (only for a new fixture: a committed one must never change).
#[test]
fn this_build_writes_the_committed_records() {
    if std::env::var_os("BOOKD_WRITE_FIXTURES").is_some() {
        write_fixture(&fixture_dir(2));
    }
    let raw = std::fs::read(fixture_dir(2).join("records.bin")).unwrap();
    let committed = committed_records(&raw);
    let expected = fixture_records();
    assert_eq!(committed.len(), expected.len());
    for ((lsn, record), (kind, epoch, timestamp_ms, payload)) in
        (1..).zip(&committed).zip(&expected)
    {
        assert_eq!(record.header.lsn, lsn);
        assert_eq!(
            (record.header.kind, record.header.epoch, record.header.timestamp_ms),
            (*kind, *epoch, *timestamp_ms),
            "record {lsn}"
        );
        assert_eq!(record.payload, &payload[..], "record {lsn}: payload bytes");
    }
}

#[test]
fn the_committed_records_of_every_version_replay_to_the_expected_state() {
    for version in [1, 2] {
        let raw = std::fs::read(fixture_dir(version).join("records.bin")).unwrap();
        let mut engine = Engine::default();
        for record in committed_records(&raw) {
            assert_eq!(record.payload[0], version);
            apply_record(
                &mut engine,
                record.header.kind,
                record.header.timestamp_ms,
                record.payload,
            )
            .unwrap_or_else(|error| panic!("v{version} record {}: {error}", record.header.lsn));
        }
        assert_fixture_state(&engine);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_committed_data_directory_of_every_version_recovers_to_the_expected_state() {
    for version in [1, 2] {
        let temp = tempfile::tempdir().unwrap();
        copy_tree(&fixture_dir(version).join("data"), temp.path());
        let dir = DataDir::open(temp.path(), None, 4).unwrap();
        assert_eq!(dir.shards(), 1);
        let shard = recover_shard(&dir, 0, options(), EngineLimits::default()).unwrap();
        assert_eq!(shard.report.records_replayed, fixture_history().len() as u64);
        assert_eq!(shard.report.torn_tail_cut, None);
        assert_eq!(shard.epoch, 2);
        assert_fixture_state(&shard.engine);
    }
}
