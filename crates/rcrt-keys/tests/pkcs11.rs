//! The `pkcs11` KEK provider against a real SoftHSM2 token.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process, so every test of this binary shares one
//! token directory ([`hsm`]), with every token and key made before the module is first loaded.
//! Tests that need a token to themselves (a wrong PIN, a token that fails) get their own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{ctx, fresh_dek};
use rcrt_crypto::{CryptoError, WrappedDek};
use rcrt_keys::pkcs11::Pkcs11Kek;
use rcrt_keys::settings::Pkcs11Settings;
use rcrt_keys::{remote_kek_id, KekBackend, KeyError, ProviderKind};
use rcrt_testkit::peers::softhsm::SoftHsm;

/// The main token (`rcrt-test`, key `rcrt-kek`) and its extra keys.
const OTHER_KEY: &str = "other-kek";
const TWIN_KEY: &str = "twin-kek";
const PLAIN_KEY: &str = "not-sensitive-kek";
const EXTRACTABLE_KEY: &str = "extractable-kek";
/// A token only the wrong-PIN test logs in to (a login is shared by all of a process's
/// sessions on a token, so a wrong PIN on a token already logged in would not be tried).
const PIN_TOKEN: &str = "rcrt-pin-test";
/// A token the failure test breaks and restores.
const BREAK_TOKEN: &str = "rcrt-break-test";

fn hsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    SoftHsm::shared(&HSM, |hsm| {
        let token = hsm.token_label().to_owned();
        hsm.keygen(&token, OTHER_KEY, &["--sensitive"]);
        hsm.keygen(&token, TWIN_KEY, &["--sensitive"]);
        hsm.keygen(&token, TWIN_KEY, &["--sensitive"]);
        hsm.keygen(&token, PLAIN_KEY, &[]);
        hsm.keygen(&token, EXTRACTABLE_KEY, &["--sensitive", "--extractable"]);
        hsm.init_token(PIN_TOKEN);
        hsm.keygen(PIN_TOKEN, "rcrt-kek", &["--sensitive"]);
        hsm.init_token(BREAK_TOKEN);
        hsm.keygen(BREAK_TOKEN, "rcrt-kek", &["--sensitive"]);
    })
}

fn settings(token: &str) -> Pkcs11Settings {
    let hsm = hsm();
    Pkcs11Settings {
        module: Some(hsm.module().to_owned()),
        token_label: Some(token.to_owned()),
        pin_file: Some(hsm.pin_file().to_owned()),
        sessions: None,
    }
}

async fn connect(token: &str, key: &str) -> Result<Pkcs11Kek, KeyError> {
    Pkcs11Kek::connect(key, &settings(token)).await
}

async fn main_kek() -> Pkcs11Kek {
    connect(hsm().token_label(), hsm().key_label())
        .await
        .unwrap()
}

fn assert_decrypt_failure<T: std::fmt::Debug>(r: Result<T, KeyError>, what: &str) {
    match r {
        Err(KeyError::Crypto(CryptoError::Decrypt)) => {}
        other => panic!("{what}: expected a decrypt failure, got {other:?}"),
    }
}

#[tokio::test]
async fn wraps_and_unwraps_with_a_stable_id() {
    let kek = main_kek().await;
    let hsm = hsm();
    assert_eq!(
        kek.id(),
        &remote_kek_id(
            ProviderKind::Pkcs11,
            &format!("{}/{}", hsm.token_label(), hsm.key_label())
        )
    );
    assert!(kek.id().as_str().starts_with("pkcs11:"));
    assert_eq!(kek.provider(), ProviderKind::Pkcs11);
    assert!(kek.describe().contains(hsm.key_label()));
    assert!(!kek.describe().contains(hsm.pin()));

    let dek = fresh_dek();
    let sid = [1u8; 16];
    let c = ctx(kek.id(), &sid, 3);
    let w1 = kek.wrap(&dek, &c).await.unwrap();
    let w2 = kek.wrap(&dek, &c).await.unwrap();
    let bytes = w1.as_bytes();
    assert_eq!(bytes.len(), 2 + 12 + 32 + 16);
    assert_eq!(&bytes[..2], &[0x01, rcrt_keys::alg::PKCS11_AES_GCM]);
    assert!(
        !bytes.windows(32).any(|w| w == dek.expose_secret()),
        "the DEK is in the clear"
    );
    assert_ne!(w1, w2, "each wrap draws a fresh IV");
    for w in [&w1, &w2] {
        let back = kek.unwrap(w, &c).await.unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());
    }
    // A second connection to the same key (a restarted server) has the same id and unwraps.
    let again = main_kek().await;
    assert_eq!(again.id(), kek.id());
    let stored = WrappedDek::from_stored(bytes.to_vec());
    assert_eq!(
        again.unwrap(&stored, &c).await.unwrap().expose_secret(),
        dek.expose_secret()
    );
    again.probe().await.unwrap();
}

#[tokio::test]
async fn a_wrap_is_bound_to_its_row_and_key() {
    let kek = main_kek().await;
    let other = connect(hsm().token_label(), OTHER_KEY).await.unwrap();
    assert_ne!(other.id(), kek.id());
    let dek = fresh_dek();
    let (sid, sid2) = ([1u8; 16], [2u8; 16]);
    let wrapped = kek.wrap(&dek, &ctx(kek.id(), &sid, 1)).await.unwrap();

    assert_decrypt_failure(
        kek.unwrap(&wrapped, &ctx(kek.id(), &sid2, 1)).await,
        "another secret id",
    );
    assert_decrypt_failure(
        kek.unwrap(&wrapped, &ctx(kek.id(), &sid, 2)).await,
        "another version",
    );
    // Relabelled with another KEK's id: that KEK cannot open it either.
    assert_decrypt_failure(
        other.unwrap(&wrapped, &ctx(other.id(), &sid, 1)).await,
        "another kek id",
    );
    // Not ours to route: the backend refuses a context naming another KEK.
    assert!(matches!(
        kek.unwrap(&wrapped, &ctx(other.id(), &sid, 1)).await,
        Err(KeyError::UnknownKek(_))
    ));
    assert!(matches!(
        kek.wrap(&dek, &ctx(other.id(), &sid, 1)).await,
        Err(KeyError::UnknownKek(_))
    ));
    // Any altered byte of the IV, ciphertext or tag.
    for i in [2, 13, 14, 45, 46, 61] {
        let mut b = wrapped.as_bytes().to_vec();
        b[i] ^= 0x01;
        assert_decrypt_failure(
            kek.unwrap(&WrappedDek::from_stored(b), &ctx(kek.id(), &sid, 1))
                .await,
            &format!("byte {i} altered"),
        );
    }
    // Another header or length is not ours.
    let mut b = wrapped.as_bytes().to_vec();
    b[1] = rcrt_keys::alg::PKCS11_AES_KWP;
    assert!(matches!(
        kek.unwrap(&WrappedDek::from_stored(b), &ctx(kek.id(), &sid, 1))
            .await,
        Err(KeyError::Crypto(CryptoError::Format(_)))
    ));
    let short = wrapped.as_bytes()[..61].to_vec();
    assert!(matches!(
        kek.unwrap(&WrappedDek::from_stored(short), &ctx(kek.id(), &sid, 1))
            .await,
        Err(KeyError::Crypto(CryptoError::Format(_)))
    ));
    // Failed unwraps leave the sessions usable.
    let back = kek.unwrap(&wrapped, &ctx(kek.id(), &sid, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

fn config_error(r: Result<Pkcs11Kek, KeyError>, what: &str) -> String {
    match r {
        Err(KeyError::Config(msg)) => {
            assert!(!msg.contains(hsm().pin()), "{what}: the PIN is in {msg:?}");
            msg
        }
        Err(other) => panic!("{what}: expected a Config error, got {other:?}"),
        Ok(_) => panic!("{what}: connected"),
    }
}

#[tokio::test]
async fn set_up_errors_are_clear_and_never_hold_the_pin() {
    let hsm = hsm();
    let token = hsm.token_label();

    let msg = config_error(connect(token, "no-such-key").await, "missing key");
    assert!(
        msg.contains("no secret key labelled \"no-such-key\"") && msg.contains(token),
        "{msg}"
    );
    let msg = config_error(connect(token, TWIN_KEY).await, "two keys");
    assert!(msg.contains("2 secret keys labelled"), "{msg}");
    let msg = config_error(connect(token, PLAIN_KEY).await, "not sensitive");
    assert!(msg.contains("CKA_SENSITIVE"), "{msg}");
    let msg = config_error(connect("no-such-token", "rcrt-kek").await, "missing token");
    assert!(
        msg.contains("no PKCS#11 token is labelled \"no-such-token\"") && msg.contains(token),
        "{msg}"
    );
    let mut s = settings(token);
    s.module = Some("/nonexistent/libpkcs11.so".into());
    let msg = config_error(Pkcs11Kek::connect("rcrt-kek", &s).await, "missing module");
    assert!(msg.contains("PKCS11_MODULE"), "{msg}");
    let mut s = settings(token);
    s.pin_file = None;
    let msg = config_error(Pkcs11Kek::connect("rcrt-kek", &s).await, "no PIN file");
    assert!(msg.contains("PKCS11_PIN_FILE"), "{msg}");

    // An extractable (but sensitive) key is used, with a warning.
    connect(token, EXTRACTABLE_KEY).await.unwrap();
}

#[tokio::test]
async fn a_wrong_pin_is_a_clear_error_without_the_pin() {
    let dir = rcrt_testkit::TempDir::new();
    let wrong = "wrong-pin-31337";
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{wrong}\n")).unwrap();
    let mut s = settings(PIN_TOKEN);
    s.pin_file = Some(pin_file);
    let msg = config_error(Pkcs11Kek::connect("rcrt-kek", &s).await, "wrong PIN");
    assert!(!msg.contains(wrong), "{msg}");
    assert!(
        msg.contains("refused the user PIN from PKCS11_PIN_FILE") && msg.contains("PinIncorrect"),
        "{msg}"
    );
    // The right PIN still works (a wrong one does not lock SoftHSM2's token).
    connect(PIN_TOKEN, "rcrt-kek").await.unwrap();
}

#[tokio::test]
async fn concurrent_wraps_and_unwraps_share_the_session_pool() {
    let kek = Arc::new(main_kek().await);
    const TASKS: usize = 32;
    const PER_TASK: usize = 200 / TASKS + 1;
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let kek = kek.clone();
        handles.push(tokio::spawn(async move {
            let mut sid = [0u8; 16];
            sid[0] = t as u8;
            for v in 0..PER_TASK as i64 {
                let dek = fresh_dek();
                let c = ctx(kek.id(), &sid, v);
                let w = kek.wrap(&dek, &c).await.unwrap();
                let back = kek.unwrap(&w, &c).await.unwrap();
                assert_eq!(back.expose_secret(), dek.expose_secret());
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let ops = TASKS * PER_TASK * 2;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "pkcs11: {ops} wraps+unwraps over {TASKS} tasks in {secs:.3} s ({:.0} ops/s)",
        ops as f64 / secs
    );
}

#[tokio::test]
async fn a_failing_token_is_unavailable_and_the_pool_heals() {
    let hsm = hsm();
    let kek = connect(BREAK_TOKEN, "rcrt-kek").await.unwrap();
    let dek = fresh_dek();
    let sid = [7u8; 16];
    let c = ctx(kek.id(), &sid, 1);
    let wrapped = kek.wrap(&dek, &c).await.unwrap();

    hsm.break_token(BREAK_TOKEN);
    // An unwrap first: a token failing under a decrypt must not look like a bad ciphertext.
    let u = kek.unwrap(&wrapped, &c).await;
    let w = kek.wrap(&dek, &c).await;
    let u2 = kek.unwrap(&wrapped, &c).await;
    hsm.restore_token(BREAK_TOKEN);
    for (r, what) in [
        (u.map(|_| ()), "unwrap"),
        (w.map(|_| ()), "wrap"),
        (u2.map(|_| ()), "unwrap again"),
    ] {
        assert!(
            matches!(r, Err(KeyError::Unavailable { .. })),
            "{what} on a broken token: {r:?}"
        );
    }

    // The same backend, no reconnect: the module is re-initialised and fresh sessions are
    // opened and logged in (the keyring's guard retries with backoff the same way).
    let started = Instant::now();
    let back = loop {
        match kek.unwrap(&wrapped, &c).await {
            Ok(dek) => break dek,
            Err(KeyError::Unavailable { .. }) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery after the token came back: {e:?}"),
        }
    };
    assert_eq!(back.expose_secret(), dek.expose_secret());
    let rewrapped = kek.wrap(&dek, &c).await.unwrap();
    assert_eq!(
        kek.unwrap(&rewrapped, &c).await.unwrap().expose_secret(),
        dek.expose_secret()
    );
    kek.probe().await.unwrap();
    // The other tokens' KEKs on the same module carry on after the re-initialisation.
    let main = main_kek().await;
    main.probe().await.unwrap();
}
