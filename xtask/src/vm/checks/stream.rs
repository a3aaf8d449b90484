//! The stream step (issue #17): msitrace's streaming path against bpftrace on the same hooks and
//! the same burst, with every consumer live, in passes. Per event by the kernel's own bpf_stats
//! (msitrace's trailer; bpftrace's programs through `bpftool perf show` and `prog show`), also
//! above an empty program on the same hooks, which is what any program there costs; and end to
//! end, events delivered to user space per second of the burst and the loss. Where the host's
//! QEMU plugin ran (vm/insns.rs), also by each program's guest instructions counted on its own
//! vCPU, which bpf_stats under -icount cannot give. The guests run under TCG: the figures are
//! ratios between tools measured on the same emulated machine, never nanoseconds to quote.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use serde_json::{Value, json};

use super::{
    Verdict,
    common::{step_not_run, value},
    json::Trailer,
};
use crate::vm::msitrace::{self, Msitrace};

/// Per hook (`kprobe:hv_irq_mask`, `kretprobe:…`, `tracepoint:vector_update`): (run_ns, runs).
type HookCosts = BTreeMap<String, (u64, u64)>;

/// One tool through one burst.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Phase {
    pub hooks: HookCosts,
    /// Records the programs produced, those user space received, and the difference: what
    /// was lost, whether the tool reported it (`reported_lost`) or not.
    pub produced: u64,
    pub delivered: u64,
    pub lost: u64,
    pub reported_lost: u64,
    /// msitrace: the events its file holds (its records and its own samples).
    pub file_events: u64,
    /// The burst: vector-move rounds and their seconds by the guest's clock.
    pub rounds: u64,
    pub secs: f64,
    /// The consumer's context switches over the burst and the drain after it, all threads
    /// (none in passes recorded before the guest counted them).
    pub switches: Option<u64>,
    /// Per hook, the programs' own instructions, counted per vCPU by the QEMU plugin
    /// (vm/insns.rs); empty where the run had no plugin.
    pub own: OwnCosts,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pass {
    pub msitrace: Phase,
    pub bpftrace: Phase,
    pub empty: Phase,
}

/// What one pass says, per event in the hooks' mix of msitrace's own burst.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub msitrace_ns: f64,
    pub bpftrace_ns: f64,
    pub empty_ns: f64,
    pub ratio: f64,
    /// (msitrace − empty) / (bpftrace − empty); none when bpftrace is no dearer than empty.
    pub above_empty: Option<f64>,
    pub msitrace_evps: f64,
    pub bpftrace_evps: f64,
    pub evps_ratio: f64,
    /// Per hook: msitrace's ns per event over bpftrace's.
    pub per_hook: BTreeMap<String, f64>,
}

/// `msitrace probes --json`: each attached program's hook, keyed by msitrace's probe name.
/// A `fallback` hook is a kprobe or, on `…:return`, a kretprobe like any other.
pub fn hooks_of_probes(probes: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // The list alone, in files from before the schema's wrapper.
    let list = probes["probes"].as_array().or(probes.as_array());
    for p in list.into_iter().flatten() {
        let (Some(probe), Some(method), Some(sym), Some(hook)) = (
            p["probe"].as_str(),
            p["method"].as_str(),
            p["attached_symbol"].as_str(),
            p["hook"].as_str(),
        ) else {
            continue;
        };
        if p["status"].as_str() != Some("attached") {
            continue;
        }
        let hook = match method {
            // By the event name alone, as bpftool names it.
            "tracepoint" => format!("tracepoint:{}", sym.rsplit(':').next().unwrap_or(sym)),
            "kprobe" | "kretprobe" | "fallback" if hook.ends_with(":return") => {
                format!("kretprobe:{sym}")
            }
            "kprobe" | "kretprobe" | "fallback" => format!("kprobe:{sym}"),
            _ => continue,
        };
        out.insert(probe.to_string(), hook);
    }
    out
}

/// msitrace's phase from its trailer: its programs' run time by hook, and its records.
pub fn msitrace_phase(trailer: &Trailer, hooks: &BTreeMap<String, String>) -> Phase {
    let mut ph = Phase::default();
    for (probe, ns, runs) in &trailer.bpf_stats {
        if let Some(h) = hooks.get(probe) {
            let e = ph.hooks.entry(h.clone()).or_default();
            e.0 += ns;
            e.1 += runs;
        }
    }
    for (probe, hits, lost) in &trailer.counters {
        // Counts in a map, never a record.
        if probe == "IrqHandlerEntry" {
            continue;
        }
        ph.produced += hits;
        ph.lost += lost;
    }
    ph.delivered = ph.produced.saturating_sub(ph.lost);
    ph.reported_lost = ph.lost;
    ph.file_events = trailer.events;
    ph
}

/// A bpftrace phase from `bpftool perf show --json` and `prog show --json`, taken while it ran
/// (its programs only: those attached by process `pid`; BEGIN's uprobe is not a hook), and the
/// guest's count of its output (`delivered=N lost=M`, M from its "Lost N events" lines). What
/// its programs produced and no line shows is lost, reported or not: in the guests bpftrace
/// left about half of a burst's records neither printed nor reported.
pub fn bpftrace_phase(pid: u32, perf: &Value, progs: &Value, lines: &str) -> Result<Phase, String> {
    let stats = by_id(progs, |p| {
        Some((
            p["run_time_ns"].as_u64().unwrap_or(0),
            p["run_cnt"].as_u64().unwrap_or(0),
        ))
    })?;
    let mut ph = Phase::default();
    for (hook, id) in attached(pid, perf)? {
        let (ns, runs) = stats
            .get(&id)
            .copied()
            .ok_or_else(|| format!("program {id} of {hook} is not in bpftool's list"))?;
        let e = ph.hooks.entry(hook).or_default();
        e.0 += ns;
        e.1 += runs;
        ph.produced += runs;
    }
    if ph.hooks.is_empty() {
        return Err(format!(
            "bpftool shows no kprobe or tracepoint of process {pid}"
        ));
    }
    ph.delivered = value(lines, "delivered=").ok_or("no count of bpftrace's lines")?;
    ph.reported_lost = value(lines, "lost=").ok_or("no count of bpftrace's lost events")?;
    ph.lost = ph.produced.saturating_sub(ph.delivered);
    Ok(ph)
}

/// What `f` takes from each program of `bpftool prog show --json`, by program id.
fn by_id<'a, T>(
    progs: &'a Value,
    f: impl Fn(&'a Value) -> Option<T>,
) -> Result<BTreeMap<u64, T>, String> {
    Ok(progs
        .as_array()
        .ok_or("bpftool prog show printed no list")?
        .iter()
        .filter_map(|p| Some((p["id"].as_u64()?, f(p)?)))
        .collect())
}

/// The programs process `pid` attached, by hook (`kprobe:…`, `kretprobe:…`,
/// `tracepoint:…`), from `bpftool perf show --json`: (hook, program id).
fn attached(pid: u32, perf: &Value) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for a in perf.as_array().ok_or("bpftool perf show printed no list")? {
        if a["pid"].as_u64() != Some(u64::from(pid)) {
            continue;
        }
        let kind = a["fd_type"].as_str().unwrap_or("");
        let target = match kind {
            "kprobe" | "kretprobe" => a["func"].as_str(),
            "tracepoint" => a["tracepoint"].as_str(),
            _ => None,
        };
        if let (Some(target), Some(id)) = (target, a["prog_id"].as_u64()) {
            out.push((format!("{kind}:{target}"), id));
        }
    }
    Ok(out)
}

/// One program's runs in a phase, as the plugin counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Own {
    pub insns: u64,
    pub runs: u64,
    /// The median run's instructions: the program's own path, without the runs an interrupt
    /// or a wait for the other vCPU (descheduled under -icount, so a spin lasts its slice)
    /// lengthened.
    pub median: u64,
    /// The median run's instructions in the program's own code (the JIT's, in the module
    /// area), without its helpers'; none in counts from before the plugin split them.
    pub code_median: Option<u64>,
}

/// The plugin's counts (insns.txt): per phase mark, per program entry address.
pub type InsnCounts = BTreeMap<u64, BTreeMap<u64, Own>>;

pub fn parse_insns(text: &str) -> InsnCounts {
    let mut out = InsnCounts::new();
    for line in text.lines() {
        let (Some(mark), Some(addr), Some(runs), Some(insns)) = (
            value::<u64>(line, "mark="),
            value::<String>(line, "addr=")
                .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()),
            value::<u64>(line, "runs="),
            value::<u64>(line, "insns="),
        ) else {
            continue;
        };
        out.entry(mark).or_default().insert(
            addr,
            Own {
                insns,
                runs,
                median: value(line, "median=").unwrap_or(0),
                code_median: value(line, "code_median="),
            },
        );
    }
    out
}

/// Over the plugin's marked phases: program entries seen, and those whose return was not.
pub fn unmatched(text: &str) -> (u64, u64) {
    text.lines()
        .filter(|l| value::<u64>(l, "mark=").is_some_and(|m| m != 0))
        .fold((0, 0), |(e, u), l| {
            (
                e + value::<u64>(l, "entries=").unwrap_or(0),
                u + value::<u64>(l, "unmatched=").unwrap_or(0),
            )
        })
}

/// The plugin's mark for a pass's phase (tests/guest/vmt.sh, stream_phase).
pub fn mark(pass: u64, tool: &str) -> u64 {
    pass * 4
        + match tool {
            "msitrace" => 1,
            "bpftrace" => 2,
            _ => 3,
        }
}

/// The eBPF programs in the guest's /proc/kallsyms: (entry address, tag, name). The kernel
/// names a program `bpf_prog_<tag>_<name>`, the name in full from BTF where bpftool's is cut
/// at 15 characters, and lists them in the order they were added.
fn bpf_symbols(kallsyms: &str) -> Vec<(u64, &str, &str)> {
    kallsyms
        .lines()
        .filter(|l| l.ends_with("[bpf]"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let (tag, name) = f.nth(1)?.strip_prefix("bpf_prog_")?.split_once('_')?;
            Some((addr, tag, name))
        })
        .collect()
}

/// The own instructions of process `pid`'s programs by hook: bpftool gives each attached
/// program's id, tag and name; the plugin knows a program by its entry address. Programs
/// alike in tag and name (the empty programs) are paired in load order, which is their ids'.
pub fn own_costs(
    counts: &BTreeMap<u64, Own>,
    kallsyms: &str,
    perf: &Value,
    progs: &Value,
    pid: u32,
) -> Result<OwnCosts, String> {
    let syms = bpf_symbols(kallsyms);
    let named = by_id(progs, |p| {
        Some((p["tag"].as_str()?, p["name"].as_str().unwrap_or("")))
    })?;
    let mut ids: Vec<(String, u64)> = attached(pid, perf)?;
    ids.sort_by_key(|(_, id)| *id);
    let mut taken = vec![false; syms.len()];
    let mut out = OwnCosts::default();
    for (hook, id) in ids {
        let &(tag, name) = named
            .get(&id)
            .ok_or_else(|| format!("program {id} of {hook} is not in bpftool's list"))?;
        let i = (0..syms.len())
            .find(|&i| !taken[i] && syms[i].1 == tag && syms[i].2.starts_with(name))
            .ok_or_else(|| {
                format!(
                    "program {id} of {hook} (bpf_prog_{tag}_{name}) is not in the guest's kallsyms"
                )
            })?;
        taken[i] = true;
        add_own(&mut out, hook, counts, syms[i].0);
    }
    Ok(out)
}

/// msitrace's programs' own instructions by hook. Its kprobes are bpf_links, whose perf
/// events `bpftool perf show` does not list; the program on a probe is the one the eBPF
/// object names for it, loaded once.
pub fn msitrace_own_costs(
    counts: &BTreeMap<u64, Own>,
    kallsyms: &str,
    hooks: &BTreeMap<String, String>,
) -> Result<OwnCosts, String> {
    let syms = bpf_symbols(kallsyms);
    let mut out = OwnCosts::default();
    for (probe, hook) in hooks {
        let program = tracer_common::ProbeId::ALL
            .into_iter()
            .find(|p| format!("{p:?}") == *probe)
            .ok_or_else(|| format!("msitrace's probe {probe} is not in its eBPF object"))?
            .program();
        let &(addr, ..) = syms
            .iter()
            .find(|(_, _, name)| *name == program)
            .ok_or_else(|| {
                format!("msitrace's program {program} ({hook}) is not in the guest's kallsyms")
            })?;
        add_own(&mut out, hook.clone(), counts, addr);
    }
    Ok(out)
}

/// Per hook: (instructions, runs) in all, (median run × runs, runs), and the same for the
/// median run's own code (empty where the counts do not split it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnCosts {
    pub all: HookCosts,
    pub median: HookCosts,
    pub code: HookCosts,
}

/// Which of a program's instruction counts a comparison takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OwnKind {
    /// The median run, helpers included.
    Median,
    /// All runs, what lengthened some included.
    All,
    /// The median run's own code, helpers left out.
    Code,
}

fn add_own(out: &mut OwnCosts, hook: String, counts: &BTreeMap<u64, Own>, addr: u64) {
    let o = counts.get(&addr).copied().unwrap_or_default();
    let e = out.all.entry(hook.clone()).or_default();
    e.0 += o.insns;
    e.1 += o.runs;
    let e = out.median.entry(hook.clone()).or_default();
    e.0 += o.median * o.runs;
    e.1 += o.runs;
    if let Some(code) = o.code_median {
        let e = out.code.entry(hook).or_default();
        e.0 += code * o.runs;
        e.1 += o.runs;
    }
}

/// `rounds=N from=T0 to=T1` (the guest's uptime).
pub fn parse_burst(text: &str) -> Option<(u64, f64)> {
    let rounds = value(text, "rounds=")?;
    let from: f64 = value(text, "from=")?;
    let to: f64 = value(text, "to=")?;
    (to > from).then_some((rounds, to - from))
}

/// ns per event of `ph` in the mix `weights` (msitrace's runs per hook).
fn in_mix(ph: &Phase, weights: &BTreeMap<&String, u64>) -> f64 {
    let total: u64 = weights.values().sum();
    weights
        .iter()
        .map(|(h, &w)| {
            let (ns, runs) = ph.hooks.get(*h).copied().unwrap_or((0, 0));
            w as f64 * ns as f64 / runs.max(1) as f64
        })
        .sum::<f64>()
        / total.max(1) as f64
}

impl Pass {
    /// The pass by the programs' own instructions (per vCPU), where the plugin counted them
    /// (and, for [`OwnKind::Code`], split them): its figures' "ns" are then instructions.
    pub fn own(&self, kind: OwnKind) -> Option<Pass> {
        let pick = |ph: &Phase| match kind {
            OwnKind::Median => ph.own.median.clone(),
            OwnKind::All => ph.own.all.clone(),
            OwnKind::Code => ph.own.code.clone(),
        };
        let own = |ph: &Phase| Phase {
            hooks: pick(ph),
            ..ph.clone()
        };
        (!pick(&self.msitrace).is_empty()).then(|| Pass {
            msitrace: own(&self.msitrace),
            bpftrace: own(&self.bpftrace),
            empty: own(&self.empty),
        })
    }

    /// The figures, or why the pass compares nothing: every hook msitrace's programs ran on
    /// must have run bpftrace's and the empty program, and every tool must have had events.
    pub fn figures(&self) -> Result<Figures, String> {
        let weights: BTreeMap<&String, u64> = self
            .msitrace
            .hooks
            .iter()
            .filter(|(_, (_, runs))| *runs > 0)
            .map(|(h, (_, runs))| (h, *runs))
            .collect();
        if weights.is_empty() {
            return Err("msitrace's programs never ran in the burst".into());
        }
        for (tool, ph) in [
            ("bpftrace", &self.bpftrace),
            ("the empty program", &self.empty),
        ] {
            let missing: Vec<&str> = weights
                .keys()
                .filter(|h| ph.hooks.get(**h).is_none_or(|(_, runs)| *runs == 0))
                .map(|h| h.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{tool} did not run on {} where msitrace did",
                    missing.join(", ")
                ));
            }
        }
        for (tool, ph) in [("msitrace", &self.msitrace), ("bpftrace", &self.bpftrace)] {
            if ph.delivered == 0 {
                return Err(format!("{tool} delivered no event to user space"));
            }
            if ph.secs <= 0.0 {
                return Err(format!("{tool}'s burst has no duration"));
            }
        }
        let m = in_mix(&self.msitrace, &weights);
        let b = in_mix(&self.bpftrace, &weights);
        let e = in_mix(&self.empty, &weights);
        let per_hook = weights
            .keys()
            .map(|h| {
                let per = |ph: &Phase| {
                    let (ns, runs) = ph.hooks[*h];
                    ns as f64 / runs.max(1) as f64
                };
                ((*h).clone(), per(&self.msitrace) / per(&self.bpftrace))
            })
            .collect();
        let evps = |ph: &Phase| ph.delivered as f64 / ph.secs;
        Ok(Figures {
            msitrace_ns: m,
            bpftrace_ns: b,
            empty_ns: e,
            ratio: m / b,
            above_empty: (b > e).then(|| (m - e) / (b - e)),
            msitrace_evps: evps(&self.msitrace),
            bpftrace_evps: evps(&self.bpftrace),
            evps_ratio: evps(&self.msitrace) / evps(&self.bpftrace),
            per_hook,
        })
    }
}

/// Reads a pass's trailer as the host's msitrace dumps it, kept beside the trace as
/// trailer.json (the trace is read once; a fixture needs only the JSON).
fn trailer(dir: &Path, m: Option<&Msitrace>) -> Result<Trailer, String> {
    let cached = dir.join("trailer.json");
    if let Ok(text) = fs::read_to_string(&cached) {
        return serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cached.display()));
    }
    let m = m.ok_or("msitrace is needed on the host to read the trailer")?;
    let t = msitrace::trailer(m, &[dir.join("trace.msit")])
        .map_err(|e| format!("msitrace dump: {e:#}"))?
        .ok_or("msitrace's recording has no trailer")?;
    let _ = fs::write(
        &cached,
        json!({"counters": t.counters, "bpf_stats": t.bpf_stats, "decode_errors": t.decode_errors, "events": t.events})
            .to_string(),
    );
    Ok(t)
}

fn read(p: &Path) -> Result<String, String> {
    fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn read_json(p: &Path) -> Result<Value, String> {
    serde_json::from_str(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))
}

/// One tool's phase of the pass in `dir` (`pass-N/<tool>`).
fn phase(
    dir: &Path,
    tool: &str,
    hooks: &BTreeMap<String, String>,
    m: Option<&Msitrace>,
    counts: Option<&BTreeMap<u64, Own>>,
) -> Result<Phase, String> {
    let d = dir.join(tool);
    let rc = read(&d.join("rc"))?;
    if rc.trim() != "0" {
        let err = fs::read_to_string(d.join("tool.err")).unwrap_or_default();
        return Err(format!(
            "{tool} exited with {} on SIGINT: {}",
            rc.trim(),
            err.lines().last().unwrap_or("")
        ));
    }
    // bpftrace's and the empty programs' pid and bpftool's view of them, read once.
    let bpftool = || -> Result<(u32, Value, Value), String> {
        let pid = read(&d.join("pid"))?
            .trim()
            .parse()
            .map_err(|e| format!("{tool}'s pid: {e}"))?;
        Ok((
            pid,
            read_json(&d.join("perf.json"))?,
            read_json(&d.join("progs.json"))?,
        ))
    };
    let theirs = if tool == "msitrace" {
        None
    } else {
        Some(bpftool()?)
    };
    let mut ph = match &theirs {
        None => msitrace_phase(&trailer(&d, m)?, hooks),
        Some((pid, perf, progs)) => bpftrace_phase(*pid, perf, progs, &read(&d.join("lines"))?)
            .map_err(|e| format!("{tool}: {e}"))?,
    };
    let burst = read(&d.join("burst"))?;
    let (rounds, secs) =
        parse_burst(&burst).ok_or_else(|| format!("{tool}'s burst timing is unreadable"))?;
    ph.rounds = rounds;
    ph.secs = secs;
    ph.switches = value(&burst, "switches=");
    if let Some(counts) = counts {
        let kallsyms = read(&d.join("kallsyms"))?;
        ph.own = match &theirs {
            None => msitrace_own_costs(counts, &kallsyms, hooks),
            Some((pid, perf, progs)) => own_costs(counts, &kallsyms, perf, progs, *pid),
        }
        .map_err(|e| format!("{tool}'s instruction counts: {e}"))?;
    }
    Ok(ph)
}

/// Every pass the guest left in the step's directory, in order.
pub fn load(dir: &Path, m: Option<&Msitrace>) -> Result<Vec<Pass>, String> {
    let hooks = hooks_of_probes(&read_json(&dir.join("probes.json"))?);
    // Runs before the plugin, and fixtures, have no counts.
    let counts = fs::read_to_string(dir.join("insns.txt"))
        .ok()
        .map(|t| parse_insns(&t));
    let none = BTreeMap::new();
    let mut passes = Vec::new();
    for n in 1.. {
        let p = dir.join(format!("pass-{n}"));
        if !p.exists() {
            break;
        }
        let tool = |t: &str| {
            let c = counts.as_ref().map(|c| c.get(&mark(n, t)).unwrap_or(&none));
            phase(&p, t, &hooks, m, c).map_err(|e| format!("pass {n}: {e}"))
        };
        passes.push(Pass {
            msitrace: tool("msitrace")?,
            bpftrace: tool("bpftrace")?,
            empty: tool("empty")?,
        });
    }
    if passes.is_empty() {
        return Err("the guest left no pass of the comparison".into());
    }
    Ok(passes)
}

/// "median [min–max]".
pub fn spread(v: &[f64], prec: usize) -> String {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(lo), Some(hi)) => format!("{:.prec$} [{lo:.prec$}–{hi:.prec$}]", v[v.len() / 2]),
        _ => "none".into(),
    }
}

/// The comparison over its passes, for the table, bench and the JSON record.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub passes: Vec<Pass>,
    pub figures: Vec<Figures>,
    /// By the programs' own instructions, where the plugin counted them, one per pass: by
    /// each program's median run, and by all its runs.
    pub own: Vec<Figures>,
    pub own_all: Vec<Figures>,
    /// By the median run's own code, without the helpers, where the plugin split the counts.
    pub own_code: Vec<Figures>,
}

impl Comparison {
    pub fn new(passes: Vec<Pass>) -> Result<Comparison, String> {
        let figures = passes
            .iter()
            .enumerate()
            .map(|(i, p)| p.figures().map_err(|e| format!("pass {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        let own = |kind| {
            passes
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    Some(p.own(kind)?.figures().map_err(|e| {
                        format!("pass {}, by the programs' own instructions: {e}", i + 1)
                    }))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Comparison {
            own: own(OwnKind::Median)?,
            own_all: own(OwnKind::All)?,
            own_code: own(OwnKind::Code)?,
            passes,
            figures,
        })
    }

    fn col(&self, f: impl Fn(&Figures) -> Option<f64>) -> Vec<f64> {
        self.figures.iter().filter_map(f).collect()
    }

    /// msitrace / bpftrace, and the same above the empty program, from each hook's cheapest
    /// pass, weighted by msitrace's runs on it over all passes. Under instruction counting the
    /// guest's clock also counts the other vCPU, whose work lands in whichever program is
    /// running and only ever adds: the minimum is each program's own cost, the median is not
    /// (and which tool that work burdens more differs from run to run).
    pub fn cheapest(&self) -> Option<(f64, Option<f64>)> {
        let mut weights: BTreeMap<&String, u64> = BTreeMap::new();
        for p in &self.passes {
            for (h, (_, runs)) in &p.msitrace.hooks {
                if *runs > 0 {
                    *weights.entry(h).or_default() += runs;
                }
            }
        }
        let total: u64 = weights.values().sum();
        if total == 0 {
            return None;
        }
        let mix = |tool: fn(&Pass) -> &Phase| -> Option<f64> {
            let mut sum = 0.0;
            for (h, &w) in &weights {
                let min = self
                    .passes
                    .iter()
                    .filter_map(|p| match tool(p).hooks.get(*h) {
                        Some(&(ns, runs)) if runs > 0 => Some(ns as f64 / runs as f64),
                        _ => None,
                    })
                    .min_by(f64::total_cmp)?;
                sum += w as f64 * min;
            }
            Some(sum / total as f64)
        };
        let (m, b, e) = (
            mix(|p| &p.msitrace)?,
            mix(|p| &p.bpftrace)?,
            mix(|p| &p.empty)?,
        );
        Some((m / b, (b > e).then(|| (m - e) / (b - e))))
    }

    /// The headline lines, also what `cargo xtask bench` prints.
    pub fn lines(&self) -> Vec<(String, String)> {
        let n = self.figures.len();
        let lost = |f: fn(&Pass) -> &Phase| {
            self.passes
                .iter()
                .map(|p| {
                    let ph = f(p);
                    format!(
                        "{}/{} ({} reported)",
                        ph.lost, ph.produced, ph.reported_lost
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let of = |figs: &[Figures], f: fn(&Figures) -> Option<f64>, prec| {
            spread(&figs.iter().filter_map(f).collect::<Vec<_>>(), prec)
        };
        let own = |f, prec| of(&self.own, f, prec);
        // The ratio and each tool's instructions an event.
        let per_event = |figs: &[Figures]| {
            format!(
                "{}; instructions an event: msitrace {}, bpftrace {}",
                of(figs, |f| Some(f.ratio), 2),
                of(figs, |f| Some(f.msitrace_ns), 0),
                of(figs, |f| Some(f.bpftrace_ns), 0)
            )
        };
        let mut lines = Vec::new();
        if !self.own.is_empty() {
            lines.extend([
                (
                    "per event by each program's median run, guest instructions counted on its own vCPU, msitrace / bpftrace"
                        .to_string(),
                    format!(
                        "{} over {} passes (target <= 0.5)",
                        own(|f| Some(f.ratio), 2),
                        self.own.len()
                    ),
                ),
                (
                    "the same above the empty program, (msitrace - empty) / (bpftrace - empty)"
                        .to_string(),
                    format!("{} (target <= 0.5)", own(|f| f.above_empty, 2)),
                ),
                (
                    "guest instructions an event by the median runs".to_string(),
                    format!(
                        "msitrace {}, bpftrace {}, empty program {}",
                        own(|f| Some(f.msitrace_ns), 0),
                        own(|f| Some(f.bpftrace_ns), 0),
                        own(|f| Some(f.empty_ns), 0)
                    ),
                ),
            ]);
        }
        if !self.own_code.is_empty() {
            lines.push((
                "of which the programs' own code (the JIT's, helpers left out), by the median runs, msitrace / bpftrace"
                    .to_string(),
                per_event(&self.own_code),
            ));
        }
        if !self.own.is_empty() {
            lines.push((
                "the same by all runs (interrupts and waits for the other vCPU included), msitrace / bpftrace"
                    .to_string(),
                per_event(&self.own_all),
            ));
        }
        lines.extend([
            (
                "per event, msitrace / bpftrace".into(),
                format!(
                    "{} over {n} passes (target <= 0.5)",
                    spread(&self.col(|f| Some(f.ratio)), 2)
                ),
            ),
            (
                "per event above the empty program, (msitrace - empty) / (bpftrace - empty)".into(),
                format!(
                    "{} (target <= 0.5)",
                    spread(&self.col(|f| f.above_empty), 2)
                ),
            ),
            (
                "per event by each hook's cheapest pass, msitrace / bpftrace (above the empty program)"
                    .into(),
                match self.cheapest() {
                    Some((r, above)) => format!(
                        "{r:.2} ({}) (target <= 0.5)",
                        above.map_or("none".into(), |a| format!("{a:.2}"))
                    ),
                    None => "none".into(),
                },
            ),
            (
                "events delivered to user space per second, msitrace / bpftrace".into(),
                spread(&self.col(|f| Some(f.evps_ratio)), 2),
            ),
            (
                "consumer wake-ups (context switches) per 1,000 events delivered".into(),
                {
                    let per = |f: fn(&Pass) -> &Phase| {
                        let v: Vec<f64> = self
                            .passes
                            .iter()
                            .filter_map(|p| {
                                let ph = f(p);
                                Some(ph.switches? as f64 * 1000.0 / ph.delivered.max(1) as f64)
                            })
                            .collect();
                        spread(&v, 1)
                    };
                    format!(
                        "msitrace {}, bpftrace {}",
                        per(|p| &p.msitrace),
                        per(|p| &p.bpftrace)
                    )
                },
            ),
            (
                "lost / produced per pass".into(),
                format!(
                    "msitrace {}; bpftrace {}",
                    lost(|p| &p.msitrace),
                    lost(|p| &p.bpftrace)
                ),
            ),
        ]);
        lines
    }

    pub fn to_json(&self) -> Value {
        let phase = |ph: &Phase| {
            json!({
                "produced": ph.produced, "delivered": ph.delivered, "lost": ph.lost,
                "reported_lost": ph.reported_lost,
                "rounds": ph.rounds, "burst_secs": ph.secs, "switches": ph.switches,
                "hooks": ph.hooks.iter().map(|(h, (ns, runs))| (h.clone(), json!({"run_ns": ns, "runs": runs}))).collect::<serde_json::Map<_, _>>(),
                "own_insns": ph.own.all.iter().map(|(h, (insns, runs))| (h.clone(), json!({"insns": insns, "runs": runs, "median": ph.own.median.get(h).map(|(m, r)| m / (*r).max(1)), "code_median": ph.own.code.get(h).map(|(m, r)| m / (*r).max(1))}))).collect::<serde_json::Map<_, _>>(),
            })
        };
        let passes: Vec<Value> = self
            .passes
            .iter()
            .zip(&self.figures)
            .map(|(p, f)| {
                json!({
                    "msitrace": phase(&p.msitrace), "bpftrace": phase(&p.bpftrace), "empty": phase(&p.empty),
                    "ratio": f.ratio, "above_empty": f.above_empty, "evps_ratio": f.evps_ratio,
                    "per_hook_ratio": f.per_hook,
                })
            })
            .collect();
        json!({
            "lines": self.lines().into_iter().map(|(k, v)| json!({"figure": k, "value": v})).collect::<Vec<_>>(),
            "passes": passes,
        })
    }
}

/// The step's verdict: it ran, each pass compares the same hooks, and the counts add up.
pub fn check(dir: &Path, m: Option<&Msitrace>) -> Verdict {
    let mut v = Verdict::default();
    if let Some(why) = step_not_run(dir) {
        v.failures.push(why);
        return v;
    }
    match fs::read_to_string(dir.join("action.rc")).map(|s| s.trim().to_string()) {
        Ok(rc) if rc == "0" => {}
        Ok(rc) => v
            .failures
            .push(format!("the comparison failed in the guest (status {rc})")),
        Err(_) => v.failures.push("the comparison's status is missing".into()),
    }
    let c = match load(dir, m).and_then(Comparison::new) {
        Ok(c) => c,
        Err(e) => {
            v.failures.push(e);
            return v;
        }
    };
    for (i, p) in c.passes.iter().enumerate() {
        let rounds: BTreeSet<u64> = [&p.msitrace, &p.bpftrace, &p.empty]
            .iter()
            .map(|ph| ph.rounds)
            .collect();
        if rounds.len() != 1 {
            v.failures.push(format!(
                "pass {}: the tools saw different bursts ({rounds:?} rounds)",
                i + 1
            ));
        }
        // One printf a run: bpftrace cannot print or report more than its programs produced
        // (its lines and programs would not be the same).
        let b = &p.bpftrace;
        if b.delivered + b.reported_lost > b.produced + b.produced / 100 + 5 {
            v.failures.push(format!(
                "pass {}: bpftrace's programs ran {} times, but {} lines came out and {} were reported lost",
                i + 1,
                b.produced,
                b.delivered,
                b.reported_lost
            ));
        }
        let m = &p.msitrace;
        if m.file_events < m.delivered {
            v.failures.push(format!(
                "pass {}: msitrace's programs put {} records in its ring, its file holds {} events",
                i + 1,
                m.delivered,
                m.file_events
            ));
        }
    }
    v.facts
        .extend(c.lines().into_iter().map(|(k, val)| format!("{k}: {val}")));
    // A return the plugin missed leaves that run out of its counts, not in another's; many
    // would mean it no longer recognises the programs' code.
    if let Ok(text) = fs::read_to_string(dir.join("insns.txt")) {
        let (entries, lost) = unmatched(&text);
        v.facts.push(format!(
            "instruction counts: {entries} program entries, {lost} whose return was not seen"
        ));
        if lost * 20 > entries {
            v.failures.push(format!(
                "the instruction counts missed the return of {lost} of {entries} program runs"
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(hooks: &[(&str, u64, u64)], delivered: u64, secs: f64) -> Phase {
        Phase {
            hooks: hooks
                .iter()
                .map(|(h, ns, runs)| (h.to_string(), (*ns, *runs)))
                .collect(),
            produced: delivered,
            delivered,
            lost: 0,
            reported_lost: 0,
            file_events: delivered,
            rounds: 10,
            secs,
            switches: None,
            own: OwnCosts::default(),
        }
    }

    #[test]
    fn per_event_costs_are_compared_in_msitraces_own_mix_of_hooks() {
        // msitrace: 3 runs at 100 ns on A, 1 run at 500 ns on B: 200 ns an event in its mix.
        // bpftrace ran A and B in another proportion: its ns per event on each hook is taken
        // in msitrace's mix (3 x 300 + 1 x 1300) / 4 = 550, not its own total / runs.
        let p = Pass {
            msitrace: phase(&[("kprobe:a", 300, 3), ("kprobe:b", 500, 1)], 4, 2.0),
            bpftrace: phase(&[("kprobe:a", 300, 1), ("kprobe:b", 13000, 10)], 11, 4.0),
            empty: phase(
                &[
                    ("kprobe:a", 150, 3),
                    ("kprobe:b", 50, 1),
                    ("kprobe:c", 9, 9),
                ],
                0,
                2.0,
            ),
        };
        let f = p.figures().unwrap();
        assert_eq!(
            (f.msitrace_ns, f.bpftrace_ns, f.empty_ns),
            (200.0, 550.0, 50.0)
        );
        assert_eq!(f.ratio, 200.0 / 550.0);
        assert_eq!(f.above_empty, Some(150.0 / 500.0));
        assert_eq!((f.msitrace_evps, f.bpftrace_evps), (2.0, 2.75));
        assert_eq!(f.per_hook["kprobe:b"], 500.0 / 1300.0);

        let mut lacking = p.clone();
        lacking.bpftrace.hooks.remove("kprobe:b");
        let e = lacking.figures().unwrap_err();
        assert!(e.contains("bpftrace did not run on kprobe:b"), "{e}");
        let mut silent = p.clone();
        silent.bpftrace.delivered = 0;
        assert!(
            silent
                .figures()
                .unwrap_err()
                .contains("bpftrace delivered no event")
        );
        // An empty program dearer than bpftrace's gives no figure above it, not a negative one.
        let mut dear = p;
        dear.empty.hooks.insert("kprobe:a".into(), (30000, 3));
        assert_eq!(dear.figures().unwrap().above_empty, None);
    }

    #[test]
    fn msitraces_probes_are_named_as_bpftool_names_their_hooks() {
        // A real guest's `msitrace probes --json` (tests/fixtures/vm/6.12-hibernate.buggy.verify).
        let path = crate::util::repo_root()
            .join("tests/fixtures/vm/6.12-hibernate.buggy.verify/probes.json");
        let hooks =
            hooks_of_probes(&serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap());
        assert_eq!(hooks["HvMaskEnter"], "kprobe:hv_irq_mask");
        assert_eq!(hooks["HvMaskExit"], "kretprobe:hv_irq_mask");
        assert_eq!(hooks["SetAffinityExit"], "kretprobe:irq_do_set_affinity");
        assert_eq!(hooks["VectorUpdate"], "tracepoint:vector_update");
        assert!(
            !hooks.contains_key("MigrateOneIrq"),
            "absent on 6.12: {hooks:?}"
        );
        assert!(
            !hooks.contains_key("IrqHandlerEntry"),
            "not attached by default: {hooks:?}"
        );
    }

    /// A real stream step (tests/fixtures/vm/README.md): 6.12 under TCG, three passes.
    fn fixture() -> std::path::PathBuf {
        crate::util::repo_root().join("tests/fixtures/vm/6.12-stream.fixed")
    }

    #[test]
    fn a_recorded_comparison_is_judged_as_it_was_in_the_rig() {
        let v = check(&fixture(), None);
        assert!(v.pass(), "{:?}", v.failures);
        assert_eq!(
            v.facts,
            [
                "per event by each program's median run, guest instructions counted on its own vCPU, msitrace / bpftrace: 0.44 [0.44–0.44] over 6 passes (target <= 0.5)",
                "the same above the empty program, (msitrace - empty) / (bpftrace - empty): 0.44 [0.44–0.44] (target <= 0.5)",
                "guest instructions an event by the median runs: msitrace 1077 [1077–1083], bpftrace 2459 [2455–2470], empty program 9 [9–9]",
                "of which the programs' own code (the JIT's, helpers left out), by the median runs, msitrace / bpftrace: 2.95 [2.95–2.96]; instructions an event: msitrace 553 [552–556], bpftrace 187 [187–188]",
                "the same by all runs (interrupts and waits for the other vCPU included), msitrace / bpftrace: 0.44 [0.44–0.44]; instructions an event: msitrace 1078 [1077–1083], bpftrace 2460 [2456–2471]",
                "per event, msitrace / bpftrace: 0.48 [0.27–0.51] over 6 passes (target <= 0.5)",
                "per event above the empty program, (msitrace - empty) / (bpftrace - empty): 0.47 [0.27–0.50] (target <= 0.5)",
                "per event by each hook's cheapest pass, msitrace / bpftrace (above the empty program): 0.38 (0.37) (target <= 0.5)",
                "events delivered to user space per second, msitrace / bpftrace: 3.99 [3.86–4.13]",
                "consumer wake-ups (context switches) per 1,000 events delivered: msitrace 1.0 [0.7–1.7], bpftrace 3.3 [2.2–5.0]",
                "lost / produced per pass: msitrace 0/24276 (0 reported), 0/23188 (0 reported), 0/24137 (0 reported), 0/23087 (0 reported), 0/23165 (0 reported), 0/22972 (0 reported); bpftrace 16330/22952 (0 reported), 11908/24901 (0 reported), 12752/24771 (0 reported), 16527/23485 (0 reported), 16172/23148 (0 reported), 12229/24817 (0 reported)",
                "instruction counts: 518055 program entries, 0 whose return was not seen",
            ]
        );
        let passes = load(&fixture(), None).unwrap();
        // Every hook msitrace ran on in the burst, paired with bpftrace's program there.
        let f = passes[0].figures().unwrap();
        assert_eq!(f.per_hook.len(), 13, "{:?}", f.per_hook.keys());
        assert!(f.per_hook.contains_key("kretprobe:hv_irq_unmask"));
        assert!(f.per_hook.contains_key("tracepoint:vector_update"));
        assert_eq!(passes[1].bpftrace.delivered, 24901 - 11908);
        assert_eq!(passes[1].bpftrace.produced, 24901);
        // The plugin's counts reach msitrace's hooks through its programs' names: the
        // unmask's entry program runs 737 instructions of its own code in every run.
        assert_eq!(
            passes[0].msitrace.own.code["kprobe:hv_irq_unmask"],
            (737 * 2277, 2277)
        );
    }

    #[test]
    fn the_cheapest_pass_leaves_out_the_other_vcpus_work() {
        let ph = |a: u64, b: u64| Phase {
            hooks: [
                ("kprobe:a".to_string(), (a * 100, 100)),
                ("kprobe:b".to_string(), (b * 100, 100)),
            ]
            .into_iter()
            .collect(),
            produced: 200,
            delivered: 200,
            lost: 0,
            reported_lost: 0,
            file_events: 200,
            rounds: 10,
            secs: 1.0,
            switches: None,
            own: OwnCosts::default(),
        };
        // bpftrace's second pass caught the other vCPU's work on hook b.
        let passes = vec![
            Pass {
                msitrace: ph(10, 30),
                bpftrace: ph(20, 60),
                empty: ph(1, 1),
            },
            Pass {
                msitrace: ph(10, 30),
                bpftrace: ph(20, 600),
                empty: ph(1, 1),
            },
        ];
        let c = Comparison::new(passes).unwrap();
        let (r, above) = c.cheapest().unwrap();
        assert!((r - 0.5).abs() < 1e-9, "{r}");
        assert!((above.unwrap() - 38.0 / 78.0).abs() < 1e-9, "{above:?}");
        // The passes' own ratios: 0.5 and 40 / 620.
        assert!((c.figures[1].ratio - 40.0 / 620.0).abs() < 1e-9);
    }

    /// The fixture copied to a scratch directory, changed by `edit`, and judged.
    fn judge_changed(name: &str, edit: impl Fn(&Path)) -> Verdict {
        let dir =
            std::env::temp_dir().join(format!("msitrace-stream-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(fixture())
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot copy the fixture");
        edit(&dir);
        let v = check(&dir, None);
        let _ = fs::remove_dir_all(&dir);
        v
    }

    #[test]
    fn changed_outputs_fail_the_step() {
        let v = judge_changed("printed", |d| {
            fs::write(d.join("pass-2/bpftrace/lines"), "delivered=30000 lost=3\n").unwrap()
        });
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("pass 2: bpftrace's programs ran 24901 times, but 30000 lines")),
            "{:?}",
            v.failures
        );
        let v = judge_changed("unpaired", |d| {
            fs::remove_file(d.join("pass-3/empty/perf.json")).unwrap()
        });
        assert!(
            v.failures
                .iter()
                .any(|f| f.starts_with("pass 3: ") && f.contains("perf.json")),
            "{:?}",
            v.failures
        );
        let v = judge_changed("killed", |d| {
            fs::write(d.join("pass-1/empty/rc"), "137\n").unwrap()
        });
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("empty exited with 137")),
            "{:?}",
            v.failures
        );
        let v = judge_changed("failed", |d| fs::write(d.join("action.rc"), "1\n").unwrap());
        assert!(!v.pass());
    }

    #[test]
    fn the_consumers_wake_ups_are_counted_per_event_delivered() {
        // What each consumer delivered in the six passes; the guest's own counts replaced.
        let msitrace = [24276, 23188, 24137, 23087, 23165, 22972];
        let bpftrace = [
            22952 - 16330,
            24901 - 11908,
            24771 - 12752,
            23485 - 16527,
            23148 - 16172,
            24817 - 12229,
        ];
        let v = judge_changed("switches", |d| {
            for pass in 1..=6 {
                for (tool, n) in [
                    // One wake-up an event in pass 1, none after.
                    ("msitrace", if pass == 1 { msitrace[0] } else { 0 }),
                    ("bpftrace", bpftrace[pass - 1]),
                ] {
                    let f = d.join(format!("pass-{pass}/{tool}/burst"));
                    let burst: String = fs::read_to_string(&f)
                        .unwrap()
                        .lines()
                        .filter(|l| !l.starts_with("switches="))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    fs::write(&f, format!("{burst}switches={n}\n")).unwrap();
                }
            }
        });
        assert!(v.pass(), "{:?}", v.failures);
        assert!(
            v.facts.contains(
                &"consumer wake-ups (context switches) per 1,000 events delivered: msitrace 0.0 [0.0–1000.0], bpftrace 1000.0 [1000.0–1000.0]"
                    .to_string()
            ),
            "{:?}",
            v.facts
        );
    }

    #[test]
    fn bursts_and_line_counts_parse() {
        assert_eq!(
            parse_burst("rounds=600 from=10.5 to=14.0\n"),
            Some((600, 3.5))
        );
        assert_eq!(parse_burst("rounds=600 from=10.5 to=10.5"), None);
        assert_eq!(parse_burst("rounds=x from=1 to=2"), None);
    }

    #[test]
    fn instruction_counts_reach_their_hooks_through_kallsyms_and_bpftool() {
        // Pass 2's bpftrace phase (mark 10), and a line of another phase that must not count.
        let counts = parse_insns(
            "mark=10 addr=0xffffffffc0001000 runs=4 insns=400 median=90 common=90:3 code=120 code_median=30 code_common=30:4\n\
             mark=10 addr=0xffffffffc0002000 runs=2 insns=60\n\
             mark=10 addr=0xffffffffc0003000 runs=1 insns=30\n\
             mark=10 unmatched=1 entries=8 rets=40\n\
             mark=9 addr=0xffffffffc0001000 runs=9 insns=9\n",
        );
        assert_eq!(mark(2, "bpftrace"), 10);
        // Two programs alike in tag and name (kallsyms in load order, ids likewise), one named
        // in full from BTF where bpftool cuts the name at 15 characters.
        let kallsyms = "ffffffffc0003000 t bpf_prog_00aa_kprobe_x\t[bpf]\n\
                        ffffffffc0002000 t bpf_prog_00aa_kprobe_x\t[bpf]\n\
                        ffffffffc0001000 t bpf_prog_11bb_kprobe_pci_irq_mask_msix\t[bpf]\n";
        let progs = serde_json::json!([
            {"id": 7, "tag": "00aa", "name": "kprobe_x"},
            {"id": 9, "tag": "00aa", "name": "kprobe_x"},
            {"id": 8, "tag": "11bb", "name": "kprobe_pci_irq"},
        ]);
        let perf = serde_json::json!([
            {"pid": 42, "fd_type": "kretprobe", "func": "b", "prog_id": 9},
            {"pid": 42, "fd_type": "kprobe", "func": "a", "prog_id": 7},
            {"pid": 42, "fd_type": "kprobe", "func": "pci_irq_mask_msix", "prog_id": 8},
            {"pid": 1, "fd_type": "kprobe", "func": "other", "prog_id": 3},
        ]);
        let own = own_costs(&counts[&10], kallsyms, &perf, &progs, 42).unwrap();
        assert_eq!(own.all["kprobe:a"], (30, 1));
        assert_eq!(own.all["kretprobe:b"], (60, 2));
        assert_eq!(own.all["kprobe:pci_irq_mask_msix"], (400, 4));
        assert_eq!(own.median["kprobe:pci_irq_mask_msix"], (4 * 90, 4));
        assert_eq!(own.code["kprobe:pci_irq_mask_msix"], (4 * 30, 4));
        // Counts from before the plugin split code from helpers leave the split empty.
        assert!(!own.code.contains_key("kprobe:a"));
        let e = own_costs(&counts[&10], "", &perf, &progs, 42).unwrap_err();
        assert!(e.contains("not in the guest's kallsyms"), "{e}");
        assert_eq!(
            unmatched("mark=10 unmatched=1 entries=8 rets=4\nmark=0 unmatched=5 entries=9\n"),
            (8, 1)
        );
        // msitrace's by its programs' names (a subprogram's symbol is not a program's).
        let kallsyms = "ffffffffc0003000 t bpf_prog_00cc_try_irq_data_enter\t[bpf]\n\
                        ffffffffc0001000 t bpf_prog_00dd_hv_mask_enter\t[bpf]\n\
                        ffffffff81000000 T bpf_prog_free\n";
        let hooks: BTreeMap<String, String> =
            [("HvMaskEnter".to_string(), "kprobe:hv_irq_mask".to_string())].into();
        let own = msitrace_own_costs(&counts[&10], kallsyms, &hooks).unwrap();
        assert_eq!(own.all["kprobe:hv_irq_mask"], (400, 4));
        let hooks: BTreeMap<String, String> = [(
            "HvMaskExit".to_string(),
            "kretprobe:hv_irq_mask".to_string(),
        )]
        .into();
        let e = msitrace_own_costs(&counts[&10], kallsyms, &hooks).unwrap_err();
        assert!(e.contains("hv_mask_exit"), "{e}");
    }
}
