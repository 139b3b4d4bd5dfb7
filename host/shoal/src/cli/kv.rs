//! `shoal kv get|set|ls|del`: the replicated key-value store guests use,
//! from the command line; and `shoal locks`: the cluster's locks.

use super::remote::{block_on, Target};
use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_api::kv::{
    parse_key_text, parse_owner, show_key, KvEntryView, KvKeyView, LockSummary, BUCKET_BYTES_MAX,
    KEY_BYTES_MAX, VALUE_BYTES_MAX,
};
use shoal_pki::Owner;
use std::io::{Read, Write};
use std::path::PathBuf;

/// What every `kv` help ends with: whose buckets, how keys and values are
/// written, how reads read.
macro_rules! kv_notes {
    () => {
        "Buckets belong to an owner: the identity (certificate) that deployed the
processes using them. Without --owner a command acts on the buckets of the
identity it runs as (--creds, or the local socket's operator: admin
`local-socket`). An admin may name any owner with --owner ROLE:ID
(client:alice, admin:ops, node:n1) or --owner cluster (processes nobody
deployed through the API, e.g. those a test or a node started itself); a
client naming another owner is refused (403, not_owner).

Keys are printed as text when they are UTF-8 without control characters
and do not start with 0x; otherwise as 0x followed by their bytes in hex
(0xff00). A KEY or PREFIX argument is read the same way: 0x followed by hex
digits is those bytes, anything else is its text (so a key `ls` prints can
be given back as is; a text key starting with 0x is written in hex).
Values are printed as text when they are UTF-8 without control characters
(newlines and tabs allowed), else as 0x and hex; --json gives both the
text (null if not UTF-8) and the exact bytes in base64, and `get -o FILE`
writes the exact bytes.

Reads are linearizable: they see every write that completed before they
began, on any node. --stale answers from the asked node's applied state
(cheaper; may miss a write completed elsewhere a moment ago)."
    };
}

/// Arguments of `shoal kv`.
#[derive(Args, Debug)]
#[command(after_help = concat!("Examples:
  shoal kv set config mode fast
  shoal kv get config mode
  shoal kv ls config
  shoal kv del config mode --owner client:alice      (admin only)

", kv_notes!()))]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Print the value of a key.
    #[command(after_help = concat!("Examples:
  shoal kv get config mode                  prints the value
  shoal kv get config mode --json           {\"owner\":\"admin:ops\",\"bucket\":\"config\",
      \"key\":\"mode\",\"key_base64\":\"bW9kZQ==\",\"value\":\"fast\",\"value_base64\":\"ZmFzdA==\",
      \"version\":12}
  shoal kv get blobs 0x00ff -o blob.bin     the exact bytes, into a file
  shoal kv get config mode --owner client:alice --stale

A missing key is an error (exit 1).

", kv_notes!()))]
    Get(GetArgs),
    /// Set a key to a value (through Raft, on behalf of your certificate).
    #[command(after_help = concat!("Examples:
  shoal kv set config mode fast
  shoal kv set blobs logo --file logo.png
  printf 'a\\0b' | shoal kv set blobs raw --file -
  shoal kv set config mode slow --owner client:alice       (admin only)

Prints the entry's new version (a counter of all key-value writes of the
cluster, so it only grows). Bounds: bucket names 1-64 bytes, keys 1-256
bytes, values up to 1 MiB; each owner holds at most 100,000 keys and 64 MiB.

", kv_notes!()))]
    Set(SetArgs),
    /// List the keys of a bucket (all of them, page by page), one per line.
    #[command(after_help = concat!("Examples:
  shoal kv ls config
  shoal kv ls users user/              the keys starting with user/
  shoal kv ls users --json             [{\"key\":\"user/1\",\"key_base64\":\"dXNlci8x\"}, ...]

Keys come in byte order. Each page of up to 1000 keys is read on its own:
a key written or deleted while the listing runs may or may not be listed.

", kv_notes!()))]
    Ls(LsArgs),
    /// Delete a key (through Raft, on behalf of your certificate).
    #[command(after_help = concat!("Examples:
  shoal kv del config mode
  shoal kv del config mode --json      {..., \"existed\": true}

Deleting a key that is not there is not an error: it says so (exit 0).

", kv_notes!()))]
    Del(DelArgs),
}

/// Whose buckets.
#[derive(Args, Debug)]
struct OwnerArg {
    /// Act on the buckets of this owner instead of your own (admin only):
    /// ROLE:ID (client:alice, admin:ops, node:n1), or `cluster`.
    #[arg(long, value_name = "ROLE:ID", value_parser = owner_arg)]
    owner: Option<Owner>,
}

#[derive(Args, Debug)]
struct GetArgs {
    /// The bucket.
    #[arg(value_parser = bucket_arg)]
    bucket: String,
    /// The key: text, or 0x followed by hex digits for any bytes.
    // Not `key`: that is the global --key (our private key).
    #[arg(value_name = "KEY", value_parser = key_arg)]
    entry_key: KeyBytes,
    #[command(flatten)]
    owner: OwnerArg,
    /// Read the asked node's applied state instead of a linearizable read.
    #[arg(long)]
    stale: bool,
    /// Write the value's exact bytes to FILE (`-`: stdout) instead of
    /// printing it.
    #[arg(short, long, value_name = "FILE", conflicts_with = "json")]
    output: Option<PathBuf>,
    /// Print JSON: {owner, bucket, key, key_base64, value, value_base64,
    /// version} (key and value are null when not UTF-8).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SetArgs {
    /// The bucket.
    #[arg(value_parser = bucket_arg)]
    bucket: String,
    /// The key: text, or 0x followed by hex digits for any bytes.
    // Not `key`: that is the global --key (our private key).
    #[arg(value_name = "KEY", value_parser = key_arg)]
    entry_key: KeyBytes,
    /// The value, as text (taken as is: no 0x decoding). For bytes, use
    /// --file.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    value: Option<String>,
    /// Read the value's bytes from FILE (`-`: stdin) instead.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    #[command(flatten)]
    owner: OwnerArg,
    /// Print JSON: {owner, bucket, key, key_base64, version}.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// The bucket.
    #[arg(value_parser = bucket_arg)]
    bucket: String,
    /// Only the keys starting with this (text, or 0x and hex digits).
    #[arg(value_parser = prefix_arg)]
    prefix: Option<KeyBytes>,
    #[command(flatten)]
    owner: OwnerArg,
    /// Read the asked node's applied state instead of linearizable reads.
    #[arg(long)]
    stale: bool,
    /// Print JSON: a list of {key, key_base64} (key null when not UTF-8).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct DelArgs {
    /// The bucket.
    #[arg(value_parser = bucket_arg)]
    bucket: String,
    /// The key: text, or 0x followed by hex digits for any bytes.
    // Not `key`: that is the global --key (our private key).
    #[arg(value_name = "KEY", value_parser = key_arg)]
    entry_key: KeyBytes,
    #[command(flatten)]
    owner: OwnerArg,
    /// Print JSON: {owner, bucket, key, key_base64, existed}.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shoal locks`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  shoal locks
  shoal locks --json | jq '.[] | select(.waiters | length > 0)'

Columns: OWNER (whose namespace: ROLE:ID, or `cluster` for processes nobody
deployed through the API), NAME, HOLDER (pid), NODE (where the holder runs),
TOKEN (the holder's fencing token: fenced writes carry it, and a later
holder always has a larger one), WAITERS (pids, first come first).

A client sees the locks of its own processes; an admin sees all. A lock is
released when its holder unlocks it, ends, is restored over, or when its
node has been declared dead for the lock delay. The listing is a
linearizable read; --stale answers from the asked node's applied state.")]
pub struct LocksArgs {
    /// Read the asked node's applied state instead of a linearizable read.
    #[arg(long)]
    stale: bool,
    /// Print JSON: a list of {owner, name, holder_pid, holder_node, token,
    /// waiters}.
    #[arg(long)]
    json: bool,
}

/// Key bytes parsed from an argument (a newtype, so clap does not take a
/// `Vec<u8>` for a list of arguments).
#[derive(Debug, Clone)]
struct KeyBytes(Vec<u8>);

fn owner_arg(text: &str) -> Result<Owner, String> {
    parse_owner(text).map_err(|e| e.to_string())
}

fn bucket_arg(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > BUCKET_BYTES_MAX {
        return Err(format!(
            "a bucket name is 1 to {BUCKET_BYTES_MAX} bytes, this one is {}",
            text.len()
        ));
    }
    Ok(text.to_string())
}

fn key_arg(text: &str) -> Result<KeyBytes, String> {
    let key = parse_key_text(text)?;
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "a key is 1 to {KEY_BYTES_MAX} bytes, this one is {}",
            key.len()
        ));
    }
    Ok(KeyBytes(key))
}

fn prefix_arg(text: &str) -> Result<KeyBytes, String> {
    let prefix = parse_key_text(text)?;
    if prefix.len() > KEY_BYTES_MAX {
        return Err(format!(
            "a key is at most {KEY_BYTES_MAX} bytes, this prefix is {}",
            prefix.len()
        ));
    }
    Ok(KeyBytes(prefix))
}

/// A value for people: text if it is UTF-8 without control characters
/// other than newlines and tabs, else `0x` and hex.
fn show_value(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(t) if !t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => t.to_string(),
        _ => format!("0x{}", shoal_api::kv::hex(value)),
    }
}

/// Text from a guest for a table cell: control characters escaped.
fn cell(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Run `shoal kv ...`.
pub fn kv(args: KvArgs, target: &Target) -> anyhow::Result<i32> {
    match args.command {
        KvCommand::Get(a) => get(a, target),
        KvCommand::Set(a) => set(a, target),
        KvCommand::Ls(a) => ls(a, target),
        KvCommand::Del(a) => del(a, target),
    }
}

fn get(args: GetArgs, target: &Target) -> anyhow::Result<i32> {
    let entry: KvEntryView = block_on(target.client().kv_get(
        args.owner.owner.as_ref(),
        &args.bucket,
        &args.entry_key.0,
        args.stale,
    ))??;
    if args.json {
        println!("{}", serde_json::to_string(&entry)?);
        return Ok(0);
    }
    let value = entry
        .value_bytes()
        .context("the node's answer holds no valid value")?;
    match &args.output {
        Some(path) if path.as_os_str() == "-" => {
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            out.flush()?;
        }
        Some(path) => std::fs::write(path, &value)
            .with_context(|| format!("cannot write the value to {}", path.display()))?,
        None => println!("{}", show_value(&value)),
    }
    Ok(0)
}

fn set(args: SetArgs, target: &Target) -> anyhow::Result<i32> {
    let value = match (&args.value, &args.file) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(path)) => read_value(path)?,
        // clap lets exactly one of the two through.
        _ => anyhow::bail!("give the value as text, or --file PATH, not both"),
    };
    if value.len() > VALUE_BYTES_MAX {
        anyhow::bail!(
            "the value is {} bytes: values are at most {VALUE_BYTES_MAX} bytes (1 MiB)",
            value.len()
        );
    }
    let written = block_on(target.client().kv_set(
        args.owner.owner.as_ref(),
        &args.bucket,
        &args.entry_key.0,
        value,
    ))??;
    if args.json {
        println!("{}", serde_json::to_string(&written)?);
    } else {
        println!(
            "set {} in bucket {} of {} (version {})",
            show_key(&args.entry_key.0),
            cell(&written.bucket),
            written.owner,
            written.version
        );
    }
    Ok(0)
}

/// The bytes of `--file PATH` (`-`: stdin), at most one byte over the
/// bound (so a larger file is refused without reading it all).
fn read_value(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let limit = VALUE_BYTES_MAX as u64 + 1;
    let mut value = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut value)
            .context("cannot read the value from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut value))
            .with_context(|| format!("cannot read the value from {}", path.display()))?;
    }
    Ok(value)
}

fn ls(args: LsArgs, target: &Target) -> anyhow::Result<i32> {
    let prefix = args.prefix.map(|p| p.0).unwrap_or_default();
    let keys: Vec<KvKeyView> = block_on(target.client().kv_keys(
        args.owner.owner.as_ref(),
        &args.bucket,
        &prefix,
        args.stale,
    ))??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    for k in &keys {
        let bytes = k
            .bytes()
            .context("the node's answer holds a key that is not valid base64")?;
        writeln!(out, "{}", show_key(&bytes))?;
    }
    Ok(0)
}

fn del(args: DelArgs, target: &Target) -> anyhow::Result<i32> {
    let deleted = block_on(target.client().kv_delete(
        args.owner.owner.as_ref(),
        &args.bucket,
        &args.entry_key.0,
    ))??;
    if args.json {
        println!("{}", serde_json::to_string(&deleted)?);
    } else if deleted.existed {
        println!(
            "deleted {} from bucket {} of {}",
            show_key(&args.entry_key.0),
            cell(&deleted.bucket),
            deleted.owner
        );
    } else {
        println!(
            "{} was not in bucket {} of {}: nothing to delete",
            show_key(&args.entry_key.0),
            cell(&deleted.bucket),
            deleted.owner
        );
    }
    Ok(0)
}

/// Run `shoal locks`.
pub fn locks(args: LocksArgs, target: &Target) -> anyhow::Result<i32> {
    let list: Vec<LockSummary> = block_on(target.client().locks(args.stale))??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    let dash = || "-".to_string();
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|l| {
            let waiters: Vec<String> = l.waiters.iter().map(|p| p.to_string()).collect();
            [
                cell(&l.owner),
                cell(&l.name),
                l.holder_pid.map(|p| p.to_string()).unwrap_or_else(dash),
                l.holder_node.as_deref().map(cell).unwrap_or_else(dash),
                l.token.map(|t| t.to_string()).unwrap_or_else(dash),
                if waiters.is_empty() {
                    dash()
                } else {
                    waiters.join(",")
                },
            ]
        })
        .collect();
    super::term::print_table(
        ["OWNER", "NAME", "HOLDER", "NODE", "TOKEN", "WAITERS"],
        &rows,
    )?;
    Ok(0)
}
