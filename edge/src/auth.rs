//! Who is calling: bearer-token (JWT) verification.
//!
//! Keys decide the algorithm, never the token alone: an `HS256` token is checked only
//! against the configured shared secret, and an `RS256` / `ES256` / `EdDSA` token only
//! against a JWKS key of the matching type (found by `kid`). Anything else, `none`
//! included, is refused before any signature work. `exp` is required; `nbf` and `iat`
//! are honoured with a leeway; `iss` and `aud` are checked when configured. The account
//! a request acts for is one claim of the token (`sub` by default).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Rsa, RsaPublicKey, StrongKey};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, TimeOptions, UntrustedToken, ValidationError};
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::error::ErrorCode;

/// Longest token accepted; real tokens are well under 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest account id taken from a token.
const MAX_ACCOUNT_CHARS: usize = 128;

/// Why a token was refused. Each maps to a 401 with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0:?} is not accepted")]
    AlgorithmNotAccepted(String),
    #[error("no key with id {0:?}")]
    UnknownKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("token has no exp claim")]
    NoExpiry,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issuer does not match")]
    WrongIssuer,
    #[error("token audience does not match")]
    WrongAudience,
    #[error("token has no usable {0:?} claim")]
    NoAccount(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::MissingToken,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::NotYetValid => ErrorCode::TokenNotYetValid,
            _ => ErrorCode::InvalidToken,
        }
    }
}

/// A public key from a JWKS, tagged with the one algorithm it verifies.
#[derive(Debug, Clone)]
pub enum PublicKey {
    Rs256(Box<StrongKey<RsaPublicKey>>),
    Es256(p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_compact::PublicKey),
}

impl PublicKey {
    fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::Rs256(_) => "RS256",
            PublicKey::Es256(_) => "ES256",
            PublicKey::EdDsa(_) => "EdDSA",
        }
    }
}

/// The keys of a JWKS document, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, PublicKey>,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<Value>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures here (symmetric,
    /// encryption-only, weak RSA, unknown curves, or with an `alg` that contradicts
    /// their type) are skipped rather than failing the whole set.
    pub fn from_jwks(json: &[u8]) -> Result<Self, String> {
        let doc: JwksDoc = serde_json::from_slice(json).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
        let mut keys = HashMap::new();
        for raw in doc.keys {
            let kid = raw.get("kid").and_then(Value::as_str).unwrap_or_default().to_owned();
            if raw.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<JsonWebKey<'_>>(raw.clone()) else { continue };
            let key = match &jwk {
                JsonWebKey::Rsa { .. } => RsaPublicKey::try_from(&jwk).ok().and_then(|k| StrongKey::try_from(k).ok()).map(|k| PublicKey::Rs256(Box::new(k))),
                JsonWebKey::EllipticCurve { curve, .. } if curve == "P-256" => p256::ecdsa::VerifyingKey::try_from(&jwk).ok().map(PublicKey::Es256),
                JsonWebKey::KeyPair { curve, .. } if curve == "Ed25519" => ed25519_compact::PublicKey::try_from(&jwk).ok().map(PublicKey::EdDsa),
                _ => None,
            };
            let Some(key) = key else { continue };
            if raw.get("alg").and_then(Value::as_str).is_some_and(|alg| alg != key.algorithm()) {
                continue;
            }
            keys.insert(kid, key);
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for `kid`; a token without `kid` may use the set's only key.
    fn find(&self, kid: Option<&str>) -> Option<&PublicKey> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
    }
}

/// Token verification settings, built once per isolate.
pub struct JwtVerifier {
    secret: Option<Hs256Key>,
    issuer: Option<String>,
    audience: Option<String>,
    account_claim: String,
    leeway: Duration,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.secret.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("account_claim", &self.account_claim)
            .finish()
    }
}

impl JwtVerifier {
    pub fn new(secret: Option<&str>, issuer: Option<String>, audience: Option<String>, account_claim: String, leeway_seconds: u32) -> Self {
        Self { secret: secret.map(|s| Hs256Key::new(s.as_bytes())), issuer, audience, account_claim, leeway: Duration::seconds(i64::from(leeway_seconds)) }
    }

    /// The `kid` and algorithm a token names, read before any verification so that the
    /// caller can fetch a fresh JWKS for an unknown `kid`. Only the header is decoded:
    /// the full parse happens once, in [`Self::verify`].
    pub fn peek(token: &str) -> Result<(String, Option<String>), AuthError> {
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            kid: Option<String>,
        }
        use base64::Engine;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let encoded = token.split('.').next().unwrap_or_default();
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| AuthError::Malformed)?;
        let header: Header = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
        Ok((header.alg, header.kid))
    }

    /// Verifies `token` at `now_ms` and returns the account it acts for.
    pub fn verify(&self, token: &str, keys: &KeySet, now_ms: u64) -> Result<String, AuthError> {
        let untrusted = parse(token)?;
        let claims = match untrusted.algorithm() {
            "HS256" => {
                let secret = self.secret.as_ref().ok_or_else(|| AuthError::AlgorithmNotAccepted("HS256".into()))?;
                Hs256.validator::<Map<String, Value>>(secret).validate(&untrusted)
            }
            alg @ ("RS256" | "ES256" | "EdDSA") => {
                let kid = untrusted.header().key_id.as_deref();
                let key = keys.find(kid).ok_or_else(|| AuthError::UnknownKey(kid.unwrap_or_default().to_owned()))?;
                if key.algorithm() != alg {
                    return Err(AuthError::AlgorithmNotAccepted(alg.to_owned()));
                }
                match key {
                    PublicKey::Rs256(k) => Rsa::rs256().validator(k.as_ref().as_ref()).validate(&untrusted),
                    PublicKey::Es256(k) => Es256.validator(k).validate(&untrusted),
                    PublicKey::EdDsa(k) => Ed25519.validator(k).validate(&untrusted),
                }
            }
            other => return Err(AuthError::AlgorithmNotAccepted(other.to_owned())),
        }
        .map_err(|e| match e {
            ValidationError::InvalidSignature | ValidationError::InvalidSignatureLen { .. } | ValidationError::MalformedSignature(_) => AuthError::BadSignature,
            _ => AuthError::Malformed,
        })?
        .into_parts()
        .1;
        self.check_claims(&claims, now_ms)
    }

    fn check_claims(&self, claims: &Claims<Map<String, Value>>, now_ms: u64) -> Result<String, AuthError> {
        let now = DateTime::<Utc>::from_timestamp_millis(now_ms as i64).unwrap_or_default();
        let options = TimeOptions::new(self.leeway, move || now);
        claims.validate_expiration(&options).map_err(|e| match e {
            ValidationError::NoClaim(_) => AuthError::NoExpiry,
            _ => AuthError::Expired,
        })?;
        if claims.not_before.is_some() {
            claims.validate_maturity(&options).map_err(|_| AuthError::NotYetValid)?;
        }
        if claims.issued_at.is_some_and(|iat| iat > now + self.leeway) {
            return Err(AuthError::NotYetValid);
        }
        let custom = &claims.custom;
        if let Some(issuer) = &self.issuer {
            if custom.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match custom.get("aud") {
                Some(Value::String(a)) => a == audience,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience.as_str())),
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        let account = match custom.get(&self.account_claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        if account.trim().is_empty() || account.chars().count() > MAX_ACCOUNT_CHARS || account.chars().any(char::is_control) {
            return Err(AuthError::NoAccount(self.account_claim.clone()));
        }
        Ok(account)
    }
}

fn parse(token: &str) -> Result<UntrustedToken<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    UntrustedToken::new(token).map_err(|_| AuthError::Malformed)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}
