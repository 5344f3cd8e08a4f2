//! The `aws-kms` provider against a real `moto_server` on loopback (PyPI `moto[server]`; the
//! tests fail naming it when it is missing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, ctx, fresh_dek, is_decrypt_failure, moto_settings};
use rcrt_crypto::{CryptoError, KekId, WrappedDek};
use rcrt_keys::aws_kms::AwsKmsKek;
use rcrt_keys::settings::{AwsSettings, ProviderSettings};
use rcrt_keys::{build_backend, KekBackend, KekSpec, KeyError, ProviderKind};
use rcrt_testkit::peers::moto::{self, MotoServer};
use zeroize::Zeroizing;

#[tokio::test]
async fn wraps_are_bound_to_their_row_and_key() {
    let moto = MotoServer::start();
    let timeout = Duration::from_secs(5);
    let kek = AwsKmsKek::connect(moto.key_arn(), &moto_settings(&moto), &call(timeout))
        .await
        .unwrap();
    let id = kek.id().clone();
    assert!(id.as_str().starts_with("aws-kms:"), "{id}");
    assert_eq!(kek.key_arn(), moto.key_arn());
    assert!(
        kek.describe().contains(moto.key_arn()),
        "{}",
        kek.describe()
    );

    // Round trip; the stored bytes carry the aws-kms header, then KMS's blob.
    let secret = [7u8; 16];
    let dek = fresh_dek();
    let wrapped = kek.wrap(&dek, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(&wrapped.as_bytes()[..2], &[0x01, rcrt_keys::alg::AWS_KMS]);
    assert!(wrapped.as_bytes().len() > 2 + 32);
    assert!(
        !wrapped
            .as_bytes()
            .windows(32)
            .any(|w| w == dek.expose_secret()),
        "the DEK must not appear in the wrapped bytes"
    );
    let back = kek.unwrap(&wrapped, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());

    // The same bytes for another secret id or version: KMS refuses the encryption context.
    let other = [8u8; 16];
    assert!(is_decrypt_failure(
        &kek.unwrap(&wrapped, &ctx(&id, &other, 1)).await
    ));
    assert!(is_decrypt_failure(
        &kek.unwrap(&wrapped, &ctx(&id, &secret, 2)).await
    ));

    // The same KMS key configured by its key id instead of its ARN is the same KEK id (ids
    // come from the ARN DescribeKey answers), so it unwraps the row.
    let by_key_id = AwsKmsKek::connect(moto.key_id(), &moto_settings(&moto), &call(timeout))
        .await
        .unwrap();
    assert_eq!(by_key_id.id(), &id, "one key, one KEK id");
    let back = by_key_id
        .unwrap(&wrapped, &ctx(&id, &secret, 1))
        .await
        .unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    // A context naming a KEK id the backend does not hold never reaches KMS. (That KMS binds
    // the KEK id in the encryption context: tests/aws_kms_ids.rs.)
    let relabelled = KekId::from_stored("aws-kms:0123456789abcdef");
    assert!(matches!(
        by_key_id
            .unwrap(&wrapped, &ctx(&relabelled, &secret, 1))
            .await,
        Err(KeyError::UnknownKek(_))
    ));

    // Another KMS key cannot unwrap it.
    let (_, other_arn) = moto.create_key();
    let other_kek = AwsKmsKek::connect(&other_arn, &moto_settings(&moto), &call(timeout))
        .await
        .unwrap();
    let other_id = other_kek.id().clone();
    assert!(is_decrypt_failure(
        &other_kek
            .unwrap(&wrapped, &ctx(&other_id, &secret, 1))
            .await
    ));

    // Altered blob: a decrypt failure; another header: a format error, before any call.
    let mut bytes = wrapped.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(is_decrypt_failure(
        &kek.unwrap(&WrappedDek::from_stored(bytes), &ctx(&id, &secret, 1))
            .await
    ));
    let mut bytes = wrapped.as_bytes().to_vec();
    bytes[1] = 0x03;
    assert!(matches!(
        kek.unwrap(&WrappedDek::from_stored(bytes), &ctx(&id, &secret, 1))
            .await,
        Err(KeyError::Crypto(CryptoError::Format(_)))
    ));

    // Concurrent wraps and unwraps on one backend.
    let kek = Arc::new(kek);
    let tasks: Vec<_> = (0..24u8)
        .map(|i| {
            let kek = kek.clone();
            tokio::spawn(async move {
                let sid = [i; 16];
                let id = kek.id().clone();
                let dek = fresh_dek();
                let w = kek.wrap(&dek, &ctx(&id, &sid, i64::from(i))).await.unwrap();
                let d = kek.unwrap(&w, &ctx(&id, &sid, i64::from(i))).await.unwrap();
                assert_eq!(d.expose_secret(), dek.expose_secret());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }

    // An alias is resolved to its key's ARN at start; the KEK id is the key's (more in
    // tests/aws_kms_ids.rs, with a repointed alias).
    moto.create_alias("rcrt-test", moto.key_id());
    let by_alias = AwsKmsKek::connect("alias/rcrt-test", &moto_settings(&moto), &call(timeout))
        .await
        .unwrap();
    assert_eq!(by_alias.key_arn(), moto.key_arn());
    assert_eq!(by_alias.id(), &id);
    let alias_id = by_alias.id().clone();
    let w = by_alias
        .wrap(&dek, &ctx(&alias_id, &secret, 1))
        .await
        .unwrap();
    let d = by_alias
        .unwrap(&w, &ctx(&alias_id, &secret, 1))
        .await
        .unwrap();
    assert_eq!(d.expose_secret(), dek.expose_secret());

    // Through `build_backend`, as the server sets it up; the default probe is a round trip.
    let spec = KekSpec {
        provider: ProviderKind::AwsKms,
        key_ref: moto.key_arn().to_owned(),
    };
    let all = ProviderSettings {
        aws: moto_settings(&moto),
        ..Default::default()
    };
    let built = build_backend(&spec, &all).await.unwrap();
    assert_eq!(built.id(), &id, "KEK ids are stable across connects");
    built.probe().await.unwrap();
}

#[tokio::test]
async fn connect_refuses_keys_that_cannot_wrap() {
    let moto = MotoServer::start();
    let s = moto_settings(&moto);
    let c = call(Duration::from_secs(5));
    let config_err = |r: Result<AwsKmsKek, KeyError>| match r {
        Err(KeyError::Config(msg)) => msg,
        Err(e) => panic!("expected a Config error, got {e}"),
        Ok(_) => panic!("expected a Config error, got a backend"),
    };

    // No region.
    let no_region = AwsSettings {
        region: None,
        ..s.clone()
    };
    let msg = config_err(AwsKmsKek::connect(moto.key_arn(), &no_region, &c).await);
    assert!(msg.contains("AWS_REGION"), "{msg}");

    // A key that does not exist.
    let missing = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555";
    let msg = config_err(AwsKmsKek::connect(missing, &s, &c).await);
    assert!(
        msg.contains("NotFoundException") && msg.contains(missing),
        "{msg}"
    );

    // A disabled key (moto still uses it for Encrypt/Decrypt, but DescribeKey tells).
    let (disabled_id, disabled_arn) = moto.create_key();
    moto.disable_key(&disabled_id);
    let msg = config_err(AwsKmsKek::connect(&disabled_arn, &s, &c).await);
    assert!(msg.contains("not enabled"), "{msg}");

    // An asymmetric key.
    let rsa = moto.create_key_with("RSA_2048", "ENCRYPT_DECRYPT");
    let msg = config_err(AwsKmsKek::connect(&rsa, &s, &c).await);
    assert!(
        msg.contains("RSA_2048") && msg.contains("SYMMETRIC_DEFAULT"),
        "{msg}"
    );

    // No error message carries the secret access key.
    let marked = AwsSettings {
        secret_access_key: Some(Zeroizing::new("SECRET-MARKER-1234".into())),
        ..s.clone()
    };
    let msg = config_err(AwsKmsKek::connect(missing, &marked, &c).await);
    assert!(!msg.contains("SECRET-MARKER"), "{msg}");
}

#[tokio::test]
async fn unreachable_kms_is_unavailable() {
    // Nothing listens on this port: connect fails as Unavailable, not Config.
    let port = rcrt_testkit::free_port();
    let s = AwsSettings {
        region: Some(moto::REGION.into()),
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        access_key_id: Some("testing".into()),
        secret_access_key: Some(Zeroizing::new("testing".into())),
        ..Default::default()
    };
    match AwsKmsKek::connect("alias/rcrt", &s, &call(Duration::from_secs(2))).await {
        Err(KeyError::Unavailable {
            provider, reason, ..
        }) => {
            assert_eq!(provider, ProviderKind::AwsKms);
            assert!(reason.contains("DescribeKey"), "{reason}");
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("expected Unavailable"),
    }
}

#[tokio::test]
async fn paused_kms_is_unavailable_within_the_timeout_and_recovers() {
    let moto = MotoServer::start();
    let timeout = Duration::from_millis(800);
    let kek = AwsKmsKek::connect(moto.key_arn(), &moto_settings(&moto), &call(timeout))
        .await
        .unwrap();
    let id = kek.id().clone();
    let secret = [3u8; 16];
    let dek = fresh_dek();
    let wrapped = kek.wrap(&dek, &ctx(&id, &secret, 1)).await.unwrap();

    moto.pause();
    let started = Instant::now();
    let unwrap = kek.unwrap(&wrapped, &ctx(&id, &secret, 1)).await;
    let wrap = kek.wrap(&dek, &ctx(&id, &secret, 2)).await;
    let elapsed = started.elapsed();
    moto.resume();
    assert!(
        matches!(unwrap, Err(KeyError::Unavailable { .. })),
        "{unwrap:?}"
    );
    match wrap {
        Err(KeyError::Unavailable { reason, .. }) => {
            assert!(
                reason.contains("Encrypt") && reason.contains("timed out"),
                "{reason}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        elapsed < timeout * 2 + Duration::from_millis(700),
        "two calls took {elapsed:?} with a {timeout:?} timeout"
    );

    // Back: the same backend works again, and nothing was lost.
    let back = kek.unwrap(&wrapped, &ctx(&id, &secret, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}
