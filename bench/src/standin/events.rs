//! What tests can observe: counters ([`Stats`]) and the event log ([`Events`]).
//!
//! The engine bumps counters on every message and, when the event log is enabled, appends one
//! JSON object per line to an in-memory buffer; the server drains that buffer into the
//! `--events` file after each loop turn. Every line has `ts_ms`, `event` and `src`; REGISTER
//! lines also carry `user`, `contact`, `expires` and `headers` (every header as `[name, value]`,
//! in order, compact names expanded).

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::parse::Msg;

/// A JSON field value.
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    Str(&'a str),
    Num(u64),
}

/// Appends `s` as a JSON string literal.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON-lines event log (disabled unless `--events` is given).
#[derive(Debug, Default)]
pub struct Events {
    enabled: bool,
    buf: String,
}

impl Events {
    pub fn new(enabled: bool) -> Self {
        Events {
            enabled,
            buf: String::new(),
        }
    }

    /// Records one event; `msg` adds its start line and every header.
    pub fn record(
        &mut self,
        now_ms: u64,
        event: &str,
        src: SocketAddr,
        fields: &[(&str, Val)],
        msg: Option<&Msg>,
    ) {
        if !self.enabled {
            return;
        }
        let b = &mut self.buf;
        let _ = write!(b, "{{\"ts_ms\":{now_ms},\"event\":");
        json_str(b, event);
        let _ = write!(b, ",\"src\":\"{src}\"");
        for (k, v) in fields {
            b.push(',');
            json_str(b, k);
            b.push(':');
            match v {
                Val::Str(s) => json_str(b, s),
                Val::Num(n) => {
                    let _ = write!(b, "{n}");
                }
            }
        }
        if let Some(m) = msg {
            b.push_str(",\"headers\":[");
            for (i, (n, v)) in m.headers().iter().enumerate() {
                if i > 0 {
                    b.push(',');
                }
                b.push('[');
                json_str(b, n);
                b.push(',');
                json_str(b, v);
                b.push(']');
            }
            b.push(']');
        }
        b.push_str("}\n");
    }

    /// Hands the pending lines to `f` and clears them.
    pub fn drain(&mut self, f: impl FnOnce(&[u8])) {
        if !self.buf.is_empty() {
            f(self.buf.as_bytes());
            self.buf.clear();
        }
    }
}

macro_rules! stats {
    ($($field:ident),* $(,)?) => {
        /// Counters since start (or the last `reset` command).
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Stats { $(pub $field: u64,)* }

        impl Stats {
            /// Appends the counters as one JSON object.
            pub fn write_json(&self, out: &mut String) {
                out.push('{');
                let mut first = true;
                $(
                    if !first { out.push(','); }
                    first = false;
                    let _ = write!(out, "\"{}\":{}", stringify!($field), self.$field);
                )*
                let _ = first;
                out.push('}');
            }
        }
    };
}

stats!(
    received,
    dropped,
    register,
    register_ok,
    register_challenged,
    register_forbidden,
    call_challenged,
    call_forbidden,
    unregister,
    invite,
    invite_retransmit,
    invite_dropped,
    answered,
    not_found,
    busy,
    b_legs,
    b_answered,
    b_failed,
    ack,
    bye,
    bye_sent,
    cancel,
    cancel_sent,
    options,
    message,
    other,
    retransmits_sent,
    timeouts,
    calls_active,
    subscribe,
    publish,
    notify_sent,
    notify_answered,
    ignored,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_lines() {
        let mut e = Events::new(true);
        let src: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        e.record(
            5,
            "x",
            src,
            &[("a", Val::Str("q\"\\\n\u{1}")), ("n", Val::Num(3))],
            None,
        );
        let mut got = Vec::new();
        e.drain(|b| got.extend_from_slice(b));
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "{\"ts_ms\":5,\"event\":\"x\",\"src\":\"127.0.0.1:5060\",\"a\":\"q\\\"\\\\\\n\\u0001\",\"n\":3}\n"
        );
        let mut off = Events::new(false);
        off.record(1, "x", src, &[], None);
        off.drain(|_| panic!("disabled log must stay empty"));
    }

    #[test]
    fn stats_json() {
        let s = Stats {
            register: 2,
            ..Default::default()
        };
        let mut out = String::new();
        s.write_json(&mut out);
        assert!(out.starts_with("{\"received\":0,"));
        assert!(out.contains("\"register\":2"));
        assert!(out.ends_with("\"ignored\":0}"));
    }
}
