//! Builds tests/guest-module (hv_stub.ko) against a guest kernel's unpacked headers, with the
//! compiler that kernel was built with: this machine's for bookworm's kernels; for a kernel
//! built for another Debian release (bullseye's 5.10 wants gcc-10, trixie's 7.x gcc-14 and a
//! newer C library for its kbuild tools), inside a build root of that release made by
//! mmdebstrap from Debian's packages and cached under the work directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::kernel::Kernel;

const SOURCES: &[&str] = &["hv_stub.c", "Kbuild", "Makefile"];

/// What a build root has besides what the headers pull in: make; binutils, which trixie's
/// gcc-14-for-host does not bring and without which kbuild's compiler probes fail; pahole,
/// with which kbuild makes each module's BTF where the kernel has DEBUG_INFO_BTF_MODULES.
const BUILD_ROOT_PACKAGES: &str = "make,binutils,dwarves";

/// This machine's Debian release: its compiler builds that release's kernels' modules.
const HOST_RELEASE: &str = "bookworm";

/// Build hv_stub.ko for `kernel` in `build_dir`, from a fresh copy of the sources, unless the
/// module there was built from exactly these sources for this kernel with this compiler (its
/// stamp holds all three, the sources byte for byte): a stale object must never reach a guest,
/// and a build is 3 s of each vm-test.
/// Returns the module and whether it was the one built before.
pub fn build(
    repo: &Path,
    kernel: &Kernel,
    work: &Path,
    build_dir: &Path,
) -> Result<(PathBuf, bool)> {
    let src = repo.join("tests/guest-module");
    let root = if kernel.release == HOST_RELEASE {
        None
    } else {
        Some(build_root(work, kernel)?)
    };
    // In a build root, the sources and the headers are where the chroot sees them.
    let (dir, headers) = match &root {
        None => (build_dir.to_path_buf(), kernel.headers.clone()),
        Some(r) => (
            r.join("build/hv_stub"),
            PathBuf::from(format!("/usr/src/linux-headers-{}", kernel.abi)),
        ),
    };
    let cc = kernel_compiler(kernel, root.as_deref())?;
    let stamp_path = build_dir.join("hv_stub.stamp");
    let mut stamp = format!("{} {}\n{cc}\n", kernel.abi, kernel.version).into_bytes();
    for f in SOURCES {
        let text = fs::read(src.join(f))
            .with_context(|| format!("cannot read {}", src.join(f).display()))?;
        stamp.extend_from_slice(format!("--- {f} {}\n", text.len()).as_bytes());
        stamp.extend_from_slice(&text);
    }
    let ko = build_dir.join("hv_stub.ko");
    if ko.exists() && fs::read(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok((ko, true));
    }
    let _ = fs::remove_file(&stamp_path);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    for f in SOURCES {
        fs::copy(src.join(f), dir.join(f))
            .with_context(|| format!("cannot copy {}", src.join(f).display()))?;
    }
    let mut make = match &root {
        None => Command::new("make"),
        Some(r) => {
            // kbuild's tools read /proc (objtool its stack limit): a proc mount in a private
            // mount namespace, gone with it.
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                r#"root=$1; shift; mount -t proc proc "$root/proc" && exec chroot "$root" "$@""#,
                "sh",
            ])
            .arg(r)
            .arg("make");
            c
        }
    };
    let m_dir = match &root {
        None => dir.clone(),
        Some(_) => PathBuf::from("/build/hv_stub"),
    };
    let out = make
        .arg("-C")
        .arg(&headers)
        .arg(format!("M={}", m_dir.display()))
        .arg(format!("CC={cc}"))
        .arg("modules")
        .output()
        .context("cannot run make")?;
    if root.is_some() {
        if build_dir.exists() {
            fs::remove_dir_all(build_dir)?;
        }
        fs::create_dir_all(build_dir)?;
        let _ = fs::copy(dir.join("hv_stub.ko"), build_dir.join("hv_stub.ko"));
    }
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
    fs::write(&stamp_path, &stamp)?;
    Ok((ko, false))
}

/// The compiler named by the kernel's CONFIG_CC_VERSION_TEXT (`gcc-12 (Debian 12.2.0-14) …`),
/// on this machine or in the build root.
fn kernel_compiler(kernel: &Kernel, root: Option<&Path>) -> Result<String> {
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
    let found = match root {
        None => which(&cc).is_some(),
        Some(r) => ["usr/bin", "bin"]
            .iter()
            .any(|d| r.join(d).join(&cc).exists()),
    };
    if !found {
        bail!(
            "{} was built with {cc}, which is not installed{}: install it (vm-test installs gcc-12 itself)",
            kernel.abi,
            root.map(|r| format!(" in {}", r.display()))
                .unwrap_or_default()
        );
    }
    Ok(cc)
}

/// A root of the kernel's own Debian release with its header packages installed (apt pulls
/// in the compiler they name), cached per kernel: a stamp names the packages.
fn build_root(work: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let root = work.join("buildroot").join(&kernel.abi);
    let stamp = work.join("buildroot").join(format!("{}.stamp", kernel.abi));
    let want: Vec<String> = kernel
        .header_debs
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let want = format!("{BUILD_ROOT_PACKAGES}\n{}", want.join("\n"));
    if root.join("usr/bin").exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(root);
    }
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let _ = fs::remove_file(&stamp);
    fs::create_dir_all(&root)?;
    let sources = work
        .join(format!("apt-{}", kernel.release))
        .join("sources.list.d")
        .join(format!("vm-{}.sources", kernel.release));
    let debs = work.join("buildroot").join(format!("{}.debs", kernel.abi));
    if debs.exists() {
        fs::remove_dir_all(&debs)?;
    }
    fs::create_dir_all(&debs)?;
    for d in &kernel.header_debs {
        fs::copy(d, debs.join(d.file_name().unwrap_or_default()))?;
    }
    println!(
        "vm: making a {} build root for {} (mmdebstrap; its compiler and kbuild tools)",
        kernel.release, kernel.abi
    );
    let ok = Command::new("mmdebstrap")
        .args(["--variant=minbase", "--mode=root", "--quiet"])
        .arg(format!("--include={BUILD_ROOT_PACKAGES}"))
        .arg(format!(
            "--customize-hook=copy-in {} /tmp",
            debs.display()
        ))
        .arg(format!(
            "--customize-hook=chroot \"$1\" sh -c 'apt-get install -y -q --no-install-recommends /tmp/{}/*.deb'",
            debs.file_name().unwrap_or_default().to_string_lossy()
        ))
        .arg(kernel.release)
        .arg(&root)
        .arg(&sources)
        .status()
        .context("cannot run mmdebstrap")?
        .success();
    if !ok {
        bail!(
            "mmdebstrap could not make the {} build root for {}: see its output above",
            kernel.release,
            kernel.abi
        );
    }
    fs::write(&stamp, want)?;
    Ok(root)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
