//! Timeouts, bounded retries with backoff and jitter, and a circuit breaker around one remote
//! KEK, with per-provider latency and error metrics.
//!
//! Why a circuit: when a KMS is down, every request would otherwise wait out its timeout and
//! retries before answering 503; with the circuit open, requests fail fast and one probe at a
//! time (from [`Guarded::probe`], called by the keyring's health task) finds out when the
//! provider is back.
//!
//! Metrics go to a [`CallObserver`] that the server installs (its Prometheus recorder is not a
//! process-global one, so the `metrics` macros would record into nothing).

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use rcrt_crypto::KekId;

use crate::settings::CallSettings;
use crate::{KekBackend, KeyError, ProviderKind};

/// Receives what the keyring's remote calls did, for metrics.
pub trait CallObserver: Send + Sync + 'static {
    /// One attempt at a provider call, how long it took, and how it ended (`ok`, `timeout`,
    /// `unavailable`, `refused`, `decrypt`, `circuit_open`).
    fn call(&self, provider: ProviderKind, op: Op, seconds: Option<f64>, outcome: &'static str);
    /// A KEK's circuit opened (`true`) or closed.
    fn circuit(&self, provider: ProviderKind, kek_id: &KekId, open: bool);
    /// A DEK cache lookup or eviction (`hit`, `miss`, `evicted`).
    fn cache(&self, result: &'static str);
}

/// Where a keyring's guards and cache send their observations, once the server has set it.
pub type ObserverSlot = Arc<OnceLock<Arc<dyn CallObserver>>>;

#[derive(Debug, Default)]
struct Circuit {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// Why the last call failed (for `/ready` and logs).
    last_error: Option<String>,
}

/// One remote KEK with its call policy.
pub struct Guarded {
    backend: Arc<dyn KekBackend>,
    call: CallSettings,
    circuit: Mutex<Circuit>,
    observer: ObserverSlot,
}

/// Which operation a call is, for metrics.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// A wrap.
    Wrap,
    /// An unwrap.
    Unwrap,
    /// A health probe.
    Probe,
}

impl Op {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Wrap => "wrap",
            Op::Unwrap => "unwrap",
            Op::Probe => "probe",
        }
    }
}

impl Guarded {
    /// Guards `backend` with `call`'s policy; observations go to `observer` once it is set.
    pub fn new(backend: Arc<dyn KekBackend>, call: CallSettings, observer: ObserverSlot) -> Self {
        Self {
            backend,
            call,
            circuit: Mutex::new(Circuit::default()),
            observer,
        }
    }

    fn observe(&self, op: Op, seconds: Option<f64>, outcome: &'static str) {
        if let Some(o) = self.observer.get() {
            o.call(self.backend.provider(), op, seconds, outcome);
        }
    }

    fn observe_circuit(&self, open: bool) {
        if let Some(o) = self.observer.get() {
            o.circuit(self.backend.provider(), self.backend.id(), open);
        }
    }

    /// The guarded backend.
    pub fn backend(&self) -> &Arc<dyn KekBackend> {
        &self.backend
    }

    /// True while the circuit is closed. An open circuit lets a call through once its cooldown
    /// is over, but stays open (and this false) until a call or a probe succeeds.
    pub fn is_available(&self) -> bool {
        let c = self.lock();
        c.open_until.is_none()
    }

    /// Why the last call failed, while the circuit is open.
    pub fn last_error(&self) -> Option<String> {
        let c = self.lock();
        c.open_until.and(c.last_error.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Circuit> {
        // A poisoned lock only means another thread panicked while holding plain counters.
        self.circuit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` (one attempt per call) under the timeout, retrying what is worth retrying, and
    /// keeps the circuit. A probe runs even while the circuit is open.
    pub async fn run<T, F, Fut>(&self, op: Op, f: F) -> Result<T, KeyError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, KeyError>>,
    {
        if !matches!(op, Op::Probe) {
            let open = self.lock().open_until.is_some_and(|t| Instant::now() < t);
            if open {
                self.observe(op, None, "circuit_open");
                return Err(KeyError::CircuitOpen {
                    kek_id: self.backend.id().clone(),
                    provider: self.backend.provider(),
                });
            }
        }
        let mut attempt = 0u32;
        let result = loop {
            let started = Instant::now();
            let (outcome, label) = match tokio::time::timeout(self.call.timeout, f()).await {
                Ok(r) => {
                    let label = match &r {
                        Ok(_) => "ok",
                        Err(KeyError::Crypto(_)) => "decrypt",
                        Err(KeyError::Refused { .. }) => "refused",
                        Err(_) => "unavailable",
                    };
                    (r, label)
                }
                Err(_) => (
                    Err(KeyError::Unavailable {
                        kek_id: self.backend.id().clone(),
                        provider: self.backend.provider(),
                        reason: format!("no answer within {:?}", self.call.timeout),
                    }),
                    "timeout",
                ),
            };
            self.observe(op, Some(started.elapsed().as_secs_f64()), label);
            match outcome {
                Err(KeyError::Unavailable { .. }) if attempt < self.call.retries => {
                    attempt += 1;
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                other => break other,
            }
        };
        self.record(op, &result);
        result
    }

    /// Full jitter: a random wait up to `backoff * 2^(attempt-1)`, capped at one second.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .call
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
            .min(Duration::from_secs(1));
        let millis = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    fn record<T>(&self, op: Op, result: &Result<T, KeyError>) {
        let failure = match result {
            Ok(_) => None,
            // The provider answered: it is up, the input was bad.
            Err(KeyError::Crypto(_)) => None,
            // An unwrap refused is about that row's key (a Transit version below
            // min_decryption_version, a disabled old Key Vault version): it says nothing about
            // the current KEK, so it neither opens nor closes the circuit. A key refused as a
            // whole refuses wraps and probes too, and those open it.
            Err(KeyError::Refused { .. }) if matches!(op, Op::Unwrap) => return,
            Err(e @ (KeyError::Unavailable { .. } | KeyError::Refused { .. })) => {
                Some(e.to_string())
            }
            Err(_) => None,
        };
        let mut c = self.lock();
        match failure {
            None => {
                if c.open_until.is_some() {
                    tracing::info!(provider = %self.backend.provider(), kek_id = %self.backend.id(), "KEK provider reachable again: circuit closed");
                    self.observe_circuit(false);
                }
                *c = Circuit::default();
            }
            Some(reason) => {
                c.consecutive_failures = c.consecutive_failures.saturating_add(1);
                let opens =
                    c.consecutive_failures >= self.call.circuit_failures || matches!(op, Op::Probe);
                if opens {
                    if c.open_until.is_none() {
                        tracing::error!(provider = %self.backend.provider(), kek_id = %self.backend.id(), error = %reason, "KEK provider failing: circuit open, answering 503 kek_unavailable until it recovers");
                        self.observe_circuit(true);
                    }
                    c.open_until = Some(Instant::now() + self.call.circuit_cooldown);
                }
                c.last_error = Some(reason);
            }
        }
    }

    /// Probes the backend (the keyring's health task): closes the circuit on success, opens
    /// it on failure.
    pub async fn probe(&self) -> Result<(), KeyError> {
        let backend = self.backend.clone();
        self.run(Op::Probe, || {
            let b = backend.clone();
            async move { b.probe().await }
        })
        .await
    }

    /// How long until the next probe is due: the cooldown while open.
    pub fn cooldown(&self) -> Duration {
        self.call.circuit_cooldown
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use async_trait::async_trait;
    use rcrt_crypto::{Dek, WrapContext, WrappedDek};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    struct Flaky {
        id: KekId,
        down: AtomicBool,
        calls: AtomicU32,
        hang: AtomicBool,
    }

    #[async_trait]
    impl KekBackend for Flaky {
        fn id(&self) -> &KekId {
            &self.id
        }
        fn provider(&self) -> ProviderKind {
            ProviderKind::AwsKms
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn wrap(&self, _: &Dek, _: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
            Err(KeyError::Config("unused".into()))
        }
        async fn unwrap(&self, _: &WrappedDek, _: &WrapContext<'_>) -> Result<Dek, KeyError> {
            Err(KeyError::Config("unused".into()))
        }
        async fn probe(&self) -> Result<(), KeyError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(KeyError::Unavailable {
                    kek_id: self.id.clone(),
                    provider: ProviderKind::AwsKms,
                    reason: "connection refused".into(),
                });
            }
            Ok(())
        }
    }

    fn setup() -> (Arc<Flaky>, Guarded) {
        let flaky = Arc::new(Flaky {
            id: KekId::from_stored("aws-kms:0011223344556677"),
            down: AtomicBool::new(true),
            calls: AtomicU32::new(0),
            hang: AtomicBool::new(false),
        });
        let call = CallSettings {
            timeout: Duration::from_millis(50),
            retries: 2,
            backoff: Duration::from_millis(1),
            circuit_failures: 2,
            circuit_cooldown: Duration::from_millis(100),
        };
        (
            flaky.clone(),
            Guarded::new(flaky, call, ObserverSlot::default()),
        )
    }

    async fn call(g: &Guarded, f: &Arc<Flaky>) -> Result<(), KeyError> {
        g.run(Op::Unwrap, || {
            let f = f.clone();
            async move { f.probe().await }
        })
        .await
    }

    #[tokio::test]
    async fn retries_then_opens_fails_fast_and_recovers_by_probe() {
        let (f, g) = setup();
        assert!(matches!(
            call(&g, &f).await,
            Err(KeyError::Unavailable { .. })
        ));
        assert_eq!(f.calls.load(Ordering::SeqCst), 3, "one try and two retries");
        assert!(
            g.is_available(),
            "one failed call does not open the circuit"
        );
        assert!(call(&g, &f).await.is_err());
        assert!(!g.is_available());
        assert!(g.last_error().unwrap().contains("connection refused"));
        let before = f.calls.load(Ordering::SeqCst);
        assert!(matches!(
            call(&g, &f).await,
            Err(KeyError::CircuitOpen { .. })
        ));
        assert_eq!(
            f.calls.load(Ordering::SeqCst),
            before,
            "an open circuit fails fast"
        );
        // The provider comes back; a probe closes the circuit.
        f.down.store(false, Ordering::SeqCst);
        g.probe().await.unwrap();
        assert!(g.is_available());
        call(&g, &f).await.unwrap();
    }

    #[tokio::test]
    async fn a_hung_provider_times_out() {
        let (f, g) = setup();
        f.hang.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let e = call(&g, &f).await.unwrap_err();
        assert!(e.to_string().contains("no answer within"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn refused_unwraps_leave_the_circuit_alone_refused_wraps_open_it() {
        let (f, g) = setup();
        let refuse = |op| {
            let f = f.clone();
            let g = &g;
            async move {
                g.run(op, || {
                    let id = f.id.clone();
                    async move {
                        Err::<(), _>(KeyError::Refused {
                            kek_id: id,
                            provider: ProviderKind::AwsKms,
                            reason: "version too old".into(),
                        })
                    }
                })
                .await
            }
        };
        for _ in 0..10 {
            assert!(matches!(
                refuse(Op::Unwrap).await,
                Err(KeyError::Refused { .. })
            ));
        }
        assert!(
            g.is_available(),
            "one old row refused must not take the KEK down"
        );
        for _ in 0..2 {
            let _ = refuse(Op::Wrap).await;
        }
        assert!(!g.is_available(), "a key that refuses wraps is down");
        // Nor does a refused unwrap close it: once the cooldown lets calls through again, one
        // reaches the provider and is refused, and the circuit stays open.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(matches!(
            refuse(Op::Unwrap).await,
            Err(KeyError::Refused { .. })
        ));
        assert!(!g.is_available());
    }

    #[tokio::test]
    async fn a_failed_probe_opens_at_once() {
        let (_f, g) = setup();
        assert!(g.probe().await.is_err());
        assert!(!g.is_available());
    }
}
