//! Injected failures and outages, switchable at run time: delays, 5xx,
//! 429 (either style), dropped connections, a compacted watch history
//! (410 Gone), and going down and up. The filter chain (`handler.rs`) and
//! the listener (`net.rs`) apply them.

use std::time::Duration;

use crate::net::Control;
use crate::{ApiServer, Throttle};

impl ApiServer {
    /// Delays every response by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.state().faults.delay = d;
    }

    /// The next `n` authenticated requests fail with `code` (500
    /// InternalError, 503 ServiceUnavailable, 504 Timeout `Status`).
    pub fn fail_next(&self, n: u32, code: u16) {
        let mut st = self.state();
        st.faults.fail_remaining = n;
        st.faults.fail_code = code;
    }

    /// The next `n` authenticated requests get 429 with `Retry-After:
    /// retry_after_secs`.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u32, style: Throttle) {
        let mut st = self.state();
        st.faults.throttle_remaining = n;
        st.faults.throttle_retry_after = retry_after_secs;
        st.faults.throttle_style = style;
    }

    /// The next `n` requests: the connection is closed without an answer.
    pub fn drop_next(&self, n: u32) {
        self.state().faults.drop_remaining = n;
    }

    /// Compacts the watch history: a watch or continue token from an older
    /// resourceVersion now gets 410 Gone (reason `Expired`).
    pub fn compact(&self) {
        self.state().store.compact();
    }

    /// Stops listening and closes every open connection (watches included):
    /// connections are refused until [`ApiServer::up`].
    pub fn down(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control.send(Control::Down(tx)).unwrap();
        rx.recv().unwrap();
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control.send(Control::Up(tx)).unwrap();
        rx.recv().unwrap();
    }

    /// Whether the server is listening.
    pub fn is_up(&self) -> bool {
        self.state().up
    }
}
