//! Config validation: defaults, every rejected field, and what `Config::load` adds.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use nostr_sdk::{Keys, ToBech32};

use super::*;

const NODE: &str = r#"[node]
name = "n"
ledger = "paydvm.db"
policy = "policy.toml"
key_file = "paydvm.key"
"#;
const RELAYS: &str = "[relays]\nurls = [\"ws://127.0.0.1:7777\"]\n";
const OFFER: &str = "[[offer]]\nkind = 5050\nexecutor = { builtin = \"text\" }\n";
const POLICY: &str = "[[pricing.kind]]\nkind = 5050\nmode = \"free\"\n";

fn toml(node: &str, relays: &str, offers: &str) -> String {
    format!("{node}\n{relays}\n{offers}")
}

fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
    ConfigFile::parse(text, "test.toml", Path::new("/etc/paydvm"))
}

#[test]
fn minimal_config_gets_defaults() {
    let file = parse(&toml(NODE, RELAYS, OFFER)).unwrap();
    assert_eq!(file.node.name, "n");
    assert_eq!(file.node.about, None);
    assert_eq!(file.node.picture, None);
    assert_eq!(file.node.lud16, None);
    assert!(!file.node.lnurl_http_loopback);
    assert!(file.node.lnurl_allow_hosts.entries().is_empty());
    assert_eq!(file.node.ledger, Path::new("/etc/paydvm/paydvm.db"));
    assert_eq!(file.node.policy, Path::new("/etc/paydvm/policy.toml"));
    assert_eq!(
        file.node.key,
        KeySource::File("/etc/paydvm/paydvm.key".into())
    );
    assert_eq!(file.relays.urls.len(), 1);
    assert_eq!(file.relays.publish_cap, DEFAULT_PUBLISH_CAP);
    assert_eq!(file.relays.customer, CustomerRelays::Any);
    let offer = &file.offers[0];
    assert_eq!(offer.kind, 5050);
    assert_eq!(offer.executor, Executor::Builtin(Builtin::Text));
    assert_eq!(offer.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS));
    assert_eq!(offer.max_output_bytes, DEFAULT_MAX_OUTPUT_BYTES);
    assert_eq!(offer.max_concurrency, DEFAULT_MAX_CONCURRENCY);
    assert_eq!(
        (offer.name.as_deref(), offer.about.as_deref()),
        (None, None)
    );
}

#[test]
fn every_field_is_read() {
    let node = r#"[node]
name = "Node"
about = "About"
picture = "https://example.com/a.png"
ledger = "/var/lib/paydvm/ledger.db"
policy = "conf/policy.toml"
key_env = "PAYDVM_NSEC"
lud16 = "dvm@127.0.0.1:9000"
lnurl_http_loopback = true
lnurl_allow_hosts = ["Wallet.LAN", "http://10.1.2.3:8081", "[fd00::1]:443"]
"#;
    let relays = r#"[relays]
urls = ["wss://relay.example.com", "ws://127.0.0.1:7777"]
publish_cap = 3
allow_customer_relays = true
customer_relay_allowlist = ["wss://other.example.com"]
"#;
    let offers = r#"[[offer]]
kind = 5002
executor = { command = "/usr/bin/translate", args = ["--to", "en"], env = { API_TOKEN = "tok-123" } }
timeout_secs = 120
max_output_bytes = 1000
max_concurrency = 2
name = "Translate"
about = "Any language to English"

[[offer]]
kind = 5001
[offer.executor]
http = "http://127.0.0.1:8080/run"
"#;
    let file = parse(&toml(node, relays, offers)).unwrap();
    assert_eq!(file.node.about.as_deref(), Some("About"));
    assert_eq!(
        file.node.picture.as_ref().unwrap().as_str(),
        "https://example.com/a.png"
    );
    assert_eq!(file.node.ledger, Path::new("/var/lib/paydvm/ledger.db"));
    assert_eq!(file.node.policy, Path::new("/etc/paydvm/conf/policy.toml"));
    assert_eq!(file.node.key, KeySource::Env("PAYDVM_NSEC".into()));
    assert_eq!(
        file.node.lud16.as_ref().unwrap().to_string(),
        "dvm@127.0.0.1:9000"
    );
    assert!(file.node.lnurl_http_loopback);
    let allowed: Vec<String> = file
        .node
        .lnurl_allow_hosts
        .entries()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        allowed,
        ["wallet.lan", "http://10.1.2.3:8081", "[fd00::1]:443"]
    );
    let policy = file.node.lnurl_host_policy();
    assert!(policy.loopback_allowed());
    assert_eq!(policy.allow_list(), &file.node.lnurl_allow_hosts);
    assert_eq!(file.relays.urls.len(), 2);
    assert_eq!(file.relays.publish_cap, 3);
    let other = nostr_sdk::RelayUrl::parse("wss://other.example.com").unwrap();
    let stranger = nostr_sdk::RelayUrl::parse("wss://stranger.example.com").unwrap();
    assert!(file.relays.customer.allows(&other));
    assert!(!file.relays.customer.allows(&stranger));
    let Executor::Command { program, args, env } = &file.offers[0].executor else {
        panic!("not a command: {:?}", file.offers[0].executor);
    };
    assert_eq!(program, Path::new("/usr/bin/translate"));
    assert_eq!(args, &["--to", "en"]);
    assert_eq!(env["API_TOKEN"].expose(), "tok-123");
    assert_eq!(file.offers[0].timeout, Duration::from_secs(120));
    assert_eq!(file.offers[0].max_output_bytes, 1000);
    assert_eq!(file.offers[0].max_concurrency, 2);
    assert_eq!(file.offers[0].name.as_deref(), Some("Translate"));
    let Executor::Http { url } = &file.offers[1].executor else {
        panic!("not http");
    };
    assert_eq!(url.expose().as_str(), "http://127.0.0.1:8080/run");
    // Executor env values and URLs are secrets too.
    let shown = format!("{file:?}");
    assert!(
        !shown.contains("tok-123") && !shown.contains("8080"),
        "{shown}"
    );
}

#[test]
fn offers_run_by_any_node_need_a_database_and_take_a_lease() {
    let pg = NODE.replace(
        "ledger = \"paydvm.db\"",
        "ledger = \"postgres://paydvm@db.internal/paydvm\"\nstate_dir = \"state\"",
    );
    let shared = format!("{OFFER}execute_on = \"any_node\"\n");
    let file = parse(&toml(&pg, RELAYS, &shared)).unwrap();
    let lease = Duration::from_secs(DEFAULT_LEASE_SECS);
    assert_eq!(file.offers[0].execute_on, ExecuteOn::AnyNode { lease });
    let file = parse(&toml(&pg, RELAYS, &format!("{shared}lease_secs = 3\n"))).unwrap();
    let lease = Duration::from_secs(3);
    assert_eq!(file.offers[0].execute_on, ExecuteOn::AnyNode { lease });
    assert_eq!(
        parse(&toml(&pg, RELAYS, OFFER)).unwrap().offers[0].execute_on,
        ExecuteOn::ThisNode
    );
    let refused = [
        (
            toml(NODE, RELAYS, &shared),
            "offer[0].execute_on",
            "needs a PostgreSQL ledger",
        ),
        (
            toml(&pg, RELAYS, &format!("{OFFER}execute_on = \"anywhere\"\n")),
            "offer[0].execute_on",
            "expected",
        ),
        (
            toml(&pg, RELAYS, &format!("{OFFER}lease_secs = 3\n")),
            "offer[0].lease_secs",
            "only allowed with execute_on",
        ),
        (
            toml(&pg, RELAYS, &format!("{shared}lease_secs = 0\n")),
            "offer[0].lease_secs",
            "",
        ),
    ];
    for (text, field, message) in refused {
        let err = parse(&text).expect_err(&text).to_string();
        assert!(err.contains(field) && err.contains(message), "{err}");
    }
}

#[test]
fn a_postgres_ledger_keeps_local_files_in_state_dir() {
    let node = NODE.replace(
        "ledger = \"paydvm.db\"",
        "ledger = \"postgres://paydvm:pw@db.internal/paydvm\"\nstate_dir = \"state\"",
    );
    let file = parse(&toml(&node, RELAYS, OFFER)).unwrap();
    assert_eq!(file.node.ledger.file(), None);
    assert_eq!(
        file.node.ledger.to_string(),
        "postgres://paydvm@db.internal/paydvm"
    );
    assert!(!format!("{:?}", file.node).contains(":pw@"));
    assert_eq!(
        file.node.local_base(),
        Path::new("/etc/paydvm/state/paydvm")
    );
    let file = parse(&toml(NODE, RELAYS, OFFER)).unwrap();
    assert_eq!(file.node.local_base(), Path::new("/etc/paydvm/paydvm.db"));
}

#[test]
fn an_allow_listed_private_lud16_is_accepted() {
    let node = format!(
        "{NODE}lud16 = \"dvm@wallet.lan:8080\"\nlnurl_allow_hosts = [\"http://wallet.lan:8080\"]\n"
    );
    let file = parse(&toml(&node, RELAYS, OFFER)).unwrap();
    let address = file.node.lud16.as_ref().unwrap();
    assert_eq!(
        file.node
            .lnurl_host_policy()
            .pay_url(address)
            .unwrap()
            .as_str(),
        "http://wallet.lan:8080/.well-known/lnurlp/dvm"
    );
    let node = format!("{NODE}lud16 = \"dvm@10.1.2.3\"\nlnurl_allow_hosts = [\"10.1.2.3\"]\n");
    assert!(parse(&toml(&node, RELAYS, OFFER)).is_ok());
}

#[test]
fn customer_relays_can_be_ignored() {
    let relays = format!("{RELAYS}allow_customer_relays = false\n");
    let file = parse(&toml(NODE, &relays, OFFER)).unwrap();
    assert_eq!(file.relays.customer, CustomerRelays::Ignored);
}

/// A relay a customer names is never on the node's own host or network, whatever form the
/// address is written in; loopback only when the operator says so; listed relays are the
/// operator's own choice.
#[test]
fn customer_relays_on_our_own_host_or_network_are_refused() {
    let relay = |u: &str| nostr_sdk::RelayUrl::parse(u).unwrap();
    let file = parse(&toml(NODE, RELAYS, OFFER)).unwrap();
    assert!(!file.relays.customer_loopback);
    let refused = [
        "ws://127.0.0.1:7777",
        "ws://127.1:7777",
        "ws://2130706433",
        "ws://0x7f.1",
        "ws://0.0.0.0:80",
        "ws://[::1]:7777",
        "ws://[::ffff:127.0.0.1]",
        "ws://10.1.2.3",
        "wss://192.168.0.1",
        "ws://169.254.169.254",
        "ws://100.64.0.1",
        "ws://[fd00::1]",
        "ws://localhost:7777",
        "ws://LOCALHOST.:7777",
        "ws://db.localhost",
    ];
    for url in refused {
        assert!(!file.relays.customer_may_use(&relay(url)), "{url}");
        assert!(!file.relays.customer_host_allowed(&relay(url)), "{url}");
    }
    for url in [
        "wss://relay.example.com",
        "wss://8.8.8.8",
        "wss://[2001:4860::1]",
    ] {
        assert!(file.relays.customer_may_use(&relay(url)), "{url}");
    }
    let loopback = format!("{RELAYS}customer_relay_loopback = true\n");
    let file = parse(&toml(NODE, &loopback, OFFER)).unwrap();
    for url in ["ws://127.0.0.1:7777", "ws://[::1]:1", "ws://localhost:1"] {
        assert!(file.relays.customer_may_use(&relay(url)), "{url}");
    }
    for url in ["ws://10.1.2.3", "ws://0.0.0.0:80", "ws://169.254.169.254"] {
        assert!(!file.relays.customer_may_use(&relay(url)), "{url}");
    }
    let listed = format!("{RELAYS}customer_relay_allowlist = [\"ws://10.1.2.3:7000\"]\n");
    let file = parse(&toml(NODE, &listed, OFFER)).unwrap();
    assert!(file.relays.customer_may_use(&relay("ws://10.1.2.3:7000")));
    assert!(!file.relays.customer_may_use(&relay("ws://10.1.2.4:7000")));
}

/// Each case replaces one section of a valid config; the error must name `field`.
#[test]
fn invalid_fields_are_named() {
    let node = |extra: &str, drop: &str| {
        let kept: String = NODE
            .lines()
            .filter(|l| drop.is_empty() || !l.starts_with(drop))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{kept}{extra}\n")
    };
    let relays = |body: &str| format!("[relays]\n{body}\n");
    let offer = |body: &str| format!("[[offer]]\n{body}\n");
    let text_offer = |extra: &str| {
        offer(&format!(
            "kind = 5050\nexecutor = {{ builtin = \"text\" }}\n{extra}"
        ))
    };
    let sixteen_plus_one: Vec<String> = (0..17)
        .map(|i| format!("\"ws://127.0.0.1:{}\"", 7000 + i))
        .collect();
    let many_urls = format!("urls = [{}]", sixteen_plus_one.join(", "));

    let cases: Vec<(String, &str, &str)> = vec![
        (toml(&node("", "name"), RELAYS, OFFER), "node.name", "is required"),
        (toml(&node("", "name").replace("[node]", "[node]\nname = \" \""), RELAYS, OFFER), "node.name", "must not be empty"),
        (toml(&node("picture = \"ftp://example.com/a.png\"", ""), RELAYS, OFFER), "node.picture", "http:// or https://"),
        (toml(&node("picture = \"not a url\"", ""), RELAYS, OFFER), "node.picture", "not a URL"),
        (toml(&node("", "ledger"), RELAYS, OFFER), "node.ledger", "is required"),
        (toml(&node("", "ledger").replace("[node]", "[node]\nledger = \"postgres://u@h/db\""), RELAYS, OFFER), "node.state_dir", "is required when node.ledger is a postgres:// URL"),
        (toml(&node("", "ledger").replace("[node]", "[node]\nledger = \"postgres://u@[bad/db\"\nstate_dir = \"s\""), RELAYS, OFFER), "node.ledger", "bad ledger URL"),
        (toml(&node("state_dir = \"state\"", ""), RELAYS, OFFER), "node.state_dir", "only for a postgres:// ledger"),
        (toml(&node("lud16 = \"Dvm\"", ""), RELAYS, OFFER), "node.lud16", "not a lightning address"),
        (toml(&node("lud16 = \"dvm@example.com\"\nlnurl_http_loopback = true", ""), RELAYS, OFFER), "node.lnurl_http_loopback", "loopback"),
        (toml(&node("lud16 = \"dvm@127.0.0.1:9000\"", ""), RELAYS, OFFER), "node.lud16", "127.0.0.1 is a loopback address"),
        (toml(&node("lud16 = \"dvm@10.1.2.3\"", ""), RELAYS, OFFER), "node.lud16", "list the host in node.lnurl_allow_hosts"),
        (toml(&node("lud16 = \"dvm@10.1.2.3\"\nlnurl_allow_hosts = [\"10.1.2.3:8443\"]", ""), RELAYS, OFFER), "node.lud16", "private address"),
        (toml(&node("lnurl_allow_hosts = []", ""), RELAYS, OFFER), "node.lnurl_allow_hosts", "1 to 64"),
        (toml(&node("lnurl_allow_hosts = [\"wallet.lan/pay\"]", ""), RELAYS, OFFER), "node.lnurl_allow_hosts[0]", "no path"),
        (toml(&node("lnurl_allow_hosts = [\"a.lan\", \"https://wallet.lan\"]", ""), RELAYS, OFFER), "node.lnurl_allow_hosts[1]", "may only start with http://"),
        (toml(&node("lnurl_allow_hosts = [\"wallet.lan:0\"]", ""), RELAYS, OFFER), "node.lnurl_allow_hosts[0]", "1..=65535"),
        (toml(&node("lnurl_allow_hosts = [\"0.0.0.0\"]", ""), RELAYS, OFFER), "node.lnurl_allow_hosts[0]", "never a server"),
        (toml(&node("lnurl_allow_hosts = [\"Wallet.lan\", \"wallet.LAN\"]", ""), RELAYS, OFFER), "node.lnurl_allow_hosts[1]", "listed twice (first at [0])"),
        (toml(&node("policy = \"~/policy.toml\"", "policy"), RELAYS, OFFER), "node.policy", "not expanded"),
        (toml(&node("key_env = \"PAYDVM_NSEC\"", ""), RELAYS, OFFER), "node.key_file", "not both"),
        (toml(&node("", "key_file"), RELAYS, OFFER), "node.key_file", "is required"),
        (toml(&node("key_env = \"1-BAD\"", "key_file"), RELAYS, OFFER), "node.key_env", "not an environment variable name"),
        (toml(NODE, "", OFFER), "relays", "is required"),
        (toml(NODE, &relays("publish_cap = 2"), OFFER), "relays.urls", "is required"),
        (toml(NODE, &relays("urls = []"), OFFER), "relays.urls", "1 to 16"),
        (toml(NODE, &relays(&many_urls), OFFER), "relays.urls", "got 17"),
        (toml(NODE, &relays("urls = [\"https://relay.example.com\"]"), OFFER), "relays.urls[0]", "ws:// or wss://"),
        (toml(NODE, &relays("urls = [\"wss://a.example.com\", \"wss://a.example.com/\"]"), OFFER), "relays.urls[1]", "listed twice"),
        (toml(NODE, &format!("{RELAYS}publish_cap = 0"), OFFER), "relays.publish_cap", "between 1 and 64"),
        (toml(NODE, &format!("{RELAYS}allow_customer_relays = false\ncustomer_relay_allowlist = [\"wss://a.example.com\"]"), OFFER), "relays.customer_relay_allowlist", "allow_customer_relays = false"),
        (toml(NODE, &format!("{RELAYS}customer_relay_allowlist = []"), OFFER), "relays.customer_relay_allowlist", "1 to 256"),
        (toml(NODE, &format!("{RELAYS}customer_relay_allowlist = [\"relay.example.com\"]"), OFFER), "relays.customer_relay_allowlist[0]", "relay URL"),
        (toml(NODE, RELAYS, ""), "offer", "1 to 64"),
        (toml(NODE, RELAYS, &offer("executor = { builtin = \"text\" }")), "offer[0].kind", "is required"),
        (toml(NODE, RELAYS, &offer("kind = 7000\nexecutor = { builtin = \"text\" }")), "offer[0].kind", "between 5000 and 5999"),
        (toml(NODE, RELAYS, &format!("{OFFER}\n{OFFER}")), "offer[1].kind", "already offered by offer[0]"),
        (toml(NODE, RELAYS, &offer("kind = 5050")), "offer[0].executor", "is required"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = {}")), "offer[0].executor", "exactly one"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = { builtin = \"text\", http = \"http://127.0.0.1/\" }")), "offer[0].executor", "exactly one"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = { builtin = \"gpt\" }")), "offer[0].executor.builtin", "unknown builtin \"gpt\""),
        (toml(NODE, RELAYS, &offer("kind = 5100\nexecutor = { builtin = \"text\" }")), "offer[0].executor.builtin", "not 5100"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = { http = \"ftp://127.0.0.1/run\" }")), "offer[0].executor.http", "http:// or https://"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = { builtin = \"text\", args = [\"x\"] }")), "offer[0].executor.args", "only allowed with `command`"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = { command = \"bin/task\" }")), "offer[0].executor.command", "absolute path"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = { command = \"\" }")), "offer[0].executor.command", "must not be empty"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = { command = \"/bin/true\", env = { \"BAD-NAME\" = \"x\" } }")), "offer[0].executor.env.BAD-NAME", "not an environment variable name"),
        (toml(NODE, RELAYS, &offer("kind = 5050\nexecutor = { http = \"ws://127.0.0.1:8080/run\" }")), "offer[0].executor.http", "http:// or https://"),
        (toml(NODE, RELAYS, &text_offer("timeout_secs = 0")), "offer[0].timeout_secs", "between 1 and 3600"),
        (toml(NODE, RELAYS, &text_offer("max_output_bytes = 2000000")), "offer[0].max_output_bytes", "between 1 and 1048576"),
        (toml(NODE, RELAYS, &text_offer("max_concurrency = -1")), "offer[0].max_concurrency", "between 1 and 256"),
        (toml(NODE, RELAYS, &text_offer("name = \"\"")), "offer[0].name", "must not be empty"),
    ];
    for (text, field, reason) in cases {
        let err = parse(&text).expect_err(&format!("accepted a bad {field}:\n{text}"));
        let msg = err.to_string();
        assert_eq!(err.field(), Some(field), "{msg}\n{text}");
        assert!(msg.starts_with(&format!("test.toml: {field}: ")), "{msg}");
        assert!(msg.contains(reason), "{field}: {msg:?} lacks {reason:?}");
    }
}

#[test]
fn unknown_sections_fields_and_bad_types_are_syntax_errors() {
    let cases = [
        (
            toml(
                NODE,
                RELAYS,
                &format!("{OFFER}\n[wallet]\nbackend = \"nwc\"\n"),
            ),
            "wallet",
        ),
        (
            toml(&format!("{NODE}nickname = \"x\"\n"), RELAYS, OFFER),
            "nickname",
        ),
        (
            toml(NODE, RELAYS, &format!("{OFFER}timeout = 5\n")),
            "timeout",
        ),
        (
            toml(
                NODE,
                RELAYS,
                "[[offer]]\nkind = 5050\nexecutor = { builtin = \"text\", shell = true }\n",
            ),
            "shell",
        ),
        (
            toml(
                NODE,
                RELAYS,
                "[[offer]]\nkind = \"5050\"\nexecutor = { builtin = \"text\" }\n",
            ),
            "kind",
        ),
        (
            toml(
                NODE,
                RELAYS,
                "[[offer]]\nkind = 5050\nexecutor = \"text\"\n",
            ),
            "executor",
        ),
        ("[node\n".to_owned(), ""),
    ];
    for (text, mentions) in cases {
        let err = parse(&text).expect_err(&text);
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml: "), "{msg}");
        assert!(msg.contains(mentions), "{msg:?} lacks {mentions:?}");
    }
}

/// A directory with a config, a policy and a 0600 key file: `Config::load` succeeds in it.
struct Setup {
    dir: tempfile::TempDir,
    keys: Keys,
}

impl Setup {
    fn new(config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate();
        fs::write(dir.path().join("paydvm.toml"), config).unwrap();
        fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        let key = dir.path().join("paydvm.key");
        fs::write(&key, keys.secret_key().to_bech32().unwrap() + "\n").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        Setup { dir, keys }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn load(&self) -> Result<Config, ConfigError> {
        Config::load_with_env(self.path("paydvm.toml"), |_| None)
    }

    /// Writes `keys` as `paydvm-nutzap.key` (0600).
    fn nutzap_key(&self, keys: &Keys) {
        let key = self.path("paydvm-nutzap.key");
        fs::write(&key, keys.secret_key().to_bech32().unwrap() + "\n").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    }
}

const CASHU: &str = "[cashu]\np2pk_key_file = \"paydvm-nutzap.key\"\n";
const TRUSTED_MINT: &str =
    "[[mints.trusted]]\nurl = \"http://127.0.0.1:3338\"\nunits = [\"sat\"]\n";

#[test]
fn cashu_key_is_loaded_and_required_once_a_mint_is_trusted() {
    let setup = Setup::new(&toml(NODE, RELAYS, OFFER));
    fs::write(setup.path("policy.toml"), format!("{TRUSTED_MINT}{POLICY}")).unwrap();
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("cashu"), "{err}");

    let with_cashu = format!("{}\n{CASHU}", toml(NODE, RELAYS, OFFER));
    fs::write(setup.path("paydvm.toml"), &with_cashu).unwrap();
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("cashu.p2pk_key_file"), "{err}");

    let p2pk = Keys::generate();
    setup.nutzap_key(&p2pk);
    let config = setup.load().unwrap();
    assert_eq!(
        config.p2pk_key.as_ref().unwrap().expose().public_key(),
        p2pk.public_key()
    );
    assert!(!format!("{config:?}").contains(&p2pk.secret_key().to_secret_hex()));

    // NIP-61: never the identity key.
    setup.nutzap_key(&setup.keys);
    let err = setup.load().unwrap_err();
    assert!(
        err.to_string()
            .contains("must not be the node's identity key"),
        "{err}"
    );

    let env_cashu = "[cashu]\np2pk_key_env = \"NUTZAP_KEY\"\n";
    fs::write(
        setup.path("paydvm.toml"),
        format!("{}\n{env_cashu}", toml(NODE, RELAYS, OFFER)),
    )
    .unwrap();
    let hex = p2pk.secret_key().to_secret_hex();
    let env = |name: &str| (name == "NUTZAP_KEY").then(|| OsString::from(hex.clone()));
    let config = Config::load_with_env(setup.path("paydvm.toml"), env).unwrap();
    assert!(config.p2pk_key.is_some());

    assert_eq!(config.public_tokens, PublicTokens::Refuse, "the default");
    let race = format!(
        "{}\n{env_cashu}public_tokens = \"race_swap\"\n",
        toml(NODE, RELAYS, OFFER)
    );
    fs::write(setup.path("paydvm.toml"), race).unwrap();
    let config = Config::load_with_env(setup.path("paydvm.toml"), env).unwrap();
    assert_eq!(config.public_tokens, PublicTokens::RaceSwap);
    let typo = format!(
        "{}\n{env_cashu}public_tokens = \"accept\"\n",
        toml(NODE, RELAYS, OFFER)
    );
    let err = parse(&typo).unwrap_err();
    assert_eq!(err.field(), Some("cashu.public_tokens"), "{err}");

    assert_eq!(config.input_fees, InputFees::Operator, "the default");
    let customer = format!(
        "{}\n{env_cashu}input_fees = \"customer\"\n",
        toml(NODE, RELAYS, OFFER)
    );
    fs::write(setup.path("paydvm.toml"), customer).unwrap();
    let config = Config::load_with_env(setup.path("paydvm.toml"), env).unwrap();
    assert_eq!(config.input_fees, InputFees::Customer);
    let typo = format!(
        "{}\n{env_cashu}input_fees = \"mint\"\n",
        toml(NODE, RELAYS, OFFER)
    );
    let err = parse(&typo).unwrap_err();
    assert_eq!(err.field(), Some("cashu.input_fees"), "{err}");

    assert_eq!(config.mint_pacing, paydvm_mints::MintPacing::CdkDefault);
    for (value, want) in [
        ("0", Some(paydvm_mints::MintPacing::Off)),
        (
            "600",
            Some(paydvm_mints::MintPacing::PerMinute(
                std::num::NonZeroU32::new(600).unwrap(),
            )),
        ),
        ("-1", None),
        ("100001", None),
    ] {
        let text = format!(
            "{}\n{env_cashu}mint_requests_per_minute = {value}\n",
            toml(NODE, RELAYS, OFFER)
        );
        fs::write(setup.path("paydvm.toml"), &text).unwrap();
        match want {
            Some(pacing) => assert_eq!(
                Config::load_with_env(setup.path("paydvm.toml"), env)
                    .unwrap()
                    .mint_pacing,
                pacing
            ),
            None => assert_eq!(
                parse(&text).unwrap_err().field(),
                Some("cashu.mint_requests_per_minute")
            ),
        }
    }

    assert_eq!(config.token_wait, std::time::Duration::from_secs(21 * 60));
    for (value, want) in [
        ("1", Some(1)),
        ("604800", Some(604_800)),
        ("0", None),
        ("604801", None),
    ] {
        let text = format!(
            "{}\n{env_cashu}token_wait_secs = {value}\n",
            toml(NODE, RELAYS, OFFER)
        );
        fs::write(setup.path("paydvm.toml"), &text).unwrap();
        match want {
            Some(secs) => assert_eq!(
                Config::load_with_env(setup.path("paydvm.toml"), env)
                    .unwrap()
                    .token_wait,
                std::time::Duration::from_secs(secs)
            ),
            None => assert_eq!(
                parse(&text).unwrap_err().field(),
                Some("cashu.token_wait_secs")
            ),
        }
    }

    let both = "[cashu]\np2pk_key_file = \"a\"\np2pk_key_env = \"B\"\n";
    let err = parse(&format!("{}\n{both}", toml(NODE, RELAYS, OFFER))).unwrap_err();
    assert_eq!(err.field(), Some("cashu.p2pk_key_file"), "{err}");
}

#[test]
fn load_reads_policy_and_key_without_showing_the_key() {
    let setup = Setup::new(&toml(NODE, RELAYS, OFFER));
    let config = setup.load().unwrap();
    assert_eq!(config.public_key(), setup.keys.public_key());
    assert!(config.policy.pricing().is_offered(5050));
    assert_eq!(config.node.ledger, setup.path("paydvm.db"));
    let shown = format!("{config:?}");
    let nsec = setup.keys.secret_key().to_bech32().unwrap();
    let hex = setup.keys.secret_key().to_secret_hex();
    assert!(!shown.contains(&nsec) && !shown.contains(&hex));
}

#[test]
fn template_loads_with_the_starter_policy() {
    let setup = Setup::new(CONFIG_TEMPLATE);
    fs::write(
        setup.path("policy.toml"),
        include_str!("../../policies/examples/default.toml"),
    )
    .unwrap();
    setup.nutzap_key(&Keys::generate());
    let config = setup.load().unwrap();
    assert_eq!(config.offers.len(), 1);
    assert_eq!(config.offers[0].kind, 5050);
    assert_eq!(
        config.relays.urls[0].as_str_without_trailing_slash(),
        "ws://127.0.0.1:7777"
    );
    // The starter node cannot take money yet: it says so, as a warning (init tells what to set).
    assert_eq!(config.node.config_problems, ProblemMode::Warn);
    let problems = payment_problems(&config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "offer[0]");
}

#[test]
fn bad_policy_is_reported_at_load() {
    let setup = Setup::new(&toml(NODE, RELAYS, OFFER));
    fs::write(setup.path("policy.toml"), "[quote]\nexpiry_secs = 0\n").unwrap();
    let err = setup.load().unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.field(), Some("node.policy"), "{msg}");
    assert!(msg.contains("policy.toml: quote.expiry_secs"), "{msg}");

    fs::remove_file(setup.path("policy.toml")).unwrap();
    let msg = setup.load().unwrap_err().to_string();
    assert!(
        msg.contains("node.policy") && msg.contains("cannot read policy file"),
        "{msg}"
    );
}

#[test]
fn offered_kind_must_be_priced_by_the_policy() {
    let offer = OFFER.replace("5050", "5001");
    let setup = Setup::new(&toml(NODE, RELAYS, &offer));
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("offer[0].kind"), "{err}");
    assert!(err.to_string().contains("kind 5001 has no price"), "{err}");
}

#[test]
fn check_policy_needs_no_file_and_makes_the_load_checks() {
    let policy = |text: &str| paydvm_policies::Policy::from_toml_str(text, "p.toml").unwrap();
    let base = Path::new("/nonexistent");
    let check = |config: &str, p: &str| {
        parse(config)
            .unwrap()
            .check_policy(&policy(p), "test.toml", base)
    };
    let plain = toml(NODE, RELAYS, OFFER);
    check(&plain, POLICY).unwrap();
    let unpriced = toml(NODE, RELAYS, &OFFER.replace("5050", "5001"));
    let err = check(&unpriced, POLICY).unwrap_err();
    assert_eq!(err.field(), Some("offer[0].kind"), "{err}");
    let mints = format!("{TRUSTED_MINT}{POLICY}");
    assert_eq!(check(&plain, &mints).unwrap_err().field(), Some("cashu"));
    check(&format!("{plain}\n{CASHU}"), &mints).unwrap();
}

#[test]
fn command_executor_must_exist_and_be_executable() {
    let setup = Setup::new("");
    let script = setup.path("task.sh");
    fs::write(&script, "#!/bin/sh\ncat\n").unwrap();
    let offer = format!(
        "[[offer]]\nkind = 5050\nexecutor = {{ command = {:?} }}\n",
        script.display().to_string()
    );
    fs::write(setup.path("paydvm.toml"), toml(NODE, RELAYS, &offer)).unwrap();

    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("offer[0].executor.command"), "{err}");
    assert!(err.to_string().contains("not an executable file"), "{err}");

    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    setup.load().unwrap();

    fs::remove_file(&script).unwrap();
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("offer[0].executor.command"), "{err}");
}

#[test]
fn open_key_file_is_refused_at_load() {
    let setup = Setup::new(&toml(NODE, RELAYS, OFFER));
    fs::set_permissions(setup.path("paydvm.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let err = setup.load().unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.field(), Some("node.key_file"), "{msg}");
    assert!(msg.contains("chmod 600"), "{msg}");
    assert!(!msg.contains(&setup.keys.secret_key().to_bech32().unwrap()));
}

#[test]
fn missing_key_file_is_an_error_not_a_new_key() {
    let setup = Setup::new(&toml(NODE, RELAYS, OFFER));
    fs::remove_file(setup.path("paydvm.key")).unwrap();
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("node.key_file"), "{err}");
    assert!(!setup.path("paydvm.key").exists());
}

#[test]
fn env_key_is_loaded_from_the_named_variable() {
    let node = NODE.replace("key_file = \"paydvm.key\"", "key_env = \"NODE_KEY\"");
    let setup = Setup::new(&toml(&node, RELAYS, OFFER));
    let hex = setup.keys.secret_key().to_secret_hex();
    let env = |name: &str| (name == "NODE_KEY").then(|| OsString::from(hex.clone()));
    let config = Config::load_with_env(setup.path("paydvm.toml"), env).unwrap();
    assert_eq!(config.public_key(), setup.keys.public_key());

    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("node.key_env"), "{err}");
    assert!(
        err.to_string()
            .ends_with("environment variable NODE_KEY is not set"),
        "{err}"
    );

    let err =
        Config::load_with_env(setup.path("paydvm.toml"), |_| Some("nsec1bad".into())).unwrap_err();
    assert!(err.to_string().contains("not a secret key"), "{err}");
}

#[test]
fn env_key_is_read_from_the_process_environment() {
    // A name no other test uses: tests run on threads of one process.
    let var = "PAYDVM_CONFIG_TEST_ENV_KEY_7F3A";
    let node = NODE.replace("key_file = \"paydvm.key\"", &format!("key_env = \"{var}\""));
    let setup = Setup::new(&toml(&node, RELAYS, OFFER));
    std::env::set_var(var, setup.keys.secret_key().to_bech32().unwrap());
    let loaded = Config::load(setup.path("paydvm.toml"));
    std::env::remove_var(var);
    assert_eq!(loaded.unwrap().public_key(), setup.keys.public_key());
}

#[test]
fn missing_config_file_names_it() {
    let err = Config::load("/nonexistent/paydvm.toml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/paydvm.toml: cannot read config file"),
        "{err}"
    );
}

#[test]
fn lightning_section_is_validated_field_by_field() {
    let base = toml(NODE, RELAYS, OFFER);
    assert_eq!(parse(&base).unwrap().lightning, None);
    let fake = parse(&format!("{base}[lightning]\nbackend = \"fake\"\n")).unwrap();
    assert_eq!(
        fake.lightning,
        Some(Lightning {
            backend: BackendChoice::Fake,
            invoice_timeout_secs: DEFAULT_INVOICE_TIMEOUT_SECS,
            max_fee_msat: DEFAULT_MAX_FEE_MSAT,
        })
    );
    let lnbits = parse(&format!(
        "{base}[lightning]\nbackend = \"lnbits\"\nlnbits_url = \"http://127.0.0.1:5000\"\n\
         lnbits_invoice_key_env = \"INV\"\nlnbits_admin_key_file = \"admin.key\"\n\
         invoice_timeout_secs = 3\nmax_fee_msat = 0\n"
    ))
    .unwrap()
    .lightning
    .unwrap();
    assert_eq!(lnbits.invoice_timeout_secs, 3);
    assert_eq!(lnbits.max_fee_msat, 0);
    assert!(matches!(
        lnbits.backend,
        BackendChoice::Lnbits { invoice_key: SecretSource::Env(ref v), admin_key: Some(SecretSource::File(ref f)), .. }
            if v == "INV" && f == Path::new("/etc/paydvm/admin.key")
    ));

    let cases = [
        ("", "lightning.backend", "is required"),
        ("backend = \"ldk\"", "lightning.backend", "not a backend"),
        ("backend = \"nwc\"", "lightning.nwc_uri_file", "is required"),
        (
            "backend = \"nwc\"\nnwc_uri_file = \"a\"\nnwc_uri_env = \"B\"",
            "lightning.nwc_uri_file",
            "not both",
        ),
        (
            "backend = \"nwc\"\nnwc_uri_env = \"1X\"",
            "lightning.nwc_uri_env",
            "not an environment",
        ),
        (
            "backend = \"fake\"\nnwc_uri_env = \"X\"",
            "lightning.nwc_uri_file",
            "not used",
        ),
        (
            "backend = \"nwc\"\nnwc_uri_env = \"X\"\nlnbits_url = \"http://h\"",
            "lightning.lnbits_url",
            "not used",
        ),
        (
            "backend = \"lnbits\"\nlnbits_invoice_key_env = \"X\"",
            "lightning.lnbits_url",
            "is required",
        ),
        (
            "backend = \"lnbits\"\nlnbits_url = \"http://h\"",
            "lightning.lnbits_invoice_key_file",
            "is required",
        ),
        (
            "backend = \"fake\"\ninvoice_timeout_secs = 0",
            "lightning.invoice_timeout_secs",
            "between",
        ),
        (
            "backend = \"fake\"\nmax_fee_msat = -1",
            "lightning.max_fee_msat",
            "between",
        ),
    ];
    for (body, field, reason) in cases {
        let err = parse(&format!("{base}[lightning]\n{body}\n")).unwrap_err();
        assert_eq!(err.field(), Some(field), "{body}: {err}");
        assert!(err.to_string().contains(reason), "{body}: {err}");
    }
}

#[test]
fn lightning_secrets_load_from_0600_files_or_env_and_never_print() {
    let uri = "nostr+walletconnect://aa?relay=ws%3A%2F%2F127.0.0.1&secret=topsecretvalue";
    let base = toml(NODE, RELAYS, OFFER);
    let setup = Setup::new(&format!(
        "{base}[lightning]\nbackend = \"nwc\"\nnwc_uri_file = \"nwc.uri\"\n"
    ));
    let file = setup.path("nwc.uri");
    fs::write(&file, format!("{uri}\n")).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("lightning.nwc_uri"), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let config = setup.load().unwrap();
    let lightning = config.lightning.clone().unwrap();
    assert!(matches!(&lightning.backend, BackendSecrets::Nwc { uri: u } if u.expose() == uri));
    assert!(!format!("{config:?}").contains("topsecretvalue"));

    let setup = Setup::new(&format!(
        "{base}[lightning]\nbackend = \"lnbits\"\nlnbits_url = \"http://127.0.0.1:5000\"\n\
         lnbits_invoice_key_env = \"INV\"\n"
    ));
    let env = |name: &str| (name == "INV").then(|| OsString::from("invoicekey123"));
    let config = Config::load_with_env(setup.path("paydvm.toml"), env).unwrap();
    assert!(matches!(
        &config.lightning.as_ref().unwrap().backend,
        BackendSecrets::Lnbits { invoice_key, admin_key: None, .. } if invoice_key.expose() == "invoicekey123"
    ));
    assert!(!format!("{config:?}").contains("invoicekey123"));
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("lightning.lnbits_invoice_key"), "{err}");
    let empty = |_: &str| Some(OsString::from("  \n"));
    let err = Config::load_with_env(setup.path("paydvm.toml"), empty).unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn a_syntax_error_does_not_quote_the_line_that_may_hold_a_secret() {
    // Found by the `config` fuzz target: toml's message quotes the offending source line, so an
    // executor line with an `env` secret, misplaced under [node], showed the secret in the error.
    let secret = "s3cret-token-value";
    let misplaced = NODE.replace(
        "[node]\n",
        &format!(
            "[node]\nexecutor = {{ command = \"/bin/true\", env = {{ T = \"{secret}\" }} }}\n"
        ),
    );
    let err = parse(&toml(&misplaced, RELAYS, OFFER)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{msg}");
    assert!(
        !msg.contains(secret) && !format!("{err:?}").contains(secret),
        "{msg}"
    );
    assert!(
        msg.starts_with("test.toml: line 2, column 1 (`executor`): "),
        "{msg}"
    );
    assert!(msg.contains("unknown field `executor`"), "{msg}");
}

#[test]
fn config_problems_is_error_by_default_warn_on_request_and_nothing_else() {
    assert_eq!(
        parse(&toml(NODE, RELAYS, OFFER))
            .unwrap()
            .node
            .config_problems,
        ProblemMode::Error
    );
    let warn = format!("{NODE}config_problems = \"warn\"\n");
    assert_eq!(
        parse(&toml(&warn, RELAYS, OFFER))
            .unwrap()
            .node
            .config_problems,
        ProblemMode::Warn
    );
    let bogus = format!("{NODE}config_problems = \"ignore\"\n");
    let err = parse(&toml(&bogus, RELAYS, OFFER)).unwrap_err();
    assert_eq!(err.field(), Some("node.config_problems"), "{err}");
}

fn fixed_5050(amount_msat: u64) -> String {
    format!("[[pricing.kind]]\nkind = 5050\nmode = \"fixed\"\namount_msat = {amount_msat}\n")
}

/// The problems `Config::load` leaves to `check-config`, for the config `text` and `policy`.
fn problems_of(text: &str, policy: &str) -> Vec<Problem> {
    let setup = Setup::new(text);
    fs::write(setup.path("policy.toml"), policy).unwrap();
    let env = |_: &str| Some(OsString::from("invoicekey"));
    payment_problems(&Config::load_with_env(setup.path("paydvm.toml"), env).unwrap())
}

#[test]
fn a_priced_offer_with_no_rail_is_a_problem_and_any_rail_clears_it() {
    let bare = toml(NODE, RELAYS, OFFER);
    assert_eq!(
        problems_of(&bare, POLICY),
        vec![],
        "a free kind needs no rail"
    );
    let problems = problems_of(&bare, &fixed_5050(10_000));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "offer[0]");
    assert!(
        problems[0].message.contains("kind 5050 costs 10000 msat")
            && problems[0].message.contains("nothing can pay"),
        "{}",
        problems[0]
    );
    let lud16 = toml(
        &format!("{NODE}lud16 = \"dvm@pay.example.com\"\n"),
        RELAYS,
        OFFER,
    );
    assert_eq!(problems_of(&lud16, &fixed_5050(10_000)), vec![]);
    let fake = format!("{bare}[lightning]\nbackend = \"fake\"\n");
    assert_eq!(problems_of(&fake, &fixed_5050(10_000)), vec![]);
}

#[test]
fn lnbits_with_a_price_that_is_not_whole_sats_is_a_problem() {
    let lnbits = format!(
        "{}[lightning]\nbackend = \"lnbits\"\nlnbits_url = \"http://127.0.0.1:5000\"\n\
         lnbits_invoice_key_env = \"INV\"\n",
        toml(NODE, RELAYS, OFFER)
    );
    assert_eq!(problems_of(&lnbits, &fixed_5050(10_000)), vec![]);
    let problems = problems_of(&lnbits, &fixed_5050(10_500));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("whole sats"),
        "{}",
        problems[0]
    );
    let per_unit = |rate: &str, base: u64| {
        format!(
            "[[pricing.kind]]\nkind = 5050\nmode = \"per_unit\"\nunit = \"word\"\n\
             base_msat = {base}\nper_unit_msat = \"{rate}\"\n"
        )
    };
    assert_eq!(problems_of(&lnbits, &per_unit("2000", 1000)), vec![]);
    assert_eq!(problems_of(&lnbits, &per_unit("0.5", 1000)).len(), 1);
    assert_eq!(problems_of(&lnbits, &per_unit("2000", 1500)).len(), 1);
    // The fake backend (like NWC) invoices any msat amount.
    let fake = format!(
        "{}[lightning]\nbackend = \"fake\"\n",
        toml(NODE, RELAYS, OFFER)
    );
    assert_eq!(problems_of(&fake, &fixed_5050(10_500)), vec![]);
}

#[test]
fn http_is_off_by_default_and_loopback_needs_no_token() {
    assert_eq!(parse(&toml(NODE, RELAYS, OFFER)).unwrap().http, None);
    let text = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:9737\"\n",
        toml(NODE, RELAYS, OFFER)
    );
    let http = parse(&text).unwrap().http.unwrap();
    assert_eq!(http.listen, "127.0.0.1:9737".parse().unwrap());
    assert_eq!(http.token_file, None);
    let setup = Setup::new(&text);
    assert_eq!(setup.load().unwrap().http.unwrap().token, None);
}

#[test]
fn http_fields_are_validated() {
    let cases = [
        ("[http]\n", "http.listen", "is required"),
        (
            "[http]\nlisten = \"localhost\"\n",
            "http.listen",
            "not an address",
        ),
        (
            "[http]\nlisten = \"0.0.0.0:9737\"\n",
            "http.token_file",
            "not a loopback",
        ),
        (
            "[http]\nlisten = \"[::]:9737\"\n",
            "http.token_file",
            "not a loopback",
        ),
    ];
    for (section, field, says) in cases {
        let err = parse(&format!("{}\n{section}", toml(NODE, RELAYS, OFFER))).unwrap_err();
        assert_eq!(err.field(), Some(field), "{section}: {err}");
        assert!(err.to_string().contains(says), "{section}: {err}");
    }
}

#[test]
fn http_token_is_read_from_a_0600_file_and_never_printed() {
    let text = format!(
        "{}\n[http]\nlisten = \"0.0.0.0:9737\"\ntoken_file = \"http.token\"\n",
        toml(NODE, RELAYS, OFFER)
    );
    let setup = Setup::new(&text);
    let token = setup.path("http.token");
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("http.token_file"), "{err}");
    fs::write(&token, "0123456789abcdef0123\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    let err = setup.load().unwrap_err();
    assert_eq!(err.field(), Some("http.token_file"), "{err}");
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let config = setup.load().unwrap();
    let http = config.http.as_ref().unwrap();
    assert_eq!(
        http.token.as_ref().unwrap().expose(),
        "0123456789abcdef0123"
    );
    assert!(!format!("{config:?}").contains("0123456789abcdef0123"));
    fs::write(&token, "short\n").unwrap();
    let err = setup.load().unwrap_err();
    assert!(err.to_string().contains("at least 16 characters"), "{err}");
}
