//! Input limits (docs/design.md §3) and the validation of a `POST /send` body.
//!
//! Validation walks the whole body and reports every bad field at once, each named
//! by its JSON path, so a client fixes everything in one round.

use serde_json::{Map, Value};

use crate::error::FieldError;
use crate::message::{Recipients, SendRequest, VendorMedia, DEFAULT_PRIORITY};

/// Characters (Unicode scalar values) allowed in `content`.
pub const MAX_CONTENT_CHARS: usize = 5000;
/// Characters allowed in one recipient id.
pub const MAX_RECIPIENT_CHARS: usize = 128;
/// Recipients in one mass message by default (`MAX_RECIPIENTS`)...
pub const DEFAULT_MAX_RECIPIENTS: usize = 1000;
/// ...and at most: a campaign's recipient list is stored in one ledger item (400 KB)
/// and the request body that carries it is at most [`MAX_BODY_BYTES`].
pub const MAX_RECIPIENTS_LIMIT: usize = 10_000;
pub const MIN_PRIORITY: u8 = 1;
pub const MAX_PRIORITY: u8 = 10;
pub const MAX_MEDIA_URLS: usize = 20;
pub const MAX_MEDIA_URL_BYTES: usize = 2048;
/// Serialized size of `metadata`.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Size of a request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Media ids in one message (`mediaIds`), as URLs.
pub const MAX_MEDIA_IDS: usize = 20;
/// The vendor's price range (whole USD) of a paid message; 0 is free.
pub const PRICE_RANGE: std::ops::RangeInclusive<u64> = 3..=200;
/// How far ahead `sendAt` may be.
pub const MAX_SCHEDULE_AHEAD_MS: u64 = 30 * 86_400_000;
/// Characters of an account's id at the vendor (`PUT /account/vendor`).
pub const MAX_VENDOR_ACCOUNT_CHARS: usize = 128;

/// Validates a parsed `POST /send` body received at `now_ms`, allowing up to
/// `max_recipients` recipients in a mass message.
pub fn validate_send(body: Value, now_ms: u64, max_recipients: usize) -> Result<SendRequest, Vec<FieldError>> {
    let Value::Object(mut obj) = body else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errors = Vec::new();

    let recipients = recipients(obj.remove("recipientId"), obj.remove("recipientIds"), max_recipients, &mut errors);
    let content = match obj.remove("content") {
        Some(Value::String(s)) => check_text(s, "content", MAX_CONTENT_CHARS, &mut errors),
        Some(_) => bad(&mut errors, "content", "must be a string"),
        None => bad(&mut errors, "content", "is required"),
    };
    let priority = match obj.remove("priority") {
        None | Some(Value::Null) => Some(DEFAULT_PRIORITY),
        Some(v) => match v.as_u64() {
            Some(p) if (u64::from(MIN_PRIORITY)..=u64::from(MAX_PRIORITY)).contains(&p) => Some(p as u8),
            _ => bad(&mut errors, "priority", "must be an integer from 1 (most urgent) to 10"),
        },
    };
    let media_urls = match obj.remove("mediaUrls") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(urls)) => media_urls(urls, &mut errors),
        Some(_) => bad(&mut errors, "mediaUrls", "must be an array of https URLs"),
    };
    let metadata = match obj.remove("metadata") {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(m)) => metadata(m, &mut errors),
        Some(_) => bad(&mut errors, "metadata", "must be a JSON object"),
    };

    let send_at_ms = match obj.remove("sendAt") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => match crate::time::parse_rfc3339_ms(&s) {
            // In the past (or now): as soon as the limit allows.
            Some(at) if at <= now_ms => Some(None),
            Some(at) if at - now_ms <= MAX_SCHEDULE_AHEAD_MS => Some(Some(at)),
            Some(_) => bad(&mut errors, "sendAt", "must be at most 30 days ahead"),
            None => bad(&mut errors, "sendAt", "must be an RFC 3339 time with its offset (2026-12-24T18:00:00+01:00)"),
        },
        Some(_) => bad(&mut errors, "sendAt", "must be an RFC 3339 time with its offset (2026-12-24T18:00:00+01:00)"),
    };

    let vendor_media = vendor_media(obj.remove("mediaIds"), obj.remove("previewIds"), obj.remove("price"), &mut errors);

    match (recipients, content, priority, media_urls, metadata, send_at_ms) {
        (Some(recipients), Some(content), Some(priority), Some(media_urls), Some(metadata), Some(send_at_ms)) if errors.is_empty() => {
            Ok(SendRequest { recipients, content, priority, media_urls, metadata, send_at_ms, vendor_media })
        }
        _ => Err(errors),
    }
}

/// Records an error and yields nothing, so callers can write `x => bad(..)` in a match.
fn bad<T>(errors: &mut Vec<FieldError>, field: &str, message: &str) -> Option<T> {
    errors.push(FieldError::new(field, message));
    None
}

/// A non-blank string of at most `max` characters.
fn check_text(s: String, field: &str, max: usize, errors: &mut Vec<FieldError>) -> Option<String> {
    // Byte length bounds the character count from above: count only when it may matter.
    let too_long = s.len() > max && s.chars().count() > max;
    if s.trim().is_empty() {
        bad(errors, field, &format!("must be 1 to {max} characters, not blank"))
    } else if too_long {
        bad(errors, field, &format!("must be at most {max} characters"))
    } else {
        Some(s)
    }
}

fn recipients(one: Option<Value>, many: Option<Value>, max: usize, errors: &mut Vec<FieldError>) -> Option<Recipients> {
    match (one, many) {
        (Some(_), Some(_)) => bad(errors, "recipientIds", "give either recipientId or recipientIds, not both"),
        (None, None) => bad(errors, "recipientId", "is required (or recipientIds for a mass message)"),
        (Some(Value::String(s)), None) => recipient_id(s, "recipientId", errors).map(Recipients::One),
        (Some(_), None) => bad(errors, "recipientId", "must be a string"),
        (None, Some(Value::Array(ids))) => {
            if ids.is_empty() || ids.len() > max {
                return bad(errors, "recipientIds", &format!("must hold 1 to {max} recipient ids"));
            }
            let before = errors.len();
            let mut seen = std::collections::HashMap::with_capacity(ids.len());
            let mut out = Vec::with_capacity(ids.len());
            for (i, id) in ids.into_iter().enumerate() {
                let field = format!("recipientIds[{i}]");
                let Value::String(s) = id else {
                    bad::<()>(errors, &field, "must be a string");
                    continue;
                };
                let Some(s) = recipient_id(s, &field, errors) else { continue };
                if let Some(first) = seen.insert(s.clone(), i) {
                    bad::<()>(errors, &field, &format!("duplicates recipientIds[{first}]"));
                }
                out.push(s);
            }
            (errors.len() == before).then_some(Recipients::Many(out))
        }
        (None, Some(_)) => bad(errors, "recipientIds", "must be an array of recipient ids"),
    }
}

/// A recipient id goes into the gateway's URL path (the vendor's chat id): `.` and `..`
/// would be read as the path's dot segments, a way out of the account's path.
fn recipient_id(s: String, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let s = check_text(s, field, MAX_RECIPIENT_CHARS, errors)?;
    if s == "." || s == ".." {
        return bad(errors, field, "must not be . or .. (it goes into the gateway's URL path)");
    }
    Some(s)
}

/// `mediaIds`, `previewIds` and `price` (the vendor's media and price): `None` when the
/// message has none of them. A paid message needs media; previews are among its media.
fn vendor_media(ids: Option<Value>, previews: Option<Value>, price: Option<Value>, errors: &mut Vec<FieldError>) -> Option<VendorMedia> {
    let list = |v: Option<Value>, field: &str, errors: &mut Vec<FieldError>| -> Vec<String> {
        match v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_MEDIA_IDS => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::String(s) if is_media_id(&s) => Some(s),
                    Value::Number(n) if n.as_u64().is_some() => Some(n.to_string()),
                    _ => bad(errors, &format!("{field}[{i}]"), "must be a media id of the vendor (ofapi_media_…) or of the vault (digits)"),
                })
                .collect(),
            Some(_) => {
                bad::<()>(errors, field, &format!("must be an array of at most {MAX_MEDIA_IDS} media ids"));
                Vec::new()
            }
        }
    };
    let media_ids = list(ids, "mediaIds", errors);
    let preview_ids = list(previews, "previewIds", errors);
    for (i, p) in preview_ids.iter().enumerate() {
        if !media_ids.contains(p) {
            bad::<()>(errors, &format!("previewIds[{i}]"), "must be one of mediaIds");
        }
    }
    let price = match price {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(p) if p == 0 || PRICE_RANGE.contains(&p) => p as u32,
            _ => bad(errors, "price", "must be 0 (free) or a whole number of USD from 3 to 200").unwrap_or(0),
        },
    };
    if price > 0 && media_ids.is_empty() {
        bad::<()>(errors, "price", "a paid message needs media: give mediaIds");
        bad::<()>(errors, "mediaIds", "is required when price is not 0");
    }
    (price > 0 || !media_ids.is_empty()).then_some(VendorMedia { media_ids, preview_ids, price })
}

/// A vendor media id (`ofapi_media_` and letters, digits, `_` or `-`) or a vault id.
fn is_media_id(s: &str) -> bool {
    let vendor = s
        .strip_prefix("ofapi_media_")
        .is_some_and(|rest| (1..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    let vault = (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    vendor || vault
}

fn media_urls(urls: Vec<Value>, errors: &mut Vec<FieldError>) -> Option<Vec<String>> {
    if urls.len() > MAX_MEDIA_URLS {
        return bad(errors, "mediaUrls", &format!("must hold at most {MAX_MEDIA_URLS} URLs"));
    }
    let before = errors.len();
    let urls: Vec<String> = urls
        .into_iter()
        .enumerate()
        .filter_map(|(i, u)| match u {
            Value::String(s) if is_https_url(&s) => Some(s),
            _ => bad(errors, &format!("mediaUrls[{i}]"), "must be an https URL of at most 2048 bytes"),
        })
        .collect();
    (errors.len() == before).then_some(urls)
}

/// `https://host[:port][/...]` with no whitespace or control characters.
fn is_https_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("https://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || host.starts_with('[') => {
            if port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
                return false;
            }
            h
        }
        _ => host,
    };
    s.len() <= MAX_MEDIA_URL_BYTES && !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn metadata(m: Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Map<String, Value>> {
    let before = errors.len();
    for (k, v) in &m {
        if v.is_object() || v.is_array() {
            bad::<()>(errors, &format!("metadata.{k}"), "must be a string, number, boolean or null (metadata is flat)");
        }
    }
    if errors.len() == before {
        // Cannot fail: a map of scalars always serializes.
        let size = serde_json::to_vec(&m).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA_BYTES {
            return bad(errors, "metadata", &format!("must be at most {MAX_METADATA_BYTES} bytes serialized (is {size})"));
        }
    }
    (errors.len() == before).then_some(m)
}

/// Validates a `PUT /account/vendor` body: `{"vendorAccountId": "acct_…"}` sets the
/// account's id at the vendor, `null` clears it (the account id itself is used). It
/// goes into the vendor's URL path: letters, digits and `._:-` only, a letter or digit
/// first (`.` and `..` would be read as a path's dot segments, a way out of the
/// account's path with the shared API key).
pub fn validate_vendor_account(body: Value) -> Result<Option<String>, Vec<FieldError>> {
    const FIELD: &str = "vendorAccountId";
    let Value::Object(mut obj) = body else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    if let Some(unknown) = obj.keys().find(|k| *k != FIELD) {
        return Err(vec![FieldError::new(unknown.as_str(), "unknown field")]);
    }
    match obj.remove(FIELD) {
        Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
            let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
            if !first_ok || id.chars().count() > MAX_VENDOR_ACCOUNT_CHARS || !id.chars().all(allowed) {
                let message =
                    format!("must be 1 to {MAX_VENDOR_ACCOUNT_CHARS} letters, digits or ._:-, a letter or digit first (or null to use the account id)");
                return Err(vec![FieldError::new(FIELD, message)]);
            }
            Ok(Some(id))
        }
        Some(_) => Err(vec![FieldError::new(FIELD, "must be a string, or null to use the account id")]),
        None => Err(vec![FieldError::new(FIELD, "is required (null to use the account id)")]),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_vendor_account_id_is_set_cleared_or_refused_naming_its_field() {
        use serde_json::json;
        assert_eq!(validate_vendor_account(json!({"vendorAccountId": "acct_9f3a-1.b:2"})), Ok(Some("acct_9f3a-1.b:2".into())));
        assert_eq!(validate_vendor_account(json!({"vendorAccountId": null})), Ok(None));
        for bad in [
            json!({"vendorAccountId": ""}),
            json!({"vendorAccountId": "a/../b"}),
            json!({"vendorAccountId": 7}),
            json!({}),
            json!({"vendorAccountId": "x".repeat(129)}),
        ] {
            let errors = validate_vendor_account(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(errors[0].field, "vendorAccountId", "{bad}");
        }
        assert_eq!(validate_vendor_account(json!({"vendorAccountId": "a", "extra": 1})).unwrap_err()[0].field, "extra");
        assert_eq!(validate_vendor_account(json!([])).unwrap_err()[0].field, "body");
    }
    use super::*;
    use serde_json::json;

    /// 2026-11-25T06:00:00Z.
    const NOW: u64 = 1_795_586_400_000;

    #[test]
    fn send_at_is_an_instant_within_30_days() {
        let at = |s: &str| ok(json!({"recipientId": "a", "content": "x", "sendAt": s})).send_at_ms;
        assert_eq!(at("2026-11-25T08:00:00+01:00"), Some(NOW + 3_600_000), "the offset is applied");
        assert_eq!(at("2026-11-25T05:00:00Z"), None, "in the past: now");
        assert_eq!(at("2026-12-25T06:00:00Z"), Some(NOW + MAX_SCHEDULE_AHEAD_MS), "exactly 30 days");
        assert_eq!(ok(json!({"recipientId": "a", "content": "x"})).send_at_ms, None);
        for bad in [json!("2026-12-25T06:00:00.001Z"), json!("2026-11-26T06:00:00"), json!("tomorrow"), json!(1795586400)] {
            assert_eq!(fields(json!({"recipientId": "a", "content": "x", "sendAt": bad})), ["sendAt"], "{bad}");
        }
    }

    fn fields(body: Value) -> Vec<String> {
        validate_send(body, NOW, DEFAULT_MAX_RECIPIENTS).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    fn ok(body: Value) -> SendRequest {
        validate_send(body, NOW, DEFAULT_MAX_RECIPIENTS).unwrap()
    }

    #[test]
    fn minimal_single_message_gets_defaults() {
        let r = ok(json!({"recipientId": "user-123", "content": "Hello"}));
        assert_eq!(r.recipients, Recipients::One("user-123".into()));
        assert_eq!(r.priority, 5);
        assert!(r.media_urls.is_empty() && r.metadata.is_empty());
    }

    #[test]
    fn content_length_edges_count_characters() {
        ok(json!({"recipientId": "a", "content": "x".repeat(5000)}));
        // 5000 multi-byte characters are 5000 characters, not 20000.
        ok(json!({"recipientId": "a", "content": "😀".repeat(5000)}));
        assert_eq!(fields(json!({"recipientId": "a", "content": "x".repeat(5001)})), ["content"]);
        assert_eq!(fields(json!({"recipientId": "a", "content": "😀".repeat(5001)})), ["content"]);
        assert_eq!(fields(json!({"recipientId": "a", "content": ""})), ["content"]);
        assert_eq!(fields(json!({"recipientId": "a", "content": "   "})), ["content"]);
        ok(json!({"recipientId": "a", "content": "x"}));
    }

    #[test]
    fn recipient_id_length_edges() {
        ok(json!({"recipientId": "r".repeat(128), "content": "x"}));
        assert_eq!(fields(json!({"recipientId": "r".repeat(129), "content": "x"})), ["recipientId"]);
        assert_eq!(fields(json!({"recipientId": "", "content": "x"})), ["recipientId"]);
        assert_eq!(fields(json!({"recipientId": 7, "content": "x"})), ["recipientId"]);
    }

    #[test]
    fn priority_edges() {
        for p in [1, 10] {
            assert_eq!(ok(json!({"recipientId": "a", "content": "x", "priority": p})).priority, p as u8);
        }
        for p in [json!(0), json!(11), json!(-1), json!(2.5), json!("1")] {
            assert_eq!(fields(json!({"recipientId": "a", "content": "x", "priority": p})), ["priority"]);
        }
    }

    #[test]
    fn recipient_count_edges() {
        let ids = |n: usize| (0..n).map(|i| format!("fan-{i}")).collect::<Vec<_>>();
        let r = ok(json!({"recipientIds": ids(1000), "content": "x"}));
        assert_eq!(r.recipients.as_slice().len(), 1000);
        assert!(r.recipients.is_mass());
        assert_eq!(fields(json!({"recipientIds": ids(1001), "content": "x"})), ["recipientIds"]);
        assert_eq!(fields(json!({"recipientIds": [], "content": "x"})), ["recipientIds"]);
        assert_eq!(fields(json!({"recipientIds": ["a", 3, "", "a"], "content": "x"})), ["recipientIds[1]", "recipientIds[2]", "recipientIds[3]"]);
        assert_eq!(fields(json!({"recipientId": "a", "recipientIds": ["b"], "content": "x"})), ["recipientIds"]);
        assert_eq!(fields(json!({"content": "x"})), ["recipientId"]);
        // A dot segment would leave the gateway's URL path; a dot within an id is fine.
        assert_eq!(fields(json!({"recipientId": "..", "content": "x"})), ["recipientId"]);
        assert_eq!(fields(json!({"recipientIds": ["a.b", "."], "content": "x"})), ["recipientIds[1]"]);
    }

    /// A paid message needs media (both fields named); a price outside the vendor's
    /// range, an id of neither kind and a preview not among the media are refused.
    #[test]
    fn vendor_media_and_price() {
        let body = |extra: Value| {
            let mut b = json!({"recipientId": "a", "content": "x"});
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        assert_eq!(ok(body(json!({}))).vendor_media, None);
        let paid = ok(body(json!({"price": 15, "mediaIds": ["ofapi_media_abc123", 4242], "previewIds": ["4242"]}))).vendor_media.unwrap();
        assert_eq!(
            (paid.price, paid.media_ids.as_slice(), paid.preview_ids.as_slice()),
            (15, &["ofapi_media_abc123".to_owned(), "4242".to_owned()][..], &["4242".to_owned()][..])
        );
        assert_eq!(ok(body(json!({"mediaIds": ["7"]}))).vendor_media.unwrap().price, 0, "free media");
        assert_eq!(fields(body(json!({"price": 15}))), ["price", "mediaIds"]);
        assert_eq!(fields(body(json!({"price": 2, "mediaIds": ["7"]}))), ["price"]);
        assert_eq!(fields(body(json!({"price": 201, "mediaIds": ["7"]}))), ["price"]);
        assert_eq!(fields(body(json!({"mediaIds": ["https://x", "ofapi_media_", "7"], "previewIds": ["8"]}))), ["mediaIds[0]", "mediaIds[1]", "previewIds[0]"]);
        assert_eq!(fields(body(json!({"mediaIds": vec!["7"; 21]}))), ["mediaIds"]);
    }

    #[test]
    fn media_url_edges() {
        let urls = |n: usize| (0..n).map(|i| format!("https://cdn.example.com/{i}.jpg")).collect::<Vec<_>>();
        assert_eq!(ok(json!({"recipientId": "a", "content": "x", "mediaUrls": urls(20)})).media_urls.len(), 20);
        assert_eq!(fields(json!({"recipientId": "a", "content": "x", "mediaUrls": urls(21)})), ["mediaUrls"]);
        let bad = json!(["http://cdn.example.com/a.jpg", "https://", "https://a b.com/x", 5, "https://ok.example.com:8443/p?q=1", "https://x.com:abc/"]);
        assert_eq!(
            fields(json!({"recipientId": "a", "content": "x", "mediaUrls": bad})),
            ["mediaUrls[0]", "mediaUrls[1]", "mediaUrls[2]", "mediaUrls[3]", "mediaUrls[5]"]
        );
        let long = format!("https://cdn.example.com/{}", "a".repeat(2048));
        assert_eq!(fields(json!({"recipientId": "a", "content": "x", "mediaUrls": [long]})), ["mediaUrls[0]"]);
    }

    #[test]
    fn metadata_edges() {
        // {"k":"<v>"} is 8 bytes of framing around the value.
        let at_limit = json!({"k": "v".repeat(MAX_METADATA_BYTES - 8)});
        ok(json!({"recipientId": "a", "content": "x", "metadata": at_limit}));
        let over = json!({"k": "v".repeat(MAX_METADATA_BYTES - 7)});
        assert_eq!(fields(json!({"recipientId": "a", "content": "x", "metadata": over})), ["metadata"]);
        let nested = json!({"campaign": "x", "deep": {"a": 1}, "list": [1]});
        assert_eq!(fields(json!({"recipientId": "a", "content": "x", "metadata": nested})), ["metadata.deep", "metadata.list"]);
        assert_eq!(fields(json!({"recipientId": "a", "content": "x", "metadata": "no"})), ["metadata"]);
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let body = json!({"recipientId": "", "content": 3, "priority": 0, "mediaUrls": ["ftp://x"], "metadata": []});
        assert_eq!(fields(body), ["recipientId", "content", "priority", "mediaUrls[0]", "metadata"]);
        assert_eq!(fields(json!([1, 2])), ["body"]);
    }
}
