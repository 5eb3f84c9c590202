//! `extend`: a held hold now expires at now + `ttl_ms` (earlier or later than before).
//! Only a live hold can be extended; the refusal names the hold's final state.

use crate::error::Refusal;
use crate::lifecycle::HoldVerb;
use crate::state::Engine;

use super::{validate_hold_ref, validate_ttl, Receipt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    pub partition: String,
    pub hold: String,
    pub ttl_ms: u64,
}

impl Extend {
    pub(crate) fn validate(&self) -> Result<(), Refusal> {
        validate_hold_ref(&self.partition, &self.hold)?;
        validate_ttl(self.ttl_ms)
    }

    /// Runs on the hold at `slot`, found by `Engine::apply_to_hold` before the clock moved.
    pub(crate) fn execute(
        &self,
        engine: &mut Engine,
        slot: u32,
        now_ms: u64,
    ) -> Result<Receipt, Refusal> {
        engine.follow_lifecycle(slot, HoldVerb::Extend, now_ms.saturating_add(self.ttl_ms))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::HoldStatus;

    #[test]
    fn moves_expiry_later_and_earlier() {
        let mut engine = engine_with(2);
        engine.apply(T0, &hold("p", "h", &[("r", 1)], Some(100))).unwrap();
        engine.apply(T0 + 50, &extend("p", "h", 1_000)).unwrap();
        assert_eq!(engine.hold("p", "h").unwrap().expires_at_ms, T0 + 1_050);
        // The old expiry passes without effect.
        engine.tick(T0 + 100);
        assert_eq!(engine.hold("p", "h").unwrap().status, HoldStatus::Held);
        // Shorten it: it now expires at T0 + 200 + 10.
        engine.apply(T0 + 200, &extend("p", "h", 10)).unwrap();
        engine.tick(T0 + 209);
        assert_eq!(engine.hold("p", "h").unwrap().status, HoldStatus::Held);
        engine.tick(T0 + 210);
        assert_eq!(engine.hold("p", "h").unwrap().status, HoldStatus::Expired);
        assert_eq!(counts(&engine, "p", "r"), (2, 0, 0));
    }

    #[test]
    fn refuses_holds_that_are_not_live() {
        let mut engine = engine_with(5);
        for id in ["c", "r", "e", "x"] {
            engine.apply(T0, &hold("p", id, &[("r", 1)], Some(10))).unwrap();
        }
        engine.apply(T0, &confirm("p", "c")).unwrap();
        engine.apply(T0, &release("p", "r")).unwrap();
        engine.apply(T0, &confirm("p", "x")).unwrap();
        engine.apply(T0, &cancel("p", "x")).unwrap();
        let now = T0 + 10;
        assert_refused_unchanged(&mut engine, now, &extend("p", "c", 10), "hold_confirmed");
        assert_refused_unchanged(&mut engine, now, &extend("p", "r", 10), "hold_released");
        assert_refused_unchanged(&mut engine, now, &extend("p", "e", 10), "hold_expired");
        assert_refused_unchanged(&mut engine, now, &extend("p", "x", 10), "hold_cancelled");
        assert_refused_unchanged(&mut engine, now, &extend("p", "c", 0), "invalid");
        assert_refused_unchanged(&mut engine, now, &extend("p", "c", 86_400_001), "invalid");
    }
}
