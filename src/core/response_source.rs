//! Where a response to a client transaction may come from (response injection, issue #16).
//!
//! The branch MAC (`branch.rs`) makes a transaction's branch unguessable, but whoever sees
//! a request (on the path, or a phone that was sent one) knows its branch. So a response is
//! also accepted only from where its request went:
//! - towards an Asterisk node: that node's address — IP and port, or the IP alone with
//!   `[asterisk] match = "ip"` (how the node's own requests are recognised) — or any address
//!   in `[asterisk] response_addresses` (the other addresses of multihomed Asterisk hosts);
//!   `[asterisk] response_source = "any"` turns the check off (Kamailio's tm does no such
//!   check);
//! - towards a phone (or the next hop of its Path): the flow the request was sent on — the
//!   same IP and port over UDP, the same IP over a connection (RFC 3261 §18.2.2: a phone
//!   whose connection closed answers over a new one, from another port).
//!
//! Anything else is dropped and counted as spoofed.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::config::{same_ip, CoreConfig, MatchMode};
use super::flow::{Flow, Local};

/// `[asterisk] response_source`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseSource {
    /// Responses for a node only from that node (or `response_addresses`).
    #[default]
    Node,
    /// From anywhere (no check; not recommended).
    Any,
}

/// Whether a response received from `src` may belong to a client transaction sent to `sent`.
pub(super) fn accepts(cfg: &CoreConfig, sent: Flow, src: SocketAddr) -> bool {
    let to_asterisk = sent.local == Local::Upstream || cfg.asterisk_index(sent.remote).is_some();
    if !to_asterisk {
        return if sent.conn.is_some() {
            same_ip(sent.remote.ip(), src.ip())
        } else {
            same_addr(sent.remote, src)
        };
    }
    if cfg.response_source == ResponseSource::Any {
        return true;
    }
    let from_node = match cfg.match_mode {
        MatchMode::IpPort => same_addr(sent.remote, src),
        MatchMode::Ip => same_ip(sent.remote.ip(), src.ip()),
    };
    from_node || listed(&cfg.response_addresses, src.ip())
}

fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && same_ip(a.ip(), b.ip())
}

fn listed(list: &[IpAddr], ip: IpAddr) -> bool {
    list.iter().any(|&a| same_ip(a, ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ConnId;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn responses_come_from_where_the_request_went() {
        let mut cfg = CoreConfig::new(&[addr("127.0.0.1:5060")], &[addr("10.0.0.2:5080")], "r");
        let node = Flow::new(Local::Upstream, addr("10.0.0.2:5080"));
        let phone = Flow::new(Local::Listen(0), addr("192.0.2.7:40000"));
        let conn = ConnId {
            worker: 0,
            slot: 1,
            gen: 1,
        };
        let phone_tcp = Flow {
            conn: Some(conn),
            ..phone
        };
        let cases: &[(Flow, &str, bool)] = &[
            (node, "10.0.0.2:5080", true),
            (node, "[::ffff:10.0.0.2]:5080", true),
            (node, "10.0.0.2:5081", false),
            (node, "10.0.0.3:5080", false),
            (phone, "192.0.2.7:40000", true),
            (phone, "192.0.2.7:40001", false),
            (phone, "192.0.2.8:40000", false),
            (phone_tcp, "192.0.2.7:40001", true),
            (phone_tcp, "192.0.2.8:40000", false),
        ];
        for &(sent, src, want) in cases {
            assert_eq!(accepts(&cfg, sent, addr(src)), want, "{sent:?} from {src}");
        }
        // Multihomed Asterisk: its other address, any port.
        cfg.response_addresses = vec!["10.0.0.3".parse().unwrap()];
        assert!(accepts(&cfg, node, addr("10.0.0.3:5060")));
        assert!(!accepts(&cfg, phone, addr("10.0.0.3:5060")));
        // match = "ip": the node's IP with any port.
        cfg.match_mode = MatchMode::Ip;
        assert!(accepts(&cfg, node, addr("10.0.0.2:5999")));
        assert!(!accepts(&cfg, node, addr("10.0.0.4:5080")));
        // "any": no check towards Asterisk; phones are still checked.
        cfg.response_source = ResponseSource::Any;
        assert!(accepts(&cfg, node, addr("198.51.100.1:1")));
        assert!(!accepts(&cfg, phone, addr("198.51.100.1:1")));
    }
}
