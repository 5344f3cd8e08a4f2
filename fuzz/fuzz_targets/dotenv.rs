//! `.env` files (the guide's development setup puts the KEK in one): any content parses or is
//! refused without a panic, and a refusal never quotes the content (the line may hold a key):
//! its message, digits aside, is one of the fixed ones.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn template(msg: &str) -> String {
    msg.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// The messages a refusal may have, from inputs that cause each kind of error.
fn allowed() -> &'static Vec<String> {
    static ALLOWED: OnceLock<Vec<String>> = OnceLock::new();
    ALLOWED.get_or_init(|| {
        let bomb = "a=$a$a\n".repeat(20);
        let big = "x".repeat(70 * 1024);
        [&b"A='unterminated"[..], b"A=\xff\xfe", b"A=${", bomb.as_bytes(), big.as_bytes()]
            .iter()
            .filter_map(|input| rcrt_server::config::parse_dotenv(*input).err())
            .map(|e| template(&e.to_string()))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = rcrt_server::config::parse_dotenv(data) {
        let msg = template(&e.to_string());
        assert!(
            allowed().contains(&msg) || msg.contains("(invalid entry)"),
            "an unexpected refusal (it may quote the content): {msg}"
        );
    }
});
