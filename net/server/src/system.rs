//! What the node asks the operating system about its machine: the physical memory (for the
//! default `--memory-max`) and the free space of the data directory's filesystem (for
//! `/metrics`). Invariant: every call only reads, never panics, and answers `None` when the
//! system cannot tell.

use std::path::Path;

/// Bytes of physical memory (`_SC_PHYS_PAGES × _SC_PAGE_SIZE`), or `None` if unknown.
pub fn physical_memory_bytes() -> Option<u64> {
    // SAFETY: `sysconf` only reads a system constant; it has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGE_SIZE) };
    let pages = u64::try_from(pages).ok().filter(|&pages| pages > 0)?;
    let page_size = u64::try_from(page_size).ok().filter(|&size| size > 0)?;
    pages.checked_mul(page_size)
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`
/// (`statvfs`: `f_bavail × f_frsize`), or `None` if it cannot be asked.
pub fn disk_free_bytes(path: &Path) -> Option<u64> {
    bookd_wal::storage::disk_free_bytes(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_has_memory_and_its_temp_directory_has_a_filesystem() {
        let memory = physical_memory_bytes().unwrap();
        assert!(memory >= 64 * 1024 * 1024, "{memory} bytes of memory");
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_free_bytes(dir.path()).is_some());
        assert_eq!(disk_free_bytes(&dir.path().join("missing/deeper")), None);
        assert_eq!(disk_free_bytes(Path::new("a\0b")), None);
    }
}
