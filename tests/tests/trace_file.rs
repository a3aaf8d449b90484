//! The trace file through the `tracer` library: every event kind and the header round-trip,
//! damage (truncation at every offset, every byte flipped, random bodies) never panics and
//! loses only what it touched, unusable files give one-line errors, files are created 0600,
//! and a realistic hibernation cycle stays within the size budget.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use tracer::event::{Event, EventKind, MsiMsg, VectorSnap};
use tracer::probes::{CATALOGUE, Method, ProbeStatus, Status, SymbolSource, SymbolTable};
use tracer::seed::{Seed, SeedVector};
use tracer::trace_file::{
    ClockOffsets, FORMAT_VERSION, Record, TraceFileError, TraceHeader, TraceReader, TraceWarning,
    TraceWriter,
};
use tracer_common::{Field, Layout, ProbeId};

/// A fresh directory per call, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "msitrace-trace-file-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn header() -> TraceHeader {
    let probes = CATALOGUE
        .iter()
        .enumerate()
        .map(|(i, h)| ProbeStatus {
            hook: h.hook.to_string(),
            symbol: h.symbol().to_string(),
            candidates: h.symbols.iter().map(|c| c.to_string()).collect(),
            // The last candidate, as on a kernel that has only the renamed function.
            attached_symbol: (i % 3 != 0).then(|| h.symbols[h.symbols.len() - 1].to_string()),
            method: h.method,
            status: if i % 3 == 0 {
                Status::Absent
            } else {
                Status::Attached
            },
            reason: (i % 3 == 0).then(|| "not in kallsyms (inlined?)".to_string()),
            module: h.module.map(str::to_string),
            rules_losing_input: if i % 3 == 0 {
                h.rules().iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            },
            probe: h.probe,
            symbol_source: (h.method != Method::Tracepoint).then(|| {
                SymbolSource::new(
                    SymbolTable::Btf,
                    "/sys/kernel/btf",
                    vec!["/proc/kallsyms: Permission denied".into()],
                )
            }),
        })
        .collect();
    let mut layout = Layout::ABSENT;
    layout.irq_data_irq = Field::at(0, 4);
    layout.msi_desc_msix_ctrl = Field {
        off: 72,
        size: 4,
        bit_off: 0,
        bit_len: 1,
        present: 1,
    };
    layout.irqd_irq_masked = 1 << 17;
    let seed = Seed {
        taken_ns: 5_000_000_000_000,
        online_cpus: vec![0, 1],
        vectors: (40..44)
            .map(|irq| SeedVector {
                irq,
                device: Some("6a2b:00:02.0".into()),
                driver: Some("mlx5_core".into()),
                kind: Some("msix".into()),
                chip: Some("HV-PCI-MSIX-6a2b:00:02.0".into()),
                actions: Some(format!("mlx5_comp{}", irq - 40)),
                count: u64::from(irq) * 1000,
                cpus_fired: vec![irq % 2],
                effective_cpus: Some(vec![irq % 2]),
                ..SeedVector::default()
            })
            .collect(),
    };
    let mut h = TraceHeader::for_this_host(probes, Some(layout), seed);
    // The same header on every call, so that files written by different tests compare.
    h.created = "2025-03-01T12:00:00.000000001Z".into();
    h.clocks = ClockOffsets {
        monotonic_ns: 4_800_000_000_000,
        realtime_minus_monotonic_ns: 1_740_000_000_000_000_000,
        boottime_minus_monotonic_ns: 1_234_567,
        uncertainty_ns: 40,
    };
    h.layout_fields = serde_json::json!({"msi_desc.pci.msix_ctrl": {"off": 72, "from": "vmlinux"}});
    h.ring_bytes = 4 << 20;
    h.extra.insert(
        "note".into(),
        serde_json::json!({"written by": "trace_file test"}),
    );
    h
}

fn snap(irq: u32, idx: u32) -> VectorSnap {
    VectorSnap {
        irq,
        hwirq: u64::from(idx) | 2 << 11 | 0x6a2b << 27,
        device: Some("6a2b:00:02.0".into()),
        msi_index: Some(idx),
        msix: Some(true),
        cache_masked: Some(false),
        irqd_masked: Some(false),
        irqd_disabled: Some(false),
        managed: Some(false),
        managed_shutdown: Some(false),
        chip_data: Some(0xffff_8880_0a00_0000 + u64::from(idx) * 0x40),
        in_migration: false,
    }
}

fn msg(idx: u32) -> MsiMsg {
    MsiMsg {
        address_lo: 0xfee0_1000,
        address_hi: 0,
        data: 0x4020 + idx,
    }
}

/// The position of each variant: the match must name every one, so a new `EventKind` variant
/// stops this file from compiling until the round trip covers it.
fn variant_no(k: &EventKind) -> usize {
    use EventKind as E;
    match k {
        E::ComposeEnter(_) => 0,
        E::ComposeExit { .. } => 1,
        E::UnmaskEnter(_) => 2,
        E::UnmaskExit(_) => 3,
        E::MaskEnter(_) => 4,
        E::MaskExit(_) => 5,
        E::PciMsiMask(_) => 6,
        E::PciMsiUnmask(_) => 7,
        E::MigrateOneIrq { .. } => 8,
        E::MigrateAllOffEnter => 9,
        E::MigrateAllOffExit => 10,
        E::SetAffinityEnter { .. } => 11,
        E::SetAffinityExit { .. } => 12,
        E::RestoreEnter { .. } => 13,
        E::RestoreExit { .. } => 14,
        E::WriteMsiMsg { .. } => 15,
        E::HvPciSuspendEnter { .. } => 16,
        E::HvPciSuspendExit { .. } => 17,
        E::HvPciResumeEnter { .. } => 18,
        E::HvPciResumeExit { .. } => 19,
        E::SuspendResume { .. } => 20,
        E::DevicePmStart { .. } => 21,
        E::DevicePmEnd { .. } => 22,
        E::VectorUpdate { .. } => 23,
        E::VectorClear { .. } => 24,
        E::VectorConfig { .. } => 25,
        E::VectorActivate { .. } => 26,
        E::VectorDeactivate { .. } => 27,
        E::Lost { .. } => 28,
        E::IrqCounts { .. } => 29,
        E::Gap { .. } => 30,
        E::PciIrqMask { .. } => 31,
        E::PciIrqUnmask { .. } => 32,
        E::ComposeCompl { .. } => 33,
        E::ReturnWithoutEntry { .. } => 34,
        E::Notice { .. } => 35,
    }
}
const VARIANTS: usize = 36;

/// Every variant, with the optional fields both present and absent and values at the edges.
fn every_kind() -> Vec<EventKind> {
    use EventKind as E;
    let bare = VectorSnap {
        irq: u32::MAX,
        hwirq: u64::MAX,
        msi_index: Some(u32::MAX),
        ..VectorSnap::default()
    };
    let mut odd = snap(7, 0);
    odd.cache_masked = Some(true);
    odd.irqd_masked = None;
    odd.irqd_disabled = Some(true);
    odd.managed = Some(true);
    odd.managed_shutdown = Some(true);
    odd.chip_data = Some(0);
    odd.in_migration = true;
    odd.device = Some("".into());
    vec![
        E::ComposeEnter(snap(40, 0)),
        E::ComposeEnter(bare.clone()),
        E::ComposeExit {
            v: snap(40, 0),
            msg: Some(msg(0)),
        },
        E::ComposeExit {
            v: odd.clone(),
            msg: Some(MsiMsg {
                address_lo: 0,
                address_hi: 0,
                data: 0,
            }),
        },
        E::ComposeExit {
            v: bare.clone(),
            msg: None,
        },
        E::UnmaskEnter(odd.clone()),
        E::UnmaskExit(snap(41, 1)),
        E::MaskEnter(snap(41, 1)),
        E::MaskExit(bare.clone()),
        E::PciMsiMask(snap(42, 2)),
        E::PciMsiUnmask(odd.clone()),
        E::MigrateOneIrq { irq: 42 },
        E::MigrateAllOffEnter,
        E::MigrateAllOffExit,
        E::SetAffinityEnter {
            irq: 42,
            in_migration: true,
        },
        E::SetAffinityExit {
            irq: 42,
            ret: -22,
            in_migration: false,
        },
        E::RestoreEnter {
            device: "6a2b:00:02.0".into(),
            msi_enabled: Some(false),
            msix_enabled: Some(true),
            power_state: Some(0),
        },
        E::RestoreEnter {
            device: String::new(),
            msi_enabled: None,
            msix_enabled: None,
            power_state: None,
        },
        E::RestoreExit {
            device: "6a2b:00:02.0".into(),
        },
        E::WriteMsiMsg {
            v: snap(40, 0),
            msg: msg(0),
            in_restore: true,
            power_state: Some(3),
        },
        E::WriteMsiMsg {
            v: bare,
            msg: MsiMsg {
                address_lo: u32::MAX,
                address_hi: u32::MAX,
                data: u32::MAX,
            },
            in_restore: false,
            power_state: None,
        },
        E::HvPciSuspendEnter {
            bus: Some("7a7b5c3e-6a2b-4b9a-9a4f-1d2e3f405060".into()),
            state: Some(2),
        },
        E::HvPciSuspendExit {
            bus: None,
            ret: i32::MIN,
            state: None,
        },
        E::HvPciResumeEnter {
            bus: None,
            state: Some(u32::MAX),
        },
        E::HvPciResumeExit {
            bus: Some("7a7b5c3e-6a2b-4b9a-9a4f-1d2e3f405060".into()),
            ret: 0,
            state: Some(2),
        },
        E::SuspendResume {
            action: "dpm_resume_noirq".into(),
            val: 16,
            start: true,
        },
        E::DevicePmStart {
            device: "6a2b:00:02.0".into(),
            driver: "mlx5_core".into(),
            pm_ops: "bus_restore_noirq".into(),
            event: 0x40,
        },
        E::DevicePmEnd {
            device: "6a2b:00:02.0".into(),
            driver: String::new(),
            error: -5,
        },
        E::VectorUpdate {
            irq: 40,
            vector: 34,
            cpu: 0,
            prev_vector: 35,
            prev_cpu: 1,
        },
        E::VectorClear {
            irq: 40,
            vector: 35,
            cpu: 1,
            prev_vector: 0,
            prev_cpu: 0,
        },
        E::VectorConfig {
            irq: 40,
            vector: 34,
            cpu: 0,
            apicdest: u32::MAX,
        },
        E::VectorActivate {
            irq: 60,
            managed: true,
            can_reserve: false,
            reserve: true,
        },
        E::VectorDeactivate {
            irq: 60,
            managed: false,
            can_reserve: true,
            reserve: false,
        },
        E::Lost {
            probe: ProbeId::VectorDeactivate,
            count: u64::MAX,
        },
        E::Lost {
            probe: ProbeId::HvComposeEnter,
            count: 3,
        },
        E::IrqCounts {
            counts: vec![(40, 0), (41, u64::MAX), (u32::MAX, 1)],
        },
        E::IrqCounts { counts: Vec::new() },
        E::Gap {
            reason: "frozen for hibernation".into(),
        },
        E::PciIrqMask {
            v: snap(48, 0),
            msix: true,
        },
        E::PciIrqUnmask {
            v: odd.clone(),
            msix: false,
        },
        E::ComposeCompl {
            irq: Some(41),
            status: Some(i32::MIN),
            resp_size: 36,
        },
        E::ComposeCompl {
            irq: None,
            status: None,
            resp_size: -1,
        },
        E::ReturnWithoutEntry {
            probe: tracer_common::ProbeId::HvUnmaskExit,
        },
        E::Notice {
            text: "a module appeared; hooks now attached: 29".into(),
        },
        E::Notice {
            text: String::new(),
        },
    ]
}

fn events_of(kinds: Vec<EventKind>) -> Vec<Event> {
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Event {
            ts_ns: 5_000_000_000_000 + (i as u64 * 7919) % 50_000,
            cpu: i as u32 % 3,
            tgid: if i % 5 == 0 { 0 } else { 1000 + i as u32 },
            kind,
        })
        .collect()
}

/// A header of a few hundred bytes, for the tests that damage every byte of a file.
fn small_header() -> TraceHeader {
    let mut h = header();
    h.probes.truncate(2);
    h.layout = None;
    h.seed.vectors.truncate(1);
    h
}

fn write(
    path: &Path,
    events: &[Event],
    per_chunk: usize,
    trailer: Option<&serde_json::Value>,
) -> Vec<u64> {
    write_with(path, &header(), events, per_chunk, trailer)
}

/// Write `events` in chunks of `per_chunk`, then the trailer (or drop the writer); returns
/// the file offsets where the header and each chunk end.
fn write_with(
    path: &Path,
    header: &TraceHeader,
    events: &[Event],
    per_chunk: usize,
    trailer: Option<&serde_json::Value>,
) -> Vec<u64> {
    let mut w = TraceWriter::create(path, header).expect("create");
    let mut ends = vec![w.stats().bytes];
    for chunk in events.chunks(per_chunk.max(1)) {
        for e in chunk {
            w.append(e).expect("append");
        }
        w.flush().expect("flush");
        ends.push(w.stats().bytes);
    }
    match trailer {
        Some(t) => {
            let stats = w.finish(t).expect("finish");
            ends.push(stats.bytes);
        }
        None => drop(w),
    }
    ends
}

#[test]
fn every_event_kind_round_trips() {
    let dir = TempDir::new("kinds");
    let kinds = every_kind();
    let mut seen = [false; VARIANTS];
    for k in &kinds {
        seen[variant_no(k)] = true;
    }
    assert!(seen.iter().all(|s| *s), "variants not covered: {seen:?}");
    let events = events_of(kinds);
    let trailer = serde_json::json!({"divergences": [{"rule": "H1", "irq": 40}], "lost": 3});
    let path = dir.path("kinds.trace");
    // Chunks of 5 so that strings and values are re-defined across chunk boundaries.
    write(&path, &events, 5, Some(&trailer));
    let got = TraceReader::open(&path).unwrap().read_to_end().unwrap();
    assert_eq!(got.warnings, Vec::new());
    assert_eq!(got.events, events);
    assert_eq!(got.trailer, Some(trailer));
}

#[test]
fn header_round_trips() {
    let dir = TempDir::new("header");
    let path = dir.path("h.trace");
    let h = header();
    write(&path, &[], 1, Some(&serde_json::Value::Null));
    let r = TraceReader::open(&path).unwrap();
    assert_eq!(r.header(), &h_with_version(h));
    assert_eq!(r.header().format_version, FORMAT_VERSION);
    assert_eq!(
        r.header().coverage().0,
        CATALOGUE.len() - CATALOGUE.len().div_ceil(3)
    );
    assert_eq!(r.header().probes[0].method, Method::Kprobe);
}

fn h_with_version(mut h: TraceHeader) -> TraceHeader {
    h.format_version = FORMAT_VERSION;
    h
}

#[test]
fn a_file_of_only_a_header_reads_as_unfinished() {
    let dir = TempDir::new("only-header");
    let path = dir.path("h.trace");
    drop(TraceWriter::create(&path, &header()).unwrap());
    let got = TraceReader::open(&path).unwrap().read_to_end().unwrap();
    assert!(got.events.is_empty());
    assert_eq!(got.trailer, None);
    assert_eq!(got.warnings, Vec::new());
}

/// Cut the file at every offset: before the body it is an error; after, the reader returns a
/// prefix of the events that holds every whole chunk and every whole record of a cut one.
#[test]
fn truncation_at_every_offset_reads_up_to_the_last_whole_record() {
    let dir = TempDir::new("truncate");
    let full = dir.path("full.trace");
    let events = events_of(every_kind());
    let ends = write_with(
        &full,
        &small_header(),
        &events,
        7,
        Some(&serde_json::json!({"ok": true})),
    );
    let bytes = fs::read(&full).unwrap();
    assert_eq!(*ends.last().unwrap(), bytes.len() as u64);
    let body = ends[0] as usize;
    let cut_path = dir.path("cut.trace");
    let mut last_count = 0;
    for cut in 0..=bytes.len() {
        fs::write(&cut_path, &bytes[..cut]).unwrap();
        let opened = TraceReader::open(&cut_path);
        if cut < body {
            let err = opened.err().expect("a cut header is an error");
            let expected = match cut {
                0 => matches!(err, TraceFileError::Empty { .. }),
                _ => matches!(err, TraceFileError::TruncatedHeader { .. }),
            };
            assert!(expected, "cut at {cut}: {err}");
            continue;
        }
        let got = opened
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"))
            .read_to_end()
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let n = got.events.len();
        assert_eq!(got.events[..], events[..n], "cut at {cut}: not a prefix");
        assert!(
            n >= last_count,
            "cut at {cut}: fewer events than a shorter cut"
        );
        last_count = n;
        // Events in the chunks that end at or before the cut.
        let whole_chunks = ends[1..ends.len() - 1]
            .iter()
            .take_while(|&&e| e as usize <= cut)
            .count();
        let in_whole = (whole_chunks * 7).min(events.len());
        assert!(
            n >= in_whole,
            "cut at {cut}: {n} events, {in_whole} in whole chunks"
        );
        let at_boundary = ends.contains(&(cut as u64));
        assert_eq!(
            got.warnings.is_empty(),
            at_boundary,
            "cut at {cut}: {:?}",
            got.warnings
        );
        if !at_boundary {
            assert!(
                matches!(got.warnings[..], [TraceWarning::Truncated { events_read, .. }] if events_read == n as u64),
                "cut at {cut}: {:?}",
                got.warnings
            );
        }
        // Losing the last byte of a chunk loses exactly its last event (an event record
        // always ends a chunk of events).
        if let Some(i) = ends[1..ends.len() - 1]
            .iter()
            .position(|&e| e as usize == cut + 1)
        {
            assert_eq!(n, ((i + 1) * 7).min(events.len()) - 1, "cut at {cut}");
        }
        assert_eq!(got.trailer.is_some(), cut == bytes.len(), "cut at {cut}");
    }
    assert_eq!(last_count, events.len());
}

/// Flip every byte, one at a time: a header byte makes the file unusable (with an error, not
/// a panic); a body byte costs the chunk it is in, and only that chunk.
#[test]
fn a_flipped_byte_loses_only_its_chunk() {
    let dir = TempDir::new("flip");
    let full = dir.path("full.trace");
    let events = events_of(every_kind());
    let per_chunk = 6;
    let ends = write_with(
        &full,
        &small_header(),
        &events,
        per_chunk,
        Some(&serde_json::json!({"ok": true})),
    );
    let bytes = fs::read(&full).unwrap();
    let body = ends[0] as usize;
    let flipped = dir.path("flipped.trace");
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0xff;
        fs::write(&flipped, &b).unwrap();
        let opened = TraceReader::open(&flipped);
        if at < body {
            let err = opened
                .err()
                .unwrap_or_else(|| panic!("flip at {at} in the header was accepted"));
            assert!(!err.to_string().contains('\n'), "{err}");
            continue;
        }
        let got = opened
            .unwrap_or_else(|e| panic!("flip at {at}: {e}"))
            .read_to_end()
            .unwrap_or_else(|e| panic!("flip at {at}: {e}"));
        assert!(!got.warnings.is_empty(), "flip at {at} went unnoticed");
        let chunk = ends.iter().position(|&e| e as usize > at).unwrap() - 1;
        let lost =
            (chunk * per_chunk).min(events.len())..((chunk + 1) * per_chunk).min(events.len());
        let expected: Vec<&Event> = events
            .iter()
            .enumerate()
            .filter(|(i, _)| !lost.contains(i))
            .map(|(_, e)| e)
            .collect();
        // Every event outside the damaged chunk, in order, and nothing that was not written.
        let mut it = got.events.iter();
        for e in &expected {
            assert!(
                it.any(|g| g == *e),
                "flip at {at}: {e:?} missing or out of order"
            );
        }
        for g in &got.events {
            assert!(events.contains(g), "flip at {at}: invented {g:?}");
        }
        let trailer_chunk = ends.len() - 2;
        if chunk != trailer_chunk {
            assert_eq!(
                got.trailer,
                Some(serde_json::json!({"ok": true})),
                "flip at {at}"
            );
        }
    }
}

#[test]
fn a_newer_format_version_asks_for_an_upgrade() {
    let dir = TempDir::new("newer");
    let path = dir.path("v2.trace");
    // What a v2 writer would put there, as far as v1 can tell: the version in the preamble
    // and a header this build cannot check.
    let mut b = b"MSITRACE".to_vec();
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&[0xab; 40]);
    fs::write(&path, &b).unwrap();
    let err = TraceReader::open(&path).err().unwrap();
    assert!(
        matches!(
            err,
            TraceFileError::NewerVersion {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.ends_with(
            "was written by a newer msitrace (format v2, this one reads up to v1): upgrade msitrace"
        ),
        "{text}"
    );

    // A v1 file whose version field alone was damaged is not "newer".
    write(&path, &[], 1, None);
    let mut b = fs::read(&path).unwrap();
    b[9] = 0x40;
    fs::write(&path, &b).unwrap();
    let err = TraceReader::open(&path).err().unwrap();
    assert!(
        matches!(err, TraceFileError::BadHeader { offset: 8, .. }),
        "{err}"
    );
}

#[test]
fn unusable_files_give_one_line_errors() {
    let dir = TempDir::new("unusable");
    let check = |path: &Path, want: fn(&TraceFileError) -> bool, words: &str| {
        let err = TraceReader::open(path).err().expect("an error");
        let text = err.to_string();
        assert!(want(&err), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains(words), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    };
    let empty = dir.path("empty.trace");
    fs::write(&empty, b"").unwrap();
    check(
        &empty,
        |e| matches!(e, TraceFileError::Empty { .. }),
        "is empty",
    );
    check(
        &dir.0,
        |e| matches!(e, TraceFileError::Directory { .. }),
        "is a directory",
    );
    check(
        &dir.path("nope.trace"),
        |e| matches!(e, TraceFileError::Missing { .. }),
        "no such file",
    );
    let text = dir.path("notes.txt");
    fs::write(&text, b"these are my notes, not a trace\n").unwrap();
    check(
        &text,
        |e| matches!(e, TraceFileError::NotATrace { .. }),
        "not an msitrace trace file",
    );

    let good = dir.path("good.trace");
    write(&good, &events_of(every_kind()), 8, None);
    let mut b = fs::read(&good).unwrap();
    b[30] ^= 0x01;
    let bad = dir.path("bad-header.trace");
    fs::write(&bad, &b).unwrap();
    check(
        &bad,
        |e| matches!(e, TraceFileError::HeaderChecksum { offset: 18, .. }),
        "fails its checksum",
    );
    check(
        Path::new("/dev/null"),
        |e| matches!(e, TraceFileError::NotRegular { .. }),
        "not a regular file",
    );
    assert!(matches!(
        TraceReader::open_many(Vec::<PathBuf>::new()),
        Err(TraceFileError::NoFiles)
    ));
}

#[test]
fn files_are_created_mode_0600_and_symlinks_refused() {
    let dir = TempDir::new("mode");
    let fresh = dir.path("fresh.trace");
    drop(TraceWriter::create(&fresh, &header()).unwrap());
    assert_eq!(
        fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777,
        0o600
    );

    let old = dir.path("old.trace");
    fs::write(&old, vec![b'x'; 100_000]).unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
    let w = TraceWriter::create(&old, &header()).unwrap();
    let header_len = w.stats().bytes;
    drop(w);
    let meta = fs::metadata(&old).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.len(), header_len, "old content left behind");

    let target = dir.path("target");
    fs::write(&target, b"keep me").unwrap();
    let link = dir.path("link.trace");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = TraceWriter::create(&link, &header())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"keep me");

    let err = TraceWriter::create(&dir.0, &header())
        .err()
        .expect("refused");
    assert!(!err.to_string().contains('\n'), "{err}");

    let err = TraceWriter::create(dir.path("no/such/dir.trace"), &header())
        .err()
        .expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(
        err.to_string().ends_with("create its directory first"),
        "{err}"
    );
}

#[test]
fn a_killed_writer_leaves_its_flushed_chunks_and_a_dropped_one_its_pending_events() {
    let dir = TempDir::new("killed");
    let events = events_of(every_kind());
    let killed = dir.path("killed.trace");
    let mut w = TraceWriter::create(&killed, &header()).unwrap();
    for e in &events[..10] {
        w.append(e).unwrap();
    }
    w.flush().unwrap();
    for e in &events[10..15] {
        w.append(e).unwrap();
    }
    // kill -9: no Drop, no finish; what was written is in the page cache.
    std::mem::forget(w);
    let got = TraceReader::open(&killed).unwrap().read_to_end().unwrap();
    assert_eq!(got.events, events[..10]);
    assert_eq!(got.trailer, None);
    assert_eq!(got.warnings, Vec::new());

    let dropped = dir.path("dropped.trace");
    let mut w = TraceWriter::create(&dropped, &header()).unwrap();
    for e in &events[..15] {
        w.append(e).unwrap();
    }
    drop(w);
    let got = TraceReader::open(&dropped).unwrap().read_to_end().unwrap();
    assert_eq!(got.events, events[..15]);
    assert_eq!(got.trailer, None);
}

#[test]
fn several_files_read_as_one_stream() {
    let dir = TempDir::new("many");
    let events = events_of(every_kind());
    let (a, b) = events.split_at(20);
    let pa = dir.path("a.trace");
    let pb = dir.path("b.trace");
    write(&pa, a, 9, Some(&serde_json::json!({"part": 1})));
    write(&pb, b, 9, Some(&serde_json::json!({"part": 2})));
    let mut r = TraceReader::open_many([&pa, &pb]).unwrap();
    assert_eq!(r.headers().len(), 2);
    let recs: Vec<Record> = r.by_ref().collect::<Result<_, _>>().unwrap();
    let trailers: Vec<&serde_json::Value> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Trailer(t) => Some(t),
            Record::Event(_) => None,
        })
        .collect();
    assert_eq!(
        trailers,
        [
            &serde_json::json!({"part": 1}),
            &serde_json::json!({"part": 2})
        ]
    );
    let got: Vec<Event> = recs
        .into_iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            Record::Trailer(_) => None,
        })
        .collect();
    assert_eq!(got, events);
    assert_eq!(r.warnings(), &[]);

    // A file from another boot is refused: its times do not compare with the first's.
    let pc = dir.path("c.trace");
    let mut h = header();
    h.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
    drop(TraceWriter::create(&pc, &h).unwrap());
    if header().boot_id.is_some() {
        let e = TraceReader::open_many([&pa, &pc]).err().expect("refused");
        assert!(matches!(e, TraceFileError::OtherBoot { .. }), "{e}");
    }
    // And the same file twice would play its events twice.
    let e = TraceReader::open_many([&pa, &pb, &pa])
        .err()
        .expect("refused");
    assert!(
        e.to_string().ends_with("given twice: give each file once"),
        "{e}"
    );
}

/// Deterministic xorshift, so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Builds a timeline: each event comes `gap_ns` (± 50 %) after the previous one.
struct Timeline {
    rng: Rng,
    ts: u64,
    events: Vec<Event>,
}

impl Timeline {
    fn at(&mut self, gap_ns: u64, cpu: u32, pid: u32, kind: EventKind) {
        self.ts += gap_ns / 2 + self.rng.below(gap_ns.max(1));
        self.events.push(Event {
            ts_ns: self.ts,
            cpu,
            tgid: pid,
            kind,
        });
    }
}

const NIC: &str = "6a2b:00:02.0";
const NVME: &str = "c05b:00:00.0";
const NIC_BUS: &str = "7a7b5c3e-6a2b-4b9a-9a4f-1d2e3f405060";
const NVME_BUS: &str = "c05bc05b-0000-4b9a-9a4f-1d2e3f405060";
const TRACER_PID: u32 = 41_877;
const SLEEP_PID: u32 = 52_003;
const CPUHP_PID: u32 = 21;

/// (irq, device, MSI-X index, managed)
fn cycle_vectors() -> Vec<(u32, &'static str, u32, bool)> {
    (0..16)
        .map(|i| (40 + i, NIC, i, false))
        .chain((0..9).map(|i| (60 + i, NVME, i, true)))
        .collect()
}

fn cycle_snap(irq: u32, dev: &str, idx: u32, managed: bool) -> VectorSnap {
    let dev_id: u64 = if dev == NIC { 2 } else { 5 };
    VectorSnap {
        irq,
        // pci_msi_domain_calc_hwirq: index | dev_id << 11 | domain << 27.
        hwirq: u64::from(idx) | dev_id << 11 | 0x6a2b << 27,
        device: Some(dev.into()),
        msi_index: Some(idx),
        msix: Some(true),
        cache_masked: Some(false),
        irqd_masked: Some(false),
        irqd_disabled: Some(false),
        managed: Some(managed),
        managed_shutdown: Some(false),
        chip_data: Some(0xffff_8881_0400_0000 + u64::from(irq) * 0x100),
        in_migration: false,
    }
}

fn cycle_msg(idx: u32) -> MsiMsg {
    MsiMsg {
        address_lo: 0xfee0_0000,
        address_hi: 0,
        data: 0x4000 + 33 + idx,
    }
}

fn cycle_devices() -> Vec<(String, &'static str)> {
    (0..40)
        .map(|i| match i {
            0 => (NIC.to_string(), "mlx5_core"),
            1 => (NVME.to_string(), "nvme"),
            2..=9 => (format!("vmbus_{i}"), "hv_netvsc"),
            10..=19 => (format!("serial8250:0.{i}"), "serial8250"),
            _ => (format!("LNXSYBUS:{i:02}"), ""),
        })
        .collect()
}

fn suspend_resume(t: &mut Timeline, gap: u64, action: &str, val: u32, start: bool) {
    let kind = EventKind::SuspendResume {
        action: action.into(),
        val,
        start,
    };
    t.at(gap, 0, SLEEP_PID, kind);
}

/// One dpm phase: every device's callback, on either CPU.
fn pm_phase(t: &mut Timeline, name: &str, pm_ops: &str, event: u32) {
    suspend_resume(t, 2_000_000, name, event, true);
    for (dev, drv) in cycle_devices() {
        let cpu = t.rng.below(2) as u32;
        let pid = if cpu == 0 {
            SLEEP_PID
        } else {
            130 + t.rng.below(40) as u32
        };
        let start = EventKind::DevicePmStart {
            device: dev.clone(),
            driver: drv.to_string(),
            pm_ops: pm_ops.into(),
            event,
        };
        t.at(60_000, cpu, pid, start);
        let end = EventKind::DevicePmEnd {
            device: dev,
            driver: drv.to_string(),
            error: 0,
        };
        t.at(200_000, cpu, pid, end);
    }
    suspend_resume(t, 50_000, name, event, false);
}

/// CPU 1 goes offline (its vectors move to CPU 0 inside the migration window, managed ones
/// are shut down) or comes back (managed vectors start again, the others are moved back).
fn cpu1(t: &mut Timeline, online: bool) {
    let action = if online { "CPU_ON" } else { "CPU_OFF" };
    suspend_resume(t, 1_000_000, action, 1, true);
    if !online {
        t.at(200_000, 1, CPUHP_PID, EventKind::MigrateAllOffEnter);
    }
    for (irq, dev, idx, managed) in cycle_vectors().into_iter().filter(|v| v.0 % 2 == 1) {
        if managed {
            let (can_reserve, reserve) = (false, false);
            let kind = if online {
                EventKind::VectorActivate {
                    irq,
                    managed,
                    can_reserve,
                    reserve,
                }
            } else {
                EventKind::VectorDeactivate {
                    irq,
                    managed,
                    can_reserve,
                    reserve,
                }
            };
            t.at(8_000, 1, CPUHP_PID, kind);
            continue;
        }
        let mut v = cycle_snap(irq, dev, idx, managed);
        v.in_migration = !online;
        let in_migration = !online;
        let p = CPUHP_PID;
        t.at(
            5_000,
            1,
            p,
            EventKind::SetAffinityEnter { irq, in_migration },
        );
        let update = EventKind::VectorUpdate {
            irq,
            vector: 33 + idx,
            cpu: 0,
            prev_vector: 40 + idx,
            prev_cpu: 1,
        };
        t.at(3_000, 1, p, update);
        t.at(2_000, 1, p, EventKind::ComposeEnter(v.clone()));
        let composed = EventKind::ComposeExit {
            v: v.clone(),
            msg: Some(cycle_msg(idx)),
        };
        t.at(40_000, 1, p, composed);
        let write = EventKind::WriteMsiMsg {
            v: v.clone(),
            msg: cycle_msg(idx),
            in_restore: false,
            power_state: Some(0),
        };
        t.at(3_000, 1, p, write);
        let ret = 0;
        t.at(
            2_000,
            1,
            p,
            EventKind::SetAffinityExit {
                irq,
                ret,
                in_migration,
            },
        );
        t.at(2_000, 1, p, EventKind::UnmaskEnter(v.clone()));
        t.at(30_000, 1, p, EventKind::PciMsiUnmask(v.clone()));
        t.at(2_000, 1, p, EventKind::UnmaskExit(v));
        let clear = EventKind::VectorClear {
            irq,
            vector: 40 + idx,
            cpu: 1,
            prev_vector: 0,
            prev_cpu: 0,
        };
        t.at(10_000, 0, 0, clear);
    }
    if !online {
        t.at(5_000, 1, CPUHP_PID, EventKind::MigrateAllOffExit);
    }
    suspend_resume(t, 2_000_000, action, 1, false);
}

/// `dpm_resume_noirq` of a thaw or restore: hv_pci_resume re-composes every vector of its bus
/// (the 915cff7f38c5 fix), then the PCI core restores each device's MSI-X table by MMIO.
fn resume_noirq(t: &mut Timeline, event: u32) {
    suspend_resume(t, 1_000_000, "dpm_resume_noirq", event, true);
    for (bus, dev) in [(NIC_BUS, NIC), (NVME_BUS, NVME)] {
        let bus = Some(bus.to_string());
        let enter = EventKind::HvPciResumeEnter {
            bus: bus.clone(),
            state: Some(3),
        };
        t.at(100_000, 0, SLEEP_PID, enter);
        for (irq, d, idx, managed) in cycle_vectors().into_iter().filter(|v| v.1 == dev) {
            let v = cycle_snap(irq, d, idx, managed);
            t.at(3_000, 0, SLEEP_PID, EventKind::ComposeEnter(v.clone()));
            let msg = Some(cycle_msg(idx));
            t.at(60_000, 0, SLEEP_PID, EventKind::ComposeExit { v, msg });
        }
        let exit = EventKind::HvPciResumeExit {
            bus,
            ret: 0,
            state: Some(2),
        };
        t.at(20_000, 0, SLEEP_PID, exit);
    }
    for dev in [NIC, NVME] {
        let enter = EventKind::RestoreEnter {
            device: dev.into(),
            msi_enabled: Some(false),
            msix_enabled: Some(true),
            power_state: Some(0),
        };
        t.at(50_000, 0, SLEEP_PID, enter);
        for (irq, d, idx, managed) in cycle_vectors().into_iter().filter(|v| v.1 == dev) {
            let write = EventKind::WriteMsiMsg {
                v: cycle_snap(irq, d, idx, managed),
                msg: cycle_msg(idx),
                in_restore: true,
                power_state: Some(0),
            };
            t.at(4_000, 0, SLEEP_PID, write);
        }
        let exit = EventKind::RestoreExit { device: dev.into() };
        t.at(5_000, 0, SLEEP_PID, exit);
    }
    suspend_resume(t, 100_000, "dpm_resume_noirq", event, false);
}

/// IRQ count samples, one a second; `all` samples every vector, else about a third moved.
fn irq_samples(t: &mut Timeline, counts: &mut [(u32, u64)], samples: usize, all: bool) {
    for _ in 0..samples {
        let mut changed = Vec::new();
        for c in counts.iter_mut() {
            if all || t.rng.below(3) == 0 {
                c.1 += t.rng.below(5000);
                changed.push(*c);
            }
        }
        let kind = EventKind::IrqCounts { counts: changed };
        t.at(1_000_000_000, 0, TRACER_PID, kind);
    }
}

/// A hibernation cycle on a 2-CPU Hyper-V guest with a Mellanox VF (16 MSI-X vectors) and an
/// NVMe disk (9 managed vectors), 40 devices with PM callbacks: steady-state IRQ count
/// samples, the freeze phases, hv_pci_suspend, CPU 1 going offline (every vector on it
/// migrated, re-composed, unmasked), the thaw, a gap while the image is written and the guest
/// is off, a loss record, the restore phases with the re-compose and MMIO restore of every
/// vector, CPU 1 coming back, and samples again.
fn realistic_hibernation_cycle() -> Vec<Event> {
    let mut t = Timeline {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        ts: 4_812_345_678_901,
        events: Vec::new(),
    };
    let mut counts: Vec<(u32, u64)> = cycle_vectors()
        .iter()
        .map(|v| (v.0, 10_000 + u64::from(v.0) * 37))
        .collect();
    irq_samples(&mut t, &mut counts, 30, false);
    suspend_resume(&mut t, 500_000_000, "freeze_processes", 0, true);
    suspend_resume(&mut t, 30_000_000, "freeze_processes", 0, false);
    for (name, ops) in [
        ("dpm_prepare", "prepare"),
        ("dpm_suspend", "bus_freeze"),
        ("dpm_suspend_late", "bus_freeze_late"),
        ("dpm_suspend_noirq", "bus_freeze_noirq"),
    ] {
        pm_phase(&mut t, name, ops, 0x01);
    }
    for bus in [NIC_BUS, NVME_BUS] {
        let bus = Some(bus.to_string());
        let enter = EventKind::HvPciSuspendEnter {
            bus: bus.clone(),
            state: Some(2),
        };
        t.at(100_000, 0, SLEEP_PID, enter);
        let exit = EventKind::HvPciSuspendExit {
            bus,
            ret: 0,
            state: Some(3),
        };
        t.at(3_000_000, 0, SLEEP_PID, exit);
    }
    cpu1(&mut t, false);
    suspend_resume(&mut t, 1_000_000, "machine_suspend", 4, true);
    resume_noirq(&mut t, 0x20);
    for (name, ops) in [
        ("dpm_resume_early", "bus_thaw_early"),
        ("dpm_resume", "bus_thaw"),
        ("dpm_complete", "complete"),
    ] {
        pm_phase(&mut t, name, ops, 0x20);
    }
    let gap = EventKind::Gap {
        reason: "frozen for hibernation".into(),
    };
    t.at(4_000_000_000, 0, TRACER_PID, gap);
    let lost = EventKind::Lost {
        probe: ProbeId::DevicePmStart,
        count: 3,
    };
    t.at(1_000, 0, TRACER_PID, lost);
    resume_noirq(&mut t, 0x40);
    for (name, ops) in [
        ("dpm_resume_early", "bus_restore_early"),
        ("dpm_resume", "bus_restore"),
        ("dpm_complete", "complete"),
    ] {
        pm_phase(&mut t, name, ops, 0x40);
    }
    cpu1(&mut t, true);
    suspend_resume(&mut t, 2_000_000, "thaw_processes", 0, true);
    suspend_resume(&mut t, 20_000_000, "thaw_processes", 0, false);
    irq_samples(&mut t, &mut counts, 10, true);
    t.events
}

#[test]
fn a_realistic_hibernation_cycle_costs_at_most_32_bytes_per_event() {
    let dir = TempDir::new("size");
    let path = dir.path("cycle.trace");
    let events = realistic_hibernation_cycle();
    let mut w = TraceWriter::create(&path, &header()).unwrap();
    let header_bytes = w.stats().bytes;
    // The recorder flushes every 250 ms of wall time; events of a frozen period arrive in one
    // burst, which the event times here stand in for.
    let mut next_flush = events[0].ts_ns + 250_000_000;
    for e in &events {
        if e.ts_ns >= next_flush {
            w.flush().unwrap();
            next_flush = e.ts_ns + 250_000_000;
        }
        w.append(e).unwrap();
    }
    let stats = w.finish(&serde_json::json!({"divergences": []})).unwrap();
    let body = stats.bytes - header_bytes;
    let per_event = body as f64 / events.len() as f64;
    let mut kinds = [0usize; VARIANTS];
    for e in &events {
        kinds[variant_no(&e.kind)] += 1;
    }
    println!(
        "realistic hibernation cycle: {} events ({} kinds) in {} chunks, body {} bytes = {:.1} bytes/event (header {} bytes, file {} bytes)",
        events.len(),
        kinds.iter().filter(|n| **n > 0).count(),
        stats.chunks,
        body,
        per_event,
        header_bytes,
        stats.bytes
    );
    let got = TraceReader::open(&path).unwrap().read_to_end().unwrap();
    assert_eq!(got.events, events);
    assert!(per_event <= 32.0, "{per_event:.1} bytes/event");
}

/// A valid header followed by `body`.
fn with_body(dir: &TempDir, body: &[u8]) -> PathBuf {
    let path = dir.path("fuzz.trace");
    drop(TraceWriter::create(&path, &header()).unwrap());
    let mut b = fs::read(&path).unwrap();
    b.extend_from_slice(body);
    fs::write(&path, &b).unwrap();
    path
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut c = vec![0xC7];
    c.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    c.extend_from_slice(&crc32_ieee(payload).to_le_bytes());
    c.extend_from_slice(payload);
    c
}

/// CRC32 (IEEE), bitwise: the test checks the file format, not the crate that writes it.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any bytes after a valid header: no panic, no error (damage is a warning).
    #[test]
    fn any_body_reads_without_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let dir = TempDir::new("fuzz-body");
        let path = with_body(&dir, &body);
        let got = TraceReader::open(&path).unwrap().read_to_end().unwrap();
        prop_assert!(got.events.len() <= body.len());
    }

    /// Any payload in a valid frame reaches the record decoder: no panic, and a chunk after
    /// it is still read.
    #[test]
    fn any_framed_payload_reads_without_panic(payload in proptest::collection::vec(any::<u8>(), 1..300)) {
        let dir = TempDir::new("fuzz-payload");
        let good = events_of(vec![EventKind::MigrateOneIrq { irq: 9 }]);
        let path = dir.path("good.trace");
        write(&path, &good, 1, None);
        let chunk = fs::read(&path).unwrap()[write_header_len()..].to_vec();
        let mut body = frame(&payload);
        body.extend_from_slice(&chunk);
        let path = with_body(&dir, &body);
        let got = TraceReader::open(&path).unwrap().read_to_end().unwrap();
        prop_assert_eq!(got.events.last(), good.last());
    }
}

fn write_header_len() -> usize {
    let dir = TempDir::new("hlen");
    let path = dir.path("h.trace");
    let w = TraceWriter::create(&path, &header()).unwrap();
    w.stats().bytes as usize
}

#[test]
fn a_chunk_with_a_valid_checksum_but_bad_records_is_reported() {
    let dir = TempDir::new("bad-records");
    // Record tag 0 (event), then a truncated event: checksum fine, content not.
    let mut body = frame(&[0x00, 0x02]);
    let good = events_of(vec![EventKind::MigrateOneIrq { irq: 9 }]);
    let path = dir.path("good.trace");
    write(&path, &good, 1, None);
    body.extend_from_slice(&fs::read(&path).unwrap()[write_header_len()..]);
    let path = with_body(&dir, &body);
    let got = TraceReader::open(&path).unwrap().read_to_end().unwrap();
    assert_eq!(got.events, good);
    assert!(
        matches!(got.warnings[..], [TraceWarning::BadRecord { index: 0, .. }]),
        "{:?}",
        got.warnings
    );
}
