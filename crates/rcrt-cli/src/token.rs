//! `rcrt token generate | create | list | revoke`: service tokens.
//!
//! A token is printed by `generate` and `create` only (their job), to stdout and nothing else
//! there, so `> file` captures exactly the token. The caller's own token comes from
//! `--token-file` or `RCRT_TOKEN`, never from arguments.

use std::io::Write;

use rcrt_client::{MintedToken, NewToken, TokenMeta, Ttl};
use rcrt_crypto::ServiceToken;
use zeroize::Zeroizing;

use crate::client_cmd::{print_json, run};
use crate::ServerArgs;

/// How `rcrt token create` prints the new token.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum CreateFormat {
    /// The token alone on stdout; a one-line summary on stderr.
    Text,
    /// The whole answer (token and metadata) as one JSON object on stdout.
    Json,
}

/// How `rcrt token list` prints tokens.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum ListFormat {
    /// An aligned table, one token per line.
    Table,
    /// A JSON array of the tokens' metadata.
    Json,
}

/// What `rcrt token create` asks for (the flags, as parsed).
pub(crate) struct CreateArgs {
    pub(crate) name: String,
    pub(crate) roles: Vec<String>,
    pub(crate) workspaces: Vec<String>,
    pub(crate) ttl: Option<String>,
    pub(crate) principal: Option<String>,
    pub(crate) format: CreateFormat,
}

/// Writes `text` and a newline to stdout in one go.
fn print_secret_line(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

pub(crate) fn generate() -> Result<(), String> {
    let token = ServiceToken::generate().map_err(|e| e.to_string())?;
    // This command's whole job is to print the token.
    print_secret_line(&token.expose_secret())
}

/// Role and workspace flags may repeat and may hold comma-separated lists; blanks are dropped.
fn list_arg(values: Vec<String>) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn create(server: &ServerArgs, args: CreateArgs) -> Result<(), String> {
    let new = NewToken {
        name: args.name,
        principal: args.principal,
        roles: list_arg(args.roles),
        workspaces: list_arg(args.workspaces),
        ttl: args.ttl.as_deref().map(Ttl::from),
    };
    if new.roles.is_empty() {
        return Err("give at least one role with --role".into());
    }
    let minted: MintedToken = run(server, async |c| c.create_token(&new).await)?;
    match args.format {
        CreateFormat::Text => {
            print_secret_line(minted.expose_secret())?;
            eprintln!("{}", summary(&minted.meta));
            Ok(())
        }
        CreateFormat::Json => {
            #[derive(serde::Serialize)]
            struct Out<'a> {
                token: &'a str,
                #[serde(flatten)]
                meta: &'a TokenMeta,
            }
            let text = Zeroizing::new(
                serde_json::to_string_pretty(&Out {
                    token: minted.expose_secret(),
                    meta: &minted.meta,
                })
                .map_err(|e| e.to_string())?,
            );
            print_secret_line(&text)
        }
    }
}

/// `created token <id> "<name>" for <principal> (roles; workspaces), expires <time>`.
fn summary(m: &TokenMeta) -> String {
    let workspaces = if m.workspaces.is_empty() {
        String::new()
    } else {
        format!("; workspaces {}", m.workspaces.join(","))
    };
    format!(
        "created token {} {:?} for {} (roles {}{workspaces}), expires {}",
        m.id,
        m.name,
        m.principal,
        m.roles.join(","),
        m.expires_at.as_deref().unwrap_or("never"),
    )
}

pub(crate) fn list(server: &ServerArgs, format: ListFormat) -> Result<(), String> {
    let all = run(server, async |c| {
        crate::client_cmd::all_pages(async |cursor| {
            let page = c.list_tokens(Some(1000), cursor).await?;
            Ok((page.items, page.next_cursor))
        })
        .await
    })?;
    match format {
        ListFormat::Json => print_json(&all),
        ListFormat::Table => {
            print!("{}", table(&all));
            Ok(())
        }
    }
}

/// The tokens as aligned columns under a header line.
fn table(tokens: &[TokenMeta]) -> String {
    const HEADER: [&str; 7] = [
        "ID",
        "NAME",
        "PRINCIPAL",
        "ROLES",
        "WORKSPACES",
        "STATUS",
        "EXPIRES",
    ];
    let rows: Vec<[String; 7]> = tokens
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                t.name.clone(),
                t.principal.clone(),
                t.roles.join(","),
                if t.workspaces.is_empty() {
                    "-".to_owned()
                } else {
                    t.workspaces.join(",")
                },
                t.status.clone(),
                t.expires_at.clone().unwrap_or_else(|| "never".to_owned()),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn revoke(server: &ServerArgs, id: &str) -> Result<(), String> {
    run(server, async |c| c.revoke_token(id).await)?;
    eprintln!("revoked token {id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_repeat_and_split_on_commas() {
        let got = list_arg(vec![
            "secrets.read, secrets.decrypt".into(),
            "tokens.create".into(),
            ",".into(),
        ]);
        assert_eq!(got, ["secrets.read", "secrets.decrypt", "tokens.create"]);
    }

    #[test]
    fn table_aligns_columns() {
        let t = TokenMeta {
            id: "id-1".into(),
            name: "a much longer name".into(),
            tenant: "default".into(),
            principal: "ops".into(),
            roles: vec!["secrets.read".into(), "secrets.decrypt".into()],
            workspaces: vec![],
            created_by: "ops".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            expires_at: None,
            revoked_at: None,
            status: "active".into(),
        };
        let out = table(&[t]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0].find("PRINCIPAL"), lines[1].find("ops"), "{out}");
        assert!(lines[1].contains("secrets.read,secrets.decrypt"), "{out}");
        assert!(lines[1].ends_with("active  never"), "{out}");
    }
}
