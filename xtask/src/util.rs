//! What several xtask commands need: running a command and judging its exit, the repository
//! root, the cargo that runs xtask, and whether we are root.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Run and return stdout; an error with stderr when it exits non-zero.
pub fn run_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run with the terminal attached; false when it exits non-zero.
pub fn run_status(cmd: &mut Command) -> Result<bool> {
    Ok(cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?
        .success())
}

/// Run and discard stdout; an error with stderr when it exits non-zero.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    run_output(cmd).map(drop)
}

/// The workspace root (xtask's parent).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo that runs xtask (`$CARGO`), else the one on PATH.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Cargo's target directory for the workspace at `repo` (`CARGO_TARGET_DIR` or config may move
/// it), from `cargo metadata`.
pub fn target_dir(repo: &Path) -> Result<PathBuf> {
    let meta = run_output(
        Command::new(cargo())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(repo),
    )?;
    let meta: serde_json::Value =
        serde_json::from_str(&meta).context("cargo metadata printed no JSON")?;
    meta.get("target_directory")
        .and_then(serde_json::Value::as_str)
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// `cargo build --release -p PACKAGE` in the workspace; the path of its `artifact` (relative
/// to the release directory).
pub fn build_release(repo: &Path, package: &str, artifact: &str) -> Result<PathBuf> {
    let ok = run_status(
        Command::new(cargo())
            .args(["build", "--release", "-p", package])
            .current_dir(repo),
    )?;
    if !ok {
        bail!("`cargo build --release -p {package}` failed: see cargo's output above");
    }
    let out = target_dir(repo)?.join("release").join(artifact);
    if !out.exists() {
        bail!("cargo built {package} but {} is not there", out.display());
    }
    Ok(out)
}

/// Effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
