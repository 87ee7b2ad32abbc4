//! `dochash mcp` driven over stdio as an agent's host drives it: JSON-RPC lines in, JSON-RPC
//! lines out, and nothing else on stdout.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::{Env, bin, dochash, stderr, wait_until};
use serde_json::{Value, json};

/// How long a test waits for one reply before it fails (a hang must fail, not stall CI).
const REPLY_LIMIT: Duration = Duration::from_secs(120);

struct Mcp {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
}

impl Mcp {
    fn start(e: &Env, failpoints: Option<(&Path, &str)>) -> Mcp {
        let mut c = Command::new(bin("dochash"));
        c.env("DOCHASH_HOME", &e.home)
            .env_remove("DOCHASH_MODEL")
            .env_remove("DOCHASH_PRECISION")
            .args(["mcp", "--no-train", "--model"])
            .arg(&e.model)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some((dir, points)) = failpoints {
            c.env("DOCHASH_FAILPOINTS", points)
                .env("DOCHASH_FAILPOINT_DIR", dir);
        }
        let mut child = c.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Mcp {
            child,
            stdin,
            lines: rx,
            next_id: 1,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().expect("stdin open");
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    fn send(&mut self, msg: &Value) {
        let mut line = serde_json::to_vec(msg).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next message on stdout, which must be JSON-RPC 2.0.
    fn next_message(&mut self, limit: Duration) -> Option<Value> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line:?}"));
                assert_eq!(v["jsonrpc"], "2.0", "{v}");
                Some(v)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Sends a request and returns its response (a result or an error), skipping
    /// notifications.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(id)
    }

    fn response(&mut self, id: u64) -> Value {
        let deadline = Instant::now() + REPLY_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self
                .next_message(left)
                .unwrap_or_else(|| panic!("no reply to request {id}"));
            if msg["id"] == json!(id) {
                return msg;
            }
            assert!(msg.get("id").is_none(), "a reply to another request: {msg}");
        }
    }

    fn initialize(&mut self, version: &str) -> Value {
        let r = self.request(
            "initialize",
            json!({
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "dochash-tests", "version": "0"}
            }),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r
    }

    /// Calls a tool; the `result` (a tool error is a result with `isError`).
    fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self.request("tools/call", json!({"name": tool, "arguments": args}));
        assert!(r.get("error").is_none(), "{tool}: {r}");
        r["result"].clone()
    }

    fn close_and_wait(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + REPLY_LIMIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn notes() -> Env {
    let e = common::env();
    e.write(
        "work/meetings.md",
        "# Meetings\n\nguitar piano music lessons on friday\n",
    );
    e.write(
        "work/server.md",
        "# Server\n\nserver request response error timeout\n",
    );
    e.write(
        "home/garden.md",
        "# Garden\n\napple banana cherry trees in the garden\n",
    );
    e.write("home/river.md", "# River\n\nriver ocean mountain boats\n");
    e
}

/// The notes, indexed by `dochash index` before any server starts.
fn indexed() -> Env {
    let e = notes();
    e.index(&[e.notes.to_str().unwrap()]);
    e
}

fn tool_error(r: &Value) -> String {
    assert_eq!(r["isError"], true, "not a tool error: {r}");
    let text = r["content"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.contains('\n'), "one line: {text:?}");
    text
}

#[test]
fn an_agent_lists_the_tools_searches_reads_and_asks_the_status() {
    let e = indexed();
    let mut m = Mcp::start(&e, None);
    let init = m.initialize("2025-06-18");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "dochash", "{init}");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );

    // Schemas every major host takes: objects, nothing one-of at the top, every property
    // described, the required ones listed.
    let tools = m.request("tools/list", json!({}));
    let tools = tools["result"]["tools"].as_array().unwrap().clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in ["search", "read", "status"] {
        assert!(names.contains(&name), "{names:?}");
    }
    for t in &tools {
        let s = &t["inputSchema"];
        assert_eq!(s["type"], "object", "{t}");
        for bad in ["oneOf", "anyOf", "allOf", "$ref"] {
            assert!(s.get(bad).is_none(), "{bad} at the top of {t}");
        }
        assert!(!t["description"].as_str().unwrap().is_empty());
        let props = s["properties"].as_object().cloned().unwrap_or_default();
        for (p, schema) in &props {
            assert!(
                schema["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{}.{p} is not described: {schema}",
                t["name"]
            );
            assert!(schema.get("$ref").is_none(), "{p}: {schema}");
        }
        assert!(t["outputSchema"].is_object(), "{t}");
    }
    let search = tools.iter().find(|t| t["name"] == "search").unwrap();
    assert_eq!(search["inputSchema"]["required"], json!(["query"]));
    let read = tools.iter().find(|t| t["name"] == "read").unwrap();
    assert_eq!(read["inputSchema"]["required"], json!(["path"]));

    // Once the start-up update has looked at every file (until then a search says it is partial).
    wait_until("the server to be idle", || {
        m.call("status", json!({}))["structuredContent"]["job"] == ""
    });
    // Search: structured hits, and the same as JSON text for hosts that read text.
    let r = m.call("search", json!({"query": "guitar piano music", "k": 3}));
    assert_ne!(r["isError"], true, "{r}");
    let hits = r["structuredContent"]["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 3, "{r}");
    let top = &hits[0];
    assert!(
        top["path"].as_str().unwrap().ends_with("work/meetings.md"),
        "{r}"
    );
    assert_eq!(
        (top["first_line"].as_u64(), top["last_line"].as_u64()),
        (Some(3), Some(3)),
        "{top}"
    );
    assert_eq!(top["headings"], json!(["Meetings"]));
    assert!(top["text"].as_str().unwrap().contains("guitar piano"));
    // What matched, to read from: the line with the words.
    assert_eq!(top["snippet_line"], 3, "{top}");
    assert!(
        top["snippet"]
            .as_str()
            .unwrap()
            .starts_with("guitar piano music")
    );
    assert_eq!(
        (
            top["matched_first_line"].as_u64(),
            top["matched_last_line"].as_u64()
        ),
        (Some(3), Some(3)),
        "{top}"
    );
    assert_eq!(top["more_here"], json!([]));
    assert!(["both", "semantic", "lexical"].contains(&top["found_by"].as_str().unwrap()));
    assert_eq!(r["structuredContent"]["partial"], false);
    let as_text: Value = serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(as_text, r["structuredContent"]);

    // The same hits as `dochash query`, in the same order.
    let (_, direct) = e.query("guitar piano music", &["-k", "3"]);
    let paths = |hs: &[Value]| -> Vec<String> {
        hs.iter()
            .map(|h| h["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(paths(&hits), paths(&direct));

    // A path filter keeps the search inside a folder, or to a glob.
    let r = m.call(
        "search",
        json!({"query": "apple river server", "k": 10, "path": "home"}),
    );
    let hits = r["structuredContent"]["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 2, "{r}");
    assert!(
        hits.iter()
            .all(|h| h["path"].as_str().unwrap().contains("/home/")),
        "{r}"
    );
    let r = m.call(
        "search",
        json!({"query": "apple", "path": "serv*.md", "mode": "semantic"}),
    );
    let hits = r["structuredContent"]["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 1, "{r}");
    assert!(hits[0]["path"].as_str().unwrap().ends_with("server.md"));
    // Filter words in the query: the same syntax as everywhere; a bad one is a tool error.
    let r = m.call(
        "search",
        json!({"query": "apple river server -path:home ext:md"}),
    );
    let hits = r["structuredContent"]["hits"].as_array().unwrap().clone();
    assert!(!hits.is_empty(), "{r}");
    assert!(
        hits.iter()
            .all(|h| h["path"].as_str().unwrap().contains("/work/")),
        "{r}"
    );
    let err = tool_error(&m.call("search", json!({"query": "apple after:someday"})));
    assert!(err.contains("filter after:someday: not a date"), "{err}");

    // Read widens a hit.
    let path = top["path"].as_str().unwrap().to_string();
    let r = m.call(
        "read",
        json!({"path": path, "first_line": 1, "last_line": 2}),
    );
    assert_eq!(r["structuredContent"]["text"], "# Meetings\n\n", "{r}");
    assert_eq!(r["structuredContent"]["total_lines"], 3);
    assert_eq!(r["structuredContent"]["truncated"], false);
    // A path relative to the indexed folder reads the same file.
    let r = m.call("read", json!({"path": "home/river.md"}));
    assert_eq!(
        r["structuredContent"]["text"], "# River\n\nriver ocean mountain boats\n",
        "{r}"
    );

    let r = m.call("status", json!({}));
    let s = &r["structuredContent"];
    assert_eq!(s["role"], "owner", "{r}");
    assert_eq!(s["files"], 4, "{r}");
    assert_eq!(s["roots"].as_array().unwrap().len(), 1, "{r}");
    assert!(s["model"].as_str().unwrap().contains("tiny-model"), "{r}");

    // Closing stdin ends the server cleanly, and the index is there for the next one.
    assert!(m.close_and_wait().success());
    assert_eq!(e.status()["files"], 4);
}

#[test]
fn every_revision_in_use_is_negotiated() {
    let e = common::env();
    for (asked, answered) in [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-11-25", "2025-11-25"),
        // A revision it does not know: it answers with the newest it speaks.
        ("2023-01-01", "2025-11-25"),
        // The revision without a handshake: a client that still sends one gets the newest
        // that has one.
        ("2026-07-28", "2025-11-25"),
    ] {
        let mut m = Mcp::start(&e, None);
        let r = m.initialize(asked);
        assert_eq!(r["result"]["protocolVersion"], answered, "{asked}: {r}");
        // Listing the tools needs neither the model nor the index.
        let t = m.request("tools/list", json!({}));
        assert_eq!(t["result"]["tools"].as_array().unwrap().len(), 3, "{t}");
        assert!(m.close_and_wait().success());
    }
}

#[test]
fn bad_input_gets_an_error_and_the_server_carries_on() {
    let e = notes();
    std::fs::write(
        e.notes.join("home/photo.md"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0",
    )
    .unwrap();
    std::fs::write(e.notes.join(".dochashignore"), "secret.md\n").unwrap();
    e.write("home/secret.md", "# Secret\n\nnot for the index\n");
    std::fs::write(e._tmp.path().join("outside.md"), "# Outside\n\nprivate\n").unwrap();
    e.index(&[e.notes.to_str().unwrap()]);
    let mut m = Mcp::start(&e, None);
    m.initialize("2025-06-18");

    // Not JSON: ignored, as the official SDKs do (there is no id to answer); the next request
    // is answered.
    m.send_raw(b"{this is not json\n");
    // A line over the cap is dropped unread.
    let mut huge = vec![b'x'; 2 << 20];
    huge.push(b'\n');
    m.send_raw(&huge);
    let r = m.request("ping", json!({}));
    assert!(r.get("result").is_some(), "{r}");

    let r = m.request("no/such/method", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let r = m.request("tools/call", json!({"name": "nope", "arguments": {}}));
    assert!(
        r.get("error").is_some() || r["result"]["isError"] == true,
        "{r}"
    );
    // Wrong types, missing and unknown arguments: a tool error the model can read and correct
    // (the current revision's rule for argument errors), one line.
    for args in [
        json!({"query": "x", "k": "ten"}),
        json!({"k": 3}),
        json!({"query": "x", "colour": "red"}),
        json!({"query": "x", "mode": "fuzzy"}),
        json!({"query": 7}),
    ] {
        let r = m.request("tools/call", json!({"name": "search", "arguments": args}));
        let err = match r.get("error") {
            Some(e) => e["message"].as_str().unwrap().to_string(),
            None => tool_error(&r["result"]),
        };
        assert!(err.contains("parameters"), "{args}: {err}");
    }

    // Caps: k, query length, the read range.
    let err = tool_error(&m.call("search", json!({"query": "apple", "k": 5000})));
    assert!(err.contains("1 to 100"), "{err}");
    let err = tool_error(&m.call("search", json!({"query": "word ".repeat(4000)})));
    assert!(err.contains("KiB"), "{err}");
    let err = tool_error(&m.call("search", json!({"query": "apple", "path": "../"})));
    assert!(err.contains("outside the indexed folders"), "{err}");
    let err = tool_error(&m.call("search", json!({"query": "apple", "path": "nowhere"})));
    assert!(err.contains("no such folder"), "{err}");

    let outside = e._tmp.path().join("outside.md");
    for path in [
        outside.to_str().unwrap().to_string(),
        "../outside.md".into(),
        "home/../../outside.md".into(),
    ] {
        let err = tool_error(&m.call("read", json!({"path": path})));
        assert!(err.contains("outside the indexed folders"), "{path}: {err}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, e.notes.join("home/link.md")).unwrap();
        let err = tool_error(&m.call("read", json!({"path": "home/link.md"})));
        assert!(err.contains("outside the indexed folders"), "{err}");
    }
    let err = tool_error(&m.call("read", json!({"path": "home/missing.md"})));
    assert!(err.contains("does not exist"), "{err}");
    let err = tool_error(&m.call("read", json!({"path": "home/photo.md"})));
    assert!(
        err.contains("not in the index") && err.contains("binary"),
        "{err}"
    );
    let err = tool_error(&m.call("read", json!({"path": "home/secret.md"})));
    assert!(
        err.contains("not in the index") && err.contains("ignored"),
        "{err}"
    );
    let err = tool_error(&m.call("read", json!({"path": "home/river.md", "first_line": 0})));
    assert!(err.contains("numbered from 1"), "{err}");
    let err = tool_error(&m.call("read", json!({"path": "home/river.md", "first_line": 9})));
    assert!(err.contains("has 3 lines"), "{err}");
    let err = tool_error(&m.call(
        "read",
        json!({"path": "home/river.md", "first_line": 3, "last_line": 2}),
    ));
    assert!(err.contains("before the first"), "{err}");
    let long: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
    e.write("home/long.md", &long);
    // Not indexed yet may take a moment: the watcher picks it up.
    wait_until("the long note to be indexed", || {
        m.call("read", json!({"path": "home/long.md", "last_line": 100000}))["isError"] != true
    });
    let r = m.call("read", json!({"path": "home/long.md", "last_line": 100000}));
    assert_eq!(r["structuredContent"]["last_line"], 400, "{r}");
    assert_eq!(r["structuredContent"]["truncated"], true, "{r}");

    // After all that, it still searches.
    let r = m.call("search", json!({"query": "garden apple"}));
    assert!(
        !r["structuredContent"]["hits"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{r}"
    );

    // A client that leaves in the middle of a request: a clean exit, the index intact.
    m.send_raw(br#"{"jsonrpc":"2.0","id":999,"method":"tools/call","params":{"name":"search","arguments":{"query":"river"#);
    assert!(m.close_and_wait().success());
    assert_eq!(e.status()["files"], 5);
}

/// Each server's role, once none is still starting and one owns (right after an owner quits,
/// its clients may not have noticed yet).
fn roles(servers: &mut [&mut Mcp]) -> Vec<String> {
    let mut out = Vec::new();
    wait_until("the servers to settle", || {
        out = servers
            .iter_mut()
            .map(|m| {
                m.call("status", json!({}))["structuredContent"]["role"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        out.iter().all(|r| r != "starting") && out.iter().any(|r| r == "owner")
    });
    out.sort();
    out
}

#[test]
fn servers_started_together_share_one_owner_and_another_takes_over() {
    let e = indexed();
    // Started together, as three agents of one person would.
    let mut a = Mcp::start(&e, None);
    let mut b = Mcp::start(&e, None);
    let mut c = Mcp::start(&e, None);
    a.initialize("2025-06-18");
    b.initialize("2025-06-18");
    c.initialize("2025-06-18");
    assert_eq!(
        roles(&mut [&mut a, &mut b, &mut c]),
        ["client", "client", "owner"]
    );
    // The third is let go at once: two remain, one owning.
    assert!(c.close_and_wait().success());
    assert_eq!(roles(&mut [&mut a, &mut b]), ["client", "owner"]);
    let search = |m: &mut Mcp| -> Vec<String> {
        let r = m.call("search", json!({"query": "river ocean", "k": 4}));
        r["structuredContent"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["path"].as_str().unwrap().to_string())
            .collect()
    };
    let from_a = search(&mut a);
    assert_eq!(from_a.len(), 4);
    assert_eq!(search(&mut b), from_a);

    // The owner's host quits it; the other serves on, now owning the index.
    let owner_is_a = a.call("status", json!({}))["structuredContent"]["role"] == "owner";
    let (gone, stays) = if owner_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(gone.close_and_wait().success());
    wait_until("the other server to take the index over", || {
        stays.call("status", json!({}))["structuredContent"]["role"] == "owner"
    });
    assert_eq!(search(stays), from_a);
    // And it keeps the index up to date, as an owner does.
    e.write("home/new.md", "# Lighthouse\n\nlighthouse keeper lantern\n");
    wait_until("the new note to be searchable", || {
        search(stays).iter().any(|p| p.ends_with("new.md"))
            || stays.call(
                "search",
                json!({"query": "lighthouse keeper lantern", "k": 1}),
            )["structuredContent"]["hits"][0]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("new.md"))
    });
    assert!(stays.close_and_wait().success());
}

#[test]
fn a_search_while_the_index_is_built_answers_from_what_is_there_and_says_so() {
    let e = indexed();
    e.write("home/later.md", "# Later\n\nlighthouse keeper lantern\n");
    let fp = e._tmp.path().join("fp");
    std::fs::create_dir_all(&fp).unwrap();
    // The update that picks up the new note stops after its first file is written.
    let mut m = Mcp::start(&e, Some((&fp, "store.committed=pause")));
    m.initialize("2025-06-18");
    wait_until("the update to pause", || {
        fp.join("store.committed.paused").exists()
    });
    let r = m.call("search", json!({"query": "river ocean", "k": 2}));
    let s = &r["structuredContent"];
    assert_eq!(s["partial"], true, "{r}");
    assert!(
        s["note"].as_str().unwrap().contains("still being built"),
        "{r}"
    );
    assert_eq!(s["hits"].as_array().unwrap().len(), 2, "{r}");
    std::fs::write(fp.join("store.committed.go"), "").unwrap();
    wait_until("the update to finish", || {
        m.call("search", json!({"query": "river", "k": 1}))["structuredContent"]["partial"] == false
    });
    assert!(m.close_and_wait().success());
    let out = dochash(&e.home)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A `dochash watch` owning the notes, and a server that has become its client.
fn following_a_watch(e: &Env) -> (common::Owner, Mcp) {
    let watch = common::start_watch(&e.home, &e.model, &[&e.notes]);
    let mut m = Mcp::start(e, None);
    m.initialize("2025-06-18");
    wait_until("the server to follow the watching owner", || {
        m.call("status", json!({}))["structuredContent"]["role"] == "client"
    });
    (watch, m)
}

#[test]
fn a_server_follows_a_watching_owner_and_takes_over_when_it_stops() {
    let e = notes();
    let (watch, mut m) = following_a_watch(&e);
    let before = m.call("search", json!({"query": "garden apple", "k": 2}));
    assert_eq!(
        before["structuredContent"]["hits"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{before}"
    );
    // SIGTERM, as a service manager stops `dochash watch`.
    let pid = watch.id().to_string();
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    wait_until("the server to take over", || {
        m.call("status", json!({}))["structuredContent"]["role"] == "owner"
    });
    let after = m.call("search", json!({"query": "garden apple", "k": 2}));
    assert_eq!(
        after["structuredContent"]["hits"],
        before["structuredContent"]["hits"]
    );
    drop(watch);
    assert!(m.close_and_wait().success());
}

#[test]
fn an_empty_home_says_what_to_do() {
    let e = common::env();
    let mut m = Mcp::start(&e, None);
    m.initialize("2025-06-18");
    let r = m.call("search", json!({"query": "anything"}));
    let s = &r["structuredContent"];
    assert_eq!(s["hits"], json!([]), "{r}");
    assert!(
        s["note"]
            .as_str()
            .unwrap()
            .contains("nothing is indexed yet"),
        "{r}"
    );
    assert!(m.close_and_wait().success());
}

#[cfg(unix)]
#[test]
fn a_frozen_owner_is_reported_within_the_wait_and_followed_when_it_wakes() {
    let e = notes();
    let (watch, mut m) = following_a_watch(&e);
    let pid = watch.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Said well inside the minute a host waits, and not taken for an owner that went away.
    let err = tool_error(&m.call("search", json!({"query": "garden apple"})));
    assert!(err.contains("did not answer within 20 s"), "{err}");
    // The owner went nowhere: this server still follows it.
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let r = m.call("search", json!({"query": "garden apple", "k": 1}));
    assert_eq!(
        r["structuredContent"]["hits"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    assert_eq!(
        m.call("status", json!({}))["structuredContent"]["role"],
        "client"
    );
    drop(watch);
    assert!(m.close_and_wait().success());
}

#[cfg(unix)]
#[test]
fn a_hit_on_a_name_that_is_not_utf8_can_be_read() {
    use std::os::unix::ffi::OsStrExt;
    let e = notes();
    let odd = e
        .notes
        .join(std::ffi::OsStr::from_bytes(b"bad\xff\xfename.md"));
    std::fs::write(&odd, "# Papaya\n\npapaya mango guava\n").unwrap();
    e.index(&[e.notes.to_str().unwrap()]);
    let mut m = Mcp::start(&e, None);
    m.initialize("2025-06-18");
    let r = m.call(
        "search",
        json!({"query": "papaya mango guava", "k": 1, "mode": "lexical"}),
    );
    let path = r["structuredContent"]["hits"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(path.contains('\u{fffd}'), "{path}");
    let r = m.call("read", json!({"path": path}));
    assert_eq!(
        r["structuredContent"]["text"], "# Papaya\n\npapaya mango guava\n",
        "{r}"
    );
    assert!(m.close_and_wait().success());
}

/// A file swapped for a link leading out of the folders after `read` checked it (a failpoint
/// holds the read there) is not followed: what is read is what is under the folder now.
#[cfg(unix)]
#[test]
fn a_file_swapped_for_a_link_out_while_it_is_read_is_not_followed() {
    let e = indexed();
    let secret = e._tmp.path().join("secret.md");
    std::fs::write(&secret, "# Secret\n\nthe launch code\n").unwrap();
    let fp = e._tmp.path().join("fp");
    std::fs::create_dir_all(&fp).unwrap();
    let mut m = Mcp::start(&e, Some((&fp, "read.checked=pause")));
    m.initialize("2025-06-18");
    let id = 4242;
    m.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "read", "arguments": {"path": "home/river.md"}}}));
    wait_until("the read to be checked", || {
        fp.join("read.checked.paused").exists()
    });
    let river = e.notes.join("home/river.md");
    std::fs::remove_file(&river).unwrap();
    std::os::unix::fs::symlink(&secret, &river).unwrap();
    std::fs::write(fp.join("read.checked.go"), "").unwrap();
    let r = m.response(id);
    assert!(!r.to_string().contains("launch code"), "{r}");
    let err = tool_error(&r["result"]);
    assert!(err.contains("could not be read"), "{err}");
    assert!(m.close_and_wait().success());
}
