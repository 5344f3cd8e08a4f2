//! The accept loop: HTTP/1.1 with hyper, with timeouts against slow and idle clients and a cap
//! on open connections.
//!
//! - `HTTP_HEADER_TIMEOUT` (hyper's header read timeout) closes a connection whose request head
//!   has not fully arrived: one that sends nothing, dribbles its headers, or idles between
//!   keep-alive requests.
//! - `HTTP_BODY_TIMEOUT` bounds the whole body (see `http::guard::body_limits`); a declared
//!   `Content-Length` over the limit is refused before a byte is read.
//! - `HTTP_WRITE_TIMEOUT` closes a connection whose client stops reading its response.
//! - `HTTP_MAX_CONNECTIONS` caps the connections served at once. At the cap the loop stops
//!   accepting (new connections wait in the kernel's queue) instead of accepting and dropping,
//!   and the cap is lowered at start to fit the open-file limit, which is raised to its hard
//!   limit, so `accept` never fails for want of file descriptors.
//! - With TLS (`TLS_CERT_FILE`), the handshake runs in the connection's own task and must finish
//!   within `HTTP_HEADER_TIMEOUT` too: a client that starts a handshake and stalls gives its
//!   connection slot back then, and never delays other connections' accepts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;

use crate::config::HttpSettings;

/// File descriptors kept free for everything but client connections (database connections,
/// SQLite's files, the log, the JWKS client).
const RESERVED_FDS: u64 = 256;
/// The listen queue asked for (the kernel caps it, e.g. at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;
/// How long in-flight requests get to finish after SIGINT or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Raises the soft open-file limit to the hard limit, and returns the connection cap that fits
/// in it: `wanted`, or fewer (with a warning) when the limit is too low.
pub fn connection_cap(wanted: usize) -> usize {
    // An unlimited hard limit cannot be the soft one on Linux (it is capped by
    // fs.nr_open, 1048576 by default): try that cap next, then live with the current limit.
    let raised = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::increase_nofile_limit(1 << 20))
        .or_else(|e| {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft)
        });
    let limit = match raised {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open-file limit");
            return wanted;
        }
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FDS))
        .unwrap_or(usize::MAX)
        .max(16);
    if fits < wanted {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = fits,
            wanted,
            "HTTP_MAX_CONNECTIONS lowered to fit the open-file limit (raise `ulimit -n` / LimitNOFILE to serve more)"
        );
        fits
    } else {
        wanted
    }
}

/// Binds `addr` with a long listen queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std does on Unix: a restarted server can bind while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Errors of one connection that `accept` reports; the next `accept` is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    )
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets
/// in-flight requests finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    settings: &HttpSettings,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true);
    let write_timeout = settings.write_timeout;
    let handshake_timeout = settings.header_timeout;
    tokio::pin!(shutdown);
    loop {
        // Back-pressure: no accept while every permit is taken.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // E.g. out of file descriptors despite the cap: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(write_timeout));
        let stream: Box<TimeoutStream<TcpStream>> = Box::new(stream);
        let (http, app, watcher) = (http.clone(), app.clone(), graceful.watcher());
        match &tls {
            None => {
                tokio::spawn(serve_connection(
                    Box::into_pin(stream),
                    http,
                    app,
                    watcher,
                    permit,
                ));
            }
            Some(acceptor) => {
                let accept = acceptor.accept(Box::into_pin(stream));
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, accept).await {
                        Ok(Ok(tls)) => serve_connection(tls, http, app, watcher, permit).await,
                        // rustls' alerts and I/O errors: fixed texts, no key material.
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
}

/// Serves one connection's requests; its slot (`permit`) is given back when it closes.
async fn serve_connection<I>(
    io: I,
    http: hyper::server::conn::http1::Builder,
    app: Router,
    watcher: Watcher,
    permit: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(conn).await {
        // hyper's error kinds (timeouts, parse errors, resets): fixed texts.
        tracing::debug!(error = %e, "connection closed with an error");
    }
    drop(permit);
}
