//! RFC 4475 (SIP torture test messages): every message of sections 3.1.1 (valid),
//! 3.1.2 (invalid), 3.2, 3.3 and 3.4 as a fixture under `tests/fixtures/rfc4475/`, with
//! the outcome the parser must give.
//!
//! Messages that are syntactically fine but semantically wrong parse successfully; the
//! test then pins the accessor result the proxy layer relies on and the comment says
//! what the proxy must do with it (see also `tests/fixtures/rfc4475/README.md`).

use sipfront::sip::{
    Contact, HeaderName, Host, Message, Method, ParseError, Rport, Scheme, StartLine, Status, Uri,
    EMPTY_HEADER, MAX_HEADERS,
};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("fixtures/rfc4475/", $name, ".sip")).as_slice()
    };
}

/// Parses a fixture as a UDP datagram and hands the message to `check`.
fn with_msg(buf: &[u8], check: impl FnOnce(&Message)) {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    match Message::parse_datagram(buf, &mut headers) {
        Ok(m) => check(&m),
        Err(e) => panic!("expected a parsed message, got {e:?}"),
    }
}

fn parse_err(buf: &[u8]) -> ParseError {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    match Message::parse_datagram(buf, &mut headers) {
        Ok(m) => panic!("expected an error, parsed {:?}", m.start),
        Err(e) => e,
    }
}

fn ruri<'b>(m: &Message<'_, 'b>) -> Uri<'b> {
    Uri::parse(m.request_uri().expect("request")).expect("request-URI")
}

// ---- 3.1.1 valid messages -------------------------------------------------------------

#[test]
fn s3_1_1_1_wsinv() {
    with_msg(fixture!("wsinv"), |m| {
        assert_eq!(m.method(), Some(Method::Invite));
        let u = ruri(m);
        assert_eq!(
            (u.user, u.host),
            (Some("vivekg"), Host::Name("chair-dnrc.example.com"))
        );
        assert_eq!(u.params.get("unknownparam"), Some(None));
        let to = m.to().unwrap();
        assert_eq!(
            (to.uri, to.tag()),
            ("sip:vivekg@chair-dnrc.example.com", Some("1918181833n"))
        );
        let from = m.from().unwrap();
        assert_eq!(from.display, Some(&b"J Rosenberg \\\\\\\""[..]));
        assert_eq!(from.tag(), Some("98asjd8"));
        assert_eq!(m.max_forwards(), Ok(Some(68)));
        assert_eq!(m.call_id(), Ok("wsinv.ndaksdj@192.0.2.1"));
        assert_eq!(m.content_length(), Ok(Some(150)));
        assert_eq!(m.body.len(), 150);
        let cseq = m.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
        let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(
            (vias[0].transport, vias[0].host, vias[0].branch()),
            ("UDP", "192.0.2.2", Some("390skdjuw"))
        );
        assert_eq!(
            (vias[1].transport, vias[1].host, vias[1].branch()),
            ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8"))
        );
        assert_eq!(
            (vias[2].transport, vias[2].host, vias[2].branch()),
            ("UDP", "192.168.255.111", Some("z9hG4bK30239"))
        );
        assert_eq!(
            m.header(HeaderName::Other("Subject")).map(|h| h.value),
            Some(&b""[..])
        );
        let nf = m.header(HeaderName::Other("newfangledheader")).unwrap();
        assert_eq!(nf.value, b"newfangled value\r\n continued newfangled value");
        assert_eq!(
            m.header(HeaderName::Other("UnknownHeaderWithUnusualValue"))
                .unwrap()
                .value,
            b";;,,;;,;"
        );
        let route = m.routes().next().unwrap().unwrap();
        assert!(route.uri().unwrap().lr());
        assert_eq!(
            route.uri().unwrap().params.get("unknownwith"),
            Some(Some("value"))
        );
        let contacts: Vec<_> = m.contacts().map(Result::unwrap).collect();
        let [Contact::Addr(c)] = contacts[..] else {
            panic!("one contact")
        };
        assert_eq!(c.display, Some(&b"Quoted string \\\"\\\""[..]));
        assert_eq!(
            (c.params.get("newparam"), c.params.get("secondparam"), c.q()),
            (Some(Some("newvalue")), Some(None), Some(330))
        );
    });
}

#[test]
fn s3_1_1_2_intmeth() {
    with_msg(fixture!("intmeth"), |m| {
        assert_eq!(
            m.method(),
            Some(Method::Other("!interesting-Method0123456789_*+`.%indeed'~"))
        );
        let u = ruri(m);
        assert_eq!(
            u.user,
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password,
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host, Host::Name("example.com"));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
        let to = m.to().unwrap();
        assert_eq!(to.display, Some(&b"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f"[..]));
        let from = m.from().unwrap();
        assert_eq!(from.display, Some(&b"token1~` token2'+_ token3*%!.-"[..]));
        assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
        assert_eq!(
            from.params.get("fromParam''~+*_!.-%"),
            Some(Some("\"работающий\""))
        );
        assert_eq!(
            m.call_id(),
            Ok("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
        );
        assert_eq!(
            m.cseq().unwrap().method,
            Method::Other("!interesting-Method0123456789_*+`.%indeed'~")
        );
        assert_eq!(m.max_forwards(), Ok(Some(255)));
        let ext = m
            .header(HeaderName::Other("extensionHeader-!.%*+_`'~"))
            .unwrap();
        assert_eq!(ext.value, "\u{feff}大停電".as_bytes());
    });
}

#[test]
fn s3_1_1_3_esc01() {
    with_msg(fixture!("esc01"), |m| {
        assert_eq!(ruri(m).user, Some("sips%3Auser%40example.com"));
        let mut buf = [0u8; 64];
        let user = sipfront::sip::percent_decode_into(ruri(m).user.unwrap(), &mut buf).unwrap();
        assert_eq!(user, b"sips:user@example.com");
        assert_eq!(m.to().unwrap().uri().unwrap().user, Some("%75se%72"));
        assert_eq!(
            m.from().unwrap().uri().unwrap().user,
            Some("I%20have%20spaces")
        );
        let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
            panic!("contact")
        };
        let cu = c.uri().unwrap();
        assert_eq!(
            (cu.params.get("%6C%72"), cu.params.get("n%61me")),
            (Some(None), Some(Some("v%61lue%25%34%31")))
        );
        assert_eq!(m.content_type(), Some("application/sdp"));
        assert_eq!(m.body.len(), 150);
    });
}

#[test]
fn s3_1_1_4_escnull() {
    with_msg(fixture!("escnull"), |m| {
        assert_eq!(m.to().unwrap().uri().unwrap().user, Some("null-%00-null"));
        let users: Vec<_> = m
            .contacts()
            .map(|c| match c.unwrap() {
                Contact::Addr(a) => a.uri().unwrap().user.unwrap(),
                Contact::Star => panic!("star"),
            })
            .collect();
        assert_eq!(users, ["%00", "%00%00"]);
        let mut buf = [0u8; 16];
        assert_eq!(
            sipfront::sip::percent_decode_into("null-%00-null", &mut buf).unwrap(),
            b"null-\0-null"
        );
        assert_eq!(m.content_length(), Ok(Some(0)));
    });
}

#[test]
fn s3_1_1_5_esc02() {
    with_msg(fixture!("esc02"), |m| {
        assert_eq!(m.method(), Some(Method::Other("RE%47IST%45R")));
        assert_eq!(m.to().unwrap().display, Some(&b"%Z%45"[..]));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK209%fzsnel234"));
        // Two Contact values, not three: "C%6Fntact" is another header.
        assert_eq!(m.contacts().count(), 2);
        assert!(m.header(HeaderName::Other("C%6Fntact")).is_some());
    });
}

#[test]
fn s3_1_1_6_lwsdisp() {
    with_msg(fixture!("lwsdisp"), |m| {
        let from = m.from().unwrap();
        assert_eq!(
            (from.display, from.uri, from.tag()),
            (Some(&b"caller"[..]), "sip:caller@example.com", Some("323"))
        );
    });
}

#[test]
fn s3_1_1_7_longreq() {
    with_msg(fixture!("longreq"), |m| {
        let to = m.to().unwrap();
        assert!(to
            .display
            .unwrap()
            .starts_with(b"I have a user name of extremeextreme"));
        let tu = to.uri().unwrap();
        assert_eq!(tu.port, Some(6000));
        assert_eq!(tu.params.iter().count(), 3);
        assert_eq!(m.from().unwrap().tag().unwrap().len(), 1 + 160 + 3);
        assert!(m.call_id().unwrap().starts_with("longreq.onereallyreally"));
        let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
        assert_eq!(vias.len(), 34);
        assert_eq!(vias[0].host, "sip33.example.com");
        assert_eq!(vias[32].host, "sip1.example.com");
        assert_eq!(vias[33].received(), Some("192.0.2.5"));
        assert_eq!(m.body.len(), 150);
    });
}

#[test]
fn s3_1_1_8_dblreq() {
    // The trailing INVITE bytes are noise after a zero-length body and are ignored.
    with_msg(fixture!("dblreq"), |m| {
        assert_eq!(m.method(), Some(Method::Register));
        assert_eq!(m.call_id(), Ok("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
        assert!(m.body.is_empty());
        assert_eq!(m.head_len + m.body.len(), m.buf.len() - 446);
    });
}

#[test]
fn s3_1_1_9_semiuri() {
    with_msg(fixture!("semiuri"), |m| {
        let u = ruri(m);
        assert_eq!(
            (u.user, u.host),
            (Some("user;par=u%40example.net"), Host::Name("example.com"))
        );
        assert!(u.params.is_empty());
        assert_eq!(m.values(HeaderName::Other("Accept")).count(), 6);
    });
}

#[test]
fn s3_1_1_10_transports() {
    with_msg(fixture!("transports"), |m| {
        let t: Vec<_> = m.vias().map(|v| v.unwrap().transport).collect();
        assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
        assert_eq!(m.call_id(), Ok("transports.kijh4akdnaqjkwendsasfdj"));
    });
}

#[test]
fn s3_1_1_11_mpart01() {
    with_msg(fixture!("mpart01"), |m| {
        assert_eq!(m.method(), Some(Method::Message));
        assert_eq!(m.body.len(), 553);
        assert!(m.body.contains(&0));
        assert_eq!(m.top_via().unwrap().rport(), Rport::Empty);
        assert_eq!(m.top_via().unwrap().port, Some(5070));
        assert_eq!(m.user_agent(), Some("SIPimp.org/0.2.5 (curses)"));
        assert_eq!(
            m.content_type(),
            Some("multipart/mixed;boundary=7a9cbec02ceef655")
        );
        assert!(m.header(HeaderName::Other("Identity")).is_some());
    });
}

#[test]
fn s3_1_1_12_unreason() {
    with_msg(fixture!("unreason"), |m| {
        assert_eq!(
            m.start,
            StartLine::Response {
                code: 200,
                reason: "= 2**3 * 5**2 но сто девяносто девять - простое"
            }
        );
        assert_eq!(m.body.len(), 154);
    });
}

#[test]
fn s3_1_1_13_noreason() {
    with_msg(fixture!("noreason"), |m| {
        assert_eq!(
            m.start,
            StartLine::Response {
                code: 100,
                reason: ""
            }
        );
        assert_eq!(m.to().unwrap().tag(), Some("902jndnke3"));
    });
}

// ---- 3.1.2 invalid messages -------------------------------------------------------------

#[test]
fn s3_1_2_1_badinv01() {
    // Framing is fine; the Via and Contact values are malformed: the proxy answers 400.
    with_msg(fixture!("badinv01"), |m| {
        assert_eq!(m.top_via(), Err(ParseError::BadVia));
        assert_eq!(m.contacts().next(), Some(Err(ParseError::BadParams)));
        assert_eq!(m.from().unwrap().tag(), Some("134161461246"));
    });
}

#[test]
fn s3_1_2_2_clerr() {
    // RFC 3261 §18.3: over UDP a body shorter than Content-Length is an error the element
    // answers with 400 (the core does, as for every other parse error of a request).
    assert_eq!(parse_err(fixture!("clerr")), ParseError::BodyTruncated);
    // Over a stream the same bytes are simply an incomplete message.
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    assert!(matches!(
        Message::parse_stream(fixture!("clerr"), &mut headers),
        Ok(Status::Partial)
    ));
}

#[test]
fn s3_1_2_3_ncl() {
    assert_eq!(parse_err(fixture!("ncl")), ParseError::BadContentLength);
}

#[test]
fn s3_1_2_4_scalar02() {
    // CSeq overflow makes the proxy answer 400; the other values are individually typed errors.
    with_msg(fixture!("scalar02"), |m| {
        assert_eq!(m.cseq(), Err(ParseError::BadCSeq));
        assert_eq!(m.max_forwards(), Err(ParseError::BadMaxForwards));
        assert_eq!(m.expires(), Err(ParseError::BadExpires));
        let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
            panic!("contact")
        };
        assert_eq!(c.params.get("expires"), Some(Some("280297596632815")));
        assert_eq!(
            c.expires(),
            Ok(Some(u32::MAX)),
            "an out-of-range expires param reads as the largest (the registrar caps it)"
        );
    });
}

#[test]
fn s3_1_2_5_scalarlg() {
    // A response with an out-of-range CSeq: the proxy drops it.
    with_msg(fixture!("scalarlg"), |m| {
        assert_eq!(m.status_code(), Some(503));
        assert_eq!(m.cseq(), Err(ParseError::BadCSeq));
    });
}

#[test]
fn s3_1_2_6_quotbal() {
    with_msg(fixture!("quotbal"), |m| {
        assert_eq!(m.to(), Err(ParseError::BadNameAddr))
    });
}

#[test]
fn s3_1_2_7_ltgtruri() {
    assert_eq!(parse_err(fixture!("ltgtruri")), ParseError::BadUri);
}

#[test]
fn s3_1_2_8_lwsruri() {
    assert_eq!(parse_err(fixture!("lwsruri")), ParseError::BadUri);
}

#[test]
fn s3_1_2_9_lwsstart() {
    assert_eq!(parse_err(fixture!("lwsstart")), ParseError::BadStartLine);
}

#[test]
fn s3_1_2_10_trws() {
    assert_eq!(parse_err(fixture!("trws")), ParseError::BadStartLine);
}

#[test]
fn s3_1_2_11_escruri() {
    // The Request-URI carries escaped headers: the proxy must answer 400 (never turn them
    // into real headers).
    with_msg(fixture!("escruri"), |m| {
        assert_eq!(ruri(m).headers, Some("Route=%3Csip:example.com%3E"));
    });
}

#[test]
fn s3_1_2_12_baddate() {
    // sipfront never interprets Date; the raw value is there and the message is processed.
    with_msg(fixture!("baddate"), |m| {
        assert_eq!(
            m.header(HeaderName::Date).unwrap().value,
            b"Fri, 01 Jan 2010 16:00:00 EST"
        );
    });
}

#[test]
fn s3_1_2_13_regbadct() {
    with_msg(fixture!("regbadct"), |m| {
        assert_eq!(m.contacts().next(), Some(Err(ParseError::BadNameAddr)));
    });
}

#[test]
fn s3_1_2_14_badaspec() {
    with_msg(fixture!("badaspec"), |m| {
        assert_eq!(m.from().unwrap().display, Some(&b"Bell, Alexander"[..]));
        assert_eq!(m.to(), Err(ParseError::BadNameAddr));
    });
}

#[test]
fn s3_1_2_15_baddn() {
    with_msg(fixture!("baddn"), |m| {
        assert_eq!(m.from(), Err(ParseError::BadNameAddr));
        assert_eq!(m.to(), Err(ParseError::BadNameAddr));
    });
}

#[test]
fn s3_1_2_16_badvers() {
    assert_eq!(parse_err(fixture!("badvers")), ParseError::BadVersion);
}

#[test]
fn s3_1_2_17_mismatch01() {
    // Start line says OPTIONS, CSeq says INVITE: the proxy answers 400.
    with_msg(fixture!("mismatch01"), |m| {
        assert_eq!(m.method(), Some(Method::Options));
        assert_eq!(m.cseq().unwrap().method, Method::Invite);
    });
}

#[test]
fn s3_1_2_18_mismatch02() {
    // Unknown method plus mismatching CSeq: the proxy answers 501 (or 400).
    with_msg(fixture!("mismatch02"), |m| {
        assert_eq!(m.method(), Some(Method::Other("NEWMETHOD")));
        assert_eq!(m.cseq().unwrap().method, Method::Invite);
    });
}

#[test]
fn s3_1_2_19_bigcode() {
    assert_eq!(parse_err(fixture!("bigcode")), ParseError::BadStatusCode);
}

// ---- 3.2 transaction layer ------------------------------------------------------------------

#[test]
fn s3_2_1_badbranch() {
    // Magic cookie without identifier: the proxy rejects with 400 (or falls back to
    // RFC 2543 matching); the parser reports the branch as is.
    with_msg(fixture!("badbranch"), |m| {
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK"))
    });
}

// ---- 3.3 application layer ------------------------------------------------------------------

#[test]
fn s3_3_1_insuf() {
    // Missing Call-ID, From, To, Max-Forwards: the proxy answers 400.
    with_msg(fixture!("insuf"), |m| {
        assert_eq!(m.call_id(), Err(ParseError::MissingHeader("Call-ID")));
        assert_eq!(m.from(), Err(ParseError::MissingHeader("From")));
        assert_eq!(m.to(), Err(ParseError::MissingHeader("To")));
        assert_eq!(m.max_forwards(), Ok(None));
    });
}

#[test]
fn s3_3_2_unkscm() {
    // Unknown Request-URI scheme: the proxy answers 416.
    with_msg(fixture!("unkscm"), |m| {
        assert_eq!(
            Uri::parse(m.request_uri().unwrap()),
            Err(ParseError::UnsupportedScheme)
        );
    });
}

#[test]
fn s3_3_3_novelsc() {
    // Known-but-not-SIP scheme: 416 from a proxy that does not handle it.
    with_msg(fixture!("novelsc"), |m| {
        assert_eq!(m.request_uri(), Some("soap.beep://192.0.2.103:3002"));
        assert_eq!(
            Uri::parse(m.request_uri().unwrap()),
            Err(ParseError::UnsupportedScheme)
        );
    });
}

#[test]
fn s3_3_4_unksm2() {
    // Unknown schemes in To/From/Contact are syntactically fine; the registrar refuses a
    // non-SIP Contact / AOR.
    with_msg(fixture!("unksm2"), |m| {
        assert_eq!(m.to().unwrap().uri, "isbn:2983792873");
        assert_eq!(m.to().unwrap().uri(), Err(ParseError::UnsupportedScheme));
        assert_eq!(m.from().unwrap().uri, "http://www.example.com");
        let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
            panic!("contact")
        };
        assert_eq!(c.uri(), Err(ParseError::UnsupportedScheme));
    });
}

#[test]
fn s3_3_5_bext01() {
    // Unknown Proxy-Require tags: the proxy answers 420 listing them in Unsupported.
    with_msg(fixture!("bext01"), |m| {
        let req: Vec<_> = m.require().map(Result::unwrap).collect();
        assert_eq!(req, ["nothingSupportsThis", "nothingSupportsThisEither"]);
        let preq: Vec<_> = m.proxy_require().map(Result::unwrap).collect();
        assert_eq!(preq, ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]);
        assert_eq!(m.top_via().unwrap().transport, "TLS");
    });
}

#[test]
fn s3_3_6_invut() {
    // Unknown body type: a proxy forwards it untouched (the UAS answers 415).
    with_msg(fixture!("invut"), |m| {
        assert_eq!(m.content_type(), Some("application/unknownformat"));
        assert_eq!(m.body, b"<audio>\r\n <pcmu port=\"443\"/>\r\n</audio>\r\n");
    });
}

#[test]
fn s3_3_7_regaut01() {
    // Unknown auth scheme: the registrar ignores it and challenges (401).
    with_msg(fixture!("regaut01"), |m| {
        assert_eq!(
            m.authorization(false),
            Some(Err(ParseError::UnsupportedAuthScheme))
        );
    });
}

#[test]
fn s3_3_8_multi01() {
    // Several values in single-value headers: the proxy answers 400.
    with_msg(fixture!("multi01"), |m| {
        assert_eq!(m.cseq(), Err(ParseError::DuplicateHeader("CSeq")));
        assert_eq!(m.call_id(), Err(ParseError::DuplicateHeader("Call-ID")));
        assert_eq!(m.from(), Err(ParseError::DuplicateHeader("From")));
        assert_eq!(m.to(), Err(ParseError::DuplicateHeader("To")));
        assert_eq!(
            m.max_forwards(),
            Err(ParseError::DuplicateHeader("Max-Forwards"))
        );
        assert_eq!(m.body.len(), 154);
    });
}

#[test]
fn s3_3_9_mcl01() {
    assert_eq!(
        parse_err(fixture!("mcl01")),
        ParseError::DuplicateContentLength
    );
}

#[test]
fn s3_3_10_bcast() {
    // A response whose next Via is a broadcast address: the proxy must not send there.
    with_msg(fixture!("bcast"), |m| {
        let hosts: Vec<_> = m.vias().map(|v| v.unwrap().host).collect();
        assert_eq!(hosts, ["192.0.2.198", "255.255.255.255"]);
    });
}

#[test]
fn s3_3_11_zeromf() {
    // Max-Forwards 0 on an OPTIONS: the proxy answers 483 (the rewriter refuses to forward).
    with_msg(fixture!("zeromf"), |m| {
        assert_eq!(m.max_forwards(), Ok(Some(0)));
        let ops = sipfront::sip::ForwardOps {
            decrement_max_forwards: true,
            ..Default::default()
        };
        let mut out = Vec::with_capacity(1024);
        assert_eq!(
            sipfront::sip::write_forward(m, &ops, &mut out),
            Err(sipfront::sip::RewriteError::MaxForwardsExhausted)
        );
    });
}

#[test]
fn s3_3_12_cparam01() {
    // Bare addr-spec: ";unknownparam" is a Contact header parameter, not a URI parameter.
    with_msg(fixture!("cparam01"), |m| {
        let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
            panic!("contact")
        };
        assert_eq!(c.uri, "sip:+19725552222@gw1.example.net");
        assert_eq!(c.params.get("unknownparam"), Some(None));
        assert!(c.uri().unwrap().params.is_empty());
    });
}

#[test]
fn s3_3_13_cparam02() {
    // In angle brackets the parameter belongs to the URI.
    with_msg(fixture!("cparam02"), |m| {
        let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
            panic!("contact")
        };
        assert!(c.params.is_empty());
        assert_eq!(c.uri().unwrap().params.get("unknownparam"), Some(None));
    });
}

#[test]
fn s3_3_14_regescrt() {
    // A Contact URI with an escaped Route header: valid; the registrar stores the URI as is
    // (it must never turn the escaped header into a real one).
    with_msg(fixture!("regescrt"), |m| {
        let Some(Ok(Contact::Addr(c))) = m.contacts().next() else {
            panic!("contact")
        };
        assert_eq!(
            c.uri().unwrap().headers,
            Some("Route=%3Csip:sip.example.com%3E")
        );
        assert_eq!(m.content_length(), Ok(Some(0)));
    });
}

#[test]
fn s3_3_15_sdp01() {
    // Unacceptable Accept: forwarded by the proxy; the UAS answers 406.
    with_msg(fixture!("sdp01"), |m| {
        assert_eq!(
            m.header(HeaderName::Other("Accept")).unwrap().value,
            b"text/nobodyKnowsThis"
        );
        assert_eq!(m.body.len(), 150);
    });
}

// ---- 3.4 backward compatibility -------------------------------------------------------------

#[test]
fn s3_4_1_inv2543() {
    // RFC 2543 INVITE: no branch, no Max-Forwards, no Content-Length (UDP: the body is the
    // rest of the datagram). The proxy matches it RFC 2543-style or rejects it; a forwarded
    // copy gets Max-Forwards: 69.
    with_msg(fixture!("inv2543"), |m| {
        let via = m.top_via().unwrap();
        assert_eq!((via.host, via.branch()), ("iftgw.example.com", None));
        assert_eq!(m.max_forwards(), Ok(None));
        assert_eq!(m.content_length(), Ok(None));
        assert_eq!(m.body.len(), 105);
        assert_eq!(m.to().unwrap().params.get("user"), Some(Some("phone")));
        let rr = m.record_routes().next().unwrap().unwrap();
        assert_eq!(rr.uri().unwrap().maddr(), Some("ss1.example.com"));
        assert_eq!(ruri(m).scheme, Scheme::Sip);
    });
}

/// Every fixture file is covered by a test above.
#[test]
fn all_fixtures_present() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475");
    let n = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sip")
        })
        .count();
    assert_eq!(n, 49);
}
