use std::collections::HashMap;
use std::sync::Arc;

use rcrt_crypto::{
    CryptoError, Dek, KekId, Plaintext, SealedValue, ValueContext, WrapContext, WrappedDek,
};
use rcrt_keys::{KeyError, KeyProvider};
use rcrt_store::{
    ListFilter, ListQuery, NewSecret, RecoveryRecord, SecretAttributes, SecretMeta, Store,
    StoreError, VersionLookup, VersionRecord, Visibility,
};
use rcrt_types::{
    AuditAction, AuditEntry, AuditOutcome, Principal, Role, Scope, ScopeType, SecretId, SecretName,
    Version,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::authz::{self, Action};
use crate::lifecycle::{Idempotent, LifecyclePolicy, Written};
use crate::{CoreError, Metrics};

/// The default largest secret value, in bytes (64 KiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_REASON_CHARS: usize = 1024;
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;
/// Retries of an update that lost a race (without If-Match) to another replica before giving up
/// with 503. Updates on one replica queue (see [`UpdateQueue`]) and never race each other.
pub(crate) const UPDATE_RETRIES: usize = 32;

/// A decrypt's reason: required, trimmed, at most 1024 characters, no control characters (a
/// NUL would make PostgreSQL refuse the audit row; a newline would forge lines in exports).
pub(crate) fn check_reason(reason: Option<&str>) -> Result<String, CoreError> {
    let reason = reason.map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        return Err(CoreError::ReasonRequired);
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(CoreError::Invalid(format!(
            "reason must be at most {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(CoreError::Invalid(
            "reason must not contain control characters".into(),
        ));
    }
    Ok(reason.to_owned())
}

/// The caller's fields that go into every audit row (its user id and tenant, from a token or a
/// JWT) must be storable as they are: no control characters.
pub(crate) fn check_caller(ctx: &RequestContext) -> Result<(), CoreError> {
    let p = &ctx.principal;
    if p.user_id.chars().any(char::is_control) || p.tenant.as_str().chars().any(char::is_control) {
        return Err(CoreError::Invalid(
            "the caller's principal or tenant contains control characters".into(),
        ));
    }
    Ok(())
}

/// A listing's page size (default 100, 1 to 1000) and the id after which it starts (the
/// previous page's cursor).
pub(crate) fn page_request<Id: std::str::FromStr>(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(u32, Option<Id>), CoreError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(CoreError::Invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = cursor
        .map(|c| {
            c.parse::<Id>()
                .map_err(|_| CoreError::Invalid("cursor is not valid".into()))
        })
        .transpose()?;
    Ok((limit, after))
}

/// Cuts `items` (read with one row more than `limit`) to the page, and the cursor of the next
/// page if there is one.
pub(crate) fn page_of<T>(
    mut items: Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(id)
    } else {
        None
    };
    (items, next_cursor)
}

/// Unwraps a stored DEK with the KEK its row names (no trial decryption). One place for the
/// request path ([`Service`]'s decrypts) and the whole-store jobs ([`crate::maintenance`]).
///
/// Only when the provider does not know the main KEK at all ([`KeyError::UnknownKek`]: the "KMS
/// lost" drill, where the operator gives the recovered recovery KEK as an old KEK) and it holds
/// the row's recovery KEK, the DEK comes from the recovery wrap. A main KEK that is configured
/// but unusable (provider down, key disabled) never falls back: it stays the kill switch.
pub(crate) async fn unwrap_stored(
    keys: &dyn KeyProvider,
    kek_id: &str,
    id: SecretId,
    version: Version,
    wrapped_dek: &[u8],
    recovery: Option<&RecoveryRecord>,
) -> Result<Dek, KeyError> {
    match unwrap_one(keys, kek_id, id, version, wrapped_dek).await {
        Err(KeyError::UnknownKek(missing)) => match recovery {
            Some(r) if keys.can_unwrap(&KekId::from_stored(r.kek_id.as_str())) => {
                tracing::debug!(secret_id = %id, version, kek_id = %missing, recovery_kek_id = %r.kek_id,
                    "main KEK not held: unwrapping through the recovery wrap");
                unwrap_one(keys, &r.kek_id, id, version, &r.wrapped_dek).await
            }
            _ => Err(KeyError::UnknownKek(missing)),
        },
        other => other,
    }
}

/// A recovery wrap as the store keeps it (the request path's writes and the whole-store jobs).
pub(crate) fn recovery_record(r: rcrt_keys::RecoveryWrap) -> RecoveryRecord {
    RecoveryRecord {
        kek_id: r.kek_id.as_str().to_owned(),
        wrapped_dek: r.wrapped.as_bytes().to_vec(),
    }
}

/// Unwraps one wrapping of a row's DEK, bound to the row and to `kek_id`.
async fn unwrap_one(
    keys: &dyn KeyProvider,
    kek_id: &str,
    id: SecretId,
    version: Version,
    wrapped_dek: &[u8],
) -> Result<Dek, KeyError> {
    let kek_id = KekId::from_stored(kek_id);
    let wctx = WrapContext {
        kek_id: &kek_id,
        secret_id: id.as_bytes(),
        version,
    };
    keys.unwrap(&WrappedDek::from_stored(wrapped_dek.to_vec()), &wctx)
        .await
}

/// True if the provider can open this row: its main KEK is held, or (the "KMS lost" drill) its
/// recovery KEK is. For the start-up check and `/ready`'s census.
pub(crate) fn row_held(
    keys: &dyn KeyProvider,
    kek_id: &str,
    recovery_kek_id: Option<&str>,
) -> bool {
    keys.can_unwrap(&KekId::from_stored(kek_id))
        || recovery_kek_id.is_some_and(|r| keys.can_unwrap(&KekId::from_stored(r)))
}

/// Version counts per KEK id, in KEK id order.
pub(crate) type VersionsPerKek = Vec<(String, i64)>;

/// The census's versions the provider cannot open, and those it opens only through their
/// recovery wrap, each per main KEK id (summed over recovery KEK ids), in KEK id order.
pub(crate) fn unheld_census(
    keys: &dyn KeyProvider,
    usage: &[rcrt_store::KekUsage],
) -> (VersionsPerKek, VersionsPerKek) {
    let mut missing = std::collections::BTreeMap::<String, i64>::new();
    let mut via_recovery = std::collections::BTreeMap::<String, i64>::new();
    for u in usage.iter().filter(|u| u.versions > 0) {
        if keys.can_unwrap(&KekId::from_stored(u.kek_id.as_str())) {
            continue;
        }
        let into = if row_held(keys, &u.kek_id, u.recovery_kek_id.as_deref()) {
            &mut via_recovery
        } else {
            &mut missing
        };
        *into.entry(u.kek_id.clone()).or_default() += u.versions;
    }
    (
        missing.into_iter().collect(),
        via_recovery.into_iter().collect(),
    )
}

/// A provider failure (unreachable, refused, circuit open) as [`CoreError::KekProviderUnavailable`],
/// with the provider's own words in the log only; `None` for other key errors.
pub(crate) fn provider_unavailable(e: &KeyError) -> Option<CoreError> {
    let (kek_id, provider, reason) = match e {
        KeyError::Unavailable {
            kek_id,
            provider,
            reason,
        }
        | KeyError::Refused {
            kek_id,
            provider,
            reason,
        } => (kek_id, provider, reason.as_str()),
        KeyError::CircuitOpen { kek_id, provider } => (kek_id, provider, "circuit open"),
        _ => return None,
    };
    tracing::warn!(kek_id = %kek_id, provider = %provider, reason = %reason.escape_debug(),
        "KEK provider could not be used; answering 503 kek_unavailable");
    Some(CoreError::KekProviderUnavailable {
        kek_id: kek_id.as_str().to_owned(),
        provider: provider.as_str().to_owned(),
    })
}

/// Opens a stored value sealed under `dek` for (tenant, id, version).
pub(crate) fn open_stored(
    dek: &Dek,
    tenant: &str,
    id: SecretId,
    version: Version,
    sealed_value: &[u8],
) -> Result<Plaintext, CryptoError> {
    let vctx = ValueContext {
        tenant,
        secret_id: id.as_bytes(),
        version,
    };
    rcrt_crypto::open_value(dek, &SealedValue::from_stored(sealed_value.to_vec()), &vctx)
}

/// The API's rule for empty values: refused unless the request allows them (`allow_empty`),
/// because an empty value is most often an unset variable piped in by mistake
/// (`echo -n "$UNSET" | rcrt secrets create`). The service methods themselves store what they
/// are given, so whole-store jobs and imports keep values byte for byte.
pub fn check_not_empty(value: &str, allow_empty: bool) -> Result<(), CoreError> {
    if value.is_empty() && !allow_empty {
        return Err(CoreError::EmptyValue { key: None });
    }
    Ok(())
}

/// The time source, passed in so tests can control it.
pub trait Clock: Send + Sync + 'static {
    /// Now, truncated to microseconds (what both databases store).
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        let t = OffsetDateTime::now_utc();
        t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
            .unwrap_or(t)
    }
}

/// Limits on input sizes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest value in bytes.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// Who is asking, and the request id that ties the audit row to the server log.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The caller.
    pub principal: Principal,
    /// The request id.
    pub request_id: String,
}

/// A secret to create. The value is zeroized when dropped.
pub struct CreateSecret {
    /// Its name.
    pub name: SecretName,
    /// Its scope.
    pub scope: Scope,
    /// Its value.
    pub value: Zeroizing<String>,
    /// Its description, labels, expiry and version cap.
    pub attrs: SecretAttributes,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    /// The secrets on this page.
    pub items: Vec<SecretMeta>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The secrets service.
pub struct Service {
    pub(crate) store: Arc<dyn Store>,
    keys: Arc<dyn KeyProvider>,
    pub(crate) clock: Arc<dyn Clock>,
    limits: Limits,
    pub(crate) metrics: Metrics,
    pub(crate) tokens: crate::tokens::TokenCache,
    pub(crate) updates: UpdateQueue,
    pub(crate) lifecycle: LifecyclePolicy,
}

impl Service {
    /// A service over a store and a KEK provider.
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyProvider>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            limits,
            metrics: Metrics::default(),
            tokens: Default::default(),
            updates: UpdateQueue::default(),
            lifecycle: LifecyclePolicy::default(),
        }
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The counters for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The KEK provider.
    pub fn keys(&self) -> &dyn KeyProvider {
        &*self.keys
    }

    /// Refuses to run when stored DEKs are wrapped under KEKs the provider does not have: the
    /// guide's "Cannot decrypt after restart" becomes a start-up error naming those KEK ids.
    ///
    /// Versions whose main KEK is not held but whose recovery KEK is (the "KMS lost" drill: the
    /// recovered KEK given as an old KEK) pass: they are served through their recovery wrap,
    /// which is logged with their count, and the background re-wrap moves them to the current
    /// KEK.
    ///
    /// Reads only the versions not under the current KEK (index ranges, see
    /// [`rcrt_store::Store::kek_backlog`]): the current KEK is held, so the others are all that
    /// can be missing, and start-up does not wait on a scan of every version.
    pub async fn check_keks(&self) -> Result<(), CoreError> {
        let usage = self
            .store
            .kek_backlog(self.keys.current_kek_id().as_str(), None)
            .await?;
        let (missing, via_recovery) = unheld_census(&*self.keys, &usage);
        for (kek_id, versions) in &via_recovery {
            tracing::warn!(kek_id = %kek_id, versions,
                "versions under a KEK this server does not hold will be served through their recovery wrap; re-wrap them (background re-wrap, or rcrt kek rewrap) to the current KEK");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CoreError::UnknownKeks(
                missing
                    .iter()
                    .map(|(k, n)| format!("{k} ({n} versions)"))
                    .collect(),
            ))
        }
    }

    /// True when the store answers (for `/ready`).
    pub async fn ready(&self) -> Result<(), CoreError> {
        self.store.ping().await.map_err(CoreError::Unavailable)
    }

    pub(crate) fn audit(
        &self,
        ctx: &RequestContext,
        action: AuditAction,
        secret_id: Option<SecretId>,
        reason: Option<String>,
        outcome: AuditOutcome,
    ) -> AuditEntry {
        AuditEntry {
            timestamp: self.clock.now(),
            action,
            secret_id,
            token_id: None,
            tenant: ctx.principal.tenant.clone(),
            user_id: ctx.principal.user_id.clone(),
            reason,
            outcome,
            request_id: ctx.request_id.clone(),
            version: None,
        }
    }

    /// Writes the row of a refused or failed operation and returns `error` for the caller, or,
    /// when the row cannot be written, [`CoreError::Unavailable`] instead: fail closed, so no
    /// access attempt (a probe included) goes unrecorded, and the caller learns nothing from it.
    pub(crate) async fn fail(
        &self,
        ctx: &RequestContext,
        (action, secret_id): (AuditAction, Option<SecretId>),
        reason: Option<String>,
        outcome: AuditOutcome,
        error: CoreError,
    ) -> CoreError {
        self.write_failure(self.audit(ctx, action, secret_id, reason, outcome))
            .await
            .err()
            .unwrap_or(error)
    }

    /// [`Service::fail`] for a failure whose row names a secret version (a decrypt of a given
    /// version, a rollback's source, a destroyed version).
    pub(crate) async fn fail_at_version(
        &self,
        ctx: &RequestContext,
        (action, secret_id, version): (AuditAction, Option<SecretId>, Option<Version>),
        reason: Option<String>,
        error: CoreError,
    ) -> CoreError {
        let mut entry = self.audit(ctx, action, secret_id, reason, AuditOutcome::Failure);
        entry.version = version;
        self.write_failure(entry).await.err().unwrap_or(error)
    }

    /// Writes a failure row; an error if it could not be written (see [`Service::fail`]).
    pub(crate) async fn write_failure(&self, entry: AuditEntry) -> Result<(), CoreError> {
        let request_id = entry.request_id.clone();
        self.store.append_audit(entry).await.map_err(|e| {
            self.metrics.audit_write_failed(&e);
            tracing::error!(error = %e, request_id = %request_id, "could not write the audit row of a refused or failed request; answering 503");
            CoreError::Unavailable(e)
        })
    }

    /// Audits a refused or missing access and answers it as a missing secret, so callers
    /// cannot tell the two apart (or 503 if the row cannot be written).
    pub(crate) async fn missing(
        &self,
        ctx: &RequestContext,
        action: AuditAction,
        secret_id: Option<SecretId>,
        reason: Option<String>,
        outcome: AuditOutcome,
    ) -> CoreError {
        self.fail(
            ctx,
            (action, secret_id),
            reason,
            outcome,
            CoreError::NotFound,
        )
        .await
    }

    /// Passes a looked-up secret through if the caller may do `needed` to it. A missing secret
    /// is audited as a failure and a refused one as denied; both answer 404 (see `missing`).
    pub(crate) async fn within_reach<T>(
        &self,
        ctx: &RequestContext,
        (id, action, needed): (SecretId, AuditAction, Action),
        reason: Option<&str>,
        found: Option<T>,
        scope: impl Fn(&T) -> &Scope,
    ) -> Result<T, CoreError> {
        check_caller(ctx)?;
        match found {
            Some(item) if authz::allows(&ctx.principal, needed, scope(&item)) => Ok(item),
            found => {
                let outcome = match found {
                    Some(_) => AuditOutcome::Denied,
                    None => AuditOutcome::Failure,
                };
                let reason = reason.map(str::to_owned);
                Err(self.missing(ctx, action, Some(id), reason, outcome).await)
            }
        }
    }

    pub(crate) fn check_value(&self, value: &str) -> Result<(), CoreError> {
        if value.len() > self.limits.max_value_bytes {
            return Err(CoreError::ValueTooLarge {
                limit: self.limits.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Seals `value` for (tenant, id, version) and wraps its DEK under the current KEK, and under
    /// the recovery KEK when one is configured. When a KEK's provider cannot be used, nothing is
    /// written: the attempt is audited as `audit` (action, secret id) with a failure, counted as
    /// `kek_unavailable`, and answered [`CoreError::KekProviderUnavailable`].
    pub(crate) async fn seal(
        &self,
        ctx: &RequestContext,
        audit: (AuditAction, Option<SecretId>),
        id: SecretId,
        version: Version,
        value: &str,
    ) -> Result<VersionRecord, CoreError> {
        match self.seal_unaudited(ctx, id, version, value).await {
            Err(e @ CoreError::KekProviderUnavailable { .. }) => {
                self.metrics.kek_unavailable();
                Err(self.fail(ctx, audit, None, AuditOutcome::Failure, e).await)
            }
            other => other,
        }
    }

    async fn seal_unaudited(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        version: Version,
        value: &str,
    ) -> Result<VersionRecord, CoreError> {
        let vctx = ValueContext {
            tenant: ctx.principal.tenant.as_str(),
            secret_id: id.as_bytes(),
            version,
        };
        let (dek, sealed) = rcrt_crypto::seal_value(value.as_bytes(), &vctx)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let kek_id = self.keys.current_kek_id().clone();
        let wctx = WrapContext {
            kek_id: &kek_id,
            secret_id: id.as_bytes(),
            version,
        };
        let wrap_error =
            |e: KeyError| provider_unavailable(&e).unwrap_or(CoreError::Internal(e.to_string()));
        let wrapped = self.keys.wrap(&dek, &wctx).await.map_err(wrap_error)?;
        let recovery = self
            .keys
            .wrap_recovery(&dek, id.as_bytes(), version)
            .await
            .map_err(wrap_error)?
            .map(recovery_record);
        Ok(VersionRecord {
            version,
            kek_id: kek_id.as_str().to_owned(),
            wrapped_dek: wrapped.as_bytes().to_vec(),
            sealed_value: sealed.as_bytes().to_vec(),
            created_at: self.clock.now(),
            recovery,
            created_by: ctx.principal.user_id.clone(),
        })
    }

    /// Creates a secret (version 1).
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn create(
        &self,
        ctx: &RequestContext,
        req: CreateSecret,
    ) -> Result<SecretMeta, CoreError> {
        Ok(self.create_idempotent(ctx, req, None).await?.value)
    }

    /// Creates a secret (version 1); with `idem`, a retry with the same key gets the first
    /// answer back instead of 409.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn create_idempotent(
        &self,
        ctx: &RequestContext,
        req: CreateSecret,
        idem: Option<Idempotent>,
    ) -> Result<Written<SecretMeta>, CoreError> {
        check_caller(ctx)?;
        crate::lifecycle::check_attributes(&req.attrs)?;
        if let Some(value) = self.replay(ctx, idem.as_ref()).await? {
            return Ok(Written {
                value,
                replayed: true,
            });
        }
        if !authz::allows(&ctx.principal, Action::Write, &req.scope) {
            return Err(self
                .fail(
                    ctx,
                    (AuditAction::Create, None),
                    None,
                    AuditOutcome::Denied,
                    CoreError::Forbidden("creating secrets in this scope"),
                )
                .await);
        }
        self.check_value(&req.value)?;
        let id = SecretId::new();
        let first = self
            .seal(ctx, (AuditAction::Create, None), id, 1, &req.value)
            .await?;
        let meta = SecretMeta {
            id,
            tenant: ctx.principal.tenant.clone(),
            name: req.name,
            scope: req.scope,
            version: 1,
            created_at: first.created_at,
            updated_at: first.created_at,
            attrs: req.attrs,
            deleted: None,
        };
        let audit = self.audit(
            ctx,
            AuditAction::Create,
            Some(id),
            None,
            AuditOutcome::Success,
        );
        match self
            .store
            .create_secret(
                NewSecret {
                    meta: meta.clone(),
                    first,
                    vault: None,
                    idempotency: self.idempotency_record(ctx, idem.as_ref(), &meta)?,
                },
                audit,
            )
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))
        {
            Ok(()) => Ok(Written::fresh(meta)),
            Err(StoreError::IdempotencyKeyTaken) => {
                self.replay_after_race(ctx, idem.as_ref()).await
            }
            Err(StoreError::NameTaken) => Err(self
                .fail(
                    ctx,
                    (AuditAction::Create, None),
                    None,
                    AuditOutcome::Failure,
                    CoreError::NameTaken,
                )
                .await),
            Err(e) => Err(e.into()),
        }
    }

    /// Metadata of one secret.
    pub async fn get(&self, ctx: &RequestContext, id: SecretId) -> Result<SecretMeta, CoreError> {
        self.store
            .get_meta(&ctx.principal.tenant, id)
            .await?
            .filter(|m| authz::allows(&ctx.principal, Action::Read, &m.scope))
            .ok_or(CoreError::NotFound)
    }

    /// One page of metadata. `scope_id` without `scope_type` matches workspace and agent
    /// scopes of that id (a global secret has no scope id).
    pub async fn list(
        &self,
        ctx: &RequestContext,
        scope_type: Option<ScopeType>,
        scope_id: Option<String>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page, CoreError> {
        self.list_filtered(
            ctx,
            (scope_type, scope_id),
            ListFilter::default(),
            limit,
            cursor,
        )
        .await
    }

    /// [`Service::list`] with label, name-prefix and expiry filters, or of soft-deleted
    /// secrets (`filter.deleted`).
    pub async fn list_filtered(
        &self,
        ctx: &RequestContext,
        (scope_type, scope_id): (Option<ScopeType>, Option<String>),
        filter: ListFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page, CoreError> {
        for (k, v) in &filter.labels {
            crate::lifecycle::check_label(k, v)?;
        }
        // No stored name or scope id holds a control character, and PostgreSQL refuses a NUL in
        // a text parameter outright (that was a 503): such a filter is a bad request.
        for (what, text) in [
            ("scope_id", scope_id.as_deref()),
            ("name_prefix", filter.name_prefix.as_deref()),
        ] {
            if text.is_some_and(|t| t.chars().any(char::is_control)) {
                return Err(CoreError::Invalid(format!(
                    "{what} must not contain control characters"
                )));
            }
        }
        if !ctx.principal.roles.has(Role::Read) {
            return Err(CoreError::Forbidden("listing secrets needs secrets.read"));
        }
        let (limit, after) = page_request::<SecretId>(limit, cursor)?;
        let items = self
            .store
            .list(&ListQuery {
                tenant: ctx.principal.tenant.clone(),
                scope_type,
                scope_id,
                limit: limit + 1,
                after,
                visible_to: (!authz::is_admin(&ctx.principal)).then(|| Visibility {
                    workspaces: ctx.principal.workspaces.clone(),
                    agent: ctx.principal.user_id.clone(),
                }),
                filter,
            })
            .await?;
        let (items, next_cursor) = page_of(items, limit, |m| m.id.to_string());
        Ok(Page { items, next_cursor })
    }

    /// Decrypts the current version. The audit row is durable before the value is returned.
    pub async fn decrypt(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        reason: Option<&str>,
    ) -> Result<(Plaintext, Version), CoreError> {
        self.decrypt_version(ctx, id, reason, None).await
    }

    /// Decrypts the current version, or the given one (audited with its number). The audit
    /// row is durable before the value is returned.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn decrypt_version(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        reason: Option<&str>,
        version: Option<Version>,
    ) -> Result<(Plaintext, Version), CoreError> {
        check_caller(ctx)?;
        let row = (AuditAction::Decrypt, Some(id), version);
        let failure = |reason, e| self.fail_at_version(ctx, row, reason, e);
        let reason = match check_reason(reason) {
            Ok(r) => r,
            // The row records the attempt, not the refused reason.
            Err(e) => return Err(failure(None, e).await),
        };
        let found = match version {
            None => self
                .store
                .get_current(&ctx.principal.tenant, id)
                .await?
                .map(|(meta, record)| (meta, VersionLookup::Kept(record))),
            Some(n) => self.store.get_version(&ctx.principal.tenant, id, n).await?,
        };
        let (meta, lookup) = self
            .within_reach(
                ctx,
                (id, AuditAction::Decrypt, Action::Decrypt),
                Some(&reason),
                found,
                |(meta, _)| &meta.scope,
            )
            .await?;
        let record = match lookup {
            VersionLookup::Kept(record) => record,
            VersionLookup::Destroyed(_) => {
                return Err(failure(Some(reason), CoreError::VersionDestroyed).await)
            }
            VersionLookup::Missing => {
                return Err(failure(Some(reason), CoreError::VersionNotFound).await)
            }
        };
        self.check_not_expired(ctx, &meta, &reason, version).await?;
        let plaintext = match self.open(ctx, id, &record).await {
            Ok(p) => p,
            Err(e) => {
                self.open_failed(id, &record.kek_id, &e);
                return Err(failure(Some(reason), e).await);
            }
        };
        // Fail closed: no durable audit row, no plaintext.
        let mut entry = self.audit(
            ctx,
            AuditAction::Decrypt,
            Some(id),
            Some(reason),
            AuditOutcome::Success,
        );
        entry.version = version;
        self.store
            .append_audit(entry)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))
            .map_err(CoreError::Unavailable)?;
        self.metrics.decrypt_ok();
        Ok((plaintext, record.version))
    }

    /// Opens a stored version: [`CoreError::KekUnavailable`] when its DEK is wrapped under a
    /// KEK the provider does not hold (nor its recovery wrap: see [`unwrap_stored`]),
    /// [`CoreError::KekProviderUnavailable`] when the KEK's provider cannot be used now,
    /// [`CoreError::DecryptFailed`] when the bytes do not authenticate. The caller audits each
    /// as a failure and calls [`Service::open_failed`].
    pub(crate) async fn open(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        record: &VersionRecord,
    ) -> Result<Plaintext, CoreError> {
        let dek = unwrap_stored(
            &*self.keys,
            &record.kek_id,
            id,
            record.version,
            &record.wrapped_dek,
            record.recovery.as_ref(),
        )
        .await
        .map_err(|e| match e {
            KeyError::UnknownKek(kek_id) => CoreError::KekUnavailable {
                kek_id: kek_id.as_str().to_owned(),
            },
            e => provider_unavailable(&e).unwrap_or(CoreError::DecryptFailed),
        })?;
        open_stored(
            &dek,
            ctx.principal.tenant.as_str(),
            id,
            record.version,
            &record.sealed_value,
        )
        .map_err(|_| CoreError::DecryptFailed)
    }

    /// Counts and logs a failed [`Service::open`]: a missing KEK is an operator's problem (the
    /// data is fine), anything else is a decrypt failure (tampering or a storage fault).
    pub(crate) fn open_failed(&self, id: SecretId, kek_id: &str, error: &CoreError) {
        if matches!(error, CoreError::KekUnavailable { .. }) {
            self.metrics.kek_unavailable();
            tracing::error!(secret_id = %id, kek_id = %kek_id, "a stored DEK is wrapped under a KEK this server does not hold; answering 503 kek_unavailable");
        } else if matches!(error, CoreError::KekProviderUnavailable { .. }) {
            self.metrics.kek_unavailable();
        } else {
            self.metrics.decrypt_failed();
            tracing::error!(secret_id = %id, kek_id = %kek_id, "stored secret failed to decrypt");
        }
    }

    /// Writes a new version under a fresh DEK. With `if_match`, only if it is still current.
    pub async fn update(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        value: Zeroizing<String>,
        if_match: Option<Version>,
    ) -> Result<SecretMeta, CoreError> {
        Ok(self
            .write_version(ctx, id, value, if_match, (AuditAction::Update, None), None)
            .await?
            .value)
    }

    /// [`Service::update`]; with `idem`, a retry with the same key gets the first answer back
    /// instead of writing a second version.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn update_idempotent(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        value: Zeroizing<String>,
        if_match: Option<Version>,
        idem: Option<Idempotent>,
    ) -> Result<Written<SecretMeta>, CoreError> {
        self.write_version(ctx, id, value, if_match, (AuditAction::Update, None), idem)
            .await
    }

    /// Writes `value` as the secret's next version, audited as `action` naming `source` (a
    /// rollback's source version); keeps the secret's version cap and remembers the answer
    /// under `idem`'s key.
    pub(crate) async fn write_version(
        &self,
        ctx: &RequestContext,
        id: SecretId,
        value: Zeroizing<String>,
        if_match: Option<Version>,
        (action, source): (AuditAction, Option<Version>),
        idem: Option<Idempotent>,
    ) -> Result<Written<SecretMeta>, CoreError> {
        self.check_value(&value)?;
        if let Some(value) = self.replay(ctx, idem.as_ref()).await? {
            return Ok(Written {
                value,
                replayed: true,
            });
        }
        let failure = |e| self.fail_at_version(ctx, (action, Some(id), source), None, e);
        // Updates of this secret on this replica run one at a time, so they never race each
        // other; the store's compare-and-swap still decides between replicas.
        let _turn = self.updates.turn(id).await;
        for _ in 0..UPDATE_RETRIES {
            let found = self.store.get_meta(&ctx.principal.tenant, id).await?;
            let meta = self
                .within_reach(ctx, (id, action, Action::Write), None, found, |meta| {
                    &meta.scope
                })
                .await?;
            if let Some(expected) = if_match {
                if expected != meta.version {
                    let mismatch = CoreError::VersionMismatch {
                        expected,
                        current: meta.version,
                    };
                    return Err(failure(mismatch).await);
                }
            }
            let record = self
                .seal(ctx, (action, Some(id)), id, meta.version + 1, &value)
                .await?;
            let mut audit = self.audit(ctx, action, Some(id), None, AuditOutcome::Success);
            audit.version = source;
            // The answer a retry with the same key will get (the metadata after this write).
            let remembered = match &idem {
                Some(_) => {
                    let outcome = SecretMeta {
                        version: record.version,
                        updated_at: record.created_at,
                        ..meta.clone()
                    };
                    self.idempotency_record(ctx, idem.as_ref(), &outcome)?
                }
                None => None,
            };
            let options = self.version_options(&meta.attrs, remembered);
            match self
                .store
                .add_version_with(&ctx.principal.tenant, id, record, options, audit)
                .await
                .inspect_err(|e| self.metrics.audit_write_failed(e))
            {
                Ok(Some(updated)) => return Ok(Written::fresh(updated)),
                Ok(None) => return Err(CoreError::NotFound),
                Err(StoreError::IdempotencyKeyTaken) => {
                    return self.replay_after_race(ctx, idem.as_ref()).await
                }
                // Another writer got there first: with If-Match that is a failed precondition,
                // without it we write on top of the newer version.
                Err(StoreError::VersionConflict) => {
                    if let Some(expected) = if_match {
                        return Err(CoreError::VersionMismatch {
                            expected,
                            current: expected + 1,
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Not an outage: other replicas kept winning the compare-and-swap.
        tracing::warn!(
            secret_id = %id,
            attempts = UPDATE_RETRIES,
            "update gave up: every attempt lost the race to a concurrent update from another replica (contention, not a store outage)"
        );
        Err(CoreError::Unavailable(StoreError::Unavailable(
            "too many concurrent updates of one secret".into(),
        )))
    }

    /// Deletes a secret and every version (crypto-shredding); the audit trail stays.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn delete(&self, ctx: &RequestContext, id: SecretId) -> Result<(), CoreError> {
        // The row says success; if nothing was there we add a failure row and answer 404.
        let audit = self.audit(
            ctx,
            AuditAction::Delete,
            Some(id),
            None,
            AuditOutcome::Success,
        );
        let found = self.store.get_meta(&ctx.principal.tenant, id).await?;
        self.within_reach(
            ctx,
            (id, AuditAction::Delete, Action::Write),
            None,
            found,
            |meta| &meta.scope,
        )
        .await?;
        if self
            .store
            .delete_secret(&ctx.principal.tenant, id, audit)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))?
        {
            Ok(())
        } else {
            Err(CoreError::NotFound)
        }
    }
}

/// Queues this replica's updates of each secret: one runs at a time per secret, the rest wait
/// their turn in order (tokio's mutex is fair), instead of racing and retrying. An entry lives
/// only while someone holds or awaits it.
#[derive(Default)]
pub(crate) struct UpdateQueue {
    secrets: std::sync::Mutex<HashMap<SecretId, Arc<tokio::sync::Mutex<()>>>>,
}

/// One update's turn on a secret; the next waiting update goes when this is dropped.
pub(crate) struct UpdateTurn<'a> {
    queue: &'a UpdateQueue,
    id: SecretId,
    _held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl UpdateQueue {
    pub(crate) async fn turn(&self, id: SecretId) -> UpdateTurn<'_> {
        let lock = self
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id)
            .or_default()
            .clone();
        // Made before the wait, so an update cancelled while waiting still tidies the entry.
        let mut turn = UpdateTurn {
            queue: self,
            id,
            _held: None,
        };
        turn._held = Some(lock.lock_owned().await);
        turn
    }
}

impl Drop for UpdateTurn<'_> {
    fn drop(&mut self) {
        let mut secrets = self
            .queue
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Clones are taken only under this map lock, so the count cannot grow meanwhile: two
        // means the map's and this turn's own, so nobody waits and the entry can go.
        if secrets
            .get(&self.id)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            secrets.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod update_queue_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::UpdateQueue;
    use rcrt_types::SecretId;

    fn entries(q: &UpdateQueue) -> usize {
        q.secrets.lock().unwrap().len()
    }

    #[tokio::test]
    async fn turns_queue_and_leave_no_entry_behind() {
        let q = UpdateQueue::default();
        let id = SecretId::new();
        let first = q.turn(id).await;
        // A second update waits for the first.
        let mut second = Box::pin(q.turn(id));
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        drop(first);
        drop(second.await);
        assert_eq!(entries(&q), 0);
        // An update cancelled while waiting tidies up too.
        let held = q.turn(id).await;
        let mut waiting = Box::pin(q.turn(id));
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        drop(held);
        drop(waiting);
        assert_eq!(entries(&q), 0);
    }

    /// Polls a future once: `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
