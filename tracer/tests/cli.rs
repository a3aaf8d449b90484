//! The command line around the commands, through the real binary: `msitrace completions`, and
//! `--color`/NO_COLOR, which only the TUI and `--help` have anything to act on (the text reports
//! print no colour).

mod support;

use support::{BIN, msitrace};

use std::process::{Command, Output};

fn has_escape(bytes: &[u8]) -> bool {
    bytes.contains(&0x1b)
}

fn fixture() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/traces/6.12-hibernate-buggy.msit")
        .display()
        .to_string()
}

/// `args` with stdout on a pseudo-terminal, as a person runs msitrace, in an environment of
/// `env` only (plus PATH): what it wrote there.
fn on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors we then own; the name, termios and size are
    // optional.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both are open and ours alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let status = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(slave)
        .status()
        .expect("msitrace runs");
    assert!(status.success(), "{args:?}: {status}");
    // The child has exited and our copy of the slave is gone with the Command: reading the
    // master gives what was written, then EIO.
    let mut out = Vec::new();
    let mut file = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    loop {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// The public commands, as `msitrace --help` lists them.
const COMMANDS: [&str; 11] = [
    "probes",
    "record",
    "verify",
    "daemon",
    "live",
    "check",
    "dump",
    "replay",
    "export",
    "fleet",
    "completions",
];

#[test]
fn completions_name_every_command_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = msitrace(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        assert!(script.contains("msitrace"), "{shell}:\n{script}");
        for cmd in COMMANDS {
            assert!(script.contains(cmd), "{shell} lacks {cmd}:\n{script}");
        }
    }
    // The shells' own syntax: bash registers a function, fish calls `complete`.
    let bash = stdout(&msitrace(&["completions", "bash"]));
    assert!(bash.contains("complete -F _msitrace"), "{bash}");
    let fish = stdout(&msitrace(&["completions", "fish"]));
    assert!(
        fish.lines()
            .any(|l| l.starts_with("complete -c msitrace") && l.contains("replay")),
        "{fish}"
    );
    // And the flags of a command: fish completes `replay --fail-on`.
    assert!(
        fish.lines()
            .any(|l| l.contains("__fish_msitrace_using_subcommand replay") && l.contains("fail-on")),
        "{fish}"
    );
}

#[test]
fn a_shell_clap_does_not_know_is_one_usage_line() {
    let o = msitrace(&["completions", "tcsh"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.lines().count(), 1, "one line, not: {e}");
    assert!(e.starts_with("msitrace: invalid value 'tcsh'"), "{e}");
    assert!(e.contains("bash, elvish, fish, powershell, zsh"), "{e}");
    assert!(stdout(&o).is_empty());
    let o = msitrace(&["completions"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("<SHELL>"), "{}", stderr(&o));
}

#[test]
fn completions_to_a_closed_pipe_end_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("msitrace runs");
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn every_command_takes_color_before_or_after_its_name() {
    for cmd in COMMANDS {
        for args in [
            vec!["--color", "never", cmd, "--help"],
            vec![cmd, "--color=always", "--help"],
        ] {
            let o = msitrace(&args);
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
            assert!(stdout(&o).contains("--color"), "{args:?}");
        }
    }
    let o = msitrace(&["--color", "sometimes", "replay", "x.msit"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.lines().count(), 1, "one line, not: {e}");
    assert!(
        e.contains("invalid value 'sometimes' for '--color <WHEN>'"),
        "{e}"
    );
}

#[test]
fn help_is_styled_only_when_colour_is_wanted() {
    let o = msitrace(&["--color", "never", "--help"]);
    assert!(!has_escape(&o.stdout), "{}", stdout(&o));
    let o = msitrace(&["--color", "always", "--help"]);
    assert!(has_escape(&o.stdout), "{}", stdout(&o));
    let o = msitrace(&["replay", "--help", "--color", "always"]);
    assert!(has_escape(&o.stdout), "{}", stdout(&o));
    // auto: a pipe gets plain text.
    let o = msitrace(&["--help"]);
    assert!(!has_escape(&o.stdout), "{}", stdout(&o));

    // auto on a terminal: styled, unless NO_COLOR is set to anything (but empty) or TERM is
    // dumb; an explicit --color wins over the environment.
    let xterm = ("TERM", "xterm-256color");
    assert!(has_escape(&on_a_terminal(&["--help"], &[xterm])));
    assert!(has_escape(&on_a_terminal(
        &["--help"],
        &[xterm, ("NO_COLOR", "")]
    )));
    for no_color in ["1", "0", "false"] {
        let out = on_a_terminal(&["--help"], &[xterm, ("NO_COLOR", no_color)]);
        assert!(!has_escape(&out), "NO_COLOR={no_color}: {out:?}");
    }
    assert!(!has_escape(&on_a_terminal(
        &["--help"],
        &[("TERM", "dumb")]
    )));
    assert!(!has_escape(&on_a_terminal(
        &["--color=never", "--help"],
        &[xterm]
    )));
    assert!(has_escape(&on_a_terminal(
        &["--color=always", "--help"],
        &[xterm, ("NO_COLOR", "1")]
    )));
}

#[test]
fn the_text_reports_have_no_escape_whatever_the_choice() {
    for color in ["always", "never", "auto"] {
        for cmd in ["replay", "dump"] {
            let o = msitrace(&["--color", color, cmd, &fixture()]);
            assert!(!o.stdout.is_empty(), "{cmd}: {}", stderr(&o));
            assert!(!has_escape(&o.stdout), "{cmd} --color {color}");
            assert!(!has_escape(&o.stderr), "{cmd} --color {color}");
        }
    }
}
