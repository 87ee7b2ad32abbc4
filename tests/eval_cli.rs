//! `dochash eval retrieval` driven as the benchmarks drive it: a folder of notes, a TSV of
//! known-item queries, the scores and each query's rank written where asked.

mod common;

use std::path::Path;
use std::process::Command;

use common::{dochash, stderr, stdout};
use serde_json::Value;

/// `dochash eval retrieval` of `modes` with the model, notes and queries given.
fn retrieval(home: &Path, model: &Path, docs: &Path, queries: &Path, modes: &str) -> Command {
    let mut c = dochash(home);
    c.args(["eval", "retrieval", "--modes", modes, "--model"])
        .arg(model)
        .arg("--docs")
        .arg(docs)
        .arg("--queries")
        .arg(queries);
    c
}

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
    let home = tmp.path().join("home");
    let retrieval = |ranks: &Path, extra: &[&str]| {
        retrieval(&home, &model, &docs, &queries, "lexical")
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
    // Each found query's results are of one file; the third found nothing.
    assert!(
        (row["distinct_files_at_10"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12,
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

#[test]
fn retrieval_writes_every_candidate_for_other_fusion_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..12 {
        std::fs::write(
            docs.join(format!("n{i:02}.md")),
            format!("# Note {i}\n\nword{i} apple river {i}\n"),
        )
        .unwrap();
    }
    let queries = tmp.path().join("queries.tsv");
    std::fs::write(
        &queries,
        "word3 apple\tn03.md\t3\t3\nzebra quartz\tn07.md\t3\t3\n",
    )
    .unwrap();
    let model = common::tiny_model(tmp.path());
    let home = tmp.path().join("home");
    let run = |extra: &[&str]| {
        let out = retrieval(&home, &model, &docs, &queries, "hybrid")
            .arg("--json")
            .arg("--ranks")
            .arg(tmp.path().join("ranks.tsv"))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let ranks = std::fs::read_to_string(tmp.path().join("ranks.tsv")).unwrap();
        (stdout(&out), ranks)
    };
    let plain = run(&[]);
    let pool = tmp.path().join("pool.tsv");
    // The scores and ranks do not change when the pool is written too.
    assert_eq!(run(&["--pool", pool.to_str().unwrap()]), plain);

    let rows: Vec<Vec<String>> = std::fs::read_to_string(&pool)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    for q in ["1", "2"] {
        let mine: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == q).collect();
        // Every passage is a candidate here (12 passages, fewer than the filter keeps), more
        // than the 10 results, in positions 1, 2, …
        assert_eq!(mine.len(), 12, "query {q}: {rows:?}");
        for (n, r) in mine.iter().enumerate() {
            assert_eq!(r[0], "hybrid");
            assert_eq!(r[2], (n + 1).to_string());
            assert!(r[4].parse::<f32>().is_ok(), "a cosine: {r:?}");
        }
        // In the order of the scores they were ranked by.
        let scores: Vec<f32> = mine.iter().map(|r| r[6].parse().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        // The wanted passage is marked once, where the rank file says (0: not in the top 10).
        let wanted: Vec<usize> = mine
            .iter()
            .enumerate()
            .filter(|(_, r)| r[3] == "1")
            .map(|(n, _)| n + 1)
            .collect();
        assert_eq!(wanted.len(), 1, "query {q}: {mine:?}");
        let rank = plain
            .1
            .lines()
            .find(|l| l.split('\t').nth(1) == Some(q))
            .and_then(|l| l.split('\t').nth(2))
            .unwrap();
        let want = if wanted[0] <= 10 { wanted[0] } else { 0 };
        assert_eq!(rank, want.to_string(), "query {q}");
    }
    // BM25 is written where the words matched, empty elsewhere: "word3 apple" matches every
    // note (apple), "zebra quartz" none.
    assert!(
        rows.iter()
            .filter(|r| r[1] == "1")
            .all(|r| !r[5].is_empty())
    );
    assert!(rows.iter().filter(|r| r[1] == "2").all(|r| r[5].is_empty()));
    assert_eq!(rows.iter().find(|r| r[1] == "1").unwrap()[3], "1");
}
