//! `switchboard`: thin over the library (see `lib.rs`).
fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
