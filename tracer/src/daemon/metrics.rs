//! The daemon's metrics for Prometheus, through node_exporter's textfile collector: the
//! daemon keeps its systemd sandbox (no listener, no network) and rewrites one file,
//! `msitrace.prom`, in the collector's directory; node_exporter serves it with its own.
//!
//! The file is in the Prometheus text format (0.0.4), the one the textfile collector parses:
//! OpenMetrics' `info` type and `_total` suffixes on a counter's TYPE line are refused or
//! turned untyped by Debian's node_exporter 1.5. It is replaced atomically (a new file beside
//! it, renamed), 0644 because node_exporter runs as another user; it holds no more than the
//! journal says. What each metric means is in README.md, "Fleets".

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tracer_common::ProbeId;

use crate::engine::{DivergenceUpdate, Engine, RuleId, Severity};
use crate::private_file::PrivateFile;
use crate::probes::hook_of;

/// Where Debian's prometheus-node-exporter reads textfiles (its default
/// `--collector.textfile.directory`).
pub const DEFAULT_METRICS_DIR: &str = "/var/lib/prometheus/node-exporter";
pub const FILE_NAME: &str = "msitrace.prom";
/// At most one rewrite this often while running; the last state is always written at stop.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Readable by node_exporter's user; nothing in it is secret (the journal says more).
pub const MODE: u32 = 0o644;

const SEVERITIES: [Severity; 2] = [Severity::Error, Severity::Warning];

/// Every value one write says, so that an unchanged state is not written again.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Divergences per rule and severity, each counted once per severity it reached.
    pub divergences: BTreeMap<(RuleId, Severity), u64>,
    pub vectors: usize,
    /// Vectors named by a divergence of the current resume epoch.
    pub vectors_diverged: usize,
    pub resume_epochs: u32,
    /// Events lost, per hook (every hook, 0 when none was lost).
    pub lost: Vec<(&'static str, u64)>,
    pub hooks_attached: usize,
    pub hooks_expected: usize,
    /// Wall-clock time of the last resume (devices back), 0 before the first.
    pub last_resume_seconds: f64,
    pub version: &'static str,
    pub kernel: String,
}

/// How an event's CLOCK_MONOTONIC time becomes wall-clock time.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// Measured when the time is first needed: right for the live daemon, whose monotonic
    /// clock stood still while suspended (an offset measured before the resume would be off
    /// by the time asleep).
    Now,
    /// A trace header's offset (`realtime_minus_monotonic_ns`): what a replay has.
    Fixed(i64),
}

/// A divergence as the engine keys it (rule, epoch, cause, vector or bus) and a severity it
/// reached.
type Reached = (RuleId, u32, String, Option<u32>, Option<String>, Severity);

/// The counters the daemon accumulates, and the file it writes.
pub struct Metrics {
    dir: PathBuf,
    clock: Clock,
    /// Rewrite while running (the daemon) or only at stop (a replay).
    periodic: bool,
    reached: HashSet<Reached>,
    divergences: BTreeMap<(RuleId, Severity), u64>,
    hooks: (usize, usize),
    /// (epoch, monotonic ns) of the last resume and its wall-clock seconds, converted once.
    last_resume: Option<(u32, u64, f64)>,
    written: Option<Snapshot>,
    last_write: Option<Instant>,
    /// The last write failed: said once, until one succeeds again.
    pub failing: bool,
}

impl Metrics {
    pub fn new(dir: PathBuf, clock: Clock, periodic: bool) -> Metrics {
        let divergences = RuleId::ALL
            .iter()
            .flat_map(|&r| SEVERITIES.iter().map(move |&s| ((r, s), 0)))
            .collect();
        Metrics {
            dir,
            clock,
            periodic,
            reached: HashSet::new(),
            divergences,
            hooks: (0, 0),
            last_resume: None,
            written: None,
            last_write: None,
            failing: false,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    pub fn set_hooks(&mut self, attached: usize, expected: usize) {
        self.hooks = (attached, expected);
    }

    /// Count a new divergence, or one whose severity changed to one it had not had: a
    /// warning escalated to an error counts once under each, so the counters only grow.
    pub fn count(&mut self, u: &DivergenceUpdate) {
        let d = &u.divergence;
        let key = (
            d.rule,
            d.epoch,
            d.cause.clone(),
            d.irq,
            d.device.clone(),
            d.severity,
        );
        if self.reached.insert(key) {
            *self.divergences.entry((d.rule, d.severity)).or_default() += 1;
        }
    }

    fn last_resume_seconds(&mut self, engine: &Engine) -> f64 {
        let st = engine.state();
        let Some(ep) = st.epochs.last() else {
            return 0.0;
        };
        let ts = ep.resumed_ts_ns.unwrap_or(ep.start_ts_ns);
        match self.last_resume {
            Some((e, t, secs)) if (e, t) == (ep.epoch, ts) => secs,
            _ => {
                let offset = match self.clock {
                    Clock::Now => {
                        crate::trace_file::ClockOffsets::measure().realtime_minus_monotonic_ns
                    }
                    Clock::Fixed(o) => o,
                };
                let secs = (i128::from(ts) + i128::from(offset)).max(0) as f64 / 1e9;
                self.last_resume = Some((ep.epoch, ts, secs));
                secs
            }
        }
    }

    pub fn snapshot(&mut self, engine: &Engine) -> Snapshot {
        let st = engine.state();
        let mut diverged: Vec<u32> = engine
            .divergences()
            .iter()
            .filter(|d| d.epoch == st.epoch)
            .flat_map(|d| d.irq.into_iter().chain(d.irqs.iter().copied()))
            .collect();
        diverged.sort_unstable();
        diverged.dedup();
        let losses = engine.losses();
        let lost = ProbeId::ALL
            .iter()
            .map(|&p| {
                let n = losses
                    .per_probe
                    .iter()
                    .find(|l| l.probe == p)
                    .map_or(0, |l| l.count);
                (hook_of(p).hook, n)
            })
            .collect();
        Snapshot {
            divergences: self.divergences.clone(),
            vectors: st.vectors.len(),
            vectors_diverged: diverged.len(),
            resume_epochs: st.epoch,
            lost,
            hooks_attached: self.hooks.0,
            hooks_expected: self.hooks.1,
            last_resume_seconds: self.last_resume_seconds(engine),
            version: env!("CARGO_PKG_VERSION"),
            kernel: engine.kernel_release().to_string(),
        }
    }

    /// While running: rewrite the file if the metrics changed and the last write is at
    /// least [`MIN_INTERVAL`] old. `Ok(false)`: nothing written.
    pub fn tick(&mut self, engine: &Engine) -> std::io::Result<bool> {
        if !self.periodic || self.last_write.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
            return Ok(false);
        }
        self.write(engine)
    }

    /// Rewrite the file if the metrics changed since the last write (or there was none).
    pub fn write(&mut self, engine: &Engine) -> std::io::Result<bool> {
        let snap = self.snapshot(engine);
        if self.written.as_ref() == Some(&snap) {
            return Ok(false);
        }
        self.last_write = Some(Instant::now());
        let path = self.path();
        write_file(&path, &render(&snap))?;
        self.written = Some(snap);
        Ok(true)
    }
}

/// Replace `path` with `text` atomically, readable by all.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = PrivateFile::create_with_mode(path, &[], MODE)?;
    f.file_mut()
        .write_all(text.as_bytes())
        .map_err(|e| crate::private_file::io_error(path, "write", e))?;
    f.persist()?;
    Ok(())
}

/// The file's text, in the Prometheus text format.
pub fn render(s: &Snapshot) -> String {
    let registry = Registry::new();
    let reg = |m: Box<dyn prometheus::core::Collector>| {
        registry
            .register(m)
            .expect("each metric is registered once, with a valid name");
    };
    let divergences = IntCounterVec::new(
        Opts::new(
            "msitrace_divergences_total",
            "Divergences found since the daemon started, by rule and severity; a divergence counts once under each severity it reached.",
        ),
        &["rule", "severity"],
    )
    .expect("valid metric");
    for ((rule, sev), n) in &s.divergences {
        divergences
            .with_label_values(&[rule.to_string().as_str(), sev.name()])
            .inc_by(*n);
    }
    reg(Box::new(divergences));
    let gauge = |name: &str, help: &str, v: i64| {
        let g = IntGauge::new(name, help).expect("valid metric");
        g.set(v);
        reg(Box::new(g));
    };
    gauge(
        "msitrace_vectors",
        "MSI/MSI-X vectors msitrace follows.",
        s.vectors as i64,
    );
    gauge(
        "msitrace_vectors_diverged",
        "Vectors named by a divergence in the current resume epoch.",
        s.vectors_diverged as i64,
    );
    gauge(
        "msitrace_hooks_attached",
        "Kernel hooks attached.",
        s.hooks_attached as i64,
    );
    gauge(
        "msitrace_hooks_expected",
        "Kernel hooks this kernel has a use for; fewer attached means some rules lose input.",
        s.hooks_expected as i64,
    );
    let epochs = IntCounterVec::new(
        Opts::new(
            "msitrace_resume_epochs_total",
            "Resumes (from suspend or hibernation) seen since the daemon started.",
        ),
        &[],
    )
    .expect("valid metric");
    epochs
        .with_label_values(&[] as &[&str])
        .inc_by(u64::from(s.resume_epochs));
    reg(Box::new(epochs));
    let lost = IntCounterVec::new(
        Opts::new(
            "msitrace_events_lost_total",
            "Events a hook could not write to the ring buffer; a rule relying on them may have missed or weakened a finding.",
        ),
        &["probe"],
    )
    .expect("valid metric");
    for (hook, n) in &s.lost {
        lost.with_label_values(&[*hook]).inc_by(*n);
    }
    reg(Box::new(lost));
    let last = Gauge::new(
        "msitrace_last_resume_timestamp_seconds",
        "Wall-clock time of the last resume (devices back), seconds since the Unix epoch; 0 before the first.",
    )
    .expect("valid metric");
    last.set(s.last_resume_seconds);
    reg(Box::new(last));
    let info = IntGaugeVec::new(
        Opts::new(
            "msitrace_info",
            "msitrace's version and the kernel it traces; always 1.",
        ),
        &["version", "kernel"],
    )
    .expect("valid metric");
    info.with_label_values(&[s.version, s.kernel.as_str()])
        .set(1);
    reg(Box::new(info));
    let mut out = String::new();
    TextEncoder::new()
        .encode_utf8(&registry.gather(), &mut out)
        .expect("a String takes any text");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replayer::{DelayOverrides, Replayer, Step};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/traces")
            .join(name)
    }

    /// The metrics a replay of `name` ends with, as the daemon's replay computes them.
    fn replayed(name: &str) -> (Snapshot, i64) {
        let replayer =
            Replayer::open(&[fixture(name)], DelayOverrides::default()).expect("fixture opens");
        let offset = replayer.header().clocks.realtime_minus_monotonic_ns;
        let (attached, expected) = replayer.header().coverage();
        let mut m = Metrics::new(PathBuf::from("/nonexistent"), Clock::Fixed(offset), false);
        m.set_hooks(attached, expected);
        let done = replayer.run(|step, _| {
            let (Step::Event(_, updates) | Step::End(updates)) = step;
            for u in updates {
                m.count(u);
            }
        });
        (m.snapshot(&done.engine), offset)
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn the_buggy_hibernation_in_numbers() {
        let (s, offset) = replayed("6.12-hibernate-buggy.msit");
        let text = render(&s);
        for (series, want) in [
            (
                r#"msitrace_divergences_total{rule="H1",severity="error"}"#,
                "2",
            ),
            (
                r#"msitrace_divergences_total{rule="H4",severity="error"}"#,
                "2",
            ),
            // H4 was a warning until the restore wrote the stale mask: counted under both.
            (
                r#"msitrace_divergences_total{rule="H4",severity="warning"}"#,
                "2",
            ),
            (
                r#"msitrace_divergences_total{rule="H1",severity="warning"}"#,
                "0",
            ),
            (
                r#"msitrace_divergences_total{rule="G5",severity="error"}"#,
                "0",
            ),
            ("msitrace_vectors", "16"),
            ("msitrace_vectors_diverged", "2"),
            ("msitrace_resume_epochs_total", "1"),
            ("msitrace_hooks_attached", "28"),
            ("msitrace_hooks_expected", "29"),
            (
                r#"msitrace_events_lost_total{probe="hv_compose_msi_msg"}"#,
                "0",
            ),
            (
                r#"msitrace_info{kernel="6.12.117+deb12-amd64",version=""#,
                "",
            ),
        ] {
            if want.is_empty() {
                assert!(text.contains(series), "{series} missing:\n{text}");
                continue;
            }
            assert_eq!(
                value(&text, series).as_deref(),
                Some(want),
                "{series}:\n{text}"
            );
        }
        // Every rule and severity, and every hook, has its series from the start: an
        // alert's increase() sees the first divergence or loss, not a series appearing.
        let n = |p: &str| text.lines().filter(|l| l.starts_with(p)).count();
        assert_eq!(n("msitrace_divergences_total{"), RuleId::ALL.len() * 2);
        assert_eq!(n("msitrace_events_lost_total{"), ProbeId::ALL.len());
        assert!(text.contains("# TYPE msitrace_divergences_total counter\n"));
        assert!(text.contains("# TYPE msitrace_vectors gauge\n"));
        assert!(text.contains("# TYPE msitrace_info gauge\n"));
        // The last resume is the header's wall clock at the recorded resume.
        let secs: f64 = value(&text, "msitrace_last_resume_timestamp_seconds")
            .unwrap()
            .parse()
            .unwrap();
        assert!(secs > 1.6e9, "{secs}");
        assert!((s.last_resume_seconds - secs).abs() < 1e-3);
        assert_ne!(offset, 0);
    }

    #[test]
    fn errors_count_each_divergence_once_and_a_fresh_daemon_starts_at_zero() {
        let (s, _) = replayed("6.12-hibernate-buggy.msit");
        let total: u64 = s
            .divergences
            .iter()
            .filter(|((_, sev), _)| *sev == Severity::Error)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(total, 4, "four divergences ended as errors");
        let empty = Metrics::new(PathBuf::from("/x"), Clock::Fixed(0), false);
        assert!(empty.divergences.values().all(|&n| n == 0));
    }

    #[test]
    fn the_file_is_replaced_whole_readable_by_all_and_only_when_changed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("msitrace-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let replayer = Replayer::open(
            &[fixture("6.12-hibernate-buggy.msit")],
            DelayOverrides::default(),
        )
        .unwrap();
        let mut m = Metrics::new(dir.clone(), Clock::Fixed(0), true);
        let engine = replayer.engine();
        assert!(m.write(engine).unwrap());
        assert!(!m.write(engine).unwrap(), "unchanged: not written again");
        let path = dir.join(FILE_NAME);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("msitrace_vectors ")
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        // Debounced: a change right after a write waits for the next tick.
        m.set_hooks(1, 2);
        assert!(!m.tick(engine).unwrap());
        assert!(m.write(engine).unwrap());
        let missing = Metrics::new(dir.join("absent"), Clock::Fixed(0), true).write(engine);
        assert!(missing.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
