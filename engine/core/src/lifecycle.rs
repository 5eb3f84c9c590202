//! The hold lifecycle: what each verb does to a hold in each status, written once. The verbs'
//! `execute` functions ask [`effect`]; docs/ARCHITECTURE.md shows the same table, and a test
//! renders this one and finds it there.

use crate::error::Refusal;
use crate::view::HoldStatus;

/// A verb that acts on an existing hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldVerb {
    Confirm,
    Release,
    Cancel,
    Extend,
}

impl HoldVerb {
    pub const ALL: [HoldVerb; 4] =
        [HoldVerb::Confirm, HoldVerb::Release, HoldVerb::Cancel, HoldVerb::Extend];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldVerb::Confirm => "confirm",
            HoldVerb::Release => "release",
            HoldVerb::Cancel => "cancel",
            HoldVerb::Extend => "extend",
        }
    }
}

/// What a verb does to a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The hold moves to this status (its units move with it).
    Move(HoldStatus),
    /// The expiry becomes now + ttl.
    Extend,
    /// A repeat of what already happened: succeeds and changes nothing.
    Unchanged,
    /// Refused; the hold is left as it is.
    Refuse(Refusal),
}

/// The table: `verb` on a hold in `status`.
pub fn effect(verb: HoldVerb, status: HoldStatus) -> Effect {
    use Effect::{Move, Refuse, Unchanged};
    use HoldStatus::{Cancelled, Confirmed, Expired, Held, Released};
    match (verb, status) {
        (HoldVerb::Confirm, Held) => Move(Confirmed),
        (HoldVerb::Confirm, Confirmed) => Unchanged,
        (HoldVerb::Release, Held) => Move(Released),
        (HoldVerb::Release, Released | Expired) => Unchanged,
        (HoldVerb::Release | HoldVerb::Extend, Confirmed) => Refuse(Refusal::HoldConfirmed),
        (HoldVerb::Cancel, Confirmed) => Move(Cancelled),
        (HoldVerb::Cancel, Cancelled) => Unchanged,
        (HoldVerb::Cancel, Held) => Refuse(Refusal::HoldNotConfirmed),
        (HoldVerb::Extend, Held) => Effect::Extend,
        (_, Released) => Refuse(Refusal::HoldReleased),
        (_, Expired) => Refuse(Refusal::HoldExpired),
        (_, Cancelled) => Refuse(Refusal::HoldCancelled),
    }
}

/// The table as markdown, as docs/ARCHITECTURE.md ("Hold states") shows it.
pub fn table_markdown() -> String {
    let mut out = String::from("| command |");
    for status in HoldStatus::ALL {
        out.push_str(&format!(" {} |", status.as_str()));
    }
    out.push_str("\n| --- |");
    out.push_str(&" --- |".repeat(HoldStatus::ALL.len()));
    for verb in HoldVerb::ALL {
        out.push_str(&format!("\n| {} |", verb.as_str()));
        for status in HoldStatus::ALL {
            let cell = match effect(verb, status) {
                Effect::Move(to) => format!("→ {}", to.as_str()),
                Effect::Extend => "expiry = now + ttl".to_string(),
                Effect::Unchanged => "ok, unchanged".to_string(),
                Effect::Refuse(refusal) => format!("`{}`", refusal.code()),
            };
            out.push_str(&format!(" {cell} |"));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::testing::*;

    #[test]
    fn the_architecture_guide_shows_this_table() {
        let guide = include_str!("../../../docs/ARCHITECTURE.md");
        let table = table_markdown();
        assert!(guide.contains(&table), "docs/ARCHITECTURE.md's hold states are stale:\n{table}");
    }

    /// Every verb on a hold in every status does what the table says, through the engine.
    #[test]
    fn the_engine_follows_the_table() {
        for verb in HoldVerb::ALL {
            for status in HoldStatus::ALL {
                let mut engine = engine_with(10);
                engine.apply(T0, &hold("p", "h", &[("r", 3)], Some(1_000))).unwrap();
                let at = match status {
                    HoldStatus::Held => T0 + 1,
                    HoldStatus::Confirmed => {
                        engine.apply(T0 + 1, &confirm("p", "h")).unwrap();
                        T0 + 2
                    }
                    HoldStatus::Released => {
                        engine.apply(T0 + 1, &release("p", "h")).unwrap();
                        T0 + 2
                    }
                    HoldStatus::Expired => T0 + 1_000,
                    HoldStatus::Cancelled => {
                        engine.apply(T0 + 1, &confirm("p", "h")).unwrap();
                        engine.apply(T0 + 2, &cancel("p", "h")).unwrap();
                        T0 + 3
                    }
                };
                let command = match verb {
                    HoldVerb::Confirm => confirm("p", "h"),
                    HoldVerb::Release => release("p", "h"),
                    HoldVerb::Cancel => cancel("p", "h"),
                    HoldVerb::Extend => extend("p", "h", 5_000),
                };
                let context = format!("{} on {}", verb.as_str(), status.as_str());
                match effect(verb, status) {
                    Effect::Refuse(refusal) => {
                        assert_refused_unchanged(&mut engine, at, &command, refusal.code());
                    }
                    effect => {
                        let after = status_of(engine.apply(at, &command)).expect(&context);
                        let expected = match effect {
                            Effect::Move(to) => to,
                            _ => status,
                        };
                        assert_eq!(after, expected, "{context}");
                        let view = engine.hold("p", "h").unwrap();
                        if effect == Effect::Extend {
                            assert_eq!(view.expires_at_ms, at + 5_000, "{context}");
                        }
                    }
                }
            }
        }
    }

    fn status_of(outcome: Result<crate::Outcome, Refusal>) -> Result<HoldStatus, Refusal> {
        status(outcome)
    }
}
