//! `rcrt kek generate` and `rcrt kek check`, run as the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Output;

mod common;
use common::{rcrt_cmd, run_with_stdin, text};

/// The real `rcrt` with no KEK variables inherited; `None` gives it an empty stdin.
fn rcrt(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    run_with_stdin(
        rcrt_cmd().args(args).envs(env.iter().copied()),
        stdin.unwrap_or_default(),
    )
}

fn is_guide_format(kek: &str) -> bool {
    kek.len() == 44
        && kek.ends_with('=')
        && kek[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[test]
fn generate_prints_fresh_keys_in_the_guides_format() {
    let a = rcrt(&["kek", "generate"], &[], None);
    let b = rcrt(&["kek", "generate"], &[], None);
    assert!(a.status.success() && b.status.success());
    let (ka, kb) = (text(&a.stdout), text(&b.stdout));
    assert!(is_guide_format(ka.trim()), "{ka:?}");
    assert_ne!(ka, kb);
}

#[test]
fn check_reports_the_same_id_from_env_file_and_stdin() {
    let kek = text(&rcrt(&["kek", "generate"], &[], None).stdout)
        .trim()
        .to_owned();
    let from_env = rcrt(&["kek", "check"], &[("LOCAL_KEK_BASE64", &kek)], None);
    let dir = rcrt_testkit::TempDir::new();
    let file = dir.path().join("kek");
    std::fs::write(&file, format!("{kek}\n")).unwrap();
    let from_file = rcrt(
        &["kek", "check", "--file", file.to_str().unwrap()],
        &[],
        None,
    );
    let from_env_file = rcrt(
        &["kek", "check"],
        &[("LOCAL_KEK_BASE64_FILE", file.to_str().unwrap())],
        None,
    );
    let from_stdin = rcrt(&["kek", "check", "--stdin"], &[], Some(&format!("{kek}\n")));
    for out in [&from_env, &from_file, &from_env_file, &from_stdin] {
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!text(&out.stdout).contains(&kek));
        assert!(!text(&out.stderr).contains(&kek));
    }
    let id = text(&from_env.stdout);
    assert!(id.starts_with("KEK OK: id "), "{id}");
    assert_eq!(id, text(&from_file.stdout));
    assert_eq!(id, text(&from_env_file.stdout));
    assert_eq!(id, text(&from_stdin.stdout));
}

#[test]
fn check_errors_match_the_server_and_never_echo() {
    let missing = rcrt(&["kek", "check"], &[], None);
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(err.contains("LOCAL_KEK_BASE64 missing"), "{err}");
    assert!(err.contains("openssl rand -base64 32"), "{err}");

    let bad = "c2hvcnQtYnV0LXNlY3JldC1sb29raW5n"; // valid base64, 24 bytes
    let invalid = rcrt(&["kek", "check"], &[("LOCAL_KEK_BASE64", bad)], None);
    assert_eq!(invalid.status.code(), Some(1));
    let err = text(&invalid.stderr);
    assert!(err.contains("Invalid KEK format"), "{err}");
    assert!(!err.contains(bad));
    let invalid_stdin = rcrt(&["kek", "check", "--stdin"], &[], Some("not a key"));
    assert!(text(&invalid_stdin.stderr).contains("Invalid KEK format"));
    assert!(!text(&invalid_stdin.stderr).contains("not a key"));
}

/// The production guide's published example KEK is refused by `kek check` (every way of giving
/// it) and as the new KEK of a job, never echoed.
#[test]
fn the_guides_example_kek_is_refused() {
    const EXAMPLE: &str = "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=";
    let dir = rcrt_testkit::TempDir::new();
    let db = format!("sqlite:{}", dir.path().join("s.db").display());
    for out in [
        rcrt(&["kek", "check"], &[("LOCAL_KEK_BASE64", EXAMPLE)], None),
        rcrt(&["kek", "check", "--stdin"], &[], Some(EXAMPLE)),
        rcrt(
            &["kek", "verify", "--keks-stdin", "--db-url", &db],
            &[],
            Some(&format!("{EXAMPLE}\n")),
        ),
        rcrt(
            &["kek", "verify", "--db-url", &db],
            &[("LOCAL_KEK_BASE64", EXAMPLE)],
            None,
        ),
    ] {
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("published example KEK"), "{err}");
        assert!(!err.contains(&EXAMPLE[..40]) && !text(&out.stdout).contains(&EXAMPLE[..40]));
    }
}
