//! JWT verification against real keys: HS256, RS256, ES256 and EdDSA, and every way a
//! token must be refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use edge::auth::{bearer_token, AuthError, JwtVerifier, KeySet};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Rsa, RsaPrivateKey};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde_json::{json, Map, Value};

const NOW_MS: u64 = 1_795_586_400_000;
const SECRET: &str = "dev-secret-0123456789abcdef0123456789abcdef";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(NOW_MS as i64).unwrap()
}

fn claims(custom: Value, exp_in: Option<i64>) -> Claims<Map<String, Value>> {
    let Value::Object(map) = custom else { panic!() };
    let mut c = Claims::new(map);
    c.expiration = exp_in.map(|s| now() + Duration::seconds(s));
    c
}

fn hs256(secret: &str, c: &Claims<Map<String, Value>>) -> String {
    Hs256.token(&Header::empty(), c, &Hs256Key::new(secret.as_bytes())).unwrap()
}

fn verifier() -> JwtVerifier {
    JwtVerifier::new(Some(SECRET), None, None, "sub".into(), 30)
}

fn verify(v: &JwtVerifier, token: &str) -> Result<String, AuthError> {
    v.verify(token, &KeySet::default(), NOW_MS)
}

struct Keys {
    rsa: RsaPrivateKey,
    es: p256::ecdsa::SigningKey,
    ed: ed25519_compact::SecretKey,
    jwks: Vec<u8>,
}

fn keys() -> Keys {
    let rsa_jwk: Value = serde_json::from_str(include_str!("fixtures/rsa-test-key.jwk.json")).unwrap();
    let rsa = RsaPrivateKey::try_from(&serde_json::from_value::<JsonWebKey<'_>>(rsa_jwk.clone()).unwrap()).unwrap();
    let es = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
    let ed = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([9u8; 32])).sk;
    let public = |jwk: JsonWebKey<'_>, kid: &str, alg: &str| {
        let mut v = serde_json::to_value(jwk.to_verifying_key()).unwrap();
        v["kid"] = json!(kid);
        v["alg"] = json!(alg);
        v["use"] = json!("sig");
        v
    };
    let doc = json!({"keys": [
        public(JsonWebKey::from(&rsa), "rsa-1", "RS256"),
        public(JsonWebKey::from(es.verifying_key()), "ec-1", "ES256"),
        public(JsonWebKey::from(&ed.public_key()), "ed-1", "EdDSA"),
        {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_jwk["n"], "e": rsa_jwk["e"]},
    ]});
    Keys { rsa, es, ed, jwks: serde_json::to_vec(&doc).unwrap() }
}

fn with_kid(kid: &str) -> Header {
    Header::empty().with_key_id(kid)
}

#[test]
fn hs256_token_gives_the_account() {
    let t = hs256(SECRET, &claims(json!({"sub": "creator-1"}), Some(600)));
    assert_eq!(verify(&verifier(), &t), Ok("creator-1".into()));
}

#[test]
fn account_comes_from_the_configured_claim() {
    let v = JwtVerifier::new(Some(SECRET), None, None, "userId".into(), 30);
    let t = hs256(SECRET, &claims(json!({"sub": "ignored", "userId": 42}), Some(600)));
    assert_eq!(verify(&v, &t), Ok("42".into()));
    let t = hs256(SECRET, &claims(json!({"sub": "only-sub"}), Some(600)));
    assert_eq!(verify(&v, &t), Err(AuthError::NoAccount("userId".into())));
}

#[test]
fn alg_none_is_refused() {
    let header = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = B64.encode(format!(r#"{{"sub":"creator-1","exp":{}}}"#, NOW_MS / 1000 + 600));
    for token in [format!("{header}.{payload}."), format!("{header}.{payload}.c2ln")] {
        assert_eq!(verify(&verifier(), &token), Err(AuthError::AlgorithmNotAccepted("none".into())));
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let k = keys();
    let set = KeySet::from_jwks(&k.jwks).unwrap();
    // The classic confusion: HMAC keyed with the server's public RSA key material.
    let public = serde_json::to_string(&JsonWebKey::from(&k.rsa).to_verifying_key()).unwrap();
    let forged = Hs256.token(&with_kid("rsa-1"), &claims(json!({"sub": "creator-1"}), Some(600)), &Hs256Key::new(public.as_bytes())).unwrap();
    // With JWKS only, HS256 is not accepted at all.
    let jwks_only = JwtVerifier::new(None, None, None, "sub".into(), 30);
    assert_eq!(jwks_only.verify(&forged, &set, NOW_MS), Err(AuthError::AlgorithmNotAccepted("HS256".into())));
    // With a secret too, HS256 is checked against the secret only.
    assert_eq!(verifier().verify(&forged, &set, NOW_MS), Err(AuthError::BadSignature));
    // And a key's type decides its algorithm: an ES256 token naming the RSA key fails.
    let es_as_rsa = Es256.token(&with_kid("rsa-1"), &claims(json!({"sub": "c"}), Some(600)), &k.es).unwrap();
    assert_eq!(jwks_only.verify(&es_as_rsa, &set, NOW_MS), Err(AuthError::AlgorithmNotAccepted("ES256".into())));
}

#[test]
fn rs256_es256_and_eddsa_from_jwks() {
    let k = keys();
    let set = KeySet::from_jwks(&k.jwks).unwrap();
    assert_eq!(set.len(), 3, "oct and enc keys are skipped");
    let v = JwtVerifier::new(None, None, None, "sub".into(), 30);
    let c = claims(json!({"sub": "creator-9"}), Some(600));
    let tokens = [
        Rsa::rs256().token(&with_kid("rsa-1"), &c, &k.rsa).unwrap(),
        Es256.token(&with_kid("ec-1"), &c, &k.es).unwrap(),
        Ed25519.token(&with_kid("ed-1"), &c, &k.ed).unwrap(),
    ];
    for t in &tokens {
        assert_eq!(v.verify(t, &set, NOW_MS), Ok("creator-9".into()));
    }
    // Signed by a key the set does not have, under a kid it does not know.
    let other = p256::ecdsa::SigningKey::from_bytes(&[8u8; 32].into()).unwrap();
    let unknown = Es256.token(&with_kid("ec-2"), &c, &other).unwrap();
    assert_eq!(v.verify(&unknown, &set, NOW_MS), Err(AuthError::UnknownKey("ec-2".into())));
    assert_eq!(JwtVerifier::peek(&unknown).unwrap(), ("ES256".into(), Some("ec-2".into())));
    // Signed by another key under a known kid.
    let impostor = Es256.token(&with_kid("ec-1"), &c, &other).unwrap();
    assert_eq!(v.verify(&impostor, &set, NOW_MS), Err(AuthError::BadSignature));
}

#[test]
fn time_claims() {
    let v = verifier();
    let expired = hs256(SECRET, &claims(json!({"sub": "c"}), Some(-31)));
    assert_eq!(verify(&v, &expired), Err(AuthError::Expired));
    let within_leeway = hs256(SECRET, &claims(json!({"sub": "c"}), Some(-29)));
    assert_eq!(verify(&v, &within_leeway), Ok("c".into()));
    let no_exp = hs256(SECRET, &claims(json!({"sub": "c"}), None));
    assert_eq!(verify(&v, &no_exp), Err(AuthError::NoExpiry));

    let mut future = claims(json!({"sub": "c"}), Some(600));
    future.not_before = Some(now() + Duration::seconds(120));
    assert_eq!(verify(&v, &hs256(SECRET, &future)), Err(AuthError::NotYetValid));
    future.not_before = Some(now() + Duration::seconds(20));
    assert_eq!(verify(&v, &hs256(SECRET, &future)), Ok("c".into()));
    future.issued_at = Some(now() + Duration::seconds(3600));
    assert_eq!(verify(&v, &hs256(SECRET, &future)), Err(AuthError::NotYetValid));
    assert_eq!(AuthError::Expired.code().status(), 401);
}

#[test]
fn issuer_and_audience() {
    let v = JwtVerifier::new(Some(SECRET), Some("https://auth.example.com".into()), Some("messaging".into()), "sub".into(), 30);
    let good = hs256(SECRET, &claims(json!({"sub": "c", "iss": "https://auth.example.com", "aud": ["crm", "messaging"]}), Some(600)));
    assert_eq!(verify(&v, &good), Ok("c".into()));
    let wrong_iss = hs256(SECRET, &claims(json!({"sub": "c", "iss": "https://evil.example.com", "aud": "messaging"}), Some(600)));
    assert_eq!(verify(&v, &wrong_iss), Err(AuthError::WrongIssuer));
    let wrong_aud = hs256(SECRET, &claims(json!({"sub": "c", "iss": "https://auth.example.com", "aud": "crm"}), Some(600)));
    assert_eq!(verify(&v, &wrong_aud), Err(AuthError::WrongAudience));
    let no_aud = hs256(SECRET, &claims(json!({"sub": "c", "iss": "https://auth.example.com"}), Some(600)));
    assert_eq!(verify(&v, &no_aud), Err(AuthError::WrongAudience));
}

#[test]
fn tampering_and_malformed_tokens() {
    let v = verifier();
    let t = hs256(SECRET, &claims(json!({"sub": "creator-1"}), Some(600)));
    let parts: Vec<&str> = t.split('.').collect();
    let evil_payload = B64.encode(format!(r#"{{"sub":"creator-2","exp":{}}}"#, NOW_MS / 1000 + 600));
    assert_eq!(verify(&v, &format!("{}.{}.{}", parts[0], evil_payload, parts[2])), Err(AuthError::BadSignature));
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    assert_eq!(verify(&v, &format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig))), Err(AuthError::BadSignature));
    assert_eq!(verify(&v, &hs256("another-secret", &claims(json!({"sub": "c"}), Some(600)))), Err(AuthError::BadSignature));
    for bad in ["", "abc", "a.b", "a.b.c", "!!!.###.$$$", &format!("{}.{}", parts[0], parts[1])] {
        assert_eq!(verify(&v, bad), Err(AuthError::Malformed), "{bad:?}");
    }
    let oversized = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
    assert_eq!(verify(&v, &oversized), Err(AuthError::TooLarge));
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
    assert_eq!(bearer_token(Some("bearer  tok ")), Ok("tok"));
    for bad in [None, Some(""), Some("Bearer"), Some("Bearer "), Some("Basic dXNlcg==")] {
        assert_eq!(bearer_token(bad), Err(AuthError::Missing), "{bad:?}");
    }
}
