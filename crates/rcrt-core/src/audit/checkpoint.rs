//! Signed checkpoints of the audit chain's heads, and the Ed25519 key that signs them.
//!
//! A checkpoint states every lane's head (seq and link hash) at one time, signed. Rows up to a
//! checkpoint cannot be changed, removed or re-chained without its signature or its heads
//! failing to match; removing rows from the tail is caught because the signed head names a row
//! that is no longer there.
//!
//! The signing key's 32-byte seed is wrapped by the KEK provider like a DEK (the wrap context
//! names a pseudo-row: the key id's 16 hex digits as the "secret id" and version 0, which no
//! real row has), so only someone holding the KEK can sign or authenticate the public key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcrt_crypto::{Dek, KekId, WrapContext, WrappedDek};
use rcrt_keys::KeyProvider;
use rcrt_store::{AuditCheckpoint, AuditSigningKey, ChainHead, Store};
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, TenantId};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::{Clock, CoreError};

/// The domain separator at the start of every checkpoint's signed bytes.
pub const CHECKPOINT_DOMAIN: &[u8] = b"rcrt-audit-checkpoint-v1\0";

/// The lease one replica holds while it writes checkpoints.
pub const CHECKPOINT_LEASE: &str = "audit-checkpoint";

/// The bytes a checkpoint's signature covers:
/// `"rcrt-audit-checkpoint-v1\0" || created_at micros:i64be || len(key_id):u32be || key_id ||
/// for each head: lane:i32be || seq:i64be || hash`.
pub fn checkpoint_bytes(created_at: OffsetDateTime, key_id: &str, heads: &[ChainHead]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 12 + key_id.len() + heads.len() * 44);
    out.extend_from_slice(CHECKPOINT_DOMAIN);
    out.extend_from_slice(&micros(created_at).to_be_bytes());
    // Key ids are short ASCII fingerprints; saturate rather than wrap.
    let len = u32::try_from(key_id.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key_id.as_bytes());
    for h in heads {
        out.extend_from_slice(&h.lane.to_be_bytes());
        out.extend_from_slice(&h.seq.to_be_bytes());
        out.extend_from_slice(&h.hash);
    }
    out
}

/// Microseconds since the Unix epoch (both stores keep microseconds).
fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(rcrt_store::chain::to_micros(t).unix_timestamp_nanos() / 1_000)
        .unwrap_or(i64::MAX)
}

/// A short public digest of a set of heads: the first 16 hex digits of SHA-256 over
/// `lane || seq || hash` of each. It is logged with every checkpoint and printed by
/// `rcrt audit verify`, so log lines kept elsewhere witness what the chain was.
pub fn heads_digest(heads: &[ChainHead]) -> String {
    let mut bytes = Vec::with_capacity(heads.len() * 44);
    for h in heads {
        bytes.extend_from_slice(&h.lane.to_be_bytes());
        bytes.extend_from_slice(&h.seq.to_be_bytes());
        bytes.extend_from_slice(&h.hash);
    }
    hex::encode(&digest(&SHA256, &bytes).as_ref()[..8])
}

/// A signing key's id: `"ed25519:"` and the first 16 hex digits of SHA-256(public key).
pub fn signing_key_id(public_key: &[u8]) -> String {
    format!(
        "ed25519:{}",
        hex::encode(&digest(&SHA256, public_key).as_ref()[..8])
    )
}

/// Whether `signature` is a valid Ed25519 signature of `checkpoint` under `public_key`.
pub fn verify_checkpoint(public_key: &[u8], checkpoint: &AuditCheckpoint) -> bool {
    let msg = checkpoint_bytes(checkpoint.created_at, &checkpoint.key_id, &checkpoint.heads);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&msg, &checkpoint.signature)
        .is_ok()
}

/// Why a signing key could not be made, unwrapped or used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The OS random source failed.
    #[error("the OS random source failed")]
    Random,
    /// The seed does not form an Ed25519 key (never for 32 bytes; kept for ring's API).
    #[error("the seed does not form an Ed25519 key")]
    BadSeed,
    /// The key's id is not `ed25519:` and 16 hex digits.
    #[error("malformed signing key id {0:?}")]
    BadId(String),
    /// The unwrapped seed's public key is not the stored one.
    #[error("signing key {0}: the stored public key is not the wrapped seed's")]
    PublicKeyMismatch(String),
    /// The KEK provider could not wrap or unwrap the seed.
    #[error("signing key {id}: {error}")]
    Key {
        /// The key's id.
        id: String,
        /// What the provider said (names KEK ids, never key material).
        error: rcrt_keys::KeyError,
    },
}

/// An unwrapped checkpoint signing key (the seed is zeroized when dropped; never printed).
pub struct CheckpointSigner {
    id: String,
    pair: Ed25519KeyPair,
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A new key from the OS random source.
    pub fn generate() -> Result<Self, SigningKeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(&mut seed[..])
            .map_err(|_| SigningKeyError::Random)?;
        Self::from_seed(seed)
    }

    /// The key with this seed.
    pub fn from_seed(seed: Zeroizing<[u8; 32]>) -> Result<Self, SigningKeyError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed[..]).map_err(|_| SigningKeyError::BadSeed)?;
        let id = signing_key_id(pair.public_key().as_ref());
        Ok(Self { id, pair, seed })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its public key (32 bytes).
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Its public key in standard base64 (as logged and as `rcrt audit verify --public-key`
    /// takes it).
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.public_key())
    }

    /// A checkpoint of `heads` made at `created_at`, signed.
    pub fn sign(&self, created_at: OffsetDateTime, heads: Vec<ChainHead>) -> AuditCheckpoint {
        let created_at = rcrt_store::chain::to_micros(created_at);
        let msg = checkpoint_bytes(created_at, &self.id, &heads);
        AuditCheckpoint {
            id: 0,
            created_at,
            key_id: self.id.clone(),
            heads,
            signature: self.pair.sign(&msg).as_ref().to_vec(),
        }
    }

    /// The seed wrapped under the provider's current KEK, as stored.
    pub async fn wrap(
        &self,
        keys: &dyn KeyProvider,
        created_at: OffsetDateTime,
    ) -> Result<AuditSigningKey, SigningKeyError> {
        let kek_id = keys.current_kek_id().clone();
        let row = pseudo_row(&self.id)?;
        let dek = Dek::from_unwrapped(Zeroizing::new(*self.seed));
        let wrapped = keys
            .wrap(
                &dek,
                &WrapContext {
                    kek_id: &kek_id,
                    secret_id: &row,
                    version: 0,
                },
            )
            .await
            .map_err(|error| SigningKeyError::Key {
                id: self.id.clone(),
                error,
            })?;
        Ok(AuditSigningKey {
            id: self.id.clone(),
            public_key: self.public_key().to_vec(),
            kek_id: kek_id.as_str().to_owned(),
            wrapped_key: wrapped.as_bytes().to_vec(),
            created_at: rcrt_store::chain::to_micros(created_at),
        })
    }

    /// Unwraps a stored key with `keys` and checks that its public key is the stored one.
    pub async fn unwrap(
        keys: &dyn KeyProvider,
        stored: &AuditSigningKey,
    ) -> Result<Self, SigningKeyError> {
        let row = pseudo_row(&stored.id)?;
        let kek_id = KekId::from_stored(stored.kek_id.clone());
        let dek = keys
            .unwrap(
                &WrappedDek::from_stored(stored.wrapped_key.clone()),
                &WrapContext {
                    kek_id: &kek_id,
                    secret_id: &row,
                    version: 0,
                },
            )
            .await
            .map_err(|error| SigningKeyError::Key {
                id: stored.id.clone(),
                error,
            })?;
        let signer = Self::from_seed(Zeroizing::new(*dek.expose_secret()))?;
        if signer.id != stored.id || signer.public_key() != stored.public_key.as_slice() {
            return Err(SigningKeyError::PublicKeyMismatch(stored.id.clone()));
        }
        Ok(signer)
    }
}

/// The wrap context's "secret id" for a signing key: the 16 ASCII hex digits of its id. No
/// UUIDv4 secret id has these bytes (its version and variant bits never are ASCII digits or
/// letters), and version 0 is no real row's version.
fn pseudo_row(key_id: &str) -> Result<[u8; 16], SigningKeyError> {
    key_id
        .strip_prefix("ed25519:")
        .filter(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| <[u8; 16]>::try_from(h.as_bytes()).ok())
        .ok_or_else(|| SigningKeyError::BadId(key_id.to_owned()))
}

/// Who the server's own audit rows name: `rcrt-server@<host>`.
pub fn server_actor() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("rcrt-server@{host}")
}

/// The signing key at start-up: the newest stored key the provider can unwrap (re-wrapped
/// under the current KEK if another KEK wraps it), else a new one, stored with an
/// [`AuditAction::AuditKeyCreate`] row in the same transaction. Logs its id and public key.
pub async fn ensure_signing_key(
    store: &dyn Store,
    keys: &dyn KeyProvider,
    clock: &dyn Clock,
) -> Result<CheckpointSigner, CoreError> {
    let stored = store.audit_signing_keys().await?;
    let mut newest = None;
    // Newest first. Every key the provider can open moves to the current KEK, older ones too,
    // so that `rcrt audit verify` with only the current KEK still authenticates the keys of
    // old checkpoints once an old KEK is retired.
    for key in stored.iter().rev() {
        if !keys.can_unwrap(&KekId::from_stored(key.kek_id.clone())) {
            continue;
        }
        let signer = match CheckpointSigner::unwrap(keys, key).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(key_id = %key.id, error = %e, "audit signing key cannot be used; trying an older one");
                continue;
            }
        };
        if key.kek_id != keys.current_kek_id().as_str() {
            let rewrapped = signer
                .wrap(keys, key.created_at)
                .await
                .map_err(|e| CoreError::Internal(e.to_string()))?;
            store.put_audit_signing_key(&rewrapped, None).await?;
            tracing::info!(key_id = %signer.id(), from_kek = %key.kek_id, to_kek = %keys.current_kek_id(), "audit signing key re-wrapped under the current KEK");
        }
        if newest.is_none() {
            newest = Some(signer);
        }
    }
    if let Some(signer) = newest {
        tracing::info!(key_id = %signer.id(), public_key = %signer.public_key_base64(), "audit checkpoint signing key");
        return Ok(signer);
    }
    let signer = CheckpointSigner::generate().map_err(|e| CoreError::Internal(e.to_string()))?;
    let now = clock.now();
    let row = signer
        .wrap(keys, now)
        .await
        .map_err(|e| CoreError::Internal(e.to_string()))?;
    let audit = AuditEntry {
        timestamp: now,
        action: AuditAction::AuditKeyCreate,
        secret_id: None,
        token_id: None,
        tenant: TenantId::default_tenant(),
        user_id: server_actor(),
        reason: Some(format!(
            "audit checkpoint signing key {} (public key {}) wrapped under KEK {}",
            signer.id(),
            signer.public_key_base64(),
            row.kek_id
        )),
        outcome: AuditOutcome::Success,
        // A request id like any request's (the action says what it is).
        request_id: uuid::Uuid::new_v4().to_string(),
        version: None,
    };
    store.put_audit_signing_key(&row, Some(audit)).await?;
    tracing::info!(key_id = %signer.id(), public_key = %signer.public_key_base64(), "audit checkpoint signing key created");
    Ok(signer)
}

/// How the checkpoint job runs.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointSettings {
    /// How often a checkpoint is considered (written only when the heads moved).
    pub interval: Duration,
    /// How long the lease lasts without renewal.
    pub lease_ttl: Duration,
}

impl CheckpointSettings {
    /// Checkpoints every `interval`, with a lease that outlives a few missed ticks.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            lease_ttl: (interval * 3).max(Duration::from_secs(10)),
        }
    }
}

/// Writes signed checkpoints while this replica holds the `audit-checkpoint` lease.
pub struct CheckpointJob {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    signer: CheckpointSigner,
    settings: CheckpointSettings,
    holder: String,
    last: Mutex<Option<Vec<ChainHead>>>,
}

impl CheckpointJob {
    /// A job signing with `signer`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        signer: CheckpointSigner,
        settings: CheckpointSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            signer,
            settings,
            holder: uuid::Uuid::new_v4().to_string(),
            last: Mutex::new(None),
        })
    }

    /// The key it signs with.
    pub fn signer(&self) -> &CheckpointSigner {
        &self.signer
    }

    /// One tick: with the lease, reads the heads and, when they moved since the last
    /// checkpoint, signs and stores one (returned) and logs its id and heads digest.
    pub async fn tick(&self) -> Result<Option<AuditCheckpoint>, CoreError> {
        let now = self.clock.now();
        if !self
            .store
            .try_lease(CHECKPOINT_LEASE, &self.holder, now, self.settings.lease_ttl)
            .await?
        {
            return Ok(None);
        }
        let heads = self.store.audit_heads().await?;
        // The first tick of a process signs whatever the heads are (one checkpoint per start)
        // rather than read the stored checkpoints back: they grow without bound.
        let known = self.last.lock().ok().and_then(|l| l.clone());
        if known.as_ref() == Some(&heads) {
            return Ok(None);
        }
        let checkpoint = self.signer.sign(now, heads.clone());
        self.store.insert_audit_checkpoint(&checkpoint).await?;
        let rows: i64 = heads.iter().map(|h| h.seq).sum();
        tracing::info!(
            key_id = %checkpoint.key_id,
            created_at = %checkpoint.created_at,
            heads_digest = %heads_digest(&heads),
            chained_rows = rows,
            "audit checkpoint"
        );
        if let Ok(mut last) = self.last.lock() {
            *last = Some(heads);
        }
        Ok(Some(checkpoint))
    }

    /// Starts the loop on the current tokio runtime.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let job = self.clone();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(job.settings.interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                if let Err(e) = job.tick().await {
                    tracing::error!(error = %e, "audit checkpoint failed; retrying at the next interval");
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn heads() -> Vec<ChainHead> {
        vec![
            ChainHead {
                lane: 0,
                seq: 3,
                hash: [7; 32],
            },
            ChainHead {
                lane: 1,
                seq: 0,
                hash: [0; 32],
            },
        ]
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let signer = CheckpointSigner::generate().unwrap();
        let cp = signer.sign(OffsetDateTime::now_utc(), heads());
        assert!(verify_checkpoint(signer.public_key(), &cp));
        assert!(signer.id().starts_with("ed25519:") && signer.id().len() == 24);

        let mut later = cp.clone();
        later.heads[0].seq = 2;
        assert!(!verify_checkpoint(signer.public_key(), &later));
        let mut moved = cp.clone();
        moved.created_at += time::Duration::microseconds(1);
        assert!(!verify_checkpoint(signer.public_key(), &moved));
        let mut rekeyed = cp.clone();
        rekeyed.key_id = "ed25519:0000000000000000".into();
        assert!(!verify_checkpoint(signer.public_key(), &rekeyed));
        let other = CheckpointSigner::generate().unwrap();
        assert!(!verify_checkpoint(other.public_key(), &cp));
    }

    #[test]
    fn the_same_seed_gives_the_same_key() {
        let a = CheckpointSigner::from_seed(Zeroizing::new([9; 32])).unwrap();
        let b = CheckpointSigner::from_seed(Zeroizing::new([9; 32])).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.id(), signing_key_id(b.public_key()));
        assert!(!format!("{a:?}").contains("seed"));
    }

    #[test]
    fn the_canonical_bytes_are_fixed() {
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::microseconds(1);
        let b = checkpoint_bytes(t, "k", &heads()[..1]);
        let mut want = CHECKPOINT_DOMAIN.to_vec();
        want.extend_from_slice(&1i64.to_be_bytes());
        want.extend_from_slice(&1u32.to_be_bytes());
        want.push(b'k');
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&3i64.to_be_bytes());
        want.extend_from_slice(&[7; 32]);
        assert_eq!(b, want);
        assert_ne!(heads_digest(&heads()), heads_digest(&heads()[..1]));
    }

    #[tokio::test]
    async fn a_wrapped_key_unwraps_only_under_its_kek_and_row() {
        use rcrt_crypto::Kek;
        use rcrt_keys::LocalKeyring;
        let kek = |b| Kek::from_bytes(Zeroizing::new([b; 32]));
        let ring = LocalKeyring::new(kek(1), vec![]);
        let signer = CheckpointSigner::generate().unwrap();
        let stored = signer.wrap(&ring, OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(stored.kek_id, ring.current_kek_id().as_str());
        let back = CheckpointSigner::unwrap(&ring, &stored).await.unwrap();
        assert_eq!(back.public_key(), signer.public_key());

        let wrong = LocalKeyring::new(kek(2), vec![]);
        assert!(CheckpointSigner::unwrap(&wrong, &stored).await.is_err());
        // A stored public key that is not the seed's (someone swapped it) is refused.
        let mut swapped = stored.clone();
        swapped.public_key = CheckpointSigner::generate().unwrap().public_key().to_vec();
        assert!(matches!(
            CheckpointSigner::unwrap(&ring, &swapped).await,
            Err(SigningKeyError::PublicKeyMismatch(_))
        ));
        // The wrap is bound to the key id (the pseudo-row).
        let other = CheckpointSigner::generate().unwrap();
        let mut moved = stored.clone();
        moved.id = other.id().to_owned();
        assert!(CheckpointSigner::unwrap(&ring, &moved).await.is_err());
    }
}
