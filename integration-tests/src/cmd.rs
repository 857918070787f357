//! Running host commands with failures that name the command, its exit status,
//! its stderr and its stdout.

use std::process::{Command, Output};

/// Renders a command line for messages: `prog arg1 'arg with space'`.
pub(crate) fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", s.replace('\'', r"'\''"))
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion and returns its output; panics only if it cannot be
/// started at all.
pub(crate) fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run `{}`: {e}", display(cmd)),
    }
}

/// A multi-line description of a finished command, for panic messages.
pub(crate) fn describe_output(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end(),
        String::from_utf8_lossy(&out.stdout).trim_end(),
    )
}

/// Whether `prog` is an executable file in one of the directories of `$PATH`.
pub(crate) fn on_path(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(prog))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The last `n` lines of a text file, without terminal escape sequences, or
/// a note saying why it could not be read.
pub(crate) fn tail_file(path: &std::path::Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = strip_ansi(&String::from_utf8_lossy(&bytes));
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `s` without ANSI CSI escape sequences (`ESC [ ... final-byte`), such as the
/// colours systemd prints on the node's console.
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameter and intermediate bytes, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_systemd_console_colours() {
        let line =
            "[\u{1b}[0;32m  OK  \u{1b}[0m] Started \u{1b}[0;1;39mdbus.service\u{1b}[0m - D-Bus";
        assert_eq!(strip_ansi(line), "[  OK  ] Started dbus.service - D-Bus");
    }

    #[test]
    fn displays_commands_with_quoting() {
        let mut c = Command::new("echo");
        c.args(["a b", "", "it's"]);
        assert_eq!(display(&c), r"echo 'a b' '' 'it'\''s'");
    }
}
