//! The command line around the commands, through the real binary: `msitrace completions`.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_msitrace");

fn msitrace(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("msitrace runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// The public commands, as `msitrace --help` lists them.
const COMMANDS: [&str; 10] = [
    "probes",
    "record",
    "verify",
    "daemon",
    "live",
    "check",
    "dump",
    "replay",
    "export",
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
