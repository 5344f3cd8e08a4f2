//! Dotenv in and out: `rcrt vault create` reads `.env` text with `dotenvy`, and `rcrt vault get
//! --format env` writes lines that `dotenvy` reads back to the same bytes and that a POSIX shell
//! can `source` without running or expanding anything in a value.
//!
//! What `dotenvy` (0.15) does with a value, and so what the writer must avoid:
//! - unquoted and `"double-quoted"` text expands `$VAR` and `${VAR}` (from earlier lines, else
//!   the environment) and takes `\` escapes; a space ends an unquoted value and `#` then starts
//!   a comment;
//! - `'single-quoted'` text is taken as it is, newlines included, but cannot hold a `'`; and the
//!   line joiner treats `\` inside single quotes as escaping the next character, so a `\` just
//!   before a closing quote would swallow it.
//!
//! The writer therefore single-quotes every value and writes each `'` and `\` outside the quotes
//! as `\'` and `\\` (`'it'\''s'`), which both `dotenvy` and the shell read as the bare character.
//! A NUL byte fits neither a shell variable nor an environment variable: such a value is refused.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use zeroize::Zeroizing;

/// True for a portable environment (and POSIX shell) variable name: a letter or `_`, then
/// letters, digits or `_`; but not `_` alone, which bash overwrites after every command (so
/// neither a sourced line nor the environment would keep it).
pub(crate) fn is_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    key != "_"
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// How many entries `dotenvy` reads from `text`, or `None` if it fails.
fn entries(text: &str) -> Option<usize> {
    let mut n = 0;
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        drop(Zeroizing::new(item.ok()?.1));
        n += 1;
    }
    Some(n)
}

/// Where the line that failed starts, after `ok` entries were read: "line N (key K)". Found
/// with `dotenvy` itself on prefixes of the text (only after a failure), because its error
/// holds either the line or only the value, and a value must not reach the message. The key is
/// named only when the line starts with `KEY=`.
fn locate(text: &str, ok: usize) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut prefix = Zeroizing::new(String::new());
    let mut after = 0;
    for (n, line) in lines.iter().enumerate() {
        prefix.push_str(line);
        if entries(&prefix) == Some(ok) {
            after = n + 1;
        }
    }
    let Some((n, line)) = lines.iter().enumerate().skip(after).find(|(_, l)| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#')
    }) else {
        return "the end of the text".to_owned();
    };
    let line = line.trim_start();
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(end);
    if !key.is_empty() && rest.trim_start().starts_with('=') {
        format!("line {} (key {key})", n + 1)
    } else {
        format!("line {}", n + 1)
    }
}

/// Parses dotenv text as `dotenvy` does: `KEY=value`, optional `export `, blank lines and `#`
/// comments, single quotes literal, double quotes with escapes, `$VAR`/`${VAR}` expanded in
/// unquoted and double-quoted values (from earlier lines, else this process's environment).
/// A key given twice is refused. Errors name the line and key, never a value.
pub(crate) fn parse(text: &str) -> Result<BTreeMap<String, Zeroizing<String>>, String> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = BTreeMap::new();
    for item in dotenvy::from_read_iter(body.as_bytes()) {
        let (key, value) = item.map_err(|e| match e {
            dotenvy::Error::LineParse(line, _) => {
                drop(Zeroizing::new(line));
                format!(
                    "{} is not valid dotenv: expected KEY=value, with a value unquoted (no \
                     spaces), 'single-quoted' or \"double-quoted\", and quotes closed",
                    locate(body, out.len())
                )
            }
            other => format!("cannot read the dotenv text: {other}"),
        })?;
        let value = Zeroizing::new(value);
        if out.contains_key(&key) {
            return Err(format!(
                "key {key} is given more than once; keep one line for it"
            ));
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// `KEY='value'` lines for `values` (see the module comment): `dotenvy` reads them back to the
/// same map and a POSIX shell can `source` them. A key that is not an environment variable name,
/// or a value holding a NUL byte, is refused (`--format json` prints any vault).
pub(crate) fn render<'a>(
    values: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Zeroizing<String>, String> {
    let mut s = Zeroizing::new(String::new());
    for (k, v) in values {
        if !is_env_name(k) {
            return Err(format!(
                "vault key {k:?} is not a shell variable name (letters, digits and '_', not \
                 starting with a digit, not '_' alone), so --format env cannot print it; use \
                 --format json"
            ));
        }
        if v.contains('\0') {
            return Err(format!(
                "the value of {k} holds a NUL byte, which neither dotenv nor a shell variable can \
                 hold; use --format json"
            ));
        }
        // Writing to a String cannot fail.
        let _ = write!(s, "{k}=");
        quote(v, &mut s);
        s.push('\n');
    }
    Ok(s)
}

/// `value` in single quotes, with `'` and `\` written outside them as `\'` and `\\`.
fn quote(value: &str, out: &mut String) {
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            '\\' => out.push_str("'\\\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> String {
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 1, "{text:?}");
        m.into_values().next().unwrap().to_string()
    }

    #[test]
    fn reads_dotenv_as_dotenvy_does() {
        assert_eq!(one("A='single'\n"), "single");
        assert_eq!(one("A=\"double\"\n"), "double");
        assert_eq!(one("A=1 # comment\n"), "1");
        assert_eq!(one("A=1#not-a-comment\n"), "1#not-a-comment");
        assert_eq!(one("export KEY=v\n"), "v");
        assert_eq!(one("A=\"a\\nb\"\n"), "a\nb");
        assert_eq!(one("A='a\\nb'\n"), "a\\nb");
        assert_eq!(one("A='multi\nline'\n"), "multi\nline");
        assert_eq!(one("\u{feff}A=bom\n"), "bom");
        assert_eq!(one("A=\n"), "");
        let m = parse("# c\nAPI_KEY=abc\n\nB=x-${API_KEY}\nC='${API_KEY}'\n").unwrap();
        assert_eq!(m["B"].as_str(), "x-abc", "substitution in unquoted values");
        assert_eq!(m["C"].as_str(), "${API_KEY}", "none in single quotes");
    }

    #[test]
    fn errors_name_line_and_key_not_value() {
        let e = parse("A=1\nB=two words hunter2\n").unwrap_err();
        assert!(e.contains("line 2 (key B)"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse("A=1\n\nC='unclosed hunter2\n").unwrap_err();
        assert!(e.contains("line 3 (key C)"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse("A='x\ny'\n\n# c\nB=\"\\q\"\n").unwrap_err();
        assert!(e.contains("line 5 (key B)"), "{e}");
        let e = parse("hunter2\n").unwrap_err();
        assert!(e.starts_with("line 1 is not"), "{e}");
        let e = parse("A=1\nA=2\n").unwrap_err();
        assert!(e.contains("key A is given more than once"), "{e}");
    }

    #[test]
    fn writes_single_quoted_lines() {
        let out = render([("A", "plain"), ("B", "it's"), ("C", ""), ("D", "a\\")]).unwrap();
        assert_eq!(out.as_str(), "A='plain'\nB='it'\\''s'\nC=''\nD='a'\\\\''\n");
        for key in ["1A", "A-B", "A.B", "", "Ä", "_"] {
            let e = render([(key, "v")]).unwrap_err();
            assert!(e.contains("--format json"), "{key}: {e}");
        }
        assert!(render([("A", "a\0b")]).unwrap_err().contains("NUL"));
    }

    /// Characters that matter to dotenv or the shell, so generated values hit their corners.
    fn tricky() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            '\'', '\\', '"', '$', '{', '}', '(', ')', '`', '#', ' ', '\t', '\n', '\r', '=', '!',
            '*', '~', 'n', 'a', 'Z', '_', '0', 'é', '\u{2028}', '\u{85}', '\u{feff}', '\u{1}',
            '\u{7f}', '☃',
        ]);
        prop::collection::vec(chars, 0..24).prop_map(|v| v.into_iter().collect())
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![tricky(), any::<String>().prop_map(|s| s.replace('\0', "")),]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// export -> import is the identity for every map of env names to NUL-free strings.
        #[test]
        fn export_import_identity(
            map in prop::collection::btree_map(
                "[A-Za-z_][A-Za-z0-9_]{0,12}".prop_filter("not _", |k| k != "_"), value(), 0..6
            )
        ) {
            let text = render(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
            let back = parse(&text).unwrap();
            let back: BTreeMap<String, String> =
                back.into_iter().map(|(k, v)| (k, v.to_string())).collect();
            prop_assert_eq!(back, map, "{}", text.as_str());
        }
    }
}
