//! `cargo xtask`: the project's workflow commands. Thin by design (rust-analyzer's xtask
//! pattern): parse flags, build the `lth` binary with the right features, call it, check
//! outputs. No ML code lives here; the heavy crates compile into `lth` only.

mod ci;
mod cuda;
mod flags;
mod pr;
mod slurm;

use anyhow::{bail, Context, Result};
use clap::error::ErrorKind;
use flags::Task;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    let args: Vec<String> = std::env::args().skip(1).collect();
    run_task(&sh, &args)
}

/// Parses and runs one `cargo xtask` command; `ci` and `pr-comment` run others through it.
fn run_task(sh: &Shell, args: &[String]) -> Result<()> {
    let task = match flags::parse(args) {
        Ok(task) => task,
        // `--help`, or a usage error, printed as clap formats it.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) => {
            print!("{e}");
            return Ok(());
        }
        Err(e) => bail!("{}", e.to_string().trim_start_matches("error: ").trim_end()),
    };
    let xtask = |args: &[&str]| run_task(sh, &args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    match task {
        Task::Reproduce(r) => reproduce(sh, &r, args)?,
        Task::Data { datasets, mirror } => {
            let lth = build_lth(sh, false)?;
            let datasets = if datasets.is_empty() { vec!["mnist".into(), "cifar10".into()] } else { datasets };
            let mirror = mirror.map(|m| vec!["--mirror".to_string(), m]).unwrap_or_default();
            for dataset in datasets {
                let mirror = &mirror;
                cmd!(sh, "{lth} fetch {dataset} {mirror...}").run()?;
            }
        }
        Task::Figures { check } => figures(sh, check)?,
        Task::Ci { out } => ci::run(sh, &project_root(), out.as_deref(), &xtask)?,
        Task::PrComment { base, out } => {
            let lth = build_lth(sh, false)?;
            pr::comment(sh, &project_root(), &lth, &base, &out, &xtask)?;
        }
        Task::Claims => {
            let lth = build_lth(sh, false)?;
            for dir in table_dirs(&project_root().join("figures"))? {
                cmd!(sh, "{lth} claims {dir}").run()?;
            }
        }
        Task::Bench { vs_pytorch, only, repeats, csv, table, ratios } => {
            let lth = build_lth(sh, false)?;
            let mut args: Vec<String> = vs_pytorch.then(|| "--vs-pytorch".to_string()).into_iter().collect();
            for (flag, value) in [("--only", only), ("--repeats", repeats), ("--csv", csv)] {
                if let Some(value) = value {
                    args.extend([flag.to_string(), value]);
                }
            }
            if !table.is_empty() {
                args.push("--table".into());
                args.extend(table);
            }
            if ratios {
                args.push("--ratios".into());
            }
            cmd!(sh, "{lth} bench {args...}").run()?;
        }
        Task::CudaBuild { compute_cap } => {
            let compute_cap = compute_cap.or_else(|| std::env::var("CUDA_COMPUTE_CAP").ok()).unwrap_or_else(|| "90".into());
            let binary = cuda::build(sh, &project_root(), &compute_cap)?;
            cuda::pack(sh, &project_root(), &binary)?;
        }
        Task::GpuCheck => {
            let root = project_root();
            if !root.join("target/lth-cuda.xz").exists() {
                let binary = cuda::build(sh, &root, "90")?;
                cuda::pack(sh, &root, &binary)?;
            }
            cmd!(sh, "sh xtask/gpu-check.sh").run()?;
        }
        Task::Compare { old, new } => {
            let lth = build_lth(sh, false)?;
            cmd!(sh, "{lth} compare {old} {new}").run()?;
        }
        Task::Goldens { check, mirror } => {
            let lth = build_lth(sh, false)?;
            let mode = (!check).then_some("--write");
            let mirror = mirror.map(|m| vec!["--mirror".to_string(), m]).unwrap_or_default();
            cmd!(sh, "{lth} goldens {mode...} {mirror...}").run()?;
        }
        Task::Plan(p) if p.slurm => plan_slurm(sh, &p, args)?,
        Task::Plan(p) => {
            let lth = build_lth(sh, false)?;
            let r = &p.job;
            let job = r.job_args();
            let data = r.data_args();
            let figs = &r.figures;
            cmd!(sh, "{lth} plan {figs...} {job...} {data...}").run()?;
        }
        Task::Readme { check } => readme(check)?,
    }
    Ok(())
}

/// `readme`: README's command table rewritten from the flags (with `check`, compared).
fn readme(check: bool) -> Result<()> {
    let path = project_root().join("README.md");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let Some(fresh) = flags::with_table(&text, &flags::command_table()) else {
        bail!("{} has no `{}` ... `{}` markers around its command table", path.display(), flags::README_START, flags::README_END);
    };
    match (check, fresh == text) {
        (_, true) => println!("readme: the command table matches `cargo xtask --help`"),
        (true, false) => bail!("README.md's command table differs from `cargo xtask --help`; run `cargo xtask readme`"),
        (false, false) => {
            std::fs::write(&path, fresh).with_context(|| format!("writing {}", path.display()))?;
            println!("readme: rewrote the command table of {}", path.display());
        }
    }
    Ok(())
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Builds `lth` in release mode (the same profile as `cargo test --release`, so dependencies
/// compile once) and returns the binary's path. The CUDA build has its own target folder.
fn build_lth(sh: &Shell, cuda: bool) -> Result<PathBuf> {
    if cuda {
        let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
        return cuda::build(sh, &project_root(), &cap);
    }
    cmd!(sh, "cargo build --quiet --release --package lth --bin lth").run().context("building lth")?;
    Ok(target_dir().join("release").join("lth"))
}

/// Cargo's build folder: $CARGO_TARGET_DIR, else target/ of the project.
fn target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project_root().join("target"));
    if target.is_relative() {
        project_root().join(target)
    } else {
        target
    }
}

/// `plan --slurm`: the plan's `lth run` lines as a self-submitting Slurm script (`slurm`), with
/// absolute paths, since its tasks run on other machines of the cluster.
fn plan_slurm(sh: &Shell, p: &flags::Plan, args: &[String]) -> Result<()> {
    let r = &p.job;
    if r.figures.is_empty() {
        bail!("`cargo xtask plan --slurm` needs the figures its final job draws, e.g. `cargo xtask plan fig8 --scale paper --device cuda --slurm`");
    }
    let root = project_root();
    let absolute = |path: &str| if Path::new(path).is_absolute() { PathBuf::from(path) } else { root.join(path) };
    let (results, figures_dir) = (absolute(&r.out), absolute(&r.figures_dir));
    let local = build_lth(sh, false)?;
    let cuda = r.device.starts_with("cuda");
    let (lth, build_hint) = if cuda {
        (root.join("target/cuda/release/lth"), "build it with: cargo xtask cuda-build")
    } else {
        (local.clone(), "build it with: cargo build --release -p lth")
    };
    let figs = &r.figures;
    let mut job = r.job_args();
    if let Some(at) = job.iter().position(|a| a == "--out") {
        job[at + 1] = results.display().to_string();
    }
    let data = r.data_args();
    let lines = cmd!(sh, "{local} plan {figs...} {job...} {data...}").read()?;
    let runs: Vec<String> = lines.lines().map(str::to_string).collect();
    if runs.is_empty() {
        bail!("`lth plan` printed no runs for {}", figs.join(" "));
    }
    let figures = figs.clone();
    let command = format!("cargo xtask {}", args.join(" "));
    let text = slurm::script(&slurm::Plan {
        command: &command,
        runs: &runs,
        figures: &figures,
        scale: &r.scale,
        device: &r.device,
        trials: r.trials.as_deref(),
        data: r.data.as_deref(),
        root: &root,
        lth: &lth,
        results: &results,
        figures_dir: &figures_dir,
        build_hint,
    });
    let path = p.slurm_script.as_deref().map(absolute).unwrap_or_else(|| root.join(format!("target/slurm/lth-{}-{}.sh", figures.join("-"), r.scale)));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {} ({} array tasks, then the figures job); submit it with `bash {}`", path.display(), runs.len(), path.display());
    Ok(())
}

fn reproduce(sh: &Shell, r: &flags::Reproduce, args: &[String]) -> Result<()> {
    let lth = build_lth(sh, r.device.starts_with("cuda"))?;
    let figs = &r.figures;
    let job = r.job_args();
    let data = r.data_args();
    let command = format!("cargo xtask {}", args.join(" "));
    let figures_dir = &r.figures_dir;
    cmd!(sh, "{lth} reproduce {figs...} {job...} {data...} --figures-dir {figures_dir} --command {command}").run()?;
    Ok(())
}

/// Redraws every committed figure from its committed table, in `figures/` and each subfolder
/// that holds tables (`figures/paper/`), and rewrites each folder's claims report; with `check`,
/// fails if any drawing or report differs from the committed one instead of overwriting it.
fn figures(sh: &Shell, check: bool) -> Result<()> {
    let lth = build_lth(sh, false)?;
    let root = project_root().join("figures");
    let scratch = sh.create_temp_dir()?;
    let mut stale = Vec::new();
    let mut drawn = 0;
    for (i, dir) in table_dirs(&root)?.iter().enumerate() {
        // One scratch folder per figures folder: `figures/fig3.svg` and `figures/paper/fig3.svg`
        // must not overwrite each other.
        let fresh_dir = scratch.path().join(i.to_string());
        std::fs::create_dir_all(&fresh_dir)?;
        for table in tables_in(dir)? {
            let Some(id) = table.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let svg = dir.join(format!("{id}.svg"));
            drawn += 1;
            if check {
                let fresh = fresh_dir.join(format!("{id}.svg"));
                cmd!(sh, "{lth} plot {id} {table} {fresh}").run()?;
                if std::fs::read(&svg).ok() != Some(std::fs::read(&fresh)?) {
                    stale.push(svg.display().to_string());
                }
            } else {
                let png = dir.join(format!("{id}.png"));
                cmd!(sh, "{lth} plot {id} {table} {svg} --png {png}").run()?;
            }
        }
        let report = dir.join("CLAIMS.md");
        if check {
            let fresh = fresh_dir.join("CLAIMS.md");
            cmd!(sh, "{lth} claims {dir} --output {fresh}").run()?;
            if std::fs::read(&report).ok() != Some(std::fs::read(&fresh)?) {
                stale.push(report.display().to_string());
            }
        } else {
            cmd!(sh, "{lth} claims {dir}").run()?;
        }
    }
    let (generated, stale_generated) = generated_tables(sh, &lth, check)?;
    stale.extend(stale_generated);
    if !stale.is_empty() {
        bail!("{} do not match their committed tables; run `cargo xtask figures` and commit the result", stale.join(", "));
    }
    if check {
        println!("figures: {drawn} drawings and their claims reports, and {generated} generated tables in README.md and docs/, match their tables");
    }
    Ok(())
}

/// Every table that README.md and docs/*.md generate from a committed CSV (the benchmark's):
/// rewritten, or with `check` compared. Returns how many there are and the files that differ.
fn generated_tables(sh: &Shell, lth: &Path, check: bool) -> Result<(usize, Vec<String>)> {
    let root = project_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .with_context(|| format!("reading {}", root.join("docs").display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files.insert(0, root.join("README.md"));
    let (mut count, mut stale) = (0, Vec::new());
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let fresh = flags::with_generated_tables(&text, |args| {
            count += 1;
            Ok(cmd!(sh, "{lth} {args...}").read()? + "\n")
        })
        .with_context(|| file.display().to_string())?;
        if fresh != text {
            if check {
                stale.push(file.display().to_string());
            } else {
                std::fs::write(&file, fresh).with_context(|| format!("writing {}", file.display()))?;
            }
        }
    }
    Ok((count, stale))
}

/// `figures/` and each folder directly inside it that holds tables (`figures/paper/`).
fn table_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    if tables_in(root)?.is_empty() {
        bail!("{} holds no tables; run `cargo xtask reproduce --scale quick` first", root.display());
    }
    let mut dirs = vec![root.to_path_buf()];
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    for dir in subdirs {
        if !tables_in(&dir)?.is_empty() {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// The `*.csv` tables of one folder, sorted.
fn tables_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut tables: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    tables.sort();
    Ok(tables)
}
