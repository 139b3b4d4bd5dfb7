//! Cluster verbs: `shoal nodes`, `shoal token create`, and the bodies of
//! `shoal node remove|cordon|uncordon`.

use super::remote::{block_on, human_age, human_bytes, Target};
use clap::{Args, Subcommand};
use shoal_daemon::cluster_api::{NodeSummary, TokenRequest};

/// Arguments of `shoal nodes`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal nodes
  shoal nodes --json | jq '.[] | select(.healthy | not) | .name'")]
pub struct NodesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shoal token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a one-time join token (admin only) and print the command a
    /// new node runs to join: it carries the token and the CA pin
    /// (`--ca-hash`), so the new node checks it is joining this cluster.
    /// The token works once, until it expires; only its hash is stored.
    #[command(after_help = "Examples:
  shoal token create --ttl 1h
  shoal token create --ttl 10m --json
  shoal token create --ttl 1h --role client     (for `shoal cert`-less CLI joins)")]
    Create(TokenCreateArgs),
}

#[derive(Args, Debug)]
struct TokenCreateArgs {
    /// How long the token works: 90s, 15m, 12h, 7d (at most 7d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = super::cert::parse_ttl)]
    ttl: std::time::Duration,
    /// The role of the certificate a joiner gets: node, client or admin.
    #[arg(long, value_name = "ROLE", default_value = "node")]
    role: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn print_nodes(nodes: &[NodeSummary]) {
    println!(
        "{:<4} {:<16} {:<22} {:<9} {:<7} {:>6} {:>10} {:>6} FLAGS",
        "ID", "NAME", "ADDRESS", "STATUS", "HEALTH", "PROCS", "MEM FREE", "LOAD"
    );
    for n in nodes {
        let mut flags = Vec::new();
        if n.leader {
            flags.push("leader".to_string());
        }
        if n.ca {
            flags.push("ca".to_string());
        }
        for (k, v) in &n.labels {
            flags.push(format!("{k}={v}"));
        }
        let health = if n.status == "removed" {
            "-".to_string()
        } else if n.healthy {
            "up".to_string()
        } else {
            format!("down {}", human_age(n.heartbeat_age_ms))
        };
        println!(
            "{:<4} {:<16} {:<22} {:<9} {:<7} {:>6} {:>10} {:>6.2} {}",
            n.id,
            n.name,
            n.addr,
            n.status,
            health,
            n.load.process_count,
            human_bytes(n.load.memory_bytes_free),
            n.load.cpu_load_milli as f64 / 1000.0,
            flags.join(",")
        );
    }
}

/// `shoal nodes`.
pub fn nodes(args: NodesArgs, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    let list = block_on(client.nodes())??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print_nodes(&list);
    }
    Ok(0)
}

/// `shoal token ...`.
pub fn token(args: TokenArgs, target: &Target) -> anyhow::Result<i32> {
    match args.command {
        TokenCommand::Create(a) => {
            let client = target.client();
            let req = TokenRequest {
                ttl_ms: a.ttl.as_millis().min(u128::from(u64::MAX)) as u64,
                role: Some(a.role.clone()),
            };
            let t = block_on(client.create_token(&req))??;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!(
                    "Join token created (works once, for {}).",
                    human_age(a.ttl.as_millis() as u64)
                );
                println!("On the new node, run:\n");
                println!("  {}\n", t.command);
                println!("(choose its NAME and the HOST:PORT it listens on; the token is shown only now)");
            }
            Ok(0)
        }
    }
}

/// `shoal node remove NAME`.
pub fn remove(name: &str, json: bool, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    let n = block_on(client.remove_node(name))??;
    if json {
        println!("{}", serde_json::to_string_pretty(&n)?);
    } else {
        println!("removed node {name}: it is no longer a member and its certificates are revoked");
    }
    Ok(0)
}

/// `shoal node cordon|uncordon NAME`.
pub fn cordon(name: &str, cordoned: bool, json: bool, target: &Target) -> anyhow::Result<i32> {
    let client = target.client();
    let n = block_on(client.cordon(name, cordoned))??;
    if json {
        println!("{}", serde_json::to_string_pretty(&n)?);
    } else if cordoned {
        println!("node {name} cordoned: no new processes will be placed on it");
    } else {
        println!("node {name} uncordoned");
    }
    Ok(0)
}
