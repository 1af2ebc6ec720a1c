//! `flowgate top`: the figures of a running daemon's components in the
//! terminal, read from its `/api/pipelines` every second (rates are the
//! difference of two reads). `q`, Esc or Ctrl-C quits; up/down (j/k)
//! scroll. When stdout is not a terminal it reads twice, a second apart,
//! prints one table and exits.

use crate::http::api::{ApiPipelines, Figures};
use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::Constraint;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Row, Table, TableState};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(1);
const HEADER: [&str; 10] = [
    "COMPONENT",
    "TYPE",
    "IN/S",
    "OUT/S",
    "ERR/S",
    "BUFFER",
    "BUSY",
    "BREAKER",
    "IN",
    "OUT",
];
/// Columns printed right-aligned (numbers).
const RIGHT: [bool; 10] = [
    false, false, true, true, true, true, true, false, true, true,
];

/// Reads `/api/pipelines` of the daemon at `address`.
struct Client {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: String,
    address: String,
}

impl Client {
    fn new(address: &str) -> anyhow::Result<Self> {
        crate::components::http_common::install_tls();
        Ok(Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("building the HTTP client")?,
            url: format!("http://{address}/api/pipelines"),
            address: address.to_string(),
        })
    }

    fn read(&self) -> anyhow::Result<ApiPipelines> {
        self.runtime.block_on(async {
            let response = self.http.get(&self.url).send().await.with_context(|| {
                format!(
                    "cannot reach a flowgate daemon at {} (is --metrics-address right?)",
                    self.address
                )
            })?;
            let status = response.status();
            let body = response.bytes().await.context("reading /api/pipelines")?;
            anyhow::ensure!(
                status.is_success(),
                "{status} from {}: {}",
                self.url,
                String::from_utf8_lossy(&body).trim()
            );
            serde_json::from_slice(&body).with_context(|| {
                format!(
                    "{} did not answer with flowgate's /api/pipelines JSON",
                    self.url
                )
            })
        })
    }
}

fn short(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.1}G", n / 1e9),
        n if n >= 1e6 => format!("{:.1}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n if n >= 100.0 || n.fract() == 0.0 => format!("{n:.0}"),
        n => format!("{n:.1}"),
    }
}

/// One row per component, in the order the files list them.
fn rows(now: &ApiPipelines, before: Option<&ApiPipelines>) -> Vec<[String; 10]> {
    let dt = before.map_or(0.0, |b| {
        now.time_ms.saturating_sub(b.time_ms) as f64 / 1000.0
    });
    let several = now.pipelines.len() > 1;
    let mut out = Vec::new();
    for p in &now.pipelines {
        let old = before.and_then(|b| b.pipelines.iter().find(|o| o.name == p.name));
        for c in &p.graph.components {
            let zero = Figures::default();
            let f = p.figures.get(&c.name).unwrap_or(&zero);
            let b = old.and_then(|o| o.figures.get(&c.name));
            let rate = |pick: fn(&Figures) -> u64| match b {
                Some(b) if dt > 0.0 => short(pick(f).saturating_sub(pick(b)) as f64 / dt),
                _ => "-".to_string(),
            };
            let stage = c.kind != "source";
            let buffer = if stage {
                let cap = f.buffer_capacity.max(1);
                format!(
                    "{}/{} {:>3}%",
                    f.buffer_events,
                    f.buffer_capacity,
                    f.buffer_events * 100 / cap
                )
            } else {
                "-".to_string()
            };
            let most = match (f.workers_limit, c.workers.as_deref()) {
                (Some(limit), _) => limit.to_string(),
                (None, Some(w)) => w.to_string(),
                (None, None) => String::new(),
            };
            out.push([
                if several {
                    format!("{}/{}", p.name, c.name)
                } else {
                    c.name.clone()
                },
                format!("{} {}", c.kind, c.type_name),
                if stage {
                    rate(|f| f.events_in)
                } else {
                    "-".into()
                },
                rate(|f| f.events_out),
                rate(|f| f.errors),
                buffer,
                if stage {
                    format!("{}/{most}", f.workers_busy)
                } else {
                    "-".into()
                },
                f.breaker.clone().unwrap_or_else(|| "-".into()),
                f.events_in.to_string(),
                f.events_out.to_string(),
            ]);
        }
    }
    out
}

/// The rows as aligned text, header first.
fn table_text(rows: &[[String; 10]]) -> String {
    let mut widths = HEADER.map(str::len);
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    for r in std::iter::once(HEADER.map(String::from)).chain(rows.iter().cloned()) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let w = widths[i];
            match RIGHT[i] {
                true => line.push_str(&format!("{cell:>w$}  ")),
                false => line.push_str(&format!("{cell:<w$}  ")),
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

pub fn top(address: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(address)?;
    if !std::io::stdout().is_terminal() {
        let first = client.read()?;
        std::thread::sleep(EVERY);
        let second = client.read()?;
        if second.pipelines.is_empty() {
            println!("no pipeline is running at {address}");
        } else {
            print!("{}", table_text(&rows(&second, Some(&first))));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Fails before the screen is taken over when the daemon is not there.
    let first = client.read()?;
    let mut terminal = ratatui::init();
    let result = screen(&mut terminal, &client, first);
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

/// A table row with the numbers right-aligned.
fn cells(r: [&str; 10]) -> Row<'_> {
    Row::new(r.into_iter().zip(RIGHT).map(|(c, right)| match right {
        true => Cell::from(Line::from(c).right_aligned()),
        false => Cell::from(c),
    }))
}

fn screen(
    terminal: &mut ratatui::DefaultTerminal,
    client: &Client,
    first: ApiPipelines,
) -> anyhow::Result<()> {
    let mut before: Option<ApiPipelines> = None;
    let mut now = first;
    let mut problem: Option<String> = None;
    let mut next = Instant::now() + EVERY;
    let mut selected = TableState::default();
    loop {
        let table = rows(&now, before.as_ref());
        let title = match &problem {
            Some(p) => format!(" flowgate top · {} · {p} · q quits ", client.address),
            None => format!(" flowgate top · {} · every 1s · q quits ", client.address),
        };
        terminal.draw(|frame| {
            let widest = |col: usize, least: usize| {
                let w = table.iter().map(|r| r[col].len()).max().unwrap_or(0);
                Constraint::Length(w.max(least) as u16)
            };
            let widths = [
                widest(0, 9),
                widest(1, 4),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(7),
                Constraint::Length(18),
                Constraint::Length(7),
                Constraint::Length(10),
                Constraint::Length(11),
                Constraint::Length(11),
            ];
            let header = cells(HEADER).style(Style::new().add_modifier(Modifier::BOLD));
            let body = table
                .iter()
                .map(|r| cells(r.each_ref().map(String::as_str)));
            let widget = Table::new(body, widths)
                .header(header)
                .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
                .block(Block::bordered().title(title.as_str()));
            frame.render_stateful_widget(widget, frame.area(), &mut selected);
        })?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
            {
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(());
                    }
                    // A highlight the table scrolls to keep in view, for
                    // more components than lines.
                    KeyCode::Down | KeyCode::Char('j') => selected.select_next(),
                    KeyCode::Up | KeyCode::Char('k') => selected.select_previous(),
                    _ => {}
                }
            }
            continue;
        }
        next = Instant::now() + EVERY;
        match client.read() {
            Ok(read) => {
                problem = None;
                before = Some(std::mem::replace(&mut now, read));
            }
            // The daemon may be restarting: say so and keep trying.
            Err(e) => problem = Some(format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_reads_and_the_table_aligns() {
        let (p, _) = crate::graph::load_str(
            "name: shop\nsources:\n  g: {type: generator, events: [{n: 1}]}\nsinks:\n  out: {type: blackhole, inputs: [g], workers: 2}\n",
            "p.yaml",
            "shop",
        )
        .unwrap();
        let metrics = crate::telemetry::Metrics::new();
        let graphs = crate::http::api::Graphs::default();
        graphs.set(crate::http::api::Graphs::laid_out(&p));
        let out = metrics.component("shop", "out", "sink", "blackhole");
        out.buffer_capacity.set(500);
        out.buffer_events.set(250);
        let mut first = crate::http::api::pipelines(&graphs, &metrics);
        out.events_in.inc_by(3000);
        let mut second = crate::http::api::pipelines(&graphs, &metrics);
        (first.time_ms, second.time_ms) = (10_000, 12_000);
        let text = table_text(&rows(&second, Some(&first)));
        assert_eq!(
            text,
            "COMPONENT  TYPE              IN/S  OUT/S  ERR/S        BUFFER  BUSY  BREAKER    IN  OUT\n\
             g          source generator     -      0      0             -     -  -           0    0\n\
             out        sink blackhole    1500      0      0  250/500  50%   0/2  -        3000    0\n"
        );
    }
}
