//! A guest kernel unpacked from its Debian packages (`dpkg -x`, never installed): the bootable
//! image, its modules, the headers an out-of-tree module builds against, and the base modules
//! the guest loads (virtio for the disks and the network card), decompressed for busybox insmod.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::{host::KernelPkgs, run_checked};

/// Modules the guest loads at boot, with what they depend on. e1000e's own driver is left out
/// on purpose: hv_stub binds that device.
pub const BASE_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net"];

/// What mounting the systemd guest's ext4 root needs besides: ext4 asks the crypto API for
/// crc32c at mount time (a soft dependency modules.dep does not list; from 6.14 crc32c is a
/// library that ext4 depends on, and crc32c_generic is gone: optional).
pub const ROOT_MODULES: &[&str] = &["crc32c_generic?", "ext4"];

#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: String,
    /// `uname -r`.
    pub abi: String,
    pub version: String,
    /// Where the image package is unpacked (boot/, lib/modules/).
    pub root: PathBuf,
    /// The kernel's header tree (`/usr/src/linux-headers-<abi>` under the unpacked headers).
    pub headers: PathBuf,
    /// The Debian release it was built for (`bookworm`, `bullseye`, `trixie`).
    pub release: &'static str,
    /// The header packages, for a build root of another release to install.
    pub header_debs: Vec<PathBuf>,
    /// Which runs it boots.
    pub plan: super::plan::Plan,
}

impl Kernel {
    /// The ABI's version is `major.minor` or later. For what the rig itself mirrors of a
    /// kernel's pci-hyperv (its unmask path changed in 6.17), not for msitrace's own gates.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        abi_at_least(&self.abi, major, minor)
    }

    /// What QEMU boots: the uncompressed kernel through its PVH entry when the unpack could
    /// make one ([`extract_pvh`]), else the bzImage.
    pub fn boot_image(&self) -> PathBuf {
        let pvh = self.pvh();
        if pvh.exists() { pvh } else { self.vmlinuz() }
    }

    fn pvh(&self) -> PathBuf {
        self.root.join("vmlinux.pvh")
    }

    /// `boot/vmlinuz-<abi>`, or where Debian's 7.x puts it: beside the modules.
    pub fn vmlinuz(&self) -> PathBuf {
        let boot = self.root.join(format!("boot/vmlinuz-{}", self.abi));
        if boot.exists() {
            return boot;
        }
        self.modules_dir().join("vmlinuz")
    }

    fn modules_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.abi))
    }

    /// `6.12: 6.12.117+deb12-amd64 (6.12.117-1~deb12u1)`.
    pub fn label(&self) -> String {
        format!("{}: {} ({})", self.series, self.abi, self.version)
    }

    /// The header tree declares the newer syscore registration (`struct syscore`, seen in
    /// Debian's 6.12.117) rather than `register_syscore_ops()`. hv_stub's Kbuild decides the
    /// same from the same file; this is for the log.
    pub fn syscore_api(&self) -> &'static str {
        let common = fs::read_dir(self.headers.parent().unwrap_or(&self.headers))
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("include/linux/syscore_ops.h"))
            .find(|p| p.exists());
        match common.and_then(|p| fs::read_to_string(p).ok()) {
            Some(t) if t.contains("struct syscore {") => "struct syscore + register_syscore()",
            Some(_) => "register_syscore_ops()",
            None => "unknown (no syscore_ops.h)",
        }
    }
}

/// The arch headers' Makefile includes the -common one by an absolute path, which `unpack`
/// points into the work directory: a work directory copied or moved keeps the old path, which
/// make then cannot find once the old one is gone. Point each such include at `hdr` again.
fn point_include_here(mk: &Path, hdr: &Path) -> Result<()> {
    let Ok(text) = fs::read_to_string(mk) else {
        return Ok(());
    };
    let here = format!("include {}/usr/src/", hdr.display());
    let mut fixed = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.find("/usr/src/") {
            Some(i) if line.starts_with("include ") && !line.starts_with(&here) => {
                fixed.push_str(&here);
                fixed.push_str(&line[i + "/usr/src/".len()..]);
            }
            _ => fixed.push_str(line),
        }
    }
    if fixed != text {
        fs::write(mk, fixed).with_context(|| format!("cannot write {}", mk.display()))?;
    }
    Ok(())
}

/// Unpack the image and headers into `dir` (once: a stamp names the packages unpacked).
pub fn unpack(
    pkgs: &KernelPkgs,
    image_debs: &[PathBuf],
    header_debs: &[PathBuf],
    dir: &Path,
) -> Result<Kernel> {
    let root = dir.join("root");
    let hdr = dir.join("headers");
    let stamp = dir.join("unpacked");
    let want: Vec<String> = image_debs
        .iter()
        .chain(header_debs)
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let want = want.join("\n");
    let headers = hdr.join(format!("usr/src/linux-headers-{}", pkgs.abi));
    let kernel = Kernel {
        series: pkgs.series.clone(),
        abi: pkgs.abi.clone(),
        version: pkgs.version.clone(),
        root: root.clone(),
        headers: headers.clone(),
        release: pkgs.release,
        header_debs: header_debs.to_vec(),
        plan: pkgs.plan,
    };
    if fs::read_to_string(&stamp).is_ok_and(|s| s == want) && kernel.vmlinuz().exists() {
        // A work directory copied or moved since keeps the include of where it was.
        point_include_here(&headers.join("Makefile"), &hdr)?;
        if !kernel.pvh().exists() {
            make_pvh(&kernel);
        }
        return Ok(kernel);
    }
    println!("vm: unpacking {} and its headers", pkgs.abi);
    for d in [&root, &hdr] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("cannot remove {}", d.display()))?;
        }
        fs::create_dir_all(d)?;
    }
    for deb in image_debs {
        run_checked(Command::new("dpkg").arg("-x").arg(deb).arg(&root))?;
    }
    // Debian's 7.x ships modules under usr/lib/modules (merged /usr); depmod -b looks in lib/.
    if !root.join("lib").exists() && root.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
    }
    for deb in header_debs {
        run_checked(Command::new("dpkg").arg("-x").arg(deb).arg(&hdr))?;
    }
    // The arch Makefile includes the -common one by its installed absolute path.
    let mk = headers.join("Makefile");
    let text = fs::read_to_string(&mk).with_context(|| format!("cannot read {}", mk.display()))?;
    let fixed = text.replace(
        "include /usr/src/",
        &format!("include {}/usr/src/", hdr.display()),
    );
    if fixed == text {
        bail!(
            "{} has no `include /usr/src/` line: the Debian headers layout changed",
            mk.display()
        );
    }
    fs::write(&mk, fixed)?;
    // The image package leaves modules.dep to its postinst (7.x ships it, with only the
    // binary index of built-in modules, which depmod would rewrite from a list it lacks).
    if !kernel.modules_dir().join("modules.dep").exists() {
        run_checked(Command::new("depmod").arg("-b").arg(&root).arg(&pkgs.abi))?;
    }
    if !kernel.vmlinuz().exists() {
        bail!(
            "{} has no {}",
            image_debs
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            kernel.vmlinuz().display()
        );
    }
    make_pvh(&kernel);
    fs::write(&stamp, want)?;
    Ok(kernel)
}

/// Write the kernel's PVH image, or say why the guests boot the bzImage.
fn make_pvh(kernel: &Kernel) {
    let out = kernel.pvh();
    let tmp = out.with_extension("tmp");
    match extract_pvh(&kernel.vmlinuz(), &tmp).and_then(|()| Ok(fs::rename(&tmp, &out)?)) {
        Ok(()) => {}
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            println!("vm: {}: the guests boot the bzImage: {e:#}", kernel.abi);
        }
    }
}

/// Under TCG a bzImage's own decompressor, and the real-mode setup before it, cost every boot
/// 1.8 s of the host's CPU (6.12: median 5.9 s from QEMU's start to the kernel looking for
/// init, against 4.1 s through the PVH entry, five boots each, interleaved), and a plan boots
/// a kernel twice per hibernation. QEMU boots an ELF vmlinux with the Xen PVH note (CONFIG_PVH, set in Debian's
/// and Ubuntu's x86 kernels) directly, with the same firmware, ACPI and initrd. The payload is
/// unpacked once, with the host's tool for its format: the kernel's build appends the
/// uncompressed size after the stream, which the tools report as trailing data, so their
/// status is not trusted and the ELF is checked instead.
pub fn extract_pvh(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = fs::read(vmlinuz).with_context(|| format!("cannot read {}", vmlinuz.display()))?;
    let payload = bzimage_payload(&image)?;
    let tool: &[&str] = if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        &["zstd", "-dcq"]
    } else if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        &["xz", "-dcq"]
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        &["gzip", "-dcq"]
    } else if payload.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        &["lz4", "-dcq"]
    } else {
        bail!(
            "its payload's format is none of zstd, xz, gzip and lz4 (starts {:02x?})",
            &payload[..payload.len().min(4)]
        );
    };
    let file = fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {} (setup installs it)", tool[0]))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let payload = payload.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        // A tool that stops at the stream's end may close its input before the appended size.
        let _ = stdin.write_all(&payload);
    });
    child.wait()?;
    let _ = writer.join();
    let elf = fs::read(out)?;
    check_pvh_elf(&elf).with_context(|| format!("{} unpacked by {}", vmlinuz.display(), tool[0]))
}

/// The compressed kernel inside a bzImage (boot protocol 2.08 and later).
fn bzimage_payload(image: &[u8]) -> Result<&[u8]> {
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no HdrS)");
    }
    let setup_sects = match image.get(0x1f1) {
        Some(0) => 4,
        Some(&n) => n as usize,
        None => bail!("truncated bzImage"),
    };
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        bail!("truncated bzImage");
    };
    let start = (setup_sects + 1) * 512 + offset as usize;
    image
        .get(start..start + length as usize)
        .context("the bzImage's payload lies outside the file")
}

/// A whole little-endian ELF64 executable (every segment inside the file: a stream cut short
/// is caught here) with XEN_ELFNOTE_PHYS32_ENTRY (18) in a note segment.
fn check_pvh_elf(elf: &[u8]) -> Result<()> {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1]) {
        bail!("not an ELF64 little-endian file ({} bytes)", elf.len());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("truncated ELF header");
    };
    let mut pvh = false;
    for i in 0..phnum as usize {
        let ph = phoff as usize + i * phentsize as usize;
        let (Some(kind), Some(off), Some(size)) = (u32_at(ph), u64_at(ph + 8), u64_at(ph + 32))
        else {
            bail!("truncated program headers");
        };
        let end = off.checked_add(size).context("segment past 2^64")?;
        if end > elf.len() as u64 {
            bail!(
                "segment {i} ends at {end}, past the file's {} bytes",
                elf.len()
            );
        }
        if kind != 4 {
            continue;
        }
        let (mut n, end) = (off as usize, end as usize);
        while n + 12 <= end {
            let (namesz, descsz, typ) = (
                u32_at(n).unwrap() as usize,
                u32_at(n + 4).unwrap() as usize,
                u32_at(n + 8).unwrap(),
            );
            let name = elf.get(n + 12..n + 12 + namesz).unwrap_or_default();
            pvh |= name == b"Xen\0" && typ == 18;
            n += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    if !pvh {
        bail!("no Xen PVH entry note (a kernel without CONFIG_PVH)");
    }
    Ok(())
}

/// The modules to insmod, dependencies first, as paths relative to the modules directory.
/// Built-in modules (virtio_pci on 6.12) are skipped.
pub fn module_load_order(kernel: &Kernel, names: &[&str]) -> Result<Vec<PathBuf>> {
    let dir = kernel.modules_dir();
    let dep = fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("cannot read modules.dep of {}", kernel.abi))?;
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let deps = parse_modules_dep(&dep);
    let by_name: BTreeMap<String, &String> =
        deps.keys().map(|path| (module_name(path), path)).collect();
    let builtin: HashSet<String> = builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for name in names {
        // A trailing `?`: loaded where the kernel has it.
        let (name, optional) = match name.strip_suffix('?') {
            Some(n) => (n, true),
            None => (*name, false),
        };
        let name = name.replace('-', "_");
        if let Some(path) = by_name.get(&name) {
            push_with_deps(path, &deps, &mut seen, &mut order);
        } else if !optional && !builtin.contains(&name) && !builtin_by_modinfo(kernel, &name) {
            bail!(
                "module {name} is neither in modules.dep nor built into {}",
                kernel.abi
            );
        }
    }
    Ok(order.into_iter().map(PathBuf::from).collect())
}

/// Debian's 7.x ships only the binary index of built-in modules (modules.builtin.bin):
/// kmod's modinfo reads it.
fn builtin_by_modinfo(kernel: &Kernel, name: &str) -> bool {
    Command::new("modinfo")
        .arg("-b")
        .arg(&kernel.root)
        .args(["-k", &kernel.abi, "-F", "filename", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("(builtin)"))
}

fn push_with_deps(
    path: &str,
    deps: &BTreeMap<String, Vec<String>>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path.to_string()) {
        return;
    }
    for d in deps.get(path).into_iter().flatten() {
        push_with_deps(d, deps, seen, order);
    }
    order.push(path.to_string());
}

fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| {
            let (m, d) = l.split_once(':')?;
            Some((
                m.trim().to_string(),
                d.split_whitespace().map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// `kernel/drivers/block/virtio_blk.ko.xz` → `virtio_blk`.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

/// Copy a module out of the kernel tree, decompressed: busybox insmod loads plain ELF only.
pub fn copy_module(kernel: &Kernel, rel: &Path, dest_dir: &Path) -> Result<PathBuf> {
    let src = kernel.modules_dir().join(rel);
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .context("module path without a name")?;
    let plain = name.split(".ko").next().unwrap_or(name).to_string() + ".ko";
    let dest = dest_dir.join(&plain);
    if name.ends_with(".ko.xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&src)
            .output()
            .context("cannot run xz")?;
        if !out.status.success() {
            bail!(
                "xz -dc {} failed: {}",
                src.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        fs::write(&dest, out.stdout)?;
    } else if name.ends_with(".ko") {
        fs::copy(&src, &dest).with_context(|| format!("cannot copy {}", src.display()))?;
    } else {
        bail!(
            "{}: unsupported module compression (xz or none expected)",
            src.display()
        );
    }
    Ok(dest)
}

/// The ABI (`uname -r`, e.g. `6.12.117+deb12-amd64`) is `major.minor` or later.
pub fn abi_at_least(abi: &str, major: u32, minor: u32) -> bool {
    let mut it = abi
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 executable with one PT_NOTE segment holding `notes` (name, type) and `pad`
    /// bytes after it.
    fn elf(notes: &[(&[u8], u32)], pad: usize) -> Vec<u8> {
        let mut note = Vec::new();
        for (name, typ) in notes {
            note.extend((name.len() as u32).to_le_bytes());
            note.extend(4u32.to_le_bytes());
            note.extend(typ.to_le_bytes());
            note.extend(*name);
            note.resize(note.len().next_multiple_of(4), 0);
            note.extend(0x0100_0000u32.to_le_bytes());
        }
        let mut e = vec![0u8; 64 + 56];
        e[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        e[64..68].copy_from_slice(&4u32.to_le_bytes());
        e[72..80].copy_from_slice(&120u64.to_le_bytes());
        e[96..104].copy_from_slice(&(note.len() as u64).to_le_bytes());
        e.extend(note);
        e.resize(e.len() + pad, 0);
        e
    }

    #[test]
    fn only_a_whole_elf_with_the_pvh_entry_note_is_booted_through_it() {
        let good = elf(&[(b"Linux\0", 1), (b"Xen\0", 18)], 16);
        check_pvh_elf(&good).unwrap();
        // Another Xen note alone (a PV-only kernel), or the note under another owner.
        assert!(check_pvh_elf(&elf(&[(b"Xen\0", 17)], 0)).is_err());
        assert!(check_pvh_elf(&elf(&[(b"Linux\0", 18)], 0)).is_err());
        // A stream cut short: the note segment ends past the file.
        let cut = &good[..good.len() - 20];
        let e = check_pvh_elf(cut).unwrap_err().to_string();
        assert!(e.contains("past the file"), "{e}");
        assert!(check_pvh_elf(b"\x28\xb5\x2f\xfd").is_err());
        assert!(check_pvh_elf(&good[..40]).is_err());
    }

    #[test]
    fn the_payload_is_found_by_the_setup_header() {
        let mut img = vec![0u8; 5 * 512];
        img[0x1f1] = 4;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&6u32.to_le_bytes());
        img.extend([0u8; 16]);
        img.extend(b"zstd!!");
        img.extend(b"trailer");
        assert_eq!(bzimage_payload(&img).unwrap(), b"zstd!!");
        // setup_sects 0 means 4.
        img[0x1f1] = 0;
        assert_eq!(bzimage_payload(&img).unwrap(), b"zstd!!");
        img[0x24c..0x250].copy_from_slice(&600u32.to_le_bytes());
        assert!(bzimage_payload(&img).is_err());
        img[0x202] = b'X';
        assert!(bzimage_payload(&img).is_err());
        assert!(bzimage_payload(&img[..100]).is_err());
    }

    #[test]
    fn a_moved_work_directory_gets_its_include_back() {
        let dir = std::env::temp_dir().join(format!("xtask-include-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mk = dir.join("Makefile");
        fs::write(
            &mk,
            "KBUILD_OUTPUT=/usr/src/x\ninclude /old/work/kernels/k/headers/usr/src/linux-headers-k-common/Makefile\n",
        )
        .unwrap();
        point_include_here(&mk, Path::new("/new/work/kernels/k/headers")).unwrap();
        assert_eq!(
            fs::read_to_string(&mk).unwrap(),
            "KBUILD_OUTPUT=/usr/src/x\ninclude /new/work/kernels/k/headers/usr/src/linux-headers-k-common/Makefile\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn orders_dependencies_first_once() {
        let dep = "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz\n\
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz\n\
kernel/drivers/virtio/virtio_ring.ko.xz:\n\
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz\n\
kernel/net/core/failover.ko.xz:\n";
        let deps = parse_modules_dep(dep);
        let mut seen = HashSet::new();
        let mut order = Vec::new();
        for m in [
            "kernel/drivers/block/virtio_blk.ko.xz",
            "kernel/drivers/net/virtio_net.ko.xz",
        ] {
            push_with_deps(m, &deps, &mut seen, &mut order);
        }
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
    }
}
