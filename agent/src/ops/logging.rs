//! Log set-up, done once at start: journald with structured fields when the
//! agent runs under systemd (or is told to), otherwise text or JSON on stdout.
//! The filter comes from `NCA_LOG` (tracing's EnvFilter syntax), default
//! [`DEFAULT_FILTER`].
//! Text on stdout is coloured only for a terminal, and never when
//! `NO_COLOR` is set to anything (<https://no-color.org>): `kubectl logs`
//! and log shippers get plain text. The text log writes its message and
//! every field through the one escaping rule ([`crate::text`]), so a subject
//! or key name can never start a line of its own or move a terminal's
//! cursor; JSON and journald carry the raw values.
//!
//! Boundary: set-up and the one-line error chain; no module logs through
//! anything but `tracing`.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogTarget};
use crate::text;

/// The journal's native socket, as this process sees it.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_IDENTIFIER: &str = "node-cert-agent";
const FILTER_ENV: &str = "NCA_LOG";
/// `info`, without kube-client's own "failed with error ..." line per failed
/// request: it names no API object, and the agent logs every failure itself
/// with the object, the server and the fix.
pub const DEFAULT_FILTER: &str = "info,kube_client::client::builder=off";
/// Set to anything but the empty string, it turns colours off.
const NO_COLOR_ENV: &str = "NO_COLOR";

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot log to journald at {JOURNAL_SOCKET}: {source}; mount the journal socket or use --log-target stdout")]
    Journald { source: std::io::Error },
    #[error("log filter {FILTER_ENV}={value:?} is invalid: {reason}")]
    Filter { value: String, reason: String },
}

/// Whether text logs carry ANSI colour codes: only on a terminal, and not
/// when `NO_COLOR` is set to a non-empty value.
pub fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The text layer on `writer`, coloured or not.
fn text_layer<S, W>(writer: W, ansi: bool) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(EscapedFields)
        .with_writer(writer)
        .with_ansi(ansi)
}

/// The text log's field formatter: `message`, then ` name=value` per
/// field, as tracing's default one writes them (string values quoted), but
/// with every value escaped by [`crate::text`].
struct EscapedFields;

impl<'w> MakeVisitor<Writer<'w>> for EscapedFields {
    type Visitor = EscapedVisitor<'w>;

    fn make_visitor(&self, writer: Writer<'w>) -> Self::Visitor {
        EscapedVisitor {
            writer,
            empty: true,
            result: Ok(()),
        }
    }
}

struct EscapedVisitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl EscapedVisitor<'_> {
    /// Writes one field: the message bare, anything else as `name=value`.
    fn field(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let mut out = String::with_capacity(value.len() + 16);
        if !self.empty {
            out.push(' ');
        }
        self.empty = false;
        if field.name() != "message" {
            out.push_str(field.name().trim_start_matches("r#"));
            out.push('=');
        }
        for c in value.chars() {
            text::push_escaped(&mut out, c);
        }
        self.result = self.writer.write_str(&out);
    }
}

impl Visit for EscapedVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, value);
            return;
        }
        // Quoted, with the quote and backslash escaped, as tracing's own
        // formatter (Rust's `{:?}` of a string) writes them.
        let mut quoted = String::with_capacity(value.len() + 2);
        quoted.push('"');
        for c in value.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        self.field(field, &quoted);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%` values and the message arrive here; their Debug is their
        // Display, raw, which is exactly what must be escaped.
        let mut s = String::new();
        if write!(s, "{value:?}").is_err() {
            self.result = Err(fmt::Error);
            return;
        }
        self.field(field, &s);
    }
}

impl VisitOutput<fmt::Result> for EscapedVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for EscapedVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

pub fn init(format: LogFormat, target: LogTarget) -> Result<(), LoggingError> {
    let filter = match std::env::var(FILTER_ENV) {
        Ok(value) => EnvFilter::try_new(&value).map_err(|e| LoggingError::Filter {
            value,
            reason: e.to_string(),
        })?,
        Err(_) => EnvFilter::new(DEFAULT_FILTER),
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
        let ansi = use_colour(
            std::io::stdout().is_terminal(),
            std::env::var_os(NO_COLOR_ENV).as_deref(),
        );
        registry.with(text_layer(std::io::stdout, ansi)).init();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }

    /// What the text layer writes for `emit`'s events, coloured or not.
    fn logged_with(ansi: bool, emit: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber =
            tracing_subscriber::registry().with(text_layer(move || sink.clone(), ansi));
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// What the text layer writes for one event, coloured or not.
    fn logged(ansi: bool) -> String {
        logged_with(ansi, || {
            tracing::warn!(unit = "containerd.service", "restart failed");
        })
    }

    #[test]
    fn a_forged_subject_or_key_stays_on_its_own_line_and_moves_no_cursor() {
        let subject = "CN=x\n2026-11-22T04:45:18.000000Z  INFO forged by subject\r\x1b[2K\u{202e}";
        let key = "ca\n1.crt";
        for ansi in [false, true] {
            let out = logged_with(ansi, || {
                tracing::info!(ca_key = %key, ca_subject = %subject, path = "a\"b\\c\nd", "installed CA from key \"{key}\": Subject: \"{subject}\"");
            });
            assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
            assert!(out.ends_with('\n'));
            assert!(!out.contains('\r') && !out.contains('\u{202e}'), "{out:?}");
            if !ansi {
                assert!(!out.contains('\x1b'), "{out:?}");
            }
            assert!(out.contains("ca_key=ca\\n1.crt"), "{out:?}");
            assert!(
                out.contains(
                    "x\\n2026-11-22T04:45:18.000000Z  INFO forged by subject\\r\\x1b[2K\\u{202e}"
                ),
                "{out:?}"
            );
            assert!(out.contains(r#"path="a\"b\\c\nd""#), "{out:?}");
        }
    }

    #[test]
    fn plain_text_logs_have_no_escape_codes() {
        let plain = logged(false);
        assert!(plain.contains("restart failed"), "{plain:?}");
        assert!(plain.contains("unit=\"containerd.service\""), "{plain:?}");
        assert!(!plain.contains('\x1b'), "{plain:?}");
        // The same event coloured does have them: the check above means something.
        assert!(logged(true).contains('\x1b'));
    }
}
