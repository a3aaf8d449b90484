//! What msitrace prints for a person or a pipe: standard output that a reader going away ends
//! quietly, stderr lines that cannot crash the run, and text from a trace file or the kernel
//! made harmless for a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use anyhow::Context;

/// Whether a character would act on a terminal instead of showing: C0 and C1 controls and
/// DEL (escape sequences, cursor movement, title setting), and the bidirectional overrides
/// that make text display in another order than it reads.
pub fn acts_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character that would act on a terminal written as an escape (`\x1b`,
/// `\u{202e}`); line breaks and tabs stay, so a whole report can go through it. A trace file
/// may come from anywhere and kernel strings (device and action names) are not ours either:
/// everything printed for a person from them passes here.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !acts_on_terminal(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// A write to standard output as the command's result: a reader that went away (`| head`, a
/// closed pipe) is success, since it has what it asked for; anything else (a full disk,
/// /dev/full) is one line that names standard output.
pub fn stdout_result(r: io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to standard output (check where it is redirected)"),
    }
}

/// Print `text` to standard output and flush it, with [`stdout_result`]'s verdict.
/// `print!` would panic on a closed pipe or a full disk instead.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    stdout_result(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// One `msitrace: …` line on stderr. A stderr that is closed or full loses the line instead of
/// turning it into a panic (which `eprintln!` does).
pub fn note(line: &str) {
    let _ = writeln!(io::stderr().lock(), "msitrace: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_would_act_on_a_terminal_and_keeps_the_rest() {
        assert!(matches!(terminal_safe("6.12.1 é\tx\n"), Cow::Borrowed(_)));
        assert_eq!(terminal_safe("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(terminal_safe("\u{9b}31m\x7f\r"), "\\x9b31m\\x7f\\x0d");
        assert_eq!(terminal_safe("abc\u{202e}fed"), "abc\\u{202e}fed");
    }
}
