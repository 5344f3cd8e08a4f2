//! Test peer: a SoftHSM2 token in a temporary directory, with an AES-256 key made the way an
//! operator makes one (`softhsm2-util --init-token`, `pkcs11-tool --keygen --sensitive`).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when a process initialises the module: a server process
//! gets it from [`SoftHsm::server_env`]; a test binary that loads the module itself keeps one
//! `SoftHsm` ([`SoftHsm::shared`]), with the tokens and keys of all its tests made before the
//! module is first initialised.
//!
//! A failing token: [`SoftHsm::break_token`] moves the token's directory away under the
//! process using it. SoftHSM2 then marks the token invalid for good in that process (its
//! `OSToken` never re-validates), so after [`SoftHsm::restore_token`] only a re-initialised
//! module (`C_Finalize`, `C_Initialize`) sees it again, as the `pkcs11` provider does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::TempDir;

/// The environment variable that overrides where the SoftHSM2 module is.
pub const MODULE_ENV: &str = "RCRT_TEST_SOFTHSM_MODULE";

const INSTALL_HINT: &str = "install SoftHSM2 and OpenSC: `apt-get install softhsm2 opensc`";

/// A file in the peer's directory naming the process that made it (see [`SoftHsm::shared`]).
const OWNER_FILE: &str = "softhsm-owner.pid";

/// The user PIN of tokens this peer makes (a test value; written to a 0600 file).
const USER_PIN: &str = "rcrt-test-pin-4711";
const SO_PIN: &str = "rcrt-test-so-pin-0815";

/// A SoftHSM2 token directory with one token and one AES-256 key; removed on drop.
pub struct SoftHsm {
    dir: TempDir,
    module: PathBuf,
    conf: PathBuf,
    token_label: String,
    key_label: String,
    pin_file: PathBuf,
    /// Each token's label and its directory under the token directory.
    token_dirs: Mutex<Vec<(String, PathBuf)>>,
}

/// The SoftHSM2 module: `RCRT_TEST_SOFTHSM_MODULE`, else the Debian paths. Panics naming what to
/// install when there is none.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var(MODULE_ENV) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{MODULE_ENV}={} is not a file; {INSTALL_HINT}",
            p.display()
        );
        return p;
    }
    let arch = format!(
        "/usr/lib/{}-linux-gnu/softhsm/libsofthsm2.so",
        std::env::consts::ARCH
    );
    for p in ["/usr/lib/softhsm/libsofthsm2.so", arch.as_str()] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("the SoftHSM2 PKCS#11 module (libsofthsm2.so) is missing: {INSTALL_HINT}, or set {MODULE_ENV}");
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}): {INSTALL_HINT}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

impl SoftHsm {
    /// A token labelled `rcrt-test` holding the AES-256 key `rcrt-kek`.
    pub fn new() -> Self {
        Self::with_labels("rcrt-test", "rcrt-kek")
    }

    /// A token labelled `token_label` holding a sensitive, non-extractable AES-256 key labelled
    /// `key_label`.
    pub fn with_labels(token_label: &str, key_label: &str) -> Self {
        let module = module_path();
        let dir = TempDir::new();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string()).unwrap();
        let pin_file = dir.path().join("pkcs11.pin");
        std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let hsm = Self {
            dir,
            module,
            conf,
            token_label: token_label.to_owned(),
            key_label: key_label.to_owned(),
            pin_file,
            token_dirs: Mutex::new(Vec::new()),
        };
        hsm.init_token(token_label);
        hsm.keygen(token_label, key_label, &["--sensitive"]);
        hsm
    }

    /// Initialises one more token labelled `label` in this token directory (same PINs).
    pub fn init_token(&self, label: &str) {
        let before = self.token_subdirs();
        run(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &self.conf)
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", USER_PIN]),
            "softhsm2-util --init-token",
        );
        let made: Vec<PathBuf> = self
            .token_subdirs()
            .into_iter()
            .filter(|d| !before.contains(d))
            .collect();
        assert_eq!(made.len(), 1, "softhsm2-util made {made:?}");
        self.token_dirs
            .lock()
            .unwrap()
            .push((label.to_owned(), made.into_iter().next().unwrap()));
    }

    fn token_subdirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.token_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect()
    }

    fn token_subdir(&self, label: &str) -> PathBuf {
        let dirs = self.token_dirs.lock().unwrap();
        let found = dirs.iter().find(|(l, _)| l == label);
        found
            .unwrap_or_else(|| panic!("no token labelled {label} was made here"))
            .1
            .clone()
    }

    /// Makes an AES-256 key labelled `key_label` on token `token_label` with `pkcs11-tool
    /// --keygen`, plus `extra` flags (`--sensitive`, `--extractable`, ...).
    pub fn keygen(&self, token_label: &str, key_label: &str, extra: &[&str]) {
        run(
            Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", &self.conf)
                .arg("--module")
                .arg(&self.module)
                .args(["--token-label", token_label, "--login", "--pin", USER_PIN])
                .args(["--keygen", "--key-type", "AES:32", "--label", key_label])
                .args(extra),
            "pkcs11-tool --keygen",
        );
    }

    /// The module's path (`PKCS11_MODULE`).
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The `SOFTHSM2_CONF` file.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The token's label (`PKCS11_TOKEN_LABEL`).
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// The key's label (`KEK_REF`).
    pub fn key_label(&self) -> &str {
        &self.key_label
    }

    /// The 0600 file holding the user PIN (`PKCS11_PIN_FILE`).
    pub fn pin_file(&self) -> &Path {
        &self.pin_file
    }

    /// The user PIN itself (for tests that check it never appears in an error or a log).
    pub fn pin(&self) -> &str {
        USER_PIN
    }

    /// The token directory (`directories.tokendir`).
    pub fn token_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// Makes the token labelled `label` unreachable, as an HSM that has gone away: its
    /// directory is moved out of the token directory, so the module sees the token's files
    /// vanish under its open sessions.
    pub fn break_token(&self, label: &str) {
        let dir = self.token_subdir(label);
        std::fs::rename(&dir, self.away(&dir)).unwrap();
    }

    /// Undoes [`SoftHsm::break_token`].
    pub fn restore_token(&self, label: &str) {
        let dir = self.token_subdir(label);
        std::fs::rename(self.away(&dir), &dir).unwrap();
    }

    fn away(&self, token_subdir: &Path) -> PathBuf {
        self.dir
            .path()
            .join(token_subdir.file_name().unwrap())
            .with_extension("away")
    }

    /// The one `SoftHsm` of a test binary that loads the module itself, made by `setup` (which
    /// adds the tokens and keys its tests need) and put to use in this process by
    /// [`SoftHsm::use_in_this_process`]. A static is never dropped, so the directories of
    /// earlier test processes that have exited are removed here instead.
    pub fn shared(
        cell: &'static std::sync::OnceLock<SoftHsm>,
        setup: impl FnOnce(&SoftHsm),
    ) -> &'static SoftHsm {
        cell.get_or_init(|| {
            remove_stale_dirs();
            let hsm = SoftHsm::new();
            setup(&hsm);
            hsm.use_in_this_process();
            hsm
        })
    }

    /// Sets `SOFTHSM2_CONF` for this process, for a test that loads the module itself. Call it
    /// once, before the module is first initialised (SoftHSM2 reads it only then).
    pub fn use_in_this_process(&self) {
        std::env::set_var("SOFTHSM2_CONF", &self.conf);
    }

    /// What a server needs to use this key as its KEK: `SOFTHSM2_CONF`, `KEK_PROVIDER`,
    /// `KEK_REF`, `PKCS11_MODULE`, `PKCS11_TOKEN_LABEL` and `PKCS11_PIN_FILE`.
    pub fn server_env(&self) -> Vec<(String, String)> {
        let mut env = self.module_env();
        env.push(("KEK_PROVIDER".into(), "pkcs11".into()));
        env.push(("KEK_REF".into(), self.key_label.clone()));
        env
    }

    /// [`SoftHsm::server_env`] without `KEK_PROVIDER` and `KEK_REF` (for a PKCS#11 KEK that is
    /// an old or recovery one).
    pub fn module_env(&self) -> Vec<(String, String)> {
        vec![
            ("SOFTHSM2_CONF".into(), self.conf.display().to_string()),
            ("PKCS11_MODULE".into(), self.module.display().to_string()),
            ("PKCS11_TOKEN_LABEL".into(), self.token_label.clone()),
            (
                "PKCS11_PIN_FILE".into(),
                self.pin_file.display().to_string(),
            ),
        ]
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes the directories of peers whose process has exited (Linux: `/proc/<pid>`).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(pid) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.trim()).exists();
        if !alive && pid.trim() != std::process::id().to_string() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
