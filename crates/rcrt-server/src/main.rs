//! `rcrt-server`: reads the configuration, then runs the service (see the crate docs).
//! `rcrt-server healthcheck` instead asks a running server for `/health` (exit 0 when it
//! answers 200 within 3 s, 1 otherwise), for a container `HEALTHCHECK`.

use std::process::ExitCode;

use rcrt_server::config::{Config, Lookup, ProbeConfig};

mod hygiene;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "healthcheck")
    {
        return healthcheck();
    }
    let config = Lookup::process().and_then(|l| Config::from_lookup(&l));
    // The KEKs and the store URL are read: take them out of the environment and stop core
    // dumps and same-user debuggers, while this is the only thread.
    let mut hygiene_problems = hygiene::scrub_environment(&hygiene::SECRET_VARS);
    hygiene_problems.extend(hygiene::no_dumps());
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rcrt-server: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    {
        use rcrt_server::config::LogFormat;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let layer: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> =
            match config.log_format {
                LogFormat::Text => tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(log_filter(&config.log_filter))
                    .boxed(),
                // One object per line: the event's fields at the top level (an access line's
                // request id, route, status...), the request span's under `span`.
                LogFormat::Json => tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(log_filter(&config.log_filter))
                    .boxed(),
            };
        tracing_subscriber::registry().with(layer).init();
    }
    for problem in hygiene_problems {
        tracing::warn!("key hygiene: {problem}");
    }
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

/// Reads no KEK and opens no store: only `BIND_ADDR` and `TLS_CERT_FILE`. Exit 1 (never 2,
/// which Docker reserves in health checks) on any failure, with one line on stderr.
fn healthcheck() -> ExitCode {
    let result = Lookup::process_only(&ProbeConfig::VARS)
        .and_then(|l| ProbeConfig::from_lookup(&l))
        .map_err(|e| format!("configuration error: {e}"))
        .and_then(|probe| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            runtime
                .block_on(rcrt_server::healthcheck::check(&probe))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcrt-server healthcheck: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The operator's filter (`RUST_LOG`; `info` if it does not parse), except that the PostgreSQL
/// client's targets (`tokio_postgres`, `tokio_postgres::query`, ...) never pass anything below
/// `info`, whatever the filter says: at `debug` they log every statement's parameters (wrapped
/// DEKs, sealed values, reasons, user ids).
fn log_filter(spec: &str) -> impl tracing_subscriber::layer::Filter<tracing_subscriber::Registry> {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    let env = tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    env.and(filter_fn(|meta| {
        !(meta.target().starts_with("tokio_postgres") && *meta.level() > tracing::Level::INFO)
    }))
}
