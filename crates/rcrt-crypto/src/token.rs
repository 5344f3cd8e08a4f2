//! Service tokens: `rcrt_<id>_<secret>`, where the id (16 bytes, 32 hex digits) is public and
//! names the stored row, and the secret (32 bytes from the OS random source, 64 hex digits) is
//! never stored: only its [`TokenHash`] is.
//!
//! The fixed prefix and shape let secret scanners find leaked tokens; hex keeps the token one
//! word for double-click selection and shell quoting. The secret has 256 bits of entropy, so a
//! single SHA-256 (with a domain label and the id) is the right verifier: a slow password hash
//! would add nothing but latency.

use std::fmt;

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use crate::CryptoError;

/// The prefix of every token.
pub const TOKEN_PREFIX: &str = "rcrt_";
/// The length of a token string in characters.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 32 + 1 + 64;
const HASH_LABEL: &[u8] = b"rcrt service token v1\0";
const CSRF_LABEL: &[u8] = b"rcrt console csrf v1\0";

/// Why a string is not a token. Deliberately coarse: callers answer every case with one 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an rcrt service token")]
pub struct TokenFormatError;

/// A service token: its public id and its secret. Zeroized on drop; `Debug` shows the id only.
pub struct ServiceToken {
    id: [u8; 16],
    secret: Zeroizing<[u8; 32]>,
}

/// The stored verifier of a token: SHA-256 over a label, the id and the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl ServiceToken {
    /// A fresh token: 16 random id bytes and 32 random secret bytes, from the OS.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut id = [0u8; 16];
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom(&mut id)?;
        getrandom(&mut secret[..])?;
        Ok(Self { id, secret })
    }

    /// Parses `rcrt_<32 hex>_<64 hex>` (lowercase). Anything else, including surrounding
    /// whitespace, is refused.
    pub fn parse(text: &str) -> Result<Self, TokenFormatError> {
        let bytes = text.as_bytes();
        if bytes.len() != TOKEN_LEN {
            return Err(TokenFormatError);
        }
        let rest = text.strip_prefix(TOKEN_PREFIX).ok_or(TokenFormatError)?;
        let (id_hex, secret_hex) = rest.split_at_checked(32).ok_or(TokenFormatError)?;
        let secret_hex = secret_hex.strip_prefix('_').ok_or(TokenFormatError)?;
        let mut id = [0u8; 16];
        let mut secret = Zeroizing::new([0u8; 32]);
        decode_lower_hex(id_hex, &mut id)?;
        decode_lower_hex(secret_hex, &mut secret[..])?;
        Ok(Self { id, secret })
    }

    /// The public id's bytes.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// The token as text, to hand to its holder once. Zeroized on drop.
    pub fn expose_secret(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(TOKEN_LEN));
        out.push_str(TOKEN_PREFIX);
        push_hex(&mut out, &self.id);
        out.push('_');
        push_hex(&mut out, &self.secret[..]);
        out
    }

    /// The verifier to store.
    pub fn hash(&self) -> TokenHash {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(HASH_LABEL);
        ctx.update(&self.id);
        ctx.update(&self.secret[..]);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        TokenHash(out)
    }

    /// The anti-CSRF value bound to this token when it is a console session held in a cookie:
    /// SHA-256 over another label, the id and the secret, as 64 hex digits. A page of the
    /// console reads it from a same-origin answer and sends it back in a header; a page of
    /// another origin can neither read it nor derive it (that would need the secret).
    pub fn csrf_binding(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(CSRF_LABEL);
        ctx.update(&self.id);
        ctx.update(&self.secret[..]);
        hex::encode(ctx.finish().as_ref())
    }

    /// True if `presented` is this token's [`ServiceToken::csrf_binding`], compared in
    /// constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            self.csrf_binding().as_bytes(),
            presented.as_bytes(),
        )
        .is_ok()
    }

    /// True if this token's hash equals `stored`, compared in constant time.
    pub fn matches(&self, stored: &TokenHash) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.hash().0, &stored.0).is_ok()
    }
}

impl TokenHash {
    /// A stored hash read back; `None` if it is not 32 bytes.
    pub fn from_stored(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceToken({}, <secret>)", hex::encode(self.id))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<32 bytes>)")
    }
}

fn getrandom(out: &mut [u8]) -> Result<(), CryptoError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| CryptoError::Random)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Lowercase hex only, so each token has exactly one spelling.
fn decode_lower_hex(text: &str, out: &mut [u8]) -> Result<(), TokenFormatError> {
    fn nibble(c: u8) -> Result<u8, TokenFormatError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(TokenFormatError),
        }
    }
    let text = text.as_bytes();
    if text.len() != out.len() * 2 {
        return Err(TokenFormatError);
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        if let [hi, lo] = pair {
            *byte = nibble(*hi)? << 4 | nibble(*lo)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_shape() {
        let t = ServiceToken::generate().unwrap();
        let text = t.expose_secret();
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text.starts_with("rcrt_"));
        assert_eq!(text.as_bytes()[5 + 32], b'_');
        let back = ServiceToken::parse(&text).unwrap();
        assert_eq!(back.id(), t.id());
        assert!(back.matches(&t.hash()));
        assert_eq!(&*back.expose_secret(), &*text);
        // Two tokens never share an id or a secret.
        let u = ServiceToken::generate().unwrap();
        assert_ne!(u.id(), t.id());
        assert!(!u.matches(&t.hash()));
    }

    #[test]
    fn the_hash_binds_id_and_secret() {
        let t = ServiceToken::generate().unwrap();
        let text = t.expose_secret();
        // Same secret under another id, and same id with one secret digit changed.
        let mut other_id = text.to_string();
        other_id.replace_range(5..6, if &text[5..6] == "0" { "1" } else { "0" });
        let mut other_secret = text.to_string();
        let last = TOKEN_LEN - 1;
        other_secret.replace_range(last.., if &text[last..] == "0" { "1" } else { "0" });
        for changed in [other_id, other_secret] {
            let c = ServiceToken::parse(&changed).unwrap();
            assert!(!c.matches(&t.hash()), "{changed}");
        }
    }

    #[test]
    fn the_csrf_binding_is_per_token_and_not_the_verifier() {
        let t = ServiceToken::generate().unwrap();
        let binding = t.csrf_binding();
        assert_eq!(binding.len(), 64);
        assert!(t.csrf_matches(&binding));
        // Another label than the stored verifier: knowing one tells nothing of the other.
        assert_ne!(binding, hex::encode(t.hash().as_bytes()));
        let u = ServiceToken::generate().unwrap();
        assert!(!u.csrf_matches(&binding));
        assert!(!t.csrf_matches(""));
        assert!(!t.csrf_matches(&binding[..63]));
        assert!(!t.csrf_matches(&binding.to_uppercase()));
    }

    #[test]
    fn refuses_every_other_shape() {
        let good = ServiceToken::generate()
            .unwrap()
            .expose_secret()
            .to_string();
        let upper = format!("rcrt_{}", good[5..].to_uppercase());
        let bad = [
            String::new(),
            "rcrt_".into(),
            good[..good.len() - 1].to_string(),
            format!("{good}0"),
            format!(" {good}"),
            format!("{good}\n"),
            good.replacen("rcrt_", "rcrx_", 1),
            good.replacen('_', "-", 2),
            upper,
            format!("{}g", &good[..good.len() - 1]),
            format!("{}é", &good[..good.len() - 2]),
            "x".repeat(2000),
        ];
        for b in bad {
            assert_eq!(
                ServiceToken::parse(&b).map(|_| ()),
                Err(TokenFormatError),
                "{b:?}"
            );
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let t = ServiceToken::generate().unwrap();
        let text = t.expose_secret();
        let secret_hex = &text[5 + 33..];
        let dbg = format!("{t:?} {:?}", t.hash());
        assert!(!dbg.contains(secret_hex), "{dbg}");
        assert!(!dbg.contains(&hex::encode(t.hash().as_bytes())), "{dbg}");
        assert!(dbg.contains(&hex::encode(t.id())), "{dbg}");
    }

    #[test]
    fn stored_hash_length_is_checked() {
        assert!(TokenHash::from_stored(&[0u8; 31]).is_none());
        assert!(TokenHash::from_stored(&[0u8; 32]).is_some());
    }
}
