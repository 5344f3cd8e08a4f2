//! A presented service token (`Authorization`/`X-API-Key`): refused, or it is exactly the text
//! form of the token it parsed to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcrt_crypto::ServiceToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = ServiceToken::parse(text) {
        assert_eq!(&*token.expose_secret(), text);
        assert!(token.matches(&token.hash()));
    }
});
