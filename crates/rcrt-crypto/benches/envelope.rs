//! Envelope seal+open of a 1 KiB value against one raw AES-256-GCM seal+open (random nonce from
//! the OS, key set up once), measured in the same run. See docs/benchmarks.md.
//!
//! Group `1KiB`: the envelope and two baselines (ring and aws-lc-rs, the two AES-GCM libraries in
//! the dependency tree); `bench/envelope.sh` divides by the faster baseline. Group `parts`: what
//! the envelope's time is made of, for docs/benchmarks.md.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use aws_lc_rs::aead as lc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::RngCore;
use rcrt_crypto::{open_value, seal_value, Kek, ValueContext, WrapContext};
use ring::aead as rg;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const VALUE_LEN: usize = 1024;

fn bench_1kib(c: &mut Criterion) {
    let value = vec![0x5au8; VALUE_LEN];
    let mut group = c.benchmark_group("1KiB");
    group.throughput(Throughput::Bytes(VALUE_LEN as u64));

    // The baselines: one key set up once, a 12-byte nonce from the OS per message, the value
    // copied into a buffer with room for the tag, sealed and opened in place.
    let os = SystemRandom::new();
    let ring_key = rg::LessSafeKey::new(rg::UnboundKey::new(&rg::AES_256_GCM, &[7u8; 32]).unwrap());
    group.bench_function("baseline_raw_aes256gcm_seal_open", |b| {
        b.iter(|| {
            let mut nonce = [0u8; 12];
            os.fill(&mut nonce).unwrap();
            let mut buf = Vec::with_capacity(VALUE_LEN + 16);
            buf.extend_from_slice(&value);
            let n = || rg::Nonce::assume_unique_for_key(nonce);
            ring_key
                .seal_in_place_append_tag(n(), rg::Aad::empty(), &mut buf)
                .unwrap();
            let out = ring_key
                .open_in_place(n(), rg::Aad::empty(), &mut buf)
                .unwrap();
            assert_eq!(out.len(), VALUE_LEN);
        })
    });
    let lc_key = lc::LessSafeKey::new(lc::UnboundKey::new(&lc::AES_256_GCM, &[7u8; 32]).unwrap());
    group.bench_function("baseline_raw_aes256gcm_seal_open_aws_lc", |b| {
        b.iter(|| {
            let mut nonce = [0u8; 12];
            os.fill(&mut nonce).unwrap();
            let mut buf = Vec::with_capacity(VALUE_LEN + 16);
            buf.extend_from_slice(&value);
            let n = || lc::Nonce::assume_unique_for_key(nonce);
            lc_key
                .seal_in_place_append_tag(n(), lc::Aad::empty(), &mut buf)
                .unwrap();
            let out = lc_key
                .open_in_place(n(), lc::Aad::empty(), &mut buf)
                .unwrap();
            assert_eq!(out.len(), VALUE_LEN);
        })
    });

    let kek = Kek::from_bytes(Zeroizing::new([9u8; 32]));
    let id = [3u8; 16];
    let vctx = ValueContext {
        tenant: "default",
        secret_id: &id,
        version: 1,
    };
    let wctx = WrapContext {
        kek_id: kek.id(),
        secret_id: &id,
        version: 1,
    };
    group.bench_function("envelope_seal_wrap_unwrap_open", |b| {
        b.iter(|| {
            let (dek, sealed) = seal_value(&value, &vctx).unwrap();
            let wrapped = kek.wrap(&dek, &wctx).unwrap();
            let dek = kek.unwrap(&wrapped, &wctx).unwrap();
            let plain = open_value(&dek, &sealed, &vctx).unwrap();
            assert_eq!(plain.expose_secret().len(), VALUE_LEN);
        })
    });
    group.finish();
}

/// The pieces the envelope is made of, each alone, with the library calls it makes.
fn bench_parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    let key = [7u8; 32];
    let aad = [0u8; 63]; // the length of a value's associated data for tenant "default"
    let wrap_aad = [0u8; 70]; // the length of a wrapped DEK's associated data
    let value = vec![0x5au8; VALUE_LEN];
    let os = SystemRandom::new();
    group.bench_function("os_random_12_bytes", |b| {
        b.iter(|| {
            let mut nonce = [0u8; 12];
            os.fill(&mut nonce).unwrap();
            nonce
        })
    });
    group.bench_function("thread_rng_56_bytes", |b| {
        b.iter(|| {
            let mut bytes = [0u8; 56];
            rand::rng().fill_bytes(&mut bytes);
            bytes
        })
    });
    group.bench_function("aes256gcm_key_setup", |b| {
        b.iter(|| {
            lc::LessSafeKey::new(lc::UnboundKey::new(&lc::AES_256_GCM, black_box(&key)).unwrap())
        })
    });
    let gcm = lc::LessSafeKey::new(lc::UnboundKey::new(&lc::AES_256_GCM, &key).unwrap());
    group.bench_function("aes256gcm_seal_open_1KiB_fixed_nonce", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(VALUE_LEN + 16);
            buf.extend_from_slice(&value);
            let n = || lc::Nonce::assume_unique_for_key([1; 12]);
            gcm.seal_in_place_append_tag(n(), lc::Aad::from(&aad), &mut buf)
                .unwrap();
            gcm.open_in_place(n(), lc::Aad::from(&aad), &mut buf)
                .unwrap()
                .len()
        })
    });
    let siv = lc::LessSafeKey::new(lc::UnboundKey::new(&lc::AES_256_GCM_SIV, &key).unwrap());
    group.bench_function("aes256gcmsiv_wrap_unwrap_32_bytes", |b| {
        b.iter(|| {
            let mut buf = [9u8; 48];
            let n = || lc::Nonce::assume_unique_for_key([1; 12]);
            let tag = siv
                .seal_in_place_separate_tag(n(), lc::Aad::from(&wrap_aad), &mut buf[..32])
                .unwrap();
            buf[32..].copy_from_slice(tag.as_ref());
            siv.open_in_place(n(), lc::Aad::from(&wrap_aad), &mut buf)
                .unwrap()
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_1kib, bench_parts);
criterion_main!(benches);
