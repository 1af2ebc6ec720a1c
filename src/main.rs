fn main() -> std::process::ExitCode {
    flowgate::cli::main()
}
