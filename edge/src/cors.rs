//! CORS for browser clients: only configured origins are answered, preflights included.

use crate::http::{ApiRequest, ApiResponse};

const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key";
const EXPOSE_HEADERS: &str = "retry-after, idempotent-replayed";

fn allowed<'a>(origins: &[String], request: &'a ApiRequest) -> Option<&'a str> {
    let origin = request.header("origin")?;
    origins.iter().any(|o| o == "*" || o == origin).then_some(origin)
}

/// Whether this is a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn is_preflight(request: &ApiRequest) -> bool {
    request.method == "OPTIONS" && request.header("access-control-request-method").is_some()
}

/// The answer to a preflight: 204, with the allow headers when the origin is allowed.
pub fn preflight(origins: &[String], request: &ApiRequest) -> ApiResponse {
    let mut response = ApiResponse::empty(204);
    if allowed(origins, request).is_some() {
        response.headers.push(("access-control-allow-methods", ALLOW_METHODS.into()));
        response.headers.push(("access-control-allow-headers", ALLOW_HEADERS.into()));
        response.headers.push(("access-control-max-age", "86400".into()));
    }
    decorate(origins, request, &mut response);
    response
}

/// Adds the CORS headers an allowed origin needs to any response.
pub fn decorate(origins: &[String], request: &ApiRequest, response: &mut ApiResponse) {
    if let Some(origin) = allowed(origins, request) {
        response.headers.push(("access-control-allow-origin", origin.to_owned()));
        response.headers.push(("access-control-expose-headers", EXPOSE_HEADERS.into()));
        response.headers.push(("vary", "Origin".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: &str) -> ApiRequest {
        ApiRequest {
            method: "OPTIONS".into(),
            headers: vec![("origin".into(), origin.into()), ("access-control-request-method".into(), "POST".into())],
            ..Default::default()
        }
    }

    #[test]
    fn only_configured_origins() {
        let origins = vec!["https://app.example.com".to_owned()];
        let ok = preflight(&origins, &request("https://app.example.com"));
        assert!(ok.headers.contains(&("access-control-allow-origin", "https://app.example.com".into())));
        assert!(ok.headers.iter().any(|(k, _)| *k == "access-control-allow-headers"));
        let refused = preflight(&origins, &request("https://evil.example.com"));
        assert_eq!(refused.status, 204);
        assert!(refused.headers.is_empty());
        let any = preflight(&["*".to_owned()], &request("https://x.example.com"));
        assert!(any.headers.contains(&("access-control-allow-origin", "https://x.example.com".into())));
    }
}
