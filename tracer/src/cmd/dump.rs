//! `msitrace dump`: the records of a trace file as text (a header summary, then one line per
//! event) or as JSON Lines, for reading by eye or with jq.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::event::Event;
use crate::event_text::describe;
use crate::output::terminal_safe;
use crate::probes::Status;
use crate::trace_file::{Record, TraceFileError, TraceHeader, TraceReader};

#[derive(clap::Args)]
pub struct Args {
    /// Trace file written by `msitrace record`; several are read as one stream, in the order
    /// given (a rotated flight-recorder set, oldest first).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// JSON Lines: `{"header": …}` (one per file), then one `{"event": …}` or `{"trailer": …}`
    /// per record.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when the file was read (damage skipped is reported on stderr), 2 when it cannot be.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    run_to(&args, &mut io::BufWriter::new(stdout.lock()))
}

fn run_to(args: &Args, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut skipped = Vec::new();
    let files = crate::trace_file::rotate::expand_noting(&args.files, &mut skipped)?;
    let mut err = io::stderr().lock();
    for note in &skipped {
        // Not eprintln!: a closed stderr must not turn a note into a panic.
        let _ = writeln!(
            err,
            "{}",
            terminal_safe(&format!("msitrace: warning: {note}"))
        );
    }
    drop(err);
    let mut reader = TraceReader::open_many(&files)?;
    let result =
        dump(&mut reader, out, args.json).and_then(|()| out.flush().map_err(DumpError::Write));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(DumpError::Write(e)) => {
            crate::output::stdout_result(Err(e))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(DumpError::Read(e)) => Err(e.into()),
    }
}

enum DumpError {
    Read(TraceFileError),
    Write(io::Error),
}

impl From<io::Error> for DumpError {
    fn from(e: io::Error) -> DumpError {
        DumpError::Write(e)
    }
}

fn dump(reader: &mut TraceReader, out: &mut impl Write, json: bool) -> Result<(), DumpError> {
    let mut warned = 0;
    report_warnings(reader, &mut warned, out)?;
    if json {
        for h in reader.headers() {
            json_line(out, &JsonLine::Header(h))?;
        }
    } else {
        write_summary(out, reader)?;
    }
    let mut base: Option<u64> = None;
    let mut events = 0u64;
    let mut trailer = false;
    while let Some(rec) = reader.next() {
        let rec = rec.map_err(DumpError::Read)?;
        report_warnings(reader, &mut warned, out)?;
        match (&rec, json) {
            (Record::Event(e), true) => json_line(out, &JsonLine::Event(e))?,
            (Record::Trailer(t), true) => json_line(out, &JsonLine::Trailer(t))?,
            (Record::Event(e), false) => {
                let base = *base.get_or_insert(e.ts_ns);
                let line = format!(
                    "{} cpu{} pid {} {}\n",
                    crate::duration::offset_us(e.ts_ns, base),
                    e.cpu,
                    e.tgid,
                    describe(&e.kind)
                );
                out.write_all(terminal_safe(&line).as_bytes())?;
            }
            (Record::Trailer(t), false) => {
                out.write_all(terminal_safe(&format!("# trailer: {t}\n")).as_bytes())?
            }
        }
        match rec {
            Record::Event(_) => events += 1,
            Record::Trailer(_) => trailer = true,
        }
    }
    report_warnings(reader, &mut warned, out)?;
    if !json {
        writeln!(out, "# {events} events")?;
        if !trailer {
            writeln!(
                out,
                "# no trailer: the recording did not finish (killed, crashed, or still running)"
            )?;
        }
    }
    Ok(())
}

/// Print the warnings not printed yet to stderr, after the output that precedes them.
fn report_warnings(
    reader: &TraceReader,
    warned: &mut usize,
    out: &mut impl Write,
) -> Result<(), DumpError> {
    let new = reader.warnings().get(*warned..).unwrap_or_default();
    if new.is_empty() {
        return Ok(());
    }
    out.flush()?;
    let mut err = io::stderr().lock();
    for w in new {
        // Not eprintln!: a closed stderr must not turn damage into a panic.
        let _ = writeln!(err, "{}", terminal_safe(&format!("msitrace: warning: {w}")));
    }
    *warned = reader.warnings().len();
    Ok(())
}

/// One JSON Lines object, `{"header": …}`, `{"event": …}` or `{"trailer": …}`, with the
/// fields in the order of their types.
#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum JsonLine<'a> {
    Header(&'a TraceHeader),
    Event(&'a Event),
    Trailer(&'a serde_json::Value),
}

fn json_line(out: &mut impl Write, line: &JsonLine<'_>) -> Result<(), DumpError> {
    let mut value = serde_json::to_value(line).map_err(|e| DumpError::Write(e.into()))?;
    hex_pointers(&mut value);
    // serde_json gives back the writer's own io::Error (EPIPE included) through `into`.
    serde_json::to_writer(&mut *out, &value).map_err(|e| DumpError::Write(e.into()))?;
    writeln!(out)?;
    Ok(())
}

/// Fields that hold kernel addresses. As JSON numbers, those above 2^53 (all of them on
/// x86-64) lose their low bits in jq, Python's json.loads with floats, JavaScript and most
/// other JSON tools; as "0x…" strings they survive and read as addresses.
const POINTER_FIELDS: &[&str] = &["chip_data"];

fn hex_pointers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                match field.as_u64() {
                    Some(p) if POINTER_FIELDS.contains(&k.as_str()) => {
                        *field = Value::String(format!("{p:#x}"))
                    }
                    _ => hex_pointers(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(hex_pointers),
        _ => {}
    }
}

fn write_summary(out: &mut impl Write, reader: &TraceReader) -> io::Result<()> {
    // Built first and written through terminal_safe: every header string is the file's.
    let mut text = Vec::new();
    for (i, h) in reader.headers().iter().enumerate() {
        if i > 0 {
            writeln!(text, "# --- next file ---")?;
        }
        write_header(&mut text, h)?;
    }
    writeln!(
        text,
        "# times: seconds since the first event (CLOCK_MONOTONIC)"
    )?;
    out.write_all(terminal_safe(&String::from_utf8_lossy(&text)).as_bytes())
}

fn write_header(out: &mut impl Write, h: &TraceHeader) -> io::Result<()> {
    writeln!(
        out,
        "# msitrace {} trace (format v{}), created {} on {}",
        h.tool_version, h.format_version, h.created, h.hostname
    )?;
    writeln!(
        out,
        "# kernel {} {}, boot id {}",
        h.kernel_release,
        h.machine,
        h.boot_id.as_deref().unwrap_or("unknown")
    )?;
    if !h.command_line.is_empty() {
        writeln!(out, "# command: {}", h.command_line.join(" "))?;
    }
    let missing: Vec<String> = h
        .probes
        .iter()
        .filter(|p| !matches!(p.status, Status::Attached | Status::Unused))
        .map(|p| format!("{} ({})", p.hook, status_word(p.status)))
        .collect();
    let (attached, used) = h.coverage();
    write!(out, "# probes: {attached} of {used} attached")?;
    if missing.is_empty() {
        writeln!(out)?;
    } else {
        writeln!(out, "; not attached: {}", missing.join(", "))?;
    }
    // A hook attached to another candidate than its first (a renamed function).
    let renamed: Vec<String> = h
        .probes
        .iter()
        .filter_map(|p| {
            let on = p.attached_symbol.as_deref()?;
            (on != p.symbol).then(|| format!("{} on {on}", p.hook))
        })
        .collect();
    if !renamed.is_empty() {
        writeln!(out, "# attached under another name: {}", renamed.join(", "))?;
    }
    if let Some(src) = h.probes.iter().find_map(|p| p.symbol_source.as_ref()) {
        writeln!(out, "# kernel symbols from {}", src.describe())?;
    }
    writeln!(
        out,
        "# seed: {} vectors, online CPUs {:?}; BTF layout {}; ring buffer {} KiB",
        h.seed.vectors.len(),
        h.seed.online_cpus,
        if h.layout.is_some() {
            "resolved"
        } else {
            "not resolved"
        },
        h.ring_bytes / 1024
    )?;
    writeln!(
        out,
        "# clocks: realtime = monotonic {:+} ns, boottime = monotonic {:+} ns (± {} ns)",
        h.clocks.realtime_minus_monotonic_ns,
        h.clocks.boottime_minus_monotonic_ns,
        h.clocks.uncertainty_ns
    )
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Attached => "attached",
        Status::Absent => "absent",
        Status::Denied => "denied",
        Status::Error => "error",
        Status::Pending => "pending",
        Status::Unused => "unused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use tracer_common::ProbeId;

    use crate::seed::Seed;
    use crate::trace_file::TraceWriter;

    fn trace(name: &str, finish: bool) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "msitrace-dump-test-{}-{name}.trace",
            std::process::id()
        ));
        let mut w = TraceWriter::create(
            &path,
            &TraceHeader::for_this_host(Vec::new(), None, Seed::default()),
        )
        .unwrap();
        let kinds = [
            EventKind::MigrateOneIrq { irq: 42 },
            EventKind::Lost {
                probe: ProbeId::WriteMsiMsg,
                count: 2,
            },
            EventKind::Gap {
                reason: "frozen".into(),
            },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            w.append(&Event {
                ts_ns: 1_000_000_000 + i as u64 * 1_500_000,
                cpu: 1,
                tgid: 7,
                kind,
            })
            .unwrap();
        }
        if finish {
            w.finish(&serde_json::json!({"divergences": 0})).unwrap();
        }
        path
    }

    fn dump_to_string(path: &std::path::Path, json: bool) -> String {
        let args = Args {
            files: vec![path.to_path_buf()],
            json,
        };
        let mut out = Vec::new();
        let code = run_to(&args, &mut out).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn dumps_text_with_a_summary_and_one_line_per_event() {
        let path = trace("text", true);
        let text = dump_to_string(&path, false);
        let _ = std::fs::remove_file(&path);
        let events: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            events,
            [
                "+0.000000 cpu1 pid 7 migrate-one-irq irq 42",
                "+0.001500 cpu1 pid 7 !!! LOST 2 events of __pci_write_msi_msg (ring buffer full): state after this is uncertain",
                "+0.003000 cpu1 pid 7 --- GAP: not tracing (frozen) ---",
            ]
        );
        assert!(text.starts_with("# msitrace "), "{text}");
        assert!(text.contains("# probes: 0 of 0 attached\n"), "{text}");
        assert!(
            text.contains("# trailer: {\"divergences\":0}\n# 3 events\n"),
            "{text}"
        );
        assert!(!text.contains("no trailer"), "{text}");
    }

    #[test]
    fn the_header_says_which_hooks_attached_under_another_name() {
        let mut probes = crate::engine::EngineConfig::all_probes_attached();
        let mut h = TraceHeader::for_this_host(probes.clone(), None, Seed::default());
        let mut out = Vec::new();
        write_header(&mut out, &h).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("another name"), "{text}");
        for p in probes
            .iter_mut()
            .filter(|p| p.symbol == "hv_compose_msi_msg")
        {
            p.attached_symbol = Some("hv_vmbus_compose_msi_msg".into());
        }
        h.probes = probes;
        let mut out = Vec::new();
        write_header(&mut out, &h).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "# attached under another name: hv_compose_msi_msg on hv_vmbus_compose_msi_msg, hv_compose_msi_msg:return on hv_vmbus_compose_msi_msg\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn dumps_json_lines_and_says_when_there_is_no_trailer() {
        let path = trace("json", false);
        let json = dump_to_string(&path, true);
        let text = dump_to_string(&path, false);
        let _ = std::fs::remove_file(&path);
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0]["header"]["kernel_release"].is_string());
        assert_eq!(lines[1]["event"]["kind"]["MigrateOneIrq"]["irq"], 42);
        assert_eq!(lines[2]["event"]["kind"]["Lost"]["probe"], "WriteMsiMsg");
        assert!(text.contains("# no trailer"), "{text}");
    }

    /// Like `| head -1` after it exits: every write fails with EPIPE.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_closed_pipe_ends_the_dump_quietly() {
        let path = trace("pipe", true);
        let args = Args {
            files: vec![path.clone()],
            json: false,
        };
        let code = run_to(&args, &mut ClosedPipe).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(code, ExitCode::SUCCESS);
    }
}
