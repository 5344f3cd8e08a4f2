//! JWT headers and claims, validly signed (HS256, the server's key): whatever JSON (or not) the
//! header and payload hold, verification never panics, and a token it accepts has the right
//! issuer and audience, a numeric unexpired `exp`, and a non-empty string `sub` and
//! `owner_id`.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rcrt_server::auth::{JwtVerifier, KeySource};

const SECRET: &[u8] = b"fuzz-hs256-secret-of-at-least-32-bytes!!";
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "rcrt";

struct World {
    rt: tokio::runtime::Runtime,
    verifier: JwtVerifier,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("rcrt-fuzz-jwt-{}", std::process::id()));
        std::fs::write(&path, SECRET).unwrap();
        let verifier = JwtVerifier::new(
            ISSUER.into(),
            AUDIENCE.into(),
            KeySource::Hs256SecretFile(path.clone()),
        )
        .unwrap();
        let _ = std::fs::remove_file(&path);
        World {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            verifier,
        }
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    header: Vec<u8>,
    claims: Vec<u8>,
    /// Use `{"alg":"HS256"}` as the header, so the claims get past the header checks.
    plain_header: bool,
}

fuzz_target!(|input: Input| {
    let w = world();
    let header: &[u8] = if input.plain_header {
        br#"{"alg":"HS256","typ":"JWT"}"#
    } else {
        &input.header
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(&input.claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .unwrap();
    let token = format!("{message}.{signature}");
    if let Ok(p) = w.rt.block_on(w.verifier.verify(&token)) {
        let c: serde_json::Value = serde_json::from_slice(&input.claims).unwrap();
        assert_eq!(c["iss"], ISSUER);
        let aud_ok = c["aud"] == AUDIENCE
            || c["aud"].as_array().is_some_and(|a| a.iter().any(|v| v == AUDIENCE));
        assert!(aud_ok, "{c}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(c["exp"].as_f64().is_some_and(|e| e > now - 60.0), "{c}");
        assert!(!p.user_id.is_empty() && c["sub"] == p.user_id.as_str(), "{c}");
        assert!(!p.tenant.as_str().is_empty());
    }
});
