//! What the verbs that talk to a running node share: where it is (its
//! local socket, or a cluster node's address and the credentials to reach
//! it over mutual TLS), the client, and a small async runtime to drive it.

use anyhow::Context;
use shoal_api::Client;
use shoal_pki::files::{read_certificate, read_private_key};
use shoal_pki::tls::{client_config, Usage, CONTROL_API};
use shoal_pki::{ClusterTrust, Identity, PkiError, PkiPaths, SharedRevocations};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the node is: its data directory and local socket, and, when
/// `--node` is given, a cluster node's TLS endpoint (which then wins).
#[derive(Debug, Clone)]
pub struct Target {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The node's control socket (default `<data_dir>/node.sock`).
    pub socket: PathBuf,
    /// A node reached over mutual TLS (`--node`), if given.
    pub tls: Option<TlsTarget>,
    /// The credentials this CLI run has (`--creds`, else this data dir's
    /// admin credential, else its node identity), if any: the verbs that
    /// write credentials sign their request with them.
    pub creds: Option<CredentialFiles>,
}

/// A node's TCP address and the ready TLS client configuration for it.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// `host:port`.
    pub addr: String,
    /// Our certificate and the cluster CA to check the node's against.
    pub config: Arc<rustls::ClientConfig>,
}

impl Target {
    /// The admin's signer for a verb that writes credentials (`what`):
    /// the cluster applies such a write only with an admin's signature
    /// over it, whichever node or socket carries it.
    pub fn signer(&self, what: &str) -> anyhow::Result<shoal_pki::Signer> {
        let Some(files) = &self.creds else {
            anyhow::bail!(
                "{what} needs an admin's signature, and this CLI has no credentials: give \
                 --creds DIR (an admin's ca.crt, client.crt, client.key), or run it with the \
                 --data-dir of the node that created the cluster (its pki/admin/)"
            );
        };
        let cert = read_cert_file(&files.cert, "the certificate")?;
        let key = read_key_file(&files.key)?;
        let ca = read_cert_file(&files.ca, "the CA certificate")?;
        let signer = shoal_pki::Signer::from_pem(&cert, &key, &ca).with_context(|| {
            format!(
                "the credentials {} + {} cannot sign",
                files.cert.display(),
                files.key.display()
            )
        })?;
        // Not an admin: the node says so (typed), as for any request.
        Ok(signer)
    }

    /// A client of the node: over TLS when `--node` was given, else at
    /// this target's socket.
    pub fn client(&self) -> Client {
        match &self.tls {
            Some(t) => Client::tls(t.addr.clone(), Arc::clone(&t.config)),
            None => Client::new(&self.socket),
        }
    }
}

/// The credential flags as given (`--creds`, `--cert`, `--key`, `--ca`,
/// or their environment variables).
#[derive(Debug, Clone, Default)]
pub struct CredentialFlags {
    /// A directory holding `ca.crt`, `client.crt` and `client.key`.
    pub creds: Option<PathBuf>,
    /// Overrides the certificate file.
    pub cert: Option<PathBuf>,
    /// Overrides the private key file.
    pub key: Option<PathBuf>,
    /// Overrides the CA certificate file.
    pub ca: Option<PathBuf>,
}

/// Which three files make up our credentials, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFiles {
    /// Our certificate (PEM).
    pub cert: PathBuf,
    /// Our private key (PEM, must be mode 0600).
    pub key: PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
}

/// What to tell someone who has no credentials.
fn how_to_get_credentials(addr: &str, data_dir: &Path) -> String {
    format!(
        "no credentials to talk to node {addr}: give --creds DIR (or SHOAL_CREDS=DIR), a \
         directory holding ca.crt, client.crt and client.key. Create one on the node that ran \
         `shoal cluster init` with `shoal cert create --client --name NAME -o DIR` (that node \
         also keeps admin credentials in <data-dir>/pki/admin/). On a cluster node, its own \
         certificate in {}/ is used when present.",
        PkiPaths::new(data_dir).dir().display()
    )
}

/// Decide which files to use: `--creds DIR` (`client.crt`, `client.key`,
/// `ca.crt`), else this data directory's node identity (`pki/node.crt`,
/// `pki/node.key`, `pki/ca.crt`) if all three exist; `--cert`, `--key`,
/// `--ca` override single files.
pub fn credential_files(
    flags: &CredentialFlags,
    data_dir: &Path,
    addr: &str,
) -> anyhow::Result<CredentialFiles> {
    let base = match &flags.creds {
        Some(dir) => {
            if !dir.is_dir() {
                anyhow::bail!(
                    "the credentials directory {} does not exist (it should hold ca.crt, \
                     client.crt and client.key, as written by `shoal cert create`)",
                    dir.display()
                );
            }
            Some(CredentialFiles {
                cert: dir.join("client.crt"),
                key: dir.join("client.key"),
                ca: dir.join("ca.crt"),
            })
        }
        None => {
            let p = PkiPaths::new(data_dir);
            // The admin credential a new cluster writes comes first: it can
            // do everything (tokens, node removal); then the node's own.
            let admin = p.admin_dir();
            let admin = CredentialFiles {
                cert: admin.join("client.crt"),
                key: admin.join("client.key"),
                ca: admin.join("ca.crt"),
            };
            if admin.cert.is_file() && admin.key.is_file() && admin.ca.is_file() {
                return Ok(CredentialFiles {
                    cert: flags.cert.clone().unwrap_or(admin.cert),
                    key: flags.key.clone().unwrap_or(admin.key),
                    ca: flags.ca.clone().unwrap_or(admin.ca),
                });
            }
            let own = CredentialFiles {
                cert: p.node_cert(),
                key: p.node_key(),
                ca: p.ca_cert(),
            };
            (own.cert.is_file() && own.key.is_file() && own.ca.is_file()).then_some(own)
        }
    };
    let pick = |flag: &Option<PathBuf>, from_base: Option<&PathBuf>| {
        flag.clone().or_else(|| from_base.cloned())
    };
    let cert = pick(&flags.cert, base.as_ref().map(|b| &b.cert));
    let key = pick(&flags.key, base.as_ref().map(|b| &b.key));
    let ca = pick(&flags.ca, base.as_ref().map(|b| &b.ca));
    match (cert, key, ca) {
        (Some(cert), Some(key), Some(ca)) => Ok(CredentialFiles { cert, key, ca }),
        _ => anyhow::bail!("{}", how_to_get_credentials(addr, data_dir)),
    }
}

/// Read `path`, saying which credential it was meant to be if it is
/// missing.
fn read_cert_file(path: &Path, what: &str) -> anyhow::Result<String> {
    read_certificate(path).map_err(|e| match e {
        PkiError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow::anyhow!(
                "{what} {} does not exist (credentials come from `shoal cert create`)",
                path.display()
            )
        }
        other => anyhow::Error::new(other).context(format!("cannot read {what}")),
    })
}

/// Read our private key at `path` (refused unless mode 0600), saying how
/// to fix what is wrong with it.
fn read_key_file(path: &Path) -> anyhow::Result<String> {
    read_private_key(path).map_err(|e| match e {
        PkiError::InsecureKeyFile { path, mode } => anyhow::anyhow!(
            "{} has mode {mode:o}: a private key must be 0600 (owner only); fix it with \
             `chmod 600 {}`",
            path.display(),
            path.display()
        ),
        PkiError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow::anyhow!(
                "the private key {} does not exist (credentials come from `shoal cert create`)",
                path.display()
            )
        }
        other => anyhow::Error::new(other).context("cannot read the private key"),
    })
}

/// Build the TLS client configuration from `files`: our certificate and
/// key (refused unless mode 0600) and the cluster CA. Checks up front that
/// our own certificate is one the cluster accepts (same CA, valid now, a
/// role allowed on the control API), so such mistakes are named here
/// rather than as a refusal from the node.
pub fn tls_config(files: &CredentialFiles) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let cert = read_cert_file(&files.cert, "the certificate")?;
    let ca = read_cert_file(&files.ca, "the CA certificate")?;
    let key = read_key_file(&files.key)?;
    let identity = Identity::from_pem(&cert, &key, &ca).with_context(|| {
        format!(
            "the credentials {} + {} are not usable",
            files.cert.display(),
            files.key.display()
        )
    })?;
    let trust = ClusterTrust::new(&ca, SharedRevocations::default())
        .with_context(|| format!("the CA certificate {} is not usable", files.ca.display()))?;
    trust
        .verify(
            identity.cert_der(),
            &[],
            rustls::pki_types::UnixTime::now(),
            Usage::Client,
            CONTROL_API,
        )
        .map_err(|r| {
            anyhow::anyhow!(
                "the certificate {} cannot be used with the CA {}: {r}",
                files.cert.display(),
                files.ca.display()
            )
        })?;
    client_config(&identity, &trust).context("cannot build the TLS configuration")
}

/// The TLS endpoint for `--node addr`: resolve the credential files and
/// build the configuration.
pub fn tls_target(
    addr: &str,
    flags: &CredentialFlags,
    data_dir: &Path,
) -> anyhow::Result<TlsTarget> {
    let files = credential_files(flags, data_dir, addr)?;
    Ok(TlsTarget {
        addr: addr.to_string(),
        config: tls_config(&files)?,
    })
}

/// Run `future` on a single-threaded runtime (a CLI call is one request).
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Format a byte count for people: `512 B`, `12.0 KiB`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Format a duration in milliseconds compactly for tables: `850ms`, `42s`,
/// `5m3s`, `2h10m`, `3d4h`.
pub fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Parse an environment spec: `NAME=VALUE`, or `NAME` to copy the
/// variable from this shell's environment.
pub fn parse_env(spec: &str) -> anyhow::Result<(String, String)> {
    match spec.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => anyhow::bail!("--env `{spec}`: the variable name is empty"),
        None => {
            let v = std::env::var(spec).with_context(|| {
                format!("--env {spec}: no such variable in this shell's environment")
            })?;
            Ok((spec.to_string(), v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(12 << 10), "12.0 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_age(850), "850ms");
        assert_eq!(human_age(42_000), "42s");
        assert_eq!(human_age(303_000), "5m3s");
        assert_eq!(human_age(7_800_000), "2h10m");
        assert_eq!(human_age(100_000_000), "1d3h");
    }
}
