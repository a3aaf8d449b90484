//! Whether msitrace colours what it shows: the global `--color auto|always|never` and
//! `NO_COLOR` (<https://no-color.org>). The text reports (`replay`, `verify`, `check`, `dump`,
//! `probes`) print no colour at all — they are read in logs, pipes and CI — so what this
//! governs is the TUI's colours and the styling of clap's `--help`.

use std::ffi::{OsStr, OsString};

/// `--color`: `auto` colours only a terminal, and only when `NO_COLOR` is unset (or empty) and
/// `TERM` is not `dumb`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// The decision, from the environment: `no_color` and `term` are the values of `NO_COLOR`
    /// and `TERM`, `tty` whether the output is a terminal. `always` and `never` win over the
    /// environment, as the flag is the more specific request.
    pub fn resolve(self, no_color: Option<&OsStr>, term: Option<&OsStr>, tty: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                // no-color.org: set and not empty, whatever its value.
                let no_color = no_color.is_some_and(|v| !v.is_empty());
                tty && !no_color && term != Some(OsStr::new("dumb"))
            }
        }
    }

    /// The decision for standard output in this process's environment.
    pub fn for_stdout(self) -> bool {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(libc::STDOUT_FILENO) == 1 };
        self.resolve(
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
            tty,
        )
    }

    /// `--color` as the command line gives it (`--color WHEN` or `--color=WHEN`, the last one
    /// winning, nothing after `--`), read before clap parses: clap prints `--help` while it
    /// parses and must know by then. Not given, or not a valid value (clap then says so): `None`.
    pub fn from_args(args: &[OsString]) -> Option<ColorChoice> {
        use clap::ValueEnum;
        let mut found = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(a) = a.to_str() else { continue };
            let value = match a {
                "--" => break,
                "--color" => it.next().and_then(|v| v.to_str()),
                _ => a.strip_prefix("--color="),
            };
            if let Some(v) = value {
                found = ColorChoice::from_str(v, false).ok();
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn auto_colours_a_terminal_unless_no_color_or_a_dumb_terminal_says_not() {
        let auto = ColorChoice::Auto;
        assert!(auto.resolve(None, os("xterm-256color"), true));
        assert!(!auto.resolve(None, os("xterm-256color"), false), "a pipe");
        assert!(!auto.resolve(os("1"), os("xterm"), true));
        // Any value disables colour, even one that reads as "no".
        assert!(!auto.resolve(os("0"), os("xterm"), true));
        assert!(!auto.resolve(os("false"), os("xterm"), true));
        // Set but empty is unset (no-color.org).
        assert!(auto.resolve(os(""), os("xterm"), true));
        assert!(!auto.resolve(None, os("dumb"), true));
        // No TERM at all (a serial console in a guest): only `dumb` turns colour off.
        assert!(auto.resolve(None, None, true));
    }

    #[test]
    fn always_and_never_override_the_environment() {
        for tty in [false, true] {
            for no_color in [None, os("1")] {
                for term in [None, os("dumb"), os("xterm")] {
                    assert!(ColorChoice::Always.resolve(no_color, term, tty));
                    assert!(!ColorChoice::Never.resolve(no_color, term, tty));
                }
            }
        }
    }

    #[test]
    fn the_flag_is_found_before_clap_parses_and_not_after_a_double_dash() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let f = |a: &[&str]| ColorChoice::from_args(&args(a));
        assert_eq!(f(&["replay", "x.msit"]), None);
        assert_eq!(f(&["--color", "never", "--help"]), Some(ColorChoice::Never));
        assert_eq!(f(&["live", "--color=always"]), Some(ColorChoice::Always));
        assert_eq!(
            f(&["--color=never", "dump", "--color", "always"]),
            Some(ColorChoice::Always),
            "the last one wins, as in clap"
        );
        assert_eq!(f(&["--color", "sometimes"]), None);
        assert_eq!(f(&["--color"]), None);
        assert_eq!(
            f(&["verify", "--", "ls", "--color=always"]),
            None,
            "CMD's own flags are CMD's"
        );
    }
}
