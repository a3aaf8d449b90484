//! The guest's root file system: busybox-static, tests/guest's init and step library, the
//! base modules decompressed, hv_stub.ko and msitrace with its libraries, in one uncompressed
//! newc cpio (TCG would spend seconds decompressing it on every boot).

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::{
    kernel::{self, Kernel},
    msitrace::{self, Msitrace},
};

const INIT: &str = include_str!("../../../tests/guest/init");
const VMT_SH: &str = include_str!("../../../tests/guest/vmt.sh");
const SERVICE_SH: &str = include_str!("../../../tests/guest/service.sh");
const SERVICE_UNIT: &str = include_str!("../../../tests/guest/vmt-service.service");
const STREAM_BT: &str = include_str!("../../../tests/guest/stream.bt");

/// `deb`: the project's package, for the runs that boot systemd and install it there.
pub fn build(
    kernel: &Kernel,
    hv_stub: &Path,
    msitrace: Option<&Msitrace>,
    deb: Option<&Path>,
    stage: &Path,
    out: &Path,
) -> Result<()> {
    if stage.exists() {
        fs::remove_dir_all(stage)?;
    }
    for d in ["bin", "vmt/bin", "lib/modules", "out", "proc", "sys", "dev"] {
        fs::create_dir_all(stage.join(d))?;
    }
    let busybox = Path::new("/bin/busybox");
    let file = elf_linkage(busybox)?;
    if !file.contains("statically linked") && !file.contains("static-pie") {
        bail!("/bin/busybox is not static ({file}): install busybox-static");
    }
    fs::copy(busybox, stage.join("bin/busybox"))?;
    write_exec(&stage.join("init"), INIT)?;
    write_exec(&stage.join("vmt/vmt.sh"), VMT_SH)?;
    fs::copy(hv_stub, stage.join("vmt/hv_stub.ko"))?;

    let mut list = String::new();
    for rel in kernel::module_load_order(kernel, kernel::BASE_MODULES)? {
        let ko = kernel::copy_module(kernel, &rel, &stage.join("lib/modules"))?;
        let name = ko.file_name().unwrap_or_default().to_string_lossy();
        list.push_str(&format!("/lib/modules/{name}\n"));
    }
    fs::write(stage.join("vmt/modules.list"), &list)?;
    let mut root_list = String::new();
    for rel in kernel::module_load_order(kernel, kernel::ROOT_MODULES)? {
        let ko = kernel::copy_module(kernel, &rel, &stage.join("lib/modules"))?;
        let name = ko.file_name().unwrap_or_default().to_string_lossy();
        let line = format!("/lib/modules/{name}\n");
        if !list.contains(&line) {
            root_list.push_str(&line);
        }
    }
    fs::write(stage.join("vmt/modules-root.list"), root_list)?;
    write_exec(&stage.join("vmt/service.sh"), SERVICE_SH)?;
    fs::write(stage.join("vmt/vmt-service.service"), SERVICE_UNIT)?;
    fs::write(stage.join("vmt/stream.bt"), STREAM_BT)?;
    if let Some(deb) = deb {
        fs::copy(deb, stage.join("vmt/msitrace.deb"))
            .with_context(|| format!("cannot copy {}", deb.display()))?;
    }
    if let Some(m) = msitrace {
        msitrace::stage(m, stage)?;
    }
    cpio(stage, out)
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Whether an ELF executable asks for an interpreter (dynamic) or not (static).
fn elf_linkage(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // PT_INTERP in an ELF means dynamic; busybox-static has none. Checking the program
    // headers ourselves avoids needing `file`.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Ok("not a 64-bit ELF".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap_or_default()) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bytes.len() {
            break;
        }
        if u32_at(o) == 3 {
            return Ok("dynamically linked (has an interpreter)".into());
        }
    }
    Ok("statically linked".into())
}

fn cpio(stage: &Path, out: &Path) -> Result<()> {
    let mut files = Vec::new();
    walk(stage, stage, &mut files)?;
    files.sort();
    let mut list = String::new();
    for f in &files {
        list.push_str(&f.to_string_lossy());
        list.push('\n');
    }
    let out_file =
        fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(out_file)
        .spawn()
        .context("cannot run cpio (vm-test installs it)")?;
    child
        .stdin
        .take()
        .context("cpio has no stdin")?
        .write_all(list.as_bytes())?;
    if !child.wait()?.success() {
        bail!("cpio failed to write {}", out.display());
    }
    Ok(())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf());
        if e.file_type()?.is_dir() {
            walk(root, &p, out)?;
        }
    }
    Ok(())
}
