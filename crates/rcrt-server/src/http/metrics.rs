//! `/metrics`: the Prometheus text format, rendered by `metrics-exporter-prometheus` from a
//! recorder this router owns. It is never installed as the process-wide recorder (each router,
//! and each test's router, has its own) and the crate's HTTP listener and push gateway are not
//! compiled in: the only way out is this route. Also the middleware that counts and times
//! requests by route template, method and status.
//!
//! Why this crate and not `prometheus-client`: that one encodes OpenMetrics, which appends
//! `_total` to every counter's series, and the production guide's alert needs the counter
//! `rcrt_secret_decrypt_failures` scraped under exactly that name. This exporter writes names as
//! given (with its "recommended naming" left off).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use super::AppState;

/// Requests answered, by `route` (the route template, never the path: paths hold secret ids),
/// `method` and `status`.
const REQUESTS: &str = "rcrt_http_requests_total";
/// Time to answer (to the response head), by the same labels.
const DURATION: &str = "rcrt_http_request_duration_seconds";
const KEK_CONFIGURED: &str = "rcrt_kek_configured";
const DECRYPT_FAILURES: &str = "rcrt_secret_decrypt_failures";
const DECRYPT_SUCCESS: &str = "rcrt_secret_decrypt_success_total";
const KEK_UNAVAILABLE: &str = "rcrt_kek_unavailable_total";
const AUDIT_FAILURES: &str = "rcrt_audit_write_failures_total";
const REWRAP_REMAINING: &str = "rcrt_kek_rewrap_remaining";
const REWRAP_FAILED: &str = "rcrt_kek_rewrap_failed";
const REWRAPPED: &str = "rcrt_kek_rewrapped_total";
const POOL_CONNECTIONS: &str = "rcrt_store_pool_connections";
const POOL_MAX: &str = "rcrt_store_pool_max_connections";
const BUILD_INFO: &str = "rcrt_build_info";
const SECRETS_EXPIRING: &str = "rcrt_secrets_expiring";
/// The windows `rcrt_secrets_expiring` is shown for (label `within`).
const EXPIRING_WITHIN: [(&str, Duration); 2] = [
    ("7d", Duration::from_secs(7 * 24 * 3600)),
    ("30d", Duration::from_secs(30 * 24 * 3600)),
];
/// Remote KEK calls: latency by provider and operation; failures also by kind.
const KEK_CALL_DURATION: &str = "rcrt_kek_provider_request_duration_seconds";
const KEK_CALL_ERRORS: &str = "rcrt_kek_provider_errors_total";
const KEK_CIRCUIT_OPEN: &str = "rcrt_kek_provider_circuit_open";
const DEK_CACHE: &str = "rcrt_kek_dek_cache_total";

/// The `route` label of a request that matched no route (the 404 fallback).
const UNMATCHED: &str = "unmatched";

/// Latency buckets in seconds: from a cached read (about a millisecond) to past the store's
/// 5 s operation timeout.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How long a scrape waits for the readiness check before reporting `rcrt_kek_configured 0`
/// (below Prometheus' default 10 s scrape timeout).
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// The census of versions per KEK (a table scan) behind re-wrap's `remaining`,
/// `rcrt_kek_configured` and `/ready`: at most this old.
pub(crate) const CENSUS_MAX_AGE: Duration = Duration::from_secs(5);
/// How often recorded latencies are folded into their buckets, so memory stays bounded when
/// nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The router's metrics: the recorder and the handles that are set at each scrape.
pub(crate) struct Exporter {
    recorder: PrometheusRecorder,
    kek_configured: Gauge,
    decrypt_failures: Counter,
    decrypt_success: Counter,
    kek_unavailable: Counter,
    audit_failures: Counter,
    pool_in_use: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    /// The request counter and latency histogram per route template, method and status,
    /// registered on first use: later requests find their handles without allocating.
    requests: RwLock<HashMap<String, SeriesByMethodStatus>>,
}

/// One route template's request series, by method label and status code.
type SeriesByMethodStatus = HashMap<(&'static str, u16), RequestHandles>;

/// A request series' counter and histogram.
#[derive(Clone)]
struct RequestHandles {
    count: Counter,
    duration: Histogram,
}

impl Exporter {
    /// A recorder with every metric described, and (inside a Tokio runtime) its upkeep task,
    /// which ends when the exporter is dropped.
    pub(crate) fn new() -> Arc<Self> {
        #[allow(clippy::expect_used)]
        // Cannot fail: the only error is an empty bucket list, and BUCKETS is a non-empty const.
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), &BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(KEK_CALL_DURATION.to_owned()), &BUCKETS)
            })
            .expect("non-empty buckets")
            .build_recorder();
        describe(&recorder);
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &METADATA);
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &METADATA);
        let pool = |state: &'static str| {
            recorder.register_gauge(
                &Key::from_parts(
                    POOL_CONNECTIONS,
                    vec![Label::from_static_parts("state", state)],
                ),
                &METADATA,
            )
        };
        recorder
            .register_gauge(
                &Key::from_parts(
                    BUILD_INFO,
                    vec![Label::from_static_parts(
                        "version",
                        env!("CARGO_PKG_VERSION"),
                    )],
                ),
                &METADATA,
            )
            .set(1.0);
        let exporter = Arc::new(Self {
            kek_configured: gauge(KEK_CONFIGURED),
            decrypt_failures: counter(DECRYPT_FAILURES),
            decrypt_success: counter(DECRYPT_SUCCESS),
            kek_unavailable: counter(KEK_UNAVAILABLE),
            audit_failures: counter(AUDIT_FAILURES),
            pool_in_use: pool("in_use"),
            pool_idle: pool("idle"),
            pool_max: gauge(POOL_MAX),
            requests: RwLock::default(),
            recorder,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(upkeep(Arc::downgrade(&exporter)));
        }
        exporter
    }

    /// Answers a scrape: runs the readiness check, reads the core's counters, the pool and the
    /// re-wrap status, and renders everything.
    pub(crate) async fn render(&self, state: &AppState) -> Response {
        let service = &state.service;
        let keys = service.keys();
        // 1 only while the store answers, the provider holds (and can reach) the KEK new DEKs
        // are wrapped under, and every KEK the store uses: what the guide's KEKNotConfigured alert is after (the
        // service "will not work", here for the secrets under a KEK it does not hold).
        let ready = matches!(
            tokio::time::timeout(READY_TIMEOUT, service.ready()).await,
            Ok(Ok(()))
        );
        let all_held = matches!(
            tokio::time::timeout(
                READY_TIMEOUT,
                state.rewrap.unheld_keks_cached(CENSUS_MAX_AGE)
            )
            .await,
            Ok(Ok(unheld)) if unheld.is_empty()
        );
        let configured =
            ready && all_held && keys.can_unwrap(keys.current_kek_id()) && keys.health().available;
        self.kek_configured.set(if configured { 1.0 } else { 0.0 });

        let counts = service.metrics();
        self.decrypt_failures
            .absolute(counts.decrypt_failures_total());
        self.decrypt_success
            .absolute(counts.decrypt_success_total());
        self.kek_unavailable
            .absolute(counts.kek_unavailable_total());
        self.audit_failures
            .absolute(counts.audit_write_failures_total());

        let pool = service.pool_status();
        self.pool_in_use.set(pool.in_use as f64);
        self.pool_idle.set(pool.idle as f64);
        self.pool_max.set(pool.max as f64);

        // Registered on the first status read, so a store that never answered shows no
        // made-up 0; later failures keep the last value (Prometheus' staleness does the rest).
        if let Ok(Ok(rewrap)) =
            tokio::time::timeout(READY_TIMEOUT, state.rewrap.status_cached(CENSUS_MAX_AGE)).await
        {
            let key = |name: &'static str| Key::from_static_name(name);
            self.recorder
                .register_gauge(&key(REWRAP_REMAINING), &METADATA)
                .set(rewrap.remaining as f64);
            self.recorder
                .register_gauge(&key(REWRAP_FAILED), &METADATA)
                .set(rewrap.failed as f64);
            self.recorder
                .register_counter(&key(REWRAPPED), &METADATA)
                .absolute(rewrap.rewrapped_total);
        }
        // An index range each (only secrets with an expiry are in it); like the re-wrap
        // gauges, absent until the store first answers.
        for (label, within) in EXPIRING_WITHIN {
            if let Ok(Ok(n)) =
                tokio::time::timeout(READY_TIMEOUT, service.count_expiring(within)).await
            {
                self.recorder
                    .register_gauge(
                        &Key::from_parts(
                            SECRETS_EXPIRING,
                            vec![Label::from_static_parts("within", label)],
                        ),
                        &METADATA,
                    )
                    .set(n as f64);
            }
        }
        (
            [(CONTENT_TYPE, TEXT_FORMAT)],
            self.recorder.handle().render(),
        )
            .into_response()
    }
}

/// The Prometheus scrape (no credential: it shows counts and KEK ids, never values).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4.", content_type = "text/plain", body = String))
)]
pub(crate) async fn scrape(
    State(state): State<Arc<AppState>>,
    axum::Extension(exporter): axum::Extension<Arc<Exporter>>,
) -> Response {
    exporter.render(&state).await
}

/// Every metric's HELP text.
fn describe(recorder: &PrometheusRecorder) {
    let text = |s: &'static str| SharedString::const_str(s);
    let name = KeyName::from_const_str;
    recorder.describe_counter(
        name(REQUESTS),
        None,
        text("HTTP requests answered, by route template, method and status."),
    );
    recorder.describe_histogram(
        name(DURATION),
        None,
        text("Time to answer an HTTP request (to the response head), by route template, method and status."),
    );
    recorder.describe_histogram(
        name(KEK_CALL_DURATION),
        None,
        text("Time of one attempt at a remote KEK provider call (KMS, HSM, Vault), by provider and op (wrap, unwrap, probe)."),
    );
    recorder.describe_counter(
        name(KEK_CALL_ERRORS),
        None,
        text("Failed remote KEK provider calls, by provider, op and kind (timeout, unavailable, refused, decrypt, circuit_open)."),
    );
    recorder.describe_gauge(
        name(KEK_CIRCUIT_OPEN),
        None,
        text("1 while a remote KEK's circuit is open (its provider failing; calls fail fast with 503 kek_unavailable), by provider and kek_id."),
    );
    recorder.describe_counter(
        name(DEK_CACHE),
        None,
        text("DEK cache lookups and evictions (result: hit, miss, evicted); only with KEK_DEK_CACHE_TTL set."),
    );
    recorder.describe_gauge(
        name(KEK_CONFIGURED),
        None,
        text("1 when the KEK provider holds the current KEK and every KEK the store's DEKs are wrapped under (census at most 5 s old), and the store answered this scrape's readiness check, else 0."),
    );
    recorder.describe_counter(
        name(DECRYPT_FAILURES),
        None,
        text("Decrypts whose stored ciphertext failed to decrypt. Named without _total on purpose: the production guide's alert is rate(rcrt_secret_decrypt_failures[5m]) > 0.1."),
    );
    recorder.describe_counter(
        name(DECRYPT_SUCCESS),
        None,
        text("Decrypts that released a value (each vault value counts once)."),
    );
    recorder.describe_counter(
        name(KEK_UNAVAILABLE),
        None,
        text("Decrypts refused (503 kek_unavailable) because the DEK is wrapped under a KEK this server does not hold; not counted in rcrt_secret_decrypt_failures, as the data is intact."),
    );
    recorder.describe_counter(
        name(AUDIT_FAILURES),
        None,
        text("Audit rows the store could not write; each such request was refused (503), not served unaudited."),
    );
    recorder.describe_gauge(
        name(REWRAP_REMAINING),
        None,
        text("Secret versions whose DEK is not under the current KEK (at most 5 s old)."),
    );
    recorder.describe_gauge(
        name(REWRAP_FAILED),
        None,
        text("Secret versions the last re-wrap pass could not re-wrap."),
    );
    recorder.describe_counter(
        name(REWRAPPED),
        None,
        text("DEKs this replica re-wrapped under the current KEK since it started."),
    );
    recorder.describe_gauge(
        name(POOL_CONNECTIONS),
        None,
        text("Store connections by state (in_use, idle); SQLite: its reader pool, PostgreSQL: its pool."),
    );
    recorder.describe_gauge(
        name(POOL_MAX),
        None,
        text("Store connections the pool may hold at most."),
    );
    recorder.describe_gauge(
        name(SECRETS_EXPIRING),
        None,
        text("Live secrets in every tenant whose expires_at falls within the window named by `within` (already expired included)."),
    );
    recorder.describe_gauge(
        name(BUILD_INFO),
        None,
        text("Always 1; the version label is the running server's version."),
    );
}

/// Folds recorded latencies into their buckets every [`UPKEEP_EVERY`] while the exporter lives.
async fn upkeep(exporter: Weak<Exporter>) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        match exporter.upgrade() {
            Some(e) => e.recorder.handle().run_upkeep(),
            None => return,
        }
    }
}

/// The `method` label: the standard methods by name, anything else as `other`, so made-up
/// methods cannot add series without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

impl Exporter {
    /// The handles of one request series, registered the first time it is seen.
    fn request_handles(&self, route: &str, method: &'static str, status: u16) -> RequestHandles {
        if let Ok(series) = self.requests.read() {
            if let Some(h) = series.get(route).and_then(|m| m.get(&(method, status))) {
                return h.clone();
            }
        }
        let labels = vec![
            Label::new("route", route.to_owned()),
            Label::from_static_parts("method", method),
            Label::new("status", status.to_string()),
        ];
        let handles = RequestHandles {
            duration: self
                .recorder
                .register_histogram(&Key::from_parts(DURATION, labels.clone()), &METADATA),
            count: self
                .recorder
                .register_counter(&Key::from_parts(REQUESTS, labels), &METADATA),
        };
        if let Ok(mut series) = self.requests.write() {
            series
                .entry(route.to_owned())
                .or_default()
                .insert((method, status), handles.clone());
        }
        handles
    }
}

/// Middleware: counts and times every request by its route template (`/secrets/{id}`, never
/// the id), method and status.
pub(crate) async fn track(
    State(exporter): State<Arc<Exporter>>,
    req: Request,
    next: Next,
) -> Response {
    // A clone of the matched path shares its text (no copy).
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let handles = exporter.request_handles(
        route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        method,
        response.status().as_u16(),
    );
    handles.duration.record(started.elapsed().as_secs_f64());
    handles.count.increment(1);
    response
}

impl rcrt_keys::guard::CallObserver for Exporter {
    fn call(
        &self,
        provider: rcrt_keys::ProviderKind,
        op: rcrt_keys::guard::Op,
        seconds: Option<f64>,
        outcome: &'static str,
    ) {
        let mut labels = vec![
            Label::from_static_parts("provider", provider.as_str()),
            Label::from_static_parts("op", op.as_str()),
        ];
        if let Some(s) = seconds {
            self.recorder
                .register_histogram(
                    &Key::from_parts(KEK_CALL_DURATION, labels.clone()),
                    &METADATA,
                )
                .record(s);
        }
        if outcome != "ok" {
            labels.push(Label::from_static_parts("kind", outcome));
            self.recorder
                .register_counter(&Key::from_parts(KEK_CALL_ERRORS, labels), &METADATA)
                .increment(1);
        }
    }

    fn circuit(&self, provider: rcrt_keys::ProviderKind, kek_id: &rcrt_crypto::KekId, open: bool) {
        let labels = vec![
            Label::from_static_parts("provider", provider.as_str()),
            Label::new("kek_id", kek_id.as_str().to_owned()),
        ];
        self.recorder
            .register_gauge(&Key::from_parts(KEK_CIRCUIT_OPEN, labels), &METADATA)
            .set(if open { 1.0 } else { 0.0 });
    }

    fn cache(&self, result: &'static str) {
        self.recorder
            .register_counter(
                &Key::from_parts(DEK_CACHE, vec![Label::from_static_parts("result", result)]),
                &METADATA,
            )
            .increment(1);
    }
}
