//! One total order over every event the harness observes (SIP sent or received
//! by a test user, a charging request arriving at the Charging Enabler).
//!
//! Ordering rules ("Start only after the recipient's 200 OK") compare stamps,
//! never wall-clock times: two events can share an `Instant` on a fast machine,
//! but never a sequence number. The harness stamps a message it *sends* before
//! writing it to the socket and a message it *receives* after reading it, so a
//! SUT reaction to a harness message always carries a larger stamp.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A point on the harness's timeline. Compares by sequence number only.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// Position in the global order; unique and increasing.
    pub seq: u64,
    /// When it happened, for reports and latencies.
    pub at: Instant,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// Takes the next stamp.
pub fn stamp() -> Stamp {
    Stamp {
        seq: NEXT.fetch_add(1, Ordering::SeqCst),
        at: Instant::now(),
    }
}

impl PartialEq for Stamp {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Stamp {}
impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Stamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.seq.cmp(&other.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_strictly_increasing() {
        let a = stamp();
        let b = stamp();
        assert!(a < b);
        assert_ne!(a, b);
    }
}
