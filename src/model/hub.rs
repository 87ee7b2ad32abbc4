//! The Hugging Face hub: first its local cache (shared with Python tools, no network), then its
//! API through `hf-hub`'s blocking client.
//!
//! `hf-hub` 0.4 builds its HTTP agent itself and offers no timeout setting, and ureq's default
//! connect timeout is 30 s per address; on a machine whose firewall silently drops packets, a
//! first `dochash search` would hang for minutes before falling back to pip. So before handing
//! over to `hf-hub` we make one TCP connection ourselves (to the hub, or to the proxy ureq will
//! use) under a short deadline, in a helper thread so that even a hanging DNS lookup cannot hold
//! us. Only when that succeeds is the hub worth the wait of a real download.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hf_hub::Cache;
use hf_hub::api::sync::ApiBuilder;

use super::error::ModelError;
use super::layout::{CONFIG, OPTIONAL, REQUIRED};

/// Where Python's `huggingface_hub` and `hf-hub` keep downloads, by the same rules as Python's
/// library (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`), so that a model someone already downloaded with Python is found.
/// `None` when there is no home folder to derive it from.
pub(crate) fn hf_cache_dir_from_env() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE") {
        return Some(p);
    }
    if let Some(p) = var("HF_HOME") {
        return Some(p.join("hub"));
    }
    let cache_home = var("XDG_CACHE_HOME")
        .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().join(".cache")))?;
    Some(cache_home.join("huggingface").join("hub"))
}

/// Looks `name` up in the Hugging Face cache at `cache_dir` without any network access.
/// Returns the snapshot folder holding all three files, or why there is none.
pub(crate) fn lookup_cache(cache_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let repo = Cache::new(cache_dir.to_path_buf()).model(name.to_string());
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for file in REQUIRED {
        match repo.get(file) {
            Some(p) => found.push(p),
            None => missing.push(file),
        }
    }
    if found.is_empty() {
        return Err(format!("not present in {}", cache_dir.display()));
    }
    if !missing.is_empty() {
        return Err(format!(
            "incomplete in {} (no {})",
            cache_dir.display(),
            missing.join(", ")
        ));
    }
    // All three come from the same snapshot (the `refs/main` commit), so share a parent.
    found[0]
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("unexpected cache layout in {}", cache_dir.display()))
}

/// Where and how to reach the hub. Not `Debug`: it may hold a token.
#[derive(Clone)]
pub(crate) struct HubAccess {
    /// The HF cache that `hf-hub` downloads into.
    pub cache_dir: PathBuf,
    /// `HF_ENDPOINT`, if set; `hf-hub`'s default otherwise.
    pub endpoint: Option<String>,
    /// `HF_TOKEN`, if set; otherwise `hf-hub` reads the cache's token file.
    pub token: Option<String>,
    /// The proxy ureq will connect through (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`), if any.
    pub proxy: Option<(String, u16)>,
    /// The reachability check's deadline.
    pub probe_timeout: Duration,
}

/// Downloads the three model files of `name` into the HF cache (reusing any already there) and
/// returns the snapshot folder. Fails within `probe_timeout` when the hub is unreachable.
pub(crate) fn download(
    access: &HubAccess,
    name: &str,
    progress: &super::progress::Progress,
) -> Result<PathBuf, ModelError> {
    // The client's own bars would draw on stderr: the steps are reported instead.
    let mut builder =
        ApiBuilder::from_cache(Cache::new(access.cache_dir.clone())).with_progress(false);
    if let Some(endpoint) = &access.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let Some(token) = &access.token {
        builder = builder.with_token(Some(token.clone()));
    }
    let api = builder
        .build()
        .map_err(|e| ModelError::Hub(format!("cannot set up the hub client: {e}")))?;
    let repo = api.model(name.to_string());

    // Probe the host that the client will actually talk to: its URL for our first file.
    let url = repo.url(CONFIG);
    let target = match &access.proxy {
        Some(proxy) => proxy.clone(),
        None => host_port(&url)
            .ok_or_else(|| ModelError::Hub(format!("cannot parse the hub address {url}")))?,
    };
    probe(&target, access.probe_timeout)
        .map_err(|e| ModelError::Hub(format!("hub unreachable: {e}")))?;

    let mut dir = None;
    for file in REQUIRED {
        progress.step(&format!("downloading {file}"), None);
        let path = repo
            .get(file)
            .map_err(|e| ModelError::Hub(format!("cannot download {file}: {e}")))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    // Not every model has them; a model without them pools by the mean with no prompts.
    for file in OPTIONAL {
        let _ = repo.get(file);
    }
    dir.ok_or_else(|| ModelError::Hub("the hub client returned no file paths".into()))
}

/// Opens (and drops) one TCP connection to `target` within `timeout`, DNS lookup included.
pub(crate) fn probe(target: &(String, u16), timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let (host, port) = target.clone();
    let spawned = thread::Builder::new()
        .name("dochash-hub-probe".into())
        .spawn(move || {
            // The receiver may have given up already; nothing to report then.
            let _ = tx.send(connect(&host, port, deadline));
        });
    if spawned.is_err() {
        // Cannot spawn (thread limit?): probe inline; only a hanging DNS lookup is unbounded.
        return connect(&target.0, target.1, deadline);
    }
    // A lookup that never returns leaves the helper thread blocked in the resolver; it holds
    // nothing but its own copies and ends whenever the resolver does.
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{}:{} did not answer within {} s",
            target.0,
            target.1,
            timeout.as_secs_f32()
        )),
    }
}

fn connect(host: &str, port: u16, deadline: Instant) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => format!("cannot connect to {host}:{port}: {e}"),
        None if addrs.is_empty() => format!("{host} has no address"),
        None => format!("{host}:{port} did not answer in time"),
    })
}

/// `(host, port)` of an `http(s)://` URL, the port defaulting by scheme.
pub(crate) fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    split_host_port(authority, default)
}

/// The proxy ureq will use, read from the same variables in the same order as ureq 2 does.
pub(crate) fn proxy_from_env() -> Option<(String, u16)> {
    [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .iter()
    .filter_map(|var| std::env::var(var).ok())
    .find_map(|v| parse_proxy(&v))
}

/// Parses `[scheme://][user:pass@]host[:port][/]` the way ureq 2 does (port 80 for HTTP proxies,
/// 1080 for SOCKS); `None` for what ureq would also reject.
pub(crate) fn parse_proxy(value: &str) -> Option<(String, u16)> {
    let value = value.trim().trim_end_matches('/');
    let (default, rest) = match value.split_once("://") {
        Some((scheme, rest)) => match scheme {
            "http" => (80, rest),
            "socks4" | "socks4a" | "socks" | "socks5" => (1080, rest),
            _ => return None,
        },
        None => (80, value),
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, a)| a);
    split_host_port(rest, default)
}

fn split_host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().ok()?),
            None if after.is_empty() => (host, default),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default),
        }
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::net::TcpListener;

    use super::*;
    use crate::model::testutil::write_fake_model;

    #[test]
    fn urls_and_proxies_parse() {
        assert_eq!(
            host_port("https://hub.example/a/b"),
            Some(("hub.example".into(), 443))
        );
        assert_eq!(host_port("http://h:8080/x?y"), Some(("h".into(), 8080)));
        assert_eq!(host_port("http://u:p@[::1]:81/"), Some(("::1".into(), 81)));
        assert_eq!(host_port("ftp://h/"), None);
        assert_eq!(host_port("https:///x"), None);
        assert_eq!(
            parse_proxy("http://u:p@proxy:3128/"),
            Some(("proxy".into(), 3128))
        );
        assert_eq!(parse_proxy("proxy"), Some(("proxy".into(), 80)));
        assert_eq!(parse_proxy("socks5://s"), Some(("s".into(), 1080)));
        assert_eq!(parse_proxy("gopher://s"), None);
        assert_eq!(parse_proxy("http://p:notaport"), None);
    }

    /// A local port that nothing listens on: connecting is refused at once.
    fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        port
    }

    #[test]
    fn probe_succeeds_on_a_listener_and_fails_fast_on_a_closed_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = ("127.0.0.1".to_string(), l.local_addr().unwrap().port());
        probe(&open, Duration::from_secs(3)).unwrap();

        let closed = ("127.0.0.1".to_string(), closed_port());
        let t = Instant::now();
        let err = probe(&closed, Duration::from_secs(3)).unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3));

        let err = probe(
            &("no-such-host.invalid".into(), 443),
            Duration::from_secs(3),
        )
        .unwrap_err();
        assert!(!err.is_empty());
    }

    /// A host that silently drops connection attempts (a firewall, a blackholed route) is the
    /// case that would otherwise hang for ureq's 30 s per address. Simulated with a listener
    /// whose accept queue is full: Linux then drops further SYNs.
    #[cfg(target_os = "linux")]
    #[test]
    fn probe_gives_up_on_a_silent_host_at_its_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        let mut filled = false;
        for _ in 0..4096 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(c) => held.push(c),
                Err(_) => {
                    filled = true;
                    break;
                }
            }
        }
        assert!(
            filled,
            "accept queue never filled after {} connections",
            held.len()
        );
        let t = Instant::now();
        let err = probe(&("127.0.0.1".into(), addr.port()), Duration::from_secs(1)).unwrap_err();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(900), "{took:?}: {err}");
        assert!(took < Duration::from_secs(3), "{took:?}: {err}");
    }

    #[test]
    fn download_from_an_unreachable_hub_fails_fast_without_touching_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let access = HubAccess {
            cache_dir: cache.path().to_path_buf(),
            endpoint: Some(format!("http://127.0.0.1:{}", closed_port())),
            token: None,
            proxy: None,
            probe_timeout: Duration::from_secs(3),
        };
        let t = Instant::now();
        let err = download(&access, "org/model", &crate::model::Progress::NONE).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(err.to_string().starts_with("hub unreachable"), "{err}");
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    /// Writes the layout `hf-hub` and Python's `huggingface_hub` produce:
    /// `models--org--name/refs/main` naming a commit, files under `snapshots/<commit>/`.
    fn fake_hf_cache(cache: &Path, repo_folder: &str) -> PathBuf {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let root = cache.join(repo_folder);
        fs::create_dir_all(root.join("refs")).unwrap();
        fs::write(root.join("refs/main"), commit).unwrap();
        let snap = root.join("snapshots").join(commit);
        write_fake_model(&snap, b"hf");
        snap
    }

    #[test]
    fn cache_lookup_finds_complete_snapshots_only() {
        let cache = tempfile::tempdir().unwrap();
        assert!(
            lookup_cache(cache.path(), "org/model")
                .unwrap_err()
                .starts_with("not present")
        );
        let snap = fake_hf_cache(cache.path(), "models--org--model");
        assert_eq!(lookup_cache(cache.path(), "org/model").unwrap(), snap);
        fs::remove_file(snap.join("model.safetensors")).unwrap();
        let err = lookup_cache(cache.path(), "org/model").unwrap_err();
        assert!(
            err.contains("incomplete") && err.contains("model.safetensors"),
            "{err}"
        );
    }
}
