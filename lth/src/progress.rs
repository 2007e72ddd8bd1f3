//! Progress reporting: an indicatif bar over all pending training iterations (level, iteration,
//! accuracy, ETA) on a terminal; one plain line per finished level otherwise (CI logs).

use crate::training::{CurvePoint, Observer};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

pub struct Progress {
    bar: ProgressBar,
    interactive: bool,
    done_levels: AtomicUsize,
    total_levels: usize,
}

impl Progress {
    /// A bar over `total_iterations` steps in `total_levels` trainings.
    pub fn new(total_iterations: u64, total_levels: usize) -> Self {
        let interactive = std::io::stderr().is_terminal();
        let bar = if interactive {
            let bar = ProgressBar::new(total_iterations);
            let style =
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}% ETA {eta} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar, interactive, done_levels: AtomicUsize::new(0), total_levels }
    }

    /// Reporting for one training of `label` (run and level).
    pub fn level(&self, label: String) -> LevelProgress<'_> {
        LevelProgress { progress: self, label, started: Instant::now(), last: None }
    }

    /// A level found finished on disk.
    pub fn skipped(&self, label: &str, iterations: u64) {
        let done = self.done_levels.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.inc(iterations);
        self.line(format!("[{done}/{}] {label}: already done", self.total_levels));
    }

    pub fn line(&self, text: String) {
        if self.interactive {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A byte-count bar for one download (hidden when stderr is not a terminal).
pub fn bytes_bar(total: Option<u64>, start: u64, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.unwrap_or(0));
    if let Ok(style) = ProgressStyle::with_template("{bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}") {
        bar.set_style(style);
    }
    bar.set_position(start);
    bar.set_message(label.to_string());
    bar
}

pub struct LevelProgress<'a> {
    progress: &'a Progress,
    label: String,
    started: Instant,
    last: Option<CurvePoint>,
}

impl Observer for LevelProgress<'_> {
    fn on_step(&mut self, _iteration: usize) {
        self.progress.bar.inc(1);
    }

    fn on_eval(&mut self, p: &CurvePoint) {
        self.last = Some(*p);
        let text = format!("{} it {} val acc {:.2}% test acc {:.2}%", self.label, p.iteration, 100.0 * p.val_acc, 100.0 * p.test_acc);
        self.progress.bar.set_message(text);
    }
}

impl Drop for LevelProgress<'_> {
    fn drop(&mut self) {
        let p = self.progress;
        let done = p.done_levels.fetch_add(1, Ordering::Relaxed) + 1;
        let result = match &self.last {
            Some(last) => format!("final test acc {:.2}%", 100.0 * last.test_acc),
            None => "no evaluation".into(),
        };
        let text = format!("[{done}/{}] {}: {result} ({:.1} s)", p.total_levels, self.label, self.started.elapsed().as_secs_f64());
        p.line(text);
    }
}
