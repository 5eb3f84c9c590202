//! A cap on the speed of a background write (a snapshot, a spare segment's zeroes): after each
//! piece, sleep until the bytes written so far could have been written at the rate since the
//! start. A slow disk never makes it sleep (it is behind already); it only ever caps the speed.
//!
//! Invariant: a pace never sleeps once its `urgent` flag is set (someone is waiting for the write).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The longest a paced writer sleeps before it looks at its `urgent` flag again.
const URGENT_CHECK_INTERVAL: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub(crate) struct Pace {
    /// Bytes a second; 0 for no cap.
    bytes_per_s: u64,
    pub(crate) started: Instant,
    pub(crate) written: u64,
}

impl Pace {
    pub(crate) fn new(bytes_per_s: u64) -> Pace {
        Pace { bytes_per_s, started: Instant::now(), written: 0 }
    }

    /// `bytes` more were written: sleeps if the write ran ahead of the rate.
    pub(crate) fn wrote(&mut self, bytes: usize) {
        self.wrote_unless(bytes, &AtomicBool::new(false));
    }

    /// As [`Pace::wrote`], but never sleeps once `urgent` is set (it is looked at every
    /// [`URGENT_CHECK_INTERVAL`] of a sleep).
    pub(crate) fn wrote_unless(&mut self, bytes: usize, urgent: &AtomicBool) {
        self.written = self.written.saturating_add(bytes as u64);
        if self.bytes_per_s == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.written as f64 / self.bytes_per_s as f64);
        while !urgent.load(Ordering::Acquire) {
            match due.checked_sub(self.started.elapsed()) {
                Some(early) if !early.is_zero() => {
                    std::thread::sleep(early.min(URGENT_CHECK_INTERVAL))
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pace_never_lets_writes_run_ahead_of_its_rate_unless_urgent() {
        let mut pace = Pace::new(8 << 20);
        for _ in 0..8 {
            pace.wrote(256 << 10);
        }
        // 2 MiB at 8 MiB/s: a quarter of a second at least (sleeps never end early).
        assert!(pace.started.elapsed() >= Duration::from_millis(250));
        let mut unpaced = Pace::new(0);
        unpaced.wrote(1 << 30);
        assert_eq!(unpaced.written, 1 << 30);
        // Urgent: a gigabyte "written" at 1 byte a second returns at once.
        let mut urgent = Pace::new(1);
        urgent.wrote_unless(1 << 30, &AtomicBool::new(true));
        assert!(urgent.started.elapsed() < Duration::from_secs(60));
    }
}
