//! Backing up the cluster CA and restoring it on another node, so the
//! cluster outlives the loss of the node that ran `cluster init`.
//!
//! A backup is one PEM file, mode 0600: the CA certificate, then the CA
//! private key. It is as powerful as the CA itself (whoever holds it can
//! issue any certificate of the cluster): keep it offline.
//!
//! Restoring puts the key beside the CA certificate that every node already
//! holds (`<data>/pki/ca.crt`): it is refused unless the backup is of *this*
//! cluster's CA (the same certificate) and its key matches it, so a backup
//! can neither replace a cluster's trust root nor bring in a foreign one.
//! The node must be stopped while its files change; once started again with
//! the key, it can be made the CA node (`shoal ca takeover`).

use std::path::Path;

use super::ca::{first_cert_der, ClusterCa};
use super::files::{self, Overwrite, PkiPaths};
use super::{CaPin, PkiError, Result};

/// Largest backup file read, bytes (a CA certificate and key are ~1 KiB).
pub const BACKUP_BYTES_MAX: u64 = 64 * 1024;

const KEY_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const KEY_END: &str = "-----END PRIVATE KEY-----";

/// Write a backup of the CA held in `data_dir` to `out` (mode 0600; an
/// existing file is never overwritten). Returns the CA's pin.
pub fn backup_ca(data_dir: &Path, out: &Path) -> Result<CaPin> {
    let paths = PkiPaths::new(data_dir);
    // Loading checks the key's mode and that it matches the certificate.
    let ca = ClusterCa::load(data_dir)?;
    let key_pem = files::read_private_key(&paths.ca_key())?;
    let mut text = ca.ca_cert_pem().trim_end().to_string();
    text.push('\n');
    text.push_str(key_pem.trim_end());
    text.push('\n');
    files::write_private_key(out, &text, Overwrite::Refuse)?;
    Ok(ca.ca_pin())
}

/// Restore the CA key from the backup at `backup` into `data_dir`, whose
/// `pki/ca.crt` must be the backup's certificate. Restoring the key a node
/// already holds changes nothing. Returns the CA's pin.
pub fn restore_ca(data_dir: &Path, backup: &Path) -> Result<CaPin> {
    let text = read_bounded(backup)?;
    let (cert_pem, key_pem) = split_backup(&text)?;
    let paths = PkiPaths::new(data_dir);
    let ours_pem = files::read_certificate(&paths.ca_cert())?;
    let ours = first_cert_der(&ours_pem)?;
    let theirs = first_cert_der(cert_pem)?;
    let backup_pin = pin_of(&theirs)?;
    if ours != theirs {
        return Err(PkiError::OtherCluster {
            ours: pin_of(&ours)?,
            backup: backup_pin,
        });
    }
    // The key must match the certificate: checked as the CA is built.
    ClusterCa::from_pem(cert_pem, key_pem)?;
    if paths.ca_key().exists() {
        let held = files::read_private_key(&paths.ca_key())?;
        if held.trim() == key_pem.trim() {
            return Ok(backup_pin);
        }
        return Err(PkiError::CaExists(paths.ca_key()));
    }
    files::write_private_key(
        &paths.ca_key(),
        &format!("{}\n", key_pem.trim()),
        Overwrite::Refuse,
    )?;
    Ok(backup_pin)
}

fn read_bounded(path: &Path) -> Result<String> {
    use std::io::Read;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(BACKUP_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > BACKUP_BYTES_MAX {
        return Err(PkiError::BadBackup(format!(
            "{} is over {BACKUP_BYTES_MAX} bytes: not a CA backup",
            path.display()
        )));
    }
    Ok(text)
}

/// The certificate part and the key block of a backup's text.
fn split_backup(text: &str) -> Result<(&str, &str)> {
    let missing = || PkiError::BadBackup("no private key block in the file".into());
    let start = text.find(KEY_BEGIN).ok_or_else(missing)?;
    let end = text[start..].find(KEY_END).ok_or_else(missing)? + start + KEY_END.len();
    Ok((&text[..start], &text[start..end]))
}

fn pin_of(der: &[u8]) -> Result<CaPin> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok(CaPin::of_spki_der(parsed.public_key().raw))
}
