//! Software prefetch: a hint that the engine will soon read a value, so that independent
//! cache misses (a hold's items, each in its own bucket and record) overlap instead of queueing.

/// Asks the CPU to bring `value`'s cache line close. A hint only: it never faults and never
/// changes what a later read returns; on targets without the instruction it does nothing.
#[inline(always)]
pub(crate) fn read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `value` is a valid reference; a prefetch reads nothing architecturally and
        // cannot fault, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
