//! `msitrace replay`: rebuild the state from a trace file with the same engine the live run
//! used, and print the divergence report (text, or `--json`). Exit 0 when no divergence
//! counts (by default: no error; `--fail-on warning`: none at all), 1 when one does, 2 on
//! unusable input.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::engine::{Engine, EngineConfig, RuleTiming};
use crate::report::{FailOn, Report};
use crate::session::{DivergenceKey, LiveSummary};
use crate::trace_file::{Record, TraceHeader, TraceReader};

#[derive(clap::Args)]
pub struct Args {
    /// Trace file written by `msitrace record`; several are read as one stream, in the order
    /// given; a directory stands for the daemon's flight-recorder files in it, oldest first.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub fail_on: FailOnArg,
}

/// `--fail-on`, shared by replay and verify so that both exit alike.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct FailOnArg {
    /// Which divergences make the exit code 1: `error` (default; warnings are listed but the
    /// run passes) or `warning` (any divergence, like -Werror).
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = FailOn::Error)]
    pub fail_on: FailOn,
}

/// The delays of the time-based rules, shared by record, verify and replay so that a replay
/// can use what the live run used.
#[derive(clap::Args, Clone, Debug)]
pub struct TimingArgs {
    /// G5: seconds a vector that fired before suspend may stay silent after resume.
    #[arg(long, value_name = "SECS", default_value_t = secs(RuleTiming::default().g5_silence_ns),
          allow_negative_numbers = true, value_parser = super::duration::parse_delay_secs)]
    pub silence: f64,
    /// G1: seconds after resume a vector with an action may still be masked.
    #[arg(long, value_name = "SECS", default_value_t = secs(RuleTiming::default().g1_grace_ns),
          allow_negative_numbers = true, value_parser = super::duration::parse_delay_secs)]
    pub grace: f64,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn ns(secs: f64, what: &str) -> anyhow::Result<u64> {
    anyhow::ensure!(
        secs.is_finite() && secs >= 0.0,
        "--{what} must be a number of seconds >= 0, not {secs}"
    );
    Ok((secs * 1e9) as u64)
}

impl TimingArgs {
    pub fn timing(&self) -> anyhow::Result<RuleTiming> {
        Ok(RuleTiming {
            g5_silence_ns: ns(self.silence, "silence")?,
            g1_grace_ns: ns(self.grace, "grace")?,
            ..RuleTiming::default()
        })
    }
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

/// What a replay produced: the finished engine, the report, and the recorder's trailer.
pub struct Replayed {
    pub engine: Engine,
    pub report: Report,
    pub trailer: Option<serde_json::Value>,
}

/// Replay trace files through a fresh engine. Damage the reader stepped over goes into the
/// report's input warnings; a file that cannot be read at all is an error.
pub fn replay_files(files: &[PathBuf], timing: RuleTiming) -> anyhow::Result<Replayed> {
    let files = crate::trace_file::rotate::expand(files)?;
    let mut reader = TraceReader::open_many(&files)?;
    let mut engine = Engine::new(engine_config(reader.header(), timing));
    let mut trailer = None;
    for rec in reader.by_ref() {
        match rec? {
            Record::Event(e) => {
                engine.apply(&e);
            }
            Record::Trailer(t) => trailer = Some(t),
        }
    }
    let end = engine.state().now_ns;
    engine.finish(end);
    let mut warnings: Vec<String> = reader.warnings().iter().map(|w| w.to_string()).collect();
    if trailer.is_none() {
        warnings.push(
            "the recording has no trailer: it did not finish (killed, crashed or still running), \
             so the trace may end early"
                .into(),
        );
    }
    // The recorder keeps its live verdict in the trailer; a replay that disagrees means the
    // file lost something the live engine saw (or the rules changed since it was recorded).
    if let Some(live) = trailer
        .as_ref()
        .and_then(|t| serde_json::from_value::<LiveSummary>(t.clone()).ok())
    {
        let replayed = DivergenceKey::all(engine.divergences());
        if live.timing != timing {
            warnings.push(format!(
                "replayed with other rule delays than the live run (G5 silence {} s, G1 grace {} s live): \
                 the verdicts may differ; pass --silence and --grace to compare",
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
    let report = Report::from_engine(&engine).with_input_warnings(warnings);
    Ok(Replayed {
        engine,
        report,
        trailer,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let timing = args.timing.timing()?;
    let replayed = replay_files(&args.files, timing)?;
    let report = replayed.report;
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json())
            .context("cannot format the report as JSON")?;
        crate::output::print_stdout(&format!("{text}\n"))?;
    } else {
        crate::output::print_stdout(&crate::output::terminal_safe(&report.to_text()))?;
    }
    Ok(ExitCode::from(report.exit_code_for(args.fail_on.fail_on)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::event::{Event, EventKind};
    use crate::seed::Seed;
    use crate::trace_file::TraceWriter;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("msitrace-{name}-{}.trace", std::process::id()))
    }

    #[test]
    fn replays_a_written_file_and_says_when_it_is_unusable() {
        let path = temp("replay");
        let header = TraceHeader {
            kernel_release: "6.12.117+deb12-amd64".into(),
            probes: EngineConfig::all_probes_attached(),
            seed: Seed {
                taken_ns: 1_000,
                online_cpus: vec![0, 1],
                vectors: Vec::new(),
            },
            ..Default::default()
        };
        let mut w = TraceWriter::create(&path, &header).unwrap();
        let pm = |ts: u64, action: &str, start: bool| Event {
            ts_ns: ts,
            cpu: 0,
            pid: 1,
            kind: EventKind::SuspendResume {
                action: action.into(),
                val: 0x10,
                start,
            },
        };
        for ev in [
            pm(2_000, "freeze_processes", true),
            pm(3_000, "dpm_resume_noirq", true),
            pm(4_000, "thaw_processes", true),
        ] {
            w.append(&ev).unwrap();
        }
        w.finish(&serde_json::json!({"divergences": []})).unwrap();
        let r = replay_files(std::slice::from_ref(&path), RuleTiming::default()).unwrap();
        assert_eq!(r.report.summary.resume_epochs, 1);
        assert_eq!(r.report.exit_code(), 0);
        assert!(r.trailer.is_some());
        assert!(r.report.input_warnings.is_empty());
        let _ = std::fs::remove_file(&path);

        let missing = replay_files(&[temp("missing")], RuleTiming::default());
        assert!(missing.is_err());
    }

    #[test]
    fn rejects_negative_durations() {
        assert!(ns(-1.0, "silence").is_err());
        assert_eq!(ns(2.5, "grace").unwrap(), 2_500_000_000);
    }
}
