//! Figures with plotters (and only here): pure functions from table rows (read from the
//! table CSVs, so committed figures can be redrawn from committed tables) to SVG and PNG.
//! Style constants live at the top; text uses an embedded font, so output is the same on
//! every machine and no system font library is needed.

use crate::base::error::{Error, Result};
use crate::base::files;
use crate::report::catalog::{Figure, Kind};
use crate::store::record::read_csv;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;
use std::path::Path;

const FONT: &str = "sans-serif";
const PANEL: (u32, u32) = (560, 440);
/// Pm (%) values labelled on the log axes of Figure 4.
const PM_TICKS: [f64; 13] = [100.0, 70.0, 50.0, 30.0, 20.0, 10.0, 7.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.2];
/// Colours of the curves of one procedure at several sparsities, and of the procedures of one
/// network in the order its figure lists them (tickets blue, then reinit orange, ...).
const LEVEL_COLOURS: [RGBColor; 6] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

/// A row of the Figure 3 table.
#[derive(Debug, Clone, Deserialize)]
pub struct Fig3Row {
    pub procedure: String,
    pub level: usize,
    pub iteration: usize,
    pub remaining: f64,
    pub n: usize,
    pub test_acc_mean: f64,
    pub test_acc_min: f64,
    pub test_acc_max: f64,
}

/// A row of a sparsity table (Figures 1, 4, 5, 6).
#[derive(Debug, Clone, Deserialize)]
pub struct SparsityRow {
    pub experiment: String,
    pub data: String,
    pub procedure: String,
    pub level: usize,
    pub remaining: f64,
    pub n: usize,
    pub early_stop_iteration_mean: f64,
    pub early_stop_iteration_min: f64,
    pub early_stop_iteration_max: f64,
    pub early_stop_test_acc_mean: f64,
    pub early_stop_test_acc_min: f64,
    pub early_stop_test_acc_max: f64,
    pub final_test_acc_mean: f64,
    pub final_test_acc_min: f64,
    pub final_test_acc_max: f64,
}

/// A row of a checkpoint table (Figures 7, 8).
#[derive(Debug, Clone, Deserialize)]
pub struct CheckpointRow {
    pub experiment: String,
    pub data: String,
    pub procedure: String,
    pub level: usize,
    pub checkpoint: usize,
    pub remaining: f64,
    pub iteration: f64,
    pub n: usize,
    pub test_acc_mean: f64,
    pub test_acc_min: f64,
    pub test_acc_max: f64,
}

/// A row of the instability table (one experiment, level and rewind point).
#[derive(Debug, Clone, Deserialize)]
pub struct InstabilityRow {
    pub experiment: String,
    pub data: String,
    pub level: usize,
    pub remaining: f64,
    pub rewind: usize,
    pub n: usize,
    pub barrier_mean: f64,
    pub barrier_min: f64,
    pub barrier_max: f64,
}

/// Draws `figure` from its table CSV into `svg` and, if given, `png`, with the scale recorded in
/// the provenance file beside the table (`figN.md`), if there is one.
pub fn draw_from_csv(figure: &Figure, table: &Path, svg: &Path, png: Option<&Path>) -> Result<()> {
    draw(figure, table, recorded_scale(table).as_deref(), svg, png)
}

/// The scale a committed table was made at: the `| scale | `quick` |` row of the `.md` beside it.
pub fn recorded_scale(table: &Path) -> Option<String> {
    let text = std::fs::read_to_string(table.with_extension("md")).ok()?;
    let row = text.lines().find_map(|l| l.strip_prefix("| scale | `"))?;
    Some(row.split('`').next()?.to_string())
}

/// Draws `figure` from its table CSV into `svg` and, if given, `png`, headed by the paper's
/// figure, the networks, `scale` and the data. Both are drawn into temporary files and renamed
/// into place only when both are complete: a kill or an error while drawing leaves the previous
/// files as they were.
pub fn draw(figure: &Figure, table: &Path, scale: Option<&str>, svg: &Path, png: Option<&Path>) -> Result<()> {
    let svg_tmp = files::unique_temp(svg);
    // plotters picks the bitmap format from the extension, so it must stay last.
    let png_tmp = png.map(|p| files::unique_temp(p).with_extension("tmp.png"));
    let drawn = draw_into(figure, table, scale, &svg_tmp, png_tmp.as_deref());
    let renamed = drawn.and_then(|()| {
        files::rename(&svg_tmp, svg)?;
        match (&png_tmp, png) {
            (Some(tmp), Some(png)) => files::rename(tmp, png),
            _ => Ok(()),
        }
    });
    for tmp in [Some(svg_tmp), png_tmp].into_iter().flatten() {
        let _ = std::fs::remove_file(tmp);
    }
    renamed
}

/// The line above the panels: the figure's title, its scale and, for anything but the official
/// images, which data it trained on.
fn heading<'a>(figure: &Figure, scale: Option<&str>, data: impl Iterator<Item = &'a str>) -> String {
    let mut parts = vec![figure.title.to_string()];
    if let Some(scale) = scale {
        parts.push(format!("scale {scale}"));
    }
    if let Some(caveat) = data_caveat(data) {
        parts.push(caveat);
    }
    parts.join(" · ")
}

fn draw_into(figure: &Figure, table: &Path, scale: Option<&str>, svg: &Path, png: Option<&Path>) -> Result<()> {
    register_font();
    // The drawing expression is pasted once per backend, so each copy is typed for its own.
    macro_rules! render {
        ($size:expr, $draw:expr) => {{
            let root = SVGBackend::new(svg, $size).into_drawing_area();
            $draw(&root)?;
            root.present().map_err(|e| plot_error(svg, e))?;
            drop(root);
            if let Some(png) = png {
                let root = BitMapBackend::new(png, $size).into_drawing_area();
                $draw(&root)?;
                root.present().map_err(|e| plot_error(png, e))?;
            }
            Ok(())
        }};
    }
    match figure.kind {
        Kind::Curves => {
            let rows: Vec<Fig3Row> = read_csv(table)?;
            let title = heading(figure, scale, std::iter::empty());
            let legends = fig3_panels(&rows).into_iter().map(|(_, curves)| curves.iter().map(Entry::of_curve).collect()).collect();
            let frame = Frame::new(title, legends, 3);
            render!(frame.size(), |root| fig3(&rows, &frame, root))
        }
        Kind::Sparsity(procedures) => {
            let rows: Vec<SparsityRow> = read_csv(table)?;
            // Fig 1 shows early stopping and accuracy at early stop only, as in the paper.
            let metrics = if figure.id == "fig1" { &METRICS[..2] } else { &METRICS[..] };
            let title = heading(figure, scale, rows.iter().map(|r| r.data.as_str()));
            let legend = sparsity_series(&rows, procedures, &metrics[0]).iter().map(Entry::of_points).collect();
            let frame = Frame::new(title, vec![legend], metrics.len());
            render!(frame.size(), |root| sparsity(&rows, procedures, metrics, &frame, root))
        }
        Kind::Instability => {
            let rows: Vec<InstabilityRow> = read_csv(table)?;
            // Its panels mix datasets (LeNet on MNIST beside CIFAR-10 networks): each panel names
            // its own data, so the heading's caveat cannot be read as covering MNIST.
            let title = heading(figure, scale, std::iter::empty());
            let experiments = distinct(rows.iter().map(|r| r.experiment.as_str()));
            let legends = experiments.iter().map(|e| instability_series(&rows, e).iter().map(Entry::of_points).collect()).collect();
            let frame = Frame::new(title, legends, experiments.len().max(1));
            render!(frame.size(), |root| instability(&rows, &experiments, &frame, root))
        }
        Kind::Checkpoints(points) => {
            let rows: Vec<CheckpointRow> = read_csv(table)?;
            let labels: Vec<String> = (0..points.len()).map(|c| checkpoint_label(points[c].label, &rows, c, points.len() - 1, scale)).collect();
            let title = heading(figure, scale, rows.iter().map(|r| r.data.as_str()));
            let legend = checkpoint_series(&rows, 0).iter().map(Entry::of_points).collect();
            let frame = Frame::new(title, vec![legend], labels.len());
            render!(frame.size(), |root| checkpoints(&rows, &labels, &frame, root))
        }
    }
}

/// One legend entry: a line sample and its label.
struct Entry {
    label: String,
    colour: RGBColor,
    dashed: bool,
}

impl Entry {
    fn of_curve(c: &Curve) -> Entry {
        Entry { label: c.label.clone(), colour: c.colour, dashed: c.dashed }
    }

    fn of_points(p: &Points) -> Entry {
        Entry { label: p.label.clone(), colour: p.colour, dashed: p.dashed }
    }
}

const TITLE_HEIGHT: u32 = 34;
/// A generous average advance of the heading's 16-pixel font, to keep a long heading inside.
const TITLE_CHAR_WIDTH: u32 = 7;
const LEGEND_ROW: u32 = 22;
const LEGEND_ENTRY_WIDTH: u32 = 330;

/// A figure's layout: the heading on top, the panels side by side, and the legend in a strip
/// below them, where it can never cover data. `legends` holds one legend for all panels, or one
/// per panel (drawn under its panel).
struct Frame {
    title: String,
    legends: Vec<Vec<Entry>>,
    panels: usize,
}

impl Frame {
    fn new(title: String, legends: Vec<Vec<Entry>>, panels: usize) -> Frame {
        Frame { title, legends, panels }
    }

    /// The panels side by side, widened where the heading would not fit above them (one panel).
    fn width(&self) -> u32 {
        (self.panels as u32 * PANEL.0).max(self.title.chars().count() as u32 * TITLE_CHAR_WIDTH + 40)
    }

    /// Entries per legend row, and the legend strip's height.
    fn legend_layout(&self) -> (usize, u32) {
        let strip_width = if self.legends.len() == 1 { self.width() } else { PANEL.0 };
        let per_row = ((strip_width - 20) / LEGEND_ENTRY_WIDTH).max(1) as usize;
        let rows = self.legends.iter().map(|l| l.len().div_ceil(per_row)).max().unwrap_or(0) as u32;
        (per_row, if rows == 0 { 0 } else { rows * LEGEND_ROW + 14 })
    }

    fn size(&self) -> (u32, u32) {
        (self.width(), TITLE_HEIGHT + PANEL.1 + self.legend_layout().1)
    }

    /// Fills `root`, draws the heading and the legends, and returns the panels' areas.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<Vec<DrawingArea<DB, Shift>>> {
        root.fill(&WHITE).map_err(draw_error)?;
        let (top, rest) = root.split_vertically(TITLE_HEIGHT);
        let centre = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        top.draw(&Text::new(self.title.clone(), (self.width() as i32 / 2, TITLE_HEIGHT as i32 / 2 + 2), centre)).map_err(draw_error)?;
        let (body, strip) = rest.split_vertically(PANEL.1);
        let (per_row, _) = self.legend_layout();
        let strips = if self.legends.len() == 1 { vec![strip] } else { strip.split_evenly((1, self.legends.len())) };
        let left = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (area, entries) in strips.iter().zip(&self.legends) {
            for (i, e) in entries.iter().enumerate() {
                let (x, y) = (16 + (i % per_row) as i32 * LEGEND_ENTRY_WIDTH as i32, 12 + (i / per_row) as i32 * LEGEND_ROW as i32);
                let style = e.colour.stroke_width(2);
                if e.dashed {
                    area.draw(&DashedPathElement::new(vec![(x, y), (x + 28, y)], 5, 3, style)).map_err(draw_error)?;
                } else {
                    area.draw(&PathElement::new(vec![(x, y), (x + 28, y)], style)).map_err(draw_error)?;
                }
                area.draw(&Text::new(e.label.clone(), (x + 36, y), left.clone())).map_err(draw_error)?;
            }
        }
        Ok(body.split_evenly((1, self.panels)))
    }
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and valid, so registration cannot fail in practice.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../../assets/DejaVuSans.ttf"));
    });
}

fn plot_error<E: std::error::Error + Send + Sync>(path: &Path, e: DrawingAreaErrorKind<E>) -> Error {
    Error::Invalid(format!("{}: drawing failed: {e}", path.display()))
}

fn draw_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> Error {
    Error::Invalid(format!("drawing failed: {e}"))
}

/// Pm as the paper prints it: percent with one decimal.
fn pm_label(remaining: f64) -> String {
    format!("{:.1}", 100.0 * remaining)
}

/// One curve of Figure 3: (iteration, mean, min, max) in percent.
struct Curve {
    label: String,
    colour: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64, f64, f64)>,
}

fn curve(rows: &[Fig3Row], procedure: &str, pm: &str) -> Option<Vec<(f64, f64, f64, f64)>> {
    let points: Vec<_> = rows
        .iter()
        .filter(|r| r.procedure == procedure && pm_label(r.remaining) == pm)
        .map(|r| (r.iteration as f64, 100.0 * r.test_acc_mean, 100.0 * r.test_acc_min, 100.0 * r.test_acc_max))
        .collect();
    (!points.is_empty()).then_some(points)
}

/// Figure 3's panels: test accuracy over training. Left: Pm = 100, 51.3, 21.1; middle: 100,
/// 21.1, 7.0, 3.6, 1.9; right: tickets (solid) vs reinit (dashed) at 51.3 and 21.1. Pm values
/// with no level at the table's scale are left out.
fn fig3_panels(rows: &[Fig3Row]) -> Vec<(&'static str, Vec<Curve>)> {
    let ticket_panel = |pms: &[&str]| -> Vec<Curve> {
        pms.iter()
            .enumerate()
            .filter_map(|(i, pm)| curve(rows, "ticket", pm).map(|points| Curve { label: pm.to_string(), colour: LEVEL_COLOURS[i % 6], dashed: false, points }))
            .collect()
    };
    let mut comparison = Vec::new();
    for (i, pm) in ["51.3", "21.1"].iter().enumerate() {
        for (procedure, dashed) in [("ticket", false), ("reinit", true)] {
            if let Some(points) = curve(rows, procedure, pm) {
                comparison.push(Curve { label: format!("{pm} ({procedure})"), colour: LEVEL_COLOURS[i], dashed, points });
            }
        }
    }
    vec![
        ("Tickets, Pm (%) = 100, 51.3, 21.1", ticket_panel(&["100.0", "51.3", "21.1"])),
        ("Tickets, Pm (%) = 100 … 1.9", ticket_panel(&["100.0", "21.1", "7.0", "3.6", "1.9"])),
        ("Tickets vs reinit", comparison),
    ]
}

/// Figure 3 in `frame`: each panel's legend below it.
fn fig3<DB: DrawingBackend>(rows: &[Fig3Row], frame: &Frame, root: &DrawingArea<DB, Shift>) -> Result<()> {
    for (panel, (title, curves)) in frame.draw(root)?.iter().zip(fig3_panels(rows)) {
        accuracy_panel(panel, title, &curves)?;
    }
    Ok(())
}

fn accuracy_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, curves: &[Curve]) -> Result<()> {
    let x_max = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)).fold(1.0, f64::max);
    // The y range leaves out the first tenth of training, as the paper's panels do.
    let settled = curves.iter().flat_map(|c| c.points.iter().filter(|p| p.0 >= 0.1 * x_max).map(|p| p.1));
    let y_min = settled.fold(100.0, f64::min).clamp(0.0, 99.0) - 0.5;
    let y_max = curves.iter().flat_map(|c| c.points.iter().map(|p| p.3)).fold(y_min + 1.0, f64::max).min(100.0) + 0.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, y_min.max(0.0)..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("Training iterations")
        .y_desc("Test accuracy (%)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style((FONT, 13))
        .draw()
        .map_err(draw_error)?;
    for c in curves {
        let colour = c.colour;
        let mut band: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.3)).collect();
        band.extend(c.points.iter().rev().map(|p| (p.0, p.2)));
        chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.15)))).map_err(draw_error)?;
        let line: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.1)).collect();
        let style = colour.stroke_width(2);
        if c.dashed {
            chart.draw_series(DashedLineSeries::new(line, 6, 4, style)).map_err(draw_error)?;
        } else {
            chart.draw_series(LineSeries::new(line, style)).map_err(draw_error)?;
        }
    }
    Ok(())
}

/// One series of a sparsity figure: (Pm %, mean, min, max) per level.
struct Points {
    label: String,
    colour: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64, f64, f64)>,
}

/// A panel of a sparsity figure: title, y label, the metric, and its display scale.
type Metric = (&'static str, &'static str, fn(&SparsityRow) -> (f64, f64, f64), f64);

const METRICS: [Metric; 3] = [
    (
        "Early-stop iteration",
        "Iteration of min. validation loss",
        |r| (r.early_stop_iteration_mean, r.early_stop_iteration_min, r.early_stop_iteration_max),
        1.0,
    ),
    ("Test accuracy at early stop", "Test accuracy (%)", |r| (r.early_stop_test_acc_mean, r.early_stop_test_acc_min, r.early_stop_test_acc_max), 100.0),
    ("Test accuracy at the last iteration", "Test accuracy (%)", |r| (r.final_test_acc_mean, r.final_test_acc_min, r.final_test_acc_max), 100.0),
];

/// The series of one checkpoint of Figures 7 and 8: colour is the learning-rate variant, tickets
/// solid and reinit dashed. As in the sparsity figures, reinit's series starts at the tickets'
/// dense level 0.
fn checkpoint_series(rows: &[CheckpointRow], checkpoint: usize) -> Vec<Points> {
    let mut series = Vec::new();
    for (e, experiment) in distinct(rows.iter().map(|r| r.experiment.as_str())).iter().enumerate() {
        for (procedure, dashed) in [("ticket", false), ("reinit", true)] {
            let mut points: Vec<_> = rows
                .iter()
                .filter(|r| r.experiment == *experiment && r.checkpoint == checkpoint)
                .filter(|r| r.procedure == procedure || (r.procedure == "ticket" && r.level == 0))
                .map(|r| (100.0 * r.remaining, 100.0 * r.test_acc_mean, 100.0 * r.test_acc_min, 100.0 * r.test_acc_max))
                .collect();
            points.sort_by(|a, b| b.0.total_cmp(&a.0));
            // As in `sparsity_series`: a ticket of the dense network alone is one point, a
            // control with no level of its own is left out.
            if rows.iter().any(|r| r.experiment == *experiment && r.procedure == procedure) {
                series.push(Points {
                    label: format!("{} {}", experiment_label(experiment), procedure_label(procedure)),
                    colour: LEVEL_COLOURS[e % 6],
                    dashed,
                    points,
                });
            }
        }
    }
    series
}

/// The title of checkpoint `checkpoint`'s panel: the paper's checkpoint (`label`) and, below
/// `paper` scale, the iteration the table read it at, which is the same fraction of a shorter
/// training (`30K of 112K iterations · here 300 of 1200`), when all its rows agree on it.
fn checkpoint_label(label: &str, rows: &[CheckpointRow], checkpoint: usize, last: usize, scale: Option<&str>) -> String {
    let at = |c: usize| {
        let iterations: std::collections::BTreeSet<u64> = rows.iter().filter(|r| r.checkpoint == c).map(|r| r.iteration.round() as u64).collect();
        (iterations.len() == 1).then(|| iterations.into_iter().next()).flatten()
    };
    match (scale, at(checkpoint), at(last)) {
        (Some("paper"), _, _) => label.to_string(),
        (_, Some(here), Some(total)) => format!("{label} · here {here} of {total}"),
        _ => label.to_string(),
    }
}

/// Figures 7 and 8: one panel per checkpoint, test accuracy against Pm on a log axis, bars
/// min/max.
fn checkpoints<DB: DrawingBackend>(rows: &[CheckpointRow], labels: &[String], frame: &Frame, root: &DrawingArea<DB, Shift>) -> Result<()> {
    for (checkpoint, (panel, label)) in frame.draw(root)?.iter().zip(labels).enumerate() {
        sparsity_panel(panel, &format!("Test accuracy at {label}"), "Test accuracy (%)", &checkpoint_series(rows, checkpoint))?;
    }
    Ok(())
}

/// The series of one experiment of the instability figure: one per level (the dense network,
/// then the tickets), (iteration the copies start at, barrier mean, min, max) in pp.
fn instability_series(rows: &[InstabilityRow], experiment: &str) -> Vec<Points> {
    let mut levels: Vec<(usize, f64)> = rows.iter().filter(|r| r.experiment == experiment).map(|r| (r.level, r.remaining)).collect();
    levels.sort_by_key(|&(level, _)| level);
    levels.dedup_by_key(|&mut (level, _)| level);
    levels
        .iter()
        .enumerate()
        .map(|(i, &(level, remaining))| {
            let mut points: Vec<_> = rows
                .iter()
                .filter(|r| r.experiment == experiment && r.level == level)
                .map(|r| (r.rewind as f64, 100.0 * r.barrier_mean, 100.0 * r.barrier_min, 100.0 * r.barrier_max))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let label = if level == 0 { "dense (Pm 100%)".to_string() } else { format!("ticket, level {level} (Pm {}%)", pm_label(remaining)) };
            Points { label, colour: LEVEL_COLOURS[i % 6], dashed: false, points }
        })
        .collect()
}

/// The instability figure: one panel per experiment, the error barrier against the iteration
/// the copies start from, bars min/max over pairs.
fn instability<DB: DrawingBackend>(rows: &[InstabilityRow], experiments: &[&str], frame: &Frame, root: &DrawingArea<DB, Shift>) -> Result<()> {
    for (panel, experiment) in frame.draw(root)?.iter().zip(experiments) {
        let series = instability_series(rows, experiment);
        let all = || series.iter().flat_map(|s| s.points.iter());
        let x_max = all().map(|p| p.0).fold(1.0, f64::max);
        let (lo, hi) = (all().map(|p| p.2).fold(0.0, f64::min), all().map(|p| p.3).fold(1.0, f64::max));
        let pad = (hi - lo) * 0.08;
        let name = experiment.strip_suffix("_lmc").unwrap_or(experiment);
        let title = format!("{} · {}", experiment_label(name), panel_data(name, rows.iter().filter(|r| r.experiment == *experiment).map(|r| r.data.as_str())));
        let mut chart = ChartBuilder::on(panel)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.03 * x_max..x_max * 1.03, lo - pad..hi + pad)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("Iteration the copies start from (k)")
            .y_desc("Error barrier (pp of test error)")
            // Iterations are whole: a short axis (smoke's 0 and 1) labels its whole ticks only.
            .x_label_formatter(&|v| if (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { String::new() })
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style((FONT, 13))
            .draw()
            .map_err(draw_error)?;
        for s in &series {
            let line: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
            chart.draw_series(LineSeries::new(line.clone(), s.colour.stroke_width(2))).map_err(draw_error)?;
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, s.colour.filled()))).map_err(draw_error)?;
            let bars = s.points.iter().map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], s.colour.stroke_width(1)));
            chart.draw_series(bars).map_err(draw_error)?;
        }
    }
    Ok(())
}

/// What a panel title says about data that is not the official images (None for them).
fn data_caveat<'a>(mut data: impl Iterator<Item = &'a str>) -> Option<String> {
    data.find_map(|d| d.parse::<crate::base::spec::DataSource>().ok().and_then(|d| d.caveat()))
}

/// The dataset a panel's experiment trained on, with the caveat of data that is not the official
/// images: LeNet's is MNIST (always the real one), every other network's CIFAR-10.
fn panel_data<'a>(experiment: &str, data: impl Iterator<Item = &'a str>) -> String {
    let dataset = if experiment.starts_with("lenet") { "MNIST" } else { "CIFAR-10" };
    match data_caveat(data) {
        Some(caveat) => format!("{dataset}, {caveat}"),
        None => dataset.to_string(),
    }
}

/// The distinct values of `names`, in order of first appearance.
fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for name in names {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn experiment_label(name: &str) -> String {
    // Rewinding, beyond the paper: `<experiment>_rewind<k>`. The figure's title says where it
    // rewinds to, since k is an iteration of the paper's training and a smaller scale rewinds to
    // the same fraction of its own.
    if let Some((base, _)) = name.rsplit_once("_rewind") {
        return format!("{} rewound (beyond paper)", experiment_label(base));
    }
    // VGG-19 and ResNet-18 variants: `<net>_lr<rate>[_warmup[_late_drops]]`.
    for (prefix, net) in [("vgg19_", "VGG-19"), ("resnet18_", "ResNet-18")] {
        if let Some(variant) = name.strip_prefix(prefix) {
            let rate = variant.trim_start_matches("lr").replace("_warmup_late_drops", " + warmup, late drops").replace("_warmup", " + warmup");
            return format!("{net} lr {rate}");
        }
    }
    let base = |n: &str| match n {
        "lenet" => "LeNet".to_string(),
        // An instability experiment's name without its `_lmc`: the bare network.
        "resnet18" => "ResNet-18".to_string(),
        "vgg19" => "VGG-19".to_string(),
        other => other.strip_prefix("conv").map(|k| format!("Conv-{k}")).unwrap_or_else(|| other.to_string()),
    };
    match name.strip_suffix("_dropout") {
        Some(n) => format!("{} + dropout", base(n)),
        None => base(name),
    }
}

fn procedure_label(name: &str) -> &'static str {
    match name {
        "ticket" => "ticket",
        "reinit" => "reinit",
        "oneshot" => "one-shot",
        "random_prune" => "random sparse",
        "init_random" => "random at init",
        "init_magnitude" => "magnitude at init",
        "snip" => "SNIP",
        "synflow" => "SynFlow",
        _ => "?",
    }
}

/// The series of one metric of Figures 1, 4, 5, 6: metrics against Pm on a log axis (100 →
/// small, as in the paper), one series per experiment and procedure. At Pm = 100% every
/// procedure is the same dense network trained once (one-shot and random pruning from theta0
/// literally; reinit by convention), so each control's series starts at the tickets' level 0.
/// With one experiment, colour tells the procedures apart; with several, colour is the network
/// and controls are dashed.
fn sparsity_series(rows: &[SparsityRow], procedures: &[&str], (_, _, metric, scale): &Metric) -> Vec<Points> {
    let experiments = distinct(rows.iter().map(|r| r.experiment.as_str()));
    let mut series = Vec::new();
    for (e, experiment) in experiments.iter().enumerate() {
        for (p, procedure) in procedures.iter().enumerate() {
            let mut points: Vec<_> = rows
                .iter()
                .filter(|r| r.experiment == *experiment)
                .filter(|r| r.procedure == *procedure || (r.procedure == "ticket" && r.level == 0))
                .map(|r| {
                    let (mean, min, max) = metric(r);
                    (100.0 * r.remaining, scale * mean, scale * min, scale * max)
                })
                .collect();
            points.sort_by(|a, b| b.0.total_cmp(&a.0));
            let (label, colour, dashed) = if experiments.len() == 1 {
                (procedure_label(procedure).to_string(), LEVEL_COLOURS[p % 6], false)
            } else {
                (format!("{} {}", experiment_label(experiment), procedure_label(procedure)), LEVEL_COLOURS[e % 6], p > 0)
            };
            // Every series also holds the dense network (level 0): a control with no level of
            // its own is left out, but a ticket of the dense network alone is one point.
            if rows.iter().any(|r| r.experiment == *experiment && r.procedure == *procedure) {
                series.push(Points { label, colour, dashed, points });
            }
        }
    }
    series
}

fn sparsity<DB: DrawingBackend>(rows: &[SparsityRow], procedures: &[&str], metrics: &[Metric], frame: &Frame, root: &DrawingArea<DB, Shift>) -> Result<()> {
    for (panel, metric) in frame.draw(root)?.iter().zip(metrics) {
        sparsity_panel(panel, metric.0, metric.1, &sparsity_series(rows, procedures, metric))?;
    }
    Ok(())
}

fn sparsity_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, y_desc: &str, series: &[Points]) -> Result<()> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let pm_min = all().map(|p| p.0).fold(100.0, f64::min);
    let (lo, hi) = (all().map(|p| p.2).fold(f64::INFINITY, f64::min), all().map(|p| p.3).fold(f64::NEG_INFINITY, f64::max));
    let (lo, hi) = if lo.is_finite() && hi.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = if hi - lo > 1e-9 { (hi - lo) * 0.08 } else { (hi.abs() * 0.05).max(1.0) };
    // x is -log10(Pm %), so the axis runs from 100 down to the smallest Pm left to right.
    let x = |pm: f64| -pm.log10();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x(100.0) - 0.05..x(pm_min) + 0.05, lo - pad..hi + pad)
        .map_err(draw_error)?;
    // Mesh and labels only on y: x gets ticks at round Pm values, drawn below.
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("Percent of weights remaining")
        .y_desc(y_desc)
        .y_label_formatter(&|v| {
            if hi > 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        })
        .label_style((FONT, 13))
        .draw()
        .map_err(draw_error)?;
    let tick_style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    // Every round value the axis reaches (it runs 0.05 decades past the smallest Pm), so the
    // deepest level has a labelled tick near it.
    for &tick in PM_TICKS.iter().filter(|&&t| x(t) <= x(pm_min) + 0.05) {
        let grid = LineSeries::new([(x(tick), lo - pad), (x(tick), hi + pad)], BLACK.mix(0.15));
        chart.draw_series(grid).map_err(draw_error)?;
        let label = EmptyElement::at((x(tick), lo - pad)) + Text::new(format!("{tick}"), (0, 6), tick_style.clone());
        chart.draw_series(std::iter::once(label)).map_err(draw_error)?;
    }
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let colour = s.colour;
        let line: Vec<(f64, f64)> = s.points.iter().map(|p| (x(p.0), p.1)).collect();
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(line.clone(), 6, 4, colour.stroke_width(2))).map_err(draw_error)?;
        } else {
            chart.draw_series(LineSeries::new(line.clone(), colour.stroke_width(2))).map_err(draw_error)?;
        }
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, colour.filled()))).map_err(draw_error)?;
        let bars = s.points.iter().map(|p| PathElement::new(vec![(x(p.0), p.2), (x(p.0), p.3)], colour.stroke_width(1)));
        chart.draw_series(bars).map_err(draw_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(procedure: &str, level: usize, remaining: f64) -> SparsityRow {
        SparsityRow {
            experiment: "conv2_dropout".into(),
            data: "real".into(),
            procedure: procedure.into(),
            level,
            remaining,
            n: 1,
            early_stop_iteration_mean: 4250.0,
            early_stop_iteration_min: 4250.0,
            early_stop_iteration_max: 4250.0,
            early_stop_test_acc_mean: 0.695,
            early_stop_test_acc_min: 0.695,
            early_stop_test_acc_max: 0.695,
            final_test_acc_mean: 0.70,
            final_test_acc_min: 0.70,
            final_test_acc_max: 0.70,
        }
    }

    /// Circles drawn (one per point and panel) for `rows`, as Figure 6 draws them.
    fn circles(rows: &[SparsityRow]) -> usize {
        register_font();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1200, 400)).into_drawing_area();
            let frame = Frame::new(String::new(), vec![], METRICS.len());
            sparsity(rows, &["ticket", "reinit"], &METRICS, &frame, &root).unwrap();
            root.present().unwrap();
        }
        svg.matches("<circle").count()
    }

    /// A run with only its dense network finished is drawn as one point per panel (it was left
    /// out as a one-point series, which drew three empty panels); a control whose only point
    /// would be the dense network it shares is still left out.
    #[test]
    fn a_ticket_of_the_dense_network_alone_is_drawn_and_an_empty_control_is_not() {
        assert_eq!(circles(&[row("ticket", 0, 1.0)]), 3);
        assert_eq!(circles(&[row("ticket", 0, 1.0), row("ticket", 1, 0.8)]), 6);
        assert_eq!(circles(&[row("ticket", 0, 1.0), row("ticket", 1, 0.8), row("reinit", 1, 0.8)]), 6 + 6);
    }

    fn checkpoint_row(procedure: &str, level: usize, remaining: f64, checkpoint: usize, iteration: f64) -> CheckpointRow {
        let acc = 0.5 + 0.01 * level as f64;
        CheckpointRow {
            experiment: "vgg19_lr0.1_warmup".into(),
            data: "real".into(),
            procedure: procedure.into(),
            level,
            checkpoint,
            remaining,
            iteration,
            n: 1,
            test_acc_mean: acc,
            test_acc_min: acc,
            test_acc_max: acc,
        }
    }

    /// Figures 7 and 8 draw a run with only its dense network finished as one point per
    /// checkpoint panel, as the sparsity figures do; a control with no level of its own is not
    /// drawn. Each panel below `paper` scale says which iteration it read.
    #[test]
    fn a_checkpoint_figure_draws_a_lone_dense_network_and_names_its_iterations() {
        let at = |procedure, level, remaining| (0..3).map(move |c| checkpoint_row(procedure, level, remaining, c, [300.0, 600.0, 1200.0][c]));
        let circles = |rows: &[CheckpointRow]| {
            register_font();
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (1200, 400)).into_drawing_area();
                let frame = Frame::new(String::new(), vec![], 3);
                checkpoints(rows, &["a".into(), "b".into(), "c".into()], &frame, &root).unwrap();
                root.present().unwrap();
            }
            svg.matches("<circle").count()
        };
        let dense: Vec<_> = at("ticket", 0, 1.0).collect();
        assert_eq!(circles(&dense), 3);
        let with_control: Vec<_> = dense.iter().cloned().chain(at("ticket", 1, 0.8)).chain(at("reinit", 1, 0.8)).collect();
        assert_eq!(circles(&with_control), 3 * (2 + 2));
        assert_eq!(checkpoint_label("30K of 112K iterations", &dense, 0, 2, Some("quick")), "30K of 112K iterations · here 300 of 1200");
        assert_eq!(checkpoint_label("30K of 112K iterations", &dense, 0, 2, Some("paper")), "30K of 112K iterations");
        let mixed: Vec<_> = dense.iter().cloned().chain(std::iter::once(checkpoint_row("ticket", 1, 0.8, 0, 400.0))).collect();
        assert_eq!(checkpoint_label("30K of 112K iterations", &mixed, 0, 2, None), "30K of 112K iterations", "rows that disagree name no iteration");
    }

    /// The instability figure puts LeNet (MNIST) beside CIFAR-10 networks trained on a copy: each
    /// panel says which data it trained on, and the copy's caveat stays off LeNet's panel.
    #[test]
    fn each_instability_panel_names_its_own_data() {
        let copy = format!("jpeg-copy-{}", "cb6c50520509605d4bd1856cb7eaba797dabcec3c19d93ce945b0ec1aee34a5f");
        assert_eq!(panel_data("lenet", ["real"].into_iter()), "MNIST");
        assert_eq!(panel_data("conv2", [copy.as_str()].into_iter()), "CIFAR-10, JPEG copy cb6c5052, lossy");
        assert_eq!(panel_data("resnet18", ["synthetic"].into_iter()), "CIFAR-10, SYNTHETIC data");
        assert_eq!(experiment_label("resnet18"), "ResNet-18", "the bare network of `resnet18_lmc`");
    }
}
