//! KEK text (`LOCAL_KEK_BASE64`, a KEK file, a CLI's stdin): any input is refused or gives a KEK;
//! never a panic, and a refusal's message is the same whatever the input (so it cannot quote it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match rcrt_keys::parse_kek(text, "FUZZ") {
        Ok(kek) => {
            assert_eq!(text.trim().len(), 44);
            assert_eq!(kek.id().as_str().len(), 16);
        }
        Err(e) => {
            let reference = rcrt_keys::parse_kek("x", "FUZZ").err().map(|e| e.to_string());
            assert_eq!(Some(e.to_string()), reference, "the error depends on its input");
        }
    }
});
