//! Service tokens: minted by the service for services, agents, CI jobs and people.
//!
//! A token carries the same tenant, roles and workspaces as a JWT and goes through the same
//! [`crate::authz`] rules. Only a hash of its secret is stored. Minting never escalates: the new
//! token's roles are a subset of the caller's, its workspaces within the caller's reach, its
//! principal the caller's own unless the caller is the tenant's administrator, and it expires no
//! later than the service token that mints it.
//!
//! Verified tokens are cached in memory for [`TOKEN_CACHE_TTL`], so a request costs no database
//! round trip; a revocation therefore reaches other replicas within that bound (this replica at
//! once), and an expiry is checked on every request against the clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcrt_crypto::{ServiceToken, TokenHash};
use rcrt_store::{StoreError, TokenQuery, TokenRecord};
use rcrt_types::{
    AuditAction, AuditEntry, AuditOutcome, Principal, Role, Roles, Scope, ScopeType, TenantId,
    TokenId,
};
use zeroize::Zeroizing;

use crate::authz;
use crate::service::{check_caller, page_of, page_request, RequestContext, Service};
use crate::CoreError;

/// How long a verified (or unknown) token id is answered from memory. A revocation made on
/// another replica takes effect here within this bound.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// A token's lifetime when the request names none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest lifetime a minted token may have.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// The principal and name of the bootstrap admin token.
pub const BOOTSTRAP_PRINCIPAL: &str = "bootstrap-admin";
/// The name of every console session (a token the server mints when someone signs in to the
/// web console, held only in an `HttpOnly` cookie). Names starting with
/// [`RESERVED_NAME_PREFIX`] cannot be minted through the API, so no other token passes for one.
pub const CONSOLE_SESSION_NAME: &str = "console:session";
/// Token names with this prefix are the server's own.
pub const RESERVED_NAME_PREFIX: &str = "console:";
/// Most workspaces on one token.
const MAX_WORKSPACES: usize = 256;
/// Most entries in the verification cache; beyond it, stale entries go, then all.
const CACHE_CAPACITY: usize = 10_000;

/// A token to mint, as the caller asked for it.
#[derive(Debug, Clone)]
pub struct MintToken {
    /// A label for people (1-128 printable characters).
    pub name: String,
    /// The principal it acts as; the caller's own when `None`.
    pub principal: Option<String>,
    /// Its roles (at least one).
    pub roles: Roles,
    /// Its workspaces.
    pub workspaces: Vec<String>,
    /// Its lifetime; when `None`, [`DEFAULT_TOKEN_TTL`] or what remains of the caller's own,
    /// whichever is shorter.
    pub ttl: Option<Duration>,
}

/// What a token to store is, once checked.
struct NewToken {
    name: String,
    principal: String,
    roles: Roles,
    workspaces: Vec<String>,
    /// The clock reading the expiry was computed from.
    created_at: time::OffsetDateTime,
    expires_at: time::OffsetDateTime,
    parent: Option<TokenId>,
}

/// A console session, as its cookie authenticated it.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    /// Who it acts as: the credential it was opened with, with that credential's `expires_at`.
    pub principal: Principal,
    /// The session token's id.
    pub id: TokenId,
    /// When the session itself ends.
    pub expires_at: Option<time::OffsetDateTime>,
}

/// A freshly minted token: the token string (shown once) and what was stored.
pub struct MintedToken {
    /// `rcrt_...`, zeroized on drop.
    pub token: Zeroizing<String>,
    /// The stored metadata.
    pub record: TokenRecord,
}

/// One page of token metadata.
#[derive(Debug)]
pub struct TokenPage {
    /// The tokens on this page.
    pub items: Vec<TokenRecord>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

/// Why a presented token was not accepted. Every case but `Unavailable` is one 401 to the
/// client; the variant goes to the log only.
#[derive(Debug, thiserror::Error)]
pub enum TokenAuthError {
    /// Not in the token format.
    #[error("malformed token")]
    Malformed,
    /// No token has this id (or its secret does not match).
    #[error("unknown token or wrong secret")]
    Unknown,
    /// The token was revoked.
    #[error("revoked token")]
    Revoked,
    /// The token expired.
    #[error("expired token")]
    Expired,
    /// The store could not be asked (a 503, never a 401).
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
}

/// How the bootstrap admin token stands after start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapState {
    /// It exists and works.
    Active,
    /// It exists but an operator revoked it; it stays revoked.
    Revoked,
}

/// A looked-up token (`None`: no such token) and when it was read.
type CacheEntry = (Option<Arc<TokenRecord>>, Instant);

/// Verified tokens by id.
#[derive(Default)]
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<TokenId, CacheEntry>>,
}

impl TokenCache {
    fn get(&self, id: TokenId) -> Option<Option<Arc<TokenRecord>>> {
        let entries = self.entries.lock().ok()?;
        let (record, at) = entries.get(&id)?;
        (at.elapsed() < TOKEN_CACHE_TTL).then(|| record.clone())
    }

    fn put(&self, id: TokenId, record: Option<Arc<TokenRecord>>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(id, (record, Instant::now()));
    }

    fn forget(&self, id: TokenId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&id);
        }
    }
}

/// 1-`max` characters, none of them a control character.
fn check_text(s: &str, max: usize, what: &str) -> Result<(), CoreError> {
    if s.is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(CoreError::Invalid(format!(
            "{what} must be 1-{max} characters without control characters"
        )));
    }
    Ok(())
}

/// The principal a token record acts as.
fn principal_of(record: &TokenRecord) -> Principal {
    Principal {
        user_id: record.principal.clone(),
        tenant: record.tenant.clone(),
        roles: record.roles,
        workspaces: record.workspaces.clone(),
        expires_at: record.expires_at,
    }
}

impl Service {
    fn token_audit(
        &self,
        ctx: &RequestContext,
        action: AuditAction,
        token_id: Option<TokenId>,
        outcome: AuditOutcome,
    ) -> AuditEntry {
        AuditEntry {
            token_id,
            ..self.audit(ctx, action, None, None, outcome)
        }
    }

    /// Writes the row of a refused token operation and returns `error`, or 503 if the row
    /// cannot be written (see [`Service::fail`]).
    async fn token_denied(
        &self,
        ctx: &RequestContext,
        (action, token_id): (AuditAction, Option<TokenId>),
        outcome: AuditOutcome,
        error: CoreError,
    ) -> CoreError {
        self.write_failure(self.token_audit(ctx, action, token_id, outcome))
            .await
            .err()
            .unwrap_or(error)
    }

    /// Mints a token no broader than the caller (see the module docs). The token string is in
    /// the answer only; the store keeps its hash.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn mint_token(
        &self,
        ctx: &RequestContext,
        req: MintToken,
    ) -> Result<MintedToken, CoreError> {
        check_caller(ctx)?;
        check_text(&req.name, 128, "name")?;
        if req.name.starts_with(RESERVED_NAME_PREFIX) {
            return Err(CoreError::Invalid(format!(
                "token names starting with {RESERVED_NAME_PREFIX:?} are reserved for console sessions"
            )));
        }
        if let Some(p) = &req.principal {
            check_text(p, 256, "principal")?;
        }
        if req.roles.is_empty() {
            return Err(CoreError::Invalid(
                "roles must name at least one role".into(),
            ));
        }
        if req.workspaces.len() > MAX_WORKSPACES {
            return Err(CoreError::Invalid(format!(
                "at most {MAX_WORKSPACES} workspaces"
            )));
        }
        for w in &req.workspaces {
            Scope::new(ScopeType::Workspace, Some(w))
                .map_err(|e| CoreError::Invalid(format!("workspaces: {e}")))?;
        }
        let now = self.clock.now();
        // Without a ttl the default, shortened to the caller's own lifetime if that is shorter;
        // an explicit ttl beyond it is refused below.
        let ttl = req.ttl.unwrap_or_else(|| {
            let remaining = ctx
                .principal
                .expires_at
                .map(|e| Duration::try_from(e - now).unwrap_or(Duration::ZERO));
            remaining.map_or(DEFAULT_TOKEN_TTL, |r| r.min(DEFAULT_TOKEN_TTL))
        });
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(CoreError::Invalid(format!(
                "ttl must be between 1 second and {} days",
                MAX_TOKEN_TTL.as_secs() / 86_400
            )));
        }
        let expires_at = now + ttl;
        let principal = req
            .principal
            .unwrap_or_else(|| ctx.principal.user_id.clone());
        if let Err(why) = authz::may_mint(
            &ctx.principal,
            &principal,
            req.roles,
            &req.workspaces,
            expires_at,
        ) {
            return Err(self
                .token_denied(
                    ctx,
                    (AuditAction::TokenCreate, None),
                    AuditOutcome::Denied,
                    CoreError::Forbidden(why),
                )
                .await);
        }
        self.store_minted(
            ctx,
            NewToken {
                name: req.name,
                principal,
                roles: req.roles,
                workspaces: req.workspaces,
                created_at: now,
                expires_at,
                parent: None,
            },
        )
        .await
    }

    /// Opens a web console session for the caller: a token with exactly the caller's tenant,
    /// principal, roles and workspaces (so the console can do no more than the credential it
    /// signed in with), named [`CONSOLE_SESSION_NAME`], ending after `ttl` or when the caller's
    /// own authority ends, whichever comes first. Audited as `token_create`.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn open_console_session(
        &self,
        ctx: &RequestContext,
        ttl: Duration,
        parent: Option<TokenId>,
    ) -> Result<MintedToken, CoreError> {
        check_caller(ctx)?;
        let now = self.clock.now();
        let mut expires_at = now + ttl;
        if let Some(e) = ctx.principal.expires_at {
            expires_at = expires_at.min(e);
        }
        if expires_at <= now {
            return Err(CoreError::Invalid(
                "the credential expires too soon to open a session".into(),
            ));
        }
        self.store_minted(
            ctx,
            NewToken {
                name: CONSOLE_SESSION_NAME.to_owned(),
                principal: ctx.principal.user_id.clone(),
                roles: ctx.principal.roles,
                workspaces: ctx.principal.workspaces.clone(),
                created_at: now,
                expires_at,
                parent,
            },
        )
        .await
    }

    /// Generates a token for `new`, minted by the caller in its tenant, and stores it with its
    /// `token_create` audit row (fail closed: no row, no token).
    async fn store_minted(
        &self,
        ctx: &RequestContext,
        new: NewToken,
    ) -> Result<MintedToken, CoreError> {
        let token = ServiceToken::generate().map_err(|e| CoreError::Internal(e.to_string()))?;
        let id = TokenId::from(token.id());
        let record = TokenRecord {
            id,
            tenant: ctx.principal.tenant.clone(),
            name: new.name,
            principal: new.principal,
            roles: new.roles,
            workspaces: new.workspaces,
            secret_hash: *token.hash().as_bytes(),
            created_by: ctx.principal.user_id.clone(),
            created_at: new.created_at,
            expires_at: Some(new.expires_at),
            revoked_at: None,
            parent: new.parent,
        };
        let audit = self.token_audit(
            ctx,
            AuditAction::TokenCreate,
            Some(id),
            AuditOutcome::Success,
        );
        self.store
            .create_token(record.clone(), audit)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))?;
        // An id looked up before it existed may sit in the cache as unknown.
        self.tokens.forget(id);
        Ok(MintedToken {
            token: token.expose_secret(),
            record,
        })
    }

    /// One page of the tenant's tokens (an administrator), or of the tokens the caller minted
    /// or acts as (anyone else). Never the secret or its hash.
    pub async fn list_tokens(
        &self,
        ctx: &RequestContext,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<TokenPage, CoreError> {
        let (limit, after) = page_request::<TokenId>(limit, cursor)?;
        let items = self
            .store
            .list_tokens(&TokenQuery {
                tenant: ctx.principal.tenant.clone(),
                related_to: (!authz::is_admin(&ctx.principal))
                    .then(|| ctx.principal.user_id.clone()),
                after,
                limit: limit + 1,
            })
            .await?;
        let (items, next_cursor) = page_of(items, limit, |t| t.id.to_string());
        Ok(TokenPage { items, next_cursor })
    }

    /// Revokes a token of the caller's tenant: any (an administrator), or one the caller minted
    /// or acts as. Anything else answers 404, like a missing token. Revoking twice is fine.
    #[tracing::instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn revoke_token(&self, ctx: &RequestContext, id: TokenId) -> Result<(), CoreError> {
        check_caller(ctx)?;
        let found = self
            .store
            .find_token(id)
            .await?
            .filter(|t| t.tenant == ctx.principal.tenant);
        let Some(record) = found else {
            return Err(self
                .token_denied(
                    ctx,
                    (AuditAction::TokenRevoke, Some(id)),
                    AuditOutcome::Failure,
                    CoreError::TokenNotFound,
                )
                .await);
        };
        if !authz::may_revoke(&ctx.principal, &record.created_by, &record.principal) {
            return Err(self
                .token_denied(
                    ctx,
                    (AuditAction::TokenRevoke, Some(id)),
                    AuditOutcome::Denied,
                    CoreError::TokenNotFound,
                )
                .await);
        }
        let audit = self.token_audit(
            ctx,
            AuditAction::TokenRevoke,
            Some(id),
            AuditOutcome::Success,
        );
        let revoked = self
            .store
            .revoke_token(&ctx.principal.tenant, id, self.clock.now(), audit)
            .await
            .inspect_err(|e| self.metrics.audit_write_failed(e))?;
        self.tokens.forget(id);
        if revoked {
            Ok(())
        } else {
            Err(CoreError::TokenNotFound)
        }
    }

    /// The principal a presented token acts as. Unknown, wrong, revoked and expired tokens are
    /// told apart only in the error's variant (for the log), never to the client.
    pub async fn authenticate_token(&self, presented: &str) -> Result<Principal, TokenAuthError> {
        let token = ServiceToken::parse(presented).map_err(|_| TokenAuthError::Malformed)?;
        let record = self.verified_record(&token).await?;
        // A console session works from its cookie only (with its CSRF check), never as a bearer
        // credential, nor to open another session.
        if record.name == CONSOLE_SESSION_NAME {
            return Err(TokenAuthError::Unknown);
        }
        Ok(principal_of(&record))
    }

    /// A console session presented in its cookie: the principal it acts as, its id and when it
    /// ends. Any other token, however valid, is refused here (a cookie is for sessions only), and
    /// so is a session whose parent token (the one it was opened with) was revoked or expired.
    /// The principal's `expires_at` is the parent's: a session mints tokens as long-lived as the
    /// token it was opened with could, not only as long as itself.
    pub async fn authenticate_console_session(
        &self,
        token: &ServiceToken,
    ) -> Result<ConsoleSession, TokenAuthError> {
        let record = self.verified_record(token).await?;
        if record.name != CONSOLE_SESSION_NAME {
            return Err(TokenAuthError::Unknown);
        }
        let mut principal = principal_of(&record);
        principal.expires_at = match record.parent {
            Some(parent) => self.live_record(parent).await?.expires_at,
            // Opened with a JWT: like the JWT, no end of its own for what it mints.
            None => None,
        };
        Ok(ConsoleSession {
            principal,
            id: record.id,
            expires_at: record.expires_at,
        })
    }

    /// The stored record of a token (from the cache when fresh).
    async fn record(&self, id: TokenId) -> Result<Option<Arc<TokenRecord>>, TokenAuthError> {
        if let Some(cached) = self.tokens.get(id) {
            return Ok(cached);
        }
        let fresh = self
            .store
            .find_token(id)
            .await
            .map_err(TokenAuthError::Unavailable)?
            .map(Arc::new);
        self.tokens.put(id, fresh.clone());
        Ok(fresh)
    }

    /// The record of a token that exists, is not revoked and has not expired.
    async fn live_record(&self, id: TokenId) -> Result<Arc<TokenRecord>, TokenAuthError> {
        let record = self.record(id).await?.ok_or(TokenAuthError::Unknown)?;
        self.check_live(&record)?;
        Ok(record)
    }

    /// Refuses a revoked or expired token.
    fn check_live(&self, record: &TokenRecord) -> Result<(), TokenAuthError> {
        if record.revoked_at.is_some() {
            return Err(TokenAuthError::Revoked);
        }
        if record.expires_at.is_some_and(|e| e <= self.clock.now()) {
            return Err(TokenAuthError::Expired);
        }
        Ok(())
    }

    /// The stored record of a live token whose secret matches.
    async fn verified_record(
        &self,
        token: &ServiceToken,
    ) -> Result<Arc<TokenRecord>, TokenAuthError> {
        let id = TokenId::from(token.id());
        let record = self.record(id).await?.ok_or(TokenAuthError::Unknown)?;
        let stored = TokenHash::from_stored(&record.secret_hash).ok_or(TokenAuthError::Unknown)?;
        if !token.matches(&stored) {
            return Err(TokenAuthError::Unknown);
        }
        self.check_live(&record)?;
        Ok(record)
    }

    fn bootstrap_record(&self, token: &ServiceToken) -> TokenRecord {
        TokenRecord {
            id: TokenId::from(token.id()),
            tenant: TenantId::default_tenant(),
            name: BOOTSTRAP_PRINCIPAL.to_owned(),
            principal: BOOTSTRAP_PRINCIPAL.to_owned(),
            roles: Roles::all(),
            workspaces: Vec::new(),
            secret_hash: *token.hash().as_bytes(),
            created_by: "bootstrap".to_owned(),
            created_at: self.clock.now(),
            expires_at: None,
            revoked_at: None,
            parent: None,
        }
    }

    fn bootstrap_audit(&self, id: TokenId) -> AuditEntry {
        AuditEntry {
            timestamp: self.clock.now(),
            action: AuditAction::TokenCreate,
            secret_id: None,
            token_id: Some(id),
            tenant: TenantId::default_tenant(),
            user_id: "bootstrap".to_owned(),
            reason: None,
            outcome: AuditOutcome::Success,
            request_id: "startup".to_owned(),
            version: None,
        }
    }

    /// Makes sure `token` exists as an admin token (every role, `rcrt.operator` included) of
    /// tenant `default`; idempotent across restarts and replicas. A token with the same id but
    /// another secret is an error; a revoked one stays revoked.
    pub async fn ensure_bootstrap_token(
        &self,
        token: &ServiceToken,
    ) -> Result<BootstrapState, CoreError> {
        let record = self.bootstrap_record(token);
        let audit = self.bootstrap_audit(record.id);
        let stored = self.store.ensure_token(record, audit).await?;
        let hash = TokenHash::from_stored(&stored.secret_hash);
        if !hash.is_some_and(|h| token.matches(&h)) {
            return Err(CoreError::Invalid(
                "a different token with the bootstrap token's id exists; generate a new bootstrap token".into(),
            ));
        }
        Ok(if stored.revoked_at.is_some() {
            BootstrapState::Revoked
        } else {
            BootstrapState::Active
        })
    }

    /// True if the store holds any token at all.
    pub async fn has_tokens(&self) -> Result<bool, CoreError> {
        Ok(self.store.has_tokens().await?)
    }

    /// Stores `token` as the bootstrap admin token only if the store holds no token at all
    /// (atomically across replicas); true if it did.
    pub async fn create_first_token(&self, token: &ServiceToken) -> Result<bool, CoreError> {
        let record = self.bootstrap_record(token);
        let audit = self.bootstrap_audit(record.id);
        Ok(self.store.create_first_token(record, audit).await?)
    }
}

/// The role names of a set, for answers.
pub fn role_names(roles: Roles) -> Vec<&'static str> {
    roles.iter().map(|r| Role::as_str(&r)).collect()
}

/// `revoked`, `expired` or `active`, at `now`.
pub fn token_status(record: &TokenRecord, now: time::OffsetDateTime) -> &'static str {
    if record.revoked_at.is_some() {
        "revoked"
    } else if record.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}
