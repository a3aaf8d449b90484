//! What each msitrace program cost per event inside the guests, by the kernel's own BPF
//! statistics: the guest turns `kernel.bpf_stats_enabled` on at boot, msitrace keeps each
//! program's run_time_ns and run_cnt in its trailer, and this sums them over a kernel's steps.
//! The guests run under TCG, so the figures are emulated nanoseconds: they rank the programs
//! and track regressions, they are not what the programs cost on hardware.

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

use super::{
    checks::{self, json::Trailer},
    msitrace::Msitrace,
    plan::Step,
};

/// Per program: (run_ns, runs).
pub type Costs = BTreeMap<String, (u64, u64)>;

/// Add what the steps' trailers say to `into`.
pub fn add_steps(m: &Msitrace, steps: &[Step], artifacts: &Path, into: &mut Costs) {
    for &step in steps {
        let traces = checks::step_traces(step, &artifacts.join(step.id()));
        if traces.is_empty() {
            continue;
        }
        // A rotated set has one trailer, in its last file.
        let Ok(Some(trailer)) = super::msitrace::trailer(m, &traces) else {
            continue;
        };
        add_trailer(&trailer, into);
    }
}

fn add_trailer(trailer: &Trailer, into: &mut Costs) {
    for (probe, ns, runs) in &trailer.bpf_stats {
        let e = into.entry(probe.clone()).or_default();
        e.0 += ns;
        e.1 += runs;
    }
}

/// The table vm-test prints, one column per kernel.
pub fn render(per_kernel: &[(String, Costs)]) -> String {
    let mut probes: Vec<&String> = per_kernel.iter().flat_map(|(_, c)| c.keys()).collect();
    probes.sort();
    probes.dedup();
    if probes.is_empty() {
        return "vm: no program costs recorded (kernel.bpf_stats_enabled was off, or no trailer)\n"
            .into();
    }
    let mut out = String::from(
        "\nvm: in-kernel cost per event of each program, from bpf_stats (TCG-emulated ns, not hardware)\n",
    );
    out.push_str(&format!("  {:<22}", "program"));
    for (k, _) in per_kernel {
        out.push_str(&format!(" {:>20}", k));
    }
    out.push('\n');
    for p in probes {
        out.push_str(&format!("  {p:<22}"));
        for (_, c) in per_kernel {
            let cell = match c.get(p) {
                Some(&(ns, runs)) if runs > 0 => format!("{} ns x{runs}", ns / runs),
                _ => "-".into(),
            };
            out.push_str(&format!(" {cell:>20}"));
        }
        out.push('\n');
    }
    out
}

pub fn to_json(per_kernel: &[(String, Costs)]) -> Value {
    let kernels: serde_json::Map<String, Value> = per_kernel
        .iter()
        .map(|(k, c)| {
            let progs: serde_json::Map<String, Value> = c
                .iter()
                .map(|(p, &(ns, runs))| {
                    (
                        p.clone(),
                        json!({ "run_ns": ns, "runs": runs, "ns_per_event": ns.checked_div(runs) }),
                    )
                })
                .collect();
            (k.clone(), Value::Object(progs))
        })
        .collect();
    json!({ "source": "kernel.bpf_stats_enabled in QEMU TCG guests", "kernels": kernels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_trailers_and_renders_per_event() {
        let mut c = Costs::new();
        let t: Trailer = serde_json::from_value(
            json!({"bpf_stats": [["HvUnmaskEnter", 3000, 3], ["WriteMsiMsg", 500, 5]]}),
        )
        .unwrap();
        add_trailer(&t, &mut c);
        add_trailer(&t, &mut c);
        assert_eq!(c["HvUnmaskEnter"], (6000, 6));
        let text = render(&[("6.12".into(), c.clone())]);
        assert!(text.contains("1000 ns x6"), "{text}");
        assert!(text.contains("100 ns x10"), "{text}");
        let j = to_json(&[("6.12".into(), c)]);
        assert_eq!(j["kernels"]["6.12"]["WriteMsiMsg"]["ns_per_event"], 100);
    }
}
