//! Webhooks as Standard Webhooks 1.0 defines them (standardwebhooks.com): how a
//! delivery is signed, and which endpoint URLs a tenant may register. Pure rules: the
//! worker signs and sends, the edge registers.
//!
//! A delivery carries three headers: `webhook-id` (the event's id, the same on every
//! attempt, so a receiver can drop repeats), `webhook-timestamp` (Unix seconds of this
//! attempt) and `webhook-signature`: `v1,<base64 of HMAC-SHA256("{id}.{timestamp}.{body}")>`
//! keyed with the secret's bytes, one per secret, space-separated, so that while a
//! secret is rotated the old and the new both sign and a receiver holding either verifies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What an endpoint's signing secret starts with, as the spec's libraries expect.
pub const SECRET_PREFIX: &str = "whsec_";

/// Bytes of a new secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// An endpoint's signing secret: its bytes, shown to the tenant as `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    // Never printed: a secret in a log would let anyone sign as us.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A secret of these (random) bytes.
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Self {
        Self(bytes.to_vec())
    }

    /// Reads `whsec_<base64>` (the prefix may be left out, as the libraries allow).
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let bytes = STANDARD.decode(b64).map_err(|_| format!("a secret is {SECRET_PREFIX} followed by base64"))?;
        if !(24..=64).contains(&bytes.len()) {
            return Err("a secret is 24 to 64 bytes".into());
        }
        Ok(Self(bytes))
    }

    /// `whsec_<base64>`: how the tenant sees it, once.
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256>` of one delivery attempt.
    fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header of one attempt: a signature per secret (the current
/// one first, then one being rotated out), space-separated.
pub fn signature(secrets: &[&Secret], id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Whether `header` carries a valid signature of this attempt by `secret` (what a
/// receiver checks; compared in constant time).
pub fn verify(secret: &Secret, header: &str, id: &str, timestamp: u64, body: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).filter_map(|b64| STANDARD.decode(b64).ok()).any(|sig| mac.clone().verify_slice(&sig).is_ok())
}

/// The longest endpoint URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// Whether a tenant may register `url` as a webhook endpoint: `https` (plain `http` only
/// to a loopback host, and only when `allow_loopback`: a local run), no credentials in
/// it, and no host that reaches inside our network: a literal private, loopback,
/// link-local (the cloud's metadata service among them), shared or reserved address,
/// `localhost`, or a name under `.internal`, `.local` or `.localhost`. (A name that
/// resolves to such an address is refused by the worker when it delivers.) The reason
/// names what is wrong.
pub fn endpoint_url(url: &str, allow_loopback: bool) -> Result<(), String> {
    if url.len() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let (scheme, rest) = url.split_once("://").ok_or("must be an absolute https URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry credentials (user:password@)".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
    .to_ascii_lowercase();
    if host.is_empty() {
        return Err("must name a host".into());
    }
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            if ip.is_loopback() {
                true
            } else if !public(ip) {
                return Err(format!("must not point at a private, link-local or reserved address ({ip})"));
            } else {
                false
            }
        }
        Err(_) => {
            let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
            let tld = labels.last().copied().unwrap_or_default();
            // Numbers in other forms (2130706433, 0x7f.1) are addresses to some resolvers.
            let named = (tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_lowercase())) || tld.starts_with("xn--");
            if host == "localhost" || tld == "localhost" {
                true
            } else if !named || labels.iter().any(|l| l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
                return Err(format!("must name a host by a domain name or a public address, not {host:?}"));
            } else if ["internal", "local", "localdomain", "intranet", "corp", "home", "lan"].contains(&tld) {
                return Err(format!("must not point inside a network (.{tld})"));
            } else {
                false
            }
        }
    };
    match (scheme.to_ascii_lowercase().as_str(), loopback) {
        ("https", false) => Ok(()),
        ("https" | "http", true) if allow_loopback => Ok(()),
        (_, true) => Err("must not point at this machine (loopback)".into()),
        _ => Err("must be https".into()),
    }
}

/// Whether an address is reachable on the public internet (what a tenant's endpoint
/// may be): not private, loopback, link-local, shared (CGNAT), documentation,
/// multicast, unspecified or otherwise reserved; an IPv4 address inside IPv6 is judged
/// as IPv4.
pub fn public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(v4.into());
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local (AWS's metadata service is fd00:ec2::254)
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64 to IPv4 of any kind
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and its reference libraries.
    #[test]
    fn signs_as_the_specification_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = signature(&[&secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(&secret, &header, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#));
        assert!(!verify(&secret, &header, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, br#"{"test": 2432232314}"#), "another timestamp");
    }

    /// While a secret is rotated, both sign: a receiver with either verifies.
    #[test]
    fn both_secrets_sign_during_a_rotation() {
        let (old, new) = (Secret::from_bytes([1; SECRET_BYTES]), Secret::from_bytes([2; SECRET_BYTES]));
        let header = signature(&[&new, &old], "evt_1", 5, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, &header, "evt_1", 5, b"{}") && verify(&new, &header, "evt_1", 5, b"{}"));
        assert!(!verify(&Secret::from_bytes([3; SECRET_BYTES]), &header, "evt_1", 5, b"{}"));
    }

    #[test]
    fn a_secret_reads_back_and_is_never_printed() {
        let s = Secret::from_bytes([7; SECRET_BYTES]);
        assert_eq!(Secret::parse(&s.reveal()).unwrap(), s);
        assert!(s.reveal().starts_with(SECRET_PREFIX));
        assert_eq!(format!("{s:?}"), "Secret(…)");
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err(), "too short");
        assert!(Secret::parse("whsec_***").is_err());
    }

    #[test]
    fn endpoints_that_reach_inside_are_refused() {
        for ok in [
            "https://crm.example.com/hooks",
            "https://crm.example.com:8443/a?b=c",
            "https://8.8.8.8/x",
            "https://[2606:4700::1]/x",
            "https://xn--bcher-kva.example/",
        ] {
            assert_eq!(endpoint_url(ok, false), Ok(()), "{ok}");
        }
        for bad in [
            "http://crm.example.com/hooks",
            "ftp://crm.example.com/",
            "crm.example.com/hooks",
            "https://user:pw@crm.example.com/",
            "https://10.0.0.5/",
            "https://172.20.1.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:10.1.2.3]/",
            "https://127.0.0.1/",
            "https://localhost/",
            "https://api.localhost/",
            "https://metadata.google.internal/",
            "https://printer.local/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https:///nohost",
        ] {
            assert!(endpoint_url(bad, false).is_err(), "{bad}");
        }
        assert_eq!(endpoint_url("http://127.0.0.1:9000/hook", true), Ok(()), "a local run's receiver");
        assert_eq!(endpoint_url("http://localhost:9000/hook", true), Ok(()));
        assert!(endpoint_url("http://10.0.0.5/hook", true).is_err(), "loopback only, not any private address");
        assert!(endpoint_url("http://crm.example.com/hook", true).is_err(), "https elsewhere");
    }
}
