//! `confirm`: a held hold's units become confirmed. At or after `expires_at_ms` the hold has
//! already expired (`hold_expired`); confirming a confirmed hold succeeds again and changes nothing.

use crate::error::Refusal;
use crate::lifecycle::HoldVerb;
use crate::state::Engine;

use super::{validate_hold_ref, Receipt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub partition: String,
    pub hold: String,
}

impl Confirm {
    pub(crate) fn validate(&self) -> Result<(), Refusal> {
        validate_hold_ref(&self.partition, &self.hold)
    }

    /// Runs on the hold at `slot`, found by `Engine::apply_to_hold` before the clock moved.
    pub(crate) fn execute(&self, engine: &mut Engine, slot: u32) -> Result<Receipt, Refusal> {
        engine.follow_lifecycle(slot, HoldVerb::Confirm, 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::{HoldStatus, Refusal};

    #[test]
    fn a_receipt_shows_the_hold_as_the_command_left_it() {
        let mut engine = engine_with(10);
        let held = engine.apply_receipt(T0, &hold("p", "h", &[("r", 3)], None)).unwrap();
        let confirmed = engine.apply_receipt(T0 + 1, &confirm("p", "h")).unwrap();
        // Built after the confirm, the hold's reply still says what the hold command did.
        assert_eq!(status(Ok(engine.outcome(&held))), Ok(HoldStatus::Held));
        assert_eq!(status(Ok(engine.outcome(&confirmed))), Ok(HoldStatus::Confirmed));
        assert!(!held.existed());
        let again = engine.apply_receipt(T0 + 2, &hold("p", "h", &[("r", 3)], None)).unwrap();
        assert!(again.existed());
        assert_eq!(
            engine.outcome(&again),
            engine.apply(T0 + 2, &hold("p", "h", &[("r", 3)], None)).unwrap()
        );
    }

    #[test]
    fn confirms_held_units() {
        let mut engine = engine_with(10);
        engine.apply(T0, &hold("p", "h", &[("r", 3)], None)).unwrap();
        assert_eq!(status(engine.apply(T0 + 1, &confirm("p", "h"))), Ok(HoldStatus::Confirmed));
        assert_eq!(counts(&engine, "p", "r"), (10, 0, 3));
        // A confirmed hold never expires.
        engine.tick(T0 + 86_400_000 * 2);
        assert_eq!(counts(&engine, "p", "r"), (10, 0, 3));
    }

    #[test]
    fn repeat_succeeds_and_changes_nothing() {
        let mut engine = engine_with(10);
        engine.apply(T0, &hold("p", "h", &[("r", 3)], None)).unwrap();
        engine.apply(T0, &confirm("p", "h")).unwrap();
        let before = engine.image();
        assert_eq!(status(engine.apply(T0, &confirm("p", "h"))), Ok(HoldStatus::Confirmed));
        assert_eq!(engine.image(), before);
    }

    #[test]
    fn expiry_boundary_is_exact() {
        let mut engine = engine_with(10);
        engine.apply(T0, &hold("p", "early", &[("r", 1)], Some(100))).unwrap();
        engine.apply(T0, &hold("p", "late", &[("r", 1)], Some(100))).unwrap();
        // One millisecond before expiry: still held, confirm works.
        assert_eq!(
            status(engine.apply(T0 + 99, &confirm("p", "early"))),
            Ok(HoldStatus::Confirmed)
        );
        // Exactly at expires_at_ms: refused.
        assert_eq!(
            engine.apply(T0 + 100, &confirm("p", "late")).unwrap_err(),
            Refusal::HoldExpired
        );
        assert_eq!(counts(&engine, "p", "r"), (10, 0, 1));
        assert_eq!(engine.hold("p", "late").unwrap().status, HoldStatus::Expired);
    }

    #[test]
    fn refuses_from_final_states() {
        let mut engine = engine_with(10);
        for id in ["released", "expired", "cancelled"] {
            engine.apply(T0, &hold("p", id, &[("r", 1)], Some(1_000))).unwrap();
        }
        engine.apply(T0, &release("p", "released")).unwrap();
        engine.apply(T0, &confirm("p", "cancelled")).unwrap();
        engine.apply(T0, &cancel("p", "cancelled")).unwrap();
        let now = T0 + 1_000;
        assert_refused_unchanged(&mut engine, now, &confirm("p", "released"), "hold_released");
        assert_refused_unchanged(&mut engine, now, &confirm("p", "expired"), "hold_expired");
        assert_refused_unchanged(&mut engine, now, &confirm("p", "cancelled"), "hold_cancelled");
        assert_refused_unchanged(&mut engine, now, &confirm("p", "missing"), "hold_not_found");
        assert_refused_unchanged(&mut engine, now, &confirm("q", "released"), "hold_not_found");
        assert_refused_unchanged(&mut engine, now, &confirm("p", "bad id"), "invalid");
    }
}
