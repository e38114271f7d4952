//! The gateway's answers: any status and `Retry-After` value (seconds or an HTTP
//! date) classified; a wait is never longer than the cap the worker allows.
#![no_main]
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use worker_native::gateway::{classify, parse_retry_after, MAX_RETRY_AFTER};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]);
    let retry_after = std::str::from_utf8(&data[2..]).ok();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_586_400);
    if let Some(v) = retry_after {
        if let Some(wait) = parse_retry_after(v, now) {
            assert!(wait <= MAX_RETRY_AFTER, "{v:?} waits {wait:?}");
        }
    }
    let _ = classify(status, retry_after, now);
});
