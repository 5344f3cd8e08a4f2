//! The share text format of `ssss`: `[token-]INDEX-HEX`.
//!
//! INDEX is decimal, zero-padded by `ssss-split` to the number of digits of the share count; HEX
//! is the share's value, lowercase and zero-padded to `deg / 4` digits, so its length fixes the
//! field degree.

use zeroize::{Zeroize, Zeroizing};

use crate::ShamirError;

/// One parsed share. The value bytes are wiped on drop.
pub(crate) struct ParsedShare<'a> {
    /// The token before the index, if any.
    pub(crate) token: Option<&'a str>,
    /// The x-coordinate, 1..=255.
    pub(crate) index: u8,
    /// Number of hex digits of the value (fixes the field degree: `4 * hex_len`).
    pub(crate) hex_len: usize,
    /// The value as big-endian bytes, `hex_len / 2` bytes (only valid when `hex_len` is even).
    pub(crate) value: Zeroizing<Vec<u8>>,
}

fn malformed(position: usize, reason: &'static str) -> ShamirError {
    ShamirError::MalformedShare { position, reason }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses one share line; `position` is only used in error values. Surrounding whitespace
/// (including a trailing newline) is ignored.
pub(crate) fn parse(text: &str, position: usize) -> Result<ParsedShare<'_>, ShamirError> {
    let text = text.trim();
    let mut parts = text.split('-');
    let (token, index_text, hex) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(index), Some(hex), None, None) => (None, index, hex),
        (Some(token), Some(index), Some(hex), None) => {
            if token.is_empty() {
                return Err(malformed(position, "empty token before the index"));
            }
            (Some(token), index, hex)
        }
        (_, None, _, _) => return Err(malformed(position, "no '-' between index and value")),
        _ => return Err(malformed(position, "too many '-' separators")),
    };

    if index_text.is_empty() || !index_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(position, "the index is not a decimal number"));
    }
    let significant = index_text.trim_start_matches('0');
    let index = match significant.len() {
        0 => return Err(malformed(position, "the index is 0")),
        1..=3 => significant
            .parse::<u16>()
            .ok()
            .and_then(|i| u8::try_from(i).ok())
            .ok_or(malformed(position, "the index is above 255"))?,
        _ => return Err(malformed(position, "the index is above 255")),
    };

    if hex.is_empty() {
        return Err(malformed(position, "the value is empty"));
    }
    let digits = hex.as_bytes();
    let mut value = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    let mut bad = false;
    for pair in digits.chunks(2) {
        let mut byte = 0u8;
        for &c in pair {
            match hex_digit(c) {
                Some(d) => byte = (byte << 4) | d,
                None => bad = true,
            }
        }
        value.push(byte);
        byte.zeroize();
    }
    if bad {
        return Err(malformed(position, "the value is not hexadecimal"));
    }
    Ok(ParsedShare {
        token,
        index,
        hex_len: digits.len(),
        value,
    })
}

/// Number of decimal digits of `n` (the index width `ssss-split` uses for `n` shares).
pub(crate) fn index_width(n: u8) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        _ => 3,
    }
}

/// Formats a share line exactly like `ssss-split -Q`: `INDEX-HEX` with the index zero-padded to
/// `width` digits and the value as lowercase hex of its big-endian bytes.
pub(crate) fn format(index: u8, width: usize, value_be: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(width + 1 + 2 * value_be.len());
    out.push_str(&format!("{index:0width$}"));
    out.push('-');
    for &b in value_be {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn reason(text: &str) -> &'static str {
        match parse(text, 3) {
            Err(ShamirError::MalformedShare { position, reason }) => {
                assert_eq!(position, 3);
                reason
            }
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("{text:?} parsed"),
        }
    }

    #[test]
    fn parses_plain_padded_and_token_shares() {
        let s = parse("3-0aFf\n", 0).unwrap();
        assert_eq!((s.token, s.index, s.hex_len), (None, 3, 4));
        assert_eq!(s.value.as_slice(), &[0x0a, 0xff]);

        let s = parse("007-00", 0).unwrap();
        assert_eq!((s.index, s.value.as_slice()), (7, &[0u8][..]));

        let s = parse("  kek-12-abcd ", 0).unwrap();
        assert_eq!((s.token, s.index), (Some("kek"), 12));

        // Odd digit counts parse; the caller rejects the implied degree.
        assert_eq!(parse("1-abc", 0).unwrap().hex_len, 3);
    }

    #[test]
    fn rejects_malformed_shares() {
        assert_eq!(reason("abcdef"), "no '-' between index and value");
        assert_eq!(reason(""), "no '-' between index and value");
        assert_eq!(reason("a-b-1-ff"), "too many '-' separators");
        assert_eq!(reason("-1-ff"), "empty token before the index");
        assert_eq!(reason("-ff"), "the index is not a decimal number");
        assert_eq!(reason("x1-ff"), "the index is not a decimal number");
        assert_eq!(reason("+1-ff"), "the index is not a decimal number");
        assert_eq!(reason("0-ff"), "the index is 0");
        assert_eq!(reason("000-ff"), "the index is 0");
        assert_eq!(reason("256-ff"), "the index is above 255");
        assert_eq!(reason("99999999999999999999-ff"), "the index is above 255");
        assert_eq!(reason("1-"), "the value is empty");
        assert_eq!(reason("1-fg"), "the value is not hexadecimal");
        assert_eq!(reason("1-f f"), "the value is not hexadecimal");
    }

    #[test]
    fn formats_like_ssss_split() {
        assert_eq!(format(1, index_width(5), &[0x00, 0xab]), "1-00ab");
        assert_eq!(format(1, index_width(10), &[0xff]), "01-ff");
        assert_eq!(format(12, index_width(99), &[0x01]), "12-01");
        assert_eq!(format(7, index_width(255), &[0x10]), "007-10");
    }
}
