//! The live pipeline shared by `record` and `verify` (and the TUI and daemon after them): the
//! collector's events go, in one order, first to the trace file and then to the engine, so
//! that a replay of the file sees exactly what the live engine saw.
//!
//! [`Recorder`] is that pairing and needs no kernel (tests drive it with made-up events);
//! [`Session`] adds the collector and the loop: drain the ring buffer when it is readable,
//! and once a second (one wake-up, see [`crate::tick`]) sample losses and IRQ counts, notice
//! a suspend the tracer slept through, attach hooks of modules that appeared, re-attach
//! kprobes whose return probes went silent after a resume, and flush the file.

use std::{future::Future, path::Path, time::Duration};

use anyhow::{Context, Result};
use serde::Serialize;
use tracer_common::ProbeId;

use crate::{
    collector::{Collector, CollectorOptions, ProbeCounters},
    engine::{Divergence, DivergenceUpdate, Engine, EngineConfig, RuleTiming},
    event::{Event, EventKind},
    kernel, seed,
    tick::Ticker,
    trace_file::{
        TraceHeader, TraceWriter, WriterStats,
        rotate::{FlightConfig, FlightRecorder, Reseed},
    },
};

/// Where a recording goes: one file, or the daemon's rotated flight-recorder files.
pub enum Writer {
    File(TraceWriter),
    // Boxed: the flight recorder carries its header template (the whole seed).
    Flight(Box<FlightRecorder>),
}

impl Writer {
    pub fn path(&self) -> &Path {
        match self {
            Writer::File(w) => w.path(),
            Writer::Flight(f) => f.path(),
        }
    }

    fn append(&mut self, ev: &Event) -> std::io::Result<()> {
        match self {
            Writer::File(w) => w.append(ev),
            Writer::Flight(f) => f.append(ev),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Writer::File(w) => w.flush(),
            Writer::Flight(f) => f.flush(),
        }
    }

    fn finish(self, trailer: &serde_json::Value) -> std::io::Result<WriterStats> {
        match self {
            Writer::File(w) => w.finish(trailer),
            Writer::Flight(f) => f.finish(trailer),
        }
    }
}

impl From<TraceWriter> for Writer {
    fn from(w: TraceWriter) -> Writer {
        Writer::File(w)
    }
}

/// What `Session::start_to` records to.
pub enum Output<'a> {
    None,
    File(&'a Path),
    Flight(FlightConfig),
}

/// Engine and file fed with the same events in the same order.
pub struct Recorder {
    engine: Engine,
    writer: Option<Writer>,
    last_ts: u64,
    /// Why the file stopped, when a write failed (a full disk): the engine goes on without it.
    write_error: Option<String>,
    /// `write_error`, once, for the front-end.
    stopped_writing: Option<String>,
}

/// What the recorder leaves in the file's trailer: the live run's own conclusions, so a
/// replay can be checked against them.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LiveSummary {
    pub events: u64,
    /// The rule delays the live engine ran with.
    pub timing: RuleTiming,
    pub end_ts_ns: u64,
    pub divergences: Vec<DivergenceKey>,
    pub counters: Vec<(ProbeId, u64, u64)>,
    pub decode_errors: u64,
    /// (probe, run_ns, runs) from the kernel's BPF statistics, for the probes that ran while
    /// `kernel.bpf_stats_enabled` was on: what each program cost per event in this kernel.
    #[serde(default)]
    pub bpf_stats: Vec<(ProbeId, u64, u64)>,
}

/// The identity of a divergence as the live run reported it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct DivergenceKey {
    pub rule: String,
    pub severity: String,
    pub irq: Option<u32>,
    pub device: Option<String>,
    pub epoch: u32,
    pub cause: String,
}

impl DivergenceKey {
    pub fn of(d: &Divergence) -> DivergenceKey {
        DivergenceKey {
            rule: d.rule.to_string(),
            severity: d.severity.name().to_string(),
            irq: d.irq,
            device: d.device.clone(),
            epoch: d.epoch,
            cause: d.cause.clone(),
        }
    }

    pub fn all(divergences: &[Divergence]) -> Vec<DivergenceKey> {
        let mut v: Vec<_> = divergences.iter().map(DivergenceKey::of).collect();
        v.sort();
        v
    }
}

impl Recorder {
    pub fn new(engine: Engine, writer: Option<impl Into<Writer>>) -> Recorder {
        Recorder {
            engine,
            writer: writer.map(Into::into),
            last_ts: 0,
            write_error: None,
            stopped_writing: None,
        }
    }

    /// A write failed: the file ends at its last whole chunk (readable, without trailer) and
    /// recording stops, but the engine, the journal and the TUI go on. A full disk must not
    /// take down the service whose job is to say what the kernel did.
    fn stop_writing(&mut self, e: std::io::Error) {
        if let Some(w) = self.writer.take() {
            let text = format!(
                "the trace file {} stopped after {} events: {e}; the engine goes on without it (free space, then restart to record again)",
                w.path().display(),
                self.engine.state().events
            );
            self.write_error = Some(text.clone());
            self.stopped_writing = Some(text);
        }
    }

    /// The file stopped since the last call: why.
    pub fn take_stopped_writing(&mut self) -> Option<String> {
        self.stopped_writing.take()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Write the event, then apply it: what the engine concludes from it is in the file.
    pub fn push(&mut self, ev: &Event) -> Result<Vec<DivergenceUpdate>> {
        if let Some(w) = &mut self.writer
            && let Err(e) = w.append(ev)
        {
            self.stop_writing(e);
        }
        self.last_ts = self.last_ts.max(ev.ts_ns);
        Ok(self.engine.apply(ev))
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some(w) = &mut self.writer
            && let Err(e) = w.flush()
        {
            self.stop_writing(e);
        }
        Ok(())
    }

    /// End of recording at the last event's time, the same instant a replay ends at, so both
    /// settle the pending rules alike.
    pub fn finish(mut self, counters: &[ProbeCounters], decode_errors: u64) -> Result<Finished> {
        let updates = self.engine.finish(self.last_ts);
        let summary = LiveSummary {
            events: self.engine.state().events,
            timing: self.engine.timing(),
            end_ts_ns: self.last_ts,
            divergences: DivergenceKey::all(self.engine.divergences()),
            counters: counters.iter().map(|c| (c.probe, c.hits, c.lost)).collect(),
            decode_errors,
            bpf_stats: counters
                .iter()
                .filter(|c| c.runs > 0)
                .map(|c| (c.probe, c.run_ns, c.runs))
                .collect(),
        };
        let stats = match self.writer.take() {
            Some(w) => {
                let path = w.path().to_path_buf();
                match w.finish(&serde_json::to_value(&summary)?) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.write_error = Some(format!(
                            "cannot finish {} (its trailer is missing; it reads up to its last whole record): {e}",
                            path.display()
                        ));
                        None
                    }
                }
            }
            None => None,
        };
        Ok(Finished {
            engine: self.engine,
            updates,
            stats,
            write_error: self.write_error,
        })
    }
}

/// What a finished [`Recorder`] hands back.
pub struct Finished {
    pub engine: Engine,
    /// What the end of the recording settled (G1, G5 deadlines).
    pub updates: Vec<DivergenceUpdate>,
    pub stats: Option<WriterStats>,
    /// The file stopped early (a write failed): why.
    pub write_error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub collector: CollectorOptions,
    pub timing: RuleTiming,
}

/// Why a session stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    Signal(&'static str),
    Duration,
    /// The caller's own condition (a child exited, a resume completed).
    Done,
}

/// What a front-end sees of a running session. `run` calls these in the order the engine
/// sees things; a front-end that needs its own loop (the TUI reads keys too) calls
/// [`Session::pump`], [`Session::sample`] and [`Session::flush`] itself.
pub trait Observer {
    /// An event, after the engine applied it (and after the file got it).
    fn event(&mut self, _ev: &Event, _engine: &Engine) {}
    /// A new or changed divergence, as the engine found it.
    fn update(&mut self, _u: &DivergenceUpdate, _engine: &Engine) {}
    /// After the once-a-second sample of losses and IRQ counts.
    fn sampled(&mut self, _collector: &Collector, _engine: &Engine) {}
    /// Something the session did that a person should know (a module's hooks attached late,
    /// silent return probes re-attached); it is in the file too, as a `Notice` event.
    fn notice(&mut self, _text: &str, _engine: &Engine) {}
    /// A write to the trace file failed (a full disk): the file ends there, the engine and
    /// the front-end go on.
    fn file_stopped(&mut self, _why: &str, _engine: &Engine) {}
}

/// Keeps the divergences, for the last drain in `finish`.
#[derive(Default)]
struct Collect {
    updates: Vec<DivergenceUpdate>,
}

impl Observer for Collect {
    fn update(&mut self, u: &DivergenceUpdate, _engine: &Engine) {
        self.updates.push(u.clone());
    }
}

/// `run`'s plain form: divergences only.
struct OnUpdate<F>(F);

impl<F: FnMut(&DivergenceUpdate)> Observer for OnUpdate<F> {
    fn update(&mut self, u: &DivergenceUpdate, _engine: &Engine) {
        (self.0)(u)
    }

    // Its users (record, verify) have no screen of their own: stderr is where a person looks.
    fn notice(&mut self, text: &str, _engine: &Engine) {
        crate::output::note(text);
    }

    fn file_stopped(&mut self, why: &str, _engine: &Engine) {
        crate::output::note(why);
    }
}

pub struct Session {
    collector: Collector,
    recorder: Recorder,
    suspended_ns: u64,
    hits: Vec<u64>,
    batch: Vec<Event>,
    /// The tick's period while nothing happens: see [`Session::set_idle_period`].
    idle_period: Option<Duration>,
}

/// The tick's period while events flow or a rule waits for samples.
const BUSY_PERIOD: Duration = Duration::from_secs(1);

/// Quiet one-second ticks before the tick slows down to the idle period.
const QUIET_TICKS_BEFORE_IDLE: u32 = 5;

/// The tick's period: one second while events flow or a rule waits for samples, the idle
/// period (when there is one) after [`QUIET_TICKS_BEFORE_IDLE`] quiet ticks. Each call returns
/// the period to switch to, if it changes.
struct Pace {
    idle_period: Option<Duration>,
    idle: bool,
    quiet_ticks: u32,
    drained: bool,
}

impl Pace {
    fn new(idle_period: Option<Duration>) -> Pace {
        Pace {
            idle_period,
            idle: false,
            quiet_ticks: 0,
            drained: false,
        }
    }

    /// Events came out of the ring.
    fn drained(&mut self) -> Option<Duration> {
        self.drained = true;
        self.quiet_ticks = 0;
        std::mem::take(&mut self.idle).then_some(BUSY_PERIOD)
    }

    /// A tick's work is done; `awaits_samples`: the engine's [`Engine::awaits_samples`].
    fn ticked(&mut self, awaits_samples: bool) -> Option<Duration> {
        let period = self.idle_period?;
        let quiet = !std::mem::take(&mut self.drained) && !awaits_samples;
        self.quiet_ticks = if quiet { self.quiet_ticks + 1 } else { 0 };
        if self.idle && !quiet {
            self.idle = false;
            Some(BUSY_PERIOD)
        } else if !self.idle && self.quiet_ticks >= QUIET_TICKS_BEFORE_IDLE {
            self.idle = true;
            Some(period)
        } else {
            None
        }
    }
}

/// What a finished session leaves.
pub struct Outcome {
    pub engine: Engine,
    pub final_updates: Vec<DivergenceUpdate>,
    pub stats: Option<WriterStats>,
    pub counters: Vec<ProbeCounters>,
    pub decode_errors: u64,
    /// The trace file stopped early (a write failed): why.
    pub write_error: Option<String>,
}

impl Outcome {
    /// The one line a recording ends with: why it stopped, what it wrote, what it lost.
    pub fn closing_line(&self, reason: &StopReason, path: &Path) -> String {
        let lost: u64 = self.counters.iter().map(|c| c.lost).sum();
        let why = match reason {
            StopReason::Signal(s) => format!("stopped by {s}"),
            StopReason::Duration => "duration reached".into(),
            StopReason::Done => "done".into(),
        };
        let written = self
            .stats
            .as_ref()
            .map(|s| format!("{} events, {} bytes", s.events, s.bytes))
            .unwrap_or_default();
        format!(
            "{why}; wrote {written} to {}; {lost} events lost in the kernel; {} divergences",
            path.display(),
            self.engine.divergences().len()
        )
    }
}

/// Hand the heap that the start-up freed back to the kernel. Parsing the kernel's BTF and
/// loading the eBPF object peak at tens of MiB, all freed once the programs are attached,
/// but glibc keeps freed pages mapped (below the top of the heap it never trims them), so a
/// daemon that idles for weeks would hold them: measured, 34 MiB of heap before, 1.5 after.
fn return_setup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free pages of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Session {
    /// Seed the state, attach the probes, and open the trace file if `output` is given.
    /// Must run inside a tokio runtime.
    pub fn start(opts: &SessionOptions, output: Option<&Path>) -> Result<Session> {
        Session::start_to(opts, output.map_or(Output::None, Output::File))
    }

    /// [`Session::start`] to a file, a flight recorder or nothing.
    pub fn start_to(opts: &SessionOptions, output: Output) -> Result<Session> {
        let collector = Collector::start(&opts.collector)?;
        let seed = seed::read_seed().context("cannot read the initial vector state")?;
        let probes = collector.statuses().to_vec();
        let mut header = TraceHeader::for_this_host(
            probes.clone(),
            Some(collector.layout().layout),
            seed.clone(),
        );
        header.layout_fields = serde_json::to_value(&collector.layout().fields)?;
        header.btf_facts = collector.layout().facts.clone();
        header.ring_bytes = collector.ring_bytes();
        header.rule_timing = Some(opts.timing);
        let writer = match output {
            // The writer's error already names the file and what to do.
            Output::File(p) => Some(Writer::File(TraceWriter::create(p, &header)?)),
            Output::Flight(cfg) => {
                let dir = cfg.dir.clone();
                // Each new file starts from what /proc and sysfs say at that moment, as a
                // fresh msitrace would: the newest files replay without the oldest.
                let reseed: Reseed = Box::new(|| seed::read_seed().ok());
                Some(Writer::Flight(Box::new(
                    FlightRecorder::create(cfg, header.clone(), reseed).with_context(|| {
                        format!("cannot start the flight recorder in {}", dir.display())
                    })?,
                )))
            }
            Output::None => None,
        };
        let mut config = EngineConfig::new(header.kernel_release.clone(), probes, seed);
        config.timing = opts.timing;
        config.btf_facts = header.btf_facts.clone();
        let engine = Engine::new(config);
        let mut session = Session {
            collector,
            recorder: Recorder::new(engine, writer),
            suspended_ns: kernel::suspended_ns(),
            hits: Vec::new(),
            batch: Vec::new(),
            idle_period: None,
        };
        session.collector.refresh_counters(false);
        session.hits = session
            .collector
            .counters()
            .iter()
            .map(|c| c.hits)
            .collect();
        let first = session.collector.irq_counts(kernel::monotonic_ns());
        session.recorder.push(&first)?;
        return_setup_memory();
        Ok(session)
    }

    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    pub fn engine(&self) -> &Engine {
        self.recorder.engine()
    }

    /// Run until `stop` resolves, `until` holds (checked after every batch), SIGINT or
    /// SIGTERM. `on_update` sees every new or changed divergence as the engine finds it.
    pub async fn run<F>(
        &mut self,
        stop: F,
        until: impl FnMut(&Engine) -> bool,
        on_update: impl FnMut(&DivergenceUpdate),
    ) -> Result<StopReason>
    where
        F: Future<Output = StopReason>,
    {
        self.run_observed(stop, until, &mut OnUpdate(on_update))
            .await
    }

    /// Let [`Session::run_observed`] slow its tick to `period` once nothing happens: no event
    /// in the ring for [`QUIET_TICKS_BEFORE_IDLE`] seconds, no delayed rule waiting, no PM
    /// transition under way. The first event brings the one-second tick back (and reaches the
    /// file within a second, as before). For the service, which idles for days between
    /// suspends: the periodic samples are only read by rules right after a resume, so at rest
    /// they cost CPU and wake-ups for nothing.
    pub fn set_idle_period(&mut self, period: Option<Duration>) {
        self.idle_period = period;
    }

    /// [`Session::run`] with an observer that also sees every event and every sample.
    pub async fn run_observed<F>(
        &mut self,
        stop: F,
        mut until: impl FnMut(&Engine) -> bool,
        obs: &mut impl Observer,
    ) -> Result<StopReason>
    where
        F: Future<Output = StopReason>,
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        // One coalesced tick: the sample and the flush share the wake-up, once a second (every
        // idle period at rest, when one is set). What a drain brings reaches the file at the
        // next tick (or sooner, past the writer's 64 KiB), and SIGINT/SIGTERM flush before
        // stopping.
        let tick = Ticker::new(BUSY_PERIOD)?;
        let mut pace = Pace::new(self.idle_period);
        tokio::pin!(stop);
        let reason = loop {
            if until(self.recorder.engine()) {
                break StopReason::Done;
            }
            tokio::select! {
                r = self.collector.readable() => {
                    r?;
                    self.pump(obs)?;
                    if let Some(p) = pace.drained() {
                        tick.set_period(p)?;
                    }
                }
                r = tick.tick() => {
                    r?;
                    // The one call site of the periodic sample (IRQ counts among it).
                    self.sample(obs)?;
                    self.flush(obs)?;
                    if let Some(p) = pace.ticked(self.recorder.engine().awaits_samples()) {
                        tick.set_period(p)?;
                    }
                }
                _ = sigint.recv() => break StopReason::Signal("SIGINT"),
                _ = sigterm.recv() => break StopReason::Signal("SIGTERM"),
                r = &mut stop => break r,
            }
        };
        self.pump(obs)?;
        self.sample(obs)?;
        self.flush(obs)?;
        Ok(reason)
    }

    /// Close the file (with the live summary in its trailer) and hand back the engine.
    pub fn finish(mut self) -> Result<Outcome> {
        // What the ring still holds (a caller that stopped without `run`'s last pump, e.g.
        // verify on its timeout) belongs to the recording too.
        let mut late = Collect::default();
        self.pump(&mut late)?;
        self.collector.refresh_counters(true);
        let counters = self.collector.counters().to_vec();
        let decode_errors = self.collector.decode_errors();
        let mut done = self.recorder.finish(&counters, decode_errors)?;
        late.updates.append(&mut done.updates);
        Ok(Outcome {
            engine: done.engine,
            final_updates: late.updates,
            stats: done.stats,
            counters,
            decode_errors,
            write_error: done.write_error,
        })
    }

    /// Tell the front-end, and the file while it is written: a session's notices are part of
    /// what happened, so a replay shows them where they occurred.
    fn notice(&mut self, text: String) {
        self.batch.push(Event {
            ts_ns: kernel::monotonic_ns(),
            cpu: 0,
            tgid: 0,
            kind: EventKind::Notice { text },
        });
    }

    fn push_all(&mut self, obs: &mut impl Observer) -> Result<()> {
        repair_clock(&mut self.batch);
        // Records of different CPUs reach the ring in commit order, which can be a little
        // out of time order; sort what one drain brought.
        self.batch.sort_by_key(|e| e.ts_ns);
        let mut sample_now = false;
        for ev in std::mem::take(&mut self.batch) {
            let was = self.recorder.engine().state().phase;
            self.push_one(&ev, obs)?;
            let is = self.recorder.engine().state().phase;
            // The two samples G5 rests on, taken the moment the ring shows their instant
            // rather than up to a second later: at the start of a PM transition (user space
            // may still run until the freezer, so interrupts of the last moments before it
            // are seen as before the suspend) and at the end of a resume (the baseline that
            // growth must pass to show a vector alive; see `Engine::on_counts`).
            if was.in_transition() != is.in_transition() {
                sample_now = true;
            }
        }
        if sample_now {
            let ev = self.collector.irq_counts(kernel::monotonic_ns());
            self.push_one(&ev, obs)?;
        }
        if let Some(why) = self.recorder.take_stopped_writing() {
            obs.file_stopped(&why, self.recorder.engine());
        }
        Ok(())
    }

    fn push_one(&mut self, ev: &Event, obs: &mut impl Observer) -> Result<()> {
        for u in self.recorder.push(ev)? {
            obs.update(&u, self.recorder.engine());
        }
        obs.event(ev, self.recorder.engine());
        if let EventKind::Notice { text } = &ev.kind {
            obs.notice(text, self.recorder.engine());
        }
        Ok(())
    }

    /// Wait until the ring buffer has something to drain.
    pub async fn readable(&self) -> Result<()> {
        self.collector.readable().await
    }

    /// Drain the ring buffer into the file and the engine.
    pub fn pump(&mut self, obs: &mut impl Observer) -> Result<()> {
        self.collector.drain(&mut self.batch);
        self.push_all(obs)
    }

    /// Push what the file has buffered to disk.
    pub fn flush(&mut self, obs: &mut impl Observer) -> Result<()> {
        self.recorder.flush()?;
        if let Some(why) = self.recorder.take_stopped_writing() {
            obs.file_stopped(&why, self.recorder.engine());
        }
        Ok(())
    }

    /// The once-a-second work: losses, IRQ counts, a suspend the tracer slept through, new
    /// modules, silent return probes. Call it every second from a custom loop.
    pub fn sample(&mut self, obs: &mut impl Observer) -> Result<()> {
        self.collector.drain(&mut self.batch);
        let now = kernel::monotonic_ns();
        let suspended = kernel::suspended_ns();
        let slept = suspended.saturating_sub(self.suspended_ns);
        self.suspended_ns = suspended;
        // Anything under half a second is clock noise, not a suspend.
        if slept > 500_000_000 {
            self.batch.push(Event {
                ts_ns: now,
                cpu: 0,
                tgid: 0,
                kind: EventKind::Gap {
                    reason: format!(
                        "the system was suspended for {:.1} s (CLOCK_BOOTTIME ran ahead of CLOCK_MONOTONIC); the tracer was frozen with user space and drained the ring buffer after",
                        slept as f64 / 1e9
                    ),
                },
            });
        }
        self.collector.refresh_counters(false);
        self.batch.extend(self.collector.new_losses(now));
        self.batch.push(self.collector.irq_counts(now));
        self.push_all(obs)?;

        let changed = self.collector.rescan_modules();
        if !changed.is_empty() {
            let text = format!(
                "a module appeared; hooks now attached: {}",
                self.collector.attached_count().0
            );
            self.notice(text);
        }
        self.reattach_silent_returns();
        self.push_all(obs)?;
        obs.sampled(&self.collector, self.recorder.engine());
        Ok(())
    }

    /// A return probe whose entry keeps firing but which itself stopped is the kretprobe
    /// failure seen after resume on some kernels (aya#932, kernel bugzilla 218775).
    fn reattach_silent_returns(&mut self) {
        let hits: Vec<u64> = self.collector.counters().iter().map(|c| c.hits).collect();
        let delta = |p: ProbeId| {
            hits[p as usize].saturating_sub(self.hits.get(p as usize).copied().unwrap_or(0))
        };
        let pairs = [
            (ProbeId::HvComposeEnter, ProbeId::HvComposeExit),
            (ProbeId::HvUnmaskEnter, ProbeId::HvUnmaskExit),
            (ProbeId::HvMaskEnter, ProbeId::HvMaskExit),
            (ProbeId::RestoreMsiEnter, ProbeId::RestoreMsiExit),
            (ProbeId::MigrateAllOffEnter, ProbeId::MigrateAllOffExit),
            (ProbeId::SetAffinityEnter, ProbeId::SetAffinityExit),
        ];
        let silent: Vec<ProbeId> = pairs
            .iter()
            .filter(|(enter, exit)| delta(*enter) >= 2 && delta(*exit) == 0)
            .map(|(_, exit)| *exit)
            .collect();
        self.hits = hits;
        if !silent.is_empty() {
            let names: Vec<&str> = silent.iter().map(|p| p.program()).collect();
            self.notice(format!(
                "return probes went silent while their entries fired ({}): re-attaching the kprobes",
                names.join(", ")
            ));
            self.collector.reattach_kprobes();
        }
    }
}

/// How far an event may be ahead of the one committed after it before its time is taken for
/// a clock not yet resumed rather than ring-buffer reordering (microseconds between CPUs).
const CLOCK_AHEAD_NS: u64 = 1_000_000_000;

/// In a hibernation's image kernel, what runs before timekeeping resumes (the end of
/// machine_suspend, the start of syscore_resume) is stamped by a clock tens of seconds ahead
/// (seen on Debian's 7.x: about 23 s). Sorted by time, those events would land after the
/// resume they preceded: the phase would end "CPUs offline", a late "image restored" would
/// discard the composes of the resume, and the engine's clock would settle G1 and G5 early.
/// Ring order is commit order, so such an event takes the time of the event committed after
/// it (a run of them, each the next one's).
pub fn repair_clock(batch: &mut [Event]) {
    for i in (0..batch.len().saturating_sub(1)).rev() {
        let next = batch[i + 1].ts_ns;
        if batch[i].ts_ns > next.saturating_add(CLOCK_AHEAD_NS) {
            batch[i].ts_ns = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(5);

    fn quiet_until_idle(p: &mut Pace) {
        for _ in 1..QUIET_TICKS_BEFORE_IDLE {
            assert_eq!(p.ticked(false), None);
        }
        assert_eq!(p.ticked(false), Some(IDLE));
    }

    #[test]
    fn without_an_idle_period_the_tick_stays_at_one_second() {
        let mut p = Pace::new(None);
        for _ in 0..20 {
            assert_eq!(p.ticked(false), None);
        }
        assert_eq!(p.drained(), None);
    }

    #[test]
    fn quiet_ticks_slow_down_and_an_event_brings_the_second_back() {
        let mut p = Pace::new(Some(IDLE));
        quiet_until_idle(&mut p);
        assert_eq!(p.ticked(false), None);
        assert_eq!(p.drained(), Some(BUSY_PERIOD));
        assert_eq!(p.drained(), None);
        // The tick after the event is not quiet: the count starts again after it.
        assert_eq!(p.ticked(false), None);
        quiet_until_idle(&mut p);
    }

    #[test]
    fn a_waiting_rule_keeps_the_tick_at_one_second() {
        let mut p = Pace::new(Some(IDLE));
        for _ in 0..20 {
            assert_eq!(p.ticked(true), None);
        }
        quiet_until_idle(&mut p);
        // A deadline scheduled while idle (a gap found by the sample) speeds the tick up.
        assert_eq!(p.ticked(true), Some(BUSY_PERIOD));
    }
}
