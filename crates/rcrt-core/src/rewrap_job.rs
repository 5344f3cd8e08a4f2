//! The background re-wrap: while DEKs exist under a non-current KEK, re-wrap them in batches.
//!
//! Every replica runs this loop; a lease in the store lets one work at a time, and another takes
//! over when the holder stops renewing (crash, `kill -9`). Correctness does not rest on the lease:
//! each row changes by compare-and-swap, so two workers at once would only duplicate effort.
//!
//! Every pass leaves audit rows: `rewrap_start` (target and recovery KEK ids, versions to do),
//! `rewrap_progress` every 10 s or 50 batches (versions done), `rewrap_end` (re-wrapped, failed,
//! outcome), all with the pass's request id `rewrap-<uuid>` and the user `rcrt-server@<host>`.
//! A row that cannot be written stops the pass (fail closed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcrt_store::KekUsage;
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, TenantId};
use tokio::sync::Notify;

use crate::maintenance::{BatchHook, Maintenance, Progress};
use crate::service::{row_held, unheld_census};
use crate::CoreError;

const LEASE: &str = "kek-rewrap";

/// A `rewrap_progress` audit row at least this often while a pass runs...
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// ...or after this many batches, whichever comes first.
const PROGRESS_BATCHES: u64 = 50;

/// How the background re-wrap runs.
#[derive(Debug, Clone, Copy)]
pub struct RewrapSettings {
    /// Rows per batch (one transaction each).
    pub batch_size: u32,
    /// Upper bound on rows per second; 0 for no bound.
    pub max_rows_per_sec: u32,
    /// Start by itself when old-KEK rows exist (at start-up and on every poll).
    pub auto_start: bool,
    /// How often an idle or waiting worker looks again.
    pub poll: Duration,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
}

impl Default for RewrapSettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            max_rows_per_sec: 0,
            auto_start: true,
            poll: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

/// Where the re-wrap stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewrapState {
    /// Nothing to do, or not started.
    Idle,
    /// This replica is re-wrapping.
    Running,
    /// Another replica holds the lease; this one waits.
    Waiting,
    /// The last pass finished with every row under the current KEK.
    Completed,
    /// The last pass left rows that could not be unwrapped (see the log), or the store failed.
    Failed,
}

impl RewrapState {
    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// A snapshot for `GET /admin/kek/status` and metrics.
#[derive(Debug, Clone)]
pub struct RewrapStatus {
    /// The state.
    pub state: RewrapState,
    /// Versions the re-wrap has work on: not yet under the current KEK, or without a recovery
    /// wrap under the configured recovery KEK (from the store, not this replica's memory).
    pub remaining: u64,
    /// Versions this replica has re-wrapped since it started.
    pub rewrapped_total: u64,
    /// Versions the last pass could not re-wrap.
    pub failed: u64,
}

/// The job. Share it in an `Arc`; [`RewrapJob::spawn`] starts its loop.
pub struct RewrapJob {
    maintenance: Arc<Maintenance>,
    settings: RewrapSettings,
    holder: String,
    state: Mutex<(RewrapState, u64)>,
    rewrapped_total: AtomicU64,
    wake: Notify,
    /// The last backlog census (versions per KEK pair that are not under the current pair, see
    /// [`rcrt_store::Store::kek_backlog`]) and when it was taken: one read serves the status,
    /// the metrics and `/ready` for a few seconds. Outside a rotation it is a few index probes,
    /// but a scrape every second during a rotation would count the whole backlog each time.
    census: Mutex<Option<(Instant, Vec<KekUsage>)>>,
    /// Held while a cached census is refreshed: unauthenticated `/metrics` and `/ready` calls
    /// arriving together after the cache expires wait for one read instead of each running one.
    census_refresh: tokio::sync::Mutex<()>,
    /// Backlog census reads run.
    backlog_reads: AtomicU64,
    /// The last full census ([`RewrapJob::kek_usage`]) and when its scan started.
    full_census: tokio::sync::Mutex<Option<(Instant, Vec<KekUsage>)>>,
    /// Full scans of the versions table run (only [`RewrapJob::kek_usage`] runs them).
    census_scans: AtomicU64,
    /// Who the pass's audit rows name (`rcrt-server@<host>`).
    actor: String,
}

struct Pacer<'a> {
    job: &'a RewrapJob,
    started: Instant,
    before: u64,
    /// The pass's request id, on each of its audit rows.
    request_id: &'a str,
    batches: AtomicU64,
    last_progress: Mutex<Instant>,
}

impl Pacer<'_> {
    /// Writes a `rewrap_progress` row when one is due.
    async fn progress_row(&self, total: Progress) -> Result<(), CoreError> {
        // Batches since the last progress row.
        let batches = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        let due = batches >= PROGRESS_BATCHES
            || self
                .last_progress
                .lock()
                .map(|last| last.elapsed() >= PROGRESS_EVERY)
                .unwrap_or(true);
        if !due {
            return Ok(());
        }
        self.job
            .audit(
                AuditAction::RewrapProgress,
                format!(
                    "background re-wrap: {} versions scanned, {} re-wrapped, {} failed",
                    total.scanned, total.changed, total.failed
                ),
                AuditOutcome::Success,
                self.request_id,
            )
            .await?;
        self.batches.store(0, Ordering::Relaxed);
        if let Ok(mut last) = self.last_progress.lock() {
            *last = Instant::now();
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl BatchHook for Pacer<'_> {
    async fn after_batch(&self, total: Progress) -> Result<(), CoreError> {
        self.job
            .rewrapped_total
            .store(self.before + total.changed, Ordering::Relaxed);
        self.job.renew_lease().await?;
        self.progress_row(total).await?;
        let rate = self.job.settings.max_rows_per_sec;
        if rate > 0 {
            let due = Duration::from_secs_f64(total.scanned as f64 / f64::from(rate));
            // Sleep in slices shorter than the lease, renewing it, so a slow pace never lets
            // the lease lapse to another replica mid-pass.
            let slice = self.job.settings.lease_ttl / 3;
            while let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait.min(slice)).await;
                self.job.renew_lease().await?;
            }
        } else {
            // Let request handlers run between batches.
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

impl RewrapJob {
    /// A job over `maintenance` (whose provider's current KEK is the target).
    pub fn new(maintenance: Arc<Maintenance>, settings: RewrapSettings) -> Arc<Self> {
        Arc::new(Self {
            maintenance,
            settings,
            holder: uuid::Uuid::new_v4().to_string(),
            state: Mutex::new((RewrapState::Idle, 0)),
            rewrapped_total: AtomicU64::new(0),
            wake: Notify::new(),
            census: Mutex::new(None),
            census_refresh: tokio::sync::Mutex::new(()),
            backlog_reads: AtomicU64::new(0),
            full_census: tokio::sync::Mutex::new(None),
            census_scans: AtomicU64::new(0),
            actor: crate::audit::checkpoint::server_actor(),
        })
    }

    /// Writes one of the pass's audit rows (deployment-wide: the default tenant, no secret).
    async fn audit(
        &self,
        action: AuditAction,
        summary: String,
        outcome: AuditOutcome,
        request_id: &str,
    ) -> Result<(), CoreError> {
        self.maintenance
            .store()
            .append_audit(AuditEntry {
                timestamp: self.maintenance.now(),
                action,
                secret_id: None,
                token_id: None,
                tenant: TenantId::default_tenant(),
                user_id: self.actor.clone(),
                reason: Some(summary),
                outcome,
                request_id: request_id.to_owned(),
                version: None,
            })
            .await
            .map_err(CoreError::Unavailable)
    }

    /// Takes or renews the lease; false while another replica holds it.
    async fn try_lease(&self) -> Result<bool, CoreError> {
        let now = self.maintenance.now();
        Ok(self
            .maintenance
            .store()
            .try_lease(LEASE, &self.holder, now, self.settings.lease_ttl)
            .await?)
    }

    async fn renew_lease(&self) -> Result<(), CoreError> {
        if self.try_lease().await? {
            Ok(())
        } else {
            Err(CoreError::Internal("re-wrap lease lost".into()))
        }
    }

    fn set(&self, state: RewrapState, failed: u64) {
        if let Ok(mut s) = self.state.lock() {
            *s = (state, failed);
        }
    }

    /// Starts or resumes a pass now (`POST /admin/kek/rewrap`).
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// The current status.
    pub async fn status(&self) -> Result<RewrapStatus, CoreError> {
        let usage = self.census(None).await?;
        Ok(self.snapshot(self.maintenance.remaining_in(&usage)))
    }

    /// The status with `remaining` at most `max_age` old: during a rotation, counting the
    /// versions left reads the whole backlog, too much for every metrics scrape.
    pub async fn status_cached(&self, max_age: Duration) -> Result<RewrapStatus, CoreError> {
        let usage = self.census(Some(max_age)).await?;
        Ok(self.snapshot(self.maintenance.remaining_in(&usage)))
    }

    /// The census rows (KEK id, recovery KEK id, versions) the provider cannot open, from a
    /// backlog census at most `max_age` old (versions under the current KEK are always held, so
    /// the backlog holds every such row): neither their KEK nor their recovery KEK is held
    /// (rows the provider opens only through their recovery wrap are fine). Not empty when the
    /// store was re-wrapped to a KEK this server was not given (an offline `rcrt kek rewrap`
    /// while it runs): decrypts of those versions answer 503.
    pub async fn unheld_keks_cached(&self, max_age: Duration) -> Result<Vec<KekUsage>, CoreError> {
        let keys = self.maintenance.keys();
        Ok(self
            .census(Some(max_age))
            .await?
            .into_iter()
            .filter(|u| {
                u.versions > 0 && !row_held(&**keys, &u.kek_id, u.recovery_kek_id.as_deref())
            })
            .collect())
    }

    /// Readiness of the keys: [`CoreError::KeksUnavailable`] naming every KEK id the store uses
    /// that the provider does not hold (see [`RewrapJob::unheld_keks_cached`]).
    pub async fn check_keks_cached(&self, max_age: Duration) -> Result<(), CoreError> {
        let usage = self.census(Some(max_age)).await?;
        let (missing, _) = unheld_census(&**self.maintenance.keys(), &usage);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CoreError::KeksUnavailable(
                missing
                    .iter()
                    .map(|(k, n)| format!("{k} ({n} versions)"))
                    .collect(),
            ))
        }
    }

    /// The backlog census: the cached one if it is younger than `max_age`, else a fresh one
    /// (which is cached). Only one cached refresh runs at a time.
    async fn census(&self, max_age: Option<Duration>) -> Result<Vec<KekUsage>, CoreError> {
        let Some(max_age) = max_age else {
            return self.fresh_census().await;
        };
        if let Some(usage) = self.cached_census(max_age) {
            return Ok(usage);
        }
        let _refresh = self.census_refresh.lock().await;
        // Whoever held the lock before us may have just taken it.
        if let Some(usage) = self.cached_census(max_age) {
            return Ok(usage);
        }
        self.fresh_census().await
    }

    fn cached_census(&self, max_age: Duration) -> Option<Vec<KekUsage>> {
        self.census
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, usage)| usage)
    }

    async fn fresh_census(&self) -> Result<Vec<KekUsage>, CoreError> {
        self.backlog_reads.fetch_add(1, Ordering::Relaxed);
        let usage = self.maintenance.backlog().await?;
        if let Ok(mut cache) = self.census.lock() {
            *cache = Some((Instant::now(), usage.clone()));
        }
        Ok(usage)
    }

    /// How many backlog census reads (index ranges, see [`rcrt_store::Store::kek_backlog`]) the
    /// job has run since start.
    pub fn backlog_reads(&self) -> u64 {
        self.backlog_reads.load(Ordering::Relaxed)
    }

    /// The full census, versions per (KEK, recovery KEK) over every version, for the operator's
    /// `GET /admin/kek/status`. A full scan of the versions table (0.3-0.6 s at 1M versions),
    /// so nothing automatic calls it; never older than the call: a call takes the result of a
    /// scan that started after it arrived, so calls arriving while one runs share the next
    /// (at most two scans for a burst), and an answer never predates the caller's own writes.
    pub async fn kek_usage(&self) -> Result<Vec<KekUsage>, CoreError> {
        let arrived = Instant::now();
        let mut last = self.full_census.lock().await;
        if let Some((started, usage)) = &*last {
            if *started >= arrived {
                return Ok(usage.clone());
            }
        }
        let started = Instant::now();
        self.census_scans.fetch_add(1, Ordering::Relaxed);
        let usage = self.maintenance.store().kek_usage().await?;
        *last = Some((started, usage.clone()));
        Ok(usage)
    }

    /// How many full scans of the versions table ([`RewrapJob::kek_usage`]) the job has run
    /// since start. Start-up, the re-wrap poll, the status, `/metrics` and `/ready` run none.
    pub fn census_scans(&self) -> u64 {
        self.census_scans.load(Ordering::Relaxed)
    }

    fn snapshot(&self, remaining: u64) -> RewrapStatus {
        let (mut state, mut failed) = self
            .state
            .lock()
            .map(|s| *s)
            .unwrap_or((RewrapState::Failed, 0));
        // A failed pass whose work is nonetheless done (the store failed after the last batch
        // committed, another replica finished, the refused rows were deleted) has completed:
        // say so now rather than at the next pass.
        if state == RewrapState::Failed && remaining == 0 {
            (state, failed) = (RewrapState::Completed, 0);
        }
        RewrapStatus {
            state,
            remaining,
            rewrapped_total: self.rewrapped_total.load(Ordering::Relaxed),
            failed,
        }
    }

    /// Starts the loop on the current tokio runtime.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let job = self.clone();
        tokio::spawn(async move { job.run_forever().await })
    }

    async fn run_forever(self: Arc<Self>) {
        let mut triggered = self.settings.auto_start;
        // A pass the store cut short is taken up again at the next poll, started by hand or
        // not: the store coming back is enough.
        let mut interrupted = false;
        loop {
            if triggered {
                interrupted = match self.pass().await {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::error!(error = %e, "background re-wrap stopped; retrying at the next poll");
                        self.set(RewrapState::Failed, 0);
                        true
                    }
                };
            }
            let waiting = self
                .state
                .lock()
                .map(|s| s.0 == RewrapState::Waiting)
                .unwrap_or(false);
            tokio::select! {
                _ = self.wake.notified() => triggered = true,
                _ = tokio::time::sleep(self.settings.poll) => {
                    triggered = self.settings.auto_start || waiting || interrupted;
                }
            }
        }
    }

    /// One pass if there is work and this replica gets the lease.
    async fn pass(&self) -> Result<(), CoreError> {
        let usage = self.census(None).await?;
        let remaining = self.maintenance.remaining_in(&usage);
        let keys = self.maintenance.keys();
        let unheld: u64 = usage
            .iter()
            .filter(|u| !row_held(&**keys, &u.kek_id, u.recovery_kek_id.as_deref()))
            .map(|u| u.versions.max(0) as u64)
            .sum();
        if remaining > 0 && remaining == unheld {
            // Only versions under KEKs this replica does not hold are left (the store was
            // re-wrapped underneath it): a pass could only fail on each of them, every poll,
            // with a warning per row. `/ready` and the decrypts name those KEKs instead.
            self.set(RewrapState::Failed, unheld);
            return Ok(());
        }
        if remaining == 0 {
            // Whoever did the work (this replica or another), it is done now.
            // A failed pass is done as well, now that nothing remains.
            let was_busy = self
                .state
                .lock()
                .map(|s| {
                    matches!(
                        s.0,
                        RewrapState::Running | RewrapState::Waiting | RewrapState::Failed
                    )
                })
                .unwrap_or(false);
            if was_busy {
                self.set(RewrapState::Completed, 0);
            }
            return Ok(());
        }
        if !self.try_lease().await? {
            self.set(RewrapState::Waiting, 0);
            return Ok(());
        }
        self.set(RewrapState::Running, 0);
        tracing::info!(target_kek = %self.maintenance.keys().current_kek_id(), "background re-wrap started");
        let request_id = format!("rewrap-{}", uuid::Uuid::new_v4());
        let result = self.audited_pass(remaining, &request_id).await;
        let _ = self
            .maintenance
            .store()
            .release_lease(LEASE, &self.holder)
            .await;
        let (progress, failures) = result?;
        tracing::info!(
            rewrapped = progress.changed,
            failed = progress.failed,
            "background re-wrap pass finished"
        );
        if failures.is_empty() {
            self.set(RewrapState::Completed, 0);
        } else {
            self.set(RewrapState::Failed, progress.failed);
        }
        Ok(())
    }

    /// The re-wrap between its `rewrap_start` and `rewrap_end` rows (the end row is written
    /// for a pass the store cut short too, when the store takes it).
    async fn audited_pass(
        &self,
        remaining: u64,
        request_id: &str,
    ) -> Result<(Progress, Vec<crate::maintenance::Failure>), CoreError> {
        let keys = self.maintenance.keys();
        let recovery = keys
            .recovery_kek_id()
            .map_or_else(|| "none".to_owned(), |k| k.as_str().to_owned());
        self.audit(
            AuditAction::RewrapStart,
            format!(
                "background re-wrap to KEK {} (recovery KEK {recovery}): {remaining} versions to do",
                keys.current_kek_id()
            ),
            AuditOutcome::Success,
            request_id,
        )
        .await?;
        let pacer = Pacer {
            job: self,
            started: Instant::now(),
            before: self.rewrapped_total.load(Ordering::Relaxed),
            request_id,
            batches: AtomicU64::new(0),
            last_progress: Mutex::new(Instant::now()),
        };
        let result = self
            .maintenance
            .rewrap(self.settings.batch_size, &pacer)
            .await;
        let (summary, outcome) = match &result {
            Ok((p, _)) => (
                format!(
                    "background re-wrap ended: {} re-wrapped, {} failed",
                    p.changed, p.failed
                ),
                if p.failed == 0 {
                    AuditOutcome::Success
                } else {
                    AuditOutcome::Failure
                },
            ),
            Err(e) => (
                format!("background re-wrap stopped early: {e}"),
                AuditOutcome::Failure,
            ),
        };
        let end = self
            .audit(AuditAction::RewrapEnd, summary, outcome, request_id)
            .await;
        let done = result?;
        end?;
        Ok(done)
    }
}
