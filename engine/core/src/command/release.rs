//! `release`: a held hold gives its units back. Releasing a released or expired hold succeeds
//! again with its current state and changes nothing.

use crate::error::Refusal;
use crate::lifecycle::HoldVerb;
use crate::state::Engine;

use super::{validate_hold_ref, Receipt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub partition: String,
    pub hold: String,
}

impl Release {
    pub(crate) fn validate(&self) -> Result<(), Refusal> {
        validate_hold_ref(&self.partition, &self.hold)
    }

    /// Runs on the hold at `slot`, found by `Engine::apply_to_hold` before the clock moved.
    pub(crate) fn execute(&self, engine: &mut Engine, slot: u32) -> Result<Receipt, Refusal> {
        engine.follow_lifecycle(slot, HoldVerb::Release, 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::HoldStatus;

    #[test]
    fn returns_held_units() {
        let mut engine = engine_with(4);
        engine.apply(T0, &hold("p", "h", &[("r", 4)], None)).unwrap();
        assert_eq!(engine.resource("p", "r").unwrap().available(), 0);
        assert_eq!(status(engine.apply(T0, &release("p", "h"))), Ok(HoldStatus::Released));
        assert_eq!(counts(&engine, "p", "r"), (4, 0, 0));
        assert!(engine.apply(T0, &hold("p", "h2", &[("r", 4)], None)).is_ok());
    }

    #[test]
    fn repeat_on_released_or_expired_succeeds_unchanged() {
        let mut engine = engine_with(4);
        engine.apply(T0, &hold("p", "a", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &hold("p", "b", &[("r", 1)], Some(5))).unwrap();
        engine.apply(T0, &release("p", "a")).unwrap();
        engine.tick(T0 + 5);
        let before = engine.image();
        assert_eq!(status(engine.apply(T0 + 5, &release("p", "a"))), Ok(HoldStatus::Released));
        assert_eq!(status(engine.apply(T0 + 5, &release("p", "b"))), Ok(HoldStatus::Expired));
        assert_eq!(engine.image(), before);
    }

    #[test]
    fn refuses_confirmed_and_cancelled() {
        let mut engine = engine_with(4);
        engine.apply(T0, &hold("p", "c", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &confirm("p", "c")).unwrap();
        assert_refused_unchanged(&mut engine, T0, &release("p", "c"), "hold_confirmed");
        engine.apply(T0, &cancel("p", "c")).unwrap();
        assert_refused_unchanged(&mut engine, T0, &release("p", "c"), "hold_cancelled");
        assert_refused_unchanged(&mut engine, T0, &release("p", "zz"), "hold_not_found");
        assert_refused_unchanged(&mut engine, T0, &release("p!", "c"), "invalid");
    }
}
