//! Why a REGISTER was refused, and the SIP response each reason maps to.

use std::io::Write;

/// A REGISTER the registrar refused; nothing was changed (RFC 3261 §10.3: all or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// `Contact: *` with another Contact or an expiry other than 0 (§10.3 step 6).
    #[error("Contact: * requires Expires: 0 and no other Contact")]
    InvalidStar,
    /// A non-zero expiry below `min_expires` (§10.3 step 7) → 423 with Min-Expires.
    #[error("expiry below the minimum of {min_expires} s")]
    IntervalTooBrief { min_expires: u32 },
    /// Same Call-ID as a stored binding with a CSeq not higher (§10.3 step 7: "the update
    /// MUST be aborted and the request fails").
    #[error("CSeq {cseq} is not higher than the stored {stored} for this Call-ID")]
    CSeqOutOfOrder { cseq: u32, stored: u32 },
    /// More bindings than `max_contacts` and `on_max_contacts = "reject"` (or the request
    /// alone names more).
    #[error("more than {max} contacts for this AOR")]
    TooManyContacts { max: u16 },
    /// A Contact that is not a usable SIP URI or is too long.
    #[error("unusable Contact URI")]
    BadContact,
    #[error("Call-ID longer than 255 bytes")]
    CallIdTooLong,
    #[error("Path longer than 4096 bytes")]
    PathTooLong,
    #[error("AOR is empty or not user@domain")]
    BadAor,
    /// The table holds `max_aors` already.
    #[error("location table full")]
    TableFull,
}

impl RegisterError {
    /// Status code and reason phrase of the response to send.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            RegisterError::InvalidStar => (400, "Invalid Contact *"),
            RegisterError::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            RegisterError::CSeqOutOfOrder { .. } => (400, "Invalid CSeq"),
            RegisterError::TooManyContacts { .. } => (403, "Too Many Contacts"),
            RegisterError::BadContact => (400, "Bad Contact"),
            RegisterError::CallIdTooLong => (400, "Call-ID Too Long"),
            RegisterError::PathTooLong => (400, "Path Too Long"),
            RegisterError::BadAor => (400, "Bad AOR"),
            RegisterError::TableFull => (503, "Location Table Full"),
        }
    }

    /// Append the extra header lines the response needs (`Min-Expires` for 423).
    pub fn write_headers(&self, out: &mut Vec<u8>) {
        if let RegisterError::IntervalTooBrief { min_expires } = self {
            let _ = write!(out, "Min-Expires: {min_expires}\r\n");
        }
    }
}
