use rcrt_store::StoreError;
use rcrt_types::Version;

/// Why a service operation failed. The HTTP layer maps each variant to one status and code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The request is malformed or breaks a rule; the message says which (no secret in it).
    #[error("{0}")]
    Invalid(String),
    /// A decrypt came without a reason.
    #[error(
        "a non-empty access reason is required (body field \"reason\" or header X-Access-Reason)"
    )]
    ReasonRequired,
    /// A vault read came without a reason. It is a GET, which has no body: the reason travels
    /// in a header.
    #[error("a non-empty access reason is required (header X-Access-Reason)")]
    VaultReasonRequired,
    /// The caller lacks the role for this operation (on a specific secret the answer is
    /// [`CoreError::NotFound`] instead, so existence is not revealed).
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// No such secret (or not visible to the caller).
    #[error("secret not found")]
    NotFound,
    /// No such vault (or not visible to the caller).
    #[error("vault not found")]
    VaultNotFound,
    /// The vault has no such key.
    #[error("vault key not found")]
    VaultKeyNotFound,
    /// No such token in the caller's tenant (or not one the caller may manage).
    #[error("token not found")]
    TokenNotFound,
    /// The name is already used in this scope.
    #[error("a secret with this name already exists in this scope")]
    NameTaken,
    /// The vault name is already used in this workspace (or one of the new vault's keys clashes
    /// with a workspace secret already named `<vault>/<KEY>`).
    #[error("a vault with this name already exists in this workspace (or a secret there already has a name `<vault>/<KEY>` this vault would use)")]
    VaultNameTaken,
    /// A vault name matches vaults in several workspaces and no workspace was given: the
    /// request is well formed, the state makes it ambiguous.
    #[error("several vaults have this name: use the vault id or ?workspace=")]
    AmbiguousVault,
    /// `If-Match` named a version that is no longer current.
    #[error("version {expected} is not current (current is {current})")]
    VersionMismatch {
        /// The version the caller expected.
        expected: Version,
        /// The current version.
        current: Version,
    },
    /// A value is empty and the request did not allow it: an empty value is most often an unset
    /// variable piped in by mistake, so storing one takes `"allow_empty": true`.
    #[error("{} is empty; to store an empty value on purpose, send \"allow_empty\": true in the request body", match key { Some(k) => format!("the value of vault key `{k}`"), None => "`value`".to_owned() })]
    EmptyValue {
        /// The vault key whose value is empty (`None` for a secret's `value`).
        key: Option<String>,
    },
    /// The value is larger than the configured limit.
    #[error("value is larger than the limit of {limit} bytes")]
    ValueTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The store could not be reached.
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    /// Stored ciphertext failed to decrypt (tampering or a storage fault); audited and counted.
    #[error("the secret could not be decrypted")]
    DecryptFailed,
    /// A stored DEK is wrapped under a KEK the provider does not hold (for example, the store
    /// was re-wrapped offline to a KEK this server was not given). Nothing is wrong with the
    /// data, so this is a 503, not a decrypt failure. KEK ids are public fingerprints.
    #[error("this secret's data key is wrapped under KEK {kek_id}, which this server does not hold (was the store re-wrapped to a new KEK?); configure that KEK (LOCAL_KEK_BASE64, or LOCAL_KEK_BASE64_OLD during a rotation) and restart the server")]
    KekUnavailable {
        /// The id of the KEK that is missing.
        kek_id: String,
    },
    /// The provider holding the KEK could not be used for a wrap or an unwrap: unreachable,
    /// too slow, refusing (no permission, key disabled) or failing fast while its circuit is
    /// open. Nothing is wrong with the stored data and nothing was written: a 503
    /// `kek_unavailable` that clears by itself when the provider answers again. KEK ids and
    /// provider names are public; the provider's own words go to the log, not here.
    #[error("KEK {kek_id} ({provider}) cannot be used right now: its provider could not be reached or refused the operation. The stored data is intact and nothing was changed; retry once the provider answers again")]
    KekProviderUnavailable {
        /// The KEK's id.
        kek_id: String,
        /// Its provider (`pkcs11`, `aws-kms`, ...).
        provider: String,
    },
    /// The store, while running, holds DEKs wrapped under KEKs the provider does not hold
    /// (`/ready`): each entry is an id and its version count.
    #[error("not ready: the store holds data keys wrapped under KEK ids that no configured KEK matches: {}; decrypts of those secrets answer 503 kek_unavailable. Configure those KEKs (LOCAL_KEK_BASE64, or LOCAL_KEK_BASE64_OLD during a rotation) and restart the server", .0.join(", "))]
    KeksUnavailable(Vec<String>),
    /// The store holds DEKs wrapped under KEKs that are not configured.
    #[error("the store holds DEKs wrapped under KEK ids that no configured KEK matches: {}. Configure those KEKs (e.g. LOCAL_KEK_BASE64_OLD during a rotation) or restore the right KEK (from its backup or Shamir shares). A development store with nothing worth keeping can be started afresh instead: remove the database (SQLite: rcrt.db, rcrt.db-wal and rcrt.db-shm), and keep the KEK this time (in .env)", .0.join(", "))]
    UnknownKeks(Vec<String>),
    /// The secret never had the version asked for.
    #[error("this secret has no such version")]
    VersionNotFound,
    /// The version asked for was destroyed (its ciphertext is gone).
    #[error("this version was destroyed")]
    VersionDestroyed,
    /// The current version cannot be destroyed.
    #[error("the current version cannot be destroyed: write a new version or roll back first")]
    CurrentVersion,
    /// The secret's `expires_at` has passed and the deployment does not serve expired secrets.
    #[error(
        "this secret has expired: give it a new value and expiry (PUT, then PATCH expires_at)"
    )]
    Expired,
    /// An `Idempotency-Key` was used before with a different request.
    #[error(
        "this Idempotency-Key was used with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// An internal fault (never caused by input).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken => Self::NameTaken,
            StoreError::Corrupt(m) => Self::Internal(format!("corrupt store data: {m}")),
            other => Self::Unavailable(other),
        }
    }
}
