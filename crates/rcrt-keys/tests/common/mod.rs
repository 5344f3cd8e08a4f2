//! What the KEK provider tests share: a fresh DEK to wrap, the context binding a wrap to its
//! row, how a decrypt failure looks, call settings with a given timeout, and AWS settings for a
//! moto server.

use std::time::Duration;

use rcrt_crypto::{CryptoError, Dek, KekId, ValueContext, WrapContext};
use rcrt_keys::settings::{AwsSettings, CallSettings};
use rcrt_keys::KeyError;
use rcrt_testkit::peers::moto::{self, MotoServer};
use zeroize::Zeroizing;

/// A fresh random DEK (drawn by sealing a throwaway value, as the server does).
pub fn fresh_dek() -> Dek {
    rcrt_crypto::seal_value(
        b"x",
        &ValueContext {
            tenant: "t",
            secret_id: &[7u8; 16],
            version: 1,
        },
    )
    .unwrap()
    .0
}

/// The wrap context of version `version` of secret `secret_id` under `kek_id`.
pub fn ctx<'a>(kek_id: &'a KekId, secret_id: &'a [u8; 16], version: i64) -> WrapContext<'a> {
    WrapContext {
        kek_id,
        secret_id,
        version,
    }
}

/// Whether `r` is the one decrypt failure (never saying which check failed).
pub fn is_decrypt_failure(r: &Result<Dek, KeyError>) -> bool {
    matches!(r, Err(KeyError::Crypto(CryptoError::Decrypt)))
}

/// Default call settings with `timeout`.
pub fn call(timeout: Duration) -> CallSettings {
    CallSettings {
        timeout,
        ..Default::default()
    }
}

/// AWS settings that reach `moto` with its static test credentials.
pub fn moto_settings(moto: &MotoServer) -> AwsSettings {
    AwsSettings {
        region: Some(moto::REGION.into()),
        endpoint_url: Some(moto.endpoint()),
        access_key_id: Some(moto::ACCESS_KEY_ID.into()),
        secret_access_key: Some(Zeroizing::new(moto::SECRET_ACCESS_KEY.into())),
        ..Default::default()
    }
}
