//! `paydvm init [--dir DIR]`: a commented `paydvm.toml`, a starter `policy.toml`, a new
//! `paydvm.key` and a new `paydvm-nutzap.key` (NIP-61 P2PK receiving key), both mode 0600.
//! Never overwrites; prints the public keys, never the secrets.

use std::fmt::Write;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nostr_sdk::{Keys, ToBech32};

use super::{output, EXIT_OK};
use crate::config::{create_key_file, Secret, CONFIG_TEMPLATE};

const POLICY_TEMPLATE: &str = include_str!("../../policies/examples/default.toml");

const CONFIG_FILE: &str = "paydvm.toml";
const POLICY_FILE: &str = "policy.toml";
const KEY_FILE: &str = "paydvm.key";
const NUTZAP_KEY_FILE: &str = "paydvm-nutzap.key";

pub fn run(dir: &Path) -> anyhow::Result<u8> {
    let paths = [CONFIG_FILE, POLICY_FILE, KEY_FILE, NUTZAP_KEY_FILE].map(|name| dir.join(name));
    // Check all first, so a refusal leaves nothing half-initialised.
    let existing: Vec<String> = paths
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "refusing to overwrite {}; nothing was written (choose another --dir, or move them away)",
            existing.join(", ")
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let mut created = Vec::new();
    let keys = match create_files(&paths, &mut created) {
        Ok(keys) => keys,
        Err(e) => {
            // Best effort: the error that brought us here is the one worth reporting.
            for path in created {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    let npub = keys.expose().public_key().to_bech32()?;
    output::print(&render_summary(dir, &npub))?;
    Ok(EXIT_OK)
}

/// Creates the three files, recording each one made so a failure can undo them.
fn create_files<'a>(
    [config, policy, key, nutzap_key]: &'a [PathBuf; 4],
    created: &mut Vec<&'a PathBuf>,
) -> anyhow::Result<Secret<Keys>> {
    write_new(config, CONFIG_TEMPLATE)?;
    created.push(config);
    write_new(policy, POLICY_TEMPLATE)?;
    created.push(policy);
    let keys = create_key_file(key)?;
    created.push(key);
    // A separate key: NIP-61 forbids locking ecash to the node's Nostr key.
    create_key_file(nutzap_key)?;
    Ok(keys)
}

/// Writes a file that must not exist yet; `create_new` makes a race lose instead of overwrite.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn render_summary(dir: &Path, npub: &str) -> String {
    let at = |name: &str| dir.join(name).display().to_string();
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "Created a new paydvm node in {}:", dir.display());
    let _ = writeln!(
        s,
        "  {:<24} node config: relays, offers, paths",
        at(CONFIG_FILE)
    );
    let _ = writeln!(s, "  {:<24} prices and payment rules", at(POLICY_FILE));
    let _ = writeln!(
        s,
        "  {:<24} the node's secret key (mode 0600)",
        at(KEY_FILE)
    );
    let _ = writeln!(
        s,
        "  {:<24} the key NutZaps are locked to (mode 0600)",
        at(NUTZAP_KEY_FILE)
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Node public key: {npub}");
    let _ = writeln!(s);
    let _ = writeln!(s, "Next steps:");
    let _ = writeln!(
        s,
        "  1. Edit {}: [node] name and about, [relays] urls.",
        at(CONFIG_FILE)
    );
    let _ = writeln!(
        s,
        "  2. Review the prices in {} (docs/configuration-policies.md).",
        at(POLICY_FILE)
    );
    let _ = writeln!(
        s,
        "  3. Back up {} and {} and keep them private: whoever has them can act as this node \
         or spend its ecash.",
        at(KEY_FILE),
        at(NUTZAP_KEY_FILE)
    );
    let _ = writeln!(
        s,
        "  4. Give it a way to be paid (kind 5050 costs 10 sat): a [lightning] wallet, a lud16 \
         for zaps or a trusted mint; `paydvm check-config --config {}` lists what is missing. \
         Then remove `config_problems = \"warn\"` so such a problem stops the start.",
        at(CONFIG_FILE)
    );
    let _ = writeln!(
        s,
        "  5. Start the node: paydvm run --config {}",
        at(CONFIG_FILE)
    );
    s
}
