//! Subscriptions, like Asterisk's hints and voicemail: a SUBSCRIBE (BLF `dialog`,
//! `presence`, MWI `message-summary`, any other package) gets a 200 and at once a NOTIFY
//! inside the new dialog (through the SUBSCRIBE's Record-Route set, to its Contact) with the
//! package's current state; a PUBLISH gets a 200 with an entity tag; `mwi USER NEW [OLD]`
//! (control) sets a mailbox and sends the user an unsolicited message-summary NOTIFY at its
//! registered Contact, the way Asterisk does for peers with a mailbox.
//!
//! Stateless: the To tag of the 200 derives from the SUBSCRIBE's branch (a retransmission
//! gets the same answer and the same NOTIFY again), the NOTIFY is sent once (loopback does
//! not lose it), and answers to NOTIFYs are only counted (`notify_answered`).

use std::io::Write as _;
use std::net::SocketAddr;

use super::build::{begin_request, begin_response, finish, tag_for_branch};
use super::call::{next_hop, record_routes};
use super::engine::{hex16, Engine, Outbox};
use super::events::Val;
use super::parse::{uri_of, uri_user, Msg};

/// How long a subscription lasts when the SUBSCRIBE gives no Expires.
const DEFAULT_SUBSCRIBE_EXPIRES: u32 = 3600;

/// Body of a NOTIFY for `event` about `user`: (Content-Type, body).
fn state_of(
    event: &str,
    user: &str,
    host: SocketAddr,
    mailbox: (u32, u32),
) -> (&'static str, String) {
    match event {
        "dialog" => (
            "application/dialog-info+xml",
            format!(
                "<?xml version=\"1.0\"?>\r\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" \
                 version=\"0\" state=\"full\" entity=\"sip:{user}@{}\"/>\r\n",
                host.ip()
            ),
        ),
        "presence" => (
            "application/pidf+xml",
            format!(
                "<?xml version=\"1.0\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                 entity=\"sip:{user}@{}\"><tuple id=\"{user}\"><status><basic>open</basic>\
                 </status></tuple></presence>\r\n",
                host.ip()
            ),
        ),
        "message-summary" => ("application/simple-message-summary", mwi_body(user, host, mailbox)),
        _ => ("", String::new()),
    }
}

fn mwi_body(user: &str, host: SocketAddr, (new, old): (u32, u32)) -> String {
    format!(
        "Messages-Waiting: {}\r\nMessage-Account: sip:{user}@{}\r\nVoice-Message: {new}/{old} (0/0)\r\n",
        if new > 0 { "yes" } else { "no" },
        host.ip()
    )
}

/// The event type of an Event header value (parameters aside), lowercase.
fn event_type(msg: &Msg) -> String {
    msg.header("Event")
        .or_else(|| msg.header("o"))
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

impl Engine {
    /// SUBSCRIBE: 200, then the NOTIFY with the current state (terminated for Expires: 0).
    pub(super) fn on_subscribe(
        &mut self,
        now_ms: u64,
        src: SocketAddr,
        msg: &Msg,
        out: &mut Outbox,
    ) {
        self.stats.subscribe += 1;
        let event = event_type(msg);
        let target = match msg.start {
            super::parse::Start::Request { uri, .. } => uri,
            super::parse::Start::Response { .. } => "",
        };
        let exten = uri_user(target).unwrap_or_default();
        let expires = msg.expires().unwrap_or(DEFAULT_SUBSCRIBE_EXPIRES);
        let fields = [
            ("call_id", Val::Str(msg.call_id().unwrap_or_default())),
            ("package", Val::Str(&event)),
            ("exten", Val::Str(exten)),
            ("expires", Val::Num(u64::from(expires))),
        ];
        self.events
            .record(now_ms, "subscribe", src, &fields, Some(msg));
        if event.is_empty() {
            return self.respond_stateless(src, msg, 489, "Bad Event", out);
        }
        let mut tag = [0u8; 16];
        let tag = hex16(tag_for_branch(msg.branch().unwrap_or_default()), &mut tag).to_owned();
        let local = self.local;
        out.push_with(src, |b| {
            begin_response(b, msg, 200, "OK", Some(&tag));
            // RFC 3261 §12.1.1: the dialog's route set goes back in the 2xx.
            for rr in msg.headers_named("Record-Route") {
                let _ = write!(b, "Record-Route: {rr}\r\n");
            }
            let _ = write!(
                b,
                "Expires: {expires}\r\nContact: <sip:standin@{local}>\r\n"
            );
            finish(b, None, b"");
        });
        let state = if expires == 0 {
            "terminated;reason=timeout".to_owned()
        } else {
            format!("active;expires={expires}")
        };
        let mailbox = self.mailboxes.get(exten).copied().unwrap_or((0, 0));
        let (ctype, body) = state_of(&event, exten, local, mailbox);
        let routes = record_routes(msg);
        let contact = msg.header("Contact").map(uri_of).unwrap_or_default();
        let dst = next_hop(&routes, contact, src);
        let branch = self.ids.branch();
        let mut bytes = Vec::with_capacity(1024);
        begin_request(&mut bytes, "NOTIFY", contact, local, &branch);
        for r in &routes {
            let _ = write!(bytes, "Route: {r}\r\n");
        }
        let _ = write!(
            bytes,
            "From: {};tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 NOTIFY\r\n\
             Event: {}\r\nSubscription-State: {state}\r\nContact: <sip:standin@{local}>\r\n",
            msg.header("To").unwrap_or_default(),
            msg.header("From").unwrap_or_default(),
            msg.call_id().unwrap_or_default(),
            msg.header("Event")
                .or_else(|| msg.header("o"))
                .unwrap_or_default(),
        );
        finish(
            &mut bytes,
            (!ctype.is_empty()).then_some(ctype),
            body.as_bytes(),
        );
        out.push(dst, &bytes);
        self.stats.notify_sent += 1;
        let fields = [
            ("call_id", Val::Str(msg.call_id().unwrap_or_default())),
            ("package", Val::Str(&event)),
            ("dst", Val::Str(&dst.to_string())),
        ];
        self.events
            .record(now_ms, "notify_sent", src, &fields, None);
    }

    /// PUBLISH: 200 with an entity tag.
    pub(super) fn on_publish(&mut self, now_ms: u64, src: SocketAddr, msg: &Msg, out: &mut Outbox) {
        self.stats.publish += 1;
        let event = event_type(msg);
        let fields = [
            ("call_id", Val::Str(msg.call_id().unwrap_or_default())),
            ("package", Val::Str(&event)),
        ];
        self.events
            .record(now_ms, "publish", src, &fields, Some(msg));
        let mut tag = [0u8; 16];
        let etag = hex16(tag_for_branch(msg.call_id().unwrap_or_default()), &mut tag).to_owned();
        let expires = msg.expires().unwrap_or(DEFAULT_SUBSCRIBE_EXPIRES);
        out.push_with(src, |b| {
            begin_response(b, msg, 200, "OK", Some(&etag));
            let _ = write!(b, "SIP-ETag: {etag}\r\nExpires: {expires}\r\n");
            finish(b, None, b"");
        });
    }

    /// A response to one of our NOTIFYs.
    pub(super) fn on_notify_response(
        &mut self,
        now_ms: u64,
        src: SocketAddr,
        code: u16,
        msg: &Msg,
    ) {
        if code < 200 {
            return;
        }
        self.stats.notify_answered += 1;
        let fields = [
            ("call_id", Val::Str(msg.call_id().unwrap_or_default())),
            ("code", Val::Num(u64::from(code))),
        ];
        self.events
            .record(now_ms, "notify_answered", src, &fields, None);
    }

    /// `mwi USER NEW [OLD]`: set the mailbox and NOTIFY the user's registered Contact
    /// (unsolicited, out of dialog). Err when the user has no binding.
    pub(super) fn send_mwi(
        &mut self,
        now_ms: u64,
        user: &str,
        mailbox: (u32, u32),
        out: &mut Outbox,
    ) -> Result<SocketAddr, &'static str> {
        self.mailboxes.insert(user.to_owned(), mailbox);
        let Some(b) = self.regs.get(user, now_ms) else {
            return Err("user not registered");
        };
        let (contact, dst) = (b.contact.clone(), b.target);
        let local = self.local;
        let (branch, tag, call_id) = (self.ids.branch(), self.ids.tag(), self.ids.call_id(local));
        let body = mwi_body(user, local, mailbox);
        let mut bytes = Vec::with_capacity(768);
        begin_request(&mut bytes, "NOTIFY", &contact, local, &branch);
        let _ = write!(
            bytes,
            "From: <sip:asterisk@{local}>;tag={tag}\r\nTo: <{contact}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 NOTIFY\r\nEvent: message-summary\r\nSubscription-State: active\r\n\
             Contact: <sip:standin@{local}>\r\n"
        );
        finish(
            &mut bytes,
            Some("application/simple-message-summary"),
            body.as_bytes(),
        );
        out.push(dst, &bytes);
        self.stats.notify_sent += 1;
        let fields = [
            ("call_id", Val::Str(&call_id)),
            ("package", Val::Str("message-summary")),
            ("dst", Val::Str(&dst.to_string())),
            ("user", Val::Str(user)),
        ];
        self.events
            .record(now_ms, "notify_sent", dst, &fields, None);
        Ok(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_per_package() {
        let host: SocketAddr = "127.0.0.2:5080".parse().unwrap();
        let (t, b) = state_of("dialog", "1002", host, (0, 0));
        assert_eq!(t, "application/dialog-info+xml");
        assert!(b.contains("entity=\"sip:1002@127.0.0.2\""), "{b}");
        let (t, b) = state_of("message-summary", "1001", host, (2, 1));
        assert_eq!(t, "application/simple-message-summary");
        assert!(
            b.starts_with("Messages-Waiting: yes\r\n") && b.contains("2/1"),
            "{b}"
        );
        assert_eq!(state_of("as-feature-event", "1", host, (0, 0)).0, "");
    }
}
