//! hv_stub's own counters and /proc/interrupts around the scenario: did the device's
//! interrupts really stop or keep coming, and did the driver do what its mode says.

use std::collections::BTreeMap;

use super::Verdict;
use crate::vm::plan::{Mode, Scenario, Step};

/// One vector line of /sys/kernel/debug/hv_stub/state, with `proc=` (its /proc/interrupts
/// total) appended by the guest.
#[derive(Clone, Debug, Default)]
pub(super) struct VectorState {
    index: u32,
    pub(super) irq: u32,
    pub(super) role: String,
    cpu: i64,
    n: BTreeMap<String, i64>,
}

impl VectorState {
    fn get(&self, k: &str) -> i64 {
        self.n.get(k).copied().unwrap_or(-1)
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct ModuleState {
    mode: String,
    n: BTreeMap<String, i64>,
    pub(super) vectors: Vec<VectorState>,
}

impl ModuleState {
    pub(super) fn parse(text: &str) -> Option<ModuleState> {
        let mut st = ModuleState::default();
        let mut header = false;
        for line in text.lines() {
            let kv: Vec<(&str, &str)> = line
                .split_whitespace()
                .filter_map(|t| t.split_once('='))
                .collect();
            if line.starts_with("mode=") {
                header = true;
                for (k, v) in kv {
                    if k == "mode" {
                        st.mode = v.to_string();
                    } else if let Ok(n) = v.parse() {
                        st.n.insert(k.to_string(), n);
                    }
                }
            } else if line.starts_with("vector=") {
                let mut v = VectorState::default();
                for (k, val) in kv {
                    match k {
                        "vector" => v.index = val.parse().ok()?,
                        "irq" => v.irq = val.parse().ok()?,
                        "role" => v.role = val.to_string(),
                        "cpu" => v.cpu = val.parse().unwrap_or(-1),
                        _ => {
                            if let Ok(n) = val.parse() {
                                v.n.insert(k.to_string(), n);
                            }
                        }
                    }
                }
                st.vectors.push(v);
            }
        }
        (header && !st.vectors.is_empty()).then_some(st)
    }

    pub(super) fn get(&self, k: &str) -> i64 {
        self.n.get(k).copied().unwrap_or(-1)
    }

    fn vector(&self, index: u32) -> Option<&VectorState> {
        self.vectors.iter().find(|v| v.index == index)
    }

    pub(super) fn control(&self) -> Option<&VectorState> {
        self.vectors.iter().find(|v| v.role == "control")
    }

    pub(super) fn tests(&self) -> impl Iterator<Item = &VectorState> {
        self.vectors.iter().filter(|v| v.role == "test")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    /// Every fire delivered at least once.
    Alive,
    /// Fired, nothing delivered.
    Dead,
    /// Some fires lost: neither a healthy nor a cut-off vector.
    Partial,
    NotFired,
}

/// QEMU's e1000e sends each message twice 128 us apart and the APIC may merge the two, so a
/// fire delivers one or two interrupts (tests/guest/vmt.sh spaces the fires apart).
fn liveness(fired: i64, delivered: i64) -> Live {
    match (fired, delivered) {
        (f, _) if f <= 0 => Live::NotFired,
        (_, 0) => Live::Dead,
        (f, d) if d >= f => Live::Alive,
        _ => Live::Partial,
    }
}

fn delta(a: &VectorState, b: &VectorState, k: &str) -> i64 {
    b.get(k) - a.get(k)
}

/// `s0`..`s1` is before the scenario, `after`..`s2` after it (`after` is `s1` but for the
/// burst).
pub(super) fn check_module(
    step: Step,
    s0: &ModuleState,
    s1: &ModuleState,
    after: &ModuleState,
    s2: &ModuleState,
    v: &mut Verdict,
) {
    if s2.mode != step.mode.name() {
        v.failures.push(format!(
            "hv_stub ran in mode {} instead of {}",
            s2.mode,
            step.mode.name()
        ));
    }
    let mut live_facts = Vec::new();
    for a in &s0.vectors {
        let (Some(b), Some(c)) = (s1.vector(a.index), s2.vector(a.index)) else {
            v.failures
                .push(format!("vector {} missing from a snapshot", a.index));
            continue;
        };
        let before = liveness(delta(a, b, "fired"), delta(a, b, "proc"));
        if before != Live::Alive {
            v.failures.push(format!(
                "irq {} ({}) before the scenario: {} of {} fires delivered; the rig itself is broken",
                a.irq,
                a.role,
                delta(a, b, "proc"),
                delta(a, b, "fired")
            ));
        }
        let bb = after.vector(a.index).unwrap_or(b);
        let fired = delta(bb, c, "fired");
        let got = delta(bb, c, "proc");
        let after = liveness(fired, got);
        let want = if a.role == "test" && step.expects_dead_test_vectors() {
            Live::Dead
        } else {
            Live::Alive
        };
        live_facts.push(format!("{}:{got}/{fired}", a.irq));
        if after != want {
            v.failures.push(format!(
                "irq {} ({}) after the scenario: {got} interrupts for {fired} fires, expected {}",
                a.irq,
                a.role,
                match want {
                    Live::Dead => "none (the bug cuts it off)",
                    _ => "at least one per fire",
                }
            ));
        }
        // handle_edge_irq counts an interrupt in /proc/interrupts before calling the handler,
        // but one that arrives while the handler runs on another CPU is only marked pending and
        // handled by the running flow's next loop, uncounted. That happens when a vector moves
        // (x86 moves it at its next interrupt and e1000e re-sends the message 128 us later, to
        // the new CPU): the handler may see more than /proc/interrupts, never fewer.
        if delta(bb, c, "handled") < got {
            v.failures.push(format!(
                "irq {}: /proc/interrupts counted {got} but hv_stub's handler only {}",
                a.irq,
                delta(bb, c, "handled")
            ));
        }
        let composes = delta(b, c, "composes");
        let skipped = delta(b, c, "unmask_skipped");
        let is_test = a.role == "test";
        // The plain vector is the kernel's own, which no Hyper-V compose touches.
        let is_plain = a.role == "plain";
        if step.scenario.resumes() && !is_plain {
            let recomposed = step.mode != Mode::Buggy || !is_test;
            if recomposed && composes < 1 {
                v.failures.push(format!(
                    "irq {}: hv_pci_resume did not re-compose it ({composes} composes)",
                    a.irq
                ));
            }
            if !recomposed && composes != 0 {
                v.failures.push(format!(
                    "irq {}: re-composed {composes} times in buggy mode",
                    a.irq
                ));
            }
        } else if composes != 0 && !is_plain {
            v.failures.push(format!(
                "irq {}: {composes} composes without a resume (x86 migrates without composing)",
                a.irq
            ));
        }
        if step.mode == Mode::Buggy
            && step.scenario.offlines_cpus()
            && step.scenario.resumes()
            && is_test
        {
            if skipped < 1 {
                v.failures.push(format!(
                    "irq {}: the buggy hv_irq_unmask never returned early (retarget never failed)",
                    a.irq
                ));
            }
            let got = (
                c.get("table_masked"),
                c.get("cache_masked"),
                c.get("genirq_masked"),
            );
            // Where pci-hyperv is an MSI parent (6.17 and later), the per-device chip unmasks
            // the device after hv_irq_unmask returns, whatever it did: the early return
            // cannot leave the vector masked there, and hv_stub, following it, does not.
            let (want, how) = if super::stale_mask_possible(s2) {
                (
                    (1, 1, 0),
                    "masked in the device table and the msi_desc cache while genirq says unmasked",
                )
            } else {
                (
                    (0, 0, 0),
                    "unmasked everywhere (this kernel's pci-hyperv leaves the device unmask to the per-device chip, after hv_irq_unmask)",
                )
            };
            if got != want {
                v.failures.push(format!(
                    "irq {}: expected {how}, got table={} cache={} genirq={}",
                    a.irq, got.0, got.1, got.2
                ));
            }
        } else if skipped != 0 {
            v.failures.push(format!(
                "irq {}: hv_irq_unmask returned early {skipped} times",
                a.irq
            ));
        }
        if step.scenario == Scenario::Hotplug && is_test && delta(b, c, "unmasks") < 1 {
            v.failures.push(format!(
                "irq {}: offlining its CPU did not go through hv_irq_unmask",
                a.irq
            ));
        }
    }
    let sys = s2.get("syscore_suspends") - s1.get("syscore_suspends");
    if step.scenario.reaches_syscore() && sys < 1 {
        v.failures.push(
            "the sleep never reached syscore_suspend: it did not go as deep as intended".into(),
        );
    }
    if step.scenario == Scenario::PmTestPlatform && sys != 0 {
        v.failures
            .push("pm_test=platform reached syscore_suspend: it went deeper than intended".into());
    }
    if step.scenario.resumes() && s2.get("bus_resumes") - s1.get("bus_resumes") < 1 {
        v.failures
            .push("the emulated vmbus never resumed (hv_pci_resume not called)".into());
    }
    v.facts.push(format!(
        "irqs delivered/fired after: {}",
        live_facts.join(" ")
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "mode=buggy bus=installed bus_suspends=1 bus_resumes=1 syscore_suspends=1 syscore_resumes=1\n\
vector=0 irq=37 role=control cpu=0 composes=2 masks=0 unmasks=0 retarget_failed=0 unmask_skipped=0 fired=6 handled=11 table_masked=0 cache_masked=0 genirq_masked=0 table_addr=0xfee00000 table_data=0x00000024 irte_gen=2 proc=11\n\
vector=1 irq=38 role=test cpu=0 composes=1 masks=1 unmasks=1 retarget_failed=1 unmask_skipped=1 fired=6 handled=5 table_masked=1 cache_masked=1 genirq_masked=0 table_addr=0xfeef0000 table_data=0x00000025 irte_gen=1 proc=5\n";

    #[test]
    fn parses_the_module_state() {
        let st = ModuleState::parse(STATE).unwrap();
        assert_eq!(st.mode, "buggy");
        assert_eq!(st.get("syscore_suspends"), 1);
        assert_eq!(st.control().unwrap().irq, 37);
        let t: Vec<u32> = st.tests().map(|v| v.irq).collect();
        assert_eq!(t, [38]);
        assert_eq!(st.vector(1).unwrap().get("proc"), 5);
        assert_eq!(st.vector(1).unwrap().get("table_masked"), 1);
        assert!(ModuleState::parse("garbage").is_none());
    }

    /// One vector's four snapshots for a burst: fired and counted before, then `handled` and
    /// `proc` after the scenario.
    fn burst_verdict(handled: i64, proc: i64) -> Verdict {
        let snap = |fired: i64, handled: i64, proc: i64| {
            ModuleState::parse(&format!(
                "mode=fixed bus=installed\n\
vector=2 irq=40 role=plain cpu=1 composes=0 masks=0 unmasks=0 retarget_failed=0 unmask_skipped=0 fired={fired} handled={handled} table_masked=0 cache_masked=0 genirq_masked=0 table_addr=0xfee00000 table_data=0x00000024 irte_gen=0 proc={proc}\n"
            ))
            .unwrap()
        };
        let (s0, s1, s2) = (snap(0, 0, 0), snap(3, 3, 3), snap(6, 3 + handled, 3 + proc));
        let mut v = Verdict::default();
        let step = Step::new(Scenario::Burst, Mode::Fixed);
        check_module(step, &s0, &s1, &s1, &s2, &mut v);
        v
    }

    #[test]
    fn the_handler_may_see_an_interrupt_proc_interrupts_did_not_count() {
        // An interrupt folded into a running handler on another CPU (6.1, burst.fixed).
        assert!(
            burst_verdict(4, 3).pass(),
            "{:?}",
            burst_verdict(4, 3).failures
        );
        assert!(burst_verdict(3, 3).pass());
        let lost = burst_verdict(2, 3);
        assert!(
            lost.failures.iter().any(|f| f.contains("handler only 2")),
            "{:?}",
            lost.failures
        );
    }

    #[test]
    fn liveness_tells_dead_from_alive() {
        assert_eq!(liveness(3, 6), Live::Alive);
        assert_eq!(liveness(3, 3), Live::Alive);
        assert_eq!(liveness(3, 0), Live::Dead);
        assert_eq!(liveness(3, 2), Live::Partial);
        assert_eq!(liveness(0, 0), Live::NotFired);
    }
}
