//! The pass cookie: `<expiry>.<generation>.<mac>`, where expiry is unix seconds, generation
//! the block generation it was earned in, and mac the MAC ([`super::mac`], hex) of
//! `"pass" | client group | expiry | generation` under the server's key.
//!
//! A pass names no records of its own: every pass of one client is counted under that
//! client's one pass-holder address ([`pass_client`](super::pass_client)), so passes do not
//! multiply a budget, and a pass opens only a block of the generation it was earned in.
//! Its expiry is the solved nonce's issue time plus the pass lifetime, so the pass a nonce
//! earns is one and the same cookie whatever solution is found for it.
use std::net::IpAddr;

use super::mac::Message;
use super::nonce::{hex, unhex};
use super::{client_bytes, Key, COOKIE};

/// A valid pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// Unix seconds.
    pub expires: i64,
    /// The block generation it was earned in (1 for a client that was not blocked).
    pub generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassError {
    /// Not of the pass's shape.
    Malformed,
    /// The MAC does not match: forged, tampered with, or issued to another client or key.
    Forged,
    /// Genuine but past its expiry.
    Expired,
}

fn message(client: IpAddr, expires: i64, generation: u32) -> Message {
    let mut m = Message::new(b"mod_shield pass\0");
    m.update(&client_bytes(client));
    m.update(&expires.to_be_bytes());
    m.update(&generation.to_be_bytes());
    m
}

/// A pass for `client`, earned in block generation `generation`, valid until `expires`:
/// the cookie value.
pub fn issue(key: &Key, client: IpAddr, generation: u32, expires: i64) -> String {
    let tag = message(client, expires, generation).tag(key);
    format!("{expires}.{generation}.{}", hex(&tag))
}

/// All ASCII digits, and at least one.
fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a cookie value for `client` at `now`. The MAC comparison is constant-time.
pub fn verify(key: &Key, client: IpAddr, value: &str, now: i64) -> Result<Pass, PassError> {
    let mut parts = value.split('.');
    let (Some(exp), Some(generation), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PassError::Malformed);
    };
    if !digits(exp) || !digits(generation) {
        return Err(PassError::Malformed);
    }
    let expires: i64 = exp.parse().map_err(|_| PassError::Malformed)?;
    let generation: u32 = generation.parse().map_err(|_| PassError::Malformed)?;
    let tag = unhex(tag)
        .filter(|t| t.len() == 32)
        .ok_or(PassError::Malformed)?;
    if !message(client, expires, generation).verify_prefix(key, &tag) {
        return Err(PassError::Forged);
    }
    if expires <= now {
        return Err(PassError::Expired);
    }
    Ok(Pass {
        expires,
        generation,
    })
}

/// The values of every `shield_pass` cookie in a `Cookie` header.
pub fn cookie_values(header: &str) -> impl Iterator<Item = &str> {
    header.split(';').filter_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then(|| value.trim().trim_matches('"'))
    })
}

/// The first valid pass among a request's cookies that was earned in `generation` (a browser
/// may still carry the pass of an earlier block next to a fresh one).
pub fn from_cookies(
    key: &Key,
    client: IpAddr,
    header: &str,
    generation: u32,
    now: i64,
) -> Option<Pass> {
    cookie_values(header)
        .filter_map(|v| verify(key, client, v, now).ok())
        .find(|p| p.generation == generation)
}

/// The `Set-Cookie` value that hands out a pass.
pub fn set_cookie(value: &str, max_age: u32, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}
