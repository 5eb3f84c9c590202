//! Names as lookups compare them. Every record that is found by name (a partition, a resource,
//! a hold) keeps its name's first bytes and length inline, beside its fields, as a
//! [`ShortName`]; a lookup computes the same for the name it looks for, once, as a [`NameKey`].
//! Names up to [`SHORT_NAME_BYTES`] long (every name of the benchmark workloads) are then
//! compared without leaving the record's cache line and without a call; longer ones compare
//! their short forms first, then the whole names.

use crate::limits::NAME_SIZE_MAX_BYTES;

/// Bytes of a name kept inline.
pub(crate) const SHORT_NAME_BYTES: usize = 23;

/// A name's first `SHORT_NAME_BYTES` bytes, zero-padded, and its length (255 for anything
/// longer, which no stored name is). Two names of at most `SHORT_NAME_BYTES` bytes are equal
/// exactly when their short names are; for longer names, equal short names are a prefilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ShortName {
    bytes: [u8; SHORT_NAME_BYTES],
    len: u8,
}

impl ShortName {
    #[inline]
    pub(crate) fn of(name: &str) -> ShortName {
        let from = name.as_bytes();
        let len = from.len().min(SHORT_NAME_BYTES);
        let mut bytes = [0; SHORT_NAME_BYTES];
        // Two fixed-size copies that overlap when the name is shorter than both (the first
        // bytes, and the last ones): a few moves, where a loop or a call to memcpy would cost
        // more than the name.
        let mut copy = |width: usize| {
            bytes[..width].copy_from_slice(&from[..width]);
            bytes[len - width..len].copy_from_slice(&from[len - width..len]);
        };
        match len {
            16.. => copy(16),
            8..16 => copy(8),
            4..8 => copy(4),
            2..4 => copy(2),
            1 => copy(1),
            _ => {}
        }
        ShortName { bytes, len: u8::try_from(from.len()).unwrap_or(u8::MAX) }
    }

    /// Whether `name`, whose short form this is, is the name of a record whose short form is
    /// `stored` and whose whole name `stored_name` gives. The whole name is read (a pointer
    /// chase) only for names longer than `SHORT_NAME_BYTES`; shorter ones are equal exactly when
    /// their short forms are.
    #[inline(always)]
    pub(crate) fn names<'s>(
        &self,
        name: &str,
        stored: &ShortName,
        stored_name: impl FnOnce() -> &'s str,
    ) -> bool {
        *self == *stored
            && (name.len() <= SHORT_NAME_BYTES
                || same_name(name.as_bytes(), stored_name().as_bytes()))
    }

    /// The whole name, if it fits (else only its first bytes are kept).
    pub(crate) fn as_str(&self) -> Option<&str> {
        let name = self.bytes.get(..usize::from(self.len))?;
        std::str::from_utf8(name).ok()
    }
}

/// A name ready for lookups: the name, its hash and its short form, computed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameKey<'a> {
    pub(crate) name: &'a str,
    pub(crate) hash: u64,
    pub(crate) short: ShortName,
}

impl NameKey<'_> {
    /// Whether a record whose name has the short form `short`, and is `name()` whole, has this
    /// name (see [`ShortName::names`]).
    #[inline]
    pub(crate) fn is<'s>(&self, short: &ShortName, name: impl FnOnce() -> &'s str) -> bool {
        self.short.names(self.name, short, name)
    }
}

/// Whether two names are equal, by at most four overlapping loads from each instead of a call
/// to `memcmp` (whose call and dispatch cost more than the compare itself on names this short).
#[inline(always)]
pub(crate) fn same_name(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        0 => true,
        1..4 => a[0] == b[0] && a[len / 2] == b[len / 2] && a[len - 1] == b[len - 1],
        4..8 => {
            word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, len - 4) == word::<4>(b, len - 4)
        }
        8..=16 => {
            word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, len - 8) == word::<8>(b, len - 8)
        }
        17..=32 => {
            word::<16>(a, 0) == word::<16>(b, 0)
                && word::<16>(a, len - 16) == word::<16>(b, len - 16)
        }
        _ => a == b,
    }
}

/// `N` bytes of `bytes` from `at`, as an array the compiler compares in one or two loads.
#[inline(always)]
fn word<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut word = [0; N];
    word.copy_from_slice(&bytes[at..at + N]);
    word
}

/// A whole name stored inline: up to `NAME_SIZE_MAX_BYTES` bytes and its length, for a table
/// of names dense enough to stay in cache (the partitions').
///
/// The length comes first and entries are 16-byte aligned (80 bytes), so a lookup of a name of
/// up to 15 bytes reads one cache line of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub(crate) struct InlineName {
    len: u8,
    bytes: [u8; NAME_SIZE_MAX_BYTES],
}

impl InlineName {
    /// `name`, which must be a valid name (at most `NAME_SIZE_MAX_BYTES` long).
    pub(crate) fn of(name: &str) -> InlineName {
        assert!(name.len() <= NAME_SIZE_MAX_BYTES, "invariant broken: stored name too long");
        let mut bytes = [0; NAME_SIZE_MAX_BYTES];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        InlineName { bytes, len: name.len() as u8 }
    }

    /// Whether this is `name`.
    #[inline(always)]
    pub(crate) fn is(&self, name: &str) -> bool {
        usize::from(self.len) == name.len()
            && same_name(&self.bytes[..usize::from(self.len)], name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> NameKey<'_> {
        NameKey { name, hash: 0, short: ShortName::of(name) }
    }

    #[test]
    fn same_name_tells_apart_names_differing_in_any_one_byte_or_length() {
        for len in 0..=NAME_SIZE_MAX_BYTES {
            let name: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_name(&name, &name.clone()));
            for at in 0..len {
                let mut other = name.clone();
                other[at] = b'-';
                assert!(!same_name(&name, &other), "len {len}, byte {at}");
            }
            let mut longer = name.clone();
            longer.push(b'a');
            assert!(!same_name(&name, &longer) && !same_name(&longer, &name), "len {len}");
            let stored = InlineName::of(std::str::from_utf8(&name).unwrap());
            assert!(!stored.is(std::str::from_utf8(&longer).unwrap()));
        }
    }

    #[test]
    fn short_and_long_names_match_only_themselves() {
        let long = "x".repeat(SHORT_NAME_BYTES) + "-long";
        let longer = "x".repeat(SHORT_NAME_BYTES) + "-lone";
        let every_length: Vec<String> = (0..=SHORT_NAME_BYTES + 2)
            .map(|len| "abcdefghijklmnopqrstuvwxyz"[..len].to_string())
            .collect();
        for (len, name) in every_length.iter().enumerate() {
            let short = ShortName::of(name);
            let copied = short.bytes.iter().take_while(|&&byte| byte != 0).count();
            assert_eq!(copied, len.min(SHORT_NAME_BYTES), "{name}");
            assert_eq!(&short.bytes[..copied], &name.as_bytes()[..copied]);
            assert_eq!(short.len as usize, len);
        }
        let mut names = vec!["a", "ab", "ab\0", "rt3@120", "rt3@121", long.as_str(), &longer];
        names.extend(every_length.iter().map(String::as_str));
        for &stored in &names {
            for &looked_up in &names {
                assert_eq!(
                    key(looked_up).is(&ShortName::of(stored), || stored),
                    stored == looked_up,
                    "{stored:?} vs {looked_up:?}"
                );
            }
        }
        for &stored in names.iter().filter(|name| !name.contains('\0')) {
            for &looked_up in &names {
                assert_eq!(InlineName::of(stored).is(looked_up), stored == looked_up);
            }
        }
        let huge = "y".repeat(300);
        let stored = "y".repeat(255);
        assert!(!key(&huge).is(&ShortName::of(&stored), || &stored));
    }
}
