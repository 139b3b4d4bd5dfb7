//! Certificates for tests: identities signed by the cluster CA (on the
//! first node of a [`TestCluster`]) and clients that present them.

use super::cluster::TestCluster;
use shoal_net::{NetConfig, Peers};
use shoal_pki::{ClusterCa, ClusterTrust, Identity, PkiPaths, Role, SharedRevocations, Validity};
use std::path::Path;
use std::time::Duration;

/// The cluster CA certificate (PEM) of a node's data dir.
pub fn ca_pem_of(dir: &Path) -> String {
    std::fs::read_to_string(PkiPaths::new(dir).ca_cert()).unwrap()
}

/// A connection pool presenting `identity`, trusting the CA `ca_pem`: it
/// keeps one HTTP/2 connection per node open and reuses it.
pub fn peers_with(identity: &Identity, ca_pem: &str) -> Peers {
    let trust = ClusterTrust::new(ca_pem, SharedRevocations::default()).unwrap();
    let tls = shoal_pki::tls::client_config(identity, &trust).unwrap();
    let net = NetConfig {
        connect_timeout_ms: 2_000,
        ..NetConfig::default()
    };
    Peers::new(tls, net)
}

/// A certificate with its key, as PEM, and the identity they make.
pub struct Issued {
    /// The identity (for TLS configs).
    pub identity: Identity,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
}

impl Issued {
    /// Read `cert`, `key` (and the CA of `dir`) from files.
    pub fn from_files(dir: &Path, cert: &Path, key: &Path) -> Issued {
        let ca_pem = ca_pem_of(dir);
        let cert_pem = std::fs::read_to_string(cert).unwrap();
        let key_pem = std::fs::read_to_string(key).unwrap();
        let identity = Identity::from_pem(&cert_pem, &key_pem, &ca_pem).unwrap();
        Issued {
            identity,
            cert_pem,
            key_pem,
            ca_pem,
        }
    }

    /// A signer of requests with this certificate (the credential-bearing
    /// writes carry an admin's signature).
    pub fn signer(&self) -> shoal_pki::Signer {
        shoal_pki::Signer::from_pem(&self.cert_pem, &self.key_pem, &self.ca_pem).unwrap()
    }

    /// The admin credential a new cluster writes into its first node's
    /// data dir.
    pub fn admin_of(c: &TestCluster) -> Issued {
        let admin = PkiPaths::new(c.dirs[0].path()).admin_dir();
        Self::from_files(
            c.dirs[0].path(),
            &admin.join("client.crt"),
            &admin.join("client.key"),
        )
    }

    /// Node `i`'s own certificate and key.
    pub fn node_of(c: &TestCluster, i: usize) -> Issued {
        let p = PkiPaths::new(c.dirs[i].path());
        Self::from_files(c.dirs[i].path(), &p.node_cert(), &p.node_key())
    }

    /// A fresh certificate of `role` for `name` at `generation`, signed by
    /// the CA on node 0, valid for ten minutes.
    pub fn fresh(c: &TestCluster, role: Role, name: &str, generation: u64) -> Issued {
        let dir = c.dirs[0].path();
        let ca = ClusterCa::load(dir).unwrap();
        let validity = Validity::for_ttl(shoal_pki::now_unix_ms(), Duration::from_secs(600));
        let creds = ca
            .issue_with_new_key_for(role, name, generation, validity)
            .unwrap();
        let ca_pem = ca_pem_of(dir);
        let identity = Identity::from_pem(&creds.cert.cert_pem, &creds.key_pem, &ca_pem).unwrap();
        Issued {
            identity,
            cert_pem: creds.cert.cert_pem,
            key_pem: creds.key_pem,
            ca_pem,
        }
    }

    /// A control-API client of node `via` presenting this certificate (one
    /// connection per call).
    pub fn client(&self, c: &TestCluster, via: usize) -> shoal_api::Client {
        let trust = ClusterTrust::new(&self.ca_pem, SharedRevocations::default()).unwrap();
        shoal_api::Client::tls(
            c.addrs[via].to_string(),
            shoal_pki::tls::client_config(&self.identity, &trust).unwrap(),
        )
    }

    /// A pool presenting this certificate that keeps its connections open.
    pub fn peers(&self) -> Peers {
        peers_with(&self.identity, &self.ca_pem)
    }

    /// A renewal request for this certificate (a CSR for its key).
    pub fn renew_request(&self) -> shoal_api::cluster::RenewRequest {
        shoal_api::cluster::RenewRequest {
            csr_pem: shoal_pki::ca::csr_for_key_pem(&self.key_pem, &self.identity.info().id)
                .unwrap(),
            cert_pem: self.cert_pem.clone(),
        }
    }

    /// The same key with a renewed certificate.
    pub fn renewed(&self, cert_pem: &str) -> Issued {
        Issued {
            identity: Identity::from_pem(cert_pem, &self.key_pem, &self.ca_pem).unwrap(),
            cert_pem: cert_pem.to_string(),
            key_pem: self.key_pem.clone(),
            ca_pem: self.ca_pem.clone(),
        }
    }
}

/// A fresh join token granting `role` and its record, valid for ten
/// minutes from now: what an attacker would try to write into Raft.
pub fn token_record(role: Role) -> (shoal_pki::JoinToken, shoal_pki::TokenRecord) {
    let token = shoal_pki::JoinToken::generate().unwrap();
    let record = shoal_pki::TokenRecord::new(
        &token,
        role,
        shoal_pki::now_unix_ms(),
        Duration::from_secs(600),
    );
    (token, record)
}
