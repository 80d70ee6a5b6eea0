//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, not part of the API).
//!
//! Each function takes the fuzzer's bytes, drives one of the parsers tricorn implements itself
//! (rather than hyper, h2 or tungstenite), and asserts what its callers rely on; a panic is a
//! finding. Inputs are cut into lines so that one input carries several fields: the first line
//! is often a configuration value (`--forwarded-allow-ips`), the rest header lines or values.

use std::io::Cursor;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::asgi::access_log::AccessFormat;
use crate::asgi::websocket::deflate::{Compressor, DeflateParams, Inflating, is_corrupt, negotiate};
use crate::length_field_watch::LengthFieldWatch;
use crate::proxy_headers::{TrustedHosts, forwarded_by_trusted_peer};
use crate::request_fields::FieldsPresent;
use crate::{forwarded, request_checks};

/// Split `data` on LF into at most `max` lines (the last keeps the rest).
fn lines(data: &[u8], max: usize) -> Vec<&[u8]> {
    data.splitn(max, |&b| b == b'\n').collect()
}

/// Header lines `name: value`; lines that are not a valid field are skipped, as hyper would
/// never hand them on.
fn header_map(lines: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// `--forwarded-allow-ips` (first line) and the peer checks: an address is trusted the same way
/// whether it arrives as text or as an `IpAddr`, and `*` trusts everything.
pub fn trusted_hosts(data: &[u8]) {
    let lines = lines(data, 64);
    let config = String::from_utf8_lossy(lines[0]);
    let trusted = TrustedHosts::parse(&[config.as_ref()]);
    for host in &lines[1..] {
        let host = String::from_utf8_lossy(host);
        let by_text = trusted.is_trusted(&host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            assert_eq!(by_text, trusted.is_trusted_ip(ip), "{config:?} {host:?}");
            assert_eq!(trusted.is_trusted(&ip.to_string()), by_text, "{config:?} {host:?}");
        }
        if trusted.trusts_all() {
            assert!(by_text && trusted.trusts_unix(&host));
        }
    }
}

/// Proxy headers from a trusted peer: `X-Forwarded-For`/`-Proto` (uvicorn's rules), RFC 7239
/// `Forwarded`, and `X-Forwarded-Host`/`-Port`/`-Prefix`. The first line is the trust list, the
/// rest header lines.
pub fn proxy_headers(data: &[u8]) {
    let lines = lines(data, 64);
    let config = String::from_utf8_lossy(lines[0]);
    let trusted = TrustedHosts::parse(&[config.as_ref()]);
    let headers = header_map(&lines[1..]);
    for is_websocket in [false, true] {
        for info in [
            forwarded_by_trusted_peer(&trusted, &headers, is_websocket),
            forwarded::rfc7239(&trusted, &headers, is_websocket),
        ] {
            let schemes: &[&str] = if is_websocket { &["ws", "wss"] } else { &["http", "https"] };
            assert!(info.scheme.is_none_or(|scheme| schemes.contains(&scheme)), "{info:?}");
            // The client becomes `scope["client"]`: never an empty host.
            assert!(info.client.as_ref().is_none_or(|(host, _)| !host.is_empty()), "{info:?}");
            // The host replaces the `host` header: it must be a valid header value.
            assert!(info.host.as_ref().is_none_or(|host| HeaderValue::from_str(host).is_ok()), "{info:?}");
        }
    }
    if let Some(host) = forwarded::x_forwarded_host(&headers) {
        assert!(HeaderValue::from_str(&host).is_ok() && !host.is_empty(), "{host:?}");
    }
    assert_ne!(forwarded::x_forwarded_port(&headers), Some(0));
    if let Some(prefix) = forwarded::x_forwarded_prefix(&headers) {
        // The prefix is prepended to `root_path` and must stay a path that cannot climb.
        assert!(prefix.starts_with('/') && !prefix.ends_with('/'), "{prefix:?}");
        assert!(!prefix.split('/').any(|segment| segment == ".."), "{prefix:?}");
    }
}

/// The HTTP/1.x request checks on a head as hyper hands it on: first line `METHOD TARGET
/// VERSION`, then header lines. Heads that hyper would refuse (invalid method or target) are
/// skipped.
pub fn request_head(data: &[u8]) {
    let lines = lines(data, 128);
    let mut start = lines[0].splitn(3, |&b| b == b' ');
    let (Some(method), Some(target)) = (start.next(), start.next()) else { return };
    let version = if start.next() == Some(b"HTTP/1.0") { Version::HTTP_10 } else { Version::HTTP_11 };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(target)) else { return };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = header_map(&lines[1..]);
    let (parts, ()) = request.into_parts();
    if request_checks::check_http1(&parts, FieldsPresent::of(&parts.headers), false).is_ok() {
        // What the app may rely on once the checks pass (RFC 9112 §3.2).
        let hosts = parts.headers.get_all(http::header::HOST).iter().count();
        assert!(hosts <= 1 && (hosts == 1 || version == Version::HTTP_10), "{parts:?}");
    }
}

/// The `Content-Length` line scan of HTTP/1.1 reads: the first byte splits the rest into reads
/// of fuzzed sizes; the scan must find the field line exactly when the whole stream holds one,
/// wherever the reads split it.
pub fn length_field_scan(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else { return };
    let mut watch = LengthFieldWatch::new((), Arc::default());
    let mut found = false;
    for (i, read) in stream.chunks(usize::from(step % 23) + 1).enumerate() {
        // Vary the sizes: every other read is cut in two.
        let (a, b) = read.split_at(if i % 2 == 1 { read.len() / 2 } else { read.len() });
        found |= watch.scan(a);
        found |= watch.scan(b);
    }
    let expected = stream.windows(16).any(|w| w.eq_ignore_ascii_case(b"\ncontent-length:"));
    assert_eq!(found, expected, "{stream:?}");
}

/// `--access-log-format`.
pub fn access_log_format(data: &[u8]) {
    if let Ok(format) = std::str::from_utf8(data) {
        let _ = AccessFormat::parse(format);
    }
}

/// `Sec-WebSocket-Extensions` values (one per line): an accepted offer has parameters the
/// compressor and the inflater can use, and a response that is a valid header value.
pub fn ws_negotiate(data: &[u8]) {
    let values: Vec<HeaderValue> =
        lines(data, 16).into_iter().filter_map(|line| HeaderValue::from_bytes(line).ok()).collect();
    let Some((params, response)) = negotiate(values.iter()) else { return };
    assert!((9..=15).contains(&params.server_max_window_bits), "{params:?}");
    assert!((8..=15).contains(&params.client_max_window_bits), "{params:?}");
    assert!(response.as_bytes().starts_with(b"permessage-deflate"), "{response:?}");
    let mut compressor = Compressor::new(&params);
    let _ = compressor.encode(Message::text("fuzz"));
}

/// A byte source that hands out `data` in pieces of the given sizes (cycled), as a socket
/// would, so frame headers and payloads arrive cut anywhere.
struct Pieces {
    data: Vec<u8>,
    sizes: Vec<usize>,
    read: usize,
    turn: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let size = self.sizes[self.turn % self.sizes.len()].max(1);
        self.turn += 1;
        let end = (self.read + size).min(self.data.len()).min(self.read + buf.remaining());
        buf.put_slice(&self.data[self.read..end]);
        self.read = end;
        Poll::Ready(Ok(()))
    }
}

/// What the inflater hands tungstenite for the client's byte stream `data`, read in pieces of
/// `sizes`; `Err` if it found corrupt compressed data. Output is capped at `limit` bytes, as
/// tungstenite's `--ws-max-size` stops reading.
fn inflate_stream(data: Vec<u8>, sizes: Vec<usize>, params: &DeflateParams, limit: usize) -> Result<Vec<u8>, ()> {
    let mut inflating = Inflating::new(Pieces { data, sizes, read: 0, turn: 0 }, Some(params));
    let mut context = Context::from_waker(Waker::noop());
    let mut output = Vec::new();
    let mut chunk = vec![0; 4096];
    while output.len() < limit {
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut inflating).poll_read(&mut context, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
            Poll::Ready(Ok(())) => output.extend_from_slice(buf.filled()),
            Poll::Ready(Err(error)) => {
                assert!(is_corrupt(&error), "{error}");
                return Err(());
            }
            Poll::Pending => panic!("the in-memory source never blocks"),
        }
    }
    Ok(output)
}

/// Parameters for the inflater from one byte.
fn params_from(byte: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: byte & 1 != 0,
        client_no_context_takeover: byte & 2 != 0,
        server_max_window_bits: 9 + (byte >> 2) % 7,
        client_max_window_bits: 15,
    }
}

/// A masked client frame.
fn client_frame(out: &mut Vec<u8>, opcode: OpCode, fin: bool, rsv1: bool, mask: [u8; 4], payload: &[u8]) {
    let header = FrameHeader { is_final: fin, rsv1, rsv2: false, rsv3: false, opcode, mask: Some(mask) };
    header.format(payload.len() as u64, out).expect("writing to memory");
    out.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
}

/// The inflater on arbitrary frames, read in pieces: a setup byte (parameters), two piece
/// sizes, then frames, each a control byte (FIN, RSV1, opcode), a length byte, and that many
/// payload bytes taken as compressed data. It must not panic, and must report corrupt data as
/// its own error.
pub fn ws_inflate(data: &[u8]) {
    let Some((&[setup, size_a, size_b], mut rest)) = data.split_first_chunk::<3>() else { return };
    let mut stream = Vec::new();
    while let [control, length, tail @ ..] = rest {
        let length = usize::from(*length).min(tail.len());
        let opcode = match control >> 2 & 3 {
            0 => OpCode::Data(Data::Continue),
            1 => OpCode::Data(Data::Text),
            2 => OpCode::Data(Data::Binary),
            _ => OpCode::Control(Control::Ping),
        };
        let mask = [*control, 0x5a, 0xa5, 0x3c];
        client_frame(&mut stream, opcode, control & 1 != 0, control & 2 != 0, mask, &tail[..length]);
        rest = &tail[length..];
    }
    let sizes = vec![usize::from(size_a), usize::from(size_b)];
    let _ = inflate_stream(stream, sizes, &params_from(setup), 1 << 24);
}

/// Round trip: messages compressed by the server's [`Compressor`], sent as a client would
/// (masked, possibly fragmented), come out of the inflater as the same messages.
///
/// Input: a setup byte (parameters, and bit 7: repeat each message 16 times), a piece-size byte, then messages separated by `0xff`;
/// each message's first byte cuts it into frames.
pub fn ws_deflate_roundtrip(data: &[u8]) {
    let [setup, piece, rest @ ..] = data else { return };
    // The client's side of the parameters is the server's: the inflater here reads what the
    // server's compressor wrote.
    let params = DeflateParams { client_no_context_takeover: setup & 1 != 0, ..params_from(*setup) };
    let mut compressor = Compressor::new(&params);
    let mut stream = Vec::new();
    let mut sent = Vec::new();
    for message in rest.split(|&b| b == 0xff) {
        let fragment = usize::from(message.first().copied().unwrap_or(0)).max(1);
        // Setup bit 7 repeats each message 16 times, so that messages reach the size at which
        // the compressor changes level and starts a new DEFLATE stream.
        let message = if setup & 0x80 != 0 { message.repeat(16) } else { message.to_vec() };
        let Message::Frame(frame) = compressor.encode(Message::binary(message.clone())) else {
            panic!("data messages become frames");
        };
        assert!(frame.header().rsv1, "compression does not fail in memory");
        let payload = frame.payload();
        let chunks: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(fragment).collect() };
        for (i, chunk) in chunks.iter().enumerate() {
            let opcode = if i == 0 { OpCode::Data(Data::Binary) } else { OpCode::Data(Data::Continue) };
            let mask = [1, 2, 3, i.to_le_bytes()[0]];
            client_frame(&mut stream, opcode, i + 1 == chunks.len(), i == 0, mask, chunk);
        }
        sent.push(message);
    }
    let output = inflate_stream(stream, vec![usize::from(*piece)], &params, usize::MAX).expect("valid DEFLATE data");
    // Reassemble the frames tungstenite would read (all with the zero mask, RSV1 clear).
    let mut received = Vec::new();
    let mut message = Vec::new();
    let mut cursor = Cursor::new(&output[..]);
    while (cursor.position() as usize) < output.len() {
        let (header, length) = FrameHeader::parse(&mut cursor).expect("a frame header").expect("a whole header");
        assert!(!header.rsv1 && header.mask == Some([0; 4]), "{header:?}");
        let start = cursor.position() as usize;
        let end = start + usize::try_from(length).unwrap();
        message.extend_from_slice(&output[start..end]);
        cursor.set_position(end as u64);
        if header.is_final {
            received.push(std::mem::take(&mut message));
        }
    }
    assert_eq!(received, sent);
}
