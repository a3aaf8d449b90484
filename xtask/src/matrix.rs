//! `cargo xtask matrix`: the compatibility matrix in README.md, written from what was measured
//! rather than by hand. Two sources:
//!
//! - the BTF fixtures (tests/fixtures/btf/<release>/), through msitrace's own layout resolver
//!   and kernel gates: every member the eBPF programs read, its offset or why it is absent, the
//!   BTF facts the rules' gates decide on. xtask cannot link the tracer library (tracer's build
//!   needs nightly and bpf-linker, which `cargo xtask setup` installs), so the tracer side runs
//!   as the example `msitrace-tests/examples/btf_layouts.rs` and hands over JSON;
//! - the last vm-test (`<vm-work>/out/<release>/run-<n>/artifacts/`): `probes.json` as
//!   `msitrace probes --json` printed it in the guest, and each step's `replay.json` report,
//!   whose `not_evaluated` says which rules could not be evaluated and why. Per kernel, the run
//!   whose probes.json is newest.
//!
//! The tables go between [`BEGIN`] and [`END`] in README.md (and to stdout); `--check` only
//! compares. The inputs are read into local structs that mirror the fields of tracer's
//! serialised types this needs (`ProbeStatus`, `ResolvedLayout`, the report's `NotEvaluated`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::util::{cargo, repo_root, run_output};
use crate::vm::{self, series_of};

pub const BEGIN: &str = "<!-- matrix:begin -->";
pub const END: &str = "<!-- matrix:end -->";

/// A note longer than this is cut (a verifier log can run to pages).
const NOTE_MAX: usize = 400;

#[derive(clap::Args)]
pub struct MatrixArgs {
    /// Write nothing; exit non-zero when README.md's matrix is not what the inputs give.
    #[arg(long)]
    pub check: bool,
    /// vm-test's work directory, whose out/ is read
    /// [default: $MSITRACE_VM_WORK, else <repo>/vm-work]. `--work-dir`, as vm-test names it,
    /// works too.
    #[arg(long, alias = "work-dir", value_name = "DIR")]
    pub vm_work: Option<PathBuf>,
}

/// `msitrace probes --json`: an object with `schema_version` and `probes` since the output was
/// versioned; a bare array before (older vm-test outputs).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ProbesJson {
    Versioned { probes: Vec<ProbeRow> },
    Bare(Vec<ProbeRow>),
}

impl ProbesJson {
    fn rows(self) -> Vec<ProbeRow> {
        match self {
            ProbesJson::Versioned { probes } | ProbesJson::Bare(probes) => probes,
        }
    }
}

// ---- What the tracer side prints (examples/btf_layouts.rs) ----

#[derive(Debug, Deserialize)]
struct BtfInput {
    rules: Vec<RuleInfo>,
    kernels: Vec<BtfKernel>,
}

#[derive(Debug, Deserialize)]
struct RuleInfo {
    id: String,
    title: String,
}

#[derive(Debug, Deserialize)]
struct BtfKernel {
    release: String,
    resolved: Resolved,
    /// Rules whose kernel gate is closed on this kernel, and why.
    #[serde(default)]
    kernel_gates: Vec<KernelGate>,
}

/// `tracer::btf_layout::ResolvedLayout`, the members used here.
#[derive(Debug, Deserialize)]
struct Resolved {
    layout: BTreeMap<String, LayoutValue>,
    fields: Vec<FieldReport>,
    #[serde(default)]
    facts: Vec<BtfFact>,
}

/// A `Layout` member: a field, or (genirq's state bits) the enumerator's mask.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LayoutValue {
    Field(FieldAt),
    Mask(u64),
}

/// `tracer_common::Field`.
#[derive(Debug, Deserialize)]
struct FieldAt {
    off: u32,
    bit_off: u8,
    bit_len: u8,
}

/// `tracer::btf_layout::FieldReport`.
#[derive(Debug, Deserialize)]
struct FieldReport {
    name: String,
    path: Option<String>,
    present: bool,
    reason: Option<String>,
}

/// `tracer::btf_layout::BtfFact`.
#[derive(Debug, Deserialize)]
struct BtfFact {
    name: String,
    state: FactState,
    source: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FactState {
    Present,
    Absent,
    Unknown,
}

#[derive(Debug, Deserialize)]
struct KernelGate {
    rule: String,
    reason: String,
}

// ---- What vm-test saved ----

/// `tracer::probes::ProbeStatus`, the members used here.
#[derive(Debug, Deserialize)]
struct ProbeRow {
    hook: String,
    method: Method,
    status: Status,
    reason: Option<String>,
    module: Option<String>,
}

/// `tracer::probes::Method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Method {
    Kprobe,
    Kretprobe,
    Tracepoint,
    RawTracepoint,
    Fallback,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Kprobe => "kprobe",
            Method::Kretprobe => "kretprobe",
            Method::Tracepoint => "tracepoint",
            Method::RawTracepoint => "raw tracepoint",
            Method::Fallback => "fallback",
        }
    }
}

/// `tracer::probes::Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Attached,
    Absent,
    Denied,
    Error,
    Pending,
    Unused,
}

/// The replay report (`msitrace replay --json`), the member used here.
#[derive(Debug, Deserialize)]
struct ReplayReport {
    not_evaluated: Vec<NotEvaluated>,
}

/// `tracer::engine::NotEvaluated`.
#[derive(Debug, Deserialize)]
struct NotEvaluated {
    rule: String,
    part: Option<String>,
    epoch: Option<u32>,
    reason: String,
}

/// One kernel of the last vm-test: its newest run's probes and each step's report.
#[derive(Debug)]
struct VmKernel {
    release: String,
    run: String,
    probes: Vec<ProbeRow>,
    /// (step, report), by step name.
    steps: Vec<(String, ReplayReport)>,
}

// ---- Reading ----

fn btf_input(repo: &Path) -> Result<BtfInput> {
    let fixtures = repo.join("tests/fixtures/btf");
    println!(
        "xtask: cargo run -p msitrace-tests --example btf_layouts (msitrace's layout resolver on {})",
        fixtures.display()
    );
    let out = run_output(
        Command::new(cargo())
            .current_dir(repo)
            .args([
                "run",
                "--quiet",
                "-p",
                "msitrace-tests",
                "--example",
                "btf_layouts",
                "--",
            ])
            .arg(&fixtures),
    )?;
    serde_json::from_str(&out).context("the btf_layouts example printed JSON this cannot read")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not what it should be", path.display()))
}

/// `run-<n>` directories with a probes.json, newest probes.json first (the run number breaks
/// ties: a later run of the same vm-test).
fn newest_run(kernel_dir: &Path) -> Result<Option<PathBuf>> {
    let mut runs: Vec<(SystemTime, u32, PathBuf)> = Vec::new();
    for entry in
        fs::read_dir(kernel_dir).with_context(|| format!("cannot read {}", kernel_dir.display()))?
    {
        let path = entry?.path();
        let Some(n) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let probes = path.join("artifacts/probes.json");
        if let Ok(meta) = fs::metadata(&probes) {
            runs.push((meta.modified()?, n, path));
        }
    }
    runs.sort();
    Ok(runs.pop().map(|(_, _, p)| p))
}

fn read_vm(work: &Path) -> Result<Vec<VmKernel>> {
    let out = work.join("out");
    let mut kernels = Vec::new();
    let entries = fs::read_dir(&out).with_context(|| {
        format!(
            "cannot read {} (run `cargo xtask vm-test` first, or give --vm-work)",
            out.display()
        )
    })?;
    for entry in entries {
        let dir = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        let Some(run) = newest_run(&dir)? else {
            continue;
        };
        let art = run.join("artifacts");
        let probes = read_json::<ProbesJson>(&art.join("probes.json"))?.rows();
        let mut steps = Vec::new();
        for entry in fs::read_dir(&art).with_context(|| format!("cannot read {}", art.display()))? {
            let step = entry?.path();
            let replay = step.join("replay.json");
            if replay.is_file() {
                let name = step
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                steps.push((name, read_json(&replay)?));
            }
        }
        steps.sort_by(|a, b| a.0.cmp(&b.0));
        kernels.push(VmKernel {
            release: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            run: run
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            probes,
            steps,
        });
    }
    if kernels.is_empty() {
        bail!(
            "no vm-test output under {} (no out/<release>/run-<n>/artifacts/probes.json): run \
             `cargo xtask vm-test` first, or give --vm-work",
            out.display()
        );
    }
    kernels.sort_by(|a, b| release_order(&a.release, &b.release));
    Ok(kernels)
}

// ---- Rendering ----

/// Oldest kernel first: by the release's leading numbers, then by name.
fn release_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |r: &str| -> Vec<u32> {
        r.split(['.', '-', '+'])
            .map_while(|p| p.parse::<u32>().ok())
            .take(3)
            .collect()
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// `6.1.0-57-cloud-amd64 (6.1-cloud)`: the release, and the vm-test series it belongs to.
fn kernel_label(release: &str) -> String {
    match series_of(release) {
        Some(s) => format!("{release} ({s})"),
        None => release.to_string(),
    }
}

/// Numbered notes under a table, so that a reason is written once however many cells cite it.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    /// The reference to `text` (` [n]`), numbering it if it is new.
    fn cite(&mut self, text: &str) -> String {
        let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.chars().count() > NOTE_MAX {
            text = text.chars().take(NOTE_MAX).collect::<String>() + "…";
        }
        let i = match self.0.iter().position(|t| *t == text) {
            Some(i) => i,
            None => {
                self.0.push(text);
                self.0.len() - 1
            }
        };
        format!(" [{}]", i + 1)
    }

    fn write(self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        out.push('\n');
        for (i, t) in self.0.iter().enumerate() {
            let _ = writeln!(out, "{}. {t}", i + 1);
        }
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    out.push_str(&line(header));
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for r in rows {
        out.push_str(&line(r));
    }
}

fn hooks_table(out: &mut String, vm: &[VmKernel]) {
    let mut hooks: Vec<(&str, Method)> = Vec::new();
    for k in vm {
        for p in &k.probes {
            if !hooks.iter().any(|(h, _)| *h == p.hook) {
                hooks.push((&p.hook, p.method));
            }
        }
    }
    let mut notes = Notes::default();
    let mut rows = Vec::new();
    for (hook, method) in hooks {
        let mut row = vec![format!("`{hook}`"), method.name().to_string()];
        for k in vm {
            row.push(match k.probes.iter().find(|p| p.hook == hook) {
                None => "—".into(),
                Some(p) => {
                    let word = match p.status {
                        Status::Attached if p.method == Method::Fallback => "fallback".into(),
                        Status::Attached => "attached".into(),
                        Status::Pending => format!(
                            "pending until {} loads",
                            p.module.as_deref().unwrap_or("its module")
                        ),
                        Status::Absent => "absent".into(),
                        Status::Denied => "denied".into(),
                        Status::Error => "error".into(),
                        Status::Unused => "unused".into(),
                    };
                    let note = p.reason.as_deref().map(|r| notes.cite(r));
                    word + &note.unwrap_or_default()
                }
            });
        }
        rows.push(row);
    }
    let mut header = vec!["hook".to_string(), "method".to_string()];
    header.extend(vm.iter().map(|k| kernel_label(&k.release)));
    table(out, &header, &rows);
    notes.write(out);
}

/// Where a member is: its byte offset (and bits for a bitfield), or an enumerator's mask.
fn placement(v: Option<&LayoutValue>) -> String {
    match v {
        Some(LayoutValue::Field(f)) if f.bit_len == 1 => format!("{}, bit {}", f.off, f.bit_off),
        Some(LayoutValue::Field(f)) if f.bit_len > 1 => format!(
            "{}, bits {}–{}",
            f.off,
            f.bit_off,
            u32::from(f.bit_off) + u32::from(f.bit_len) - 1
        ),
        Some(LayoutValue::Field(f)) => f.off.to_string(),
        Some(LayoutValue::Mask(m)) => format!("{m:#x}"),
        None => "?".into(),
    }
}

fn fields_table(out: &mut String, btf: &BtfInput) {
    let mut names: Vec<&str> = Vec::new();
    for k in &btf.kernels {
        for f in &k.resolved.fields {
            if !names.contains(&f.name.as_str()) {
                names.push(&f.name);
            }
        }
    }
    let mut notes = Notes::default();
    let mut rows = Vec::new();
    for name in names {
        let reports: Vec<Option<&FieldReport>> = btf
            .kernels
            .iter()
            .map(|k| k.resolved.fields.iter().find(|f| f.name == name))
            .collect();
        // The path most kernels resolve (the first such on a tie); a kernel that resolves
        // another says which in its cell.
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for p in reports.iter().flatten().filter(|f| f.present) {
            let p = p.path.as_deref().unwrap_or("?");
            match counts.iter_mut().find(|(q, _)| *q == p) {
                Some((_, n)) => *n += 1,
                None => counts.push((p, 1)),
            }
        }
        let common = counts
            .iter()
            .fold(None::<(&str, usize)>, |best, &(p, n)| match best {
                Some((_, m)) if m >= n => best,
                _ => Some((p, n)),
            })
            .map(|(p, _)| p);
        let mut row = vec![
            format!("`{name}`"),
            common.map_or("—".into(), |p| format!("`{p}`")),
        ];
        for (k, r) in btf.kernels.iter().zip(&reports) {
            row.push(match r {
                None => "—".into(),
                Some(f) if f.present => {
                    let at = placement(k.resolved.layout.get(name));
                    match f.path.as_deref() {
                        Some(p) if Some(p) != common => format!("{at} (`{p}`)"),
                        _ => at,
                    }
                }
                Some(f) => {
                    "absent".to_string()
                        + &notes.cite(f.reason.as_deref().unwrap_or("no reason given"))
                }
            });
        }
        rows.push(row);
    }
    let mut header = vec!["member".to_string(), "path".to_string()];
    header.extend(btf.kernels.iter().map(|k| kernel_label(&k.release)));
    table(out, &header, &rows);
    notes.write(out);
}

fn facts_table(out: &mut String, btf: &BtfInput) {
    let mut facts: Vec<&str> = Vec::new();
    for k in &btf.kernels {
        for f in &k.resolved.facts {
            if !facts.contains(&f.name.as_str()) {
                facts.push(&f.name);
            }
        }
    }
    let mut notes = Notes::default();
    let mut rows = Vec::new();
    for name in facts {
        let mut row = vec![format!("`{name}`")];
        for k in &btf.kernels {
            row.push(match k.resolved.facts.iter().find(|f| f.name == name) {
                None => "—".into(),
                Some(f) => {
                    let mut s = match f.state {
                        FactState::Present => "present".to_string(),
                        FactState::Absent => "absent".to_string(),
                        FactState::Unknown => "unknown".to_string(),
                    };
                    if f.state == FactState::Present
                        && let Some(src) = &f.source
                    {
                        s.push_str(&format!(" ({src})"));
                    }
                    if let Some(r) = &f.reason {
                        s.push_str(&notes.cite(r));
                    }
                    s
                }
            });
        }
        rows.push(row);
    }
    // The rules with a kernel gate closed somewhere, open or closed on each kernel.
    for rule in &btf.rules {
        if !btf
            .kernels
            .iter()
            .any(|k| k.kernel_gates.iter().any(|g| g.rule == rule.id))
        {
            continue;
        }
        let mut row = vec![format!("{} kernel gate", rule.id)];
        for k in &btf.kernels {
            row.push(match k.kernel_gates.iter().find(|g| g.rule == rule.id) {
                None => "open".into(),
                Some(g) => "closed".to_string() + &notes.cite(&g.reason),
            });
        }
        rows.push(row);
    }
    let mut header = vec!["BTF fact or gate".to_string()];
    header.extend(btf.kernels.iter().map(|k| kernel_label(&k.release)));
    table(out, &header, &rows);
    notes.write(out);
}

/// What the reports of one kernel's steps say about one rule.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RuleCoverage {
    /// No step's report said anything (none was read).
    NoReport,
    /// Not evaluated in any step: why.
    Not(Vec<String>),
    /// Evaluated, but a part of it (or an epoch) was not, in every step: which and why.
    Partly(Vec<String>),
    /// Evaluated whole in at least one step.
    Evaluated,
}

/// The best any step of the run gives: a rule not evaluated in a step for want of what the
/// step did (no resume epoch in a CPU hotplug, a trace ended early) is evaluated on the kernel
/// when another step evaluated it.
fn rule_coverage(rule: &str, steps: &[(String, ReplayReport)]) -> RuleCoverage {
    let mut best = RuleCoverage::NoReport;
    for (_, report) in steps {
        let entries: Vec<&NotEvaluated> = report
            .not_evaluated
            .iter()
            .filter(|n| n.rule == rule)
            .collect();
        let whole: Vec<String> = entries
            .iter()
            .filter(|n| n.part.is_none() && n.epoch.is_none())
            .map(|n| n.reason.clone())
            .collect();
        let here = if !whole.is_empty() {
            RuleCoverage::Not(whole)
        } else if !entries.is_empty() {
            RuleCoverage::Partly(
                entries
                    .iter()
                    .map(|n| {
                        let what = match (&n.part, n.epoch) {
                            (Some(p), Some(e)) => format!("{p} (epoch {e})"),
                            (Some(p), None) => p.clone(),
                            (None, Some(e)) => format!("epoch {e}"),
                            (None, None) => String::new(),
                        };
                        format!("not evaluated: {what}: {}", n.reason)
                    })
                    .collect(),
            )
        } else {
            RuleCoverage::Evaluated
        };
        best = match (best, here) {
            (RuleCoverage::Not(a), RuleCoverage::Not(b)) => RuleCoverage::Not(union(a, b)),
            (RuleCoverage::Partly(a), RuleCoverage::Partly(b)) => RuleCoverage::Partly(union(a, b)),
            (a, b) => a.max(b),
        };
    }
    best
}

fn union(mut a: Vec<String>, b: Vec<String>) -> Vec<String> {
    for r in b {
        if !a.contains(&r) {
            a.push(r);
        }
    }
    a
}

fn rules_table(out: &mut String, rules: &[RuleInfo], vm: &[VmKernel]) {
    let mut notes = Notes::default();
    let mut rows = Vec::new();
    for rule in rules {
        let mut row = vec![format!("{} {}", rule.id, rule.title)];
        for k in vm {
            row.push(match rule_coverage(&rule.id, &k.steps) {
                RuleCoverage::NoReport => "—".into(),
                RuleCoverage::Evaluated => "evaluated".into(),
                RuleCoverage::Partly(why) => {
                    "partly".to_string() + &why.iter().map(|w| notes.cite(w)).collect::<String>()
                }
                RuleCoverage::Not(why) => {
                    "not evaluated".to_string()
                        + &why.iter().map(|w| notes.cite(w)).collect::<String>()
                }
            });
        }
        rows.push(row);
    }
    let mut header = vec!["rule".to_string()];
    header.extend(vm.iter().map(|k| kernel_label(&k.release)));
    table(out, &header, &rows);
    notes.write(out);
}

/// The whole matrix: what goes between the README's markers.
fn render(btf: &BtfInput, vm: &[VmKernel]) -> String {
    let mut out = String::new();
    out.push_str("<!-- Generated by `cargo xtask matrix`: edits here are overwritten. -->\n\n");
    let runs: Vec<String> = vm
        .iter()
        .map(|k| {
            let steps: Vec<&str> = k.steps.iter().map(|(s, _)| s.as_str()).collect();
            format!("{} {} ({})", k.release, k.run, steps.join(", "))
        })
        .collect();
    let _ = writeln!(
        out,
        "**Hooks** on each kernel of the last vm-test, as `msitrace probes --json` reported them in \
         the guest (the Hyper-V hooks attach to the stand-in module hv_stub there); runs read: {}.\n",
        runs.join("; ")
    );
    hooks_table(&mut out, vm);
    let _ = writeln!(
        out,
        "\n**Rules** on the same runs: evaluated in at least one step's report, or not and why \
         (the steps' `not_evaluated`). The stand-in is not pci_hyperv, so no trace there has \
         pci_hyperv's BTF facts: where a gate reads them, the BTF fixtures below tell what a \
         real pci_hyperv gives.\n"
    );
    rules_table(&mut out, &btf.rules, vm);
    let _ = writeln!(
        out,
        "\n**Members the eBPF programs read**, resolved by msitrace's layout resolver from the \
         BTF fixtures (tests/fixtures/btf: vmlinux, and pci_hyperv and hv_vmbus where the \
         kernel has module BTF): byte offset in the struct (bits of a bitfield; for genirq's \
         state bits, the mask), or absent and why; a kernel that resolves another path than \
         the one shown names it.\n"
    );
    fields_table(&mut out, btf);
    let _ = writeln!(
        out,
        "\n**BTF facts and kernel gates**, from the same fixtures: what the rules' gates decide \
         on, and the gates that are closed somewhere.\n"
    );
    facts_table(&mut out, btf);
    out
}

/// `readme` with what lies between the markers replaced by `body`.
fn splice(readme: &str, body: &str) -> Result<String> {
    let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("README.md has no `{BEGIN}` … `{END}` markers for the matrix");
    };
    if e < b {
        bail!("README.md has `{END}` before `{BEGIN}`");
    }
    Ok(format!(
        "{}{BEGIN}\n{body}{END}{}",
        &readme[..b],
        &readme[e + END.len()..]
    ))
}

pub fn run(args: MatrixArgs) -> Result<()> {
    let repo = repo_root();
    let work = vm::resolve_work_dir(args.vm_work, &repo);
    let vm = read_vm(&work)?;
    let btf = btf_input(&repo)?;
    let body = render(&btf, &vm);
    println!("{body}");
    let path = repo.join("README.md");
    let readme =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let new = splice(&readme, &body)?;
    if args.check {
        if new != readme {
            bail!(
                "README.md's compatibility matrix is not what the fixtures and {} give: run \
                 `cargo xtask matrix`",
                work.join("out").display()
            );
        }
        println!("xtask: README.md's matrix is up to date");
    } else if new != readme {
        fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))?;
        println!("xtask: README.md's matrix rewritten");
    } else {
        println!("xtask: README.md's matrix was already up to date");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(hook: &str, method: &str, status: &str, reason: Option<&str>) -> serde_json::Value {
        json!({"hook": hook, "method": method, "status": status, "reason": reason,
               "module": "pci_hyperv", "symbol": hook, "rules_losing_input": [], "probe": "X"})
    }

    fn report(not_evaluated: serde_json::Value) -> ReplayReport {
        serde_json::from_value(json!({"not_evaluated": not_evaluated, "summary": {}})).unwrap()
    }

    fn vm() -> Vec<VmKernel> {
        let old = vec![
            probe(
                "hv_irq_unmask",
                "kprobe",
                "pending",
                Some("pci_hyperv is not loaded"),
            ),
            probe("migrate_one_irq", "kprobe", "absent", Some("inlined")),
            probe("irq_do_set_affinity", "fallback", "attached", None),
            probe(
                "pci_irq_mask_msix",
                "kprobe",
                "denied",
                Some("perf_event_paranoid is 3"),
            ),
        ];
        let new = vec![
            probe("hv_irq_unmask", "kprobe", "attached", None),
            probe("migrate_one_irq", "kprobe", "attached", None),
            probe("irq_do_set_affinity", "fallback", "unused", Some("inlined")),
            probe("pci_irq_mask_msix", "kprobe", "attached", None),
        ];
        let no_epoch = json!({"rule": "G5", "part": null, "epoch": null,
                              "reason": "the trace has no resume epoch"});
        let h5 = json!({"rule": "H5", "part": null, "epoch": null, "reason": "before 6.4"});
        let g2 = json!({"rule": "G2", "part": "irq_do_set_affinity failed", "epoch": null,
                        "reason": "not attached"});
        vec![
            VmKernel {
                release: "5.10.0-46-amd64".into(),
                run: "run-2".into(),
                probes: serde_json::from_value(json!(old)).unwrap(),
                // The kernel's gates are in every step's report; the hotplug step also
                // lacks a resume epoch.
                steps: vec![
                    ("hibernate.fixed".into(), report(json!([h5, g2]))),
                    ("hotplug.buggy".into(), report(json!([h5, g2, no_epoch]))),
                ],
            },
            VmKernel {
                release: "7.3.4+deb13-amd64".into(),
                run: "run-3".into(),
                probes: serde_json::from_value(json!(new)).unwrap(),
                steps: vec![(
                    "hotplug.buggy".into(),
                    report(json!([no_epoch, {"rule": "H4", "part": null, "epoch": null,
                                             "reason": "6.17 and later"}])),
                )],
            },
        ]
    }

    fn btf() -> BtfInput {
        let field = |name: &str, path: &str, present: bool| {
            json!({"name": name, "path": present.then_some(path), "present": present,
                   "reason": (!present).then_some(format!("no {path}")), "source": "vmlinux"})
        };
        let at = |off: u32, bit_off: u8, bit_len: u8| json!({"off": off, "size": 1, "bit_off": bit_off, "bit_len": bit_len, "present": 1});
        serde_json::from_value(json!({
            "rules": [{"id": "H4", "title": "unmask left masked"},
                      {"id": "H5", "title": "unmask without compose"}],
            "kernels": [
                {"release": "5.10.0-46-amd64", "modules": [],
                 "resolved": {
                    "layout": {"msi_desc_msix_ctrl": at(80, 0, 0), "hv_pcibus_state": at(0, 0, 0),
                               "pci_dev_msix_enabled": at(2058, 5, 1),
                               "irqd_irq_masked": 131072},
                    "fields": [field("msi_desc_msix_ctrl", "msi_desc.masked", true),
                               field("hv_pcibus_state", "hv_pcibus_device.state", false),
                               field("pci_dev_msix_enabled", "pci_dev.msix_enabled", true),
                               field("irqd_irq_masked", "IRQD_IRQ_MASKED", true)],
                    "sources": ["vmlinux"],
                    "facts": [{"name": "hv_pcibus_device.state_lock", "state": "unknown",
                               "source": null, "reason": "no pci_hyperv BTF"}]},
                 "kernel_gates": [{"rule": "H5", "reason": "before 6.4"}]},
                {"release": "6.12.117+deb12-amd64", "modules": ["pci_hyperv"],
                 "resolved": {
                    "layout": {"msi_desc_msix_ctrl": at(80, 0, 0), "hv_pcibus_state": at(96, 0, 0),
                               "pci_dev_msix_enabled": at(2130, 5, 1),
                               "irqd_irq_masked": 131072},
                    "fields": [field("msi_desc_msix_ctrl", "msi_desc.pci.msix_ctrl", true),
                               field("hv_pcibus_state", "hv_pcibus_device.state", true),
                               field("pci_dev_msix_enabled", "pci_dev.msix_enabled", true),
                               field("irqd_irq_masked", "IRQD_IRQ_MASKED", true)],
                    "sources": ["vmlinux", "pci_hyperv"],
                    "facts": [{"name": "hv_pcibus_device.state_lock", "state": "present",
                               "source": "pci_hyperv", "reason": null}]},
                 "kernel_gates": []},
            ]
        }))
        .unwrap()
    }

    #[test]
    fn the_hook_table_says_each_state_and_cites_each_reason_once() {
        let mut out = String::new();
        hooks_table(&mut out, &vm());
        assert_eq!(
            out,
            "\
| hook | method | 5.10.0-46-amd64 (5.10) | 7.3.4+deb13-amd64 (7.x) |
|---|---|---|---|
| `hv_irq_unmask` | kprobe | pending until pci_hyperv loads [1] | attached |
| `migrate_one_irq` | kprobe | absent [2] | attached |
| `irq_do_set_affinity` | fallback | fallback | unused [2] |
| `pci_irq_mask_msix` | kprobe | denied [3] | attached |

1. pci_hyperv is not loaded
2. inlined
3. perf_event_paranoid is 3
"
        );
    }

    #[test]
    fn a_rule_is_evaluated_on_a_kernel_when_one_step_evaluated_it() {
        let mut out = String::new();
        rules_table(&mut out, &btf().rules, &vm());
        assert_eq!(
            out,
            "\
| rule | 5.10.0-46-amd64 (5.10) | 7.3.4+deb13-amd64 (7.x) |
|---|---|---|
| H4 unmask left masked | evaluated | not evaluated [1] |
| H5 unmask without compose | not evaluated [2] | evaluated |

1. 6.17 and later
2. before 6.4
"
        );
        let steps = &vm()[0].steps;
        // Not evaluated in the hotplug (no resume epoch), evaluated in the hibernation.
        assert_eq!(rule_coverage("G5", steps), RuleCoverage::Evaluated);
        // A part missing in every step stays missing.
        assert_eq!(
            rule_coverage("G2", steps),
            RuleCoverage::Partly(vec![
                "not evaluated: irq_do_set_affinity failed: not attached".into()
            ])
        );
        assert_eq!(rule_coverage("H1", &[]), RuleCoverage::NoReport);
    }

    #[test]
    fn the_field_table_gives_offsets_bits_masks_and_why_absent() {
        let mut out = String::new();
        fields_table(&mut out, &btf());
        assert_eq!(
            out,
            "\
| member | path | 5.10.0-46-amd64 (5.10) | 6.12.117+deb12-amd64 (6.12) |
|---|---|---|---|
| `msi_desc_msix_ctrl` | `msi_desc.masked` | 80 | 80 (`msi_desc.pci.msix_ctrl`) |
| `hv_pcibus_state` | `hv_pcibus_device.state` | absent [1] | 96 |
| `pci_dev_msix_enabled` | `pci_dev.msix_enabled` | 2058, bit 5 | 2130, bit 5 |
| `irqd_irq_masked` | `IRQD_IRQ_MASKED` | 0x20000 | 0x20000 |

1. no hv_pcibus_device.state
"
        );
        let mut out = String::new();
        facts_table(&mut out, &btf());
        assert!(
            out.contains("| `hv_pcibus_device.state_lock` | unknown [1] | present (pci_hyperv) |")
        );
        assert!(out.contains("| H5 kernel gate | closed [2] | open |"));
        assert!(
            !out.contains("H4 kernel gate"),
            "a gate open everywhere is left out"
        );
    }

    #[test]
    fn the_matrix_replaces_only_what_lies_between_the_markers() {
        let readme = format!("intro\n{BEGIN}\nold | table\n{END}\nafter\n");
        assert_eq!(
            splice(&readme, "new\n").unwrap(),
            format!("intro\n{BEGIN}\nnew\n{END}\nafter\n")
        );
        assert!(splice("no markers", "new\n").is_err());
        assert!(splice(&format!("{END}{BEGIN}"), "new\n").is_err());
        let body = render(&btf(), &vm());
        assert!(body.contains("runs read: 5.10.0-46-amd64 run-2 (hibernate.fixed, hotplug.buggy)"));
    }

    /// vm-test numbers its runs per kernel afresh each time, and `--only` reruns just one:
    /// the newest probes.json decides, not the highest run number.
    #[test]
    fn the_newest_run_with_probes_is_read() {
        let work = std::env::temp_dir().join(format!("xtask-matrix-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        let kernel = work.join("out/6.1.0-57-amd64");
        let probes = json!([probe("hv_irq_unmask", "kprobe", "attached", None)]).to_string();
        let now = SystemTime::now();
        for (run, age_s) in [("run-1", 0), ("run-2", 600)] {
            let art = kernel.join(run).join("artifacts");
            fs::create_dir_all(art.join("hibernate.buggy")).unwrap();
            fs::write(
                art.join("hibernate.buggy/replay.json"),
                json!({"not_evaluated": [], "summary": {}}).to_string(),
            )
            .unwrap();
            let path = art.join("probes.json");
            fs::write(&path, &probes).unwrap();
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(now - std::time::Duration::from_secs(age_s))
                .unwrap();
        }
        // A run that died before `probes`, and the costs file beside the kernels.
        fs::create_dir_all(kernel.join("run-3/artifacts")).unwrap();
        fs::write(work.join("out/kprobe-costs.json"), "{}").unwrap();

        let vm = read_vm(&work).unwrap();
        let _ = fs::remove_dir_all(&work);
        assert_eq!(vm.len(), 1);
        assert_eq!(vm[0].release, "6.1.0-57-amd64");
        assert_eq!(vm[0].run, "run-1");
        assert_eq!(vm[0].probes[0].status, Status::Attached);
        assert_eq!(vm[0].steps[0].0, "hibernate.buggy");
        assert!(
            read_vm(&work).is_err(),
            "no output is an error, not an empty matrix"
        );
    }

    #[test]
    fn releases_are_named_with_their_series_and_sorted_oldest_first() {
        assert_eq!(
            kernel_label("6.1.0-57-cloud-amd64"),
            "6.1.0-57-cloud-amd64 (6.1-cloud)"
        );
        assert_eq!(kernel_label("6.1.0-56-amd64"), "6.1.0-56-amd64 (6.1)");
        assert_eq!(
            kernel_label("6.12.117+deb12-amd64"),
            "6.12.117+deb12-amd64 (6.12)"
        );
        assert_eq!(kernel_label("4.19.0-27-amd64"), "4.19.0-27-amd64");
        let mut r = vec![
            "7.3.4+deb13-amd64",
            "6.12.117+deb12-amd64",
            "5.10.0-46-amd64",
            "6.1.0-57-amd64",
        ];
        r.sort_by(|a, b| release_order(a, b));
        assert_eq!(
            r,
            [
                "5.10.0-46-amd64",
                "6.1.0-57-amd64",
                "6.12.117+deb12-amd64",
                "7.3.4+deb13-amd64"
            ]
        );
    }
}
