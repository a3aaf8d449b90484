//! One table across machines from their journals: per kernel and rule, how many machines the
//! daemon saw diverge, on which drivers and devices, first and last seen. Input is the daemon's
//! entries as `journalctl -o json` prints them (one object a line); pure, so that the table is
//! tested without a journal. `msitrace fleet` runs journalctl and prints.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::duration::{utc_secs, utc_us};
use crate::output::terminal_safe;

/// Bumped when a field of `fleet --json` is removed, renamed, retyped or changes meaning
/// (docs/schema/fleet.schema.json says the same).
pub const SCHEMA_VERSION: u32 = 1;

/// Shown for an entry without a KERNEL field (every entry of this daemon has one; an older
/// or foreign sender may not).
pub const UNKNOWN_KERNEL: &str = "unknown";

/// What the table needs of one of the daemon's entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalEntry {
    pub machine_id: String,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    /// Set on divergence entries only (MSITRACE_RULE).
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub driver: Option<String>,
    pub device: Option<String>,
    /// `__REALTIME_TIMESTAMP`: when the receiving journal wrote it, microseconds since the epoch.
    pub realtime_us: u64,
}

/// A field's text as journalctl's JSON gives it: a string; an array of bytes when it is not
/// valid UTF-8; an array of those when the entry has the field more than once (the first
/// counts); `null` when it was too large to print.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => items.first().and_then(text),
        _ => None,
    }
}

impl JournalEntry {
    /// One line of `journalctl -o json`. `Ok(None)`: an entry this table has no use for (not
    /// msitrace's, or with no machine id to count it under); `Err`: the line is not a journal
    /// entry at all.
    pub fn from_json_line(line: &str) -> Result<Option<JournalEntry>, String> {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| format!("not a JSON journal entry ({e}): {line:.80}"))?;
        let Some(obj) = v.as_object() else {
            return Err(format!("not a JSON journal entry: {line:.80}"));
        };
        let field = |k: &str| obj.get(k).and_then(text).filter(|s| !s.is_empty());
        if field("SYSLOG_IDENTIFIER").as_deref() != Some("msitrace") {
            return Ok(None);
        }
        let Some(machine_id) = field("_MACHINE_ID") else {
            return Ok(None);
        };
        let realtime_us = field("__REALTIME_TIMESTAMP")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("a journal entry without __REALTIME_TIMESTAMP: {line:.80}"))?;
        Ok(Some(JournalEntry {
            machine_id,
            hostname: field("_HOSTNAME"),
            kernel: field("KERNEL"),
            rule: field("MSITRACE_RULE"),
            severity: field("MSITRACE_SEVERITY"),
            driver: field("DRIVER"),
            device: field("DEVICE"),
            realtime_us,
        }))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MachineRef {
    pub machine_id: String,
    pub hostname: Option<String>,
}

/// Every machine that sent an entry, diverged or not: a machine with no row is one the daemon
/// watched and found consistent, not one that is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Machine {
    pub machine_id: String,
    pub hostname: Option<String>,
    pub kernels: Vec<String>,
    /// The rules it diverged on, any kernel.
    pub rules: Vec<String>,
    pub entries: usize,
    pub first_seen: String,
    pub last_seen: String,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
}

/// One kernel and rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub kernel: String,
    pub rule: String,
    /// `error` when any of its entries said so, else what they said.
    pub severity: Option<String>,
    pub machines_diverged: usize,
    /// Machines that sent any entry from this kernel: the denominator.
    pub machines_on_kernel: usize,
    pub machines: Vec<MachineRef>,
    pub drivers: Vec<String>,
    pub devices: Vec<String>,
    pub entries: usize,
    pub first_seen: String,
    pub last_seen: String,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fleet {
    pub schema_version: u32,
    /// `--since` as given (journalctl read it).
    pub since: Option<String>,
    pub entries: usize,
    pub kernels: Vec<String>,
    pub machines: Vec<Machine>,
    pub rows: Vec<Row>,
}

#[derive(Default)]
struct Span {
    first: u64,
    last: u64,
    entries: usize,
}

impl Span {
    fn add(&mut self, t: u64) {
        if self.entries == 0 || t < self.first {
            self.first = t;
        }
        self.last = self.last.max(t);
        self.entries += 1;
    }
}

#[derive(Default)]
struct MachineAcc {
    hostname: Option<String>,
    kernels: BTreeSet<String>,
    rules: BTreeSet<String>,
    span: Span,
}

#[derive(Default)]
struct RowAcc {
    severity: Option<String>,
    machines: BTreeSet<String>,
    drivers: BTreeSet<String>,
    devices: BTreeSet<String>,
    span: Span,
}

impl Fleet {
    pub fn build(entries: &[JournalEntry], since: Option<&str>) -> Fleet {
        let mut machines: BTreeMap<&str, MachineAcc> = BTreeMap::new();
        let mut on_kernel: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        let mut rows: BTreeMap<(String, String), RowAcc> = BTreeMap::new();
        for e in entries {
            let kernel = e.kernel.clone().unwrap_or_else(|| UNKNOWN_KERNEL.into());
            let m = machines.entry(&e.machine_id).or_default();
            // The latest name wins: a machine renamed keeps its id.
            if e.hostname.is_some() {
                m.hostname.clone_from(&e.hostname);
            }
            m.kernels.insert(kernel.clone());
            m.span.add(e.realtime_us);
            on_kernel
                .entry(kernel.clone())
                .or_default()
                .insert(&e.machine_id);
            let Some(rule) = &e.rule else { continue };
            m.rules.insert(rule.clone());
            let r = rows.entry((kernel, rule.clone())).or_default();
            r.machines.insert(e.machine_id.clone());
            r.drivers.extend(e.driver.clone());
            r.devices.extend(e.device.clone());
            if r.severity.as_deref() != Some("error") && e.severity.is_some() {
                r.severity.clone_from(&e.severity);
            }
            r.span.add(e.realtime_us);
        }
        let hostname = |id: &str| machines.get(id).and_then(|m| m.hostname.clone());
        let rows = rows
            .into_iter()
            .map(|((kernel, rule), r)| Row {
                machines_on_kernel: on_kernel.get(&kernel).map_or(0, BTreeSet::len),
                kernel,
                rule,
                severity: r.severity,
                machines_diverged: r.machines.len(),
                machines: r
                    .machines
                    .iter()
                    .map(|id| MachineRef {
                        machine_id: id.clone(),
                        hostname: hostname(id),
                    })
                    .collect(),
                drivers: r.drivers.into_iter().collect(),
                devices: r.devices.into_iter().collect(),
                entries: r.span.entries,
                first_seen: utc_us(r.span.first),
                last_seen: utc_us(r.span.last),
                first_seen_us: r.span.first,
                last_seen_us: r.span.last,
            })
            .collect();
        let machines = machines
            .iter()
            .map(|(id, m)| Machine {
                machine_id: id.to_string(),
                hostname: m.hostname.clone(),
                kernels: m.kernels.iter().cloned().collect(),
                rules: m.rules.iter().cloned().collect(),
                entries: m.span.entries,
                first_seen: utc_us(m.span.first),
                last_seen: utc_us(m.span.last),
                first_seen_us: m.span.first,
                last_seen_us: m.span.last,
            })
            .collect();
        Fleet {
            schema_version: SCHEMA_VERSION,
            since: since.map(str::to_string),
            entries: entries.len(),
            kernels: on_kernel.into_keys().collect(),
            machines,
            rows,
        }
    }

    /// The text report: a summary line, the table, the machines. What came from the journals
    /// (any sender can write any field) cannot act on the terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let diverged = self.machines.iter().filter(|m| !m.rules.is_empty()).count();
        let since = self
            .since
            .as_ref()
            .map(|s| format!(" since {s}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "msitrace fleet: {} machines, {} kernels, {diverged} with divergences ({} entries{since})\n",
            self.machines.len(),
            self.kernels.len(),
            self.entries,
        ));
        if self.machines.is_empty() {
            out.push_str("no msitrace entries in these journals\n");
            return terminal_safe(&out).into_owned();
        }
        out.push_str("\nDivergences (per kernel and rule)\n");
        if self.rows.is_empty() {
            out.push_str("    none: no machine diverged\n");
        } else {
            let mut table = vec![
                [
                    "KERNEL",
                    "RULE",
                    "SEVERITY",
                    "MACHINES",
                    "DRIVERS",
                    "DEVICES",
                    "FIRST SEEN",
                    "LAST SEEN",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in &self.rows {
                table.push(vec![
                    r.kernel.clone(),
                    r.rule.clone(),
                    r.severity.clone().unwrap_or_else(|| "?".into()),
                    format!("{} of {}", r.machines_diverged, r.machines_on_kernel),
                    list(&r.drivers),
                    list(&r.devices),
                    utc_secs(r.first_seen_us),
                    utc_secs(r.last_seen_us),
                ]);
            }
            push_table(&mut out, &table);
        }
        out.push_str("\nMachines\n");
        let mut table = vec![
            ["HOST", "MACHINE ID", "KERNELS", "DIVERGED ON", "LAST SEEN"]
                .map(String::from)
                .to_vec(),
        ];
        for m in &self.machines {
            table.push(vec![
                m.hostname.clone().unwrap_or_else(|| "?".into()),
                m.machine_id.clone(),
                m.kernels.join(" "),
                if m.rules.is_empty() {
                    "none".into()
                } else {
                    m.rules.join(" ")
                },
                utc_secs(m.last_seen_us),
            ]);
        }
        push_table(&mut out, &table);
        terminal_safe(&out).into_owned()
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

/// Left-aligned columns, two spaces apart, indented like the other reports' tables.
fn push_table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from("    ");
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(machine: &str, kernel: &str, rule: Option<&str>, t: u64) -> JournalEntry {
        JournalEntry {
            machine_id: machine.into(),
            hostname: Some(format!("host-{machine}")),
            kernel: Some(kernel.into()),
            rule: rule.map(str::to_string),
            severity: rule.map(|_| "error".to_string()),
            driver: rule.map(|_| "hv_stub".to_string()),
            device: rule.map(|_| "0000:02:00.0".to_string()),
            realtime_us: t,
        }
    }

    #[test]
    fn a_journalctl_line_gives_the_fields_the_table_needs() {
        let line = r#"{"SYSLOG_IDENTIFIER":"msitrace","_MACHINE_ID":"abc","_HOSTNAME":"g1","KERNEL":"6.1.0-56-amd64","MSITRACE_RULE":"H4","MSITRACE_SEVERITY":"error","DRIVER":"hv_stub","DEVICE":[48,48,58,50],"__REALTIME_TIMESTAMP":"1796159517451072","IRQ":"38"}"#;
        let e = JournalEntry::from_json_line(line).unwrap().unwrap();
        assert_eq!(e.machine_id, "abc");
        assert_eq!(e.hostname.as_deref(), Some("g1"));
        assert_eq!(e.rule.as_deref(), Some("H4"));
        assert_eq!(
            e.device.as_deref(),
            Some("00:2"),
            "a byte array is its text"
        );
        assert_eq!(e.realtime_us, 1_796_159_517_451_072);
        let twice = r#"{"SYSLOG_IDENTIFIER":"msitrace","_MACHINE_ID":"abc","KERNEL":["6.1","6.2"],"__REALTIME_TIMESTAMP":"1"}"#;
        let e = JournalEntry::from_json_line(twice).unwrap().unwrap();
        assert_eq!(
            e.kernel.as_deref(),
            Some("6.1"),
            "the first of a repeated field"
        );
    }

    #[test]
    fn other_senders_and_entries_without_a_machine_are_not_counted() {
        let other =
            r#"{"SYSLOG_IDENTIFIER":"kernel","_MACHINE_ID":"abc","__REALTIME_TIMESTAMP":"1"}"#;
        assert_eq!(JournalEntry::from_json_line(other), Ok(None));
        let anon = r#"{"SYSLOG_IDENTIFIER":"msitrace","__REALTIME_TIMESTAMP":"1"}"#;
        assert_eq!(JournalEntry::from_json_line(anon), Ok(None));
        assert!(JournalEntry::from_json_line("-- No entries --").is_err());
        assert!(JournalEntry::from_json_line("[1]").is_err());
        let no_time = r#"{"SYSLOG_IDENTIFIER":"msitrace","_MACHINE_ID":"abc"}"#;
        assert!(JournalEntry::from_json_line(no_time).is_err());
    }

    #[test]
    fn rows_count_machines_per_kernel_and_rule() {
        let entries = vec![
            entry("a", "6.12", None, 10),
            entry("a", "6.12", Some("H1"), 20),
            entry("a", "6.12", Some("H1"), 25),
            entry("a", "6.12", Some("H4"), 21),
            entry("b", "6.12", None, 30),
            entry("c", "6.1", Some("H1"), 5),
            JournalEntry {
                driver: Some("nvme".into()),
                device: Some("0000:03:00.0".into()),
                ..entry("d", "6.1", Some("H1"), 50)
            },
        ];
        let f = Fleet::build(&entries, Some("today"));
        assert_eq!(f.schema_version, SCHEMA_VERSION);
        assert_eq!(f.entries, 7);
        assert_eq!(f.kernels, ["6.1", "6.12"]);
        let keys: Vec<(&str, &str, usize, usize)> = f
            .rows
            .iter()
            .map(|r| {
                (
                    r.kernel.as_str(),
                    r.rule.as_str(),
                    r.machines_diverged,
                    r.machines_on_kernel,
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("6.1", "H1", 2, 2),
                ("6.12", "H1", 1, 2),
                ("6.12", "H4", 1, 2)
            ]
        );
        let h1_61 = &f.rows[0];
        assert_eq!(h1_61.drivers, ["hv_stub", "nvme"]);
        assert_eq!(h1_61.devices, ["0000:02:00.0", "0000:03:00.0"]);
        assert_eq!((h1_61.first_seen_us, h1_61.last_seen_us), (5, 50));
        let h1_612 = &f.rows[1];
        assert_eq!(h1_612.entries, 2);
        assert_eq!((h1_612.first_seen_us, h1_612.last_seen_us), (20, 25));
        assert_eq!(h1_612.machines[0].hostname.as_deref(), Some("host-a"));
        let b = f.machines.iter().find(|m| m.machine_id == "b").unwrap();
        assert!(b.rules.is_empty(), "b watched and consistent");
        let a = f.machines.iter().find(|m| m.machine_id == "a").unwrap();
        assert_eq!(a.rules, ["H1", "H4"]);
        assert_eq!((a.first_seen_us, a.last_seen_us, a.entries), (10, 25, 4));
    }

    #[test]
    fn an_error_entry_makes_the_row_an_error() {
        let warn = JournalEntry {
            severity: Some("warning".into()),
            ..entry("a", "6.12", Some("G5"), 1)
        };
        let f = Fleet::build(&[entry("a", "6.12", Some("G5"), 2), warn.clone()], None);
        assert_eq!(f.rows[0].severity.as_deref(), Some("error"));
        let f = Fleet::build(&[warn], None);
        assert_eq!(f.rows[0].severity.as_deref(), Some("warning"));
    }

    #[test]
    fn the_text_has_the_table_and_every_machine() {
        let f = Fleet::build(
            &[
                entry("a", "6.12", Some("H1"), 1_796_159_517_451_072),
                entry("b", "6.12", None, 1_796_159_518_000_000),
            ],
            None,
        );
        let text = f.to_text();
        assert!(text.starts_with(
            "msitrace fleet: 2 machines, 1 kernels, 1 with divergences (2 entries)\n"
        ));
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("6.12"))
            .unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "6.12",
                "H1",
                "error",
                "1",
                "of",
                "2",
                "hv_stub",
                "0000:02:00.0",
                "2026-12-01",
                "21:11:57Z",
                "2026-12-01",
                "21:11:57Z"
            ]
        );
        assert!(
            text.lines().any(|l| l
                .split_whitespace()
                .take(4)
                .eq(["host-b", "b", "6.12", "none"])),
            "{text}"
        );
        let empty = Fleet::build(&[], None).to_text();
        assert!(empty.contains("no msitrace entries"), "{empty}");
    }

    #[test]
    fn what_a_sender_wrote_cannot_act_on_the_terminal() {
        let e = JournalEntry {
            hostname: Some("evil\u{1b}]0;title\u{7}".into()),
            ..entry("a", "6.12", Some("H1"), 1)
        };
        let text = Fleet::build(&[e], None).to_text();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
    }
}
