//! `msitrace probes`: before anything else, what this kernel lets msitrace see — every hook,
//! attached or not and why, and the rules that lose their input.

use std::{collections::BTreeSet, io::Write, process::ExitCode};

use anyhow::Result;

use crate::{
    collector::{Collector, CollectorOptions},
    probes::{ProbeStatus, ProbesJson},
};

#[derive(clap::Args)]
pub struct Args {
    /// A JSON object: schema_version, and probes, an array of objects (hook, symbol,
    /// candidates: the symbols tried in order, attached_symbol: the one attached, method,
    /// status, reason, module, rules_losing_input, and for kprobes symbol_source: the table
    /// their symbol was looked up in, its limits and why better tables were not used).
    #[arg(long)]
    json: bool,
    /// Say on stderr where the time of starting went (BTF, eBPF object, kernel symbols, the
    /// verifier, attaching): seconds on an emulated machine.
    #[arg(long)]
    timings: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let statuses = rt.block_on(async {
        let collector = Collector::start(&CollectorOptions::default())?;
        let s = collector.statuses().to_vec();
        let missing: Vec<String> = collector
            .layout()
            .missing()
            .map(|f| {
                format!(
                    "{}: {}",
                    f.name,
                    f.reason.as_deref().unwrap_or("not in this kernel's BTF")
                )
            })
            .collect();
        anyhow::Ok((s, missing, collector.startup().clone()))
    })?;
    let (statuses, missing, startup) = statuses;
    if args.timings {
        eprintln!("msitrace: {startup}");
    }
    let mut out = std::io::stdout().lock();
    let r = if args.json {
        serde_json::to_writer_pretty(&mut out, &ProbesJson::new(&statuses))
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        write!(out, "{}", table(&statuses, &missing))
    };
    crate::output::stdout_result(r.and_then(|()| out.flush()))?;
    Ok(ExitCode::SUCCESS)
}

/// The human table, widths fitted to the content.
pub fn table(statuses: &[ProbeStatus], missing_fields: &[String]) -> String {
    let status = |s: &ProbeStatus| {
        serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let method = |s: &ProbeStatus| {
        serde_json::to_value(s.method)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let w_hook = statuses
        .iter()
        .map(|s| s.hook.len())
        .max()
        .unwrap_or(4)
        .max(4);
    // The symbol the hook is attached to, `-` when it is not; one attached under another name
    // than its first candidate (a renamed function) reads as that name.
    let symbol = |s: &ProbeStatus| s.attached_symbol.clone().unwrap_or_else(|| "-".into());
    let w_sym = statuses
        .iter()
        .map(|s| symbol(s).len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut t = format!(
        "{:<w_hook$}  {:<w_sym$}  {:<10}  {:<8}  {:<11}  REASON\n",
        "HOOK", "SYMBOL", "METHOD", "STATUS", "MODULE"
    );
    for s in statuses {
        t.push_str(&format!(
            "{:<w_hook$}  {:<w_sym$}  {:<10}  {:<8}  {:<11}  {}\n",
            s.hook,
            symbol(s),
            method(s),
            status(s),
            s.module.as_deref().unwrap_or("vmlinux"),
            s.reason.as_deref().unwrap_or("")
        ));
    }
    let (attached, used) = crate::probes::coverage(statuses);
    let rules: BTreeSet<&str> = statuses
        .iter()
        .flat_map(|s| s.rules_losing_input.iter().map(String::as_str))
        .collect();
    t.push_str(&format!("\n{attached} of {used} hooks attached.\n"));
    // Every kprobe row of one run carries the same source: the table was read once.
    if let Some(src) = statuses.iter().find_map(|s| s.symbol_source.as_ref()) {
        t.push_str(&format!("Kernel symbols from {}.\n", src.describe()));
    }
    if rules.is_empty() {
        t.push_str("Every rule has its input.\n");
    } else {
        t.push_str(&format!(
            "Rules losing input: {}\n",
            rules.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if !missing_fields.is_empty() {
        t.push_str("Fields not on this kernel (not reported by the probes that read them):\n");
        for f in missing_fields {
            t.push_str(&format!("  {f}\n"));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::probes::Status;
    use crate::probes::{SymbolSource, SymbolTable};

    #[test]
    fn the_table_says_which_candidate_each_hook_is_attached_to() {
        let mut rows = EngineConfig::all_probes_attached();
        let compose = rows
            .iter_mut()
            .find(|r| r.hook == "hv_compose_msi_msg")
            .unwrap();
        compose.attached_symbol = Some("hv_vmbus_compose_msi_msg".into());
        let unmask = rows.iter_mut().find(|r| r.hook == "hv_irq_unmask").unwrap();
        unmask.status = Status::Pending;
        unmask.attached_symbol = None;
        let t = table(&rows, &[]);
        let line = |hook: &str| {
            t.lines()
                .find(|l| l.split_whitespace().next() == Some(hook))
                .unwrap_or_else(|| panic!("{t}"))
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            t.lines().next().unwrap().split_whitespace().nth(1),
            Some("SYMBOL")
        );
        assert_eq!(
            line("hv_compose_msi_msg"),
            ["hv_compose_msi_msg", "hv_vmbus_compose_msi_msg"]
        );
        assert_eq!(line("hv_irq_unmask"), ["hv_irq_unmask", "-"]);
        assert_eq!(
            line("irq_vectors:vector_update"),
            ["irq_vectors:vector_update", "irq_vectors:vector_update"]
        );
    }

    #[test]
    fn the_table_says_where_kernel_symbols_came_from_and_what_that_costs() {
        let mut rows = EngineConfig::all_probes_attached();
        assert!(
            !table(&rows, &[]).contains("Kernel symbols"),
            "no source, no line"
        );
        rows[0].symbol_source = Some(SymbolSource::new(
            SymbolTable::Btf,
            "/sys/kernel/btf",
            vec![
                "/proc/kallsyms: Permission denied".into(),
                "/sys/kernel/tracing/available_filter_functions: No such file or directory".into(),
            ],
        ));
        let t = table(&rows, &[]);
        let line = t
            .lines()
            .find(|l| l.starts_with("Kernel symbols from "))
            .unwrap_or_else(|| panic!("{t}"));
        assert!(
            line.starts_with(
                "Kernel symbols from /sys/kernel/btf (not used: /proc/kallsyms: Permission denied; /sys/kernel/tracing/available_filter_functions: No such file or directory); BTF lists functions by prototype"
            ),
            "{line}"
        );
        assert!(line.contains(".isra") && line.ends_with('.'), "{line}");
    }
}
