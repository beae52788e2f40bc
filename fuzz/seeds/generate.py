#!/usr/bin/env python3
"""Writes the seed inputs of the parser fuzz targets (fuzz/seeds/<target>/) from the project's
vectors, examples and the `paydvm init` template. Each file is one input in the target's own
format (byte 0 picks the mode; see each target's header). Run from anywhere; safe to re-run."""
import base64
import hashlib
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


zap = json.loads(read("tests", "vectors", "synthetic-zap.vectors.json"))
bolt11 = json.loads(read("tests", "vectors", "bolt11.vectors.json"))
nutzap = json.loads(read("mints", "vectors", "synthetic-nutzap.vectors.json"))

# nip90_request, mode 0: events as a relay hands them over.
write("nip90_request", "job_request", b"\x00" + json.dumps(zap["job_request"]).encode())
write("nip90_request", "nutzap_job", b"\x00" + json.dumps(nutzap["job_request"]).encode())

# zap_receipt, mode 1: whole receipts as JSON.
for i, case in enumerate(zap["receipts"]):
    write("zap_receipt", f"receipt_{i}", b"\x01" + json.dumps(case["receipt"]).encode())

# bolt11, mode 0: the spec's invoices as text.
for kind in ("valid", "invalid"):
    for i, case in enumerate(bolt11[kind]):
        write("bolt11", f"{kind}_{i}", b"\x00" + case["invoice"].encode())

# nutzap, mode 0: the vector NutZaps' tags as JSON; the 10019 too.
for i, case in enumerate(nutzap["nutzaps"]):
    write("nutzap", f"nutzap_{i}", b"\x00" + json.dumps(case["event"]["tags"]).encode())
write("nutzap", "info_10019", b"\x00" + json.dumps(nutzap["dvm_nutzap_info_10019"]["tags"]).encode())

# cashu_token, modes 0 and 1: a V3 token's JSON and a V4 token's CBOR, from the valid NutZap's
# proofs; mode 2: tokens as text.
proofs = [json.loads(t[1]) for t in nutzap["nutzaps"][0]["event"]["tags"] if t[0] == "proof"]
v3 = {"token": [{"mint": nutzap["mint"]["url"], "proofs": proofs}], "unit": "sat"}
write("cashu_token", "v3_json", b"\x00" + json.dumps(v3).encode())
token_b = "cashuBo2F0gaJhaUgA_9SLj17PgGFwgaNhYQFhc3hAOWE2ZGJiODQ3YmQyMzJiYTc2"
raw_b = base64.urlsafe_b64decode(token_b[6:] + "=" * (-len(token_b[6:]) % 4))
write("cashu_token", "v4_cbor", b"\x01" + raw_b)
v3_text = "cashuA" + base64.urlsafe_b64encode(json.dumps(v3).encode()).decode()
write("cashu_token", "v3_text", b"\x02" + v3_text.encode())
write("cashu_token", "v4_text", b"\x02" + token_b.encode())

# config: the `paydvm init` template (with and without [cashu]) and the example policies.
template = re.search(r'CONFIG_TEMPLATE: &str = r#"(.*?)"#;', read("src", "config", "template.rs"), re.S).group(1)
default_policy = read("policies", "examples", "default.toml")
strict_policy = read("policies", "examples", "strict.toml")
write("config", "template", template)
write("config", "template_default_policy", template + "\x00" + default_policy)
write("config", "template_strict_policy", template + "\x00" + strict_policy)
no_cashu = re.sub(r"\[cashu\].*?(?=\n# One \[\[offer\]\])", "", template, flags=re.S)
write("config", "no_cashu_mints", no_cashu + "\x00" + default_policy.replace(
    "trusted = []", 'trusted = [{ url = "https://mint.example", units = ["sat"] }]'))
write("config", "http_and_env", template.replace(
    'executor = { builtin = "text" }',
    'executor = { command = "/bin/true", env = { API_TOKEN = "s3cret-token" } }') +
    '\n[[offer]]\nkind = 5001\nexecutor = { http = "https://user:pw@exec.example/run?token=abcdef" }\n')

# wallet_answers: an LNURL pay response (0), callback answers (1), LNbits lookups (2, with
# byte 1 = 0: the hash of [7; 32]) and error bodies (3).
pay = dict(zap["lnurl_pay_response"])
write("wallet_answers", "pay_response", b"\x00" + json.dumps(pay).encode())
write("wallet_answers", "pay_error", b"\x00" + b'{"status":"ERROR","reason":"no such user"}')
write("wallet_answers", "callback", b"\x01" + json.dumps({"pr": zap["invoice"]["bolt11"], "routes": []}).encode())
write("wallet_answers", "callback_error", b"\x01" + b'{"status":"ERROR","reason":"amount out of range"}')
preimage = bytes([7] * 32)
h = hashlib.sha256(preimage).hexdigest()
row = {"checking_id": "x", "payment_hash": h, "wallet_id": "w", "amount": 21000, "fee": 0,
       "bolt11": "lnbc", "status": "success", "memo": "job x", "preimage": preimage.hex(),
       "labels": [], "extra": {}}
write("wallet_answers", "lnbits_paid", b"\x02\x00" + json.dumps({"paid": True, "preimage": preimage.hex(), "details": row}).encode())
out = dict(row, amount=-21000, fee=-1000)
write("wallet_answers", "lnbits_sent", b"\x02\x00" + json.dumps({"paid": True, "preimage": preimage.hex(), "details": out}).encode())
expired = dict(row, status="failed", labels=["expired"], preimage=None)
write("wallet_answers", "lnbits_expired", b"\x02\x00" + json.dumps({"paid": False, "details": expired}).encode())
write("wallet_answers", "lnbits_404", b"\x03" + b'{"detail":"Payment does not exist."}')
write("wallet_answers", "lnbits_520", b"\x03" + b'{"detail":"Internal invoice already paid.","status":"failed"}')

# Crash inputs found by the fuzzers, kept so every run starts from them (their regression tests
# are docs/fuzzing.md's findings 7 and 8). smoke.sh reads seeds/<target> for any target.
# cashu_token: a built token (mode 3) with a P2PK lock to another key, its nonce misspelt.
write("cashu_token", "regression_unreadable_lock", bytes.fromhex(
    "6747467767 7b4e681a01 304e010000 0000000544 697400".replace(" ", "")))
# ledger_tamper: a version-4 file labelled version 2.
write("ledger_tamper", "regression_schema_label", bytes(
    [112, 50, 3, 3, 101, 160, 0, 109, 101, 116, 112, 3, 96, 160]))
