//! The `paydvm` binary: the product library's command line, with the two commands that run test
//! scaffolding (`demo`, `ledger sample`) supplied from here, where `paydvm-testkit` is reachable.

mod demo;
mod sample;

use std::path::Path;

/// `paydvm demo` and `paydvm ledger sample`, for [`paydvm::cli::run`].
struct Scaffolding;

impl paydvm::cli::Scaffolded for Scaffolding {
    fn demo(&self) -> anyhow::Result<u8> {
        demo::run()
    }

    fn ledger_sample(&self, file: &Path, jobs: u32) -> anyhow::Result<u8> {
        sample::run(file, jobs)
    }
}

fn main() -> std::process::ExitCode {
    paydvm::cli::run(std::env::args_os(), &Scaffolding)
}
