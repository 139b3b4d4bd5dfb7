//! Cluster verbs: `shoal nodes`, `shoal token create`, and the bodies of
//! `shoal node remove|cordon|uncordon`.

use super::remote::{block_on, human_age, human_bytes, Target};
use clap::{Args, Subcommand};
use shoal_api::cluster::RaftRole;
use shoal_daemon::cluster_api::NodeSummary;

/// Arguments of `shoal nodes`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal nodes
  shoal nodes --json | jq '.[] | select(.healthy | not) | .name'
  shoal nodes --json | jq '.[] | select(.raft) | .raft'   (what the answering node knows)

HEALTH is the cluster's one verdict: the Raft leader declares a node dead
after hearing nothing from it for the failure detector's window (5s by
default, `node start --dead-after`) and alive when it hears from it again.
LEADER is shown only for a leader the answering node heard from recently;
the first line says what that node knows (term, role, last contact), so a
node cut off by a partition says so instead of claiming a leader.")]
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

/// The answering node's own knowledge, in one line.
fn view_line(nodes: &[NodeSummary]) -> Option<String> {
    let me = nodes.iter().find(|n| n.raft.is_some())?;
    let v = me.raft.as_ref()?;
    let name_of = |id: u64| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| format!("node {id}"), |n| n.name.clone())
    };
    let role = match v.role {
        RaftRole::Leader => "leader",
        RaftRole::Follower => "follower",
        RaftRole::Candidate => "candidate",
        RaftRole::Learner => "learner",
        RaftRole::Stopped => "stopped",
    };
    let contact = v.leader_contact_ms.map_or_else(
        || "never".to_string(),
        |ms| format!("{} ago", human_age(ms)),
    );
    let about_leader = match (v.leader, v.role) {
        (None, _) => "knows no leader (an election is in progress or it is cut off)".to_string(),
        (Some(l), RaftRole::Leader) if l == v.id && v.leader_current => {
            format!("leads; a quorum acknowledged it {contact}")
        }
        (Some(l), _) if l == v.id => format!(
            "was leader, but no quorum has acknowledged it for {contact}: it is cut off, and this view may be stale"
        ),
        (Some(l), _) if v.leader_current => {
            format!("follows {}, heard from it {contact}", name_of(l))
        }
        (Some(l), _) => format!(
            "last knew {} as leader, heard from it {contact}: it is cut off, and this view may be stale",
            name_of(l)
        ),
    };
    Some(format!(
        "seen from {} (term {}, {role}): {about_leader}",
        me.name, v.term
    ))
}

fn print_nodes(nodes: &[NodeSummary]) {
    if let Some(line) = view_line(nodes) {
        println!("{line}");
    }
    println!(
        "{:<4} {:<16} {:<22} {:<9} {:<12} {:>6} {:>10} {:>6} FLAGS",
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
        } else if let Some(d) = &n.dead {
            format!("dead ({} silent)", human_age(d.silent_ms))
        } else {
            "up".to_string()
        };
        println!(
            "{:<4} {:<16} {:<22} {:<9} {:<12} {:>6} {:>10} {:>6.2} {}",
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
            let role: shoal_pki::Role = a
                .role
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown role `{}` (node, client, admin)", a.role))?;
            let signer = target.signer("creating a join token")?;
            let client = target.client();
            let ttl_ms = a.ttl.as_millis().min(u128::from(u64::MAX)) as u64;
            let t = block_on(client.create_token(role, ttl_ms, &signer))??;
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
    let signer = target.signer("removing a node")?;
    let client = target.client();
    let n = block_on(client.remove_node(name, &signer))??;
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
