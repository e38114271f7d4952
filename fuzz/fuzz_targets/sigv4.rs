//! The SigV4 canonical request and signature over any host, path, target and body:
//! never a panic, always the same signature for the same request.
#![no_main]
use edge::sigv4::{Credentials, Signer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (host, path, target, body) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let credentials = Credentials { access_key_id: "AKIDFUZZ".into(), secret_access_key: "fuzz-secret".into(), session_token: Some("token".into()) };
    let signer = Signer::new(credentials, "us-east-1", "sqs");
    let now = 1_795_586_400_000 + data.len() as u64 * 86_400_000; // the day key cache crosses days
    let a = signer.sign_post(host, path, "application/x-amz-json-1.0", target, body.as_bytes(), now);
    let b = signer.sign_post(host, path, "application/x-amz-json-1.0", target, body.as_bytes(), now);
    assert_eq!(a, b);
    assert_eq!(a.last().map(|(name, _)| *name), Some("authorization"));
});
