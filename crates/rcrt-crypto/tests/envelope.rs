//! Envelope round trips, tamper detection and row binding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use proptest::prelude::*;
use rcrt_crypto::{
    open_value, seal_value, Kek, KekId, SealedValue, ValueContext, WrapContext, WrappedDek,
};
use zeroize::Zeroizing;

const ID_A: [u8; 16] = [1; 16];
const ID_B: [u8; 16] = [2; 16];

fn kek(byte: u8) -> Kek {
    Kek::from_bytes(Zeroizing::new([byte; 32]))
}

fn vctx(id: &[u8; 16], version: i64) -> ValueContext<'_> {
    ValueContext {
        tenant: "default",
        secret_id: id,
        version,
    }
}

fn wctx<'a>(k: &'a KekId, id: &'a [u8; 16], version: i64) -> WrapContext<'a> {
    WrapContext {
        kek_id: k,
        secret_id: id,
        version,
    }
}

/// Seals `value` as row (ID_A, 1) under `k` and returns the stored pieces.
fn envelope(k: &Kek, value: &[u8]) -> (SealedValue, WrappedDek) {
    let (dek, sealed) = seal_value(value, &vctx(&ID_A, 1)).unwrap();
    let wrapped = k.wrap(&dek, &wctx(k.id(), &ID_A, 1)).unwrap();
    (sealed, wrapped)
}

fn decrypt(
    k: &Kek,
    sealed: &SealedValue,
    wrapped: &WrappedDek,
    id: &[u8; 16],
    version: i64,
    tenant: &str,
) -> Result<Vec<u8>, rcrt_crypto::CryptoError> {
    let dek = k.unwrap(wrapped, &wctx(k.id(), id, version))?;
    let ctx = ValueContext {
        tenant,
        secret_id: id,
        version,
    };
    Ok(open_value(&dek, sealed, &ctx)?.expose_secret().to_vec())
}

/// A sealed value and wrapped DEK written by the build at commit e4e336e (format 1, before the
/// associated-data encoder and the value cipher's library changed). They must still open.
#[test]
fn format_1_vectors_from_an_earlier_build_still_open() {
    let k = kek(0x42);
    assert_eq!(k.id().as_str(), "9a2add44354f5583");
    let sealed = SealedValue::from_stored(hex::decode(
        "010152532de202176a909e66a6b79d90afee25035002f329ad5d87542be55477d9044df0dee7c1ad1e0b1f84b4e442234eafb2",
    ).unwrap());
    let wrapped = WrappedDek::from_stored(hex::decode(
        "0103fffcd7b6d64ed4014c9b93fd22fa86b160b17c65ad4dc2e8bf03ffc1448c311a4b52fb3cab0e5629632d05abfb94f4154073a5ae2f0e89b9a5ad8419",
    ).unwrap());
    let id = [0x11u8; 16];
    assert_eq!(
        decrypt(&k, &sealed, &wrapped, &id, 7, "acme").unwrap(),
        b"sk_live_example_value"
    );
    assert!(decrypt(&k, &sealed, &wrapped, &id, 8, "acme").is_err());
    assert!(decrypt(&k, &sealed, &wrapped, &id, 7, "acmf").is_err());
}

/// The wrap's associated data is the documented length-prefixed list (docs/crypto.md), which
/// remote KEK providers reproduce.
#[test]
fn wrap_associated_data_layout() {
    let k = kek(0x42);
    let id = [0x11u8; 16];
    let mut expected = Vec::new();
    for field in [
        &b"rcrt/dek"[..],
        &[1, 3],
        b"9a2add44354f5583",
        &id,
        &7i64.to_be_bytes(),
    ] {
        expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
        expected.extend_from_slice(field);
    }
    assert_eq!(wctx(k.id(), &id, 7).encode(&[1, 3]), expected);
}

/// Tenant names too long for the on-stack associated data take the heap path, and still bind.
#[test]
fn long_tenant_names_round_trip_and_bind() {
    let k = kek(5);
    let tenant = "t".repeat(300);
    let ctx = ValueContext {
        tenant: &tenant,
        secret_id: &ID_A,
        version: 1,
    };
    let (dek, sealed) = seal_value(b"v", &ctx).unwrap();
    let wrapped = k.wrap(&dek, &wctx(k.id(), &ID_A, 1)).unwrap();
    assert_eq!(
        decrypt(&k, &sealed, &wrapped, &ID_A, 1, &tenant).unwrap(),
        b"v"
    );
    let other = format!("{}u", "t".repeat(299));
    assert!(decrypt(&k, &sealed, &wrapped, &ID_A, 1, &other).is_err());
    assert!(decrypt(&k, &sealed, &wrapped, &ID_A, 1, "t").is_err());
}

#[test]
fn round_trip() {
    let k = kek(7);
    let (sealed, wrapped) = envelope(&k, b"secret-value");
    assert_eq!(
        decrypt(&k, &sealed, &wrapped, &ID_A, 1, "default").unwrap(),
        b"secret-value"
    );
    assert!(!sealed.as_bytes().windows(12).any(|w| w == b"secret-value"));
}

#[test]
fn two_seals_of_one_value_differ() {
    let k = kek(7);
    let (s1, w1) = envelope(&k, b"same");
    let (s2, w2) = envelope(&k, b"same");
    assert_ne!(s1, s2);
    assert_ne!(w1, w2);
}

#[test]
fn moving_between_rows_fails() {
    let k = kek(7);
    let (sealed, wrapped) = envelope(&k, b"v");
    // Another secret id, another version, another tenant: all must fail.
    assert!(decrypt(&k, &sealed, &wrapped, &ID_B, 1, "default").is_err());
    assert!(decrypt(&k, &sealed, &wrapped, &ID_A, 2, "default").is_err());
    assert!(decrypt(&k, &sealed, &wrapped, &ID_A, 1, "other").is_err());
    // Wrapped DEK of row A with the sealed value of row B (both genuine): fails.
    let (dek_b, sealed_b) = seal_value(b"w", &vctx(&ID_B, 1)).unwrap();
    let _wrapped_b = k.wrap(&dek_b, &wctx(k.id(), &ID_B, 1)).unwrap();
    assert!(decrypt(&k, &sealed_b, &wrapped, &ID_A, 1, "default").is_err());
    // A wrapped DEK claimed to be under another KEK id fails even with the right key bytes.
    let other_id = KekId::from_stored("0000000000000000");
    assert!(k.unwrap(&wrapped, &wctx(&other_id, &ID_A, 1)).is_err());
}

#[test]
fn wrong_kek_fails() {
    let (sealed, wrapped) = envelope(&kek(7), b"v");
    assert!(decrypt(&kek(8), &sealed, &wrapped, &ID_A, 1, "default").is_err());
}

#[test]
fn kek_id_is_stable_and_distinct() {
    assert_eq!(kek(1).id(), kek(1).id());
    assert_ne!(kek(1).id(), kek(2).id());
    assert_eq!(kek(1).id().as_str().len(), 16);
    // Pinned: a change to the derivation would strand every stored DEK.
    let id = kek(0).id().clone();
    assert_eq!(id, Kek::from_bytes(Zeroizing::new([0; 32])).id().clone());
    assert!(id.as_str().chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn debug_output_is_redacted() {
    let k = kek(0xAB);
    let (dek, _) = seal_value(b"topsecret", &vctx(&ID_A, 1)).unwrap();
    let printed = format!("{k:?} {dek:?}");
    assert!(printed.contains("REDACTED"));
    assert!(!printed.contains("171")); // 0xAB as a decimal byte
    assert!(!printed.to_lowercase().contains("abab"));
}

#[test]
fn truncated_and_unknown_formats_are_rejected() {
    let k = kek(3);
    let (sealed, wrapped) = envelope(&k, b"v");
    let short = SealedValue::from_stored(sealed.as_bytes()[..10].to_vec());
    assert!(decrypt(&k, &short, &wrapped, &ID_A, 1, "default").is_err());
    let mut bad_version = wrapped.as_bytes().to_vec();
    bad_version[0] = 9;
    assert!(decrypt(
        &k,
        &sealed,
        &WrappedDek::from_stored(bad_version),
        &ID_A,
        1,
        "default"
    )
    .is_err());
    assert!(decrypt(
        &k,
        &sealed,
        &WrappedDek::from_stored(Vec::new()),
        &ID_A,
        1,
        "default"
    )
    .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_round_trip(value in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let k = kek(5);
        let (sealed, wrapped) = envelope(&k, &value);
        prop_assert_eq!(decrypt(&k, &sealed, &wrapped, &ID_A, 1, "default").unwrap(), value);
    }

    /// Any tenant name, short (on-stack associated data) or long (heap), round-trips under its
    /// own name and fails under any other.
    #[test]
    fn prop_tenant_binding(tenant in "\\PC{0,200}", other in "\\PC{0,200}") {
        prop_assume!(tenant != other);
        let k = kek(5);
        let ctx = ValueContext { tenant: &tenant, secret_id: &ID_A, version: 3 };
        let (dek, sealed) = seal_value(b"v", &ctx).unwrap();
        let wrapped = k.wrap(&dek, &wctx(k.id(), &ID_A, 3)).unwrap();
        prop_assert_eq!(decrypt(&k, &sealed, &wrapped, &ID_A, 3, &tenant).unwrap(), b"v".to_vec());
        prop_assert!(decrypt(&k, &sealed, &wrapped, &ID_A, 3, &other).is_err());
    }

    /// Flipping any bit of any byte of the sealed value (header, nonce, ciphertext, tag) fails.
    #[test]
    fn prop_flip_sealed_fails(value in proptest::collection::vec(any::<u8>(), 0..256),
                              pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let k = kek(5);
        let (sealed, wrapped) = envelope(&k, &value);
        let mut bytes = sealed.as_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let tampered = SealedValue::from_stored(bytes);
        prop_assert!(decrypt(&k, &tampered, &wrapped, &ID_A, 1, "default").is_err());
    }

    /// Flipping any bit of any byte of the wrapped DEK (header, nonce, ciphertext, tag) fails.
    #[test]
    fn prop_flip_wrapped_fails(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let k = kek(5);
        let (sealed, wrapped) = envelope(&k, b"value");
        let mut bytes = wrapped.as_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let tampered = WrappedDek::from_stored(bytes);
        prop_assert!(decrypt(&k, &sealed, &tampered, &ID_A, 1, "default").is_err());
    }
}
