//! Checks of an HTTP/1.x request head that hyper's parser (httparse) leaves to the server.
//!
//! hyper already rejects, with 400 and a closed connection, what breaks the message syntax:
//! invalid field names and values (CR, LF, NUL, other controls), obs-fold, whitespace before a
//! colon, invalid or conflicting `Content-Length`, a `Transfer-Encoding` whose final coding is not
//! `chunked`, and malformed chunked bodies. What remains are rules about the meaning of fields
//! and targets (RFC 9112 §3.2, §6.1; RFC 9110 §7.2), checked here before the application sees the
//! request. `docs/reliability.md` lists every case with its RFC section.

use http::header::{HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};

use crate::field_values::list_elements;
use crate::request_fields::FieldsPresent;

/// Check an HTTP/1.0 or HTTP/1.1 request head, whose fields include `fields`; `Err` carries the
/// status to answer. `had_length`: the head held a `Content-Length` line, which hyper drops when
/// `Transfer-Encoding` is there too (see `length_field_watch`).
pub(crate) fn check_http1(parts: &Parts, fields: FieldsPresent, had_length: bool) -> Result<(), StatusCode> {
    check_host(parts)?;
    check_target_form(parts)?;
    if fields.transfer_encoding() {
        // RFC 9112 §6.1: "A server MAY reject a request that contains both Content-Length and
        // Transfer-Encoding"; it is the classic request-smuggling shape, so it is rejected.
        if had_length {
            return Err(StatusCode::BAD_REQUEST);
        }
        check_transfer_coding(&parts.headers)?;
    }
    Ok(())
}

/// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
/// request message that lacks a Host header field and to any request message that contains more
/// than one Host header field line or a Host header field with an invalid field value."
fn check_host(parts: &Parts) -> Result<(), StatusCode> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(StatusCode::BAD_REQUEST);
    }
    let Some(host) = host else {
        return if parts.version == http::Version::HTTP_11 { Err(StatusCode::BAD_REQUEST) } else { Ok(()) };
    };
    if !is_valid_host(host.as_bytes()) {
        return Err(StatusCode::BAD_REQUEST);
    }
    // RFC 9110 §7.2: with an absolute-form target, the client MUST send the target's authority
    // (without userinfo) as Host. A request that does not is invalid; answering it would let the
    // Host an application routes on disagree with the target a proxy routed on.
    if let Some(authority) = parts.uri.authority() {
        let target = authority.as_str();
        let target = target.rsplit_once('@').map_or(target, |(_, host)| host);
        if !target.as_bytes().eq_ignore_ascii_case(host.as_bytes()) {
            return Err(StatusCode::BAD_REQUEST);
        }
    }
    Ok(())
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2 and §3.2.3); empty is valid
/// (RFC 9112 §3.2: the value a client sends for a target without authority).
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        // IP-literal: an IPv6 address in brackets (IPvFuture is not accepted).
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let is_ipv6 = std::str::from_utf8(&rest[..end]).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
        if !is_ipv6 {
            return false;
        }
        (&[][..], &rest[end + 1..])
    } else {
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        (&value[..end], &value[end..])
    };
    is_reg_name(host) && (port.is_empty() || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit)))
}

/// The bytes of `reg-name` other than `%`: unreserved and sub-delims (RFC 3986 §2.2, §2.3).
const REG_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
};

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (RFC 3986 §3.2.2); IPv4 addresses are
/// reg-names too as far as the characters go.
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        let byte = name[i];
        if byte == b'%' {
            if !(name.len() > i + 2 && name[i + 1].is_ascii_hexdigit() && name[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 2;
        } else if !REG_NAME_BYTES[usize::from(byte)] {
            return false;
        }
        i += 1;
    }
    true
}

/// RFC 9112 §3.2.3 and §3.2.4: the authority-form is only for CONNECT and the asterisk-form only
/// for OPTIONS.
fn check_target_form(parts: &Parts) -> Result<(), StatusCode> {
    let uri = &parts.uri;
    let authority_form = uri.scheme().is_none() && uri.authority().is_some();
    if authority_form && parts.method != Method::CONNECT {
        return Err(StatusCode::BAD_REQUEST);
    }
    if uri.path() == "*" && parts.method != Method::OPTIONS {
        return Err(StatusCode::BAD_REQUEST);
    }
    Ok(())
}

/// hyper has checked that the final coding is `chunked`. RFC 9112 §6.1: a sender "MUST NOT
/// apply the chunked transfer coding more than once" (400), and "a server that receives a
/// request message with a transfer coding it does not understand SHOULD respond with 501 (Not
/// Implemented)": tricorn decodes `chunked` only, and does not hand a coded body to the app.
fn check_transfer_coding(headers: &HeaderMap) -> Result<(), StatusCode> {
    let mut chunked = 0;
    let mut other = false;
    for coding in headers.get_all(TRANSFER_ENCODING).iter().flat_map(list_elements) {
        if coding.eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else {
            other = true;
        }
    }
    if chunked > 1 {
        Err(StatusCode::BAD_REQUEST)
    } else if other {
        Err(StatusCode::NOT_IMPLEMENTED)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, StatusCode, Version};

    use super::is_valid_host;
    use crate::request_fields::FieldsPresent;

    fn parts(method: &str, uri: &str, version: Version, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = Request::builder().method(method).uri(uri).version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn check_http1(parts: &http::request::Parts, had_length: bool) -> Result<(), StatusCode> {
        super::check_http1(parts, FieldsPresent::of(&parts.headers), had_length)
    }

    fn check(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<(), StatusCode> {
        check_http1(&parts(method, uri, Version::HTTP_11, headers), false)
    }

    #[test]
    fn host_values() {
        for good in ["", "example.com", "example.com:8080", "127.0.0.1:80", "[::1]:8000", "[::1]", "a%41b", "x:"] {
            assert!(is_valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in ["a b", "user@host", "host/path", "[::1", "[zz]", "h:8x", "a%4", "a?b", "a#b", "é"] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn host_is_required_once_in_http11() {
        assert_eq!(check("GET", "/", &[]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(check("GET", "/", &[("host", "a"), ("host", "a")]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(check("GET", "/", &[("host", "a")]), Ok(()));
        assert_eq!(check_http1(&parts("GET", "/", Version::HTTP_10, &[]), false), Ok(()));
    }

    #[test]
    fn absolute_form_must_match_host() {
        assert_eq!(check("GET", "http://a.example/x", &[("host", "A.example")]), Ok(()));
        assert_eq!(check("GET", "http://u@a.example:81/x", &[("host", "a.example:81")]), Ok(()));
        assert_eq!(check("GET", "http://a.example/x", &[("host", "b.example")]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(check("GET", "http://a.example:81/", &[("host", "a.example")]), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn target_forms_belong_to_their_methods() {
        assert_eq!(check("OPTIONS", "*", &[("host", "a")]), Ok(()));
        assert_eq!(check("GET", "*", &[("host", "a")]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(check("CONNECT", "a:443", &[("host", "a:443")]), Ok(()));
        assert_eq!(check("GET", "a:443", &[("host", "a:443")]), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn transfer_codings() {
        let te = |values: &[&str]| {
            let headers: Vec<(&str, &str)> =
                [("host", "a")].into_iter().chain(values.iter().map(|v| ("transfer-encoding", *v))).collect();
            check("POST", "/", &headers)
        };
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked"]), Ok(()));
        assert_eq!(te(&[", chunked"]), Ok(()));
        assert_eq!(te(&["chunked, chunked"]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(te(&["chunked", "chunked"]), Err(StatusCode::BAD_REQUEST));
        assert_eq!(te(&["gzip, chunked"]), Err(StatusCode::NOT_IMPLEMENTED));
        assert_eq!(te(&["gzip", "chunked"]), Err(StatusCode::NOT_IMPLEMENTED));
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        let head = parts("POST", "/", Version::HTTP_11, &[("host", "a"), ("transfer-encoding", "chunked")]);
        assert_eq!(check_http1(&head, true), Err(StatusCode::BAD_REQUEST));
        assert_eq!(check_http1(&head, false), Ok(()));
        let without_te = parts("POST", "/", Version::HTTP_11, &[("host", "a"), ("content-length", "1")]);
        assert_eq!(check_http1(&without_te, true), Ok(()));
    }
}
