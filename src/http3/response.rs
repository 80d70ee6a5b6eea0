//! One HTTP/3 request: read the head, hand the request to the ASGI service, then write the
//! response head, body and trailers to the stream, each write waiting for flow control.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use h3::error::Code;
use h3::server::RequestResolver;
use http::header::{CONNECTION, DATE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::Body;

use super::body::RequestStreamBody;
use crate::asgi::body::RequestBody;
use crate::asgi::service::AsgiService;
use crate::request_fields::FieldsPresent;

/// Fields that only mean something for one HTTP/1.1 connection; RFC 9114 §4.2 forbids them.
const CONNECTION_SPECIFIC: [HeaderName; 5] = [
    CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Serve one request stream to its end (or until the client resets it).
pub(super) async fn serve_request(service: &AsgiService, resolver: RequestResolver<h3_quinn::Connection, Bytes>) {
    // A stream that ends or breaks before its headers concerns that stream only.
    let Ok((request, stream)) = resolver.resolve_request().await else { return };
    let (mut send, recv) = stream.split();
    let request = request.map(|()| RequestBody::Http3(Box::new(RequestStreamBody::new(recv))));
    let fields = FieldsPresent::of(request.headers());
    let mut head = pin!(service.handle(request, fields));
    let response = loop {
        let next = poll_fn(|cx| match head.take_early_hint() {
            Some(links) => Poll::Ready(Err(links)),
            None => head.as_mut().poll(cx).map(Ok),
        })
        .await;
        match next {
            Ok(Ok(response)) => break response,
            Ok(Err(_)) => {
                // RFC 9114 §4.1.1: a response that cannot complete resets the stream.
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return;
            }
            // 103 Early Hints (RFC 8297), an interim response before the final one (RFC 9114 §4.1).
            Err(links) => {
                let mut hint = Response::new(());
                *hint.status_mut() = StatusCode::EARLY_HINTS;
                *hint.headers_mut() = links;
                if send.send_response(hint).await.is_err() {
                    return;
                }
            }
        }
    };
    let (mut head, mut body) = response.into_parts();
    prepare_headers(&mut head.headers, service.state.settings.date_header);
    if send.send_response(Response::from_parts(head, ())).await.is_err() {
        return;
    }
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else {
            send.stop_stream(Code::H3_INTERNAL_ERROR);
            return;
        };
        let sent = match frame.into_data() {
            Ok(data) if data.is_empty() => continue,
            Ok(data) => send.send_data(data).await,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => send.send_trailers(trailers).await,
                Err(_) => continue,
            },
        };
        // The client stopped the stream (STOP_SENDING) or the connection is gone; dropping the
        // body tells the application.
        if sent.is_err() {
            return;
        }
    }
    let _ = send.finish().await;
}

/// Drop connection-specific fields and add `date` as hyper does for the other versions.
fn prepare_headers(headers: &mut HeaderMap, date_header: bool) {
    for name in &CONNECTION_SPECIFIC {
        headers.remove(name);
    }
    if date_header && !headers.contains_key(DATE) {
        headers.insert(DATE, http_date());
    }
}

thread_local! {
    /// The `date` value of the current second, formatted once per second.
    static DATE_CACHE: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((0, HeaderValue::from_static(""))) };
}

/// The current time as an HTTP date (RFC 9110 §5.6.7).
fn http_date() -> HeaderValue {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            let formatted = httpdate::fmt_http_date(now);
            *cache = (second, HeaderValue::from_str(&formatted).unwrap_or_else(|_| HeaderValue::from_static("")));
        }
        cache.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_specific_fields_are_dropped_and_date_added() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-app", HeaderValue::from_static("1"));
        prepare_headers(&mut headers, true);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert!(headers.get(DATE).unwrap().to_str().unwrap().ends_with(" GMT"));
    }

    #[test]
    fn an_application_date_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(DATE, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        prepare_headers(&mut headers, true);
        assert_eq!(headers[DATE], "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
