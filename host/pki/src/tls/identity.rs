//! Who we are: this node's (or CLI's) certificate and key, loaded from
//! disk, and the live identity a renewal replaces in place.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::SignatureScheme;

use crate::ca::{first_cert_der, key_spki_der};
use crate::files::{self, Overwrite, PkiPaths};
use crate::role::{inspect, CertInfo};
use crate::{PkiError, Result};
/// Our own certificate chain and key, presented to peers.
///
/// The chain is `[our cert, CA cert]`: sending the CA lets a joiner pin it
/// during the bootstrap handshake. `Debug` hides the key.
pub struct Identity {
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: PrivateKeyDer<'static>,
    pub(super) info: CertInfo,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            info: self.info.clone(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("info", &self.info)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// Build from PEM certificate, PEM private key and the PEM CA
    /// certificate. Checks that the key matches the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self> {
        let cert = first_cert_der(cert_pem)?;
        let ca = first_cert_der(ca_pem)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        if parsed.public_key().raw != key_spki_der(key_pem)?.as_slice() {
            return Err(PkiError::BadKey(
                "private key does not match the certificate".into(),
            ));
        }
        let info = inspect(&cert)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| PkiError::BadKey(e.to_string()))?;
        Ok(Identity {
            chain: vec![cert, ca],
            key,
            info,
        })
    }

    /// Load `node.crt`, `node.key` (must be 0600) and `ca.crt` from
    /// `<data_dir>/pki/`.
    pub fn load(data_dir: &std::path::Path) -> Result<Self> {
        let paths = PkiPaths::new(data_dir);
        let cert = files::read_certificate(&paths.node_cert())?;
        let key = files::read_private_key(&paths.node_key())?;
        let ca = files::read_certificate(&paths.ca_cert())?;
        Self::from_pem(&cert, &key, &ca)
    }

    /// Save a node's credentials to `<data_dir>/pki/` (key 0600, certs
    /// 0644, each replaced atomically). Writes the key first so a crash
    /// never leaves a certificate without its key.
    pub fn save_pem(
        data_dir: &std::path::Path,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Result<()> {
        let paths = PkiPaths::new(data_dir);
        paths.ensure_dir()?;
        files::write_private_key(&paths.node_key(), key_pem, Overwrite::Replace)?;
        files::write_certificate(&paths.ca_cert(), ca_pem, Overwrite::Replace)?;
        files::write_certificate(&paths.node_cert(), cert_pem, Overwrite::Replace)
    }

    /// What our certificate says (role, id, serial, validity).
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Our certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The chain we present.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

/// A certificate and key that can be replaced while connections use them:
/// a renewed certificate takes effect at the next handshake, on both the
/// server and the client configs built from it ([`server_config_live`],
/// [`client_config_live`]), without restarting anything.
#[derive(Debug)]
pub struct LiveIdentity {
    current: std::sync::RwLock<(Arc<rustls::sign::CertifiedKey>, CertInfo)>,
}

pub(super) fn certified_key(identity: &Identity) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let key = crate::provider()
        .key_provider
        .load_private_key(identity.key.clone_key())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        identity.chain.clone(),
        key,
    )))
}

impl LiveIdentity {
    /// Start with `identity`.
    pub fn new(identity: &Identity) -> Result<Arc<LiveIdentity>> {
        Ok(Arc::new(LiveIdentity {
            current: std::sync::RwLock::new((certified_key(identity)?, identity.info.clone())),
        }))
    }

    /// Present `identity` from the next handshake on.
    pub fn replace(&self, identity: &Identity) -> Result<()> {
        let key = certified_key(identity)?;
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        *c = (key, identity.info.clone());
        Ok(())
    }

    /// What the current certificate says.
    pub fn info(&self) -> CertInfo {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    fn key(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for LiveIdentity {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key())
    }
}

impl rustls::client::ResolvesClientCert for LiveIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
