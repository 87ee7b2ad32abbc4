//! Rendering: a pure function of [`App`] onto a ratatui frame.
//!
//! Rendering never mutates state and never does I/O, so it can be tested against ratatui's
//! `TestBackend` at any size. All widths are computed in terminal columns, and every string from
//! a document has been sanitized before it gets here.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::JobProgress;
use super::app::{App, Entry, FileView, display_path, tilde, visible_offset};
use super::layout::layout;
use super::sanitize::{char_width, sanitize, str_width};

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Styles, with colour or (`NO_COLOR`) with modifiers only.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    no_color: bool,
}

impl Theme {
    pub fn new(no_color: bool) -> Self {
        Self { no_color }
    }

    fn pick(&self, colour: Style, plain: Style) -> Style {
        if self.no_color { plain } else { colour }
    }

    fn prompt(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }
    fn dim(&self) -> Style {
        self.pick(Style::new().fg(Color::DarkGray), Style::new())
    }
    fn path(&self) -> Style {
        self.pick(Style::new().fg(Color::Cyan), Style::new())
    }
    fn line_no(&self) -> Style {
        self.pick(Style::new().fg(Color::Yellow), Style::new())
    }
    fn heading(&self) -> Style {
        self.pick(Style::new().fg(Color::Gray), Style::new())
    }
    fn score(&self) -> Style {
        self.pick(Style::new().fg(Color::Green), Style::new())
    }
    fn selected(&self) -> Style {
        self.pick(
            Style::new()
                .bg(Color::DarkGray)
                .add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        )
    }
    fn gutter(&self) -> Style {
        self.pick(Style::new().fg(Color::DarkGray), Style::new())
    }
    fn match_gutter(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }
    fn match_text(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    /// A word of the query, wherever the preview shows it.
    fn term(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::UNDERLINED | Modifier::BOLD),
        )
    }
    /// The marker beside matched lines: a bar in colour; with `NO_COLOR` a `>` that reads as a
    /// marker even where bold is not rendered.
    fn match_marker(&self) -> &'static str {
        if self.no_color { ">" } else { "▌" }
    }
    fn note(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Yellow),
            Style::new().add_modifier(Modifier::UNDERLINED),
        )
    }
    fn bar(&self) -> Style {
        self.pick(
            Style::new().bg(Color::DarkGray).fg(Color::White),
            Style::new().add_modifier(Modifier::REVERSED),
        )
    }
    fn message(&self, error: bool) -> Style {
        match (self.no_color, error) {
            (true, _) => Style::new().add_modifier(Modifier::BOLD),
            (false, true) => Style::new()
                .fg(Color::LightRed)
                .add_modifier(Modifier::BOLD),
            (false, false) => Style::new()
                .fg(Color::LightGreen)
                .add_modifier(Modifier::BOLD),
        }
    }
}

/// Draws the whole UI.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    let theme = Theme::new(app.no_color);
    let areas = layout(area, app.show_preview);
    draw_input(frame, app, areas.input, &theme);
    let results_area = match areas.preview {
        Some(p) if areas.side_by_side => Rect {
            width: areas.list.width + p.width,
            ..areas.list
        },
        Some(p) => Rect {
            height: areas.list.height + p.height,
            ..areas.list
        },
        None => areas.list,
    };
    match empty_state(app) {
        Some(lines) => draw_empty(frame, &lines, results_area, &theme),
        None => {
            draw_list(frame, app, areas.list, &theme);
            if let (Some(p), Some(entry)) = (areas.preview, app.selected_entry()) {
                draw_preview(frame, app, entry, p, areas.side_by_side, &theme);
            }
        }
    }
    draw_status(frame, app, areas.status, &theme);
    if app.show_help {
        draw_help(frame, area, &theme);
    }
}

fn draw_input(frame: &mut Frame, app: &App, area: Rect, theme: &Theme) {
    if area.height == 0 {
        return;
    }
    let w = usize::from(area.width);
    let info = if app.is_searching() {
        "searching…".to_owned()
    } else if app.results_query.is_some() && !app.query().trim().is_empty() {
        let n = app.entries().len();
        format!("{n} result{}", plural(n))
    } else {
        String::new()
    };
    let info_w = str_width(&info);
    let show_info = !info.is_empty() && w >= info_w + 20;
    let prompt = "> ";
    let text_w = w
        .saturating_sub(prompt.len() + if show_info { info_w + 1 } else { 0 })
        .max(1);

    // Scroll horizontally so the cursor stays on screen, keeping one column for it.
    let before = app.input.before_cursor();
    let mut skip = 0;
    while str_width(&before[skip..]) >= text_w {
        match before[skip..].chars().next() {
            Some(c) => skip += c.len_utf8(),
            None => break,
        }
    }
    let visible = take_width(&app.input.text()[skip..], text_w);
    let mut spans = vec![
        Span::styled(prompt, theme.prompt()),
        Span::raw(visible.to_owned()),
    ];
    if show_info {
        let used = prompt.len() + str_width(visible);
        spans.push(Span::raw(" ".repeat(w.saturating_sub(used + info_w))));
        spans.push(Span::styled(info, theme.dim()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);

    if !app.show_help {
        let x = area.x as usize + prompt.len() + str_width(&before[skip..]);
        if x < usize::from(area.right()) {
            frame.set_cursor_position((x as u16, area.y));
        }
    }
}

/// The text that replaces the results list when there is nothing to list, telling the user what
/// to do next. `None` when there are results.
pub fn empty_state(app: &App) -> Option<Vec<String>> {
    if !app.entries().is_empty() {
        return None;
    }
    let st = &app.status;
    let query = app.query().trim();
    let indexing = st.job.is_some();
    let lines = if st.passages == 0 && indexing {
        vec!["Indexing… results appear as soon as the first passages are indexed".to_owned()]
    } else if st.passages == 0 {
        vec!["No documents indexed. Run `dochash-tui PATH` or `dochash index PATH`".to_owned()]
    } else if query.is_empty() {
        vec![
            format!(
                "Type to search {} passage{} in {} file{}",
                st.passages,
                plural(st.passages),
                st.files,
                plural(st.files)
            ),
            "↑/↓ select · Enter open · Tab preview · F1 or ? help · Esc quit".to_owned(),
        ]
    } else if let Some(err) = &app.error {
        vec![format!("Search failed: {err}")]
    } else if app.results_query.as_deref() != Some(query) {
        vec!["Searching…".to_owned()]
    } else {
        let mut v = vec![format!("No matches for “{query}”")];
        if indexing {
            v.push("Indexing continues; results update as files are added".to_owned());
        }
        v
    };
    Some(lines)
}

fn draw_empty(frame: &mut Frame, lines: &[String], area: Rect, theme: &Theme) {
    if area.height == 0 {
        return;
    }
    let mut text: Vec<Line> = Vec::new();
    // A little air above the message when there is room for it.
    if area.height >= 6 {
        text.push(Line::raw(""));
    }
    for (i, l) in lines.iter().enumerate() {
        let style = if i == 0 { Style::new() } else { theme.dim() };
        text.push(Line::from(Span::styled(format!("  {l}"), style)));
    }
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), area);
}

fn draw_list(frame: &mut Frame, app: &App, area: Rect, theme: &Theme) {
    let rows = usize::from(area.height);
    if rows == 0 || area.width == 0 {
        return;
    }
    let offset = visible_offset(app.selected(), app.offset, rows, app.entries().len());
    let lines: Vec<Line> = app
        .entries
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows)
        .map(|(i, e)| result_line(app, e, i == app.selected(), usize::from(area.width), theme))
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

/// One result row: marker, path and line, heading trail, and the score right-aligned.
/// The path gets priority, but the trail keeps up to 40% of the row when the path is long.
fn result_line(app: &App, e: &Entry, selected: bool, w: usize, theme: &Theme) -> Line<'static> {
    let marker = if selected { "> " } else { "  " };
    let score = format!("{:.2}", e.hit.score);
    let loc = if e.hit.more.is_empty() {
        e.hit.location()
    } else {
        format!("{} +{}", e.hit.location(), e.hit.more.len())
    };
    // The file's date on terminals wide enough to spare it.
    let score = match e.modified.filter(|_| w >= DATE_FROM_WIDTH).map(day) {
        Some(d) if !d.is_empty() => format!("{d}  {score}"),
        _ => score,
    };
    let score_w = if w >= 24 { score.len() + 1 } else { 0 };
    let avail = w.saturating_sub(marker.len() + score_w);
    let trail = e.headings.join(" › ");
    let trail_w = str_width(&trail);
    let head_room = if trail.is_empty() {
        0
    } else {
        (trail_w + 2).min(avail * 2 / 5)
    };
    let path = display_path(&e.hit.path, &app.status.roots, app.home.as_deref());
    let path = shorten_path(&path, avail.saturating_sub(loc.len() + head_room));
    let mut used = marker.len() + str_width(&path) + loc.len();
    let mut spans = vec![
        Span::styled(marker, theme.prompt()),
        Span::styled(path, theme.path()),
        Span::styled(loc, theme.line_no()),
    ];
    // One column of air between the trail and the score.
    let trail_budget = (marker.len() + avail).saturating_sub(used + 1);
    if !trail.is_empty() && trail_budget >= 5 {
        let shown = truncate_left(&trail, trail_budget - 2);
        used += 2 + str_width(&shown);
        spans.push(Span::styled(format!("  {shown}"), theme.heading()));
    }
    if score_w > 0 {
        spans.push(Span::raw(" ".repeat(w.saturating_sub(used + score.len()))));
        spans.push(Span::styled(score, theme.score()));
    }
    if selected {
        let sel = theme.selected();
        spans = spans
            .into_iter()
            .map(|s| {
                let style = s.style.patch(sel);
                s.style(style)
            })
            .collect();
        let pad = w.saturating_sub(spans.iter().map(Span::width).sum());
        spans.push(Span::styled(" ".repeat(pad), sel));
    }
    Line::from(spans)
}

fn draw_preview(
    frame: &mut Frame,
    app: &App,
    entry: &Entry,
    area: Rect,
    side: bool,
    theme: &Theme,
) {
    let inner = if side {
        frame.render_widget(
            Block::new()
                .borders(Borders::LEFT)
                .border_style(theme.dim()),
            area,
        );
        Rect {
            x: area.x.saturating_add(1),
            width: area.width.saturating_sub(1),
            ..area
        }
    } else {
        area
    };
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let title_area = Rect { height: 1, ..inner };
    let body = Rect {
        y: inner.y + 1,
        height: inner.height - 1,
        ..inner
    };
    frame.render_widget(
        Paragraph::new(preview_title(
            app,
            entry,
            usize::from(inner.width),
            side,
            theme,
        )),
        title_area,
    );
    let rows = preview_rows(
        entry,
        usize::from(body.width),
        usize::from(body.height),
        theme,
    );
    frame.render_widget(Paragraph::new(rows), body);
}

/// `path:12-18  Heading › Sub`, as a rule across the pane when stacked under the list.
fn preview_title(app: &App, e: &Entry, w: usize, side: bool, theme: &Theme) -> Line<'static> {
    let lead = if side { " " } else { "── " };
    let loc = if e.hit.page.is_some() {
        e.hit.location()
    } else if e.hit.end_line > e.hit.line {
        format!(":{}-{}", e.hit.line, e.hit.end_line)
    } else {
        format!(":{}", e.hit.line)
    };
    let avail = w.saturating_sub(str_width(lead) + loc.len() + 1);
    let path = display_path(&e.hit.path, &app.status.roots, app.home.as_deref());
    let path = shorten_path(&path, avail);
    let mut used = str_width(lead) + str_width(&path) + loc.len();
    let mut spans = vec![
        Span::styled(lead, theme.dim()),
        Span::styled(path, theme.path().add_modifier(Modifier::BOLD)),
        Span::styled(loc, theme.line_no()),
    ];
    let trail = e.headings.join(" › ");
    let budget = w.saturating_sub(used + 1);
    if !trail.is_empty() && budget >= 6 {
        let shown = truncate_left(&trail, budget - 2);
        used += 2 + str_width(&shown);
        spans.push(Span::styled(format!("  {shown}"), theme.heading()));
    }
    if !side && w > used + 1 {
        spans.push(Span::styled(
            format!(" {}", "─".repeat(w - used - 1)),
            theme.dim(),
        ));
    }
    Line::from(spans)
}

/// The preview body: the passage in its file, with a few lines of context before it, line
/// numbers, and the passage's lines marked. Long lines are wrapped here (not by ratatui) so the
/// number of rows each line takes is known and the passage can be placed on screen exactly.
///
/// When the file cannot be shown, or no longer has the passage's lines, the indexed text is shown
/// instead, under a note saying so.
pub fn preview_rows(e: &Entry, width: usize, height: usize, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    if width == 0 || height == 0 {
        return out;
    }
    let hit_line = e.hit.line.max(1) as usize;
    // What matched (the unit, or the lines with the query's words) is marked and placed.
    let (mark_first, mark_last) = e.marked_lines();
    let mark_first = (mark_first as usize).max(1);
    let (lines, first_no, matched, note): (&[String], usize, (usize, usize), Option<String>) =
        match &e.file {
            FileView::Lines(ls) if mark_first <= ls.len() && hit_line <= ls.len() => {
                let end = (mark_last as usize).clamp(mark_first, ls.len());
                (ls, 1, (mark_first, end), None)
            }
            FileView::Lines(_) => (
                &e.passage,
                hit_line,
                (hit_line, hit_line + e.passage.len().saturating_sub(1)),
                Some("file changed since it was indexed; showing the indexed passage".into()),
            ),
            FileView::Unavailable(why) => (
                &e.passage,
                hit_line,
                (hit_line, hit_line + e.passage.len().saturating_sub(1)),
                Some(format!("{}; showing the indexed passage", sanitize(why))),
            ),
            FileView::Passage => (
                &e.passage,
                hit_line,
                (hit_line, hit_line + e.passage.len().saturating_sub(1)),
                None,
            ),
        };
    let mut height = height;
    if let Some(note) = note {
        out.push(Line::from(Span::styled(
            take_width(&note, width).to_owned(),
            theme.note(),
        )));
        height -= 1;
    }
    if lines.is_empty() || height == 0 {
        return out;
    }

    let digits = (first_no + lines.len() - 1).to_string().len();
    // marker + number + space; dropped on panes too narrow to hold text beside it.
    let (digits, gutter) = if width >= digits + 2 + 4 {
        (digits, digits + 2)
    } else if width >= 2 {
        (0, 1)
    } else {
        (0, 0)
    };
    let text_w = width.saturating_sub(gutter).max(1);
    let rows_of = |l: &String| wrap(l, text_w).len();

    let ms = matched.0 - first_no;
    let me = (matched.1 - first_no).min(lines.len() - 1);
    // Only whether the passage fits matters, so stop counting once it does not (a huge passage
    // would otherwise be wrapped in full on every frame).
    let mut passage_rows = 0;
    for l in &lines[ms..=me] {
        passage_rows += rows_of(l);
        if passage_rows > height {
            break;
        }
    }
    let context = if passage_rows + 2 <= height {
        ((height - passage_rows) / 2).min(height / 3)
    } else {
        usize::from(height >= 8)
    };
    let mut start = ms;
    let mut used = 0;
    while start > 0 && used + rows_of(&lines[start - 1]) <= context {
        start -= 1;
        used += rows_of(&lines[start]);
    }

    let rows_start = out.len();
    'lines: for (i, line) in lines.iter().enumerate().skip(start) {
        let is_match = (ms..=me).contains(&i);
        let (marker, number_style, text_style) = if is_match {
            (
                theme.match_marker(),
                theme.match_gutter(),
                theme.match_text(),
            )
        } else {
            (" ", theme.gutter(), Style::new())
        };
        for (k, chunk) in wrap(line, text_w).into_iter().enumerate() {
            if out.len() - rows_start >= height {
                break 'lines;
            }
            let mut spans = Vec::with_capacity(3);
            if gutter > 0 {
                let number = if k == 0 && digits > 0 {
                    format!("{:>digits$} ", first_no + i)
                } else {
                    " ".repeat(gutter - 1)
                };
                spans.push(Span::styled(marker, theme.match_gutter()));
                spans.push(Span::styled(number, number_style));
            }
            let mut at = 0;
            for r in e.terms.ranges(&chunk) {
                if r.start > at {
                    spans.push(Span::styled(chunk[at..r.start].to_owned(), text_style));
                }
                spans.push(Span::styled(chunk[r.clone()].to_owned(), theme.term()));
                at = r.end;
            }
            if at < chunk.len() || at == 0 {
                spans.push(Span::styled(chunk[at..].to_owned(), text_style));
            }
            out.push(Line::from(spans));
        }
    }
    out
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect, theme: &Theme) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let st = &app.status;
    let mut parts: Vec<Span> = Vec::new();
    if let Some(m) = &app.message {
        parts.push(Span::styled(m.text.clone(), theme.message(m.error)));
    }
    if let Some(job) = &st.job {
        let frame_no = app.spinner % SPINNER.len();
        parts.push(Span::raw(format!(
            "{} {}",
            SPINNER[frame_no],
            job_text(job)
        )));
    }
    // What narrows or orders the results, while it does.
    let filters = dochash::index::split_filters(app.query())
        .map_or_else(|_| String::new(), |f| f.1.describe());
    if !filters.is_empty() {
        parts.push(Span::styled(sanitize(&filters), theme.heading()));
    }
    if !app.fold {
        parts.push(Span::raw("unfolded"));
    }
    if app.newest {
        parts.push(Span::raw("newest first"));
    }
    if !st.roots.is_empty() {
        let first = tilde(&st.roots[0], app.home.as_deref());
        let first = shorten_path(&sanitize(&first.to_string_lossy()), 30);
        let roots = match st.roots.len() {
            1 => first,
            n => format!("{first} +{}", n - 1),
        };
        parts.push(Span::raw(roots));
    }
    parts.push(Span::raw(format!(
        "{} file{} · {} passage{}",
        st.files,
        plural(st.files),
        st.passages,
        plural(st.passages)
    )));
    for s in [&st.model, &st.codes, &st.device, &st.fusion] {
        if !s.is_empty() {
            parts.push(Span::raw(sanitize(s)));
        }
    }
    let mut spans = vec![Span::raw(" ")];
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(" │ "));
        }
        spans.push(p);
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(theme.bar()), area);
}

/// `indexing 120/300`, or `training epoch 2/5 loss 0.413` when the detail already carries the
/// count, or both count and detail.
pub fn job_text(job: &JobProgress) -> String {
    let mut s = sanitize(&job.label);
    let detail = sanitize(&job.detail);
    if job.total > 0 {
        let count = format!("{}/{}", job.done, job.total);
        if !detail.contains(&count) {
            s.push(' ');
            s.push_str(&count);
        }
    }
    if !detail.is_empty() {
        s.push(' ');
        s.push_str(&detail);
    }
    s
}

/// The help overlay: the keymap, key column then description.
fn draw_help(frame: &mut Frame, area: Rect, theme: &Theme) {
    let mut rows: Vec<(String, &str)> = super::keymap::KEYMAP
        .iter()
        .map(|b| (super::keymap::keys_label(b), b.help))
        .collect();
    let height = usize::from(area.height);
    // The filter words too, where the screen has room for them.
    if height >= rows.len() + FILTER_HELP.len() + 2 {
        rows.extend(FILTER_HELP.iter().map(|(k, d)| (k.to_string(), *d)));
    }
    // A screen too short for one column of keys gets two, the descriptions cut to fit.
    let columns = if rows.len() + 2 > height && area.width >= 60 {
        2
    } else {
        1
    };
    let per_column = rows.len().div_ceil(columns);
    let key_w = rows.iter().map(|(k, _)| str_width(k)).max().unwrap_or(0);
    let text_w = rows
        .iter()
        .map(|(_, d)| key_w + 3 + str_width(d))
        .max()
        .unwrap_or(0);
    let column_w = if columns == 1 {
        text_w
    } else {
        (usize::from(area.width).saturating_sub(3) / 2).min(text_w)
    };
    let cell = |(k, d): &(String, &str)| -> Vec<Span<'static>> {
        let pad = key_w.saturating_sub(str_width(k));
        let desc = truncate_right(d, column_w.saturating_sub(key_w + 3));
        let used = key_w + 3 + str_width(&desc);
        vec![
            Span::styled(format!(" {k}{}  ", " ".repeat(pad)), theme.prompt()),
            Span::raw(desc),
            Span::raw(" ".repeat(column_w.saturating_sub(used))),
        ]
    };
    let lines: Vec<Line> = (0..per_column)
        .map(|i| {
            let mut spans = cell(&rows[i]);
            if let Some(r) = rows.get(i + per_column).filter(|_| columns == 2) {
                spans.extend(cell(r));
            }
            Line::from(spans)
        })
        .collect();
    let w = ((column_w * columns) as u16 + 3).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    frame.render_widget(Clear, rect);
    let block = Block::bordered().title(" Keys ").border_style(theme.dim());
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}

/// `s` cut to `max` columns, with `…` marking the cut.
fn truncate_right(s: &str, max: usize) -> String {
    if str_width(s) <= max {
        return s.to_string();
    }
    format!("{}…", take_width(s, max.saturating_sub(1)))
}

/// The filter words, as the help lists them.
const FILTER_HELP: &[(&str, &str)] = &[
    ("", ""),
    (
        "path:DIR",
        "only under a folder (or a glob: path:*.md, path:work/**); -path: leaves out",
    ),
    ("ext:md", "only files with this extension"),
    (
        "tag:NAME",
        "only notes with this tag (front matter or #tag); -tag: leaves out",
    ),
    ("in:FOLDER", "only this indexed folder"),
    (
        "after:DATE",
        "only notes dated on or after: 2024-03-01, 2024-03, 2024, today, 7d, 2w, 3m",
    ),
    (
        "before:DATE",
        "only notes dated before (front matter date, else modified)",
    ),
];

/// The narrowest result list that shows each file's date.
const DATE_FROM_WIDTH: usize = 70;

/// A time as its day, where the machine is: `2026-12-01`.
fn day(t: std::time::SystemTime) -> String {
    // Any time a file system can hold, however far from now: chrono's own conversion panics
    // past its range, and a date it cannot show is left out.
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        Err(e) => i64::try_from(e.duration().as_secs()).ok().map(|s| -s),
    };
    secs.and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The longest prefix of `s` at most `max` columns wide.
fn take_width(s: &str, max: usize) -> &str {
    let mut w = 0;
    for (i, c) in s.char_indices() {
        w += char_width(c);
        if w > max {
            return &s[..i];
        }
    }
    s
}

/// `s` cut to `max` columns from the left, with `…` marking the cut: `…ection › Sub`. Keeps the
/// end, which for a heading trail is the most specific part.
pub fn truncate_left(s: &str, max: usize) -> String {
    if str_width(s) <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut w = 0;
    let mut start = s.len();
    for (i, c) in s.char_indices().rev() {
        let cw = char_width(c);
        if w + cw > max - 1 {
            break;
        }
        w += cw;
        start = i;
    }
    format!("…{}", &s[start..])
}

/// A path cut to `max` columns by dropping leading directories (`…/project/notes.md`), then, if
/// even the file name is too long, its start.
pub fn shorten_path(s: &str, max: usize) -> String {
    if str_width(s) <= max {
        return s.to_owned();
    }
    let mut parts: Vec<&str> = s.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    let mut tail = file.to_owned();
    for dir in parts.into_iter().rev() {
        let candidate = format!("{dir}/{tail}");
        if str_width(&candidate) + 2 > max {
            break;
        }
        tail = candidate;
    }
    if str_width(&tail) + 2 <= max {
        format!("…/{tail}")
    } else {
        truncate_left(file, max)
    }
}

/// Wraps `s` into rows of at most `width` columns (at least one row, maybe empty), breaking
/// after a space when the row has one and mid-word otherwise. Done here rather than by ratatui so
/// that the number of rows a line takes is known before rendering, which placing the passage on
/// screen needs.
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut rows = Vec::new();
    let mut cur = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if w + cw > width && !cur.is_empty() {
            if c == ' ' {
                // The space the row breaks at is not carried to the next row.
                rows.push(std::mem::take(&mut cur));
                w = 0;
                continue;
            }
            match cur.rfind(' ') {
                Some(i) if i + 1 < cur.len() => {
                    let rest = cur.split_off(i + 1);
                    rows.push(std::mem::replace(&mut cur, rest));
                    w = str_width(&cur);
                }
                _ => {
                    rows.push(std::mem::take(&mut cur));
                    w = 0;
                }
            }
        }
        cur.push(c);
        w += cw;
    }
    rows.push(cur);
    rows
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    use super::super::StatusInfo;
    use super::super::app::tests::{app_with, hit, status};
    use super::super::app::{Action, SearchResponse};
    use super::*;

    fn render(app: &App, w: u16, h: u16) -> Buffer {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| draw(f, app)).unwrap();
        term.backend().buffer().clone()
    }

    fn text(buf: &Buffer) -> Vec<String> {
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn screen(app: &App, w: u16, h: u16) -> String {
        text(&render(app, w, h)).join("\n")
    }

    fn sized(mut app: App, w: u16, h: u16) -> App {
        app.set_viewport(Rect::new(0, 0, w, h));
        app
    }

    /// An app whose results have real file contents behind them.
    fn app_with_file(no_color: bool) -> App {
        let mut app = App::new("", no_color, status());
        let Action::Search(req) =
            app.handle_key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE))
        else {
            panic!()
        };
        let file: Vec<String> = (1..=60).map(|i| format!("file line {i}")).collect();
        let file = Arc::new(file);
        let mut h = hit(7, "/home/u/notes/projects/dochash.md", 30);
        h.end_line = 32;
        h.headings = vec!["Projects".into(), "Dochash".into()];
        let mut h2 = hit(8, "/home/u/notes/gone.md", 5);
        h2.text = "the stored passage\nsecond stored line".into();
        let entries = vec![
            Entry::new(h, FileView::Lines(file)),
            Entry::new(h2, FileView::Unavailable("file no longer exists".into())),
        ];
        app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Ok(entries),
        });
        app
    }

    #[test]
    fn renders_results_preview_and_status_at_80x24() {
        let app = sized(app_with_file(false), 80, 24);
        let s = screen(&app, 80, 24);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].starts_with("> q"), "{}", lines[0]);
        assert!(lines[0].contains("2 results"));
        assert!(
            lines[1].starts_with("> projects/dochash.md:30"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("Projects › Dochash"));
        assert!(lines[1].trim_end().ends_with("0.83"), "{}", lines[1]);
        assert!(lines[2].contains("gone.md:5"));
        // The stacked preview's title and the passage in context, matched lines marked.
        assert!(s.contains("── projects/dochash.md:30-32"), "{s}");
        assert!(s.contains("▌30 file line 30"), "{s}");
        assert!(s.contains("▌32 file line 32"));
        assert!(s.contains(" 29 file line 29"), "context before the passage");
        assert!(!s.contains("▌33"));
        // Status bar.
        let bar = lines[23];
        assert!(bar.contains("12 files · 345 passages"), "{bar}");
        assert!(bar.contains("minilm") && bar.contains("itq 64-bit") && bar.contains("cpu"));
    }

    #[test]
    fn a_place_shows_what_matched_its_neighbours_its_date_and_the_filters() {
        let mut app = App::new("", false, status());
        let mut last = Action::None;
        for c in "q tag:work -path:old".chars() {
            last = app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        let Action::Search(req) = last else { panic!() };
        let file: Vec<String> = (1..=60).map(|i| format!("file line {i}")).collect();
        let mut h = hit(7, "/home/u/notes/a.md", 30);
        h.end_line = 36;
        h.matched_lines = (33, 34);
        h.snippet.line = 34;
        h.more = (0..2)
            .map(|i| dochash::index::search::Member {
                id: 20 + i,
                line: 37 + 5 * i as u32,
                end_line: 41 + 5 * i as u32,
                score: 0.1,
            })
            .collect();
        let mut e = Entry::new(h, FileView::Lines(Arc::new(file)));
        e.modified = Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 400));
        app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Ok(vec![e]),
        });
        let app = sized(app, 120, 40);
        let s = screen(&app, 120, 40);
        let lines: Vec<&str> = s.lines().collect();
        // The row opens at the match and says how many passages fold into it.
        assert!(lines[1].starts_with("> a.md:34 +2"), "{}", lines[1]);
        // The preview marks what matched, not the whole passage.
        assert!(
            s.contains("▌33 file line 33") && s.contains("▌34 file line 34"),
            "{s}"
        );
        assert!(!s.contains("▌30 ") && !s.contains("▌35 "), "{s}");
        // The status bar shows the filters in force.
        assert!(lines[39].contains("-path:old tag:work"), "{}", lines[39]);
        // A list as wide as the terminal has room for the file's date; one beside the
        // preview (or a narrow terminal) keeps the score only.
        assert!(!lines[1].contains("1971"), "{}", lines[1]);
        let s = screen(&sized(app, 80, 24), 80, 24);
        let row = s.lines().nth(1).unwrap();
        assert!(
            row.contains("1971-02-0") && row.trim_end().ends_with("0.83"),
            "{row}"
        );
    }

    #[test]
    fn any_file_time_shows_as_a_day_or_nothing() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(
            day(UNIX_EPOCH + Duration::from_secs(86_400 * 400)).len(),
            10
        );
        assert!(day(UNIX_EPOCH - Duration::from_secs(86_400 * 400)).starts_with("1968"));
        // Far future, as `touch -d @100000000000000` sets: no panic, no date.
        if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(100_000_000_000_000)) {
            assert_eq!(day(far), "");
        }
    }

    #[test]
    fn renders_side_by_side_at_120x40() {
        let app = sized(app_with_file(false), 120, 40);
        let buf = render(&app, 120, 40);
        let lines = text(&buf);
        let a = layout(buf.area, true);
        let p = a.preview.unwrap();
        assert!(lines[1].starts_with("> projects/dochash.md:30"));
        let right: String = lines[1][..].chars().skip(usize::from(p.x)).collect();
        assert!(right.starts_with("│ projects/dochash.md:30-32"), "{right}");
        let all = lines.join("\n");
        assert!(all.contains("▌30 file line 30"));
        // The passage is placed with context above it, not at the very top.
        let row_of_30 = lines
            .iter()
            .position(|l| l.contains("▌30 file line 30"))
            .unwrap();
        assert!(row_of_30 > 3, "{row_of_30}");
        assert!(lines[39].contains("345 passages"));
        // Selected row is highlighted.
        assert_eq!(buf[(2, 1)].bg, Color::DarkGray);
        assert_eq!(buf[(2, 2)].bg, Color::Reset);
    }

    #[test]
    fn deleted_file_shows_stored_text_with_a_note() {
        let mut app = sized(app_with_file(false), 120, 40);
        app.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        let s = screen(&app, 120, 40);
        assert!(
            s.contains("file no longer exists; showing the indexed passage"),
            "{s}"
        );
        assert!(s.contains("▌5 the stored passage"), "{s}");
        assert!(s.contains("▌6 second stored line"));
    }

    #[test]
    fn changed_file_falls_back_to_stored_text() {
        let mut h = hit(1, "/n/a.md", 100);
        h.text = "old text".into();
        let e = Entry::new(h, FileView::Lines(Arc::new(vec!["short now".into()])));
        let rows = preview_rows(&e, 60, 10, &Theme::new(true));
        let s: Vec<String> = rows.iter().map(ToString::to_string).collect();
        assert!(s[0].contains("changed since it was indexed"));
        assert_eq!(s[1], ">100 old text");
    }

    #[test]
    fn preview_marks_the_words_of_the_query() {
        let e = Entry::new(
            hit(1, "/n/a.md", 2),
            FileView::Lines(Arc::new(vec![
                "intro".into(),
                "Set max_file_size before running the server".into(),
            ])),
        )
        .with_terms(Arc::new(dochash::index::lexical::Highlighter::new(
            "run servers",
        )));
        let theme = Theme::new(true);
        let rows = preview_rows(&e, 80, 10, &theme);
        let marked: Vec<String> = rows
            .iter()
            .flat_map(|l| l.spans.iter())
            .filter(|s| s.style == theme.term())
            .map(|s| s.content.to_string())
            .collect();
        assert_eq!(marked, ["running", "server"]);
        // The text itself is unchanged.
        assert_eq!(
            rows[1].to_string(),
            ">2 Set max_file_size before running the server"
        );
    }

    #[test]
    fn preview_wraps_long_lines_and_numbers_only_the_first_row() {
        let long = "x".repeat(25);
        let e = Entry::new(
            hit(1, "/n/a.md", 2),
            FileView::Lines(Arc::new(vec!["a".into(), long, "c".into()])),
        );
        let rows: Vec<String> = preview_rows(&e, 13, 10, &Theme::new(true))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            rows,
            [" 1 a", ">2 xxxxxxxxxx", ">  xxxxxxxxxx", ">  xxxxx", ">3 c"]
        );
    }

    #[test]
    fn preview_fits_its_height() {
        let file: Vec<String> = (1..=500).map(|i| format!("line {i}")).collect();
        let mut h = hit(1, "/n/a.md", 200);
        h.end_line = 400;
        // What matched is longer than the pane: its start shows.
        h.matched_lines = (200, 400);
        let e = Entry::new(h, FileView::Lines(Arc::new(file)));
        for height in [0, 1, 2, 5, 20] {
            for width in [0, 1, 3, 8, 40] {
                let rows = preview_rows(&e, width, height, &Theme::new(false));
                assert!(rows.len() <= height);
                assert!(rows.iter().all(|r| r.width() <= width.max(1)));
            }
        }
        let rows = preview_rows(&e, 40, 20, &Theme::new(false));
        assert!(rows[1].to_string().contains("200 line 200"), "{}", rows[1]);
    }

    #[test]
    fn empty_states() {
        let mut app = App::new("", false, status());
        assert!(screen(&app, 80, 24).contains("Type to search 345 passages in 12 files"));

        let mut st = StatusInfo {
            files: 0,
            passages: 0,
            ..status()
        };
        app.update_status(st.clone(), Instant::now());
        assert!(
            screen(&app, 80, 24)
                .contains("No documents indexed. Run `dochash-tui PATH` or `dochash index PATH`")
        );

        st.job = Some(JobProgress {
            label: "indexing".into(),
            done: 120,
            total: 300,
            detail: String::new(),
        });
        app.update_status(st, Instant::now());
        let s = screen(&app, 80, 24);
        assert!(s.contains("Indexing… results appear as soon as the first passages are indexed"));
        assert!(s.contains("indexing 120/300"), "{s}");

        let mut app = app_with(0);
        assert!(screen(&app, 80, 24).contains("No matches for “q”"));
        app.handle_key(KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE));
        assert!(screen(&app, 80, 24).contains("searching…"));
    }

    #[test]
    fn status_bar_shows_jobs_and_messages() {
        let mut app = app_with(3);
        let mut st = status();
        st.job = Some(JobProgress {
            label: "training".into(),
            done: 2,
            total: 5,
            detail: "epoch 2/5 loss 0.413".into(),
        });
        app.update_status(st, Instant::now());
        app.set_message("copied path", false, Instant::now());
        let s = screen(&app, 120, 40);
        let bar = s.lines().last().unwrap();
        assert!(bar.contains("copied path"), "{bar}");
        assert!(bar.contains("training epoch 2/5 loss 0.413"), "{bar}");
        assert!(bar.contains("notes"), "{bar}");
    }

    #[test]
    fn status_bar_shows_the_fusion_the_corpus_chose() {
        let mut app = app_with(3);
        app.update_status(status(), Instant::now());
        let s = screen(&app, 160, 40);
        let bar = s.lines().last().unwrap();
        assert!(bar.contains("semantic 0.3 (fitted)"), "{bar}");
        let mut st = status();
        st.fusion.clear();
        app.update_status(st, Instant::now());
        let s = screen(&app, 160, 40);
        assert!(!s.lines().last().unwrap().contains("semantic"), "{s}");
    }

    #[test]
    fn job_text_formats() {
        let job = |label: &str, done, total, detail: &str| JobProgress {
            label: label.into(),
            done,
            total,
            detail: detail.into(),
        };
        assert_eq!(job_text(&job("indexing", 120, 300, "")), "indexing 120/300");
        assert_eq!(
            job_text(&job("training", 2, 5, "epoch 2/5 loss 0.41")),
            "training epoch 2/5 loss 0.41"
        );
        assert_eq!(job_text(&job("re-encoding", 0, 0, "")), "re-encoding");
        assert_eq!(
            job_text(&job("indexing", 3, 9, "a.md")),
            "indexing 3/9 a.md"
        );
    }

    #[test]
    fn help_overlay_lists_keys() {
        let mut app = App::new("", false, status());
        app.handle_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
        // Tall enough: one column, every description whole, and the filter words.
        let s = screen(&app, 100, 40);
        assert!(s.contains("Keys"));
        assert!(s.contains("Ctrl-y") && s.contains("OSC 52"));
        assert!(s.contains("F1") && s.contains("when the query is empty"));
        assert!(s.contains("after:DATE") && s.contains("tag:NAME"), "{s}");
        // 24 lines: two columns, so that every key still shows.
        let s = screen(&app, 80, 24);
        for k in ["Ctrl-y", "Ctrl-g", "Ctrl-t", "F1", "Esc, Ctrl-c", "Enter"] {
            assert!(s.contains(k), "{k}: {s}");
        }
    }

    #[test]
    fn tiny_sizes_do_not_panic() {
        let mut with_help = app_with_file(false);
        with_help.handle_key(KeyEvent::new(KeyCode::F(1), KeyModifiers::NONE));
        for app in [
            app_with_file(false),
            app_with_file(true),
            with_help,
            App::new("", false, status()),
        ] {
            // The app's idea of the size is left stale on purpose: a resize can land between
            // the last key and the next frame, and rendering must cope.
            for (w, h) in [
                (1, 1),
                (10, 3),
                (2, 2),
                (20, 5),
                (99, 8),
                (100, 3),
                (3, 40),
                (1, 30),
            ] {
                render(&app, w, h);
            }
        }
    }

    #[test]
    fn no_color_uses_no_colours() {
        let mut app = app_with_file(true);
        let mut st = status();
        st.job = Some(JobProgress {
            label: "indexing".into(),
            done: 1,
            total: 2,
            detail: String::new(),
        });
        app.update_status(st, Instant::now());
        app.set_message("boom", true, Instant::now());
        for (w, h) in [(80, 24), (120, 40)] {
            let buf = render(&sized(app_with_file(true), w, h), w, h);
            let buf2 = render(&app, w, h);
            for b in [&buf, &buf2] {
                for cell in b.content() {
                    assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset));
                }
            }
            let lines = text(&buf);
            assert!(lines.join("\n").contains(">30 file line 30"));
            // The selection is still visible, by reverse video.
            assert!(buf[(2, 1)].modifier.contains(Modifier::REVERSED));
        }
        let mut help = App::new("", true, status());
        help.show_help = true;
        for cell in render(&help, 80, 24).content() {
            assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset));
        }
    }

    #[test]
    fn hostile_document_text_never_reaches_the_screen() {
        let mut app = App::new("", false, status());
        let Action::Search(req) =
            app.handle_key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE))
        else {
            panic!()
        };
        let mut h = hit(1, "/home/u/notes/\x1b]0;pwn\x07evil.md", 1);
        h.headings = vec!["\x1b[8mhidden\u{202e}".into()];
        h.text = "\x1b[2J\u{9b}31mtext".into();
        let e = Entry::new(h.clone(), FileView::Unavailable("x".into()));
        app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Ok(vec![e]),
        });
        let buf = render(&app, 120, 40);
        for cell in buf.content() {
            assert!(
                !cell
                    .symbol()
                    .chars()
                    .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
                "{:?}",
                cell.symbol()
            );
        }
        let s = text(&buf).join("\n");
        // The name shown escaped (inert text, and still the file's own name); the passage's and
        // the heading's sequences removed.
        assert!(s.contains("\\x1b]0;pwn\\x07evil.md:1"), "{s}");
        assert!(!s.contains("[2J") && !s.contains("31m"), "{s}");
        assert!(s.contains("hidden") && s.contains("text"));
    }

    #[test]
    fn long_paths_and_trails_are_shortened() {
        assert_eq!(shorten_path("a/b/c/file.md", 100), "a/b/c/file.md");
        assert_eq!(shorten_path("a/b/c/file.md", 11), "…/c/file.md");
        assert_eq!(shorten_path("a/b/c/file.md", 9), "…/file.md");
        assert_eq!(shorten_path("a/b/c/file.md", 5), "…e.md");
        assert_eq!(shorten_path("x", 0), "");
        assert_eq!(truncate_left("One › Two › Three", 9), "… › Three");
        assert_eq!(truncate_left("日本語", 4), "…語");
        assert_eq!(wrap("", 3), [""]);
        assert_eq!(wrap("abcdefg", 3), ["abc", "def", "g"]);
        assert_eq!(wrap("日本語", 3), ["日", "本", "語"]);
        assert_eq!(wrap("hello big world", 8), ["hello ", "big ", "world"]);
        assert_eq!(wrap("ab cd", 2), ["ab", "cd"]);
        assert_eq!(wrap("a  b", 1), ["a", " ", "b"]);

        let mut app = App::new("", false, status());
        let Action::Search(req) =
            app.handle_key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE))
        else {
            panic!()
        };
        let deep = format!(
            "/home/u/notes/{}/very-long-file-name-for-a-note.md",
            "deep/".repeat(20)
        );
        let e = Entry::new(hit(1, &deep, 7), FileView::Unavailable("x".into()));
        app.apply_response(SearchResponse {
            seq: req.seq,
            query: req.query,
            outcome: Ok(vec![e]),
        });
        let lines = text(&render(&app, 80, 24));
        assert!(lines[1].starts_with("> …/"), "{}", lines[1]);
        assert!(
            lines[1].contains("very-long-file-name-for-a-note.md:7"),
            "{}",
            lines[1]
        );
        assert!(lines[1].trim_end().ends_with("0.89"), "{}", lines[1]);
    }

    #[test]
    fn list_scrolls_to_keep_the_selection_visible() {
        let mut app = sized(app_with(40), 80, 24);
        for _ in 0..20 {
            app.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        }
        let lines = text(&render(&app, 80, 24));
        let list = layout(Rect::new(0, 0, 80, 24), true).list;
        let sel_row = (list.y..list.bottom())
            .find(|&y| lines[usize::from(y)].starts_with("> "))
            .unwrap();
        assert!(lines[usize::from(sel_row)].contains("file20.md"));
    }

    #[test]
    fn cursor_follows_the_query() {
        let mut app = App::new("hello", false, status());
        let mut term = Terminal::new(TestBackend::new(40, 10)).unwrap();
        term.draw(|f| draw(f, &app)).unwrap();
        term.backend_mut().assert_cursor_position((7, 0));
        app.handle_key(KeyEvent::new(KeyCode::Home, KeyModifiers::NONE));
        term.draw(|f| draw(f, &app)).unwrap();
        term.backend_mut().assert_cursor_position((2, 0));
        // A query longer than the line scrolls.
        let long = "word ".repeat(30);
        let app = App::new(&long, false, status());
        term.draw(|f| draw(f, &app)).unwrap();
        let pos = term.get_cursor_position().unwrap();
        assert!(pos.x < 40);
    }
}
