//! Background work that must not slow what a person is doing: training, indexing, warming the
//! index's mappings.

/// Lowers the calling thread to nice 19 (Linux, where a thread has its own nice value;
/// elsewhere it keeps its priority).
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; failure only leaves the
    // priority unchanged.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS as _, tid as _, 19);
    }
}

/// A thread pool whose threads run at nice 19, for the owner's background work (training,
/// indexing): candle's and the encoder's kernels parallelise on the rayon pool they are called
/// from, so work inside `pool.install` leaves the cores, and rayon's global pool, to queries
/// whenever those need them. Elsewhere than Linux the pool runs at normal priority.
pub fn background_pool(
    name: &'static str,
) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(move |i| format!("{name}-{i}"))
        .start_handler(|_| lower_this_thread())
        .build()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The nice value of the calling thread, from the kernel's own account of it.
    fn own_nice() -> i64 {
        // SAFETY: a plain system call on the calling thread's own id.
        let tid = unsafe { libc::gettid() };
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Fields after the command's closing parenthesis; nice is field 19 of the whole line.
        let rest = stat.rsplit_once(')').unwrap().1;
        rest.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn background_work_runs_at_the_lowest_priority() {
        let pool = super::background_pool("dochash-test").unwrap();
        assert_eq!(pool.install(own_nice), 19);
        assert_eq!(pool.install(|| rayon::join(own_nice, own_nice)), (19, 19));
    }
}
