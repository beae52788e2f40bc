//! Cashu tokens from a request's `cashu` tag (V3 `cashuA…`, V4 `cashuB…`) through
//! `verify_token` and `token_mint`.
//!
//! Input: byte 0 picks the mode.
//! - `0`: `cashuA` + base64url of the rest: the fuzzer writes the V3 JSON itself.
//! - `1`: `cashuB` + base64url of the rest: the fuzzer writes the V4 CBOR itself.
//! - `2`: the rest as text, as given.
//! - otherwise a token built here: up to 6 proofs signed by the test mint for secrets the fuzzer
//!   writes (see `paydvm_fuzz::cashu`), each maybe broken in one place or stripped of its DLEQ;
//!   V3 (maybe with a second mint, with or without a unit) or V4; a mint URL and unit from pools;
//!   the serialised token maybe changed in one character.
//!
//! Asserts: no panic; an accepted token comes from the trusted mint, is worth more than nothing
//! and at most `MAX_TOKEN_MSAT`, holds at most `MAX_PROOFS` proofs, each in the token's unit,
//! taken once, really signed by the mint when it carries a DLEQ proof, and either a plain secret
//! or locked so that only our NutZap key can spend it; its id is `token_id` of its Ys and names
//! the request as the target; `token_mint` agrees on the mint; no error (`Display` or `Debug`)
//! repeats the token (a body of 16 or more characters without spaces).
#![no_main]

use bitcoin::base64::engine::general_purpose::URL_SAFE;
use bitcoin::base64::Engine as _;
use cdk::mint_url::MintUrl;
use cdk::nuts::nut00::token::TokenV4Token;
use cdk::nuts::{CurrencyUnit, Proof, Token, TokenV3, TokenV4};
use libfuzzer_sys::fuzz_target;
use paydvm_fuzz::cashu::{self, Taken, FIXTURE, NOW};
use paydvm_fuzz::input::Input;
use paydvm_mints::nutzap::MAX_PROOFS;
use paydvm_mints::token::{token_mint, MAX_TOKEN_MSAT};
use paydvm_mints::{token_id, verify_token, RequestToken};

const JOB: &str = "1637f5ce042acbe867f248c707180c1b040e1b138d48551f701eb44eaff7c341";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = Input::new(rest);
    let token = match mode % 4 {
        0 => format!("cashuA{}", URL_SAFE.encode(rest)),
        1 => format!("cashuB{}", URL_SAFE.encode(rest)),
        2 => String::from_utf8_lossy(rest).into_owned(),
        _ => built(&mut input),
    };
    let now = if input.coin() {
        NOW
    } else {
        input.number(&[NOW, NOW + 3600, u64::MAX])
    };
    check(&token, now);
});

fn check(token: &str, now: u64) {
    let f = &*FIXTURE;
    let offered = RequestToken {
        token,
        job: JOB,
        customer: &f.customer,
    };
    let body = token.get(6..).unwrap_or("");
    match verify_token(&offered, &f.us, &f.registry, now) {
        Ok(v) => {
            cashu::check_accepted(&v, Taken::Token, now);
            assert!(v.amount.as_msat() > 0 && v.amount.as_msat() <= MAX_TOKEN_MSAT);
            assert!(!v.proofs.is_empty() && v.proofs.len() <= MAX_PROOFS);
            assert_eq!(v.event_id, token_id(&v.ys));
            assert_eq!(v.target.as_deref(), Some(JOB));
            assert_eq!(v.sender, f.customer);
            assert_eq!(token_mint(token).as_deref(), Ok(f.url.as_str()));
        }
        Err(e) => {
            // A real token's body is base64 without spaces and long; a short or spaced body
            // can be a piece of the error's own fixed text (the fuzzer finds those).
            if body.len() >= 16 && !body.contains(char::is_whitespace) {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains(body), "an error repeats the token: {shown}");
            }
        }
    }
}

fn built(input: &mut Input) -> String {
    let f = &*FIXTURE;
    let n = input.below(7);
    let proofs: Vec<Proof> = (0..n)
        .map(|_| {
            let mut p = cashu::proof(input);
            if input.byte() < 64 {
                p.dleq = None;
            }
            p
        })
        .collect();
    let url = input.pick(&[
        f.url.clone(),
        f.url.clone(),
        format!("{}/", f.url.to_uppercase()),
        "https://other-mint.example".into(),
    ]);
    let Ok(mint) = url.parse::<MintUrl>() else {
        return String::new();
    };
    let unit = input.pick(&[
        CurrencyUnit::Sat,
        CurrencyUnit::Sat,
        CurrencyUnit::Msat,
        CurrencyUnit::Usd,
    ]);
    let mut text = if input.coin() {
        let unit = if input.coin() { Some(unit) } else { None };
        let Ok(mut v3) = TokenV3::new(mint, proofs.clone(), None, unit) else {
            return String::new();
        };
        if input.byte() < 16 {
            if let Ok(other) = "https://other-mint.example".parse::<MintUrl>() {
                let extra = TokenV3::new(other, proofs, None, None).map(|t| t.token);
                v3.token.extend(extra.unwrap_or_default());
            }
        }
        Token::TokenV3(v3).to_string()
    } else {
        let mut groups: Vec<TokenV4Token> = Vec::new();
        for p in proofs {
            match groups
                .iter_mut()
                .find(|g| g.keyset_id == p.keyset_id.into())
            {
                Some(g) => g.proofs.push(p.into()),
                None => groups.push(TokenV4Token::new(p.keyset_id, vec![p])),
            }
        }
        Token::TokenV4(TokenV4 {
            mint_url: mint,
            unit,
            memo: None,
            token: groups,
        })
        .to_string()
    };
    if input.byte() < 16 && text.len() > 6 {
        let mut bytes = text.into_bytes();
        let at = 6 + input.below(bytes.len() - 6);
        bytes[at] = input.pick(b"AZaz09-_=+/");
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}
