//! The RCRT Secrets HTTP service: configuration, start-up checks, routes and error mapping.
//!
//! `main.rs` only parses the configuration and calls [`run`]; everything else lives here so the
//! routes can be tested without a socket.

pub mod access_log;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod healthcheck;
pub mod http;
pub mod serve;
pub mod tls;

use std::sync::Arc;

use rcrt_core::audit::checkpoint::{ensure_signing_key, CheckpointJob, CheckpointSettings};
use rcrt_core::maintenance::Maintenance;
use rcrt_core::rewrap_job::RewrapJob;
use rcrt_core::{CoreError, Limits, Service, SystemClock};
use rcrt_keys::{KeyProvider, KeyringError};
use rcrt_store::StoreError;

use crate::auth::{Authenticator, JwtVerifier};
use crate::config::{AuthMode, Config};

/// Why the server refused to start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The KEK is missing or malformed (the guide's messages), or its provider could not be
    /// set up.
    #[error(transparent)]
    Kek(#[from] KeyringError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The store's DEKs are wrapped under KEKs that are not configured.
    #[error("refusing to start: {0}")]
    Check(#[from] CoreError),
    /// The JWT settings could not be used.
    #[error("JWT configuration: {0}")]
    Auth(#[from] auth::JwtConfigError),
    /// The bootstrap admin token could not be set up.
    #[error("bootstrap token: {0}")]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The SIGHUP handler (certificate reload) could not be installed.
    #[error("cannot handle SIGHUP: {0}")]
    Signal(std::io::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        error: std::io::Error,
    },
}

/// Builds the service and its background re-wrap from the configuration, and runs the start-up
/// checks (the audit checkpoint signing key is loaded or made here). The re-wrap is not started
/// here.
pub async fn build(config: &Config) -> Result<http::AppState, StartupError> {
    Ok(build_parts(config).await?.0)
}

/// [`build`], and the audit checkpoint job (not started).
async fn build_parts(
    config: &Config,
) -> Result<(http::AppState, Arc<CheckpointJob>), StartupError> {
    let keyring = Arc::new(config.keks.build(&config.kek).await?);
    for (id, provider, what) in keyring.describe() {
        tracing::info!(kek_id = %id, provider = %provider, key = %what, "KEK");
    }
    if config.keks.has_remote() {
        tokio::spawn(keyring.clone().watch_health(config.keks.probe_interval));
    }
    let keys: Arc<dyn KeyProvider> = keyring;
    let store = rcrt_store::open_with(&config.db_url, config.db_pool_size).await?;
    let clock = Arc::new(SystemClock);
    let service = Service::new(
        store.clone(),
        keys.clone(),
        clock.clone(),
        Limits {
            max_value_bytes: config.max_value_bytes,
        },
    )
    .with_lifecycle(config.lifecycle);
    service.check_keks().await?;
    let signer = ensure_signing_key(&*store, &*keys, &*clock).await?;
    let checkpoints = CheckpointJob::new(
        store.clone(),
        clock.clone(),
        signer,
        CheckpointSettings::every(config.audit_checkpoint_interval),
    );
    let rewrap = RewrapJob::new(
        Arc::new(Maintenance::new(store, keys, clock)),
        config.rewrap,
    );
    let AuthMode { jwt, tokens } = &config.auth;
    let auth = Authenticator {
        jwt: match jwt {
            Some(j) => Some(Arc::new(JwtVerifier::new(
                j.issuer.clone(),
                j.audience.clone(),
                j.keys.clone(),
            )?)),
            None => None,
        },
        tokens: *tokens,
    };
    if *tokens {
        bootstrap::run(
            &service,
            config.bootstrap_token_file.as_deref(),
            &config.bootstrap_token_output,
            *tokens && jwt.is_none(),
        )
        .await?;
    }
    Ok((
        http::AppState {
            service,
            rewrap,
            auth,
            console: http::console::ConsoleOptions {
                enabled: config.console.enabled,
                session_ttl: config.console.session_ttl,
                tls: config.tls.is_some(),
                auth_label: auth_label(&config.auth),
            },
        },
        checkpoints,
    ))
}

/// The purge job: every `every`, shreds soft-deleted secrets whose recovery window ended (each
/// with a `purge` audit row) and forgets expired idempotency keys. Every replica runs it; the
/// store makes sure no secret is purged twice. A failed pass is logged and retried next time.
fn spawn_purge(state: Arc<http::AppState>, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state.service.purge_pass().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purge pass shredded soft-deleted secrets"),
                Err(e) => {
                    tracing::warn!(error = %e, "purge pass failed; retrying at the next interval")
                }
            }
        }
    });
}

/// Starts the service and serves until SIGINT or SIGTERM.
pub async fn run(mut config: Config) -> Result<(), StartupError> {
    let (state, checkpoints) = build_parts(&config).await?;
    let state = Arc::new(state);
    // The keyring holds the KEKs now: wipe their text (base64) rather than keep it for the
    // process's life.
    drop(std::mem::take(&mut config.kek));
    let kek_id = state.service.keys().current_kek_id().clone();
    let max_connections = serve::connection_cap(config.http.max_connections);
    let tls = match &config.tls {
        Some(files) => {
            let tls = Arc::new(tls::Tls::load(files)?);
            // Installed before the server says it listens: a SIGHUP from then on reloads the
            // certificate instead of ending the process.
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(StartupError::Signal)?;
            tokio::spawn(tls.clone().watch(hangup));
            Some(tls.acceptor())
        }
        None => None,
    };
    let listener = serve::bind(config.bind).map_err(|error| StartupError::Bind {
        addr: config.bind,
        error,
    })?;
    if config.exposed_without_auth() {
        tracing::warn!(
            addr = %config.bind,
            "AUTH_MODE=disabled on a non-loopback address: ANYONE WHO CAN REACH THIS PORT CAN READ, CHANGE AND DELETE EVERY SECRET. Use AUTH_MODE=token (the default off loopback) unless something else in front authenticates every request"
        );
    }
    state.rewrap.spawn();
    checkpoints.spawn();
    spawn_purge(state.clone(), config.purge_interval);
    let app = http::app(
        state,
        http::AppOptions {
            max_value_bytes: config.max_value_bytes,
            body_timeout: config.http.body_timeout,
            // Without authentication, a DNS-rebinding page must not reach the API.
            host_policy: config.auth.is_disabled().then(|| http::guard::HostPolicy {
                allowed: config.http.allowed_hosts.clone().into(),
            }),
        },
    );
    tracing::info!(
        addr = %config.bind,
        kek_id = %kek_id,
        auth = %auth_label(&config.auth),
        store = if config.db_url.starts_with("postgres") { "postgresql" } else { "sqlite" },
        max_connections,
        tls = if tls.is_some() { "on" } else { "off" },
        "rcrt-server listening"
    );
    // When the signal came, so the last line can say how long draining took.
    let signalled = Arc::new(std::sync::OnceLock::new());
    let on_signal = {
        let signalled = signalled.clone();
        async move {
            let signal = shutdown_signal().await;
            let _ = signalled.set(std::time::Instant::now());
            tracing::info!(
                signal,
                "shutting down: no new connections; letting requests in flight finish"
            );
        }
    };
    serve::serve(listener, app, tls, &config.http, max_connections, on_signal).await;
    let drain_ms = signalled
        .get()
        .map_or(0, |at: &std::time::Instant| at.elapsed().as_millis());
    tracing::info!(drain_ms, "rcrt-server stopped");
    Ok(())
}

fn auth_label(mode: &AuthMode) -> &'static str {
    match (mode.jwt.is_some(), mode.tokens) {
        (false, false) => "disabled",
        (true, false) => "jwt",
        (false, true) => "token",
        (true, true) => "jwt,token",
    }
}

/// Waits for SIGINT or SIGTERM; returns the signal's name.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            return tokio::select! { _ = ctrl_c => "SIGINT", _ = term.recv() => "SIGTERM" };
        }
    }
    let _ = ctrl_c.await;
    "SIGINT"
}
