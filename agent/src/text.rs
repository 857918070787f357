//! One escaping rule for every operator-facing text sink: the text log, the
//! `status` and `check` tables, metrics label values, Node Event messages
//! and the error line of the command line.
//!
//! Certificate subjects and issuers come from whoever may edit the Secret,
//! and key names and paths from whoever writes a plain `ca-dir`: a newline
//! in them would forge a log line, a carriage return or an ANSI escape
//! would rewrite what a terminal shows, and a right-to-left mark would make
//! `crt.1ac` read as `cac.1trc`. So every control character (C0, DEL, C1),
//! every bidirectional control and every invisible format character is
//! written visibly instead: `\n`, `\r`, `\t`, `\0`, `\x1b`, `\u{202e}`.
//! Everything else, backslashes included, stays as it is, so ordinary
//! names and paths read unchanged.
//!
//! JSON output and journald fields carry the raw value: their encodings
//! keep a value in its field, and a script wants the exact bytes.
//!
//! Boundary: a leaf, pure; it imports nothing of the agent.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a line-oriented sink as is.
pub fn needs_escape(c: char) -> bool {
    matches!(c,
        // C0 controls, DEL and C1 controls.
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        // Arabic letter mark; zero-width space, joiners, LRM, RLM.
        | '\u{61c}' | '\u{200b}'..='\u{200f}'
        // Line and paragraph separators; bidi embeddings and overrides.
        | '\u{2028}'..='\u{202e}'
        // Word joiner, invisible operators; bidi isolates; other invisible
        // format controls.
        | '\u{2060}'..='\u{206f}'
        // Byte order mark / zero-width no-break space; interlinear annotations.
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// `s` with every character [`needs_escape`] names written visibly
/// (`\n`, `\r`, `\t`, `\0`, `\x1b`, `\u{202e}`). Borrowed when nothing
/// needed escaping, which is the common case.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Appends `c` to `out`, escaped if [`needs_escape`] says so.
pub fn push_escaped(out: &mut String, c: char) {
    if !needs_escape(c) {
        out.push(c);
        return;
    }
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c if u32::from(c) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// Whether a name (a Secret key, a file name) is plain printable ASCII:
/// anything else may look like another name (a Cyrillic `а` is not a Latin
/// `a`) or hide characters.
pub fn is_plain_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for s in ["CN=Example Root, O=Acme", "/etc/ssl/a b\\c.crt", "café", ""] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn controls_and_bidi_marks_are_written_visibly() {
        assert_eq!(
            escape("a\nb\rc\td\0e\x1b[31mf\x7f"),
            "a\\nb\\rc\\td\\0e\\x1b[31mf\\x7f"
        );
        assert_eq!(escape("crt.\u{202e}1ac"), "crt.\\u{202e}1ac");
        assert_eq!(
            escape("\u{85}\u{200b}\u{2066}x\u{2069}\u{feff}"),
            "\\u{85}\\u{200b}\\u{2066}x\\u{2069}\\u{feff}"
        );
        assert_eq!(escape("l\u{2028}p\u{2029}"), "l\\u{2028}p\\u{2029}");
    }

    #[test]
    fn escaped_text_has_nothing_left_to_escape() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let once = escape(&all);
        assert!(!once.chars().any(needs_escape));
        assert!(!once.contains('\n'));
    }

    #[test]
    fn plain_ascii_names() {
        assert!(is_plain_ascii("ca1.crt"));
        assert!(is_plain_ascii("my ca.crt"));
        assert!(!is_plain_ascii("c\u{430}1.crt"), "Cyrillic a");
        assert!(!is_plain_ascii("ca\u{202e}1.crt"));
        assert!(!is_plain_ascii("ca\n1.crt"));
        assert!(!is_plain_ascii("ca\x7f.crt"));
    }
}
