//! Roles and what a Shoal certificate says about its holder.
//!
//! The CA writes the holder's role and id into exactly one URI SAN,
//! `shoal://<role>/<id>`. Verifiers decide by that SAN (after the chain is
//! verified against the cluster CA), never by host names or the subject CN,
//! so a client certificate cannot pose as a node whatever names it carries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;

use super::revocation::Serial;
use super::{PkiError, Result};

/// URI scheme of the role SAN.
pub const ROLE_URI_SCHEME: &str = "shoal://";
/// How a certificate's generation follows its role SAN:
/// `shoal://<role>/<id>?generation=<n>` (absent for generation 0).
pub const GENERATION_QUERY: &str = "generation=";

/// Read a certificate's role SAN: role, id and generation. `None` if the
/// URI is not a `shoal://` role URI (or is malformed).
fn parse_cert_uri(uri: &str) -> Option<(Role, String, u64)> {
    let (base, query) = match uri.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (uri, None),
    };
    let (role, id) = Role::parse_uri(base)?;
    let generation = match query {
        None => 0,
        Some(q) => {
            let digits = q.strip_prefix(GENERATION_QUERY)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()?
        }
    };
    Some((role, id, generation))
}

/// What a certificate holder may do in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A cluster member: serves the node-to-node endpoint and talks to peers.
    Node,
    /// A CLI user with ordinary rights on the control API.
    Client,
    /// A CLI user with administrative rights (tokens, node removal, ...).
    Admin,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 3] = [Role::Node, Role::Client, Role::Admin];

    /// The lowercase name used in the SAN, on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    /// The SAN URI for this role and `id`: `shoal://<role>/<id>`.
    pub fn uri(self, id: &str) -> String {
        format!("{ROLE_URI_SCHEME}{}/{id}", self.as_str())
    }

    /// The SAN URI of a certificate of this role for `id` at `generation`
    /// (see [`CertInfo::generation`]): `shoal://<role>/<id>` for generation
    /// 0, `shoal://<role>/<id>?generation=<n>` after that.
    pub fn cert_uri(self, id: &str, generation: u64) -> String {
        if generation == 0 {
            self.uri(id)
        } else {
            format!("{}?{GENERATION_QUERY}{generation}", self.uri(id))
        }
    }

    /// Parse a `shoal://<role>/<id>` URI; `None` if it is not one (other URIs
    /// are allowed in a certificate and ignored) or the id is invalid.
    pub fn parse_uri(uri: &str) -> Option<(Role, String)> {
        let rest = uri.strip_prefix(ROLE_URI_SCHEME)?;
        let (role, id) = rest.split_once('/')?;
        let role = Role::from_str(role).ok()?;
        validate_id(id).ok()?;
        Some((role, id.to_string()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "node" => Ok(Role::Node),
            "client" => Ok(Role::Client),
            "admin" => Ok(Role::Admin),
            other => Err(PkiError::BadCertificate(format!("unknown role {other:?}"))),
        }
    }
}

/// Check that `id` may name a node or client in a certificate: 1–63 chars of
/// `[A-Za-z0-9._-]`, starting with a letter or digit. Keeps the SAN URI
/// unambiguous and lets a node id double as a DNS SAN.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidId(id.to_string()))
    }
}

/// What a Shoal certificate says: role, id, serial and validity window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// The holder's role, from the `shoal://` URI SAN.
    pub role: Role,
    /// The holder's node or client id, from the same SAN.
    pub id: String,
    /// The certificate's serial number (what revocation refers to).
    pub serial: Serial,
    /// Start of validity, Unix ms.
    pub not_before_unix_ms: u64,
    /// End of validity, Unix ms.
    pub not_after_unix_ms: u64,
    /// The identity's generation when the CA issued it: revoking an
    /// identity revokes every certificate of it below a new generation, and
    /// an identity admitted again afterwards gets that new one (renewal
    /// keeps it). Written after the role SAN (`?generation=<n>`); 0 when
    /// absent.
    #[serde(default)]
    pub generation: u64,
}

/// Read role, id, serial and validity out of a DER certificate.
///
/// This only *parses*: it does not check who signed the certificate. Use it
/// on certificates that a verifier (or your own CA) already vouched for.
/// Fails if the certificate has no `shoal://` SAN or more than one.
pub fn inspect(cert_der: &[u8]) -> Result<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::BadCertificate(format!("subjectAltName: {e}")))?;
    let mut found: Option<(Role, String, u64)> = None;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(role_id) = parse_cert_uri(uri) {
                    if found.is_some() {
                        return Err(PkiError::BadCertificate(
                            "more than one shoal:// role SAN".to_string(),
                        ));
                    }
                    found = Some(role_id);
                }
            }
        }
    }
    let (role, id, generation) = found.ok_or_else(|| {
        PkiError::BadCertificate("no shoal://<role>/<id> SAN: not a Shoal certificate".to_string())
    })?;
    let validity = cert.validity();
    Ok(CertInfo {
        role,
        id,
        serial: Serial::from_bytes(cert.raw_serial()),
        not_before_unix_ms: secs_to_ms(validity.not_before.timestamp()),
        not_after_unix_ms: secs_to_ms(validity.not_after.timestamp()),
        generation,
    })
}

/// The role and id a certificate was issued for (see [`inspect`]).
pub fn role_of(cert_der: &[u8]) -> Result<(Role, String)> {
    inspect(cert_der).map(|i| (i.role, i.id))
}

fn secs_to_ms(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(1000)
}
