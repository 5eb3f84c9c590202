//! `cancel`: a confirmed hold gives its confirmed units back. Cancelling a cancelled hold
//! succeeds again and changes nothing; a hold that is not confirmed cannot be cancelled.

use crate::error::Refusal;
use crate::lifecycle::HoldVerb;
use crate::state::Engine;

use super::{validate_hold_ref, Receipt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    pub partition: String,
    pub hold: String,
}

impl Cancel {
    pub(crate) fn validate(&self) -> Result<(), Refusal> {
        validate_hold_ref(&self.partition, &self.hold)
    }

    /// Runs on the hold at `slot`, found by `Engine::apply_to_hold` before the clock moved.
    pub(crate) fn execute(&self, engine: &mut Engine, slot: u32) -> Result<Receipt, Refusal> {
        engine.follow_lifecycle(slot, HoldVerb::Cancel, 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::HoldStatus;

    #[test]
    fn returns_confirmed_units_and_repeats() {
        let mut engine = engine_with(3);
        engine.apply(T0, &hold("p", "h", &[("r", 3)], None)).unwrap();
        engine.apply(T0, &confirm("p", "h")).unwrap();
        assert_eq!(status(engine.apply(T0, &cancel("p", "h"))), Ok(HoldStatus::Cancelled));
        assert_eq!(counts(&engine, "p", "r"), (3, 0, 0));
        let before = engine.image();
        assert_eq!(status(engine.apply(T0, &cancel("p", "h"))), Ok(HoldStatus::Cancelled));
        assert_eq!(engine.image(), before);
        // Cancelled is final.
        assert_refused_unchanged(&mut engine, T0, &confirm("p", "h"), "hold_cancelled");
    }

    #[test]
    fn refuses_holds_that_are_not_confirmed() {
        let mut engine = engine_with(3);
        engine.apply(T0, &hold("p", "held", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &hold("p", "released", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &hold("p", "expired", &[("r", 1)], Some(1))).unwrap();
        engine.apply(T0, &release("p", "released")).unwrap();
        assert_refused_unchanged(&mut engine, T0 + 1, &cancel("p", "held"), "hold_not_confirmed");
        assert_refused_unchanged(&mut engine, T0 + 1, &cancel("p", "released"), "hold_released");
        assert_refused_unchanged(&mut engine, T0 + 1, &cancel("p", "expired"), "hold_expired");
        assert_refused_unchanged(&mut engine, T0 + 1, &cancel("p", "none"), "hold_not_found");
    }
}
