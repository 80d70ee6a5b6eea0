//! Proxy headers beyond uvicorn's: RFC 7239 `Forwarded`, and the opt-in `X-Forwarded-Host`,
//! `X-Forwarded-Port` and `X-Forwarded-Prefix`. Only consulted for trusted peers; a malformed
//! value is ignored whole, never half-applied.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::HeaderName;

use crate::proxy_headers::{ForwardedInfo, TrustedHosts};

/// `X-Forwarded-Host`
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Prefix`
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// The value the nearest proxy added: the last element of the last occurrence of `name`.
fn last_element<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    let element = value.rsplit(',').next()?.trim();
    (!element.is_empty()).then_some(element)
}

/// `X-Forwarded-Host`: a host, optionally with a port (RFC 9110 §7.2 `Host` syntax).
pub(crate) fn x_forwarded_host(headers: &HeaderMap) -> Option<String> {
    let host = last_element(headers, &X_FORWARDED_HOST)?;
    is_host(host).then(|| host.to_owned())
}

/// `X-Forwarded-Port`: the port the client connected to.
pub(crate) fn x_forwarded_port(headers: &HeaderMap) -> Option<u16> {
    last_element(headers, &X_FORWARDED_PORT)?.parse().ok().filter(|port| *port != 0)
}

/// `X-Forwarded-Prefix`: the path prefix the proxy removed, as `/a/b` (no trailing slash).
pub(crate) fn x_forwarded_prefix(headers: &HeaderMap) -> Option<String> {
    let prefix = last_element(headers, &X_FORWARDED_PREFIX)?.trim_end_matches('/');
    let valid = prefix.starts_with('/')
        && prefix.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'"' | b'\\'))
        && !prefix.split('/').any(|segment| segment == "..");
    valid.then(|| prefix.to_owned())
}

/// Whether `value` is a `host[:port]` as the `Host` header allows (reg-name, IPv4 or `[IPv6]`).
fn is_host(value: &str) -> bool {
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host, Some(port)),
        _ => (value, None),
    };
    let host_ok = if let Some(ipv6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        ipv6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    };
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// One `forwarded-element` of RFC 7239 §4 (the parameters this server uses).
#[derive(Debug, Default, PartialEq, Eq)]
struct Element {
    node: Option<Node>,
    proto: Option<&'static str>,
    host: Option<String>,
}

/// A `for=` node (RFC 7239 §6).
#[derive(Debug, PartialEq, Eq)]
enum Node {
    /// An address, with its port or 0.
    Ip(IpAddr, u16),
    /// An obfuscated identifier (`_hidden`).
    Obfuscated(String),
    /// `unknown`.
    Unknown,
}

/// Parse a whole `Forwarded` field value; `None` if any part of it is malformed.
fn parse_forwarded(value: &str) -> Option<Vec<Element>> {
    let mut elements = vec![Element::default()];
    let mut seen: Vec<String> = Vec::new();
    let mut rest = value.trim_start_matches([' ', '\t']);
    while !rest.is_empty() {
        match rest.as_bytes()[0] {
            b',' => {
                elements.push(Element::default());
                seen.clear();
                rest = rest[1..].trim_start_matches([' ', '\t']);
                continue;
            }
            b';' => {
                rest = rest[1..].trim_start_matches([' ', '\t']);
                continue;
            }
            _ => {}
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_tchar) || seen.contains(&name) {
            return None;
        }
        rest = &rest[eq + 1..];
        let (value, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => out.push(chars.next()?.1),
                    (_, c) => out.push(c),
                }
            };
            (out, &quoted[end + 1..])
        } else {
            let end = rest.find([',', ';', ' ', '\t']).unwrap_or(rest.len());
            let token = &rest[..end];
            if token.is_empty() || !token.bytes().all(is_tchar) {
                return None;
            }
            (token.to_owned(), &rest[end..])
        };
        rest = after.trim_start_matches([' ', '\t']);
        if !rest.is_empty() && !rest.starts_with([',', ';']) {
            return None;
        }
        let element = elements.last_mut()?;
        match name.as_str() {
            "for" => element.node = Some(parse_node(&value)?),
            "proto" => {
                element.proto = Some(match value.to_ascii_lowercase().as_str() {
                    "http" => "http",
                    "https" => "https",
                    _ => return None,
                });
            }
            "host" => element.host = Some(value).filter(|h| is_host(h)),
            _ => {}
        }
        seen.push(name);
    }
    Some(elements)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_node(value: &str) -> Option<Node> {
    if value.eq_ignore_ascii_case("unknown") {
        return Some(Node::Unknown);
    }
    if value.starts_with('_') {
        return Some(Node::Obfuscated(value.to_owned()));
    }
    let (host, port) = match value.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        },
    };
    let ip: IpAddr =
        if value.starts_with('[') { IpAddr::V6(host.parse().ok()?) } else { IpAddr::V4(host.parse().ok()?) };
    let port = match port {
        None => 0,
        Some(p) if p.starts_with('_') => 0,
        Some(p) => p.parse().ok()?,
    };
    Some(Node::Ip(ip, port))
}

/// RFC 7239 `Forwarded`, with uvicorn's rules for `X-Forwarded-For` applied to its elements:
/// walk the `for=` nodes from the nearest proxy back and take the first one that is not a
/// trusted proxy as the client; `proto=` and `host=` come from the nearest proxy's element.
pub(crate) fn rfc7239(trusted: &TrustedHosts, headers: &HeaderMap, is_websocket: bool) -> ForwardedInfo {
    let mut joined = String::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let Ok(value) = value.to_str() else { return ForwardedInfo::default() };
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    let Some(elements) = parse_forwarded(&joined) else { return ForwardedInfo::default() };
    let Some(nearest) = elements.last() else { return ForwardedInfo::default() };
    let scheme = nearest.proto.map(|proto| match (proto, is_websocket) {
        ("https", false) => "https",
        ("https", true) => "wss",
        (_, false) => "http",
        (_, true) => "ws",
    });
    let mut client = None;
    for element in elements.iter().rev() {
        match &element.node {
            Some(Node::Ip(ip, _)) if trusted.is_trusted_ip(*ip) => continue,
            Some(Node::Ip(ip, port)) => client = Some((ip.to_string(), *port)),
            Some(Node::Obfuscated(name)) => client = Some((name.clone(), 0)),
            Some(Node::Unknown) | None => {}
        }
        break;
    }
    if client.is_none() && trusted.trusts_all() {
        // Every hop trusted: uvicorn takes the leftmost (remotest) one.
        client = elements.iter().find_map(|e| match e.node {
            Some(Node::Ip(ip, port)) => Some((ip.to_string(), port)),
            _ => None,
        });
    }
    ForwardedInfo { scheme, client, host: nearest.host.clone() }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn trusted(list: &str) -> TrustedHosts {
        TrustedHosts::parse(&[list])
    }

    #[test]
    fn forwarded_client_proto_and_host() {
        let h = headers(&[("forwarded", "for=203.0.113.7;proto=https;host=example.com")]);
        let info = rfc7239(&trusted("127.0.0.1"), &h, false);
        assert_eq!(info.client, Some(("203.0.113.7".into(), 0)));
        assert_eq!(info.scheme, Some("https"));
        assert_eq!(info.host.as_deref(), Some("example.com"));
    }

    #[test]
    fn forwarded_walks_trusted_hops_from_the_right() {
        let h = headers(&[("forwarded", "for=198.51.100.1, for=203.0.113.7, for=10.0.0.5")]);
        let info = rfc7239(&trusted("127.0.0.1,10.0.0.0/8"), &h, false);
        assert_eq!(info.client, Some(("203.0.113.7".into(), 0)));
    }

    #[test]
    fn forwarded_ipv6_with_port_and_several_headers() {
        let h = headers(&[("forwarded", "for=198.51.100.1"), ("forwarded", "for=\"[2001:db8::1]:4711\";proto=http")]);
        let info = rfc7239(&trusted("127.0.0.1"), &h, true);
        assert_eq!(info.client, Some(("2001:db8::1".into(), 4711)));
        assert_eq!(info.scheme, Some("ws"));
    }

    #[test]
    fn malformed_forwarded_is_ignored_whole() {
        let h = headers(&[("forwarded", "for=203.0.113.7;proto=ftp")]);
        assert_eq!(rfc7239(&trusted("127.0.0.1"), &h, false), ForwardedInfo::default());
        let h = headers(&[("forwarded", "for=203.0.113.7;;;=")]);
        assert_eq!(rfc7239(&trusted("127.0.0.1"), &h, false).scheme, None);
        assert_eq!(rfc7239(&trusted("127.0.0.1"), &HeaderMap::new(), false), ForwardedInfo::default());
    }

    #[test]
    fn forwarded_quoting_and_duplicates() {
        let h = headers(&[("forwarded", "for=\"203.0.113.7\";proto=\"https\"")]);
        assert_eq!(rfc7239(&trusted("127.0.0.1"), &h, false).scheme, Some("https"));
        let h = headers(&[("forwarded", "for=203.0.113.7;proto=http;proto=https")]);
        assert_eq!(rfc7239(&trusted("127.0.0.1"), &h, false), ForwardedInfo::default());
        let h = headers(&[("forwarded", "for=203.0.113.7;by=10.0.0.1;secret=\"a,b;c\"")]);
        assert_eq!(rfc7239(&trusted("127.0.0.1"), &h, false).client, Some(("203.0.113.7".into(), 0)));
        let h = headers(&[("forwarded", "for=\"203.0.113.7")]);
        assert_eq!(rfc7239(&trusted("127.0.0.1"), &h, false), ForwardedInfo::default());
    }

    #[test]
    fn forwarded_obfuscated_and_unknown() {
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(rfc7239(&trusted("127.0.0.1"), &h, false).client, Some(("_hidden".into(), 0)));
        let h = headers(&[("forwarded", "for=unknown;proto=https")]);
        let info = rfc7239(&trusted("127.0.0.1"), &h, false);
        assert_eq!((info.client, info.scheme), (None, Some("https")));
    }

    #[test]
    fn x_forwarded_host_port_prefix() {
        let h = headers(&[
            ("x-forwarded-host", "evil.example, api.example.com:8443"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-prefix", "/api/v1/"),
        ]);
        assert_eq!(x_forwarded_host(&h).as_deref(), Some("api.example.com:8443"));
        assert_eq!(x_forwarded_port(&h), Some(8443));
        assert_eq!(x_forwarded_prefix(&h).as_deref(), Some("/api/v1"));
    }

    #[test]
    fn x_forwarded_values_that_are_refused() {
        for bad in ["", "exa mple.com", "example.com:99999", "a/b", "[::1"] {
            assert_eq!(x_forwarded_host(&headers(&[("x-forwarded-host", bad)])), None, "{bad:?}");
        }
        assert_eq!(x_forwarded_host(&headers(&[("x-forwarded-host", "[::1]:80")])).as_deref(), Some("[::1]:80"));
        for bad in ["0", "x", "70000", "-1"] {
            assert_eq!(x_forwarded_port(&headers(&[("x-forwarded-port", bad)])), None, "{bad:?}");
        }
        for bad in ["api", "/a/../b", "/a?b", "/a b"] {
            assert_eq!(x_forwarded_prefix(&headers(&[("x-forwarded-prefix", bad)])), None, "{bad:?}");
        }
    }
}
