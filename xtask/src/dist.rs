//! `cargo xtask dist`: the Debian package. A release build of msitrace, its man pages (generated
//! from its own clap definition by the hidden `msitrace assets`) and shell completions (by
//! `msitrace completions`, from the same definition), packed by cargo-deb from tracer/Cargo.toml's
//! `[package.metadata.deb]`: versioned depends from the binary's libraries, md5sums, the
//! settings as a conffile, and the hardened unit installed through deb-systemd-helper (not
//! enabled). Then the package is unpacked and checked as installed: the unit with
//! `systemd-analyze verify` (its exposure scored offline), the whole package with lintian.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{repo_root, run_output};

#[derive(clap::Args)]
pub struct DistArgs {
    /// Where the .deb goes (default target/dist).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Built {
    pub deb: PathBuf,
    /// `systemd-analyze security --offline` overall exposure, e.g. `1.5 OK`, when it ran.
    pub exposure: Option<String>,
}

pub fn run(args: DistArgs) -> Result<()> {
    let b = build(args.out)?;
    println!("dist: {}", b.deb.display());
    if let Some(e) = b.exposure {
        println!("dist: systemd-analyze security --offline: exposure {e}");
    }
    Ok(())
}

/// What this process packed into target/dist: `cargo xtask test` packs (and lints) before the
/// guests and the guests' set-up needs the package again; the tree cannot change in between,
/// and a second pack and lintian run cost 20 s of a 40-minute CI.
static PACKED: std::sync::Mutex<Option<Built>> = std::sync::Mutex::new(None);

pub fn build(out: Option<PathBuf>) -> Result<Built> {
    if out.is_none()
        && let Some(b) = PACKED
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone()
    {
        println!(
            "dist: {} (packed and checked earlier in this run)",
            b.deb.display()
        );
        return Ok(b);
    }
    let built = pack(out.clone())?;
    if out.is_none() {
        *PACKED.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(built.clone());
    }
    Ok(built)
}

fn pack(out: Option<PathBuf>) -> Result<Built> {
    let repo = repo_root();
    let cargo = crate::util::cargo();
    println!("dist: cargo build --release -p tracer");
    let ok = Command::new(&cargo)
        .args(["build", "--release", "-p", "tracer"])
        .current_dir(&repo)
        .status()
        .context("cannot run cargo")?
        .success();
    if !ok {
        bail!("`cargo build --release -p tracer` failed: see cargo's output above");
    }
    let target = repo.join("target");
    let bin = target.join("release/msitrace");
    // tracer/Cargo.toml's [package.metadata.deb] names its generated assets here.
    let assets = target.join("dist/assets");
    if assets.exists() {
        fs::remove_dir_all(&assets)?;
    }
    run_output(Command::new(&bin).arg("assets").arg("--out").arg(&assets))?;
    // What `msitrace completions SHELL` prints, byte for byte: one generator for the package
    // and for a user installing the script by hand.
    let completions = assets.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, name) in [
        ("bash", "msitrace"),
        ("zsh", "_msitrace"),
        ("fish", "msitrace.fish"),
    ] {
        let script = run_output(Command::new(&bin).args(["completions", shell]))?;
        if script.is_empty() {
            bail!("`msitrace completions {shell}` printed nothing");
        }
        fs::write(completions.join(name), script)?;
    }

    crate::setup::ensure_cargo_deb()?;
    // Only the default directory keeps the checked copy: a directory given with --out gets
    // the package alone.
    let keeps_checked = out.is_none();
    let dist = out.unwrap_or_else(|| target.join("dist"));
    fs::create_dir_all(&dist)?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = run_output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    // cargo-deb's default Debian revision, as packaging/debian/changelog gives it.
    let deb = dist.join(format!("msitrace_{version}-1_{arch}.deb"));
    println!("dist: cargo deb -p tracer --no-build --strip");
    // The release profile keeps line tables for backtraces; the package does not need them,
    // and cargo-deb would keep them because the profile asks for debug info.
    let packed = Command::new(&cargo)
        .args(["deb", "-p", "tracer", "--no-build", "--strip", "--output"])
        .arg(&deb)
        .current_dir(&repo)
        .status()
        .context("cannot run cargo deb")?
        .success();
    if !packed {
        bail!("`cargo deb -p tracer --no-build --strip` failed: see its output above");
    }

    // The same bytes as the package checked last time need no second check: unpacking,
    // systemd-analyze and lintian were 9-12 s of every vm-test's set-up. A copy of the checked
    // package is the stamp (the package is reproducible: same tree, same bytes).
    let checked = dist.join("checked");
    let checked_deb = checked.join(deb.file_name().unwrap_or_default());
    let checked_exposure = checked.join("exposure");
    if keeps_checked
        && fs::read(&deb)
            .ok()
            .is_some_and(|now| fs::read(&checked_deb).ok() == Some(now))
    {
        println!(
            "dist: the same bytes as the package checked before: unpack, systemd-analyze and lintian not run again"
        );
        let exposure = fs::read_to_string(&checked_exposure)
            .ok()
            .filter(|e| !e.is_empty());
        return Ok(Built { deb, exposure });
    }
    if keeps_checked {
        let _ = fs::remove_dir_all(&checked);
    }
    let stage = dist.join("stage");
    unpack_as_dpkg_does(&deb, &stage)?;
    let exposure = verify_unit(&stage)?;
    lintian(&deb)?;
    if keeps_checked {
        fs::create_dir_all(&checked)?;
        fs::write(&checked_exposure, exposure.as_deref().unwrap_or_default())?;
        fs::copy(&deb, &checked_deb)?;
    }
    Ok(Built { deb, exposure })
}

/// The package unpacked by dpkg itself into a private root with an empty database: what an
/// administrator's `dpkg -i` puts on disk, and what dpkg records of it. cargo-deb ships no
/// md5sums file; dpkg computes one at unpack, and `dpkg -V` (debsums too) checks against it.
fn unpack_as_dpkg_does(deb: &Path, root: &Path) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    let db = root.join("var/lib/dpkg");
    fs::create_dir_all(db.join("info"))?;
    fs::create_dir_all(db.join("updates"))?;
    fs::write(db.join("status"), "")?;
    run_output(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-not-root", "--unpack"])
            .arg(deb),
    )?;
    let sums = fs::read_to_string(db.join("info/msitrace.md5sums")).unwrap_or_default();
    if !sums.lines().any(|l| l.ends_with("  usr/bin/msitrace")) {
        bail!(
            "dpkg recorded no md5sum of usr/bin/msitrace when it unpacked {}",
            deb.display()
        );
    }
    let conffiles = fs::read_to_string(db.join("info/msitrace.conffiles")).unwrap_or_default();
    if !conffiles
        .lines()
        .any(|l| l == "/etc/msitrace/msitrace.toml")
    {
        bail!("the package does not mark /etc/msitrace/msitrace.toml as a conffile");
    }
    let verify = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--verify", "msitrace"])
        .output()
        .context("cannot run dpkg --verify")?;
    // A conffile stays msitrace.toml.dpkg-new until configure; anything else is damage.
    let damaged: Vec<String> = String::from_utf8_lossy(&verify.stdout)
        .lines()
        .filter(|l| !l.ends_with(" c /etc/msitrace/msitrace.toml"))
        .map(str::to_string)
        .collect();
    if !damaged.is_empty() {
        bail!("dpkg --verify after unpack: {}", damaged.join("; "));
    }
    println!("dist: dpkg unpacked it: md5sums recorded, conffile registered, dpkg --verify clean");
    Ok(())
}

/// Debian's own policy checker: errors fail the build; warnings are printed (the README says
/// which remain and why).
fn lintian(deb: &Path) -> Result<()> {
    if !crate::setup::on_path("lintian") {
        bail!("lintian is missing: `cargo xtask setup` installs it (apt-get install lintian)");
    }
    let out = Command::new("lintian")
        .args([
            "--allow-root",
            "--fail-on",
            "error",
            "--tag-display-limit",
            "0",
        ])
        .arg(deb)
        .output()
        .context("cannot run lintian")?;
    let said = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E: ")).collect();
    for l in said.lines().filter(|l| l.starts_with("W: ")) {
        println!("dist: lintian {l}");
    }
    if !out.status.success() || !errors.is_empty() {
        bail!(
            "lintian finds errors in {}:\n{}{}",
            deb.display(),
            errors.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("dist: lintian: no errors");
    Ok(())
}

/// The unit as installed, checked in the staged tree (its ExecStart binary included); `None`
/// with a printed reason where systemd-analyze is missing.
fn verify_unit(root: &Path) -> Result<Option<String>> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "dist: systemd-analyze is missing: the unit was not verified (apt-get install systemd)"
        );
        return Ok(None);
    }
    let unit = root.join("usr/lib/systemd/system/msitrace.service");
    if !unit.is_file() {
        bail!("the package has no {}", unit.display());
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg(&unit)
        .output()
        .context("cannot run systemd-analyze verify")?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() || !said.is_empty() {
        bail!("systemd-analyze verify rejects packaging/msitrace.service: {said}");
    }
    println!("dist: systemd-analyze verify: msitrace.service is clean");
    let sec = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .context("cannot run systemd-analyze security")?;
    let text =
        String::from_utf8_lossy(&sec.stdout).into_owned() + &String::from_utf8_lossy(&sec.stderr);
    Ok(text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for msitrace.service: "))
        .map(|(_, v)| {
            v.trim()
                .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .trim()
                .to_string()
        }))
}
