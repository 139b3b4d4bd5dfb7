//! Credentials on disk: the files a CLI or a new cluster's admin uses, and
//! the creation of a new cluster's PKI (`shoal cluster init`, and
//! `shoal node start` on an empty data dir).

use shoal_pki::ca::{DEFAULT_CLIENT_CERT_TTL, DEFAULT_NODE_CERT_TTL};
use shoal_pki::files::{self, Overwrite};
use shoal_pki::{CaPin, ClusterCa, Identity, IssuedCredentials, PkiError, PkiPaths, Role, Serial};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Id of the admin credential a new cluster creates.
pub const ADMIN_ID: &str = "admin";

/// File name of the CA certificate in a credentials directory.
pub const CA_FILE: &str = "ca.crt";
/// File name of the certificate in a credentials directory.
pub const CERT_FILE: &str = "client.crt";
/// File name of the private key in a credentials directory.
pub const KEY_FILE: &str = "client.key";

/// File (in `<data-dir>/pki/`) where a node keeps a copy of the
/// revocation list as it last applied it, for `shoal cert create` on the CA
/// node to issue at an identity's current generation.
pub const REVOCATIONS_FILE: &str = "revocations.json";

/// `<data-dir>/pki/revocations.json`.
pub fn revocations_path(data_dir: &Path) -> PathBuf {
    PkiPaths::new(data_dir).dir().join(REVOCATIONS_FILE)
}

/// Save `list` to [`revocations_path`] (mode 0600, atomically).
pub fn save_revocations(
    data_dir: &Path,
    list: &shoal_pki::RevocationList,
) -> Result<(), CredentialsError> {
    let json = serde_json::to_vec(list).map_err(|e| {
        CredentialsError::Pki(PkiError::BadCertificate(format!(
            "cannot encode the revocation list: {e}"
        )))
    })?;
    files::write_atomic(
        &revocations_path(data_dir),
        &json,
        0o600,
        Overwrite::Replace,
    )?;
    Ok(())
}

/// The revocation list a node last saved in `data_dir` (empty if none).
pub fn load_revocations(data_dir: &Path) -> Result<shoal_pki::RevocationList, CredentialsError> {
    let path = revocations_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            CredentialsError::Pki(PkiError::BadCertificate(format!(
                "{}: not a revocation list: {e}",
                path.display()
            )))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(source) => Err(CredentialsError::Pki(PkiError::Io { path, source })),
    }
}

/// Mode of a new credentials directory: owner only.
const CREDS_DIR_MODE: u32 = 0o700;

/// Why credentials could not be written, or a new cluster's PKI created.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The credentials directory could not be created.
    #[error("cannot create the directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Credential files are already there (and `--force` was not given).
    #[error(
        "refusing to overwrite existing credentials: {} (use --force to replace them, \
         or choose another directory)",
        list(paths)
    )]
    Exist {
        /// The files found.
        paths: Vec<PathBuf>,
    },
    /// A file appeared between the check and the write.
    #[error("refusing to overwrite {} (created meanwhile; use --force to replace it)", path.display())]
    CreatedMeanwhile {
        /// The file.
        path: PathBuf,
    },
    /// The node name is not a valid identity.
    #[error("the node name")]
    NodeName(#[source] PkiError),
    /// The data directory already has a CA.
    #[error(
        "a cluster already exists in {}: this data directory already has a CA \
         (refusing to overwrite it)",
        dir.display()
    )]
    ClusterExists {
        /// The PKI directory.
        dir: PathBuf,
    },
    /// The data directory already holds a node identity or admin credentials.
    #[error(
        "this data directory already holds cluster credentials ({}); refusing to \
         overwrite them (did this node join another cluster?)",
        list(paths)
    )]
    Taken {
        /// The files found.
        paths: Vec<PathBuf>,
    },
    /// A CA appeared at `path` while this init ran (another init won).
    #[error("a cluster CA already exists at {} (refusing to overwrite it)", path.display())]
    CaExists {
        /// Where.
        path: PathBuf,
    },
    /// One step of the PKI work failed.
    #[error("cannot {step}")]
    Step {
        /// What was being done ("create the cluster CA", ...).
        step: &'static str,
        /// Why.
        source: PkiError,
    },
    /// Writing the admin credentials failed.
    #[error("cannot save the admin credentials")]
    SaveAdmin(#[source] Box<CredentialsError>),
    /// Any other PKI failure while writing a file.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The longest `--ttl` accepted (the CA itself is valid for ten years, and
/// no certificate outlives it).
/// Where [`write_credentials`] put the files.
#[derive(Debug, Clone)]
pub struct CredentialPaths {
    /// The directory.
    pub dir: PathBuf,
    /// `ca.crt`.
    pub ca: PathBuf,
    /// `client.crt`.
    pub cert: PathBuf,
    /// `client.key`.
    pub key: PathBuf,
}

/// Write `creds` and the CA certificate into `dir` as `client.key` (0600,
/// written first, so a certificate never exists without its key),
/// `ca.crt` and `client.crt` (0644). A missing `dir` is created with mode
/// 0700. Unless `force`, refuses (before writing anything) if any of the
/// three files exists.
pub fn write_credentials(
    dir: &Path,
    creds: &IssuedCredentials,
    ca_pem: &str,
    force: bool,
) -> Result<CredentialPaths, CredentialsError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(CREDS_DIR_MODE)
        .create(dir)
        .map_err(|source| CredentialsError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    let paths = CredentialPaths {
        dir: dir.to_path_buf(),
        ca: dir.join(CA_FILE),
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
    };
    let overwrite = if force {
        Overwrite::Replace
    } else {
        let existing: Vec<PathBuf> = [&paths.key, &paths.ca, &paths.cert]
            .into_iter()
            .filter(|p| p.exists())
            .cloned()
            .collect();
        if !existing.is_empty() {
            return Err(CredentialsError::Exist { paths: existing });
        }
        Overwrite::Refuse
    };
    let refused = |e: PkiError, path: &Path| -> CredentialsError {
        match e {
            PkiError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                CredentialsError::CreatedMeanwhile {
                    path: path.to_path_buf(),
                }
            }
            other => CredentialsError::Pki(other),
        }
    };
    files::write_private_key(&paths.key, &creds.key_pem, overwrite)
        .map_err(|e| refused(e, &paths.key))?;
    files::write_certificate(&paths.ca, ca_pem, overwrite).map_err(|e| refused(e, &paths.ca))?;
    files::write_certificate(&paths.cert, &creds.cert.cert_pem, overwrite)
        .map_err(|e| refused(e, &paths.cert))?;
    Ok(paths)
}

/// What [`init_cluster_pki`] created.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    /// `<data-dir>/pki`.
    pub pki_dir: PathBuf,
    /// The new CA's pin, `sha256:<hex>`.
    pub ca_pin: CaPin,
    /// This node's id in its certificate.
    pub node_name: String,
    /// Serial of this node's certificate.
    pub node_cert_serial: Serial,
    /// When this node's certificate expires, Unix ms.
    pub node_cert_expires_unix_ms: u64,
    /// The admin credentials directory (`ca.crt`, `client.crt`,
    /// `client.key`).
    pub admin_dir: PathBuf,
}

/// Admin credentials in `<data-dir>/pki/admin/` issued by the CA key this
/// data directory holds (after `shoal ca restore`), unless some are there
/// already: the admin's signature is what `shoal ca takeover` and the
/// other credential-bearing verbs carry into the log. Returns the
/// directory when it wrote them.
pub fn ensure_admin_credentials(data_dir: &Path) -> Result<Option<PathBuf>, CredentialsError> {
    let step = |step: &'static str| move |source: PkiError| CredentialsError::Step { step, source };
    let paths = PkiPaths::new(data_dir);
    let admin_dir = paths.admin_dir();
    if [CA_FILE, CERT_FILE, KEY_FILE]
        .iter()
        .any(|f| admin_dir.join(f).exists())
    {
        return Ok(None);
    }
    let ca = ClusterCa::load(data_dir).map_err(step("load the restored CA"))?;
    let admin = ca
        .issue_with_new_key(Role::Admin, ADMIN_ID, DEFAULT_CLIENT_CERT_TTL)
        .map_err(step("issue the admin credentials"))?;
    write_credentials(&admin_dir, &admin, ca.ca_cert_pem(), false)
        .map_err(|e| CredentialsError::SaveAdmin(Box::new(e)))?;
    Ok(Some(admin_dir))
}

/// Create the cluster PKI in `data_dir`: the CA, this node's certificate
/// (id `node_name`, role node) and admin CLI credentials in
/// `<data-dir>/pki/admin/`.
///
/// Refuses, before creating anything, if a CA, a node identity or admin
/// credentials already exist there (a data directory belongs to at most
/// one cluster; its trust root is never replaced). The CA is created with
/// no-overwrite semantics, so of two racing inits only one proceeds.
pub fn init_cluster_pki(data_dir: &Path, node_name: &str) -> Result<InitReport, CredentialsError> {
    shoal_pki::role::validate_id(node_name).map_err(CredentialsError::NodeName)?;
    let step = |step: &'static str| move |source: PkiError| CredentialsError::Step { step, source };
    let paths = PkiPaths::new(data_dir);
    let admin_dir = paths.admin_dir();
    if paths.ca_key().exists() || paths.ca_cert().exists() {
        return Err(CredentialsError::ClusterExists {
            dir: paths.dir().to_path_buf(),
        });
    }
    let taken: Vec<PathBuf> = [
        paths.node_key(),
        paths.node_cert(),
        admin_dir.join(CA_FILE),
        admin_dir.join(CERT_FILE),
        admin_dir.join(KEY_FILE),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect();
    if !taken.is_empty() {
        return Err(CredentialsError::Taken { paths: taken });
    }

    let ca = match ClusterCa::init(data_dir) {
        Ok(ca) => ca,
        Err(PkiError::CaExists(path)) => return Err(CredentialsError::CaExists { path }),
        Err(e) => return Err(step("create the cluster CA")(e)),
    };
    let node = ca
        .issue_with_new_key(Role::Node, node_name, DEFAULT_NODE_CERT_TTL)
        .map_err(step("issue this node's certificate"))?;
    Identity::save_pem(
        data_dir,
        &node.cert.cert_pem,
        &node.key_pem,
        ca.ca_cert_pem(),
    )
    .map_err(step("save this node's certificate"))?;
    let admin = ca
        .issue_with_new_key(Role::Admin, ADMIN_ID, DEFAULT_CLIENT_CERT_TTL)
        .map_err(step("issue the admin credentials"))?;
    write_credentials(&admin_dir, &admin, ca.ca_cert_pem(), false)
        .map_err(|e| CredentialsError::SaveAdmin(Box::new(e)))?;
    Ok(InitReport {
        pki_dir: paths.dir().to_path_buf(),
        ca_pin: ca.ca_pin(),
        node_name: node.cert.id,
        node_cert_serial: node.cert.serial,
        node_cert_expires_unix_ms: node.cert.not_after_unix_ms,
        admin_dir,
    })
}
