//! The first admin token of a deployment, the way operators expect it:
//!
//! - `BOOTSTRAP_ADMIN_TOKEN_FILE` names a token (from `rcrt token generate`, kept in a Docker or
//!   Kubernetes secret) that must exist as an admin token of tenant `default`; idempotent across
//!   restarts and replicas.
//! - Otherwise, in token-only mode with no token in the store at all, the server makes one and
//!   writes it to `BOOTSTRAP_TOKEN_OUTPUT_FILE` (mode 0600), logging only the path. It never does
//!   so again once the store holds a token.
//!
//! Error messages name files, never their content.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcrt_core::tokens::BootstrapState;
use rcrt_core::Service;
use rcrt_crypto::ServiceToken;
use zeroize::Zeroizing;

/// Why the bootstrap token could not be set up. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The file could not be read or written.
    #[error("{var} {path}: {error}")]
    Io {
        /// The variable that names the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The file is readable or writable by every user.
    #[error("{var} {path} is accessible to every user (mode {mode:04o}); make it private with `chmod 600` (Kubernetes: a Secret volume with defaultMode 0440 and fsGroup set to the server's group; Compose: a file owned by the server's user, mode 0400)")]
    WorldAccessible {
        /// The variable.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is empty.
    #[error("{var} {path} is empty; put a token from `rcrt token generate` in it")]
    Empty {
        /// The variable.
        var: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file does not hold a token.
    #[error("{var} {path} does not hold an rcrt token (one line, `rcrt_...`, from `rcrt token generate`)")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The store refused or failed.
    #[error("{var} {path}: {error}")]
    Core {
        /// The variable.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        error: rcrt_core::CoreError,
    },
}

const FILE_VAR: &str = "BOOTSTRAP_ADMIN_TOKEN_FILE";
const OUTPUT_VAR: &str = "BOOTSTRAP_TOKEN_OUTPUT_FILE";

/// Reads a token file: private, one token, one optional trailing line break.
pub fn read_token_file(var: &'static str, path: &Path) -> Result<ServiceToken, BootstrapError> {
    let io = |error| BootstrapError::Io {
        var,
        path: path.to_owned(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o007 != 0 {
            return Err(BootstrapError::WorldAccessible {
                var,
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
    let text = bytes
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
        .unwrap_or(&bytes);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(BootstrapError::Empty {
            var,
            path: path.to_owned(),
        });
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| ServiceToken::parse(t).ok())
        .ok_or_else(|| BootstrapError::Malformed {
            var,
            path: path.to_owned(),
        })
}

/// Runs the bootstrap the configuration asks for; see the module docs. `auto` is true in
/// token-only mode.
pub async fn run(
    service: &Service,
    file: Option<&Path>,
    output: &Path,
    auto: bool,
) -> Result<(), BootstrapError> {
    if let Some(path) = file {
        let token = read_token_file(FILE_VAR, path)?;
        let state = service
            .ensure_bootstrap_token(&token)
            .await
            .map_err(|error| BootstrapError::Core {
                var: FILE_VAR,
                path: path.to_owned(),
                error,
            })?;
        match state {
            BootstrapState::Active => {
                tracing::info!(file = %path.display(), "bootstrap admin token present")
            }
            BootstrapState::Revoked => tracing::warn!(
                file = %path.display(),
                "the bootstrap admin token in this file was revoked and stays revoked; remove BOOTSTRAP_ADMIN_TOKEN_FILE or put a new token in it"
            ),
        }
        return Ok(());
    }
    if !auto {
        return Ok(());
    }
    let core = |error| BootstrapError::Core {
        var: OUTPUT_VAR,
        path: output.to_owned(),
        error,
    };
    if service.has_tokens().await.map_err(core)? {
        return Ok(());
    }
    // A file left by an earlier start that stopped before storing its token is used as is.
    if output.exists() {
        let token = read_token_file(OUTPUT_VAR, output)?;
        if service.create_first_token(&token).await.map_err(core)? {
            tracing::warn!(file = %output.display(), "stored the admin token found in this file; move it to a safe place and delete the file");
        }
        return Ok(());
    }
    let token = ServiceToken::generate()
        .map_err(|e| core(rcrt_core::CoreError::Internal(e.to_string())))?;
    // Written under a temporary name first, so a replica that loses the race leaves nothing.
    let tmp = output.with_file_name(format!(
        ".{}.{}.tmp",
        output
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("bootstrap-token"),
        std::process::id()
    ));
    write_private(&tmp, &token).map_err(|error| BootstrapError::Io {
        var: OUTPUT_VAR,
        path: output.to_owned(),
        error,
    })?;
    let created = service.create_first_token(&token).await;
    let stored = matches!(created, Ok(true));
    let outcome = match created {
        Ok(true) => std::fs::rename(&tmp, output).map_err(|error| BootstrapError::Io {
            var: OUTPUT_VAR,
            path: output.to_owned(),
            error,
        }),
        Ok(false) => Ok(()),
        Err(e) => Err(core(e)),
    };
    let _ = std::fs::remove_file(&tmp);
    outcome?;
    if stored {
        tracing::warn!(
            file = %output.display(),
            "no token existed: created an admin token and wrote it to this file (mode 0600); move it to a safe place and delete the file"
        );
    }
    Ok(())
}

/// Creates `path` (it must not exist) with mode 0600 and writes the token and a newline.
fn write_private(path: &Path, token: &ServiceToken) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    let text = token.expose_secret();
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rcrt-boot-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[cfg(unix)]
    fn write_mode(path: &Path, content: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn token_files_are_checked_without_echoing_them() {
        let d = dir();
        let p = d.join("t");
        let token = ServiceToken::generate().unwrap();
        let text = token.expose_secret().to_string();
        for ok in [text.clone(), format!("{text}\n"), format!("{text}\r\n")] {
            write_mode(&p, ok.as_bytes(), 0o600);
            assert_eq!(read_token_file(FILE_VAR, &p).unwrap().id(), token.id());
        }
        write_mode(&p, format!("{text}\n").as_bytes(), 0o440);
        assert!(
            read_token_file(FILE_VAR, &p).is_ok(),
            "group-readable is fine"
        );
        write_mode(&p, format!("{text}\n").as_bytes(), 0o644);
        let e = read_token_file(FILE_VAR, &p).unwrap_err().to_string();
        assert!(e.contains("every user") && e.contains("0644"), "{e}");
        for (content, want) in [
            ("".to_owned(), "is empty"),
            ("\n".to_owned(), "is empty"),
            (format!("{text}\n\n"), "does not hold"),
            (text.to_uppercase(), "does not hold"),
            (format!("{text} extra"), "does not hold"),
            ("hunter2-not-a-token".to_owned(), "does not hold"),
        ] {
            write_mode(&p, content.as_bytes(), 0o600);
            let e = read_token_file(FILE_VAR, &p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(FILE_VAR), "{content:?}: {e}");
            assert!(!e.contains(&text[10..]) && !e.contains("hunter2"), "{e}");
        }
        let e = read_token_file(FILE_VAR, &d.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
