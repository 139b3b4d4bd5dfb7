//! `shoal push` and `shoal ls`: the local registry.

use anyhow::Context;
use clap::Args;
use shoal_registry::Registry;
use std::path::{Path, PathBuf};

/// Arguments of `shoal push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The .wasm file to store.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Also record it under this name (e.g. `app:v1`), replacing any
    /// module that had the name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `shoal ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn open(data_dir: &Path) -> anyhow::Result<Registry> {
    Registry::open(data_dir.join("registry"))
        .with_context(|| format!("cannot open the registry in {}", data_dir.display()))
}

/// Store a module; validates it first so the registry only holds modules.
pub fn push(args: PushArgs, data_dir: &Path) -> anyhow::Result<i32> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let bytes = super::wasm_or_wat(&args.file, bytes)?;
    shoal_prepare::validate(&bytes)
        .with_context(|| format!("{} is not a usable module", args.file.display()))?;
    let registry = open(data_dir)?;
    let hash = registry.put(&bytes)?;
    if let Some(name) = &args.name {
        registry.set_name(name, &hash)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"hash": hash.to_string(), "name": args.name, "size_bytes": bytes.len()})
        );
    } else {
        match &args.name {
            Some(n) => println!("{hash} {n}"),
            None => println!("{hash}"),
        }
    }
    Ok(0)
}

/// List names and blobs.
pub fn ls(args: LsArgs, data_dir: &Path) -> anyhow::Result<i32> {
    let registry = open(data_dir)?;
    let names = registry.names()?;
    let blobs = registry.list_blobs()?;
    if args.json {
        let value = serde_json::json!({
            "names": names.iter().map(|(n, h)| serde_json::json!({"name": n, "hash": h.to_string()})).collect::<Vec<_>>(),
            "blobs": blobs.iter().map(|b| serde_json::json!({"hash": b.hash.to_string(), "size_bytes": b.size_bytes})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!("NAME                             HASH");
    for (n, h) in &names {
        println!("{n:<32} {}", h.short());
    }
    println!();
    println!("BLOB                                                                     SIZE");
    for b in &blobs {
        println!("{} {:>12}", b.hash, b.size_bytes);
    }
    Ok(0)
}
