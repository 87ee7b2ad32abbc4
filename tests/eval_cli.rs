//! `dochash eval retrieval` driven as the benchmarks drive it: a folder of notes, a TSV of
//! known-item queries, the scores and each query's rank written where asked.

mod common;

use common::{dochash, stderr, stdout};
use serde_json::Value;

#[test]
fn retrieval_scores_each_query_and_writes_its_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("garden.md"),
        "# Garden\n\nThe apple tree by the river.\n\n# Kitchen\n\nBread and soup with cherry jam.\n",
    )
    .unwrap();
    std::fs::write(docs.join("music.md"), "# Music\n\nA piano and a guitar.\n").unwrap();
    // Two queries the words find, one whose words are nowhere in the notes.
    let queries = tmp.path().join("queries.tsv");
    std::fs::write(
        &queries,
        "piano guitar\tmusic.md\t3\t3\nriver apple\tgarden.md\t1\t3\n\nzebra quartz\tgarden.md\t7\t7\n",
    )
    .unwrap();
    let model = common::tiny_model(tmp.path());
    let retrieval = |ranks: &std::path::Path, extra: &[&str]| {
        dochash(&tmp.path().join("home"))
            .args(["eval", "retrieval", "--modes", "lexical"])
            .arg("--model")
            .arg(&model)
            .arg("--docs")
            .arg(&docs)
            .arg("--queries")
            .arg(&queries)
            .arg("--ranks")
            .arg(ranks)
            .args(extra)
            .output()
            .unwrap()
    };
    let ranks = tmp.path().join("ranks.tsv");
    let out = retrieval(&ranks, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let row: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(row["mode"], "lexical");
    assert_eq!(row["queries"], 3);
    assert!(
        (row["mrr_at_10"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12,
        "{row}"
    );
    assert_eq!(
        std::fs::read_to_string(&ranks).unwrap(),
        "lexical\t1\t1\nlexical\t2\t1\nlexical\t3\t0\n"
    );

    // A rank file that cannot be written is a clear error naming it.
    let out = retrieval(&tmp.path().join("missing/ranks.tsv"), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("missing/ranks.tsv"),
        "{}",
        stderr(&out)
    );
}
