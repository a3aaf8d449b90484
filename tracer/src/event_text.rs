//! One text for an event, wherever a person reads it: `dump`'s lines, the TUI's event list,
//! the evidence under a divergence, the journal and the exported trace's arguments. One
//! formatter, so that they cannot disagree (they did: evidence printed D3cold as "D4").

use crate::engine::phase::PmEvent;
use crate::event::{EventKind, VectorSnap};
use crate::probes::hook_of;

/// One event kind in a compact, readable form, e.g.
/// `compose.ret irq 42 0000:00:02.0 msix#3 … msg 00000000:fee01000/00004021`.
pub fn describe(kind: &EventKind) -> String {
    use EventKind as E;
    match kind {
        E::ComposeEnter(v) => format!("compose {}", snap(v)),
        E::ComposeExit { v, msg } => {
            let msg = match msg {
                Some(m) if m.is_zero() => "msg ZERO (compose failed)".to_string(),
                Some(m) => format!("msg {m}"),
                None => "msg unreadable".to_string(),
            };
            format!("compose.ret {} {msg}", snap(v))
        }
        E::UnmaskEnter(v) => format!("hv-unmask {}", snap(v)),
        E::UnmaskExit(v) => format!("hv-unmask.ret {}", snap(v)),
        E::MaskEnter(v) => format!("hv-mask {}", snap(v)),
        E::MaskExit(v) => format!("hv-mask.ret {}", snap(v)),
        E::PciMsiMask(v) => format!("pci-msi-mask {}", snap(v)),
        E::PciMsiUnmask(v) => format!("pci-msi-unmask {}", snap(v)),
        E::MigrateOneIrq { irq } => format!("migrate-one-irq irq {irq}"),
        E::MigrateAllOffEnter => "migrate-all-off (this CPU goes offline)".to_string(),
        E::MigrateAllOffExit => "migrate-all-off.ret".to_string(),
        E::ReturnWithoutEntry { probe } => format!(
            "{} (entry not seen: object unknown)",
            crate::probes::hook_of(*probe).hook
        ),
        E::SetAffinityEnter { irq, in_migration } => {
            format!(
                "set-affinity irq {irq}{}",
                flag(*in_migration, " in-migration")
            )
        }
        E::SetAffinityExit {
            irq,
            ret,
            in_migration,
        } => format!(
            "set-affinity.ret irq {irq} ret {ret}{}",
            flag(*in_migration, " in-migration")
        ),
        E::RestoreEnter {
            device,
            msi_enabled,
            msix_enabled,
            power_state,
        } => format!(
            "restore-msi {device} msi {} msix {} {}",
            on_off(*msi_enabled),
            on_off(*msix_enabled),
            pci_power(*power_state)
        ),
        E::RestoreExit { device } => format!("restore-msi.ret {device}"),
        E::WriteMsiMsg {
            v,
            msg,
            in_restore,
            power_state,
        } => format!(
            "write-msi-msg {} msg {msg}{} {}",
            snap(v),
            flag(*in_restore, " in-restore"),
            pci_power(*power_state)
        ),
        E::HvPciSuspendEnter { bus, state } => format!("hv-pci-suspend {}", bus_state(bus, *state)),
        E::HvPciSuspendExit { bus, ret, state } => {
            format!("hv-pci-suspend.ret {} ret {ret}", bus_state(bus, *state))
        }
        E::HvPciResumeEnter { bus, state } => format!("hv-pci-resume {}", bus_state(bus, *state)),
        E::HvPciResumeExit { bus, ret, state } => {
            format!("hv-pci-resume.ret {} ret {ret}", bus_state(bus, *state))
        }
        // The kernel's own trace format: `dpm_suspend_noirq[2] begin`.
        E::SuspendResume { action, val, start } => format!(
            "suspend_resume {action}[{val}] {}",
            if *start { "begin" } else { "end" }
        ),
        E::DevicePmStart {
            device,
            driver,
            pm_ops,
            event,
        } => format!(
            "pm-callback {device} driver {} {pm_ops} [{}]",
            or_dash(driver),
            pm_event(*event)
        ),
        E::DevicePmEnd {
            device,
            driver,
            error,
        } => format!(
            "pm-callback.ret {device} driver {} err {error}",
            or_dash(driver)
        ),
        E::VectorUpdate {
            irq,
            vector,
            cpu,
            prev_vector,
            prev_cpu,
        } => format!(
            "vector-update irq {irq} vector {vector} cpu {cpu} (was {prev_vector} on cpu {prev_cpu})"
        ),
        E::VectorClear {
            irq,
            vector,
            cpu,
            prev_vector,
            prev_cpu,
        } => format!(
            "vector-clear irq {irq} vector {vector} cpu {cpu} (was {prev_vector} on cpu {prev_cpu})"
        ),
        E::VectorConfig {
            irq,
            vector,
            cpu,
            apicdest,
        } => format!("vector-config irq {irq} vector {vector} cpu {cpu} apicdest {apicdest:#x}"),
        E::VectorActivate {
            irq,
            managed,
            can_reserve,
            reserve,
        }
        | E::VectorDeactivate {
            irq,
            managed,
            can_reserve,
            reserve,
        } => format!(
            "{} irq {irq}{}{}{}",
            if matches!(kind, E::VectorActivate { .. }) {
                "vector-activate"
            } else {
                "vector-deactivate"
            },
            flag(*managed, " managed"),
            flag(*can_reserve, " can-reserve"),
            flag(*reserve, " reserve")
        ),
        E::Lost { probe, count } => format!(
            "!!! LOST {count} events of {} (ring buffer full): state after this is uncertain",
            hook_of(*probe).hook
        ),
        E::IrqCounts { counts } => {
            let list: Vec<String> = counts.iter().map(|(irq, n)| format!("{irq}:{n}")).collect();
            format!("irq-counts {}", list.join(" "))
        }
        E::Gap { reason } => format!("--- GAP: not tracing ({reason}) ---"),
        E::Notice { text } => format!("notice: {text}"),
        E::PciIrqMask { v, msix } => {
            format!(
                "pci-irq-mask-{} {}",
                if *msix { "msix" } else { "msi" },
                snap(v)
            )
        }
        E::PciIrqUnmask { v, msix } => {
            format!(
                "pci-irq-unmask-{} {}",
                if *msix { "msix" } else { "msi" },
                snap(v)
            )
        }
        E::ComposeCompl {
            irq,
            status,
            resp_size,
        } => {
            let irq = irq.map_or_else(
                || "irq ? (no compose in flight owns its context)".to_string(),
                |i| format!("irq {i}"),
            );
            let status = match status {
                Some(s) if *s < 0 => format!("status {:#010x} (host refused)", *s as u32),
                Some(s) => format!("status {:#x}", *s as u32),
                None => "status unreadable".to_string(),
            };
            format!("compose.host-reply {irq} {status} ({resp_size} bytes)")
        }
    }
}

fn flag(set: bool, text: &str) -> &str {
    if set { text } else { "" }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn on_off(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "on",
        Some(false) => "off",
        None => "?",
    }
}

fn bus_state(bus: &Option<String>, state: Option<u32>) -> String {
    let state = state.map_or_else(|| "?".to_string(), |s| s.to_string());
    format!("{} state {state}", bus.as_deref().unwrap_or("?"))
}

/// `pci_power_t`: D0..D3cold, then PCI_UNKNOWN; PCI_POWER_ERROR is -1.
fn pci_power(p: Option<u32>) -> String {
    match p {
        Some(0) => "D0".into(),
        Some(1) => "D1".into(),
        Some(2) => "D2".into(),
        Some(3) => "D3hot".into(),
        Some(4) => "D3cold".into(),
        Some(5) => "power-unknown".into(),
        Some(u32::MAX) => "power-error".into(),
        Some(n) => format!("power-{n}"),
        None => "power-?".into(),
    }
}

/// The `PM_EVENT_*` value of a callback, named like the kernel's `pm_verb()`.
fn pm_event(event: u32) -> String {
    let name = PmEvent::from_bits(event & 0xff).map(PmEvent::name);
    match name {
        Some(n) if event <= 0xff => n.to_string(),
        Some(n) => format!("{n}|{:#x}", event & !0xff),
        None => format!("{event:#x}"),
    }
}

fn snap(v: &VectorSnap) -> String {
    let mut s = format!("irq {}", v.irq);
    if let Some(d) = &v.device {
        s.push(' ');
        s.push_str(d);
    }
    let kind = match v.msix {
        Some(true) => "msix",
        Some(false) => "msi",
        None => "",
    };
    match v.msi_index {
        Some(i) => s.push_str(&format!(" {kind}#{i}")),
        None if !kind.is_empty() => s.push_str(&format!(" {kind}")),
        None => {}
    }
    s.push_str(&format!(" hwirq {:#x}", v.hwirq));
    if let Some(m) = v.cache_masked {
        s.push_str(if m {
            " cache=masked"
        } else {
            " cache=unmasked"
        });
    }
    if v.irqd_masked.is_some() || v.irqd_disabled.is_some() {
        let masked = match v.irqd_masked {
            Some(true) => "masked",
            Some(false) => "unmasked",
            None => "?",
        };
        let disabled = match v.irqd_disabled {
            Some(true) => "disabled",
            Some(false) => "enabled",
            None => "?",
        };
        s.push_str(&format!(" irqd={masked},{disabled}"));
    }
    if v.managed == Some(true) {
        s.push_str(" managed");
    }
    if v.managed_shutdown == Some(true) {
        s.push_str(" managed-shutdown");
    }
    if let Some(c) = v.chip_data {
        s.push_str(&format!(" chip_data {c:#x}"));
    }
    if v.in_migration {
        s.push_str(" in-migration");
    }
    s
}

/// An event's fields without the leading tag, for places that name the hook beside it (the
/// evidence of a divergence: `hv_compose_msi_msg:return: irq 42 …`). Every tag is one word.
pub fn detail(kind: &EventKind) -> String {
    let line = describe(kind);
    match line.split_once(' ') {
        Some((_, rest)) => rest.to_string(),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MsiMsg;
    use tracer_common::ProbeId;

    #[test]
    fn describes_vectors_messages_and_losses() {
        let v = VectorSnap {
            irq: 42,
            hwirq: 0x1803,
            device: Some("0000:00:02.0".into()),
            msi_index: Some(3),
            msix: Some(true),
            cache_masked: Some(true),
            irqd_masked: Some(false),
            irqd_disabled: Some(false),
            managed: Some(true),
            managed_shutdown: None,
            chip_data: Some(0xffff_8880_0000_1000),
            in_migration: false,
        };
        let line = describe(&EventKind::ComposeExit {
            v: v.clone(),
            msg: Some(MsiMsg {
                address_lo: 0xfee0_1000,
                address_hi: 0,
                data: 0x4021,
            }),
        });
        assert_eq!(
            line,
            "compose.ret irq 42 0000:00:02.0 msix#3 hwirq 0x1803 cache=masked irqd=unmasked,enabled managed chip_data 0xffff888000001000 msg 00000000:fee01000/00004021"
        );
        let zero = describe(&EventKind::ComposeExit {
            v,
            msg: Some(MsiMsg {
                address_lo: 0,
                address_hi: 0,
                data: 0,
            }),
        });
        assert!(zero.ends_with("msg ZERO (compose failed)"), "{zero}");
        let lost = describe(&EventKind::Lost {
            probe: ProbeId::HvComposeExit,
            count: 17,
        });
        assert!(
            lost.starts_with("!!! LOST 17 events of hv_compose_msi_msg:return"),
            "{lost}"
        );
        assert_eq!(
            describe(&EventKind::SuspendResume {
                action: "dpm_suspend_noirq".into(),
                val: 2,
                start: true
            }),
            "suspend_resume dpm_suspend_noirq[2] begin"
        );
        assert_eq!(pm_event(0x40), "restore");
        assert_eq!(pm_event(0x402), "suspend|0x400");
        assert_eq!(pm_event(0x1000), "0x1000");
    }

    #[test]
    fn names_pci_power_states_as_the_kernel_does() {
        let restore = |p| EventKind::RestoreEnter {
            device: "0000:00:02.0".into(),
            msi_enabled: Some(false),
            msix_enabled: Some(true),
            power_state: p,
        };
        assert_eq!(
            detail(&restore(Some(4))),
            "0000:00:02.0 msi off msix on D3cold"
        );
        assert!(detail(&restore(Some(u32::MAX))).ends_with("power-error"));
        assert!(detail(&restore(None)).ends_with("power-?"));
    }
}
