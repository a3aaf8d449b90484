//! `cargo xtask test`: every test, as CI runs it on a fresh clone — setup, format and lint
//! checks, the workspace's tests (root-only ones run when root and show as ignored otherwise),
//! the Debian package with its unit verified, then the QEMU guests where the kprobes really fire.

use std::process::Command;

use anyhow::{Result, bail};
use clap::{Args, FromArgMatches};

use crate::{dist, vm};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the QEMU guests (they take several minutes).
    #[arg(long)]
    pub no_vm: bool,
}

fn cargo(args: &[&str]) -> Result<()> {
    println!("xtask: cargo {}", args.join(" "));
    let status = Command::new(crate::util::cargo()).args(args).status()?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

/// After the setup, which main runs first for every command that builds.
pub fn run(args: TestArgs) -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    cargo(&["test"])?;
    // Root-only tests are ignored in a plain `cargo test`, so that without root they show as
    // ignored rather than passed; as root (CI) they run here, and fail if they cannot.
    if crate::util::is_root() {
        cargo(&["test", "--", "--ignored"])?;
    } else {
        println!(
            "xtask: root-only tests SKIPPED (not root): listed as ignored above; CI runs them as root"
        );
    }
    // The release build the guests need anyway, packed and its unit verified.
    dist::build(None)?;
    if args.no_vm {
        println!("xtask: QEMU guests skipped (--no-vm)");
        return Ok(());
    }
    // vm-test with its own defaults, as if typed without flags.
    let matches = vm::VmTestArgs::augment_args(clap::Command::new("vm-test"))
        .try_get_matches_from(["vm-test"])?;
    vm::vm_test(vm::VmTestArgs::from_arg_matches(&matches)?)
}
