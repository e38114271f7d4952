//! `POST /send` bodies: any bytes through JSON parsing and the request's validation.
//! An accepted request keeps every rule it was checked against.
#![no_main]
use libfuzzer_sys::fuzz_target;

const NOW_MS: u64 = 1_795_586_400_000;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(send) = shared::validation::validate_send(body, NOW_MS, 1000) {
        let recipients = send.recipients.as_slice();
        assert!(!recipients.is_empty() && recipients.len() <= 1000, "{} recipients accepted", recipients.len());
        assert!((shared::validation::MIN_PRIORITY..=shared::validation::MAX_PRIORITY).contains(&send.priority));
        assert!(!send.content.is_empty());
    }
});
