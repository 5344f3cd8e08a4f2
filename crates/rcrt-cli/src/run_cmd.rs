//! `rcrt run`: starts a command with secrets as environment variables.
//!
//! The values are read through the audited endpoints (`GET /secrets/vault/{name}` and
//! `POST /secrets/{id}/decrypt`, both with the reason), checked, and then `rcrt` replaces itself
//! with the command (`execve`): the values reach the command only through its environment, never
//! a file or an argument; the command keeps `rcrt`'s process id, so every signal sent to it
//! (SIGINT, SIGTERM, SIGHUP, ...) reaches the command itself, and its exit status is the one the
//! caller sees (a shell shows 128+N when it dies of signal N). No `rcrt` process stays in between
//! to forward signals, lose them, or hold the values in memory.
//!
//! `RCRT_TOKEN` is removed from the command's environment: the credential that read the values
//! is the caller's, not the command's. A command that needs a token gets its own (for example
//! with `--secret RCRT_TOKEN=<id>`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use zeroize::Zeroizing;

use crate::client_cmd::run as with_client;
use crate::dotenv::is_env_name;
use crate::ServerArgs;

/// What `rcrt run` was asked for.
pub(crate) struct RunArgs {
    /// Vault ids or names, read in order.
    pub(crate) vaults: Vec<String>,
    /// The workspace of the vaults named by name.
    pub(crate) workspace: Option<String>,
    /// The audit reason of every read.
    pub(crate) reason: String,
    /// `NAME=ID` pairs: secret ID as variable NAME.
    pub(crate) secrets: Vec<String>,
    /// Prepended to every vault key.
    pub(crate) prefix: Option<String>,
    /// The server.
    pub(crate) server: ServerArgs,
    /// The command and its arguments.
    pub(crate) command: Vec<OsString>,
    /// Names of [`GUARDED`] that the values may set anyway.
    pub(crate) allow_env: Vec<String>,
}

/// Variables that change which program runs or what code it loads (`PATH` is also where the
/// command itself is looked up: `Command` searches the child's `PATH` when one is set); a value
/// may set them only with `--allow-env NAME`. Every `LD_` name is guarded too.
pub(crate) const GUARDED: &[&str] = &[
    "PATH",
    "BASH_ENV",
    "ENV",
    "NODE_OPTIONS",
    "PYTHONPATH",
    "PYTHONHOME",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
];

fn guarded(name: &str) -> bool {
    name.starts_with("LD_") || GUARDED.contains(&name)
}

/// One variable for the command, and where it came from (for conflict messages).
struct Var {
    value: Zeroizing<String>,
    source: String,
}

/// `NAME=ID` from `--secret`.
fn secret_spec(spec: &str) -> Result<(&str, &str), String> {
    let (name, id) = spec
        .split_once('=')
        .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        .ok_or_else(|| format!("--secret {spec:?}: expected NAME=ID"))?;
    if !is_env_name(name) {
        return Err(not_a_name(name, &format!("--secret {spec}")));
    }
    Ok((name, id))
}

fn not_a_name(name: &str, source: &str) -> String {
    format!(
        "{name:?} (from {source}) is not a valid environment variable name (letters, digits and \
         '_', not starting with a digit, not '_' alone, which the shell overwrites)"
    )
}

/// Adds `name` from `source`, refusing a name already given by another source, and a
/// [`guarded`] name not in `allow`.
fn add(
    vars: &mut BTreeMap<String, Var>,
    name: String,
    value: Zeroizing<String>,
    source: String,
    allow: &[String],
) -> Result<(), String> {
    if !is_env_name(&name) {
        return Err(not_a_name(&name, &source));
    }
    if guarded(&name) && !allow.contains(&name) {
        return Err(format!(
            "{name} (from {source}) would change which program runs or what code it loads; \
             refused unless you pass --allow-env {name}"
        ));
    }
    if let Some(first) = vars.get(&name) {
        return Err(format!(
            "{name} is given by both {} and {source}; rename one (for example with --prefix) or \
             leave one out",
            first.source
        ));
    }
    if value.contains('\0') {
        return Err(format!(
            "the value of {name} (from {source}) holds a NUL byte, which an environment variable \
             cannot"
        ));
    }
    vars.insert(name, Var { value, source });
    Ok(())
}

/// Adds every name to `vars`: each vault's keys (from `keys`, or the values read) with the
/// prefix, then each `--secret`.
fn add_all<K>(
    vars: &mut BTreeMap<String, Var>,
    args: &RunArgs,
    vaults: Vec<(&String, K)>,
    secrets: Vec<(&str, &str, Zeroizing<String>)>,
) -> Result<(), String>
where
    K: IntoIterator<Item = (String, Zeroizing<String>)>,
{
    let prefix = args.prefix.as_deref().unwrap_or("");
    for (vault, values) in vaults {
        for (key, value) in values {
            let name = format!("{prefix}{key}");
            let source = format!("vault {vault} (key {key})");
            add(vars, name, value, source, &args.allow_env)?;
        }
    }
    for (name, id, value) in secrets {
        let source = format!("--secret {name}={id}");
        add(vars, name.to_owned(), value, source, &args.allow_env)?;
    }
    Ok(())
}

/// Checks the names, then reads every value (audited with the reason) and checks again.
fn collect(args: &RunArgs) -> Result<BTreeMap<String, Var>, String> {
    if args.vaults.is_empty() && args.secrets.is_empty() {
        return Err("nothing to pass to the command: give --vault or --secret".into());
    }
    let specs = args
        .secrets
        .iter()
        .map(|s| secret_spec(s))
        .collect::<Result<Vec<_>, _>>()?;
    if !args.vaults.is_empty() {
        crate::input::header_reason(&args.reason)?;
    }
    let reason = args.reason.as_str();
    let workspace = args.workspace.as_deref();
    let (vaults, secrets) = with_client(&args.server, async |c| {
        // The key names first (metadata, not an audited read), so that a refused name or a
        // conflict costs no read. A token without secrets.read cannot see them (404): its
        // vault's names are checked after the read, still before the command starts.
        let mut keys = Vec::new();
        for v in &args.vaults {
            match c.vault(v, workspace).await {
                Ok(meta) => keys.push((v, meta.keys)),
                Err(e) if e.status == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        let empty = |k: String| (k, Zeroizing::new(String::new()));
        let planned = keys
            .into_iter()
            .map(|(v, k)| (v, k.into_iter().map(empty)))
            .collect();
        let named = specs
            .iter()
            .map(|(n, i)| (*n, *i, Zeroizing::new(String::new())))
            .collect();
        if let Err(e) = add_all(&mut BTreeMap::new(), args, planned, named) {
            return Ok(Err(e));
        }
        let mut vaults = Vec::new();
        for v in &args.vaults {
            vaults.push((v, c.vault_values(v, reason, workspace).await?));
        }
        let mut secrets = Vec::new();
        for (name, id) in &specs {
            secrets.push((*name, *id, c.decrypt(id, reason).await?.0));
        }
        Ok(Ok((vaults, secrets)))
    })??;
    let mut vars = BTreeMap::new();
    add_all(&mut vars, args, vaults, secrets)?;
    Ok(vars)
}

/// Runs `rcrt run`: on success this never returns (the process becomes the command). Exit
/// codes: 1 when a value cannot be read or a name is refused, 127 when the command is not
/// found, 126 when it cannot be started.
pub(crate) fn main(args: RunArgs) -> ExitCode {
    let vars = match collect(&args) {
        Ok(vars) => vars,
        Err(e) => {
            eprintln!("rcrt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("rcrt: no command given (rcrt run ... -- COMMAND [ARGS])");
        return ExitCode::from(2);
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest).env_remove("RCRT_TOKEN");
    for (name, var) in &vars {
        cmd.env(name, var.value.as_str());
    }
    // Returns only on failure.
    let err = cmd.exec();
    eprintln!("rcrt: cannot run {}: {err}", program.to_string_lossy());
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secret_specs() {
        assert_eq!(secret_spec("DB=abc").unwrap(), ("DB", "abc"));
        assert_eq!(secret_spec("DB=a=b").unwrap(), ("DB", "a=b"));
        for bad in ["DB", "=abc", "DB=", "1DB=x", "A-B=x", "_=x"] {
            assert!(secret_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conflicts_name_both_sources() {
        let mut vars = BTreeMap::new();
        let v = || Zeroizing::new("v".to_owned());
        add(&mut vars, "A".into(), v(), "vault one (key A)".into(), &[]).unwrap();
        let e = add(&mut vars, "A".into(), v(), "--secret A=x".into(), &[]).unwrap_err();
        assert!(
            e.contains("vault one (key A)") && e.contains("--secret A=x"),
            "{e}"
        );
        let e = add(
            &mut vars,
            "A-B".into(),
            v(),
            "vault two (key A-B)".into(),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("vault two (key A-B)"), "{e}");
        let e = add(
            &mut vars,
            "N".into(),
            Zeroizing::new("a\0b".into()),
            "s".into(),
            &[],
        );
        assert!(e.unwrap_err().contains("NUL"));
    }

    #[test]
    fn guarded_names_need_allow_env() {
        let mut vars = BTreeMap::new();
        let v = || Zeroizing::new("v".to_owned());
        for name in ["PATH", "LD_PRELOAD", "LD_AUDIT", "BASH_ENV", "NODE_OPTIONS"] {
            let e = add(&mut vars, name.into(), v(), "s".into(), &[]).unwrap_err();
            assert!(e.contains(&format!("--allow-env {name}")), "{e}");
        }
        let allow = ["PATH".to_owned()];
        add(&mut vars, "PATH".into(), v(), "s".into(), &allow).unwrap();
        assert!(add(&mut vars, "LD_PRELOAD".into(), v(), "s".into(), &allow).is_err());
        add(&mut vars, "PATHS".into(), v(), "s".into(), &[]).unwrap();
    }
}
