//! The commented starter `paydvm.toml` that `paydvm init` writes.

/// Loads as-is next to `policy.toml` and `paydvm.key` (see the `init` tests).
pub const CONFIG_TEMPLATE: &str = r#"# paydvm node configuration.
#
# Relative paths are relative to the directory of this file.
# Unknown sections or fields are errors. Field reference: docs/configuration.md

[node]
# The node's name and description, shown in its NIP-89 announcement.
name = "My paydvm node"
about = "A NIP-90 data vending machine"
# Optional: an http(s) URL of an avatar picture.
# picture = "https://example.com/avatar.png"
# Optional: your lightning address. Published in the profile and the NIP-89 announcement;
# zaps (NIP-57) on a job's payment-required feedback pay for the job. Zap receipts count only
# if signed by this address's LNURL server (its `nostrPubkey`). docs/zaps.md
# lud16 = "dvm@example.com"
# Customers' refund addresses, the LNURL callbacks their servers name, and the lud16 above must
# be public hosts: the node never connects to loopback, private, link-local, CGNAT, multicast,
# documentation or other special-purpose addresses, and checks every address a name resolves
# to, at connect time. Optional: hosts exempt from that rule (https only), e.g. your own wallet
# on your network: "host", "host:port" or "[ipv6]:port"; write "http://host[:port]" to allow
# plain http to it too. docs/configuration.md
# lnurl_allow_hosts = ["wallet.lan", "http://10.1.2.3:8080"]

# The event-sourced payments ledger (a SQLite file; created on first run). Or a PostgreSQL
# database, with a directory for the node's local files (Cashu wallet, lock, control socket):
#   ledger = "postgres://paydvm@127.0.0.1:5432/paydvm?password_file=/etc/paydvm/pg-password"
#   state_dir = "state"
# The same config started elsewhere with `paydvm run --standby` waits while this node serves
# and takes over when it stops or dies. docs/postgres.md
ledger = "paydvm.db"

# Prices, admission, refunds, trusted mints, subscriptions: docs/configuration-policies.md
policy = "policy.toml"

# What a problem that keeps the node from taking money does (an offer priced but payable by no
# rail, a price the wallet cannot invoice, a wallet or mint that does not answer; list them with
# `paydvm check-config`): "error" (the default: `paydvm run` refuses to start) or "warn" (it
# starts and logs each problem). This starter node has no way to be paid yet (no [lightning]
# wallet, no lud16, no trusted mint), so it starts with warnings: set one up, then remove this.
config_problems = "warn"

# The node's Nostr secret key. Set exactly one of:
#   key_file: a file holding an nsec1... or 64-hex key, mode 0600 (paydvm refuses a key file
#             that group or others can read; fix with `chmod 600 paydvm.key`);
#   key_env:  the name of an environment variable holding the key.
# Whoever has this key can act as your node: back it up, never share it.
key_file = "paydvm.key"
# key_env = "PAYDVM_NSEC"

[relays]
# The node's own relays (1 to 16, ws:// or wss://): it reads job requests from and publishes
# results to all of them.
urls = ["ws://127.0.0.1:7777"]

# The most relays one result is published to, own and customer-requested together. 1..=64.
publish_cap = 8

# Also publish to relays a customer names in its request's `relays` tag.
allow_customer_relays = true

# Optional: if set, only these customer-requested relays are used.
# customer_relay_allowlist = ["wss://relay.example.com"]

# A relay a customer names is never on this machine or its network; this lets it be on this
# machine (loopback only), for tests and single-machine setups.
# customer_relay_loopback = false

[cashu]
# The key NutZaps (NIP-61) to this node are locked to: its x-only public key is published in the
# node's kind 10019. NIP-61 forbids using the node's Nostr key for this. Set exactly one of
# p2pk_key_file (mode 0600) or p2pk_key_env. Required once the policy trusts a Cashu mint.
# Whoever has this key can spend ecash paid to the node: back it up, never share it.
p2pk_key_file = "paydvm-nutzap.key"
# p2pk_key_env = "PAYDVM_NUTZAP_KEY"
# A Cashu token in a clear request tag may have been read by anyone: "refuse" (default) or
# "race_swap" (swap it at once; the mint decides who was first). Encrypted tokens are taken.
# public_tokens = "refuse"
# Who bears the mint's input fee when the node swaps received ecash (the quote says which):
# "operator" (default; booked to expense:fees) or "customer" (the ecash counts minus the fee).
# input_fees = "operator"
# How fast the Cashu wallet may call each mint (requests per minute after an equal burst);
# unset = cdk's default of 20, 0 = no pacing (your own mint).
# mint_requests_per_minute = 20
# How long a request's Cashu tokens wait while their mint cannot be reached before the customer
# is told they were not taken (they stay the customer's). NutZaps wait for as long as it takes.
# token_wait_secs = 1260

# One [[offer]] per NIP-90 job kind the node serves. The kind must also be priced in the
# policy's [[pricing.kind]] rate card (a free kind is priced with mode = "free").
[[offer]]
# NIP-90 request kind, 5000..=5999, each offered once. 5050 is text generation.
kind = 5050

# What runs the job; exactly one of:
#   executor = { builtin = "text" }                       compiled in: deterministic demo text
#                                                         tasks for kinds 5050 and 5001 only
#   executor = { command = "/usr/local/bin/my-task", args = ["--fast"], env = { API_TOKEN = "..." } }
#                                                         a program: the job as JSON on stdin,
#                                                         the result on stdout; the program gets
#                                                         only `env` as its environment
#   executor = { http = "http://127.0.0.1:8080/run" }     the job is POSTed to this URL
executor = { builtin = "text" }

# Seconds a job may run before it is stopped and counts as a failed attempt. 1..=3600.
timeout_secs = 30

# Largest result accepted, in bytes; a larger one is a failed attempt. 1..=1048576.
max_output_bytes = 65536

# Jobs of this kind run at the same time at most. 1..=256.
max_concurrency = 4

# Optional, with a postgres:// ledger only: "any_node" lets every node on the database with this
# offer (the serving one and its standbys) run its jobs, each claimed with a lease of
# lease_secs (1..=600, default 15) that its runner renews; "this_node" (the default) runs them
# on the serving node alone.
# execute_on = "any_node"
# lease_secs = 15

# Optional: name and description of this offer in the NIP-89 announcement.
name = "Text generation"
about = "Deterministic demo text tasks"

# Optional: a Lightning wallet, so every quote carries an invoice (docs/lightning.md).
# Secrets never go in this file: name a 0600 file or an environment variable.
# [lightning]
# backend = "nwc"                   # "nwc", "lnbits", or "fake" (demo/tests only)
# nwc_uri_file = "nwc.uri"          # or nwc_uri_env = "PAYDVM_NWC_URI"
# lnbits_url = "https://lnbits.example.com"
# lnbits_invoice_key_env = "PAYDVM_LNBITS_INVOICE_KEY"
# lnbits_admin_key_env = "PAYDVM_LNBITS_ADMIN_KEY"   # only to pay refunds
# invoice_timeout_secs = 15
# max_fee_msat = 10000

# Optional: Prometheus metrics (/metrics), health checks (/healthz, /readyz) and a read-only
# status page (/) on this address; off without this section. An address other than loopback
# needs token_file: a 0600 file with a token every request must carry (docs/operations.md).
# [http]
# listen = "127.0.0.1:9737"
# token_file = "http.token"
"#;
