//! Validation of names (partitions, resource ids, hold ids): 1–64 bytes of `[A-Za-z0-9._:@-]`.
//! A name that passes is plain ASCII, so byte order and `str` order agree.

use crate::error::Refusal;
use crate::limits::NAME_SIZE_MAX_BYTES;

/// True for the bytes a name may contain.
#[inline]
pub const fn is_name_byte(byte: u8) -> bool {
    NAME_BYTES[byte as usize]
}

/// `is_name_byte` as a table: one load per byte on the hot path.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = matches!(
            byte as u8,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'@' | b'-'
        );
        byte += 1;
    }
    table
};

/// Why a string is not a name, or `None` if it is one.
#[inline]
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > NAME_SIZE_MAX_BYTES {
        return Some("longer than 64 bytes");
    }
    // A fold instead of `all`: no early exit per byte, so the loop unrolls without branches.
    if !name.bytes().fold(true, |valid, byte| valid & is_name_byte(byte)) {
        return Some("may contain only A-Z a-z 0-9 . _ : @ -");
    }
    None
}

/// Refuses `name` as `invalid` naming `field` unless it is a valid name.
#[inline]
pub fn check_name(field: &str, name: &str) -> Result<(), Refusal> {
    match name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(Refusal::invalid(field, reason)),
    }
}

/// Like [`check_name`], but the empty string is allowed (a listing prefix).
pub fn check_prefix(field: &str, prefix: &str) -> Result<(), Refusal> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_name(field, prefix)
}

/// The shard that owns `partition` among `shards` shards: FNV-1a (64 bits) of the name's
/// bytes, modulo. Stable across processes and versions: the shard count of a data directory is
/// fixed, and clients that route by shard compute the same.
pub fn shard_of(partition: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in partition.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_alphabet() {
        assert_eq!(name_problem("A-12"), None);
        assert_eq!(name_problem("deluxe@2026-12-01"), None);
        assert_eq!(name_problem("a.b_c:d@e-f09AZ"), None);
        assert_eq!(name_problem(&"x".repeat(64)), None);
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(name_problem(""), Some("must not be empty"));
        assert_eq!(name_problem(&"x".repeat(65)), Some("longer than 64 bytes"));
        for bad in ["a b", "a/b", "é", "a\u{0}", "a%20", "a+b", "a\n"] {
            assert!(name_problem(bad).is_some(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_table_holds_exactly_the_67_name_bytes() {
        let allowed: Vec<u8> = (0..=255u8).filter(|&b| is_name_byte(b)).collect();
        assert_eq!(allowed.len(), 26 + 26 + 10 + 5);
        assert!(allowed.iter().all(|b| b.is_ascii_alphanumeric() || b".:@-_".contains(b)));
    }

    #[test]
    fn prefix_may_be_empty_but_not_invalid() {
        assert!(check_prefix("prefix", "").is_ok());
        assert!(check_prefix("prefix", "s-").is_ok());
        let refusal = check_prefix("prefix", "s/").unwrap_err();
        assert_eq!(refusal.code(), "invalid");
        assert!(refusal.to_string().contains("prefix"));
    }
}
