//! Every environment variable and every key input of the CLI is read here.

use std::io::Read;

use rcrt_keys::{load_local_keyring, parse_kek, KekPlan, KekSources, Keyring, LocalKeyring};
use zeroize::Zeroizing;

use crate::{DbArgs, KekArgs};

fn env(key: &str) -> Option<Zeroizing<String>> {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Zeroizing::new)
}

/// `LOCAL_KEK_BASE64` and friends from the environment.
pub(crate) fn env_kek_sources() -> KekSources {
    KekSources::from_lookup(env)
}

/// The KEK providers' variables (`KEK_PROVIDER`, ...) from the environment.
pub(crate) fn kek_plan() -> Result<KekPlan, String> {
    KekPlan::from_lookup(&env).map_err(|e| e.to_string())
}

/// All of stdin, zeroized when dropped.
pub(crate) fn read_stdin() -> Result<Zeroizing<String>, String> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(text)
}

/// The keyring for an offline job. Local KEKs: stdin, else the flags, else the environment
/// (`LOCAL_KEK_BASE64`, ...). KEKs in providers (`KEK_PROVIDER`, `KEK_PROVIDER_OLD`, the
/// recovery KEK) always come from the environment, as for the server.
pub(crate) async fn keyring(args: &KekArgs) -> Result<Keyring, String> {
    let plan = kek_plan()?;
    let given = if args.keks_stdin {
        Some(stdin_keyring()?)
    } else if args.new_kek_file.is_some() || args.old_kek_file.is_some() {
        let mut sources = env_kek_sources();
        if let Some(f) = &args.new_kek_file {
            sources.current = None;
            sources.current_file = Some(f.clone());
        }
        if let Some(f) = &args.old_kek_file {
            sources.old = None;
            sources.old_file = Some(f.clone());
        }
        if plan.current.is_some() && args.new_kek_file.is_none() {
            // Old KEKs from a file, the current one in a provider.
            return plan.build(&sources).await.map_err(|e| e.to_string());
        }
        Some(load_local_keyring(&sources).map_err(|e| e.to_string())?)
    } else {
        None
    };
    match given {
        Some(ring) => plan.build_with_local(ring).await,
        None => plan.build(&env_kek_sources()).await,
    }
    .map_err(|e| e.to_string())
}

/// The local keyring from stdin: the new KEK on the first line, old KEKs on the next.
fn stdin_keyring() -> Result<LocalKeyring, String> {
    let text = read_stdin()?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let current = parse_kek(
        lines
            .next()
            .ok_or("stdin holds no KEK: the first line must be the new KEK")?,
        "stdin line 1",
    )
    .map_err(|e| e.to_string())?;
    rcrt_keys::refuse_published_example(&current, "stdin line 1").map_err(|e| e.to_string())?;
    let old = lines
        .enumerate()
        .map(|(i, l)| parse_kek(l, &format!("stdin line {}", i + 2)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(LocalKeyring::new(current, old))
}

/// The store URL: the flag, else `DB_URL`, else `DATABASE_URL`.
pub(crate) fn db_url(args: &DbArgs) -> Result<String, String> {
    args.db_url
        .clone()
        .or_else(|| env("DB_URL").map(|v| v.to_string()))
        .or_else(|| env("DATABASE_URL").map(|v| v.to_string()))
        .ok_or_else(|| "no store given: pass --db-url or set DB_URL".to_owned())
}

/// The API server's URL and token (`--url`/`RCRT_URL`, `--token-file`/`RCRT_TOKEN`).
pub(crate) fn server(
    args: &crate::ServerArgs,
) -> Result<(String, Option<Zeroizing<String>>), String> {
    let url = args
        .url
        .clone()
        .or_else(|| env("RCRT_URL").map(|v| v.to_string()))
        .unwrap_or_else(|| "http://127.0.0.1:8081".to_owned());
    let token = match &args.token_file {
        Some(path) => Some(token_file(path)?),
        None => env("RCRT_TOKEN").map(|t| Zeroizing::new(t.trim().to_owned())),
    };
    Ok((url, token))
}

/// A token (JWT or service token) from a file; surrounding whitespace is dropped. Warns on
/// stderr when every user may read the file. Errors name the file, never its content.
fn token_file(path: &std::path::Path) -> Result<Zeroizing<String>, String> {
    let raw = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let token = Zeroizing::new(raw.trim().to_owned());
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o004 != 0 {
                eprintln!(
                    "rcrt: warning: token file {} is readable by every user (mode {mode:04o}); run `chmod 600` on it",
                    path.display()
                );
            }
        }
    }
    Ok(token)
}

/// A secret value from `--value-file` or stdin; one trailing newline (from `echo`) is dropped.
/// An empty value is refused unless `--allow-empty` (`echo "$UNSET"` would store nothing).
pub(crate) fn value(args: &crate::ValueArgs) -> Result<Zeroizing<String>, String> {
    let mut text = match &args.value_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => read_stdin()?,
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() && !args.allow_empty {
        let from = args
            .value_file
            .as_ref()
            .map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
        return Err(format!(
            "the value read from {from} is empty; refused so that an unset variable is not \
             stored by mistake (pass --allow-empty to store an empty value)"
        ));
    }
    Ok(text)
}

/// Refuses a `--reason` that cannot travel in the `X-Access-Reason` header, before any read:
/// vault reads send the reason there, and the server takes only visible ASCII, spaces and tabs
/// in a header (400 otherwise), while a secret read sends it in a JSON body.
pub(crate) fn header_reason(reason: &str) -> Result<(), String> {
    if reason
        .chars()
        .all(|c| c == '\t' || (' '..='~').contains(&c))
    {
        return Ok(());
    }
    Err(
        "--reason must be plain ASCII (letters, digits, punctuation, spaces): a vault read \
         sends it in the X-Access-Reason HTTP header, which holds only visible ASCII; write it \
         without accents or other non-ASCII characters"
            .into(),
    )
}

/// Asks before a destructive action unless `yes`; without a terminal, `--yes` is required.
pub(crate) fn confirm(yes: bool, question: &str, refusal: &str) -> Result<(), String> {
    use std::io::{IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!("{refusal}: confirm with --yes"));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err("cancelled".into())
    }
}
