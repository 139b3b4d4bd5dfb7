//! `shoal inspect`: what a module is and what it needs.

use anyhow::Context;
use clap::Args;
use shoal_runtime::{Node, NodeConfig};
use std::path::Path;

/// Arguments of `shoal inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The module: a .wasm file, or a name or sha256 from the registry.
    #[arg(value_name = "MODULE")]
    module: String,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Print the module's description.
pub fn inspect(args: InspectArgs, data_dir: &Path) -> anyhow::Result<i32> {
    let mut config = NodeConfig::new(data_dir);
    config.engine.processes_max = 1;
    let node = Node::new(config).context("cannot open the node's registry")?;
    let hash = super::module_from_arg(node.registry(), &args.module)?;
    let bytes = node.registry().get(&hash)?;
    let summary = shoal_prepare::validate(&bytes)
        .with_context(|| format!("{} is not a usable module", args.module))?;
    let compiled = node.is_compiled(&hash);
    // Loops are where `--preemptible` adds capture points (and costs).
    let loops = shoal_prepare::loop_count(&bytes)
        .with_context(|| format!("{} is not a usable module", args.module))?;
    let names: Vec<String> = node
        .registry()
        .names()?
        .into_iter()
        .filter(|(_, h)| *h == hash)
        .map(|(n, _)| n)
        .collect();
    if args.json {
        let value = serde_json::json!({
            "hash": hash.to_string(),
            "size_bytes": bytes.len(),
            "names": names,
            "abi_version": summary.abi_version,
            "imports": summary.imports.iter().map(|i| serde_json::json!({"module": i.module, "name": i.name, "type": i.ty})).collect::<Vec<_>>(),
            "exports": summary.exports.iter().map(|e| serde_json::json!({"name": e.name, "kind": format!("{:?}", e.kind).to_lowercase()})).collect::<Vec<_>>(),
            "compiled_cached": compiled,
            "loops": loops,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!("module    {}", args.module);
    println!("hash      {hash}");
    println!("size      {} bytes", bytes.len());
    if !names.is_empty() {
        println!("names     {}", names.join(", "));
    }
    match summary.abi_version {
        Some(v) => println!("abi       shoal_v{v}"),
        None => println!("abi       none (plain WASI program)"),
    }
    println!(
        "prepared  {}",
        if compiled {
            "yes (compiled artifact cached)"
        } else {
            "no (prepared and compiled on first run)"
        }
    );
    println!(
        "loops     {loops}{}",
        if loops > 0 {
            " (capture points when run with --preemptible)"
        } else {
            ""
        }
    );
    println!("imports   {}", summary.imports.len());
    for i in &summary.imports {
        println!("  {}.{}  {}", i.module, i.name, i.ty);
    }
    println!("exports   {}", summary.exports.len());
    for e in &summary.exports {
        println!("  {}  {}", e.name, format!("{:?}", e.kind).to_lowercase());
    }
    Ok(0)
}
