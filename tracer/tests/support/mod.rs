//! Root-only tests carry `#[ignore = "root-only: …"]`, so that a run without root lists them
//! as ignored instead of passing them silently; `cargo xtask test` runs them with `--ignored`
//! when it is root (CI is), and there a requirement that is missing fails the test instead
//! of skipping it: a skip is never a pass.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_msitrace");

/// The real binary with `args`, its output collected (stdin closed).
pub fn msitrace(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("msitrace runs")
}

/// A recorded trace under tests/fixtures/traces/.
pub fn trace_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/traces")
        .join(name)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fail, saying what is missing, when an ignored test was asked to run where it cannot.
pub fn require(missing: Option<String>) {
    if let Some(why) = missing {
        panic!("this root-only test was asked to run but cannot: {why}");
    }
}

pub fn require_root() {
    require((!is_root()).then(|| "not root".to_string()));
}
