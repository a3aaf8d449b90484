//! Every xtask command that builds msitrace starts with the setup: read from the plan the real
//! binary prints with `--dry-run`, which is the list `main` executes.

use std::process::Command;

fn plan(args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .arg("--dry-run")
        .output()
        .expect("xtask runs");
    assert!(
        out.status.success(),
        "xtask {args:?} --dry-run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_building_command_starts_with_setup() {
    for cmd in ["demo", "vm-test", "bench", "dist", "fuzz", "test"] {
        let steps = plan(&[cmd]);
        assert!(
            steps
                .first()
                .is_some_and(|s| s.starts_with("step 1: setup:")),
            "`xtask {cmd}` does not start with setup: {steps:?}"
        );
        assert!(
            steps
                .last()
                .is_some_and(|s| s.starts_with(&format!("step 2: {cmd}:"))),
            "`xtask {cmd}` has no own step after setup: {steps:?}"
        );
        assert_eq!(steps.len(), 2, "`xtask {cmd}`: {steps:?}");
    }
}

#[test]
fn setup_runs_once_whatever_the_flags() {
    assert_eq!(plan(&["test", "--no-vm"]).len(), 2);
    assert_eq!(plan(&["vm-test", "--kernel", "6.12"]).len(), 2);
    let steps = plan(&["setup"]);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(steps[0].starts_with("step 1: setup:"), "{steps:?}");
}
