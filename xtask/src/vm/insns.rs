//! The stream step's instruction counts: tests/guest-insns, a QEMU plugin that counts the
//! guest instructions of each eBPF program on the vCPU that runs it. The kernel's bpf_stats,
//! under `-icount`, also count the other vCPU's work whenever the vCPUs switch inside a
//! program; these counts do not.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::util::run_status;

/// Build the plugin; its path.
pub fn build(repo: &Path) -> Result<PathBuf> {
    println!("vm: building the instruction-counting plugin (cargo build --release -p guest-insns)");
    let ok = run_status(
        Command::new(crate::util::cargo())
            .args(["build", "--release", "-p", "guest-insns"])
            .current_dir(repo),
    )?;
    if !ok {
        bail!("`cargo build --release -p guest-insns` failed: see cargo's output above");
    }
    let lib = crate::util::target_dir(repo)?.join("release/libguest_insns.so");
    if !lib.exists() {
        bail!("cargo built guest-insns but {} is not there", lib.display());
    }
    Ok(lib)
}
