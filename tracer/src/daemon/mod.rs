//! `msitrace daemon`: the unattended service. Attaches the probes, seeds the state, runs the
//! engine, and writes a structured journal entry for every divergence, phase change and
//! completed resume ([`journal`]); tells systemd it is ready, how it is doing and that it is
//! alive ([`notify`]); keeps a flight recorder of rotated trace files; reads its settings from
//! flags and /etc/msitrace/msitrace.toml ([`config`]); rewrites its metrics for node_exporter's
//! textfile collector ([`metrics`]).

pub mod config;
pub mod journal;
pub mod kmsg;
pub mod metrics;
pub mod notify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};

use crate::collector::{Collector, CollectorOptions};
use crate::engine::{DivergenceUpdate, Engine, Phase, Severity};
use crate::event::Event;
use crate::replayer::{DelayOverrides, Replayer, Step};
use crate::session::{Observer, Output, Session, SessionOptions, StopReason};
use crate::trace_file::rotate;

use config::{Config, KmsgLevel, LogTarget};
use journal::{Context as Ctx, Entry, Level, Sink, Target};
use metrics::{Clock, Metrics};
use notify::Notifier;

/// The tick's period when nothing happens: a wake-up every 5 s for the watchdog, the status,
/// the metrics and a sample of the handler counts (see [`Session::set_idle_period`]).
const IDLE_PERIOD: Duration = Duration::from_secs(5);

/// Turns what the engine sees into journal entries and systemd notifications.
pub struct Reporter {
    pub sink: Sink,
    notifier: Notifier,
    phase: Phase,
    /// The last resume epoch whose summary was written.
    summarized: u32,
    /// Coverage for STATUS=, e.g. `27/29 hooks`.
    coverage: String,
    /// The flight recorder still writes (a failed write stops it, not the service).
    recording: bool,
    /// The live daemon's error findings to the kernel log, when asked and writable.
    kmsg: Option<kmsg::Kmsg<std::fs::File>>,
    /// The textfile for node_exporter, when configured.
    pub metrics: Option<Metrics>,
}

impl Reporter {
    pub fn new(target: Target) -> Reporter {
        Reporter {
            sink: Sink::new(target),
            notifier: Notifier::new(),
            phase: Phase::Running,
            summarized: 0,
            coverage: String::new(),
            recording: true,
            kmsg: None,
            metrics: None,
        }
    }

    /// Rewrite the metrics file: at stop (`force`), or while running when they changed and
    /// the last write is old enough. A failure is said once (a missing directory is a
    /// notice: node_exporter may simply not be installed), and again only after a success.
    fn write_metrics(&mut self, engine: &Engine, force: bool) {
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        let result = if force {
            m.write(engine)
        } else {
            m.tick(engine)
        };
        match result {
            Ok(true) if m.failing => {
                m.failing = false;
                let text = format!("metrics: writing {} again", m.path().display());
                self.send(&journal::recorder(Level::Notice, &text, &Ctx::of(engine)));
            }
            Ok(_) => {}
            Err(_) if m.failing => {}
            Err(e) => {
                m.failing = true;
                let (level, hint) = if e.kind() == std::io::ErrorKind::NotFound {
                    (
                        Level::Notice,
                        " (is node_exporter's textfile collector installed? `metrics = false` \
                         in msitrace.toml stops trying)",
                    )
                } else {
                    (Level::Warning, "")
                };
                let text = format!("metrics not written: {e}{hint}");
                self.send(&journal::recorder(level, &text, &Ctx::of(engine)));
            }
        }
    }

    pub fn send(&mut self, e: &Entry) {
        self.sink.send(e);
    }

    fn started(&mut self, probes: &[crate::probes::ProbeStatus], engine: &Engine) {
        let c = journal::coverage(probes, &Ctx::of(engine));
        self.coverage = format!(
            "{}/{} hooks",
            c.field("MSITRACE_HOOKS_ATTACHED").unwrap_or("?"),
            c.field("MSITRACE_HOOKS_EXPECTED").unwrap_or("?")
        );
        if let Some(m) = self.metrics.as_mut() {
            let (attached, expected) = crate::probes::coverage(probes);
            m.set_hooks(attached, expected);
        }
        self.send(&c);
        self.phase = engine.state().phase;
    }

    fn status(&self, engine: &Engine, lost: u64) -> String {
        let (all, errors) = counts(engine);
        format!(
            "{}, {} vectors, {all} divergences ({errors} errors), {lost} events lost, phase {}{}",
            self.coverage,
            engine.state().vectors.len(),
            engine.state().phase.name(),
            if self.recording {
                ""
            } else {
                ", NOT RECORDING (a write failed)"
            }
        )
    }

    /// A resume's summary once its delayed rules (G1, G5) have had their time.
    fn maybe_summarize(&mut self, engine: &Engine) {
        let st = engine.state();
        if st.epoch > self.summarized && st.phase == Phase::Resumed && engine.cycle_settled() {
            self.summarized = st.epoch;
            self.send(&journal::resume_summary(engine));
        }
    }

    /// End of the run: the resume summary if it is still owed, and why it stopped.
    fn stopped(&mut self, engine: &Engine, why: &str, recorder: Option<&str>) {
        if engine.state().epoch > self.summarized {
            self.summarized = engine.state().epoch;
            self.send(&journal::resume_summary(engine));
        }
        let (all, errors) = counts(engine);
        let mut fields = vec![
            ("MSITRACE_DIVERGENCES", all.to_string()),
            ("MSITRACE_ERRORS", errors.to_string()),
            ("KERNEL", engine.kernel_release().to_string()),
            ("SYSLOG_IDENTIFIER", "msitrace".to_string()),
        ];
        if let Some(r) = recorder {
            fields.push(("MSITRACE_FLIGHT_RECORDER", r.to_string()));
        }
        self.write_metrics(engine, true);
        let e = Entry {
            level: Level::Notice,
            message_id: journal::STOPPED_ID,
            message: format!(
                "stopped ({why}): {all} divergences, {errors} of them errors{}",
                recorder
                    .map(|r| format!("; flight recorder in {r}"))
                    .unwrap_or_default()
            ),
            fields,
            short: "stopped".into(),
        };
        self.send(&e);
        self.notifier.stopping();
    }
}

impl Observer for Reporter {
    fn event(&mut self, _ev: &Event, engine: &Engine) {
        // After a resume the ring's backlog (the whole suspend, and the journal entries it
        // raises) is worked through before the next tick: feed the watchdog as it goes.
        self.notifier.tick();
        let now = engine.state().phase;
        if now != self.phase {
            let from = std::mem::replace(&mut self.phase, now);
            self.send(&journal::phase_change(from, &Ctx::of(engine)));
        }
        self.maybe_summarize(engine);
    }

    fn update(&mut self, u: &DivergenceUpdate, engine: &Engine) {
        let e = journal::divergence(u, engine);
        self.send(&e);
        if let Some(k) = &mut self.kmsg {
            k.update(u, &e.line(), engine.state().now_ns);
        }
        if let Some(m) = self.metrics.as_mut() {
            m.count(u);
        }
        self.write_metrics(engine, false);
    }

    fn notice(&mut self, text: &str, engine: &Engine) {
        self.send(&journal::recorder(Level::Notice, text, &Ctx::of(engine)));
    }

    fn file_stopped(&mut self, why: &str, engine: &Engine) {
        self.recording = false;
        self.send(&journal::recorder(Level::Warning, why, &Ctx::of(engine)));
    }

    fn sampled(&mut self, collector: &Collector, engine: &Engine) {
        let lost: u64 = collector.counters().iter().map(|c| c.lost).sum();
        let status = self.status(engine, lost);
        self.notifier.status(status);
        self.notifier.tick();
        self.maybe_summarize(engine);
        self.write_metrics(engine, false);
    }
}

/// Divergences so far, and how many are errors (a warning may have been escalated since).
fn counts(engine: &Engine) -> (usize, usize) {
    let d = engine.divergences();
    let errors = d.iter().filter(|d| d.severity == Severity::Error).count();
    (d.len(), errors)
}

fn target(t: LogTarget) -> Target {
    match t {
        LogTarget::Auto => Target::auto(),
        LogTarget::Journal => Target::Journal,
        LogTarget::Stderr => Target::Stderr,
    }
}

/// The service: until SIGTERM or SIGINT.
pub async fn run(cfg: &Config) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if cfg.record && unsafe { libc::geteuid() } == 0 {
        // Before the probes are loaded: a state directory that cannot be used, or that
        // another daemon holds, is said in one line at once. Not root, the probes' "needs
        // root" says more, so it comes first; nothing is created here either: the flight
        // recorder creates, checks and locks the directory for good at its first file.
        let dir = &cfg.state_dir;
        let said = |e: std::io::Error| anyhow::anyhow!("state directory {} {e}", dir.display());
        rotate::check_state_dir(dir, false).map_err(said)?;
        if dir.exists() {
            drop(rotate::lock_state_dir(dir).map_err(said)?);
        }
    }
    let opts = SessionOptions {
        collector: CollectorOptions {
            ring_bytes: cfg.ring_mib << 20,
            irq_counts: cfg.irq_counts,
        },
        timing: cfg.timing,
    };
    let output = if cfg.record {
        Output::Flight(rotate::FlightConfig {
            dir: cfg.state_dir.clone(),
            max_file_bytes: cfg.max_file_bytes,
            max_files: cfg.max_files,
        })
    } else {
        Output::None
    };
    let mut session = Session::start_to(&opts, output)?;
    let mut rep = Reporter::new(target(cfg.log_target));
    rep.metrics = cfg
        .metrics_dir
        .clone()
        .map(|d| Metrics::new(d, Clock::Now, true));
    rep.started(session.collector().statuses(), session.engine());
    if cfg.kmsg == KmsgLevel::Error {
        match std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            Ok(f) => rep.kmsg = Some(kmsg::Kmsg::new(f)),
            Err(e) => rep.send(&journal::recorder(
                Level::Warning,
                &format!(
                    "the kernel log (/dev/kmsg) is not writable ({e}): error findings go to the \
                     journal only; the unit needs DeviceAllow=/dev/kmsg w, or set kmsg = \"off\""
                ),
                &Ctx::of(session.engine()),
            )),
        }
    }
    // The idle tick also feeds the watchdog. The watchdog counts monotonic time, which runs
    // through a hibernation's freeze and image until the snapshot, and those come on top of
    // the time since the last ping: with a tick at half of a 10 s WatchdogSec, 6.12 in QEMU
    // went 10.9 s without one (3.8 s to the freeze, 3.1 s to the thaw, 4 s of backlog) and
    // systemd killed the daemon with the resume unwritten. A quarter leaves it the half.
    let idle = rep
        .notifier
        .watchdog_period()
        .map_or(IDLE_PERIOD, |half| (half / 2).min(IDLE_PERIOD));
    session.set_idle_period(Some(idle.max(Duration::from_secs(1))));
    rep.notifier.ready(rep.status(session.engine(), 0));
    // run_observed stops on SIGINT and SIGTERM itself; SIGHUP (no terminal to lose) is
    // ignored rather than killing the service.
    let mut hup = signal(SignalKind::hangup())?;
    let ignore_hup = async move {
        loop {
            hup.recv().await;
        }
    };
    let reason = session
        .run_observed(ignore_hup, |_| false, &mut rep)
        .await?;
    let why = match reason {
        StopReason::Signal(s) => s.to_string(),
        _ => "done".into(),
    };
    let outcome = session.finish()?;
    for u in &outcome.final_updates {
        rep.update(u, &outcome.engine);
    }
    // A write that failed during the run was reported then; one that failed closing the
    // last file (its trailer) is reported here.
    if let (true, Some(e)) = (rep.recording, &outcome.write_error) {
        rep.file_stopped(e, &outcome.engine);
    }
    let dir = cfg.record.then(|| cfg.state_dir.display().to_string());
    rep.stopped(&outcome.engine, &why, dir.as_deref());
    Ok(())
}

/// The same entries from recorded files instead of the kernel: for tests, for a log pipeline
/// fed after the fact, and for the memory benchmark. No probes, no flight recorder; the
/// metrics file only in `metrics_dir` (written once, at the end), never in the configured
/// one, which belongs to this machine's daemon. Returns why the files proved nothing, if they
/// did not (the caller exits 2).
pub fn replay(
    files: &[PathBuf],
    cfg: &Config,
    delays: DelayOverrides,
    metrics_dir: Option<&Path>,
) -> Result<Vec<String>> {
    let replayer = Replayer::open(files, delays)?;
    let mut rep = Reporter::new(target(cfg.log_target));
    let offset = replayer.header().clocks.realtime_minus_monotonic_ns;
    rep.metrics = metrics_dir.map(|d| Metrics::new(d.to_path_buf(), Clock::Fixed(offset), false));
    rep.started(&replayer.header().probes, replayer.engine());
    let done = replayer.run(|step, engine| match step {
        Step::Event(ev, updates) => {
            for u in updates {
                rep.update(u, engine);
            }
            rep.event(ev, engine);
        }
        Step::End(updates) => {
            for u in updates {
                rep.update(u, engine);
            }
        }
    });
    for w in &done.report.input_warnings {
        eprintln!("msitrace: {w}");
    }
    rep.stopped(&done.engine, "end of the replayed files", None);
    Ok(done.report.inconclusive)
}
