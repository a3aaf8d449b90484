//! The trace header: what a reader needs to interpret the events without the machine that
//! recorded them (tool and kernel, boot, clocks, which probes attached, the BTF layout, the
//! initial vector state), and its encoding at the start of the file.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracer_common::{DEFAULT_RING_BYTES, Layout};

use super::{FORMAT_VERSION, MAGIC};
use crate::btf_layout::BtfFact;
use crate::probes::ProbeStatus;
use crate::seed::Seed;

/// The self-describing start of every trace file. Readers ignore fields they do not know and
/// default the ones a file lacks, so fields can be added without a new format version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceHeader {
    /// Set by the writer to the version it writes.
    pub format_version: u16,
    /// The msitrace that wrote the file.
    pub tool_version: String,
    /// When the header was made, RFC 3339 UTC with nanoseconds.
    pub created: String,
    /// `uname -r`, `uname -m` and the host name of the traced system.
    pub kernel_release: String,
    pub machine: String,
    pub hostname: String,
    /// /proc/sys/kernel/random/boot_id: timestamps compare only within one boot.
    pub boot_id: Option<String>,
    /// The command line that recorded the file.
    pub command_line: Vec<String>,
    pub clocks: ClockOffsets,
    /// Every hook and what happened to it: which rules had their input.
    pub probes: Vec<ProbeStatus>,
    /// The BTF layout handed to the programs; `None` when it could not be resolved.
    pub layout: Option<Layout>,
    /// The BTF resolver's per-field report, stored as it gives it.
    pub layout_fields: serde_json::Value,
    /// What the kernel's BTF showed about the members and functions the rules' gates decide
    /// on. A file written before msitrace kept them reads as empty: every fact unknown, and
    /// the gates fall back on the kernel version, saying so.
    pub btf_facts: Vec<BtfFact>,
    /// The state of every vector when recording started.
    pub seed: Seed,
    /// Size of the eBPF ring buffer: bounds the burst that survives a frozen reader.
    pub ring_bytes: u32,
    /// The delays the live run's time-based rules used, so that a replay judges with the same
    /// ones from the first event on. Files written before it was kept carry them only in the
    /// trailer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_timing: Option<crate::engine::RuleTiming>,
    /// Anything a later version wants to add without a format change.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// How to turn an event's CLOCK_MONOTONIC time into wall-clock or boot time. CLOCK_MONOTONIC
/// stops while the system is suspended and CLOCK_BOOTTIME does not, so the boot-time offset
/// is only valid until the first suspend after `monotonic_ns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClockOffsets {
    /// CLOCK_MONOTONIC when the offsets were measured.
    pub monotonic_ns: u64,
    /// CLOCK_REALTIME (ns since the Unix epoch) = CLOCK_MONOTONIC + this.
    pub realtime_minus_monotonic_ns: i64,
    /// CLOCK_BOOTTIME = CLOCK_MONOTONIC + this (time spent suspended before the header).
    pub boottime_minus_monotonic_ns: i64,
    /// Half the widest read window used: the offsets are exact to ± this.
    pub uncertainty_ns: u64,
}

impl TraceHeader {
    /// A header for a recording that starts now on this host: tool version, creation time,
    /// kernel release, host name, boot id, command line and clock offsets are filled in here.
    /// `layout_fields` starts as `null` and `ring_bytes` as the default ring size; set them
    /// (and `extra`) on the result when they differ.
    pub fn for_this_host(
        probes: Vec<ProbeStatus>,
        layout: Option<Layout>,
        seed: Seed,
    ) -> TraceHeader {
        let uts = Uname::get();
        TraceHeader {
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created: rfc3339_ns(realtime_now_ns()),
            kernel_release: uts.release,
            machine: uts.machine,
            hostname: uts.nodename,
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            command_line: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            clocks: ClockOffsets::measure(),
            probes,
            layout,
            layout_fields: serde_json::Value::Null,
            btf_facts: Vec::new(),
            seed,
            ring_bytes: DEFAULT_RING_BYTES,
            rule_timing: None,
            extra: BTreeMap::new(),
        }
    }

    /// Hooks attached, of those the kernel uses ([`crate::probes::coverage`]).
    pub fn coverage(&self) -> (usize, usize) {
        crate::probes::coverage(&self.probes)
    }

    /// Wall-clock time (ns since the Unix epoch) of a CLOCK_MONOTONIC timestamp of this boot.
    pub fn realtime_ns(&self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns) + i128::from(self.clocks.realtime_minus_monotonic_ns)
    }

    /// The bytes at the start of a file: magic, version, length, checksum, JSON.
    pub(super) fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut h = self.clone();
        h.format_version = FORMAT_VERSION;
        let json = serde_json::to_vec(&h)?;
        let mut out = Vec::with_capacity(json.len() + 18);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        out.extend_from_slice(&json);
        Ok(out)
    }
}

impl ClockOffsets {
    /// Read CLOCK_MONOTONIC around each other clock a few times and keep the tightest window:
    /// a preemption between two reads would otherwise skew the offset by its length.
    pub fn measure() -> ClockOffsets {
        let (realtime, w1, mono) = offset_to(libc::CLOCK_REALTIME);
        let (boottime, w2, _) = offset_to(libc::CLOCK_BOOTTIME);
        ClockOffsets {
            monotonic_ns: mono,
            realtime_minus_monotonic_ns: realtime,
            // Boot time never runs behind monotonic time; a negative estimate is read jitter.
            boottime_minus_monotonic_ns: boottime.max(0),
            uncertainty_ns: w1.max(w2).div_ceil(2),
        }
    }
}

fn clock_ns(clock: libc::clockid_t) -> Option<i128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own and reads nothing else.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

/// (other − monotonic, read window width, monotonic at the read); zeros if a clock fails.
fn offset_to(clock: libc::clockid_t) -> (i64, u64, u64) {
    let mut best: Option<(i128, i128, i128)> = None;
    for _ in 0..5 {
        let (Some(a), Some(t), Some(b)) = (
            clock_ns(libc::CLOCK_MONOTONIC),
            clock_ns(clock),
            clock_ns(libc::CLOCK_MONOTONIC),
        ) else {
            continue;
        };
        let width = b - a;
        if best.is_none_or(|(_, w, _)| width < w) {
            best = Some((t - (a + width / 2), width, a));
        }
    }
    match best {
        Some((off, width, mono)) => (
            i64::try_from(off).unwrap_or(0),
            u64::try_from(width).unwrap_or(0),
            u64::try_from(mono).unwrap_or(0),
        ),
        None => (0, 0, 0),
    }
}

fn realtime_now_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// RFC 3339 UTC with nanoseconds, e.g. `2025-03-01T12:00:00.000000001Z`.
pub(crate) fn rfc3339_ns(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y, m, d)
}

struct Uname {
    release: String,
    machine: String,
    nodename: String,
}

impl Uname {
    fn get() -> Uname {
        // SAFETY: utsname is plain data; uname fills it and only fails for a bad pointer.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `u` is a valid, writable utsname.
        let ok = unsafe { libc::uname(&mut u) } == 0;
        let field = |f: &[libc::c_char]| {
            if !ok {
                return String::new();
            }
            let bytes: Vec<u8> = f
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Uname {
            release: field(&u.release),
            machine: field(&u.machine),
            nodename: field(&u.nodename),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header limit against the largest legitimate header: the most vectors a seed may
    /// list, each with every field a real one fills, on a 64-CPU machine where it fired on
    /// eight.
    #[test]
    fn the_largest_real_seed_stays_far_below_the_header_limit() {
        use crate::seed::{IrqDebugfs, MAX_SEED_VECTORS, SeedVector};
        let vectors = (0..MAX_SEED_VECTORS as u32)
            .map(|irq| SeedVector {
                irq,
                device: Some("0000:3b:00.0".into()),
                driver: Some("mlx5_core".into()),
                kind: Some("MSI-X".into()),
                chip: Some("PCI-MSIX-0000:3b:00.0".into()),
                actions: Some(format!("mlx5_comp{irq}@pci:0000:3b:00.0")),
                count: 123_456_789_012,
                cpus_fired: (0..8).map(|c| c * 8).collect(),
                effective_cpus: Some(vec![irq % 64]),
                msi_index: Some(irq % 2048),
                hv_bus: Some("c0ffee00-1234-5678-9abc-def012345678".into()),
                debugfs: Some(IrqDebugfs {
                    vector: Some(34),
                    target_cpu: Some(3),
                    ..IrqDebugfs::default()
                }),
            })
            .collect();
        let seed = Seed {
            taken_ns: 1,
            online_cpus: (0..64).collect(),
            vectors,
        };
        let h = TraceHeader::for_this_host(Vec::new(), None, seed);
        let len = h.encode().unwrap().len();
        eprintln!("{MAX_SEED_VECTORS} vectors: {len} bytes of header");
        assert!(
            len < crate::trace_file::MAX_HEADER_LEN as usize / 10 * 9,
            "{len} bytes: MAX_HEADER_LEN is too tight for a real seed"
        );
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ns(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339_ns(1_735_689_599_999_999_999),
            "2024-12-31T23:59:59.999999999Z"
        );
        assert_eq!(rfc3339_ns(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn fills_the_host_facts() {
        let h = TraceHeader::for_this_host(Vec::new(), None, Seed::default());
        assert_eq!(h.format_version, FORMAT_VERSION);
        assert!(!h.kernel_release.is_empty());
        assert!(h.created.ends_with('Z'), "{}", h.created);
        // Monotonic + offset is now: within a minute of the wall clock.
        let now = realtime_now_ns();
        let via = h.realtime_ns(h.clocks.monotonic_ns);
        assert!((now - via).abs() < 60_000_000_000, "{now} vs {via}");
        assert!(h.clocks.boottime_minus_monotonic_ns >= 0);
        assert!(h.clocks.uncertainty_ns < 1_000_000, "{:?}", h.clocks);
        if std::path::Path::new("/proc/sys/kernel/random/boot_id").exists() {
            assert_eq!(h.boot_id.as_ref().map(String::len), Some(36));
        }
    }

    #[test]
    fn probe_rows_without_a_symbol_source_still_read() {
        let rows = crate::engine::EngineConfig::all_probes_attached();
        let mut json = serde_json::to_value(&rows).unwrap();
        assert!(
            json[0].get("symbol_source").is_none(),
            "an unknown source is left out, as files before it have it"
        );
        json[0]["symbol_source"] = serde_json::json!({
            "kind": "available_filter_functions",
            "path": "/sys/kernel/tracing/available_filter_functions",
            "limits": "lists only the functions ftrace can trace",
            "passed_over": ["/proc/kallsyms: Permission denied"]
        });
        let back: Vec<ProbeStatus> = serde_json::from_value(json).unwrap();
        assert_eq!(back[1..], rows[1..]);
        let src = back[0].symbol_source.as_ref().unwrap();
        assert_eq!(
            src.kind,
            crate::probes::SymbolTable::AvailableFilterFunctions
        );
    }

    #[test]
    fn probe_rows_from_before_symbol_candidates_still_read() {
        let rows = crate::engine::EngineConfig::all_probes_attached();
        let mut json = serde_json::to_value(&rows).unwrap();
        assert_eq!(
            json[0]["candidates"],
            serde_json::json!(["hv_compose_msi_msg", "hv_vmbus_compose_msi_msg"])
        );
        assert_eq!(json[0]["attached_symbol"], "hv_compose_msi_msg");
        for row in json.as_array_mut().unwrap() {
            let row = row.as_object_mut().unwrap();
            row.remove("candidates");
            row.remove("attached_symbol");
        }
        let back: Vec<ProbeStatus> = serde_json::from_value(json).unwrap();
        assert!(back.iter().all(|r| r.candidates.is_empty()));
        assert!(back.iter().all(|r| r.attached_symbol.is_none()));
        assert_eq!(back[0].symbol, "hv_compose_msi_msg");
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_default() {
        let h: TraceHeader = serde_json::from_str(
            r#"{"format_version":1,"tool_version":"9.9","from_the_future":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(h.tool_version, "9.9");
        assert_eq!(h.layout, None);
        // A file from before the BTF facts: none, so every gate falls back and says so.
        assert!(h.btf_facts.is_empty());
        assert_eq!(h.seed, Seed::default());
    }
}
