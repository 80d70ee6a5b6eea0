//! Which of the fields the server acts on a request carries, found in one pass over its field
//! names.
//!
//! The server asks every request about `Connection` (does it close the connection, is it a
//! WebSocket upgrade), `TE` (may the response carry trailers), `Transfer-Encoding` (request
//! checks), `Upgrade` and the `X-Forwarded-*` fields of a proxy. Most requests carry none of
//! them: a pass over the few names of a request costs less than one lookup, which hashes the
//! name, and a field found absent is not looked up at all.

use http::HeaderMap;
use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};

/// The fields among those the server acts on that a request carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldsPresent(u8);

impl FieldsPresent {
    const CONNECTION: u8 = 1;
    const TE: u8 = 1 << 1;
    const TRANSFER_ENCODING: u8 = 1 << 2;
    const UPGRADE: u8 = 1 << 3;
    const X_FORWARDED: u8 = 1 << 4;

    /// The fields of `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut present = 0;
        for name in headers.keys() {
            present |= if name == CONNECTION {
                Self::CONNECTION
            } else if name == TE {
                Self::TE
            } else if name == TRANSFER_ENCODING {
                Self::TRANSFER_ENCODING
            } else if name == UPGRADE {
                Self::UPGRADE
            } else if name.as_str().starts_with("x-forwarded-") {
                Self::X_FORWARDED
            } else {
                0
            };
        }
        Self(present)
    }

    /// A `Connection` field.
    pub(crate) fn connection(self) -> bool {
        self.0 & Self::CONNECTION != 0
    }

    /// A `TE` field.
    pub(crate) fn te(self) -> bool {
        self.0 & Self::TE != 0
    }

    /// A `Transfer-Encoding` field.
    pub(crate) fn transfer_encoding(self) -> bool {
        self.0 & Self::TRANSFER_ENCODING != 0
    }

    /// An `Upgrade` field.
    pub(crate) fn upgrade(self) -> bool {
        self.0 & Self::UPGRADE != 0
    }

    /// Any `X-Forwarded-*` field (`X-Forwarded-For`, `-Proto`, `-Host`, `-Port`, `-Prefix`).
    pub(crate) fn x_forwarded(self) -> bool {
        self.0 & Self::X_FORWARDED != 0
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::FieldsPresent;

    fn fields(names: &[&str]) -> FieldsPresent {
        let mut headers = HeaderMap::new();
        for name in names {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("x"));
        }
        FieldsPresent::of(&headers)
    }

    #[test]
    fn a_plain_request_has_none() {
        assert_eq!(fields(&["host", "user-agent", "accept"]), FieldsPresent::default());
        assert_eq!(fields(&["x-forwarded", "forwarded", "connectionx"]), FieldsPresent::default());
    }

    #[test]
    fn each_field_is_found_among_others() {
        let many = ["host", "connection", "te", "transfer-encoding", "upgrade", "x-forwarded-proto", "accept"];
        let all = fields(&many);
        assert!(all.connection() && all.te() && all.transfer_encoding() && all.upgrade() && all.x_forwarded());
        assert!(fields(&["host", "te"]).te());
        assert!(!fields(&["host", "te"]).connection());
        assert!(fields(&["x-forwarded-for"]).x_forwarded());
        assert!(fields(&["host", "X-Forwarded-Proto"]).x_forwarded());
        assert!(fields(&["x-forwarded-prefix"]).x_forwarded());
        assert!(fields(&["upgrade", "connection"]).upgrade());
    }
}
