//! Stored envelope bytes (a wrapped DEK, a sealed value) read back from the database: any bytes
//! are refused without a panic; random bytes never authenticate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcrt_crypto::{open_value, Dek, Kek, SealedValue, ValueContext, WrapContext, WrappedDek};
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let kek = Kek::from_bytes(Zeroizing::new([7u8; 32]));
    let id = [1u8; 16];
    let wctx = WrapContext {
        kek_id: kek.id(),
        secret_id: &id,
        version: 1,
    };
    assert!(kek.unwrap(&WrappedDek::from_stored(data.to_vec()), &wctx).is_err());
    let dek = Dek::from_unwrapped(Zeroizing::new([9u8; 32]));
    let vctx = ValueContext {
        tenant: "t",
        secret_id: &id,
        version: 1,
    };
    assert!(open_value(&dek, &SealedValue::from_stored(data.to_vec()), &vctx).is_err());
});
