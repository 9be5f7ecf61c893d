//! Secrets tiktok-edge makes for itself when the operator sets none: the admin token and
//! the token-encryption key. They are kept in `<data dir>/local-secrets.json` (mode 0600)
//! so a restart can still decrypt what was stored, and the admin CLI finds the token there.
//!
//! Values set with `SPIN_VARIABLE_ADMIN_TOKEN` / `SPIN_VARIABLE_TOKEN_ENCRYPTION_KEYS` (or
//! [`AppOptions::variables`]) always win; a file is only created when one is missing.

use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tiktok_edge_runtime::AppOptions;
use tiktok_edge_runtime::variables::env_name;

pub const ADMIN_TOKEN: &str = "admin_token";
pub const TOKEN_KEYS: &str = "token_encryption_keys";
pub const FILE_NAME: &str = "local-secrets.json";

#[derive(Serialize, Deserialize)]
struct Stored {
    admin_token: String,
    token_encryption_keys: String,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS has a secure random source");
    bytes
}

fn generate() -> Stored {
    let b64 = base64::engine::general_purpose::STANDARD;
    Stored {
        admin_token: format!(
            "tte_admin_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
        ),
        token_encryption_keys: format!("local1:{}", b64.encode(random_bytes::<32>())),
    }
}

fn set_in(options: &AppOptions, name: &str) -> bool {
    options.variables.get(name).is_some_and(|v| !v.is_empty())
        || std::env::var(env_name(name)).is_ok_and(|v| !v.is_empty())
}

fn load(path: &Path) -> std::io::Result<Option<Stored>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not valid: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Fills the admin token and vault keys that are not configured from the data dir's
/// file, creating it on first use. Returns the file when it was used.
pub fn apply(options: &mut AppOptions) -> std::io::Result<Option<PathBuf>> {
    let missing: Vec<&str> = [ADMIN_TOKEN, TOKEN_KEYS]
        .into_iter()
        .filter(|name| !set_in(options, name))
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(&options.data_dir)?;
    let path = options.data_dir.join(FILE_NAME);
    let stored = match load(&path)? {
        Some(s) => s,
        None => {
            let fresh = generate();
            match write_private(&path, &serde_json::to_vec_pretty(&fresh)?) {
                Ok(()) => fresh,
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load(&path)?.ok_or_else(|| std::io::Error::other("local secrets vanished"))?
                }
                Err(e) => return Err(e),
            }
        }
    };
    for name in missing {
        let value = match name {
            ADMIN_TOKEN => stored.admin_token.clone(),
            _ => stored.token_encryption_keys.clone(),
        };
        options.variables.insert(name.to_string(), value);
    }
    Ok(Some(path))
}

/// The admin token kept in `data_dir`, if tiktok-edge generated one there.
pub fn admin_token(data_dir: &Path) -> std::io::Result<Option<String>> {
    Ok(load(&data_dir.join(FILE_NAME))?.map(|s| s.admin_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = AppOptions::new("spin.toml", dir.path());
        let file = apply(&mut a).unwrap().unwrap();
        let mut b = AppOptions::new("spin.toml", dir.path());
        apply(&mut b).unwrap();
        assert_eq!(a.variables, b.variables);
        assert!(a.variables[TOKEN_KEYS].starts_with("local1:"));
        assert_eq!(
            admin_token(dir.path()).unwrap().unwrap(),
            a.variables[ADMIN_TOKEN]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_values_win_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = AppOptions::new("spin.toml", dir.path());
        o.variables.insert(ADMIN_TOKEN.into(), "mine".into());
        o.variables.insert(TOKEN_KEYS.into(), "k:x".into());
        assert!(apply(&mut o).unwrap().is_none());
        assert!(!dir.path().join(FILE_NAME).exists());
        assert_eq!(o.variables[ADMIN_TOKEN], "mine");
    }
}
