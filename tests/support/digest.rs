//! A phone's digest client for every algorithm sipfront offers (RFC 7616: MD5, SHA-256,
//! SHA-512-256; qop=auth), computed here with the `md5` and `sha2` crates independently of
//! `src/auth`, and [`Registrant`], a plain-socket phone that registers repeatedly under one
//! Call-ID with increasing CSeq (REGISTER, 401, REGISTER + Authorization, final response).

use std::net::SocketAddr;
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

use super::phone::{parse_challenge, Challenge, Phone, SipMsg};
use super::proxy::DOMAIN;

/// How long one response may take (a parked request waits for the database first).
const RESPONSE_WAIT: Duration = Duration::from_secs(10);

/// A digest algorithm, by its RFC 7616 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Md5,
    Sha256,
    Sha512_256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Md5 => "MD5",
            Alg::Sha256 => "SHA-256",
            Alg::Sha512_256 => "SHA-512-256",
        }
    }

    /// Lowercase hex of the hash of `text`.
    pub fn hex(self, text: &str) -> String {
        let raw: Vec<u8> = match self {
            Alg::Md5 => Md5::digest(text.as_bytes()).to_vec(),
            Alg::Sha256 => Sha256::digest(text.as_bytes()).to_vec(),
            Alg::Sha512_256 => Sha512_256::digest(text.as_bytes()).to_vec(),
        };
        raw.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The `algorithm` of every challenge in `resp`'s `header` lines, in order (a challenge
/// without one is MD5, RFC 7616 §3.3).
pub fn offered(resp: &SipMsg, header: &str) -> Vec<String> {
    resp.headers(header)
        .into_iter()
        .filter_map(parse_challenge)
        .map(|c| c.algorithm.unwrap_or_else(|| "MD5".to_owned()))
        .collect()
}

/// The challenge for `alg` in `resp`'s `header` lines.
pub fn challenge_for(resp: &SipMsg, header: &str, alg: Alg) -> Challenge {
    resp.headers(header)
        .into_iter()
        .filter_map(parse_challenge)
        .find(|c| {
            c.algorithm
                .as_deref()
                .unwrap_or("MD5")
                .eq_ignore_ascii_case(alg.name())
        })
        .unwrap_or_else(|| panic!("no {} challenge in\n{}", alg.name(), resp.text))
}

/// The Authorization value answering `ch` with `alg` (qop=auth when offered; `cnonce`
/// should differ per request).
pub fn credentials(
    ch: &Challenge,
    alg: Alg,
    (user, password): (&str, &str),
    (method, uri): (&str, &str),
    cnonce: &str,
) -> String {
    let ha1 = alg.hex(&format!("{user}:{}:{password}", ch.realm));
    let ha2 = alg.hex(&format!("{method}:{uri}"));
    let nc = "00000001";
    let mut out = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={}",
        ch.realm,
        ch.nonce,
        alg.name()
    );
    let response = if ch.qop_auth {
        out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        alg.hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce))
    } else {
        alg.hex(&format!("{ha1}:{}:{ha2}", ch.nonce))
    };
    out.push_str(&format!(", response=\"{response}\""));
    if let Some(o) = &ch.opaque {
        out.push_str(&format!(", opaque=\"{o}\""));
    }
    out
}

/// The two responses of one digest registration.
#[derive(Debug)]
pub struct Registration {
    /// The answer to the REGISTER without credentials (normally 401).
    pub challenge: SipMsg,
    /// The final answer to the REGISTER with credentials.
    pub last: SipMsg,
}

impl Registration {
    pub fn code(&self) -> u16 {
        self.last.code().unwrap_or(0)
    }
}

/// A phone registering `user` with its own address as Contact, again and again (one Call-ID,
/// CSeq increasing by one per request, as RFC 3261 §10.2.4 asks of a refresh).
pub struct Registrant<'p> {
    pub phone: &'p Phone,
    pub proxy: SocketAddr,
    pub user: String,
    pub password: String,
    call_id: String,
    cseq: u32,
}

impl<'p> Registrant<'p> {
    pub fn new(phone: &'p Phone, proxy: SocketAddr, user: &str, password: &str) -> Self {
        Registrant {
            phone,
            proxy,
            user: user.to_owned(),
            password: password.to_owned(),
            call_id: format!("dreg-{user}-{}", phone.addr.port()),
            cseq: 0,
        }
    }

    fn request(&self, expires: u32, auth: Option<&str>) -> String {
        let Registrant {
            phone,
            user,
            call_id,
            cseq,
            ..
        } = self;
        let me = phone.addr;
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}.{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t{call_id}\r\n\
             To: <sip:{user}@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{me}>\r\nExpires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    }

    /// Sends one REGISTER (next CSeq) and returns its final response.
    fn transact(&mut self, expires: u32, auth: Option<&str>) -> SipMsg {
        self.cseq += 1;
        self.phone.send(self.proxy, &self.request(expires, auth));
        let mut seen = Vec::new();
        self.phone
            .expect_final(&format!("{} REGISTER", self.cseq), RESPONSE_WAIT, &mut seen)
    }

    /// REGISTER, then (on a 401) REGISTER answering the `alg` challenge with `password`
    /// (the registrant's own when `None`).
    pub fn register_as(&mut self, expires: u32, alg: Alg, password: Option<&str>) -> Registration {
        let challenge = self.transact(expires, None);
        if challenge.code() != Some(401) {
            return Registration {
                last: challenge.clone(),
                challenge,
            };
        }
        let ch = challenge_for(&challenge, "WWW-Authenticate", alg);
        let pw = password.map_or_else(|| self.password.clone(), str::to_owned);
        let cnonce = format!("c{}x{}", self.phone.addr.port(), self.cseq);
        let auth = credentials(
            &ch,
            alg,
            (&self.user, &pw),
            ("REGISTER", &format!("sip:{DOMAIN}")),
            &cnonce,
        );
        let last = self.transact(expires, Some(&auth));
        Registration { challenge, last }
    }

    /// [`Registrant::register_as`] with MD5 and the registrant's password.
    pub fn register(&mut self, expires: u32) -> Registration {
        self.register_as(expires, Alg::Md5, None)
    }
}
