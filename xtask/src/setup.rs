//! Installs what building msitrace needs and is missing: rust-src for the nightly toolchain
//! (the eBPF crate builds `core` itself) and bpf-linker 0.13.0 linked against that nightly's
//! own libLLVM, and the Debian tools the tests drive (tmux for the TUI's end-to-end test,
//! systemd for the journald test and the unit check, node_exporter and promtool for the
//! metrics test, systemd-journal-remote for the fleet test, lintian for the package;
//! cargo-deb when the package is first packed).
//! Idempotent, and it upgrades nothing: what is already there is left alone.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

pub const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The .deb is packed by cargo-deb; pinned so that a fresh machine packs what CI packed.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// What [`run`] does, as `--dry-run` prints it.
pub const SUMMARY: &str = "setup: install what is missing (rust-src for nightly, bpf-linker \
                           0.13.0, tmux, systemd, prometheus-node-exporter, prometheus, \
                           systemd-journal-remote, lintian; cargo-deb 3.8.0 when a command \
                           packs the .deb), leave what is there";

pub fn run() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    put_cargo_bin_on_path();
    ensure_rust_src()?;
    ensure_bpf_linker(&sysroot)?;
    ensure_tools()?;
    Ok(())
}

/// `cargo install` puts bpf-linker in `$CARGO_HOME/bin`, which need not be on PATH (a
/// CARGO_HOME chosen for one shell, or a fresh one): the nested eBPF build and tracer's
/// build script look bpf-linker up on PATH, and they inherit this process's environment.
fn put_cargo_bin_on_path() {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(bin) = home.map(|h| h.join("bin")) else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: xtask runs setup before it starts any thread.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

/// Programs the tests run, by the Debian package that provides each: a name looked up on
/// PATH, or an absolute path for the daemons Debian keeps out of PATH (/lib/systemd).
const TOOLS: &[(&str, &str)] = &[
    ("tmux", "tmux"),
    // The daemon's tests start a real journald and read it back; dist verifies the unit.
    ("journalctl", "systemd"),
    ("systemd-analyze", "systemd"),
    // The metrics test serves the daemon's textfile through a real node_exporter and checks
    // the alerting rules with promtool.
    ("prometheus-node-exporter", "prometheus-node-exporter"),
    ("promtool", "prometheus"),
    // The .deb must pass lintian without errors.
    ("lintian", "lintian"),
    // The fleet test ships three guests' journals to a journal-remote and reads them back.
    (
        "/lib/systemd/systemd-journal-remote",
        "systemd-journal-remote",
    ),
    (
        "/lib/systemd/systemd-journal-upload",
        "systemd-journal-remote",
    ),
];

fn present(program: &str) -> bool {
    if Path::new(program).is_absolute() {
        return Path::new(program).is_file();
    }
    on_path(program)
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

fn ensure_tools() -> Result<()> {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(bin, _)| !present(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        println!(
            "setup: {}: present",
            TOOLS.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "{} missing and only root can install them: run `sudo apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    println!("setup: installing {} (apt-get)", missing.join(" "));
    let apt = |args: &[&str]| -> Result<bool> {
        Ok(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?
            .success())
    };
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(missing.iter());
    // A fresh machine may have no package lists yet: update once, then retry.
    let installed = apt(&install)? || (apt(&["update", "-qq"])? && apt(&install)?);
    if !installed {
        bail!(
            "could not install {}: see apt-get's output above",
            missing.join(" ")
        );
    }
    stop_services(&missing);
    Ok(())
}

/// Services that Debian's packages start and enable on a machine running systemd, which the
/// tests only need as programs: a Prometheus server and a node_exporter left running on
/// their public ports would serve this machine to its network. Stopped and disabled only
/// when this run installed them; a machine without systemd (a container) never started them.
const PACKAGE_SERVICES: &[(&str, &str)] = &[
    (
        "prometheus-node-exporter",
        "prometheus-node-exporter.service",
    ),
    ("prometheus", "prometheus.service"),
    // journal-remote's socket would accept any host's journal on port 19532.
    ("systemd-journal-remote", "systemd-journal-remote.socket"),
    ("systemd-journal-remote", "systemd-journal-remote.service"),
    ("systemd-journal-remote", "systemd-journal-upload.service"),
];

fn stop_services(installed: &[&str]) {
    if !Path::new("/run/systemd/system").is_dir() {
        return;
    }
    for (pkg, unit) in PACKAGE_SERVICES {
        if installed.contains(pkg) {
            println!("setup: {unit} is only a test tool here: stopping and disabling it");
            let _ = Command::new("systemctl")
                .args(["disable", "--now", "--quiet", unit])
                .status();
        }
    }
}

fn nightly_sysroot() -> Result<PathBuf> {
    // A toolchain cannot be fetched on these machines, so a missing nightly is a hard stop
    // with the one command that fixes it where the network allows.
    let out = crate::util::run_output(Command::new("rustc").args([
        &format!("+{NIGHTLY}"),
        "--print",
        "sysroot",
    ]))
    .context(
        "the nightly Rust toolchain is missing: the eBPF programs need it \
             (install it with `rustup toolchain install nightly`)",
    )?;
    Ok(PathBuf::from(out.trim()))
}

fn ensure_rust_src() -> Result<()> {
    let installed = crate::util::run_output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: rust-src for {NIGHTLY}: present");
        return Ok(());
    }
    println!("setup: installing rust-src for {NIGHTLY}");
    let status = Command::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", NIGHTLY])
        .status()?;
    if !status.success() {
        bail!(
            "could not install rust-src for {NIGHTLY}: run `rustup component add rust-src --toolchain {NIGHTLY}` by hand"
        );
    }
    Ok(())
}

/// cargo-deb, for `cargo xtask dist` only (and the tests that pack the .deb): installed when
/// first needed, so that a command that never packs does not pay for its build.
pub fn ensure_cargo_deb() -> Result<()> {
    put_cargo_bin_on_path();
    if let Ok(v) = crate::util::run_output(Command::new("cargo-deb").arg("--version")) {
        let v = v.trim();
        if !v.contains(CARGO_DEB_VERSION) {
            println!(
                "setup: cargo-deb present ({v}); msitrace is packed with {CARGO_DEB_VERSION}, leaving it as is"
            );
        }
        return Ok(());
    }
    println!("setup: building cargo-deb {CARGO_DEB_VERSION} (about 2 minutes)");
    let status = Command::new(crate::util::cargo())
        .args([
            "install",
            "--locked",
            "--version",
            CARGO_DEB_VERSION,
            "cargo-deb",
        ])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!(
            "could not build cargo-deb: see cargo's output above (by hand: `cargo install --locked --version {CARGO_DEB_VERSION} cargo-deb`)"
        );
    }
    Ok(())
}

fn ensure_bpf_linker(sysroot: &Path) -> Result<()> {
    if let Ok(v) = crate::util::run_output(Command::new("bpf-linker").arg("--version")) {
        let v = v.trim();
        if !v.contains(BPF_LINKER_VERSION) {
            // Never replace a linker the user chose; say what we expected instead.
            println!(
                "setup: bpf-linker present ({v}); msitrace is tested with {BPF_LINKER_VERSION}, leaving it as is"
            );
        } else {
            println!("setup: bpf-linker {BPF_LINKER_VERSION}: present");
        }
        return Ok(());
    }

    // bpf-linker must link the same LLVM as the rustc that emits the eBPF bitcode. The
    // nightly ships it as lib/libLLVM.so.<ver>-rust-<ver>-nightly; bpf-linker's build looks
    // for <prefix>/lib/libLLVM.so, so give it a prefix that points there, and an rpath to the
    // sysroot so the binary still starts once the temporary prefix is gone.
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: this nightly cannot host bpf-linker",
                lib.display()
            )
        })?;
    let vv = crate::util::run_output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("cannot read the nightly's LLVM version from `rustc -vV`")?
        .to_string();

    let prefix = std::env::temp_dir().join(format!("msitrace-llvm-prefix-{}", std::process::id()));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)?;

    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major}; about 2 minutes)",
        llvm.display()
    );
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", lib.display()),
        )
        .status();
    let _ = std::fs::remove_dir_all(&prefix);
    if !status.is_ok_and(|s| s.success()) {
        bail!(
            "could not build bpf-linker {BPF_LINKER_VERSION}: see cargo's output above; it needs crates.io and a C toolchain"
        );
    }
    crate::util::run_output(Command::new("bpf-linker").arg("--version"))
        .context("bpf-linker was installed but does not start (see its error above)")?;
    Ok(())
}
