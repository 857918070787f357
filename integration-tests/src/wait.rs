//! Polling for a condition with a deadline.

use std::time::{Duration, Instant};

/// How often [`wait_until`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `cond` every [`POLL_INTERVAL`] until it returns true and returns the
/// time that took. Panics naming `what` and the timeout if it never does.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Calls `cond` every [`POLL_INTERVAL`] until it returns true or `timeout`
/// has passed; returns its last answer. For waits whose outcome is then
/// asserted with a better message than a timeout.
pub fn wait_until_or_timeout(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_condition_holds() {
        let mut n = 0;
        wait_until(Duration::from_secs(5), "n reaches 3", || {
            n += 1;
            n >= 3
        });
        assert_eq!(n, 3);
    }

    #[test]
    #[should_panic(expected = "timed out after 200ms waiting until the impossible happens")]
    fn panics_with_what_on_timeout() {
        wait_until(Duration::from_millis(200), "the impossible happens", || {
            false
        });
    }
}
