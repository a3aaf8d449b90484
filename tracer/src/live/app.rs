//! The TUI's state, apart from any terminal and any clock: the vector rows built from the
//! engine, the divergence list, the event log, selection, sort, filter and modes, and what
//! each key does. Time comes in as arguments, so every behaviour is a unit test.

use std::collections::{HashMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::duration::secs;
use crate::engine::{Divergence, Engine, Phase, Severity, VectorState};
use crate::event::{Event, EventKind};
use crate::probes::{ProbeStatus, Status as HookStatus};

/// Bound on the event log and on each vector's history: a TUI left open for days stays small.
pub const LOG_CAP: usize = 5_000;
pub const HISTORY_CAP: usize = 200;

/// A vector's badge. The word carries the meaning; colour only repeats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Diverged,
    Warning,
    Masked,
    Ok,
}

impl Status {
    pub fn badge(self) -> &'static str {
        match self {
            Status::Diverged => "DIVERGED",
            Status::Warning => "WARN",
            Status::Masked => "masked",
            Status::Ok => "ok",
        }
    }
}

/// Hyper-V remapping of a vector: composed with the host in the current resume epoch or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remap {
    /// Not a Hyper-V vector: nothing to remap.
    NotHyperV,
    /// Composed with success in this epoch.
    Composed(u32),
    /// Last good compose was in an earlier epoch: the host may have dropped its entry.
    Stale(u32),
    /// The last compose failed (zeroed message or no chip data).
    Failed(u32),
    /// A Hyper-V vector never seen composed.
    Never,
}

impl Remap {
    pub fn text(&self) -> String {
        match self {
            Remap::NotHyperV => "-".into(),
            Remap::Composed(e) => format!("ok ep{e}"),
            Remap::Stale(e) => format!("STALE ep{e}"),
            Remap::Failed(e) => format!("FAIL ep{e}"),
            Remap::Never => "never".into(),
        }
    }
}

/// Strings from the kernel or a trace file as the screen may show them (`\x1b`, not ESC).
fn safe(s: &str) -> String {
    crate::output::terminal_safe(s).into_owned()
}

/// One row of the vector table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub irq: u32,
    pub device: String,
    pub driver: String,
    pub kind: String,
    pub cpu: Option<u32>,
    pub vector: Option<u32>,
    /// What showed `cpu` and `vector` (`seed`, `vector tracepoint`, `migration`...).
    pub target_source: Option<&'static str>,
    /// The device's mask bit as the PCI core caches it.
    pub masked: Option<bool>,
    pub remap: Remap,
    pub last_event_ns: Option<u64>,
    /// Interrupts handled since the last resume (or since tracing started).
    pub count_delta: Option<u64>,
    pub status: Status,
    /// Rule ids of its divergences, e.g. `H1 H4`.
    pub rules: String,
}

impl Row {
    pub fn from_vector(v: &VectorState, epoch: u32, divs: &[&Divergence]) -> Row {
        let remap = if !v.is_hyperv() {
            Remap::NotHyperV
        } else {
            match (&v.last_compose, v.composed_msg) {
                (Some(c), _) if c.ok == Some(false) => Remap::Failed(c.epoch),
                (_, Some((_, _, _))) | (Some(_), None) => {
                    let e = v.last_compose.as_ref().map(|c| c.epoch).unwrap_or(0);
                    if e == epoch {
                        Remap::Composed(e)
                    } else {
                        Remap::Stale(e)
                    }
                }
                (None, None) => Remap::Never,
            }
        };
        let status = if divs.iter().any(|d| d.severity == Severity::Error) {
            Status::Diverged
        } else if !divs.is_empty() {
            Status::Warning
        } else if v.cache_masked == Some(true) && v.has_action() {
            // A masked vector nobody requested is just unused; one with a handler is not.
            Status::Masked
        } else {
            Status::Ok
        };
        let mut rules: Vec<String> = divs.iter().map(|d| d.rule.to_string()).collect();
        rules.sort();
        rules.dedup();
        let base = match (epoch, v.counts.before_suspend) {
            (e, Some(b)) if e > 0 => Some(b),
            _ => v.counts.first,
        };
        Row {
            irq: v.irq,
            device: v.device.as_deref().map_or_else(|| "?".into(), safe),
            driver: v.driver.as_deref().map(safe).unwrap_or_default(),
            kind: v.kind.to_string(),
            cpu: v.target.as_ref().and_then(|t| t.cpu),
            vector: v.target.as_ref().and_then(|t| t.vector),
            target_source: v.target.as_ref().map(|t| t.source.name()),
            masked: v.cache_masked,
            remap,
            last_event_ns: v.last_event_ts_ns,
            count_delta: v.counts.last.zip(base).map(|(l, b)| l.saturating_sub(b)),
            status,
            rules: rules.join(" "),
        }
    }
}

/// One line of the event log or of a vector's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub ts_ns: u64,
    pub cpu: u32,
    pub irq: Option<u32>,
    pub text: String,
    /// A gap in the recording (a suspend the tracer slept through, a loss).
    pub gap: bool,
}

/// One entry of the divergence panel.
#[derive(Clone, Debug, PartialEq)]
pub struct DivRow {
    pub rule: String,
    pub severity: Severity,
    pub irq: Option<u32>,
    pub device: String,
    pub epoch: u32,
    pub meaning: String,
    pub first_ts_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Diverged first, then warnings, masked, ok; IRQ within.
    Status,
    Irq,
    Device,
    /// Most recent event first.
    Recent,
    /// Most interrupts first.
    Count,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Status => "status",
            SortKey::Irq => "irq",
            SortKey::Device => "device",
            SortKey::Recent => "recent",
            SortKey::Count => "count",
        }
    }

    fn next(self) -> SortKey {
        match self {
            SortKey::Status => SortKey::Irq,
            SortKey::Irq => SortKey::Device,
            SortKey::Device => SortKey::Recent,
            SortKey::Recent => SortKey::Count,
            SortKey::Count => SortKey::Status,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    /// Diverged or warning.
    Problems,
    Masked,
    HyperV,
}

impl StatusFilter {
    pub fn name(self) -> &'static str {
        match self {
            StatusFilter::All => "all",
            StatusFilter::Problems => "problems",
            StatusFilter::Masked => "masked",
            StatusFilter::HyperV => "hyper-v",
        }
    }

    fn next(self) -> StatusFilter {
        match self {
            StatusFilter::All => StatusFilter::Problems,
            StatusFilter::Problems => StatusFilter::Masked,
            StatusFilter::Masked => StatusFilter::HyperV,
            StatusFilter::HyperV => StatusFilter::All,
        }
    }

    fn keeps(self, r: &Row) -> bool {
        match self {
            StatusFilter::All => true,
            StatusFilter::Problems => matches!(r.status, Status::Diverged | Status::Warning),
            StatusFilter::Masked => r.masked == Some(true),
            StatusFilter::HyperV => r.remap != Remap::NotHyperV,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    /// One vector: its state, its divergences with their evidence, its events.
    Detail(u32),
    /// Typing the device/driver/IRQ filter.
    Filter,
    Help,
    /// Why hooks are missing.
    Coverage,
}

/// Which panel the arrows move in, in the table screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Vectors,
    Divergences,
}

/// What a replayed file is doing.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayInfo {
    pub file: String,
    pub playing: bool,
    pub ended: bool,
    /// Events per redraw tick while playing.
    pub speed: u32,
}

/// What the loop must do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Replay: play or pause.
    PlayPause,
    /// Replay: apply one event.
    Step,
    /// Replay: apply events until the next new divergence.
    NextDivergence,
    /// Replay: back to the start of the file, paused.
    Rewind,
}

/// Header facts that do not come from the engine.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// `live` or the file name.
    pub name: String,
    pub kernel: String,
    pub hooks: Vec<ProbeStatus>,
}

pub struct App {
    pub source: Source,
    pub replay: Option<ReplayInfo>,
    pub phase: Phase,
    pub epoch: u32,
    pub origin_ns: u64,
    pub now_ns: u64,
    pub events: u64,
    pub events_per_s: f64,
    pub lost: u64,
    pub gaps: Vec<String>,
    /// Why the trace file stopped early (a write failed); the screen goes on without it.
    pub not_recording: Option<String>,
    rows: Vec<Row>,
    /// Indices into `rows` that pass the filters, in display order.
    view: Vec<usize>,
    pub divergences: Vec<DivRow>,
    /// The engine's divergences, kept for the detail view's evidence.
    pub full: Vec<Divergence>,
    pub log: VecDeque<LogLine>,
    /// Lines from the bottom of the log when not following.
    pub log_back: usize,
    pub follow: bool,
    history: HashMap<u32, VecDeque<LogLine>>,
    pub selected: usize,
    /// The cursor stays on the first row, the worst problem, until the user moves it off:
    /// a vector that diverges while the TUI is open sorts to the top, and following the
    /// selected vector down would scroll it off the screen.
    pub top_pinned: bool,
    pub div_selected: usize,
    pub detail_scroll: u16,
    pub sort: SortKey,
    pub filter: String,
    pub status_filter: StatusFilter,
    pub mode: Mode,
    /// The mode under the help or coverage overlay.
    under: Mode,
    pub focus: Focus,
    /// Rows of the table on screen (set by the renderer, for page keys).
    pub page: usize,
    pub error: Option<String>,
    /// Colours on screen (`--color`, NO_COLOR); without, styles keep only their modifiers.
    pub color: bool,
}

impl App {
    pub fn new(mut source: Source, replay: Option<ReplayInfo>) -> App {
        source.kernel = safe(&source.kernel);
        App {
            source,
            replay,
            phase: Phase::Running,
            epoch: 0,
            origin_ns: 0,
            now_ns: 0,
            events: 0,
            events_per_s: 0.0,
            lost: 0,
            gaps: Vec::new(),
            not_recording: None,
            rows: Vec::new(),
            view: Vec::new(),
            divergences: Vec::new(),
            full: Vec::new(),
            log: VecDeque::new(),
            log_back: 0,
            follow: true,
            history: HashMap::new(),
            selected: 0,
            top_pinned: true,
            div_selected: 0,
            detail_scroll: 0,
            sort: SortKey::Status,
            filter: String::new(),
            status_filter: StatusFilter::All,
            mode: Mode::Table,
            under: Mode::Table,
            focus: Focus::Vectors,
            page: 10,
            error: None,
            color: true,
        }
    }

    /// Hooks attached / hooks that could be (unused fallbacks do not count as missing).
    pub fn coverage(&self) -> (usize, usize) {
        let attached = self
            .source
            .hooks
            .iter()
            .filter(|h| h.status == HookStatus::Attached)
            .count();
        let expected = self
            .source
            .hooks
            .iter()
            .filter(|h| h.status != HookStatus::Unused)
            .count();
        (attached, expected)
    }

    /// Take an event into the log and its vector's history. Handler-count samples are not
    /// logged: they come every second and say nothing a row does not.
    pub fn push_event(&mut self, ev: &Event) {
        if matches!(ev.kind, EventKind::IrqCounts { .. }) {
            return;
        }
        let gap = matches!(ev.kind, EventKind::Gap { .. } | EventKind::Lost { .. });
        if let EventKind::Gap { reason } = &ev.kind {
            self.gaps.push(safe(reason));
        }
        let irq = crate::engine::event_irq(&ev.kind);
        let line = LogLine {
            ts_ns: ev.ts_ns,
            cpu: ev.cpu,
            irq,
            text: safe(&crate::event_text::describe(&ev.kind)),
            gap,
        };
        if let Some(irq) = irq {
            let h = self.history.entry(irq).or_default();
            if h.len() == HISTORY_CAP {
                h.pop_front();
            }
            h.push_back(line.clone());
        }
        if self.log.len() == LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(line);
        if !self.follow {
            self.log_back = (self.log_back + 1).min(self.log.len().saturating_sub(1));
        }
    }

    /// The trace file stopped (it cannot say so itself): in the log, highlighted, and in the
    /// header from then on.
    pub fn file_stopped(&mut self, text: &str, now_ns: u64) {
        self.not_recording = Some(safe(text));
        if self.log.len() == LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(LogLine {
            ts_ns: now_ns,
            cpu: 0,
            irq: None,
            text: safe(&format!("notice: {text}")),
            gap: true,
        });
    }

    /// Rebuild rows and divergences from the engine (at redraw time, not per event).
    pub fn refresh(&mut self, engine: &Engine) {
        let st = engine.state();
        self.phase = st.phase;
        self.epoch = st.epoch;
        self.origin_ns = engine.origin_ns();
        self.now_ns = st.now_ns;
        self.events = st.events;
        self.lost = engine.losses().total;
        self.full = engine.divergences().to_vec();
        let mut by_irq: HashMap<u32, Vec<&Divergence>> = HashMap::new();
        for d in &self.full {
            let irqs: Vec<u32> = if d.irqs.is_empty() {
                d.irq.into_iter().collect()
            } else {
                d.irqs.clone()
            };
            for irq in irqs {
                by_irq.entry(irq).or_default().push(d);
            }
        }
        self.rows = st
            .vectors
            .values()
            .map(|v| {
                let divs = by_irq.get(&v.irq).map(Vec::as_slice).unwrap_or(&[]);
                Row::from_vector(v, st.epoch, divs)
            })
            .collect();
        let mut divs: Vec<DivRow> = self
            .full
            .iter()
            .map(|d| DivRow {
                rule: d.rule.to_string(),
                severity: d.severity,
                irq: d.irq,
                device: d.device.as_deref().map(safe).unwrap_or_default(),
                epoch: d.epoch,
                meaning: safe(&d.meaning),
                first_ts_ns: d.first_ts_ns,
            })
            .collect();
        // Errors first, then in the order they were found.
        divs.sort_by_key(|d| (d.severity != Severity::Error, d.first_ts_ns));
        self.divergences = divs;
        self.div_selected = self
            .div_selected
            .min(self.divergences.len().saturating_sub(1));
        self.rows_changed();
    }

    /// After the rows were rebuilt: the cursor keeps its vector, or the top when pinned.
    fn rows_changed(&mut self) {
        let keep = if self.top_pinned {
            self.selected = 0;
            None
        } else {
            self.selected_irq()
        };
        self.rebuild_view(keep);
    }

    /// Rows as shown, after filter and sort.
    pub fn visible(&self) -> impl Iterator<Item = &Row> {
        self.view.iter().map(|&i| &self.rows[i])
    }

    pub fn visible_len(&self) -> usize {
        self.view.len()
    }

    pub fn total_rows(&self) -> usize {
        self.rows.len()
    }

    pub fn selected_irq(&self) -> Option<u32> {
        self.view.get(self.selected).map(|&i| self.rows[i].irq)
    }

    pub fn row(&self, irq: u32) -> Option<&Row> {
        self.rows.iter().find(|r| r.irq == irq)
    }

    pub fn history(&self, irq: u32) -> impl Iterator<Item = &LogLine> {
        self.history.get(&irq).into_iter().flatten()
    }

    /// The divergences concerning one vector.
    pub fn divergences_of(&self, irq: u32) -> impl Iterator<Item = &Divergence> {
        self.full
            .iter()
            .filter(move |d| d.irq == Some(irq) || d.irqs.contains(&irq))
    }

    /// Seconds since the first event, for timestamps on screen.
    pub fn rel(&self, ts_ns: u64) -> String {
        secs(ts_ns.saturating_sub(self.origin_ns))
    }

    fn rebuild_view(&mut self, keep: Option<u32>) {
        let needle = self.filter.to_lowercase();
        let mut view: Vec<usize> = (0..self.rows.len())
            .filter(|&i| {
                let r = &self.rows[i];
                self.status_filter.keeps(r)
                    && (needle.is_empty()
                        || r.device.to_lowercase().contains(&needle)
                        || r.driver.to_lowercase().contains(&needle)
                        || r.irq.to_string() == needle)
            })
            .collect();
        let rows = &self.rows;
        match self.sort {
            SortKey::Status => view.sort_by_key(|&i| (rows[i].status, rows[i].irq)),
            SortKey::Irq => view.sort_by_key(|&i| rows[i].irq),
            SortKey::Device => view.sort_by(|&a, &b| {
                (&rows[a].device, rows[a].irq).cmp(&(&rows[b].device, rows[b].irq))
            }),
            SortKey::Recent => view.sort_by_key(|&i| {
                (
                    std::cmp::Reverse(rows[i].last_event_ns.unwrap_or(0)),
                    rows[i].irq,
                )
            }),
            SortKey::Count => view.sort_by_key(|&i| {
                (
                    std::cmp::Reverse(rows[i].count_delta.unwrap_or(0)),
                    rows[i].irq,
                )
            }),
        }
        self.view = view;
        self.selected = keep
            .and_then(|irq| self.view.iter().position(|&i| self.rows[i].irq == irq))
            .unwrap_or(self.selected)
            .min(self.view.len().saturating_sub(1));
    }

    /// Select a vector by IRQ (clearing filters that hide it).
    pub fn select_irq(&mut self, irq: u32) {
        if !self.view.iter().any(|&i| self.rows[i].irq == irq) {
            self.filter.clear();
            self.status_filter = StatusFilter::All;
        }
        self.rebuild_view(Some(irq));
        self.top_pinned = self.selected == 0;
    }

    fn move_by(&mut self, delta: isize) {
        match self.focus {
            Focus::Vectors => {
                let n = self.view.len();
                if n > 0 {
                    self.selected =
                        (self.selected as isize + delta).clamp(0, n as isize - 1) as usize;
                }
                self.top_pinned = self.selected == 0;
            }
            Focus::Divergences => {
                let n = self.divergences.len();
                if n > 0 {
                    self.div_selected =
                        (self.div_selected as isize + delta).clamp(0, n as isize - 1) as usize;
                }
            }
        }
    }

    /// What a key does in the current mode.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match self.mode {
            Mode::Help | Mode::Coverage => {
                self.mode = self.under;
                Action::None
            }
            Mode::Filter => {
                match k.code {
                    KeyCode::Enter => self.mode = Mode::Table,
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Table;
                    }
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) => self.filter.push(c),
                    _ => {}
                }
                self.rows_changed();
                Action::None
            }
            Mode::Detail(_) => match k.code {
                KeyCode::Esc | KeyCode::Char('q') | KeyCode::Backspace | KeyCode::Left => {
                    self.mode = Mode::Table;
                    Action::None
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    self.detail_scroll = self.detail_scroll.saturating_add(1);
                    Action::None
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    self.detail_scroll = self.detail_scroll.saturating_sub(1);
                    Action::None
                }
                KeyCode::PageDown => {
                    self.detail_scroll = self.detail_scroll.saturating_add(10);
                    Action::None
                }
                KeyCode::PageUp => {
                    self.detail_scroll = self.detail_scroll.saturating_sub(10);
                    Action::None
                }
                KeyCode::Char('?') => self.overlay(Mode::Help),
                _ => self.replay_key(k.code),
            },
            Mode::Table => match k.code {
                KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
                KeyCode::Down | KeyCode::Char('j') => {
                    self.move_by(1);
                    Action::None
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    self.move_by(-1);
                    Action::None
                }
                KeyCode::PageDown => {
                    self.move_by(self.page.max(1) as isize);
                    Action::None
                }
                KeyCode::PageUp => {
                    self.move_by(-(self.page.max(1) as isize));
                    Action::None
                }
                KeyCode::Home | KeyCode::Char('g') => {
                    self.move_by(isize::MIN / 2);
                    Action::None
                }
                KeyCode::End | KeyCode::Char('G') => {
                    self.move_by(isize::MAX / 2);
                    Action::None
                }
                KeyCode::Tab => {
                    self.focus = match self.focus {
                        Focus::Vectors if !self.divergences.is_empty() => Focus::Divergences,
                        _ => Focus::Vectors,
                    };
                    Action::None
                }
                KeyCode::Enter | KeyCode::Right => {
                    let irq = match self.focus {
                        Focus::Vectors => self.selected_irq(),
                        Focus::Divergences => {
                            self.divergences.get(self.div_selected).and_then(|d| d.irq)
                        }
                    };
                    if let Some(irq) = irq {
                        self.select_irq(irq);
                        self.detail_scroll = 0;
                        self.mode = Mode::Detail(irq);
                    }
                    Action::None
                }
                KeyCode::Char('/') => {
                    self.mode = Mode::Filter;
                    Action::None
                }
                KeyCode::Char('s') => {
                    self.sort = self.sort.next();
                    self.rows_changed();
                    Action::None
                }
                KeyCode::Char('f') => {
                    self.status_filter = self.status_filter.next();
                    self.rows_changed();
                    Action::None
                }
                KeyCode::Char('?') => self.overlay(Mode::Help),
                KeyCode::Char('c') => self.overlay(Mode::Coverage),
                _ => self.replay_key(k.code),
            },
        }
    }

    fn overlay(&mut self, m: Mode) -> Action {
        self.under = self.mode;
        self.mode = m;
        Action::None
    }

    /// `p` pauses the log when live and plays/pauses a replay; the replay's own keys.
    fn replay_key(&mut self, code: KeyCode) -> Action {
        match (self.replay.is_some(), code) {
            (false, KeyCode::Char('p')) => {
                self.follow = !self.follow;
                self.log_back = 0;
                Action::None
            }
            (true, KeyCode::Char('p') | KeyCode::Char(' ')) => Action::PlayPause,
            (true, KeyCode::Char('n')) => Action::Step,
            (true, KeyCode::Char('d')) => Action::NextDivergence,
            (true, KeyCode::Char('r')) => Action::Rewind,
            (true, KeyCode::Char('+')) => {
                if let Some(r) = &mut self.replay {
                    r.speed = (r.speed * 2).min(1 << 16);
                }
                Action::None
            }
            (true, KeyCode::Char('-')) => {
                if let Some(r) = &mut self.replay {
                    r.speed = (r.speed / 2).max(1);
                }
                Action::None
            }
            _ => Action::None,
        }
    }

    /// Forget the log and history (a replay rewound to its start).
    pub fn clear_log(&mut self) {
        self.log.clear();
        self.history.clear();
        self.gaps.clear();
        self.log_back = 0;
    }

    /// The footer's keys for the current mode.
    pub fn footer(&self) -> &'static str {
        match (self.mode, self.replay.is_some()) {
            (Mode::Table, false) => {
                "q quit  ↑↓/jk move  Enter detail  Tab panel  / filter  f status  s sort  p pause log  c hooks  ? help"
            }
            (Mode::Table, true) => {
                "q quit  ↑↓/jk move  Enter detail  p play/pause  n step  d next divergence  r rewind  / filter  s sort  ? help"
            }
            (Mode::Detail(_), _) => "Esc/q back  ↑↓/jk scroll  PgUp/PgDn page  ? help",
            (Mode::Filter, _) => "type device, driver or IRQ  Enter keep  Esc clear",
            (Mode::Help | Mode::Coverage, _) => "any key: back",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::seed::{Seed, SeedVector};

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn row(irq: u32, device: &str, status: Status, count: u64) -> Row {
        Row {
            irq,
            device: device.into(),
            driver: "drv".into(),
            kind: "MSI-X 0".into(),
            cpu: Some(0),
            vector: None,
            target_source: Some("seed"),
            masked: Some(status == Status::Masked),
            remap: Remap::NotHyperV,
            last_event_ns: Some(irq as u64),
            count_delta: Some(count),
            status,
            rules: String::new(),
        }
    }

    fn app(rows: Vec<Row>) -> App {
        let mut a = App::new(Source::default(), None);
        a.rows = rows;
        a.rebuild_view(None);
        a
    }

    fn irqs(a: &App) -> Vec<u32> {
        a.visible().map(|r| r.irq).collect()
    }

    #[test]
    fn a_vector_that_diverges_live_takes_the_cursor_until_the_user_moves_it() {
        let mut a = app(vec![
            row(24, "0000:00:01.0", Status::Ok, 5),
            row(30, "0000:00:02.0", Status::Masked, 0),
        ]);
        assert_eq!(a.selected_irq(), Some(30));
        a.rows.push(row(38, "0000:00:03.0", Status::Diverged, 0));
        a.rows_changed();
        assert_eq!(
            a.selected_irq(),
            Some(38),
            "the new problem is on top, and selected"
        );
        a.key(key(KeyCode::Down));
        assert_eq!(a.selected_irq(), Some(30));
        a.rows.push(row(39, "0000:00:03.0", Status::Diverged, 0));
        a.rows_changed();
        assert_eq!(irqs(&a), [38, 39, 30, 24]);
        assert_eq!(
            a.selected_irq(),
            Some(30),
            "moved off the top: it follows its vector"
        );
        a.key(key(KeyCode::Home));
        a.rows.push(row(37, "0000:00:03.0", Status::Diverged, 0));
        a.rows_changed();
        assert_eq!(a.selected_irq(), Some(37), "back on top: pinned again");
    }

    #[test]
    fn diverged_vectors_sort_first_and_selection_follows_the_vector() {
        let mut a = app(vec![
            row(30, "0000:00:01.0", Status::Ok, 5),
            row(38, "0000:00:02.0", Status::Diverged, 0),
            row(35, "0000:00:03.0", Status::Masked, 9),
            row(39, "0000:00:02.0", Status::Warning, 1),
        ]);
        assert_eq!(irqs(&a), [38, 39, 35, 30]);
        a.key(key(KeyCode::Down));
        a.key(key(KeyCode::Char('j')));
        assert_eq!(a.selected_irq(), Some(35));
        a.key(key(KeyCode::Char('s')));
        assert_eq!(a.sort, SortKey::Irq);
        assert_eq!(irqs(&a), [30, 35, 38, 39]);
        assert_eq!(
            a.selected_irq(),
            Some(35),
            "the selection stays on its vector"
        );
        a.key(key(KeyCode::Char('s')));
        a.key(key(KeyCode::Char('s')));
        assert_eq!(a.sort, SortKey::Recent);
        assert_eq!(irqs(&a), [39, 38, 35, 30]);
        a.key(key(KeyCode::Char('s')));
        assert_eq!(irqs(&a), [35, 30, 39, 38]);
        a.key(key(KeyCode::End));
        assert_eq!(a.selected_irq(), Some(38));
        a.key(key(KeyCode::Home));
        a.key(key(KeyCode::Up));
        assert_eq!(a.selected_irq(), Some(35));
    }

    #[test]
    fn filters_by_text_and_status() {
        let mut a = app(vec![
            row(30, "0000:00:01.0", Status::Ok, 5),
            row(38, "0000:00:02.0", Status::Diverged, 0),
            row(39, "0000:00:02.0", Status::Warning, 1),
        ]);
        a.key(key(KeyCode::Char('/')));
        assert_eq!(a.mode, Mode::Filter);
        for c in "02.0".chars() {
            a.key(key(KeyCode::Char(c)));
        }
        assert_eq!(irqs(&a), [38, 39]);
        a.key(key(KeyCode::Enter));
        assert_eq!(a.mode, Mode::Table);
        assert_eq!(a.filter, "02.0");
        a.key(key(KeyCode::Char('/')));
        a.key(key(KeyCode::Esc));
        assert_eq!(irqs(&a), [38, 39, 30]);
        a.key(key(KeyCode::Char('f')));
        assert_eq!(a.status_filter, StatusFilter::Problems);
        assert_eq!(irqs(&a), [38, 39]);
        a.key(key(KeyCode::Char('/')));
        a.key(key(KeyCode::Char('3')));
        a.key(key(KeyCode::Char('0')));
        assert!(irqs(&a).is_empty());
        assert_eq!(a.selected_irq(), None);
        a.key(key(KeyCode::Enter));
        // Selecting a hidden vector (from the divergence panel) clears what hides it.
        a.select_irq(30);
        assert_eq!(a.selected_irq(), Some(30));
        assert_eq!(a.status_filter, StatusFilter::All);
    }

    #[test]
    fn modes_and_their_keys() {
        let mut a = app(vec![row(38, "0000:00:02.0", Status::Diverged, 0)]);
        assert_eq!(a.key(key(KeyCode::Enter)), Action::None);
        assert_eq!(a.mode, Mode::Detail(38));
        assert!(a.footer().contains("Esc/q back"));
        a.key(key(KeyCode::Char('j')));
        assert_eq!(a.detail_scroll, 1);
        a.key(key(KeyCode::Char('?')));
        assert_eq!(a.mode, Mode::Help);
        a.key(key(KeyCode::Char('x')));
        assert_eq!(
            a.mode,
            Mode::Detail(38),
            "help returns to where it was opened"
        );
        a.key(key(KeyCode::Esc));
        assert_eq!(a.mode, Mode::Table);
        a.key(key(KeyCode::Char('p')));
        assert!(!a.follow, "p pauses the live log");
        a.key(key(KeyCode::Char('c')));
        assert_eq!(a.mode, Mode::Coverage);
        a.key(key(KeyCode::Esc));
        assert_eq!(a.key(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(
            a.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );

        let mut r = App::new(
            Source::default(),
            Some(ReplayInfo {
                file: "t".into(),
                playing: false,
                ended: false,
                speed: 8,
            }),
        );
        assert_eq!(r.key(key(KeyCode::Char('p'))), Action::PlayPause);
        assert_eq!(r.key(key(KeyCode::Char('n'))), Action::Step);
        assert_eq!(r.key(key(KeyCode::Char('d'))), Action::NextDivergence);
        assert_eq!(r.key(key(KeyCode::Char('r'))), Action::Rewind);
        r.key(key(KeyCode::Char('+')));
        assert_eq!(r.replay.as_ref().map(|x| x.speed), Some(16));
        assert!(r.footer().contains("d next divergence"));
    }

    #[test]
    fn rows_come_from_the_engine_and_the_log_is_bounded() {
        let seed = Seed {
            vectors: vec![SeedVector {
                irq: 40,
                device: Some("0000:00:05.0".into()),
                ..SeedVector::default()
            }],
            ..Seed::default()
        };
        let engine = Engine::new(EngineConfig::new(
            "6.12",
            EngineConfig::all_probes_attached(),
            seed,
        ));
        let mut a = App::new(Source::default(), None);
        a.refresh(&engine);
        assert_eq!(irqs(&a), [40]);
        assert_eq!(a.row(40).map(|r| r.status), Some(Status::Ok));
        for i in 0..(LOG_CAP + 10) as u64 {
            a.push_event(&Event {
                ts_ns: i,
                cpu: 0,
                tgid: 0,
                kind: EventKind::MigrateOneIrq { irq: 40 },
            });
        }
        assert_eq!(a.log.len(), LOG_CAP);
        assert_eq!(a.history(40).count(), HISTORY_CAP);
        a.push_event(&Event {
            ts_ns: 1,
            cpu: 0,
            tgid: 0,
            kind: EventKind::Gap {
                reason: "suspended".into(),
            },
        });
        assert!(a.log.back().is_some_and(|l| l.gap));
        assert_eq!(a.gaps, ["suspended"]);
    }
}
