//! Shamir secret sharing, byte-for-byte interoperable with the Debian `ssss` tool
//! (`ssss-split` / `ssss-combine`, version 0.5).
//!
//! What it does: [`split`] turns a secret of 1 to 128 bytes into share lines exactly as
//! `ssss-split -Q` prints them (`INDEX-HEX`), and [`combine`] recovers a secret from share lines
//! printed by `ssss-split` or by [`split`]. Both support the tool's two input modes ([`Mode`]:
//! ASCII text or hex for binary secrets) and its optional diffusion layer (`-D` turns it off).
//! Every field degree the tool supports (8 to 1024 bits in steps of 8) is implemented and is
//! checked against the real tool by this crate's tests.
//!
//! The scheme is `ssss`'s, not textbook Shamir: the sharing polynomial over GF(2^deg) is monic of
//! degree `t` (`x^t + c_(t-1) x^(t-1) + ... + c_0`), `c_0` is the secret passed through a fixed,
//! keyless XTEA-based permutation ("diffusion"), and the field degree is 8 times the secret's
//! length in bytes.
//!
//! What it does not do: I/O, prompting, or the tool's `-s` (security level) padding and `-w`
//! (token) options on the split side (tokens are accepted when combining). Like `ssss`, shares
//! carry no integrity check: shares from different splits, or a wrong `mode`/`diffusion`
//! setting, combine to a wrong secret without an error. Verifying the recovered secret (for
//! example against a key check value) is the caller's job.
//!
//! ```
//! use rcrt_shamir::{combine, split, Mode, SplitOptions};
//!
//! // Like `echo -n "$KEK" | ssss-split -t 3 -n 5 -Q`.
//! let kek = "q83vEjRWeJC7zN7vASNFZ4mrze8BI0VniavN7wEjRWc=";
//! let shares = split(kek.as_bytes(), &SplitOptions::new(3, 5, Mode::Ascii))?;
//! assert!(shares[0].starts_with("1-"));
//!
//! // Like `ssss-combine -t 3 -Q` with shares 1, 3 and 5.
//! let picked = [shares[0].as_str(), shares[2].as_str(), shares[4].as_str()];
//! let secret = combine(&picked, 3, Mode::Ascii, true)?;
//! assert_eq!(secret.expose(), kek.as_bytes());
//! # Ok::<(), rcrt_shamir::ShamirError>(())
//! ```
//!
//! Side channels: arithmetic on secret values uses masks rather than secret-dependent branches,
//! and secret intermediates are zeroized, but the code has not been audited for constant time.

mod diffusion;
mod error;
mod field;
mod share;

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub use error::ShamirError;

use field::{Elem, Field};

/// The largest secret, in bytes, that `ssss` can share (a field of degree 1024).
pub const MAX_SECRET_LEN: usize = field::MAX_DEGREE / 8;

/// How the secret is presented to `ssss` and how it comes back out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The tool's default mode: the secret is a line of text (`echo -n "$KEK" | ssss-split`).
    ///
    /// When splitting, the secret may not contain NUL, CR or LF bytes (the tool cannot read
    /// them). When combining, the result has no leading zero bytes, as the tool prints it (the
    /// tool shows non-printable bytes as `.`; this crate returns the raw bytes).
    Ascii,
    /// The tool's `-x` mode: the secret is binary, given to the tool as hex digits. Any bytes are
    /// allowed; the combined secret is always `hex digits of a share / 2` bytes long, leading zero
    /// bytes included.
    Hex,
}

/// Parameters of [`split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SplitOptions {
    /// How many shares are needed to recover the secret (`-t`), 2 to `shares`.
    pub threshold: u8,
    /// How many shares to produce (`-n`), `threshold` to 255.
    pub shares: u8,
    /// ASCII or hex (`-x`) mode. Only affects validation here and how `ssss-combine` prints the
    /// secret; the shares of the same bytes are computed the same way in both modes.
    pub mode: Mode,
    /// Whether to apply the tool's diffusion layer (on by default; `-D` turns it off). The tool
    /// only applies it to secrets of at least 8 bytes, and so does this crate.
    pub diffusion: bool,
}

impl SplitOptions {
    /// `threshold` of `shares` in `mode`, with diffusion on (the tool's default).
    pub fn new(threshold: u8, shares: u8, mode: Mode) -> Self {
        Self {
            threshold,
            shares,
            mode,
            diffusion: true,
        }
    }
}

impl Default for SplitOptions {
    /// The guide's `ssss-split -t 3 -n 5`: 3 of 5 shares, ASCII mode, diffusion on.
    fn default() -> Self {
        Self::new(3, 5, Mode::Ascii)
    }
}

/// A recovered secret. Wiped from memory on drop; its `Debug` output is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty (possible in ASCII mode when the recovered value is zero).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Splits `secret` into `opts.shares` share lines, any `opts.threshold` of which recover it.
///
/// The lines are formatted exactly like `ssss-split -Q` prints them: `INDEX-HEX`, the index
/// zero-padded to the number of digits of `opts.shares`, the value as `2 * secret.len()` lowercase
/// hex digits. They combine with `ssss-combine -t THRESHOLD` (add `-x` for [`Mode::Hex`], `-D`
/// when diffusion is off). The shares are secret material: handle them as such.
///
/// # Errors
///
/// [`ShamirError::InvalidThreshold`] unless `2 <= threshold <= shares`;
/// [`ShamirError::EmptySecret`] / [`ShamirError::SecretTooLong`] unless the secret is 1 to 128
/// bytes; [`ShamirError::InvalidAsciiByte`] in ASCII mode for NUL, CR or LF bytes;
/// [`ShamirError::Random`] if the system random number generator fails.
pub fn split(secret: &[u8], opts: &SplitOptions) -> Result<Vec<String>, ShamirError> {
    let rng = SystemRandom::new();
    split_with(secret, opts, |buf| {
        rng.fill(buf).map_err(|_| ShamirError::Random)
    })
}

/// [`split`] with an explicit source of random bytes for the coefficients.
fn split_with(
    secret: &[u8],
    opts: &SplitOptions,
    mut fill: impl FnMut(&mut [u8]) -> Result<(), ShamirError>,
) -> Result<Vec<String>, ShamirError> {
    if opts.threshold < 2 || opts.threshold > opts.shares {
        return Err(ShamirError::InvalidThreshold {
            threshold: opts.threshold,
            shares: opts.shares,
        });
    }
    if secret.is_empty() {
        return Err(ShamirError::EmptySecret);
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(ShamirError::SecretTooLong { len: secret.len() });
    }
    if opts.mode == Mode::Ascii {
        if let Some(offset) = secret.iter().position(|b| matches!(b, 0 | b'\n' | b'\r')) {
            return Err(ShamirError::InvalidAsciiByte { offset });
        }
    }
    let field = Field::new(8 * secret.len())?;

    let mut c0 = Zeroizing::new(secret.to_vec());
    if opts.diffusion && field.degree() >= diffusion::MIN_DIFFUSION_DEGREE {
        diffusion::diffuse(&mut c0);
    }
    let mut coefficients = Vec::with_capacity(usize::from(opts.threshold));
    coefficients.push(field.read_be(&c0));
    let mut random = Zeroizing::new(vec![0u8; field.byte_len()]);
    for _ in 1..opts.threshold {
        fill(&mut random)?;
        coefficients.push(field.read_be(&random));
    }

    let width = share::index_width(opts.shares);
    Ok((1..=opts.shares)
        .map(|index| {
            let y = evaluate(&field, &coefficients, u32::from(index));
            let bytes = Zeroizing::new(field.write_be(&y));
            share::format(index, width, &bytes)
        })
        .collect())
}

/// Evaluates the monic polynomial `x^t + c_(t-1) x^(t-1) + ... + c_0` (Horner's rule), where
/// `coefficients` holds `c_0 .. c_(t-1)` and `x` is a share index.
fn evaluate(field: &Field, coefficients: &[Elem], x: u32) -> Elem {
    let mut y = field.small(x);
    for c in coefficients.iter().skip(1).rev() {
        field.add_assign(&mut y, c);
        y = field.mul_small(&y, x);
    }
    if let Some(c0) = coefficients.first() {
        field.add_assign(&mut y, c0);
    }
    y
}

/// Evaluates at `x` the monic polynomial of degree `points.len()` through `points`
/// (`(index, value)` pairs with distinct non-zero indices). `None` if two indices coincide.
///
/// With `t = points.len()`, `f(x) - x^t` has degree below `t`, so ordinary Lagrange
/// interpolation of the values `y_i - x_i^t` gives it; the Lagrange weights depend only on the
/// public indices.
fn interpolate_at(field: &Field, points: &[(u8, Elem)], x: u32) -> Option<Elem> {
    let t = points.len();
    let power_t = |v: u32| {
        let mut p = field.small(1);
        for _ in 0..t {
            p = field.mul_small(&p, v);
        }
        p
    };
    let mut result = field.zero();
    for (i, (xi, yi)) in points.iter().enumerate() {
        let xi = u32::from(*xi);
        let mut numerator = field.small(1);
        let mut denominator = field.small(1);
        for (j, (xj, _)) in points.iter().enumerate() {
            if i != j {
                let xj = u32::from(*xj);
                numerator = field.mul_small(&numerator, x ^ xj);
                denominator = field.mul_small(&denominator, xi ^ xj);
            }
        }
        let weight = field.mul(&numerator, &field.inv(&denominator)?);
        let mut shifted = yi.clone();
        field.add_assign(&mut shifted, &power_t(xi));
        field.add_assign(&mut result, &field.mul(&shifted, &weight));
    }
    field.add_assign(&mut result, &power_t(x));
    Some(result)
}

/// Recovers the secret from share lines, as `ssss-combine -t THRESHOLD` does.
///
/// Each share is `[token-]INDEX-HEX` (surrounding whitespace is ignored); all shares must have
/// the same hex length and the same token (or none). Like the tool, only the first `threshold`
/// shares are used; any further ones are still checked for format, length, token and duplicate
/// index. `mode` and `diffusion` must match the split (`-x` means [`Mode::Hex`], `-D` means no
/// diffusion): a mismatch, or shares from different splits, yields a wrong secret, not an error.
///
/// In [`Mode::Hex`] the secret is `HEX length / 2` bytes, leading zero bytes included; in
/// [`Mode::Ascii`] leading zero bytes are dropped, as the tool prints it.
///
/// # Errors
///
/// [`ShamirError::InvalidThreshold`] if `threshold < 2`; [`ShamirError::TooFewShares`];
/// [`ShamirError::MalformedShare`]; [`ShamirError::InconsistentTokens`];
/// [`ShamirError::InconsistentLengths`]; [`ShamirError::UnsupportedLength`] if the hex length is
/// odd or above 256 digits; [`ShamirError::DuplicateIndex`].
pub fn combine(
    shares: &[&str],
    threshold: u8,
    mode: Mode,
    diffusion: bool,
) -> Result<Secret, ShamirError> {
    if threshold < 2 {
        return Err(ShamirError::InvalidThreshold {
            threshold,
            shares: u8::MAX,
        });
    }
    if shares.len() < usize::from(threshold) {
        return Err(ShamirError::TooFewShares {
            given: shares.len(),
            threshold,
        });
    }
    let parsed = shares
        .iter()
        .enumerate()
        .map(|(position, text)| share::parse(text, position))
        .collect::<Result<Vec<_>, _>>()?;
    let (first, rest) = match parsed.split_first() {
        Some(split) => split,
        None => {
            return Err(ShamirError::TooFewShares {
                given: 0,
                threshold,
            })
        }
    };
    for (offset, s) in rest.iter().enumerate() {
        let position = offset + 1;
        if s.token != first.token {
            return Err(ShamirError::InconsistentTokens { position });
        }
        if s.hex_len != first.hex_len {
            return Err(ShamirError::InconsistentLengths {
                position,
                expected: first.hex_len,
                found: s.hex_len,
            });
        }
    }
    let field = Field::new(4 * first.hex_len)?;
    let mut seen = [false; 256];
    for s in &parsed {
        let slot = &mut seen[usize::from(s.index)];
        if *slot {
            return Err(ShamirError::DuplicateIndex { index: s.index });
        }
        *slot = true;
    }

    let points: Vec<(u8, Elem)> = parsed
        .iter()
        .take(usize::from(threshold))
        .map(|s| (s.index, field.read_be(&s.value)))
        .collect();
    // Indices are distinct and non-zero (checked above), so every weight is defined and this
    // error cannot occur.
    let c0 = interpolate_at(&field, &points, 0)
        .ok_or(ShamirError::DuplicateIndex { index: first.index })?;
    let mut bytes = field.write_be(&c0);
    if diffusion && field.degree() >= diffusion::MIN_DIFFUSION_DEGREE {
        diffusion::undiffuse(&mut bytes);
    }
    if mode == Mode::Ascii {
        let leading = bytes.iter().take_while(|b| **b == 0).count();
        bytes.drain(..leading);
    }
    Ok(Secret(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// A deterministic "random" source for tests.
    fn counter_fill(seed: u8) -> impl FnMut(&mut [u8]) -> Result<(), ShamirError> {
        let mut n = seed;
        move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                n = n.wrapping_mul(167).wrapping_add(13);
                *b = n;
            }
            Ok(())
        }
    }

    fn ssss_split(secret: &str, args: &[&str]) -> Vec<String> {
        let mut child = Command::new("ssss-split")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssss-split not runnable: install the Debian package ssss");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(secret.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "ssss-split failed: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(s.expose(), b"hunter2");
        assert_eq!(s.len(), 7);
        assert!(!s.is_empty());
    }

    #[test]
    fn split_options_default_to_diffusion_on() {
        let o = SplitOptions::default();
        assert_eq!(
            (o.threshold, o.shares, o.mode, o.diffusion),
            (3, 5, Mode::Ascii, true)
        );
        assert!(SplitOptions::new(2, 2, Mode::Hex).diffusion);
    }

    #[test]
    fn shares_are_the_monic_polynomial_at_the_indices() {
        // t = 2 without diffusion in GF(2^8): f(x) = x^2 + c1 x + c0.
        let opts = SplitOptions {
            threshold: 2,
            shares: 3,
            mode: Mode::Hex,
            diffusion: false,
        };
        let shares = split_with(&[0x41], &opts, |buf| {
            buf.copy_from_slice(&[0x10]);
            Ok(())
        })
        .unwrap();
        // f(1) = 1 ^ 0x10 ^ 0x41 = 0x50; f(2) = 4 ^ 0x20 ^ 0x41 = 0x65;
        // f(3) = 5 ^ 0x30 ^ 0x41 = 0x74 (3 * 3 = x^2 + 1 = 5, 0x10 * 3 = 0x30).
        assert_eq!(shares, vec!["1-50", "2-65", "3-74"]);
        let secret = combine(&["2-65", "3-74"], 2, Mode::Hex, false).unwrap();
        assert_eq!(secret.expose(), &[0x41]);
    }

    /// The (index, value) points of share lines, for interpolation.
    fn share_points(field: &Field, lines: &[String]) -> Vec<(u8, Elem)> {
        lines
            .iter()
            .map(|l| {
                let s = share::parse(l, 0).unwrap();
                (s.index, field.read_be(&s.value))
            })
            .collect()
    }

    #[test]
    fn interpolation_reproduces_every_share() {
        for len in [1usize, 7, 8, 9, 32, 44, 128] {
            let secret: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37) | 1).collect();
            let opts = SplitOptions {
                threshold: 4,
                shares: 12,
                mode: Mode::Hex,
                diffusion: true,
            };
            let lines = split_with(&secret, &opts, counter_fill(len as u8)).unwrap();
            assert!(lines[0].starts_with("01-") && lines[11].starts_with("12-"));
            let field = Field::new(8 * len).unwrap();
            let points = share_points(&field, &lines[3..7]);
            for (i, line) in lines.iter().enumerate() {
                let index = (i + 1) as u8;
                let y = interpolate_at(&field, &points, u32::from(index)).unwrap();
                assert_eq!(&share::format(index, 2, &field.write_be(&y)), line);
            }
        }
    }

    #[test]
    fn split_validates_its_input() {
        let opts = SplitOptions::new(3, 5, Mode::Ascii);
        assert_eq!(split(b"", &opts), Err(ShamirError::EmptySecret));
        assert_eq!(
            split(&[b'a'; 129], &opts),
            Err(ShamirError::SecretTooLong { len: 129 })
        );
        assert!(split(&[b'a'; 128], &opts).is_ok());
        for (secret, offset) in [(&b"ab\ncd"[..], 2), (b"\rab", 0), (b"abc\0", 3)] {
            assert_eq!(
                split(secret, &opts),
                Err(ShamirError::InvalidAsciiByte { offset })
            );
            assert!(split(secret, &SplitOptions::new(3, 5, Mode::Hex)).is_ok());
        }
        for (t, n) in [(0, 5), (1, 5), (6, 5), (2, 1), (255, 254)] {
            assert_eq!(
                split(b"abc", &SplitOptions::new(t, n, Mode::Ascii)),
                Err(ShamirError::InvalidThreshold {
                    threshold: t,
                    shares: n
                })
            );
        }
        let lines = split(b"abc", &SplitOptions::new(2, 255, Mode::Ascii)).unwrap();
        assert_eq!(lines.len(), 255);
        assert!(lines[0].starts_with("001-") && lines[254].starts_with("255-"));
    }

    #[test]
    fn split_reports_rng_failure() {
        let opts = SplitOptions::new(2, 3, Mode::Hex);
        assert_eq!(
            split_with(b"abc", &opts, |_| Err(ShamirError::Random)),
            Err(ShamirError::Random)
        );
    }

    /// From t shares printed by `ssss-split`, our interpolation must reproduce every other
    /// line of the tool's output byte for byte (index padding, hex width and value).
    #[test]
    fn reproduces_ssss_split_output_byte_for_byte() {
        let cases: [(&str, &[&str]); 6] = [
            (
                "0123456789abcdef0123456789abcdef0123456789ab",
                &["-t", "3", "-n", "5", "-Q"],
            ),
            (
                "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5",
                &["-t", "3", "-n", "12", "-Q", "-D"],
            ),
            (
                "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff",
                &["-t", "2", "-n", "100", "-Q", "-x"],
            ),
            ("k", &["-t", "4", "-n", "9", "-Q"]),
            ("abcdefgh", &["-t", "5", "-n", "7", "-Q"]),
            ("a", &["-t", "2", "-n", "255", "-Q"]),
        ];
        for (secret, args) in cases {
            let lines = ssss_split(secret, args);
            let t: usize = args[1].parse().unwrap();
            let n: u8 = args[3].parse().unwrap();
            assert_eq!(lines.len(), usize::from(n));
            let first = share::parse(&lines[0], 0).unwrap();
            let field = Field::new(4 * first.hex_len).unwrap();
            let points = share_points(&field, &lines[..t]);
            for (i, line) in lines.iter().enumerate() {
                let index = u8::try_from(i + 1).unwrap();
                let y = interpolate_at(&field, &points, u32::from(index)).unwrap();
                let ours = share::format(index, share::index_width(n), &field.write_be(&y));
                assert_eq!(&ours, line, "{secret} {args:?}");
            }
        }
    }
}
