//! `cargo xtask pr-comment BASE`: what a pull request did to the results tables, as the comment
//! `.github/workflows/results.yml` posts (and anyone can run before pushing). The base side is
//! the tables committed at BASE; the pull request's side is this checkout's, with the smoke
//! tables rerun from its code first when it changes code or experiment specs. `lth compare
//! --comment` writes the Markdown; this only gathers the two folders.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// What the pull request touches, by path.
#[derive(Debug, Default, PartialEq)]
pub struct Touched {
    /// Code that computes results (the library, xtask, the build's manifests).
    pub code: bool,
    /// Experiment specs.
    pub specs: bool,
    /// Committed figure tables.
    pub tables: bool,
}

impl Touched {
    pub fn of(paths: &str) -> Touched {
        let mut touched = Touched::default();
        for path in paths.lines().map(str::trim).filter(|p| !p.is_empty()) {
            if path.starts_with("lth/") || path.starts_with("xtask/") || matches!(path, "Cargo.toml" | "Cargo.lock") {
                touched.code = true;
            } else if path.starts_with("experiments/") {
                touched.specs = true;
            } else if path.starts_with("figures/") && path.ends_with(".csv") && !path.contains("/results/") {
                touched.tables = true;
            }
        }
        touched
    }
}

/// Writes `<out>/comment.md` and `<out>/png/` (the pull request's drawings of the tables that
/// differ from the base's), with `<out>/base` and `<out>/pr` the folders compared.
pub fn comment(sh: &Shell, root: &Path, lth: &Path, base: &str, out: &str, xtask: &dyn Fn(&[&str]) -> Result<()>) -> Result<()> {
    let out = root.join(out);
    let (base_dir, pr_dir, png_dir) = (out.join("base"), out.join("pr"), out.join("png"));
    for dir in [&base_dir, &pr_dir, &png_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let changed = cmd!(sh, "git diff --name-only {base}...HEAD")
        .read()
        .with_context(|| format!("listing the files changed since {base} (is it fetched? `git fetch origin {base}`)"))?;
    let touched = Touched::of(&changed);
    println!("changed since {base}: code {}, specs {}, tables {}", touched.code, touched.specs, touched.tables);

    // The base's committed figures folder, and this checkout's.
    let archive = out.join("base.tar");
    cmd!(sh, "git archive --output {archive} {base} figures").run().with_context(|| format!("reading the figures committed at {base}"))?;
    cmd!(sh, "tar -xf {archive} -C {base_dir} --strip-components=1").run()?;
    std::fs::remove_file(&archive)?;
    copy_tables(&root.join("figures"), &pr_dir)?;

    let mut rerun = Vec::new();
    if touched.code || touched.specs {
        rerun = rerun_smoke(root, &out, &pr_dir, xtask)?;
    }
    let context = rerun.iter().map(|t| format!("{t}.csv")).collect::<Vec<_>>().join(",");
    let tables_only = (touched.tables && !touched.code && !touched.specs).then_some("--tables-only");
    let rerun_flag = (!rerun.is_empty()).then(|| vec!["--rerun".to_string(), context]).unwrap_or_default();
    let text = cmd!(sh, "{lth} compare --comment {base_dir} {pr_dir} --base-name {base} {tables_only...} {rerun_flag...}").read()?;
    std::fs::write(out.join("comment.md"), text + "\n")?;

    // The pull request's drawings of the tables that changed.
    let mut drawn = 0;
    for table in tables_under(&pr_dir)? {
        let relative = table.strip_prefix(&pr_dir)?;
        if std::fs::read(base_dir.join(relative)).ok() != std::fs::read(&table).ok() {
            let png = table.with_extension("png");
            if png.exists() {
                let name = relative.with_extension("png").to_string_lossy().replace('/', "-");
                std::fs::copy(&png, png_dir.join(name))?;
                drawn += 1;
            }
        }
    }
    println!("wrote {} and {drawn} changed figures' drawings in {}", out.join("comment.md").display(), png_dir.display());
    Ok(())
}

/// Reruns the committed smoke tables of `figures/` (their provenance says scale `smoke`; the
/// quick and paper ones take hours) from this checkout's code, each on the data it was made
/// on, and puts the new tables and drawings into `pr_dir`. Returns the figures rerun.
fn rerun_smoke(root: &Path, out: &Path, pr_dir: &Path, xtask: &dyn Fn(&[&str]) -> Result<()>) -> Result<Vec<String>> {
    let (mut real, mut synthetic) = (Vec::new(), Vec::new());
    for table in tables_under(&root.join("figures"))?.into_iter().filter(|t| t.parent() == Some(&root.join("figures"))) {
        let provenance = std::fs::read_to_string(table.with_extension("md")).unwrap_or_default();
        let Some(id) = table.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
        if provenance.contains("| scale | `smoke` |") {
            if provenance.contains("Synthetic data") {
                synthetic.push(id)
            } else {
                real.push(id)
            }
        }
    }
    let (results, figures) = (out.join("rerun/results"), out.join("rerun/figures"));
    let (results, figures) = (results.to_string_lossy().into_owned(), figures.to_string_lossy().into_owned());
    for (ids, data) in [(&real, None), (&synthetic, Some("synthetic"))] {
        if ids.is_empty() {
            continue;
        }
        let mut args: Vec<&str> = vec!["reproduce"];
        args.extend(ids.iter().map(String::as_str));
        args.extend(["--scale", "smoke", "--out", &results, "--figures-dir", &figures]);
        if let Some(data) = data {
            args.extend(["--data", data]);
        }
        xtask(&args)?;
    }
    let mut rerun: Vec<String> = real.into_iter().chain(synthetic).collect();
    rerun.sort();
    for id in &rerun {
        for ext in ["csv", "md", "png", "svg"] {
            let from = Path::new(&figures).join(format!("{id}.{ext}"));
            if from.exists() {
                std::fs::copy(&from, pr_dir.join(format!("{id}.{ext}"))).with_context(|| format!("copying {}", from.display()))?;
            }
        }
    }
    Ok(rerun)
}

/// The tables, provenance files and drawings of a figures folder and its subfolders (not the
/// run folders under `results/`), copied into `to`.
fn copy_tables(from: &Path, to: &Path) -> Result<()> {
    for table in tables_under(from)? {
        let relative = table.strip_prefix(from)?;
        for ext in ["csv", "md", "png"] {
            let file = table.with_extension(ext);
            if file.exists() {
                let target = to.join(relative.with_extension(ext));
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::copy(&file, &target).with_context(|| format!("copying {}", file.display()))?;
            }
        }
    }
    Ok(())
}

/// `dir/*.csv` and `dir/*/*.csv`, sorted.
fn tables_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path)? {
                let inner = inner?.path();
                if inner.extension().is_some_and(|e| e == "csv") {
                    tables.push(inner);
                }
            }
        } else if path.extension().is_some_and(|e| e == "csv") {
            tables.push(path);
        }
    }
    tables.sort();
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::Touched;

    #[test]
    fn changed_paths_are_sorted_into_code_specs_and_tables() {
        assert_eq!(Touched::of("figures/fig5.csv\nREADME.md\n"), Touched { tables: true, ..Touched::default() });
        assert_eq!(Touched::of("lth/src/training.rs\nfigures/paper/fig3.csv"), Touched { code: true, specs: false, tables: true });
        assert_eq!(Touched::of("experiments/lenet.toml"), Touched { specs: true, ..Touched::default() });
        // Run curves and drawings are not tables; docs change nothing.
        assert_eq!(Touched::of("figures/paper/results/runs/x/curve.csv\nfigures/fig5.png\ndocs/ci.md"), Touched::default());
    }
}
