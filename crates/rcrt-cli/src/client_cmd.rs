//! Client commands: `rcrt secrets create|list|get|update|update-meta|versions|rollback|
//! destroy-version|delete|restore`, `rcrt vault create|get` (`rcrt token ...` lives in
//! `token.rs` and uses [`run`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rcrt_client::{
    Client, ClientError, CreateOptions, MetadataPatch, NewMetadata, SecretFilter, UpdateOptions,
};
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

/// `rcrt secrets create`'s arguments besides the value.
pub(crate) struct NewSecretArgs {
    pub(crate) name: String,
    pub(crate) scope_type: String,
    pub(crate) scope_id: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) labels: Vec<String>,
    pub(crate) expires_at: Option<String>,
    pub(crate) max_versions: Option<u32>,
    pub(crate) idempotency_key: Option<String>,
}

pub(crate) fn create(
    server: &ServerArgs,
    args: &NewSecretArgs,
    value_args: &ValueArgs,
) -> Result<(), String> {
    let options = CreateOptions {
        allow_empty: value_args.allow_empty,
        metadata: NewMetadata {
            description: args.description.clone(),
            labels: labels(&args.labels)?.into_iter().collect(),
            expires_at: args.expires_at.clone(),
            max_versions: args.max_versions,
        },
        idempotency_key: args.idempotency_key.clone(),
    };
    let value = input::value(value_args)?;
    let meta = run(server, async |c| {
        c.create_secret_with(
            &args.name,
            &args.scope_type,
            args.scope_id.as_deref(),
            &value,
            &options,
        )
        .await
    })?;
    print_json(&meta)
}

/// `KEY=VALUE` labels from repeated flags, each of which may hold several separated by commas
/// (a label value cannot hold a comma). A key given twice is refused.
fn labels(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in args.iter().flat_map(|a| a.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("--label {item:?}: expected KEY=VALUE"))?;
        if out.iter().any(|(seen, _)| seen == k) {
            return Err(format!("--label: the key {k:?} is given twice"));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

/// `rcrt secrets list`'s filters.
pub(crate) struct ListArgs {
    pub(crate) scope_type: Option<String>,
    pub(crate) scope_id: Option<String>,
    pub(crate) labels: Vec<String>,
    pub(crate) name_prefix: Option<String>,
    pub(crate) expiring: Option<String>,
    pub(crate) deleted: bool,
}

pub(crate) fn list(server: &ServerArgs, args: ListArgs) -> Result<(), String> {
    let filter = SecretFilter {
        scope_type: args.scope_type,
        scope_id: args.scope_id,
        labels: labels(&args.labels)?,
        name_prefix: args.name_prefix,
        expiring_within: args.expiring,
        deleted: args.deleted,
    };
    let all = run(server, async |c| {
        all_pages(async |cursor| {
            let page = c.list_secrets_filtered(&filter, Some(1000), cursor).await?;
            Ok((page.items, page.next_cursor))
        })
        .await
    })?;
    print_json(&all)
}

/// Every page of a listing: `page(cursor)` fetches one (items and the next cursor), from no
/// cursor until the server gives none. A cursor handed back twice is refused: it would loop
/// forever.
pub(crate) async fn all_pages<T>(
    mut page: impl AsyncFnMut(Option<&str>) -> Result<(Vec<T>, Option<String>), ClientError>,
) -> Result<Vec<T>, ClientError> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (items, next) = page(cursor.as_deref()).await?;
        all.extend(items);
        match next {
            Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                return Err(ClientError {
                    status: None,
                    code: "invalid_cursor".into(),
                    message: "the server returned the same cursor twice".into(),
                })
            }
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

pub(crate) fn versions(server: &ServerArgs, id: &str) -> Result<(), String> {
    let all = run(server, async |c| {
        all_pages(async |cursor| {
            let page = c.list_versions(id, Some(1000), cursor).await?;
            Ok((page.versions, page.next_cursor))
        })
        .await
    })?;
    print_json(&all)
}

pub(crate) fn rollback(
    server: &ServerArgs,
    id: &str,
    version: i64,
    if_match: Option<i64>,
    idempotency_key: Option<&str>,
) -> Result<(), String> {
    let meta = run(server, async |c| {
        c.rollback(id, version, if_match, idempotency_key).await
    })?;
    eprintln!(
        "rolled {id} back to the value of version {version}: now version {}",
        meta.version
    );
    print_json(&meta)
}

pub(crate) fn destroy_version(
    server: &ServerArgs,
    id: &str,
    version: i64,
    yes: bool,
) -> Result<(), String> {
    input::confirm(
        yes,
        &format!("Destroy version {version} of secret {id}? Its value cannot be recovered."),
        "destroying a version shreds its value",
    )?;
    run(server, async |c| c.destroy_version(id, version).await)?;
    eprintln!("destroyed version {version} of {id}");
    Ok(())
}

pub(crate) fn restore(server: &ServerArgs, id: &str) -> Result<(), String> {
    let meta = run(server, async |c| c.restore_secret(id).await)?;
    eprintln!("restored {id}");
    print_json(&meta)
}

/// `rcrt secrets update-meta`'s changes, as given on the command line.
pub(crate) struct MetaChanges {
    pub(crate) description: Option<String>,
    pub(crate) labels: Vec<String>,
    pub(crate) clear_labels: bool,
    pub(crate) expires_at: Option<String>,
    pub(crate) no_expiry: bool,
    pub(crate) max_versions: Option<u32>,
    pub(crate) default_max_versions: bool,
}

impl MetaChanges {
    fn patch(self) -> Result<MetadataPatch, String> {
        let labels = if self.clear_labels {
            Some(BTreeMap::new())
        } else if self.labels.is_empty() {
            None
        } else {
            Some(labels(&self.labels)?.into_iter().collect())
        };
        let patch = MetadataPatch {
            description: self.description,
            labels,
            expires_at: match (self.expires_at, self.no_expiry) {
                (Some(t), _) => Some(Some(t)),
                (None, true) => Some(None),
                (None, false) => None,
            },
            max_versions: match (self.max_versions, self.default_max_versions) {
                (Some(n), _) => Some(Some(n)),
                (None, true) => Some(None),
                (None, false) => None,
            },
        };
        if patch.is_empty() {
            return Err(
                "nothing to change: pass --description, --label, --clear-labels, \
                 --expires-at, --no-expiry, --max-versions or --default-max-versions"
                    .into(),
            );
        }
        Ok(patch)
    }
}

pub(crate) fn update_meta(
    server: &ServerArgs,
    id: &str,
    changes: MetaChanges,
) -> Result<(), String> {
    let patch = changes.patch()?;
    let meta = run(server, async |c| c.update_metadata(id, &patch).await)?;
    print_json(&meta)
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
    version: Option<i64>,
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
    let (value, _) = run(server, async |c| {
        c.decrypt_version(id, reason, version).await
    })?;
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
    idempotency_key: Option<String>,
    value_args: &ValueArgs,
) -> Result<(), String> {
    let options = UpdateOptions {
        if_match,
        allow_empty: value_args.allow_empty,
        idempotency_key,
    };
    let value = input::value(value_args)?;
    let meta = run(server, async |c| {
        c.update_secret_with(id, &value, &options).await
    })?;
    print_json(&meta)
}

pub(crate) fn delete(
    server: &ServerArgs,
    id: &str,
    recovery_window: Option<&str>,
    yes: bool,
) -> Result<(), String> {
    let question = match recovery_window {
        Some(w) => format!(
            "Delete secret {id}? With a recovery window of {w} it can be restored until the \
             window ends (a window of 0 destroys every version at once)."
        ),
        None => format!(
            "Delete secret {id}? Unless the server keeps deleted secrets for a recovery window, \
             every version is destroyed."
        ),
    };
    input::confirm(yes, &question, "deleting may destroy every version")?;
    match run(server, async |c| {
        c.delete_secret_with(id, recovery_window).await
    })? {
        Some(soft) => {
            eprintln!(
                "deleted {id}; `rcrt secrets restore {id}` brings it back until {}",
                soft.purge_at
            );
            print_json(&soft)
        }
        None => {
            eprintln!("deleted {id}");
            Ok(())
        }
    }
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

pub(crate) fn vault_list(server: &ServerArgs, workspace: Option<&str>) -> Result<(), String> {
    let all = run(server, async |c| {
        all_pages(async |cursor| {
            let page = c.list_vaults(workspace, Some(1000), cursor).await?;
            Ok((page.items, page.next_cursor))
        })
        .await
    })?;
    print_json(&all)
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
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn labels_repeat_and_split_on_commas() {
        let got = labels(&[
            "env=prod,team=core".into(),
            " tier=1 ".into(),
            "empty=".into(),
        ]);
        assert_eq!(
            got.unwrap(),
            vec![
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "core".to_owned()),
                ("tier".to_owned(), "1".to_owned()),
                ("empty".to_owned(), String::new()),
            ]
        );
        assert!(labels(&["novalue".into()])
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(labels(&["=v".into()]).unwrap_err().contains("KEY=VALUE"));
        assert!(labels(&["a=1,a=2".into()]).unwrap_err().contains("twice"));
    }

    #[test]
    fn update_meta_sends_only_what_is_given() {
        let none = MetaChanges {
            description: None,
            labels: Vec::new(),
            clear_labels: false,
            expires_at: None,
            no_expiry: false,
            max_versions: None,
            default_max_versions: false,
        };
        assert!(none.patch().unwrap_err().contains("nothing to change"));
        let clear = MetaChanges {
            description: None,
            labels: Vec::new(),
            clear_labels: true,
            expires_at: None,
            no_expiry: true,
            max_versions: None,
            default_max_versions: true,
        };
        assert_eq!(
            serde_json::to_value(clear.patch().unwrap()).unwrap(),
            serde_json::json!({"labels": {}, "expires_at": null, "max_versions": null})
        );
    }

    /// Pages served from a script: the cursors each call received, and the result.
    fn page_through(
        script: &[(&[u32], Option<&str>)],
    ) -> (Vec<Option<String>>, Result<Vec<u32>, ClientError>) {
        let mut seen = Vec::new();
        let mut next = script.iter();
        let result = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(all_pages(async |cursor| {
                seen.push(cursor.map(str::to_owned));
                let Some((items, cursor)) = next.next() else {
                    panic!("asked for a page too many");
                };
                Ok((items.to_vec(), cursor.map(str::to_owned)))
            }));
        (seen, result)
    }

    #[test]
    fn every_page_is_followed_and_a_repeated_cursor_stops_paging() {
        let (seen, all) = page_through(&[(&[1, 2], Some("a")), (&[3], Some("b")), (&[], None)]);
        assert_eq!(all.unwrap(), [1, 2, 3]);
        assert_eq!(seen, [None, Some("a".into()), Some("b".into())]);
        let (seen, all) = page_through(&[(&[1], Some("a")), (&[2], Some("a"))]);
        assert_eq!(all.unwrap_err().code, "invalid_cursor");
        assert_eq!(seen.len(), 2);
    }

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
