//! How long to wait before trying again: one exponential, capped backoff
//! with optional jitter (so a fleet does not retry in lockstep), for every
//! loop and watch of the agent.
//!
//! Boundary: a leaf; arithmetic and randomness only.

use std::time::Duration;

/// Delays for retrying a failed pass: `first`, doubling up to `max`, each
/// with up to `jitter` (a fraction of the delay) added at random.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            first,
            max,
            jitter,
            next: first,
        }
    }

    /// The delay before the next retry (`instead`, when the server named
    /// one, replaces the base delay), and doubles the base for the one after.
    pub fn next_delay(&mut self, instead: Option<Duration>) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // A server's Retry-After is honoured up to the cap: one bad answer must
        // not stall a loop for hours.
        instead.map_or(base, |d| d.min(self.max)) + jitter(base, self.jitter)
    }

    /// After a success: the next failure retries after `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// A node's stable place in [0, 1), from SHA-256 of its name: the same
/// node always gets the same value, and a fleet's values are uniform. The
/// kubelet renewal jitter and the restart spread both use it.
pub fn stable_fraction(node_name: &str) -> f64 {
    let digest = openssl::sha::sha256(node_name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits give an exactly representable, uniform value in [0, 1).
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Up to `fraction` of `base`, at random.
fn jitter(base: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 {
        return Duration::ZERO;
    }
    let mut b = [0u8; 2];
    let _ = openssl::rand::rand_bytes(&mut b);
    base.mul_f64(f64::from(u16::from_be_bytes(b)) / f64::from(u16::MAX) * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5), 0.0);
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay(None).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(None), Duration::from_secs(1));
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3))),
            Duration::from_secs(3),
            "the server's Retry-After replaces the base"
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(30))),
            Duration::from_secs(5),
            "up to the cap"
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10), 0.1);
        for _ in 0..100 {
            let d = b.next_delay(None);
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
