//! `dochash mcp`: the index as a Model Context Protocol server on stdio, for agents and editors.
//!
//! The protocol is the official SDK's (rmcp): it negotiates the revision the client asks for,
//! answers malformed input as the other official SDKs do, and drops lines over a cap. Requests
//! reach the index through [`Access`], as the TUI's do: this process owns the index when no
//! other does (watching and training in the background) and is a client of the owner
//! otherwise, taking over when that owner quits. `initialize` and `tools/list` are answered
//! before the model has loaded; a search waits a little for it, then says what is happening.
//!
//! Only protocol messages go to stdout; everything else (logging) goes to stderr.

use std::borrow::Cow;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use dochash::app::request::{MAX_READ_BYTES, MAX_READ_LINES, QueryRequest, ReadRequest};
use dochash::app::sanitize::sanitize;
use dochash::app::{Access, EngineConfig, Home, Role};
use dochash::index::Hit;
use dochash::index::search::{Group, Mode};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::{Json, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cli::{Global, McpArgs};
use crate::shared;

/// Longest request line read; longer ones are dropped unread (the SDK logs them).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Most results one search returns.
pub const MAX_HITS: u32 = 100;

/// How long a request waits for the index to open (the model loading, an owner starting)
/// before it is answered with what is happening: well inside the minute hosts wait.
const PATIENCE: Duration = Duration::from_secs(20);

pub fn run(g: &Global, args: &McpArgs) -> Result<ExitCode> {
    let home = Home::locate()?;
    home.prepare()
        .with_context(|| format!("cannot create {}", home.dir().display()))?;
    // Said before serving: a host shows a server that exits at once, with its stderr.
    for p in &args.paths {
        dochash::index::check_root(p)?;
    }
    let mut choice = shared::model_choice(g);
    // No bars on a host's stderr: the owner shows the model's download as its job (`status`).
    choice.fetch.progress = dochash::model::Progress::NONE;
    let access = Access::start(EngineConfig {
        home,
        choice,
        add_roots: args.paths.clone(),
        watch: true,
        auto_train: !args.no_train,
    });
    // A host that stops its servers with a signal: the index is let go cleanly, as at EOF.
    {
        let access = access.clone();
        ctrlc::set_handler(move || {
            access.shutdown();
            std::process::exit(0);
        })
        .context("cannot install the signal handler")?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the MCP server's runtime")?;
    let served = runtime.block_on(async {
        let transport = AsyncRwTransport::new_server(tokio::io::stdin(), tokio::io::stdout())
            .with_max_line_length(MAX_LINE_BYTES);
        // A client that leaves before `initialize` ends the server as one that leaves after.
        match Server::new(access.clone()).serve(transport).await {
            Ok(running) => running
                .waiting()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => {
                tracing::info!("the client left before initializing: {e}");
                Ok(())
            }
        }
    });
    access.shutdown();
    // The blocking pool may still hold a search whose client left: do not wait for it.
    runtime.shutdown_background();
    served
        .map_err(anyhow::Error::msg)
        .context("the MCP server stopped")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone)]
struct Server {
    access: Access,
    tool_router: ToolRouter<Server>,
}

/// How results are ranked.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
enum ModeArg {
    /// Words and meaning, fused (the default).
    #[default]
    Hybrid,
    /// Meaning only.
    Semantic,
    /// Words only (BM25).
    Lexical,
}

fn ten() -> u32 {
    10
}

fn one() -> u32 {
    1
}

/// How passages of one file fold into one hit.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
enum GroupArg {
    /// Neighbouring passages of one file (one section's run) are one hit (the default).
    #[default]
    Place,
    /// One hit per file.
    File,
    /// Every passage is its own hit.
    None,
}

/// Arguments of `search`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    /// What to look for: a question or description in plain words, or exact words, names and
    /// "quoted phrases" from the note. Filter words narrow it: path:DIR-or-GLOB, -path:…,
    /// ext:md, tag:NAME, -tag:NAME, in:FOLDER (an indexed folder's name), after:DATE and
    /// before:DATE (YYYY-MM-DD, YYYY-MM, YYYY, today, yesterday, 7d, 2w, 3m, 1y; the note's
    /// front matter date, else its modification time). A query of filters alone lists the
    /// matching notes, newest first.
    query: String,
    /// How many results, 1 to 100 (default 10).
    #[serde(default = "ten")]
    k: u32,
    /// hybrid (words and meaning, the default), semantic (meaning only) or lexical (words only).
    #[serde(default)]
    mode: ModeArg,
    /// Only files at or under this folder or file (absolute, or relative to an indexed folder),
    /// or matching this glob (`*.md` tests file names, `work/**` paths from the indexed
    /// folder). Empty: everywhere.
    #[serde(default)]
    path: String,
    /// place (the default: neighbouring passages of a file are one hit, the others listed in
    /// `more_here`), file (one hit per file) or none.
    #[serde(default)]
    group: GroupArg,
}

/// Arguments of `read`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    /// A file of the index: a hit's `path`, or a path relative to an indexed folder.
    path: String,
    /// First line to return, 1-based (default 1).
    #[serde(default = "one")]
    first_line: u32,
    /// Last line to return, inclusive; 0 (the default) returns as many as the caps allow
    /// (400 lines, 64 KiB).
    #[serde(default)]
    last_line: u32,
}

/// Arguments of `status` (none).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StatusArgs {}

/// One passage found.
#[derive(Debug, Serialize, JsonSchema)]
struct FoundPassage {
    /// The file, absolute.
    path: String,
    /// First line of the passage, 1-based.
    first_line: u32,
    /// Last line of the passage, inclusive.
    last_line: u32,
    /// The headings the passage sits under, outermost first.
    headings: Vec<String>,
    /// The passage as it is in the file.
    text: String,
    /// What the results are ordered by (higher is better; comparable within one search).
    score: f32,
    /// Which side found it: "both", "semantic" (by meaning) or "lexical" (by its words).
    found_by: String,
    /// First line of what matched best in the passage (the part the meaning matched, or the
    /// lines with most of the query's words): where to read from.
    matched_first_line: u32,
    /// Last line of what matched best.
    matched_last_line: u32,
    /// A few lines of what matched, as in the file; they start at `snippet_line`.
    snippet: String,
    /// Line the snippet starts at.
    snippet_line: u32,
    /// Other passages of the same place (or file) that matched less well, as [first, last]
    /// line ranges, best first.
    more_here: Vec<[u32; 2]>,
    /// In a PDF, the page the snippet is on (its lines are those of the text dochash read
    /// from it, which `read` returns).
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<u32>,
}

/// What `search` returns.
#[derive(Debug, Serialize, JsonSchema)]
struct SearchOutput {
    /// The passages found, best first.
    hits: Vec<FoundPassage>,
    /// True while the index is still being built: the hits come from what is indexed so far.
    partial: bool,
    /// What to know about these results (indexing under way, quoted words found nowhere as
    /// written); empty when there is nothing to say.
    note: String,
}

/// What `read` returns.
#[derive(Debug, Serialize, JsonSchema)]
struct ReadOutput {
    /// The file, absolute.
    path: String,
    /// First line returned, 1-based.
    first_line: u32,
    /// Last line returned (fewer than asked when a cap or the end of the file came first).
    last_line: u32,
    /// Lines in the whole file.
    total_lines: u32,
    /// The lines, each ending in a newline.
    text: String,
    /// True when a cap (400 lines, 64 KiB) cut the range asked for.
    truncated: bool,
}

/// What `status` returns.
#[derive(Debug, Serialize, JsonSchema)]
struct StatusOutput {
    /// "owner" (this server holds the index), "client" (another dochash does and answers) or
    /// "starting".
    role: String,
    /// The indexed folders.
    roots: Vec<String>,
    /// Files indexed.
    files: usize,
    /// Passages indexed.
    passages: usize,
    /// The encoder serving queries.
    model: String,
    /// What training on these notes gained, when a trained generation serves; else empty.
    trained: String,
    /// The job in progress (indexing, training, loading the model), or empty when idle.
    job: String,
    /// A problem that stops the index from being kept up to date, or empty.
    error: String,
    /// Recent notes (skipped files, training results), newest last.
    notes: Vec<String>,
}

#[tool_router]
impl Server {
    fn new(access: Access) -> Self {
        Server {
            access,
            tool_router: Self::tool_router(),
        }
    }

    /// Searches the user's indexed notes and documents.
    #[tool(
        name = "search",
        description = "Search the user's own notes and documents (the folders dochash indexes) by meaning and by words. Returns the best passages with their file, line range, heading trail and text; use `read` to see more of a file."
    )]
    async fn search(
        &self,
        Parameters(a): Parameters<SearchArgs>,
    ) -> Result<Json<SearchOutput>, String> {
        if a.k == 0 || a.k > MAX_HITS {
            return Err(format!("k is {}; ask for 1 to {MAX_HITS} results", a.k));
        }
        let req = QueryRequest {
            text: a.query,
            k: a.k as usize,
            group: match a.group {
                GroupArg::Place => Group::Place,
                GroupArg::File => Group::File,
                GroupArg::None => Group::None,
            },
            candidates: None,
            mode: match a.mode {
                ModeArg::Hybrid => Mode::Hybrid,
                ModeArg::Semantic => Mode::Semantic,
                ModeArg::Lexical => Mode::Lexical,
            },
            path: Some(a.path).filter(|p| !p.trim().is_empty()),
            filters: Default::default(),
        };
        let access = self.access.clone();
        let (hits, status) = blocking(move || {
            let hits = access.query(&req, PATIENCE)?;
            Ok((hits, access.status()))
        })
        .await?;
        let mut notes = Vec::new();
        let partial = status
            .job
            .as_ref()
            .is_some_and(|j| j.label == "indexing" || j.label == "fitting codes");
        if let Some(j) = status.job.as_ref().filter(|_| partial) {
            notes.push(format!(
                "the index is still being built ({j}); these results come from what is indexed so far"
            ));
        }
        if status.roots.is_empty() {
            notes.push(
                "nothing is indexed yet: add folders with `dochash index PATH`, or give them to `dochash mcp PATH`"
                    .to_string(),
            );
        }
        if hits.first().is_some_and(|h| h.without_phrases) {
            notes.push(dochash::index::search::PHRASES_MISSING.to_string());
        }
        Ok(Json(SearchOutput {
            hits: hits.into_iter().map(found).collect(),
            partial,
            note: notes.join("; "),
        }))
    }

    /// Reads lines of an indexed file.
    #[tool(
        name = "read",
        description = "Read lines of a file that dochash indexes (a search hit's path), to see more than the passage: at most 400 lines or 64 KiB at once. Files outside the indexed folders, or that the index skips, are refused."
    )]
    async fn read(&self, Parameters(a): Parameters<ReadArgs>) -> Result<Json<ReadOutput>, String> {
        let req = ReadRequest {
            path: a.path,
            first: Some(a.first_line),
            last: (a.last_line > 0).then_some(a.last_line),
        };
        let access = self.access.clone();
        let e = blocking(move || access.read(&req, PATIENCE)).await?;
        debug_assert!(e.text.len() <= MAX_READ_BYTES + 1);
        debug_assert!(e.last_line.saturating_sub(e.first_line) < MAX_READ_LINES);
        Ok(Json(ReadOutput {
            path: e.path.to_string_lossy().into_owned(),
            first_line: e.first_line,
            last_line: e.last_line,
            total_lines: e.total_lines,
            text: clean(&e.text),
            truncated: e.truncated,
        }))
    }

    /// What is indexed and what dochash is doing.
    #[tool(
        name = "status",
        description = "What dochash indexes (folders, files, passages), with which model, what training on these notes gained, and the job in progress."
    )]
    async fn status(
        &self,
        Parameters(_): Parameters<StatusArgs>,
    ) -> Result<Json<StatusOutput>, String> {
        let access = self.access.clone();
        let (s, role) = blocking(move || Ok((access.status(), access.role()))).await?;
        Ok(Json(StatusOutput {
            role: match role {
                Role::Owner => "owner",
                Role::Client => "client",
                Role::Starting => "starting",
                Role::Stopped => "stopped",
            }
            .into(),
            roots: s
                .roots
                .iter()
                .map(|r| r.to_string_lossy().into_owned())
                .collect(),
            files: s.files,
            passages: s.passages,
            model: s.model,
            trained: s.gained.unwrap_or_default(),
            job: s.job.map(|j| j.to_string()).unwrap_or_default(),
            error: s.error.unwrap_or_default(),
            notes: s
                .notes
                .iter()
                .rev()
                .take(20)
                .rev()
                .map(|n| sanitize(n))
                .collect(),
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("dochash", env!("CARGO_PKG_VERSION")))
            .with_instructions(Cow::Borrowed(
                "dochash searches the user's own notes and documents on this machine. Use `search` \
                 with a question or the words you expect in the note; `read` shows more of a file \
                 found; `status` says what is indexed.",
            ))
    }
}

/// Runs index work off the protocol's thread: a search encodes its query, a read touches the
/// disk, and either may wait for the index to open.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, dochash::app::AppError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(one_line(&e.to_string())),
        Err(e) => Err(format!("the request failed: {e}")),
    }
}

fn one_line(s: &str) -> String {
    sanitize(&s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A file's text for a client that may show it in a terminal: controls and escape sequences
/// removed, lines kept.
fn clean(text: &str) -> String {
    text.split('\n')
        .map(|l| sanitize(l.strip_suffix('\r').unwrap_or(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn found(h: Hit) -> FoundPassage {
    let lexical = h.bm25.is_some();
    let semantic = h.distance.is_some() || (h.cosine.is_some() && !lexical);
    FoundPassage {
        path: h.path.to_string_lossy().into_owned(),
        first_line: h.line,
        last_line: h.end_line,
        headings: h.headings.iter().map(|s| sanitize(s)).collect(),
        text: clean(&h.text),
        score: h.score,
        found_by: match (semantic, lexical) {
            (true, true) => "both",
            (false, true) => "lexical",
            _ => "semantic",
        }
        .into(),
        matched_first_line: h.matched_lines.0,
        matched_last_line: h.matched_lines.1,
        snippet: clean(&h.snippet.text),
        snippet_line: h.snippet.line,
        more_here: h.more.iter().map(|m| [m.line, m.end_line]).collect(),
        page: h.page,
    }
}
