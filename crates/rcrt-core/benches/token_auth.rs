//! What authenticating a request with a service token costs in the server's process, against
//! what `AUTH_MODE=disabled` does for the same request (build the anonymous principal), in the
//! same run. The token is verified the way every request after the first is: from the
//! in-memory cache (parse, SHA-256, constant-time compare, expiry check, principal built).
//! The HTTP side of the same question is `AUTH_ROUNDS` in `bench/http.sh`; see
//! docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rcrt_core::tokens::MintToken;
use rcrt_core::{Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::SqliteStore;
use rcrt_types::{Principal, Role};
use zeroize::Zeroizing;

fn bench_auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = rcrt_testkit::TempDir::new();
    let (svc, token) = rt.block_on(async {
        let store = SqliteStore::open(dir.path().join("b.db").to_str().unwrap())
            .await
            .unwrap();
        let svc = Service::new(
            Arc::new(store),
            Arc::new(LocalKeyring::new(
                Kek::from_bytes(Zeroizing::new([1; 32])),
                vec![],
            )),
            Arc::new(SystemClock),
            Limits::default(),
        );
        let ctx = RequestContext {
            principal: Principal::anonymous(),
            request_id: "bench".into(),
        };
        let minted = svc
            .mint_token(
                &ctx,
                MintToken {
                    name: "bench".into(),
                    principal: Some("svc-bench".into()),
                    roles: [Role::Read, Role::Decrypt].into_iter().collect(),
                    workspaces: vec!["w1".into(), "w2".into()],
                    ttl: None,
                },
            )
            .await
            .unwrap();
        // The first verification reads the store and fills the cache.
        svc.authenticate_token(&minted.token).await.unwrap();
        (svc, minted.token)
    });

    let mut group = c.benchmark_group("auth");
    group.bench_function("disabled_anonymous_principal", |b| {
        b.iter(|| black_box(Principal::anonymous()))
    });
    group.bench_function("service_token_cached", |b| {
        b.iter(|| {
            rt.block_on(async { black_box(svc.authenticate_token(black_box(&token)).await) })
                .unwrap()
        })
    });
    group.bench_function("runtime_block_on_only", |b| {
        b.iter(|| rt.block_on(async { black_box(1u8) }))
    });
    group.finish();
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
