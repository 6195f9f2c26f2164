//! Pure: the id of one run of a plan's stage on the hosts, which names its
//! backups, its staged copies and its detached job there. One `Display` and
//! one `FromStr`: the words on the hosts are exactly those of earlier
//! versions (`PLAN-STAGE`, `PLAN-STAGE-rollback`, `PLAN-undo`, ...), so a
//! plan applied by an earlier farmctl is still found and rolled back.

use std::fmt;
use std::str::FromStr;

/// What a run of a stage does, beside the stage's switch itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The stage's edits, reloads and upgrades.
    Switch,
    /// A failed wave's hosts going back to their version.
    Rollback,
    /// A shadow canary's entry into the clients' mirror lists.
    ShadowEntry,
    /// A shadow canary's promotion into the clients' pools.
    Promotion,
    /// A shadow canary leaving the mirror lists.
    ShadowExit,
}

impl Phase {
    const SUFFIXES: [(Phase, &'static str); 4] = [(Phase::Rollback, "rollback"), (Phase::ShadowEntry, "shadow-entry"), (Phase::Promotion, "promotion"), (Phase::ShadowExit, "shadow-exit")];

    fn suffix(self) -> Option<&'static str> {
        Self::SUFFIXES.iter().find(|(p, _)| *p == self).map(|(_, s)| *s)
    }

    /// How the operator reads it ("shadow entry").
    pub fn in_words(self) -> &'static str {
        match self {
            Phase::Switch => "switch",
            Phase::Rollback => "rollback",
            Phase::ShadowEntry => "shadow entry",
            Phase::Promotion => "promotion",
            Phase::ShadowExit => "shadow exit",
        }
    }
}

/// One run on the hosts: a stage of a plan in a phase, or the undo of a plan's upgrades.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunId {
    Stage { plan: String, stage: usize, phase: Phase },
    Undo { plan: String },
}

impl RunId {
    pub fn switch(plan: &str, stage: usize) -> RunId {
        RunId::Stage { plan: plan.to_string(), stage, phase: Phase::Switch }
    }

    /// The same stage in another phase.
    pub fn with_phase(&self, phase: Phase) -> RunId {
        match self {
            RunId::Stage { plan, stage, .. } => RunId::Stage { plan: plan.clone(), stage: *stage, phase },
            RunId::Undo { .. } => self.clone(),
        }
    }

    pub fn plan(&self) -> &str {
        match self {
            RunId::Stage { plan, .. } | RunId::Undo { plan } => plan,
        }
    }

    /// "the switch of plan P, stage N" (stages counted from 1, as the plan shows them).
    pub fn in_words(&self) -> String {
        match self {
            RunId::Stage { plan, stage, phase } => format!("the {} of plan {plan}, stage {}", phase.in_words(), stage + 1),
            RunId::Undo { plan } => format!("the undo of plan {plan}'s upgrades"),
        }
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunId::Stage { plan, stage, phase } => match phase.suffix() {
                None => write!(f, "{plan}-{stage}"),
                Some(s) => write!(f, "{plan}-{stage}-{s}"),
            },
            RunId::Undo { plan } => write!(f, "{plan}-undo"),
        }
    }
}

/// Why a text is not a run id.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a run id (PLAN-STAGE[-PHASE] or PLAN-undo)")]
pub struct NotARunId(pub String);

impl FromStr for RunId {
    type Err = NotARunId;

    fn from_str(s: &str) -> Result<RunId, NotARunId> {
        let bad = || NotARunId(s.to_string());
        let (plan, rest) = s.split_once('-').ok_or_else(bad)?;
        if plan.is_empty() || !plan.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        if rest == "undo" {
            return Ok(RunId::Undo { plan: plan.to_string() });
        }
        let (stage, suffix) = rest.split_once('-').map_or((rest, None), |(a, b)| (a, Some(b)));
        let stage: usize = stage.parse().map_err(|_| bad())?;
        let phase = match suffix {
            None => Phase::Switch,
            Some(x) => Phase::SUFFIXES.iter().find(|(_, s)| *s == x).map(|(p, _)| *p).ok_or_else(bad)?,
        };
        Ok(RunId::Stage { plan: plan.to_string(), stage, phase })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_id_reads_back_as_itself_in_the_words_earlier_versions_wrote() {
        let plan = "ce8a1cdda88d98c0";
        let cases = [
            (RunId::switch(plan, 0), "ce8a1cdda88d98c0-0"),
            (RunId::switch(plan, 2).with_phase(Phase::Rollback), "ce8a1cdda88d98c0-2-rollback"),
            (RunId::switch(plan, 1).with_phase(Phase::ShadowEntry), "ce8a1cdda88d98c0-1-shadow-entry"),
            (RunId::switch(plan, 1).with_phase(Phase::Promotion), "ce8a1cdda88d98c0-1-promotion"),
            (RunId::switch(plan, 1).with_phase(Phase::ShadowExit), "ce8a1cdda88d98c0-1-shadow-exit"),
            (RunId::Undo { plan: plan.into() }, "ce8a1cdda88d98c0-undo"),
        ];
        for (id, text) in cases {
            assert_eq!(id.to_string(), text);
            assert_eq!(text.parse::<RunId>(), Ok(id));
        }
        for bad in ["", "ce8a", "ce8a-x", "ce8a-1-later", "not-hex-1", "-1"] {
            assert!(bad.parse::<RunId>().is_err(), "{bad}");
        }
        assert_eq!(RunId::switch(plan, 0).in_words(), "the switch of plan ce8a1cdda88d98c0, stage 1");
    }
}
