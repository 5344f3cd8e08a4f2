//! PKCS#11: a non-extractable AES-256 key on a token (an HSM, SoftHSM2).
//!
//! The key is found by its label (`KEK_REF`) on the token labelled `PKCS11_TOKEN_LABEL`, in the
//! module `PKCS11_MODULE`, after logging in with the user PIN read from `PKCS11_PIN_FILE`. It
//! must be an AES-256 secret key with `CKA_SENSITIVE` true (a key whose value can be read in the
//! clear is refused); a key with `CKA_EXTRACTABLE` true is used, with a warning.
//!
//! A wrap is one `C_Encrypt` with CKM_AES_GCM (a fresh random 96-bit IV, a 128-bit tag, the
//! row's associated data); the stored bytes are `0x01 | 0x10 | iv (12) | ciphertext (32) |
//! tag (16)`. PKCS#11 calls block, so they run on tokio's blocking threads, each on one of at
//! most `PKCS11_SESSIONS` (default 4) logged-in sessions kept in a pool, so concurrent requests
//! do not queue behind one session.
//!
//! Failures: a tag or associated-data mismatch (SoftHSM2 reports it as `CKR_GENERAL_ERROR`,
//! other tokens as `CKR_ENCRYPTED_DATA_INVALID` or `CKR_AEAD_DECRYPT_FAILED`) is a decrypt
//! failure; a failed session, device or token is [`KeyError::Unavailable`], and every pooled
//! session opened before it is dropped, so a later call opens and logs in fresh sessions (the
//! pool heals without a restart). When a fresh session cannot be opened either, the module is
//! re-initialised (`C_Finalize`, `C_Initialize`; at most once a second, after the calls in
//! progress on it have returned): some modules, SoftHSM2 among them, only see a token whose
//! files or device went away again after that. A refused PIN, a missing key or a key not fit
//! for use is [`KeyError::Refused`] (and a [`KeyError::Config`] error at start).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rcrt_crypto::{CryptoError, Dek, KekId, WrapContext, WrappedDek};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::settings::{read_secret_file, Pkcs11Settings};
use crate::{alg, remote_kek_id, KekBackend, KeyError, ProviderKind};

/// The wrapped-DEK header of this provider: format version 1, CKM_AES_GCM.
const HEADER: [u8; 2] = [0x01, alg::PKCS11_AES_GCM];
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
const DEK_LEN: usize = 32;
/// Header, IV, the encrypted DEK and the tag.
const WRAPPED_LEN: usize = HEADER.len() + IV_LEN + DEK_LEN + 16;
/// Logged-in sessions kept open when `PKCS11_SESSIONS` is not set.
pub const DEFAULT_SESSIONS: usize = 4;
/// `CKR_AEAD_DECRYPT_FAILED` (PKCS#11 3.0), which `cryptoki` has no name for.
const CKR_AEAD_DECRYPT_FAILED: u64 = 0x42;
/// The least time between two re-initialisations of a module.
const REINIT_INTERVAL: Duration = Duration::from_secs(1);

/// A KEK on a PKCS#11 token.
pub struct Pkcs11Kek {
    id: KekId,
    pool: Arc<Pool>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("id", &self.id)
            .field("token", &self.pool.token_label)
            .field("key", &self.pool.key_label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Kek {
    /// Loads the module, logs in to the token, finds the key labelled `label` and checks that it
    /// is a sensitive AES-256 key that can wrap and unwrap. Every failure is a
    /// [`KeyError::Config`] naming the module, token or key, never the PIN.
    pub async fn connect(label: &str, settings: &Pkcs11Settings) -> Result<Self, KeyError> {
        let module = settings.module.as_deref().ok_or_else(|| {
            KeyError::Config(
                "KEK_PROVIDER=pkcs11 needs PKCS11_MODULE (the module's .so path)".into(),
            )
        })?;
        let token_label = settings
            .token_label
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| KeyError::Config("KEK_PROVIDER=pkcs11 needs PKCS11_TOKEN_LABEL".into()))?
            .to_owned();
        let pin_file = settings.pin_file.as_deref().ok_or_else(|| {
            KeyError::Config(
                "KEK_PROVIDER=pkcs11 needs PKCS11_PIN_FILE (a file holding the user PIN)".into(),
            )
        })?;
        let key_label = label.trim().to_owned();
        if key_label.is_empty() {
            return Err(KeyError::Config(
                "KEK_PROVIDER=pkcs11 needs KEK_REF, the label of the AES-256 key on the token"
                    .into(),
            ));
        }
        let sessions = settings.sessions.unwrap_or(DEFAULT_SESSIONS);
        if sessions == 0 {
            return Err(KeyError::Config(
                "PKCS11_SESSIONS must be at least 1".into(),
            ));
        }
        let pin = {
            let text = read_secret_file("PKCS11_PIN_FILE", pin_file)?;
            AuthPin::from(text.as_str())
        };
        let id = remote_kek_id(ProviderKind::Pkcs11, &format!("{token_label}/{key_label}"));
        let module = module.to_owned();
        let setup = tokio::task::spawn_blocking(move || {
            let module = Module::load(&module)?;
            let pool = Pool {
                kek_id: id,
                module,
                token_label,
                key_label,
                pin,
                idle: Mutex::new(Vec::new()),
                generation: AtomicU64::new(0),
            };
            let gate = pool.module.enter();
            let first = pool.open().map_err(|f| pool.config_error(f))?;
            if first.extractable {
                tracing::warn!(
                    token = %pool.token_label,
                    key = %pool.key_label,
                    "the PKCS#11 KEK has CKA_EXTRACTABLE set: it can be wrapped out of the token; \
                     make KEKs with CKA_EXTRACTABLE false (pkcs11-tool --keygen without --extractable)"
                );
            }
            pool.give_back(first);
            drop(gate);
            Ok::<_, KeyError>(pool)
        })
        .await
        .map_err(|e| KeyError::Config(format!("PKCS#11 set-up did not finish: {e}")))??;
        let kek = Self {
            id: setup.kek_id.clone(),
            pool: Arc::new(setup),
            permits: Arc::new(Semaphore::new(sessions)),
        };
        crate::probe_by_round_trip(&kek).await.map_err(|e| {
            KeyError::Config(format!(
                "{} cannot wrap and unwrap with CKM_AES_GCM: {e}",
                kek.describe()
            ))
        })?;
        Ok(kek)
    }

    /// Runs `f` on a pooled session (opening and logging in one if none is idle) on a blocking
    /// thread, holding one of the pool's permits until it returns.
    async fn call<T, F>(&self, f: F) -> Result<T, KeyError>
    where
        T: Send + 'static,
        F: FnOnce(&Session, ObjectHandle) -> Result<T, Fail> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.pool.unavailable("the session pool is closed".into()))?;
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pool.run(f)
        })
        .await
        .map_err(|e| {
            self.pool
                .unavailable(format!("the PKCS#11 call did not finish: {e}"))
        })?
    }
}

#[async_trait]
impl KekBackend for Pkcs11Kek {
    fn id(&self) -> &KekId {
        &self.id
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::Pkcs11
    }

    fn describe(&self) -> String {
        format!(
            "PKCS#11 key {:?} on token {:?}",
            self.pool.key_label, self.pool.token_label
        )
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        if ctx.kek_id != &self.id {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        let aad = ctx.encode(&HEADER);
        let iv: [u8; IV_LEN] = rand::random();
        let plain = Zeroizing::new(*dek.expose_secret());
        let sealed = self
            .call(move |session, key| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(Fail::Ck)?;
                session
                    .encrypt(&Mechanism::AesGcm(params), key, &plain[..])
                    .map_err(Fail::Ck)
            })
            .await?;
        if sealed.len() != DEK_LEN + 16 {
            return Err(KeyError::Crypto(CryptoError::Encrypt));
        }
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&HEADER);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(WrappedDek::from_stored(out))
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        if ctx.kek_id != &self.id {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        let bytes = wrapped.as_bytes();
        if bytes.len() != WRAPPED_LEN {
            return Err(KeyError::Crypto(CryptoError::Format(
                "PKCS#11 wrapped DEK has the wrong length",
            )));
        }
        let (header, rest) = bytes.split_at(HEADER.len());
        if header != HEADER {
            return Err(KeyError::Crypto(CryptoError::Format(
                "not a PKCS#11 AES-GCM wrapped DEK",
            )));
        }
        let (iv, sealed) = rest.split_at(IV_LEN);
        let mut iv_buf = [0u8; IV_LEN];
        iv_buf.copy_from_slice(iv);
        let sealed = sealed.to_vec();
        let aad = ctx.encode(&HEADER);
        let plain = self
            .call(move |session, key| {
                let mut iv = iv_buf;
                let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(Fail::Ck)?;
                session
                    .decrypt(&Mechanism::AesGcm(params), key, &sealed)
                    .map(Zeroizing::new)
                    .map_err(Fail::Decrypt)
            })
            .await?;
        let mut dek = Zeroizing::new([0u8; DEK_LEN]);
        if plain.len() != DEK_LEN {
            return Err(KeyError::Crypto(CryptoError::Decrypt));
        }
        dek.copy_from_slice(&plain);
        Ok(Dek::from_unwrapped(dek))
    }
}

/// A loaded module, shared by every KEK on it in this process (a module is initialised once
/// per process; the current, old and recovery KEKs may share one).
struct Module {
    path: PathBuf,
    ctx: Pkcs11,
    /// Held shared by every use of `ctx`, exclusively to re-initialise it.
    gate: RwLock<()>,
    /// Bumped by each re-initialisation: sessions opened before it went with it.
    epoch: AtomicU64,
    last_reinit: Mutex<Option<Instant>>,
}

impl Module {
    fn load(module: &Path) -> Result<Arc<Module>, KeyError> {
        static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
        let path = std::fs::canonicalize(module).map_err(|e| {
            KeyError::Config(format!(
                "PKCS11_MODULE {} cannot be used: {e}",
                module.display()
            ))
        })?;
        let mut modules = MODULES
            .get_or_init(Default::default)
            .lock()
            // A poisoned lock only means a panic while inserting into the map; it is intact.
            .unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(&path) {
            return Ok(m.clone());
        }
        let ctx = Pkcs11::new(&path).map_err(|e| {
            KeyError::Config(format!(
                "cannot load the PKCS#11 module {} (PKCS11_MODULE): {e}",
                path.display()
            ))
        })?;
        initialize(&ctx).map_err(|e| {
            KeyError::Config(format!(
                "the PKCS#11 module {} failed to initialise: {}",
                path.display(),
                ck_reason(&e)
            ))
        })?;
        let m = Arc::new(Module {
            path: path.clone(),
            ctx,
            gate: RwLock::new(()),
            epoch: AtomicU64::new(0),
            last_reinit: Mutex::new(None),
        });
        modules.insert(path, m.clone());
        Ok(m)
    }

    /// Shared use of the module (no re-initialisation until it is dropped).
    fn enter(&self) -> RwLockReadGuard<'_, ()> {
        // The gate guards no data; a poisoned one is as good as any.
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Finalises and initialises the module again, unless someone did since `seen_epoch` or
    /// did less than [`REINIT_INTERVAL`] ago. Waits for every call in progress to return.
    fn reinitialize(&self, seen_epoch: u64) {
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if self.epoch() != seen_epoch {
            return;
        }
        let mut last = self.last_reinit.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < REINIT_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        // Every session of every KEK on the module ends here; their pools see the new epoch
        // and open new ones (without closing the old handles, which may be reused).
        if let Err(e) = self.ctx.clone().finalize() {
            tracing::debug!(error = %ck_reason(&e), "C_Finalize before re-initialising");
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match initialize(&self.ctx) {
            Ok(()) => tracing::warn!(
                module = %self.path.display(),
                "PKCS#11 module re-initialised after a token failure"
            ),
            Err(e) => tracing::warn!(
                module = %self.path.display(),
                error = %ck_reason(&e),
                "PKCS#11 module could not be re-initialised; trying again on a later call"
            ),
        }
    }
}

fn initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why a call on the token failed, before it is classified.
enum Fail {
    /// A PKCS#11 call failed.
    Ck(CkError),
    /// `C_Decrypt` failed (maybe the tag: see [`Pool::runtime_error`]).
    Decrypt(CkError),
    /// No token has the label.
    NoToken,
    /// No secret key has the label.
    NoKey,
    /// Several secret keys have the label.
    SeveralKeys(usize),
    /// The key is not fit to be a KEK.
    BadKey(&'static str),
}

impl Fail {
    /// True when the token (or the module) itself seems gone, not just one session: only a
    /// re-initialisation may bring it back.
    fn token_gone(&self) -> bool {
        match self {
            Fail::NoToken => true,
            Fail::Ck(CkError::Pkcs11(rv, _)) => matches!(
                rv,
                RvError::GeneralError
                    | RvError::DeviceError
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::SlotIdInvalid
                    | RvError::CryptokiNotInitialized
            ),
            _ => false,
        }
    }
}

/// A logged-in session and the key's handle in it. Its handle is closed only by
/// [`Pool::retire`]: after a re-initialisation the number may belong to another session.
struct Pooled {
    session: Session,
    key: ObjectHandle,
    /// The pool's generation when it was opened: a failure since then retires it.
    generation: u64,
    /// The module's epoch when it was opened: a re-initialisation ended it.
    epoch: u64,
    extractable: bool,
}

struct Pool {
    kek_id: KekId,
    module: Arc<Module>,
    token_label: String,
    key_label: String,
    pin: AuthPin,
    idle: Mutex<Vec<Pooled>>,
    /// Bumped by every failure of a session, device or token: sessions of an older generation
    /// are closed instead of reused.
    generation: AtomicU64,
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        // A poisoned lock only means a panic while pushing or popping; the list is intact.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_current(&self, p: &Pooled) -> bool {
        p.generation == self.generation.load(Ordering::Acquire) && p.epoch == self.module.epoch()
    }

    /// Closes a session that is still the module's; forgets one a re-initialisation ended.
    /// Call with the module entered.
    fn retire(&self, p: Pooled) {
        if p.epoch == self.module.epoch() {
            if let Err(e) = p.session.close() {
                tracing::debug!(error = %ck_reason(&e), "closing a retired PKCS#11 session");
            }
        }
    }

    /// An idle current session, or a new one. Call with the module entered.
    fn take(&self) -> Result<Pooled, Fail> {
        let (found, stale) = {
            let mut idle = self.idle();
            let (keep, stale): (Vec<Pooled>, Vec<Pooled>) =
                idle.drain(..).partition(|p| self.is_current(p));
            *idle = keep;
            (idle.pop(), stale)
        };
        // Closed outside the lock (C_CloseSession on a failed token may be slow).
        for p in stale {
            self.retire(p);
        }
        match found {
            Some(p) => Ok(p),
            None => self.open(),
        }
    }

    /// Keeps a session for the next call, or retires it if it is no longer current. Call with
    /// the module entered.
    fn give_back(&self, pooled: Pooled) {
        if self.is_current(&pooled) {
            self.idle().push(pooled);
        } else {
            self.retire(pooled);
        }
    }

    /// Finds the token, opens a session, logs in (once per token for the whole process: later
    /// sessions share the login) and finds the key.
    /// Call with the module entered.
    fn open(&self) -> Result<Pooled, Fail> {
        let generation = self.generation.load(Ordering::Acquire);
        let epoch = self.module.epoch();
        let slot = self.find_slot()?;
        let session = self
            .module
            .ctx
            .open_ro_session_no_drop(slot)
            .map_err(Fail::Ck)?;
        let checked = match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                self.find_key(&session)
            }
            Err(e) => Err(Fail::Ck(e)),
        };
        match checked {
            Ok((key, extractable)) => Ok(Pooled {
                session,
                key,
                generation,
                epoch,
                extractable,
            }),
            Err(fail) => {
                if let Err(e) = session.close() {
                    tracing::debug!(error = %ck_reason(&e), "closing a PKCS#11 session");
                }
                Err(fail)
            }
        }
    }

    /// The slot holding the token. A slot whose token cannot describe itself (a failed token
    /// of another label, or this one) is passed over.
    fn find_slot(&self) -> Result<Slot, Fail> {
        let ctx = &self.module.ctx;
        for slot in ctx.get_slots_with_token().map_err(Fail::Ck)? {
            match ctx.get_token_info(slot) {
                Ok(info) if info.label().trim_end() == self.token_label => return Ok(slot),
                _ => {}
            }
        }
        Err(Fail::NoToken)
    }

    /// The one secret key with the label, checked to be a sensitive AES-256 key for encrypt and
    /// decrypt; and whether it is extractable.
    fn find_key(&self, session: &Session) -> Result<(ObjectHandle, bool), Fail> {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(self.key_label.as_bytes().to_vec()),
            ])
            .map_err(Fail::Ck)?;
        let key = match found.as_slice() {
            [] => return Err(Fail::NoKey),
            [key] => *key,
            several => return Err(Fail::SeveralKeys(several.len())),
        };
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::ValueLen,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                ],
            )
            .map_err(Fail::Ck)?;
        let (mut aes, mut len, mut sensitive, mut extractable, mut encrypt, mut decrypt) =
            (false, 0usize, false, true, false, false);
        for attr in attrs {
            match attr {
                Attribute::KeyType(t) => aes = t == KeyType::AES,
                Attribute::ValueLen(l) => len = l.into(),
                Attribute::Sensitive(b) => sensitive = b,
                Attribute::Extractable(b) => extractable = b,
                Attribute::Encrypt(b) => encrypt = b,
                Attribute::Decrypt(b) => decrypt = b,
                _ => {}
            }
        }
        if !aes || len != DEK_LEN {
            return Err(Fail::BadKey("is not an AES-256 key"));
        }
        if !sensitive {
            return Err(Fail::BadKey(
                "has CKA_SENSITIVE false (its value can be read off the token); make the KEK with pkcs11-tool --keygen --sensitive",
            ));
        }
        if !encrypt || !decrypt {
            return Err(Fail::BadKey(
                "does not allow encrypt and decrypt (CKA_ENCRYPT and CKA_DECRYPT must be true)",
            ));
        }
        Ok((key, extractable))
    }

    /// Runs `f` on a session; a session that failed with its device or token is dropped and
    /// retires every session opened before it; when no new session can be opened either because
    /// the token seems gone, the module is re-initialised for the next call.
    fn run<T>(
        &self,
        f: impl FnOnce(&Session, ObjectHandle) -> Result<T, Fail>,
    ) -> Result<T, KeyError> {
        let gate = self.module.enter();
        let epoch = self.module.epoch();
        let pooled = match self.take() {
            Ok(p) => p,
            Err(fail) => {
                let reinit = fail.token_gone();
                let err = self.runtime_error(fail, None);
                drop(gate);
                if matches!(err, KeyError::Unavailable { .. }) {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    if reinit {
                        self.module.reinitialize(epoch);
                    }
                }
                return Err(err);
            }
        };
        match f(&pooled.session, pooled.key) {
            Ok(v) => {
                self.give_back(pooled);
                Ok(v)
            }
            Err(fail) => {
                let err = self.runtime_error(fail, Some(&pooled.session));
                if matches!(err, KeyError::Unavailable { .. }) {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    tracing::warn!(
                        kek_id = %self.kek_id,
                        error = %err,
                        "PKCS#11 session dropped; new sessions will be opened and logged in"
                    );
                }
                self.give_back(pooled);
                Err(err)
            }
        }
    }

    fn unavailable(&self, reason: String) -> KeyError {
        KeyError::Unavailable {
            kek_id: self.kek_id.clone(),
            provider: ProviderKind::Pkcs11,
            reason,
        }
    }

    fn refused(&self, reason: String) -> KeyError {
        KeyError::Refused {
            kek_id: self.kek_id.clone(),
            provider: ProviderKind::Pkcs11,
            reason,
        }
    }

    /// Classifies a failure while serving: see the module docs.
    fn runtime_error(&self, fail: Fail, session: Option<&Session>) -> KeyError {
        match fail {
            Fail::Decrypt(e) if is_tag_mismatch(&e) => {
                // A tag or AAD mismatch leaves the session usable; a session that is no longer
                // means the device failed during the call, which is not the data's fault.
                match session.map(Session::get_session_info) {
                    Some(Err(e)) => self.unavailable(ck_reason(&e)),
                    _ => KeyError::Crypto(CryptoError::Decrypt),
                }
            }
            Fail::Decrypt(e) | Fail::Ck(e) => match &e {
                CkError::Pkcs11(rv, _) if is_refusal(rv) => self.refused(ck_reason(&e)),
                _ => self.unavailable(ck_reason(&e)),
            },
            Fail::NoToken => self.unavailable(format!(
                "no token labelled {:?} is present",
                self.token_label
            )),
            Fail::NoKey | Fail::SeveralKeys(_) | Fail::BadKey(_) => {
                self.refused(self.key_problem(&fail))
            }
        }
    }

    /// Classifies a failure at start: always a set-up error, naming what to fix.
    fn config_error(&self, fail: Fail) -> KeyError {
        let token = &self.token_label;
        KeyError::Config(match fail {
            Fail::NoToken => {
                let ctx = &self.module.ctx;
                let labels: Vec<String> = ctx
                    .get_slots_with_token()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| ctx.get_token_info(s).ok())
                    .map(|i| format!("{:?}", i.label().trim_end()))
                    .collect();
                format!(
                    "no PKCS#11 token is labelled {token:?} (PKCS11_TOKEN_LABEL); tokens present: {}",
                    if labels.is_empty() { "none".to_owned() } else { labels.join(", ") }
                )
            }
            Fail::Ck(CkError::Pkcs11(
                rv @ (RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::UserPinNotInitialized),
                Function::Login,
            )) => format!(
                "PKCS#11 token {token:?} refused the user PIN from PKCS11_PIN_FILE ({})",
                rv_name(&rv)
            ),
            Fail::Ck(e) | Fail::Decrypt(e) => {
                format!("PKCS#11 token {token:?}: {}", ck_reason(&e))
            }
            other @ (Fail::NoKey | Fail::SeveralKeys(_) | Fail::BadKey(_)) => {
                self.key_problem(&other)
            }
        })
    }

    fn key_problem(&self, fail: &Fail) -> String {
        let (key, token) = (&self.key_label, &self.token_label);
        match fail {
            Fail::NoKey => format!(
                "PKCS#11 token {token:?} has no secret key labelled {key:?} (KEK_REF) visible to the user"
            ),
            Fail::SeveralKeys(n) => format!(
                "PKCS#11 token {token:?} has {n} secret keys labelled {key:?} (KEK_REF); the label must name exactly one"
            ),
            Fail::BadKey(why) => format!("PKCS#11 key {key:?} on token {token:?} {why}"),
            Fail::NoToken | Fail::Ck(_) | Fail::Decrypt(_) => String::new(),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _gate = self.module.enter();
        let idle: Vec<Pooled> = self.idle().drain(..).collect();
        for p in idle {
            self.retire(p);
        }
    }
}

/// Return values with which a token rejects a ciphertext, its tag or its associated data.
fn is_tag_mismatch(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::GeneralError | RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            Function::Decrypt
        )
    ) || matches!(e, CkError::Pkcs11(RvError::UnknownErrorCode(code), Function::Decrypt) if *code == CKR_AEAD_DECRYPT_FAILED)
}

/// Return values that retrying will not fix: the PIN, or a key not allowed to do this.
fn is_refusal(rv: &RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::UserPinNotInitialized
            | RvError::KeyFunctionNotPermitted
            | RvError::KeyTypeInconsistent
            | RvError::KeySizeRange
            | RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported
    )
}

/// `CKR_`-style name of a return value (cryptoki's `Display` is a paragraph of the spec).
fn rv_name(rv: &RvError) -> String {
    format!("{rv:?}")
}

/// A short reason for a PKCS#11 failure, safe to log (no PIN, no key bytes).
fn ck_reason(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?} returned {}", rv_name(rv)),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_decrypt_that_rejects_the_ciphertext_is_a_tag_mismatch() {
        let decrypt = |rv| CkError::Pkcs11(rv, Function::Decrypt);
        assert!(is_tag_mismatch(&decrypt(RvError::GeneralError)));
        assert!(is_tag_mismatch(&decrypt(RvError::EncryptedDataInvalid)));
        assert!(is_tag_mismatch(&decrypt(RvError::UnknownErrorCode(
            CKR_AEAD_DECRYPT_FAILED
        ))));
        for rv in [
            RvError::SessionHandleInvalid,
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
            RvError::FunctionFailed,
        ] {
            assert!(!is_tag_mismatch(&decrypt(rv)));
        }
        assert!(!is_tag_mismatch(&CkError::Pkcs11(
            RvError::GeneralError,
            Function::DecryptInit
        )));
        assert!(is_refusal(&RvError::PinLocked));
        assert!(is_refusal(&RvError::KeyFunctionNotPermitted));
        assert!(!is_refusal(&RvError::DeviceError));
        assert!(!is_refusal(&RvError::UserNotLoggedIn));
    }

    #[test]
    fn reasons_are_short() {
        let e = CkError::Pkcs11(RvError::SessionHandleInvalid, Function::Decrypt);
        assert_eq!(ck_reason(&e), "C_Decrypt returned SessionHandleInvalid");
    }
}
