//! msitrace's JSON outputs as the rig reads them, typed: `replay --json` and `verify --json`
//! (the tracer's `report::Report`), `check --json` (`check::analysis::CheckReport`), `probes
//! --json` (`probes::ProbeStatus`), and `dump --json`'s events (`event::Event`) and trailer.
//!
//! These are views of the tracer's own serde types, holding only the fields a check reads,
//! under the tracer's names. xtask does not depend on the tracer crate for them: the tracer's
//! build script builds the eBPF programs with nightly and bpf-linker, which `cargo xtask setup`
//! is what installs, and xtask would compile aya, tokio and ratatui for a handful of structs.
//! To keep the views honest, the tracer's unit tests include this file (it needs nothing but
//! serde and serde_json) and read the tracer's real outputs through it.
//!
//! Fields are optional or defaulted where the checks tell "absent" from "wrong" themselves
//! (`the report has no losses.total`); a field of the wrong type fails the step instead of
//! reading as absent.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `replay --json` and `verify --json`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Report {
    pub divergences: Vec<Divergence>,
    pub vectors: Vec<ReportVector>,
    pub not_evaluated: Vec<NotEvaluated>,
    pub losses: Option<Losses>,
    pub timing: Option<Timing>,
    pub input_warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Divergence {
    pub rule: Option<String>,
    /// `error` or `warning`.
    pub severity: Option<String>,
    /// The vector it is about (none for a bus-level finding).
    pub irq: Option<u32>,
    /// Every vector concerned.
    pub irqs: Vec<u32>,
    pub cause: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReportVector {
    pub irq: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct NotEvaluated {
    pub rule: Option<String>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Losses {
    pub total: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Timing {
    pub g5_silence_ns: Option<u64>,
}

/// `check --json`: a field renamed or retyped in the report fails the step here instead of
/// reading as absent.
#[derive(Debug, Deserialize)]
pub struct CheckReport {
    pub unusable: Option<String>,
    pub summary: CheckSummary,
    pub findings: Vec<CheckFinding>,
    pub devices: Vec<CheckDevice>,
    pub vectors: Vec<CheckVector>,
    pub unreadable: Vec<CheckUnreadable>,
}

#[derive(Debug, Deserialize)]
pub struct CheckSummary {
    pub errors: usize,
    pub warnings: usize,
    pub verdict: String,
}

#[derive(Debug, Deserialize)]
pub struct CheckFinding {
    pub rule: String,
    pub severity: String,
    pub irq: Option<u32>,
    pub irqs: Vec<u32>,
    pub device: String,
    pub cause: String,
}

#[derive(Debug, Deserialize)]
pub struct CheckDevice {
    pub bdf: String,
    /// `read`, or why the MSI-X table was not.
    pub msix_table: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CheckVector {
    pub irq: u32,
    pub device: String,
    pub device_state: CheckDeviceView,
}

#[derive(Debug, Deserialize)]
pub struct CheckDeviceView {
    pub masked: Option<bool>,
    pub unknown: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CheckUnreadable {
    pub what: String,
    pub why: String,
}

/// One row of `probes --json`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProbeStatus {
    pub hook: Option<String>,
    /// `attached`, `absent`, ...
    pub status: Option<String>,
    pub reason: Option<String>,
    /// The candidate symbol the hook is attached to (absent before msitrace recorded it).
    pub attached_symbol: Option<String>,
}

/// `probes --json`: the array of rows, or (as some builds printed it) an object holding it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Probes {
    Rows(Vec<ProbeStatus>),
    Keyed(BTreeMap<String, serde_json::Value>),
}

impl Probes {
    /// The rows; of an object, its first member (in name order) that is an array.
    pub fn rows(self) -> Result<Vec<ProbeStatus>, serde_json::Error> {
        match self {
            Probes::Rows(r) => Ok(r),
            Probes::Keyed(o) => match o.into_values().find(serde_json::Value::is_array) {
                Some(a) => serde_json::from_value(a),
                None => Ok(Vec::new()),
            },
        }
    }
}

/// One line of `dump --json`: `{"header": …}`, `{"event": …}` or `{"trailer": …}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DumpLine {
    pub header: Option<Header>,
    pub event: Option<Event>,
    pub trailer: Option<Trailer>,
}

/// The header's part the checks read: the probes as the recording attached them, the same rows
/// as `probes --json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    pub probes: Vec<ProbeStatus>,
}

/// An event: `{"ts_ns", "cpu", "tgid", "kind": "Unit" | {"Variant": payload}}`.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    pub ts_ns: u64,
    pub kind: EventKind,
}

/// The event's variant, and the fields of its payload the checks read.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "KindRepr")]
pub struct EventKind {
    pub kind: Kind,
    pub payload: Option<Payload>,
}

/// The tracer's `EventKind` variants the checks look for, named as serde names them; any
/// other is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Kind {
    ComposeExit,
    MaskEnter,
    UnmaskEnter,
    UnmaskExit,
    PciMsiMask,
    PciMsiUnmask,
    PciIrqMask,
    PciIrqUnmask,
    MigrateOneIrq,
    MigrateAllOffEnter,
    MigrateAllOffExit,
    RestoreEnter,
    RestoreExit,
    WriteMsiMsg,
    HvPciSuspendEnter,
    HvPciResumeEnter,
    SuspendResume,
    /// User space's own records (samples, gaps, losses), not kernel events.
    IrqCounts,
    Gap,
    Lost,
    #[serde(other)]
    Other,
}

/// The variant's name, as the tracer spells it.
impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl Kind {
    fn of(name: &str) -> Kind {
        use serde::de::{IntoDeserializer, value::Error};
        Kind::deserialize(IntoDeserializer::<Error>::into_deserializer(name)).unwrap_or(Kind::Other)
    }

    /// Written by the recorder, not by a probe in the kernel.
    pub fn userspace(self) -> bool {
        matches!(self, Kind::IrqCounts | Kind::Gap | Kind::Lost)
    }
}

/// serde's external tagging: a unit variant is its name, any other a one-member object.
#[derive(Deserialize)]
#[serde(untagged)]
enum KindRepr {
    Unit(String),
    Tagged(BTreeMap<String, Payload>),
}

impl From<KindRepr> for EventKind {
    fn from(k: KindRepr) -> EventKind {
        match k {
            KindRepr::Unit(name) => EventKind {
                kind: Kind::of(&name),
                payload: None,
            },
            KindRepr::Tagged(m) => {
                let (name, payload) = m.into_iter().next().unwrap_or_default();
                EventKind {
                    kind: Kind::of(&name),
                    payload: Some(payload),
                }
            }
        }
    }
}

/// A payload's fields, or those of its `v` (the vector snapshot of `ComposeExit`,
/// `WriteMsiMsg`, ...).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Payload {
    pub irq: Option<u32>,
    pub device: Option<String>,
    pub in_restore: Option<bool>,
    pub v: Option<Box<Payload>>,
    /// `IrqCounts`: (irq, count) pairs.
    pub counts: Option<Vec<(u32, u64)>>,
}

/// A recording's trailer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Trailer {
    /// Per streaming program: (probe, hits, lost).
    pub counters: Vec<(String, u64, u64)>,
    /// Per program, from the kernel's bpf_stats: (probe, run_time_ns, run_cnt).
    pub bpf_stats: Vec<(String, u64, u64)>,
    pub decode_errors: u64,
    /// Events in the file, the kernel's and user space's own.
    pub events: u64,
}

impl Payload {
    /// The payload's own field, else its vector snapshot's.
    fn get<T: Clone>(&self, f: impl Fn(&Payload) -> &Option<T>) -> Option<T> {
        f(self)
            .clone()
            .or_else(|| self.v.as_deref().and_then(|v| f(v).clone()))
    }
}

impl Event {
    /// An `IrqCounts` sample's counts.
    pub fn counts(&self) -> Option<&[(u32, u64)]> {
        self.kind.payload.as_ref()?.counts.as_deref()
    }

    pub fn irq(&self) -> Option<u32> {
        self.kind.payload.as_ref()?.get(|p| &p.irq)
    }

    pub fn device(&self) -> Option<String> {
        self.kind.payload.as_ref()?.get(|p| &p.device)
    }

    pub fn in_restore(&self) -> Option<bool> {
        self.kind.payload.as_ref()?.get(|p| &p.in_restore)
    }

    pub fn kind(&self) -> Kind {
        self.kind.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_dump_json() {
        let e: Event = serde_json::from_str(
            r#"{"ts_ns": 5, "cpu": 0, "tgid": 1, "kind": {"ComposeExit": {"v": {"irq": 38, "device": "0000:02:00.0"}, "msg": null}}}"#,
        )
        .unwrap();
        assert_eq!(
            (e.kind(), e.irq(), e.device().as_deref()),
            (Kind::ComposeExit, Some(38), Some("0000:02:00.0"))
        );
        let u: Event = serde_json::from_str(
            r#"{"ts_ns": 6, "cpu": 1, "tgid": 0, "kind": "MigrateAllOffEnter"}"#,
        )
        .unwrap();
        assert_eq!((u.kind(), u.irq()), (Kind::MigrateAllOffEnter, None));
        let line: DumpLine =
            serde_json::from_str(r#"{"trailer": {"counters": [["HvMaskEnter", 9, 3]], "decode_errors": 1, "events": 5}}"#)
                .unwrap();
        let t = line.trailer.unwrap();
        assert_eq!((t.counters[0].1, t.decode_errors), (9, 1));
    }
}
