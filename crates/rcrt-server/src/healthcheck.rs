//! `rcrt-server healthcheck`: asks the server on this host for `GET /health`, for a container
//! `HEALTHCHECK` in an image without a shell or curl.
//!
//! It reads only `BIND_ADDR` and `TLS_CERT_FILE` ([`ProbeConfig`]): no KEK, no store, no key
//! file. It connects to the loopback address of `BIND_ADDR`'s family (or to `BIND_ADDR` itself
//! when that is a specific address), over https when `TLS_CERT_FILE` is set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::ProbeConfig;

/// How long the whole check (connect, TLS handshake, request, answer) may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the server was found unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// No answer (refused, timed out, TLS failure, ...).
    #[error("{url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The innermost cause.
        reason: String,
    },
    /// An answer other than 200.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status answered.
        status: u16,
    },
}

/// Where to knock: an unspecified `BIND_ADDR` (`0.0.0.0`, `[::]`) is reached on the loopback
/// address of its family; any other address (loopback or one of this host's) as it is.
pub fn target(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// Sends `GET /health` and expects 200 within [`TIMEOUT`].
pub async fn check(probe: &ProbeConfig) -> Result<(), HealthcheckError> {
    let scheme = if probe.tls { "https" } else { "http" };
    let url = format!("{scheme}://{}/health", target(probe.bind));
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        // HTTP(S)_PROXY in a container's environment must not send this request elsewhere.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // The certificate is not checked: the request goes to this host's own address (never
        // leaves the machine) and carries nothing secret (no token, no body), and the answer
        // only decides healthy or not. Pinning the file's certificate instead would report a
        // healthy server as failing while it still serves the previous certificate (between a
        // file change and its reload, or after a refused reload).
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| HealthcheckError::Client(innermost(&e)))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| HealthcheckError::Unreachable {
            url: url.clone(),
            reason: innermost(&e),
        })?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(HealthcheckError::Status { url, status }),
    }
}

/// reqwest's own message is only "error sending request for url (...)"; the cause says why
/// (connection refused, timed out, a TLS alert).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        let t = |s: &str| target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:8081"), "127.0.0.1:8081");
        assert_eq!(t("[::]:9"), "[::1]:9");
        assert_eq!(t("127.0.0.2:9"), "127.0.0.2:9");
        assert_eq!(t("10.1.2.3:9"), "10.1.2.3:9");
    }
}
