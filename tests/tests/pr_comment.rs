//! The pull-request comment (`lth compare --comment`, posted by .github/workflows/results.yml)
//! is built here, not on GitHub: from the two small figures folders in
//! tests/fixtures/pr-comment/ it must give exactly tests/fixtures/pr-comment/comment.md. The
//! folders hold one case each of what a pull request can do to a table: cells moved beyond
//! and within the trial spread (fig4), another scale and data (fig5), a table removed (fig6)
//! or added (fig7), a repeated row (fig8), another figure's provenance (fig1), and another
//! figure's columns (paper/fig3). After an intended change to the comment, rewrite the
//! expected file with `LTH_BLESS=1 cargo test --release -p lth-tests --test pr_comment` and
//! read its diff.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use lth::report::pr_comment::{comment, Context, MARKER};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pr-comment")
}

fn context() -> Context {
    Context { base: "main".into(), tables_only: false, rerun: vec!["fig5.csv".into()] }
}

#[test]
fn the_comment_over_two_figures_folders_is_the_golden_one() {
    let got = comment(&fixtures().join("base"), &fixtures().join("pr"), &context());
    let golden = fixtures().join("comment.md");
    if std::env::var_os("LTH_BLESS").is_some() {
        std::fs::write(&golden, &got).expect("writing the golden comment");
    }
    let want = std::fs::read_to_string(&golden).expect("tests/fixtures/pr-comment/comment.md");
    assert!(got == want, "the comment differs from {}; if the change is intended, rerun with LTH_BLESS=1 and review the diff. Got:\n{got}", golden.display());
    // What the golden file is meant to show, so that blessing a broken comment fails too.
    let line = |table: &str| got.lines().find(|l| l.starts_with(&format!("| `{table}` |"))).unwrap_or_else(|| panic!("no summary row for {table}"));
    assert!(got.starts_with(MARKER), "the workflow finds its comment by the marker");
    assert!(line("fig4.csv").starts_with("| `fig4.csv` | 24 | 2 | 1 |"), "{}", line("fig4.csv"));
    assert!(line("fig6.csv").contains("not compared: removed by this pull request"));
    assert!(line("fig7.csv").contains("not compared: new in this pull request"));
    assert!(line("fig8.csv").contains("repeats the key") && !line("fig8.csv").contains(fixtures().to_str().unwrap()));
    assert!(line("fig1.csv").contains("describes `fig3`, not `fig1`"));
    assert!(line("paper/fig3.csv").contains("different key columns"));
    assert!(got.contains("- `fig5.csv`: scale differs (base `smoke`, pull request `quick`)"));
    assert!(got.contains("- `fig5.csv`: `conv2` trained on other data (base: synthetic; pull request: real)"));
    assert!(!got.contains("Tables changed, code did not"));
}

#[test]
fn a_pull_request_that_changes_only_tables_says_so_first() {
    let context = Context { tables_only: true, rerun: Vec::new(), ..context() };
    let got = comment(&fixtures().join("base"), &fixtures().join("pr"), &context);
    let second_paragraph = got.split("\n\n").nth(1).unwrap_or_default();
    assert!(second_paragraph.starts_with("**Tables changed, code did not.**"), "{got}");
    assert!(got.contains("Both sides are the committed tables."));
}

#[test]
fn a_missing_folder_is_one_line_not_a_failure() {
    let got = comment(&fixtures().join("base"), &fixtures().join("no-such-folder"), &context());
    let last = got.lines().last().unwrap_or_default();
    assert!(last.starts_with("Nothing compared: ") && last.contains("no-such-folder cannot be read"), "{got}");
}
