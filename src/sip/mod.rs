//! SIP message layer: zero-copy parsing into borrowed views and an allocation-free rewriter.
//!
//! Data flow: a datagram (or a TCP stream prefix) arrives as `&[u8]`;
//! [`Message::parse_datagram`] / [`Message::parse_stream`] split it into a start line, a
//! caller-supplied array of raw [`Header`]s (name, value and the byte [`Span`] of each line)
//! and the body, in the style of `httparse`. Nothing is decoded up front: typed views
//! ([`Via`], [`NameAddr`], [`Contact`], [`CSeq`], [`Uri`], [`DigestCredentials`]) are parsed
//! on demand from the raw slices by the accessors in `message.rs` and borrow from the
//! input buffer. Outgoing messages are produced by [`write_forward`] and
//! [`write_response`], which copy untouched byte ranges of the received message into a
//! caller-owned, pre-reserved `Vec<u8>` and only write the parts that change.
//!
//! Nothing here knows about sockets, clocks or threads; no function allocates on the heap
//! (the output `Vec` grows only when the caller reserved too little). Values from the wire
//! that size or bound anything (Content-Length, Max-Forwards, Expires, CSeq, ports) are
//! range-checked and give a typed [`ParseError`], never a panic.

mod digest;
mod header;
mod message;
mod method;
mod name_addr;
mod params;
mod parse;
mod peek;
mod response;
mod rewrite;
mod scan;
mod stream;
mod transport;
mod uri;
mod via;

pub use digest::{parse_digest, DigestCredentials, QStr};
pub use header::{Header, HeaderName, EMPTY_HEADER};
pub use message::{Message, StartLine};
pub use method::Method;
pub use name_addr::{CSeq, Contact, NameAddr};
pub use params::Params;
pub use peek::peek_call_id;
pub use response::{write_response, write_response_to, ResponseSpec};
pub use rewrite::{write_forward, ForwardOps, RewriteError, ViaSpec};
pub use stream::{frame, Frame, FrameError};
pub use transport::Transport;
pub use uri::{percent_decode_into, Host, Scheme, Uri};
pub use via::{Rport, Via};

/// Largest message accepted (and produced), in bytes: the largest UDP payload.
pub const MAX_MESSAGE_SIZE: usize = 65535;
/// Most header lines one message may carry; the caller's header array is capped to this.
pub const MAX_HEADERS: usize = 96;
/// Longest URI accepted (request-URI or any URI inside a header).
pub const MAX_URI_LEN: usize = 2048;

/// Outcome of parsing a stream prefix: the whole message, or "need more bytes".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A complete message was parsed.
    Complete(T),
    /// The bytes so far are a valid prefix; read more and parse again.
    Partial,
}

impl<T> Status<T> {
    /// True for [`Status::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }
}

/// A byte range `[start, end)` in the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// Builds a span from `usize` offsets (callers stay below [`MAX_MESSAGE_SIZE`]).
    #[inline]
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span {
            start: clamp_u32(start),
            end: clamp_u32(end),
        }
    }

    /// The span as a `usize` range, for slicing.
    #[inline]
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// True for an empty range.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same span moved forward by `by` bytes.
    #[inline]
    pub(crate) fn shift(self, by: usize) -> Span {
        Span::new(self.start as usize + by, self.end as usize + by)
    }
}

#[inline]
fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Why a message, header value, URI or credential could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing but CRLF keep-alives (or no bytes at all).
    #[error("empty message")]
    Empty,
    /// The message exceeds [`MAX_MESSAGE_SIZE`].
    #[error("message larger than {MAX_MESSAGE_SIZE} bytes")]
    TooLarge,
    /// The datagram ends before the header block is complete (no blank line).
    #[error("message truncated")]
    Truncated,
    /// A datagram's Content-Length is larger than the bytes after its header block
    /// (RFC 3261 §18.3: a request gets 400, a response is discarded).
    #[error("Content-Length larger than the body")]
    BodyTruncated,
    /// Request or status line malformed (extra whitespace, missing parts).
    #[error("malformed start line")]
    BadStartLine,
    /// Method is not a token.
    #[error("malformed method")]
    BadMethod,
    /// SIP version other than SIP/2.0.
    #[error("unsupported SIP version")]
    BadVersion,
    /// Status code not three digits in 100..=699.
    #[error("malformed status code")]
    BadStatusCode,
    /// Malformed URI (request-URI or inside a header).
    #[error("malformed URI")]
    BadUri,
    /// URI scheme other than sip, sips, tel.
    #[error("unsupported URI scheme")]
    UnsupportedScheme,
    /// URI longer than [`MAX_URI_LEN`].
    #[error("URI longer than {MAX_URI_LEN} bytes")]
    UriTooLong,
    /// More header lines than the header array (or [`MAX_HEADERS`]) holds.
    #[error("too many headers")]
    TooManyHeaders,
    /// A header line is not `name: value` (bad name, no colon, stray continuation).
    #[error("malformed header line")]
    BadHeader,
    /// A header the operation needs is absent (canonical name).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that must appear at most once appears several times (canonical name).
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    /// Content-Length not a non-negative integer.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// Several Content-Length headers.
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    /// Malformed Via value.
    #[error("malformed Via")]
    BadVia,
    /// Malformed name-addr / addr-spec (From, To, Contact, Route, ...).
    #[error("malformed name-addr")]
    BadNameAddr,
    /// Malformed `;name=value` parameter list.
    #[error("malformed parameters")]
    BadParams,
    /// Malformed CSeq (sequence not below 2^31, or bad method).
    #[error("malformed CSeq")]
    BadCSeq,
    /// Malformed Call-ID.
    #[error("malformed Call-ID")]
    BadCallId,
    /// Max-Forwards not an integer in 0..=255.
    #[error("malformed Max-Forwards")]
    BadMaxForwards,
    /// Expires not an integer fitting in 32 bits.
    #[error("malformed Expires")]
    BadExpires,
    /// A header that must be UTF-8 text or a token list is not.
    #[error("malformed header value")]
    BadValue,
    /// Malformed Digest credentials (syntax, duplicate or missing parameters).
    #[error("malformed Digest credentials")]
    BadDigest,
    /// Authorization scheme other than Digest.
    #[error("unsupported authorization scheme")]
    UnsupportedAuthScheme,
    /// A caller-supplied output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

#[cfg(test)]
mod tests;
