//! The root disk of the guests that test msitrace as a systemd service: a Debian bookworm
//! system made by mmdebstrap from Debian's packages (systemd as init and what the package
//! needs at run time, nothing else), as a raw ext4 image made by `mke2fs -d`. Built once and
//! cached under the work directory; each run boots a sparse copy, so what a run writes never
//! reaches the next. The kernel-specific parts (hv_stub, the steps, the .deb) come with each
//! run's initramfs, which copies them in before it hands over to systemd.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::{host::Apt, run_status};

/// What goes into the image; the stamp holds this, so a change rebuilds it.
const RECIPE: &str = "bookworm minbase systemd systemd-sysv dbus kmod bpftrace bpftool; \
                      sleep.conf HibernateMode=reboot; serial-getty masked; firstboot off; v3";
/// dbus: what every installed Debian system has beside systemd (systemd recommends it);
/// `systemctl hibernate` goes through logind, over it.
/// bpftrace and bpftool: the stream step's comparison (Debian's bpftrace, as users have it;
/// bpftool reads its programs' run time before they go with it); with LLVM and clang's
/// libraries they are some 200 MB, which only a disk holds.
const PACKAGES: &str = "systemd,systemd-sysv,dbus,kmod,bpftrace,bpftool";
const SIZE: &str = "1536M";

/// The cached image, built when missing or made from another recipe.
pub fn ensure(work: &Path, apt: &Apt) -> Result<PathBuf> {
    let dir = work.join("rootfs");
    let image = dir.join("bookworm-systemd.img");
    let stamp = dir.join("recipe");
    if image.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == RECIPE) {
        return Ok(image);
    }
    fs::create_dir_all(&dir)?;
    let tree = dir.join("tree");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    let _ = fs::remove_file(&image);
    let _ = fs::remove_file(&stamp);
    println!("vm: making the systemd guest's root disk (mmdebstrap bookworm: {PACKAGES})");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--mode=root", "--quiet"])
        .arg(format!("--include={PACKAGES}"))
        .arg("bookworm")
        .arg(&tree);
    // The machine's own Debian sources, as the rig's private apt uses them: no archive host
    // is named here.
    let sources = apt.debian_sources();
    if sources.is_empty() {
        bail!("no Debian apt sources to make the guest's root disk from");
    }
    cmd.args(&sources);
    if !run_status(&mut cmd)? {
        bail!("mmdebstrap failed: see its output above");
    }
    configure(&tree)?;
    let ok = run_status(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "vmtroot", "-d"])
            .arg(&tree)
            .arg(&image)
            .arg(SIZE),
    )?;
    if !ok {
        bail!("mke2fs could not make {}", image.display());
    }
    fs::remove_dir_all(&tree)?;
    fs::write(&stamp, RECIPE)?;
    Ok(image)
}

fn write(root: &Path, rel: &str, text: &str) -> Result<()> {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap_or(root))?;
    fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
}

/// What an installer would have set, and what a headless test guest must not wait for.
fn configure(root: &Path) -> Result<()> {
    write(root, "etc/hostname", "vmt\n")?;
    // A set machine id: no first-boot setup (systemd-firstboot would ask on the console).
    write(root, "etc/machine-id", "5d7c1f3e8a2b4c6d9e0f1a2b3c4d5e6f\n")?;
    // The initramfs mounts the root read-write; an fstab line for it would have systemd wait
    // for a by-label device unit that only udev (not installed) would announce.
    write(root, "etc/fstab", "")?;
    // The guest reboots into the image (QEMU has no ACPI S4 wake to do it otherwise), as the
    // initramfs guests do with `echo reboot > /sys/power/disk`.
    write(
        root,
        "etc/systemd/sleep.conf.d/vmt.conf",
        "[Sleep]\nHibernateMode=reboot\n",
    )?;
    // The console is the host's channel: no login prompt on it.
    let mask = root.join("etc/systemd/system/serial-getty@ttyS0.service");
    let _ = fs::remove_file(&mask);
    std::os::unix::fs::symlink("/dev/null", &mask)?;
    Ok(())
}

/// A fresh copy of the image for one run, sparse (the cached image stays as built).
pub fn copy_for_run(image: &Path, to: &Path) -> Result<()> {
    let _ = fs::remove_file(to);
    let ok = run_status(
        Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(image)
            .arg(to),
    )?;
    if !ok {
        bail!("cannot copy {} to {}", image.display(), to.display());
    }
    Ok(())
}
