//! `shoal cert create`: issue CLI credentials from the cluster CA.
//!
//! Runs on the node that holds the CA key (`<data-dir>/pki/ca.key`, created
//! by `shoal cluster init`). The key pair is generated here, the
//! certificate is signed with the role asked for (`client` or `admin`), and
//! the three files a CLI needs are written into a directory: `ca.crt`,
//! `client.crt`, `client.key` (mode 0600). Hand that directory to the user
//! over a channel you trust; they point `--creds` / `SHOAL_CREDS` at it.

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use shoal_pki::{ClusterCa, PkiError, PkiPaths, Role};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

--ttl takes a number and a unit: 90s, 15m, 12h, 30d (default 30d).")]
    Create(CreateArgs),
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

    /// Print JSON {dir, role, name, expires_unix_ms, serial} instead of text.
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

/// Run `shoal cert ...`. `node` is the global `--addr`, used only to print
/// a complete `export` line.
pub fn cert(args: CertArgs, data_dir: &Path, node: Option<&str>) -> anyhow::Result<i32> {
    match args.command {
        CertCommand::Create(a) => create(a, data_dir, node),
    }
}

fn create(args: CreateArgs, data_dir: &Path, node: Option<&str>) -> anyhow::Result<i32> {
    let role = if args.admin {
        Role::Admin
    } else {
        Role::Client
    };
    shoal_pki::role::validate_id(&args.name).context("--name")?;
    let ca = load_ca(data_dir)?;
    let creds = ca
        .issue_with_new_key(role, &args.name, args.ttl)
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
