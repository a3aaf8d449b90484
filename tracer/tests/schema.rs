//! The JSON reports against their schemas in docs/schema/: `replay --json` of every trace
//! fixture and `check --json` of every captured snapshot, through the real binary, must
//! validate, and so must `probes --json`'s object for the probe rows those traces recorded
//! (`probes` itself needs eBPF); and the schemas must be strict enough that a renamed,
//! retyped or undeclared field fails, or they would promise nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema(name: &str) -> Value {
    let path = root().join("docs/schema").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(name: &str) -> jsonschema::Validator {
    // Draft 2020-12, and the schema itself is checked against its metaschema.
    jsonschema::draft202012::new(&schema(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every error, one per line with where it is: empty when `value` is valid.
fn errors(v: &jsonschema::Validator, value: &Value) -> Vec<String> {
    v.iter_errors(value)
        .map(|e| format!("at {}: {e}", e.instance_path))
        .collect()
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no *.{ext} in {dir}");
    out
}

/// `msitrace ARGS` printing JSON, whatever its verdict (exit 0, 1 or 2 with a report).
fn json_of(args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_msitrace"))
        .args(args)
        .output()
        .expect("msitrace runs");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "msitrace {args:?}: not JSON ({e}), exit {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn replay_reports() -> Vec<(PathBuf, Value)> {
    files("tests/fixtures/traces", "msit")
        .into_iter()
        .map(|f| {
            let r = json_of(&["replay", "--json", f.to_str().unwrap()]);
            (f, r)
        })
        .collect()
}

fn check_reports() -> Vec<(PathBuf, Value)> {
    files("tests/fixtures/check", "json")
        .into_iter()
        .map(|f| {
            let r = json_of(&["check", "--json", "--from", f.to_str().unwrap()]);
            (f, r)
        })
        .collect()
}

#[test]
fn replay_json_of_every_trace_fixture_follows_the_report_schema() {
    let v = validator("report.schema.json");
    for (file, report) in replay_reports() {
        assert_eq!(report["schema_version"], 1, "{}", file.display());
        let errs = errors(&v, &report);
        assert!(errs.is_empty(), "{}:\n{}", file.display(), errs.join("\n"));
    }
}

#[test]
fn check_json_of_every_captured_snapshot_follows_the_check_schema() {
    let v = validator("check.schema.json");
    for (file, report) in check_reports() {
        assert_eq!(report["schema_version"], 1, "{}", file.display());
        let errs = errors(&v, &report);
        assert!(errs.is_empty(), "{}:\n{}", file.display(), errs.join("\n"));
    }
}

#[test]
fn probes_json_of_the_rows_each_trace_recorded_follows_the_probes_schema() {
    use tracer::probes::{ProbeStatus, SymbolSource, SymbolTable};
    let v = validator("probes.schema.json");
    let mut tables: Vec<(String, Vec<ProbeStatus>)> = files("tests/fixtures/traces", "msit")
        .into_iter()
        .map(|f| {
            // `dump --json`'s first line is the header, with the probe report of the run.
            let o = Command::new(env!("CARGO_BIN_EXE_msitrace"))
                .args(["dump", "--json", f.to_str().unwrap()])
                .output()
                .expect("msitrace runs");
            let first = o.stdout.split(|b| *b == b'\n').next().unwrap();
            let header: Value = serde_json::from_slice(first).unwrap();
            let rows = serde_json::from_value(header["header"]["probes"].clone())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f.display().to_string(), rows)
        })
        .collect();
    // What the fixtures' kernels did not show: a kprobe's symbol table, other candidates, a
    // row waiting for its module.
    let mut rows = tracer::engine::EngineConfig::all_probes_attached();
    rows[0].symbol_source = Some(SymbolSource::new(
        SymbolTable::Btf,
        "/sys/kernel/btf",
        vec!["/proc/kallsyms: Permission denied".into()],
    ));
    rows[0].candidates = vec![rows[0].symbol.clone(), "hv_vmbus_compose_msi_msg".into()];
    rows[1].status = tracer::probes::Status::Pending;
    rows[1].attached_symbol = None;
    tables.push(("a synthetic table".into(), rows));
    for (whose, rows) in tables {
        let json = serde_json::to_value(tracer::probes::ProbesJson::new(&rows)).unwrap();
        let errs = errors(&v, &json);
        assert!(errs.is_empty(), "{whose}:\n{}", errs.join("\n"));
    }
}

/// The schemas list every rule and probe the code has: a new one that fixtures do not show yet
/// still fails here until the schema says it.
#[test]
fn the_schemas_enumerate_every_rule_and_probe() {
    fn names<T: serde::Serialize>(all: &[T]) -> Vec<Value> {
        all.iter()
            .map(|x| serde_json::to_value(x).unwrap())
            .collect()
    }
    let listed = |schema_file: &str, def: &str| -> Vec<Value> {
        schema(schema_file)["$defs"][def]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema_file}: no enum {def}"))
            .clone()
    };
    let rules = names(&tracer::engine::RuleId::ALL);
    let probes = names(&tracer_common::ProbeId::ALL);
    assert_eq!(listed("report.schema.json", "rule_id"), rules);
    assert_eq!(listed("probes.schema.json", "rule_id"), rules);
    assert_eq!(listed("report.schema.json", "probe_id"), probes);
    assert_eq!(listed("probes.schema.json", "probe_id"), probes);
    assert_eq!(
        listed("check.schema.json", "check_rule"),
        names(&tracer::check::CheckRule::ALL)
    );
}

#[test]
fn the_version_the_binary_prints_is_the_one_the_schemas_describe() {
    assert_eq!(
        schema("report.schema.json")["properties"]["schema_version"]["const"],
        json!(tracer::report::SCHEMA_VERSION)
    );
    assert_eq!(
        schema("check.schema.json")["properties"]["schema_version"]["const"],
        json!(tracer::check::analysis::SCHEMA_VERSION)
    );
    assert_eq!(
        schema("probes.schema.json")["properties"]["schema_version"]["const"],
        json!(tracer::probes::SCHEMA_VERSION)
    );
    assert_eq!(
        schema("fleet.schema.json")["properties"]["schema_version"]["const"],
        json!(tracer::fleet::SCHEMA_VERSION)
    );
}

/// `fleet --json` over journal lines shaped as journalctl prints the daemon's entries (the
/// real journals are in tests/fleet.rs, root-only): a diverged machine, a consistent one, an
/// entry with no hostname.
fn fleet_table() -> Value {
    let line = |machine: &str, host: Option<&str>, rule: Option<&str>, t: u64| {
        let mut e = json!({
            "SYSLOG_IDENTIFIER": "msitrace",
            "_MACHINE_ID": machine,
            "KERNEL": "6.12.117+deb12-amd64",
            "__REALTIME_TIMESTAMP": t.to_string(),
        });
        if let Some(h) = host {
            e["_HOSTNAME"] = json!(h);
        }
        if let Some(r) = rule {
            e["MSITRACE_RULE"] = json!(r);
            e["MSITRACE_SEVERITY"] = json!("error");
            e["DRIVER"] = json!("hv_stub");
            e["DEVICE"] = json!("0000:02:00.0");
        }
        e.to_string()
    };
    let entries: Vec<_> = [
        line("aa", Some("guest-a"), None, 1_796_159_517_000_000),
        line("aa", Some("guest-a"), Some("H1"), 1_796_159_517_451_072),
        line("bb", None, None, 1_796_159_518_000_000),
    ]
    .iter()
    .map(|l| {
        tracer::fleet::JournalEntry::from_json_line(l)
            .unwrap()
            .unwrap()
    })
    .collect();
    serde_json::to_value(tracer::fleet::Fleet::build(&entries, Some("-1h"))).unwrap()
}

#[test]
fn fleet_json_follows_the_fleet_schema_and_the_schema_refuses_drift() {
    let v = validator("fleet.schema.json");
    let table = fleet_table();
    assert_eq!(table["schema_version"], 1);
    let errs = errors(&v, &table);
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    let broken = [
        (
            "renamed top-level field",
            rename(&table, &[], "rows", "table"),
        ),
        (
            "renamed nested field",
            rename(
                &table,
                &["rows", "0"],
                "machines_diverged",
                "machines_count",
            ),
        ),
        (
            "undeclared field",
            set(&table, &["machines", "0"], "uptime", json!(3)),
        ),
        (
            "retyped field",
            set(&table, &["rows", "0"], "machines_on_kernel", json!("2")),
        ),
        (
            "time not RFC 3339",
            set(&table, &["rows", "0"], "first_seen", json!("yesterday")),
        ),
        (
            "other version",
            set(&table, &[], "schema_version", json!(2)),
        ),
    ];
    for (what, b) in &broken {
        assert!(!errors(&v, b).is_empty(), "{what} was accepted");
    }
}

/// Edit the object at `path` (keys and array indexes) of `value`.
fn at<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut serde_json::Map<String, Value> {
    let mut v = value;
    for p in path {
        v = match p.parse::<usize>() {
            Ok(i) => &mut v[i],
            Err(_) => &mut v[*p],
        };
    }
    v.as_object_mut()
        .unwrap_or_else(|| panic!("{path:?} is not an object"))
}

fn rename(value: &Value, path: &[&str], from: &str, to: &str) -> Value {
    let mut v = value.clone();
    let o = at(&mut v, path);
    let x = o
        .remove(from)
        .unwrap_or_else(|| panic!("{path:?} has no {from}"));
    o.insert(to.into(), x);
    v
}

fn set(value: &Value, path: &[&str], key: &str, x: Value) -> Value {
    let mut v = value.clone();
    at(&mut v, path).insert(key.into(), x);
    v
}

/// A change of the output that the schema does not describe must fail validation: else the
/// schema would let the JSON drift and still call it version 1.
#[test]
fn the_schemas_reject_a_renamed_retyped_or_undeclared_field() {
    let report = validator("report.schema.json");
    let (_, buggy) = replay_reports()
        .into_iter()
        .find(|(f, r)| f.ends_with("6.12-hibernate-buggy.msit") && !r["divergences"][0].is_null())
        .expect("6.12-hibernate-buggy.msit has a divergence");
    assert!(errors(&report, &buggy).is_empty());
    let broken = [
        (
            "renamed top-level field",
            rename(&buggy, &[], "divergences", "findings"),
        ),
        (
            "renamed nested field",
            rename(&buggy, &["divergences", "0"], "meaning", "meanings"),
        ),
        (
            "undeclared field",
            set(&buggy, &["summary"], "score", json!(3)),
        ),
        (
            "unknown severity",
            set(&buggy, &["divergences", "0"], "severity", json!("fatal")),
        ),
        (
            "unknown rule",
            set(&buggy, &["divergences", "0"], "rule", json!("G9")),
        ),
        (
            "retyped field",
            set(&buggy, &["divergences", "0"], "irq", json!("38")),
        ),
        (
            "other version",
            set(&buggy, &[], "schema_version", json!(2)),
        ),
        (
            "unknown phase",
            set(&buggy, &["timeline", "0"], "phase", json!("asleep")),
        ),
    ];
    for (what, v) in &broken {
        assert!(!errors(&report, v).is_empty(), "{what} was accepted");
    }
    let missing = {
        let mut v = buggy.clone();
        at(&mut v, &["vectors", "0"]).remove("after_resume");
        v
    };
    assert!(
        !errors(&report, &missing).is_empty(),
        "missing field accepted"
    );

    let check = validator("check.schema.json");
    let (_, masked) = check_reports()
        .into_iter()
        .find(|(f, _)| f.ends_with("masked-entry.json"))
        .unwrap();
    assert!(errors(&check, &masked).is_empty());
    let broken = [
        (
            "renamed top-level field",
            rename(&masked, &[], "unchecked_devices", "unchecked"),
        ),
        (
            "renamed nested field",
            rename(&masked, &["findings", "0"], "evidence", "proof"),
        ),
        (
            "undeclared field",
            set(&masked, &["vectors", "0", "genirq"], "cpu", json!(0)),
        ),
        (
            "unknown severity",
            set(&masked, &["findings", "0"], "severity", json!("info")),
        ),
        (
            "unknown rule",
            set(&masked, &["findings", "0"], "rule", json!("C9")),
        ),
        (
            "unknown kind",
            set(&masked, &["vectors", "0"], "kind", json!("INTx")),
        ),
        (
            "other version",
            set(&masked, &[], "schema_version", json!(0)),
        ),
    ];
    for (what, v) in &broken {
        assert!(!errors(&check, v).is_empty(), "{what} was accepted");
    }

    let probes = validator("probes.schema.json");
    let rows = tracer::engine::EngineConfig::all_probes_attached();
    let table = serde_json::to_value(tracer::probes::ProbesJson::new(&rows)).unwrap();
    assert!(errors(&probes, &table).is_empty());
    let broken = [
        (
            "renamed field",
            rename(&table, &["probes", "0"], "status", "state"),
        ),
        (
            "undeclared field",
            set(&table, &["probes", "0"], "attached", json!(true)),
        ),
        (
            "unknown status",
            set(&table, &["probes", "0"], "status", json!("ok")),
        ),
        (
            "unknown probe",
            set(&table, &["probes", "0"], "probe", json!("Nope")),
        ),
        ("bare array", table["probes"].clone()),
    ];
    for (what, v) in &broken {
        assert!(!errors(&probes, v).is_empty(), "{what} was accepted");
    }
}
