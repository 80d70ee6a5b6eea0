//! Native port of uvicorn's `ProxyHeadersMiddleware` (`uvicorn/middleware/proxy_headers.py`,
//! identical in 0.51 and 0.54).
//!
//! When the connecting peer is trusted (`--forwarded-allow-ips`, default `127.0.0.1`),
//! `X-Forwarded-Proto` may override `scope["scheme"]` and `X-Forwarded-For` may override
//! `scope["client"]`. Nothing else is honoured: uvicorn ignores RFC 7239 `Forwarded`,
//! `X-Forwarded-Host`, `X-Forwarded-Port` and `X-Forwarded-Prefix`, and so do we.
//!
//! uvicorn's exact rules, reproduced here (they are sometimes surprising):
//! - The trust list is `*` (trust everyone), IP addresses, strict CIDR networks
//!   (`ipaddress.ip_network(host)`, so host bits set is an error) or, for anything that fails
//!   to parse, a *literal* string compared by equality (meant for unix socket paths).
//! - `X-Forwarded-Proto`: the *last* occurrence wins, it is stripped but **not** lower-cased,
//!   and only `http`, `https`, `ws`, `wss` are accepted. For a websocket scope `http` becomes
//!   `ws` and `https` becomes `wss` (`str.replace("http", "ws")`).
//! - `X-Forwarded-For`: all occurrences are joined with `", "` (0.49+), split on `,`, each
//!   hop stripped, then walked right to left; the first untrusted hop is the client, and if
//!   every hop is trusted the leftmost one is. Empty hops are *not* dropped: an empty hop is
//!   untrusted, so it is chosen, and an empty choice leaves the client untouched
//!   (uvicorn issue #1068). Each hop may carry a port, `host:port` or `[v6]:port` (0.45+).
//! - Header bytes are decoded as latin-1 and "stripped" with Python's `str.strip()`, whose
//!   whitespace set on latin-1 is `\t \n \v \f \r \x1c-\x1f space \x85 \xa0`.
//!
//! The hot path (`is_trusted` on every request, `forwarded_info` when no proxy header is
//! present) does not allocate.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

/// `X-Forwarded-For` header name (custom names built from a static string do not allocate).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// `X-Forwarded-Proto` header name.
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Parsed `--forwarded-allow-ips` value (uvicorn's `_TrustedHosts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustedHosts {
    /// The list was exactly `*`: every peer and every hop is trusted.
    always_trust: bool,
    /// Trusted single addresses, compared as addresses (so `::1` == `0:0:0:0:0:0:0:1`).
    ips: Vec<IpAddr>,
    /// Trusted networks as (network address, prefix length); host bits are always zero.
    nets: Vec<(IpAddr, u8)>,
    /// Entries that are neither addresses nor networks, matched by exact string equality.
    literals: Vec<String>,
}

impl TrustedHosts {
    /// Parse a list of entries; each entry may itself be a comma-separated string (the CLI
    /// and `FORWARDED_ALLOW_IPS` give one string, the Python API may give a list).
    ///
    /// Entries are stripped (Python `str.strip()` whitespace) and empty ones are skipped
    /// (uvicorn keeps them as the literal `""`, which can never match: an empty host is
    /// never trusted). Then, like uvicorn:
    /// - the list trusts everyone only when it is exactly `*`; uvicorn checks
    ///   `trusted_hosts in ("*", ["*"])`, so in `"*,10.0.0.1"` the `*` is a mere literal;
    /// - an entry containing `/` is a network (`ipaddress.ip_network`, strict: host bits
    ///   set makes it invalid), IPv4 prefixes may be written as a netmask or hostmask;
    /// - otherwise an IP address (`ipaddress.ip_address`);
    /// - whatever fails to parse is a literal (e.g. a unix socket path). Scoped IPv6
    ///   addresses (`fe80::1%eth0`) become literals here, which still matches the same
    ///   scoped string exactly, as uvicorn would.
    pub(crate) fn parse<S: AsRef<str>>(entries: &[S]) -> Self {
        let items = || {
            entries
                .iter()
                .flat_map(|e| e.as_ref().split(','))
                .map(|s| s.trim_matches(is_py_space_char))
                .filter(|s| !s.is_empty())
        };
        let mut out = Self::default();
        let mut it = items();
        if it.next() == Some("*") && it.next().is_none() {
            out.always_trust = true;
            return out;
        }
        for item in items() {
            if item.contains('/') {
                match parse_network(item) {
                    Some(net) => push_unique(&mut out.nets, net),
                    None => push_unique(&mut out.literals, item.to_owned()),
                }
            } else {
                match item.parse::<IpAddr>() {
                    Ok(ip) => push_unique(&mut out.ips, ip),
                    Err(_) => push_unique(&mut out.literals, item.to_owned()),
                }
            }
        }
        out
    }

    /// Whether a peer identified by `host` (an IP address string, or a literal such as a
    /// socket path) is trusted. An empty host is never trusted unless everyone is.
    ///
    /// Like uvicorn's `_compute_trust`, a host that parses as an IP address is checked only
    /// against the addresses and networks, anything else only against the literals.
    pub(crate) fn is_trusted(&self, host: &str) -> bool {
        if self.always_trust {
            return true;
        }
        if host.is_empty() {
            return false;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => self.contains_ip(ip),
            Err(_) => self.literals.iter().any(|l| l == host),
        }
    }

    /// Whether a peer address is trusted, without formatting it first.
    ///
    /// Equivalent to `is_trusted(&ip.to_string())`. Note that uvicorn does not unmap
    /// IPv4-mapped IPv6 peers (`::ffff:127.0.0.1` is not `127.0.0.1`); neither does this.
    pub(crate) fn is_trusted_ip(&self, ip: IpAddr) -> bool {
        self.always_trust || self.contains_ip(ip)
    }

    /// Whether a unix-socket peer on `path` is trusted: `*`, the literal `unix:` (any unix
    /// socket) or the socket path itself in the list.
    pub(crate) fn trusts_unix(&self, path: &str) -> bool {
        self.always_trust
            || self.literals.iter().any(|literal| literal == "unix:" || (!path.is_empty() && literal == path))
    }

    /// Whether every peer is trusted (the list was `*`).
    pub(crate) fn trusts_all(&self) -> bool {
        self.always_trust
    }

    /// uvicorn's `get_trusted_client_address` on already split and stripped hops: walk
    /// `hosts` right to left and return the first hop whose host is untrusted; if all are
    /// trusted return the leftmost (uvicorn issue #1068 comment 855371576).
    ///
    /// The hop is returned as written, possibly with a port; trust is decided on the host
    /// part (see [`split_host_port`]). An empty slice yields `""`.
    #[cfg(test)]
    pub(crate) fn client_from_forwarded_for<'a>(&self, hosts: &[&'a str]) -> &'a str {
        if !self.always_trust {
            for &hop in hosts.iter().rev() {
                if !self.is_trusted(split_host_port(hop).0) {
                    return hop;
                }
            }
        }
        hosts.first().copied().unwrap_or("")
    }

    /// Address / network membership (never consults the literals).
    fn contains_ip(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip) || self.nets.iter().any(|&(net, prefix)| network_contains(net, prefix, ip))
    }

    /// [`Self::is_trusted`] for a host taken from header bytes, with uvicorn's latin-1
    /// decoding semantics for the literal comparison.
    fn is_trusted_latin1(&self, host: &[u8]) -> bool {
        if self.always_trust {
            return true;
        }
        match std::str::from_utf8(host) {
            // ASCII decodes identically as UTF-8 and latin-1.
            Ok(s) if host.is_ascii() => self.is_trusted(s),
            // Non-ASCII: never an IP address; compare literals char-by-byte.
            _ => self.literals.iter().any(|l| latin1_eq(l, host)),
        }
    }
}

/// What the proxy headers say, for a trusted peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ForwardedInfo {
    /// New `scope["scheme"]`: one of `"http"`, `"https"`, `"ws"`, `"wss"`.
    pub(crate) scheme: Option<&'static str>,
    /// New `scope["client"]`: host (latin-1 decoded, never empty) and port (0 if absent).
    pub(crate) client: Option<(String, u16)>,
    /// New `host` request header (RFC 7239 `host=`, or `X-Forwarded-Host` when enabled).
    pub(crate) host: Option<String>,
}

/// Apply uvicorn's proxy-header rules to one request or websocket handshake.
///
/// Headers are honoured only when the peer is trusted; `peer_host` is `scope["client"][0]`,
/// `None` for a unix socket (then only `*` trusts it, as in uvicorn). The two headers are
/// independent: an invalid `X-Forwarded-Proto` does not stop `X-Forwarded-For` and vice
/// versa. A field left `None` means "leave the scope as it is".
#[cfg(test)]
pub(crate) fn forwarded_info(
    trusted: &TrustedHosts,
    peer_host: Option<&str>,
    headers: &HeaderMap,
    is_websocket: bool,
) -> ForwardedInfo {
    let peer_trusted = match peer_host {
        Some(host) => trusted.is_trusted(host),
        None => trusted.trusts_all(),
    };
    if !peer_trusted {
        return ForwardedInfo::default();
    }
    forwarded_by_trusted_peer(trusted, headers, is_websocket)
}

/// What the proxy headers say, once the peer is known to be trusted (the caller checked it,
/// e.g. with [`TrustedHosts::is_trusted_ip`], without formatting the peer address).
pub(crate) fn forwarded_by_trusted_peer(
    trusted: &TrustedHosts,
    headers: &HeaderMap,
    is_websocket: bool,
) -> ForwardedInfo {
    ForwardedInfo {
        scheme: forwarded_scheme(headers, is_websocket),
        client: forwarded_client(trusted, headers),
        host: None,
    }
}

/// Split a forwarded hop into host and port like uvicorn's `_parse_host_port` (0.45+).
///
/// `[v6]:port` and `[v6]` lose their brackets; `host:port` splits only when there is
/// exactly one colon, so a bare IPv6 address never has a port. Malformed values are kept
/// whole with port 0, except that a bracketed host with a bad port keeps the unbracketed
/// host. The port follows Python `int()` (surrounding whitespace, sign, `_` separators);
/// uvicorn would report an out-of-range integer (`-1`, `70000`) verbatim, an ASGI port
/// cannot be that, so we split the host the same way and report port 0.
#[cfg(test)]
pub(crate) fn split_host_port(value: &str) -> (&str, u16) {
    let (start, end, port) = host_port_span(value.as_bytes());
    // The span ends sit next to ASCII delimiters, so they are char boundaries.
    (&value[start..end], port)
}

/// Byte span `(start, end)` of the host inside `value`, and the port (see
/// [`split_host_port`]).
fn host_port_span(value: &[u8]) -> (usize, usize, u16) {
    let whole = (0, value.len(), 0);
    if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return whole;
        };
        let rest = &value[close + 1..];
        return match rest.split_first() {
            None => (1, close, 0),
            Some((b':', digits)) => (1, close, py_int_port(digits).map_or(0, port_or_zero)),
            Some(_) => whole,
        };
    }
    let mut colons = value.iter().enumerate().filter(|&(_, &b)| b == b':');
    if let (Some((colon, _)), None) = (colons.next(), colons.next()) {
        return match py_int_port(&value[colon + 1..]) {
            Some(port) => (0, colon, port_or_zero(port)),
            None => whole,
        };
    }
    whole
}

/// `X-Forwarded-Proto` → scheme: last occurrence, stripped, case-sensitive allow-list.
fn forwarded_scheme(headers: &HeaderMap, is_websocket: bool) -> Option<&'static str> {
    // uvicorn loops over scope["headers"] and keeps the last value it sees.
    let value = headers.get_all(&X_FORWARDED_PROTO).iter().next_back()?;
    let scheme = match py_strip(value.as_bytes()) {
        b"http" => "http",
        b"https" => "https",
        b"ws" => "ws",
        b"wss" => "wss",
        _ => return None,
    };
    Some(match (is_websocket, scheme) {
        (true, "http") => "ws",
        (true, "https") => "wss",
        // Like uvicorn, "ws"/"wss" are accepted verbatim even on an HTTP scope.
        _ => scheme,
    })
}

/// `X-Forwarded-For` → client, walking every occurrence right to left without joining.
///
/// Splitting each occurrence on `,` and concatenating the pieces gives the same hops as
/// uvicorn's `", ".join(values).split(",")` followed by `strip()`.
fn forwarded_client(trusted: &TrustedHosts, headers: &HeaderMap) -> Option<(String, u16)> {
    let values = headers.get_all(&X_FORWARDED_FOR);
    let leftmost = values.iter().next()?;
    let mut chosen = None;
    if !trusted.trusts_all() {
        'walk: for value in values.iter().rev() {
            for hop in value.as_bytes().rsplit(|&b| b == b',') {
                let hop = py_strip(hop);
                let (start, end, _) = host_port_span(hop);
                if !trusted.is_trusted_latin1(&hop[start..end]) {
                    chosen = Some(hop);
                    break 'walk;
                }
            }
        }
    }
    // All hops trusted (or `*`): the leftmost hop is the client.
    let hop = chosen.unwrap_or_else(|| {
        let first = leftmost.as_bytes().split(|&b| b == b',').next();
        py_strip(first.unwrap_or_default())
    });
    let (start, end, port) = host_port_span(hop);
    let host = &hop[start..end];
    // uvicorn: `if host:` — an empty hop leaves scope["client"] untouched.
    if host.is_empty() {
        return None;
    }
    Some((host.iter().map(|&b| char::from(b)).collect(), port))
}

/// Parse a strict `ipaddress.ip_network` string (`addr/prefix`), `None` if invalid.
///
/// IPv4 prefixes may be decimal (leading zeros allowed), a netmask (`255.0.0.0`) or a
/// hostmask (`0.255.255.255`), tried in that order; IPv6 prefixes are decimal only.
fn parse_network(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) {
        let digits = prefix.trim_start_matches('0');
        // More than three significant digits is certainly out of range.
        if digits.len() > 3 {
            return None;
        }
        digits.parse::<u16>().unwrap_or(0)
    } else if addr.is_ipv4() {
        let mask = u32::from(prefix.parse::<std::net::Ipv4Addr>().ok()?);
        mask_prefix(mask).or_else(|| mask_prefix(!mask))?
    } else {
        return None;
    };
    if prefix > max {
        return None;
    }
    let prefix = u8::try_from(prefix).ok()?;
    // Strict: host bits set is a ValueError in Python, hence a literal for uvicorn.
    (masked(addr, prefix) == addr).then_some((addr, prefix))
}

/// Prefix length of a contiguous netmask (`1…10…0`), `None` if not contiguous.
fn mask_prefix(mask: u32) -> Option<u16> {
    let ones = mask.leading_ones();
    (ones + mask.trailing_zeros() == 32).then_some(ones as u16)
}

/// `addr` with every bit past `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Whether `ip` lies in `net/prefix`; addresses of another family never do (Python's
/// `IPv6Address in IPv4Network` is `False`).
fn network_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    net.is_ipv4() == ip.is_ipv4() && masked(ip, prefix) == net
}

/// Push `item` unless already present (uvicorn stores sets).
fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Python `str.isspace()` restricted to latin-1, for header bytes decoded as latin-1.
fn is_py_space_byte(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | 0x1c..=0x20 | 0x85 | 0xa0)
}

/// Python `str.isspace()` for config strings: Unicode White_Space plus `\x1c`-`\x1f`.
fn is_py_space_char(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python `str.strip()` on latin-1 bytes.
fn py_strip(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_py_space_byte(*first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !is_py_space_byte(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// Python `int()` on latin-1 bytes: whitespace, optional sign, ASCII digits with single
/// `_` between digits. Values are saturated, which is enough to tell "out of port range".
fn py_int_port(bytes: &[u8]) -> Option<i64> {
    let bytes = py_strip(bytes);
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.first().is_none_or(|b| !b.is_ascii_digit())
        || digits.last().is_none_or(|b| !b.is_ascii_digit())
        || digits.windows(2).any(|w| w == b"__")
    {
        return None;
    }
    let mut value: i64 = 0;
    for &b in digits {
        match b {
            b'0'..=b'9' => value = value.saturating_mul(10).saturating_add(i64::from(b - b'0')),
            b'_' => {}
            _ => return None,
        }
    }
    Some(if negative { -value } else { value })
}

/// Port from a Python integer: 0 when it cannot be a TCP port.
fn port_or_zero(value: i64) -> u16 {
    u16::try_from(value).unwrap_or(0)
}

/// Whether `s` equals `bytes` decoded as latin-1 (each byte is the code point U+00XX).
fn latin1_eq(s: &str, bytes: &[u8]) -> bool {
    s.chars().map(u32::from).eq(bytes.iter().map(|&b| u32::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn th(s: &str) -> TrustedHosts {
        TrustedHosts::parse(&[s])
    }

    fn hm(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(name, value) in pairs {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    fn info(trust: &str, peer: Option<&str>, pairs: &[(&str, &[u8])]) -> ForwardedInfo {
        forwarded_info(&th(trust), peer, &hm(pairs), false)
    }

    fn client(trust: &str, xff: &[&str]) -> Option<(String, u16)> {
        let pairs: Vec<(&str, &[u8])> = xff.iter().map(|v| ("x-forwarded-for", v.as_bytes())).collect();
        info(trust, Some("127.0.0.1"), &pairs).client
    }

    fn c(host: &str, port: u16) -> Option<(String, u16)> {
        Some((host.to_owned(), port))
    }

    #[test]
    fn trust_all() {
        let t = th("*");
        assert!(t.trusts_all());
        assert!(t.is_trusted("1.2.3.4"));
        assert!(t.is_trusted("/tmp/sock"));
        assert!(t.is_trusted(""));
        assert!(TrustedHosts::parse(&[" * "]).trusts_all());
        let i = forwarded_info(&t, None, &hm(&[("x-forwarded-proto", b"https")]), false);
        assert_eq!(i.scheme, Some("https"));
    }

    #[test]
    fn star_mixed_with_others_is_a_literal() {
        // uvicorn: `trusted_hosts in ("*", ["*"])` fails, "*" becomes a literal.
        let t = th("*, 10.0.0.1");
        assert!(!t.trusts_all());
        assert!(!t.is_trusted("1.2.3.4"));
        assert!(t.is_trusted("10.0.0.1"));
        assert!(t.is_trusted("*"));
        assert!(!TrustedHosts::parse(&["*", "10.0.0.1"]).trusts_all());
    }

    #[test]
    fn ipv4_addresses() {
        let t = th("127.0.0.1, 10.1.2.3");
        assert!(t.is_trusted("127.0.0.1"));
        assert!(t.is_trusted("10.1.2.3"));
        assert!(!t.is_trusted("10.1.2.4"));
        assert!(!t.is_trusted(""));
        assert!(!t.is_trusted("::ffff:127.0.0.1"));
        assert!(t.is_trusted_ip("127.0.0.1".parse().unwrap()));
        assert!(!t.is_trusted_ip("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn ipv6_addresses_compare_as_addresses() {
        let t = th("::1,2001:db8::1");
        assert!(t.is_trusted("0:0:0:0:0:0:0:1"));
        assert!(t.is_trusted("2001:DB8:0::1"));
        assert!(!t.is_trusted("2001:db8::2"));
        assert!(!t.is_trusted("127.0.0.1"));
    }

    #[test]
    fn cidr_v4() {
        let t = th("10.0.0.0/8, 192.168.0.0/255.255.0.0, 172.16.0.0/0.15.255.255");
        assert!(t.is_trusted("10.255.1.2"));
        assert!(!t.is_trusted("11.0.0.1"));
        assert!(t.is_trusted("192.168.7.7"));
        assert!(!t.is_trusted("192.169.0.1"));
        assert!(t.is_trusted("172.31.0.1"));
        assert!(!t.is_trusted("172.32.0.1"));
        assert!(!t.is_trusted("::ffff:10.0.0.1"));
        assert!(th("0.0.0.0/0").is_trusted("8.8.8.8"));
        assert!(!th("0.0.0.0/0").is_trusted("::1"));
        assert!(th("1.2.3.4/32").is_trusted("1.2.3.4"));
        assert!(th("10.0.0.0/08").is_trusted("10.9.9.9"));
    }

    #[test]
    fn cidr_v6() {
        let t = th("fd00::/8");
        assert!(t.is_trusted("fd12:3456::1"));
        assert!(!t.is_trusted("fe80::1"));
        assert!(!t.is_trusted("10.0.0.1"));
        assert!(th("::/0").is_trusted("2001:db8::1"));
        assert!(th("2001:db8::/128").is_trusted("2001:db8::"));
    }

    #[test]
    fn invalid_networks_become_literals() {
        // Strict ip_network: host bits set, bad prefixes, v6 netmask → literal strings.
        for s in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/255.0.255.0",
            "10.0.0.0/0.0.0.0",
            "fd00::/ffff::",
            "fd00::/129",
            "a/b/c",
        ] {
            let t = th(s);
            assert_eq!(t.literals, vec![s.to_owned()], "{s}");
            assert!(t.nets.is_empty(), "{s}");
            assert!(t.is_trusted(s), "{s}");
            assert!(!t.is_trusted("10.0.0.1"), "{s}");
        }
        assert_eq!(th("10.0.0.0/255.255.255.255").nets.len(), 1);
    }

    #[test]
    fn literals_and_parsing() {
        let t = TrustedHosts::parse(&["/tmp/app.sock, localhost", " ,,", "010.0.0.1"]);
        assert!(t.is_trusted("/tmp/app.sock"));
        assert!(t.is_trusted("localhost"));
        assert!(!t.is_trusted("LOCALHOST"));
        // Leading zeros are not an IPv4 address for Python 3.9.5+ either: a literal.
        assert!(t.is_trusted("010.0.0.1"));
        assert!(!t.is_trusted("10.0.0.1"));
        assert_eq!(t.literals.len(), 3);
        assert!(t.ips.is_empty());
        assert_eq!(TrustedHosts::parse::<&str>(&[]), TrustedHosts::default());
    }

    #[test]
    fn untrusted_peer_ignores_headers() {
        let pairs: &[(&str, &[u8])] = &[("x-forwarded-proto", b"https"), ("x-forwarded-for", b"1.2.3.4")];
        assert_eq!(info("127.0.0.1", Some("10.0.0.9"), pairs), ForwardedInfo::default());
        // Unix socket peer: no client, only "*" trusts it.
        assert_eq!(info("127.0.0.1", None, pairs), ForwardedInfo::default());
        assert_eq!(info("/tmp/s", None, pairs), ForwardedInfo::default());
        let t = info("127.0.0.1", Some("127.0.0.1"), pairs);
        assert_eq!(t.scheme, Some("https"));
        assert_eq!(t.client, c("1.2.3.4", 0));
    }

    #[test]
    fn no_headers_no_change() {
        assert_eq!(info("*", Some("1.1.1.1"), &[]), ForwardedInfo::default());
        assert_eq!(info("127.0.0.1", Some("127.0.0.1"), &[("x-other", b"1")]), ForwardedInfo::default());
    }

    #[test]
    fn xff_right_to_left() {
        let t = "127.0.0.1, 10.0.0.0/8";
        assert_eq!(client(t, &["1.1.1.1, 2.2.2.2, 10.0.0.5"]), c("2.2.2.2", 0));
        assert_eq!(client(t, &["1.1.1.1, 10.0.0.7, 10.0.0.5"]), c("1.1.1.1", 0));
        assert_eq!(client(t, &["9.9.9.9"]), c("9.9.9.9", 0));
    }

    #[test]
    fn xff_all_trusted_gives_leftmost() {
        let t = "127.0.0.1, 10.0.0.0/8";
        assert_eq!(client(t, &["10.0.0.1, 10.0.0.2, 127.0.0.1"]), c("10.0.0.1", 0));
        assert_eq!(client(t, &["10.0.0.1:81, 10.0.0.2"]), c("10.0.0.1", 81));
        // "*" takes the leftmost directly.
        assert_eq!(client("*", &["1.1.1.1, 2.2.2.2"]), c("1.1.1.1", 0));
    }

    #[test]
    fn multiple_xff_headers_are_joined() {
        let t = "127.0.0.1, 10.0.0.0/8";
        assert_eq!(client(t, &["1.1.1.1", "2.2.2.2, 10.0.0.1"]), c("2.2.2.2", 0));
        assert_eq!(client(t, &["1.1.1.1, 10.0.0.3", "10.0.0.1"]), c("1.1.1.1", 0));
        assert_eq!(client(t, &["10.0.0.3", "10.0.0.1"]), c("10.0.0.3", 0));
        assert_eq!(client("*", &["5.5.5.5", "6.6.6.6"]), c("5.5.5.5", 0));
    }

    #[test]
    fn ports() {
        let t = "127.0.0.1";
        assert_eq!(client(t, &["1.2.3.4:8080"]), c("1.2.3.4", 8080));
        assert_eq!(client(t, &["1.2.3.4:+8_0"]), c("1.2.3.4", 80));
        assert_eq!(client(t, &["1.2.3.4:0080"]), c("1.2.3.4", 80));
        // Not an int: the whole hop is the host (uvicorn keeps `value`).
        assert_eq!(client(t, &["1.2.3.4:abc"]), c("1.2.3.4:abc", 0));
        assert_eq!(client(t, &["1.2.3.4:"]), c("1.2.3.4:", 0));
        assert_eq!(client(t, &["1.2.3.4:8__0"]), c("1.2.3.4:8__0", 0));
        // An int that cannot be a port: host split as uvicorn does, port 0.
        assert_eq!(client(t, &["1.2.3.4:70000"]), c("1.2.3.4", 0));
        assert_eq!(client(t, &["1.2.3.4:-1"]), c("1.2.3.4", 0));
        assert_eq!(client(t, &["example.com:443"]), c("example.com", 443));
        // Trust is decided on the host part.
        assert_eq!(client(t, &["1.1.1.1, 127.0.0.1:9"]), c("1.1.1.1", 0));
    }

    #[test]
    fn ipv6_hops() {
        let t = "127.0.0.1, ::1";
        assert_eq!(client(t, &["[2001:db8::1]:443"]), c("2001:db8::1", 443));
        assert_eq!(client(t, &["[2001:db8::1]"]), c("2001:db8::1", 0));
        assert_eq!(client(t, &["[2001:db8::1]:x"]), c("2001:db8::1", 0));
        assert_eq!(client(t, &["[2001:db8::1]x"]), c("[2001:db8::1]x", 0));
        assert_eq!(client(t, &["[2001:db8::1"]), c("[2001:db8::1", 0));
        // Bare IPv6 never has a port.
        assert_eq!(client(t, &["2001:db8::1"]), c("2001:db8::1", 0));
        assert_eq!(client(t, &["2001:db8::1:80"]), c("2001:db8::1:80", 0));
        // Trusted bracketed hop is skipped.
        assert_eq!(client(t, &["2.2.2.2, [::1]:5"]), c("2.2.2.2", 0));
    }

    #[test]
    fn proto_last_occurrence_and_validation() {
        let p = |vals: &[&[u8]], ws: bool| {
            let pairs: Vec<(&str, &[u8])> = vals.iter().map(|&v| ("x-forwarded-proto", v)).collect();
            forwarded_info(&th("*"), Some("1.1.1.1"), &hm(&pairs), ws).scheme
        };
        assert_eq!(p(&[b"http", b"https"], false), Some("https"));
        assert_eq!(p(&[b"https", b"gopher"], false), None);
        assert_eq!(p(&[b"  https \t"], false), Some("https"));
        assert_eq!(p(&[b"\xa0https\x85"], false), Some("https"));
        // Case-sensitive, single value, like uvicorn.
        assert_eq!(p(&[b"HTTPS"], false), None);
        assert_eq!(p(&[b"https, http"], false), None);
        assert_eq!(p(&[b""], false), None);
        assert_eq!(p(&[b"ws"], false), Some("ws"));
    }

    #[test]
    fn websocket_mapping() {
        let p = |v: &[u8]| forwarded_info(&th("*"), Some("1.1.1.1"), &hm(&[("x-forwarded-proto", v)]), true).scheme;
        assert_eq!(p(b"http"), Some("ws"));
        assert_eq!(p(b"https"), Some("wss"));
        assert_eq!(p(b"ws"), Some("ws"));
        assert_eq!(p(b"wss"), Some("wss"));
        assert_eq!(p(b"ftp"), None);
    }

    #[test]
    fn empty_xff() {
        let t = "127.0.0.1";
        assert_eq!(client(t, &[""]), None);
        assert_eq!(client(t, &[" , "]), None);
        assert_eq!(client("*", &[""]), None);
        assert_eq!(client("*", &[", 1.1.1.1"]), None);
        // An empty hop is untrusted, so the walk stops there and nothing is applied.
        assert_eq!(client(t, &["1.1.1.1, , 127.0.0.1"]), None);
        assert_eq!(client(t, &["1.1.1.1", ""]), None);
        assert_eq!(client(t, &["", "1.1.1.1"]), c("1.1.1.1", 0));
    }

    #[test]
    fn whitespace() {
        let t = "127.0.0.1";
        assert_eq!(client(t, &["  1.1.1.1 ,\t127.0.0.1  "]), c("1.1.1.1", 0));
        let h = hm(&[("x-forwarded-for", b"\xa01.1.1.1\x85")]);
        let i = forwarded_info(&th(t), Some("127.0.0.1"), &h, false);
        assert_eq!(i.client, c("1.1.1.1", 0));
        assert!(TrustedHosts::parse(&["\t10.0.0.1 \x1c"]).is_trusted("10.0.0.1"));
    }

    #[test]
    fn latin1_hosts() {
        let h = hm(&[("x-forwarded-for", b"caf\xe9")]);
        let i = forwarded_info(&th("127.0.0.1"), Some("127.0.0.1"), &h, false);
        assert_eq!(i.client, c("café", 0));
        // A latin-1 literal matches the latin-1 decoded hop, so the walk continues left.
        let h = hm(&[("x-forwarded-for", b"1.1.1.1, caf\xe9")]);
        let i = forwarded_info(&th("127.0.0.1, café"), Some("127.0.0.1"), &h, false);
        assert_eq!(i.client, c("1.1.1.1", 0));
        // UTF-8 bytes of "é" are two latin-1 chars, not "é".
        let h = hm(&[("x-forwarded-for", "1.1.1.1, café".as_bytes())]);
        let i = forwarded_info(&th("127.0.0.1, café"), Some("127.0.0.1"), &h, false);
        assert_eq!(i.client, c("cafÃ©", 0));
    }

    #[test]
    fn client_from_forwarded_for_walks_str_hops() {
        let t = th("127.0.0.1, 10.0.0.0/8");
        assert_eq!(t.client_from_forwarded_for(&["1.1.1.1", "2.2.2.2:5", "10.0.0.1"]), "2.2.2.2:5");
        assert_eq!(t.client_from_forwarded_for(&["10.0.0.2", "127.0.0.1:1"]), "10.0.0.2");
        assert_eq!(t.client_from_forwarded_for(&[]), "");
        assert_eq!(th("*").client_from_forwarded_for(&["a", "b"]), "a");
    }

    #[test]
    fn split_host_port_cases() {
        assert_eq!(split_host_port("1.2.3.4:80"), ("1.2.3.4", 80));
        assert_eq!(split_host_port("[::1]:80"), ("::1", 80));
        assert_eq!(split_host_port("[::1]"), ("::1", 0));
        assert_eq!(split_host_port("::1"), ("::1", 0));
        assert_eq!(split_host_port("h: 80 "), ("h", 80));
        assert_eq!(split_host_port("é:1"), ("é", 1));
        assert_eq!(split_host_port(""), ("", 0));
    }

    #[test]
    fn dedups_entries() {
        let t = th("127.0.0.1, 127.0.0.1, 10.0.0.0/8, 10.0.0.0/255.0.0.0, x, x");
        assert_eq!(t.ips.len(), 1);
        assert_eq!(t.nets.len(), 1);
        assert_eq!(t.literals.len(), 1);
    }
}
