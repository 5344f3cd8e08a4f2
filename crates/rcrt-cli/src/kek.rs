//! `rcrt kek generate | check | split | combine`.

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcrt_crypto::Kek;
use rcrt_keys::{load_local_keyring, parse_kek, refuse_published_example, KekSources, KeyProvider};
use rcrt_shamir::{Mode, SplitOptions};
use zeroize::Zeroizing;

use crate::input::{env_kek_sources, read_stdin};

pub(crate) fn generate() -> Result<(), String> {
    let kek = Kek::generate().map_err(|e| e.to_string())?;
    let text = Zeroizing::new(STANDARD.encode(kek.expose_secret()));
    println!("{}", text.as_str());
    eprintln!("KEK id: {}", kek.id());
    Ok(())
}

pub(crate) fn check(file: Option<PathBuf>, stdin: bool) -> Result<(), String> {
    let id = if stdin {
        let kek = parse_kek(&read_stdin()?, "stdin").map_err(|e| e.to_string())?;
        refuse_published_example(&kek, "stdin").map_err(|e| e.to_string())?;
        kek.id().clone()
    } else {
        let sources = match file {
            Some(path) => KekSources {
                current_file: Some(path),
                ..KekSources::default()
            },
            None => {
                if let Some(id) = check_provider()? {
                    println!("KEK OK: id {id}");
                    return Ok(());
                }
                env_kek_sources()
            }
        };
        load_local_keyring(&sources)
            .map_err(|e| e.to_string())?
            .current_kek_id()
            .clone()
    };
    println!("KEK OK: id {id}");
    Ok(())
}

/// With `KEK_PROVIDER` naming a provider: connects, wraps and unwraps a throwaway DEK, and
/// returns the KEK id (`None` for a local KEK).
fn check_provider() -> Result<Option<rcrt_crypto::KekId>, String> {
    let plan = crate::input::kek_plan()?;
    if plan.current.is_none() {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let ring = plan
            .build(&env_kek_sources())
            .await
            .map_err(|e| e.to_string())?;
        for (id, result) in ring.probe_all().await {
            result.map_err(|e| format!("KEK {id}: {e}"))?;
        }
        for (id, provider, what) in ring.describe() {
            eprintln!("{id}: {provider} ({what})");
        }
        Ok(Some(ring.current_kek_id().clone()))
    })
}

fn mode(hex: bool) -> Mode {
    if hex {
        Mode::Hex
    } else {
        Mode::Ascii
    }
}

pub(crate) fn split(threshold: u8, shares: u8, hex: bool) -> Result<(), String> {
    let text = read_stdin()?;
    let kek = parse_kek(&text, "stdin").map_err(|e| e.to_string())?;
    // ASCII mode splits the 44-character text exactly as `echo "$KEK" | ssss-split` does;
    // hex mode splits the 32 key bytes, as `ssss-split -x` does with their hex form.
    let trimmed = Zeroizing::new(text.trim().to_owned());
    let secret: &[u8] = if hex {
        kek.expose_secret()
    } else {
        trimmed.as_bytes()
    };
    let lines = rcrt_shamir::split(
        secret,
        &SplitOptions {
            threshold,
            shares,
            mode: mode(hex),
            diffusion: true,
        },
    )
    .map_err(|e| e.to_string())?;
    for line in &lines {
        println!("{line}");
    }
    eprintln!(
        "KEK id: {} ({threshold} of {shares} shares recover it)",
        kek.id()
    );
    Ok(())
}

pub(crate) fn combine(threshold: u8, hex: bool) -> Result<(), String> {
    let text = read_stdin()?;
    let shares: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let secret =
        rcrt_shamir::combine(&shares, threshold, mode(hex), true).map_err(|e| e.to_string())?;
    // Shamir has no integrity check: shares from different splits or a wrong mode give garbage.
    // A result that is not a well-formed KEK is certainly wrong, so say so instead of printing it.
    let kek_text = Zeroizing::new(if hex {
        STANDARD.encode(secret.expose())
    } else {
        // Copy only valid UTF-8 (into the Zeroizing): on failure, FromUtf8Error would drop
        // an unzeroized copy of the combined bytes.
        std::str::from_utf8(secret.expose())
            .map(str::to_owned)
            .unwrap_or_default()
    });
    let kek = parse_kek(&kek_text, "the combined shares").map_err(|_| {
        "the combined shares do not form a valid KEK: check that the shares come from one split, \
         that --threshold matches, and that --hex is given exactly when the split used it"
            .to_owned()
    })?;
    println!("{}", kek_text.as_str());
    eprintln!(
        "KEK id: {} (compare with `rcrt kek check` on the original)",
        kek.id()
    );
    Ok(())
}
