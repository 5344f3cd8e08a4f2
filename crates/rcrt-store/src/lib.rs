//! RCRT storage: one [`Store`] trait, with SQLite (the embedded default) and PostgreSQL behind it.
//!
//! What it does: persists secrets, their versions (sealed value + wrapped DEK + KEK id, and the
//! DEK's second wrapping under the recovery KEK when there is one) and the
//! `secret_access_log` audit table; applies embedded migrations at open; makes every write
//! transactional, with its audit row in the same transaction. What it does not do: encryption
//! (it only ever sees ciphertext) or any access rule (that is `rcrt-core`).

/// The metadata columns of `secrets`, in the order the row readers expect. A macro, not a
/// `const`, so the queries are put together by `concat!` at compile time, not per call.
macro_rules! meta_cols {
    () => {
        "id, tenant, name, scope_type, scope_id, current_version, created_at, updated_at"
    };
}

pub mod chain;
mod migrate;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use rcrt_types::{
    AuditEntry, Role, Roles, Scope, ScopeType, SecretId, SecretName, TenantId, TokenId, VaultId,
    Version,
};
use time::OffsetDateTime;

pub use postgres::{PgStore, PgTimeouts, DEFAULT_POOL_SIZE};
pub use sqlite::SqliteStore;

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A secret with this name already exists in the same tenant and scope.
    #[error("a secret with this name already exists in this scope")]
    NameTaken,
    /// The secret's current version is not the one the write was based on.
    #[error("the secret changed since it was read")]
    VersionConflict,
    /// Another write already holds this idempotency key (a concurrent retry): nothing was
    /// written; read the key's record and answer with it.
    #[error("the idempotency key is already used")]
    IdempotencyKeyTaken,
    /// The database could not be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back (schema drift or manual edits).
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    /// The configuration named no usable database.
    #[error("invalid database URL: {0}")]
    Config(String),
}

/// A secret's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    /// The id.
    pub id: SecretId,
    /// The owning tenant.
    pub tenant: TenantId,
    /// The name, unique in (tenant, scope).
    pub name: SecretName,
    /// The scope.
    pub scope: Scope,
    /// The current version.
    pub version: Version,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When its current version was written.
    pub updated_at: OffsetDateTime,
    /// Its description, labels, expiry and version cap (not secret, tenant-isolated).
    pub attrs: SecretAttributes,
    /// Set while the secret is soft-deleted (in its recovery window).
    pub deleted: Option<Deletion>,
}

/// A secret's descriptive metadata. Validated in `rcrt-core`; stored as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecretAttributes {
    /// Free text for people (empty when unset).
    pub description: String,
    /// Key → value labels, for filtering listings.
    pub labels: std::collections::BTreeMap<String, String>,
    /// When the value stops being served (decrypt answers 410 `expired`); `None`: never.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// How many versions to keep (older ones are destroyed as new ones arrive); `None`: the
    /// deployment's default.
    pub max_versions: Option<u32>,
}

/// A soft-deleted secret's recovery window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deletion {
    /// When it was deleted.
    #[serde(with = "time::serde::rfc3339")]
    pub deleted_at: OffsetDateTime,
    /// When the purge job may shred it (the end of the recovery window).
    #[serde(with = "time::serde::rfc3339")]
    pub purge_at: OffsetDateTime,
}

/// A version's place in its secret's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// The version decrypt returns by default.
    Current,
    /// An older version, still decryptable by number and usable for a rollback.
    Kept,
    /// Crypto-shredded (its DEK and sealed value are gone); only this record remains.
    Destroyed,
}

impl VersionState {
    /// The API and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Kept => "kept",
            Self::Destroyed => "destroyed",
        }
    }
}

/// One version in a secret's history: metadata only, never a value or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version number.
    pub version: Version,
    /// When it was written.
    pub created_at: OffsetDateTime,
    /// Who wrote it (the audit log's `user_id`; empty for versions written before this was
    /// recorded).
    pub created_by: String,
    /// Current, kept or destroyed.
    pub state: VersionState,
    /// When it was destroyed, if it was.
    pub destroyed_at: Option<OffsetDateTime>,
}

/// What [`Store::get_version`] found for a version number of a live secret.
#[derive(Debug, Clone)]
pub enum VersionLookup {
    /// The version, with its ciphertext.
    Kept(VersionRecord),
    /// The version existed and was destroyed at this time.
    Destroyed(OffsetDateTime),
    /// The secret never had this version.
    Missing,
}

/// How [`Store::destroy_version`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyOutcome {
    /// The version's ciphertext is gone.
    Destroyed,
    /// It was destroyed before (nothing changed).
    AlreadyDestroyed,
    /// It is the current version, which is not destroyed (write or roll back first).
    IsCurrent,
    /// No such live secret, or no such version.
    NotFound,
}

/// A remembered answer to a write sent with an `Idempotency-Key`: a retry with the same key
/// gets `outcome` back instead of a second write. Written in the write's own transaction.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The caller (keys are per principal).
    pub principal: String,
    /// The client's key.
    pub key: String,
    /// A digest of what was asked (route and non-secret fields), so a key reused for another
    /// request is refused rather than answered with the wrong outcome.
    pub fingerprint: [u8; 32],
    /// The first answer, as `rcrt-core` serialized it (metadata only, never a value).
    pub outcome: String,
    /// When it was written.
    pub created_at: OffsetDateTime,
    /// After this the key is forgotten (and may be purged).
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for IdempotencyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyRecord")
            .field("tenant", &self.tenant)
            .field("principal", &self.principal)
            .field("key_len", &self.key.len())
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Options of [`Store::add_version_with`].
#[derive(Debug, Clone, Default)]
pub struct AddVersionOptions {
    /// Keep at most this many versions that are not destroyed (the new one included): older
    /// ones are destroyed in the same transaction, each with a `destroy_version` audit row
    /// cloned from the write's. `None`: keep all.
    pub keep: Option<u32>,
    /// Remember the answer under this key in the same transaction.
    pub idempotency: Option<IdempotencyRecord>,
}

/// A version's DEK wrapped a second time, under the recovery KEK (columns `recovery_kek_id`,
/// `recovery_wrapped_dek`). A running server only writes it; it is read back when the main
/// KEK is lost and the operator gives the recovery KEK as an old KEK (the "KMS lost" drill).
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryRecord {
    /// The recovery KEK's id.
    pub kek_id: String,
    /// The DEK wrapped under it, bound to the same row (secret id, version) as the main wrap.
    pub wrapped_dek: Vec<u8>,
}

/// One stored version: ciphertext only.
#[derive(Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// The version number.
    pub version: Version,
    /// The KEK that wraps this version's DEK.
    pub kek_id: String,
    /// The wrapped DEK (envelope format in `docs/crypto.md`).
    pub wrapped_dek: Vec<u8>,
    /// The sealed value.
    pub sealed_value: Vec<u8>,
    /// When it was written.
    pub created_at: OffsetDateTime,
    /// The DEK wrapped under the recovery KEK too; `None` when no recovery KEK was configured.
    pub recovery: Option<RecoveryRecord>,
    /// Who wrote it (empty for versions written before this was recorded).
    pub created_by: String,
}

/// A secret to create, with its first version.
#[derive(Debug, Clone)]
pub struct NewSecret {
    /// Its metadata; `version` must be 1 and match `first.version`.
    pub meta: SecretMeta,
    /// The first version.
    pub first: VersionRecord,
    /// The vault it belongs to, if any.
    pub vault: Option<VaultId>,
    /// Remember the answer under this key in the same transaction.
    pub idempotency: Option<IdempotencyRecord>,
}

/// A vault: a named set of secrets in a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRecord {
    /// The id.
    pub id: VaultId,
    /// The owning tenant.
    pub tenant: TenantId,
    /// The workspace.
    pub workspace: String,
    /// The name, unique in (tenant, workspace).
    pub name: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// A page request for [`Store::list_vaults`].
#[derive(Debug, Clone)]
pub struct VaultQuery {
    /// Only this tenant's vaults.
    pub tenant: TenantId,
    /// Only vaults in this workspace.
    pub workspace: Option<String>,
    /// Only vaults in these workspaces (a non-admin's view; empty: none at all); `None` for
    /// every workspace (admins).
    pub visible_workspaces: Option<Vec<String>>,
    /// Only ids after this one (the previous page's last id).
    pub after: Option<VaultId>,
    /// At most this many rows.
    pub limit: u32,
}

/// A page request for [`Store::list`].
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only this tenant's secrets.
    pub tenant: TenantId,
    /// Only this scope type.
    pub scope_type: Option<ScopeType>,
    /// Only this scope id; without `scope_type`, workspace and agent scopes of this id (a
    /// global secret has none).
    pub scope_id: Option<String>,
    /// At most this many rows.
    pub limit: u32,
    /// Only ids after this one (the previous page's last id).
    pub after: Option<SecretId>,
    /// Only secrets this principal may see; `None` for every scope (admins).
    pub visible_to: Option<Visibility>,
    /// Label, name and expiry filters, and whether to list soft-deleted secrets instead.
    pub filter: ListFilter,
}

/// The optional filters of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only secrets carrying every one of these labels (key, value).
    pub labels: Vec<(String, String)>,
    /// Only names starting with this.
    pub name_prefix: Option<String>,
    /// Only secrets whose `expires_at` is at or before this (already expired included).
    pub expires_before: Option<OffsetDateTime>,
    /// List soft-deleted secrets (in their recovery window) instead of live ones.
    pub deleted: bool,
}

/// A non-admin's view: global secrets, its workspaces' and its own agent scope's.
#[derive(Debug, Clone)]
pub struct Visibility {
    /// Workspaces the principal belongs to.
    pub workspaces: Vec<String>,
    /// The principal's id (its agent scope).
    pub agent: String,
}

/// One audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Row id, increasing.
    pub id: i64,
    /// When.
    pub timestamp: OffsetDateTime,
    /// `create`, `update`, `delete`, `decrypt`.
    pub action: String,
    /// Which secret.
    pub secret_id: Option<SecretId>,
    /// Which service token (token actions).
    pub token_id: Option<TokenId>,
    /// Whose.
    pub tenant: String,
    /// Who.
    pub user_id: String,
    /// Why.
    pub reason: Option<String>,
    /// `success`, `failure`, `denied`.
    pub outcome: String,
    /// The request id.
    pub request_id: String,
    /// The secret version the row names, if any.
    pub version: Option<Version>,
    /// Its place in the hash chain; `None` for rows written before the chain existed (or
    /// inserted by hand, which `rcrt audit verify` reports).
    pub chain: Option<ChainLink>,
}

/// The fields of an entry to write that the chain covers (its timestamp cut to microseconds
/// by [`chain::content_hash`]; the store must write the same cut value).
pub fn entry_chain_fields(a: &AuditEntry) -> chain::ChainFields<'_> {
    chain::ChainFields {
        timestamp: a.timestamp,
        action: a.action.as_str(),
        outcome: a.outcome.as_str(),
        secret_id: a.secret_id.map(|s| *s.as_uuid().as_bytes()),
        token_id: a.token_id.map(|t| *t.as_uuid().as_bytes()),
        tenant: a.tenant.as_str(),
        user_id: &a.user_id,
        reason: a.reason.as_deref(),
        request_id: &a.request_id,
        version: a.version,
    }
}

impl AuditRecord {
    /// The fields the chain covers.
    pub fn chain_fields(&self) -> chain::ChainFields<'_> {
        chain::ChainFields {
            timestamp: self.timestamp,
            action: &self.action,
            outcome: &self.outcome,
            secret_id: self.secret_id.map(|s| *s.as_uuid().as_bytes()),
            token_id: self.token_id.map(|t| *t.as_uuid().as_bytes()),
            tenant: &self.tenant,
            user_id: &self.user_id,
            reason: self.reason.as_deref(),
            request_id: &self.request_id,
            version: self.version,
        }
    }
}

/// Where a stored audit row sits in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// The lane (one of a few independent chains).
    pub lane: i32,
    /// Its number in the lane, from 1.
    pub seq: i64,
    /// Its link hash (see [`chain`]).
    pub hash: [u8; 32],
}

/// A lane's newest row (seq 0 and [`chain::GENESIS`] for an empty lane).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainHead {
    /// The lane.
    pub lane: i32,
    /// The newest row's number.
    pub seq: i64,
    /// The newest row's link hash.
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

/// A signed statement of every lane's head at one time: rows up to it cannot be changed,
/// removed or re-chained without the signature failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// Row id (ignored on insert).
    pub id: i64,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// Which signing key ([`AuditSigningKey::id`]).
    pub key_id: String,
    /// Every lane's head, by lane.
    pub heads: Vec<ChainHead>,
    /// The Ed25519 signature over the checkpoint's canonical bytes (made in rcrt-core).
    pub signature: Vec<u8>,
}

/// The key that signs checkpoints: its public half in clear, its seed wrapped like a DEK.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditSigningKey {
    /// Its id (a fingerprint of the public key).
    pub id: String,
    /// The Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The KEK that wraps the seed.
    pub kek_id: String,
    /// The wrapped seed.
    pub wrapped_key: Vec<u8>,
    /// When it was made.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for AuditSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigningKey")
            .field("id", &self.id)
            .field("kek_id", &self.kek_id)
            .field("wrapped_key", &Redacted(self.wrapped_key.len()))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Which way [`Store::query_audit`] pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditOrder {
    /// Newest first; the cursor gives rows with a smaller id (`GET /audit`, `rcrt audit query`).
    #[default]
    NewestFirst,
    /// Oldest first; the cursor gives rows with a larger id (`rcrt audit export`).
    OldestFirst,
}

/// A filtered page of the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this tenant's rows; `None`: every tenant (the operator CLI).
    pub tenant: Option<TenantId>,
    /// Only rows about this secret.
    pub secret_id: Option<SecretId>,
    /// Only rows by this principal (`user_id`).
    pub user_id: Option<String>,
    /// Only this action.
    pub action: Option<rcrt_types::AuditAction>,
    /// Only this outcome.
    pub outcome: Option<rcrt_types::AuditOutcome>,
    /// Only rows at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only rows before this time.
    pub until: Option<OffsetDateTime>,
    /// The previous page's last row id (see [`AuditOrder`]).
    pub cursor: Option<i64>,
    /// Page direction.
    pub order: AuditOrder,
    /// At most this many rows.
    pub limit: u32,
}

/// A service token as stored: its metadata and the verifier of its secret, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The public id.
    pub id: TokenId,
    /// The tenant it acts in.
    pub tenant: TenantId,
    /// A label for people.
    pub name: String,
    /// The principal it acts as (the audit log's `user_id`, the owner of `agent` scopes).
    pub principal: String,
    /// Its roles.
    pub roles: Roles,
    /// Its workspaces.
    pub workspaces: Vec<String>,
    /// SHA-256 verifier of the secret (`rcrt_crypto::TokenHash`).
    pub secret_hash: [u8; 32],
    /// Who minted it (a principal id, or `bootstrap`).
    pub created_by: String,
    /// When it was minted.
    pub created_at: OffsetDateTime,
    /// When it stops working; `None`: never (bootstrap tokens).
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// The token a web console session was opened with: revoking or expiring it ends the
    /// session. `None` for every other token and for sessions opened with a JWT.
    pub parent: Option<TokenId>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("principal", &self.principal)
            .field("roles", &self.roles)
            .field("workspaces", &self.workspaces)
            .field("secret_hash", &Redacted(self.secret_hash.len()))
            .field("created_by", &self.created_by)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("parent", &self.parent)
            .finish()
    }
}

/// A page request for [`Store::list_tokens`].
#[derive(Debug, Clone)]
pub struct TokenQuery {
    /// Only this tenant's tokens.
    pub tenant: TenantId,
    /// Only tokens this principal minted or acts as; `None` for all of the tenant's (admins).
    pub related_to: Option<String>,
    /// Only ids after this one.
    pub after: Option<TokenId>,
    /// At most this many rows.
    pub limit: u32,
}

/// Hex (de)serialisation of a 32-byte hash.
mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        let mut out = [0; 32];
        hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// Role names as stored.
fn roles_to_stored(roles: Roles) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

/// Stored role names back to a set; an unknown name is corruption, not something to drop.
fn roles_from_stored(names: &[String]) -> Result<Roles, StoreError> {
    names
        .iter()
        .map(|n| Role::parse(n).ok_or_else(|| StoreError::Corrupt(format!("role {n:?}"))))
        .collect()
}

fn hash_from_stored(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("token hash length".into()))
}

/// How many secret versions each pair of (main KEK id, recovery KEK id) wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekUsage {
    /// The KEK id of the main wrap.
    pub kek_id: String,
    /// The KEK id of the recovery wrap; `None` for versions without one.
    pub recovery_kek_id: Option<String>,
    /// Number of versions with this pair.
    pub versions: i64,
}

impl KekUsage {
    /// Versions per main KEK id, summed over recovery KEK ids.
    pub fn versions_per_kek(usage: &[KekUsage]) -> std::collections::BTreeMap<String, i64> {
        let mut out = std::collections::BTreeMap::new();
        for u in usage {
            *out.entry(u.kek_id.clone()).or_insert(0) += u.versions;
        }
        out
    }
}

/// How busy the store's connection pool is, for `/metrics`. SQLite counts its pool of reader
/// connections (its one writer connection is always open and not counted); PostgreSQL its one
/// pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections the pool may hold at most.
    pub max: usize,
    /// Connections held by running operations.
    pub in_use: usize,
    /// Open connections waiting in the pool for an operation.
    pub idle: usize,
}

/// A stored version whose DEK a maintenance job (re-wrap, re-encrypt, verify) will process.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The owning tenant (part of the sealed value's associated data).
    pub tenant: TenantId,
    /// The secret.
    pub secret_id: SecretId,
    /// The version.
    pub version: Version,
    /// The KEK its DEK is wrapped under.
    pub kek_id: String,
    /// The wrapped DEK.
    pub wrapped_dek: Vec<u8>,
    /// The sealed value (empty when the job asked for DEKs only).
    pub sealed_value: Vec<u8>,
    /// The DEK's wrap under the recovery KEK, if the row has one.
    pub recovery: Option<RecoveryRecord>,
}

/// Which stored versions a maintenance scan returns, in (secret id, version) order.
#[derive(Debug, Clone)]
pub enum VersionFilter {
    /// Versions whose DEK is wrapped under any KEK but this one.
    NotUnderKek(String),
    /// Versions the background re-wrap has work on: main wrap under any KEK but `kek_id`, or,
    /// when a recovery KEK is configured (`recovery_kek_id` is `Some`), no recovery wrap or one
    /// under another recovery KEK. So configuring a recovery KEK later back-fills recovery wraps,
    /// and changing it re-wraps them.
    NeedsRewrap {
        /// The current KEK's id.
        kek_id: String,
        /// The configured recovery KEK's id, if any.
        recovery_kek_id: Option<String>,
    },
    /// Versions sealed before this instant (re-encryption after a KEK compromise).
    SealedBefore(OffsetDateTime),
    /// Every version (verification).
    All,
}

/// A new wrapping for one version, applied only if the row still holds `old_wrapped_dek`.
#[derive(Clone)]
pub struct Rewrapped {
    /// The secret.
    pub secret_id: SecretId,
    /// The version.
    pub version: Version,
    /// The wrapped DEK the new one replaces (compare-and-swap).
    pub old_wrapped_dek: Vec<u8>,
    /// The new KEK id.
    pub kek_id: String,
    /// The new wrapped DEK.
    pub wrapped_dek: Vec<u8>,
    /// The row's recovery wrap after the change (written in the same compare-and-swap): a
    /// fresh one, the existing one kept, or `None` to clear it.
    pub recovery: Option<RecoveryRecord>,
    /// With re-encryption: the value sealed under a fresh DEK, and when.
    pub resealed: Option<(Vec<u8>, OffsetDateTime)>,
}

/// Stands in for a wrapped DEK or sealed value in `Debug` output: its length only, so a
/// logged or panicking record never prints key or value material.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl std::fmt::Debug for RecoveryRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryRecord")
            .field("kek_id", &self.kek_id)
            .field("wrapped_dek", &Redacted(self.wrapped_dek.len()))
            .finish()
    }
}

impl std::fmt::Debug for VersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionRecord")
            .field("version", &self.version)
            .field("kek_id", &self.kek_id)
            .field("wrapped_dek", &Redacted(self.wrapped_dek.len()))
            .field("sealed_value", &Redacted(self.sealed_value.len()))
            .field("created_at", &self.created_at)
            .field("recovery", &self.recovery)
            .field("created_by", &self.created_by)
            .finish()
    }
}

impl std::fmt::Debug for StoredVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredVersion")
            .field("tenant", &self.tenant)
            .field("secret_id", &self.secret_id)
            .field("version", &self.version)
            .field("kek_id", &self.kek_id)
            .field("wrapped_dek", &Redacted(self.wrapped_dek.len()))
            .field("sealed_value", &Redacted(self.sealed_value.len()))
            .field("recovery", &self.recovery)
            .finish()
    }
}

impl std::fmt::Debug for Rewrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewrapped")
            .field("secret_id", &self.secret_id)
            .field("version", &self.version)
            .field("old_wrapped_dek", &Redacted(self.old_wrapped_dek.len()))
            .field("kek_id", &self.kek_id)
            .field("wrapped_dek", &Redacted(self.wrapped_dek.len()))
            .field("recovery", &self.recovery)
            .field(
                "resealed",
                &self.resealed.as_ref().map(|(v, t)| (Redacted(v.len()), t)),
            )
            .finish()
    }
}

/// The storage interface. Every method is one transaction; every write carries its audit row.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The connection pool's size and use right now (no database round trip).
    fn pool_status(&self) -> PoolStatus;

    /// Inserts a secret and its first version. [`StoreError::NameTaken`] if the name is used.
    async fn create_secret(&self, secret: NewSecret, audit: AuditEntry) -> Result<(), StoreError>;

    /// A live secret's metadata, if it exists in this tenant (soft-deleted ones are not
    /// returned: see [`Store::get_deleted`]).
    async fn get_meta(
        &self,
        tenant: &TenantId,
        id: SecretId,
    ) -> Result<Option<SecretMeta>, StoreError>;

    /// A live secret's metadata and current version, if it exists in this tenant.
    async fn get_current(
        &self,
        tenant: &TenantId,
        id: SecretId,
    ) -> Result<Option<(SecretMeta, VersionRecord)>, StoreError>;

    /// One page of metadata, ordered by id: live secrets, or soft-deleted ones when
    /// `query.filter.deleted`.
    async fn list(&self, query: &ListQuery) -> Result<Vec<SecretMeta>, StoreError>;

    /// Adds `record` as the new current version if the current version is still
    /// `record.version - 1`; [`StoreError::VersionConflict`] otherwise, `Ok(None)` if the secret
    /// does not exist (nothing is written then, not even `audit`). Returns the updated metadata.
    async fn add_version(
        &self,
        tenant: &TenantId,
        id: SecretId,
        record: VersionRecord,
        audit: AuditEntry,
    ) -> Result<Option<SecretMeta>, StoreError> {
        self.add_version_with(tenant, id, record, AddVersionOptions::default(), audit)
            .await
    }

    /// [`Store::add_version`] with a version cap and an idempotency record (see
    /// [`AddVersionOptions`]). A soft-deleted secret is not written (`Ok(None)`); with
    /// `Ok(None)` or an error the idempotency record is not stored either (only successful
    /// writes are remembered). [`StoreError::IdempotencyKeyTaken`] if the key is already stored.
    async fn add_version_with(
        &self,
        tenant: &TenantId,
        id: SecretId,
        record: VersionRecord,
        options: AddVersionOptions,
        audit: AuditEntry,
    ) -> Result<Option<SecretMeta>, StoreError>;

    /// A page of a live secret's history, newest first: versions below `before` (all when
    /// `None`), at most `limit`, destroyed ones included. `None` if the secret does not exist
    /// in this tenant or is soft-deleted.
    async fn list_versions(
        &self,
        tenant: &TenantId,
        id: SecretId,
        before: Option<Version>,
        limit: u32,
    ) -> Result<Option<Vec<VersionInfo>>, StoreError>;

    /// A live secret's metadata and one of its versions (see [`VersionLookup`]); `None` if
    /// the secret does not exist in this tenant or is soft-deleted.
    async fn get_version(
        &self,
        tenant: &TenantId,
        id: SecretId,
        version: Version,
    ) -> Result<Option<(SecretMeta, VersionLookup)>, StoreError>;

    /// Destroys one version of a live secret: its ciphertext is deleted (and, on SQLite,
    /// overwritten on disk) and a record of it kept. Writes `audit` in the same transaction
    /// only when it returns [`DestroyOutcome::Destroyed`] (the caller writes failure rows).
    async fn destroy_version(
        &self,
        tenant: &TenantId,
        id: SecretId,
        version: Version,
        at: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<DestroyOutcome, StoreError>;

    /// Replaces a live secret's attributes (`updated_at` stays: it is the current version's
    /// time); `None` if there is no such live secret. Writes `audit` only when it changed the
    /// secret.
    async fn update_attributes(
        &self,
        tenant: &TenantId,
        id: SecretId,
        attrs: SecretAttributes,
        audit: AuditEntry,
    ) -> Result<Option<SecretMeta>, StoreError>;

    /// Soft-deletes a live secret: hidden from reads, lists and vaults until restored or
    /// purged; its name stays reserved. `false` if there was no such live secret. Writes
    /// `audit` only when it soft-deleted the secret.
    async fn soft_delete(
        &self,
        tenant: &TenantId,
        id: SecretId,
        deletion: Deletion,
        audit: AuditEntry,
    ) -> Result<bool, StoreError>;

    /// A soft-deleted secret's metadata, if this tenant has one with this id.
    async fn get_deleted(
        &self,
        tenant: &TenantId,
        id: SecretId,
    ) -> Result<Option<SecretMeta>, StoreError>;

    /// Brings a soft-deleted secret back if its recovery window has not ended at `now`
    /// (`purge_at > now`); `None` otherwise (not deleted, window over, or already purged).
    /// Writes `audit` only when it restored the secret. Atomic against [`Store::purge_due`]:
    /// exactly one wins.
    async fn restore(
        &self,
        tenant: &TenantId,
        id: SecretId,
        now: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<Option<SecretMeta>, StoreError>;

    /// Shreds up to `limit` soft-deleted secrets whose window ended (`purge_at <= now`), in
    /// every tenant, each with a `purge` row made from `template` (its tenant and secret id
    /// set per secret), in one transaction. Replicas running it at once never purge (or
    /// audit) one secret twice. Returns the purged (tenant, id) pairs.
    async fn purge_due(
        &self,
        now: OffsetDateTime,
        limit: u32,
        template: AuditEntry,
    ) -> Result<Vec<(TenantId, SecretId)>, StoreError>;

    /// The stored answer under an idempotency key, if it has not expired at `now`.
    async fn get_idempotency(
        &self,
        tenant: &TenantId,
        principal: &str,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Deletes idempotency records that expired at or before `now` (in every tenant); how
    /// many.
    async fn purge_idempotency(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// Live secrets in every tenant whose `expires_at` is at or before `before` (already
    /// expired included), for the `rcrt_secrets_expiring` gauge.
    async fn count_expiring(&self, before: OffsetDateTime) -> Result<i64, StoreError>;

    /// Deletes a secret (live or soft-deleted) and all its versions and version records;
    /// `false` if it did not exist. The audit row is written either way.
    async fn delete_secret(
        &self,
        tenant: &TenantId,
        id: SecretId,
        audit: AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Appends one audit row (decrypts and failures), durably, before returning.
    async fn append_audit(&self, audit: AuditEntry) -> Result<(), StoreError> {
        self.append_audits(vec![audit]).await
    }

    /// Appends audit rows in one transaction, durably, before returning.
    async fn append_audits(&self, audits: Vec<AuditEntry>) -> Result<(), StoreError>;

    /// Creates a vault with its secrets in one transaction; [`StoreError::NameTaken`] if the
    /// vault name or a secret name is already used.
    async fn create_vault(
        &self,
        vault: VaultRecord,
        secrets: Vec<NewSecret>,
        audits: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.create_vault_with(vault, secrets, audits, None).await
    }

    /// [`Store::create_vault`], remembering the answer under an idempotency key in the same
    /// transaction ([`StoreError::IdempotencyKeyTaken`] if the key is already stored).
    async fn create_vault_with(
        &self,
        vault: VaultRecord,
        secrets: Vec<NewSecret>,
        audits: Vec<AuditEntry>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), StoreError>;

    /// A vault of this tenant by id.
    async fn get_vault(
        &self,
        tenant: &TenantId,
        id: VaultId,
    ) -> Result<Option<VaultRecord>, StoreError>;

    /// This tenant's vaults with this name (one per workspace at most).
    async fn find_vaults(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Vec<VaultRecord>, StoreError>;

    /// One page of this tenant's vaults matching `query`, ordered by id.
    async fn list_vaults(&self, query: &VaultQuery) -> Result<Vec<VaultRecord>, StoreError>;

    /// A vault's live secrets with their current versions, ordered by name.
    async fn vault_secrets(
        &self,
        tenant: &TenantId,
        id: VaultId,
    ) -> Result<Vec<(SecretMeta, VersionRecord)>, StoreError>;

    /// Deletes a vault and its secrets (crypto-shredding); `false` if it did not exist.
    async fn delete_vault(
        &self,
        tenant: &TenantId,
        id: VaultId,
        audits: Vec<AuditEntry>,
    ) -> Result<bool, StoreError>;

    /// The newest audit rows, newest first, optionally for one secret.
    async fn list_audit(
        &self,
        secret_id: Option<SecretId>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// One page of the audit log matching `query`, ordered by id as `query.order` says.
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Chained audit rows in (lane, seq) order after `after`, at most `limit` (every tenant).
    async fn audit_chain_page(
        &self,
        after: Option<(i32, i64)>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Audit rows without a chain link, in id order after `after_id`, at most `limit`.
    async fn unchained_audit(
        &self,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Every lane's head, by lane.
    async fn audit_heads(&self) -> Result<Vec<ChainHead>, StoreError>;

    /// Stores a signed checkpoint (its `id` is ignored; `created_at` is kept to the
    /// microsecond, which the signature must cover).
    async fn insert_audit_checkpoint(&self, checkpoint: &AuditCheckpoint)
        -> Result<(), StoreError>;

    /// Every checkpoint, oldest first.
    async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError>;

    /// Every checkpoint signing key, oldest first.
    async fn audit_signing_keys(&self) -> Result<Vec<AuditSigningKey>, StoreError>;

    /// Inserts a signing key, or replaces the wrapping (`kek_id`, `wrapped_key`) of the key with
    /// its id; writes `audit` in the same transaction when given.
    async fn put_audit_signing_key(
        &self,
        key: &AuditSigningKey,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError>;

    /// Versions per (KEK id, recovery KEK id), over all tenants (for the start-up check and
    /// rotation status), ordered by KEK id then recovery KEK id (`None` first).
    async fn kek_usage(&self) -> Result<Vec<KekUsage>, StoreError>;

    /// The part of [`Store::kek_usage`] a re-wrap to `kek_id` has work on: versions whose main
    /// KEK is not `kek_id` and, when `recovery_kek_id` is given, versions under `kek_id` without
    /// a recovery wrap under it (the rows [`VersionFilter::NeedsRewrap`] selects), in the same
    /// order. Read by ranges of the (kek_id, recovery_kek_id) index, so its cost grows with the
    /// versions it counts and not with those already under `kek_id`: outside a rotation (the
    /// normal state) it is a few index probes that find nothing, whatever the store's size.
    /// This is what the periodic and start-up checks read; [`Store::kek_usage`] scans everything.
    async fn kek_backlog(
        &self,
        kek_id: &str,
        recovery_kek_id: Option<&str>,
    ) -> Result<Vec<KekUsage>, StoreError>;

    /// Up to `limit` versions matching `filter` after `after`, in (secret id, version) order.
    /// Sealed values are included only when `with_values`.
    async fn scan_versions(
        &self,
        filter: &VersionFilter,
        after: Option<(SecretId, Version)>,
        limit: u32,
        with_values: bool,
    ) -> Result<Vec<StoredVersion>, StoreError>;

    /// Applies new wrappings in one transaction; each row changes only if it still holds its
    /// `old_wrapped_dek` (a concurrent re-wrap or delete wins). Returns how many rows changed.
    async fn replace_wrapped(&self, rows: Vec<Rewrapped>) -> Result<u64, StoreError>;

    /// Inserts a minted token with its audit row.
    async fn create_token(&self, token: TokenRecord, audit: AuditEntry) -> Result<(), StoreError>;

    /// Inserts `token` unless a token with its id exists (replicas racing on one bootstrap
    /// file insert it once), writing `audit` only if it inserted. Returns the row stored under
    /// the id afterwards, which the caller compares with its own.
    async fn ensure_token(
        &self,
        token: TokenRecord,
        audit: AuditEntry,
    ) -> Result<TokenRecord, StoreError>;

    /// Inserts `token` (and `audit`) only if the store holds no token at all, atomically across
    /// replicas; true if it did.
    async fn create_first_token(
        &self,
        token: TokenRecord,
        audit: AuditEntry,
    ) -> Result<bool, StoreError>;

    /// True if the store holds any token at all (revoked and expired ones included).
    async fn has_tokens(&self) -> Result<bool, StoreError>;

    /// A token by id, in any tenant (authentication happens before the tenant is known).
    async fn find_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;

    /// One page of a tenant's tokens, ordered by id.
    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError>;

    /// Marks a token of `tenant` revoked at `at` (the first revocation time is kept) and writes
    /// `audit`; `false` if the tenant has no such token (the audit row is written either way).
    async fn revoke_token(
        &self,
        tenant: &TenantId,
        id: TokenId,
        at: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Takes or renews the lease `name` for `holder` until `now + ttl`; false if another holder
    /// has an unexpired lease.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Gives a lease up (if held by `holder`).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Reads a maintenance state value.
    async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Writes (`Some`) or deletes (`None`) a maintenance state value.
    async fn set_state(&self, key: &str, value: Option<&str>) -> Result<(), StoreError>;
}

/// Opens the store a URL names: `sqlite:PATH` / a bare path, or `postgres://...`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    open_with(url, DEFAULT_POOL_SIZE).await
}

/// [`open`], with at most `pg_pool_size` connections to PostgreSQL (SQLite ignores it).
pub async fn open_with(
    url: &str,
    pg_pool_size: usize,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            PgStore::connect_pooled(url, PgTimeouts::default(), pg_pool_size).await?,
        ))
    } else {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(StoreError::Config("empty SQLite path".into()));
        }
        Ok(std::sync::Arc::new(SqliteStore::open(path).await?))
    }
}

/// Parses a stored scope pair back into a [`Scope`].
fn scope_from_stored(scope_type: &str, scope_id: &str) -> Result<Scope, StoreError> {
    let t: ScopeType = scope_type
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("scope_type {scope_type:?}")))?;
    let id = (!scope_id.is_empty()).then_some(scope_id);
    Scope::new(t, id).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The SQL condition (over `secret_versions v`) for a maintenance scan; `p` and `q` are the
/// placeholders of the filter's two parameters (every variant uses both, so one statement shape
/// binds the same parameters; `q` is the recovery KEK id of [`VersionFilter::NeedsRewrap`]).
fn filter_sql(filter: &VersionFilter, p: &str, q: &str) -> String {
    match filter {
        VersionFilter::NotUnderKek(_) => format!("v.kek_id <> {p} AND ({q} IS NULL OR TRUE)"),
        VersionFilter::NeedsRewrap { .. } => format!(
            "(v.kek_id <> {p} OR ({q} IS NOT NULL AND \
             (v.recovery_kek_id IS NULL OR v.recovery_kek_id <> {q})))"
        ),
        VersionFilter::SealedBefore(_) => {
            format!("v.sealed_at < {p} AND ({q} IS NULL OR TRUE)")
        }
        VersionFilter::All => format!("({p} IS NULL OR TRUE) AND ({q} IS NULL OR TRUE)"),
    }
}

/// A recovery wrap from its two nullable columns: both set or both NULL.
fn recovery_from_stored(
    kek_id: Option<String>,
    wrapped_dek: Option<Vec<u8>>,
) -> Result<Option<RecoveryRecord>, StoreError> {
    match (kek_id, wrapped_dek) {
        (Some(kek_id), Some(wrapped_dek)) => Ok(Some(RecoveryRecord {
            kek_id,
            wrapped_dek,
        })),
        (None, None) => Ok(None),
        _ => Err(StoreError::Corrupt(
            "recovery KEK id and recovery wrapped DEK must be set together".into(),
        )),
    }
}

/// A bound value of an audit query (each store binds it in its own column types).
enum AuditArg {
    Text(String),
    Secret(SecretId),
    Time(OffsetDateTime),
    Int(i64),
}

/// The `WHERE ... ORDER BY ... LIMIT ...` part of [`Store::query_audit`] with its values in
/// placeholder order; `placeholder(n)` spells the n-th (from 1). Only the filters given appear,
/// so each combination gets a plan that can use its index (tenant and id, secret, timestamp).
fn audit_query_sql(
    q: &AuditQuery,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<AuditArg>) {
    let mut args = Vec::new();
    let mut conds = Vec::new();
    let mut add = |cond: &str, arg: AuditArg| {
        args.push(arg);
        conds.push(format!("{cond} {}", placeholder(args.len())));
    };
    if let Some(t) = &q.tenant {
        add("tenant =", AuditArg::Text(t.as_str().to_owned()));
    }
    if let Some(id) = q.secret_id {
        add("secret_id =", AuditArg::Secret(id));
    }
    if let Some(u) = &q.user_id {
        add("user_id =", AuditArg::Text(u.clone()));
    }
    if let Some(a) = q.action {
        add("action =", AuditArg::Text(a.as_str().to_owned()));
    }
    if let Some(o) = q.outcome {
        add("outcome =", AuditArg::Text(o.as_str().to_owned()));
    }
    if let Some(t) = q.since {
        add("timestamp >=", AuditArg::Time(chain::to_micros(t)));
    }
    if let Some(t) = q.until {
        add("timestamp <", AuditArg::Time(chain::to_micros(t)));
    }
    let (after, order) = match q.order {
        AuditOrder::NewestFirst => ("id <", "DESC"),
        AuditOrder::OldestFirst => ("id >", "ASC"),
    };
    if let Some(c) = q.cursor {
        add(after, AuditArg::Int(c));
    }
    args.push(AuditArg::Int(i64::from(q.limit)));
    let limit = placeholder(args.len());
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (format!("{filter} ORDER BY id {order} LIMIT {limit}"), args)
}

/// A lane head's stored hash, which must be 32 bytes.
fn head_hash(lane: i32, hash: &[u8]) -> Result<[u8; 32], StoreError> {
    hash.try_into()
        .map_err(|_| StoreError::Corrupt(format!("audit chain head {lane}: hash is not 32 bytes")))
}

/// A checkpoint's heads as stored (JSON).
fn heads_to_stored(heads: &[ChainHead]) -> Result<String, StoreError> {
    serde_json::to_string(heads).map_err(|e| StoreError::Corrupt(format!("checkpoint heads: {e}")))
}

/// A stored checkpoint's heads back from JSON.
fn heads_from_stored(id: i64, heads: &str) -> Result<Vec<ChainHead>, StoreError> {
    serde_json::from_str(heads)
        .map_err(|e| StoreError::Corrupt(format!("audit checkpoint {id}: heads: {e}")))
}

/// A row's chain link from its three nullable columns: all set (a chained row) or all NULL (a
/// row from before the chain). Anything else (the migration's CHECKs forbid it) is reported
/// with the row's id, since only a hand edit makes it.
fn chain_from_stored(
    id: i64,
    lane: Option<i32>,
    seq: Option<i64>,
    hash: Option<&[u8]>,
) -> Result<Option<ChainLink>, StoreError> {
    match (lane, seq, hash) {
        (None, None, None) => Ok(None),
        (Some(lane), Some(seq), Some(hash)) => {
            let hash = hash.try_into().map_err(|_| {
                StoreError::Corrupt(format!("audit row {id}: chain hash is not 32 bytes"))
            })?;
            Ok(Some(ChainLink { lane, seq, hash }))
        }
        _ => Err(StoreError::Corrupt(format!(
            "audit row {id}: chain columns partly NULL"
        ))),
    }
}

fn name_from_stored(name: &str) -> Result<SecretName, StoreError> {
    name.parse()
        .map_err(|_| StoreError::Corrupt("secret name".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_key_or_value_bytes() {
        let record = VersionRecord {
            version: 1,
            kek_id: "kek-1".into(),
            wrapped_dek: vec![0xAB; 3],
            sealed_value: vec![0xCD; 5],
            created_at: OffsetDateTime::UNIX_EPOCH,
            recovery: Some(RecoveryRecord {
                kek_id: "kek-r".into(),
                wrapped_dek: vec![0xAB; 3],
            }),
            created_by: "alice".into(),
        };
        let rewrapped = Rewrapped {
            secret_id: SecretId::from(uuid::Uuid::nil()),
            version: 1,
            old_wrapped_dek: vec![0xAB; 3],
            kek_id: "kek-2".into(),
            wrapped_dek: vec![0xEF; 4],
            recovery: None,
            resealed: Some((vec![0xCD; 5], OffsetDateTime::UNIX_EPOCH)),
        };
        for text in [format!("{record:?}"), format!("{rewrapped:?}")] {
            assert!(
                text.contains("<3 bytes>") && text.contains("<5 bytes>"),
                "{text}"
            );
            for byte in ["171", "205", "239"] {
                assert!(!text.contains(byte), "{text}");
            }
        }
    }
}
