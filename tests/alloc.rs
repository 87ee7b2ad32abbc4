//! `encoder::HoldFreedMemory` as a training uses it, in a process of its own (the allocator's
//! settings are the process's): while a guard lives, memory freed by a thread is there for its
//! next allocation without new page faults; after the last guard, what glibc can return (here,
//! the step's buffers) has gone back to the system. Page faults are counted per thread, so
//! nothing here depends on timing.

// Page faults per thread (RUSAGE_THREAD) and glibc's allocator: Linux.
#![cfg(target_os = "linux")]
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use dochash::encoder::{HoldFreedMemory, keep_large_buffers};

/// Minor page faults of the calling thread so far.
fn faults() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

/// Page faults of building and freeing what a training step might: 96 MB in 4 MB buffers
/// (below the size glibc maps on its own), every page written.
fn step() -> i64 {
    let before = faults();
    let bufs: Vec<Vec<u8>> = (0..24)
        .map(|i| std::hint::black_box(vec![i as u8 + 1; 4 << 20]))
        .collect();
    drop(std::hint::black_box(bufs));
    faults() - before
}

#[test]
fn freed_memory_is_kept_while_a_training_holds_it_and_returned_after() {
    keep_large_buffers();
    // A thread other than the main one, as the owner's background training runs on.
    std::thread::spawn(|| {
        let pages = (96 << 20) / 4096;
        let guard = HoldFreedMemory::new();
        let first = step();
        assert!(first > pages / 2, "the first step maps its pages: {first}");
        // A nested guard (another training) changes nothing, and neither does its end.
        drop(HoldFreedMemory::new());
        let again = step();
        assert!(
            again < pages / 20,
            "held: {again} faults again after {first} the first time"
        );
        drop(guard);
        let after = step();
        assert!(
            after > pages / 2,
            "the memory went back to the system when the last guard ended: {after} faults"
        );
    })
    .join()
    .unwrap();
}
