//! `rcrt`: the RCRT Secrets operator CLI.
//!
//! Key material and tokens are read only from the environment, files, or stdin, never from
//! arguments, and are printed only by the commands whose job is to print them (`kek generate`,
//! `kek combine`, `token generate`, `token create`).
//! Exit codes: 0 success, 1 rejected input or a failed check, 2 usage error; `rcrt run` exits
//! with its command's status.

mod audit_cmd;
mod client_cmd;
mod dotenv;
mod input;
mod kek;
mod maintenance;
mod run_cmd;
mod token;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rcrt", version, about = "RCRT Secrets operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// KEK management: generate, check, back up with Shamir shares, rotate offline, verify.
    #[command(subcommand)]
    Kek(KekCommand),
    /// Secrets: create, list, read, update, delete, restore, versions and rollback (through the
    /// HTTP API), and re-encrypt.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Vaults: named sets of secrets in a workspace (through the HTTP API).
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Service tokens (`rcrt_...`): generate offline; create, list, revoke (through the HTTP API).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log, read straight from the store: verify its hash chain and signed
    /// checkpoints, query it, export it for a SIEM.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run a command with a vault's keys (and named secrets) as environment variables.
    ///
    /// Every value is read through the server, audited with --reason; then rcrt becomes the
    /// command (exec): values reach it only through its environment, never a file or argv;
    /// signals sent to rcrt's process id reach the command, and its exit status is rcrt's.
    /// RCRT_TOKEN is not passed on. A name that is not a valid environment variable name (or
    /// is `_`), or given by two sources, is refused before any value is read (after the read
    /// for a token without secrets.read, which cannot list a vault's keys). So is a name that
    /// changes which program runs or what code it loads, unless --allow-env NAME: PATH (the
    /// command is looked up in the PATH it is given), every LD_* name, BASH_ENV, ENV,
    /// NODE_OPTIONS, PYTHONPATH, PYTHONHOME, PERL5OPT, PERL5LIB, RUBYOPT, RUBYLIB,
    /// JAVA_TOOL_OPTIONS. With --vault, the reason must be ASCII (it travels in an HTTP header).
    /// Exit codes: the command's; 1 if a value cannot be read or a name is refused; 127 command
    /// not found; 126 cannot be started.
    #[command(
        after_help = "Example:\n  rcrt run --vault payments --workspace w1 --reason deploy -- node server.js"
    )]
    Run {
        /// A vault (id or name) whose keys become variables; repeat for several.
        #[arg(long = "vault", value_name = "VAULT")]
        vaults: Vec<String>,
        /// The workspace of the vaults, when names are ambiguous.
        #[arg(long)]
        workspace: Option<String>,
        /// Why the values are read (written to the audit log with every read).
        #[arg(long)]
        reason: String,
        /// Secret ID as variable NAME; repeat for several.
        #[arg(long = "secret", value_name = "NAME=ID")]
        secrets: Vec<String>,
        /// Prepended to every vault key (e.g. APP_); not to --secret names.
        #[arg(long)]
        prefix: Option<String>,
        /// Let a value set this guarded name (PATH, LD_*, BASH_ENV, ...: see above); repeat
        /// for several.
        #[arg(long = "allow-env", value_name = "NAME")]
        allow_env: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Print a shell completion script: `rcrt completions bash > /etc/bash_completion.d/rcrt`,
    /// `rcrt completions zsh > "${fpath[1]}/_rcrt"`, `rcrt completions fish >
    /// ~/.config/fish/completions/rcrt.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The server for client commands: `--url`, else RCRT_URL, else http://127.0.0.1:8081.
/// The token: `--token-file`, else RCRT_TOKEN (none when the server runs without auth). A JWT or
/// an `rcrt_...` service token; either is sent as `Authorization: Bearer`.
#[derive(clap::Args, Clone)]
pub(crate) struct ServerArgs {
    /// The server's base URL [default: RCRT_URL, else http://127.0.0.1:8081].
    #[arg(long)]
    url: Option<String>,
    /// A file holding your token (a JWT or an rcrt_ service token) [default: RCRT_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// Where a value comes from: a file, else stdin (one trailing newline is dropped). An empty
/// value is refused unless `--allow-empty`.
#[derive(clap::Args, Clone)]
pub(crate) struct ValueArgs {
    /// Read the value from this file instead of stdin.
    #[arg(long)]
    value_file: Option<PathBuf>,
    /// Store an empty value (refused otherwise, so that `echo "$UNSET"` stores nothing by
    /// mistake).
    #[arg(long)]
    allow_empty: bool,
}

/// `--idempotency-key` of the client commands that write.
#[derive(clap::Args, Clone)]
pub(crate) struct IdempotencyArgs {
    /// Sent as Idempotency-Key: a retry with the same key (after a lost answer) gets the first
    /// answer instead of a 409 or a second version (1-255 printable ASCII characters; kept by
    /// the server for IDEMPOTENCY_TTL, default 24 h).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
}

/// Where the KEKs for an offline job come from. Without flags: `LOCAL_KEK_BASE64` (or `_FILE`) is
/// the new/current KEK and `LOCAL_KEK_BASE64_OLD` (or `_OLD_FILE`) the old ones.
#[derive(clap::Args, Clone)]
pub(crate) struct KekArgs {
    /// File holding the new (current) KEK.
    #[arg(long, conflicts_with = "keks_stdin")]
    new_kek_file: Option<PathBuf>,
    /// File holding the old KEK(s), one per line.
    #[arg(long, conflicts_with = "keks_stdin")]
    old_kek_file: Option<PathBuf>,
    /// Read KEKs from stdin: the first line is the new KEK, further lines are old KEKs.
    #[arg(long)]
    keks_stdin: bool,
}

/// Which store an offline job works on.
#[derive(clap::Args, Clone)]
pub(crate) struct DbArgs {
    /// The store: `postgres://...`, or a SQLite path. Defaults to DB_URL / DATABASE_URL.
    #[arg(long)]
    db_url: Option<String>,
    /// Rows per transaction.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
    /// At most this many rows per second (0: no limit), to spare a live database.
    #[arg(long, default_value_t = 0)]
    max_rows_per_sec: u32,
}

#[derive(Subcommand)]
enum KekCommand {
    /// Print a new KEK: 32 bytes from the OS random source, standard base64 (44 characters).
    Generate,
    /// Validate a KEK and print its KEK id (never the key). Reads LOCAL_KEK_BASE64 or
    /// LOCAL_KEK_BASE64_FILE from the environment unless --file or --stdin is given.
    Check {
        /// Read the KEK from this file.
        #[arg(long, conflicts_with = "stdin")]
        file: Option<PathBuf>,
        /// Read the KEK from standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Split the KEK read on stdin into Shamir shares, one per line (compatible with ssss-split).
    Split {
        /// Shares needed to recover the KEK.
        #[arg(long, short = 't')]
        threshold: u8,
        /// Shares to make.
        #[arg(long, short = 'n')]
        shares: u8,
        /// Split the 32 raw key bytes (ssss-split -x) instead of the 44-character text.
        #[arg(long)]
        hex: bool,
    },
    /// Recover the KEK from Shamir shares read on stdin, one per line (compatible with ssss-combine).
    Combine {
        /// Shares needed (the threshold used when splitting).
        #[arg(long, short = 't')]
        threshold: u8,
        /// The shares were made from the 32 raw key bytes (ssss-split -x).
        #[arg(long)]
        hex: bool,
    },
    /// Re-wrap every DEK under the new KEK, offline (the guide's migrate-secrets.sh).
    /// Values are not re-encrypted. Idempotent; safe to interrupt and run again.
    Rewrap {
        #[command(flatten)]
        keks: KekArgs,
        #[command(flatten)]
        db: DbArgs,
        /// Count what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prove that every stored version unwraps and decrypts under the given KEKs, without
    /// writing; print a census by KEK id. Exit 1 if any version fails.
    Verify {
        #[command(flatten)]
        keks: KekArgs,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain and every signed checkpoint; name the first broken row.
    ///
    /// Reports rows changed, deleted, inserted or reordered, a truncated tail, and checkpoints
    /// whose signature or heads do not match. The checkpoint signing keys are authenticated
    /// with the KEK (the same variables and flags as `rcrt kek verify`) or trusted from
    /// --public-key. Exit 0 when everything verifies, 1 otherwise.
    Verify {
        /// The store: `postgres://...` (the owner role), or a SQLite path. Defaults to DB_URL /
        /// DATABASE_URL.
        #[arg(long)]
        db_url: Option<String>,
        /// Trust this checkpoint public key (base64, as the server logs it) instead of
        /// authenticating the stored keys with the KEK; repeat for several.
        #[arg(long = "public-key", value_name = "BASE64")]
        public_keys: Vec<String>,
        #[command(flatten)]
        keks: KekArgs,
    },
    /// Print audit rows, newest first (every tenant unless --tenant).
    #[command(
        after_help = "Example (the guide's 30-day query):\n  rcrt audit query --since 30d --db-url \"$DB_URL\""
    )]
    Query {
        #[command(flatten)]
        filters: audit_cmd::Filters,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = audit_cmd::QueryFormat::Table)]
        format: audit_cmd::QueryFormat,
        /// The store: `postgres://...`, or a SQLite path. Defaults to DB_URL / DATABASE_URL.
        #[arg(long)]
        db_url: Option<String>,
    },
    /// Write audit rows as JSON lines, oldest first, for a SIEM (with each row's chain lane,
    /// seq and hash).
    Export {
        #[command(flatten)]
        filters: audit_cmd::Filters,
        /// Only rows with a larger id (resume after the last exported row).
        #[arg(long)]
        after_id: Option<i64>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The store: `postgres://...`, or a SQLite path. Defaults to DB_URL / DATABASE_URL.
        #[arg(long)]
        db_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Create a vault from a dotenv file on stdin or in --from-file.
    ///
    /// Read as dotenv is: `KEY=value`, optional `export `, `#` comments, 'single quotes' taken
    /// as they are, "double quotes" with \n escapes, $VAR and ${VAR} expanded in unquoted and
    /// double-quoted values (from earlier lines, else the environment). `vault get --format env`
    /// output reads back unchanged.
    Create {
        /// The vault's name.
        name: String,
        /// The workspace it belongs to.
        #[arg(long)]
        workspace: String,
        /// Read KEY=value lines from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// Store keys whose value is empty (refused otherwise).
        #[arg(long)]
        allow_empty: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the vaults you may read (metadata only, every page), as JSON.
    List {
        /// Only this workspace's vaults.
        #[arg(long)]
        workspace: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print every value of a vault (each read is audited with the reason).
    Get {
        /// The vault's id or name.
        vault: String,
        /// Why you read it (written to the audit log).
        #[arg(long)]
        reason: String,
        /// The workspace, when several vaults share the name.
        #[arg(long)]
        workspace: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = client_cmd::VaultFormat::Env)]
        format: client_cmd::VaultFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new service token and nothing else (offline; no server needed).
    ///
    /// The token (`rcrt_<32 hex id>_<64 hex secret>`) and a newline go to stdout, e.g. into the
    /// file BOOTSTRAP_ADMIN_TOKEN_FILE names (a Docker or Kubernetes secret, mode 0600).
    Generate,
    /// Mint a service token no broader than yours; print it once.
    ///
    /// Needs secrets.admin or tokens.create. The roles and workspaces must be within yours and
    /// the token cannot outlive your own (else 403 forbidden). Text format: the token alone on
    /// stdout (`> ci.token` captures it), a one-line summary (id, expiry) on stderr.
    #[command(
        after_help = "Roles: secrets.read, secrets.decrypt, secrets.write, secrets.admin, \
tokens.create, rcrt.operator.\n\nExample:\n  rcrt token create ci --role secrets.read,secrets.decrypt \
--workspace w1 --ttl 30d > ci.token"
    )]
    Create {
        /// A label for people (e.g. ci-deploy).
        name: String,
        /// A role to grant; repeat the flag or separate roles with commas.
        #[arg(long = "role", required = true, value_name = "ROLE")]
        roles: Vec<String>,
        /// A workspace the token may reach; repeat the flag or separate with commas.
        #[arg(long = "workspace", value_name = "WORKSPACE")]
        workspaces: Vec<String>,
        /// Lifetime: seconds, or a duration such as 30d, 12h, "1h 30m" [server default: 30d;
        /// at most 366d, and not beyond your own token's expiry].
        #[arg(long)]
        ttl: Option<String>,
        /// The principal it acts as [default: yours; another needs secrets.admin].
        #[arg(long)]
        principal: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = token::CreateFormat::Text)]
        format: token::CreateFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tokens' metadata, all pages (never a token itself).
    ///
    /// With secrets.admin: every token of your tenant; otherwise those you created or act as.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = token::ListFormat::Table)]
        format: token::ListFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token by its id (from `rcrt token list`); it stops working at once.
    ///
    /// With secrets.admin: any token of your tenant; otherwise one you created or act as.
    /// Revoking is permanent; revoking twice is fine.
    Revoke {
        /// The token's id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Create a secret; the value is read from stdin or --value-file, never from arguments.
    Create {
        /// The secret's name.
        name: String,
        /// global, workspace or agent.
        #[arg(long, default_value = "global")]
        scope_type: String,
        /// The workspace or agent id (for those scopes).
        #[arg(long)]
        scope_id: Option<String>,
        /// A description for people (at most 1024 characters).
        #[arg(long)]
        description: Option<String>,
        /// A label KEY=VALUE; repeat the flag or separate labels with commas.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// When decrypts start answering 410 expired (RFC 3339, e.g. 2030-01-31T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// How many versions to keep, 1 to 100 [default: the server's MAX_VERSIONS].
        #[arg(long, value_name = "N")]
        max_versions: Option<u32>,
        #[command(flatten)]
        idempotency: IdempotencyArgs,
        #[command(flatten)]
        value: ValueArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List secrets' metadata (all pages).
    #[command(
        after_help = "Examples:\n  rcrt secrets list --label env=prod --name-prefix db/\n  rcrt secrets list --expiring 30d\n  rcrt secrets list --deleted"
    )]
    List {
        /// Only this scope type.
        #[arg(long)]
        scope_type: Option<String>,
        /// Only this scope id.
        #[arg(long)]
        scope_id: Option<String>,
        /// Only secrets with this label KEY=VALUE; repeat (or separate with commas): every one
        /// must match.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Only names starting with this.
        #[arg(long, value_name = "PREFIX")]
        name_prefix: Option<String>,
        /// Only secrets expiring within this time (e.g. 30d, 12h; already expired included).
        #[arg(long, value_name = "DURATION")]
        expiring: Option<String>,
        /// Soft-deleted secrets (still restorable) instead of live ones.
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a secret's value, or write it to a file (the read is audited with the reason).
    #[command(visible_alias = "decrypt")]
    Get {
        /// The secret's id.
        id: String,
        /// Why you read it (written to the audit log).
        #[arg(long)]
        reason: String,
        /// This version instead of the current one (see `rcrt secrets versions`).
        #[arg(long, value_name = "N")]
        version: Option<i64>,
        /// Write the value (exactly, no newline added) to this file, created with mode 0600;
        /// an existing file is refused unless --force.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// With --output: replace an existing file (by a new 0600 file renamed over it).
        #[arg(long, requires = "output")]
        force: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write a new version; the value is read from stdin or --value-file.
    Update {
        /// The secret's id.
        id: String,
        /// Only if this is still the current version.
        #[arg(long)]
        if_match: Option<i64>,
        #[command(flatten)]
        idempotency: IdempotencyArgs,
        #[command(flatten)]
        value: ValueArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Change a secret's description, labels, expiry or version cap (no new version).
    UpdateMeta {
        /// The secret's id.
        id: String,
        /// The new description ("" clears it).
        #[arg(long)]
        description: Option<String>,
        /// The new labels KEY=VALUE, replacing all of them; repeat or separate with commas.
        #[arg(
            long = "label",
            value_name = "KEY=VALUE",
            conflicts_with = "clear_labels"
        )]
        labels: Vec<String>,
        /// Remove every label.
        #[arg(long)]
        clear_labels: bool,
        /// The new expiry (RFC 3339).
        #[arg(long, value_name = "TIME", conflicts_with = "no_expiry")]
        expires_at: Option<String>,
        /// Remove the expiry.
        #[arg(long)]
        no_expiry: bool,
        /// Keep at most N versions (1 to 100).
        #[arg(long, value_name = "N", conflicts_with = "default_max_versions")]
        max_versions: Option<u32>,
        /// Keep the server's default number of versions (MAX_VERSIONS).
        #[arg(long)]
        default_max_versions: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List a secret's versions, newest first: number, time, author, state (never a value).
    Versions {
        /// The secret's id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write a new current version holding an older version's value (sealed again under a
    /// fresh DEK).
    Rollback {
        /// The secret's id.
        id: String,
        /// The version whose value to restore.
        #[arg(long, value_name = "N")]
        version: i64,
        /// Only if this is still the current version.
        #[arg(long)]
        if_match: Option<i64>,
        #[command(flatten)]
        idempotency: IdempotencyArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Destroy one version (crypto-shredding; not the current one). Only its record stays.
    DestroyVersion {
        /// The secret's id.
        id: String,
        /// The version number.
        version: i64,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a secret and every version (crypto-shredding), or with --recovery-window hide it
    /// until `rcrt secrets restore` or the end of the window.
    ///
    /// Without --recovery-window the server's DELETE_RECOVERY_WINDOW applies (default 0:
    /// immediate). A soft-deleted secret prints {id, deleted_at, purge_at}; its name stays
    /// taken until it is restored or purged.
    Delete {
        /// The secret's id.
        id: String,
        /// Keep it restorable for this long (e.g. 7d, 12h; at most 90d; 0: delete at once).
        #[arg(long, value_name = "DURATION")]
        recovery_window: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Bring back a soft-deleted secret (before its purge_at).
    Restore {
        /// The secret's id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Emergency re-encryption after a KEK compromise: every value is sealed again under a
    /// fresh DEK wrapped by the new KEK. Resumes where an interrupted run stopped.
    Reencrypt {
        #[command(flatten)]
        keks: KekArgs,
        #[command(flatten)]
        db: DbArgs,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Prints the completion script for `shell`. Generated in memory first: `generate` panics when
/// it cannot write, and a full disk or closed pipe is an error to report, not a crash.
fn completions(shell: clap_complete::Shell) -> Result<(), String> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rcrt", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the completion script: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Kek(KekCommand::Generate) => kek::generate(),
        Command::Kek(KekCommand::Check { file, stdin }) => kek::check(file, stdin),
        Command::Kek(KekCommand::Split {
            threshold,
            shares,
            hex,
        }) => kek::split(threshold, shares, hex),
        Command::Kek(KekCommand::Combine { threshold, hex }) => kek::combine(threshold, hex),
        Command::Kek(KekCommand::Rewrap { keks, db, dry_run }) => {
            maintenance::rewrap(&keks, &db, dry_run)
        }
        Command::Kek(KekCommand::Verify { keks, db }) => maintenance::verify(&keks, &db),
        Command::Audit(AuditCommand::Verify {
            db_url,
            public_keys,
            keks,
        }) => audit_cmd::verify(db_url.as_deref(), &public_keys, &keks),
        Command::Audit(AuditCommand::Query {
            filters,
            limit,
            format,
            db_url,
        }) => audit_cmd::query(db_url.as_deref(), &filters, limit, format),
        Command::Audit(AuditCommand::Export {
            filters,
            after_id,
            out,
            db_url,
        }) => audit_cmd::export(db_url.as_deref(), &filters, after_id, out.as_ref()),
        Command::Secrets(SecretsCommand::Reencrypt { keks, db, yes }) => {
            maintenance::reencrypt(&keks, &db, yes)
        }
        Command::Secrets(SecretsCommand::Create {
            name,
            scope_type,
            scope_id,
            description,
            labels,
            expires_at,
            max_versions,
            idempotency,
            value,
            server,
        }) => client_cmd::create(
            &server,
            &client_cmd::NewSecretArgs {
                name,
                scope_type,
                scope_id,
                description,
                labels,
                expires_at,
                max_versions,
                idempotency_key: idempotency.idempotency_key,
            },
            &value,
        ),
        Command::Secrets(SecretsCommand::List {
            scope_type,
            scope_id,
            labels,
            name_prefix,
            expiring,
            deleted,
            server,
        }) => client_cmd::list(
            &server,
            client_cmd::ListArgs {
                scope_type,
                scope_id,
                labels,
                name_prefix,
                expiring,
                deleted,
            },
        ),
        Command::Secrets(SecretsCommand::Get {
            id,
            reason,
            version,
            output,
            force,
            server,
        }) => client_cmd::get(
            &server,
            &id,
            &reason,
            version,
            &client_cmd::GetOutput {
                file: output.as_deref(),
                force,
            },
        ),
        Command::Secrets(SecretsCommand::Update {
            id,
            if_match,
            idempotency,
            value,
            server,
        }) => client_cmd::update(&server, &id, if_match, idempotency.idempotency_key, &value),
        Command::Secrets(SecretsCommand::UpdateMeta {
            id,
            description,
            labels,
            clear_labels,
            expires_at,
            no_expiry,
            max_versions,
            default_max_versions,
            server,
        }) => client_cmd::update_meta(
            &server,
            &id,
            client_cmd::MetaChanges {
                description,
                labels,
                clear_labels,
                expires_at,
                no_expiry,
                max_versions,
                default_max_versions,
            },
        ),
        Command::Secrets(SecretsCommand::Versions { id, server }) => {
            client_cmd::versions(&server, &id)
        }
        Command::Secrets(SecretsCommand::Rollback {
            id,
            version,
            if_match,
            idempotency,
            server,
        }) => client_cmd::rollback(
            &server,
            &id,
            version,
            if_match,
            idempotency.idempotency_key.as_deref(),
        ),
        Command::Secrets(SecretsCommand::DestroyVersion {
            id,
            version,
            yes,
            server,
        }) => client_cmd::destroy_version(&server, &id, version, yes),
        Command::Secrets(SecretsCommand::Delete {
            id,
            recovery_window,
            yes,
            server,
        }) => client_cmd::delete(&server, &id, recovery_window.as_deref(), yes),
        Command::Secrets(SecretsCommand::Restore { id, server }) => {
            client_cmd::restore(&server, &id)
        }
        Command::Vault(VaultCommand::Create {
            name,
            workspace,
            from_file,
            allow_empty,
            server,
        }) => client_cmd::vault_create(
            &server,
            &name,
            &workspace,
            from_file.as_deref(),
            allow_empty,
        ),
        Command::Vault(VaultCommand::List { workspace, server }) => {
            client_cmd::vault_list(&server, workspace.as_deref())
        }
        Command::Vault(VaultCommand::Get {
            vault,
            reason,
            workspace,
            format,
            server,
        }) => client_cmd::vault_get(&server, &vault, &reason, workspace.as_deref(), format),
        Command::Token(TokenCommand::Generate) => token::generate(),
        Command::Token(TokenCommand::Create {
            name,
            roles,
            workspaces,
            ttl,
            principal,
            format,
            server,
        }) => token::create(
            &server,
            token::CreateArgs {
                name,
                roles,
                workspaces,
                ttl,
                principal,
                format,
            },
        ),
        Command::Token(TokenCommand::List { format, server }) => token::list(&server, format),
        Command::Token(TokenCommand::Revoke { id, server }) => token::revoke(&server, &id),
        Command::Run {
            vaults,
            workspace,
            reason,
            secrets,
            prefix,
            allow_env,
            server,
            command,
        } => {
            return run_cmd::main(run_cmd::RunArgs {
                vaults,
                workspace,
                reason,
                secrets,
                prefix,
                server,
                command,
                allow_env,
            })
        }
        Command::Completions { shell } => completions(shell),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcrt: {e}");
            ExitCode::FAILURE
        }
    }
}
