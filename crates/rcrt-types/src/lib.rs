//! Domain types shared by every RCRT crate: identifiers, scopes, names, audit vocabulary.
//!
//! Each type parses and checks its input once ("parse, don't validate"), so the layers above
//! never pass raw strings around. This crate holds no key material and does no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Why a value could not be parsed into a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The secret id is not a UUID.
    #[error("secret id must be a UUID")]
    SecretId,
    /// The scope type is not one of `global`, `workspace`, `agent`.
    #[error("scope_type must be one of: global, workspace, agent")]
    ScopeType,
    /// `scope_id` was given for the global scope.
    #[error("scope_id must not be set for scope_type global")]
    ScopeIdNotAllowed,
    /// `scope_id` is missing for a workspace or agent scope.
    #[error("scope_id is required for scope_type {0}")]
    ScopeIdRequired(ScopeType),
    /// The scope id is empty, too long, or has characters outside the allowed set.
    #[error("scope_id must be 1-128 characters of letters, digits, '-', '_', '.', ':' or '@'")]
    ScopeId,
    /// The secret name is empty, too long, or has characters outside the allowed set.
    #[error("name must be 1-128 characters of letters, digits, '-', '_', '.' or '/'")]
    SecretName,
    /// The token id is not a UUID.
    #[error("token id must be a UUID")]
    TokenId,
}

/// A secret's identifier: a UUIDv7, so ids sort by creation time (used for pagination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretId(Uuid);

impl SecretId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The id's canonical 16 bytes (used in associated data).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for SecretId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for SecretId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl FromStr for SecretId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| ParseError::SecretId)
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A vault's identifier (a UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VaultId(Uuid);

impl VaultId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for VaultId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for VaultId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl FromStr for VaultId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| ParseError::SecretId)
    }
}

impl fmt::Display for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A service token's identifier: the public half of a token, shown in listings and audit rows.
/// All 16 bytes are random (an id reveals nothing, not even when it was minted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(Uuid);

impl TokenId {
    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The id's 16 bytes (as embedded in the token string).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl From<Uuid> for TokenId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl From<[u8; 16]> for TokenId {
    fn from(value: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(value))
    }
}

impl FromStr for TokenId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| ParseError::TokenId)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Where a secret lives. `global` is tenant-wide; `workspace` and `agent` carry a scope id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeType {
    /// Tenant-wide.
    Global,
    /// One workspace (`scope_id` is the workspace id).
    Workspace,
    /// One agent (`scope_id` is the agent's principal).
    Agent,
}

impl ScopeType {
    /// The wire and storage spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Workspace => "workspace",
            Self::Agent => "agent",
        }
    }
}

impl FromStr for ScopeType {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "global" => Ok(Self::Global),
            "workspace" => Ok(Self::Workspace),
            "agent" => Ok(Self::Agent),
            _ => Err(ParseError::ScopeType),
        }
    }
}

impl fmt::Display for ScopeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_identifier(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// A scope: the type plus, for workspace and agent scopes, its id. Always consistent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    scope_type: ScopeType,
    scope_id: Option<String>,
}

impl Scope {
    /// The tenant-wide scope.
    pub fn global() -> Self {
        Self {
            scope_type: ScopeType::Global,
            scope_id: None,
        }
    }

    /// Checks that `scope_id` is present exactly when the type needs one, and well formed.
    pub fn new(scope_type: ScopeType, scope_id: Option<&str>) -> Result<Self, ParseError> {
        match (scope_type, scope_id) {
            (ScopeType::Global, None) => Ok(Self::global()),
            (ScopeType::Global, Some(_)) => Err(ParseError::ScopeIdNotAllowed),
            (t, None) => Err(ParseError::ScopeIdRequired(t)),
            (t, Some(id)) => {
                if is_identifier(id, &['-', '_', '.', ':', '@']) {
                    Ok(Self {
                        scope_type: t,
                        scope_id: Some(id.to_owned()),
                    })
                } else {
                    Err(ParseError::ScopeId)
                }
            }
        }
    }

    /// The scope's type.
    pub fn scope_type(&self) -> ScopeType {
        self.scope_type
    }

    /// The scope id (`None` for global).
    pub fn scope_id(&self) -> Option<&str> {
        self.scope_id.as_deref()
    }

    /// The scope id as stored: the empty string for global, so a unique index covers all scopes.
    pub fn storage_id(&self) -> &str {
        self.scope_id.as_deref().unwrap_or("")
    }
}

/// A secret's name: unique within (tenant, scope).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SecretName(String);

impl SecretName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_identifier(s, &['-', '_', '.', '/']) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::SecretName)
        }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tenant (owner) a secret belongs to. With authentication disabled every request uses
/// [`TenantId::default_tenant`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant used when authentication is disabled.
    pub fn default_tenant() -> Self {
        Self("default".to_owned())
    }

    /// A tenant from a trusted source (a verified token claim or storage).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The tenant id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A secret version number, starting at 1 and increasing by one per update.
pub type Version = i64;

/// A role a principal may hold (the `roles` claim of a JWT, or a service token's roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `secrets.read`: list and read metadata.
    Read,
    /// `secrets.decrypt`: read values.
    Decrypt,
    /// `secrets.write`: create, update, delete.
    Write,
    /// `secrets.admin`: the tenant's administrator: every scope of the tenant, global writes,
    /// every token of the tenant.
    Admin,
    /// `tokens.create`: mint service tokens no broader than the caller, for the caller itself.
    TokensCreate,
    /// `rcrt.operator`: deployment-wide KEK operations (`/admin/kek/*`), which act on every
    /// tenant. No tenant administrator has it unless given explicitly.
    Operator,
    /// `audit.read`: read the tenant's audit log (`GET /audit`). A tenant administrator does not
    /// have it unless given explicitly: reading who did what is a separate duty.
    AuditRead,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Read,
        Role::Decrypt,
        Role::Write,
        Role::Admin,
        Role::TokensCreate,
        Role::Operator,
        Role::AuditRead,
    ];

    /// The claim spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Read => "secrets.read",
            Self::Decrypt => "secrets.decrypt",
            Self::Write => "secrets.write",
            Self::Admin => "secrets.admin",
            Self::TokensCreate => "tokens.create",
            Self::Operator => "rcrt.operator",
            Self::AuditRead => "audit.read",
        }
    }

    /// Parses a claim value; unknown roles are `None` (a JWT's are ignored, a token request's
    /// refused).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Self::Read => 1,
            Self::Decrypt => 2,
            Self::Write => 4,
            Self::Admin => 8,
            Self::TokensCreate => 16,
            Self::Operator => 32,
            Self::AuditRead => 64,
        }
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// Every role.
    pub fn all() -> Self {
        Role::ALL.into_iter().collect()
    }

    /// True if the set holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// True if every role of `self` is in `other`.
    pub fn is_subset_of(&self, other: Roles) -> bool {
        self.0 & !other.0 == 0
    }

    /// True if the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        Role::ALL.into_iter().filter(|r| self.has(*r))
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |acc, r| acc | r.bit()))
    }
}

/// The principal acting: who (`user_id`, written to the audit log), whose (tenant), and what it
/// may do (roles, workspaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's id (a token's `sub`, or `anonymous` with authentication disabled).
    pub user_id: String,
    /// The principal's tenant (a token's `owner_id`).
    pub tenant: TenantId,
    /// Its roles.
    pub roles: Roles,
    /// The workspaces it belongs to.
    pub workspaces: Vec<String>,
    /// When its authority ends: a service token's expiry. `None` for a JWT (its `exp` ends a
    /// session; the identity provider issues the next) and for tokens that never expire.
    pub expires_at: Option<OffsetDateTime>,
}

impl Principal {
    /// The principal used when authentication is disabled: every role in the default tenant.
    pub fn anonymous() -> Self {
        Self {
            user_id: "anonymous".to_owned(),
            tenant: TenantId::default_tenant(),
            roles: Roles::all(),
            workspaces: Vec::new(),
            expires_at: None,
        }
    }
}

/// What an audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A secret was created.
    Create,
    /// A new version was written.
    Update,
    /// A secret was deleted (crypto-shredded).
    Delete,
    /// A secret's value was decrypted and released.
    Decrypt,
    /// A service token was minted.
    TokenCreate,
    /// A service token was revoked.
    TokenRevoke,
    /// An offline `rcrt kek verify` unwrapped every DEK and opened every value (one summary
    /// row: who ran it, which KEK ids, how many versions, the outcome).
    KekVerify,
    /// An offline `rcrt kek rewrap` re-wrapped DEKs under a new KEK (one summary row).
    KekRewrap,
    /// An offline `rcrt secrets reencrypt` decrypted and sealed again every value (one
    /// summary row).
    Reencrypt,
    /// `GET /admin/kek/status` was read.
    KekStatus,
    /// `POST /admin/kek/rewrap` asked for a background re-wrap.
    KekRewrapTrigger,
    /// The background re-wrap started a pass (the summary names the KEK ids and the rows to do).
    RewrapStart,
    /// The background re-wrap's progress checkpoint (rows done so far).
    RewrapProgress,
    /// The background re-wrap ended a pass (rows re-wrapped, rows failed).
    RewrapEnd,
    /// The audit log was read (`GET /audit`).
    AuditRead,
    /// A new key for signing audit checkpoints was made (none could be unwrapped).
    AuditKeyCreate,
    /// A new version was written holding an earlier version's value (the row's `version`).
    Rollback,
    /// A secret was deleted with a recovery window: hidden, restorable until it ends.
    SoftDelete,
    /// A soft-deleted secret was brought back within its recovery window.
    Restore,
    /// A soft-deleted secret's recovery window ended and it was shredded by the purge job.
    Purge,
    /// One version was destroyed (crypto-shredded), on request or by the version cap.
    DestroyVersion,
    /// A secret's metadata (description, labels, expiry, version cap) was changed.
    UpdateMetadata,
}

impl AuditAction {
    /// The storage spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Decrypt => "decrypt",
            Self::TokenCreate => "token_create",
            Self::TokenRevoke => "token_revoke",
            Self::KekVerify => "kek_verify",
            Self::KekRewrap => "kek_rewrap",
            Self::Reencrypt => "reencrypt",
            Self::KekStatus => "kek_status",
            Self::KekRewrapTrigger => "kek_rewrap_trigger",
            Self::RewrapStart => "rewrap_start",
            Self::RewrapProgress => "rewrap_progress",
            Self::RewrapEnd => "rewrap_end",
            Self::AuditRead => "audit_read",
            Self::AuditKeyCreate => "audit_key_create",
            Self::Rollback => "rollback",
            Self::SoftDelete => "soft_delete",
            Self::Restore => "restore",
            Self::Purge => "purge",
            Self::DestroyVersion => "destroy_version",
            Self::UpdateMetadata => "update_metadata",
        }
    }

    /// Every action, in declaration order.
    pub const ALL: [AuditAction; 22] = [
        Self::Create,
        Self::Update,
        Self::Delete,
        Self::Decrypt,
        Self::TokenCreate,
        Self::TokenRevoke,
        Self::KekVerify,
        Self::KekRewrap,
        Self::Reencrypt,
        Self::KekStatus,
        Self::KekRewrapTrigger,
        Self::RewrapStart,
        Self::RewrapProgress,
        Self::RewrapEnd,
        Self::AuditRead,
        Self::AuditKeyCreate,
        Self::Rollback,
        Self::SoftDelete,
        Self::Restore,
        Self::Purge,
        Self::DestroyVersion,
        Self::UpdateMetadata,
    ];

    /// Parses the storage spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// It happened.
    Success,
    /// It was attempted and failed (e.g. a decryption failure).
    Failure,
    /// It was refused by authorization.
    Denied,
}

impl AuditOutcome {
    /// The storage spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }

    /// Parses the storage spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Success, Self::Failure, Self::Denied]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One row of `secret_access_log`, to be written.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// When it happened.
    pub timestamp: OffsetDateTime,
    /// What was done.
    pub action: AuditAction,
    /// Which secret (none when the request named no existing secret).
    pub secret_id: Option<SecretId>,
    /// Which service token (token actions only).
    pub token_id: Option<TokenId>,
    /// The tenant whose secret it is.
    pub tenant: TenantId,
    /// Who did it.
    pub user_id: String,
    /// The caller's stated reason (required for decrypts).
    pub reason: Option<String>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The request id, to join with server logs.
    pub request_id: String,
    /// The secret version the action was about, when it names one (a decrypt of a given
    /// version, a rollback's source, a destroyed version).
    pub version: Option<Version>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scope_rules() {
        assert_eq!(
            Scope::new(ScopeType::Global, None).unwrap(),
            Scope::global()
        );
        assert_eq!(
            Scope::new(ScopeType::Global, Some("x")),
            Err(ParseError::ScopeIdNotAllowed)
        );
        assert_eq!(
            Scope::new(ScopeType::Workspace, None),
            Err(ParseError::ScopeIdRequired(ScopeType::Workspace))
        );
        assert_eq!(
            Scope::new(ScopeType::Agent, Some("")),
            Err(ParseError::ScopeId)
        );
        let s = Scope::new(ScopeType::Agent, Some("agent-7@corp")).unwrap();
        assert_eq!(s.scope_id(), Some("agent-7@corp"));
        assert_eq!(Scope::global().storage_id(), "");
    }

    #[test]
    fn names_and_ids() {
        assert!("API_KEY".parse::<SecretName>().is_ok());
        assert!("db/prod.password".parse::<SecretName>().is_ok());
        assert!("".parse::<SecretName>().is_err());
        assert!("a b".parse::<SecretName>().is_err());
        assert!("x".repeat(129).parse::<SecretName>().is_err());
        assert!("not-a-uuid".parse::<SecretId>().is_err());
        let id = SecretId::new();
        assert_eq!(id.to_string().parse::<SecretId>().unwrap(), id);
        assert!("workspace".parse::<ScopeType>().is_ok());
        assert!("Global".parse::<ScopeType>().is_err());
    }
}
