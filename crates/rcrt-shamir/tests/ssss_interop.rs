//! Round trips, error cases, and interoperability with the real `ssss-split` / `ssss-combine`
//! (Debian package `ssss`, version 0.5). The interop tests fail, not skip, without the tool.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::ErrorKind;
use std::process::{Command, Output};

use proptest::prelude::*;
use rcrt_shamir::{combine, split, Mode, ShamirError, SplitOptions, MAX_SECRET_LEN};
use ring::rand::{SecureRandom, SystemRandom};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const INSTALL_HINT: &str = "install the Debian package ssss";

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    SystemRandom::new().fill(&mut buf).unwrap();
    buf
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A random KEK as the guide writes it: 32 random bytes in base64, 44 characters.
fn random_kek_b64() -> String {
    let kek = base64(&random_bytes(32));
    assert_eq!(kek.len(), 44);
    kek
}

/// A random printable ASCII string (no spaces, so no surprises with line handling).
fn random_printable(len: usize) -> String {
    random_bytes(len)
        .iter()
        .map(|b| char::from(b'!' + b % 94))
        .collect()
}

fn run_tool(program: &str, args: &[&str], stdin: &str) -> Output {
    match rcrt_testkit::spawn_with_stdin(Command::new(program).args(args), stdin) {
        Ok(child) => child.wait_with_output().unwrap(),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("`{program}` not found: {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot run `{program}` ({e}): {INSTALL_HINT}"),
    }
}

/// `echo -n SECRET | ssss-split -t T -n N -Q [-x] [-D]`; returns the share lines.
fn ssss_split(secret: &str, t: u8, n: u8, mode: Mode, diffusion: bool) -> Vec<String> {
    let (t, n) = (t.to_string(), n.to_string());
    let mut args = vec!["-t", &t, "-n", &n, "-Q"];
    if mode == Mode::Hex {
        args.push("-x");
    }
    if !diffusion {
        args.push("-D");
    }
    let out = run_tool("ssss-split", &args, secret);
    assert!(out.status.success(), "ssss-split failed: {out:?}");
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), n.parse::<usize>().unwrap());
    lines
}

/// `printf '%s\n' SHARES | ssss-combine -t T -Q [-x] [-D]`; returns what it prints (on stderr)
/// without the final newline.
fn ssss_combine(shares: &[&str], t: u8, mode: Mode, diffusion: bool) -> String {
    let t = t.to_string();
    let mut args = vec!["-t", &t, "-Q"];
    if mode == Mode::Hex {
        args.push("-x");
    }
    if !diffusion {
        args.push("-D");
    }
    let input: String = shares.iter().map(|s| format!("{s}\n")).collect();
    let out = run_tool("ssss-combine", &args, &input);
    assert!(out.status.success(), "ssss-combine failed: {out:?}");
    let printed = String::from_utf8(out.stderr).unwrap();
    printed
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no newline after the secret: {printed:?}"))
        .to_owned()
}

/// Every subset of `0..n` of size `k`, as index lists.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize == k {
            out.push((0..n).filter(|i| mask & (1 << i) != 0).collect());
        }
    }
    out
}

fn pick<'a>(lines: &'a [String], which: &[usize]) -> Vec<&'a str> {
    which.iter().map(|&i| lines[i].as_str()).collect()
}

fn opts(t: u8, n: u8, mode: Mode, diffusion: bool) -> SplitOptions {
    SplitOptions {
        threshold: t,
        shares: n,
        mode,
        diffusion,
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

fn check_round_trip_all_subsets(secret: &[u8], mode: Mode, diffusion: bool) {
    for t in 2..=5u8 {
        let lines = split(secret, &opts(t, 5, mode, diffusion)).unwrap();
        assert_eq!(lines.len(), 5);
        for (i, line) in lines.iter().enumerate() {
            assert!(line.starts_with(&format!("{}-", i + 1)), "{line}");
            assert_eq!(line.len(), 2 + 2 * secret.len());
        }
        for subset in subsets(5, usize::from(t)) {
            let shares = pick(&lines, &subset);
            let got = combine(&shares, t, mode, diffusion).unwrap();
            assert_eq!(got.expose(), secret, "t={t} subset={subset:?}");
        }
        for subset in subsets(5, usize::from(t) - 1) {
            let shares = pick(&lines, &subset);
            assert_eq!(
                combine(&shares, t, mode, diffusion).unwrap_err(),
                ShamirError::TooFewShares {
                    given: usize::from(t) - 1,
                    threshold: t
                }
            );
            if t > 2 {
                // Claiming a lower threshold "works" but gives a different value.
                let wrong = combine(&shares, t - 1, mode, diffusion).unwrap();
                assert_ne!(wrong.expose(), secret, "t={t} subset={subset:?}");
            }
        }
    }
}

#[test]
fn round_trip_ascii_base64_kek_every_subset() {
    for _ in 0..3 {
        let kek = random_kek_b64();
        check_round_trip_all_subsets(kek.as_bytes(), Mode::Ascii, true);
    }
    check_round_trip_all_subsets(random_kek_b64().as_bytes(), Mode::Ascii, false);
}

#[test]
fn round_trip_hex_32_random_bytes_every_subset() {
    for _ in 0..3 {
        check_round_trip_all_subsets(&random_bytes(32), Mode::Hex, true);
    }
    check_round_trip_all_subsets(&random_bytes(32), Mode::Hex, false);
    // Leading zero bytes survive in hex mode.
    let mut secret = random_bytes(32);
    secret[..3].copy_from_slice(&[0, 0, 0]);
    check_round_trip_all_subsets(&secret, Mode::Hex, true);
}

#[test]
fn more_shares_than_threshold_uses_the_first_threshold_shares() {
    let secret = random_bytes(32);
    let lines = split(&secret, &opts(3, 5, Mode::Hex, true)).unwrap();
    let all: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(combine(&all, 3, Mode::Hex, true).unwrap().expose(), secret);
}

#[test]
fn wrong_diffusion_setting_gives_a_different_secret() {
    let secret = random_bytes(32);
    let lines = split(&secret, &opts(2, 3, Mode::Hex, true)).unwrap();
    let shares = pick(&lines, &[0, 1]);
    assert_ne!(
        combine(&shares, 2, Mode::Hex, false).unwrap().expose(),
        secret
    );
}

#[test]
fn tokens_are_accepted_when_consistent() {
    let secret = random_kek_b64();
    let lines = split(secret.as_bytes(), &opts(2, 3, Mode::Ascii, true)).unwrap();
    let with_token: Vec<String> = lines.iter().map(|l| format!("kek-{l}")).collect();
    let shares = pick(&with_token, &[0, 2]);
    assert_eq!(
        combine(&shares, 2, Mode::Ascii, true).unwrap().expose(),
        secret.as_bytes()
    );
    let mixed = [with_token[0].as_str(), lines[1].as_str()];
    assert_eq!(
        combine(&mixed, 2, Mode::Ascii, true).unwrap_err(),
        ShamirError::InconsistentTokens { position: 1 }
    );
    let other = format!("other-{}", lines[1]);
    assert_eq!(
        combine(
            &[with_token[0].as_str(), other.as_str()],
            2,
            Mode::Ascii,
            true
        )
        .unwrap_err(),
        ShamirError::InconsistentTokens { position: 1 }
    );
}

#[test]
fn round_trip_every_length_both_modes() {
    for len in 1..=MAX_SECRET_LEN {
        let ascii = random_printable(len);
        let lines = split(ascii.as_bytes(), &opts(3, 4, Mode::Ascii, true)).unwrap();
        let got = combine(&pick(&lines, &[3, 0, 2]), 3, Mode::Ascii, true).unwrap();
        assert_eq!(got.expose(), ascii.as_bytes(), "len {len}");

        let raw = random_bytes(len);
        let lines = split(&raw, &opts(2, 3, Mode::Hex, false)).unwrap();
        let got = combine(&pick(&lines, &[2, 1]), 2, Mode::Hex, false).unwrap();
        assert_eq!(got.expose(), raw.as_slice(), "len {len}");
    }
}

#[test]
fn secret_debug_does_not_leak() {
    let lines = split(b"top secret", &opts(2, 2, Mode::Ascii, true)).unwrap();
    let secret = combine(&pick(&lines, &[0, 1]), 2, Mode::Ascii, true).unwrap();
    let shown = format!("{secret:?}");
    assert!(!shown.contains("top secret"), "{shown}");
    assert!(shown.contains("REDACTED"));
}

// ---------------------------------------------------------------------------------------------
// Error cases
// ---------------------------------------------------------------------------------------------

#[test]
fn error_duplicate_index() {
    let lines = split(&random_bytes(32), &opts(3, 5, Mode::Hex, true)).unwrap();
    let shares = [lines[0].as_str(), lines[1].as_str(), lines[0].as_str()];
    assert_eq!(
        combine(&shares, 3, Mode::Hex, true).unwrap_err(),
        ShamirError::DuplicateIndex { index: 1 }
    );
    // Same index with a different value (from another split) is also a duplicate.
    let other = split(&random_bytes(32), &opts(3, 5, Mode::Hex, true)).unwrap();
    let shares = [lines[0].as_str(), lines[1].as_str(), other[1].as_str()];
    assert_eq!(
        combine(&shares, 3, Mode::Hex, true).unwrap_err(),
        ShamirError::DuplicateIndex { index: 2 }
    );
    // Padding does not hide a duplicate.
    let padded = format!("0{}", lines[1]);
    let shares = [lines[0].as_str(), lines[1].as_str(), padded.as_str()];
    assert_eq!(
        combine(&shares, 3, Mode::Hex, true).unwrap_err(),
        ShamirError::DuplicateIndex { index: 2 }
    );
}

#[test]
fn error_too_few_shares() {
    let lines = split(b"abc", &opts(3, 5, Mode::Ascii, true)).unwrap();
    assert_eq!(
        combine(&pick(&lines, &[0, 1]), 3, Mode::Ascii, true).unwrap_err(),
        ShamirError::TooFewShares {
            given: 2,
            threshold: 3
        }
    );
    assert_eq!(
        combine(&[], 2, Mode::Ascii, true).unwrap_err(),
        ShamirError::TooFewShares {
            given: 0,
            threshold: 2
        }
    );
}

#[test]
fn error_invalid_threshold() {
    for t in [0u8, 1] {
        assert_eq!(
            combine(&["1-00", "2-00"], t, Mode::Hex, true).unwrap_err(),
            ShamirError::InvalidThreshold {
                threshold: t,
                shares: 255
            }
        );
    }
    assert_eq!(
        split(b"abc", &opts(4, 3, Mode::Ascii, true)).unwrap_err(),
        ShamirError::InvalidThreshold {
            threshold: 4,
            shares: 3
        }
    );
}

#[test]
fn error_malformed_shares() {
    let lines = split(&random_bytes(4), &opts(2, 3, Mode::Hex, true)).unwrap();
    let good = lines[0].as_str();
    for (bad, reason) in [
        ("12345678", "no '-' between index and value"),
        ("0-12345678", "the index is 0"),
        ("x-12345678", "the index is not a decimal number"),
        ("-12345678", "the index is not a decimal number"),
        ("300-12345678", "the index is above 255"),
        ("2-1234567g", "the value is not hexadecimal"),
        ("2-", "the value is empty"),
        ("a-b-2-12345678", "too many '-' separators"),
    ] {
        assert_eq!(
            combine(&[good, bad], 2, Mode::Hex, true).unwrap_err(),
            ShamirError::MalformedShare {
                position: 1,
                reason
            },
            "{bad}"
        );
    }
}

#[test]
fn error_mixed_lengths_and_unsupported_lengths() {
    let a = split(&random_bytes(32), &opts(2, 3, Mode::Hex, true)).unwrap();
    let b = split(&random_bytes(16), &opts(2, 3, Mode::Hex, true)).unwrap();
    assert_eq!(
        combine(&[a[0].as_str(), b[1].as_str()], 2, Mode::Hex, true).unwrap_err(),
        ShamirError::InconsistentLengths {
            position: 1,
            expected: 64,
            found: 32
        }
    );
    // An odd number of hex digits is not a whole number of bytes.
    assert_eq!(
        combine(&["1-abc", "2-def"], 2, Mode::Hex, true).unwrap_err(),
        ShamirError::UnsupportedLength { degree: 12 }
    );
    // More than 128 bytes.
    let long = "ab".repeat(129);
    let (s1, s2) = (format!("1-{long}"), format!("2-{long}"));
    assert_eq!(
        combine(&[s1.as_str(), s2.as_str()], 2, Mode::Hex, true).unwrap_err(),
        ShamirError::UnsupportedLength { degree: 1032 }
    );
}

#[test]
fn error_secret_length() {
    let o = opts(2, 3, Mode::Hex, true);
    assert_eq!(split(b"", &o).unwrap_err(), ShamirError::EmptySecret);
    assert_eq!(
        split(&[7u8; 129], &o).unwrap_err(),
        ShamirError::SecretTooLong { len: 129 }
    );
    assert_eq!(
        split(b"line\nbreak", &opts(2, 3, Mode::Ascii, true)).unwrap_err(),
        ShamirError::InvalidAsciiByte { offset: 4 }
    );
}

// ---------------------------------------------------------------------------------------------
// Interop with the real tool
// ---------------------------------------------------------------------------------------------

/// The guide's case: `echo -n "$KEK" | ssss-split -t 3 -n 5 -Q`, combined by us.
#[test]
fn interop_ssss_split_ascii_kek_to_our_combine() {
    for _ in 0..5 {
        let kek = random_kek_b64();
        let lines = ssss_split(&kek, 3, 5, Mode::Ascii, true);
        for subset in subsets(5, 3) {
            let got = combine(&pick(&lines, &subset), 3, Mode::Ascii, true).unwrap();
            assert_eq!(got.expose(), kek.as_bytes(), "subset {subset:?}");
        }
    }
}

/// Our split of the guide's KEK string, combined by `ssss-combine -t 3 -Q`.
#[test]
fn interop_our_split_ascii_kek_to_ssss_combine() {
    for _ in 0..5 {
        let kek = random_kek_b64();
        let lines = split(kek.as_bytes(), &opts(3, 5, Mode::Ascii, true)).unwrap();
        for subset in subsets(5, 3) {
            let printed = ssss_combine(&pick(&lines, &subset), 3, Mode::Ascii, true);
            assert_eq!(printed, kek, "subset {subset:?}");
        }
    }
}

/// 32 raw bytes as 64 hex digits: `ssss-split -x` to our combine.
#[test]
fn interop_ssss_split_hex_32_bytes_to_our_combine() {
    for _ in 0..5 {
        let key = random_bytes(32);
        let lines = ssss_split(&to_hex(&key), 3, 5, Mode::Hex, true);
        for subset in subsets(5, 3) {
            let got = combine(&pick(&lines, &subset), 3, Mode::Hex, true).unwrap();
            assert_eq!(got.expose(), key.as_slice(), "subset {subset:?}");
        }
    }
}

/// 32 raw bytes: our split to `ssss-combine -x`, which prints 64 hex digits.
#[test]
fn interop_our_split_hex_32_bytes_to_ssss_combine() {
    for _ in 0..5 {
        let key = random_bytes(32);
        let lines = split(&key, &opts(3, 5, Mode::Hex, true)).unwrap();
        for subset in subsets(5, 3) {
            let printed = ssss_combine(&pick(&lines, &subset), 3, Mode::Hex, true);
            assert_eq!(printed, to_hex(&key), "subset {subset:?}");
        }
    }
}

/// Diffusion off (`-D`), both directions, both modes.
#[test]
fn interop_without_diffusion() {
    for _ in 0..3 {
        let kek = random_kek_b64();
        let lines = ssss_split(&kek, 3, 5, Mode::Ascii, false);
        let got = combine(&pick(&lines, &[4, 1, 2]), 3, Mode::Ascii, false).unwrap();
        assert_eq!(got.expose(), kek.as_bytes());
        // The tool's shares really were made without diffusion: with it, the result differs.
        let diffused = combine(&pick(&lines, &[4, 1, 2]), 3, Mode::Ascii, true).unwrap();
        assert_ne!(diffused.expose(), kek.as_bytes());

        let ours = split(kek.as_bytes(), &opts(3, 5, Mode::Ascii, false)).unwrap();
        assert_eq!(
            ssss_combine(&pick(&ours, &[0, 3, 4]), 3, Mode::Ascii, false),
            kek
        );

        let key = random_bytes(32);
        let lines = ssss_split(&to_hex(&key), 2, 3, Mode::Hex, false);
        let got = combine(&pick(&lines, &[2, 0]), 2, Mode::Hex, false).unwrap();
        assert_eq!(got.expose(), key.as_slice());
        let ours = split(&key, &opts(2, 3, Mode::Hex, false)).unwrap();
        assert_eq!(
            ssss_combine(&pick(&ours, &[1, 2]), 2, Mode::Hex, false),
            to_hex(&key)
        );
    }
}

/// Tokens and zero-padded indices written by `ssss-split -w TOKEN -n 12`.
#[test]
fn interop_ssss_tokens_and_padded_indices() {
    let kek = random_kek_b64();
    let out = run_tool(
        "ssss-split",
        &["-t", "4", "-n", "12", "-w", "kek", "-Q"],
        &kek,
    );
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(lines[0].starts_with("kek-01-"), "{}", lines[0]);
    let got = combine(&pick(&lines, &[11, 0, 5, 9]), 4, Mode::Ascii, true).unwrap();
    assert_eq!(got.expose(), kek.as_bytes());

    let ours = split(kek.as_bytes(), &opts(4, 12, Mode::Ascii, true)).unwrap();
    assert!(ours[0].starts_with("01-") && ours[11].starts_with("12-"));
    assert_eq!(
        ssss_combine(&pick(&ours, &[10, 2, 7, 3]), 4, Mode::Ascii, true),
        kek
    );
}

/// Every field degree (every secret length 1..=128 bytes), both modes, with and without
/// diffusion, both directions. This is what makes every entry of the modulus table verified.
#[test]
fn interop_every_supported_length() {
    for len in 1..=MAX_SECRET_LEN {
        for diffusion in [true, false] {
            // Hex mode, with a leading zero byte now and then.
            let mut raw = random_bytes(len);
            if len % 5 == 0 {
                raw[0] = 0;
            }
            let lines = ssss_split(&to_hex(&raw), 3, 5, Mode::Hex, diffusion);
            assert_eq!(lines[0].len(), 2 + 2 * len);
            let got = combine(&pick(&lines, &[0, 2, 4]), 3, Mode::Hex, diffusion).unwrap();
            assert_eq!(got.expose(), raw.as_slice(), "hex len {len} d={diffusion}");

            let ours = split(&raw, &opts(3, 5, Mode::Hex, diffusion)).unwrap();
            let printed = ssss_combine(&pick(&ours, &[1, 3, 4]), 3, Mode::Hex, diffusion);
            assert_eq!(printed, to_hex(&raw), "hex len {len} d={diffusion}");

            // ASCII mode.
            let text = random_printable(len);
            let lines = ssss_split(&text, 2, 3, Mode::Ascii, diffusion);
            let got = combine(&pick(&lines, &[2, 0]), 2, Mode::Ascii, diffusion).unwrap();
            assert_eq!(
                got.expose(),
                text.as_bytes(),
                "ascii len {len} d={diffusion}"
            );

            let ours = split(text.as_bytes(), &opts(2, 3, Mode::Ascii, diffusion)).unwrap();
            let printed = ssss_combine(&pick(&ours, &[1, 2]), 2, Mode::Ascii, diffusion);
            assert_eq!(printed, text, "ascii len {len} d={diffusion}");
        }
    }
}

/// Non-printable bytes in ASCII mode: the tool accepts them; we agree on the value (the tool
/// prints them as '.', so compare through its hex output).
#[test]
fn interop_ascii_mode_with_high_bytes() {
    let secret = [0xffu8, 0x01, b'a', 0x80, 0x7f, b'z', 0x02, 0x90, 0x10];
    let ours = split(&secret, &opts(2, 2, Mode::Ascii, true)).unwrap();
    let printed = ssss_combine(&pick(&ours, &[0, 1]), 2, Mode::Hex, true);
    assert_eq!(printed, to_hex(&secret));
}

/// A secret whose leading bytes recover as zero: in ASCII mode both we and the tool drop them.
#[test]
fn ascii_combine_drops_leading_zero_bytes_like_the_tool() {
    let raw = [0u8, 0, b'A', b'B', b'C', b'D', b'E', b'F', b'G', b'H'];
    let lines = ssss_split(&to_hex(&raw), 2, 3, Mode::Hex, true);
    let shares = pick(&lines, &[0, 1]);
    assert_eq!(ssss_combine(&shares, 2, Mode::Ascii, true), "ABCDEFGH");
    let ours = combine(&shares, 2, Mode::Ascii, true).unwrap();
    assert_eq!(ours.expose(), b"ABCDEFGH");
    assert_eq!(
        combine(&shares, 2, Mode::Hex, true).unwrap().expose(),
        raw.as_slice()
    );
}

// ---------------------------------------------------------------------------------------------
// Property test
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_round_trip(
        secret in proptest::collection::vec(any::<u8>(), 1..=64),
        t in 2u8..=6,
        extra in 0u8..=4,
        hex in any::<bool>(),
        diffusion in any::<bool>(),
        rotate in 0usize..10,
    ) {
        let n = t + extra;
        let mode = if hex { Mode::Hex } else { Mode::Ascii };
        let secret: Vec<u8> = if hex {
            secret
        } else {
            // ASCII mode cannot carry NUL, CR or LF.
            secret.into_iter().map(|b| if matches!(b, 0 | b'\n' | b'\r') { b'x' } else { b }).collect()
        };
        let lines = split(&secret, &opts(t, n, mode, diffusion)).unwrap();
        prop_assert_eq!(lines.len(), usize::from(n));
        let mut order: Vec<usize> = (0..usize::from(n)).collect();
        order.rotate_left(rotate % usize::from(n));
        let shares = pick(&lines, &order[..usize::from(t)]);
        let got = combine(&shares, t, mode, diffusion).unwrap();
        prop_assert_eq!(got.expose(), secret.as_slice());
    }
}
