//! KEK maintenance over a whole store: re-wrap (rotation), re-encryption (after a KEK compromise)
//! and verification. Used by the server's background job and by the offline CLI alike.
//!
//! Every batch commits on its own and every row changes by compare-and-swap on its old wrapped
//! DEK, so a job can be killed at any point and simply run again: rows already done no longer
//! match the scan, and a row changed by someone else in between is left to them.

use std::collections::BTreeMap;
use std::sync::Arc;

use rcrt_crypto::{ValueContext, WrapContext};
use rcrt_keys::KeyProvider;
use rcrt_store::{Rewrapped, Store, StoredVersion, VersionFilter};
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, SecretId, TenantId, Version};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::service::{open_stored, recovery_record, unwrap_stored};
use crate::{Clock, CoreError};

/// Passes over the store before a job gives up on rows that keep changing under it.
const MAX_PASSES: usize = 5;

/// State key holding the cut-off of an unfinished re-encryption, so a re-run resumes it.
const REENCRYPT_CUTOFF: &str = "reencrypt.cutoff";

/// Progress of a job, reported after each batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Rows examined so far in this run.
    pub scanned: u64,
    /// Rows changed so far in this run.
    pub changed: u64,
    /// Rows that could not be processed (unknown KEK or failed authentication).
    pub failed: u64,
}

/// Called after every committed batch: reports progress, paces the job, renews a lease. An error
/// stops the job (the rows done so far stay done).
#[async_trait::async_trait]
pub trait BatchHook: Send + Sync {
    /// `total` is the progress of this run so far.
    async fn after_batch(&self, total: Progress) -> Result<(), CoreError>;
}

/// A hook that does nothing.
pub struct NoHook;

#[async_trait::async_trait]
impl BatchHook for NoHook {
    async fn after_batch(&self, _: Progress) -> Result<(), CoreError> {
        Ok(())
    }
}

/// One row a job could not process. Holds ids only, never key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The secret.
    pub secret_id: SecretId,
    /// The version.
    pub version: Version,
    /// The KEK id the row claims.
    pub kek_id: String,
}

/// The result of a verification: versions per KEK id and failures per KEK id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Versions examined per KEK id.
    pub versions: BTreeMap<String, u64>,
    /// Versions that failed to unwrap or open, per KEK id.
    pub failures: BTreeMap<String, u64>,
    /// The first failing rows (at most 100), to investigate.
    pub examples: Vec<Failure>,
}

impl Census {
    /// True when every version unwrapped and opened.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Whole-store KEK jobs.
pub struct Maintenance {
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyProvider>,
    clock: Arc<dyn Clock>,
}

enum Mode {
    Rewrap,
    Reencrypt,
}

impl Maintenance {
    /// Jobs over `store`, wrapping under `keys`' current KEK.
    pub fn new(store: Arc<dyn Store>, keys: Arc<dyn KeyProvider>, clock: Arc<dyn Clock>) -> Self {
        Self { store, keys, clock }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The KEK provider.
    pub fn keys(&self) -> &Arc<dyn KeyProvider> {
        &self.keys
    }

    /// Now, from the job's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Writes the summary row of an offline job run by `operator` (the OS user and host) to
    /// the audit log: `action`, `summary` in the reason column (KEK ids and counts, never key
    /// material), and whether it succeeded. The row has no secret id and the `default` tenant:
    /// the job spans every tenant.
    pub async fn record(
        &self,
        action: AuditAction,
        operator: &str,
        summary: String,
        success: bool,
    ) -> Result<(), CoreError> {
        let entry = AuditEntry {
            timestamp: self.clock.now(),
            action,
            secret_id: None,
            token_id: None,
            tenant: TenantId::default_tenant(),
            user_id: operator.to_owned(),
            reason: Some(summary),
            outcome: if success {
                AuditOutcome::Success
            } else {
                AuditOutcome::Failure
            },
            request_id: format!("offline-{}", uuid::Uuid::new_v4()),
            version: None,
        };
        self.store
            .append_audit(entry)
            .await
            .map_err(CoreError::Unavailable)
    }

    /// Versions the re-wrap has work on (see [`Maintenance::remaining_in`]).
    pub async fn remaining(&self) -> Result<u64, CoreError> {
        Ok(self.remaining_in(&self.backlog().await?))
    }

    /// The census of the versions the re-wrap has work on (the rows
    /// [`Maintenance::rewrap_filter`] selects), per (KEK, recovery KEK): read by index ranges, so
    /// it costs a few probes when there is no work, however many versions the store holds.
    pub async fn backlog(&self) -> Result<Vec<rcrt_store::KekUsage>, CoreError> {
        Ok(self
            .store
            .kek_backlog(
                self.keys.current_kek_id().as_str(),
                self.keys.recovery_kek_id().map(|k| k.as_str()),
            )
            .await?)
    }

    /// Versions the re-wrap has work on, by a census of versions per (KEK, recovery KEK), full or
    /// the backlog alone ([`Maintenance::backlog`]; the count is the same): those
    /// not under the current KEK and, when a recovery KEK is configured, those without a
    /// recovery wrap under it (the rows [`Maintenance::rewrap_filter`] selects).
    pub fn remaining_in(&self, usage: &[rcrt_store::KekUsage]) -> u64 {
        let current = self.keys.current_kek_id().as_str();
        let recovery = self.keys.recovery_kek_id().map(|k| k.as_str());
        usage
            .iter()
            .filter(|u| {
                u.kek_id != current
                    || recovery.is_some_and(|r| u.recovery_kek_id.as_deref() != Some(r))
            })
            .map(|u| u.versions.max(0) as u64)
            .sum()
    }

    /// The rows a re-wrap processes: main wrap not under the current KEK, or (with a recovery
    /// KEK configured) no recovery wrap under the recovery KEK.
    pub fn rewrap_filter(&self) -> VersionFilter {
        VersionFilter::NeedsRewrap {
            kek_id: self.keys.current_kek_id().as_str().to_owned(),
            recovery_kek_id: self.keys.recovery_kek_id().map(|k| k.as_str().to_owned()),
        }
    }

    /// Unwraps one row's DEK with its own KEK (or, when that KEK is unknown, through its recovery
    /// wrap) and wraps it under the current KEK; with `Mode::Reencrypt`, also opens the value and
    /// seals it again under a fresh DEK. The recovery wrap is made afresh under the configured
    /// recovery KEK, unless the row already has one under it and the DEK is unchanged; with no
    /// recovery KEK configured, a re-wrap keeps the row's recovery wrap (same DEK) and a
    /// re-encryption clears it (it would open the old DEK).
    async fn process(&self, row: &StoredVersion, mode: &Mode) -> Result<Rewrapped, ()> {
        let id = row.secret_id.as_bytes();
        let dek = unwrap_stored(
            &*self.keys,
            &row.kek_id,
            row.secret_id,
            row.version,
            &row.wrapped_dek,
            row.recovery.as_ref(),
        )
        .await
        .map_err(|_| ())?;
        let current = self.keys.current_kek_id().clone();
        let new_ctx = WrapContext {
            kek_id: &current,
            secret_id: id,
            version: row.version,
        };
        let (dek, resealed) = match mode {
            Mode::Rewrap => (dek, None),
            Mode::Reencrypt => {
                let plain = open_stored(
                    &dek,
                    row.tenant.as_str(),
                    row.secret_id,
                    row.version,
                    &row.sealed_value,
                )
                .map_err(|_| ())?;
                let vctx = ValueContext {
                    tenant: row.tenant.as_str(),
                    secret_id: id,
                    version: row.version,
                };
                let (fresh, sealed) =
                    rcrt_crypto::seal_value(plain.expose_secret(), &vctx).map_err(|_| ())?;
                (fresh, Some((sealed.as_bytes().to_vec(), self.clock.now())))
            }
        };
        let same_dek = resealed.is_none();
        // A row picked only for its recovery wrap keeps its main wrap (no provider call).
        let wrapped_dek = if same_dek && row.kek_id == current.as_str() {
            row.wrapped_dek.clone()
        } else {
            let wrapped = self.keys.wrap(&dek, &new_ctx).await.map_err(|_| ())?;
            wrapped.as_bytes().to_vec()
        };
        let recovery = match self.keys.recovery_kek_id() {
            Some(target)
                if same_dek
                    && row
                        .recovery
                        .as_ref()
                        .is_some_and(|r| r.kek_id == target.as_str()) =>
            {
                row.recovery.clone()
            }
            Some(_) => self
                .keys
                .wrap_recovery(&dek, id, row.version)
                .await
                .map_err(|_| ())?
                .map(recovery_record),
            None if same_dek => row.recovery.clone(),
            None => None,
        };
        Ok(Rewrapped {
            secret_id: row.secret_id,
            version: row.version,
            old_wrapped_dek: row.wrapped_dek.clone(),
            kek_id: current.as_str().to_owned(),
            wrapped_dek,
            recovery,
            resealed,
        })
    }

    /// One batch: returns the rows scanned (for the cursor), changed, and failures.
    async fn batch(
        &self,
        filter: &VersionFilter,
        mode: &Mode,
        after: Option<(SecretId, Version)>,
        batch_size: u32,
    ) -> Result<(Option<(SecretId, Version)>, u64, u64, Vec<Failure>), CoreError> {
        let rows = self
            .store
            .scan_versions(filter, after, batch_size, matches!(mode, Mode::Reencrypt))
            .await?;
        let cursor = rows.last().map(|r| (r.secret_id, r.version));
        let mut updates = Vec::with_capacity(rows.len());
        let mut failures = Vec::new();
        for row in &rows {
            match self.process(row, mode).await {
                Ok(u) => updates.push(u),
                Err(()) => failures.push(Failure {
                    secret_id: row.secret_id,
                    version: row.version,
                    kek_id: row.kek_id.clone(),
                }),
            }
        }
        let changed = self.store.replace_wrapped(updates).await?;
        Ok((cursor, rows.len() as u64, changed, failures))
    }

    async fn run(
        &self,
        filter: VersionFilter,
        mode: Mode,
        batch_size: u32,
        hook: &dyn BatchHook,
    ) -> Result<(Progress, Vec<Failure>), CoreError> {
        let batch_size = batch_size.max(1);
        let mut total = Progress::default();
        let mut failures = Vec::new();
        // A row whose compare-and-swap missed was changed by someone else meanwhile (a replica's
        // re-wrap, an update). If it still matches the filter (a re-wrapped row still holds its
        // old, possibly leaked DEK), a further pass takes it again.
        let mut missed = 0u64;
        for _ in 0..MAX_PASSES {
            let mut after = None;
            missed = 0;
            failures.clear();
            total.failed = 0;
            loop {
                let (cursor, scanned, changed, failed) =
                    self.batch(&filter, &mode, after, batch_size).await?;
                let Some(cursor) = cursor else { break };
                after = Some(cursor);
                missed += scanned - failed.len() as u64 - changed;
                total.scanned += scanned;
                total.changed += changed;
                total.failed += failed.len() as u64;
                for f in failed {
                    tracing::warn!(secret_id = %f.secret_id, version = f.version, kek_id = %f.kek_id,
                        "version could not be unwrapped with the configured KEKs");
                    if failures.len() < 100 {
                        failures.push(f);
                    }
                }
                hook.after_batch(total).await?;
            }
            if missed == 0 {
                break;
            }
        }
        if missed > 0 {
            return Err(CoreError::Unavailable(rcrt_store::StoreError::Unavailable(
                format!(
                    "{missed} versions kept changing during {MAX_PASSES} passes; run the job again"
                ),
            )));
        }
        Ok((total, failures))
    }

    /// Re-wraps every DEK not under the current KEK, and writes a recovery wrap on every row
    /// without one under the configured recovery KEK (values untouched). One pass; rows that
    /// fail are reported and left as they are.
    pub async fn rewrap(
        &self,
        batch_size: u32,
        hook: &dyn BatchHook,
    ) -> Result<(Progress, Vec<Failure>), CoreError> {
        self.run(self.rewrap_filter(), Mode::Rewrap, batch_size, hook)
            .await
    }

    /// Re-encrypts every value sealed before the job started under a fresh DEK wrapped by the
    /// current KEK: for a KEK whose wrapped DEKs may have leaked, where a re-wrap would keep the
    /// leaked DEKs. The cut-off is stored, so an interrupted run resumes where it stopped.
    pub async fn reencrypt(
        &self,
        batch_size: u32,
        hook: &dyn BatchHook,
    ) -> Result<(Progress, Vec<Failure>), CoreError> {
        let cutoff = match self.store.get_state(REENCRYPT_CUTOFF).await? {
            Some(text) => OffsetDateTime::parse(&text, &Rfc3339).map_err(|_| {
                CoreError::Internal("stored re-encryption cut-off is invalid".into())
            })?,
            None => {
                let now = self.clock.now();
                let text = now
                    .format(&Rfc3339)
                    .map_err(|e| CoreError::Internal(e.to_string()))?;
                self.store.set_state(REENCRYPT_CUTOFF, Some(&text)).await?;
                now
            }
        };
        let result = self
            .run(
                VersionFilter::SealedBefore(cutoff),
                Mode::Reencrypt,
                batch_size,
                hook,
            )
            .await?;
        if result.1.is_empty() {
            self.store.set_state(REENCRYPT_CUTOFF, None).await?;
        }
        Ok(result)
    }

    /// Proves, without writing, that every version unwraps under the configured KEKs and its
    /// value opens.
    pub async fn verify(&self, batch_size: u32, hook: &dyn BatchHook) -> Result<Census, CoreError> {
        let mut census = Census::default();
        let mut after = None;
        let mut total = Progress::default();
        loop {
            let rows = self
                .store
                .scan_versions(&VersionFilter::All, after, batch_size.max(1), true)
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some((last.secret_id, last.version));
            for row in &rows {
                *census.versions.entry(row.kek_id.clone()).or_default() += 1;
                total.scanned += 1;
                if !self.opens(row).await {
                    total.failed += 1;
                    *census.failures.entry(row.kek_id.clone()).or_default() += 1;
                    if census.examples.len() < 100 {
                        census.examples.push(Failure {
                            secret_id: row.secret_id,
                            version: row.version,
                            kek_id: row.kek_id.clone(),
                        });
                    }
                }
            }
            hook.after_batch(total).await?;
        }
        Ok(census)
    }

    async fn opens(&self, row: &StoredVersion) -> bool {
        let Ok(dek) = unwrap_stored(
            &*self.keys,
            &row.kek_id,
            row.secret_id,
            row.version,
            &row.wrapped_dek,
            row.recovery.as_ref(),
        )
        .await
        else {
            return false;
        };
        open_stored(
            &dek,
            row.tenant.as_str(),
            row.secret_id,
            row.version,
            &row.sealed_value,
        )
        .is_ok()
    }
}
