//! `msitrace live`: the TUI's last frame on the guest's second serial port.

use std::{fs, path::Path};

use super::Verdict;
use crate::vm::plan::Step;

/// The badge `msitrace live` shows in a diverged vector's row (tracer/src/live/).
const LIVE_DIVERGED_BADGE: &str = "DIVERGED";

/// The TUI's last frame before it quit, rebuilt from the bytes it wrote to ttyS1 by a VT100
/// emulator: what a person at that terminal saw after the resume.
pub(super) fn live_last_frame(bytes: &[u8]) -> Result<String, String> {
    const ENTER: &[u8] = b"\x1b[?1049h";
    const LEAVE: &[u8] = b"\x1b[?1049l";
    let rfind = |pat: &[u8]| bytes.windows(pat.len()).rposition(|w| w == pat);
    if bytes.is_empty() {
        return Err("msitrace live drew nothing on ttyS1".into());
    }
    let leave = match (rfind(ENTER), rfind(LEAVE)) {
        (Some(e), Some(l)) if l > e => l,
        (None, _) => {
            return Err("msitrace live never switched ttyS1 to the alternate screen".into());
        }
        _ => {
            return Err(
                "msitrace live left ttyS1 in the alternate screen: the terminal was not restored on SIGTERM"
                    .into(),
            );
        }
    };
    let mut p = vt100::Parser::new(24, 80, 0);
    p.process(&bytes[..leave]);
    Ok(p.screen().contents())
}

/// Whether a table row of the frame starts with `irq` and carries the badge. The row's
/// first cell may hold the border and the cursor (`│▶38`).
pub(super) fn marks_diverged(frame: &str, irq: u32) -> bool {
    frame.lines().any(|l| {
        let first = l
            .split_whitespace()
            .map(|w| w.trim_start_matches(|c: char| !c.is_alphanumeric()))
            .find(|w| !w.is_empty());
        first == Some(irq.to_string().as_str()) && l.contains(LIVE_DIVERGED_BADGE)
    })
}

pub(super) fn check_live_screen(
    tty1: &Path,
    step: Step,
    dir: &Path,
    tests: &[u32],
    v: &mut Verdict,
) {
    let bytes = fs::read(tty1).unwrap_or_default();
    let frame = match live_last_frame(&bytes) {
        Ok(f) => f,
        Err(e) => {
            v.failures.push(e);
            return;
        }
    };
    let _ = fs::write(dir.join("live-last-frame.txt"), &frame);
    let missing: Vec<String> = tests
        .iter()
        .filter(|&&irq| !marks_diverged(&frame, irq))
        .map(|irq| irq.to_string())
        .collect();
    let all = tests
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match (step.expects_dead_test_vectors(), missing.len()) {
        (true, 0) => v.facts.push(format!(
            "the TUI's last frame at 80x24 marks irqs {all} {LIVE_DIVERGED_BADGE}"
        )),
        (true, _) => v.failures.push(format!(
            "the TUI's last frame (live-last-frame.txt) does not mark irqs {} {LIVE_DIVERGED_BADGE}",
            missing.join(",")
        )),
        (false, n) if n == tests.len() => {
            v.facts.push("the TUI's last frame marks no test vector".into())
        }
        (false, _) => v.failures.push(format!(
            "the TUI's last frame (live-last-frame.txt) marks a test vector {LIVE_DIVERGED_BADGE} in a step that must stay clean"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tui_frame_is_rebuilt_from_the_serial_bytes() {
        let mut bytes = b"\x1b[?1049h\x1b[2J\x1b[1;1H 37  ok\x1b[2;1H 38  DIVERGED H1".to_vec();
        // A later redraw of row 2 only, as ratatui sends a diff.
        bytes.extend_from_slice(b"\x1b[2;6HDIVERGED H4");
        let mut closed = bytes.clone();
        closed.extend_from_slice(b"\x1b[?1049l$ ");
        let frame = live_last_frame(&closed).unwrap();
        assert!(frame.contains(" 38  DIVERGED H4"), "{frame}");
        assert!(frame.lines().any(|l| l.trim_start().starts_with("37")));
        assert!(
            live_last_frame(&bytes)
                .unwrap_err()
                .contains("not restored")
        );
        assert!(live_last_frame(b"").unwrap_err().contains("nothing"));
        assert!(
            live_last_frame(b"plain text\n")
                .unwrap_err()
                .contains("never switched")
        );
    }

    #[test]
    fn a_diverged_row_is_found_with_or_without_the_cursor() {
        let frame = "phase resumed  epoch 1  4 DIVERGED\n\
                     │▶38    DIVERGED 0000:02:00.0 hv_stub    MSI-X 1   MASKED never     H1 H4   █\n\
                     │ 39    DIVERGED 0000:02:00.0 hv_stub    MSI-X 2   MASKED never     H1 H4   █\n\
                     │ 37    ok       0000:02:00.0 hv_stub    MSI-X 0   open   ok ep1           ║\n\
                     │ERROR H4  irq 37   ep1 0000:02:00.0 DIVERGED in a sentence\n";
        assert!(marks_diverged(frame, 38));
        assert!(marks_diverged(frame, 39));
        assert!(!marks_diverged(frame, 37));
        assert!(!marks_diverged(frame, 1));
    }
}
