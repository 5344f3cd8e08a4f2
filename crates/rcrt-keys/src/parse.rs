//! KEK material from text: the guide's variables, files and their error messages.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcrt_crypto::Kek;
use zeroize::Zeroizing;

use crate::LocalKeyring;

/// How to make a KEK, shown with every "missing" or "invalid" error.
pub const GENERATE_HINT: &str =
    "generate one with: openssl rand -base64 32  (or: rcrt kek generate)";

/// Why KEK material could not be loaded. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// Neither `LOCAL_KEK_BASE64` nor `LOCAL_KEK_BASE64_FILE` (nor `.env`) gave a KEK.
    #[error("LOCAL_KEK_BASE64 missing: set LOCAL_KEK_BASE64, or LOCAL_KEK_BASE64_FILE to a file holding it, or put LOCAL_KEK_BASE64=... in .env; {GENERATE_HINT}")]
    Missing,
    /// The `_FILE` variable names a file with nothing in it.
    #[error("{var} names {path}, which is empty: put the KEK in it (44 base64 characters); {GENERATE_HINT}")]
    EmptyFile {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// Both the variable and the `_FILE` variant are set for the same key.
    #[error("both {0} and {0}_FILE are set: set only one")]
    BothSet(&'static str),
    /// The text is not 32 bytes of standard base64.
    #[error("Invalid KEK format in {source_name}: a KEK must be exactly 32 bytes, standard base64 encoded (44 characters ending with '='); {GENERATE_HINT}")]
    Invalid {
        /// Where the bad value came from (a variable name or a file path), never the value.
        source_name: String,
    },
    /// The current KEK is the production guide's published example, which anyone can read.
    #[error("the KEK in {source_name} is the production guide's published example KEK (id {PUBLISHED_EXAMPLE_KEK_ID}), which anyone can read: refusing to use it. Generate a KEK of your own ({GENERATE_HINT}); to move a store off the example KEK, give it as LOCAL_KEK_BASE64_OLD and re-wrap")]
    PublishedExample {
        /// Where the value came from (a variable name or a file path), never the value.
        source_name: String,
    },
    /// A `_FILE` path could not be read.
    #[error("cannot read {var} file {path}: {error}")]
    File {
        /// The variable naming the file.
        var: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Parses one KEK: exactly 44 characters of standard base64 ending in `=` (32 bytes), with
/// surrounding whitespace (a file's trailing newline) ignored.
pub fn parse_kek(text: &str, source_name: &str) -> Result<Kek, KekError> {
    let invalid = || KekError::Invalid {
        source_name: source_name.to_owned(),
    };
    let trimmed = text.trim();
    let well_formed = trimmed.len() == 44
        && trimmed.ends_with('=')
        && trimmed
            .bytes()
            .take(43)
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !well_formed {
        return Err(invalid());
    }
    // One heap buffer, sized once (no reallocation) and wiped on drop; the key is copied from
    // it straight into the KEK's own heap buffer, never into a value moved around by copy.
    let decoded = Zeroizing::new(STANDARD.decode(trimmed).map_err(|_| invalid())?);
    let key: &[u8; 32] = decoded.as_slice().try_into().map_err(|_| invalid())?;
    Ok(Kek::from_secret(key))
}

/// The KEK id of the production guide's published example KEK
/// (`xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=`), which anyone can read: refused as the
/// current KEK, accepted as an old one so a store can be moved off it. Kept as its id, not its
/// text, so the key itself appears nowhere in the program.
pub const PUBLISHED_EXAMPLE_KEK_ID: &str = "ef77c7821f501b03";

/// Refuses the guide's published example KEK as a current KEK (see [`PUBLISHED_EXAMPLE_KEK_ID`]);
/// `source_name` says where it came from in the error.
pub fn refuse_published_example(kek: &Kek, source_name: &str) -> Result<(), KekError> {
    if kek.id().as_str() == PUBLISHED_EXAMPLE_KEK_ID {
        return Err(KekError::PublishedExample {
            source_name: source_name.to_owned(),
        });
    }
    Ok(())
}

/// The raw settings a keyring is built from, as the config module found them.
#[derive(Default)]
pub struct KekSources {
    /// `LOCAL_KEK_BASE64`.
    pub current: Option<Zeroizing<String>>,
    /// `LOCAL_KEK_BASE64_FILE`.
    pub current_file: Option<PathBuf>,
    /// `LOCAL_KEK_BASE64_OLD`: one or more old KEKs separated by commas or whitespace.
    pub old: Option<Zeroizing<String>>,
    /// `LOCAL_KEK_BASE64_OLD_FILE`: a file with one old KEK per line.
    pub old_file: Option<PathBuf>,
}

impl KekSources {
    /// Reads the four variables through `get` (the caller's environment, `.env`, ...).
    pub fn from_lookup(get: impl Fn(&str) -> Option<Zeroizing<String>>) -> Self {
        let path = |k: &str| get(k).map(|v| PathBuf::from(v.trim()));
        Self {
            current: get("LOCAL_KEK_BASE64"),
            current_file: path("LOCAL_KEK_BASE64_FILE"),
            old: get("LOCAL_KEK_BASE64_OLD"),
            old_file: path("LOCAL_KEK_BASE64_OLD_FILE"),
        }
    }
}

impl std::fmt::Debug for KekSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KekSources")
            .field("current", &self.current.as_ref().map(|_| "[REDACTED]"))
            .field("current_file", &self.current_file)
            .field("old", &self.old.as_ref().map(|_| "[REDACTED]"))
            .field("old_file", &self.old_file)
            .finish()
    }
}

fn read_file(var: &'static str, path: &Path) -> Result<Zeroizing<String>, KekError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|error| KekError::File {
            var,
            path: path.to_owned(),
            error,
        })
}

fn one_of(
    var: &'static str,
    value: &Option<Zeroizing<String>>,
    file: &Option<PathBuf>,
) -> Result<Option<(Zeroizing<String>, String)>, KekError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(KekError::BothSet(var)),
        (Some(v), None) => Ok(Some((v.clone(), var.to_owned()))),
        (None, Some(path)) => Ok(Some((read_file(var, path)?, path.display().to_string()))),
        (None, None) => Ok(None),
    }
}

/// Builds the local keyring from the guide's variables.
pub fn load_local_keyring(sources: &KekSources) -> Result<LocalKeyring, KekError> {
    let (text, name) = one_of("LOCAL_KEK_BASE64", &sources.current, &sources.current_file)?
        .ok_or(KekError::Missing)?;
    if text.trim().is_empty() {
        return Err(match &sources.current_file {
            Some(path) => KekError::EmptyFile {
                var: "LOCAL_KEK_BASE64_FILE",
                path: path.clone(),
            },
            None => KekError::Missing,
        });
    }
    let current = parse_kek(&text, &name)?;
    refuse_published_example(&current, &name)?;
    Ok(LocalKeyring::new(current, load_local_old(sources)?))
}

/// The old KEKs of `LOCAL_KEK_BASE64_OLD` / `LOCAL_KEK_BASE64_OLD_FILE` alone (when the
/// current KEK lives in a remote provider).
pub fn load_local_old(sources: &KekSources) -> Result<Vec<Kek>, KekError> {
    let mut old = Vec::new();
    if let Some((text, name)) = one_of("LOCAL_KEK_BASE64_OLD", &sources.old, &sources.old_file)? {
        for part in text.split(|c: char| c == ',' || c.is_whitespace()) {
            if !part.is_empty() {
                old.push(parse_kek(part, &name)?);
            }
        }
    }
    Ok(old)
}

/// True when `LOCAL_KEK_BASE64` or `LOCAL_KEK_BASE64_FILE` is set.
pub fn local_current_given(sources: &KekSources) -> bool {
    sources.current.is_some() || sources.current_file.is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::KeyProvider;

    const K1: &str = "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=";
    const K2: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn s(v: &str) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(v.to_owned()))
    }

    /// An empty KEK file said "LOCAL_KEK_BASE64 missing" although the variable naming it was
    /// set: the message names the variable and the file now.
    #[test]
    fn an_empty_kek_file_is_named() {
        let dir = std::env::temp_dir().join(format!("rcrt-empty-kek-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kek");
        for content in ["", "\n", "  \n"] {
            std::fs::write(&path, content).unwrap();
            let err = load_local_keyring(&KekSources {
                current_file: Some(path.clone()),
                ..Default::default()
            })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(
                err.contains("LOCAL_KEK_BASE64_FILE")
                    && err.contains(&path.display().to_string())
                    && err.contains("empty"),
                "{content:?}: {err}"
            );
            assert!(!err.contains("missing"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn accepts_the_guides_example_and_trailing_newline() {
        let a = parse_kek(K1, "x").unwrap();
        let b = parse_kek(&format!("{K1}\n"), "x").unwrap();
        assert_eq!(a.id(), b.id());
    }

    #[test]
    fn rejects_bad_formats_without_echoing() {
        for bad in [
            "short",
            "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o", // no '='
            "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o==", // 45 chars
            "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN-o=", // url-safe alphabet
            "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5p=", // non-canonical last char
        ] {
            let err = parse_kek(bad, "LOCAL_KEK_BASE64").unwrap_err().to_string();
            assert!(err.contains("Invalid KEK format"), "{bad}: {err}");
            assert!(!err.contains(bad.trim_end_matches('=')), "{err}");
        }
    }

    #[test]
    fn refuses_the_published_example_as_current_only() {
        for sources in [
            KekSources {
                current: s(K1),
                ..Default::default()
            },
            KekSources {
                current: s(&format!("  {K1}\n")),
                old: s(K2),
                ..Default::default()
            },
        ] {
            let err = load_local_keyring(&sources).unwrap_err();
            assert!(matches!(err, KekError::PublishedExample { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("published example KEK"), "{msg}");
            assert!(msg.contains("LOCAL_KEK_BASE64"), "{msg}");
            assert!(msg.contains("openssl rand -base64 32"), "{msg}");
            assert!(!msg.contains(K1.trim_end_matches('=')), "{msg}");
        }
        assert_eq!(
            parse_kek(K1, "x").unwrap().id().as_str(),
            PUBLISHED_EXAMPLE_KEK_ID
        );
        // As an old KEK it is accepted, so a store can be re-wrapped off it.
        let ring = load_local_keyring(&KekSources {
            current: s(K2),
            old: s(K1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ring.kek_ids().len(), 2);
    }

    #[test]
    fn parsed_keys_stay_where_they_were_made() {
        let current = parse_kek(K2, "x").unwrap();
        let old = vec![parse_kek(K1, "y").unwrap()];
        let (at_current, at_old) = (
            current.expose_secret().as_ptr(),
            old[0].expose_secret().as_ptr(),
        );
        let ring = crate::LocalKeyring::new(current, old);
        assert_eq!(ring.current().expose_secret().as_ptr(), at_current);
        assert_eq!(ring.old_keys()[0].expose_secret().as_ptr(), at_old);
    }

    #[test]
    fn missing_and_both_set() {
        let err = load_local_keyring(&KekSources::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("LOCAL_KEK_BASE64 missing"));
        assert!(msg.contains("openssl rand -base64 32"));
        let both = KekSources {
            current: s(K1),
            current_file: Some("/nonexistent".into()),
            ..Default::default()
        };
        assert!(matches!(
            load_local_keyring(&both),
            Err(KekError::BothSet("LOCAL_KEK_BASE64"))
        ));
    }

    #[test]
    fn old_keys_list() {
        let ring = load_local_keyring(&KekSources {
            current: s(K2),
            old: s(&format!("{K1}, {K2}")),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ring.kek_ids().len(), 2);
    }
}
