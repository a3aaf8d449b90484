//! The one way a recorded file goes through the engine: `replay`, `daemon --replay`,
//! `live --replay`, `export` and the benchmark all read through a [`Replayer`], so that they
//! expand rotation sets, pick the rule delays and judge the end of a file alike.
//!
//! The rule delays default to the live run's (the header's, or the trailer's for files that
//! kept them only there): a replay that used other delays would report other verdicts than
//! the run it replays, and say nothing about why.

use crate::duration::secs;
use std::path::PathBuf;

use anyhow::Context;

use crate::engine::{DivergenceUpdate, Engine, EngineConfig, RuleTiming};
use crate::event::Event;
use crate::report::Report;
use crate::session::{DivergenceKey, LiveSummary};
use crate::trace_file::{Record, TraceHeader, TraceReader, rotate};

/// Rule delays a user asked for; a field left `None` takes the live run's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelayOverrides {
    pub g5_silence_ns: Option<u64>,
    pub g1_grace_ns: Option<u64>,
}

impl DelayOverrides {
    fn apply(&self, base: RuleTiming) -> RuleTiming {
        RuleTiming {
            g5_silence_ns: self.g5_silence_ns.unwrap_or(base.g5_silence_ns),
            g1_grace_ns: self.g1_grace_ns.unwrap_or(base.g1_grace_ns),
            ..base
        }
    }

    fn any(&self) -> bool {
        self.g5_silence_ns.is_some() || self.g1_grace_ns.is_some()
    }
}

/// Where the delays a replay uses came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelaySource {
    /// The live run's, from the file.
    Recording,
    /// At least one given by the user.
    Override,
    /// The file does not say (an unfinished file from before headers kept them): defaults.
    Default,
}

/// The engine's configuration from a trace header: the kernel and what its BTF showed, the
/// probes that attached and the seed the live run started from.
pub fn engine_config(header: &TraceHeader, timing: RuleTiming) -> EngineConfig {
    EngineConfig {
        kernel_release: header.kernel_release.clone(),
        probes: header.probes.clone(),
        seed: header.seed.clone(),
        timing,
        btf_facts: header.btf_facts.clone(),
    }
}

/// What one step of a replay did.
pub enum Step {
    /// An event, applied; the divergences it raised or revised.
    Event(Event, Vec<DivergenceUpdate>),
    /// The end of the recording: the delayed rules settled at the last event's time.
    End(Vec<DivergenceUpdate>),
}

/// What a finished replay produced: the engine, the report (with the reader's and the
/// comparison's warnings) and the recorder's trailer.
pub struct Replayed {
    pub engine: Engine,
    pub report: Report,
    pub trailer: Option<serde_json::Value>,
}

pub struct Replayer {
    files: Vec<PathBuf>,
    reader: TraceReader,
    engine: Engine,
    delays: DelaySource,
    trailer: Option<serde_json::Value>,
    ended: bool,
    /// A read error that ended the files early.
    read_error: Option<String>,
    /// What a directory held that was not read.
    skipped: Vec<String>,
}

impl Replayer {
    /// Open trace files (a directory stands for the flight-recorder files in it, oldest
    /// first) as one stream.
    pub fn open(files: &[PathBuf], overrides: DelayOverrides) -> anyhow::Result<Replayer> {
        let mut skipped = Vec::new();
        let files = rotate::expand_noting(files, &mut skipped)
            .context("cannot open the traces to replay")?;
        let reader = TraceReader::open_many(&files)?;
        let recorded = match reader.header().rule_timing {
            Some(t) => Some(t),
            None => trailer_timing(&files),
        };
        let (timing, delays) = match (recorded, overrides.any()) {
            (_, true) => (
                overrides.apply(recorded.unwrap_or_default()),
                DelaySource::Override,
            ),
            (Some(t), false) => (t, DelaySource::Recording),
            (None, false) => (RuleTiming::default(), DelaySource::Default),
        };
        let engine = Engine::new(engine_config(reader.header(), timing));
        Ok(Replayer {
            files,
            reader,
            engine,
            delays,
            trailer: None,
            ended: false,
            read_error: None,
            skipped,
        })
    }

    /// The files read, rotation sets expanded.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn header(&self) -> &TraceHeader {
        self.reader.header()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn delay_source(&self) -> DelaySource {
        self.delays
    }

    /// The next event applied, then once the end; `None` after that. A read error ends the
    /// stream there (the events before it stand) and becomes an input warning.
    pub fn step(&mut self) -> Option<Step> {
        if self.ended {
            return None;
        }
        loop {
            match self.reader.next() {
                Some(Ok(Record::Event(ev))) => {
                    let updates = self.engine.apply(&ev);
                    return Some(Step::Event(ev, updates));
                }
                Some(Ok(Record::Trailer(t))) => self.trailer = Some(t),
                Some(Err(e)) => {
                    self.read_error = Some(e.to_string());
                    return Some(self.settle());
                }
                None => return Some(self.settle()),
            }
        }
    }

    fn settle(&mut self) -> Step {
        self.ended = true;
        let end = self.engine.state().now_ns;
        Step::End(self.engine.finish(end))
    }

    /// Everything that makes the input less than whole, as the report lists it: damage the
    /// reader stepped over, an early end, a missing trailer, and a live verdict that this
    /// replay does not reproduce.
    pub fn input_warnings(&self) -> Vec<String> {
        let mut warnings = self.skipped.clone();
        warnings.extend(self.reader.warnings().iter().map(|w| w.to_string()));
        warnings.extend(self.read_error.clone());
        if !self.ended {
            return warnings;
        }
        let timing = self.engine.timing();
        if self.trailer.is_none() {
            warnings.push(
                "the recording has no trailer: it did not finish (killed, crashed or still \
                 running), so the trace may end early"
                    .into(),
            );
        }
        if self.delays == DelaySource::Default {
            warnings.push(format!(
                "the file does not say which rule delays the live run used: judged with the \
                 defaults (G5 silence {}, G1 grace {}); pass --silence and --grace to change them",
                secs(timing.g5_silence_ns),
                secs(timing.g1_grace_ns)
            ));
        }
        // The recorder keeps its live verdict in the trailer; a replay with the same delays
        // that disagrees means the file lost something the live engine saw (or the rules
        // changed since it was recorded).
        if let Some(live) = self
            .trailer
            .as_ref()
            .and_then(|t| serde_json::from_value::<LiveSummary>(t.clone()).ok())
        {
            let replayed = DivergenceKey::all(self.engine.divergences());
            if live.timing != timing {
                warnings.push(format!(
                    "replayed with other rule delays than the live run (G5 silence {}, G1 grace {} live): \
                     the verdicts may differ from the live run's",
                    secs(live.timing.g5_silence_ns),
                    secs(live.timing.g1_grace_ns)
                ));
            } else if replayed != live.divergences {
                warnings.push(format!(
                    "the live run reported {} divergences and this replay finds {}: the file may have lost events, or it was recorded by another msitrace version",
                    live.divergences.len(),
                    replayed.len()
                ));
            }
        }
        warnings
    }

    /// Apply every remaining event, handing each step to `each`.
    pub fn run(mut self, mut each: impl FnMut(&Step, &Engine)) -> Replayed {
        // `step` by hand, over the reader's `read_each`: an event is then moved into its
        // `Step` once, not once per layer that returns it (a 136-byte step is copied by a call
        // to memcpy). The reader hands out nothing after an error.
        if !self.ended {
            let (engine, trailer, read_error) =
                (&mut self.engine, &mut self.trailer, &mut self.read_error);
            self.reader.read_each(|rec| match rec {
                Ok(Record::Event(ev)) => {
                    let updates = engine.apply(&ev);
                    each(&Step::Event(ev, updates), engine);
                }
                Ok(Record::Trailer(t)) => *trailer = Some(t),
                Err(e) => *read_error = Some(e.to_string()),
            });
            let end = self.settle();
            each(&end, &self.engine);
        }
        self.into_replayed()
    }

    /// The report of what was replayed so far (all of it, after [`Replayer::run`]).
    pub fn into_replayed(self) -> Replayed {
        let report = Report::from_engine(&self.engine).with_input_warnings(self.input_warnings());
        Replayed {
            engine: self.engine,
            report,
            trailer: self.trailer,
        }
    }
}

/// Replay trace files to their end.
pub fn replay_files(files: &[PathBuf], overrides: DelayOverrides) -> anyhow::Result<Replayed> {
    Ok(Replayer::open(files, overrides)?.run(|_, _| {}))
}

/// The live run's delays from the last trailer of the set, for files whose header predates
/// them. Costs one extra read, only for such files; a set that cannot be read here fails
/// again, with its message, when it is replayed.
fn trailer_timing(files: &[PathBuf]) -> Option<RuleTiming> {
    let reader = TraceReader::open_many(files).ok()?;
    let mut timing = None;
    for rec in reader {
        if let Ok(Record::Trailer(t)) = rec
            && let Ok(live) = serde_json::from_value::<LiveSummary>(t)
        {
            timing = Some(live.timing);
        }
    }
    timing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::seed::Seed;
    use crate::trace_file::TraceWriter;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("msitrace-{name}-{}.trace", std::process::id()))
    }

    const GRACE_5S: RuleTiming = RuleTiming {
        g1_grace_ns: 5_000_000_000,
        g5_silence_ns: 10_000_000_000,
        g3_grace_ns: 1_000_000_000,
    };

    /// A file with one sleep cycle; the header and the trailer say which delays were live.
    fn write(name: &str, header_timing: Option<RuleTiming>, trailer: serde_json::Value) -> PathBuf {
        let path = temp(name);
        let header = TraceHeader {
            kernel_release: "6.12.117+deb12-amd64".into(),
            probes: EngineConfig::all_probes_attached(),
            seed: Seed {
                taken_ns: 1_000,
                online_cpus: vec![0, 1],
                vectors: Vec::new(),
            },
            rule_timing: header_timing,
            ..Default::default()
        };
        let mut w = TraceWriter::create(&path, &header).unwrap();
        let pm = |ts: u64, action: &str| Event {
            ts_ns: ts,
            cpu: 0,
            tgid: 1,
            kind: EventKind::SuspendResume {
                action: action.into(),
                val: 0x10,
                start: true,
            },
        };
        for ev in [
            pm(2_000, "freeze_processes"),
            pm(3_000, "dpm_resume_noirq"),
            pm(4_000, "thaw_processes"),
        ] {
            w.append(&ev).unwrap();
        }
        w.finish(&trailer).unwrap();
        path
    }

    fn live(timing: RuleTiming) -> serde_json::Value {
        serde_json::to_value(LiveSummary {
            events: 3,
            timing,
            end_ts_ns: 4_000,
            divergences: Vec::new(),
            counters: Vec::new(),
            decode_errors: 0,
            bpf_stats: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn replays_a_written_file_and_says_when_it_is_unusable() {
        let path = write(
            "replay",
            Some(RuleTiming::default()),
            live(RuleTiming::default()),
        );
        let r = replay_files(std::slice::from_ref(&path), DelayOverrides::default()).unwrap();
        assert_eq!(r.report.summary.resume_epochs, 1);
        assert_eq!(r.report.exit_code(), 0);
        assert!(r.trailer.is_some());
        assert!(
            r.report.input_warnings.is_empty(),
            "{:?}",
            r.report.input_warnings
        );
        let _ = std::fs::remove_file(&path);

        let missing = replay_files(&[temp("missing")], DelayOverrides::default());
        assert!(missing.is_err());
    }

    #[test]
    fn judges_with_the_live_runs_delays_unless_told_otherwise() {
        // From the header.
        let path = write("delays-header", Some(GRACE_5S), live(GRACE_5S));
        let r = Replayer::open(std::slice::from_ref(&path), DelayOverrides::default()).unwrap();
        assert_eq!(r.delay_source(), DelaySource::Recording);
        let done = r.run(|_, _| {});
        assert_eq!(done.engine.timing(), GRACE_5S);
        assert!(
            done.report.input_warnings.is_empty(),
            "{:?}",
            done.report.input_warnings
        );
        let _ = std::fs::remove_file(&path);

        // A file from before headers kept them: from the trailer.
        let path = write("delays-trailer", None, live(GRACE_5S));
        let done = replay_files(std::slice::from_ref(&path), DelayOverrides::default()).unwrap();
        assert_eq!(done.engine.timing(), GRACE_5S);
        assert!(
            done.report.input_warnings.is_empty(),
            "{:?}",
            done.report.input_warnings
        );

        // Asked for: the user's, on top of the live run's, with a warning that they differ.
        let asked = DelayOverrides {
            g1_grace_ns: Some(1_000_000_000),
            ..Default::default()
        };
        let done = replay_files(std::slice::from_ref(&path), asked).unwrap();
        assert_eq!(done.engine.timing().g1_grace_ns, 1_000_000_000);
        assert_eq!(done.engine.timing().g5_silence_ns, GRACE_5S.g5_silence_ns);
        assert!(
            done.report
                .input_warnings
                .iter()
                .any(|w| w.contains("other rule delays")),
            "{:?}",
            done.report.input_warnings
        );
        let _ = std::fs::remove_file(&path);

        // Neither says: the defaults, and the report says so.
        let path = write("delays-none", None, serde_json::json!({}));
        let done = replay_files(std::slice::from_ref(&path), DelayOverrides::default()).unwrap();
        assert_eq!(done.engine.timing(), RuleTiming::default());
        assert!(
            done.report
                .input_warnings
                .iter()
                .any(|w| w.contains("does not say which rule delays")),
            "{:?}",
            done.report.input_warnings
        );
        let _ = std::fs::remove_file(&path);
    }
}
