//! Services spread over watchers. Each service's lease is its own, so
//! several watchers share a farm's services: with W live watchers and S
//! services, a watcher takes a service only while it holds fewer than its
//! share, ⌈S/W⌉, and gives up a service (releasing its lease cleanly, so a
//! standby takes it at once) while it holds more. W is counted where the
//! leases live: in etcd, each watcher keeps a key of its own under the
//! prefix. With the lease on the members there is nowhere to count the
//! watchers, and one watcher takes every service it can.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One watcher's part of the farm's services.
#[derive(Debug)]
pub struct Spread {
    services: usize,
    /// The live watchers as last counted; at least 1.
    watchers: AtomicUsize,
    /// How many services this watcher holds now.
    held: AtomicUsize,
    /// Whether one of this watcher's services is being given up: one at a
    /// time, so that several surplus services are never all given up at once.
    giving_up: AtomicBool,
}

impl Spread {
    /// A watcher that counts itself alone until told otherwise.
    pub fn new(services: usize) -> Spread {
        Spread { services, watchers: AtomicUsize::new(1), held: AtomicUsize::new(0), giving_up: AtomicBool::new(false) }
    }

    /// The live watchers, as counted in the lease's store.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn set_watchers(&self, n: usize) {
        self.watchers.store(n.max(1), Ordering::SeqCst);
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::SeqCst)
    }

    /// ⌈S/W⌉: how many services this watcher should hold at most.
    pub fn share(&self) -> usize {
        self.services.div_ceil(self.watchers())
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Whether this watcher may take one more service.
    pub fn may_take(&self) -> bool {
        self.held() < self.share()
    }

    /// A service's lease was taken.
    pub fn took(&self) {
        self.held.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether the caller's service should be given up now: this watcher
    /// holds more than its share, and none of its other services is being
    /// given up. A `true` must be followed by [`Spread::gave_up`].
    pub fn should_give_up(&self) -> bool {
        self.held() > self.share() && self.giving_up.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// A service's lease ended: lost, given up or released at a stop.
    pub fn ended(&self, gave_up: bool) {
        let _ = self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1));
        if gave_up {
            self.giving_up.store(false, Ordering::SeqCst);
        }
    }

    /// Said when a watcher leaves a service to the others.
    pub fn describe(&self) -> String {
        format!("this watcher holds {} of {} service(s), its share with {} live watcher(s) is {}", self.held(), self.services, self.watchers(), self.share())
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn three_watchers_hold_two_of_six_each_and_a_watcher_over_its_share_gives_up_one_at_a_time() {
        let s = Spread::new(6);
        for _ in 0..6 {
            assert!(s.may_take());
            s.took();
        }
        assert!(!s.may_take(), "alone, a watcher holds all six");
        assert!(!s.should_give_up());
        s.set_watchers(3);
        assert_eq!(s.share(), 2);
        assert!(s.should_give_up(), "6 held over a share of 2");
        assert!(!s.should_give_up(), "one at a time");
        s.ended(true);
        for _ in 0..3 {
            assert!(s.should_give_up());
            s.ended(true);
        }
        assert_eq!(s.held(), 2);
        assert!(!s.should_give_up() && !s.may_take(), "at its share: neither gives up nor takes");
        s.set_watchers(2);
        assert!(s.may_take(), "a watcher gone: the share grows to 3");
        s.set_watchers(4);
        assert_eq!(s.share(), 2, "⌈6/4⌉");
        s.set_watchers(0);
        assert_eq!(s.watchers(), 1, "never fewer than itself");
    }
}
