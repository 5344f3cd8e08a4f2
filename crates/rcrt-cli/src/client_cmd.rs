//! Client commands: `rcrt secrets create|list|get|update|delete`, `rcrt vault create|get`
//! (`rcrt token ...` lives in `token.rs` and uses [`run`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rcrt_client::Client;
use zeroize::Zeroizing;

use crate::input::{self, read_stdin};
use crate::{ServerArgs, ValueArgs};

/// How `rcrt vault get` prints values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum VaultFormat {
    /// `KEY='value'` lines, safe to `source` in a POSIX shell: every value single-quoted (a
    /// quote inside as `'\''`), so nothing in it is expanded or run; a key that is not a shell
    /// variable name, or a value with a NUL byte, is refused (use `--format json`).
    Env,
    /// One JSON object.
    Json,
}

/// Runs `f` with a client of the server `server` names, on a runtime of its own.
pub(crate) fn run<T>(
    server: &ServerArgs,
    f: impl AsyncFnOnce(Client) -> Result<T, rcrt_client::ClientError>,
) -> Result<T, String> {
    let (url, token) = input::server(server)?;
    let client = Client::new(&url, token).map_err(|e| e.to_string())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(f(client))
        .map_err(|e| e.to_string())
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
    );
    Ok(())
}

pub(crate) fn create(
    server: &ServerArgs,
    name: &str,
    scope_type: &str,
    scope_id: Option<&str>,
    value: &ValueArgs,
) -> Result<(), String> {
    let value = input::value(value)?;
    let meta = run(server, async |c| {
        c.create_secret(name, scope_type, scope_id, &value).await
    })?;
    print_json(&meta)
}

pub(crate) fn list(
    server: &ServerArgs,
    scope_type: Option<&str>,
    scope_id: Option<&str>,
) -> Result<(), String> {
    let all = run(server, async |c| {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = c
                .list_secrets(scope_type, scope_id, Some(1000), cursor.as_deref())
                .await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    })?;
    print_json(&all)
}

pub(crate) fn get(server: &ServerArgs, id: &str, reason: &str) -> Result<(), String> {
    let (value, _) = run(server, async |c| c.decrypt(id, reason).await)?;
    // This command's whole job is to print the value.
    let mut out = std::io::stdout().lock();
    out.write_all(value.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| e.to_string())
}

pub(crate) fn update(
    server: &ServerArgs,
    id: &str,
    if_match: Option<i64>,
    value: &ValueArgs,
) -> Result<(), String> {
    let value = input::value(value)?;
    let meta = run(server, async |c| {
        c.update_secret(id, &value, if_match).await
    })?;
    print_json(&meta)
}

pub(crate) fn delete(server: &ServerArgs, id: &str, yes: bool) -> Result<(), String> {
    input::confirm(
        yes,
        &format!("Delete secret {id} and every version?"),
        "deleting destroys every version",
    )?;
    run(server, async |c| c.delete_secret(id).await)?;
    eprintln!("deleted {id}");
    Ok(())
}

/// Parses `KEY=value` lines; blank lines and `#` comments are skipped; surrounding double
/// quotes are removed.
fn parse_env(text: &str) -> Result<BTreeMap<String, Zeroizing<String>>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=value", n + 1))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.insert(key.trim().to_owned(), Zeroizing::new(value.to_owned()));
    }
    Ok(out)
}

pub(crate) fn vault_create(
    server: &ServerArgs,
    name: &str,
    workspace: &str,
    from_file: Option<&Path>,
) -> Result<(), String> {
    let text = match from_file {
        Some(p) => Zeroizing::new(
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        ),
        None => read_stdin()?,
    };
    let secrets = parse_env(&text)?;
    let vault = run(server, async |c| {
        c.create_vault(workspace, name, &secrets).await
    })?;
    print_json(&vault)
}

pub(crate) fn vault_get(
    server: &ServerArgs,
    vault: &str,
    reason: &str,
    workspace: Option<&str>,
    format: VaultFormat,
) -> Result<(), String> {
    let values = run(server, async |c| {
        c.vault_values(vault, reason, workspace).await
    })?;
    let plain: BTreeMap<&str, &str> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let text = Zeroizing::new(match format {
        VaultFormat::Env => shell_lines(&plain)?,
        VaultFormat::Json => {
            let mut json = serde_json::to_string_pretty(&plain).map_err(|e| e.to_string())?;
            json.push('\n');
            json
        }
    });
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

/// True for a POSIX shell variable name: a letter or `_`, then letters, digits or `_`.
fn is_shell_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `value` in POSIX single quotes: nothing inside is special to the shell but the quote itself,
/// written as `'\''` (close, escaped quote, reopen).
fn single_quote(value: &str, out: &mut String) {
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
}

/// `KEY='value'` lines for `--format env` (see [`VaultFormat::Env`]).
fn shell_lines(values: &BTreeMap<&str, &str>) -> Result<String, String> {
    let mut s = String::new();
    for (k, v) in values {
        if !is_shell_name(k) {
            return Err(format!(
                "vault key {k:?} is not a shell variable name (letters, digits and '_', not \
                 starting with a digit), so --format env cannot print it; use --format json"
            ));
        }
        if v.contains('\0') {
            return Err(format!(
                "the value of {k} holds a NUL byte, which a shell variable cannot; use --format json"
            ));
        }
        s.push_str(k);
        s.push('=');
        single_quote(v, &mut s);
        s.push('\n');
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn env_lines() {
        let m = parse_env("# c\nAPI_KEY=abc\n\nDB_URL=\"postgres://x\"\nEMPTY=\n").unwrap();
        assert_eq!(m["API_KEY"].as_str(), "abc");
        assert_eq!(m["DB_URL"].as_str(), "postgres://x");
        assert_eq!(m["EMPTY"].as_str(), "");
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn env_output_is_single_quoted() {
        let values: BTreeMap<&str, &str> = [
            ("A", "plain"),
            ("B", "it's"),
            ("C", ""),
            ("_D1", "$(x) `y` \"z\" \\n"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            shell_lines(&values).unwrap(),
            "A='plain'\nB='it'\\''s'\nC=''\n_D1='$(x) `y` \"z\" \\n'\n"
        );
        for key in ["1A", "A-B", "A.B", "", "Ä"] {
            let one: BTreeMap<&str, &str> = [(key, "v")].into_iter().collect();
            assert!(
                shell_lines(&one).unwrap_err().contains("--format json"),
                "{key}"
            );
        }
        let nul: BTreeMap<&str, &str> = [("A", "a\0b")].into_iter().collect();
        assert!(shell_lines(&nul).is_err());
    }
}
