//! `msitrace export`: a trace file as Chrome trace-event JSON, which Perfetto's UI and
//! chrome://tracing open. One process holds the phase slices, one a track per CPU (offline
//! spans, migration windows, PM events), one a track per vector (its events as instants), and
//! divergences are instants on their vector's track and on a global track.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::replay::TimingArgs;
use crate::engine::{Divergence, event_irq, event_name};
use crate::event::EventKind;
use crate::event_text::detail as event_detail;
use crate::output;
use crate::private_file::PrivateFile;
use crate::replayer::{Replayed, Replayer, Step};

#[derive(clap::Args)]
pub struct Args {
    /// Trace file written by `msitrace record`; several are read as one stream, in the order
    /// given; a directory stands for the daemon's flight-recorder files in it, oldest first.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Where to write the JSON (open it in ui.perfetto.dev or chrome://tracing).
    #[arg(short, long, value_name = "OUT.json")]
    pub output: PathBuf,
}

const PID_PHASES: u32 = 1;
const PID_CPUS: u32 = 2;
const PID_VECTORS: u32 = 3;
const PID_DIVERGENCES: u32 = 4;

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub events: u64,
    pub trace_events: u64,
    pub divergences: usize,
}

/// Writes trace events as the elements of one JSON array, streaming.
struct ArrayWriter<W: Write> {
    out: W,
    first: bool,
    count: u64,
}

impl<W: Write> ArrayWriter<W> {
    fn push(&mut self, v: &Value) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        self.count += 1;
        serde_json::to_writer(&mut self.out, v).map_err(io::Error::other)
    }
}

/// Microseconds from `origin`, as the format wants them.
fn us(ts: u64, origin: u64) -> f64 {
    ts.saturating_sub(origin) as f64 / 1000.0
}

/// Replay a recording and write the Chrome trace of the run to `out`.
pub fn chrome_trace(
    mut replayer: Replayer,
    out: impl Write,
) -> anyhow::Result<(ExportStats, Replayed)> {
    let kernel = replayer.header().kernel_release.clone();
    let mut w = ArrayWriter {
        out,
        first: true,
        count: 0,
    };
    w.out.write_all(b"{\"traceEvents\":[\n")?;
    let mut origin: Option<u64> = None;
    let mut windows: BTreeMap<u32, u64> = BTreeMap::new();
    let mut stats = ExportStats::default();
    let mut cpus: BTreeMap<u32, ()> = BTreeMap::new();
    while let Some(step) = replayer.step() {
        let Step::Event(ev, _) = step else { break };
        stats.events += 1;
        let o = *origin.get_or_insert_with(|| replayer.engine().origin_ns());
        let ts = us(ev.ts_ns, o);
        let name = event_name(&ev.kind);
        let args = json!({ "detail": event_detail(&ev.kind), "cpu": ev.cpu, "tgid": ev.tgid });
        match &ev.kind {
            EventKind::MigrateAllOffEnter => {
                windows.insert(ev.cpu, ev.ts_ns);
            }
            EventKind::MigrateAllOffExit => {
                let start = windows.remove(&ev.cpu).unwrap_or(ev.ts_ns);
                cpus.insert(ev.cpu, ());
                w.push(&json!({
                    "name": "migrate all off", "cat": "migration", "ph": "X",
                    "ts": us(start, o), "dur": us(ev.ts_ns, start),
                    "pid": PID_CPUS, "tid": ev.cpu, "args": args,
                }))?;
            }
            EventKind::IrqCounts { .. }
            | EventKind::Lost { .. }
            | EventKind::Gap { .. }
            | EventKind::Notice { .. } => {
                w.push(&json!({
                    "name": name, "cat": "recorder", "ph": "i", "s": "p", "ts": ts,
                    "pid": PID_PHASES, "tid": 2, "args": args,
                }))?;
            }
            kind => match event_irq(kind) {
                Some(irq) => w.push(&json!({
                    "name": name, "cat": "vector", "ph": "i", "s": "t", "ts": ts,
                    "pid": PID_VECTORS, "tid": irq, "args": args,
                }))?,
                None => {
                    cpus.insert(ev.cpu, ());
                    w.push(&json!({
                        "name": pm_name(kind).unwrap_or_else(|| name.to_string()),
                        "cat": "kernel", "ph": "i", "s": "t", "ts": ts,
                        "pid": PID_CPUS, "tid": ev.cpu, "args": args,
                    }))?
                }
            },
        }
    }
    let replayed = replayer.into_replayed();
    let engine = &replayed.engine;
    let end = engine.state().now_ns;
    let o = origin.unwrap_or_else(|| engine.origin_ns());
    let st = engine.state();

    for span in &st.timeline {
        let stop = span.end_ts_ns.unwrap_or(end);
        w.push(&json!({
            "name": span.phase.name(), "cat": "phase", "ph": "X",
            "ts": us(span.start_ts_ns, o), "dur": us(stop, span.start_ts_ns),
            "pid": PID_PHASES, "tid": 1,
            "args": { "epoch": span.epoch, "cause": span.cause },
        }))?;
    }
    // Offline spans per CPU: from each offline change to the next online one.
    let mut down: BTreeMap<u32, u64> = BTreeMap::new();
    for c in &st.cpu_changes {
        cpus.insert(c.cpu, ());
        if c.online {
            if let Some(t) = down.remove(&c.cpu) {
                w.push(&offline_slice(c.cpu, t, c.ts_ns, o))?;
            }
        } else {
            down.insert(c.cpu, c.ts_ns);
        }
    }
    for (cpu, t) in down {
        w.push(&offline_slice(cpu, t, end, o))?;
    }
    for d in engine.divergences() {
        stats.divergences += 1;
        let args = divergence_args(d);
        let name = format!("{} {}", d.rule, d.rule.title());
        if let Some(irq) = d.irq {
            w.push(&json!({
                "name": name, "cat": "divergence", "ph": "i", "s": "t",
                "ts": us(d.first_ts_ns, o), "pid": PID_VECTORS, "tid": irq, "args": args,
            }))?;
        }
        w.push(&json!({
            "name": name, "cat": "divergence", "ph": "i", "s": "g",
            "ts": us(d.first_ts_ns, o), "pid": PID_DIVERGENCES, "tid": 1, "args": args,
        }))?;
    }

    let meta = |pid: u32, name: &str, sort: u32| {
        [
            json!({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}}),
            json!({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": sort}}),
        ]
    };
    for (pid, name) in [
        (PID_PHASES, "Suspend/resume phases"),
        (PID_CPUS, "CPUs"),
        (PID_VECTORS, "MSI vectors"),
        (PID_DIVERGENCES, "Divergences"),
    ] {
        for m in meta(pid, name, pid) {
            w.push(&m)?;
        }
    }
    for (tid, name) in [(1, "phase"), (2, "recorder")] {
        w.push(&thread_name(PID_PHASES, tid, name))?;
    }
    w.push(&thread_name(PID_DIVERGENCES, 1, "divergences"))?;
    for cpu in cpus.keys() {
        w.push(&thread_name(PID_CPUS, *cpu, &format!("CPU{cpu}")))?;
    }
    for v in st.vectors.values() {
        w.push(&thread_name(
            PID_VECTORS,
            v.irq,
            &format!("irq {} {}", v.irq, v.describe()),
        ))?;
    }
    stats.trace_events = w.count;
    let trailer = json!({
        "displayTimeUnit": "ms",
        "otherData": {
            "tool": "msitrace",
            "kernel_release": kernel,
            "origin_monotonic_ns": o,
            "resume_epochs": st.epochs.len(),
            "divergences": stats.divergences,
        }
    });
    // Close the array and add the object's other members.
    let mut rest = serde_json::to_string(&trailer)?;
    rest.remove(0);
    write!(w.out, "\n],{rest}")?;
    w.out.flush()?;
    Ok((stats, replayed))
}

fn thread_name(pid: u32, tid: u32, name: &str) -> Value {
    json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
}

fn offline_slice(cpu: u32, from: u64, to: u64, origin: u64) -> Value {
    json!({
        "name": "offline", "cat": "cpu", "ph": "X",
        "ts": us(from, origin), "dur": us(to, from),
        "pid": PID_CPUS, "tid": cpu, "args": {},
    })
}

fn divergence_args(d: &Divergence) -> Value {
    json!({
        "rule": d.rule,
        "severity": d.severity.name(),
        "irq": d.irq,
        "irqs": d.irqs,
        "device": d.device,
        "epoch": d.epoch,
        "meaning": d.meaning,
    })
}

/// `power:suspend_resume` events are named by their action so the CPU track reads as a log.
fn pm_name(kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::SuspendResume { action, val, start } => Some(format!(
            "{action} {val} {}",
            if *start { "begin" } else { "end" }
        )),
        _ => None,
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let replayer = Replayer::open(&args.files, args.timing.overrides())?;
    // Never onto one of the inputs, and the old output stays whole until the new one is.
    let mut out = PrivateFile::create(&args.output, replayer.files())?;
    let (stats, replayed) = chrome_trace(replayer, BufWriter::new(out.file_mut()))?;
    out.persist()?;
    for w in &replayed.report.input_warnings {
        output::note(&output::terminal_safe(&format!("warning: {w}")));
    }
    output::note(&format!(
        "wrote {} trace events ({} input events, {} divergences) to {}: open it in \
         ui.perfetto.dev or chrome://tracing",
        stats.trace_events,
        stats.events,
        stats.divergences,
        args.output.display()
    ));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, RuleTiming};
    use crate::event::{Event, MsiMsg, VectorSnap};
    use crate::seed::{Seed, SeedVector};
    use crate::trace_file::{TraceHeader, TraceWriter};

    fn ev(ts: u64, cpu: u32, kind: EventKind) -> Event {
        Event {
            ts_ns: ts,
            cpu,
            tgid: 1,
            kind,
        }
    }

    fn pm(ts: u64, action: &str, val: u32, start: bool) -> Event {
        ev(
            ts,
            0,
            EventKind::SuspendResume {
                action: action.into(),
                val,
                start,
            },
        )
    }

    #[test]
    fn exports_a_structurally_valid_chrome_trace() {
        let seed = Seed {
            taken_ns: 1_000_000,
            online_cpus: vec![0, 1],
            vectors: vec![SeedVector {
                irq: 41,
                device: Some("0000:00:02.0".into()),
                kind: Some("msix".into()),
                msi_index: Some(1),
                actions: Some("hvfake-1".into()),
                effective_cpus: Some(vec![1]),
                ..Default::default()
            }],
        };
        let snap = VectorSnap {
            irq: 41,
            device: Some("0000:00:02.0".into()),
            msi_index: Some(1),
            msix: Some(true),
            cache_masked: Some(true),
            irqd_masked: Some(false),
            irqd_disabled: Some(false),
            in_migration: true,
            ..Default::default()
        };
        let events = vec![
            pm(2_000_000, "freeze_processes", 0, true),
            pm(2_100_000, "dpm_suspend_noirq", 1, true),
            pm(2_200_000, "CPU_OFF", 1, true),
            ev(2_300_000, 1, EventKind::MigrateAllOffEnter),
            ev(2_400_000, 1, EventKind::UnmaskExit(snap.clone())),
            ev(2_500_000, 1, EventKind::MigrateAllOffExit),
            pm(2_600_000, "CPU_OFF", 1, false),
            pm(3_000_000, "machine_suspend", 4, true),
            pm(9_000_000, "machine_suspend", 4, false),
            pm(9_100_000, "CPU_ON", 1, false),
            pm(9_200_000, "dpm_resume_noirq", 0x40, true),
            ev(
                9_300_000,
                0,
                EventKind::WriteMsiMsg {
                    v: snap,
                    msg: MsiMsg {
                        address_lo: 0xfee0_0000,
                        address_hi: 0,
                        data: 0x23,
                    },
                    in_restore: true,
                    power_state: Some(0),
                },
            ),
            pm(9_400_000, "thaw_processes", 0, true),
        ];
        let header = TraceHeader {
            kernel_release: "6.12.117+deb12-amd64".into(),
            probes: EngineConfig::all_probes_attached(),
            seed,
            rule_timing: Some(RuleTiming::default()),
            ..Default::default()
        };
        let path =
            std::env::temp_dir().join(format!("msitrace-export-{}.trace", std::process::id()));
        let mut w = TraceWriter::create(&path, &header).unwrap();
        for e in &events {
            w.append(e).unwrap();
        }
        w.finish(&json!({})).unwrap();
        let replayer = Replayer::open(std::slice::from_ref(&path), Default::default()).unwrap();
        let mut buf = Vec::new();
        let (stats, _) = chrome_trace(replayer, &mut buf).unwrap();
        let _ = std::fs::remove_file(&path);
        let v: Value = serde_json::from_slice(&buf).expect("valid JSON");
        let evs = v["traceEvents"].as_array().expect("traceEvents array");
        assert_eq!(evs.len() as u64, stats.trace_events);
        assert_eq!(v["displayTimeUnit"], "ms");
        for e in evs {
            let ph = e["ph"].as_str().expect("ph");
            assert!(e["name"].is_string(), "{e}");
            assert!(e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
            match ph {
                "X" => {
                    assert!(e["ts"].as_f64().unwrap() >= 0.0);
                    assert!(e["dur"].as_f64().unwrap() >= 0.0, "{e}");
                }
                "i" => assert!(matches!(e["s"].as_str(), Some("t" | "p" | "g")), "{e}"),
                "M" => assert!(e["args"]["name"].is_string() || e["args"]["sort_index"].is_u64()),
                other => panic!("unexpected phase type {other}: {e}"),
            }
        }
        let named = |pid: u64, tid: u64| {
            evs.iter().any(|e| {
                e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == pid && e["tid"] == tid
            })
        };
        // A track per vector and per CPU, with names.
        assert!(named(PID_VECTORS as u64, 41));
        assert!(named(PID_CPUS as u64, 0) && named(PID_CPUS as u64, 1));
        let slices: Vec<&str> = evs
            .iter()
            .filter(|e| e["ph"] == "X" && e["pid"] == PID_PHASES)
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            slices,
            vec![
                "running",
                "suspending",
                "CPUs offline",
                "image",
                "CPUs offline",
                "resuming-noirq",
                "resumed"
            ]
        );
        assert!(
            evs.iter()
                .any(|e| e["ph"] == "X" && e["name"] == "offline" && e["tid"] == 1)
        );
        assert!(
            evs.iter()
                .any(|e| e["ph"] == "X" && e["name"] == "migrate all off")
        );
        // Each divergence (H4 escalated by the restore, H1 for the restore without compose,
        // G2 for the vector left on CPU1) as an instant on its vector's track and a global one.
        let div: Vec<&Value> = evs.iter().filter(|e| e["cat"] == "divergence").collect();
        assert_eq!(stats.divergences, 3);
        assert_eq!(div.len(), 2 * stats.divergences);
        let rules: Vec<&str> = div
            .iter()
            .map(|e| e["args"]["rule"].as_str().unwrap())
            .collect();
        assert_eq!(rules, vec!["H4", "H4", "G2", "G2", "H1", "H1"]);
        assert!(
            div.iter()
                .any(|e| e["pid"] == PID_VECTORS && e["tid"] == 41 && e["s"] == "t")
        );
        assert!(
            div.iter()
                .any(|e| e["pid"] == PID_DIVERGENCES && e["s"] == "g")
        );
        assert_eq!(div[0]["args"]["severity"], "error");
    }
}
