//! Pure: the decisions of `farmctl watch` for one service, as a state
//! machine fed with heartbeats, client confirmations and standby checks. It
//! declares the active member dead only after `dead_after` of silence and
//! only when enough clients also fail to reach it, never on the watcher's
//! word alone; it fails over to the first healthy member in priority order,
//! and a member that comes back stays a standby unless `preempt` is set.

/// What the watcher should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The active member answered.
    Healthy,
    /// It missed heartbeats for this long, still under `dead_after`.
    Silent { for_ms: u64 },
    /// Silent for `dead_after`: ask the clients whether they reach it.
    AskClients,
}

/// The verdict once clients were asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Enough clients confirm: the member is dead.
    Dead { down: usize, asked: usize },
    /// Too few clients confirm: only the watcher's path to it is broken.
    NotConfirmed { down: usize, asked: usize, needed: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    FailoverTo(String),
    /// No other member passes its own check (or is in sync): change nothing.
    NoHealthyStandby,
}

#[derive(Clone, Debug)]
pub struct Monitor {
    pub active: String,
    /// In priority order.
    pub members: Vec<String>,
    pub dead_after_ms: u64,
    /// Clients that must confirm; `None`: 2, or all if fewer.
    pub confirm: Option<usize>,
    last_ok_ms: u64,
}

impl Monitor {
    pub fn new(active: String, members: Vec<String>, dead_after_ms: u64, confirm: Option<usize>, now_ms: u64) -> Monitor {
        Monitor { active, members, dead_after_ms, confirm, last_ok_ms: now_ms }
    }

    /// One heartbeat of the active member.
    pub fn heartbeat(&mut self, ok: bool, now_ms: u64) -> Step {
        if ok {
            self.last_ok_ms = now_ms;
            return Step::Healthy;
        }
        let silent = now_ms.saturating_sub(self.last_ok_ms);
        if silent < self.dead_after_ms {
            Step::Silent { for_ms: silent }
        } else {
            Step::AskClients
        }
    }

    /// How long the active member may stay silent before `dead_after` ends,
    /// from `now_ms`: the watcher cuts a beat short there, so that the
    /// silence is judged when it reaches `dead_after`, not a beat later.
    pub fn left_ms(&self, now_ms: u64) -> u64 {
        self.dead_after_ms.saturating_sub(now_ms.saturating_sub(self.last_ok_ms))
    }

    /// How many of `asked` clients must fail to reach the member. With
    /// clients to ask, at least one must agree: never the watcher's word alone.
    pub fn needed(&self, asked: usize) -> usize {
        let needed = self.confirm.unwrap_or(2).min(asked);
        if asked > 0 {
            needed.max(1)
        } else {
            needed
        }
    }

    /// Whether `down` of `asked` clients failing to reach the member makes it dead.
    pub fn confirm(&self, down: usize, asked: usize) -> Verdict {
        let needed = self.needed(asked);
        if down >= needed && (asked > 0 || self.confirm == Some(0)) {
            Verdict::Dead { down, asked }
        } else {
            Verdict::NotConfirmed { down, asked, needed: needed.max(1) }
        }
    }

    /// The member to fail over to: the first in priority order, other than the
    /// active one, that passes its own check.
    pub fn choose(&self, healthy: &[(String, bool)]) -> Choice {
        self.members
            .iter()
            .filter(|m| **m != self.active)
            .find(|m| healthy.iter().any(|(h, ok)| h == *m && *ok))
            .map_or(Choice::NoHealthyStandby, |m| Choice::FailoverTo(m.clone()))
    }

    /// After a failover: `to` is active, and its silence counts from now.
    pub fn failed_over(&mut self, to: &str, now_ms: u64) {
        self.active = to.to_string();
        self.last_ok_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Monitor {
        Monitor::new("web-c".into(), vec!["web-c".into(), "web-d".into(), "web-e".into()], 3000, None, 0)
    }

    #[test]
    fn silence_becomes_a_question_only_after_dead_after() {
        let mut m = m();
        assert_eq!(m.heartbeat(true, 1000), Step::Healthy);
        assert_eq!(m.heartbeat(false, 2000), Step::Silent { for_ms: 1000 });
        assert_eq!(m.heartbeat(false, 3999), Step::Silent { for_ms: 2999 });
        assert_eq!(m.heartbeat(false, 4000), Step::AskClients);
        assert_eq!(m.heartbeat(true, 4500), Step::Healthy);
        assert_eq!(m.heartbeat(false, 5000), Step::Silent { for_ms: 500 });
    }

    #[test]
    fn the_time_left_before_dead_after_counts_from_the_last_answer() {
        let mut m = m();
        assert_eq!(m.heartbeat(true, 1000), Step::Healthy);
        assert_eq!(m.left_ms(1000), 3000);
        assert_eq!(m.left_ms(3500), 500);
        assert_eq!(m.left_ms(4000), 0);
        assert_eq!(m.left_ms(9000), 0);
        // A beat cut short when the time is up is judged at dead_after.
        assert_eq!(m.heartbeat(false, 1000 + 3000), Step::AskClients);
    }

    #[test]
    fn the_watcher_alone_never_declares_a_member_dead() {
        let m = m();
        assert_eq!(m.confirm(2, 6), Verdict::Dead { down: 2, asked: 6 });
        assert_eq!(m.confirm(1, 6), Verdict::NotConfirmed { down: 1, asked: 6, needed: 2 });
        assert_eq!(m.confirm(0, 6), Verdict::NotConfirmed { down: 0, asked: 6, needed: 2 });
        // One client: it must agree.
        assert_eq!(m.confirm(1, 1), Verdict::Dead { down: 1, asked: 1 });
        assert_eq!(m.confirm(0, 1), Verdict::NotConfirmed { down: 0, asked: 1, needed: 1 });
        // No client to ask: not dead.
        assert!(matches!(m.confirm(0, 0), Verdict::NotConfirmed { .. }));
        let explicit = Monitor { confirm: Some(4), ..m.clone() };
        assert!(matches!(explicit.confirm(3, 6), Verdict::NotConfirmed { needed: 4, .. }));
    }

    #[test]
    fn failover_picks_the_first_healthy_member_by_priority() {
        let mut m = m();
        assert_eq!(m.choose(&[("web-d".into(), false), ("web-e".into(), true)]), Choice::FailoverTo("web-e".into()));
        assert_eq!(m.choose(&[("web-d".into(), true), ("web-e".into(), true)]), Choice::FailoverTo("web-d".into()));
        assert_eq!(m.choose(&[("web-d".into(), false), ("web-e".into(), false)]), Choice::NoHealthyStandby);
        m.failed_over("web-d", 10_000);
        assert_eq!(m.active, "web-d");
        // The old primary is a standby now; it is chosen only when it is next and healthy.
        assert_eq!(m.choose(&[("web-c".into(), true), ("web-e".into(), true)]), Choice::FailoverTo("web-c".into()));
        assert_eq!(m.heartbeat(false, 12_000), Step::Silent { for_ms: 2000 });
    }
}
