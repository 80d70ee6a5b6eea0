//! Compressing the server's messages (RFC 7692 §7.2.1).

use flate2::{Compress, Compression, FlushCompress};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::TAIL;
use super::negotiate::DeflateParams;

/// A connection's messages are compressed at level 1 until one of at least this size, then at
/// zlib's default level 6. Measured with zlib-rs: level 1 costs about 0.3 µs for a 100-byte
/// message, level 6 about 4 µs (each of its blocks clears a 48 KiB buffer), for 20-30% less
/// output on such messages; on 1 MiB of JSON level 6 gives 45% less than level 1.
const LARGE: usize = 4096;

/// Compresses data messages into frames with RSV1 set; tungstenite sends them as they are.
pub(crate) struct Compressor {
    /// Created on the first message, so a connection that only receives holds no window.
    compress: Option<Compress>,
    /// Level of `compress`: 1, and 6 from the first large message on.
    level: Compression,
    window_bits: u8,
    no_context_takeover: bool,
}

impl Compressor {
    pub(crate) fn new(params: &DeflateParams) -> Self {
        Self {
            compress: None,
            level: Compression::fast(),
            window_bits: params.server_max_window_bits,
            no_context_takeover: params.server_no_context_takeover,
        }
    }

    /// The message as it goes on the wire: text and binary messages become one compressed frame
    /// (an unfragmented message, RSV1 on its only frame, §6.1); control messages are never
    /// compressed. Should compression fail, the message goes uncompressed, which §6 allows.
    pub(crate) fn encode(&mut self, message: Message) -> Message {
        let opcode = match message {
            Message::Text(_) => Data::Text,
            Message::Binary(_) => Data::Binary,
            other => return other,
        };
        let data = message.into_data();
        match self.compress(&data) {
            Some(payload) => {
                let mut frame = Frame::message(payload, OpCode::Data(opcode), true);
                frame.header_mut().rsv1 = true;
                Message::Frame(frame)
            }
            None => Message::Frame(Frame::message(data, OpCode::Data(opcode), true)),
        }
    }

    /// DEFLATE with a sync flush, minus the flush's trailing empty block `00 00 ff ff`.
    fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() >= LARGE && self.level != Compression::default() {
            // flate2 cannot take zlib-rs out of level 1 mid-stream (its `set_level` fails), so a
            // new DEFLATE stream starts. The previous message ended on a block boundary, so the
            // client's inflater reads on; the new stream refers to nothing before it.
            self.level = Compression::default();
            self.compress = None;
        }
        let (window_bits, level) = (self.window_bits, self.level);
        let compress = self.compress.get_or_insert_with(|| Compress::new_with_window_bits(level, false, window_bits));
        let start = compress.total_in();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            let consumed = (compress.total_in() - start) as usize;
            if compress.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync).is_err() {
                self.compress = None;
                return None;
            }
            // The flush is complete once all input is in and zlib left output space unused.
            if compress.total_in() - start == data.len() as u64 && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.is_empty() {
            // Nothing new since the last flush (an empty message): zlib wrote no block, so send
            // the empty stored block's header byte, which the tail completes (§7.2.3.6).
            out.push(0x00);
        }
        if self.no_context_takeover {
            compress.reset();
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};

    use super::*;

    fn params(no_context_takeover: bool, window_bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: no_context_takeover,
            client_no_context_takeover: false,
            server_max_window_bits: window_bits,
            client_max_window_bits: 15,
        }
    }

    /// What a client does with a compressed payload (§7.2.2).
    fn inflate(decompress: &mut Decompress, payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        decompress.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        out
    }

    fn payload(message: Message) -> (bool, Vec<u8>) {
        match message {
            Message::Frame(frame) => (frame.header().rsv1, frame.payload().to_vec()),
            other => panic!("not a frame: {other:?}"),
        }
    }

    #[test]
    fn messages_inflate_in_sequence_including_empty_ones() {
        let big: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let messages: [&[u8]; 9] =
            [b"hello", b"", b"", b"hello hello hello hello", b"", &big, b"hello again", &big[..5000], b"hello"];
        for no_context_takeover in [false, true] {
            let mut compressor = Compressor::new(&params(no_context_takeover, 9));
            let mut decompress = Decompress::new(false);
            for message in messages {
                let (rsv1, data) = payload(compressor.encode(Message::Binary(message.to_vec().into())));
                assert!(rsv1);
                if no_context_takeover {
                    decompress = Decompress::new(false);
                }
                assert_eq!(inflate(&mut decompress, &data), message);
            }
        }
    }

    #[test]
    fn context_takeover_shrinks_repeated_messages() {
        let text = "a sentence that repeats, word for word, in every message";
        let mut compressor = Compressor::new(&params(false, 12));
        let (_, first) = payload(compressor.encode(Message::Text(text.into())));
        let (_, second) = payload(compressor.encode(Message::Text(text.into())));
        assert!(second.len() < first.len() / 3, "{} then {}", first.len(), second.len());
    }

    #[test]
    fn control_messages_pass_uncompressed() {
        let mut compressor = Compressor::new(&params(false, 12));
        assert_eq!(compressor.encode(Message::Ping("p".into())), Message::Ping("p".into()));
    }
}
