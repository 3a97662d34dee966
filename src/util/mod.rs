//! Small encoders every layer uses, kept in one place: FNV-1a hashing ([`fnv`]), lowercase
//! hex ([`hex`]) and RFC 1123 dates ([`date`]). Leaf module: it depends on nothing of the
//! proxy, and nothing in it allocates.

pub mod date;
pub mod fnv;
pub mod hex;
