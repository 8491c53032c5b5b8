//! The proxy's host key: an ed25519 key made once and kept in the proxy's data dir, so a
//! client that has seen the proxy knows it again after a restart.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};

use crate::ProxyError;

/// The key's file name in the data dir (OpenSSH's name for it).
pub const FILE_NAME: &str = "ssh_host_ed25519_key";

fn failed(path: &Path, message: impl std::fmt::Display) -> ProxyError {
    ProxyError::HostKey {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The key in `dir`, made (and written, mode 0600) if there is none.
pub fn load_or_create(dir: &Path) -> Result<PrivateKey, ProxyError> {
    let path = dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| failed(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(dir, path),
        Err(e) => Err(failed(&path, e)),
    }
}

fn create(dir: &Path, path: PathBuf) -> Result<PrivateKey, ProxyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| failed(&path, e))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| failed(&path, e))?;
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    // written beside and renamed into place: a crash leaves no half key behind
    let partial = dir.join(format!("{FILE_NAME}.partial"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)
    };
    write().map_err(|e| failed(&path, e))?;
    tracing::info!(path = %path.display(), fingerprint = %fingerprint(&key), "made the SSH host key");
    Ok(key)
}

/// The key's SHA-256 fingerprint as OpenSSH prints it (`SHA256:...`).
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create(&dir.path().join("ssh")).unwrap();
        let file = dir.path().join("ssh").join(FILE_NAME);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&dir.path().join("ssh")).unwrap();
        assert_eq!(fingerprint(&made), fingerprint(&again));
        assert!(fingerprint(&made).starts_with("SHA256:"));

        std::fs::write(&file, "not a key").unwrap();
        let err = load_or_create(&dir.path().join("ssh")).unwrap_err();
        assert!(err.to_string().contains(FILE_NAME), "{err}");
    }
}
