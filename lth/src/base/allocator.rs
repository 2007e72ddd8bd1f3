//! The allocator that `lth`'s programs choose: [`jemalloc!`](crate::jemalloc) declares it in the
//! binary that invokes it (the `lth` CLI, every test harness; cargo feature `jemalloc`, on by
//! default). The library itself allocates
//! through whatever allocator the program linking it has chosen.

/// Declares jemalloc as this program's global allocator, configured to keep freed memory and to
/// back it with huge pages. Training allocates and frees the same large buffers every step (a
/// convolution's im2col matrix is 141 MB at batch 60). glibc always maps blocks over 32 MB
/// afresh, and jemalloc by default returns them to the OS; either way every step faults them
/// back in page by page. Measured on the Conv-2 smoke run (synthetic data, one thread,
/// `/usr/bin/time -v`): jemalloc's defaults took 41.1M minor page faults, 71 s of system time
/// and 2 min 27 s wall. This setting took 1.6K faults, 2.7 s and 1 min 12 s.
///
/// Invoke it once, at the top level of a binary (`lth::jemalloc!();`); it expands to nothing on
/// MSVC targets, where jemalloc is not built.
#[cfg(feature = "jemalloc")]
#[macro_export]
macro_rules! jemalloc {
    () => {
        #[cfg(not(target_env = "msvc"))]
        #[global_allocator]
        static ALLOCATOR: $crate::base::allocator::Jemalloc = $crate::base::allocator::Jemalloc;

        /// jemalloc's compile-time options (the prefixed `malloc_conf` symbol of tikv-jemallocator).
        #[cfg(not(target_env = "msvc"))]
        #[allow(non_upper_case_globals)]
        #[export_name = "_rjem_malloc_conf"]
        pub static malloc_conf: &u8 = &b"thp:always,metadata_thp:always,oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1\0"[0];
    };
}

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
pub use tikv_jemallocator::Jemalloc;

// The library chooses no allocator; its own unit tests run under the one the CLI uses.
#[cfg(all(test, feature = "jemalloc"))]
crate::jemalloc!();

/// Without the `jemalloc` feature the program keeps the system allocator: the macro expands to
/// nothing, so the binaries build either way (`cargo build --no-default-features`).
#[cfg(not(feature = "jemalloc"))]
#[macro_export]
macro_rules! jemalloc {
    () => {};
}
