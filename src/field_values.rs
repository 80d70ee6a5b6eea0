//! Field values that are comma-separated lists (RFC 9110 §5.6.1): `Connection`, `Upgrade`, `TE`,
//! `Transfer-Encoding`.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The non-empty elements of a comma-separated field value, trimmed of spaces and tabs.
pub(crate) fn list_elements(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|e| !e.is_empty())
}

/// Whether the comma-separated list `value` holds `token` (any case).
pub(crate) fn list_has(value: &HeaderValue, token: &str) -> bool {
    list_elements(value).any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether any `name` field line holds `token` in its list (any case).
///
/// A request's callers ask [`FieldsPresent`](crate::request_fields::FieldsPresent) first
/// whether it has the field at all.
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| list_has(v, token))
}

#[cfg(test)]
mod tests {
    use http::header::{CONNECTION, TE, UPGRADE};
    use http::{HeaderMap, HeaderValue};

    use super::{has_token, list_elements};

    fn headers(name: http::HeaderName, values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name.clone(), HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn elements_are_trimmed_and_empty_ones_skipped() {
        let value = HeaderValue::from_static(" gzip ,, \tchunked,");
        assert_eq!(list_elements(&value).collect::<Vec<_>>(), [&b"gzip"[..], b"chunked"]);
    }

    #[test]
    fn finds_a_token_in_any_line_and_case() {
        assert!(has_token(&headers(CONNECTION, &["keep-alive, Close"]), &CONNECTION, "close"));
        assert!(has_token(&headers(CONNECTION, &["upgrade", " CLOSE "]), &CONNECTION, "close"));
        assert!(!has_token(&headers(CONNECTION, &["closed, not-close"]), &CONNECTION, "close"));
        assert!(!has_token(&headers(CONNECTION, &["close"]), &UPGRADE, "close"));
        assert!(has_token(&headers(TE, &["deflate", "trailers"]), &TE, "trailers"));
    }

    #[test]
    fn a_long_message_gives_the_same_answers() {
        let mut many = headers(CONNECTION, &["keep-alive", "Close"]);
        for name in ["a", "b", "c", "d"] {
            many.append(http::HeaderName::from_static(name), HeaderValue::from_static("close"));
        }
        assert!(has_token(&many, &CONNECTION, "close"));
        assert!(has_token(&many, &CONNECTION, "keep-alive"));
        assert!(!has_token(&many, &CONNECTION, "upgrade"));
        assert!(!has_token(&many, &UPGRADE, "close"));
    }
}
