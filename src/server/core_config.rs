//! The core's settings ([`CoreConfig`]) from the configuration file: the interface table
//! (each listen address with the host and port it is announced as), the interface facing
//! Asterisk, the names the proxy answers to, and the limits and timers.

use crate::config::Config;
use crate::core::{BranchKey, CoreConfig, DialogKey, Interface};

/// The core configuration of `cfg` for `n_workers` workers.
pub fn core_config(cfg: &Config, n_workers: usize) -> CoreConfig {
    let listen = &cfg.listen.udp;
    let mut c = CoreConfig::new(listen, &cfg.asterisk.nodes, &cfg.domain.realm);
    // The listen table: UDP, then TCP, then TLS (the transport binds them in this order).
    c.interfaces = cfg
        .listen_addrs()
        .map(|(addr, transport)| {
            let adv = cfg.advertised(addr);
            Interface::advertised(addr, transport, &adv.host, adv.port)
        })
        .collect();
    let side = cfg.asterisk_side();
    c.asterisk_side = listen
        .iter()
        .position(|a| *a == side)
        .and_then(|i| u16::try_from(i).ok())
        .unwrap_or(0);
    // The Contact given to Asterisk names this proxy too (it sends its calls there).
    let contact = cfg.advertise();
    if c.interfaces
        .iter()
        .all(|i| i.host != contact.host || i.port != contact.port)
    {
        c.aliases.push((contact.host, contact.port));
    }
    c.derive_local_domains(&cfg.domain.local);
    c.match_mode = cfg.asterisk.match_mode;
    c.timers = cfg.timers;
    c.max_message_bytes = cfg.limits.max_message_bytes;
    c.max_transactions = cfg.limits.max_transactions_per_worker;
    c.max_parked = cfg.limits.max_parked_per_worker;
    c.register_cache = cfg.limits.register_cache_per_worker;
    c.n_workers = n_workers.max(1);
    c.check_from_user = cfg.auth.check_from_user;
    c.dialog_key = DialogKey::new(&cfg.auth.nonce_secret);
    c.branch_key = BranchKey::new(&cfg.auth.nonce_secret);
    c.response_source = cfg.asterisk.response_source;
    c.response_addresses
        .clone_from(&cfg.asterisk.response_addresses);
    c.auth_failure_delay_ms = cfg.auth.failure_delay_ms;
    c.unregistered_code = cfg.registrar.unregistered_answer;
    c.shed_backlog_bytes = cfg.limits.shed_backlog_bytes;
    c.subscribe_events
        .clone_from(&cfg.asterisk.subscribe_events);
    c.nat = cfg.nat;
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Local;

    #[test]
    fn interfaces_follow_listen_advertise_and_asterisk_side() {
        let cfg = Config::parse(
            "[listen]\n\
             udp = [\"10.0.0.5:5060\", \"192.168.1.1:5060\"]\n\
             asterisk_side = \"192.168.1.1:5060\"\n\
             [listen.advertise]\n\
             \"10.0.0.5:5060\" = \"203.0.113.7:5062\"\n\
             [asterisk]\n\
             nodes = [\"192.168.1.9:5080\"]\n",
        )
        .unwrap();
        let c = core_config(&cfg, 2);
        assert_eq!(c.interfaces[0].record_route, "sip:203.0.113.7:5062;lr");
        assert_eq!(c.interfaces[1].record_route, "sip:192.168.1.1:5060;lr");
        assert_eq!(c.asterisk_side, 1);
        assert_eq!(
            c.interface(Local::Upstream).map(|i| i.host.as_str()),
            Some("192.168.1.1")
        );
        assert!(c.is_us("203.0.113.7", Some(5062)));
        assert!(c.is_us("10.0.0.5", Some(5060)));
        assert!(c.is_local_host("203.0.113.7", None));
        // The forwarded REGISTER's Contact is the Asterisk side's address.
        assert_eq!(cfg.advertise().to_string(), "192.168.1.1:5060");
        assert!(c.aliases.is_empty());
    }

    #[test]
    fn stream_listen_addresses_follow_the_udp_ones() {
        use crate::sip::Transport;
        let cfg = Config::parse(
            "[listen]\n\
             udp = [\"127.0.0.1:5060\"]\n\
             tcp = [\"127.0.0.1:5060\"]\n\
             tls = [\"127.0.0.1:5061\"]\n\
             [tls]\ncert = \"/x.pem\"\nkey = \"/y.pem\"\n",
        )
        .unwrap();
        let c = core_config(&cfg, 1);
        let t: Vec<Transport> = c.interfaces.iter().map(|i| i.transport).collect();
        assert_eq!(t, [Transport::Udp, Transport::Tcp, Transport::Tls]);
        assert_eq!(
            c.interfaces[1].record_route,
            "sip:127.0.0.1:5060;transport=tcp;lr"
        );
        assert_eq!(
            c.interfaces[2].record_route,
            "sip:127.0.0.1:5061;transport=tls;lr"
        );
        assert_eq!(c.transport_of(Local::Listen(2)), Transport::Tls);
        assert_eq!(c.transport_of(Local::Upstream), Transport::Udp);
    }

    #[test]
    fn asterisk_advertise_is_an_alias() {
        let cfg = Config::parse("[asterisk]\nadvertise = \"127.0.0.50:5070\"\n").unwrap();
        let c = core_config(&cfg, 1);
        assert!(c.is_us("127.0.0.50", Some(5070)));
        assert!(c.is_local_host("127.0.0.50", None));
    }
}
