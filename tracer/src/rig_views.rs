//! The VM rig (`cargo xtask vm-test`) judges msitrace's JSON through typed views of these
//! types (xtask/src/vm/checks/json.rs), kept in xtask because xtask cannot depend on this
//! crate: its build script needs what `cargo xtask setup` installs. The views are compiled here
//! too, and the outputs read back through them, so a field renamed or retyped here fails this
//! crate's tests rather than a step of the rig.

// Not every field the rig reads is read back here.
#[allow(dead_code)]
#[path = "../../xtask/src/vm/checks/json.rs"]
mod views;

use crate::check::{Snapshot, analyse};
use crate::engine::{Divergence, Engine, EngineConfig, Evidence, RuleId, RuleTiming, Severity};
use crate::event::{Event, EventKind, MsiMsg, VectorSnap};
use crate::probes::{Method, ProbeStatus, Status};
use crate::report::Report;
use crate::seed::{Seed, SeedVector};
use crate::session::LiveSummary;
use tracer_common::ProbeId;

fn through<T: serde::Serialize, V: serde::de::DeserializeOwned>(value: &T) -> V {
    let json = serde_json::to_string(value).unwrap();
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[test]
fn replay_and_verify_reports_read_back() {
    let seed = Seed {
        vectors: vec![SeedVector {
            irq: 38,
            device: Some("0000:02:00.0".into()),
            ..SeedVector::default()
        }],
        ..Seed::default()
    };
    let engine = Engine::new(EngineConfig::new(
        "6.12.117",
        EngineConfig::all_probes_attached(),
        seed,
    ));
    let report = Report::from_engine(&engine);
    let view: views::Report = through(&report);
    assert_eq!(
        view.vectors.iter().map(|v| v.irq).collect::<Vec<_>>(),
        report
            .vectors
            .iter()
            .map(|v| Some(v.irq))
            .collect::<Vec<_>>()
    );
    assert_eq!(view.losses.and_then(|l| l.total), Some(report.losses.total));
    assert_eq!(
        view.timing.and_then(|t| t.g5_silence_ns),
        Some(report.timing.g5_silence_ns)
    );
    assert_eq!(view.not_evaluated.len(), report.not_evaluated.len());
    for (v, n) in view.not_evaluated.iter().zip(&report.not_evaluated) {
        assert_eq!(v.rule.as_deref(), Some(n.rule.to_string().as_str()));
        assert_eq!(v.reason.as_deref(), Some(n.reason.as_str()));
    }

    let d = Divergence {
        rule: RuleId::H4,
        severity: Severity::Error,
        irq: Some(38),
        irqs: vec![38, 39],
        device: Some("0000:02:00.0".into()),
        epoch: 1,
        cause: "stale-mask".into(),
        first_ts_ns: 1,
        last_ts_ns: 2,
        occurrences: 1,
        evidence: vec![Evidence {
            ts_ns: 1,
            cpu: Some(0),
            event: "hv_irq_unmask".into(),
            detail: "irq 38".into(),
        }],
        evidence_dropped: 0,
        meaning: "m".into(),
    };
    let view: views::Divergence = through(&d);
    assert_eq!(view.rule.as_deref(), Some("H4"));
    assert_eq!(view.severity.as_deref(), Some("error"));
    assert_eq!((view.irq, view.irqs), (Some(38), vec![38, 39]));
    assert_eq!(view.cause.as_deref(), Some("stale-mask"));
}

#[test]
fn check_reports_read_back() {
    let path = format!(
        "{}/../tests/fixtures/check/e1000e-6.12-hibernate-buggy.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let snap = Snapshot::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let report = analyse(&snap);
    let view: views::CheckReport = through(&report);
    assert_eq!(view.summary.errors, report.summary.errors);
    assert_eq!(view.findings.len(), report.findings.len());
    assert!(view.findings.iter().any(|f| f.severity == "error"));
    assert_eq!(view.vectors.len(), report.vectors.len());
    assert_eq!(view.devices.len(), report.devices.len());
}

#[test]
fn probe_rows_read_back() {
    let row = ProbeStatus {
        hook: "hv_compose_msi_msg".into(),
        symbol: "hv_compose_msi_msg".into(),
        candidates: vec![
            "hv_compose_msi_msg".into(),
            "hv_vmbus_compose_msi_msg".into(),
        ],
        attached_symbol: Some("hv_vmbus_compose_msi_msg".into()),
        method: Method::Kprobe,
        status: Status::Absent,
        reason: Some("not in /proc/kallsyms".into()),
        module: None,
        rules_losing_input: vec!["H1".into()],
        probe: ProbeId::HvComposeEnter,
        symbol_source: None,
    };
    // As `probes --json` prints it now (an object with its schema_version), and as the
    // recorded runs hold it (the bare array).
    let rows =
        through::<_, views::Probes>(&crate::probes::ProbesJson::new(std::slice::from_ref(&row)))
            .rows()
            .unwrap();
    assert_eq!(
        through::<_, views::Probes>(&vec![row.clone()])
            .rows()
            .unwrap()[0]
            .hook,
        rows[0].hook
    );
    assert_eq!(rows[0].hook.as_deref(), Some("hv_compose_msi_msg"));
    assert_eq!(rows[0].status.as_deref(), Some("absent"));
    assert_eq!(rows[0].reason.as_deref(), Some("not in /proc/kallsyms"));
    assert_eq!(
        rows[0].attached_symbol.as_deref(),
        Some("hv_vmbus_compose_msi_msg")
    );
}

#[test]
fn events_and_trailer_read_back() {
    let snap = VectorSnap {
        irq: 38,
        device: Some("0000:02:00.0".into()),
        ..VectorSnap::default()
    };
    let msg = MsiMsg {
        address_lo: 0xfee0_0000,
        address_hi: 0,
        data: 0x25,
    };
    let ev = |kind| Event {
        ts_ns: 7,
        cpu: 1,
        tgid: 0,
        kind,
    };
    let cases = [
        (
            ev(EventKind::WriteMsiMsg {
                v: snap.clone(),
                msg,
                in_restore: true,
                power_state: None,
            }),
            (
                views::Kind::WriteMsiMsg,
                Some(38),
                Some("0000:02:00.0"),
                Some(true),
            ),
        ),
        (
            ev(EventKind::MaskEnter(snap.clone())),
            (views::Kind::MaskEnter, Some(38), Some("0000:02:00.0"), None),
        ),
        (
            ev(EventKind::RestoreEnter {
                device: "0000:02:00.0".into(),
                msi_enabled: None,
                msix_enabled: Some(true),
                power_state: None,
            }),
            (views::Kind::RestoreEnter, None, Some("0000:02:00.0"), None),
        ),
        (
            ev(EventKind::MigrateAllOffEnter),
            (views::Kind::MigrateAllOffEnter, None, None, None),
        ),
    ];
    for (event, want) in cases {
        let view: views::Event = through(&event);
        // The name the rig matches is the variant's as serde writes it.
        let name = serde_json::to_value(&event.kind).unwrap();
        let name = name
            .as_str()
            .map(str::to_string)
            .or_else(|| name.as_object()?.keys().next().cloned())
            .unwrap();
        assert_eq!(view.kind().to_string(), name);
        assert_eq!(view.ts_ns, 7);
        assert_eq!(
            (
                view.kind(),
                view.irq(),
                view.device().as_deref(),
                view.in_restore()
            ),
            want
        );
    }

    let summary = LiveSummary {
        events: 3,
        timing: RuleTiming::default(),
        end_ts_ns: 9,
        divergences: Vec::new(),
        counters: vec![(ProbeId::HvMaskEnter, 5, 2)],
        decode_errors: 1,
        bpf_stats: vec![(ProbeId::HvMaskEnter, 500, 5)],
    };
    let view: views::Trailer = through(&summary);
    assert_eq!(view.counters, [("HvMaskEnter".to_string(), 5, 2)]);
    assert_eq!(view.bpf_stats, [("HvMaskEnter".to_string(), 500, 5)]);
    assert_eq!(view.decode_errors, 1);
}
