//! Client commands: `rcrt secrets create|list|get|update|delete`, `rcrt vault create|get`
//! (`rcrt token ...` lives in `token.rs` and uses [`run`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rcrt_client::Client;
use zeroize::Zeroizing;

use crate::dotenv;
use crate::input::{self, read_stdin};
use crate::{ServerArgs, ValueArgs};

/// How `rcrt vault get` prints values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum VaultFormat {
    /// `KEY='value'` lines: dotenv that `rcrt vault create` (`dotenvy`) reads back to the same
    /// values, and safe to `source` in a POSIX shell (nothing in a value is expanded
    /// or run); a key that is not a shell variable name, or a value with a NUL byte, is refused
    /// (use `--format json`).
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
    value_args: &ValueArgs,
) -> Result<(), String> {
    let value = input::value(value_args)?;
    let meta = run(server, async |c| {
        c.create_secret(name, scope_type, scope_id, &value, value_args.allow_empty)
            .await
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

/// Where `rcrt secrets get` puts the value.
pub(crate) struct GetOutput<'a> {
    /// A file to write instead of stdout.
    pub(crate) file: Option<&'a Path>,
    /// Replace the file if it exists.
    pub(crate) force: bool,
}

pub(crate) fn get(
    server: &ServerArgs,
    id: &str,
    reason: &str,
    output: &GetOutput<'_>,
) -> Result<(), String> {
    if let Some(path) = output.file {
        // Checked before the read too, so a refusal costs no audited read; the create below
        // (O_EXCL) is what actually guarantees it.
        if path.is_dir() {
            return Err(format!(
                "{} is a directory; give the path of a file",
                path.display()
            ));
        }
        if !output.force && path.symlink_metadata().is_ok() {
            return Err(exists(path));
        }
    }
    let (value, _) = run(server, async |c| c.decrypt(id, reason).await)?;
    if let Some(path) = output.file {
        write_private(path, value.as_bytes(), output.force)?;
        eprintln!("wrote {} (mode 0600)", path.display());
        return Ok(());
    }
    // This command's whole job is to print the value.
    let mut out = std::io::stdout().lock();
    out.write_all(value.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| e.to_string())
}

fn exists(path: &Path) -> String {
    format!(
        "{} exists; refused to overwrite it (pass --force to replace it)",
        path.display()
    )
}

/// Writes `bytes` (exactly, no newline added) to a file created with mode 0600, so the value is
/// never readable by others, not even for a moment. Without `force` the file must not exist
/// (`O_EXCL`: a symlink planted there is not followed). With `force` a new 0600 file beside it
/// is written and renamed over it, so an existing file's wider mode is not inherited.
fn write_private(path: &Path, bytes: &[u8], force: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let create = |p: &Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
    };
    // Removes only a file this call created: when the create itself fails, whatever is at `p`
    // belongs to someone else.
    let write = |p: &Path| -> std::io::Result<()> {
        let mut f = create(p)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if written.is_err() {
            // Do not leave a partly written value behind.
            let _ = std::fs::remove_file(p);
        }
        written
    };
    if !force {
        return write(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => exists(path),
            _ => format!("cannot write {}: {e}", path.display()),
        });
    }
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".rcrt-{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    write(&tmp).map_err(cannot)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cannot(e)
    })
}

pub(crate) fn update(
    server: &ServerArgs,
    id: &str,
    if_match: Option<i64>,
    value_args: &ValueArgs,
) -> Result<(), String> {
    let value = input::value(value_args)?;
    let meta = run(server, async |c| {
        c.update_secret(id, &value, if_match, value_args.allow_empty)
            .await
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

pub(crate) fn vault_create(
    server: &ServerArgs,
    name: &str,
    workspace: &str,
    from_file: Option<&Path>,
    allow_empty: bool,
) -> Result<(), String> {
    let text = match from_file {
        Some(p) => Zeroizing::new(
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        ),
        None => read_stdin()?,
    };
    let secrets = dotenv::parse(&text)?;
    if !allow_empty {
        if let Some(key) = secrets.iter().find(|(_, v)| v.is_empty()).map(|(k, _)| k) {
            return Err(format!(
                "the value of {key} is empty; refused so that an unset variable is not stored \
                 by mistake (pass --allow-empty to store empty values)"
            ));
        }
    }
    let vault = run(server, async |c| {
        c.create_vault(workspace, name, &secrets, allow_empty).await
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
    input::header_reason(reason)?;
    let values = run(server, async |c| {
        c.vault_values(vault, reason, workspace).await
    })?;
    let plain: BTreeMap<&str, &str> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let text = match format {
        VaultFormat::Env => dotenv::render(plain.iter().map(|(k, v)| (*k, *v)))?,
        VaultFormat::Json => {
            let mut json =
                Zeroizing::new(serde_json::to_string_pretty(&plain).map_err(|e| e.to_string())?);
            json.push('\n');
            json
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_failed_write_removes_only_what_it_created() {
        let dir = std::env::temp_dir().join(format!("rcrt-write-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("value");
        // Someone else's file where --force would put its temporary file: the create fails
        // (O_EXCL) and the file stays.
        let tmp = dir.join(format!(".value.rcrt-{}.tmp", std::process::id()));
        std::fs::write(&tmp, "not ours").unwrap();
        let e = write_private(&path, b"v", true).unwrap_err();
        assert!(e.starts_with("cannot write"), "{e}");
        assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "not ours");
        // Without --force the existing file is refused and left alone.
        let e = write_private(&tmp, b"v", false).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "not ours");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
