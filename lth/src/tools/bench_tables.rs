//! `lth bench`'s results as data: each row's timed repeats, the machine they ran on, the CSV that
//! keeps them and the Markdown tables made from it (one run, several runs side by side, and the
//! ratios alone). Measuring is `bench`'s; this module never times anything.

use crate::base::error::{Error, Result};
use std::path::Path;

/// The timed repeats of one side of a row.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Sample {
    /// The median (the mean of the middle two for an even count), minimum and maximum.
    pub fn of(values: &[f64]) -> Sample {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Sample { median, min: v.first().copied().unwrap_or(f64::NAN), max: v.last().copied().unwrap_or(f64::NAN) }
    }
}

/// One measured row: ours, and optionally an alternative and PyTorch on the same workload.
pub struct Row {
    pub workload: String,
    pub threads: usize,
    pub unit: &'static str,
    pub ours: Sample,
    pub alternative: Option<(String, Sample)>,
    pub pytorch: Option<Sample>,
}

/// What the numbers were measured on, printed above the table and kept in the CSV.
pub struct Machine {
    pub cpu: String,
    /// The product kernels' path (vector width) on this CPU.
    pub kernels: String,
    pub pytorch: Option<String>,
    pub repeats: usize,
}

/// A whole benchmark run.
pub struct Report {
    pub machine: Machine,
    pub rows: Vec<Row>,
}

/// `median [min-max]`, with two decimals for values under 10 (deep-network steps run at about
/// one per second).
fn spread(s: &Sample) -> String {
    let digits = if s.median < 10.0 { 2 } else { 1 };
    format!("{:.digits$} [{:.digits$}-{:.digits$}]", s.median, s.min, s.max)
}

/// The report as Markdown: what it ran on, then one line per row.
pub fn markdown(report: &Report) -> String {
    let m = &report.machine;
    let with_pytorch = report.rows.iter().any(|r| r.pytorch.is_some());
    let mut s = format!(
        "CPU: {}; product kernels: {}; PyTorch: {}; {} timed repeats per side after one warm-up round{}. Each cell: median [min-max]; ratios are of the medians.\n\n",
        m.cpu,
        m.kernels,
        m.pytorch.as_deref().unwrap_or("not run"),
        m.repeats,
        if with_pytorch { ", lth and PyTorch interleaved timing by timing" } else { "" }
    );
    s += "| workload | threads | lth | alternative | lth / alternative |";
    s += if with_pytorch { " PyTorch | lth / PyTorch |\n|---|---|---|---|---|---|---|\n" } else { "\n|---|---|---|---|---|\n" };
    for r in &report.rows {
        s += &format!("| {} |{}\n", r.workload, cells(r, with_pytorch));
    }
    s
}

/// A row's cells after its workload, as the Markdown table has them.
pub(crate) fn cells(r: &Row, with_pytorch: bool) -> String {
    let (alt, ratio) = match &r.alternative {
        Some((name, v)) => (format!("{} ({name})", spread(v)), format!("{:.2}x", r.ours.median / v.median)),
        None => (String::new(), String::new()),
    };
    let mut s = format!(" {} | {} {} | {alt} | {ratio} |", r.threads, spread(&r.ours), r.unit);
    if with_pytorch {
        s += &match &r.pytorch {
            Some(p) => format!(" {} | {:.2}x |", spread(p), r.ours.median / p.median),
            None => " | |".into(),
        };
    }
    s
}

/// Several runs of the same rows side by side, matched by workload and thread count, each lth
/// timing beside PyTorch's (or, in rows PyTorch does not run, beside the alternative it names):
/// the table docs/performance.md generates from the committed CSVs.
pub fn markdown_runs(runs: &[Report]) -> String {
    let mut s = machines(runs);
    s += "| workload | threads |";
    for i in 1..=runs.len() {
        s += &format!(" run {i}: lth | PyTorch (or the alternative named) | ratio |");
    }
    s += &format!("\n|---|---|{}\n", "---|---|---|".repeat(runs.len()));
    for (workload, threads) in row_keys(runs) {
        s += &format!("| {workload} | {threads} |");
        for run in runs {
            s += &match run.rows.iter().find(|r| r.workload == workload && r.threads == threads) {
                Some(r) => {
                    let (other, ratio) = match (&r.pytorch, &r.alternative) {
                        (Some(p), _) => (spread(p), format!("{:.2}x", r.ours.median / p.median)),
                        (None, Some((name, a))) => (format!("{} ({name})", spread(a)), format!("{:.2}x", r.ours.median / a.median)),
                        (None, None) => (String::new(), String::new()),
                    };
                    format!(" {} {} | {other} | {ratio} |", spread(&r.ours), r.unit)
                }
                None => " not run | | |".into(),
            };
        }
        s += "\n";
    }
    s
}

/// The lth / PyTorch ratios of several runs, one line per workload and one column per thread
/// count, each cell the runs' ratios in order: README's summary of the tables above.
pub fn markdown_ratios(runs: &[Report]) -> String {
    let mut threads: Vec<usize> = runs.iter().flat_map(|r| r.rows.iter().map(|r| r.threads)).collect();
    threads.sort_unstable();
    threads.dedup();
    let order = (1..=runs.len()).map(|i| format!("run {i}")).collect::<Vec<_>>().join(" / ");
    let mut s = format!("| workload (lth / PyTorch, {order}) |");
    for t in &threads {
        s += &format!(" {t} thread{} |", if *t == 1 { "" } else { "s" });
    }
    s += &format!("\n|---|{}\n", "---|".repeat(threads.len()));
    let mut workloads: Vec<&str> = Vec::new();
    for (workload, _) in row_keys(runs) {
        if !workloads.contains(&workload) {
            workloads.push(workload);
        }
    }
    for workload in workloads {
        let ratio = |run: &Report, t: usize| {
            let row = run.rows.iter().find(|r| r.workload == workload && r.threads == t)?;
            Some(row.ours.median / row.pytorch.as_ref()?.median)
        };
        if !runs.iter().any(|run| threads.iter().any(|&t| ratio(run, t).is_some())) {
            continue; // a row PyTorch does not run
        }
        s += &format!("| {workload} |");
        for &t in &threads {
            let cell: Vec<String> = runs.iter().map(|run| ratio(run, t).map_or("–".into(), |v| format!("{v:.2}x"))).collect();
            s += &format!(" {} |", cell.join(" / "));
        }
        s += "\n";
    }
    s
}

/// One line per run saying what it ran on.
fn machines(runs: &[Report]) -> String {
    let mut s = String::new();
    for (i, run) in runs.iter().enumerate() {
        let m = &run.machine;
        s += &format!(
            "Run {}: CPU {}; product kernels: {}; PyTorch {}; {} timed repeats per side after one warm-up round.\n",
            i + 1,
            m.cpu,
            m.kernels,
            m.pytorch.as_deref().unwrap_or("not run"),
            m.repeats
        );
    }
    s + "Each cell: median [min-max]; ratios are of the medians.\n\n"
}

/// Every (workload, threads) of the runs, in the order the runs first list them.
fn row_keys(runs: &[Report]) -> Vec<(&str, usize)> {
    let mut keys = Vec::new();
    for row in runs.iter().flat_map(|r| &r.rows) {
        let key = (row.workload.as_str(), row.threads);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The CSV's columns; the machine's description repeats on every row so a row read alone
/// still says where it was measured.
const CSV_HEADER: [&str; 17] = [
    "workload",
    "threads",
    "unit",
    "lth_median",
    "lth_min",
    "lth_max",
    "alternative",
    "alternative_median",
    "alternative_min",
    "alternative_max",
    "pytorch_median",
    "pytorch_min",
    "pytorch_max",
    "cpu",
    "kernels",
    "pytorch_version",
    "repeats",
];

/// Writes the rows as CSV (README's and docs' tables are generated from it), replacing the file
/// whole: a run rewrites it after each row, so a run stopped early keeps what it measured.
pub fn write_csv(m: &Machine, rows: &[Row], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    w.write_record(CSV_HEADER).map_err(|e| Error::Invalid(e.to_string()))?;
    for r in rows {
        let alt = r.alternative.as_ref();
        let p = r.pytorch.as_ref();
        let record = [
            r.workload.clone(),
            r.threads.to_string(),
            r.unit.to_string(),
            num(Some(r.ours.median)),
            num(Some(r.ours.min)),
            num(Some(r.ours.max)),
            alt.map_or(String::new(), |(n, _)| n.clone()),
            num(alt.map(|(_, s)| s.median)),
            num(alt.map(|(_, s)| s.min)),
            num(alt.map(|(_, s)| s.max)),
            num(p.map(|s| s.median)),
            num(p.map(|s| s.min)),
            num(p.map(|s| s.max)),
            m.cpu.clone(),
            m.kernels.clone(),
            m.pytorch.clone().unwrap_or_default(),
            m.repeats.to_string(),
        ];
        w.write_record(&record).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| Error::Invalid(e.to_string()))?;
    crate::base::files::write_atomic(path, &bytes)
}

/// Reads the rows and machine written by [`write_csv`].
pub fn read_csv(path: &Path) -> Result<Report> {
    let bad = |what: String| Error::Invalid(format!("{}: {what}; regenerate it with `lth bench --vs-pytorch --csv {}`", path.display(), path.display()));
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let header: Vec<String> = reader.headers().map_err(|e| bad(e.to_string()))?.iter().map(str::to_string).collect();
    if header != CSV_HEADER {
        return Err(bad(format!("its columns are not `{}`", CSV_HEADER.join(","))));
    }
    let mut rows = Vec::new();
    let mut machine = None;
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let field = |c: usize| record.get(c).unwrap_or("");
        let number = |c: usize| -> Result<Option<f64>> {
            let text = field(c);
            if text.is_empty() {
                return Ok(None);
            }
            text.parse().map(Some).map_err(|_| bad(format!("row {}: `{text}` in column {} is not a number", i + 2, CSV_HEADER[c])))
        };
        let sample = |c: usize| -> Result<Option<Sample>> {
            Ok(match (number(c)?, number(c + 1)?, number(c + 2)?) {
                (Some(median), Some(min), Some(max)) => Some(Sample { median, min, max }),
                _ => None,
            })
        };
        let ours = sample(3)?.ok_or_else(|| bad(format!("row {} has no lth timing", i + 2)))?;
        let unit = match field(2) {
            "it/s" => "it/s",
            "images/s" => "images/s",
            "GFLOP/s" => "GFLOP/s",
            other => return Err(bad(format!("row {}: unknown unit `{other}`", i + 2))),
        };
        let threads = field(1).parse().map_err(|_| bad(format!("row {}: `{}` is not a thread count", i + 2, field(1))))?;
        let alternative = sample(7)?.map(|s| (field(6).to_string(), s));
        rows.push(Row { workload: field(0).to_string(), threads, unit, ours, alternative, pytorch: sample(10)? });
        if machine.is_none() {
            let repeats = field(16).parse().map_err(|_| bad(format!("row {}: `{}` is not a repeat count", i + 2, field(16))))?;
            let pytorch = Some(field(15).to_string()).filter(|v| !v.is_empty());
            machine = Some(Machine { cpu: field(13).to_string(), kernels: field(14).to_string(), pytorch, repeats });
        }
    }
    let machine = machine.ok_or_else(|| bad("it has no rows".into()))?;
    Ok(Report { machine, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_the_median_and_range_of_its_repeats() {
        assert_eq!(Sample::of(&[3.0, 1.0, 2.0, 5.0, 4.0]), Sample { median: 3.0, min: 1.0, max: 5.0 });
        assert_eq!(Sample::of(&[4.0, 1.0, 2.0, 8.0]), Sample { median: 3.0, min: 1.0, max: 8.0 });
    }

    #[test]
    fn the_csv_gives_back_the_table_it_was_written_from() {
        let sample = |m: f64| Sample { median: m, min: m * 0.9, max: m * 1.1 };
        let rows = vec![
            Row {
                workload: "LeNet-300-100 train step (batch 60), dense".into(),
                threads: 1,
                unit: "it/s",
                ours: sample(134.7),
                alternative: Some(("candle ops, \"plain\"".into(), sample(87.8))),
                pytorch: Some(sample(64.5)),
            },
            Row {
                workload: "ResNet-18 evaluation of 1000 images, 5%".into(),
                threads: 2,
                unit: "images/s",
                ours: sample(0.731),
                alternative: None,
                pytorch: None,
            },
        ];
        let machine = Machine { cpu: "Some CPU, 2 cores".into(), kernels: "avx2".into(), pytorch: Some("torch 2.15.0".into()), repeats: 5 };
        let report = Report { machine, rows };
        let dir = std::env::temp_dir().join(format!("lth-bench-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.csv");
        write_csv(&report.machine, &report.rows, &path).unwrap();
        let back = read_csv(&path).unwrap();
        assert_eq!(markdown(&back), markdown(&report));
        assert!(markdown(&report).contains("| 134.7 [121.2-148.2] it/s | 87.8 [79.0-96.6] (candle ops, \"plain\") | 1.53x | 64.5 [58.1-71.0] | 2.09x |"));
        // A damaged file is refused with the file's name and the fix.
        std::fs::write(&path, "workload,threads\nx,1\n").unwrap();
        let err = read_csv(&path).err().unwrap().to_string();
        assert!(err.contains("bench.csv") && err.contains("--csv"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runs_are_matched_row_by_row_and_their_ratios_summed_up_per_thread_count() {
        let sample = |m: f64| Sample { median: m, min: m, max: m };
        let machine = || Machine { cpu: "Some CPU".into(), kernels: "avx2".into(), pytorch: Some("2.15.0".into()), repeats: 5 };
        let row = |workload: &str, threads, ours, pytorch: Option<f64>| Row {
            workload: workload.into(),
            threads,
            unit: "it/s",
            ours: sample(ours),
            alternative: pytorch.is_none().then(|| ("gemm crate".to_string(), sample(ours * 2.0))),
            pytorch: pytorch.map(sample),
        };
        let first = Report {
            machine: machine(),
            rows: vec![row("ResNet-18 train step", 1, 0.5, Some(1.0)), row("ResNet-18 train step", 2, 0.9, Some(1.5)), row("matrix product", 1, 30.0, None)],
        };
        // The second run lacks the 2-thread row and lists the rows in another order.
        let second = Report { machine: machine(), rows: vec![row("matrix product", 1, 20.0, None), row("ResNet-18 train step", 1, 0.8, Some(1.0))] };
        let runs = [first, second];
        let table = markdown_runs(&runs);
        assert!(
            table
                .contains("| ResNet-18 train step | 1 | 0.50 [0.50-0.50] it/s | 1.00 [1.00-1.00] | 0.50x | 0.80 [0.80-0.80] it/s | 1.00 [1.00-1.00] | 0.80x |"),
            "{table}"
        );
        assert!(table.contains("| ResNet-18 train step | 2 | 0.90 [0.90-0.90] it/s | 1.50 [1.50-1.50] | 0.60x | not run | | |"), "{table}");
        assert!(table.contains("| matrix product | 1 | 30.0 [30.0-30.0] it/s | 60.0 [60.0-60.0] (gemm crate) | 0.50x |"), "{table}");
        assert!(table.find("| ResNet-18 train step | 1 |") < table.find("| matrix product |"), "the first run's order");
        let ratios = markdown_ratios(&runs);
        assert!(ratios.contains("| workload (lth / PyTorch, run 1 / run 2) | 1 thread | 2 threads |"), "{ratios}");
        assert!(ratios.contains("| ResNet-18 train step | 0.50x / 0.80x | 0.60x / – |"), "{ratios}");
        assert!(!ratios.contains("matrix product"), "rows PyTorch does not run are left out: {ratios}");
    }
}
