//! `msitrace dump`: the records of a trace file as text (a header summary, then one line per
//! event) or as JSON Lines, for reading by eye or with jq.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::event::{Event, EventKind, VectorSnap};
use crate::output::terminal_safe;
use crate::probes::{Status, hook_of};
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
    let files = crate::trace_file::rotate::expand(&args.files)?;
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
                    relative(e.ts_ns, base),
                    e.cpu,
                    e.pid,
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
    write!(
        out,
        "# probes: {} of {} attached",
        h.attached_probes(),
        h.probes.len()
    )?;
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

/// `+S.ssssss` (microseconds) from `base`; `-` when an event precedes the first one.
fn relative(ts: u64, base: u64) -> String {
    let d = i128::from(ts) - i128::from(base);
    let sign = if d < 0 { '-' } else { '+' };
    let d = d.unsigned_abs();
    format!(
        "{sign}{}.{:06}",
        d / 1_000_000_000,
        d % 1_000_000_000 / 1000
    )
}

/// One event kind in a compact, readable form, e.g.
/// `compose.ret irq 42 0000:00:02.0 msix#3 … msg 00000000:fee01000/00004021`.
pub fn describe(kind: &EventKind) -> String {
    use EventKind as E;
    match kind {
        E::ComposeEnter(v) => format!("compose {}", snap(v)),
        E::ComposeExit { v, msg } => {
            let msg = match msg {
                Some(m) if m.is_zero() => "msg ZERO (compose failed)".to_string(),
                Some(m) => format!("msg {m}"),
                None => "msg unreadable".to_string(),
            };
            format!("compose.ret {} {msg}", snap(v))
        }
        E::UnmaskEnter(v) => format!("hv-unmask {}", snap(v)),
        E::UnmaskExit(v) => format!("hv-unmask.ret {}", snap(v)),
        E::MaskEnter(v) => format!("hv-mask {}", snap(v)),
        E::MaskExit(v) => format!("hv-mask.ret {}", snap(v)),
        E::PciMsiMask(v) => format!("pci-msi-mask {}", snap(v)),
        E::PciMsiUnmask(v) => format!("pci-msi-unmask {}", snap(v)),
        E::MigrateOneIrq { irq } => format!("migrate-one-irq irq {irq}"),
        E::MigrateAllOffEnter => "migrate-all-off (this CPU goes offline)".to_string(),
        E::MigrateAllOffExit => "migrate-all-off.ret".to_string(),
        E::ReturnWithoutEntry { probe } => format!(
            "{} (entry not seen: object unknown)",
            crate::probes::hook_of(*probe).hook
        ),
        E::SetAffinityEnter { irq, in_migration } => {
            format!(
                "set-affinity irq {irq}{}",
                flag(*in_migration, " in-migration")
            )
        }
        E::SetAffinityExit {
            irq,
            ret,
            in_migration,
        } => format!(
            "set-affinity.ret irq {irq} ret {ret}{}",
            flag(*in_migration, " in-migration")
        ),
        E::RestoreEnter {
            device,
            msi_enabled,
            msix_enabled,
            power_state,
        } => format!(
            "restore-msi {device} msi {} msix {} {}",
            on_off(*msi_enabled),
            on_off(*msix_enabled),
            pci_power(*power_state)
        ),
        E::RestoreExit { device } => format!("restore-msi.ret {device}"),
        E::WriteMsiMsg {
            v,
            msg,
            in_restore,
            power_state,
        } => format!(
            "write-msi-msg {} msg {msg}{} {}",
            snap(v),
            flag(*in_restore, " in-restore"),
            pci_power(*power_state)
        ),
        E::HvPciSuspendEnter { bus, state } => format!("hv-pci-suspend {}", bus_state(bus, *state)),
        E::HvPciSuspendExit { bus, ret, state } => {
            format!("hv-pci-suspend.ret {} ret {ret}", bus_state(bus, *state))
        }
        E::HvPciResumeEnter { bus, state } => format!("hv-pci-resume {}", bus_state(bus, *state)),
        E::HvPciResumeExit { bus, ret, state } => {
            format!("hv-pci-resume.ret {} ret {ret}", bus_state(bus, *state))
        }
        // The kernel's own trace format: `dpm_suspend_noirq[2] begin`.
        E::SuspendResume { action, val, start } => format!(
            "suspend_resume {action}[{val}] {}",
            if *start { "begin" } else { "end" }
        ),
        E::DevicePmStart {
            device,
            driver,
            pm_ops,
            event,
        } => format!(
            "pm-callback {device} driver {} {pm_ops} [{}]",
            or_dash(driver),
            pm_event(*event)
        ),
        E::DevicePmEnd {
            device,
            driver,
            error,
        } => format!(
            "pm-callback.ret {device} driver {} err {error}",
            or_dash(driver)
        ),
        E::VectorUpdate {
            irq,
            vector,
            cpu,
            prev_vector,
            prev_cpu,
        } => format!(
            "vector-update irq {irq} vector {vector} cpu {cpu} (was {prev_vector} on cpu {prev_cpu})"
        ),
        E::VectorClear {
            irq,
            vector,
            cpu,
            prev_vector,
            prev_cpu,
        } => format!(
            "vector-clear irq {irq} vector {vector} cpu {cpu} (was {prev_vector} on cpu {prev_cpu})"
        ),
        E::VectorConfig {
            irq,
            vector,
            cpu,
            apicdest,
        } => format!("vector-config irq {irq} vector {vector} cpu {cpu} apicdest {apicdest:#x}"),
        E::VectorActivate {
            irq,
            managed,
            can_reserve,
            reserve,
        }
        | E::VectorDeactivate {
            irq,
            managed,
            can_reserve,
            reserve,
        } => format!(
            "{} irq {irq}{}{}{}",
            if matches!(kind, E::VectorActivate { .. }) {
                "vector-activate"
            } else {
                "vector-deactivate"
            },
            flag(*managed, " managed"),
            flag(*can_reserve, " can-reserve"),
            flag(*reserve, " reserve")
        ),
        E::Lost { probe, count } => format!(
            "!!! LOST {count} events of {} (ring buffer full): state after this is uncertain",
            hook_of(*probe).hook
        ),
        E::IrqCounts { counts } => {
            let list: Vec<String> = counts.iter().map(|(irq, n)| format!("{irq}:{n}")).collect();
            format!("irq-counts {}", list.join(" "))
        }
        E::Gap { reason } => format!("--- GAP: not tracing ({reason}) ---"),
        E::PciIrqMask { v, msix } => {
            format!(
                "pci-irq-mask-{} {}",
                if *msix { "msix" } else { "msi" },
                snap(v)
            )
        }
        E::PciIrqUnmask { v, msix } => {
            format!(
                "pci-irq-unmask-{} {}",
                if *msix { "msix" } else { "msi" },
                snap(v)
            )
        }
        E::ComposeCompl {
            irq,
            status,
            resp_size,
        } => {
            let irq = irq.map_or_else(
                || "irq ? (no compose in flight owns its context)".to_string(),
                |i| format!("irq {i}"),
            );
            let status = match status {
                Some(s) if *s < 0 => format!("status {:#010x} (host refused)", *s as u32),
                Some(s) => format!("status {:#x}", *s as u32),
                None => "status unreadable".to_string(),
            };
            format!("compose.host-reply {irq} {status} ({resp_size} bytes)")
        }
    }
}

fn flag(set: bool, text: &str) -> &str {
    if set { text } else { "" }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn on_off(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "on",
        Some(false) => "off",
        None => "?",
    }
}

fn bus_state(bus: &Option<String>, state: Option<u32>) -> String {
    let state = state.map_or_else(|| "?".to_string(), |s| s.to_string());
    format!("{} state {state}", bus.as_deref().unwrap_or("?"))
}

/// `pci_power_t`: D0..D3cold, then PCI_UNKNOWN; PCI_POWER_ERROR is -1.
fn pci_power(p: Option<u32>) -> String {
    match p {
        Some(0) => "D0".into(),
        Some(1) => "D1".into(),
        Some(2) => "D2".into(),
        Some(3) => "D3hot".into(),
        Some(4) => "D3cold".into(),
        Some(5) => "power-unknown".into(),
        Some(u32::MAX) => "power-error".into(),
        Some(n) => format!("power-{n}"),
        None => "power-?".into(),
    }
}

/// The `PM_EVENT_*` value of a callback, named like the kernel's `pm_verb()`.
fn pm_event(event: u32) -> String {
    let name = match event & 0xff {
        0x01 => Some("freeze"),
        0x02 => Some("suspend"),
        0x04 => Some("hibernate"),
        0x08 => Some("quiesce"),
        0x10 => Some("resume"),
        0x20 => Some("thaw"),
        0x40 => Some("restore"),
        0x80 => Some("recover"),
        _ => None,
    };
    match name {
        Some(n) if event <= 0xff => n.to_string(),
        Some(n) => format!("{n}|{:#x}", event & !0xff),
        None => format!("{event:#x}"),
    }
}

fn snap(v: &VectorSnap) -> String {
    let mut s = format!("irq {}", v.irq);
    if let Some(d) = &v.device {
        s.push(' ');
        s.push_str(d);
    }
    let kind = match v.msix {
        Some(true) => "msix",
        Some(false) => "msi",
        None => "",
    };
    match v.msi_index {
        Some(i) => s.push_str(&format!(" {kind}#{i}")),
        None if !kind.is_empty() => s.push_str(&format!(" {kind}")),
        None => {}
    }
    s.push_str(&format!(" hwirq {:#x}", v.hwirq));
    if let Some(m) = v.cache_masked {
        s.push_str(if m {
            " cache=masked"
        } else {
            " cache=unmasked"
        });
    }
    if v.irqd_masked.is_some() || v.irqd_disabled.is_some() {
        let masked = match v.irqd_masked {
            Some(true) => "masked",
            Some(false) => "unmasked",
            None => "?",
        };
        let disabled = match v.irqd_disabled {
            Some(true) => "disabled",
            Some(false) => "enabled",
            None => "?",
        };
        s.push_str(&format!(" irqd={masked},{disabled}"));
    }
    if v.managed == Some(true) {
        s.push_str(" managed");
    }
    if v.managed_shutdown == Some(true) {
        s.push_str(" managed-shutdown");
    }
    if let Some(c) = v.chip_data {
        s.push_str(&format!(" chip_data {c:#x}"));
    }
    if v.in_migration {
        s.push_str(" in-migration");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MsiMsg;
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
                pid: 7,
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

    #[test]
    fn relative_times_have_a_sign_and_microseconds() {
        assert_eq!(relative(1_500_000_000, 1_000_000_000), "+0.500000");
        assert_eq!(relative(1_000_000_000, 1_000_001_000), "-0.000001");
        assert_eq!(relative(u64::MAX, 0), "+18446744073.709551");
    }

    #[test]
    fn describes_vectors_messages_and_losses() {
        let v = VectorSnap {
            irq: 42,
            hwirq: 0x1803,
            device: Some("0000:00:02.0".into()),
            msi_index: Some(3),
            msix: Some(true),
            cache_masked: Some(true),
            irqd_masked: Some(false),
            irqd_disabled: Some(false),
            managed: Some(true),
            managed_shutdown: None,
            chip_data: Some(0xffff_8880_0000_1000),
            in_migration: false,
        };
        let line = describe(&EventKind::ComposeExit {
            v: v.clone(),
            msg: Some(MsiMsg {
                address_lo: 0xfee0_1000,
                address_hi: 0,
                data: 0x4021,
            }),
        });
        assert_eq!(
            line,
            "compose.ret irq 42 0000:00:02.0 msix#3 hwirq 0x1803 cache=masked irqd=unmasked,enabled managed chip_data 0xffff888000001000 msg 00000000:fee01000/00004021"
        );
        let zero = describe(&EventKind::ComposeExit {
            v,
            msg: Some(MsiMsg {
                address_lo: 0,
                address_hi: 0,
                data: 0,
            }),
        });
        assert!(zero.ends_with("msg ZERO (compose failed)"), "{zero}");
        let lost = describe(&EventKind::Lost {
            probe: ProbeId::HvComposeExit,
            count: 17,
        });
        assert!(
            lost.starts_with("!!! LOST 17 events of hv_compose_msi_msg:return"),
            "{lost}"
        );
        assert_eq!(
            describe(&EventKind::SuspendResume {
                action: "dpm_suspend_noirq".into(),
                val: 2,
                start: true
            }),
            "suspend_resume dpm_suspend_noirq[2] begin"
        );
        assert_eq!(pm_event(0x40), "restore");
        assert_eq!(pm_event(0x402), "suspend|0x400");
        assert_eq!(pm_event(0x1000), "0x1000");
    }
}
