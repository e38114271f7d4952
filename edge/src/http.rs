//! The inbound request and the response as plain data, so routing and handlers run
//! (and are tested) without the Workers runtime.

use serde::Serialize;

/// The request headers the API reads: the Worker entry copies only these across the
/// JS boundary (a request through Cloudflare carries a dozen more).
pub const READ_HEADERS: [&str; 6] = ["authorization", "content-type", "content-length", "idempotency-key", "origin", "access-control-request-method"];

/// An API request, as the Worker entry hands it over.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The [`READ_HEADERS`] present, names in lowercase. The body is not here: a
    /// handler reads it through the platform once the caller is authenticated.
    pub headers: Vec<(String, String)>,
}

impl ApiRequest {
    /// The path and the raw query of an absolute URL as the runtime hands it over
    /// (`https://host/path?query#fragment`), without parsing the whole URL.
    pub fn split_url(url: &str) -> (&str, &str) {
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let target = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let target = target.split_once('#').map_or(target, |(t, _)| t);
        target.split_once('?').unwrap_or((target, ""))
    }

    /// Whether the declared body size (`Content-Length`) is over `limit`.
    pub fn declares_more_than(&self, limit: usize) -> bool {
        self.header("content-length").and_then(|v| v.trim().parse::<usize>().ok()).is_some_and(|n| n > limit)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        debug_assert!(READ_HEADERS.contains(&name), "{name} is not in READ_HEADERS, so the Worker entry does not copy it");
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').filter_map(|pair| pair.split_once('=').or(Some((pair, "")))).find(|(k, _)| *k == name).map(|(_, v)| percent_decode(v))
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An API response: status, extra headers and a JSON (or empty) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl ApiResponse {
    pub fn json<T: Serialize>(status: u16, body: &T) -> Self {
        Self::raw_json(status, serde_json::to_string(body).expect("response types always serialize"))
    }

    pub fn raw_json(status: u16, body: String) -> Self {
        Self { status, headers: vec![("content-type", "application/json; charset=utf-8".into())], body }
    }

    pub fn empty(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: String::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls_into_path_and_query() {
        assert_eq!(ApiRequest::split_url("https://h.example/api/x?limit=5&cursor=a%3D#frag"), ("/api/x", "limit=5&cursor=a%3D"));
        assert_eq!(ApiRequest::split_url("http://127.0.0.1:8787/api/onlyfans/messaging/send"), ("/api/onlyfans/messaging/send", ""));
        assert_eq!(ApiRequest::split_url("https://h.example"), ("/", ""));
        assert_eq!(ApiRequest::split_url("https://h.example?q=1"), ("/", ""));
    }

    #[test]
    fn query_params() {
        let r = ApiRequest { query: "limit=5&cursor=abc%3D%3D&flag".into(), ..Default::default() };
        assert_eq!(r.query_param("limit").as_deref(), Some("5"));
        assert_eq!(r.query_param("cursor").as_deref(), Some("abc=="));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("nope"), None);
        let r = ApiRequest { query: "a=%zz%4".into(), ..Default::default() };
        assert_eq!(r.query_param("a").as_deref(), Some("%zz%4"));
    }
}
