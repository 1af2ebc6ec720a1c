// mimalloc: events are allocated by the decoding thread and freed by the
// stage that drops them; glibc's malloc spends a third of job A's CPU time
// on that cross-thread pattern (measured with perf, see README "Performance").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's option enum (libmimalloc-sys
/// names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // mimalloc 3 keeps freed pages committed for a second (1000 ms) before
    // giving them back; events are freed in bursts after each batch, so a
    // second's worth stays resident: job A peaked at 28-34 MiB with three
    // chunks decoding at once, 25-27 MiB with 20 ms, at the same speed
    // (0 ms cost 20 % more time in madvise).
    // SAFETY: sets one integer option; mimalloc reads it when it purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 20) };
    flowgate::cli::main()
}
