//! The worker's settings: any `NAME=value` lines through `Config::from_lookup`. A
//! refusal names each bad setting, and the gateway token's value never changes what is
//! said (it is never echoed: the problems are the same with the token left out).
#![no_main]
use libfuzzer_sys::fuzz_target;
use worker_native::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vars: Vec<(String, String)> = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let lookup = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let without_token = |name: &str| if name == "GATEWAY_TOKEN" { None } else { lookup(name) };
    let said =
        |r: Result<Config, Vec<shared::error::FieldError>>| r.err().map(|ps| ps.into_iter().map(|p| format!("{} {}", p.field, p.message)).collect::<Vec<_>>());
    let (with, without) = (said(Config::from_lookup(lookup)), said(Config::from_lookup(without_token)));
    if let Some(problems) = &with {
        assert!(!problems.is_empty() && problems.iter().all(|p| !p.starts_with(' ')), "a problem names its setting: {problems:?}");
    }
    assert_eq!(with, without, "the gateway token changed what was said");
});
