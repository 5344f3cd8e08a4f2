//! `rcrt kek split` / `rcrt kek combine` through the real binary: every threshold with several
//! subsets, interoperability both ways with the real `ssss-split` / `ssss-combine` (Debian
//! package `ssss`; these tests fail, not skip, without it) in text and hex (`-x`) mode, and the
//! ways a recovery goes wrong (too few, duplicated, corrupted or mixed shares) — which must never
//! print a wrong KEK with exit 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::ErrorKind;
use std::process::{Command, Output};

mod common;
use common::{kek_id, new_kek, rcrt_cmd, run_with_stdin, show, spawn_with_stdin, text, Kek};

const INSTALL_HINT: &str = "install the Debian package ssss";

/// An `ssss-*` tool run to its end; a missing tool fails the test with the install hint.
fn ssss(program: &str, args: &[&str], stdin: &str) -> Output {
    match spawn_with_stdin(Command::new(program).args(args), stdin) {
        Ok(child) => child.wait_with_output().unwrap(),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("`{program}` not found: {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot run `{program}` ({e})"),
    }
}

fn rcrt(args: &[&str], stdin: &str) -> Output {
    run_with_stdin(rcrt_cmd().args(args), stdin)
}

/// The id on a `KEK id: ...` stderr line.
fn stderr_id(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("KEK id: "))
        .unwrap_or_else(|| panic!("no KEK id line:\n{}", show(out)));
    line.split_whitespace().next().unwrap().to_owned()
}

fn lines(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn split(kek: &Kek, t: u8, n: u8, hex: bool) -> Vec<String> {
    let (t_s, n_s) = (t.to_string(), n.to_string());
    let mut args = vec!["kek", "split", "-t", &t_s, "-n", &n_s];
    if hex {
        args.push("--hex");
    }
    let out = rcrt(&args, &format!("{}\n", kek.text));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stderr_id(&out), kek.id);
    assert!(
        text(&out.stderr).contains(&format!("({t} of {n} shares recover it)")),
        "{}",
        show(&out)
    );
    assert!(!text(&out.stderr).contains(&kek.text));
    assert!(!text(&out.stdout).contains(&kek.text));
    let shares = lines(&out);
    assert_eq!(shares.len(), usize::from(n), "{}", show(&out));
    for (i, s) in shares.iter().enumerate() {
        let (index, digits) = s.split_once('-').unwrap();
        assert_eq!(index, (i + 1).to_string(), "{s}");
        assert!(digits.bytes().all(|b| b.is_ascii_hexdigit()), "{s}");
        // Text mode shares the 44 characters (352 bits); hex mode the 32 key bytes (256 bits).
        assert_eq!(digits.len(), if hex { 64 } else { 88 }, "{s}");
    }
    shares
}

fn combine(shares: &[&str], t: u8, hex: bool) -> Output {
    let t_s = t.to_string();
    let mut args = vec!["kek", "combine", "-t", &t_s];
    if hex {
        args.push("--hex");
    }
    let input: String = shares.iter().map(|s| format!("{s}\n")).collect();
    rcrt(&args, &input)
}

/// `rcrt kek combine` must print exactly the original KEK and its id.
fn assert_recovers(out: &Output, kek: &Kek) {
    assert!(out.status.success(), "{}", show(out));
    assert_eq!(text(&out.stdout), format!("{}\n", kek.text));
    assert_eq!(stderr_id(out), kek.id);
}

/// `rcrt kek combine` must fail: exit 1, nothing on stdout, the reason on stderr.
fn assert_refused(out: &Output, reason: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert!(text(&out.stdout).is_empty(), "{}", show(out));
    assert!(text(&out.stderr).contains(reason), "{}", show(out));
}

/// Every `k`-subset of `0..n`, in lexicographic order.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    fn go(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            go(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(0, n, k, &mut Vec::new(), &mut out);
    out
}

fn pick<'a>(shares: &'a [String], idx: &[usize]) -> Vec<&'a str> {
    idx.iter().map(|&i| shares[i].as_str()).collect()
}

fn hex_of(kek: &Kek) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(&kek.text)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Round trips through rcrt
// ---------------------------------------------------------------------------------------------

#[test]
fn every_threshold_and_several_subsets_recover_the_kek() {
    let kek = new_kek();
    for t in 2..=5u8 {
        for hex in [false, true] {
            let shares = split(&kek, t, 5, hex);
            let all = subsets(5, usize::from(t));
            // Text mode: every subset; hex mode: every other one (the arithmetic is the same).
            for (n, idx) in all.iter().enumerate() {
                if hex && n % 2 == 1 {
                    continue;
                }
                assert_recovers(&combine(&pick(&shares, idx), t, hex), &kek);
            }
            // Order does not matter, and extra shares beyond the threshold are fine.
            let mut reversed: Vec<usize> = all[all.len() / 2].clone();
            reversed.reverse();
            assert_recovers(&combine(&pick(&shares, &reversed), t, hex), &kek);
            assert_recovers(&combine(&pick(&shares, &[4, 3, 2, 1, 0]), t, hex), &kek);
        }
    }
    // Two splits of one KEK differ (fresh randomness) and both recover it.
    let a = split(&kek, 3, 5, false);
    let b = split(&kek, 3, 5, false);
    assert_ne!(a, b);
    assert_recovers(&combine(&pick(&b, &[0, 2, 4]), 3, false), &kek);
    // Shares may come with surrounding blank lines and spaces, as pasted by a person.
    let pasted = format!("\n  {}  \n\n{}\n   \n{}\n", a[1], a[3], a[4]);
    assert_recovers(
        &rcrt(&["kek", "combine", "--threshold", "3"], &pasted),
        &kek,
    );
}

#[test]
fn split_refuses_bad_input_without_echoing_it() {
    let kek = new_kek();
    for (args, reason) in [
        (
            vec!["kek", "split", "-t", "1", "-n", "5"],
            "invalid threshold",
        ),
        (
            vec!["kek", "split", "-t", "6", "-n", "5"],
            "invalid threshold",
        ),
    ] {
        let out = rcrt(&args, &format!("{}\n", kek.text));
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(text(&out.stderr).contains(reason), "{}", show(&out));
        assert!(text(&out.stdout).is_empty());
    }
    let not_a_kek = "this is not a KEK but a long secret sentence";
    let out = rcrt(&["kek", "split", "-t", "3", "-n", "5"], not_a_kek);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("Invalid KEK format"));
    assert!(!text(&out.stderr).contains(not_a_kek));
    assert!(text(&out.stdout).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Interoperability with ssss
// ---------------------------------------------------------------------------------------------

/// `ssss-split`'s share lines (stdout; prompts and notes go to stderr).
fn ssss_split(args: &[&str], secret: &str) -> Vec<String> {
    let out = ssss("ssss-split", args, &format!("{secret}\n"));
    assert!(out.status.success(), "ssss-split: {}", show(&out));
    lines(&out)
}

/// `ssss-combine -Q`'s result: the secret, printed on stderr.
fn ssss_combine(args: &[&str], shares: &[&str]) -> String {
    let input: String = shares.iter().map(|s| format!("{s}\n")).collect();
    let out = ssss("ssss-combine", args, &input);
    assert!(out.status.success(), "ssss-combine: {}", show(&out));
    text(&out.stderr).trim().to_owned()
}

#[test]
fn the_guides_ssss_split_shares_combine_with_rcrt() {
    let kek = new_kek();
    // The guide: echo "$LOCAL_KEK_BASE64" | ssss-split -t 3 -n 5 (here quiet: -Q).
    let shares = ssss_split(&["-t", "3", "-n", "5", "-Q"], &kek.text);
    assert_eq!(shares.len(), 5);
    for idx in subsets(5, 3) {
        assert_recovers(&combine(&pick(&shares, &idx), 3, false), &kek);
    }
    // Without -Q (the guide's `> kek-shares.txt`): stdout starts with a note line, then the
    // shares. The note is not a share: rcrt refuses it as ssss-combine does, and the shares
    // themselves combine.
    let file = ssss_split(&["-t", "3", "-n", "5"], &kek.text);
    assert_eq!(file.len(), 6, "{file:?}");
    assert!(file[0].starts_with("Generating shares"), "{file:?}");
    assert_refused(
        &combine(&pick(&file, &[0, 1, 2, 3]), 3, false),
        "malformed share at position 0",
    );
    let shares = &file[1..];
    assert_recovers(&combine(&pick(shares, &[4, 0, 2]), 3, false), &kek);
    // Other thresholds.
    for t in [2u8, 4, 5] {
        let t_s = t.to_string();
        let shares = ssss_split(&["-t", &t_s, "-n", "5", "-Q"], &kek.text);
        let all = subsets(5, usize::from(t));
        for idx in [&all[0], &all[all.len() - 1]] {
            assert_recovers(&combine(&pick(&shares, idx), t, false), &kek);
        }
    }
}

#[test]
fn rcrt_shares_combine_with_ssss_combine() {
    let kek = new_kek();
    let shares = split(&kek, 3, 5, false);
    for idx in subsets(5, 3) {
        assert_eq!(
            ssss_combine(&["-t", "3", "-Q"], &pick(&shares, &idx)),
            kek.text
        );
    }
    for t in [2u8, 4, 5] {
        let t_s = t.to_string();
        let shares = split(&kek, t, 5, false);
        let all = subsets(5, usize::from(t));
        assert_eq!(
            ssss_combine(&["-t", &t_s, "-Q"], &pick(&shares, &all[all.len() / 2])),
            kek.text
        );
    }
}

#[test]
fn hex_mode_interoperates_with_ssss_x() {
    let kek = new_kek();
    let hex = hex_of(&kek);
    assert_eq!(hex.len(), 64);
    // rcrt kek split --hex -> ssss-combine -x: the 64 hex digits of the 32 key bytes.
    let shares = split(&kek, 3, 5, true);
    for idx in [[0, 1, 2], [0, 3, 4], [4, 2, 1]] {
        assert_eq!(
            ssss_combine(&["-t", "3", "-x", "-Q"], &pick(&shares, &idx)),
            hex
        );
    }
    // ssss-split -x of those hex digits -> rcrt kek combine --hex: the KEK in base64.
    let shares = ssss_split(&["-t", "3", "-n", "5", "-x", "-Q"], &hex);
    assert_eq!(shares.len(), 5);
    for idx in subsets(5, 3) {
        assert_recovers(&combine(&pick(&shares, &idx), 3, true), &kek);
    }
    // A hex split read as text, or a text split read as hex, is refused (no garbage KEK).
    assert_refused(
        &combine(&pick(&shares, &[0, 1, 2]), 3, false),
        "do not form a valid KEK",
    );
    let text_shares = ssss_split(&["-t", "3", "-n", "5", "-Q"], &kek.text);
    assert_refused(
        &combine(&pick(&text_shares, &[0, 1, 2]), 3, true),
        "do not form a valid KEK",
    );
}

// ---------------------------------------------------------------------------------------------
// Recoveries that go wrong
// ---------------------------------------------------------------------------------------------

/// Flips one hex digit of a share's value.
fn corrupt(share: &str, at: usize) -> String {
    let (index, digits) = share.split_once('-').unwrap();
    let mut d: Vec<u8> = digits.bytes().collect();
    d[at] = if d[at] == b'0' { b'1' } else { b'0' };
    format!("{index}-{}", String::from_utf8(d).unwrap())
}

#[test]
fn bad_share_sets_never_print_a_wrong_kek_with_exit_0() {
    let kek = new_kek();
    let a = split(&kek, 3, 5, false);
    let b = split(&kek, 3, 5, false);
    let other = new_kek();
    let c = split(&other, 3, 5, false);

    // Too few shares.
    assert_refused(&combine(&pick(&a, &[0, 1]), 3, false), "too few shares");
    assert_refused(&combine(&[], 3, false), "too few shares");
    // The same share twice.
    assert_refused(
        &combine(&[&a[0], &a[1], &a[0]], 3, false),
        "duplicate share index",
    );
    // Malformed and mismatched shares.
    assert_refused(
        &combine(&[&a[0], "2-not-hex-at-all", &a[2]], 3, false),
        "malformed share",
    );
    let short = &a[1][..a[1].len() - 2];
    assert_refused(
        &combine(&[&a[0], short, &a[2]], 3, false),
        "inconsistent share lengths",
    );
    // Threshold below 2 is a usage error of its own.
    assert_refused(
        &combine(&pick(&a, &[0, 1, 2]), 1, false),
        "invalid threshold",
    );

    // Corrupted shares: every digit position tried in a few places, text mode.
    for at in [0, 1, 20, 43, 44, 87] {
        let bad = corrupt(&a[1], at);
        assert_refused(
            &combine(&[&a[0], &bad, &a[2]], 3, false),
            "do not form a valid KEK",
        );
    }
    // Shares from two different splits (of the same KEK, and of another KEK).
    assert_refused(
        &combine(&[&a[0], &a[1], &b[2]], 3, false),
        "do not form a valid KEK",
    );
    assert_refused(
        &combine(&[&a[0], &c[1], &c[2]], 3, false),
        "do not form a valid KEK",
    );
    // A too-low threshold on combine interpolates the wrong polynomial.
    assert_refused(
        &combine(&pick(&a, &[0, 1]), 2, false),
        "do not form a valid KEK",
    );

    // Hex mode has no redundancy: any 32 bytes are a valid KEK, so a corrupted or mixed set
    // yields *a* KEK. Then the KEK id is the check: it differs from the original's.
    let h = split(&kek, 3, 5, true);
    let h2 = split(&kek, 3, 5, true);
    for shares in [
        vec![h[0].clone(), corrupt(&h[1], 5), h[2].clone()],
        vec![h[0].clone(), h[1].clone(), h2[2].clone()],
    ] {
        let out = combine(
            &shares.iter().map(String::as_str).collect::<Vec<_>>(),
            3,
            true,
        );
        if out.status.success() {
            let printed = text(&out.stdout).trim().to_owned();
            assert_ne!(printed, kek.text);
            assert_eq!(stderr_id(&out), kek_id(&printed));
            assert_ne!(
                stderr_id(&out),
                kek.id,
                "a wrong KEK must not carry the original's id"
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{}", show(&out));
            assert!(text(&out.stdout).is_empty());
        }
    }
    // Duplicates and too few shares are caught in hex mode as in text mode.
    assert_refused(&combine(&[&h[3], &h[3], &h[4]], 3, true), "duplicate");
    assert_refused(&combine(&[&h[3]], 3, true), "too few shares");
}
