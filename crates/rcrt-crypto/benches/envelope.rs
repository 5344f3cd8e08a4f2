//! Envelope seal+open of a 1 KiB value against one raw AES-256-GCM seal+open (random nonce from
//! the OS, key set up once), measured in the same run. See docs/benchmarks.md.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rcrt_crypto::{open_value, seal_value, Kek, ValueContext, WrapContext};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

fn bench(c: &mut Criterion) {
    let value = vec![0x5au8; 1024];
    let mut group = c.benchmark_group("1KiB");
    group.throughput(Throughput::Bytes(value.len() as u64));

    let rng = SystemRandom::new();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    group.bench_function("baseline_raw_aes256gcm_seal_open", |b| {
        b.iter(|| {
            let mut nonce = [0u8; 12];
            rng.fill(&mut nonce).unwrap();
            let mut buf = value.clone();
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut buf,
            )
            .unwrap();
            let out = key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
                .unwrap();
            assert_eq!(out.len(), 1024);
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
            assert_eq!(plain.expose_secret().len(), 1024);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
