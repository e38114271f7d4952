//! AWS Signature Version 4 for the JSON-protocol `POST`s the edge makes.
//!
//! The HMAC chain that derives the signing key is done by the `aws-sigv4` crate, once
//! per (isolate, day): the key depends only on the secret, the date, the region and the
//! service, so every later request of the day costs one SHA-256 of the body, one of the
//! canonical request and one HMAC. The canonical request is built here for the fixed
//! header set these calls use; a host test checks it against `aws-sigv4`'s own signer.

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// AWS credentials. `Debug` never prints the secret or the session token.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Signs requests for one service in one region, caching the day's signing key.
pub struct Signer {
    credentials: Credentials,
    region: String,
    service: &'static str,
    /// (`YYYYMMDD`, key) of the last signature.
    day_key: RefCell<Option<(String, [u8; 32])>>,
}

/// The headers to add to a request, `authorization` last.
pub type SignedHeaders = Vec<(&'static str, String)>;

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("credentials", &self.credentials).field("region", &self.region).field("service", &self.service).finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(credentials: Credentials, region: impl Into<String>, service: &'static str) -> Self {
        Self { credentials, region: region.into(), service, day_key: RefCell::new(None) }
    }

    /// Signs a `POST /` (path `path`, no query) to `host` with the given content type,
    /// `x-amz-target` and body, at `now_ms`. `host` is the `Host` header as the HTTP
    /// client will send it (with a port when not the scheme's default).
    pub fn sign_post(&self, host: &str, path: &str, content_type: &str, target: &str, body: &[u8], now_ms: u64) -> SignedHeaders {
        let amz_date = amz_date(now_ms);
        let date = &amz_date[..8];
        let token = self.credentials.session_token.as_deref();

        let mut canonical = String::with_capacity(512);
        canonical.push_str("POST\n");
        canonical.push_str(path);
        canonical.push_str("\n\ncontent-type:");
        canonical.push_str(content_type);
        canonical.push_str("\nhost:");
        canonical.push_str(host);
        canonical.push_str("\nx-amz-date:");
        canonical.push_str(&amz_date);
        if let Some(token) = token {
            canonical.push_str("\nx-amz-security-token:");
            canonical.push_str(token);
        }
        canonical.push_str("\nx-amz-target:");
        canonical.push_str(target);
        let signed_headers =
            if token.is_some() { "content-type;host;x-amz-date;x-amz-security-token;x-amz-target" } else { "content-type;host;x-amz-date;x-amz-target" };
        canonical.push_str("\n\n");
        canonical.push_str(signed_headers);
        canonical.push('\n');
        canonical.push_str(&hex::encode(Sha256::digest(body)));

        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
        let signature = aws_sigv4::sign::v4::calculate_signature(self.signing_key(date, now_ms), string_to_sign.as_bytes());

        let mut headers = Vec::with_capacity(5);
        headers.push(("content-type", content_type.to_owned()));
        headers.push(("x-amz-target", target.to_owned()));
        headers.push(("x-amz-date", amz_date));
        if let Some(token) = token {
            headers.push(("x-amz-security-token", token.to_owned()));
        }
        headers.push((
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}", self.credentials.access_key_id),
        ));
        headers
    }

    fn signing_key(&self, date: &str, now_ms: u64) -> [u8; 32] {
        let mut cached = self.day_key.borrow_mut();
        match &*cached {
            Some((day, key)) if day == date => *key,
            _ => {
                // SystemTime::now() is unavailable on wasm32; a SystemTime built from the
                // epoch is fine.
                let time = UNIX_EPOCH + Duration::from_millis(now_ms);
                let derived = aws_sigv4::sign::v4::generate_signing_key(&self.credentials.secret_access_key, time, &self.region, self.service);
                let mut key = [0u8; 32];
                key.copy_from_slice(derived.as_ref());
                *cached = Some((date.to_owned(), key));
                key
            }
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` for `now_ms`.
fn amz_date(now_ms: u64) -> String {
    let iso = shared::time::rfc3339_ms(now_ms); // YYYY-MM-DDTHH:MM:SS.mmmZ
    let mut out = String::with_capacity(16);
    out.extend(iso[..19].chars().filter(|c| *c != '-' && *c != ':'));
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials as SdkCredentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4::SigningParams;

    /// What `aws-sigv4`'s complete signer produces for the same request.
    fn reference(creds: &Credentials, host: &str, target: &str, body: &[u8], now_ms: u64) -> String {
        let identity = SdkCredentials::new(&creds.access_key_id, &creds.secret_access_key, creds.session_token.clone(), None, "test").into();
        let params = SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("sqs")
            .time(UNIX_EPOCH + Duration::from_millis(now_ms))
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let date = amz_date(now_ms);
        let headers = [("content-type", "application/x-amz-json-1.0"), ("host", host), ("x-amz-date", date.as_str()), ("x-amz-target", target)];
        let request = SignableRequest::new("POST", format!("http://{host}/"), headers.into_iter(), SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let auth = instructions.headers().find(|(k, _)| *k == "authorization").unwrap().1.to_owned();
        auth
    }

    fn our(signer: &Signer, host: &str, target: &str, body: &[u8], now_ms: u64) -> SignedHeaders {
        signer.sign_post(host, "/", "application/x-amz-json-1.0", target, body, now_ms)
    }

    #[test]
    fn matches_the_reference_signer_with_and_without_session_token() {
        for token in [None, Some("FwoGZXIvYXdzEJr//////////session".to_owned())] {
            let creds = Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: token.clone(),
            };
            let signer = Signer::new(creds.clone(), "us-east-1", "sqs");
            for (now, body) in [(1_795_586_400_000u64, &b"{\"QueueUrl\":\"x\"}"[..]), (1_795_672_800_123, b"")] {
                let headers = our(&signer, "127.0.0.1:4566", "AmazonSQS.SendMessage", body, now);
                let auth = &headers.last().unwrap().1;
                assert_eq!(auth, &reference(&creds, "127.0.0.1:4566", "AmazonSQS.SendMessage", body, now));
                assert_eq!(headers.iter().any(|(k, _)| *k == "x-amz-security-token"), token.is_some());
            }
        }
    }

    #[test]
    fn day_key_is_cached_and_renewed_at_midnight() {
        let creds = Credentials { access_key_id: "AKID".into(), secret_access_key: "secret".into(), session_token: None };
        let signer = Signer::new(creds, "us-east-1", "dynamodb");
        let before_midnight = 1_795_651_199_000; // 2026-11-25T23:59:59Z
        our(&signer, "h", "t", b"", before_midnight);
        assert_eq!(signer.day_key.borrow().as_ref().unwrap().0, "20261125");
        our(&signer, "h", "t", b"", before_midnight + 1000);
        assert_eq!(signer.day_key.borrow().as_ref().unwrap().0, "20261126");
    }

    #[test]
    fn debug_hides_secrets() {
        let creds = Credentials { access_key_id: "AKID".into(), secret_access_key: "topsecret".into(), session_token: Some("tok".into()) };
        let shown = format!("{:?}", Signer::new(creds, "us-east-1", "sqs"));
        assert!(!shown.contains("topsecret") && !shown.contains("tok\""), "{shown}");
    }
}
