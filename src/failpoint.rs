//! Named points where a test can make a process abort or wait, to prove that a crash at that
//! exact point (inside a file's transaction, between code generations, during a generation
//! switch, while a settings file is written) is survived, and that a slow step is handled.
//!
//! Only debug builds — the binaries `cargo test` runs — look at the environment; in a release
//! build [`hit`] is empty. `DOCHASH_FAILPOINTS` lists `name=action` pairs, comma-separated:
//! - `abort`: print `failpoint NAME: abort` on stderr and abort the process (SIGABRT);
//! - `abort@N`: the same at the N-th time the point is reached;
//! - `pause`: create `NAME.paused` in `DOCHASH_FAILPOINT_DIR` (holding the paused thread's id on
//!   Linux) and wait until a file `NAME.go` appears there (deterministic: the test decides when the process goes on);
//! - `on`: makes [`enabled`] true for a switch that a test needs flipped (e.g. adopting what
//!   background training produced, whatever its checks say).

/// Marks a failpoint; does nothing unless a debug build was told to act here.
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    imp::hit(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Whether a debug build was told `NAME=on`.
pub fn enabled(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("DOCHASH_FAILPOINTS").is_ok_and(|spec| {
            spec.split(',')
                .filter_map(|i| i.split_once('='))
                .any(|(n, a)| n.trim() == name && a.trim() == "on")
        })
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}

#[cfg(debug_assertions)]
mod imp {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::Mutex;
    use std::time::Duration;

    static COUNTS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

    pub fn hit(name: &str) {
        let Ok(spec) = std::env::var("DOCHASH_FAILPOINTS") else {
            return;
        };
        for item in spec.split(',') {
            let Some((n, action)) = item.split_once('=') else {
                continue;
            };
            if n.trim() != name {
                continue;
            }
            let action = action.trim();
            let count = {
                let mut guard = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
                let c = guard.get_or_insert_with(HashMap::new);
                let e = c.entry(name.to_string()).or_insert(0);
                *e += 1;
                *e
            };
            match action.split_once('@') {
                Some(("abort", nth)) if nth.parse::<u64>().ok() == Some(count) => abort(name),
                None if action == "abort" => abort(name),
                None if action == "pause" => pause(name),
                _ => {}
            }
        }
    }

    fn abort(name: &str) -> ! {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "failpoint {name}: abort");
        let _ = err.flush();
        std::process::abort()
    }

    fn pause(name: &str) {
        let Some(dir) = std::env::var_os("DOCHASH_FAILPOINT_DIR") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        // The paused thread's id, so that a test can look at the thread the work runs on.
        #[cfg(target_os = "linux")]
        // SAFETY: a plain system call about the calling thread.
        let who = unsafe { libc::gettid() }.to_string();
        #[cfg(not(target_os = "linux"))]
        let who = String::new();
        let _ = std::fs::write(dir.join(format!("{name}.paused")), who);
        let go = dir.join(format!("{name}.go"));
        while !go.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
