//! The worker's settings: any `NAME=value` lines through `Config::from_lookup`. A
//! refusal names each bad setting and never echoes a secret's value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vars: Vec<(String, String)> = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let lookup = |name: &str| vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Err(problems) = worker_native::config::Config::from_lookup(lookup) {
        assert!(!problems.is_empty());
        for p in &problems {
            assert!(!p.field.is_empty(), "a problem names its setting");
            if let Some(token) = lookup("GATEWAY_TOKEN").filter(|t| t.len() >= 8) {
                assert!(!p.message.contains(&token), "the gateway token in a message");
            }
        }
    }
});
