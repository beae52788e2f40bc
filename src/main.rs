fn main() -> std::process::ExitCode {
    paydvm::cli::run(std::env::args_os())
}
