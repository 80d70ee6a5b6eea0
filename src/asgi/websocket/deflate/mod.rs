//! The permessage-deflate extension (RFC 7692) on top of tungstenite, with flate2: `negotiate`
//! answers the client's offer, `compress` deflates the server's messages, `inflate` inflates the
//! client's beneath tungstenite, which rejects compressed frames itself.

mod compress;
mod inflate;
mod negotiate;

pub(crate) use compress::Compressor;
pub(crate) use inflate::{Inflating, is_corrupt};
pub(crate) use negotiate::{DeflateParams, negotiate};

/// The empty stored block a sync flush ends with: removed from each compressed message by the
/// sender and appended again by the receiver before inflating (§7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
