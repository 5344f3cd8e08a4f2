//! `rcrt-server`: reads the configuration, then runs the service (see the crate docs).

use std::process::ExitCode;

use rcrt_server::config::{Config, Lookup};

fn main() -> ExitCode {
    let config = match Lookup::process().and_then(|l| Config::from_lookup(&l)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rcrt-server: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rcrt-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rcrt_server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcrt-server: {e}");
            ExitCode::FAILURE
        }
    }
}
