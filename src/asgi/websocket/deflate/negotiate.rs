//! Accepting a permessage-deflate offer (RFC 7692 §7.1) from the client's
//! `Sec-WebSocket-Extensions` header (RFC 6455 §9.1).

use http::HeaderValue;

/// Largest LZ77 window the server compresses with, and the one it asks of a client that lets it
/// choose (`client_max_window_bits` without a value): 4 KiB windows, as uvicorn's websockets
/// sans-I/O implementation, instead of zlib's 32 KiB.
const WINDOW_BITS: u8 = 12;

/// The permessage-deflate parameters agreed for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeflateParams {
    /// The server starts every message with an empty LZ77 window (§7.1.1.1).
    pub(crate) server_no_context_takeover: bool,
    /// The client does so, so its messages can be inflated with a fresh window each (§7.1.1.2).
    pub(crate) client_no_context_takeover: bool,
    /// Window of the server's compressor, 9..=15 (§7.1.2.1).
    pub(crate) server_max_window_bits: u8,
    /// Largest window the client compresses with, 8..=15 (§7.1.2.2).
    pub(crate) client_max_window_bits: u8,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value of the handshake response.
    pub(crate) fn response(&self, client_window_offered: bool) -> HeaderValue {
        let mut value = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            value.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            value.push_str("; client_no_context_takeover");
        }
        value.push_str(&format!("; server_max_window_bits={}", self.server_max_window_bits));
        // §7.1.2.2: only in answer to an offer that has the parameter.
        if client_window_offered {
            value.push_str(&format!("; client_max_window_bits={}", self.client_max_window_bits));
        }
        HeaderValue::from_str(&value).expect("ASCII header value")
    }
}

/// The first acceptable permessage-deflate offer among the client's `Sec-WebSocket-Extensions`
/// values, with the response header value; `None` when there is none (or the header is
/// malformed), and the connection then runs uncompressed.
pub(crate) fn negotiate<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<(DeflateParams, HeaderValue)> {
    let mut offers = Vec::new();
    for value in values {
        offers.extend(parse_extensions(value.as_bytes())?);
    }
    offers.iter().filter(|offer| offer.name.eq_ignore_ascii_case("permessage-deflate")).find_map(|offer| {
        let (params, client_window_offered) = accept(&offer.params)?;
        Some((params, params.response(client_window_offered)))
    })
}

/// One extension of `Sec-WebSocket-Extensions`: its name and parameters (values unquoted).
#[derive(Debug, PartialEq, Eq)]
struct Extension {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// Parse `1#( token *( ";" token [ "=" ( token | quoted-string ) ] ) )` (RFC 6455 §9.1), with the
/// optional whitespace and empty list elements HTTP allows; `None` if malformed.
fn parse_extensions(input: &[u8]) -> Option<Vec<Extension>> {
    let mut cursor = Cursor { input, pos: 0 };
    let mut extensions = Vec::new();
    loop {
        cursor.skip_whitespace();
        if cursor.eat(b',') {
            continue;
        }
        if cursor.at_end() {
            return Some(extensions);
        }
        let mut extension = Extension { name: cursor.token()?, params: Vec::new() };
        loop {
            cursor.skip_whitespace();
            if !cursor.eat(b';') {
                break;
            }
            cursor.skip_whitespace();
            let name = cursor.token()?;
            cursor.skip_whitespace();
            let value = if cursor.eat(b'=') {
                cursor.skip_whitespace();
                Some(if cursor.peek() == Some(b'"') { cursor.quoted()? } else { cursor.token()? })
            } else {
                None
            };
            extension.params.push((name, value));
        }
        extensions.push(extension);
        if !(cursor.eat(b',') || cursor.at_end()) {
            return None;
        }
    }
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.pos += usize::from(found);
        found
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// A non-empty HTTP token (RFC 9110 §5.6.2).
    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.input[start..self.pos]).into_owned())
    }

    /// A quoted-string, unescaped (RFC 9110 §5.6.4); RFC 6455 §9.1 wants a token inside.
    fn quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    self.pos += 1;
                    value.push(self.peek()?);
                }
                byte => value.push(byte),
            }
            self.pos += 1;
        }
        self.pos += 1;
        (!value.is_empty() && value.iter().copied().all(is_tchar)).then(|| String::from_utf8_lossy(&value).into_owned())
    }
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Window bits as §7.1.2 writes them: a decimal 8..=15 without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    ((8..=15).contains(&bits) && !value.starts_with('0')).then_some(bits)
}

/// The agreed parameters for one offer, and whether it named `client_max_window_bits`; `None`
/// declines it: an unknown, repeated or invalid parameter (§7.1), or a server window of 8 bits,
/// which zlib cannot produce for raw DEFLATE.
fn accept(offer: &[(String, Option<String>)]) -> Option<(DeflateParams, bool)> {
    let mut params = DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: WINDOW_BITS,
        // §7.1.2.2: without the parameter the client may use any window, up to 15 bits.
        client_max_window_bits: 15,
    };
    let mut client_window_offered = false;
    for (i, (name, value)) in offer.iter().enumerate() {
        if offer[..i].iter().any(|(earlier, _)| earlier.eq_ignore_ascii_case(name)) {
            return None;
        }
        match (name.to_ascii_lowercase().as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
            ("server_max_window_bits", Some(value)) => {
                params.server_max_window_bits = window_bits(value)?.min(WINDOW_BITS);
            }
            ("client_max_window_bits", value) => {
                client_window_offered = true;
                params.client_max_window_bits = value.map_or(Some(WINDOW_BITS), window_bits)?.min(WINDOW_BITS);
            }
            _ => return None,
        }
    }
    (params.server_max_window_bits >= 9).then_some((params, client_window_offered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate_str(values: &[&str]) -> Option<(DeflateParams, String)> {
        let values: Vec<HeaderValue> = values.iter().map(|v| HeaderValue::from_str(v).unwrap()).collect();
        negotiate(values.iter()).map(|(params, response)| (params, response.to_str().unwrap().to_owned()))
    }

    fn params(server_nct: bool, client_nct: bool, server_bits: u8, client_bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        }
    }

    #[test]
    fn parses_extensions_parameters_and_quoted_values() {
        let parsed = parse_extensions(b"foo, permessage-deflate ; a=1;b = \"x\\yz\" ;c,,bar").unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], Extension { name: "foo".into(), params: vec![] });
        assert_eq!(parsed[1].name, "permessage-deflate");
        assert_eq!(
            parsed[1].params,
            vec![("a".into(), Some("1".into())), ("b".into(), Some("xyz".into())), ("c".into(), None)]
        );
        assert_eq!(parsed[2].name, "bar");
        assert_eq!(parse_extensions(b"").unwrap(), vec![]);
        assert_eq!(parse_extensions(b" , ").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "permessage-deflate; a=\"unterminated",
            "permessage-deflate; =1",
            "permessage-deflate; a=",
            "permessage-deflate x",
            "permessage-deflate; a=\"not a token\"",
            "permessage-deflate; a=\"\"",
            ";a",
            "a; b=1 c",
        ] {
            assert!(parse_extensions(bad.as_bytes()).is_none(), "{bad}");
        }
        assert!(negotiate_str(&["permessage-deflate", "x; =1"]).is_none());
    }

    #[test]
    fn plain_offer_gets_server_window_only() {
        let (agreed, response) = negotiate_str(&["permessage-deflate"]).unwrap();
        assert_eq!(agreed, params(false, false, 12, 15));
        assert_eq!(response, "permessage-deflate; server_max_window_bits=12");
    }

    #[test]
    fn websockets_default_offer() {
        // What the Python websockets client sends by default.
        let (agreed, response) = negotiate_str(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(agreed, params(false, false, 12, 12));
        assert_eq!(response, "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12");
    }

    #[test]
    fn context_takeover_and_window_parameters_are_honoured() {
        let (agreed, response) =
            negotiate_str(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9"])
            .unwrap();
        assert_eq!(agreed, params(true, true, 10, 9));
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9"
        );
        // Larger windows than ours are lowered; quoted values are unquoted.
        let (agreed, _) =
            negotiate_str(&["permessage-deflate; server_max_window_bits=\"15\"; client_max_window_bits=15"]).unwrap();
        assert_eq!(agreed, params(false, false, 12, 12));
        // A client window of 8 is fine to inflate.
        let (agreed, _) = negotiate_str(&["permessage-deflate; client_max_window_bits=8"]).unwrap();
        assert_eq!(agreed.client_max_window_bits, 8);
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; unknown_parameter",
        ] {
            assert!(negotiate_str(&[bad]).is_none(), "{bad}");
            let fallback = format!("{bad}, permessage-deflate; server_max_window_bits=11");
            let (agreed, _) = negotiate_str(&[&fallback]).unwrap();
            assert_eq!(agreed, params(false, false, 11, 15), "{fallback}");
        }
    }

    #[test]
    fn other_extensions_and_several_header_lines() {
        assert!(negotiate_str(&["x-webkit-deflate-frame", "permessage-bzip2"]).is_none());
        let (agreed, _) =
            negotiate_str(&["x-webkit-deflate-frame", "Permessage-Deflate; Client_No_Context_Takeover"]).unwrap();
        assert!(agreed.client_no_context_takeover);
        assert!(negotiate_str(&[]).is_none());
    }
}
