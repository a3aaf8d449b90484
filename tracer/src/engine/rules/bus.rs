//! H9: the Hyper-V PCI buses' states (`hv_pci_suspend`/`hv_pci_resume`) and what they mean
//! for the vectors on them.

use super::errno_name;
use crate::engine::Engine;
use crate::engine::divergence::{
    DivergenceUpdate, Evidence, Finding, Key, RuleId, Scope, Severity,
};
use crate::engine::state::{HvBus, HvBusState};
use crate::event::Event;

impl Engine {
    pub(crate) fn h9_removing_bus(
        &mut self,
        ev: &Event,
        irq: u32,
        what: &str,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if !self.enabled(RuleId::H9) || self.state.phase.in_transition() {
            return;
        }
        let Some(bus_name) = self.state.vectors.get(&irq).and_then(|v| v.hv_bus.clone()) else {
            return;
        };
        let Some(bus) = self.state.hv_buses.get(&bus_name) else {
            return;
        };
        if bus.state != Some(HvBusState::Removing) || bus.suspended {
            return;
        }
        let (desc, _) = self.describe(irq);
        let epoch = self.state.epoch;
        let meaning = format!(
            "irq {irq} ({desc}) was {what} at {} while its Hyper-V bus {bus_name} is `removing` \
             outside any suspend: the vmbus channel is closed, so the host drops the request; \
             look at why the bus did not come back (hv_pci_resume) or is being ejected",
            self.t(ev.ts_ns)
        );
        let f = Finding {
            key: Key {
                rule: RuleId::H9,
                scope: Scope::Bus(bus_name.clone()),
                cause: "removing-bus".into(),
                epoch,
            },
            severity: Severity::Warning,
            irq: Some(irq),
            irqs: vec![irq],
            device: Some(bus_name),
            ts_ns: ev.ts_ns,
            evidence: vec![Evidence::of(ev)],
            meaning,
        };
        self.raise(f, out);
    }

    pub(crate) fn h9_resume_failed(
        &mut self,
        ev: &Event,
        bus: &str,
        ret: i32,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        let irqs: Vec<u32> = self
            .state
            .vectors
            .values()
            .filter(|v| v.hv_bus.as_deref() == Some(bus))
            .map(|v| v.irq)
            .collect();
        let epoch = self.cycle_epoch().max(self.state.epoch);
        let meaning = format!(
            "hv_pci_resume of Hyper-V bus {bus} failed with {ret} ({}) at {}: the bus stays \
             down and none of its {} vector(s) will get interrupts; look at the vmbus channel \
             open and the host's PCI messages in dmesg",
            errno_name(ret),
            self.t(ev.ts_ns),
            irqs.len()
        );
        let f = Finding {
            key: Key {
                rule: RuleId::H9,
                scope: Scope::Bus(bus.to_string()),
                cause: "resume-failed".into(),
                epoch,
            },
            severity: Severity::Error,
            irq: irqs.first().copied(),
            irqs,
            device: Some(bus.to_string()),
            ts_ns: ev.ts_ns,
            evidence: vec![Evidence::of(ev)],
            meaning,
        };
        self.raise(f, out);
    }

    pub(crate) fn bus_update(
        &mut self,
        bus: &Option<String>,
        raw: Option<u32>,
        ret: Option<i32>,
        ts: u64,
        suspended: Option<bool>,
    ) {
        let name = bus.clone().unwrap_or_else(|| "?".into());
        let b = self.state.hv_buses.entry(name).or_insert(HvBus {
            state: None,
            state_ts_ns: ts,
            suspended: false,
            last_error: None,
        });
        if let Some(r) = raw {
            b.state = Some(HvBusState::from_raw(r));
            b.state_ts_ns = ts;
        }
        if let Some(s) = suspended {
            b.suspended = s;
        }
        if let Some(r) = ret
            && r != 0
        {
            b.last_error = Some(r);
        }
    }
}
