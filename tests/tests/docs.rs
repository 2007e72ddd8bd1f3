//! The documentation resolves in a clone: every relative link (and its `#anchor`) in README.md,
//! CHANGELOG.md, docs/ and the figures' provenance files names a file of the repository, and
//! nothing cites the paper's notes by a name other than `docs/paper.md`.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

/// Folders never read: build output, git's own files, and committed results folders (thousands
/// of curves that cite nothing; `lth/src/report/` is code and is read).
fn skipped(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    matches!(name.as_str(), "target" | ".git") || (name == "results" && path.join("runs").is_dir())
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).expect("reading a repository folder").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if skipped(&path) {
            continue;
        }
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The Markdown files whose links must resolve.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut all = Vec::new();
    files_under(&root, &mut all);
    all.into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .filter(|p| {
            let rel = p.strip_prefix(&root).expect("under the root");
            rel.parent() == Some(Path::new("")) || rel.starts_with("docs") || rel.starts_with("figures")
        })
        .collect()
}

/// The targets of `[text](target)` and `![alt](target)` outside fenced code blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_string());
            rest = &after[end + 1..];
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors_of(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut anchors = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            anchors.push(anchor(line.trim_start_matches('#')));
        }
    }
    anchors
}

#[test]
fn every_relative_link_resolves() {
    let docs = documents();
    assert!(docs.iter().any(|p| p.ends_with("README.md")) && docs.iter().any(|p| p.ends_with("docs/paper.md")), "{docs:?}");
    let mut broken = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("reading a document");
        for target in link_targets(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').map_or((target.as_str(), None), |(p, f)| (p, Some(f)));
            let file = if path.is_empty() { doc.clone() } else { doc.parent().expect("a document's folder").join(path) };
            if !file.exists() {
                broken.push(format!("{}: {target} (no such file)", doc.display()));
                continue;
            }
            if let Some(fragment) = fragment.filter(|_| file.extension().is_some_and(|e| e == "md")) {
                let anchors = anchors_of(&std::fs::read_to_string(&file).expect("reading a link's target"));
                if !anchors.iter().any(|a| a == fragment) {
                    broken.push(format!("{}: {target} (no heading with that anchor)", doc.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "links that do not resolve:\n{}", broken.join("\n"));
}

#[test]
fn the_papers_notes_are_cited_as_docs_paper_md() {
    // Spelled in two parts so that this file does not match itself.
    let old_name = ["PAPER", ".md"].concat();
    let root = root();
    let mut files = Vec::new();
    files_under(&root, &mut files);
    let citing: Vec<String> = files
        .iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|text| text.contains(&old_name)))
        .map(|p| p.strip_prefix(&root).unwrap_or(p).display().to_string())
        .collect();
    assert!(citing.is_empty(), "these files cite {old_name}, which a clone does not have; cite docs/paper.md: {citing:?}");
    assert!(root.join("docs/paper.md").is_file());
}

#[test]
fn anchors_follow_githubs_rule() {
    assert_eq!(anchor(" Beyond the paper: rewinding (Figures 4r, 7r and 8r)"), "beyond-the-paper-rewinding-figures-4r-7r-and-8r");
    assert_eq!(anchor(" `paper` scale, real MNIST"), "paper-scale-real-mnist");
    assert_eq!(link_targets("see [a](x.md#b) and ![c](d.png)\n```\n[e](f)\n```\n"), vec!["x.md#b", "d.png"]);
}
