//! Cursors: a position in every shard's log, as one opaque string.
//!
//! A position is (lsn, skip): the feed goes on at the record `lsn` of the shard's log, after its
//! first `skip` changes. The log's positions are the same on the primary, after a replay and on
//! a standby (a standby holds the primary's records verbatim), so a cursor resumes on any of
//! them. Written `c` then, per shard, `lsn.skip`, joined by `_`: `c1042.0_977.3`.

use std::fmt;

/// Why a cursor string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("a cursor starts with 'c'")]
    Prefix,
    #[error("a cursor names {found} shards; this node has {shards}")]
    Shards { found: usize, shards: usize },
    #[error("a cursor's positions are lsn.skip numbers")]
    Position,
    #[error("a cursor is at most {CURSOR_LENGTH_MAX} characters")]
    Length,
}

/// Longest cursor accepted: 256 shards of two 20-digit numbers would need more; a node has far
/// fewer shards than that.
pub const CURSOR_LENGTH_MAX: usize = 4096;

/// Where the feed goes on in one shard's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The record to read next (≥ 1).
    pub lsn: u64,
    /// Changes of that record already delivered.
    pub skip: u32,
}

impl Position {
    /// The start of record `lsn`.
    pub fn at(lsn: u64) -> Position {
        Position { lsn, skip: 0 }
    }
}

/// A position in every shard's log, indexed by shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub positions: Vec<Position>,
}

impl Cursor {
    /// Parses `text` for a node of `shards` shards.
    pub fn parse(text: &str, shards: usize) -> Result<Cursor, CursorError> {
        if text.len() > CURSOR_LENGTH_MAX {
            return Err(CursorError::Length);
        }
        let body = text.strip_prefix('c').ok_or(CursorError::Prefix)?;
        let mut positions = Vec::with_capacity(shards.min(body.len()));
        for part in body.split('_') {
            let (lsn, skip) = part.split_once('.').ok_or(CursorError::Position)?;
            let number = |digits: &str| {
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CursorError::Position);
                }
                digits.parse::<u64>().map_err(|_| CursorError::Position)
            };
            let lsn = number(lsn)?;
            let skip = u32::try_from(number(skip)?).map_err(|_| CursorError::Position)?;
            if lsn == 0 {
                return Err(CursorError::Position);
            }
            positions.push(Position { lsn, skip });
        }
        if positions.len() != shards {
            return Err(CursorError::Shards { found: positions.len(), shards });
        }
        Ok(Cursor { positions })
    }
}

impl Cursor {
    /// Appends the cursor's text to `out` (what `to_string` gives, without a `String`).
    pub fn write_text(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        out.push(b'c');
        for (shard, position) in self.positions.iter().enumerate() {
            if shard > 0 {
                out.push(b'_');
            }
            out.extend_from_slice(digits.format(position.lsn).as_bytes());
            out.push(b'.');
            out.extend_from_slice(digits.format(position.skip).as_bytes());
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(4 + 12 * self.positions.len());
        self.write_text(&mut text);
        // Digits, dots, underscores and a 'c': ASCII.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn malformed_cursors_are_refused() {
        for bad in [
            "",
            "x1.0",
            "c",
            "c1",
            "c1.",
            "c.0",
            "c0.0",
            "c1.0_",
            "c1.0__2.0",
            "c-1.0",
            "c1.-1",
            "c1.4294967296",
            "c99999999999999999999999.0",
            "c1.0 ",
            "c+1.0",
            "c1.0.0",
        ] {
            assert!(Cursor::parse(bad, 1).is_err(), "{bad:?}");
        }
        assert_eq!(Cursor::parse("c1.0", 2), Err(CursorError::Shards { found: 1, shards: 2 }));
        assert_eq!(Cursor::parse(&"c".repeat(5000), 1), Err(CursorError::Length));
    }

    proptest! {
        #[test]
        fn cursors_round_trip(positions in proptest::collection::vec((1..u64::MAX, any::<u32>()), 1..8)) {
            let cursor = Cursor {
                positions: positions.iter().map(|&(lsn, skip)| Position { lsn, skip }).collect(),
            };
            let text = cursor.to_string();
            prop_assert_eq!(Cursor::parse(&text, positions.len()), Ok(cursor));
        }

        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,64}") {
            let _ = Cursor::parse(&text, 2);
        }
    }
}
