//! HEP capture against the REAL `sipfront` and the Asterisk stand-in: with `[hep]
//! collector` pointing at a UDP socket of this test, a phone registers and calls 600; the
//! test decodes every HEPv3 packet the collector receives (its own decoder, written from the
//! HEP3 specification, not the proxy's encoder) and finds, with the right source and
//! destination addresses, capture id, password and protocol type: the phone's REGISTER in,
//! the 401 out, the REGISTER forwarded to Asterisk out and Asterisk's 200 in, the INVITE
//! forwarded to Asterisk and its 200 OK going back to the phone. `/metrics` counts the
//! packets sent.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::admin::{free_admin_addr, metric};
use support::flows::{phone_invite, phone_register};
use support::phone::Phone;
use support::proxy::{Tune, DOMAIN};
use support::{password, Scene, Setup};

/// One decoded HEPv3 packet.
#[derive(Debug)]
struct Hep {
    src: SocketAddr,
    dst: SocketAddr,
    proto_type: u8,
    capture_id: u32,
    auth: Option<String>,
    secs: u32,
    payload: String,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Decode a HEPv3 packet: "HEP3", total length, chunks (vendor, type, length, value).
fn decode(p: &[u8]) -> Hep {
    assert_eq!(&p[..4], b"HEP3", "magic");
    assert_eq!(usize::from(be16(&p[4..])), p.len(), "total length");
    let (mut src_ip, mut dst_ip) = (None, None);
    let (mut sport, mut dport, mut proto_type, mut capture_id, mut secs) = (0, 0, 0, 0, 0);
    let (mut auth, mut payload) = (None, None);
    let mut at = 6;
    while at < p.len() {
        let (vendor, kind, len) = (
            be16(&p[at..]),
            be16(&p[at + 2..]),
            usize::from(be16(&p[at + 4..])),
        );
        assert_eq!(vendor, 0);
        assert!(len >= 6 && at + len <= p.len(), "chunk length");
        let v = &p[at + 6..at + len];
        match kind {
            0x0003 | 0x0004 => {
                let ip = IpAddr::from(<[u8; 4]>::try_from(v).unwrap());
                *(if kind == 3 { &mut src_ip } else { &mut dst_ip }) = Some(ip);
            }
            0x0005 | 0x0006 => {
                let ip = IpAddr::from(<[u8; 16]>::try_from(v).unwrap());
                *(if kind == 5 { &mut src_ip } else { &mut dst_ip }) = Some(ip);
            }
            0x0007 => sport = be16(v),
            0x0008 => dport = be16(v),
            0x0009 => secs = u32::from_be_bytes(v.try_into().unwrap()),
            0x000b => proto_type = v[0],
            0x000c => capture_id = u32::from_be_bytes(v.try_into().unwrap()),
            0x000e => auth = Some(String::from_utf8(v.to_vec()).unwrap()),
            0x000f => payload = Some(String::from_utf8_lossy(v).into_owned()),
            _ => {}
        }
        at += len;
    }
    Hep {
        src: SocketAddr::new(src_ip.expect("source IP chunk"), sport),
        dst: SocketAddr::new(dst_ip.expect("destination IP chunk"), dport),
        proto_type,
        capture_id,
        auth,
        secs,
        payload: payload.expect("payload chunk"),
    }
}

/// One expected capture: true for the packet that shows it.
type Check<'a> = Box<dyn Fn(&Hep) -> bool + 'a>;

/// The first line of a SIP message.
fn start_line(m: &str) -> &str {
    m.lines().next().unwrap_or("")
}

fn cseq(m: &str) -> &str {
    m.lines()
        .find_map(|l| l.strip_prefix("CSeq:"))
        .map_or("", str::trim)
}

#[test]
fn every_sip_message_reaches_the_collector_as_hepv3() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    let collector_addr = collector.local_addr().unwrap();
    let admin = free_admin_addr();
    let scene = Scene::start(Setup {
        tune: Tune {
            admin: Some(admin),
            extra_toml: Some(format!(
                "[hep]\ncollector = \"{collector_addr}\"\ncapture_id = 2001\npassword = \"homer-pw\"\n"
            )),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let proxy = scene.proxy.addr;
    let asterisk = scene.standin().sip;

    let phone = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let reg = phone_register(&phone, proxy, "1001", password("1001"), 300, "");
    assert_eq!(reg.code(), 200);
    scene.standin().wait_registered("1001");
    let caller = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let call = phone_invite(
        &caller,
        proxy,
        "1001",
        password("1001"),
        &format!("sip:600@{DOMAIN}"),
        Duration::from_secs(10),
    );
    assert_eq!(call.code(), 200, "{:?}", call.before);

    // What must be seen: (description, predicate).
    let want: Vec<(&str, Check)> = vec![
        (
            "phone's REGISTER in",
            Box::new(|h: &Hep| {
                h.src == phone.addr
                    && h.dst == proxy
                    && start_line(&h.payload).starts_with("REGISTER ")
            }),
        ),
        (
            "401 to the phone",
            Box::new(|h: &Hep| {
                h.src == proxy
                    && h.dst == phone.addr
                    && start_line(&h.payload).starts_with("SIP/2.0 401")
            }),
        ),
        (
            "200 to the phone's REGISTER",
            Box::new(|h: &Hep| {
                h.src == proxy
                    && h.dst == phone.addr
                    && start_line(&h.payload).starts_with("SIP/2.0 200")
                    && cseq(&h.payload).ends_with("REGISTER")
            }),
        ),
        (
            "REGISTER forwarded to Asterisk",
            Box::new(move |h: &Hep| {
                h.dst == asterisk
                    && h.src.ip() == proxy.ip()
                    && start_line(&h.payload).starts_with("REGISTER ")
            }),
        ),
        (
            "Asterisk's answer to the REGISTER",
            Box::new(move |h: &Hep| {
                h.src == asterisk
                    && start_line(&h.payload).starts_with("SIP/2.0")
                    && cseq(&h.payload).ends_with("REGISTER")
            }),
        ),
        (
            "INVITE forwarded to Asterisk",
            Box::new(move |h: &Hep| {
                h.dst == asterisk && start_line(&h.payload).starts_with("INVITE sip:600@")
            }),
        ),
        (
            "Asterisk's 200 to the INVITE",
            Box::new(move |h: &Hep| {
                h.src == asterisk
                    && start_line(&h.payload).starts_with("SIP/2.0 200")
                    && cseq(&h.payload).ends_with("INVITE")
            }),
        ),
        (
            "200 OK of the call to the caller",
            Box::new(|h: &Hep| {
                h.src == proxy
                    && h.dst == caller.addr
                    && start_line(&h.payload).starts_with("SIP/2.0 200")
                    && cseq(&h.payload).ends_with("INVITE")
            }),
        ),
    ];
    let mut seen = vec![false; want.len()];
    let mut packets = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65_536];
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    while seen.iter().any(|s| !s) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "after {packets} packets, never saw: {:?}",
            want.iter()
                .zip(&seen)
                .filter(|(_, s)| !**s)
                .map(|(w, _)| w.0)
                .collect::<Vec<_>>()
        );
        collector.set_read_timeout(Some(left)).unwrap();
        let Ok((n, from)) = collector.recv_from(&mut buf) else {
            continue;
        };
        assert_eq!(from.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
        let h = decode(&buf[..n]);
        packets += 1;
        assert_eq!(h.proto_type, 1, "SIP");
        assert_eq!(h.capture_id, 2001);
        assert_eq!(h.auth.as_deref(), Some("homer-pw"));
        assert!(
            u64::from(h.secs).abs_diff(now_secs) < 120,
            "timestamp {}",
            h.secs
        );
        assert!(
            h.payload.contains("\r\n\r\n"),
            "a whole SIP message: {}",
            h.payload
        );
        for (i, (_, pred)) in want.iter().enumerate() {
            if pred(&h) {
                seen[i] = true;
            }
        }
    }
    assert!(metric(admin, "sipfront_hep_packets_total{result=\"sent\"}") >= 1.0);
    assert_eq!(
        metric(admin, "sipfront_hep_packets_total{result=\"dropped\"}"),
        0.0
    );
}
