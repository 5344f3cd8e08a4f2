//! Middleware that runs before routing: request ids, the `Host` check of a server without
//! authentication, and the request body's size and time limits.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, HOST};
use axum::http::uri::Authority;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::{Instant, Sleep};

use super::{ApiError, REQUEST_ID};

/// The header that carries the caller's own request id back to it (bounded and sanitised).
pub const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");

/// The longest caller request id kept (characters beyond it are dropped).
pub const CLIENT_REQUEST_ID_MAX: usize = 128;

/// This server's id for a request: generated here for every request, never taken from the
/// caller. It is the one in the audit log, the logs and the `X-Request-Id` response header.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// The `X-Request-Id` the caller sent, if any: visible ASCII only, at most
/// [`CLIENT_REQUEST_ID_MAX`] characters. Logged and echoed as `X-Client-Request-Id`, never
/// used as the audit log's request id.
#[derive(Clone, Debug)]
pub struct ClientRequestId(pub Option<Arc<str>>);

/// The caller's id as kept: its visible ASCII characters (no spaces, controls or bytes over
/// 0x7e), cut to [`CLIENT_REQUEST_ID_MAX`]; `None` when nothing is left.
pub fn sanitise_client_request_id(raw: &[u8]) -> Option<String> {
    let kept: String = raw
        .iter()
        .filter(|b| b.is_ascii_graphic())
        .take(CLIENT_REQUEST_ID_MAX)
        .map(|&b| char::from(b))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// Gives every request our own id (replacing any `X-Request-Id` the caller sent, which is
/// kept apart as [`ClientRequestId`]) and puts both on the response.
pub async fn request_ids(mut req: Request, next: Next) -> Response {
    let ours = uuid::Uuid::now_v7().to_string();
    let theirs = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| sanitise_client_request_id(v.as_bytes()));
    let ours_header = HeaderValue::from_str(&ours).ok();
    let theirs_header = theirs
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok());
    req.headers_mut().remove(REQUEST_ID);
    if let Some(v) = &ours_header {
        req.headers_mut().insert(REQUEST_ID, v.clone());
    }
    req.extensions_mut().insert(RequestId(ours.into()));
    req.extensions_mut()
        .insert(ClientRequestId(theirs.map(Into::into)));
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.remove(REQUEST_ID);
    if let Some(v) = ours_header {
        headers.insert(REQUEST_ID, v);
    }
    if let Some(v) = theirs_header {
        headers.insert(CLIENT_REQUEST_ID, v);
    }
    resp
}

/// The `Host` names a server without authentication answers: loopback names and addresses,
/// plus `ALLOWED_HOSTS`. Any other name is what a DNS-rebinding page would send.
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    /// Extra host names (lower case, no port).
    pub allowed: Arc<[String]>,
}

impl HostPolicy {
    /// True for `localhost`, a loopback IP literal (`127.0.0.1`, `[::1]`) or an allowed name.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if host == "localhost" {
            return true;
        }
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        if literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            return true;
        }
        self.allowed.contains(&host)
    }

    /// Whether a request's authority (its `Host` header and any absolute-form URI) is served.
    /// No `Host`, several `Host` headers, or one that does not parse: refused.
    fn admits(&self, req: &Request) -> bool {
        let mut hosts = req.headers().get_all(HOST).iter();
        let header = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h,
            _ => return false,
        };
        let Some(authority) = header
            .to_str()
            .ok()
            .and_then(|h| h.parse::<Authority>().ok())
        else {
            return false;
        };
        if authority.as_str().contains('@') || !self.allows(authority.host()) {
            return false;
        }
        req.uri()
            .authority()
            .is_none_or(|a| !a.as_str().contains('@') && self.allows(a.host()))
    }
}

/// With authentication disabled: refuses (421) a request whose `Host` is not loopback or
/// allowed, on every route but `/health`.
pub async fn host_check(State(policy): State<HostPolicy>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" || policy.admits(&req) {
        return next.run(req).await;
    }
    tracing::info!("request refused: Host not served without authentication");
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        "this server runs without authentication and answers only to localhost, 127.0.0.1 \
         and [::1] (add other names to ALLOWED_HOSTS)",
    )
    .into_response()
}

/// True when a browser says the request comes from a page of another origin: its
/// `Sec-Fetch-Site` is neither `same-origin` nor `none` (typed or bookmarked), or, from a
/// browser too old to send that, its `Origin` names another host than `Host` (or a proxy's
/// `X-Forwarded-Host`). Other clients send neither header.
pub fn is_cross_site(headers: &axum::http::HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return false;
    };
    // `null` (a sandboxed frame, a file) or anything unparsable: not this origin.
    let Some(authority) = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, a)| a)
    else {
        return true;
    };
    let names_us = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|h| h.trim().eq_ignore_ascii_case(authority))
    };
    !(names_us("host") || names_us("x-forwarded-host"))
}

/// Refuses (403 `cross_site_request`) a request from another site's page that could change
/// anything (any method but GET, HEAD and OPTIONS): cross-site request forgery, with or
/// without a cookie, and also against a server without authentication on loopback.
pub async fn cross_site_check(req: Request, next: Next) -> Response {
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if safe || !is_cross_site(req.headers()) {
        return next.run(req).await;
    }
    tracing::info!("request refused: a state change from another site's page");
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_site_request",
        "a browser sent this request from a page of another origin",
    )
    .into_response()
}

/// The request body's limits: its size (checked against `Content-Length` before anything is
/// read) and the time to receive all of it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest body in bytes.
    pub max_bytes: usize,
    /// Time from the request head to the body's last byte.
    pub timeout: Duration,
}

/// The body did not arrive within [`BodyLimits::timeout`].
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// True when `e` or one of its sources is [`BodyTimedOut`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimedOut>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Answers 413 at once when `Content-Length` is over the limit, and gives the rest of the
/// request one deadline for its whole body (a per-read timeout would let a client dribble a
/// byte at a time for ever).
pub async fn body_limits(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return ApiError::payload_too_large().into_response();
    }
    let deadline = Instant::now() + limits.timeout;
    next.run(req.map(|body| Body::new(DeadlineBody::new(body, deadline))))
        .await
}

/// A body that fails with [`BodyTimedOut`] once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Body, deadline: Instant) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids_are_bounded_and_visible_ascii() {
        assert_eq!(
            sanitise_client_request_id(b"abc-123").as_deref(),
            Some("abc-123")
        );
        assert_eq!(
            sanitise_client_request_id(b"a\nb\x1b[31mc d\t\xff").as_deref(),
            Some("ab[31mcd")
        );
        assert_eq!(sanitise_client_request_id(b" \r\n"), None);
        let long = vec![b'x'; 1000];
        assert_eq!(
            sanitise_client_request_id(&long).map(|s| s.len()),
            Some(CLIENT_REQUEST_ID_MAX)
        );
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        for ok in [
            &[][..],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[
                ("host", "127.0.0.1:8081"),
                ("origin", "http://127.0.0.1:8081"),
            ],
            &[
                ("host", "rcrt:8081"),
                ("x-forwarded-host", "secrets.example"),
                ("origin", "https://secrets.example"),
            ],
            // The browser's own word wins over an Origin a proxy may have rewritten.
            &[
                ("sec-fetch-site", "same-origin"),
                ("host", "a"),
                ("origin", "http://b"),
            ],
        ] {
            assert!(!is_cross_site(&headers(ok)), "{ok:?}");
        }
        for bad in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")],
            &[
                ("host", "127.0.0.1:8081"),
                ("origin", "http://evil.example"),
            ],
            &[
                ("host", "127.0.0.1:8081"),
                ("origin", "http://127.0.0.1:9999"),
            ],
            &[("host", "127.0.0.1:8081"), ("origin", "null")],
            &[("origin", "http://127.0.0.1:8081")],
        ] {
            assert!(is_cross_site(&headers(bad)), "{bad:?}");
        }
    }

    #[test]
    fn loopback_hosts() {
        let p = HostPolicy {
            allowed: vec!["rcrt.internal".to_owned()].into(),
        };
        for ok in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "rcrt.internal",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1",
            "[::2]",
            "",
            "localhost.",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
    }
}
