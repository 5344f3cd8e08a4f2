//! Process hygiene for key material, applied by `main` once the configuration is read and
//! before any other thread exists (docs/crypto.md, "Key hygiene", says what holds):
//!
//! - the KEK variables leave the environment: removed from `environ` (so no child process or
//!   later `getenv` sees them) and their text overwritten in the process's initial environment
//!   block, which is what `/proc/<pid>/environ` shows and which `unsetenv` leaves in place;
//! - no core dumps (`RLIMIT_CORE` 0) and no ptrace attach or `/proc/<pid>/mem` reads by other
//!   processes of the same user (`PR_SET_DUMPABLE` 0; root with `CAP_SYS_PTRACE` still can).
//!
//! Each step reports what it could not do; `main` logs that as a warning and starts anyway.
//! Linux only: elsewhere the variables are removed from `environ` and nothing more.

/// The variables that hold KEK material or a credential (their `_FILE` variants hold paths):
/// the KEKs, the store URL, which may carry a database password, and the KEK providers'
/// credentials (a Vault token, AWS secret keys), which the providers keep in memory of their own.
pub(crate) const SECRET_VARS: [&str; 8] = [
    "LOCAL_KEK_BASE64",
    "LOCAL_KEK_BASE64_OLD",
    "DB_URL",
    "DATABASE_URL",
    "VAULT_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// Removes `vars` from the environment and overwrites their `NAME=value` text in the initial
/// environment block with zeros. Call before any thread starts (`remove_var` is not safe to
/// race with `getenv` on another thread). Returns what could not be done.
pub(crate) fn scrub_environment(vars: &[&str]) -> Vec<String> {
    let present: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|v| std::env::var_os(v).is_some())
        .collect();
    for var in &present {
        std::env::remove_var(var);
    }
    let mut problems = Vec::new();
    if !present.is_empty() {
        if let Err(e) = overwrite_initial_environment(&present) {
            problems.push(format!(
                "could not overwrite {} in the initial environment block (still readable in /proc/self/environ by this user and root): {e}",
                present.join(", ")
            ));
        }
    }
    problems
}

#[cfg(target_os = "linux")]
fn overwrite_initial_environment(vars: &[&str]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;

    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    // Fields 50 and 51 of /proc/self/stat (proc(5)): where the initial environment lies.
    // Fields are counted after the command name, which is in parentheses and may hold spaces.
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| invalid("unexpected /proc/self/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> std::io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| invalid("no env_start/env_end in /proc/self/stat"))
    };
    let (start, end) = (field(50)?, field(51)?);
    let len =
        usize::try_from(end.saturating_sub(start)).map_err(|_| invalid("environment size"))?;
    // The process's own memory, read and written through the kernel like a debugger would:
    // nothing in this program refers to these bytes once the variables left `environ`.
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    let mut block = zeroize::Zeroizing::new(vec![0u8; len]);
    mem.read_exact_at(&mut block, start)?;
    let mut offset = 0usize;
    for entry in block.split(|&b| b == 0) {
        let is_kek = vars.iter().any(|v| {
            entry.len() > v.len()
                && entry.starts_with(v.as_bytes())
                && entry.get(v.len()) == Some(&b'=')
        });
        if is_kek {
            mem.write_all_at(&vec![0u8; entry.len()], start + offset as u64)?;
        }
        offset += entry.len() + 1;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn overwrite_initial_environment(_vars: &[&str]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "only on Linux",
    ))
}

/// No core dumps, and not dumpable: other processes of the same user cannot attach a debugger
/// or read `/proc/<pid>/mem`, `/proc/<pid>/environ`. Returns what could not be done.
pub(crate) fn no_dumps() -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0) {
        problems.push(format!("could not set the core size limit to 0: {e}"));
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        problems.push(format!("could not clear the dumpable flag: {e}"));
    }
    problems
}
