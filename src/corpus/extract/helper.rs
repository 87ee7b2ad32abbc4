//! Documents read in a child process, so that no file can stop the reader's own process.
//!
//! Document readers meet files that make them loop, allocate without end or panic (a damaged
//! PDF font table, a content stream of a billion operators, a zip bomb, a tag of a million
//! attributes). The owner runs all day, so the binaries read every document (web pages, PDFs,
//! office files, e-books) in a child process of themselves (see [`use_document_helper`]): it
//! gets the bytes on stdin and, on Unix, a memory limit, a CPU limit and no core file, and is
//! killed when it takes longer than [`time_limit`]. What it answers is the finished text, so
//! nothing of the file's making is done in the parent. Without the helper (a library caller,
//! unit tests) the same reading runs in-process.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Kind;
use crate::corpus::SkipReason;

/// The argument that makes a dochash binary the document helper.
const HELPER_ARG: &str = "__read-document";

/// Most memory the helper may map, in bytes: far above what a real document needs, far below
/// what would push the user's own programs into swap.
#[cfg(unix)]
const HELPER_MEMORY: u64 = 2 << 30;

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Reads documents in a child process of this executable from now on. A binary that calls
/// this must call [`document_helper_main`] first thing in `main`.
pub fn use_document_helper() {
    // The running binary itself, even after an upgrade replaced the file on disk.
    let exe = if cfg!(target_os = "linux") {
        Ok(PathBuf::from("/proc/self/exe"))
    } else {
        std::env::current_exe()
    };
    if let Ok(exe) = exe {
        let _ = HELPER.set(exe);
    }
}

/// When this process was started as the document helper, does the helper's work and returns
/// the exit code; otherwise returns `None` at once.
pub fn document_helper_main() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    if args.nth(1).is_none_or(|a| a != HELPER_ARG) {
        return None;
    }
    let mut arg = || args.next().and_then(|a| a.into_string().ok());
    let kind = arg().and_then(|k| Kind::from_name(&k));
    let bytes_len = arg().and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let text_limit = arg().and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let Some(kind) = kind else {
        return Some(ExitCode::from(2));
    };
    #[cfg(unix)]
    limit_self(bytes_len);
    let mut bytes = Vec::new();
    if std::io::stdin()
        .lock()
        .take(bytes_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .is_err()
    {
        return Some(ExitCode::from(2));
    }
    crate::failpoint::hit("document.reading");
    let answer = super::read_here(kind, &bytes, text_limit);
    let out = serde_json::to_vec(&answer).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return Some(ExitCode::from(2));
    }
    Some(ExitCode::SUCCESS)
}

/// Caps the helper's own memory and CPU time, so that a file that makes the reader run away
/// ends the helper (the parent then says so) instead of the machine's memory or the user's
/// day; and leaves no core file behind when it does.
#[cfg(unix)]
fn limit_self(file_bytes: u64) {
    let set = |resource, value: u64| {
        let lim = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit reads a valid rlimit; failing leaves the limit as it was.
        unsafe { libc::setrlimit(resource, &lim) };
    };
    set(libc::RLIMIT_CORE, 0);
    set(libc::RLIMIT_AS, HELPER_MEMORY);
    set(libc::RLIMIT_CPU, time_limit(file_bytes).as_secs() + 1);
    // An owner that exits (or is killed) mid-read takes its reader with it.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// How long one document may take to read: enough for a long manual on a slow machine (a
/// 1,000-page book reads in a few seconds), not enough for a stuck reader to hold up an update
/// for long.
fn time_limit(file_bytes: u64) -> Duration {
    let mib = file_bytes / (1 << 20);
    Duration::from_secs((20 + mib).min(120))
}

/// Reads a document of `kind` in the helper, when the binary set one up.
pub(crate) fn run(
    kind: Kind,
    bytes: &[u8],
    text_limit: u64,
) -> Option<Result<(String, bool), SkipReason>> {
    let exe = HELPER.get()?;
    Some(in_helper(exe, kind, bytes, text_limit))
}

fn in_helper(
    exe: &PathBuf,
    kind: Kind,
    bytes: &[u8],
    text_limit: u64,
) -> Result<(String, bool), SkipReason> {
    let failed = |why: String| SkipReason::NoText(format!("the document reader failed ({why})"));
    let mut cmd = Command::new(exe);
    cmd.arg(HELPER_ARG)
        .arg(kind.name())
        .arg(bytes.len().to_string())
        .arg(text_limit.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        // CREATE_NO_WINDOW: a host without a console (an editor running `dochash mcp`) must
        // not see a window flash for every document.
        cmd.creation_flags(0x0800_0000);
    }
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    let stop = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        stop(&mut child);
        return Err(failed("no pipe to it".into()));
    };
    // Both ends in threads: the helper may stop reading or writing at any point, and neither
    // may block this thread past the deadline.
    let limit = time_limit(bytes.len() as u64);
    let input = bytes.to_vec();
    let writer = std::thread::Builder::new().spawn(move || {
        let _ = stdin.write_all(&input);
    });
    // The answer is the text in JSON: escaping doubles a quote or a backslash, and a control
    // character takes six bytes, which a text cannot be full of.
    let cap = text_limit.saturating_mul(6).saturating_add(1 << 20);
    let reader = std::thread::Builder::new().spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(cap.saturating_add(1)).read_to_end(&mut out);
        out
    });
    let (Ok(writer), Ok(reader)) = (writer, reader) else {
        stop(&mut child);
        return Err(failed("no thread to talk to it".into()));
    };
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                stop(&mut child);
                break Err(SkipReason::NoText(format!(
                    "took longer than {} s to read",
                    limit.as_secs()
                )));
            }
            Err(e) => {
                stop(&mut child);
                break Err(failed(e.to_string()));
            }
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let status = status?;
    if out.len() as u64 > cap {
        return Err(SkipReason::TooLarge {
            size: out.len() as u64,
            limit: text_limit,
        });
    }
    if !status.success() {
        return Err(failed(exit_reason(status)));
    }
    serde_json::from_slice(&out).map_err(|_| failed("its answer did not decode".into()))?
}

fn exit_reason(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return match sig {
                libc::SIGXCPU => "it ran out of CPU time".into(),
                libc::SIGKILL => "it was killed".into(),
                libc::SIGABRT | libc::SIGSEGV => "it crashed, perhaps out of memory".into(),
                s => format!("signal {s}"),
            };
        }
    }
    format!("{status}")
}
