//! The messaging console (`console/` at the repository's root): three static files
//! served by the Worker itself at `<API>/console/`, under the API's own route, so that
//! it needs no assets binding, no route of its own and no other host, and its headers
//! (a strict Content-Security-Policy first) are set here, in one place, in `wrangler
//! dev` as in both environments. The page calls the API beside it with the bearer token
//! the operator pasted; nothing of it needs a token to be fetched.

use crate::http::ApiResponse;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");

/// Only this origin's script, style and API; no frame, no form posted anywhere, no
/// plugin, no inline script or style.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's answer for a path under the API's base (`rest`: after `<API>/`, as
/// requested), or `None` when the path is not the console's.
pub fn asset(rest: &str, method: &str) -> Option<ApiResponse> {
    let (body, kind) = match rest {
        // Its files are named relative to it: the page's address ends with a slash.
        "console" => return Some(ApiResponse { status: 308, headers: vec![("location", "console/".into())], body: String::new() }),
        "console/" | "console/index.html" => (INDEX, "text/html; charset=utf-8"),
        "console/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console/app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    if method != "GET" && method != "HEAD" {
        return Some(ApiResponse { status: 405, headers: vec![("allow", "GET, HEAD".into())], body: String::new() });
    }
    let headers = vec![
        ("content-type", kind.into()),
        ("content-security-policy", CSP.into()),
        ("x-content-type-options", "nosniff".into()),
        ("referrer-policy", "no-referrer".into()),
        // Deployed together with the API it calls: a page never outlives its API by more
        // than a revalidation.
        ("cache-control", "no-cache".into()),
    ];
    Some(ApiResponse { status: 200, headers, body: if method == "HEAD" { String::new() } else { body.to_owned() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_three_files_under_a_strict_policy() {
        for path in ["console/", "console/app.js", "console/app.css"] {
            let r = asset(path, "GET").unwrap();
            assert_eq!(r.status, 200, "{path}");
            assert!(r.headers.iter().any(|(k, v)| *k == "content-security-policy" && v.contains("script-src 'self'")));
        }
        assert_eq!(asset("console", "GET").unwrap().status, 308, "its relative links need the slash");
        assert_eq!(asset("console/", "POST").unwrap().status, 405);
        assert!(asset("console/../status", "GET").is_none() && asset("status", "GET").is_none());
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="), "nothing inline: the policy would refuse it");
    }
}
