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
