//! Inflating the client's compressed messages (RFC 7692 §7.2.2) beneath tungstenite.
//!
//! tungstenite fails every frame with RSV1 set and has no extension hook, so the extension sits
//! between the socket and tungstenite: [`Inflating`] reads the client's frames, hands frames of
//! uncompressed messages and control frames on untouched, and turns each frame of a compressed
//! message into frames that carry the inflated bytes with RSV1 clear. tungstenite does all the
//! rest: reassembly, UTF-8 checks, size limits, control frames and errors, so a frame this layer
//! does not inflate (RSV1 on a control or continuation frame, an unmasked frame) still fails
//! there with 1002.
//!
//! Inflated bytes are produced at most [`CHUNK`] at a time, and only as tungstenite reads them,
//! so a message that inflates past `--ws-max-size` (a decompression bomb) ends with
//! tungstenite's 1009 before it is in memory.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::TAIL;
use super::negotiate::DeflateParams;

/// Largest piece of a message inflated at once (and payload of a frame handed to tungstenite).
const CHUNK: usize = 64 * 1024;

/// Bytes asked of the socket at once.
const READ_SIZE: usize = 64 * 1024;

/// The client sent compressed data that does not inflate: the connection fails with 1002.
#[derive(Debug)]
pub(crate) struct CorruptMessage;

impl std::fmt::Display for CorruptMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid permessage-deflate data")
    }
}

impl std::error::Error for CorruptMessage {}

/// Whether a read error is this layer's [`CorruptMessage`].
pub(crate) fn is_corrupt(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<CorruptMessage>())
}

/// The socket as tungstenite reads it: compressed messages inflated when the extension was
/// negotiated, the bytes as they come otherwise. Writes pass through.
pub(crate) struct Inflating<S> {
    inner: S,
    /// `None`: the extension was not negotiated and reads go straight to the socket.
    inflater: Option<Inflater>,
    /// Bytes from the client not handled yet.
    input: BytesMut,
    /// Bytes for tungstenite.
    output: BytesMut,
    /// Where in the client's frame stream `input` starts.
    at: At,
}

#[derive(Clone, Copy)]
enum At {
    /// A frame header.
    Header,
    /// The payload of a frame passed on as it is: bytes left.
    Pass(u64),
    /// The payload of a frame of a compressed message.
    Compressed(CompressedFrame),
    /// Bytes that do not parse as a frame header: all handed to tungstenite, which fails on them.
    Raw,
}

#[derive(Clone, Copy)]
struct CompressedFrame {
    /// Payload bytes left to read.
    left: u64,
    /// The client's masking key, and how many payload bytes were unmasked with it so far.
    mask: [u8; 4],
    offset: usize,
    /// The message's last frame.
    fin: bool,
}

/// Decompression state of one connection.
struct Inflater {
    /// Created on the first compressed message, with a 15-bit window whatever the client's
    /// (a larger window inflates what a smaller one compressed): flate2 resets only that one in
    /// place, which matters with `client_no_context_takeover` (0.25 µs a message instead of 0.6).
    decompress: Option<Decompress>,
    no_context_takeover: bool,
    /// The frames read so far belong to a compressed message (its first frame had RSV1).
    in_message: bool,
    /// The opcode of the next frame handed to tungstenite: the message's, then continuation.
    opcode: OpCode,
    /// Compressed, unmasked bytes not inflated yet.
    pending: BytesMut,
    /// The message's end marker was appended to `pending` (§7.2.2).
    tail_added: bool,
    /// The message had payload bytes. An empty one is taken as an empty message: the marker
    /// alone is no valid DEFLATE data.
    has_payload: bool,
    /// The client ended its DEFLATE stream (a block with BFINAL set, §7.2.3.4): the rest of the
    /// message is ignored and the next one starts a new stream.
    stream_ended: bool,
    /// Inflated bytes of the frame being produced.
    scratch: Vec<u8>,
}

impl Inflater {
    fn new(params: &DeflateParams) -> Self {
        Self {
            decompress: None,
            no_context_takeover: params.client_no_context_takeover,
            in_message: false,
            opcode: OpCode::Data(Data::Continue),
            pending: BytesMut::new(),
            tail_added: false,
            has_payload: false,
            stream_ended: false,
            scratch: Vec::new(),
        }
    }

    /// Inflate `pending` into `scratch` (at most [`CHUNK`]); true if `scratch` filled up, so more
    /// output may be waiting.
    fn inflate(&mut self) -> Result<bool, CorruptMessage> {
        if self.stream_ended {
            self.pending.clear();
            return Ok(false);
        }
        let decompress = self.decompress.get_or_insert_with(|| Decompress::new(false));
        self.scratch.clear();
        self.scratch.reserve_exact(CHUNK);
        let before = decompress.total_in();
        let status = decompress
            .decompress_vec(&self.pending, &mut self.scratch, FlushDecompress::Sync)
            .map_err(|_| CorruptMessage)?;
        self.pending.advance((decompress.total_in() - before) as usize);
        if status == Status::StreamEnd {
            self.stream_ended = true;
            self.pending.clear();
        }
        Ok(self.scratch.len() >= CHUNK)
    }

    /// The compressed message was handed on in full.
    fn finish_message(&mut self) {
        self.in_message = false;
        self.tail_added = false;
        self.has_payload = false;
        self.pending.clear();
        if self.no_context_takeover || self.stream_ended {
            if let Some(decompress) = self.decompress.as_mut() {
                decompress.reset(false);
            }
            self.stream_ended = false;
        }
    }
}

enum Step {
    Progress,
    NeedInput,
}

impl<S> Inflating<S> {
    /// Wrap `inner`; `params` are the negotiated ones, `None` without the extension.
    pub(crate) fn new(inner: S, params: Option<&DeflateParams>) -> Self {
        Self {
            inner,
            inflater: params.map(Inflater::new),
            input: BytesMut::new(),
            output: BytesMut::new(),
            at: At::Header,
        }
    }

    /// Handle what `input` allows.
    fn step(&mut self) -> Result<Step, CorruptMessage> {
        let Some(inflater) = self.inflater.as_mut() else { return Ok(Step::NeedInput) };
        match self.at {
            At::Raw | At::Pass(_) if self.input.is_empty() => Ok(Step::NeedInput),
            At::Raw => {
                self.output.unsplit(self.input.split());
                Ok(Step::Progress)
            }
            At::Pass(left) => {
                let n = left.min(self.input.len() as u64);
                self.output.unsplit(self.input.split_to(n as usize));
                self.at = if n == left { At::Header } else { At::Pass(left - n) };
                Ok(Step::Progress)
            }
            At::Header => {
                let mut cursor = Cursor::new(&self.input[..]);
                let (header, length) = match FrameHeader::parse(&mut cursor) {
                    Ok(Some(parsed)) => parsed,
                    Ok(None) => return Ok(Step::NeedInput),
                    Err(_) => {
                        self.at = At::Raw;
                        return Ok(Step::Progress);
                    }
                };
                let header_len = cursor.position() as usize;
                // §6.1: RSV1 marks the first frame of a compressed message; its continuation
                // frames have RSV1 clear. Anything else is tungstenite's to judge.
                let compressed = !header.rsv2
                    && !header.rsv3
                    && header.mask.is_some()
                    && match header.opcode {
                        OpCode::Data(Data::Text | Data::Binary) => header.rsv1 && !inflater.in_message,
                        OpCode::Data(Data::Continue) => !header.rsv1 && inflater.in_message,
                        _ => false,
                    };
                if !compressed {
                    self.output.unsplit(self.input.split_to(header_len));
                    self.at = if length == 0 { At::Header } else { At::Pass(length) };
                    return Ok(Step::Progress);
                }
                self.input.advance(header_len);
                if !inflater.in_message {
                    inflater.in_message = true;
                    inflater.opcode = header.opcode;
                }
                self.at = At::Compressed(CompressedFrame {
                    left: length,
                    mask: header.mask.unwrap_or_default(),
                    offset: 0,
                    fin: header.is_final,
                });
                Ok(Step::Progress)
            }
            At::Compressed(mut frame) => {
                let n = frame.left.min(self.input.len() as u64) as usize;
                if n > 0 {
                    let mut payload = self.input.split_to(n);
                    for (i, byte) in payload.iter_mut().enumerate() {
                        *byte ^= frame.mask[(frame.offset + i) % 4];
                    }
                    inflater.pending.unsplit(payload);
                    inflater.has_payload = true;
                    frame.offset += n;
                    frame.left -= n as u64;
                }
                let last = frame.left == 0 && frame.fin;
                if last && !inflater.tail_added && inflater.has_payload {
                    inflater.pending.extend_from_slice(&TAIL);
                    inflater.tail_added = true;
                }
                if inflater.inflate()? {
                    // More output may be waiting: tungstenite reads this chunk first.
                    emit(inflater, &mut self.output, false);
                    self.at = At::Compressed(frame);
                    return Ok(Step::Progress);
                }
                if last {
                    emit(inflater, &mut self.output, true);
                    inflater.finish_message();
                    self.at = At::Header;
                    return Ok(Step::Progress);
                }
                let produced = !inflater.scratch.is_empty();
                if produced {
                    emit(inflater, &mut self.output, false);
                }
                if frame.left == 0 {
                    self.at = At::Header;
                    return Ok(Step::Progress);
                }
                self.at = At::Compressed(frame);
                Ok(if n > 0 || produced { Step::Progress } else { Step::NeedInput })
            }
        }
    }
}

/// Hand the inflated bytes in `scratch` to tungstenite as one frame. Server-side tungstenite
/// requires masked client frames (RFC 6455 §5.1), so the frame carries the all-zero mask, which
/// leaves the payload as it is.
fn emit(inflater: &mut Inflater, output: &mut BytesMut, fin: bool) {
    let header = FrameHeader {
        is_final: fin,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: inflater.opcode,
        mask: Some([0; 4]),
    };
    let length = inflater.scratch.len() as u64;
    output.reserve(header.len(length) + inflater.scratch.len());
    header.format(length, &mut output.writer()).expect("writing to memory");
    output.extend_from_slice(&inflater.scratch);
    inflater.scratch.clear();
    inflater.opcode = OpCode::Data(Data::Continue);
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.inflater.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            match this.step() {
                Ok(Step::Progress) => continue,
                Ok(Step::NeedInput) => {}
                Err(corrupt) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, corrupt))),
            }
            this.input.reserve(READ_SIZE);
            let spare = this.input.spare_capacity_mut();
            let mut read = ReadBuf::uninit(spare);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                // End of stream: tungstenite sees it, whatever was left unfinished.
                return Poll::Ready(Ok(()));
            }
            // SAFETY: `ReadBuf` initialised and filled the first `n` bytes of the spare capacity.
            unsafe { this.input.set_len(this.input.len() + n) };
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inflating<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
