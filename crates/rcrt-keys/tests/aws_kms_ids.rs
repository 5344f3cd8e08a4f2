//! `aws-kms` KEK ids against a real `moto_server` (PyPI `moto[server]`; the tests fail naming
//! it when it is missing): the id is derived from the key's ARN as `DescribeKey` gives it, so
//! one key has one id whatever reference names it, and an alias repointed to another key is
//! another id (a clear "KEK not held" at start, never a decrypt failure).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rcrt_crypto::{CryptoError, KekId};
use rcrt_keys::aws_kms::{encryption_context, AwsKmsKek};
use rcrt_keys::{remote_kek_id, KekBackend, KeyError, ProviderKind};
use rcrt_testkit::peers::moto::MotoServer;

use common::{call, ctx, fresh_dek, moto_settings};

async fn connect(moto: &MotoServer, key_ref: &str) -> AwsKmsKek {
    AwsKmsKek::connect(key_ref, &moto_settings(moto), &call(Duration::from_secs(5)))
        .await
        .unwrap_or_else(|e| panic!("connect {key_ref}: {e}"))
}

#[tokio::test]
async fn one_key_has_one_kek_id_whatever_reference_names_it() {
    let moto = MotoServer::start();
    moto.create_alias("rcrt-ids", moto.key_id());
    // arn:aws:kms:REGION:ACCOUNT:key/ID -> arn:aws:kms:REGION:ACCOUNT:alias/rcrt-ids
    let (prefix, _) = moto.key_arn().rsplit_once(":key/").unwrap();
    let alias_arn = format!("{prefix}:alias/rcrt-ids");

    let want = remote_kek_id(ProviderKind::AwsKms, moto.key_arn());
    let refs = [
        moto.key_arn().to_owned(),
        moto.key_id().to_owned(),
        "alias/rcrt-ids".to_owned(),
        alias_arn,
        // Surrounding blanks are not part of the reference.
        format!("  {}\n", moto.key_id()),
    ];
    let mut keks = Vec::new();
    for r in &refs {
        let kek = connect(&moto, r).await;
        assert_eq!(kek.key_arn(), moto.key_arn(), "{r}");
        assert_eq!(kek.id(), &want, "KEK_REF {r:?} names the same key");
        keks.push(kek);
    }

    // So a row wrapped through one reference unwraps through any other.
    let secret = [1u8; 16];
    let dek = fresh_dek();
    let wrapped = keks[1].wrap(&dek, &ctx(&want, &secret, 1)).await.unwrap();
    for (kek, r) in keks.iter().zip(&refs) {
        let back = kek
            .unwrap(&wrapped, &ctx(&want, &secret, 1))
            .await
            .unwrap_or_else(|e| panic!("unwrap through {r:?}: {e}"));
        assert_eq!(back.expose_secret(), dek.expose_secret());
    }

    // Another key is another id.
    let (other_id, other_arn) = moto.create_key();
    let other = connect(&moto, &other_id).await;
    assert_eq!(other.id(), &remote_kek_id(ProviderKind::AwsKms, &other_arn));
    assert_ne!(other.id(), &want);
}

#[tokio::test]
async fn a_repointed_alias_is_another_kek_id() {
    let moto = MotoServer::start();
    let (old_id, old_arn) = (moto.key_id().to_owned(), moto.key_arn().to_owned());
    moto.create_alias("rcrt-kek", &old_id);
    let before = connect(&moto, "alias/rcrt-kek").await;
    let old_kek_id = before.id().clone();
    assert_eq!(old_kek_id, remote_kek_id(ProviderKind::AwsKms, &old_arn));

    let secret = [2u8; 16];
    let dek = fresh_dek();
    let row = before
        .wrap(&dek, &ctx(&old_kek_id, &secret, 1))
        .await
        .unwrap();

    // The alias now names another key.
    let (new_id, new_arn) = moto.create_key();
    moto.update_alias("rcrt-kek", &new_id);

    // A server started now has another KEK id: the old rows' id is not held, which the
    // start-up check names (KEK_PROVIDER_OLD=aws-kms KEK_REF_OLD=<old ARN>), and a decrypt of
    // such a row is "KEK not held" (503 kek_unavailable), never a decrypt failure.
    let after = connect(&moto, "alias/rcrt-kek").await;
    assert_eq!(after.key_arn(), new_arn);
    assert_eq!(after.id(), &remote_kek_id(ProviderKind::AwsKms, &new_arn));
    assert_ne!(after.id(), &old_kek_id);
    match after.unwrap(&row, &ctx(&old_kek_id, &secret, 1)).await {
        Err(KeyError::UnknownKek(id)) => assert_eq!(id, old_kek_id),
        Err(KeyError::Crypto(CryptoError::Decrypt)) => {
            panic!("an old row under a repointed alias must not look like tampering")
        }
        other => panic!("expected UnknownKek, got {:?}", other.map(|_| "a DEK")),
    }

    // The old key named by its ARN (KEK_REF_OLD) is the old id, and unwraps the old rows
    // (for the re-wrap to move them to the new key).
    let old = connect(&moto, &old_arn).await;
    assert_eq!(old.id(), &old_kek_id);
    let back = old
        .unwrap(&row, &ctx(&old_kek_id, &secret, 1))
        .await
        .unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    let new_kek_id = after.id().clone();
    let moved = after
        .wrap(&back, &ctx(&new_kek_id, &secret, 1))
        .await
        .unwrap();
    let again = after
        .unwrap(&moved, &ctx(&new_kek_id, &secret, 1))
        .await
        .unwrap();
    assert_eq!(again.expose_secret(), dek.expose_secret());

    // A backend connected before the repointing keeps the key it resolved at start.
    assert_eq!(before.key_arn(), old_arn);
    let still = before
        .unwrap(&row, &ctx(&old_kek_id, &secret, 1))
        .await
        .unwrap();
    assert_eq!(still.expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn a_wrap_relabelled_with_another_kek_id_fails_at_kms() {
    // With one id per key, no second backend on the same key carries another id: ask KMS
    // directly whether the encryption context binds the KEK id (and the row).
    let moto = MotoServer::start();
    let kek = connect(&moto, moto.key_arn()).await;
    let id = kek.id().clone();
    let secret = [3u8; 16];
    let wrapped = kek.wrap(&fresh_dek(), &ctx(&id, &secret, 4)).await.unwrap();
    let blob = B64.encode(&wrapped.as_bytes()[2..]);
    let decrypt = |context: &std::collections::BTreeMap<&'static str, String>| {
        moto.kms(
            "Decrypt",
            &serde_json::json!({ "CiphertextBlob": blob, "EncryptionContext": context }),
        )
    };
    let (status, body) = decrypt(&encryption_context(&ctx(&id, &secret, 4)));
    assert_eq!(status, 200, "the row's own context: {body}");
    let other_id = KekId::from_stored("aws-kms:0123456789abcdef");
    let (status, body) = decrypt(&encryption_context(&ctx(&other_id, &secret, 4)));
    assert_eq!(status, 400, "relabelled: {body}");
    assert!(
        body.to_string().contains("InvalidCiphertextException"),
        "{body}"
    );
}
