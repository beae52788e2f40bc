//! Loading the example files, defaults, and one test per validation rule.

use super::*;

const FILE: &str = "policies/examples/x.toml";
const KEY_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

fn example(name: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    Policy::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_toml_str(text, FILE)
}

/// A pricing entry for kind 5050, so other sections can refer to an offered kind.
const OFFERED: &str = "[[pricing.kind]]\nkind = 5050\nmode = \"fixed\"\namount_msat = 1000\n";

fn per_unit(extra: &str) -> String {
    format!("[[pricing.kind]]\nkind = 5002\nmode = \"per_unit\"\nunit = \"word\"\n{extra}\n")
}

#[test]
fn every_example_file_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "found {seen} example files");
}

#[test]
fn default_example_prices_its_three_kinds() {
    let policy = example("default.toml");
    let words = |words| InputMeasure {
        words,
        ..InputMeasure::default()
    };
    assert_eq!(
        policy.price(5050, &words(1)),
        Ok(PriceDecision::Charge(Msat::from_msat(10_000)))
    );
    assert_eq!(policy.price(5001, &words(1)), Ok(PriceDecision::Free));
    // 1000 + 0.5 × 3001 = 2500.5 → 2501
    assert_eq!(
        policy.price(5002, &words(3_001)),
        Ok(PriceDecision::Charge(Msat::from_msat(2_501)))
    );
    assert_eq!(policy.price(5100, &words(1)), Ok(PriceDecision::NotOffered));
    assert!(policy.trusted_mints().is_empty());
    assert!(policy.tiers().is_empty());
}

#[test]
fn strict_example_credits_everything() {
    let policy = example("strict.toml");
    assert_eq!(policy.quote_expiry_ms(), 120_000);
    assert_eq!(policy.on_failure(2, true), FailureDecision::Credit);
    assert_eq!(
        policy.on_cancel(Msat::from_msat(50_000)),
        Some(Disposition::Credit)
    );
    assert_eq!(
        policy.on_expiry(Msat::from_msat(50_000)),
        Some(Disposition::Credit)
    );
    let tier = policy.tier("pro-monthly").unwrap();
    assert_eq!(tier.quota, 500);
    assert!(tier.covers(5100) && !tier.covers(5002));
    assert_eq!(policy.tier("basic"), None);
    let mint = policy.trusted_mint("http://127.0.0.1:3338/").unwrap();
    assert!(mint.accepts_unit("sat") && !mint.accepts_unit("usd"));
    assert_eq!(policy.trusted_mint("http://127.0.0.1:3339"), None);
}

#[test]
fn empty_file_gives_documented_defaults() {
    let policy = parse("").unwrap();
    assert_eq!(policy.quote_expiry_ms(), 600_000);
    assert_eq!(policy.pricing().offered_kinds().count(), 0);
    assert_eq!(policy.payments(), &PaymentRules::default());
    assert_eq!(policy.payments().refund_min, Msat::from_msat(1_000));
    assert_eq!(policy.payments().late_grace_ms, 300_000);
    assert_eq!(policy.failures(), &FailureRules::default());
    assert_eq!(policy.failures().max_attempts, 3);
    assert_eq!(policy.admission(), &AdmissionRules::default());
    assert_eq!(policy.admission().max_input_bytes, 65_536);
    assert_eq!(policy.admission().max_pending_quotes_per_pubkey, 5);
    assert_eq!(policy.result_expiration_ms(), None);
}

#[test]
fn validation_errors_name_file_field_and_reason() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("bad decimal", per_unit("per_unit_msat = \"0.5.1\""),
            "pricing.kind[0].per_unit_msat", "\"0.5.1\" is not a decimal number"),
        ("negative per-unit", per_unit("per_unit_msat = \"-0.5\""),
            "pricing.kind[0].per_unit_msat", "must not be negative, got -0.5"),
        ("float per-unit", per_unit("per_unit_msat = 0.5"),
            "pricing.kind[0].per_unit_msat", "write decimal prices as a string"),
        ("too many decimals", per_unit("per_unit_msat = \"0.0000000000000000001\""),
            "pricing.kind[0].per_unit_msat", "at most 18 decimal places"),
        ("missing unit", "[[pricing.kind]]\nkind = 5002\nmode = \"per_unit\"\nper_unit_msat = \"1\"".into(),
            "pricing.kind[0].unit", "required with mode = \"per_unit\""),
        ("unknown unit", "[[pricing.kind]]\nkind = 5002\nmode = \"per_unit\"\nunit = \"token\"\nper_unit_msat = \"1\"".into(),
            "pricing.kind[0].unit", "unknown unit \"token\""),
        ("min above max", per_unit("per_unit_msat = \"1\"\nmin_msat = 10\nmax_msat = 5"),
            "pricing.kind[0].min_msat", "above max_msat"),
        ("kind out of range", format!("{OFFERED}[[pricing.kind]]\nkind = 7000\nmode = \"free\""),
            "pricing.kind[1].kind", "job kind 7000 is not a NIP-90 request kind (5000-5999)"),
        ("duplicate kind", format!("{OFFERED}{OFFERED}"),
            "pricing.kind[1].kind", "job kind 5050 is listed twice (also at pricing.kind[0])"),
        ("unknown mode", "[[pricing.kind]]\nkind = 5050\nmode = \"cheap\"".into(),
            "pricing.kind[0].mode", "unknown mode \"cheap\""),
        ("fixed without amount", "[[pricing.kind]]\nkind = 5050\nmode = \"fixed\"".into(),
            "pricing.kind[0].amount_msat", "required with mode = \"fixed\""),
        ("fixed with per-unit field", format!("{OFFERED}base_msat = 5"),
            "pricing.kind[0].base_msat", "only allowed with mode = \"per_unit\""),
        ("free with amount", "[[pricing.kind]]\nkind = 5050\nmode = \"free\"\namount_msat = 5".into(),
            "pricing.kind[0].amount_msat", "only allowed with mode = \"fixed\""),
        ("overflowing price", "[[pricing.kind]]\nkind = 5050\nmode = \"fixed\"\namount_msat = 9000000000000000000".into(),
            "pricing.kind[0].amount_msat", "more than the total bitcoin supply"),
        ("overflowing per-unit rate", per_unit("per_unit_msat = \"99999999999999999999\""),
            "pricing.kind[0].per_unit_msat", "more than the total bitcoin supply"),
        ("negative amount", "[[pricing.kind]]\nkind = 5050\nmode = \"fixed\"\namount_msat = -5".into(),
            "pricing.kind[0].amount_msat", "must not be negative"),
        ("zero fixed price", "[[pricing.kind]]\nkind = 5050\nmode = \"fixed\"\namount_msat = 0".into(),
            "pricing.kind[0].amount_msat", "must be greater than 0"),
        ("zero expiry", "[quote]\nexpiry_secs = 0".into(),
            "quote.expiry_secs", "must be between 1 and 86400, got 0"),
        ("bad overpayment choice", "[payments]\noverpayment = \"keep\"".into(),
            "payments.overpayment", "unknown choice \"keep\""),
        ("negative refund minimum", "[payments]\nrefund_min_msat = -1".into(),
            "payments.refund_min_msat", "must not be negative"),
        ("grace too long", "[payments.late]\ngrace_secs = 100000".into(),
            "payments.late.grace_secs", "must be between 0 and 86400"),
        ("too many attempts", "[failures]\nmax_attempts = 11".into(),
            "failures.max_attempts", "must be between 1 and 10, got 11"),
        ("bad cancel choice", "[failures]\non_cancel = \"keep\"".into(),
            "failures.on_cancel", "expected \"refund\" or \"credit\""),
        ("npub instead of hex", "[admission]\nfree_list = [\"npub1abc\"]".into(),
            "admission.free_list[0]", "not a 64-character lowercase hex x-only pubkey"),
        ("uppercase pubkey", format!("[admission]\nblock_list = [\"{}\"]", KEY_A.to_ascii_uppercase()),
            "admission.block_list[0]", "lowercase hex"),
        ("pubkey in both lists", format!("[admission]\nfree_list = [\"{KEY_A}\"]\nblock_list = [\"{KEY_A}\"]"),
            "admission.block_list[0]", "is in both admission.free_list and admission.block_list"),
        ("zero input limit", "[admission]\nmax_input_bytes = 0".into(),
            "admission.max_input_bytes", "must be at least 1, got 0"),
        ("zero quote limit", "[admission]\nmax_pending_quotes_per_pubkey = 0".into(),
            "admission.max_pending_quotes_per_pubkey", "must be between 1 and"),
        ("short result expiration", "[results]\nexpiration_secs = 59".into(),
            "results.expiration_secs", "must be at least 60, got 59"),
        ("feedback wait too long", "[results]\nprocessing_feedback_after_secs = 3601".into(),
            "results.processing_feedback_after_secs", "must be between 0 and 3600, got 3601"),
        ("negative feedback wait", "[results]\nprocessing_feedback_after_secs = -1".into(),
            "results.processing_feedback_after_secs", "must be between 0 and 3600, got -1"),
        ("plain http mint", "[[mints.trusted]]\nurl = \"http://mint.example.com\"\nunits = [\"sat\"]".into(),
            "mints.trusted[0].url", "must start with https://"),
        ("duplicate mint", "[[mints.trusted]]\nurl = \"https://m.example\"\nunits = [\"sat\"]\n[[mints.trusted]]\nurl = \"https://m.example/\"\nunits = [\"sat\"]".into(),
            "mints.trusted[1].url", "mint https://m.example is listed twice"),
        ("mint without units", "[[mints.trusted]]\nurl = \"https://m.example\"\nunits = []".into(),
            "mints.trusted[0].units", "at least one unit"),
        ("uppercase unit", "[[mints.trusted]]\nurl = \"https://m.example\"\nunits = [\"SAT\"]".into(),
            "mints.trusted[0].units[0]", "lowercase"),
        ("tier id", format!("{OFFERED}[[subscriptions.tier]]\nid = \"Pro\"\nname = \"Pro\"\nprice_msat = 1\nperiod_secs = 3600\nquota = 1\nkinds = [5050]"),
            "subscriptions.tier[0].id", "only a-z, 0-9 and -"),
        ("tier period", format!("{OFFERED}[[subscriptions.tier]]\nid = \"pro\"\nname = \"Pro\"\nprice_msat = 1\nperiod_secs = 60\nquota = 1\nkinds = [5050]"),
            "subscriptions.tier[0].period_secs", "must be at least 3600, got 60"),
        ("tier kind not offered", format!("{OFFERED}[[subscriptions.tier]]\nid = \"pro\"\nname = \"Pro\"\nprice_msat = 1\nperiod_secs = 3600\nquota = 1\nkinds = [5050, 5002]"),
            "subscriptions.tier[0].kinds[1]", "job kind 5002 is not offered"),
        ("tier zero quota", format!("{OFFERED}[[subscriptions.tier]]\nid = \"pro\"\nname = \"Pro\"\nprice_msat = 1\nperiod_secs = 3600\nquota = 0\nkinds = [5050]"),
            "subscriptions.tier[0].quota", "must be between 1 and"),
        ("tier paid_ahead", format!("{OFFERED}[[subscriptions.tier]]\nid = \"pro\"\nname = \"Pro\"\nprice_msat = 1\nperiod_secs = 3600\nquota = 1\nkinds = [5050]\npaid_ahead = \"keep\""),
            "subscriptions.tier[0].paid_ahead", "is not one of \"next_period\", \"refund\""),
    ];
    assert!(cases.len() >= 12);
    for (name, text, field, reason) in cases {
        let err = match parse(&text) {
            Ok(_) => panic!("{name}: accepted:\n{text}"),
            Err(err) => err,
        };
        assert_eq!(err.field(), Some(field), "{name}: {err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{FILE}: {field}: ")) && message.contains(reason),
            "{name}: got {message:?}, wanted {field:?} and {reason:?}"
        );
    }
}

#[test]
fn error_display_matches_documented_shape() {
    let err = parse(&format!(
        "{OFFERED}[[pricing.kind]]\nkind = 7000\nmode = \"free\""
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "policies/examples/x.toml: pricing.kind[1].kind: job kind 7000 is not a NIP-90 request kind (5000-5999)"
    );
}

#[test]
fn syntax_and_type_errors_name_file_line_and_key() {
    let cases = [
        (
            "unknown top-level section",
            "[quotes]\nexpiry_secs = 5",
            "unknown field `quotes`",
        ),
        (
            "unknown field",
            "[quote]\nexpiry_secs = 60\nexpiry = 5",
            "unknown field `expiry`",
        ),
        (
            "unknown field in a kind",
            "[[pricing.kind]]\nkind = 5050\nmode = \"free\"\nprice = 1",
            "unknown field `price`",
        ),
        (
            "wrong type",
            "[quote]\nexpiry_secs = \"600\"",
            "invalid type",
        ),
        ("broken toml", "[quote\nexpiry_secs = 600", "line 1"),
    ];
    for (name, text, fragment) in cases {
        let err = parse(text).unwrap_err();
        assert!(matches!(err, PolicyError::Syntax { .. }), "{name}: {err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{FILE}: ")) && message.contains(fragment),
            "{name}: {message}"
        );
    }
    let err = parse("[quote]\nexpiry_secs = 60\nexpiry = 5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn unreadable_file_names_the_path() {
    let err = Policy::load("/nonexistent/policy.toml").unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(err
        .to_string()
        .starts_with("/nonexistent/policy.toml: cannot read policy file"));
}

#[test]
fn quote_and_result_expiry_are_checked_additions() {
    let policy = parse("[quote]\nexpiry_secs = 60\n[results]\nexpiration_secs = 3600").unwrap();
    assert_eq!(policy.quote_expires_at(1_000), Ok(61_000));
    assert_eq!(policy.result_expires_at(1_000), Ok(Some(3_601_000)));
    assert_eq!(
        policy.quote_expires_at(u64::MAX),
        Err(DecisionError::TimeOverflow {
            now_ms: u64::MAX,
            added_ms: 60_000
        })
    );
    assert!(policy.result_expires_at(u64::MAX).is_err());
    assert_eq!(parse("").unwrap().result_expires_at(5), Ok(None));
}

#[test]
fn cancel_refunds_or_credits_what_is_held() {
    let refund = parse("[failures]\non_cancel = \"refund\"").unwrap();
    assert_eq!(refund.on_cancel(Msat::ZERO), None);
    assert_eq!(
        refund.on_cancel(Msat::from_msat(5_000)),
        Some(Disposition::Refund)
    );
    assert_eq!(
        refund.on_cancel(Msat::from_msat(999)),
        Some(Disposition::Credit),
        "below refund_min_msat"
    );
    let credit = parse("[failures]\non_cancel = \"credit\"").unwrap();
    assert_eq!(
        credit.on_cancel(Msat::from_msat(5_000)),
        Some(Disposition::Credit)
    );
}

#[test]
fn pricing_overflow_is_an_error_not_a_wrap() {
    let policy = parse(&per_unit("per_unit_msat = \"1000000000000000000\"")).unwrap();
    let input = InputMeasure {
        words: u64::MAX,
        ..InputMeasure::default()
    };
    assert_eq!(
        policy.price(5002, &input),
        Err(DecisionError::PriceTooLarge { kind: 5002 })
    );
}
