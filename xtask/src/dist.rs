//! `cargo xtask dist`: the Debian package. A release build of msitrace, its man pages (generated
//! from its own clap definition by the hidden `msitrace assets`) and shell completions (by
//! `msitrace completions`, from the same definition), the hardened systemd unit and the
//! commented default settings, laid out as Debian installs them and packed by dpkg-deb (Debian's
//! own tool: nothing to build or download). Then the unit is checked in the staged tree with
//! `systemd-analyze verify` and its exposure scored offline.

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

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to.parent().unwrap_or(Path::new("/")))?;
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub fn build(out: Option<PathBuf>) -> Result<Built> {
    let repo = repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
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
    let dist = out.unwrap_or_else(|| target.join("dist"));
    let stage = dist.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let assets = dist.join("assets");
    if assets.exists() {
        fs::remove_dir_all(&assets)?;
    }
    run_output(Command::new(&bin).arg("assets").arg("--out").arg(&assets))?;

    let usr_bin = stage.join("usr/bin/msitrace");
    fs::create_dir_all(usr_bin.parent().unwrap_or(&stage))?;
    // The release profile keeps line tables for backtraces; the package does not need them.
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&bin)
        .arg(&usr_bin)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        copy(&bin, &usr_bin, 0o755)?;
    }
    copy(
        &repo.join("packaging/msitrace.service"),
        &stage.join("lib/systemd/system/msitrace.service"),
        0o644,
    )?;
    // Debian's systemd rebuilds the catalog database by a dpkg trigger on this directory.
    copy(
        &repo.join("packaging/msitrace.catalog"),
        &stage.join("usr/lib/systemd/catalog/msitrace.catalog"),
        0o644,
    )?;
    copy(
        &repo.join("packaging/msitrace.toml"),
        &stage.join("etc/msitrace/msitrace.toml"),
        0o644,
    )?;
    let man1 = stage.join("usr/share/man/man1");
    fs::create_dir_all(&man1)?;
    let mut pages: Vec<PathBuf> = fs::read_dir(assets.join("man"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    for page in &pages {
        let name = page
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let to = man1.join(format!("{name}.gz"));
        // -n: no name or time in the gzip header, so the package is reproducible.
        let gz = Command::new("gzip")
            .args(["-9n", "-c"])
            .arg(page)
            .output()
            .context("cannot run gzip")?;
        if !gz.status.success() {
            bail!("gzip {} failed", page.display());
        }
        fs::write(&to, gz.stdout)?;
    }
    // What `msitrace completions SHELL` prints, byte for byte: one generator for the package
    // and for a user installing the script by hand.
    for (shell, to) in [
        ("bash", "usr/share/bash-completion/completions/msitrace"),
        ("zsh", "usr/share/zsh/vendor-completions/_msitrace"),
        ("fish", "usr/share/fish/vendor_completions.d/msitrace.fish"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let script = run_output(Command::new(&bin).args(["completions", shell]))?;
        if script.is_empty() {
            bail!("`msitrace completions {shell}` printed nothing");
        }
        let to = stage.join(to);
        fs::create_dir_all(to.parent().unwrap_or(&stage))?;
        fs::write(&to, script).with_context(|| format!("cannot write {}", to.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o644))?;
    }
    let doc = stage.join("usr/share/doc/msitrace");
    fs::create_dir_all(&doc)?;
    // Alerting rules for the daemon's metrics, to copy into a Prometheus server's rule_files.
    copy(
        &repo.join("packaging/msitrace.rules.yml"),
        &doc.join("examples/msitrace.rules.yml"),
        0o644,
    )?;
    // Log shippers' sources for the daemon's journal entries (examples: the tests run none).
    for name in ["vector.toml", "fluent-bit.conf", "otelcol.yaml"] {
        copy(
            &repo.join("packaging/examples").join(name),
            &doc.join("examples").join(name),
            0o644,
        )?;
    }
    fs::write(
        doc.join("copyright"),
        "msitrace\nLicense: GPL-2.0-or-later\n On Debian systems, the full text is in /usr/share/common-licenses/GPL-2.\n",
    )?;

    let version = env!("CARGO_PKG_VERSION");
    let arch = run_output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let size_kib = du_kib(&stage)?;
    fs::write(
        debian.join("control"),
        format!(
            "Package: msitrace\nVersion: {version}\nArchitecture: {arch}\nMaintainer: msitrace developers <msitrace@example.invalid>\n\
Installed-Size: {size_kib}\nDepends: libc6, libgcc-s1\nSection: admin\nPriority: optional\n\
Homepage: https://example.invalid/msitrace\n\
Description: eBPF tracer of MSI/MSI-X vector state across suspend and resume\n \
msitrace follows every MSI/MSI-X interrupt vector of a Linux guest across suspend,\n \
hibernation and resume and says when a vector's state diverged so that its device\n \
gets no more interrupts (the Hyper-V bugs fixed by 915cff7f38c5). It runs as a TUI,\n \
as a systemd service logging to the journal, and replays its trace files.\n"
        ),
    )?;
    fs::write(debian.join("conffiles"), "/etc/msitrace/msitrace.toml\n")?;
    let postinst = debian.join("postinst");
    fs::write(
        &postinst,
        "#!/bin/sh\nset -e\n# The unit is installed, not enabled: tracing is the administrator's choice.\n\
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n",
    )?;
    let postrm = debian.join("postrm");
    fs::write(
        &postrm,
        "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n\
if [ \"$1\" = purge ]; then rm -rf /var/lib/msitrace; fi\n",
    )?;
    for f in [&postinst, &postrm] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(f, fs::Permissions::from_mode(0o755))?;
    }
    let deb = dist.join(format!("msitrace_{version}_{arch}.deb"));
    run_output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;

    let exposure = verify_unit(&stage)?;
    Ok(Built { deb, exposure })
}

fn du_kib(dir: &Path) -> Result<u64> {
    let out = run_output(Command::new("du").args(["-sk"]).arg(dir))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("cannot read du's output")
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
    let unit = root.join("lib/systemd/system/msitrace.service");
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
