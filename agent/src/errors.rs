//! How an error reads to an operator: one line, `what failed: why: root
//! cause`, each message once. Every sink (logs, Events, the daemon's last
//! error, the command line) prints errors this way.
//!
//! Boundary: a leaf; formatting only.

/// `error` and its sources as one line, `what failed: why: root cause`, each
/// message once.
///
/// Many of the agent's errors put their source's message into their own
/// (`cannot write anchor P: <what the write said>`) and also return it from
/// `source()`; a source whose text is already in the line is skipped, so the
/// chain reads once. Logs, events and the daemon's last error use this, so
/// the operating system's own reason (`No space left on device`, `Read-only
/// file system`, `Connection refused`) always reaches the operator.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = source.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot write anchor /a: {source}")]
        Embeds { source: Middle },
        #[error("pass failed")]
        Plain {
            #[source]
            source: Middle,
        },
    }

    #[derive(Debug, thiserror::Error)]
    #[error("creating temp file /a.tmp failed")]
    struct Middle {
        #[source]
        source: std::io::Error,
    }

    fn middle() -> Middle {
        Middle {
            source: std::io::Error::from_raw_os_error(28),
        }
    }

    #[test]
    fn the_os_reason_is_appended_and_embedded_messages_are_not_repeated() {
        let e = Outer::Embeds { source: middle() };
        assert_eq!(
            error_chain(&e),
            "cannot write anchor /a: creating temp file /a.tmp failed: No space left on device (os error 28)"
        );
    }

    #[test]
    fn sources_not_in_the_message_are_joined_in_order() {
        let e = Outer::Plain { source: middle() };
        assert_eq!(
            error_chain(&e),
            "pass failed: creating temp file /a.tmp failed: No space left on device (os error 28)"
        );
    }

    #[test]
    fn an_error_without_sources_is_its_message() {
        let e = std::io::Error::from_raw_os_error(30);
        assert_eq!(error_chain(&e), "Read-only file system (os error 30)");
    }
}
