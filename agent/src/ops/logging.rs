//! Log set-up, done once at start: journald with structured fields when the
//! agent runs under systemd (or is told to), otherwise text or JSON on stdout.
//! The filter comes from `NCA_LOG` (tracing's EnvFilter syntax), default `info`.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogTarget};

/// The journal's native socket (NODE-FACTS §5), as this process sees it.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_IDENTIFIER: &str = "node-cert-agent";
const FILTER_ENV: &str = "NCA_LOG";

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot log to journald at {JOURNAL_SOCKET}: {source}; mount the journal socket or use --log-target stdout")]
    Journald { source: std::io::Error },
    #[error("log filter {FILTER_ENV}={value:?} is invalid: {reason}")]
    Filter { value: String, reason: String },
}

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

pub fn init(format: LogFormat, target: LogTarget) -> Result<(), LoggingError> {
    let filter = match std::env::var(FILTER_ENV) {
        Ok(value) => EnvFilter::try_new(&value).map_err(|e| LoggingError::Filter {
            value,
            reason: e.to_string(),
        })?,
        Err(_) => EnvFilter::new("info"),
    };
    let journald = match target {
        LogTarget::Journald => true,
        LogTarget::Stdout => false,
        LogTarget::Auto => {
            std::env::var_os("JOURNAL_STREAM").is_some()
                && std::path::Path::new(JOURNAL_SOCKET).exists()
        }
    };
    let registry = tracing_subscriber::registry().with(filter);
    if journald {
        let layer = tracing_journald::layer()
            .map_err(|source| LoggingError::Journald { source })?
            .with_syslog_identifier(SYSLOG_IDENTIFIER.to_string())
            .with_field_prefix(None);
        registry.with(layer).init();
    } else if format == LogFormat::Json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stdout),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .init();
    }
    Ok(())
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
