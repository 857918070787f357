//! Log set-up, done once at start: journald with structured fields when the
//! agent runs under systemd (or is told to), otherwise text or JSON on stdout.
//! The filter comes from `NCA_LOG` (tracing's EnvFilter syntax), default `info`.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The journal's native socket (NODE-FACTS §5), as this process sees it.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_IDENTIFIER: &str = "node-cert-agent";
const FILTER_ENV: &str = "NCA_LOG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogTarget {
    /// journald when stdout is connected to the journal (a systemd service), else stdout.
    #[default]
    Auto,
    Stdout,
    Journald,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot log to journald at {JOURNAL_SOCKET}: {source}; mount the journal socket or use --log-target stdout")]
    Journald { source: std::io::Error },
    #[error("log filter {FILTER_ENV}={value:?} is invalid: {reason}")]
    Filter { value: String, reason: String },
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
