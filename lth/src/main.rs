//! The `lth` command: fetch data, run experiments, aggregate and draw figures. `cargo xtask`
//! builds and calls it; on a cluster or GPU machine it runs on its own. Parsing and dispatch
//! only: each command's flags and use case live in the library (`lth::cli`).

// jemalloc keeps freed pages for reuse (lth::base::allocator), where glibc returns each large buffer to the OS.
lth::jemalloc!();

use clap::{Parser, Subcommand};
use lth::cli::{bench, data, experiment, figures, goldens, instability, options, runs, tickets};

#[derive(Parser)]
#[command(name = "lth", version, about = "The Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019), reproduced with candle")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download (or copy from a mirror) and verify a dataset.
    Fetch(data::Fetch),
    /// Train every run of one experiment (or one trial of it) at a scale; finished levels are skipped.
    Run(experiment::Run),
    /// Everything for some figures: fetch data, run what is missing, aggregate, draw.
    Reproduce(experiment::Reproduce),
    /// Aggregate finished runs and draw one figure (no training).
    Figure(figures::Figure),
    /// Check the paper's claims against the figure tables of a folder and write its CLAIMS.md
    /// (used by `cargo xtask claims` and `figures [--check]`).
    Claims(figures::Claims),
    /// Print Figures 7 and 8 beside the paper's numbers as a Markdown table, from the figure
    /// tables of a folder (README's results table; used by `cargo xtask figures [--check]`).
    BesidePaper(figures::BesidePaper),
    /// Draw a figure from its table CSV (used by `cargo xtask figures [--check]`).
    Plot(figures::Plot),
    /// Measure training and evaluation throughput, each beside the alternative it replaces.
    Bench(bench::Bench),
    /// Check that a device trains like the CPU (a few steps of LeNet, Conv-2, VGG-19 and
    /// ResNet-18 from the same weights) and print its throughput for every network, dense and
    /// sparse, with a verdict line per item; exits 1 if parity fails.
    GpuCheck(bench::GpuCheck),
    /// Print a Markdown table of what changed between two results tables; with --comment, the
    /// pull-request comment over two figures folders (every table of both; problems as lines).
    Compare(bench::Compare),
    /// Train the golden smoke runs (LeNet on MNIST, Conv-2 and ResNet-18 on the synthetic set) and check their
    /// files' digests against a goldens file (or write it); exits 1 naming each difference.
    Goldens(goldens::Goldens),
    /// Print one `lth run` command per (experiment, trial) behind some figures, each experiment
    /// once, with every option that changes what runs.
    Plan(experiment::Plan),
    /// List the run folders of a results folder: finished levels, and whether the experiment
    /// specs (those of --experiments and those run by path into it) still expand to them.
    /// Stale runs (their spec is known and no longer expands to them) are never read by
    /// figures; runs of unknown specs and runs with a damaged spec.json are kept.
    Runs(runs::Runs),
    /// Write a finished level of a run as a compact sparse model (compressed rows in
    /// safetensors, the architecture in its metadata) and print its size against the dense file.
    Export(tickets::Export),
    /// Evaluate an exported model on its test set through the sparse kernels: its accuracy
    /// (checked against the run's final test accuracy; exits 1 if it differs), images/s and
    /// memory against the dense masked model.
    Infer(tickets::Infer),
    /// Check the files of a run folder whose markers are empty (written by an lth older than
    /// recorded digests, or left by a crash) and record them: the curve's schema, rows and
    /// values, the weights' shapes and that they give the curve's final test accuracy. Says
    /// what it could not check; refuses, naming the file, when a check fails.
    Adopt(tickets::Adopt),
    /// Beyond the paper: train copies of a ticket run's level from the same start (theta0 or the
    /// dense network after k steps) with different SGD noise, and print the error barrier on the
    /// straight path between each pair (linear mode connectivity; docs/decisions.md).
    Instability(instability::Instability),
    /// Remove a damaged level folder (`<out>/runs/<run-id>/level-NN`) or theta0
    /// (`<out>/runs/<run-id>/init.safetensors`), so that the next run of the same command
    /// retrains just that part.
    Redo(runs::Redo),
}

fn main() {
    // candle splits element-wise ops over a pool of its own whose threads spin-wait before
    // sleeping; on a small machine they take the core that the next matrix product (threaded by
    // RAYON_NUM_THREADS) needs. The heavy ops here thread themselves, so candle's pool is kept to
    // the calling thread unless the user sizes it. Measured on 2 cores at 2 threads: LeNet
    // evaluation 150-194K images/s with the pool, 250-254K without.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    options::cap_thread_counts();
    let result = match Cli::parse().command {
        Command::Fetch(c) => c.run(),
        Command::Run(c) => c.run(),
        Command::Reproduce(c) => c.run(),
        Command::Figure(c) => c.run(),
        Command::Claims(c) => c.run(),
        Command::BesidePaper(c) => c.run(),
        Command::Plot(c) => c.run(),
        Command::Bench(c) => c.run(),
        Command::GpuCheck(c) => c.run(),
        Command::Compare(c) => c.run(),
        Command::Goldens(c) => c.run(),
        Command::Plan(c) => c.run(),
        Command::Runs(c) => c.run(),
        Command::Export(c) => c.run(),
        Command::Infer(c) => c.run(),
        Command::Adopt(c) => c.run(),
        Command::Instability(c) => c.run(),
        Command::Redo(c) => c.run(),
    };
    if let Err(e) = result {
        eprintln!("error: {}", options::one_line(&e));
        std::process::exit(1);
    }
}
