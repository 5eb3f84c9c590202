//! Snapshot files: the node's state at an LSN, checksummed, written atomically.
//!
//! Invariant: a snapshot file appears under its final name only complete and synced (temp file,
//! fsync, rename, directory fsync), and is only ever handed out after both checksums pass; a
//! snapshot's LSN is never ahead of the durable log.
//!
//! Snapshots are written as a stream (`SnapshotWriter`, any thread: a placeholder header, the
//! payload through a 256 KiB buffer with its CRC32C and size kept on the way, then the real header
//! written at offset 0) and read as a stream (`SnapshotReader`, after a checksum pass over the
//! file that allocates no payload), so no copy of the whole state is ever needed in memory.
//!
//! # Snapshot file byte map (little-endian)
//!
//! ```text
//! offset size field
//!      0    8 magic               b"BOOKDSNP"
//!      8    4 format_version      u32 = 1
//!     12    4 reserved            zero
//!     16    8 lsn                 u64, the state includes every record up to this LSN
//!     24    8 payload_size_bytes  u64
//!     32    4 payload_checksum    CRC32C of the payload
//!     36    4 header_checksum     CRC32C of bytes 0 .. 36
//!     40    n payload             the node's encoded state (opaque to the log)
//! ```
//!
//! Files are named `snapshots/<lsn, 20 digits>.snap`.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{InvalidArgument, WalError};
use crate::limits::{
    snapshot_header_size_bytes, snapshot_io_buffer_size_bytes, snapshot_size_bytes_max,
};
use crate::record::Lsn;
use crate::storage::{copy_io_error, write_error, Area, FileSink, Storage};

/// Magic bytes at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"BOOKDSNP";
/// Current snapshot format version.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// File name suffix of snapshot files.
pub const SNAPSHOT_SUFFIX: &str = ".snap";

const HEADER: usize = snapshot_header_size_bytes as usize;
const BUFFER: usize = snapshot_io_buffer_size_bytes as usize;

/// A snapshot read back whole and checked (replication ships it as bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The state includes every record up to this LSN.
    pub lsn: Lsn,
    /// The node's encoded state.
    pub bytes: Vec<u8>,
}

/// The file name of the snapshot at `lsn`.
pub fn snapshot_name(lsn: Lsn) -> String {
    format!("{lsn:020}{SNAPSHOT_SUFFIX}")
}

/// The LSN a snapshot file name stands for, or `None` if it is not a snapshot name.
pub fn parse_snapshot_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a snapshot holding `payload` at `lsn`.
pub fn encode_header(lsn: Lsn, payload: &[u8]) -> [u8; HEADER] {
    encode_header_fields(SnapshotHeader {
        lsn,
        payload_size_bytes: payload.len() as u64,
        payload_checksum: crc32c::crc32c(payload),
    })
}

/// The fields of a snapshot header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The state includes every record up to this LSN.
    pub lsn: Lsn,
    /// Size of the payload after the header.
    pub payload_size_bytes: u64,
    /// CRC32C of the payload.
    pub payload_checksum: u32,
}

/// Encodes a snapshot header.
pub fn encode_header_fields(header: SnapshotHeader) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    out[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&header.lsn.to_le_bytes());
    out[24..32].copy_from_slice(&header.payload_size_bytes.to_le_bytes());
    out[32..36].copy_from_slice(&header.payload_checksum.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..36]);
    out[36..40].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the header of a snapshot file of `file_size_bytes` named after `name_lsn` (everything
/// but the payload checksum); on damage returns the byte offset and what is wrong.
pub fn decode_header(
    head: &[u8; HEADER],
    name_lsn: Lsn,
    file_size_bytes: u64,
) -> Result<SnapshotHeader, (u64, &'static str)> {
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&head[at..at + 4]);
        u32::from_le_bytes(b)
    };
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if crc32c::crc32c(&head[0..36]) != u32_at(36) {
        return Err((36, "snapshot header checksum mismatch"));
    }
    if head[0..8] != SNAPSHOT_MAGIC || u32_at(8) != SNAPSHOT_FORMAT_VERSION || u32_at(12) != 0 {
        return Err((0, "snapshot magic, version or reserved bytes wrong"));
    }
    let lsn = u64_at(16);
    if lsn != name_lsn {
        return Err((16, "snapshot lsn does not match its file name"));
    }
    let size = u64_at(24);
    if size > snapshot_size_bytes_max || Some(size) != file_size_bytes.checked_sub(HEADER as u64) {
        return Err((24, "snapshot payload size does not match the file"));
    }
    Ok(SnapshotHeader { lsn, payload_size_bytes: size, payload_checksum: u32_at(32) })
}

/// Checks a whole snapshot file in memory; on damage returns the byte offset and what is wrong.
pub fn decode(file: &[u8], name_lsn: Lsn) -> Result<(Lsn, &[u8]), (u64, &'static str)> {
    let Some(head) = file.get(..HEADER) else {
        return Err((0, "snapshot shorter than its header"));
    };
    let mut fixed = [0u8; HEADER];
    fixed.copy_from_slice(head);
    let header = decode_header(&fixed, name_lsn, file.len() as u64)?;
    let payload = &file[HEADER..];
    if crc32c::crc32c(payload) != header.payload_checksum {
        return Err((HEADER as u64, "snapshot payload checksum mismatch"));
    }
    Ok((header.lsn, payload))
}

/// Reads into `buf` until it is full or the input ends; returns the bytes read.
pub(crate) fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

// ---------------------------------------------------------------------------------------------
// Streaming writer.

/// Writes one snapshot file as a stream, on any thread (from `Wal::begin_snapshot`): write the
/// payload through `std::io::Write`, then `finish`, then hand the result to
/// `Wal::snapshot_written` on the log's thread. Dropping it unfinished removes its temp file.
///
/// After a failed write every later write fails too, and `finish` reports the first failure
/// (`WalError::NoSpace` for a full disk).
pub struct SnapshotWriter {
    lsn: Lsn,
    /// The final path, for messages.
    path: PathBuf,
    /// `None` once published.
    sink: Option<Box<dyn FileSink>>,
    buffer: Vec<u8>,
    /// CRC32C and size of the payload written so far (the placeholder header excluded).
    checksum: u32,
    size_bytes: u64,
    failed: Option<std::io::Error>,
    pace: Pace,
}

/// Keeps a stream of writes at or under a rate: after each write, sleeps until the bytes written
/// so far could have been written at that rate since the start. A slow disk never makes it sleep
/// (it is behind already); it only ever caps the speed.
#[derive(Debug)]
struct Pace {
    /// Bytes a second; 0 for no cap.
    bytes_per_s: u64,
    started: Instant,
    written: u64,
}

impl Pace {
    fn new(bytes_per_s: u64) -> Pace {
        Pace { bytes_per_s, started: Instant::now(), written: 0 }
    }

    fn wrote(&mut self, bytes: usize) {
        self.written = self.written.saturating_add(bytes as u64);
        if self.bytes_per_s == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.written as f64 / self.bytes_per_s as f64);
        if let Some(early) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(early);
        }
    }
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("lsn", &self.lsn)
            .field("path", &self.path)
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

/// A snapshot file written completely and durably by `SnapshotWriter::finish`, to register with
/// `Wal::snapshot_written`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a finished snapshot counts for retention only once given to Wal::snapshot_written"]
pub struct SnapshotDone {
    lsn: Lsn,
    size_bytes: u64,
}

impl SnapshotDone {
    /// The snapshot's LSN.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }
    /// Its payload's size.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

impl SnapshotWriter {
    /// A writer of the snapshot at `lsn` into `sink`, whose file will be `path`, at most
    /// `bytes_per_s` a second (0: no cap).
    pub(crate) fn new(
        lsn: Lsn,
        path: PathBuf,
        sink: Box<dyn FileSink>,
        bytes_per_s: u64,
    ) -> SnapshotWriter {
        let mut buffer = Vec::with_capacity(BUFFER);
        // A placeholder: a file cut short before `finish` never passes as a snapshot.
        buffer.extend_from_slice(&[0u8; HEADER]);
        SnapshotWriter {
            lsn,
            path,
            sink: Some(sink),
            buffer,
            checksum: 0,
            size_bytes: 0,
            failed: None,
            pace: Pace::new(bytes_per_s),
        }
    }

    /// A writer of the snapshot at `lsn` into the snapshot area of `storage`, outside any open
    /// log: a standby stages the snapshot its primary sends in a log directory of its own before
    /// that directory replaces its log. Nothing is checked against a log's positions, and it is
    /// not paced: it writes what the network brings, no faster.
    pub fn create<S: Storage>(storage: &S, lsn: Lsn) -> Result<SnapshotWriter, WalError> {
        let name = snapshot_name(lsn);
        let sink = storage.create_file(Area::Snapshots, &name)?;
        Ok(SnapshotWriter::new(lsn, storage.path(Area::Snapshots, &name), sink, 0))
    }

    /// The snapshot's LSN.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Payload bytes written so far.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// CRC32C of the payload written so far (what `finish` puts in the header).
    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// Keeps the first failure (reported again by every later call) and returns a copy.
    fn fail(&mut self, error: std::io::Error) -> std::io::Error {
        let copy = copy_io_error(&error);
        self.failed.get_or_insert(error);
        copy
    }

    fn sink(&mut self) -> std::io::Result<&mut Box<dyn FileSink>> {
        match self.sink.as_mut() {
            Some(sink) => Ok(sink),
            None => Err(std::io::Error::other("snapshot already finished")),
        }
    }

    fn flush_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let written = self.sink().and_then(|sink| sink.append(&buffer));
        self.pace.wrote(buffer.len());
        self.buffer = buffer;
        self.buffer.clear();
        written.map_err(|e| self.fail(e))
    }

    /// Writes what is buffered, the real header at offset 0, then fsyncs, renames and fsyncs the
    /// directory. A full disk is `WalError::NoSpace` (the temp file removed, the log intact); a
    /// fatal error (`is_fatal`) must be given to `Wal::snapshot_failed`.
    pub fn finish(mut self) -> Result<SnapshotDone, WalError> {
        if self.failed.is_none() {
            let _ = self.flush_buffer();
        }
        if let Some(error) = self.failed.take() {
            if error.kind() == std::io::ErrorKind::FileTooLarge {
                let path = self.path.clone();
                return Err(InvalidArgument::SnapshotOverLimit { path, source: error }.into());
            }
            return Err(write_error("write snapshot", &self.path, error));
        }
        let header = encode_header_fields(SnapshotHeader {
            lsn: self.lsn,
            payload_size_bytes: self.size_bytes,
            payload_checksum: self.checksum,
        });
        let Some(mut sink) = self.sink.take() else {
            return Err(InvalidArgument::SnapshotFinished.into());
        };
        sink.write_at(0, &header).map_err(|e| write_error("write snapshot", &self.path, e))?;
        sink.publish()?;
        Ok(SnapshotDone { lsn: self.lsn, size_bytes: self.size_bytes })
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(error) = &self.failed {
            return Err(copy_io_error(error));
        }
        let size = self.size_bytes.checked_add(bytes.len() as u64);
        let Some(size) = size.filter(|&size| size <= snapshot_size_bytes_max) else {
            let e = std::io::Error::new(std::io::ErrorKind::FileTooLarge, "snapshot too large");
            return Err(self.fail(e));
        };
        if self.buffer.len() + bytes.len() > BUFFER {
            self.flush_buffer()?;
        }
        if bytes.len() >= BUFFER {
            let written = self.sink().and_then(|sink| sink.append(bytes));
            written.map_err(|e| self.fail(e))?;
            self.pace.wrote(bytes.len());
        } else {
            self.buffer.extend_from_slice(bytes);
        }
        self.checksum = crc32c::crc32c_append(self.checksum, bytes);
        self.size_bytes = size;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(error) = &self.failed {
            return Err(copy_io_error(error));
        }
        self.flush_buffer()
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming reader.

/// The payload of a snapshot as a stream (`std::io::Read`), with its LSN and size; what recovery
/// hands `Replay::snapshot`. It checks as it reads: the read that reaches the end of a payload
/// whose CRC32C does not match its header's, or of a file shorter than its header says, is an
/// error, so a consumer that reads to the end never accepts damaged bytes.
/// [`SnapshotReader::check_rest`] then says which damage it was.
pub struct SnapshotReader {
    lsn: Lsn,
    size_bytes: u64,
    path: PathBuf,
    left: u64,
    checksum: u32,
    expected_checksum: u32,
    /// The damage found so far, if any.
    damage: Option<SnapshotDamage>,
    inner: BufReader<Box<dyn Read + Send>>,
}

/// What is wrong with a snapshot payload, found by reading it to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotDamage {
    /// The file ends before the payload its header describes.
    Short,
    /// The payload's CRC32C is not the header's.
    Checksum,
}

impl SnapshotDamage {
    /// The offset in the file the damage is named at: the header's size field, or the payload.
    pub fn offset(self) -> u64 {
        match self {
            SnapshotDamage::Short => 24,
            SnapshotDamage::Checksum => HEADER as u64,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            SnapshotDamage::Short => "snapshot payload size does not match the file",
            SnapshotDamage::Checksum => "snapshot payload checksum mismatch",
        }
    }
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("lsn", &self.lsn)
            .field("size_bytes", &self.size_bytes)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SnapshotReader {
    /// A reader of the payload described by `header`, from `inner` positioned at its first byte.
    pub(crate) fn new(
        header: SnapshotHeader,
        path: PathBuf,
        inner: Box<dyn Read + Send>,
    ) -> SnapshotReader {
        SnapshotReader {
            lsn: header.lsn,
            size_bytes: header.payload_size_bytes,
            path,
            left: header.payload_size_bytes,
            checksum: 0,
            expected_checksum: header.payload_checksum,
            damage: None,
            inner: BufReader::with_capacity(BUFFER, inner),
        }
    }

    /// The state includes every record up to this LSN.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The payload's size.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The payload's CRC32C as the file's header gives it (the reader checks the payload
    /// against it as it reads).
    pub fn payload_checksum(&self) -> u32 {
        self.expected_checksum
    }

    /// The file's header, as on disk (what a copy of the whole file starts with).
    pub fn header_bytes(&self) -> [u8; HEADER] {
        encode_header_fields(SnapshotHeader {
            lsn: self.lsn,
            payload_size_bytes: self.size_bytes,
            payload_checksum: self.expected_checksum,
        })
    }

    /// The snapshot file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the rest of the payload into memory (for a consumer that decodes from bytes).
    pub fn read_to_vec(&mut self) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(usize::try_from(self.left).unwrap_or(0));
        self.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Reads whatever of the payload the consumer left unread, through a fixed buffer, and says
    /// whether the payload is damaged. Errors are the file's (I/O), not the payload's.
    pub fn check_rest(&mut self) -> std::io::Result<Option<SnapshotDamage>> {
        let mut buffer = vec![0u8; BUFFER];
        while self.damage.is_none() && self.left > 0 {
            match self.read(&mut buffer) {
                Ok(_) => {}
                Err(_) if self.damage.is_some() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(self.damage)
    }

    fn damaged(&mut self, damage: SnapshotDamage) -> std::io::Error {
        self.damage = Some(damage);
        let kind = match damage {
            SnapshotDamage::Short => std::io::ErrorKind::UnexpectedEof,
            SnapshotDamage::Checksum => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, format!("{}: {}", self.path.display(), damage.reason()))
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(damage) = self.damage {
            return Err(self.damaged(damage));
        }
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(self.damaged(SnapshotDamage::Short));
        }
        self.checksum = crc32c::crc32c_append(self.checksum, &buf[..n]);
        self.left -= n as u64;
        if self.left == 0 && self.checksum != self.expected_checksum {
            return Err(self.damaged(SnapshotDamage::Checksum));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_never_lets_writes_run_ahead_of_its_rate() {
        let mut pace = Pace::new(8 << 20);
        for _ in 0..8 {
            pace.wrote(256 << 10);
        }
        // 2 MiB at 8 MiB/s: a quarter of a second at least (sleeps never end early).
        assert!(pace.started.elapsed() >= Duration::from_millis(250));
        let mut unpaced = Pace::new(0);
        unpaced.wrote(1 << 30);
        assert_eq!(unpaced.written, 1 << 30);
    }

    #[test]
    fn round_trip_and_every_bit_flip() {
        let payload = b"engine state".to_vec();
        let mut file = encode_header(77, &payload).to_vec();
        file.extend_from_slice(&payload);
        assert_eq!(decode(&file, 77), Ok((77, &payload[..])));
        assert!(decode(&file, 78).is_err());
        for bit in 0..file.len() * 8 {
            let mut damaged = file.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&damaged, 77).is_err(), "bit {bit}");
        }
        for cut in 0..file.len() {
            assert!(decode(&file[..cut], 77).is_err());
        }
        assert_eq!(parse_snapshot_name(&snapshot_name(77)), Some(77));
    }
}
