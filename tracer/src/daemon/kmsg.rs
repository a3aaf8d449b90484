//! Error-level findings also go to the kernel log. When the device that lost its interrupts is
//! the disk the journal lives on, or the NIC the log shipper sends through, the journal entry
//! goes nowhere; a line in the kernel's ring buffer still reaches the serial console, a cloud's
//! boot diagnostics and pstore. Written by the daemon itself to /dev/kmsg, not through
//! journald's forwarding: journald may be the one stuck on the dead disk.
//!
//! Only what the live daemon finds (a replayed file is not this machine's state), only errors,
//! each divergence once, and rate-limited: the kernel log is shared with everything else.

use std::collections::HashSet;
use std::io::Write;

use crate::engine::{DivergenceUpdate, RuleId, Severity};

/// The kernel keeps a record up to about 1 KiB; longer text is cut at a character boundary.
const MAX_LINE: usize = 900;
/// Lines in a burst, then one per [`REFILL_NS`].
const BURST: u32 = 5;
const REFILL_NS: u64 = 12_000_000_000;

/// The kernel log writer: the rate limit runs on the engine's clock (event time), so the same
/// findings give the same lines in a test.
pub struct Kmsg<W: Write> {
    out: W,
    tokens: u32,
    refilled_ns: Option<u64>,
    suppressed: u64,
    said: HashSet<(RuleId, Option<u32>, String, u32)>,
}

impl<W: Write> Kmsg<W> {
    pub fn new(out: W) -> Kmsg<W> {
        Kmsg {
            out,
            tokens: BURST,
            refilled_ns: None,
            suppressed: 0,
            said: HashSet::new(),
        }
    }

    /// `line` is the entry's one-line form (`msitrace: err H4 irq=38 …: meaning`), written at
    /// the kernel's error level when `u` is an error not yet written. A write that fails is
    /// dropped: the journal entry is the record, this line a way around a dead disk.
    pub fn update(&mut self, u: &DivergenceUpdate, line: &str, now_ns: u64) {
        let d = &u.divergence;
        if d.severity != Severity::Error {
            return;
        }
        if !self.said.insert((d.rule, d.irq, d.cause.clone(), d.epoch)) {
            return;
        }
        self.refill(now_ns);
        if self.tokens == 0 {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 && self.tokens >= 2 {
            let n = std::mem::take(&mut self.suppressed);
            self.tokens -= 1;
            let _ = self.out.write_all(
                format!(
                    "<4>msitrace: {n} more error finding(s) not written here (rate limit): see the journal\n"
                )
                .as_bytes(),
            );
        }
        self.tokens -= 1;
        let mut text = line.replace(['\n', '\r'], " ");
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" [cut]");
        }
        let _ = self.out.write_all(format!("<3>{text}\n").as_bytes());
    }

    fn refill(&mut self, now_ns: u64) {
        let last = *self.refilled_ns.get_or_insert(now_ns);
        let n = now_ns.saturating_sub(last) / REFILL_NS;
        if n > 0 {
            self.tokens = (self.tokens as u64 + n).min(BURST as u64) as u32;
            self.refilled_ns = Some(last + n * REFILL_NS);
        }
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Change, Divergence};

    fn update(rule: RuleId, irq: u32, severity: Severity) -> DivergenceUpdate {
        DivergenceUpdate {
            change: Change::New,
            divergence: Divergence {
                rule,
                severity,
                irq: Some(irq),
                irqs: vec![irq],
                device: Some("0000:02:00.0".into()),
                epoch: 1,
                cause: "stale-mask".into(),
                first_ts_ns: 0,
                last_ts_ns: 0,
                occurrences: 1,
                evidence: Vec::new(),
                evidence_dropped: 0,
                meaning: String::new(),
            },
        }
    }

    fn lines(out: Vec<u8>) -> Vec<String> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn errors_once_each_at_the_error_level_warnings_never() {
        let mut k = Kmsg::new(Vec::new());
        k.update(
            &update(RuleId::G5, 38, Severity::Warning),
            "msitrace: warning G5",
            0,
        );
        k.update(
            &update(RuleId::H4, 38, Severity::Error),
            "msitrace: err H4 irq=38\nx",
            1,
        );
        // The same divergence again (revised, escalated): already in the kernel log.
        k.update(
            &update(RuleId::H4, 38, Severity::Error),
            "msitrace: err H4 irq=38",
            2,
        );
        assert_eq!(lines(k.into_inner()), vec!["<3>msitrace: err H4 irq=38 x"]);
    }

    #[test]
    fn a_burst_is_cut_and_the_rest_counted_when_the_budget_returns() {
        let mut k = Kmsg::new(Vec::new());
        for irq in 0..20 {
            k.update(
                &update(RuleId::H1, irq, Severity::Error),
                &format!("err H1 irq={irq}"),
                0,
            );
        }
        k.update(
            &update(RuleId::H1, 99, Severity::Error),
            "err H1 irq=99",
            2 * REFILL_NS,
        );
        let got = lines(k.into_inner());
        assert_eq!(got.len(), BURST as usize + 2, "{got:?}");
        assert_eq!(
            got[BURST as usize],
            "<4>msitrace: 15 more error finding(s) not written here (rate limit): see the journal"
        );
        assert_eq!(got.last().unwrap(), "<3>err H1 irq=99");
    }

    #[test]
    fn a_long_line_is_cut_at_a_character() {
        let mut k = Kmsg::new(Vec::new());
        let long = "é".repeat(MAX_LINE);
        k.update(&update(RuleId::H1, 1, Severity::Error), &long, 0);
        let got = lines(k.into_inner());
        assert!(got[0].len() <= MAX_LINE + 10 && got[0].ends_with(" [cut]"));
    }
}
