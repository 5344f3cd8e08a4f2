//! Vaults: a named set of secrets in one workspace, read all at once with one audited reason.
//!
//! A vault's secrets are ordinary secrets (scope `workspace`, name `<vault>/<KEY>`) linked to the
//! vault, so envelopes, versions, rotation and audit work for them unchanged. Access follows the
//! workspace scope's rules (see [`crate::authz`]).

use std::collections::BTreeMap;

use rcrt_crypto::Plaintext;
use rcrt_store::{NewSecret, SecretMeta, StoreError, VaultQuery, VaultRecord, VersionRecord};
use rcrt_types::{AuditAction, AuditOutcome, Role, Scope, ScopeType, SecretId, VaultId};
use zeroize::Zeroizing;

use crate::authz::{self, Action};
use crate::lifecycle::{Idempotent, Written};
use crate::service::{
    check_caller, check_reason, page_of, page_request, RequestContext, Service, UPDATE_RETRIES,
};
use crate::CoreError;

/// Most keys in one vault.
pub const MAX_VAULT_KEYS: usize = 200;

/// A vault as the API shows it (never its values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultView {
    /// The id.
    pub id: VaultId,
    /// The name.
    pub name: String,
    /// The workspace.
    pub workspace: String,
    /// Its keys, sorted.
    pub keys: Vec<String>,
}

impl VaultView {
    fn of(vault: VaultRecord, keys: Vec<String>) -> Self {
        Self {
            id: vault.id,
            name: vault.name,
            workspace: vault.workspace,
            keys,
        }
    }
}

/// One page of a vault listing: metadata only (no keys, no values).
#[derive(Debug)]
pub struct VaultPage {
    /// The vaults on this page, in id order.
    pub items: Vec<VaultRecord>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

fn is_token(s: &str, max: usize) -> bool {
    // Dots alone ("." and "..") would be rewritten by URL normalization on the way in.
    !s.is_empty()
        && s.len() <= max
        && !s.bytes().all(|b| b == b'.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `what` is 1-`max` characters of letters, digits, '_', '-' or '.' (see [`is_token`]).
fn check_token(s: &str, max: usize, what: &str) -> Result<(), CoreError> {
    if is_token(s, max) {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!(
            "{what} must be 1-{max} characters of letters, digits, '_', '-' or '.'"
        )))
    }
}

fn check_vault_name(name: &str) -> Result<(), CoreError> {
    check_token(name, 64, "vault name")
}

fn check_key(key: &str) -> Result<(), CoreError> {
    check_token(key, 63, "vault keys")
}

/// [`crate::check_not_empty`] for vault values, as `(key, value)` pairs: one `allow_empty` for
/// the whole request. Keys are checked first, so the error names only a well-formed key.
pub fn check_values_not_empty<'a>(
    values: impl IntoIterator<Item = (&'a str, &'a str)>,
    allow_empty: bool,
) -> Result<(), CoreError> {
    for (key, value) in values {
        check_key(key)?;
        if value.is_empty() && !allow_empty {
            return Err(CoreError::EmptyValue {
                key: Some(key.to_owned()),
            });
        }
    }
    Ok(())
}

fn too_many_keys() -> CoreError {
    CoreError::Invalid(format!("a vault holds at most {MAX_VAULT_KEYS} keys"))
}

fn workspace_scope(workspace: &str) -> Result<Scope, CoreError> {
    Scope::new(ScopeType::Workspace, Some(workspace)).map_err(|e| CoreError::Invalid(e.to_string()))
}

fn key_of<'a>(vault: &VaultRecord, meta: &'a SecretMeta) -> &'a str {
    let name = meta.name.as_str();
    name.strip_prefix(vault.name.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(name)
}

impl Service {
    /// Creates a vault with its first keys.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn create_vault(
        &self,
        ctx: &RequestContext,
        workspace: &str,
        name: &str,
        secrets: BTreeMap<String, Zeroizing<String>>,
    ) -> Result<VaultView, CoreError> {
        Ok(self
            .create_vault_idempotent(ctx, workspace, name, secrets, None)
            .await?
            .value)
    }

    /// [`Service::create_vault`]; with `idem`, a retry with the same key gets the first answer.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn create_vault_idempotent(
        &self,
        ctx: &RequestContext,
        workspace: &str,
        name: &str,
        secrets: BTreeMap<String, Zeroizing<String>>,
        idem: Option<Idempotent>,
    ) -> Result<Written<VaultView>, CoreError> {
        check_caller(ctx)?;
        if let Some(value) = self.replay(ctx, idem.as_ref()).await? {
            return Ok(Written {
                value,
                replayed: true,
            });
        }
        let scope = workspace_scope(workspace)?;
        check_vault_name(name)?;
        if secrets.len() > MAX_VAULT_KEYS {
            return Err(too_many_keys());
        }
        for (key, value) in &secrets {
            check_key(key)?;
            self.check_value(value)?;
        }
        if !authz::allows(&ctx.principal, Action::Write, &scope) {
            return Err(self
                .fail(
                    ctx,
                    (AuditAction::Create, None),
                    None,
                    AuditOutcome::Denied,
                    CoreError::Forbidden("creating vaults in this workspace"),
                )
                .await);
        }
        let vault = VaultRecord {
            id: VaultId::new(),
            tenant: ctx.principal.tenant.clone(),
            workspace: workspace.to_owned(),
            name: name.to_owned(),
            created_at: self.clock.now(),
        };
        let mut rows = Vec::with_capacity(secrets.len());
        let mut audits = Vec::with_capacity(secrets.len());
        for (key, value) in &secrets {
            rows.push(
                self.new_vault_secret(ctx, &vault, &scope, key, value)
                    .await?,
            );
            audits.push(self.audit(
                ctx,
                AuditAction::Create,
                rows.last().map(|r: &NewSecret| r.meta.id),
                None,
                AuditOutcome::Success,
            ));
        }
        let view = VaultView::of(vault.clone(), secrets.into_keys().collect());
        let record = self.idempotency_record(ctx, idem.as_ref(), &view)?;
        match self
            .store
            .create_vault_with(vault, rows, audits, record)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))
        {
            Ok(()) => Ok(Written::fresh(view)),
            Err(StoreError::IdempotencyKeyTaken) => {
                self.replay_after_race(ctx, idem.as_ref()).await
            }
            Err(StoreError::NameTaken) => Err(CoreError::VaultNameTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn new_vault_secret(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &Scope,
        key: &str,
        value: &str,
    ) -> Result<NewSecret, CoreError> {
        let id = SecretId::new();
        let first = self
            .seal(ctx, (AuditAction::Create, None), id, 1, value)
            .await?;
        let name = format!("{}/{key}", vault.name)
            .parse()
            .map_err(|e: rcrt_types::ParseError| CoreError::Invalid(e.to_string()))?;
        Ok(NewSecret {
            meta: SecretMeta {
                id,
                tenant: ctx.principal.tenant.clone(),
                name,
                scope: scope.clone(),
                version: 1,
                created_at: first.created_at,
                updated_at: first.created_at,
                attrs: Default::default(),
                deleted: None,
            },
            first,
            vault: Some(vault.id),
            idempotency: None,
        })
    }

    /// Finds a vault by id, or by name (optionally within one workspace), among those the caller
    /// may reach for `action`. Unreachable vaults are reported as missing.
    async fn resolve_vault(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
        workspace: Option<&str>,
        action: Action,
    ) -> Result<VaultRecord, CoreError> {
        let tenant = &ctx.principal.tenant;
        let candidates = match id_or_name.parse::<VaultId>() {
            Ok(id) => self
                .store
                .get_vault(tenant, id)
                .await?
                .into_iter()
                .collect(),
            Err(_) => self.store.find_vaults(tenant, id_or_name).await?,
        };
        let mut visible: Vec<VaultRecord> = candidates
            .into_iter()
            .filter(|v| workspace.is_none_or(|w| v.workspace == w))
            .filter(|v| {
                workspace_scope(&v.workspace)
                    .map(|s| authz::allows(&ctx.principal, action, &s))
                    .unwrap_or(false)
            })
            .collect();
        match visible.len() {
            0 => Err(CoreError::VaultNotFound),
            1 => Ok(visible.remove(0)),
            _ => Err(CoreError::AmbiguousVault),
        }
    }

    /// A vault the caller may write, with its secrets.
    async fn writable_vault(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
        workspace: Option<&str>,
    ) -> Result<(VaultRecord, Vec<(SecretMeta, VersionRecord)>), CoreError> {
        let vault = self
            .resolve_vault(ctx, id_or_name, workspace, Action::Write)
            .await?;
        let members = self
            .store
            .vault_secrets(&ctx.principal.tenant, vault.id)
            .await?;
        Ok((vault, members))
    }

    async fn view(&self, ctx: &RequestContext, vault: VaultRecord) -> Result<VaultView, CoreError> {
        let members = self
            .store
            .vault_secrets(&ctx.principal.tenant, vault.id)
            .await?;
        let keys = members
            .iter()
            .map(|(m, _)| key_of(&vault, m).to_owned())
            .collect();
        Ok(VaultView::of(vault, keys))
    }

    /// A vault's metadata (its keys, never its values).
    pub async fn vault(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
        workspace: Option<&str>,
    ) -> Result<VaultView, CoreError> {
        let vault = self
            .resolve_vault(ctx, id_or_name, workspace, Action::Read)
            .await?;
        self.view(ctx, vault).await
    }

    /// One page of the vaults the caller may read (in `workspace` only, when given), in id
    /// order. The rule is reading a vault's metadata ([`Action::Read`] on its workspace): an
    /// administrator sees every vault of its tenant, anyone else those of its workspaces. Like
    /// listing secrets, this needs `secrets.read` and is not audited.
    pub async fn list_vaults(
        &self,
        ctx: &RequestContext,
        workspace: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<VaultPage, CoreError> {
        if let Some(w) = workspace {
            // The scope's own message would name `scope_id`; this parameter is `workspace`.
            workspace_scope(w).map_err(|_| {
                CoreError::Invalid(
                    "workspace must be 1-128 characters of letters, digits, '-', '_', '.', ':' \
                     or '@'"
                        .into(),
                )
            })?;
        }
        if !ctx.principal.roles.has(Role::Read) {
            return Err(CoreError::Forbidden("listing vaults needs secrets.read"));
        }
        let (limit, after) = page_request::<VaultId>(limit, cursor)?;
        let rows = self
            .store
            .list_vaults(&VaultQuery {
                tenant: ctx.principal.tenant.clone(),
                workspace: workspace.map(str::to_owned),
                visible_workspaces: (!authz::is_admin(&ctx.principal))
                    .then(|| ctx.principal.workspaces.clone()),
                after,
                limit: limit + 1,
            })
            .await?;
        let (mut items, next_cursor) = page_of(rows, limit, |v| v.id.to_string());
        // The store already narrowed the rows; the rule itself is decided here, as for one
        // vault. The cursor is the last row the store returned, so paging goes on past any row
        // dropped here.
        items.retain(|v| {
            v.tenant == ctx.principal.tenant
                && workspace_scope(&v.workspace)
                    .is_ok_and(|s| authz::allows(&ctx.principal, Action::Read, &s))
        });
        Ok(VaultPage { items, next_cursor })
    }

    /// Every value of a vault, each read audited with `reason` before any is returned. Every
    /// read leaves a row: one per key, or, for an empty vault, one without a secret id; a read
    /// without a valid reason, or refused, leaves a failure or denied row without a secret id.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn vault_values(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
        workspace: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(VaultView, BTreeMap<String, Plaintext>), CoreError> {
        check_caller(ctx)?;
        let reason = match check_reason(reason) {
            Ok(r) => r,
            Err(e) => {
                // The read is a GET: the reason can only have come in its header.
                let e = match e {
                    CoreError::ReasonRequired => CoreError::VaultReasonRequired,
                    other => other,
                };
                return Err(self
                    .fail(
                        ctx,
                        (AuditAction::Decrypt, None),
                        None,
                        AuditOutcome::Failure,
                        e,
                    )
                    .await);
            }
        };
        let vault = match self
            .resolve_vault(ctx, id_or_name, workspace, Action::Decrypt)
            .await
        {
            Ok(v) => v,
            Err(CoreError::VaultNotFound) => {
                // Denied or missing: audited alike, answered alike.
                return Err(self
                    .fail(
                        ctx,
                        (AuditAction::Decrypt, None),
                        Some(reason),
                        AuditOutcome::Denied,
                        CoreError::VaultNotFound,
                    )
                    .await);
            }
            Err(e) => return Err(e),
        };
        let members = self
            .store
            .vault_secrets(&ctx.principal.tenant, vault.id)
            .await?;
        let mut values = BTreeMap::new();
        let mut audits = Vec::with_capacity(members.len());
        for (meta, record) in &members {
            match self.open(ctx, meta.id, record).await {
                Ok(p) => {
                    values.insert(key_of(&vault, meta).to_owned(), p);
                    audits.push(self.audit(
                        ctx,
                        AuditAction::Decrypt,
                        Some(meta.id),
                        Some(reason.clone()),
                        AuditOutcome::Success,
                    ));
                }
                Err(e) => {
                    self.open_failed(meta.id, &record.kek_id, &e);
                    return Err(self
                        .fail(
                            ctx,
                            (AuditAction::Decrypt, Some(meta.id)),
                            Some(reason),
                            AuditOutcome::Failure,
                            e,
                        )
                        .await);
                }
            }
        }
        if audits.is_empty() {
            // An empty vault was read all the same: record who asked, and why.
            audits.push(self.audit(
                ctx,
                AuditAction::Decrypt,
                None,
                Some(reason),
                AuditOutcome::Success,
            ));
        }
        // Fail closed: every read's audit row is durable before any value leaves.
        self.store
            .append_audits(audits)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))
            .map_err(CoreError::Unavailable)?;
        for _ in 0..values.len() {
            self.metrics.decrypt_ok();
        }
        let keys = values.keys().cloned().collect();
        Ok((VaultView::of(vault, keys), values))
    }

    /// Adds a key to a vault, or replaces its value (a new version under a fresh DEK).
    pub async fn put_vault_key(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
        workspace: Option<&str>,
        key: &str,
        value: Zeroizing<String>,
    ) -> Result<VaultView, CoreError> {
        Ok(self
            .put_vault_key_idempotent(ctx, id_or_name, workspace, key, value, None)
            .await?
            .value)
    }

    /// [`Service::put_vault_key`]; with `idem`, a retry with the same key gets the first
    /// answer back instead of writing a second version.
    pub async fn put_vault_key_idempotent(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
        workspace: Option<&str>,
        key: &str,
        value: Zeroizing<String>,
        idem: Option<Idempotent>,
    ) -> Result<Written<VaultView>, CoreError> {
        check_caller(ctx)?;
        check_key(key)?;
        self.check_value(&value)?;
        if let Some(value) = self.replay(ctx, idem.as_ref()).await? {
            return Ok(Written {
                value,
                replayed: true,
            });
        }
        let (vault, members) = self.writable_vault(ctx, id_or_name, workspace).await?;
        // The answer is the vault's keys after the write, known before it (so the idempotency
        // record can be written with it).
        let mut keys: Vec<String> = members
            .iter()
            .map(|(m, _)| key_of(&vault, m).to_owned())
            .collect();
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_owned());
            keys.sort();
        }
        let view = VaultView::of(vault.clone(), keys);
        let record = self.idempotency_record(ctx, idem.as_ref(), &view)?;
        match members.iter().find(|(m, _)| key_of(&vault, m) == key) {
            Some((meta, _)) => {
                // As an update: one at a time per secret on this replica, and on a lost race
                // with another replica, again on top of the newer version.
                let _turn = self.updates.turn(meta.id).await;
                let mut current = meta.clone();
                let mut attempts = 0;
                loop {
                    let audit = self.audit(
                        ctx,
                        AuditAction::Update,
                        Some(meta.id),
                        None,
                        AuditOutcome::Success,
                    );
                    let sealed = self
                        .seal(
                            ctx,
                            (AuditAction::Update, Some(meta.id)),
                            meta.id,
                            current.version + 1,
                            &value,
                        )
                        .await?;
                    let options = self.version_options(&current.attrs, record.clone());
                    match self
                        .store
                        .add_version_with(&ctx.principal.tenant, meta.id, sealed, options, audit)
                        .await
                        .inspect_err(|e| self.metrics.audit_write_failed(e))
                    {
                        Ok(Some(_)) => break,
                        Ok(None) => return Err(CoreError::VaultKeyNotFound),
                        Err(StoreError::IdempotencyKeyTaken) => {
                            return self.replay_after_race(ctx, idem.as_ref()).await
                        }
                        Err(StoreError::VersionConflict) if attempts < UPDATE_RETRIES => {
                            attempts += 1;
                            current = self
                                .store
                                .get_meta(&ctx.principal.tenant, meta.id)
                                .await?
                                .ok_or(CoreError::VaultKeyNotFound)?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            None => {
                if members.len() >= MAX_VAULT_KEYS {
                    return Err(too_many_keys());
                }
                let scope = workspace_scope(&vault.workspace)?;
                let secret = self
                    .new_vault_secret(ctx, &vault, &scope, key, &value)
                    .await?;
                let audit = self.audit(
                    ctx,
                    AuditAction::Create,
                    Some(secret.meta.id),
                    None,
                    AuditOutcome::Success,
                );
                let secret = NewSecret {
                    idempotency: record,
                    ..secret
                };
                match self
                    .store
                    .create_secret(secret, audit)
                    .await
                    .inspect_err(|e| self.metrics.audit_write_failed(e))
                {
                    Ok(()) => {}
                    Err(StoreError::IdempotencyKeyTaken) => {
                        return self.replay_after_race(ctx, idem.as_ref()).await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Written::fresh(view))
    }

    /// Removes a key (its secret is crypto-shredded).
    pub async fn delete_vault_key(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
        workspace: Option<&str>,
        key: &str,
    ) -> Result<(), CoreError> {
        let (vault, members) = self.writable_vault(ctx, id_or_name, workspace).await?;
        let (meta, _) = members
            .iter()
            .find(|(m, _)| key_of(&vault, m) == key)
            .ok_or(CoreError::VaultKeyNotFound)?;
        self.delete(ctx, meta.id).await
    }

    /// Deletes a vault and every key in it.
    pub async fn delete_vault(
        &self,
        ctx: &RequestContext,
        id_or_name: &str,
        workspace: Option<&str>,
    ) -> Result<(), CoreError> {
        let (vault, members) = self.writable_vault(ctx, id_or_name, workspace).await?;
        let audits = members
            .iter()
            .map(|(m, _)| {
                self.audit(
                    ctx,
                    AuditAction::Delete,
                    Some(m.id),
                    None,
                    AuditOutcome::Success,
                )
            })
            .collect();
        if self
            .store
            .delete_vault(&ctx.principal.tenant, vault.id, audits)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))?
        {
            Ok(())
        } else {
            Err(CoreError::VaultNotFound)
        }
    }
}
