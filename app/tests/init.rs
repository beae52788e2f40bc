//! `paydvm init` runs as the real binary in a temporary directory; the result must load with
//! `Config::load` and the secret key must never appear in the output.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use nostr_sdk::{FromBech32, SecretKey, ToBech32};
use paydvm::config::Config;

const FILES: [&str; 4] = [
    "paydvm.toml",
    "policy.toml",
    "paydvm.key",
    "paydvm-nutzap.key",
];

fn init(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .args(["init", "--dir"])
        .arg(dir)
        .output()
        .expect("run paydvm")
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn init_creates_config_policy_and_a_private_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let out = init(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    for name in FILES {
        assert!(dir.join(name).is_file(), "{name} missing");
    }
    for key in ["paydvm.key", "paydvm-nutzap.key"] {
        let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let config = fs::read_to_string(dir.join("paydvm.toml")).unwrap();
    assert!(
        config.lines().filter(|l| l.starts_with('#')).count() > 20,
        "not commented"
    );
    assert_eq!(
        fs::read_to_string(dir.join("policy.toml")).unwrap(),
        include_str!("../../policies/examples/default.toml")
    );
}

#[test]
fn init_output_loads_with_config_load() {
    let tmp = tempfile::tempdir().unwrap();
    let out = init(tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    let config = Config::load(tmp.path().join("paydvm.toml")).unwrap();
    assert_eq!(config.node.ledger, tmp.path().join("paydvm.db"));
    assert_eq!(config.offers.len(), 1);
    assert_eq!(config.offers[0].kind, 5050);
    assert!(config.policy.pricing().is_offered(5050));
    let npub = config.public_key().to_bech32().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&npub));
    // NIP-61: the NutZap key is its own key, never the identity key.
    let p2pk = config.p2pk_key.as_ref().expect("[cashu] key loaded");
    assert_ne!(p2pk.expose().public_key(), config.public_key());
}

/// The "no secret in output" test: the key file's secret, in any spelling, is not printed.
#[test]
fn init_prints_the_npub_and_never_the_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let out = init(tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    let printed = all_output(&out);

    let nsec = fs::read_to_string(tmp.path().join("paydvm.key")).unwrap();
    let nsec = nsec.trim();
    assert!(nsec.starts_with("nsec1"), "key file is not an nsec");
    let secret = SecretKey::from_bech32(nsec).unwrap();
    let hex = secret.to_secret_hex();
    assert!(!printed.contains(nsec), "the nsec was printed");
    assert!(!printed.contains(&hex), "the hex secret was printed");
    assert!(
        !printed.to_lowercase().contains("nsec1"),
        "something like an nsec was printed"
    );

    let npub = nostr_sdk::Keys::new(secret)
        .public_key()
        .to_bech32()
        .unwrap();
    assert!(printed.contains(&npub), "npub not printed:\n{printed}");

    let nutzap = fs::read_to_string(tmp.path().join("paydvm-nutzap.key")).unwrap();
    let nutzap = SecretKey::from_bech32(nutzap.trim()).unwrap();
    assert!(
        !printed.contains(&nutzap.to_secret_hex()),
        "the NutZap secret was printed"
    );
}

#[test]
fn second_init_refuses_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(init(tmp.path()).status.code(), Some(0));
    let before = snapshot(tmp.path());
    let out = init(tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for name in FILES {
        assert!(err.contains(name), "{name} not named in: {err}");
    }
    assert!(out.stdout.is_empty());
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn init_refuses_if_any_one_file_exists_and_writes_nothing() {
    for existing in FILES {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(existing), "mine\n").unwrap();
        let out = init(tmp.path());
        assert_eq!(
            out.status.code(),
            Some(1),
            "{existing}: {}",
            all_output(&out)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(existing));
        assert_eq!(
            snapshot(tmp.path()),
            vec![(existing.to_owned(), b"mine\n".to_vec())],
            "{existing}: other files were written"
        );
    }
}
