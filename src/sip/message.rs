//! The parsed message view and its on-demand typed accessors.
//!
//! A [`Message`] only records where things are; each accessor below parses the raw header
//! value it needs when called (the proxy touches a handful of headers per message, so
//! eager decoding would be wasted work). Two things are done once and kept: the head's
//! UTF-8 check (accessors slice their text out of it) and the top Via, which the proxy asks
//! for several times per message. What the proxy interprets (request line, URIs, Via,
//! Call-ID, CSeq, tags, parameters it reads) must be UTF-8 text; display names, quoted
//! parameter values and headers it does not interpret may hold any bytes (Latin-1 from old
//! phones), which forwarding copies untouched. Multi-value headers are walked across all header
//! lines of that name and split on commas outside quotes and `<...>`. Spans of list
//! elements are made absolute (offsets into [`Message::buf`]) for the rewriter.

use super::digest::{parse_digest, DigestCredentials};
use super::header::{Header, HeaderName};
use super::method::Method;
use super::name_addr::{CSeq, Contact, NameAddr};
use super::scan::{offset_of, parse_u32, trim_str, Split};
use super::via::Via;
use super::{ParseError, Span};

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'b> {
    /// `METHOD uri SIP/2.0`
    Request {
        /// Method.
        method: Method<'b>,
        /// Request-URI text (shape-checked; parse with `Uri::parse`).
        uri: &'b str,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code, 100..=699.
        code: u16,
        /// Reason phrase (may be empty).
        reason: &'b str,
    },
}

/// A parsed message borrowing from the receive buffer and the caller's header array.
#[derive(Debug, Clone)]
pub struct Message<'h, 'b> {
    /// Request or status line.
    pub start: StartLine<'b>,
    /// Header lines in order.
    pub headers: &'h [Header<'b>],
    /// The body (exactly Content-Length bytes, or the rest of the datagram).
    pub body: &'b [u8],
    /// The whole input buffer (spans index into it).
    pub buf: &'b [u8],
    /// Offset of the first body byte (end of the blank line).
    pub head_len: usize,
    /// The start line including its CRLF (after any leading keep-alive CRLFs).
    pub start_line: Span,
    /// The Request-URI inside the start line (empty for responses).
    pub uri_span: Span,
    pub(crate) content_length: Option<usize>,
    /// The head (`buf[..head_len]`) as text when it is all valid UTF-8 (checked once at
    /// parse), so accessors slice header values out of it instead of validating each again;
    /// `None` for a head with bytes that are not UTF-8 (each value is then checked alone).
    pub(crate) head_text: Option<&'b str>,
    /// The top Via once parsed: the proxy needs it several times per message (request
    /// checks, the reply, the forwarded copy), so [`Message::top_via`] parses it once.
    pub(crate) top_via: std::cell::OnceCell<Result<Via<'b>, ParseError>>,
}

impl<'h, 'b> Message<'h, 'b> {
    /// A header value (a sub-slice of the head) as text; `None` when it is not UTF-8.
    #[inline]
    fn text(&self, v: &'b [u8]) -> Option<&'b str> {
        match self.head_text.and_then(|h| super::scan::sub_str(h, v)) {
            Some(s) => Some(s),
            None => std::str::from_utf8(v).ok(),
        }
    }

    /// The method of a request.
    pub fn method(&self) -> Option<Method<'b>> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&'b str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status_code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first header with this name.
    pub fn header(&self, name: HeaderName) -> Option<&'h Header<'b>> {
        self.headers.iter().find(|h| h.name == name)
    }

    /// All headers with this name, in order.
    pub fn headers_named<'s>(
        &'s self,
        name: HeaderName<'s>,
    ) -> impl Iterator<Item = &'s Header<'b>> {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// All comma-separated values of all headers with this name, in order, as raw
    /// LWS-trimmed byte slices.
    pub fn values<'s>(&'s self, name: HeaderName<'s>) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers_named(name)
            .flat_map(|h| Split::new(h.value, b','))
    }

    /// Like [`Message::values`] but as UTF-8 text; non-UTF-8 values give
    /// [`ParseError::BadValue`].
    fn str_values<'s>(
        &'s self,
        name: HeaderName<'s>,
    ) -> impl Iterator<Item = Result<&'b str, ParseError>> + 's {
        self.values(name)
            .map(|v| self.text(v).ok_or(ParseError::BadValue))
    }

    fn abs(&self, part: &[u8], rel: Span) -> Span {
        rel.shift(offset_of(self.buf, part))
    }

    /// The topmost via-parm (first value of the first Via header).
    pub fn top_via(&self) -> Result<Via<'b>, ParseError> {
        *self.top_via.get_or_init(|| {
            self.vias()
                .next()
                .unwrap_or(Err(ParseError::MissingHeader("Via")))
        })
    }

    /// Every via-parm, across header lines and commas, top first. Spans are absolute.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'b>, ParseError>> + '_ {
        self.values(HeaderName::Via).map(move |v| {
            let s = self.text(v).ok_or(ParseError::BadVia)?;
            Via::parse(s).map(|via| Via {
                span: self.abs(v, via.span),
                ..via
            })
        })
    }

    /// The only header with this name: `Ok(None)` when absent,
    /// [`ParseError::DuplicateHeader`] when it appears more than once.
    fn single(
        &self,
        name: HeaderName,
        label: &'static str,
    ) -> Result<Option<&'h Header<'b>>, ParseError> {
        let mut it = self.headers.iter().filter(|h| h.name == name);
        let first = it.next();
        if it.next().is_some() {
            return Err(ParseError::DuplicateHeader(label));
        }
        Ok(first)
    }

    fn required(
        &self,
        name: HeaderName,
        label: &'static str,
    ) -> Result<&'h Header<'b>, ParseError> {
        self.single(name, label)?
            .ok_or(ParseError::MissingHeader(label))
    }

    /// The Call-ID (a single word without whitespace; exactly one header).
    pub fn call_id(&self) -> Result<&'b str, ParseError> {
        let h = self.required(HeaderName::CallId, "Call-ID")?;
        let s = self.text(h.value).ok_or(ParseError::BadCallId)?;
        if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(ParseError::BadCallId);
        }
        Ok(s)
    }

    /// The CSeq (exactly one header).
    pub fn cseq(&self) -> Result<CSeq<'b>, ParseError> {
        let h = self.required(HeaderName::CSeq, "CSeq")?;
        CSeq::parse(h.value)
    }

    fn single_name_addr(
        &self,
        name: HeaderName,
        label: &'static str,
    ) -> Result<NameAddr<'b>, ParseError> {
        let h = self.required(name, label)?;
        NameAddr::parse(h.value).map(|n| NameAddr {
            span: self.abs(h.value, n.span),
            ..n
        })
    }

    /// The From header (exactly one).
    pub fn from(&self) -> Result<NameAddr<'b>, ParseError> {
        self.single_name_addr(HeaderName::From, "From")
    }

    /// The To header (exactly one).
    pub fn to(&self) -> Result<NameAddr<'b>, ParseError> {
        self.single_name_addr(HeaderName::To, "To")
    }

    fn small_int(
        &self,
        name: HeaderName,
        label: &'static str,
        err: ParseError,
    ) -> Result<Option<u32>, ParseError> {
        match self.single(name, label)? {
            None => Ok(None),
            Some(h) => parse_u32(h.value).map(Some).ok_or(err),
        }
    }

    /// Max-Forwards, checked to be in 0..=255.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.small_int(
            HeaderName::MaxForwards,
            "Max-Forwards",
            ParseError::BadMaxForwards,
        )? {
            Some(n) if n > 255 => Err(ParseError::BadMaxForwards),
            other => Ok(other),
        }
    }

    /// The Expires header (delta-seconds fitting in 32 bits).
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.small_int(HeaderName::Expires, "Expires", ParseError::BadExpires)
    }

    /// The Min-Expires header.
    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.small_int(
            HeaderName::MinExpires,
            "Min-Expires",
            ParseError::BadExpires,
        )
    }

    /// Content-Length as validated by the parser (`None` when absent).
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        Ok(self.content_length)
    }

    fn name_addrs(
        &self,
        name: HeaderName<'static>,
    ) -> impl Iterator<Item = Result<NameAddr<'b>, ParseError>> + '_ {
        self.values(name).map(move |v| {
            NameAddr::parse(v).map(|n| NameAddr {
                span: self.abs(v, n.span),
                ..n
            })
        })
    }

    /// Every Contact value (`*` or an address), across header lines and commas.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'b>, ParseError>> + '_ {
        self.values(HeaderName::Contact).map(move |v| {
            Ok(match Contact::parse(v)? {
                Contact::Addr(n) => Contact::Addr(NameAddr {
                    span: self.abs(v, n.span),
                    ..n
                }),
                Contact::Star => Contact::Star,
            })
        })
    }

    /// Route values, top first.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'b>, ParseError>> + '_ {
        self.name_addrs(HeaderName::Route)
    }

    /// Record-Route values, top first.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'b>, ParseError>> + '_ {
        self.name_addrs(HeaderName::RecordRoute)
    }

    /// Path values (RFC 3327), top first.
    pub fn paths(&self) -> impl Iterator<Item = Result<NameAddr<'b>, ParseError>> + '_ {
        self.name_addrs(HeaderName::Path)
    }

    /// The first Authorization (or, with `proxy`, Proxy-Authorization) header, parsed.
    pub fn authorization(&self, proxy: bool) -> Option<Result<DigestCredentials<'b>, ParseError>> {
        self.authorizations(proxy).next()
    }

    /// Every Authorization (or Proxy-Authorization) header, parsed; the auth layer picks
    /// the one whose realm it serves.
    pub fn authorizations(
        &self,
        proxy: bool,
    ) -> impl Iterator<Item = Result<DigestCredentials<'b>, ParseError>> + '_ {
        let name = if proxy {
            HeaderName::ProxyAuthorization
        } else {
            HeaderName::Authorization
        };
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| parse_digest(h.value))
    }

    /// User-Agent text (`None` when absent or not UTF-8).
    pub fn user_agent(&self) -> Option<&'b str> {
        self.header(HeaderName::UserAgent)
            .and_then(|h| self.text(h.value))
    }

    /// Content-Type text (`None` when absent or not UTF-8).
    pub fn content_type(&self) -> Option<&'b str> {
        self.header(HeaderName::ContentType)
            .and_then(|h| self.text(h.value))
    }

    /// Option tags of Supported.
    pub fn supported(&self) -> impl Iterator<Item = Result<&'b str, ParseError>> + '_ {
        self.option_tags(HeaderName::Supported)
    }

    /// Option tags of Require.
    pub fn require(&self) -> impl Iterator<Item = Result<&'b str, ParseError>> + '_ {
        self.option_tags(HeaderName::Require)
    }

    /// Option tags of Proxy-Require.
    pub fn proxy_require(&self) -> impl Iterator<Item = Result<&'b str, ParseError>> + '_ {
        self.option_tags(HeaderName::ProxyRequire)
    }

    fn option_tags(
        &self,
        name: HeaderName<'static>,
    ) -> impl Iterator<Item = Result<&'b str, ParseError>> + '_ {
        self.str_values(name).map(|r| {
            let t = trim_str(r?);
            if super::scan::is_token_str(t.as_bytes()) {
                Ok(t)
            } else {
                Err(ParseError::BadValue)
            }
        })
    }

    /// The bytes of one header line (for logging or copying).
    pub fn line_bytes(&self, span: Span) -> &'b [u8] {
        self.buf.get(span.range()).unwrap_or(&[])
    }
}
