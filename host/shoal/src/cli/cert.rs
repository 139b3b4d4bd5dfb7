//! `shoal cert create|revoke|renew`: CLI credentials from the cluster CA.
//!
//! `create` runs on the node that holds the CA key (`<data-dir>/pki/ca.key`,
//! created by `shoal cluster init`). The key pair is generated here, the
//! certificate is signed with the role asked for (`client` or `admin`) at
//! the identity's current generation (from the revocation list the node
//! last applied, `<data-dir>/pki/revocations.json`), and the three files a
//! CLI needs are written into a directory: `ca.crt`, `client.crt`,
//! `client.key` (mode 0600). Hand that directory to the user over a channel
//! you trust; they point `--creds` / `SHOAL_CREDS` at it.
//!
//! `revoke` (admin) revokes every certificate of an identity, cluster-wide,
//! through Raft; `renew` gets a fresh certificate for the key in `--creds`
//! from any node (forwarded to the CA node) and writes it over the old one.

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use shoal_api::cluster::{RenewRequest, RevokeRequest};
use shoal_pki::{ClusterCa, Identity, PkiError, PkiPaths, Role, Validity};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::remote::{block_on, CredentialFlags, Target};
use shoal_daemon::credentials::{write_credentials, CA_FILE, CERT_FILE, KEY_FILE};

pub const TTL_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Arguments of `shoal cert`.
#[derive(Args, Debug)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Issue credentials for a CLI user: a new key and a certificate signed
    /// by the cluster CA.
    ///
    /// Run it on the node that ran `shoal cluster init` (it holds the CA
    /// key). Writes ca.crt, client.crt and client.key (mode 0600) into the
    /// output directory (created with mode 0700); existing files are kept
    /// unless --force. --client gives ordinary rights on the control API
    /// (deploy, ps, logs, kill, snapshot, restore); --admin also allows
    /// administrative operations. Hand the directory over by a channel you
    /// trust: whoever holds client.key can act with its role until the
    /// certificate expires or is revoked.
    #[command(after_help = "Examples:
  shoal cert create --client --name alice -o ./alice-creds
  shoal cert create --admin --name ops --ttl 12h -o /tmp/ops --json
  # then, on the user's machine:
  export SHOAL_CREDS=./alice-creds SHOAL_ADDR=10.0.0.5:7700
  shoal ps

--ttl takes a number and a unit: 90s, 15m, 12h, 30d (default 30d).

A name that was revoked (`shoal cert revoke`) gets a new generation here:
the new certificate works, the revoked ones stay revoked.")]
    Create(CreateArgs),
    /// Revoke every certificate of one identity, cluster-wide (admin only).
    ///
    /// Every certificate issued so far to ROLE/NAME — and every renewal of
    /// one — is refused from then on by every node: at the next handshake,
    /// and on connections already open, which the nodes close. Recorded in
    /// Raft, so it holds across restarts and for nodes that join later.
    /// The identity moves to a new generation: credentials created for the
    /// same name afterwards (`shoal cert create`, a join token) work again.
    /// A client certificate is refused with a typed 403 (needs admin). For
    /// a node that is still a member use `shoal node remove`, which also
    /// takes it out of the cluster.
    #[command(after_help = "Examples:
  shoal cert revoke --role client alice
  shoal cert revoke --role admin ops --reason \"laptop lost\" --json
  shoal --addr 10.0.0.5:7700 --creds ./ops-creds cert revoke --role client bob

Prints the identity's new generation; --json prints
{role, id, generation, revoked_unix_ms}.")]
    Revoke(RevokeArgs),
    /// Renew the certificate in --creds: same role, name and key, a new
    /// validity window, signed by the cluster CA (any node forwards the
    /// request to the node that holds it).
    ///
    /// Needs --addr and the credentials to renew (--creds or --cert/--key/
    /// --ca); the new certificate replaces the old file (client.crt). A
    /// revoked certificate, or a removed node's, is refused.
    #[command(after_help = "Examples:
  shoal --addr 10.0.0.5:7700 --creds ./alice-creds cert renew
  SHOAL_ADDR=10.0.0.5:7700 SHOAL_CREDS=./alice-creds shoal cert renew --json")]
    Renew(RenewArgs),
}

/// Arguments of `shoal cert revoke`.
#[derive(Args, Debug)]
struct RevokeArgs {
    /// The identity's role: client, admin or node.
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    role: Role,

    /// The identity's name (the id in its certificates).
    #[arg(value_name = "NAME")]
    name: String,

    /// Why (kept with the revocation and shown when a certificate is
    /// refused).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,

    /// Print JSON {role, id, generation, revoked_unix_ms} instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shoal cert renew`.
#[derive(Args, Debug)]
struct RenewArgs {
    /// Print JSON {cert, role, name, generation, expires_unix_ms, serial}
    /// instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse::<Role>()
        .map_err(|_| format!("`{text}` is not a role (client, admin or node)"))
}

/// Arguments of `shoal cert create`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("role").required(true).args(["client", "admin"])))]
struct CreateArgs {
    /// A certificate with the client role (ordinary control API rights).
    #[arg(long)]
    client: bool,

    /// A certificate with the admin role (administrative rights too).
    #[arg(long)]
    admin: bool,

    /// Who the credentials are for; written into the certificate as its id
    /// (1-63 characters [A-Za-z0-9._-], starting with a letter or digit).
    #[arg(long, value_name = "NAME")]
    name: String,

    /// How long the certificate is valid: 90s, 15m, 12h, 30d.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_ttl)]
    ttl: Duration,

    /// The directory to write ca.crt, client.crt and client.key into.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: PathBuf,

    /// Replace credential files already in the directory.
    #[arg(long)]
    force: bool,

    /// Print JSON {dir, role, name, expires_unix_ms, serial, generation}
    /// instead of text.
    #[arg(long)]
    json: bool,
}

/// Parse a certificate lifetime: a whole number followed by `s`, `m`, `h`
/// or `d` (`90s`, `15m`, `12h`, `30d`); at least one second, at most
/// [`TTL_MAX`].
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = super::units::parse_duration_with(
        text,
        super::units::DurationRules {
            bare_is_secs: false,
            zero_ok: false,
            max: TTL_MAX,
            max_words: "the CA's ten years",
            examples: "30d, 12h, 15m or 90s",
        },
    )?;
    if ttl < Duration::from_secs(1) {
        return Err(format!(
            "`{text}`: a certificate must be valid for a second or more"
        ));
    }
    Ok(ttl)
}

/// Load the CA of this data directory, explaining plainly when this node
/// does not hold it.
pub fn load_ca(data_dir: &Path) -> anyhow::Result<ClusterCa> {
    match ClusterCa::load(data_dir) {
        Ok(ca) => Ok(ca),
        Err(PkiError::CaMissing(_)) => anyhow::bail!(
            "this node does not hold the cluster CA (no {}); run this on the node that ran \
             `shoal cluster init`",
            PkiPaths::new(data_dir).ca_key().display()
        ),
        Err(e) => Err(anyhow::Error::new(e).context("cannot load the cluster CA")),
    }
}

/// Whether `shoal cert SUBCOMMAND` talks to a node (`revoke`, `renew`).
pub fn talks_to_node(subcommand: Option<&str>) -> bool {
    matches!(subcommand, Some("revoke" | "renew"))
}

/// Run `shoal cert ...`. `node` is the global `--addr` (for `create`, used
/// only to print a complete `export` line).
pub fn cert(
    args: CertArgs,
    data_dir: &Path,
    node: Option<&str>,
    target: &Target,
    flags: &CredentialFlags,
) -> anyhow::Result<i32> {
    match args.command {
        CertCommand::Create(a) => create(a, data_dir, node),
        CertCommand::Revoke(a) => revoke(a, target),
        CertCommand::Renew(a) => renew(a, data_dir, node, target, flags),
    }
}

fn revoke(args: RevokeArgs, target: &Target) -> anyhow::Result<i32> {
    shoal_pki::role::validate_id(&args.name).context("NAME")?;
    let req = RevokeRequest {
        role: args.role,
        id: args.name.clone(),
        reason: args.reason.clone(),
    };
    let signer = target.signer("revoking a certificate")?;
    let r = block_on(target.client().revoke_certificate(&req, &signer))??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "revoked {} {}: every certificate issued to it so far is refused cluster-wide, \
             and its open connections are closed (it is now at generation {}; new \
             credentials for this name get it)",
            r.role, r.id, r.generation
        );
    }
    Ok(0)
}

fn renew(
    args: RenewArgs,
    data_dir: &Path,
    node: Option<&str>,
    target: &Target,
    flags: &CredentialFlags,
) -> anyhow::Result<i32> {
    let Some(addr) = node.filter(|_| target.tls.is_some()) else {
        anyhow::bail!(
            "`cert renew` renews the certificate you connect with: give --addr HOST:PORT and \
             --creds DIR (the local socket uses no certificate)"
        );
    };
    let files = super::remote::credential_files(flags, data_dir, addr)?;
    let key_pem = shoal_pki::files::read_private_key(&files.key)
        .with_context(|| format!("cannot read the private key {}", files.key.display()))?;
    let cert_pem = shoal_pki::files::read_certificate(&files.cert)
        .with_context(|| format!("cannot read the certificate {}", files.cert.display()))?;
    let ca_pem = shoal_pki::files::read_certificate(&files.ca)
        .with_context(|| format!("cannot read the CA certificate {}", files.ca.display()))?;
    let current = Identity::from_pem(&cert_pem, &key_pem, &ca_pem)
        .context("the credentials to renew are not usable")?;
    let csr_pem = shoal_pki::ca::csr_for_key_pem(&key_pem, &current.info().id)?;
    let issued = block_on(
        target
            .client()
            .renew_certificate(&RenewRequest { csr_pem, cert_pem }),
    )??;
    // The answer must be for our key, our name and role, from our CA.
    let renewed = Identity::from_pem(&issued.cert_pem, &key_pem, &ca_pem)
        .context("the renewed certificate does not fit our key")?;
    let (old, new) = (current.info(), renewed.info());
    if (old.role, &old.id, old.generation) != (new.role, &new.id, new.generation) {
        anyhow::bail!(
            "the node answered a certificate for {}/{} (generation {}), not {}/{} (generation {})",
            new.role,
            new.id,
            new.generation,
            old.role,
            old.id,
            old.generation
        );
    }
    shoal_pki::files::write_certificate(
        &files.cert,
        &issued.cert_pem,
        shoal_pki::files::Overwrite::Replace,
    )
    .with_context(|| format!("cannot write {}", files.cert.display()))?;
    if args.json {
        let v = serde_json::json!({
            "cert": files.cert.display().to_string(),
            "role": new.role.as_str(),
            "name": new.id,
            "generation": new.generation,
            "expires_unix_ms": new.not_after_unix_ms,
            "serial": new.serial.to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "renewed the {} certificate of {} (serial {}, valid for {}): {}",
            new.role,
            new.id,
            new.serial,
            super::remote::human_age(
                new.not_after_unix_ms
                    .saturating_sub(shoal_pki::now_unix_ms())
            ),
            files.cert.display()
        );
    }
    Ok(0)
}

fn create(args: CreateArgs, data_dir: &Path, node: Option<&str>) -> anyhow::Result<i32> {
    let role = if args.admin {
        Role::Admin
    } else {
        Role::Client
    };
    shoal_pki::role::validate_id(&args.name).context("--name")?;
    let ca = load_ca(data_dir)?;
    // A name revoked before gets its new generation (the list as this
    // node last applied it).
    let generation =
        shoal_daemon::credentials::load_revocations(data_dir)?.generation(role, &args.name);
    let validity = Validity::for_ttl(shoal_pki::now_unix_ms(), args.ttl);
    let creds = ca
        .issue_with_new_key_for(role, &args.name, generation, validity)
        .with_context(|| format!("cannot issue a {role} certificate for {}", args.name))?;
    let paths = write_credentials(&args.output, &creds, ca.ca_cert_pem(), args.force)?;
    let dir = std::fs::canonicalize(&paths.dir).unwrap_or_else(|_| paths.dir.clone());
    if args.json {
        let v = serde_json::json!({
            "dir": dir.display().to_string(),
            "role": role.as_str(),
            "name": creds.cert.id,
            "expires_unix_ms": creds.cert.not_after_unix_ms,
            "serial": creds.cert.serial.to_string(),
            "generation": creds.cert.generation,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let valid_ms = creds
        .cert
        .not_after_unix_ms
        .saturating_sub(shoal_pki::now_unix_ms());
    println!(
        "Issued a {role} certificate for {} (serial {}, valid for {}).",
        creds.cert.id,
        creds.cert.serial,
        super::remote::human_age(valid_ms)
    );
    println!("  {}", dir.join(CA_FILE).display());
    println!("  {}", dir.join(CERT_FILE).display());
    println!(
        "  {}  (private key, mode 0600)",
        dir.join(KEY_FILE).display()
    );
    println!();
    println!("Hand this directory over by a channel you trust. To use it:");
    println!(
        "  export SHOAL_CREDS={} SHOAL_ADDR={}",
        dir.display(),
        node.unwrap_or("HOST:PORT")
    );
    println!("  shoal ps");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(2_592_000)));
        assert!(parse_ttl("30").unwrap_err().contains("needs a unit"));
        assert!(parse_ttl("0d").is_err());
        assert!(parse_ttl("3w")
            .unwrap_err()
            .contains("unknown duration unit"));
        assert!(parse_ttl("d").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
        assert!(parse_ttl("4000d").unwrap_err().contains("ten years"));
    }
}
