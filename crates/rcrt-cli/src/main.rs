//! `rcrt`: the RCRT Secrets operator CLI.
//!
//! Key material is read only from the environment, files, or stdin, never from arguments, and is
//! printed only by the commands whose job is to print a key (`kek generate`, `kek combine`).
//! Exit codes: 0 success, 1 rejected input or a failed check, 2 usage error.

mod input;
mod kek;
mod maintenance;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Operations on stored secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
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
enum SecretsCommand {
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
        Command::Secrets(SecretsCommand::Reencrypt { keks, db, yes }) => {
            maintenance::reencrypt(&keks, &db, yes)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcrt: {e}");
            ExitCode::FAILURE
        }
    }
}
