//! The crate's layout, checked on its source by the rules every crate of
//! the workspace keeps (`agent/tests/support/layout_rules.rs`, where they
//! are described): no import cycle between modules, and no source file
//! (test-only files aside) over [`MAX_LINES`] lines.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../../agent/tests/support/layout_rules.rs"]
mod layout_rules;

/// The most lines a source file may have.
const MAX_LINES: usize = 900;
