//! Builds tests/guest-module (hv_stub.ko) against a guest kernel's unpacked headers, with the
//! compiler that kernel was built with.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::kernel::Kernel;

const SOURCES: &[&str] = &["hv_stub.c", "Kbuild", "Makefile"];

/// Build hv_stub.ko for `kernel` in `build_dir` (a fresh copy of the sources each time: the
/// build takes seconds, and a stale object must never reach a guest).
pub fn build(repo: &Path, kernel: &Kernel, build_dir: &Path) -> Result<PathBuf> {
    let src = repo.join("tests/guest-module");
    if build_dir.exists() {
        fs::remove_dir_all(build_dir)?;
    }
    fs::create_dir_all(build_dir)?;
    for f in SOURCES {
        fs::copy(src.join(f), build_dir.join(f))
            .with_context(|| format!("cannot copy {}", src.join(f).display()))?;
    }
    let cc = kernel_compiler(kernel)?;
    let out = Command::new("make")
        .arg("-C")
        .arg(&kernel.headers)
        .arg(format!("M={}", build_dir.display()))
        .arg(format!("CC={cc}"))
        .arg("modules")
        .output()
        .context("cannot run make")?;
    let ko = build_dir.join("hv_stub.ko");
    if !out.status.success() || !ko.exists() {
        bail!(
            "building hv_stub.ko for {} failed:\n{}{}",
            kernel.abi,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The kernel's build prints only "Skipping BTF generation" here (no vmlinux in the headers);
    // anything that looks like a compiler diagnostic is a bug in the module.
    let diag = String::from_utf8_lossy(&out.stderr);
    if let Some(l) = diag
        .lines()
        .find(|l| l.contains("warning:") || l.contains("error:"))
    {
        bail!("hv_stub.c does not build cleanly for {}: {l}", kernel.abi);
    }
    Ok(ko)
}

/// The compiler named by the kernel's CONFIG_CC_VERSION_TEXT (`gcc-12 (Debian 12.2.0-14) …`).
fn kernel_compiler(kernel: &Kernel) -> Result<String> {
    let config = fs::read_to_string(kernel.headers.join(".config"))
        .with_context(|| format!("no .config in {}", kernel.headers.display()))?;
    let text = config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_CC_VERSION_TEXT=\""))
        .context("the kernel's .config has no CONFIG_CC_VERSION_TEXT")?;
    let cc = text
        .split_whitespace()
        .next()
        .context("empty CONFIG_CC_VERSION_TEXT")?
        .to_string();
    if which(&cc).is_none() {
        bail!(
            "{} was built with {cc}, which is not installed: install it (vm-test installs gcc-12 itself)",
            kernel.abi
        );
    }
    Ok(cc)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
