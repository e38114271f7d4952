//! A small client for the AWS JSON protocols (SQS and DynamoDB) over signed HTTP:
//! endpoints, SigV4, bounded retries with full-jitter backoff, and the classification
//! of AWS's answers into [`AwsError`]. No AWS SDK: the edge is a wasm Worker.

use serde_json::Value;

use crate::platform::{HttpRequest, Platform};
use crate::sigv4::{Credentials, Signer};

/// Attempts per call (the first one and two retries).
const MAX_ATTEMPTS: u32 = 3;
const BACKOFF_BASE_MS: u64 = 50;
const BACKOFF_CAP_MS: u64 = 1000;
const JSON_1_0: &str = "application/x-amz-json-1.0";

/// What went wrong with an AWS call. Nothing here carries AWS's message text or a key:
/// only the HTTP status and AWS's error type, which are safe to log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    #[error("{service} cannot be reached: {detail}")]
    Unreachable { service: &'static str, detail: String },
    #[error("{service} refused the request ({status} {kind})")]
    Refused { service: &'static str, status: u16, kind: String },
    #[error("{service} is unavailable ({status} {kind}) after {MAX_ATTEMPTS} attempts")]
    Unavailable { service: &'static str, status: u16, kind: String },
    /// A DynamoDB condition expression did not hold; `item` is the item as it was when
    /// the request asked for it (`ReturnValuesOnConditionCheckFailure`).
    #[error("condition check failed")]
    ConditionFailed { item: Option<Value> },
    #[error("{service} answered with a body that is not JSON")]
    BadResponse { service: &'static str },
}

/// The two services the edge calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Sqs,
    DynamoDb,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Sqs => "sqs",
            Service::DynamoDb => "dynamodb",
        }
    }

    fn target_prefix(self) -> &'static str {
        match self {
            Service::Sqs => "AmazonSQS.",
            Service::DynamoDb => "DynamoDB_20120810.",
        }
    }
}

/// One service's endpoint and signer.
#[derive(Debug)]
struct Endpoint {
    url: String,
    host: String,
    path: String,
    signer: Signer,
}

impl Endpoint {
    fn new(url: &str, credentials: Credentials, region: &str, service: Service) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("{url:?} is not an http(s) URL"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        // The Host header as fetch sends it: the port only when not the default.
        let host = match (scheme, authority.rsplit_once(':')) {
            ("http", Some((h, "80"))) | ("https", Some((h, "443"))) => h,
            _ => authority,
        };
        Ok(Self {
            url: format!("{scheme}://{authority}{path}"),
            host: host.to_owned(),
            path: path.to_owned(),
            signer: Signer::new(credentials, region, service.name()),
        })
    }
}

/// Signed JSON-protocol calls to SQS and DynamoDB.
#[derive(Debug)]
pub struct AwsClient {
    sqs: Endpoint,
    dynamodb: Endpoint,
}

impl AwsClient {
    /// Endpoints are AWS's regional ones, or `endpoint_url` for both (a local emulator).
    pub fn new(credentials: Credentials, region: &str, endpoint_url: Option<&str>) -> Result<Self, String> {
        let url = |service: &str| match endpoint_url {
            Some(u) => u.to_owned(),
            None => format!("https://{service}.{region}.amazonaws.com/"),
        };
        Ok(Self {
            sqs: Endpoint::new(&url("sqs"), credentials.clone(), region, Service::Sqs)?,
            dynamodb: Endpoint::new(&url("dynamodb"), credentials, region, Service::DynamoDb)?,
        })
    }

    /// Calls `operation` (e.g. `SendMessage`, `PutItem`) with a JSON body and returns
    /// the parsed answer, retrying throttling, 5xx and network failures.
    pub async fn call<P: Platform>(&self, p: &P, service: Service, operation: &str, body: &impl serde::Serialize) -> Result<Value, AwsError> {
        let endpoint = match service {
            Service::Sqs => &self.sqs,
            Service::DynamoDb => &self.dynamodb,
        };
        let target = format!("{}{operation}", service.target_prefix());
        let body = serde_json::to_vec(body).expect("request bodies always serialize");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let headers = endpoint.signer.sign_post(&endpoint.host, &endpoint.path, JSON_1_0, &target, &body, p.now_ms());
            let request = HttpRequest { method: "POST", url: endpoint.url.clone(), headers, body: body.clone() };
            let error = match p.fetch(request).await {
                Ok(r) if (200..300).contains(&r.status) => return parse_ok(service, &r.body),
                Ok(r) => classify(service, r.status, &r.body),
                Err(e) => AwsError::Unreachable { service: service.name(), detail: e.0 },
            };
            if attempt >= MAX_ATTEMPTS || !is_retryable(&error) {
                return Err(match error {
                    AwsError::Refused { service, status, kind } if status >= 500 || status == 429 => AwsError::Unavailable { service, status, kind },
                    e => e,
                });
            }
            p.sleep_ms(backoff_ms(p, attempt)).await;
        }
    }
}

fn parse_ok(service: Service, body: &[u8]) -> Result<Value, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|_| AwsError::BadResponse { service: service.name() })
}

/// AWS's error type, e.g. `ConditionalCheckFailedException`, from `__type`.
fn error_kind(body: &Value) -> String {
    let raw = body.get("__type").and_then(Value::as_str).unwrap_or("Unknown");
    raw.rsplit('#').next().unwrap_or(raw).to_owned()
}

fn classify(service: Service, status: u16, body: &[u8]) -> AwsError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = error_kind(&parsed);
    if kind == "ConditionalCheckFailedException" {
        return AwsError::ConditionFailed { item: parsed.get("Item").cloned() };
    }
    // A transaction refused by a condition is a condition failure too: the item is the
    // one whose condition failed (as it was, with `ReturnValuesOnConditionCheckFailure`).
    if kind == "TransactionCanceledException" {
        let reasons = parsed.get("CancellationReasons").and_then(Value::as_array);
        if let Some(failed) = reasons.into_iter().flatten().find(|r| r.get("Code").and_then(Value::as_str) == Some("ConditionalCheckFailed")) {
            return AwsError::ConditionFailed { item: failed.get("Item").cloned() };
        }
    }
    AwsError::Refused { service: service.name(), status, kind }
}

fn is_retryable(error: &AwsError) -> bool {
    match error {
        AwsError::Unreachable { .. } => true,
        AwsError::Refused { status, kind, .. } => {
            *status >= 500
                || *status == 429
                || matches!(
                    kind.as_str(),
                    "ThrottlingException"
                        | "ProvisionedThroughputExceededException"
                        | "RequestLimitExceeded"
                        | "RequestThrottled"
                        | "TransactionInProgressException"
                )
        }
        _ => false,
    }
}

/// Full jitter: uniform in [0, min(cap, base · 2^attempt)).
fn backoff_ms<P: Platform>(p: &P, attempt: u32) -> u64 {
    let ceiling = (BACKOFF_BASE_MS << attempt.min(10)).min(BACKOFF_CAP_MS);
    let mut r = [0u8; 8];
    p.fill_random(&mut r);
    u64::from_le_bytes(r) % ceiling
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials { access_key_id: "AKID".into(), secret_access_key: "s".into(), session_token: None }
    }

    #[test]
    fn endpoints_keep_the_port_only_when_needed() {
        let c = AwsClient::new(creds(), "eu-west-1", Some("http://127.0.0.1:4566")).unwrap();
        assert_eq!((c.sqs.url.as_str(), c.sqs.host.as_str(), c.sqs.path.as_str()), ("http://127.0.0.1:4566/", "127.0.0.1:4566", "/"));
        let c = AwsClient::new(creds(), "eu-west-1", None).unwrap();
        assert_eq!(c.dynamodb.url, "https://dynamodb.eu-west-1.amazonaws.com/");
        assert_eq!(c.dynamodb.host, "dynamodb.eu-west-1.amazonaws.com");
        let c = AwsClient::new(creds(), "eu-west-1", Some("https://proxy.example.com:443/aws")).unwrap();
        assert_eq!((c.sqs.host.as_str(), c.sqs.path.as_str()), ("proxy.example.com", "/aws"));
        assert!(AwsClient::new(creds(), "eu-west-1", Some("ftp://x")).is_err());
    }

    #[test]
    fn classifies_answers() {
        let refused = classify(Service::DynamoDb, 400, br#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","CancellationReasons":[{"Code":"ConditionalCheckFailed","Item":{"status":{"S":"sent"}}},{"Code":"None"}]}"#);
        assert!(matches!(refused, AwsError::ConditionFailed { item: Some(ref i) } if i["status"]["S"] == "sent"), "{refused:?}");
        let conflict = classify(
            Service::DynamoDb,
            400,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","CancellationReasons":[{"Code":"TransactionConflict"}]}"#,
        );
        assert!(matches!(conflict, AwsError::Refused { .. }));
        let cond = classify(Service::DynamoDb, 400, br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","Item":{"status":{"S":"sent"}}}"#);
        assert!(matches!(cond, AwsError::ConditionFailed { item: Some(_) }));
        let throttled = classify(Service::DynamoDb, 400, br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}"#);
        assert!(is_retryable(&throttled));
        let denied = classify(Service::Sqs, 403, br#"{"__type":"com.amazonaws.sqs#InvalidClientTokenId","message":"secret stuff"}"#);
        assert!(!is_retryable(&denied));
        let shown = denied.to_string();
        assert!(shown.contains("InvalidClientTokenId") && !shown.contains("secret stuff"), "{shown}");
        assert!(is_retryable(&classify(Service::Sqs, 503, b"<html>busy</html>")));
    }
}
