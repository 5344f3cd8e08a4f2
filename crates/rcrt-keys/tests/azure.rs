//! The `azure-keyvault` provider against the Key Vault stand-in of `rcrt-testkit`
//! (`peers::azure_standin`): an HTTP server on loopback that follows Key Vault's published REST
//! API 7.4 and the Azure AD client-credentials token endpoint. No real Key Vault runs here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::{call, ctx, fresh_dek, is_decrypt_failure};
use rcrt_crypto::{CryptoError, WrappedDek};
use rcrt_keys::azure::AzureKek;
use rcrt_keys::settings::{AzureSettings, ProviderSettings};
use rcrt_keys::{build_backend, remote_kek_id, KekBackend, KekSpec, KeyError, ProviderKind};
use rcrt_testkit::peers::azure_standin::{AzureStandin, Kty, Outage};
use rcrt_testkit::TempDir;

const KEY: &str = "rcrt-kek";

/// Settings pointing at the stand-in, with `secret` in a file in `dir`.
fn settings(standin: &AzureStandin, dir: &TempDir, secret: &str) -> AzureSettings {
    let file = dir.path().join("client-secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    AzureSettings {
        vault_url: Some(format!("{}/", standin.url())),
        tenant_id: Some(AzureStandin::TENANT_ID.into()),
        client_id: Some(AzureStandin::CLIENT_ID.into()),
        client_secret_file: Some(file),
        authority_host: Some(standin.url()),
    }
}

/// The stand-in with one RSA key, and a backend connected to it.
async fn connected(kty: Kty) -> (AzureStandin, TempDir, AzureKek) {
    let standin = AzureStandin::start();
    standin.create_key(KEY, kty);
    let dir = TempDir::new();
    let s = settings(&standin, &dir, &standin.client_secret());
    let kek = AzureKek::connect(KEY, &s, &call(Duration::from_secs(5)))
        .await
        .unwrap();
    (standin, dir, kek)
}

/// The kid stored in a wrapped DEK.
fn stored_kid(w: &WrappedDek) -> String {
    let b = w.as_bytes();
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    String::from_utf8(b[4..4 + len].to_vec()).unwrap()
}

#[tokio::test]
async fn round_trip_is_bound_to_its_row_and_key() {
    let (standin, _dir, kek) = connected(Kty::Rsa).await;
    let id = kek.id().clone();
    assert_eq!(
        id,
        remote_kek_id(
            ProviderKind::AzureKeyVault,
            &format!("{}/keys/{KEY}", standin.url())
        )
    );
    assert!(id.as_str().starts_with("azure-keyvault:"), "{id}");
    assert!(kek.describe().contains(&format!("/keys/{KEY}")));
    let debug = format!("{kek:?}");
    assert!(!debug.contains(&standin.client_secret()), "{debug}");
    assert!(!kek.describe().contains(&standin.client_secret()));

    let secret = [7u8; 16];
    let dek = fresh_dek();
    let wrapped = kek.wrap(&dek, &ctx(&id, &secret, 1)).await.unwrap();
    let b = wrapped.as_bytes();
    assert_eq!(&b[..2], &[0x01, rcrt_keys::alg::AZURE_RSA_OAEP_256]);
    let kid = stored_kid(&wrapped);
    assert!(
        kid.starts_with(&format!("{}/keys/{KEY}/", standin.url())),
        "{kid}"
    );
    // RSA-2048: 256 bytes of ciphertext after the kid.
    assert_eq!(b.len(), 4 + kid.len() + 256);
    assert!(!b.windows(32).any(|w| w == dek.expose_secret()));

    let back = kek.unwrap(&wrapped, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());

    // Moved to another secret, another version, or relabelled with another KEK id: refused.
    let other_secret = [8u8; 16];
    assert!(is_decrypt_failure(
        &kek.unwrap(&wrapped, &ctx(&id, &other_secret, 1)).await
    ));
    assert!(is_decrypt_failure(
        &kek.unwrap(&wrapped, &ctx(&id, &secret, 2)).await
    ));
    let other_id = remote_kek_id(
        ProviderKind::AzureKeyVault,
        "https://x.vault.azure.net/keys/y",
    );
    assert!(is_decrypt_failure(
        &kek.unwrap(&wrapped, &ctx(&other_id, &secret, 1)).await
    ));

    // A flipped bit in the RSA ciphertext: Key Vault answers 400 BadParameter.
    let mut tampered = b.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(is_decrypt_failure(
        &kek.unwrap(&WrappedDek::from_stored(tampered), &ctx(&id, &secret, 1))
            .await
    ));
    // The header is bound too: relabelled as the AES key wrap, the payload's hash differs
    // (and the stand-in refuses A256KW on an RSA key).
    let mut relabelled = b.to_vec();
    relabelled[1] = rcrt_keys::alg::AZURE_AES_KW;
    assert!(kek
        .unwrap(&WrappedDek::from_stored(relabelled), &ctx(&id, &secret, 1))
        .await
        .is_err());
    // Another provider's bytes, or a kid naming another key: a format error, no request sent.
    let before = standin.vault_requests();
    let mut foreign = b.to_vec();
    foreign[1] = rcrt_keys::alg::AWS_KMS;
    assert!(matches!(
        kek.unwrap(&WrappedDek::from_stored(foreign), &ctx(&id, &secret, 1))
            .await,
        Err(KeyError::Crypto(CryptoError::Format(_)))
    ));
    let other_key = kid.replace(&format!("/keys/{KEY}/"), "/keys/another-key/");
    let mut moved = vec![0x01, rcrt_keys::alg::AZURE_RSA_OAEP_256];
    moved.extend_from_slice(&(other_key.len() as u16).to_be_bytes());
    moved.extend_from_slice(other_key.as_bytes());
    moved.extend_from_slice(&b[4 + kid.len()..]);
    assert!(matches!(
        kek.unwrap(&WrappedDek::from_stored(moved), &ctx(&id, &secret, 1))
            .await,
        Err(KeyError::Crypto(CryptoError::Format(_)))
    ));
    assert!(matches!(
        kek.unwrap(
            &WrappedDek::from_stored(b[..3].to_vec()),
            &ctx(&id, &secret, 1)
        )
        .await,
        Err(KeyError::Crypto(CryptoError::Format(_)))
    ));
    assert_eq!(standin.vault_requests(), before);

    // Wrapping is only under this backend's own id.
    assert!(matches!(
        kek.wrap(&dek, &ctx(&other_id, &secret, 1)).await,
        Err(KeyError::UnknownKek(_))
    ));
}

#[tokio::test]
async fn managed_hsm_oct_keys_use_aes_key_wrap() {
    let (_standin, _dir, kek) = connected(Kty::OctHsm).await;
    let id = kek.id().clone();
    let secret = [3u8; 16];
    let dek = fresh_dek();
    let wrapped = kek.wrap(&dek, &ctx(&id, &secret, 4)).await.unwrap();
    let kid = stored_kid(&wrapped);
    assert_eq!(
        &wrapped.as_bytes()[..2],
        &[0x01, rcrt_keys::alg::AZURE_AES_KW]
    );
    // A256KW of the 64-byte payload: 72 bytes.
    assert_eq!(wrapped.as_bytes().len(), 4 + kid.len() + 72);
    let back = kek.unwrap(&wrapped, &ctx(&id, &secret, 4)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    assert!(is_decrypt_failure(
        &kek.unwrap(&wrapped, &ctx(&id, &secret, 5)).await
    ));
}

#[tokio::test]
async fn set_up_errors_are_clear_and_never_show_the_secret() {
    let standin = AzureStandin::start();
    standin.create_key(KEY, Kty::Rsa);
    let dir = TempDir::new();
    let call = call(Duration::from_secs(5));

    // A wrong client secret: Azure AD's invalid_client, named, without either secret.
    let wrong = "wrong-secret-value-4f1c";
    let err = AzureKek::connect(KEY, &settings(&standin, &dir, wrong), &call)
        .await
        .unwrap_err();
    let KeyError::Config(msg) = &err else {
        panic!("expected a Config error, got {err:?}")
    };
    assert!(msg.contains("invalid_client"), "{msg}");
    assert!(msg.contains("AADSTS7000215"), "{msg}");
    assert!(msg.contains(AzureStandin::CLIENT_ID), "{msg}");
    assert!(!msg.contains(wrong), "{msg}");
    assert!(!msg.contains(&standin.client_secret()), "{msg}");
    assert!(!msg.contains("Trace ID"), "{msg}");

    let good = settings(&standin, &dir, &standin.client_secret());
    // A key that does not exist.
    let err = AzureKek::connect("no-such-key", &good, &call)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KeyError::Config(m) if m.contains("KeyNotFound") && m.contains("no-such-key")),
        "{err}"
    );
    // A key whose key_ops do not permit wrapKey.
    standin.set_key_ops(KEY, &["encrypt", "decrypt", "unwrapKey"]);
    let err = AzureKek::connect(KEY, &good, &call).await.unwrap_err();
    assert!(
        matches!(&err, KeyError::Config(m) if m.contains("wrapKey")),
        "{err}"
    );
    standin.set_key_ops(KEY, &["wrapKey", "unwrapKey"]);
    // A disabled key.
    standin.set_key_enabled(KEY, false);
    let err = AzureKek::connect(KEY, &good, &call).await.unwrap_err();
    assert!(
        matches!(&err, KeyError::Config(m) if m.contains("disabled")),
        "{err}"
    );
    standin.set_key_enabled(KEY, true);
    // Plain http to anything but 127.0.0.1, a missing variable, an unreadable secret file.
    let mut plain = good.clone();
    plain.vault_url = Some("http://rcrt.vault.azure.net/".into());
    assert!(matches!(
        AzureKek::connect(KEY, &plain, &call).await,
        Err(KeyError::Config(m)) if m.contains("https")
    ));
    let mut no_tenant = good.clone();
    no_tenant.tenant_id = None;
    assert!(matches!(
        AzureKek::connect(KEY, &no_tenant, &call).await,
        Err(KeyError::Config(m)) if m.contains("AZURE_TENANT_ID")
    ));
    let mut no_file = good.clone();
    no_file.client_secret_file = Some(dir.path().join("missing"));
    assert!(matches!(
        AzureKek::connect(KEY, &no_file, &call).await,
        Err(KeyError::Config(m)) if m.contains("AZURE_CLIENT_SECRET_FILE")
    ));
    assert!(matches!(
        AzureKek::connect("bad/name", &good, &call).await,
        Err(KeyError::Config(_))
    ));

    // Through build_backend, as the keyring sets it up.
    let backend = build_backend(
        &KekSpec {
            provider: ProviderKind::AzureKeyVault,
            key_ref: KEY.into(),
        },
        &ProviderSettings {
            azure: good,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(backend.provider(), ProviderKind::AzureKeyVault);
    backend.probe().await.unwrap();
}

#[tokio::test]
async fn a_disabled_key_is_refused_until_enabled() {
    let (standin, _dir, kek) = connected(Kty::Rsa).await;
    let id = kek.id().clone();
    let secret = [1u8; 16];
    let dek = fresh_dek();
    let wrapped = kek.wrap(&dek, &ctx(&id, &secret, 1)).await.unwrap();

    standin.set_key_enabled(KEY, false);
    let refused = |r: &Result<(), KeyError>| matches!(r, Err(KeyError::Refused { reason, .. }) if reason.contains("KeyDisabled") || reason.contains("disabled"));
    // Key Vault refuses unwrapKey with a disabled key (403 Forbidden / KeyDisabled).
    let u = kek
        .unwrap(&wrapped, &ctx(&id, &secret, 1))
        .await
        .map(|_| ());
    assert!(refused(&u), "{u:?}");
    let e = u.unwrap_err();
    assert!(
        e.is_unavailable(),
        "a disabled key is a 503, never a decrypt failure"
    );
    // The probe's lookup sees attributes.enabled false; from then on wraps are refused here
    // too (Key Vault itself would still wrap under a disabled RSA key), without a request.
    let p = kek.probe().await;
    assert!(refused(&p), "{p:?}");
    let before = standin.vault_requests();
    let w = kek.wrap(&dek, &ctx(&id, &secret, 2)).await.map(|_| ());
    assert!(refused(&w), "{w:?}");
    assert_eq!(standin.vault_requests(), before);

    standin.set_key_enabled(KEY, true);
    kek.probe().await.unwrap();
    let back = kek.unwrap(&wrapped, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn old_versions_unwrap_after_a_rotation() {
    let (standin, _dir, kek) = connected(Kty::Rsa).await;
    let id = kek.id().clone();
    let secret = [2u8; 16];
    let dek1 = fresh_dek();
    let w1 = kek.wrap(&dek1, &ctx(&id, &secret, 1)).await.unwrap();
    let kid1 = stored_kid(&w1);

    let kid2 = standin.rotate_key(KEY);
    assert_ne!(kid1, kid2);
    // The next probe (the keyring's health task) picks up the new version.
    kek.probe().await.unwrap();
    assert_eq!(kek.id(), &id, "the KEK id is the same for every version");
    let dek2 = fresh_dek();
    let w2 = kek.wrap(&dek2, &ctx(&id, &secret, 2)).await.unwrap();
    assert_eq!(stored_kid(&w2), kid2);

    let back1 = kek.unwrap(&w1, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(back1.expose_secret(), dek1.expose_secret());
    let back2 = kek.unwrap(&w2, &ctx(&id, &secret, 2)).await.unwrap();
    assert_eq!(back2.expose_secret(), dek2.expose_secret());
    // A wrap under version 1 relabelled as version 2: version 2 cannot decrypt it.
    let mut swapped = w1.as_bytes().to_vec();
    let v1 = kid1.rsplit('/').next().unwrap().to_owned();
    let v2 = kid2.rsplit('/').next().unwrap().to_owned();
    let at = 4 + kid1.len() - v1.len();
    swapped[at..4 + kid1.len()].copy_from_slice(v2.as_bytes());
    assert!(is_decrypt_failure(
        &kek.unwrap(&WrappedDek::from_stored(swapped), &ctx(&id, &secret, 1))
            .await
    ));
    // A fresh connect after the rotation has the same id and unwraps both.
    let dir = TempDir::new();
    let again = AzureKek::connect(
        KEY,
        &settings(&standin, &dir, &standin.client_secret()),
        &call(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(again.id(), &id);
    let back1 = again.unwrap(&w1, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(back1.expose_secret(), dek1.expose_secret());
}

#[tokio::test]
async fn tokens_are_cached_refreshed_before_expiry_and_on_401() {
    let (standin, _dir, kek) = connected(Kty::Rsa).await;
    let id = kek.id().clone();
    let secret = [4u8; 16];
    let dek = fresh_dek();
    assert_eq!(standin.token_requests(), 1, "connect signs in once");
    for v in 1..=3 {
        kek.wrap(&dek, &ctx(&id, &secret, v)).await.unwrap();
    }
    assert_eq!(standin.token_requests(), 1, "the token is cached");

    // Revoked (the vault answers 401): fetched again once, the call succeeds.
    standin.revoke_tokens();
    let w = kek.wrap(&dek, &ctx(&id, &secret, 9)).await.unwrap();
    assert_eq!(standin.unauthorized_answers(), 1);
    assert_eq!(standin.token_requests(), 2);
    kek.unwrap(&w, &ctx(&id, &secret, 9)).await.unwrap();
    assert_eq!(standin.token_requests(), 2);

    // Short-lived tokens are replaced before they expire, without a 401.
    standin.set_token_lifetime(1);
    standin.revoke_tokens();
    kek.wrap(&dek, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(standin.token_requests(), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    kek.wrap(&dek, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(standin.token_requests(), 4);
    assert_eq!(
        standin.unauthorized_answers(),
        2,
        "no 401 for an expiring token"
    );
}

#[tokio::test]
async fn an_outage_is_unavailable_and_recovers() {
    let standin = AzureStandin::start();
    standin.create_key(KEY, Kty::Rsa);
    let dir = TempDir::new();
    let kek = AzureKek::connect(
        KEY,
        &settings(&standin, &dir, &standin.client_secret()),
        &call(Duration::from_millis(400)),
    )
    .await
    .unwrap();
    let id = kek.id().clone();
    let secret = [5u8; 16];
    let dek = fresh_dek();
    let wrapped = kek.wrap(&dek, &ctx(&id, &secret, 1)).await.unwrap();

    let unavailable = |r: &Result<(), KeyError>| matches!(r, Err(KeyError::Unavailable { .. }));
    for outage in [Outage::Unavailable, Outage::Throttled, Outage::Hang] {
        standin.set_outage(outage);
        let started = Instant::now();
        let w = kek.wrap(&dek, &ctx(&id, &secret, 2)).await.map(|_| ());
        assert!(unavailable(&w), "{outage:?}: {w:?}");
        let u = kek
            .unwrap(&wrapped, &ctx(&id, &secret, 1))
            .await
            .map(|_| ());
        assert!(unavailable(&u), "{outage:?}: {u:?}");
        assert!(unavailable(&kek.probe().await), "{outage:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{outage:?}: calls are bounded by the timeout"
        );
        if outage == Outage::Unavailable {
            let Err(e) = w else { unreachable!() };
            assert!(e.to_string().contains("503"), "{e}");
        }
    }
    standin.set_outage(Outage::None);
    kek.probe().await.unwrap();
    let back = kek.unwrap(&wrapped, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());

    // The vault gone altogether (nothing listening): unavailable too.
    drop(standin);
    let u = kek
        .unwrap(&wrapped, &ctx(&id, &secret, 1))
        .await
        .map(|_| ());
    assert!(unavailable(&u), "{u:?}");
}
