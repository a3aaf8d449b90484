//! The terminal's state around the TUI: raw mode and the alternate screen on, and back off
//! whatever way the TUI ends — return, error (the guard's drop), panic (the hook), SIGTERM
//! (the loop breaks and the guard drops) — so a shell is never left in raw mode.

use std::io::{self, Stdout, Write, stdout};
use std::sync::Once;

use anyhow::{Context, Result};
use crossterm::{
    cursor::Show,
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend};

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// Owns the terminal while the TUI runs; restores it when dropped.
pub struct TerminalGuard {
    pub term: Term,
}

/// Every step is tried even when one fails: leaving raw mode may fail on a terminal that went
/// away, and the alternate screen must still be left on one that did not.
pub fn restore() {
    let _ = disable_raw_mode();
    let mut out = stdout();
    let _ = execute!(out, LeaveAlternateScreen, Show);
    let _ = out.flush();
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Whether stdin and stdout are a terminal with a size, checked before anything is attached,
/// created or read.
pub fn check() -> Result<()> {
    // crossterm's size() falls back to /dev/tty, `tput` or 80x24 when stdout is no terminal,
    // so it cannot tell; isatty can.
    // SAFETY: isatty only inspects the descriptor.
    let ttys =
        unsafe { libc::isatty(libc::STDIN_FILENO) == 1 && libc::isatty(libc::STDOUT_FILENO) == 1 };
    if !ttys {
        anyhow::bail!(
            "msitrace live needs a terminal on stdin and stdout (use `msitrace record` or `msitrace replay` otherwise)"
        );
    }
    let (w, h) = crossterm::terminal::size().context(
        "msitrace live needs a terminal on stdin and stdout (use `msitrace record` otherwise)",
    )?;
    if w == 0 || h == 0 {
        anyhow::bail!(
            "the terminal reports a size of {w}x{h}: set it (e.g. `stty rows 24 cols 80`) and run msitrace live again"
        );
    }
    Ok(())
}

impl TerminalGuard {
    pub fn enter() -> Result<TerminalGuard> {
        install_panic_hook();
        let setup = || -> io::Result<Term> {
            enable_raw_mode()?;
            execute!(stdout(), EnterAlternateScreen)?;
            Terminal::new(CrosstermBackend::new(stdout()))
        };
        match setup() {
            Ok(term) => {
                // A serial line or a fresh pty may report 0x0 until someone sets it.
                let size = term.size().unwrap_or_default();
                if size.width == 0 || size.height == 0 {
                    restore();
                    anyhow::bail!(
                        "the terminal reports a size of {}x{}: set it (e.g. `stty rows 24 cols 80`) and run msitrace live again",
                        size.width,
                        size.height
                    );
                }
                Ok(TerminalGuard { term })
            }
            Err(e) => {
                restore();
                Err(e).context(
                    "cannot drive this terminal (msitrace live needs a terminal on stdin and stdout; use `msitrace record` otherwise)",
                )
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
