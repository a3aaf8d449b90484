//! Drawing only: one frame from an [`App`]. Sixteen colours (the named ANSI ones) or none
//! (`--color never`, NO_COLOR), and every status is also a word, so the screen reads on a
//! 16-colour terminal, in a capture, without colour, or to someone who does not see the colours.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Margin, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{
        Block, Cell, Clear, Paragraph, Row as TRow, Scrollbar, ScrollbarOrientation,
        ScrollbarState, Table, TableState, Wrap,
    },
};

use crate::engine::Severity;
use crate::output::acts_on_terminal;
use crate::probes::Status as HookStatus;

use super::app::{App, Focus, LogLine, Mode, Remap, Row, Status};

fn status_style(s: Status) -> Style {
    match s {
        Status::Diverged => Style::new()
            .fg(Color::White)
            .bg(Color::Red)
            .add_modifier(Modifier::BOLD),
        Status::Warning => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        Status::Masked => Style::new().fg(Color::Magenta),
        Status::Ok => Style::new().fg(Color::Green),
    }
}

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Error => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Warning => Style::new().fg(Color::Yellow),
    }
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "ERROR",
        Severity::Warning => "warn",
    }
}

/// The table's columns, most important first: at 80 columns the last ones drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Irq,
    Status,
    Device,
    Mask,
    Remap,
    Rules,
    Driver,
    Kind,
    Delta,
    Age,
    Cpu,
    Vector,
}

const PRIORITY: [Col; 12] = [
    Col::Irq,
    Col::Status,
    Col::Device,
    Col::Mask,
    Col::Remap,
    Col::Rules,
    Col::Driver,
    Col::Kind,
    Col::Delta,
    Col::Age,
    Col::Cpu,
    Col::Vector,
];

/// Left to right on screen.
const ORDER: [Col; 12] = [
    Col::Irq,
    Col::Status,
    Col::Device,
    Col::Driver,
    Col::Kind,
    Col::Cpu,
    Col::Vector,
    Col::Mask,
    Col::Remap,
    Col::Age,
    Col::Delta,
    Col::Rules,
];

impl Col {
    fn title(self) -> &'static str {
        match self {
            Col::Irq => "IRQ",
            Col::Status => "STATUS",
            Col::Device => "DEVICE",
            Col::Driver => "DRIVER",
            Col::Kind => "MSI",
            Col::Cpu => "CPU",
            Col::Vector => "VEC",
            Col::Mask => "MASK",
            Col::Remap => "REMAP",
            Col::Age => "AGE",
            Col::Delta => "IRQS",
            Col::Rules => "RULES",
        }
    }

    fn width(self) -> u16 {
        match self {
            Col::Irq => 5,
            Col::Status => 8,
            Col::Device => 12,
            Col::Driver => 10,
            Col::Kind => 9,
            Col::Cpu => 3,
            Col::Vector => 4,
            Col::Mask => 6,
            Col::Remap => 9,
            Col::Age => 7,
            Col::Delta => 7,
            Col::Rules => 8,
        }
    }

    fn cell(self, r: &Row, app: &App) -> Cell<'static> {
        let opt = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
        match self {
            Col::Irq => Cell::from(r.irq.to_string()),
            Col::Status => Cell::from(r.status.badge()).style(status_style(r.status)),
            Col::Device => Cell::from(r.device.clone()),
            Col::Driver => Cell::from(r.driver.clone()),
            Col::Kind => Cell::from(r.kind.clone()),
            Col::Cpu => Cell::from(opt(r.cpu)),
            Col::Vector => Cell::from(opt(r.vector)),
            Col::Mask => match r.masked {
                Some(true) => Cell::from("MASKED").style(Style::new().fg(Color::Magenta)),
                Some(false) => Cell::from("open"),
                None => Cell::from("?"),
            },
            Col::Remap => {
                let style = match r.remap {
                    Remap::Stale(_) | Remap::Failed(_) => {
                        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
                    }
                    _ => Style::new(),
                };
                Cell::from(r.remap.text()).style(style)
            }
            Col::Age => Cell::from(
                r.last_event_ns
                    .map(|t| crate::duration::age(app.now_ns.saturating_sub(t)))
                    .unwrap_or_else(|| "-".into()),
            ),
            Col::Delta => Cell::from(
                r.count_delta
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            Col::Rules => Cell::from(r.rules.clone()).style(Style::new().fg(Color::Red)),
        }
    }
}

/// The columns that fit in `width`, in screen order.
fn columns(width: u16) -> Vec<Col> {
    let mut used = 0u16;
    let mut keep = Vec::new();
    for c in PRIORITY {
        let w = c.width() + 1;
        if used + w > width && !keep.is_empty() {
            continue;
        }
        used += w;
        keep.push(c);
    }
    ORDER.into_iter().filter(|c| keep.contains(c)).collect()
}

pub fn draw(f: &mut Frame, app: &mut App) {
    let area = f.area();
    match app.mode {
        Mode::Detail(irq) => {
            let [header, body, footer] = Layout::vertical([
                Constraint::Length(2),
                Constraint::Min(3),
                Constraint::Length(1),
            ])
            .areas(area);
            draw_header(f, app, header);
            draw_detail(f, app, irq, body);
            draw_footer(f, app, footer);
        }
        _ => {
            draw_main(f, app, area);
            match app.mode {
                Mode::Help => draw_help(f, app, area),
                Mode::Coverage => draw_coverage(f, app, area),
                _ => {}
            }
        }
    }
    // ratatui writes a cell's symbol to the terminal as it is: an escape sequence in a device
    // name or a crafted trace would act there. The App's strings are escaped where they come
    // in (terminal_safe); this holds for every widget, whatever it was given. A cell is one
    // character wide, so a tab or line break in one is as wrong as an escape.
    for cell in f.buffer_mut().content.iter_mut() {
        if cell
            .symbol()
            .chars()
            .any(|c| c.is_control() || acts_on_terminal(c))
        {
            cell.set_symbol("?");
        }
    }
    if !app.color {
        monochrome(f.buffer_mut());
    }
}

/// The frame without colours (`--color never`, NO_COLOR), decided here once for every widget.
/// Bold, underline and reverse stay: the cursor is reverse video. A background colour marks
/// something that must stand out (a DIVERGED status, the footer, the filter prompt), so it
/// becomes reverse video; the status words carry the rest.
fn monochrome(buf: &mut ratatui::buffer::Buffer) {
    for cell in buf.content.iter_mut() {
        if cell.bg != Color::Reset {
            cell.modifier.insert(Modifier::REVERSED);
        }
        cell.fg = Color::Reset;
        cell.bg = Color::Reset;
    }
}

fn draw_main(f: &mut Frame, app: &mut App, area: Rect) {
    // At 24 rows: 2 header, 1 footer, the rest shared; the table keeps at least 6 rows.
    let divs = if app.divergences.is_empty() {
        3
    } else {
        (app.divergences.len() as u16 + 2)
            .min(area.height / 4)
            .max(3)
    };
    let log = (area.height / 5).clamp(3, 12);
    let [header, table, div_area, log_area, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(6),
        Constraint::Length(divs),
        Constraint::Length(log),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, app, header);
    draw_table(f, app, table);
    draw_divergences(f, app, div_area);
    draw_log(f, app, log_area);
    draw_footer(f, app, footer);
}

fn draw_header(f: &mut Frame, app: &App, area: Rect) {
    let (attached, expected) = app.coverage();
    let hooks_style = if attached < expected {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new().fg(Color::Green)
    };
    let hooks = format!("hooks {attached}/{expected}");
    let kernel = format!(" (c)  kernel {}", app.source.kernel);
    let source = match &app.replay {
        Some(r) => {
            let state = if r.ended {
                "end of file"
            } else if r.playing {
                "playing"
            } else {
                "paused"
            };
            let rest = format!(" [{state} x{}]", r.speed);
            // The file name gives way first, so that the kernel still shows at 80 columns.
            let fixed = "msitrace replay ".len() + rest.len() + 2 + hooks.len() + kernel.len();
            let room = usize::from(area.width).saturating_sub(fixed).clamp(12, 26);
            format!("replay {}{rest}", short(&r.file, room))
        }
        None => "live".to_string(),
    };
    // The kernel goes last: on a terminal narrower still, it is what gets cut.
    let line1 = Line::from(vec![
        Span::styled("msitrace ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{source}  ")),
        Span::styled(hooks, hooks_style),
        Span::raw(kernel),
    ]);
    let problems = app
        .divergences
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let rate = if app.replay.is_some() {
        String::new()
    } else {
        format!(" ({:.0}/s)", app.events_per_s)
    };
    let mut spans = vec![
        Span::raw(format!(
            "phase {}  epoch {}  events {}{rate}  ",
            app.phase.name(),
            app.epoch,
            app.events,
        )),
        Span::styled(
            format!("lost {}", app.lost),
            if app.lost > 0 {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            },
        ),
    ];
    if app.not_recording.is_some() {
        spans.push(Span::styled(
            "  NOT RECORDING",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if !app.gaps.is_empty() {
        spans.push(Span::styled(
            format!("  GAP x{}", app.gaps.len()),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    if problems > 0 {
        spans.push(Span::styled(
            format!("  {problems} DIVERGED"),
            status_style(Status::Diverged),
        ));
    }
    f.render_widget(Paragraph::new(vec![line1, Line::from(spans)]), area);
}

fn short(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(count - (n - 1)).collect();
        format!("…{tail}")
    }
}

fn draw_table(f: &mut Frame, app: &mut App, area: Rect) {
    let inner_width = area.width.saturating_sub(3);
    let cols = columns(inner_width);
    let title = format!(
        " vectors {}/{}  sort:{}  filter:{}{} ",
        app.visible_len(),
        app.total_rows(),
        app.sort.name(),
        app.status_filter.name(),
        if app.filter.is_empty() {
            String::new()
        } else {
            format!(" /{}", app.filter)
        }
    );
    let focused = app.focus == Focus::Vectors && app.mode != Mode::Filter;
    let block = Block::bordered().title(title).border_style(if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    });
    let visible_rows = area.height.saturating_sub(3) as usize;
    app.page = visible_rows.max(1);
    // Only the rows on screen are built: a frame costs the same with 10 or 10,000 vectors.
    let selected = app.selected;
    let start = selected.saturating_sub(visible_rows.saturating_sub(1));
    let rows: Vec<TRow> = app
        .visible()
        .skip(start)
        .take(visible_rows)
        .map(|r| TRow::new(cols.iter().map(|c| c.cell(r, app))))
        .collect();
    let header = TRow::new(cols.iter().map(|c| c.title()))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|c| match c {
            Col::Device | Col::Rules => Constraint::Min(c.width()),
            _ => Constraint::Length(c.width()),
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶");
    let mut state = TableState::default();
    if app.visible_len() > 0 {
        state.select(Some(selected - start));
    }
    f.render_stateful_widget(table, area, &mut state);
    if app.visible_len() > visible_rows {
        let mut sb = ScrollbarState::new(app.visible_len()).position(selected);
        f.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight),
            area.inner(Margin {
                vertical: 1,
                horizontal: 0,
            }),
            &mut sb,
        );
    }
    if app.mode == Mode::Filter {
        let line = Line::from(vec![
            Span::styled(" filter: ", Style::new().fg(Color::Black).bg(Color::Cyan)),
            Span::raw(format!("{}▏", app.filter)),
        ]);
        let y = area.y + area.height.saturating_sub(1);
        f.render_widget(
            Paragraph::new(line),
            Rect::new(area.x + 1, y, area.width.saturating_sub(2), 1),
        );
    }
}

fn draw_divergences(f: &mut Frame, app: &App, area: Rect) {
    let focused = app.focus == Focus::Divergences;
    let block = Block::bordered()
        .title(format!(
            " divergences {} (Tab, Enter) ",
            app.divergences.len()
        ))
        .border_style(if focused {
            Style::new().fg(Color::Cyan)
        } else {
            Style::new()
        });
    if app.divergences.is_empty() {
        f.render_widget(
            Paragraph::new("none: every vector's state is consistent so far").block(block),
            area,
        );
        return;
    }
    let rows_fit = area.height.saturating_sub(2) as usize;
    let start = if focused {
        app.div_selected.saturating_sub(rows_fit.saturating_sub(1))
    } else {
        0
    };
    let lines: Vec<Line> = app
        .divergences
        .iter()
        .enumerate()
        .skip(start)
        .take(rows_fit)
        .map(|(i, d)| {
            let mut l = Line::from(vec![
                Span::styled(
                    format!("{:<6}", severity_word(d.severity)),
                    severity_style(d.severity),
                ),
                Span::styled(
                    format!("{:<3} ", d.rule),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(
                    "irq {:<4} ep{} {} ",
                    d.irq.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                    d.epoch,
                    d.device
                )),
                Span::raw(d.meaning.clone()),
            ]);
            if focused && i == app.div_selected {
                l = l.style(Style::new().add_modifier(Modifier::REVERSED));
            }
            l
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn log_line(app: &App, l: &LogLine) -> Line<'static> {
    let t = Span::styled(
        format!("{:>12} c{} ", app.rel(l.ts_ns), l.cpu),
        Style::new().fg(Color::DarkGray),
    );
    if l.gap {
        Line::from(vec![
            t,
            Span::styled(
                format!("GAP {}", l.text),
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            ),
        ])
    } else {
        Line::from(vec![t, Span::raw(l.text.clone())])
    }
}

fn draw_log(f: &mut Frame, app: &App, area: Rect) {
    let n = area.height.saturating_sub(2) as usize;
    let end = app
        .log
        .len()
        .saturating_sub(if app.follow { 0 } else { app.log_back });
    let start = end.saturating_sub(n);
    let lines: Vec<Line> = app
        .log
        .range(start..end)
        .map(|l| log_line(app, l))
        .collect();
    let title = if app.follow {
        " events (following; p pauses) ".to_string()
    } else {
        format!(" events (PAUSED, {} newer; p follows) ", app.log_back)
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn draw_footer(f: &mut Frame, app: &App, area: Rect) {
    f.render_widget(
        Paragraph::new(app.footer()).style(Style::new().fg(Color::Black).bg(Color::Gray)),
        area,
    );
}

fn draw_detail(f: &mut Frame, app: &App, irq: u32, area: Rect) {
    let mut lines: Vec<Line> = Vec::new();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    match app.row(irq) {
        Some(r) => {
            lines.push(Line::from(vec![
                Span::styled(format!("irq {irq} "), bold),
                Span::styled(r.status.badge(), status_style(r.status)),
                Span::raw(format!(
                    "  {} {} {}",
                    r.device,
                    if r.driver.is_empty() { "-" } else { &r.driver },
                    r.kind
                )),
            ]));
            lines.push(Line::from(format!(
                "cpu {}  vector {}{}  device mask {}  remap {}  irqs since resume/start {}",
                r.cpu.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                r.vector
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into()),
                r.target_source
                    .map(|s| format!(" (from {s})"))
                    .unwrap_or_default(),
                match r.masked {
                    Some(true) => "MASKED",
                    Some(false) => "open",
                    None => "?",
                },
                r.remap.text(),
                r.count_delta
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into()),
            )));
        }
        None => lines.push(Line::from(format!(
            "irq {irq}: no longer known to the engine"
        ))),
    }
    lines.push(Line::from(""));
    let mut any = false;
    for d in app.divergences_of(irq) {
        any = true;
        lines.push(Line::from(vec![
            Span::styled(
                format!("{} {} ", severity_word(d.severity), d.rule),
                severity_style(d.severity),
            ),
            Span::styled(format!("epoch {} ", d.epoch), bold),
            Span::raw(d.meaning.clone()),
        ]));
        lines.push(Line::from(format!(
            "  cause: {}  x{}",
            d.cause, d.occurrences
        )));
        lines.push(Line::styled("  evidence:", bold));
        for e in &d.evidence {
            lines.push(Line::from(format!(
                "  {:>12} {} {}  {}",
                app.rel(e.ts_ns),
                e.cpu
                    .map(|c| format!("c{c}"))
                    .unwrap_or_else(|| "  ".into()),
                e.event,
                e.detail
            )));
        }
        if d.evidence_dropped > 0 {
            lines.push(Line::from(format!(
                "  … {} more not kept",
                d.evidence_dropped
            )));
        }
    }
    if !any {
        lines.push(Line::from("no divergence for this vector"));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled("events of this vector (latest last):", bold));
    for l in app.history(irq) {
        lines.push(log_line(app, l));
    }
    let block = Block::bordered().title(format!(" vector {irq} "));
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.detail_scroll, 0)),
        area,
    );
}

fn overlay_area(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn draw_help(f: &mut Frame, app: &App, area: Rect) {
    let mut text = vec![
        "↑ ↓  j k     move;  PgUp PgDn  Home End (g G)",
        "Enter        the vector's detail: state, divergences, evidence",
        "Tab          switch between vectors and divergences",
        "/            filter by device, driver or IRQ; Esc clears",
        "f            status filter: all, problems, masked, hyper-v",
        "s            sort: status, irq, device, recent, count",
        "c            hooks: attached, and why the others are not",
        "q Esc        quit (back, in a detail)",
    ];
    if app.replay.is_some() {
        text.extend([
            "p space      play / pause the file",
            "n            one event",
            "d            to the next divergence",
            "r            rewind;  + -  speed",
        ]);
    } else {
        text.push("p            pause / follow the event log");
    }
    text.extend([
        "",
        "STATUS: DIVERGED = an error-level rule fired (no more interrupts",
        "expected); WARN = a warning rule; masked = device mask set; ok.",
        "REMAP: Hyper-V compose in this resume epoch (ok epN), STALE or FAIL.",
    ]);
    let r = overlay_area(area, 74, text.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text.into_iter().map(Line::from).collect::<Vec<_>>())
            .block(Block::bordered().title(" help (any key) ")),
        r,
    );
}

fn draw_coverage(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = Vec::new();
    for h in &app.source.hooks {
        if h.status == HookStatus::Attached {
            continue;
        }
        lines.push(Line::from(vec![
            Span::styled(
                format!("{:<8} ", format!("{:?}", h.status).to_lowercase()),
                Style::new().fg(Color::Yellow),
            ),
            Span::styled(
                format!("{} ", h.hook),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(h.reason.clone().unwrap_or_default()),
        ]));
        if !h.rules_losing_input.is_empty() {
            lines.push(Line::from(format!(
                "         rules losing input: {}",
                h.rules_losing_input.join(" ")
            )));
        }
    }
    if lines.is_empty() {
        lines.push(Line::from("every hook is attached"));
    }
    let (a, e) = app.coverage();
    let r = overlay_area(
        area,
        area.width.saturating_sub(4),
        area.height.saturating_sub(4),
    );
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" hooks {a}/{e} attached (any key) "))),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cell_carries_an_escape_from_the_kernel_or_a_file() {
        use ratatui::{Terminal, backend::TestBackend};
        let mut app = App::new(
            crate::live::app::Source {
                name: "replay".into(),
                kernel: "6.12\x1b]0;owned\x07\x1b[2J".into(),
                hooks: Vec::new(),
            },
            None,
        );
        app.push_event(&crate::event::Event {
            ts_ns: 1,
            cpu: 0,
            tgid: 1,
            kind: crate::event::EventKind::Gap {
                reason: "\x1b[31mred\t".into(),
            },
        });
        let mut term = Terminal::new(TestBackend::new(120, 30)).unwrap();
        term.draw(|f| draw(f, &mut app)).unwrap();
        let buf = term.backend().buffer();
        assert!(
            buf.content
                .iter()
                .all(|c| !c.symbol().chars().any(char::is_control)),
            "{buf:?}"
        );
        let screen: String = buf.content.iter().map(|c| c.symbol()).collect();
        assert!(screen.contains("6.12\\x1b]0;owned"), "{screen}");
    }

    #[test]
    fn narrow_terminals_keep_the_important_columns() {
        let at80 = columns(77);
        for c in [Col::Irq, Col::Status, Col::Device, Col::Mask, Col::Remap] {
            assert!(at80.contains(&c), "{c:?} dropped at 80 columns");
        }
        assert!(!at80.contains(&Col::Vector), "{at80:?}");
        let wide = columns(200);
        assert_eq!(wide.len(), ORDER.len());
        assert_eq!(columns(6), [Col::Irq]);
    }
}
