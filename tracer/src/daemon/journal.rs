//! The daemon's structured log entries: what each divergence, phase change, resume summary and
//! the probe coverage say, as journald fields (pure functions, unit-tested), and the sink that
//! sends them — to journald's native socket with every field, or one line each on stderr when
//! not connected to the journal.

use libsystemd::logging::{Priority, journal_send};

use crate::engine::{Change, DivergenceUpdate, Engine, Phase, RuleId, Severity};
use crate::probes::{ProbeStatus, Status, SymbolTable};

/// Fixed MESSAGE_IDs: log pipelines and `journalctl MESSAGE_ID=…` select on them, so they
/// never change. Listed in README.md.
pub fn rule_message_id(rule: RuleId) -> &'static str {
    match rule {
        RuleId::H1 => "a6f7f2aa366c4572a5230e929acdbdd9",
        RuleId::H2 => "148ea885d6e04ce98f9b5aebf422adb9",
        RuleId::H3 => "55fcc533c8c741a5aa1595c6a07fbb97",
        RuleId::H4 => "6400b5e883de416c81e374b0d2ed5a38",
        RuleId::H5 => "285c6f1c5e234dd5a1ae0c1b28aaa11e",
        RuleId::H9 => "562071ec49694f5eaa39d69c04078939",
        RuleId::G1 => "7752e912e46244dca37a8dde83ac0d12",
        RuleId::G2 => "aec138c40e294d57b1ef5bf5c9c44770",
        RuleId::G3 => "f3ee5a692c574a3fa0bdd7d894b6ae63",
        RuleId::G5 => "597be31930a244ba8e48b152a2899a9b",
    }
}

pub const PHASE_ID: &str = "0e975160c9314087a5539e9ee52e2012";
pub const RESUME_ID: &str = "918795556d5c4389bbefd43da5312a7d";
pub const COVERAGE_ID: &str = "9ee6fdb294f54c7b9c1d212b9c30272e";
pub const STOPPED_ID: &str = "0993c13345bb41ec9e11a41677807da0";
pub const RECORDER_ID: &str = "17dab4cdeea149dd82af3275626e9e1f";

/// syslog priority, by the names journalctl shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Notice,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Err => "err",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }

    fn priority(self) -> Priority {
        match self {
            Level::Err => Priority::Error,
            Level::Warning => Priority::Warning,
            Level::Notice => Priority::Notice,
        }
    }
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub level: Level,
    pub message_id: &'static str,
    pub message: String,
    /// Fields besides MESSAGE, PRIORITY and MESSAGE_ID, upper case as journald wants them.
    pub fields: Vec<(&'static str, String)>,
    /// The stderr form's words after the level (`H1 irq=38 device=…`).
    pub short: String,
}

impl Entry {
    pub fn field(&self, k: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    }

    /// `msitrace: err H1 irq=38 device=0000:02:00.0 epoch=1: <message>`; the short form is
    /// left out when the message already begins with it (`stopped (SIGTERM): …`), and what
    /// came from the kernel or a file cannot act on the terminal.
    pub fn line(&self) -> String {
        let text = if self.message.starts_with(&self.short) {
            format!("msitrace: {} {}", self.level.name(), self.message)
        } else {
            format!(
                "msitrace: {} {}: {}",
                self.level.name(),
                self.short,
                self.message
            )
        };
        crate::output::terminal_safe(&text).into_owned()
    }
}

/// The facts every entry carries.
pub struct Context<'a> {
    pub kernel: &'a str,
    pub phase: Phase,
    pub epoch: u32,
}

impl<'a> Context<'a> {
    pub fn of(engine: &'a Engine) -> Context<'a> {
        Context {
            kernel: engine.kernel_release(),
            phase: engine.state().phase,
            epoch: engine.state().epoch,
        }
    }

    fn common(&self, fields: &mut Vec<(&'static str, String)>) {
        fields.push(("PHASE", self.phase.name().to_string()));
        fields.push(("KERNEL", self.kernel.to_string()));
        fields.push(("SYSLOG_IDENTIFIER", "msitrace".into()));
    }
}

/// A new or changed divergence. Error-level rules are `err`: the device gets no more
/// interrupts; warnings are `warning`.
pub fn divergence(u: &DivergenceUpdate, engine: &Engine) -> Entry {
    let d = &u.divergence;
    let level = match d.severity {
        Severity::Error => Level::Err,
        Severity::Warning => Level::Warning,
    };
    let vector = d.irq.and_then(|irq| engine.state().vectors.get(&irq));
    let mut fields = vec![
        ("MSITRACE_RULE", d.rule.to_string()),
        ("MSITRACE_SEVERITY", d.severity.name().into()),
        (
            "MSITRACE_CHANGE",
            match u.change {
                Change::New => "new",
                Change::Updated => "updated",
            }
            .into(),
        ),
        ("MSITRACE_CAUSE", d.cause.clone()),
        ("EPOCH", d.epoch.to_string()),
    ];
    if let Some(irq) = d.irq {
        fields.push(("IRQ", irq.to_string()));
    }
    if d.irqs.len() > 1 {
        let all: Vec<String> = d.irqs.iter().map(u32::to_string).collect();
        fields.push(("IRQS", all.join(" ")));
    }
    if let Some(dev) = &d.device {
        fields.push(("DEVICE", dev.clone()));
    }
    if let Some(v) = vector {
        if let Some(drv) = &v.driver {
            fields.push(("DRIVER", drv.clone()));
        }
        if let Some(i) = v.msi_index {
            fields.push(("MSI_INDEX", i.to_string()));
        }
        if let Some(t) = &v.target
            && let Some(cpu) = t.cpu
        {
            fields.push(("CPU", cpu.to_string()));
            fields.push(("CPU_SOURCE", t.source.name().to_string()));
        }
    }
    if let Some(e) = d.evidence.last() {
        fields.push((
            "MSITRACE_LAST_EVIDENCE",
            format!("{} {}", e.event, e.detail),
        ));
    }
    Context::of(engine).common(&mut fields);
    let mut short = d.rule.to_string();
    if let Some(irq) = d.irq {
        short.push_str(&format!(" irq={irq}"));
    }
    if let Some(dev) = &d.device {
        short.push_str(&format!(" device={dev}"));
    }
    short.push_str(&format!(" epoch={}", d.epoch));
    if u.change == Change::Updated {
        short.push_str(" (updated)");
    }
    Entry {
        level,
        message_id: rule_message_id(d.rule),
        message: d.meaning.clone(),
        fields,
        short,
    }
}

/// The system moved from one phase of a suspend/resume cycle to another.
pub fn phase_change(from: Phase, ctx: &Context) -> Entry {
    let mut fields = vec![
        ("MSITRACE_PHASE_FROM", from.name().to_string()),
        ("EPOCH", ctx.epoch.to_string()),
    ];
    ctx.common(&mut fields);
    Entry {
        level: Level::Notice,
        message_id: PHASE_ID,
        message: format!(
            "phase {} -> {} (resume epoch {})",
            from.name(),
            ctx.phase.name(),
            ctx.epoch
        ),
        fields,
        short: format!("phase epoch={}", ctx.epoch),
    }
}

/// The recorder itself: a notice of the session (hooks attached late, return probes
/// re-attached; `Notice`) or the flight recorder stopping on a failed write (`Warning`).
pub fn recorder(level: Level, text: &str, ctx: &Context) -> Entry {
    let mut fields = Vec::new();
    ctx.common(&mut fields);
    Entry {
        level,
        message_id: RECORDER_ID,
        message: text.to_string(),
        fields,
        short: "recorder".into(),
    }
}

/// Once a resume is complete: how many vectors came back and what diverged in it.
pub fn resume_summary(engine: &Engine) -> Entry {
    let st = engine.state();
    let ctx = Context::of(engine);
    let in_epoch: Vec<_> = engine
        .divergences()
        .iter()
        .filter(|d| d.epoch == st.epoch)
        .collect();
    let errors = in_epoch
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut irqs: Vec<u32> = in_epoch.iter().filter_map(|d| d.irq).collect();
    irqs.sort_unstable();
    irqs.dedup();
    let kind = st
        .epochs
        .last()
        .map(|e| e.kind.name())
        .unwrap_or_else(|| "resume".into());
    let mut fields = vec![
        ("EPOCH", st.epoch.to_string()),
        ("MSITRACE_RESUME_KIND", kind.clone()),
        ("MSITRACE_VECTORS", st.vectors.len().to_string()),
        ("MSITRACE_DIVERGENCES", in_epoch.len().to_string()),
        ("MSITRACE_ERRORS", errors.to_string()),
    ];
    ctx.common(&mut fields);
    let which = if irqs.is_empty() {
        "every vector consistent".to_string()
    } else {
        let list: Vec<String> = irqs.iter().map(u32::to_string).collect();
        format!("diverged: irq {}", list.join(", "))
    };
    Entry {
        level: Level::Notice,
        message_id: RESUME_ID,
        message: format!(
            "resume epoch {} ({kind}) complete: {} vectors, {} divergences ({errors} errors); {which}",
            st.epoch,
            st.vectors.len(),
            in_epoch.len(),
        ),
        fields,
        short: format!("resume epoch={}", st.epoch),
    }
}

/// At start: which hooks attached, and which rules lose input because others did not.
pub fn coverage(probes: &[ProbeStatus], ctx: &Context) -> Entry {
    let (attached, expected) = crate::probes::coverage(probes);
    let mut losing: Vec<&str> = probes
        .iter()
        .flat_map(|p| p.rules_losing_input.iter().map(String::as_str))
        .collect();
    losing.sort_unstable();
    losing.dedup();
    let missing: Vec<&str> = probes
        .iter()
        .filter(|p| !matches!(p.status, Status::Attached | Status::Unused))
        .map(|p| p.hook.as_str())
        .collect();
    let mut fields = vec![
        ("MSITRACE_HOOKS_ATTACHED", attached.to_string()),
        ("MSITRACE_HOOKS_EXPECTED", expected.to_string()),
        ("MSITRACE_HOOKS_MISSING", missing.join(" ")),
        ("MSITRACE_RULES_LOSING_INPUT", losing.join(" ")),
    ];
    let symbols = probes.iter().find_map(|p| p.symbol_source.as_ref());
    if let Some(src) = symbols {
        fields.push(("MSITRACE_SYMBOL_SOURCE", src.describe()));
    }
    ctx.common(&mut fields);
    // No hook at all (a header that lists none) leaves every rule without input, whatever
    // the per-probe lists say.
    let mut tail = if expected == 0 {
        "no hook was recorded: no rule has its input".to_string()
    } else if losing.is_empty() {
        "every rule has its input".to_string()
    } else {
        format!(
            "rules losing input: {} (`msitrace probes` says why)",
            losing.join(" ")
        )
    };
    // Said in the message too: a hidden /proc/kallsyms changes what "absent" can mean.
    if let Some(src) = symbols.filter(|s| s.kind != SymbolTable::Kallsyms) {
        tail.push_str(&format!(
            "; kernel symbols from {}, not /proc/kallsyms",
            src.kind.name()
        ));
    }
    Entry {
        level: Level::Notice,
        message_id: COVERAGE_ID,
        message: format!("{attached} of {expected} hooks attached; {tail}"),
        fields,
        short: "coverage".into(),
    }
}

/// Where entries go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Journal,
    Stderr,
}

impl Target {
    /// The journal when stderr is connected to it (a systemd service), else stderr.
    pub fn auto() -> Target {
        if libsystemd::logging::connected_to_journal() {
            Target::Journal
        } else {
            Target::Stderr
        }
    }
}

pub struct Sink {
    pub target: Target,
    /// Entries the journal refused (socket gone): they went to stderr instead.
    pub fallbacks: u64,
}

impl Sink {
    pub fn new(target: Target) -> Sink {
        Sink {
            target,
            fallbacks: 0,
        }
    }

    pub fn send(&mut self, e: &Entry) {
        if self.target == Target::Journal {
            let vars = std::iter::once(("MESSAGE_ID", e.message_id))
                .chain(e.fields.iter().map(|(k, v)| (*k, v.as_str())));
            match journal_send(e.level.priority(), &e.message, vars) {
                Ok(()) => return,
                // A journal that went away must not lose the warning: stderr still reaches
                // whoever runs us.
                Err(_) => self.fallbacks += 1,
            }
        }
        eprintln!("{}", e.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The package's journal catalog explains every MESSAGE_ID the daemon sends, and only
    /// those: an ID added here without its text, or a text left for an ID gone, fails.
    #[test]
    fn the_catalog_explains_every_message_id() {
        let catalog = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/msitrace.catalog"),
        )
        .expect("packaging/msitrace.catalog");
        let mut listed: Vec<&str> = catalog
            .lines()
            .filter_map(|l| l.strip_prefix("-- "))
            .map(str::trim)
            .collect();
        let mut sent: Vec<&str> = RuleId::ALL.iter().map(|r| rule_message_id(*r)).collect();
        sent.extend([PHASE_ID, RESUME_ID, COVERAGE_ID, STOPPED_ID, RECORDER_ID]);
        listed.sort();
        sent.sort();
        assert_eq!(listed, sent);
        for id in sent {
            let entry = catalog.split(&format!("-- {id}\n")).nth(1).unwrap();
            assert!(entry.starts_with("Subject: "), "{id} has no Subject line");
        }
    }
    use crate::engine::EngineConfig;
    use crate::engine::{Divergence, Evidence};
    use crate::seed::{Seed, SeedVector};

    fn engine() -> Engine {
        let seed = Seed {
            vectors: vec![SeedVector {
                irq: 38,
                device: Some("0000:02:00.0".into()),
                driver: Some("hv_stub".into()),
                msi_index: Some(1),
                kind: Some("PCI-MSIX".into()),
                effective_cpus: Some(vec![1]),
                ..SeedVector::default()
            }],
            ..Seed::default()
        };
        Engine::new(EngineConfig::new(
            "6.12.117",
            EngineConfig::all_probes_attached(),
            seed,
        ))
    }

    fn update(rule: RuleId, severity: Severity) -> DivergenceUpdate {
        DivergenceUpdate {
            change: Change::New,
            divergence: Divergence {
                rule,
                severity,
                irq: Some(38),
                irqs: vec![38],
                device: Some("0000:02:00.0".into()),
                epoch: 1,
                cause: "restored-without-compose".into(),
                first_ts_ns: 1,
                last_ts_ns: 1,
                occurrences: 1,
                evidence: vec![Evidence {
                    ts_ns: 1,
                    cpu: Some(0),
                    event: "__pci_write_msi_msg".into(),
                    detail: "irq 38".into(),
                }],
                evidence_dropped: 0,
                meaning: "irq 38 was restored by MMIO without a compose".into(),
            },
        }
    }

    #[test]
    fn an_error_rule_is_an_err_entry_with_the_vector_fields() {
        let e = divergence(&update(RuleId::H1, Severity::Error), &engine());
        assert_eq!(e.level, Level::Err);
        assert_eq!(e.message_id, "a6f7f2aa366c4572a5230e929acdbdd9");
        for (k, v) in [
            ("MSITRACE_RULE", "H1"),
            ("IRQ", "38"),
            ("DEVICE", "0000:02:00.0"),
            ("DRIVER", "hv_stub"),
            ("MSI_INDEX", "1"),
            ("CPU", "1"),
            ("EPOCH", "1"),
            ("PHASE", "running"),
            ("KERNEL", "6.12.117"),
        ] {
            assert_eq!(e.field(k), Some(v), "{k}");
        }
        assert_eq!(
            e.line(),
            "msitrace: err H1 irq=38 device=0000:02:00.0 epoch=1: irq 38 was restored by MMIO without a compose"
        );
        let w = divergence(&update(RuleId::G3, Severity::Warning), &engine());
        assert_eq!(w.level, Level::Warning);
        assert!(w.line().starts_with("msitrace: warning G3 irq=38"));
    }

    #[test]
    fn every_rule_has_its_own_message_id() {
        let mut ids: Vec<&str> = RuleId::ALL.iter().map(|r| rule_message_id(*r)).collect();
        ids.extend([PHASE_ID, RESUME_ID, COVERAGE_ID, STOPPED_ID]);
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
        assert!(
            ids.iter()
                .all(|i| i.len() == 32 && i.chars().all(|c| c.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn coverage_names_what_is_missing() {
        let mut probes = EngineConfig::all_probes_attached();
        probes[0].status = Status::Denied;
        probes[0].rules_losing_input = vec!["H1".into(), "H2".into()];
        let e = engine();
        let c = coverage(&probes, &Context::of(&e));
        assert_eq!(c.level, Level::Notice);
        assert_eq!(c.field("MSITRACE_RULES_LOSING_INPUT"), Some("H1 H2"));
        assert!(c.message.starts_with(&format!(
            "{} of {} hooks attached",
            probes.len() - 1,
            probes.len()
        )));
        assert_eq!(c.field("MSITRACE_SYMBOL_SOURCE"), None);
        assert!(!c.message.contains("kernel symbols"), "{}", c.message);
    }

    #[test]
    fn coverage_says_when_symbols_did_not_come_from_kallsyms() {
        let mut probes = EngineConfig::all_probes_attached();
        probes[0].symbol_source = Some(crate::probes::SymbolSource::new(
            SymbolTable::AvailableFilterFunctions,
            "/sys/kernel/tracing/available_filter_functions",
            vec!["/proc/kallsyms: Permission denied".into()],
        ));
        let c = coverage(&probes, &Context::of(&engine()));
        assert!(
            c.message
                .ends_with("; kernel symbols from available_filter_functions, not /proc/kallsyms"),
            "{}",
            c.message
        );
        let field = c.field("MSITRACE_SYMBOL_SOURCE").unwrap();
        assert!(
            field.starts_with("/sys/kernel/tracing/available_filter_functions (not used: /proc/kallsyms: Permission denied); lists only"),
            "{field}"
        );
    }
}
