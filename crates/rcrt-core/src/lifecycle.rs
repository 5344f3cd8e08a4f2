//! A secret's life after its creation: its versions (list, read one, roll back, destroy, the
//! version cap), soft delete with a recovery window (restore, the purge job), its descriptive
//! metadata and expiry, and idempotent writes. The rules live here; `docs/lifecycle.md` is the
//! user's view of them.

use std::collections::BTreeMap;
use std::time::Duration;

use rcrt_store::{
    AddVersionOptions, Deletion, DestroyOutcome, IdempotencyRecord, SecretAttributes, SecretMeta,
    StoreError, VersionInfo, VersionLookup,
};
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, Scope, SecretId, TenantId, Version};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::authz::{self, Action};
use crate::service::{page_of, page_request, RequestContext, Service};
use crate::vaults::VaultView;
use crate::CoreError;

/// The most versions a secret may be set to keep.
pub const MAX_KEPT_VERSIONS: u32 = 100;
/// The longest recovery window a delete may ask for (90 days).
pub const MAX_RECOVERY_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);
const MAX_DESCRIPTION_CHARS: usize = 1024;
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE_CHARS: usize = 256;
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Secrets shredded per purge transaction.
const PURGE_BATCH: u32 = 100;

/// What a decrypt of an expired secret does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiredSecrets {
    /// 410 `expired`, audited as a failure (the default).
    #[default]
    Deny,
    /// Served, with a warning in the log.
    Allow,
}

/// The deployment's lifecycle settings (`MAX_VERSIONS`, `DELETE_RECOVERY_WINDOW`,
/// `EXPIRED_SECRETS`, `IDEMPOTENCY_TTL`).
#[derive(Debug, Clone, Copy)]
pub struct LifecyclePolicy {
    /// Versions kept per secret unless the secret says otherwise.
    pub max_versions: u32,
    /// A delete's recovery window when the request gives none (zero: shred at once).
    pub recovery_window: Duration,
    /// Whether expired secrets are still served.
    pub expired: ExpiredSecrets,
    /// How long an idempotency key's answer is kept.
    pub idempotency_ttl: Duration,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        Self {
            max_versions: 10,
            recovery_window: Duration::ZERO,
            expired: ExpiredSecrets::Deny,
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Checks a secret's attributes against the documented bounds.
pub fn check_attributes(a: &SecretAttributes) -> Result<(), CoreError> {
    let invalid = |m: String| Err(CoreError::Invalid(m));
    if a.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return invalid(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        ));
    }
    if a.description.chars().any(char::is_control) {
        return invalid("description must not contain control characters".into());
    }
    if a.labels.len() > MAX_LABELS {
        return invalid(format!("at most {MAX_LABELS} labels"));
    }
    for (k, v) in &a.labels {
        check_label(k, v)?;
    }
    if let Some(n) = a.max_versions {
        if n == 0 || n > MAX_KEPT_VERSIONS {
            return invalid(format!(
                "max_versions must be between 1 and {MAX_KEPT_VERSIONS}"
            ));
        }
    }
    Ok(())
}

/// A label: key 1-63 of `a-z 0-9 . _ - /` starting with a letter or digit; value at most 256
/// characters without control characters or `,` (the listing filter's separator).
pub fn check_label(key: &str, value: &str) -> Result<(), CoreError> {
    let key_ok = !key.is_empty()
        && key.len() <= MAX_LABEL_KEY
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/')
        });
    if !key_ok {
        return Err(CoreError::Invalid(format!(
            "label keys are 1 to {MAX_LABEL_KEY} characters of a-z, 0-9, '.', '_', '-', '/', starting with a letter or digit"
        )));
    }
    if value.chars().count() > MAX_LABEL_VALUE_CHARS
        || value.chars().any(|c| c.is_control() || c == ',')
    {
        return Err(CoreError::Invalid(format!(
            "label values are at most {MAX_LABEL_VALUE_CHARS} characters, without control characters or ','"
        )));
    }
    Ok(())
}

/// A change to a secret's attributes: only the fields given change (`Some(None)` clears).
#[derive(Debug, Clone, Default)]
pub struct AttributesPatch {
    /// A new description.
    pub description: Option<String>,
    /// A new label set (replaces the old one).
    pub labels: Option<BTreeMap<String, String>>,
    /// A new expiry, or `Some(None)` for none.
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// A new cap, or `Some(None)` for the deployment default.
    pub max_versions: Option<Option<u32>>,
}

impl AttributesPatch {
    fn apply(self, mut a: SecretAttributes) -> SecretAttributes {
        if let Some(d) = self.description {
            a.description = d;
        }
        if let Some(l) = self.labels {
            a.labels = l;
        }
        if let Some(e) = self.expires_at {
            a.expires_at = e;
        }
        if let Some(m) = self.max_versions {
            a.max_versions = m;
        }
        a
    }
}

/// A client's `Idempotency-Key`: 1 to 255 printable ASCII characters.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks and wraps a key.
    pub fn parse(key: &str) -> Result<Self, CoreError> {
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY
            || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(CoreError::Invalid(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            )));
        }
        Ok(Self(key.to_owned()))
    }
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdempotencyKey(<{} chars>)", self.0.len())
    }
}

/// A write's answer, and whether it is the stored answer of an earlier request with the same
/// idempotency key (nothing was written this time).
#[derive(Debug)]
pub struct Written<T> {
    /// The answer.
    pub value: T,
    /// True when replayed from the idempotency record.
    pub replayed: bool,
}

impl<T> Written<T> {
    pub(crate) fn fresh(value: T) -> Self {
        Self {
            value,
            replayed: false,
        }
    }
}

/// A digest of what a request asked, without its value: the same key with another request is
/// refused instead of answered with another request's outcome. Each part is length-prefixed.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(b"rcrt-idempotency-v1\0");
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// A secret's metadata as an idempotency record keeps it.
#[derive(Serialize, Deserialize)]
struct StoredMeta {
    id: String,
    tenant: String,
    name: String,
    scope_type: String,
    scope_id: Option<String>,
    version: Version,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    attrs: SecretAttributes,
}

/// A vault view as an idempotency record keeps it.
#[derive(Serialize, Deserialize)]
struct StoredVault {
    id: String,
    name: String,
    workspace: String,
    keys: Vec<String>,
}

/// An answer an idempotency record can hold.
pub(crate) trait Replayable: Sized {
    fn to_stored(&self) -> Result<String, CoreError>;
    fn from_stored(s: &str) -> Result<Self, CoreError>;
}

fn corrupt_record(e: impl std::fmt::Display) -> CoreError {
    CoreError::Internal(format!("stored idempotency record is malformed: {e}"))
}

impl Replayable for SecretMeta {
    fn to_stored(&self) -> Result<String, CoreError> {
        serde_json::to_string(&StoredMeta {
            id: self.id.to_string(),
            tenant: self.tenant.as_str().to_owned(),
            name: self.name.to_string(),
            scope_type: self.scope.scope_type().as_str().to_owned(),
            scope_id: self.scope.scope_id().map(str::to_owned),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            attrs: self.attrs.clone(),
        })
        .map_err(|e| CoreError::Internal(e.to_string()))
    }

    fn from_stored(s: &str) -> Result<Self, CoreError> {
        let m: StoredMeta = serde_json::from_str(s).map_err(corrupt_record)?;
        let scope_type = m.scope_type.parse().map_err(corrupt_record)?;
        Ok(SecretMeta {
            id: m.id.parse().map_err(corrupt_record)?,
            tenant: TenantId::new(m.tenant),
            name: m.name.parse().map_err(corrupt_record)?,
            scope: Scope::new(scope_type, m.scope_id.as_deref()).map_err(corrupt_record)?,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
            attrs: m.attrs,
            deleted: None,
        })
    }
}

impl Replayable for VaultView {
    fn to_stored(&self) -> Result<String, CoreError> {
        serde_json::to_string(&StoredVault {
            id: self.id.to_string(),
            name: self.name.clone(),
            workspace: self.workspace.clone(),
            keys: self.keys.clone(),
        })
        .map_err(|e| CoreError::Internal(e.to_string()))
    }

    fn from_stored(s: &str) -> Result<Self, CoreError> {
        let v: StoredVault = serde_json::from_str(s).map_err(corrupt_record)?;
        Ok(VaultView {
            id: v.id.parse().map_err(corrupt_record)?,
            name: v.name,
            workspace: v.workspace,
            keys: v.keys,
        })
    }
}

/// An idempotent write in progress: the key, and the request's fingerprint.
#[derive(Debug, Clone)]
pub struct Idempotent {
    key: IdempotencyKey,
    fingerprint: [u8; 32],
}

impl Idempotent {
    /// The key of a request whose non-secret parts are `parts` (the route first).
    pub fn new(key: IdempotencyKey, parts: &[&[u8]]) -> Self {
        Self {
            key,
            fingerprint: fingerprint(parts),
        }
    }
}

/// One page of a secret's history.
#[derive(Debug)]
pub struct VersionPage {
    /// Newest first.
    pub items: Vec<VersionInfo>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// How a delete ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Shredded at once.
    Shredded,
    /// Hidden until `purge_at`, restorable until then.
    Soft(Deletion),
}

impl Service {
    /// The answer stored under `idem`'s key, if this caller used it before: `Ok(Some)` to
    /// replay, [`CoreError::IdempotencyKeyReused`] if the key came with another request.
    pub(crate) async fn replay<T: Replayable>(
        &self,
        ctx: &RequestContext,
        idem: Option<&Idempotent>,
    ) -> Result<Option<T>, CoreError> {
        let Some(idem) = idem else { return Ok(None) };
        let found = self
            .store
            .get_idempotency(
                &ctx.principal.tenant,
                &ctx.principal.user_id,
                &idem.key.0,
                self.clock.now(),
            )
            .await?;
        match found {
            None => Ok(None),
            Some(r) if r.fingerprint == idem.fingerprint => T::from_stored(&r.outcome).map(Some),
            Some(_) => Err(CoreError::IdempotencyKeyReused),
        }
    }

    /// The record that remembers `outcome` under `idem`'s key, written with the write.
    pub(crate) fn idempotency_record<T: Replayable>(
        &self,
        ctx: &RequestContext,
        idem: Option<&Idempotent>,
        outcome: &T,
    ) -> Result<Option<IdempotencyRecord>, CoreError> {
        let Some(idem) = idem else { return Ok(None) };
        let now = self.clock.now();
        Ok(Some(IdempotencyRecord {
            tenant: ctx.principal.tenant.clone(),
            principal: ctx.principal.user_id.clone(),
            key: idem.key.0.clone(),
            fingerprint: idem.fingerprint,
            outcome: outcome.to_stored()?,
            created_at: now,
            expires_at: now + self.lifecycle.idempotency_ttl,
        }))
    }

    /// After a write lost the race for its idempotency key to a concurrent request with the
    /// same key: that request's answer.
    pub(crate) async fn replay_after_race<T: Replayable>(
        &self,
        ctx: &RequestContext,
        idem: Option<&Idempotent>,
    ) -> Result<Written<T>, CoreError> {
        match self.replay(ctx, idem).await? {
            Some(value) => Ok(Written {
                value,
                replayed: true,
            }),
            // The other request's record expired in between: report it as the race it was.
            None => Err(CoreError::Unavailable(StoreError::IdempotencyKeyTaken)),
        }
    }

    /// The version cap of a secret with these attributes.
    pub(crate) fn keep_versions(&self, attrs: &SecretAttributes) -> u32 {
        attrs
            .max_versions
            .unwrap_or(self.lifecycle.max_versions)
            .clamp(1, MAX_KEPT_VERSIONS)
    }

    /// Options for a new version of a secret with `attrs`.
    pub(crate) fn version_options(
        &self,
        attrs: &SecretAttributes,
        idempotency: Option<IdempotencyRecord>,
    ) -> AddVersionOptions {
        AddVersionOptions {
            keep: Some(self.keep_versions(attrs)),
            idempotency,
        }
    }

    /// Refuses a decrypt of an expired secret (410 `expired`, audited as a failure), unless the
    /// deployment serves expired secrets.
    pub(crate) async fn check_not_expired(
        &self,
        ctx: &RequestContext,
        meta: &SecretMeta,
        reason: &str,
        version: Option<Version>,
    ) -> Result<(), CoreError> {
        let Some(expires_at) = meta.attrs.expires_at else {
            return Ok(());
        };
        if expires_at > self.clock.now() {
            return Ok(());
        }
        if self.lifecycle.expired == ExpiredSecrets::Allow {
            tracing::warn!(secret_id = %meta.id, "serving an expired secret (EXPIRED_SECRETS=allow)");
            return Ok(());
        }
        Err(self
            .fail_at_version(
                ctx,
                (AuditAction::Decrypt, Some(meta.id), version),
                Some(reason.to_owned()),
                CoreError::Expired,
            )
            .await)
    }

    /// A page of a secret's versions, newest first (metadata only).
    pub async fn versions(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<VersionPage, CoreError> {
        let (limit, before) = page_request::<Version>(limit, cursor)?;
        let visible = self
            .store
            .get_meta(&ctx.principal.tenant, id)
            .await?
            .is_some_and(|m| authz::allows(&ctx.principal, Action::Read, &m.scope));
        if !visible {
            return Err(CoreError::NotFound);
        }
        let items = self
            .store
            .list_versions(&ctx.principal.tenant, id, before, limit + 1)
            .await?
            .ok_or(CoreError::NotFound)?;
        let (items, next_cursor) = page_of(items, limit, |v| v.version.to_string());
        Ok(VersionPage { items, next_cursor })
    }

    /// Writes a new version holding version `from`'s value, sealed again under a fresh DEK.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn rollback(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        from: Version,
        if_match: Option<Version>,
        idem: Option<Idempotent>,
    ) -> Result<Written<SecretMeta>, CoreError> {
        if let Some(value) = self.replay(ctx, idem.as_ref()).await? {
            return Ok(Written {
                value,
                replayed: true,
            });
        }
        let found = self
            .store
            .get_version(&ctx.principal.tenant, id, from)
            .await?;
        let (_, lookup) = self
            .within_reach(
                ctx,
                (id, AuditAction::Rollback, Action::Write),
                None,
                found,
                |(m, _)| &m.scope,
            )
            .await?;
        let row = (AuditAction::Rollback, Some(id), Some(from));
        let record = match lookup {
            VersionLookup::Kept(r) => r,
            VersionLookup::Destroyed(_) => {
                return Err(self
                    .fail_at_version(ctx, row, None, CoreError::VersionDestroyed)
                    .await)
            }
            VersionLookup::Missing => {
                return Err(self
                    .fail_at_version(ctx, row, None, CoreError::VersionNotFound)
                    .await)
            }
        };
        let plaintext = match self.open(ctx, id, &record).await {
            Ok(p) => p,
            Err(e) => {
                self.open_failed(id, &record.kek_id, &e);
                return Err(self.fail_at_version(ctx, row, None, e).await);
            }
        };
        let value = match std::str::from_utf8(plaintext.expose_secret()) {
            Ok(v) => Zeroizing::new(v.to_owned()),
            Err(_) => return Err(CoreError::Internal("a stored value is not UTF-8".into())),
        };
        drop(plaintext);
        self.write_version(
            ctx,
            id,
            value,
            if_match,
            (AuditAction::Rollback, Some(from)),
            idem,
        )
        .await
    }

    /// Destroys one version (crypto-shredding); the current version is refused.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn destroy_version(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        version: Version,
    ) -> Result<(), CoreError> {
        let found = self.store.get_meta(&ctx.principal.tenant, id).await?;
        self.within_reach(
            ctx,
            (id, AuditAction::DestroyVersion, Action::Write),
            None,
            found,
            |m| &m.scope,
        )
        .await?;
        let mut entry = self.audit(
            ctx,
            AuditAction::DestroyVersion,
            Some(id),
            None,
            AuditOutcome::Success,
        );
        entry.version = Some(version);
        let outcome = self
            .store
            .destroy_version(&ctx.principal.tenant, id, version, self.clock.now(), entry)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))?;
        let row = (AuditAction::DestroyVersion, Some(id), Some(version));
        match outcome {
            DestroyOutcome::Destroyed | DestroyOutcome::AlreadyDestroyed => Ok(()),
            DestroyOutcome::IsCurrent => Err(self
                .fail_at_version(ctx, row, None, CoreError::CurrentVersion)
                .await),
            DestroyOutcome::NotFound => Err(self
                .fail_at_version(ctx, row, None, CoreError::VersionNotFound)
                .await),
        }
    }

    /// Changes a secret's attributes without writing a version.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn patch(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        patch: AttributesPatch,
    ) -> Result<SecretMeta, CoreError> {
        let found = self.store.get_meta(&ctx.principal.tenant, id).await?;
        let meta = self
            .within_reach(
                ctx,
                (id, AuditAction::UpdateMetadata, Action::Write),
                None,
                found,
                |m| &m.scope,
            )
            .await?;
        let attrs = patch.apply(meta.attrs);
        check_attributes(&attrs)?;
        let audit = self.audit(
            ctx,
            AuditAction::UpdateMetadata,
            Some(id),
            None,
            AuditOutcome::Success,
        );
        self.store
            .update_attributes(&ctx.principal.tenant, id, attrs, audit)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))?
            .ok_or(CoreError::NotFound)
    }

    /// Deletes a secret: shredded at once, or, with a recovery window (the request's, else the
    /// deployment's), hidden and restorable until the window ends.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn delete_with_window(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        window: Option<Duration>,
    ) -> Result<Deleted, CoreError> {
        let window = window.unwrap_or(self.lifecycle.recovery_window);
        if window > MAX_RECOVERY_WINDOW {
            return Err(CoreError::Invalid(
                "recovery_window must be at most 90d".into(),
            ));
        }
        if window.is_zero() {
            self.delete(ctx, id).await?;
            return Ok(Deleted::Shredded);
        }
        let found = self.store.get_meta(&ctx.principal.tenant, id).await?;
        self.within_reach(
            ctx,
            (id, AuditAction::SoftDelete, Action::Write),
            None,
            found,
            |m| &m.scope,
        )
        .await?;
        let now = self.clock.now();
        let deletion = Deletion {
            deleted_at: now,
            purge_at: now + window,
        };
        let audit = self.audit(
            ctx,
            AuditAction::SoftDelete,
            Some(id),
            None,
            AuditOutcome::Success,
        );
        if self
            .store
            .soft_delete(&ctx.principal.tenant, id, deletion, audit)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))?
        {
            Ok(Deleted::Soft(deletion))
        } else {
            Err(self
                .missing(
                    ctx,
                    AuditAction::SoftDelete,
                    Some(id),
                    None,
                    AuditOutcome::Failure,
                )
                .await)
        }
    }

    /// Brings a soft-deleted secret back within its recovery window.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn restore(
        &self,
        ctx: &RequestContext,
        id: SecretId,
    ) -> Result<SecretMeta, CoreError> {
        let found = self.store.get_deleted(&ctx.principal.tenant, id).await?;
        self.within_reach(
            ctx,
            (id, AuditAction::Restore, Action::Write),
            None,
            found,
            |m| &m.scope,
        )
        .await?;
        let audit = self.audit(
            ctx,
            AuditAction::Restore,
            Some(id),
            None,
            AuditOutcome::Success,
        );
        match self
            .store
            .restore(&ctx.principal.tenant, id, self.clock.now(), audit)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))?
        {
            Some(meta) => Ok(meta),
            // The window ended (or the purge job won the race) after the lookup.
            None => Err(self
                .missing(
                    ctx,
                    AuditAction::Restore,
                    Some(id),
                    None,
                    AuditOutcome::Failure,
                )
                .await),
        }
    }

    /// Shreds every soft-deleted secret whose recovery window has ended, in batches, each
    /// secret with a `purge` row; forgets expired idempotency records. Safe to run on every
    /// replica at once. Returns how many secrets were purged.
    pub async fn purge_pass(&self) -> Result<usize, CoreError> {
        let now = self.clock.now();
        let template = AuditEntry {
            timestamp: now,
            action: AuditAction::Purge,
            secret_id: None,
            token_id: None,
            tenant: TenantId::default_tenant(),
            user_id: "rcrt-purge".to_owned(),
            reason: Some("recovery window ended".to_owned()),
            outcome: AuditOutcome::Success,
            request_id: format!("purge-{}", uuid::Uuid::new_v4()),
            version: None,
        };
        let mut purged = 0;
        loop {
            let batch = self
                .store
                .purge_due(now, PURGE_BATCH, template.clone())
                .await
                .inspect_err(|e| self.metrics.audit_write_failed(e))?;
            purged += batch.len();
            for (tenant, id) in &batch {
                tracing::info!(tenant = %tenant.as_str(), secret_id = %id, "purged a soft-deleted secret whose recovery window ended");
            }
            if batch.len() < PURGE_BATCH as usize {
                break;
            }
        }
        self.store.purge_idempotency(now).await?;
        Ok(purged)
    }

    /// Live secrets in every tenant that expire within `within` from now (already expired
    /// included), for `rcrt_secrets_expiring`.
    pub async fn count_expiring(&self, within: Duration) -> Result<i64, CoreError> {
        Ok(self.store.count_expiring(self.clock.now() + within).await?)
    }

    /// The lifecycle settings.
    pub fn lifecycle(&self) -> &LifecyclePolicy {
        &self.lifecycle
    }

    /// Sets the lifecycle settings (the defaults until called).
    pub fn with_lifecycle(mut self, policy: LifecyclePolicy) -> Self {
        self.lifecycle = policy;
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_are_checked() {
        assert!(check_label("env", "prod").is_ok());
        assert!(check_label("team.core/owner-1_x", "").is_ok());
        for bad in ["", "Env", "-x", "a b", &"k".repeat(64)] {
            assert!(check_label(bad, "v").is_err(), "{bad:?}");
        }
        assert!(check_label("k", "a,b").is_err());
        assert!(check_label("k", "a\nb").is_err());
        assert!(check_label("k", &"v".repeat(257)).is_err());
    }

    #[test]
    fn attribute_bounds() {
        let mut a = SecretAttributes {
            max_versions: Some(0),
            ..Default::default()
        };
        assert!(check_attributes(&a).is_err());
        a.max_versions = Some(101);
        assert!(check_attributes(&a).is_err());
        a.max_versions = Some(100);
        assert!(check_attributes(&a).is_ok());
        a.description = "x".repeat(1025);
        assert!(check_attributes(&a).is_err());
        a.description = "line\nbreak".into();
        assert!(check_attributes(&a).is_err());
        a.description = String::new();
        a.labels = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_attributes(&a).is_err());
    }

    #[test]
    fn idempotency_keys_are_checked_and_not_printed() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("a\u{7f}").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
        let k = IdempotencyKey::parse("order-42 retry").unwrap();
        assert!(!format!("{k:?}").contains("order"));
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"x"]), fingerprint(&[b"x"]));
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let before = SecretAttributes {
            description: "d".into(),
            labels: [("a".to_owned(), "1".to_owned())].into(),
            expires_at: Some(OffsetDateTime::UNIX_EPOCH),
            max_versions: Some(3),
        };
        let after = AttributesPatch {
            expires_at: Some(None),
            ..Default::default()
        }
        .apply(before.clone());
        assert_eq!(after.expires_at, None);
        assert_eq!(after.description, "d");
        assert_eq!(after.labels, before.labels);
        assert_eq!(after.max_versions, Some(3));
    }
}
