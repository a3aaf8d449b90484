//! `msitrace live --replay` in a real terminal: a private tmux server at 80x24, driven with
//! send-keys and read with capture-pane, as a user on an ssh session would drive it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_msitrace");

struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("SKIP: tmux is not installed (`cargo xtask setup` installs it)");
            return None;
        }
        let t = Tmux {
            socket: format!("msitrace-test-{}-{name}", std::process::id()),
        };
        let ok = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
            ])
            .arg(command)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux new-session failed");
        Some(t)
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let ok = Command::new("tmux")
                .args(["-L", &self.socket, "send-keys", k])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "tmux send-keys {k} failed");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// The screen with its attributes, as SGR escape sequences (`capture-pane -e`).
    fn styled_screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-e"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until the screen shows `what`; the screen on timeout.
    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The msitrace process under the pane's shell.
    fn msitrace_pid(&self) -> i32 {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "display-message", "-p", "#{pane_pid}"])
            .output()
            .expect("tmux display-message");
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let kids = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default();
        kids.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .find(|p: &i32| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "msitrace")
            })
            .expect("msitrace is not running under the pane's shell")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/traces/6.12-hibernate-buggy.msit")
        .display()
        .to_string()
}

fn command(extra: &str) -> String {
    format!(
        "{BIN} live --replay {} --silence 4 {extra}; echo EXIT=$?; sleep 60",
        fixture()
    )
}

/// The alternate screen is gone: the main screen shows only the shell's line.
fn assert_restored(screen: &str) {
    assert!(
        !screen.contains("msitrace replay") && !screen.contains('┌'),
        "the TUI is still on screen after it exited:\n{screen}"
    );
}

#[test]
fn keyboard_reaches_the_evidence_of_a_divergence_and_quits_cleanly() {
    let Some(t) = Tmux::start("keys", &command("--from-start")) else {
        return;
    };
    let first = t.wait_for("paused");
    assert!(
        !first.contains("DIVERGED"),
        "nothing has been replayed yet:\n{first}"
    );
    // d: play up to the first divergence, which is then selected: H4 as a warning while
    // the CPU is offline, an error once the restore wrote the stale mask.
    t.keys(&["d"]);
    let s = t.wait_for("WARN");
    assert!(s.contains("H4") && !s.contains("DIVERGED"), "{s}");
    t.keys(&["d", "d", "d"]);
    let s = t.wait_for("DIVERGED");
    assert!(s.contains("ERROR H4"), "{s}");
    t.keys(&["Enter"]);
    let detail = t.wait_for("evidence:");
    assert!(detail.contains("hv_irq_unmask:return"), "{detail}");
    assert!(detail.contains("Esc/q back"), "{detail}");
    t.keys(&["q"]);
    t.wait_for("d next divergence");
    t.keys(&["q"]);
    let end = t.wait_for("EXIT=0");
    assert_restored(&end);
}

#[test]
fn the_end_of_file_screen_shows_the_dead_vectors_and_sigterm_restores_the_terminal() {
    let Some(t) = Tmux::start("term", &command("")) else {
        return;
    };
    let s = t.wait_for("end of file");
    for irq in ["38", "39"] {
        assert!(
            s.lines().any(
                |l| l.contains(&format!("│ {irq} ")) && l.contains("DIVERGED")
                    || l.contains(&format!("▶{irq} ")) && l.contains("DIVERGED")
            ),
            "irq {irq} is not marked on the first screen:\n{s}"
        );
    }
    // ? then any key: help and back.
    t.keys(&["?"]);
    t.wait_for("help (any key)");
    t.keys(&["x"]);
    let pid = t.msitrace_pid();
    // SAFETY: kill(2) on a pid we just read; at worst it is gone and kill fails.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let end = t.wait_for("EXIT=0");
    assert_restored(&end);
}

/// The SGR attributes a styled capture uses: (any colour, reverse video, bold). 39 and 49 are
/// the terminal's default colours, i.e. none.
fn attributes(styled: &str) -> (bool, bool, bool) {
    let (mut colour, mut reverse, mut bold) = (false, false, false);
    for seq in styled.split('\x1b').skip(1) {
        let Some(params) = seq.strip_prefix('[').and_then(|p| p.split('m').next()) else {
            continue;
        };
        let mut it = params.split(';').map(|p| p.parse::<u32>().unwrap_or(0));
        while let Some(p) = it.next() {
            match p {
                1 => bold = true,
                7 => reverse = true,
                30..=37 | 40..=47 | 90..=97 | 100..=107 => colour = true,
                38 | 48 | 58 => {
                    colour = true;
                    // 5;n or 2;r;g;b
                    if it.next() == Some(2) {
                        it.nth(2);
                    } else {
                        it.next();
                    }
                }
                _ => {}
            }
        }
    }
    (colour, reverse, bold)
}

#[test]
fn no_color_and_color_never_keep_bold_and_the_reverse_cursor_but_no_colour() {
    for (name, env, flag, want_colour) in [
        ("colour", "unset NO_COLOR; ", "", true),
        ("nocolor", "NO_COLOR=1 ", "", false),
        ("never", "", "--color never", false),
    ] {
        let Some(t) = Tmux::start(name, &format!("{env}{}", command(flag))) else {
            return;
        };
        t.wait_for("end of file");
        let styled = t.styled_screen();
        let (colour, reverse, bold) = attributes(&styled);
        assert_eq!(colour, want_colour, "{name}:\n{styled:?}");
        assert!(
            reverse && bold,
            "{name}: the cursor or bold is gone:\n{styled:?}"
        );
        t.keys(&["q"]);
        t.wait_for("EXIT=0");
    }
}
