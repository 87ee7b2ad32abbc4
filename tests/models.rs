//! Models in the sentence-transformers layout: their pooling, normalisation and prompts are
//! what `embed`, `index` and `query` use. Tiny random models stand in for the real ones (only the
//! default model can be fetched here); what is checked is that each setting is applied.

mod common;

use common::{dochash, env, run_with_stdin, stderr, stdout};

fn vectors(out: &std::process::Output) -> Vec<Vec<f64>> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str::<Vec<f64>>(l).unwrap())
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn a_sentence_transformers_model_is_used_with_its_pooling_and_prompts() {
    let e = env();
    let m = &e.model;
    std::fs::write(
        m.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::create_dir_all(m.join("1_Pooling")).unwrap();
    std::fs::write(
        m.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": true}"#,
    )
    .unwrap();
    std::fs::write(
        m.join("config_sentence_transformers.json"),
        r#"{"prompts": {"query": "find: ", "document": "note: "}}"#,
    )
    .unwrap();

    // `embed` follows the model: CLS pooling, unit length.
    let mut c = dochash(&e.home);
    c.arg("embed").arg("--model").arg(m);
    let own = vectors(&run_with_stdin(c, b"apple banana\n"));
    let mut c = dochash(&e.home);
    c.args(["embed", "--pool", "cls", "--normalize", "--model"])
        .arg(m);
    let cls = vectors(&run_with_stdin(c, b"apple banana\n"));
    assert_eq!(own, cls);
    assert!((dot(&own[0], &own[0]) - 1.0).abs() < 1e-4);

    // Search embeds documents and queries behind their prompts.
    e.write("a.txt", "apple banana cherry\n");
    e.index(&[e.notes.to_str().unwrap()]);
    let (code, hits) = e.query("river ocean", &["--mode", "semantic"]);
    assert_eq!(code, Some(0));
    let got = hits[0]["cosine"].as_f64().unwrap();
    let mut c = dochash(&e.home);
    c.arg("embed").arg("--model").arg(m);
    let v = vectors(&run_with_stdin(
        c,
        b"find: river ocean\nnote: apple banana cherry\nriver ocean\napple banana cherry\n",
    ));
    let want = dot(&v[0], &v[1]);
    let unprompted = dot(&v[2], &v[3]);
    assert!((got - want).abs() < 2e-3, "cosine {got}, prompted {want}");
    assert!(
        (want - unprompted).abs() > 1e-2,
        "the prompts must matter for this check to mean anything"
    );
}

#[test]
fn a_broken_pooling_setting_is_a_one_line_error_naming_the_file() {
    let e = env();
    std::fs::create_dir_all(e.model.join("1_Pooling")).unwrap();
    std::fs::write(e.model.join("1_Pooling/config.json"), "{ nope").unwrap();
    let mut c = dochash(&e.home);
    c.arg("embed").arg("--model").arg(&e.model);
    let out = run_with_stdin(c, b"x\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("1_Pooling") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn model_list_names_the_presets() {
    let e = env();
    let out = dochash(&e.home).args(["model", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for name in [
        "minilm",
        "bge-small",
        "e5-small",
        "gte-small",
        "arctic-xs",
        "multilingual-e5-small",
    ] {
        assert!(text.contains(name), "{text}");
    }
    assert!(text.contains("\"query: \""), "{text}");
}
