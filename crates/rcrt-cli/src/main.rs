//! `rcrt`: the RCRT Secrets operator CLI.
//!
//! Key material is read only from the environment, a file, or stdin, never from arguments,
//! and is never printed except by `kek generate`, whose whole job is to print a new KEK.
//! Exit codes: 0 success, 1 the KEK or input was rejected, 2 usage error.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Parser, Subcommand};
use rcrt_crypto::{Kek, KekId};
use rcrt_keys::{load_local_keyring, parse_kek, KekSources, KeyProvider};
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(name = "rcrt", version, about = "RCRT Secrets operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// KEK management.
    #[command(subcommand)]
    Kek(KekCommand),
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
}

/// Every environment variable the CLI reads is read here.
fn env_kek_sources() -> KekSources {
    KekSources::from_lookup(|k| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Zeroizing::new)
    })
}

fn kek_check(file: Option<PathBuf>, stdin: bool) -> Result<KekId, String> {
    if stdin {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        return parse_kek(&text, "stdin")
            .map(|k| k.id().clone())
            .map_err(|e| e.to_string());
    }
    let sources = match file {
        Some(path) => KekSources {
            current_file: Some(path),
            ..KekSources::default()
        },
        None => env_kek_sources(),
    };
    let ring = load_local_keyring(&sources).map_err(|e| e.to_string())?;
    Ok(ring.current_kek_id().clone())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Kek(KekCommand::Generate) => match Kek::generate() {
            Ok(kek) => {
                let text = Zeroizing::new(STANDARD.encode(kek.expose_secret()));
                println!("{}", text.as_str());
                eprintln!("KEK id: {}", kek.id());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rcrt: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Kek(KekCommand::Check { file, stdin }) => match kek_check(file, stdin) {
            Ok(id) => {
                println!("KEK OK: id {id}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rcrt: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
