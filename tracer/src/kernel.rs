//! Facts about the running kernel that decide what can attach: which symbols exist and in
//! which module, whether the kernel has kprobes at all, where tracefs is, and the clocks that
//! tell a suspend the tracer slept through.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// Where a symbol of /proc/kallsyms lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// `None` for vmlinux.
    pub module: Option<String>,
    /// Compiler-specialised copies (`name.isra.0`, `name.constprop.0`) found instead of or
    /// beside the symbol itself.
    pub variants: Vec<String>,
    /// The plain name itself is in kallsyms (not only a variant).
    pub exact: bool,
}

/// The function symbols of /proc/kallsyms, read once: grepping it per symbol is slow on a
/// guest (tens of seconds under TCG).
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    syms: HashMap<String, Symbol>,
}

impl Kallsyms {
    pub fn read() -> Result<Kallsyms> {
        let text = fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    /// Parse kallsyms text keeping only the names of text symbols; a `name.suffix` variant is
    /// recorded under its base name.
    pub fn parse(text: &str) -> Kallsyms {
        let mut syms: HashMap<String, Symbol> = HashMap::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(_addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            let module = it
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_string());
            let (base, variant) = match name.split_once('.') {
                Some((base, _)) => (base, Some(name)),
                None => (name, None),
            };
            let entry = syms.entry(base.to_string()).or_insert_with(|| Symbol {
                module: module.clone(),
                variants: Vec::new(),
                exact: false,
            });
            match variant {
                Some(v) => entry.variants.push(v.to_string()),
                None => {
                    entry.exact = true;
                    entry.module = module;
                }
            }
        }
        Kallsyms { syms }
    }

    pub fn get(&self, name: &str) -> Option<&Symbol> {
        self.syms.get(name)
    }
}

/// Names of the loaded modules (/proc/modules), to notice when pci_hyperv appears.
pub fn loaded_modules() -> Result<Vec<String>> {
    let text = fs::read_to_string("/proc/modules").context("cannot read /proc/modules")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Why kprobes cannot attach on this kernel at all, in the kernel's words, or `None` if the
/// kprobe PMU is there. perf-based kprobes (what aya uses) need the kprobe event source.
pub fn kprobes_unavailable() -> Option<String> {
    let p = Path::new("/sys/bus/event_source/devices/kprobe/type");
    match fs::read_to_string(p) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "{}: {} (kernel built without CONFIG_KPROBES)",
            p.display(),
            describe_io(&e)
        )),
    }
}

/// An io::Error as the C library words it ("No such file or directory"), without Rust's
/// "(os error 2)" suffix.
pub fn describe_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The tracefs mount point, mounting it at /sys/kernel/tracing when nothing is mounted (classic
/// tracepoints need it to find their ids).
pub fn ensure_tracefs() -> Result<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events").is_dir() {
            return Ok(PathBuf::from(p));
        }
    }
    let target = Path::new("/sys/kernel/tracing");
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!(
            "tracefs is not mounted and mounting it at {} failed: {}; mount it with `mount -t tracefs tracefs /sys/kernel/tracing`",
            target.display(),
            describe_io(&e)
        );
    }
    Ok(target.to_path_buf())
}

/// Whether a classic tracepoint exists on this kernel.
pub fn tracepoint_exists(tracefs: &Path, category: &str, name: &str) -> bool {
    tracefs.join("events").join(category).join(name).is_dir()
}

/// Read a clock in ns.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clocks used are always supported on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// How long the machine has been suspended since boot: CLOCK_BOOTTIME counts suspend,
/// CLOCK_MONOTONIC does not. A jump of this value between two reads is a suspend or
/// hibernation the tracer slept through.
pub fn suspended_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME).saturating_sub(monotonic_ns())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kallsyms_with_modules_and_variants() {
        let text = "\
ffffffff81000000 T _stext
ffffffff810a0000 t irq_migrate_all_off_this_cpu
ffffffff810a1000 t irq_do_set_affinity.constprop.0
ffffffffc0001000 t hv_compose_msi_msg\t[pci_hyperv]
ffffffffc0002000 d some_data\t[pci_hyperv]
ffffffff810b0000 T pci_restore_msi_state
";
        let k = Kallsyms::parse(text);
        assert_eq!(
            k.get("hv_compose_msi_msg").unwrap().module.as_deref(),
            Some("pci_hyperv")
        );
        assert!(k.get("hv_compose_msi_msg").unwrap().exact);
        let v = k.get("irq_do_set_affinity").unwrap();
        assert!(!v.exact);
        assert_eq!(v.variants, vec!["irq_do_set_affinity.constprop.0"]);
        assert!(k.get("some_data").is_none());
        assert!(k.get("migrate_one_irq").is_none());
        assert_eq!(k.get("pci_restore_msi_state").unwrap().module, None);
    }
}
