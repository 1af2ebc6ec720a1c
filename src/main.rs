// mimalloc: events are allocated by the decoding thread and freed by the
// stage that drops them; glibc's malloc spends a third of job A's CPU time
// on that cross-thread pattern (measured with perf, see README "Performance").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    flowgate::cli::main()
}
