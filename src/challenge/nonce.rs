//! The issued nonce: the MAC ([`super::mac`]) of `"nonce" | client group | issue time | bits`
//! under the server's key, first 16 bytes, in hex. It binds a challenge to the client, the time and the difficulty without
//! storing anything: a submission carries time and bits back, and the server recomputes.
use std::net::IpAddr;

use super::mac::Message;
use super::{client_bytes, Key, NONCE_SECS};

/// Length of a nonce in hex.
pub const HEX_LEN: usize = 32;
/// Clock skew tolerated between the workers that issue and check (seconds).
const SKEW_SECS: i64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceError {
    /// Older than [`NONCE_SECS`], or from the future.
    Stale,
    /// Not what this key issued to this client for that time and difficulty.
    Forged,
}

fn message(client: IpAddr, issued: i64, bits: u8) -> Message {
    let mut m = Message::new(b"mod_shield nonce\0");
    m.update(&client_bytes(client));
    m.update(&issued.to_be_bytes());
    m.update(&[bits]);
    m
}

/// The nonce issued to `client` at `issued` (unix seconds) for `bits` leading zero bits.
pub fn issue(key: &Key, client: IpAddr, issued: i64, bits: u8) -> String {
    let tag = message(client, issued, bits).tag(key);
    hex(&tag[..HEX_LEN / 2])
}

/// Checks that `nonce` is the one issued to `client` at `issued` for `bits`, and is still
/// fresh at `now`. The comparison is constant-time.
pub fn check(
    key: &Key,
    client: IpAddr,
    nonce: &str,
    issued: i64,
    bits: u8,
    now: i64,
) -> Result<(), NonceError> {
    if issued > now + SKEW_SECS || now - issued > NONCE_SECS {
        return Err(NonceError::Stale);
    }
    let tag = unhex(nonce).ok_or(NonceError::Forged)?;
    if tag.len() != HEX_LEN / 2 {
        return Err(NonceError::Forged);
    }
    if message(client, issued, bits).verify_prefix(key, &tag) {
        Ok(())
    } else {
        Err(NonceError::Forged)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Hex (either case) to bytes; None for odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}
