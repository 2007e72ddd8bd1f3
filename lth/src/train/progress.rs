//! Progress reporting: an indicatif bar over all pending trainings (level, iteration, accuracy,
//! overall ETA) on a terminal; otherwise (CI, log files, cluster jobs) one plain line per
//! finished level, and between them at most one line a minute at an evaluation, so a long
//! training is never silent for long; both with the overall ETA. Each training weighs its estimated cost (`estimate`), so the ETA does
//! not run fast through the sparse levels and slow through the dense ones.

use crate::train::training::{CurvePoint, Observer};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Without a terminal, the least time between two lines written at evaluations.
const LOG_EVERY: Duration = Duration::from_secs(60);

pub struct Progress {
    bar: ProgressBar,
    interactive: bool,
    done_levels: AtomicUsize,
    total_levels: usize,
    done_units: AtomicU64,
    total_units: u64,
    started: Instant,
    /// Without a terminal: when the last line was written, and where lines go.
    last_line: Mutex<Instant>,
    log_every: Duration,
    sink: Box<dyn Fn(&str) + Send + Sync>,
}

impl Progress {
    /// A bar over `total_levels` trainings weighing `total_units` in all.
    pub fn new(total_units: u64, total_levels: usize) -> Self {
        let interactive = std::io::stderr().is_terminal();
        let bar = if interactive {
            let bar = ProgressBar::new(total_units);
            let style =
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}% ETA {eta} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar
        } else {
            ProgressBar::hidden()
        };
        Self::with(bar, interactive, total_units, total_levels, LOG_EVERY, Box::new(|line| eprintln!("{line}")))
    }

    fn with(bar: ProgressBar, interactive: bool, total_units: u64, total_levels: usize, log_every: Duration, sink: Box<dyn Fn(&str) + Send + Sync>) -> Self {
        let (done_levels, done_units, now) = (AtomicUsize::new(0), AtomicU64::new(0), Instant::now());
        Progress { bar, interactive, done_levels, total_levels, done_units, total_units, started: now, last_line: Mutex::new(now), log_every, sink }
    }

    /// Reporting for one training of `label` (run and level) of `iterations` steps, weighing
    /// `units` of the total.
    pub fn level(&self, label: String, units: u64, iterations: usize) -> LevelProgress<'_> {
        let per_step = units as f64 / iterations.max(1) as f64;
        LevelProgress { progress: self, label, started: Instant::now(), last: None, units, per_step, counted: 0, steps: 0 }
    }

    /// The time left at the rate so far, once there is a rate.
    fn remaining(&self) -> Option<f64> {
        let done = self.done_units.load(Ordering::Relaxed);
        (done > 0).then(|| self.started.elapsed().as_secs_f64() * self.total_units.saturating_sub(done) as f64 / done as f64)
    }

    fn advance(&self, units: u64) {
        self.done_units.fetch_add(units, Ordering::Relaxed);
        self.bar.inc(units);
    }

    pub fn line(&self, text: String) {
        if self.interactive {
            self.bar.println(text);
        } else {
            (self.sink)(&text);
            if let Ok(mut last) = self.last_line.lock() {
                *last = Instant::now();
            }
        }
    }

    /// Without a terminal, writes `text` (with the overall ETA) if no line was written for
    /// [`LOG_EVERY`].
    fn periodic(&self, text: &str) {
        if self.interactive {
            return;
        }
        let Ok(mut last) = self.last_line.lock() else { return };
        if last.elapsed() >= self.log_every {
            let left = self.remaining().map(|seconds| format!("; all: about {} left", human(seconds))).unwrap_or_default();
            (self.sink)(&format!("{text}{left}"));
            *last = Instant::now();
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub struct LevelProgress<'a> {
    progress: &'a Progress,
    label: String,
    started: Instant,
    last: Option<CurvePoint>,
    units: u64,
    per_step: f64,
    /// Units already added to the progress, and steps taken.
    counted: u64,
    steps: usize,
}

impl Observer for LevelProgress<'_> {
    fn on_step(&mut self, _iteration: usize) {
        self.steps += 1;
        let due = ((self.steps as f64 * self.per_step) as u64).min(self.units);
        self.progress.advance(due - self.counted);
        self.counted = due;
    }

    fn on_eval(&mut self, p: &CurvePoint) {
        self.last = Some(*p);
        let text = format!("{} it {} val acc {:.2}% test acc {:.2}%", self.label, p.iteration, 100.0 * p.val_acc, 100.0 * p.test_acc);
        self.progress.periodic(&format!("... {text} ({:.0} s)", self.started.elapsed().as_secs_f64()));
        self.progress.bar.set_message(text);
    }
}

impl Drop for LevelProgress<'_> {
    fn drop(&mut self) {
        let p = self.progress;
        p.advance(self.units - self.counted);
        let done = p.done_levels.fetch_add(1, Ordering::Relaxed) + 1;
        let result = match &self.last {
            Some(last) => format!("final test acc {:.2}%", 100.0 * last.test_acc),
            None => "no evaluation".into(),
        };
        let left = match p.remaining() {
            Some(seconds) if done < p.total_levels => format!("; all: about {} left", human(seconds)),
            _ => String::new(),
        };
        let text = format!("[{done}/{}] {}: {result} ({:.1} s{left})", p.total_levels, self.label, self.started.elapsed().as_secs_f64());
        p.line(text);
    }
}

/// `3 h 05 min`, `12 min 30 s`, `40 s`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, _) => format!("{h} h {m:02} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn point(iteration: usize) -> CurvePoint {
        CurvePoint { iteration, train_loss: 1.0, train_acc: 0.5, val_loss: 1.0, val_acc: 0.5, test_loss: 1.0, test_acc: 0.5 }
    }

    /// Without a terminal, a training writes a line at an evaluation only once the interval has
    /// passed since the last line, and always one when it ends.
    #[test]
    fn log_lines_come_between_levels_at_most_once_an_interval() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let sink = Box::new(move |line: &str| sink.lock().unwrap().push(line.to_string()));
        let progress = Progress::with(ProgressBar::hidden(), false, 100, 2, Duration::from_secs(2), sink);
        {
            let mut level = progress.level("conv2 level 0".into(), 50, 10);
            level.on_eval(&point(0));
            std::thread::sleep(Duration::from_millis(2200));
            level.on_eval(&point(5));
            level.on_eval(&point(10));
        }
        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("... conv2 level 0 it 5 "), "{lines:?}");
        assert!(lines[1].starts_with("[1/2] conv2 level 0: final test acc"), "{lines:?}");
    }
}
