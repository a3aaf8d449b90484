//! Facts about the running kernel that decide what can attach: which symbols exist and in
//! which module, whether the kernel has kprobes at all, where tracefs is, and the clocks that
//! tell a suspend the tracer slept through.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::probes::{SymbolSource, SymbolTable};

/// Where tracefs is found, in the order looked at.
const TRACEFS_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Where a function symbol lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// `None` for vmlinux.
    pub module: Option<String>,
    /// Compiler-specialised copies (`name.isra.0`, `name.constprop.0`) found instead of or
    /// beside the symbol itself.
    pub variants: Vec<String>,
    /// The plain name itself is in the table (not only a variant).
    pub exact: bool,
    /// vmlinux has the plain name too, beside the module named in `module` (Debian's 7.x
    /// builds pci-hyperv in, and a module may define functions of the same names).
    pub in_vmlinux: bool,
}

/// Where the running kernel's function names can be read, best table first. Paths rather than
/// constants so that tests can stand in files of their own for each table.
#[derive(Clone, Debug)]
pub struct SymbolPaths {
    pub kallsyms: PathBuf,
    /// Where tracefs may be mounted, each looked in for `available_filter_functions`.
    pub tracefs: Vec<PathBuf>,
    /// /sys/kernel/btf: `vmlinux` and one split BTF file per loaded module.
    pub btf_dir: PathBuf,
    /// /sys/module: `<name>/initstate` is `live` for a loaded module.
    pub sys_module: PathBuf,
}

impl SymbolPaths {
    pub fn running() -> SymbolPaths {
        SymbolPaths {
            kallsyms: PathBuf::from("/proc/kallsyms"),
            tracefs: TRACEFS_MOUNTS.iter().map(PathBuf::from).collect(),
            btf_dir: crate::btf_layout::btf_dir(),
            sys_module: PathBuf::from("/sys/module"),
        }
    }
}

/// The kernel's function symbols, read once (grepping per symbol is slow on a guest: tens of
/// seconds under TCG), from the best table this process may read: /proc/kallsyms, else
/// tracefs' `available_filter_functions`, else BTF. A service under ProtectKernelTunables=yes
/// cannot read /proc/kallsyms, and that must cost precision, not the start.
#[derive(Clone, Debug)]
pub struct KernelSymbols {
    syms: HashMap<String, Symbol>,
    /// Every module with a function in the table, kept apart from `syms`: those are only the
    /// names asked for.
    modules: HashSet<String>,
    source: SymbolSource,
}

/// A symbol table as read: the functions kept, every module that has a function in it, and
/// how many functions it listed (kept or not: a table of functions none of ours is a table).
#[derive(Default)]
struct Table {
    syms: HashMap<String, Symbol>,
    modules: HashSet<String>,
    functions: usize,
}

impl Table {
    fn add(&mut self, name: &str, module: Option<&str>, keep: &dyn Fn(&str) -> bool) {
        self.functions += 1;
        if let Some(m) = module
            && !self.modules.contains(m)
        {
            self.modules.insert(m.to_string());
        }
        let base = name.split_once('.').map_or(name, |(base, _)| base);
        if keep(base) {
            add_symbol(&mut self.syms, name, module.map(str::to_string));
        }
    }
}

/// The plain names of every hook's candidates: all a table is read for. A kernel lists some
/// 100,000 functions; keeping each as a `String` in a map was a third of msitrace's start
/// (0.1 s on a host, 0.4–0.5 s under the guests' TCG), for the 40-odd names looked up.
fn catalogue_symbol(name: &str) -> bool {
    static NAMES: std::sync::OnceLock<HashSet<&'static str>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            crate::probes::CATALOGUE
                .iter()
                .flat_map(|h| h.symbols.iter().copied())
                .collect()
        })
        .contains(name)
}

impl KernelSymbols {
    /// The running kernel's symbols; never fails: with no table at all, every symbol is absent
    /// and the source says why.
    pub fn read() -> KernelSymbols {
        Self::read_from(&SymbolPaths::running())
    }

    pub fn read_from(paths: &SymbolPaths) -> KernelSymbols {
        let keep = &catalogue_symbol;
        let mut passed_over = Vec::new();
        let kallsyms = &paths.kallsyms;
        match fs::read_to_string(kallsyms) {
            Ok(text) => {
                let t = kallsyms_table(&text, keep);
                if t.functions > 0 {
                    let source = SymbolSource::new(
                        SymbolTable::Kallsyms,
                        kallsyms.display().to_string(),
                        passed_over,
                    );
                    return KernelSymbols::from_table(t, source);
                }
                passed_over.push(format!("{}: no function symbols in it", kallsyms.display()));
            }
            Err(e) => passed_over.push(format!("{}: {}", kallsyms.display(), describe_io(&e))),
        }

        let mut tried = Vec::new();
        for dir in &paths.tracefs {
            let path = dir.join("available_filter_functions");
            match fs::read_to_string(&path) {
                Ok(text) => {
                    let t = filter_functions_table(&text, keep);
                    if t.functions > 0 {
                        let source = SymbolSource::new(
                            SymbolTable::AvailableFilterFunctions,
                            path.display().to_string(),
                            passed_over,
                        );
                        return KernelSymbols::from_table(t, source);
                    }
                    tried.push(format!("{}: no functions in it", path.display()));
                }
                Err(e) => tried.push(format!("{}: {}", path.display(), describe_io(&e))),
            }
        }
        if !tried.is_empty() {
            // One note for all mount points: which one tracefs is at does not matter here.
            passed_over.push(tried.join(", "));
        }

        let btf = &paths.btf_dir;
        let loaded = |module: &str| module_is_live(&paths.sys_module, module);
        match crate::btf_layout::function_names(btf, loaded) {
            Ok(names) if !names.functions.is_empty() => {
                passed_over.extend(names.unreadable);
                let mut t = Table::default();
                for (name, module) in &names.functions {
                    t.add(name, module.as_deref(), keep);
                }
                let source =
                    SymbolSource::new(SymbolTable::Btf, btf.display().to_string(), passed_over);
                return KernelSymbols::from_table(t, source);
            }
            Ok(_) => passed_over.push(format!("{}: no functions in its BTF", btf.display())),
            Err(e) => passed_over.push(e.to_string()),
        }
        KernelSymbols::from_table(
            Table::default(),
            SymbolSource::new(SymbolTable::None, "", passed_over),
        )
    }

    fn from_table(t: Table, source: SymbolSource) -> KernelSymbols {
        KernelSymbols {
            syms: t.syms,
            modules: t.modules,
            source,
        }
    }

    /// A table given as text: /proc/kallsyms lines for [`SymbolTable::Kallsyms`], `name
    /// [module]` lines (the shape of available_filter_functions, and of the names BTF gives)
    /// for the others. For tests of what is chosen from a table, without a kernel.
    pub fn parse(kind: SymbolTable, text: &str) -> KernelSymbols {
        let all = |_: &str| true;
        let t = match kind {
            SymbolTable::Kallsyms => kallsyms_table(text, &all),
            _ => filter_functions_table(text, &all),
        };
        KernelSymbols::from_table(t, SymbolSource::new(kind, "", Vec::new()))
    }

    pub fn get(&self, name: &str) -> Option<&Symbol> {
        self.syms.get(name)
    }

    /// Some function of `module` is in the table: the module is loaded.
    pub fn has_module(&self, module: &str) -> bool {
        self.modules.contains(module)
    }

    pub fn source(&self) -> &SymbolSource {
        &self.source
    }
}

/// A module BTF names functions that can be probed only while the module is loaded and
/// initialised; a module being unloaded keeps its BTF file for a moment. When /sys/module
/// cannot be read, BTF's own list of modules (it has files only for loaded ones) is trusted.
fn module_is_live(sys_module: &Path, module: &str) -> bool {
    match fs::read_to_string(sys_module.join(module).join("initstate")) {
        Ok(state) => state.trim() == "live",
        Err(_) => !sys_module.is_dir(),
    }
}

/// Record `name` (in `module`, `None` for vmlinux); a `name.suffix` copy is recorded under
/// its base name as a variant.
fn add_symbol(syms: &mut HashMap<String, Symbol>, name: &str, module: Option<String>) {
    let (base, variant) = match name.split_once('.') {
        Some((base, _)) => (base, Some(name)),
        None => (name, None),
    };
    let entry = syms.entry(base.to_string()).or_insert_with(|| Symbol {
        module: module.clone(),
        variants: Vec::new(),
        exact: false,
        in_vmlinux: false,
    });
    match variant {
        Some(v) => entry.variants.push(v.to_string()),
        None => {
            // A module's definition is kept over vmlinux's (the module is what was loaded to
            // be probed); vmlinux's is remembered.
            match module {
                None => {
                    entry.in_vmlinux = true;
                    if !entry.exact {
                        entry.module = None;
                    }
                }
                Some(_) => entry.module = module,
            }
            entry.exact = true;
        }
    }
}

/// `[pci_hyperv]` to `pci_hyperv`.
fn module_of(token: Option<&str>) -> Option<&str> {
    token
        .filter(|t| t.starts_with('['))
        .map(|t| t.trim_start_matches('[').trim_end_matches(']'))
}

/// /proc/kallsyms text (`address kind name [module]`), keeping only text symbols.
pub fn parse_kallsyms(text: &str) -> HashMap<String, Symbol> {
    kallsyms_table(text, &|_| true).syms
}

fn kallsyms_table(text: &str, keep: &dyn Fn(&str) -> bool) -> Table {
    let mut t = Table::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(_addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if matches!(kind, "t" | "T") {
            t.add(name, module_of(it.next()), keep);
        }
    }
    t
}

/// tracefs `available_filter_functions` text: `name` or `name [module]` a line.
pub fn parse_available_filter_functions(text: &str) -> HashMap<String, Symbol> {
    filter_functions_table(text, &|_| true).syms
}

fn filter_functions_table(text: &str, keep: &dyn Fn(&str) -> bool) -> Table {
    let mut t = Table::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let Some(name) = it.next() {
            t.add(name, module_of(it.next()), keep);
        }
    }
    t
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
    for p in TRACEFS_MOUNTS {
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
    use crate::btf_layout::tests::BtfBuilder;

    #[test]
    fn a_name_in_vmlinux_and_a_module_is_the_modules_with_vmlinux_remembered() {
        // Debian 7.x: pci-hyperv built in, and a stand-in module with the same functions;
        // either order of the lines.
        for text in [
            "ffffffff81200000 t hv_irq_unmask\nffffffffc0001000 t hv_irq_unmask\t[hv_stub]\n",
            "ffffffffc0001000 t hv_irq_unmask\t[hv_stub]\nffffffff81200000 t hv_irq_unmask\n",
        ] {
            let syms = parse_kallsyms(text);
            let s = &syms["hv_irq_unmask"];
            assert_eq!(s.module.as_deref(), Some("hv_stub"), "{text}");
            assert!(s.in_vmlinux && s.exact, "{text}");
        }
        // Only a specialised copy in the module: the plain name is vmlinux's.
        let syms = parse_kallsyms(
            "ffffffffc0001000 t hv_irq_unmask.isra.0\t[hv_stub]\nffffffff81200000 t hv_irq_unmask\n",
        );
        let s = &syms["hv_irq_unmask"];
        assert_eq!(s.module, None);
        assert!(s.in_vmlinux);
        let alone = parse_kallsyms("ffffffffc0001000 t hv_irq_unmask\t[pci_hyperv]\n");
        assert!(!alone["hv_irq_unmask"].in_vmlinux);
    }

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
        let k = parse_kallsyms(text);
        assert_eq!(
            k["hv_compose_msi_msg"].module.as_deref(),
            Some("pci_hyperv")
        );
        assert!(k["hv_compose_msi_msg"].exact);
        let v = &k["irq_do_set_affinity"];
        assert!(!v.exact);
        assert_eq!(v.variants, vec!["irq_do_set_affinity.constprop.0"]);
        assert!(!k.contains_key("some_data"));
        assert!(!k.contains_key("migrate_one_irq"));
        assert_eq!(k["pci_restore_msi_state"].module, None);
    }

    #[test]
    fn parses_available_filter_functions_with_modules_and_variants() {
        let text = "\
irq_migrate_all_off_this_cpu
irq_do_set_affinity.constprop.0
pci_msi_unmask_irq.isra.0
pci_msi_unmask_irq
hv_compose_msi_msg [pci_hyperv]
hv_irq_unmask.isra.0 [pci_hyperv]

__pci_write_msi_msg
";
        let k = parse_available_filter_functions(text);
        let hv = &k["hv_compose_msi_msg"];
        assert_eq!((hv.module.as_deref(), hv.exact), (Some("pci_hyperv"), true));
        let unmask = &k["hv_irq_unmask"];
        assert!(!unmask.exact, "only a specialised copy: {unmask:?}");
        assert_eq!(unmask.variants, vec!["hv_irq_unmask.isra.0"]);
        assert_eq!(unmask.module.as_deref(), Some("pci_hyperv"));
        let msi = &k["pci_msi_unmask_irq"];
        assert!(msi.exact, "the plain name beside its copy: {msi:?}");
        assert_eq!(msi.variants, vec!["pci_msi_unmask_irq.isra.0"]);
        assert!(!k["irq_do_set_affinity"].exact);
        assert_eq!(k["__pci_write_msi_msg"].module, None);
        assert_eq!(k.len(), 6, "{k:?}");
    }

    /// A directory of stand-ins for every table, all missing until a test writes them.
    struct Tables {
        root: PathBuf,
        paths: SymbolPaths,
    }

    impl Tables {
        fn new(name: &str) -> Tables {
            let root = std::env::temp_dir()
                .join(format!("msitrace-symbols-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            let paths = SymbolPaths {
                kallsyms: root.join("kallsyms"),
                tracefs: vec![root.join("tracing"), root.join("debug-tracing")],
                btf_dir: root.join("btf"),
                sys_module: root.join("module"),
            };
            Tables { root, paths }
        }

        fn write(&self, path: &Path, text: impl AsRef<[u8]>) {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        /// vmlinux BTF with `migrate_one_irq` (BTF keeps an inlined static function) and
        /// module BTF for pci_hyperv and for a module whose initialisation has not finished.
        fn write_btf(&self) {
            let mut vmlinux = BtfBuilder::new();
            vmlinux.func("migrate_one_irq");
            vmlinux.func("pci_restore_msi_state");
            let mut hv = BtfBuilder::split_over(&vmlinux);
            hv.func("hv_compose_msi_msg");
            let mut coming = BtfBuilder::split_over(&vmlinux);
            coming.func("coming_fn");
            let dir = &self.paths.btf_dir;
            self.write(&dir.join("vmlinux"), vmlinux.bytes());
            self.write(&dir.join("pci_hyperv"), hv.bytes());
            self.write(&dir.join("coming"), coming.bytes());
            let m = &self.paths.sys_module;
            self.write(&m.join("pci_hyperv/initstate"), "live\n");
            self.write(&m.join("coming/initstate"), "coming\n");
        }
    }

    impl Drop for Tables {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn kallsyms_wins_when_readable() {
        let t = Tables::new("kallsyms");
        t.write(
            &t.paths.kallsyms,
            "ffffffff810b0000 T pci_restore_msi_state\n",
        );
        t.write(
            &t.paths.tracefs[0].join("available_filter_functions"),
            "other\n",
        );
        t.write_btf();
        let k = KernelSymbols::read_from(&t.paths);
        assert_eq!(k.source().kind, SymbolTable::Kallsyms);
        assert!(k.source().passed_over.is_empty());
        assert_eq!(k.source().limits, None);
        assert!(k.get("pci_restore_msi_state").is_some());
        assert!(k.get("other").is_none());
    }

    #[test]
    fn a_table_read_keeps_the_hooks_names_and_knows_every_module() {
        let t = Tables::new("kept");
        t.write(
            &t.paths.kallsyms,
            "ffffffff81000000 T _stext\n\
             ffffffffc0001000 t hv_compose_msi_msg\t[pci_hyperv]\n\
             ffffffffc0002000 t hv_irq_unmask.isra.0\t[pci_hyperv]\n\
             ffffffffc0003000 t e1000_probe\t[e1000e]\n\
             ffffffffc0004000 d e1000_data\t[e1000e_data_only]\n",
        );
        let k = KernelSymbols::read_from(&t.paths);
        assert_eq!(k.source().kind, SymbolTable::Kallsyms);
        assert!(k.get("hv_compose_msi_msg").is_some_and(|s| s.exact));
        let unmask = k
            .get("hv_irq_unmask")
            .expect("a variant of a hook's name is kept");
        assert_eq!(unmask.variants, ["hv_irq_unmask.isra.0"]);
        assert!(k.get("_stext").is_none() && k.get("e1000_probe").is_none());
        assert!(k.has_module("e1000e") && k.has_module("pci_hyperv"));
        assert!(
            !k.has_module("e1000e_data_only"),
            "only functions make a module present"
        );

        // A table with functions, none of them a hook's, is still the table read.
        t.write(&t.paths.kallsyms, "ffffffff81000000 T _stext\n");
        t.write(
            &t.paths.tracefs[0].join("available_filter_functions"),
            "pci_restore_msi_state\n",
        );
        let k = KernelSymbols::read_from(&t.paths);
        assert_eq!(k.source().kind, SymbolTable::Kallsyms);
        assert!(k.get("pci_restore_msi_state").is_none());
    }

    #[test]
    fn available_filter_functions_follow_an_unreadable_kallsyms() {
        let t = Tables::new("aff");
        // Root reads a mode-000 file anyway: a directory stands in for the unreadable node.
        fs::create_dir_all(&t.paths.kallsyms).unwrap();
        // Found under the second mount point: the first has no tracefs.
        t.write(
            &t.paths.tracefs[1].join("available_filter_functions"),
            "hv_compose_msi_msg [pci_hyperv]\n",
        );
        t.write_btf();
        let k = KernelSymbols::read_from(&t.paths);
        let src = k.source();
        assert_eq!(src.kind, SymbolTable::AvailableFilterFunctions);
        assert!(
            src.path
                .ends_with("debug-tracing/available_filter_functions")
        );
        assert_eq!(src.passed_over.len(), 1, "{src:?}");
        assert!(
            src.passed_over[0].ends_with("kallsyms: Is a directory"),
            "{src:?}"
        );
        assert!(src.limits.as_deref().unwrap().contains("notrace"));
        assert_eq!(
            k.get("hv_compose_msi_msg").unwrap().module.as_deref(),
            Some("pci_hyperv")
        );
        assert!(k.get("migrate_one_irq").is_none(), "BTF was not read");
    }

    #[test]
    fn btf_follows_when_neither_text_table_can_be_read() {
        let t = Tables::new("btf");
        // An empty kallsyms (what some containers show) is no table either.
        t.write(&t.paths.kallsyms, "");
        t.write_btf();
        let k = KernelSymbols::read_from(&t.paths);
        let src = k.source();
        assert_eq!(src.kind, SymbolTable::Btf);
        assert_eq!(src.path, t.paths.btf_dir.display().to_string());
        assert!(src.passed_over[0].ends_with("kallsyms: no function symbols in it"));
        assert!(
            src.passed_over[1].contains("tracing/available_filter_functions: No such file")
                && src.passed_over[1].contains("debug-tracing/available_filter_functions"),
            "{src:?}"
        );
        let limits = src.limits.as_deref().unwrap();
        assert!(
            limits.contains(".isra") && limits.contains("inlined"),
            "{limits}"
        );
        let m = k.get("migrate_one_irq").unwrap();
        assert!(m.exact && m.module.is_none());
        let hv = k.get("hv_compose_msi_msg").unwrap();
        assert_eq!(hv.module.as_deref(), Some("pci_hyperv"));
        assert!(
            k.get("coming_fn").is_none(),
            "a module that is not live has nothing to attach to yet"
        );
    }

    #[test]
    fn no_table_at_all_is_an_empty_table_that_says_why() {
        let t = Tables::new("none");
        let k = KernelSymbols::read_from(&t.paths);
        let src = k.source();
        assert_eq!(src.kind, SymbolTable::None);
        assert_eq!(src.passed_over.len(), 3, "{src:?}");
        assert!(src.passed_over[2].contains("has no BTF"), "{src:?}");
        assert!(k.get("pci_restore_msi_state").is_none());
    }

    #[test]
    fn a_broken_module_btf_is_noted_and_vmlinux_still_used() {
        let t = Tables::new("badmod");
        t.write_btf();
        t.write(&t.paths.btf_dir.join("pci_hyperv"), b"not btf");
        let k = KernelSymbols::read_from(&t.paths);
        let src = k.source();
        assert_eq!(src.kind, SymbolTable::Btf);
        assert!(
            src.passed_over
                .iter()
                .any(|n| n.contains("pci_hyperv is not usable BTF")),
            "{src:?}"
        );
        assert!(k.get("migrate_one_irq").is_some());
        assert!(k.get("hv_compose_msi_msg").is_none());
    }
}
