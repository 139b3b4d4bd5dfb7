//! The cluster certificate authority.
//!
//! `shoal cluster init` calls [`ClusterCa::init`]: a fresh ECDSA P-256 key and
//! a self-signed CA certificate in `<data>/pki/` (key mode 0600, written once,
//! never overwritten, never sent anywhere). Later the same node
//! [`load`](ClusterCa::load)s it to sign joiners' CSRs and to issue CLI
//! credentials.
//!
//! The CA, not the requester, decides everything in an issued certificate:
//! role, id, SANs, key usages, validity, serial. Of a CSR only the public key
//! is used (after checking the CSR's self-signature proves possession of the
//! private key); its subject and requested extensions are ignored, so a CSR
//! asking for `shoal://admin/...` gets nothing of the sort.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::files::{self, Overwrite, PkiPaths};
use super::revocation::Serial;
use super::role::{self, validate_id, Role};
use super::{duration_ms, PkiError, Result};

/// How long a new CA certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates start this much before "now", so a peer whose clock
/// lags a little does not see a brand-new certificate as not yet valid.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);
/// Default lifetime of a node certificate (renewed at 2/3 of it).
pub const DEFAULT_NODE_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default lifetime of CLI credentials from `shoal cert create --client`.
pub const DEFAULT_CLIENT_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The pin of a CA: `sha256:<hex>` of the SHA-256 of the DER
/// SubjectPublicKeyInfo of the CA certificate (the kubeadm
/// `--discovery-token-ca-cert-hash` format). A joiner that knows the pin can
/// tell the real cluster CA from an impostor on first contact.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// Prefix of the printed form.
    pub const PREFIX: &'static str = "sha256:";

    /// The pin of a DER certificate.
    pub fn of_cert_der(cert_der: &[u8]) -> Result<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        Ok(Self::of_spki_der(cert.public_key().raw))
    }

    /// The pin of a PEM certificate (the first one in `pem`).
    pub fn of_cert_pem(pem: &str) -> Result<Self> {
        Self::of_cert_der(&first_cert_der(pem)?)
    }

    /// The pin of a DER SubjectPublicKeyInfo.
    pub fn of_spki_der(spki_der: &[u8]) -> Self {
        CaPin(Sha256::digest(spki_der).into())
    }

    /// The pin's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether the DER certificate `cert_der` has this pin (false if it
    /// cannot be parsed).
    pub fn matches_cert_der(&self, cert_der: &[u8]) -> bool {
        Self::of_cert_der(cert_der).is_ok_and(|p| p == *self)
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, hex::encode(self.0))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({self})")
    }
}

impl FromStr for CaPin {
    type Err = PkiError;
    /// Parses `sha256:<64 hex digits>` (hex in either case).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || PkiError::BadPin(s.to_string());
        let hex_part = s.trim().strip_prefix(Self::PREFIX).ok_or_else(bad)?;
        if hex_part.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
        Ok(CaPin(out))
    }
}

impl Serialize for CaPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CaPin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A validity window for an issued certificate, Unix ms (X.509 stores whole
/// seconds, so both ends are rounded down to the second).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    /// First instant of validity.
    pub not_before_unix_ms: u64,
    /// Last instant of validity.
    pub not_after_unix_ms: u64,
}

impl Validity {
    /// Valid from `now` minus [`CLOCK_SKEW_ALLOWANCE`] until `now + ttl`.
    pub fn for_ttl(now_unix_ms: u64, ttl: Duration) -> Self {
        Validity {
            not_before_unix_ms: now_unix_ms.saturating_sub(duration_ms(CLOCK_SKEW_ALLOWANCE)),
            not_after_unix_ms: now_unix_ms.saturating_add(duration_ms(ttl)),
        }
    }

    /// An explicit window (used by tests for certificates in the past or the
    /// future, and by tools that need exact dates).
    pub fn between(not_before_unix_ms: u64, not_after_unix_ms: u64) -> Self {
        Validity {
            not_before_unix_ms,
            not_after_unix_ms,
        }
    }
}

/// A certificate the CA issued, with what the CA put in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its random serial number (record it to revoke it later).
    pub serial: Serial,
    /// The role it grants.
    pub role: Role,
    /// The node or client id it names.
    pub id: String,
    /// Start of validity, Unix ms.
    pub not_before_unix_ms: u64,
    /// End of validity, Unix ms.
    pub not_after_unix_ms: u64,
    /// The identity's generation it was issued at (see
    /// [`CertInfo::generation`](crate::CertInfo::generation)).
    #[serde(default)]
    pub generation: u64,
}

impl IssuedCert {
    /// The certificate, DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>> {
        first_cert_der(&self.cert_pem)
    }
}

/// A certificate together with a private key generated by the CA node
/// (`shoal cert create --client`). `Debug` hides the key.
#[derive(Clone)]
pub struct IssuedCredentials {
    /// The certificate.
    pub cert: IssuedCert,
    /// The private key, PKCS#8 PEM: write it with mode 0600 and hand it over
    /// out of band.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("cert", &self.cert)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The cluster CA: its key (in memory, loaded from the 0600 file) and
/// certificate. Only the node that ran `cluster init` has one.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_after_unix_ms: u64,
    pin: CaPin,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("pin", &self.pin)
            .field("not_after_unix_ms", &self.not_after_unix_ms)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Create the cluster CA in `<data_dir>/pki/` (`ca.key` mode 0600,
    /// `ca.crt` mode 0644). Refuses with [`PkiError::CaExists`] if either
    /// file already exists: re-running `cluster init` must never replace the
    /// trust root of a running cluster.
    pub fn init(data_dir: &Path) -> Result<Self> {
        Self::init_at(data_dir, super::now_unix_ms())
    }

    /// [`init`](Self::init) with an explicit clock.
    pub fn init_at(data_dir: &Path, now_unix_ms: u64) -> Result<Self> {
        let paths = PkiPaths::new(data_dir);
        for p in [paths.ca_key(), paths.ca_cert()] {
            if p.exists() {
                return Err(PkiError::CaExists(p));
            }
        }
        paths.ensure_dir()?;

        let key = KeyPair::generate()?;
        let mut cluster_id = [0u8; 8];
        super::random_bytes(&mut cluster_id)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Shoal");
        dn.push(
            DnType::CommonName,
            format!("Shoal cluster CA {}", hex::encode(cluster_id)),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let validity = Validity::for_ttl(now_unix_ms, CA_VALIDITY);
        params.not_before = to_time(validity.not_before_unix_ms)?;
        params.not_after = to_time(validity.not_after_unix_ms)?;
        let cert = params.self_signed(&key)?;

        // Key first, with no-overwrite semantics: if another init raced us,
        // one of the two fails here before any certificate is written.
        files::write_private_key(&paths.ca_key(), &key.serialize_pem(), Overwrite::Refuse)
            .map_err(|e| already_exists_to_ca_exists(e, &paths.ca_key()))?;
        files::write_certificate(&paths.ca_cert(), &cert.pem(), Overwrite::Refuse)
            .map_err(|e| already_exists_to_ca_exists(e, &paths.ca_cert()))?;
        Self::from_parts(cert.der().clone(), cert.pem(), key)
    }

    /// Load the CA from `<data_dir>/pki/`. Fails with
    /// [`PkiError::CaMissing`] if this node has none, and with
    /// [`PkiError::InsecureKeyFile`] if the key is readable by others.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let paths = PkiPaths::new(data_dir);
        if !paths.ca_key().exists() {
            return Err(PkiError::CaMissing(paths.ca_key()));
        }
        let key_pem = files::read_private_key(&paths.ca_key())?;
        let cert_pem = files::read_certificate(&paths.ca_cert())?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadKey(e.to_string()))?;
        let der = first_cert_der(&cert_pem)?;
        Self::from_parts(der, cert_pem, key)
    }

    /// The CA from its certificate and key (PEM), checked as
    /// [`load`](Self::load) checks them (a CA certificate, the key matching).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadKey(e.to_string()))?;
        let der = first_cert_der(cert_pem)?;
        Self::from_parts(der, cert_pem.to_string(), key)
    }

    fn from_parts(
        cert_der: CertificateDer<'static>,
        cert_pem: String,
        key: KeyPair,
    ) -> Result<Self> {
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(PkiError::BadCertificate(
                "ca.crt is not a CA certificate".into(),
            ));
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::BadKey("ca.key does not match ca.crt".into()));
        }
        let not_after_unix_ms = u64::try_from(parsed.validity().not_after.timestamp())
            .unwrap_or(0)
            .saturating_mul(1000);
        let pin = CaPin::of_spki_der(parsed.public_key().raw);
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(ClusterCa {
            issuer,
            cert_der,
            cert_pem,
            not_after_unix_ms,
            pin,
        })
    }

    /// The CA certificate, PEM (public: what every node and CLI trusts).
    pub fn ca_cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA pin printed in join commands.
    pub fn ca_pin(&self) -> CaPin {
        self.pin
    }

    /// When the CA certificate itself expires, Unix ms.
    pub fn not_after_unix_ms(&self) -> u64 {
        self.not_after_unix_ms
    }

    /// Sign a CSR (PEM) for `role`/`id`, valid for `ttl` from now.
    ///
    /// Only the CSR's public key is used, and only after its signature
    /// verifies; its subject and any SANs it requests are ignored — the CA
    /// decides role and names.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        role: Role,
        id: &str,
        ttl: Duration,
    ) -> Result<IssuedCert> {
        let now = super::now_unix_ms();
        self.sign_csr_with_validity(csr_pem, role, id, Validity::for_ttl(now, ttl))
    }

    /// [`sign_csr`](Self::sign_csr) with an explicit validity window (at
    /// generation 0: see [`sign_csr_for`](Self::sign_csr_for)).
    pub fn sign_csr_with_validity(
        &self,
        csr_pem: &str,
        role: Role,
        id: &str,
        validity: Validity,
    ) -> Result<IssuedCert> {
        self.sign_csr_for(csr_pem, role, id, 0, validity)
    }

    /// Sign a CSR for `role`/`id` at the identity's `generation` (what the
    /// replicated revocation list says it is now:
    /// [`RevocationList::generation`](crate::RevocationList::generation),
    /// or the presented certificate's own when renewing).
    pub fn sign_csr_for(
        &self,
        csr_pem: &str,
        role: Role,
        id: &str,
        generation: u64,
        validity: Validity,
    ) -> Result<IssuedCert> {
        let public_key = csr_public_key(csr_pem)?;
        self.issue(&public_key, role, id, generation, validity)
    }

    /// Generate a key pair here and issue a certificate for it
    /// (`shoal cert create --client` / `--admin`), valid for `ttl` from now.
    pub fn issue_with_new_key(
        &self,
        role: Role,
        id: &str,
        ttl: Duration,
    ) -> Result<IssuedCredentials> {
        let now = super::now_unix_ms();
        self.issue_with_new_key_validity(role, id, Validity::for_ttl(now, ttl))
    }

    /// [`issue_with_new_key`](Self::issue_with_new_key) with an explicit
    /// validity window.
    pub fn issue_with_new_key_validity(
        &self,
        role: Role,
        id: &str,
        validity: Validity,
    ) -> Result<IssuedCredentials> {
        self.issue_with_new_key_for(role, id, 0, validity)
    }

    /// [`issue_with_new_key_validity`](Self::issue_with_new_key_validity)
    /// at the identity's `generation`.
    pub fn issue_with_new_key_for(
        &self,
        role: Role,
        id: &str,
        generation: u64,
        validity: Validity,
    ) -> Result<IssuedCredentials> {
        let key = KeyPair::generate()?;
        let cert = self.issue(&key, role, id, generation, validity)?;
        Ok(IssuedCredentials {
            cert,
            key_pem: key.serialize_pem(),
        })
    }

    fn issue(
        &self,
        public_key: &impl PublicKeyData,
        role: Role,
        id: &str,
        generation: u64,
        validity: Validity,
    ) -> Result<IssuedCert> {
        validate_id(id)?;
        let not_after = validity.not_after_unix_ms.min(self.not_after_unix_ms);
        if not_after <= validity.not_before_unix_ms {
            return Err(PkiError::BadValidity(format!(
                "not_after {} is not after not_before {} (the CA expires at {})",
                validity.not_after_unix_ms, validity.not_before_unix_ms, self.not_after_unix_ms
            )));
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Shoal");
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::CommonName, id);
        params.distinguished_name = dn;
        let uri = Ia5String::try_from(role.cert_uri(id, generation))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        if role == Role::Node {
            // For tools that check host names (curl, openssl); Shoal's own
            // verifiers ignore it and go by the URI SAN.
            if let Ok(ip) = IpAddr::from_str(id) {
                params.subject_alt_names.push(SanType::IpAddress(ip));
            } else if is_dns_name(id) {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(Ia5String::try_from(id)?));
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            // Nodes both accept and make connections.
            Role::Node => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            // CLI credentials can never serve: no serverAuth.
            Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.serial_number = Some(random_serial()?);
        params.not_before = to_time(validity.not_before_unix_ms)?;
        params.not_after = to_time(not_after)?;
        params.use_authority_key_identifier_extension = true;

        let cert = params.signed_by(public_key, &self.issuer)?;
        let info = role::inspect(cert.der())?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            serial: info.serial,
            role: info.role,
            id: info.id,
            not_before_unix_ms: info.not_before_unix_ms,
            not_after_unix_ms: info.not_after_unix_ms,
            generation: info.generation,
        })
    }
}

/// Generate a key pair and a CSR for it, as a joining node does. The CSR
/// carries `node_name` as its CN only for operators' eyes; the CA ignores
/// it. Returns `(key_pem, csr_pem)`; the key never leaves the caller.
pub fn generate_key_and_csr(node_name: &str) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let csr_pem = csr_for_key(&key, node_name)?;
    Ok((key.serialize_pem(), csr_pem))
}

/// A CSR (PEM) for an existing key (PEM), e.g. to renew keeping the key.
pub fn csr_for_key_pem(key_pem: &str, node_name: &str) -> Result<String> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadKey(e.to_string()))?;
    csr_for_key(&key, node_name)
}

fn csr_for_key(key: &KeyPair, node_name: &str) -> Result<String> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_name);
    params.distinguished_name = dn;
    Ok(params.serialize_request(key)?.pem()?)
}

/// The public key of a CSR, after verifying the CSR's signature.
/// Check that `csr_pem` is a well-formed CSR whose public key can be
/// certified (before anything is spent on the request that carries it).
pub fn check_csr(csr_pem: &str) -> Result<()> {
    csr_public_key(csr_pem).map(|_| ())
}

fn csr_public_key(csr_pem: &str) -> Result<rcgen::PublicKey> {
    // rcgen parses the subject and requested extensions too; we drop them.
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::BadCsr(e.to_string()))?;
    Ok(csr.public_key)
}

/// Whether the CSR (PEM, its self-signature verified) is for the very key
/// `cert_der` certifies: how a renewal proves, beside the certificate
/// (which is public), that the requester holds that certificate's key.
pub fn csr_matches_cert(csr_pem: &str, cert_der: &[u8]) -> Result<bool> {
    let csr_key = csr_public_key(csr_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.as_ref() == csr_key.der_bytes())
}

/// The SPKI DER of a PEM private key (to check a certificate matches it).
pub fn key_spki_der(key_pem: &str) -> Result<Vec<u8>> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadKey(e.to_string()))?;
    Ok(key.subject_public_key_info())
}

/// The first certificate in a PEM string, DER.
pub fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::BadCertificate(format!("PEM: {e}")))
}

/// A random positive 128-bit-wide serial: 16 bytes with the top bit clear
/// (DER INTEGERs are signed) and the next bit set (so the encoding is always
/// exactly 16 bytes and round-trips byte for byte): 126 random bits.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    super::random_bytes(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn to_time(unix_ms: u64) -> Result<time::OffsetDateTime> {
    let secs = i64::try_from(unix_ms / 1000)
        .map_err(|_| PkiError::BadValidity(format!("time {unix_ms} out of range")))?;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| PkiError::BadValidity(format!("time {unix_ms}: {e}")))
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn already_exists_to_ca_exists(e: PkiError, path: &Path) -> PkiError {
    match e {
        PkiError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            PkiError::CaExists(path.to_path_buf())
        }
        other => other,
    }
}
