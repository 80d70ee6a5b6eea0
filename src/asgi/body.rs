//! The request body an exchange reads: hyper's for HTTP/1.1 and HTTP/2, an h3 request stream
//! for HTTP/3. One enum instead of a boxed trait object keeps the HTTP/1.1 path free of an
//! allocation per request; the HTTP/3 stream, four times the size of hyper's body, is boxed so
//! that every request and exchange does not carry its room.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::http3::RequestStreamBody;

/// Why a request body ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// The framing could not be decoded (a bad chunked body, RFC 9112 §7.1).
    Malformed,
    /// The connection or stream was lost or reset.
    BrokenOff,
}

/// Whether a hyper body error is a malformed body (its chunked decoder reports those as
/// `InvalidInput` or `InvalidData`), rather than a connection that broke off.
fn hyper_body_error(err: &hyper::Error) -> BodyError {
    let malformed = std::error::Error::source(err)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData));
    if malformed { BodyError::Malformed } else { BodyError::BrokenOff }
}

/// A request body from any of the HTTP versions.
pub(crate) enum RequestBody {
    /// HTTP/1.1 or HTTP/2, from hyper.
    Hyper(Incoming),
    /// HTTP/3, from the request stream.
    Http3(Box<RequestStreamBody>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Hyper(incoming) => {
                Pin::new(incoming).poll_frame(cx).map(|f| f.map(|r| r.map_err(|e| hyper_body_error(&e))))
            }
            Self::Http3(stream) => stream.poll_data(cx).map(|d| d.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(incoming) => incoming.is_end_stream(),
            Self::Http3(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(incoming) => incoming.size_hint(),
            Self::Http3(_) => SizeHint::default(),
        }
    }
}
