//! Whether an HTTP/1.x response is the last of its connection, read from the same fields hyper
//! reads to decide it (RFC 9112 §9.3 and §9.6).
//!
//! The answer only makes the socket send the response's end and the FIN together
//! (`runtime::io::LastWrite`), so it must never say "last" where hyper keeps the connection
//! open. Where hyper closes for a reason read elsewhere (a body without a length for an
//! HTTP/1.0 client, the server shutting down), the answer is "not known", and the FIN follows on
//! its own as before.

use http::header::CONNECTION;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use crate::field_values::{has_token, list_has};
use crate::request_fields::FieldsPresent;

/// Whether a response ends its connection, and when hyper then has all of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The connection may go on (or ends for a reason not read here).
    No,
    /// The response ends the connection and has no content (HEAD, 204, 304, RFC 9110 §6.4.1):
    /// hyper has all of it with the head.
    AtHead,
    /// The response ends the connection: hyper has all of it with the body's end.
    AtBodyEnd,
}

/// Whether the response to a request ends the connection (`request_closes`: see
/// [`request_closes`]; `response_closes`: a field of the response passed [`closes`]; `head`:
/// the request's method is HEAD).
pub(crate) fn ending(request_closes: bool, response_closes: bool, head: bool, status: StatusCode) -> Ending {
    // A 1xx is not the final response; a 101 hands the connection over (to a WebSocket).
    if status.is_informational() || !(request_closes || response_closes) {
        Ending::No
    } else if head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Ending::AtHead
    } else {
        Ending::AtBodyEnd
    }
}

/// Whether the request ends its connection after the response: an HTTP/1.1 request with
/// `Connection: close`, or an HTTP/1.0 request without `Connection: keep-alive` (RFC 9112 §9.3;
/// a `close` beside `keep-alive` wins, as in hyper).
pub(crate) fn request_closes(version: Version, headers: &HeaderMap, fields: FieldsPresent) -> bool {
    let says = |token| fields.connection() && has_token(headers, &CONNECTION, token);
    match version {
        Version::HTTP_11 => says("close"),
        Version::HTTP_10 => says("close") || !says("keep-alive"),
        _ => false,
    }
}

/// Whether a response field line ends the connection: `Connection` with `close` (RFC 9112 §9.6).
#[inline]
pub(crate) fn closes(name: &HeaderName, value: &HeaderValue) -> bool {
    name == CONNECTION && list_has(value, "close")
}

#[cfg(test)]
mod tests {
    use http::header::{CONNECTION, CONTENT_TYPE};
    use http::{HeaderMap, HeaderValue, StatusCode, Version};

    use super::{Ending, closes, ending, request_closes};
    use crate::request_fields::FieldsPresent;

    fn headers(connection: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in connection {
            headers.append(CONNECTION, HeaderValue::from_static(value));
        }
        headers
    }

    /// `request_closes` for a request whose `Connection` lines are `connection`.
    fn closes_request(version: Version, connection: &[&'static str]) -> bool {
        let headers = headers(connection);
        request_closes(version, &headers, FieldsPresent::of(&headers))
    }

    #[test]
    fn http11_closes_only_when_asked() {
        assert!(!closes_request(Version::HTTP_11, &[]));
        assert!(!closes_request(Version::HTTP_11, &["keep-alive"]));
        assert!(closes_request(Version::HTTP_11, &["close"]));
        assert!(closes_request(Version::HTTP_11, &["te", "close"]));
    }

    #[test]
    fn http10_closes_unless_kept_alive() {
        assert!(closes_request(Version::HTTP_10, &[]));
        assert!(!closes_request(Version::HTTP_10, &["Keep-Alive"]));
        assert!(closes_request(Version::HTTP_10, &["keep-alive", "close"]));
    }

    #[test]
    fn multiplexed_versions_never_close_the_connection() {
        assert!(!closes_request(Version::HTTP_2, &["close"]));
        assert!(!closes_request(Version::HTTP_3, &["close"]));
    }

    #[test]
    fn a_response_field_closes_with_the_token() {
        assert!(closes(&CONNECTION, &HeaderValue::from_static("close")));
        assert!(closes(&CONNECTION, &HeaderValue::from_static("te, Close")));
        assert!(!closes(&CONNECTION, &HeaderValue::from_static("keep-alive")));
        assert!(!closes(&CONTENT_TYPE, &HeaderValue::from_static("close")));
    }

    #[test]
    fn ending_follows_either_side_and_the_content() {
        assert_eq!(ending(false, false, false, StatusCode::OK), Ending::No);
        assert_eq!(ending(true, false, false, StatusCode::OK), Ending::AtBodyEnd);
        assert_eq!(ending(false, true, false, StatusCode::OK), Ending::AtBodyEnd);
        assert_eq!(ending(true, false, true, StatusCode::OK), Ending::AtHead);
        assert_eq!(ending(true, false, false, StatusCode::NO_CONTENT), Ending::AtHead);
        assert_eq!(ending(false, true, false, StatusCode::NOT_MODIFIED), Ending::AtHead);
    }

    #[test]
    fn informational_responses_never_end_the_connection() {
        assert_eq!(ending(true, true, false, StatusCode::SWITCHING_PROTOCOLS), Ending::No);
        assert_eq!(ending(true, false, false, StatusCode::CONTINUE), Ending::No);
    }
}
