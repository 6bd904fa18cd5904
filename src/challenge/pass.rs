//! The pass cookie: `<expiry>.<id>.<mac>`, where expiry is unix seconds, id 8 bytes in hex
//! and mac the HMAC-SHA-256 (hex) of `"pass" | client group | expiry | id` under the server's
//! key. The id names the records the pass holder is counted under (see
//! [`pass_client`](super::pass_client)); it comes from the solved nonce, so replaying one
//! solution always yields the same id.
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

use super::nonce::{hex, unhex};
use super::{client_bytes, Key, COOKIE};

/// A valid pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// Unix seconds.
    pub expires: i64,
    pub id: [u8; 8],
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

fn mac(key: &Key, client: IpAddr, expires: i64, id: &[u8; 8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes any key length");
    m.update(b"mod_shield pass\0");
    m.update(&client_bytes(client));
    m.update(&expires.to_be_bytes());
    m.update(id);
    m
}

/// The pass id earned by solving `nonce` with `solution`.
pub fn id_for(key: &Key, nonce: &str, solution: u64) -> [u8; 8] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes any key length");
    m.update(b"mod_shield pass id\0");
    m.update(nonce.as_bytes());
    m.update(&solution.to_be_bytes());
    let tag = m.finalize().into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&tag[..8]);
    id
}

/// A pass for `client` with `id`, valid until `expires`: the cookie value.
pub fn issue(key: &Key, client: IpAddr, id: &[u8; 8], expires: i64) -> String {
    let tag = mac(key, client, expires, id).finalize().into_bytes();
    format!("{expires}.{}.{}", hex(id), hex(&tag))
}

/// Checks a cookie value for `client` at `now`. The MAC comparison is constant-time
/// (`Mac::verify_slice`).
pub fn verify(key: &Key, client: IpAddr, value: &str, now: i64) -> Result<Pass, PassError> {
    let mut parts = value.split('.');
    let (Some(exp), Some(id), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PassError::Malformed);
    };
    if exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PassError::Malformed);
    }
    let expires: i64 = exp.parse().map_err(|_| PassError::Malformed)?;
    let id: [u8; 8] = unhex(id)
        .and_then(|v| v.try_into().ok())
        .ok_or(PassError::Malformed)?;
    let tag = unhex(tag)
        .filter(|t| t.len() == 32)
        .ok_or(PassError::Malformed)?;
    mac(key, client, expires, &id)
        .verify_slice(&tag)
        .map_err(|_| PassError::Forged)?;
    if expires <= now {
        return Err(PassError::Expired);
    }
    Ok(Pass { expires, id })
}

/// The values of every `shield_pass` cookie in a `Cookie` header.
pub fn cookie_values(header: &str) -> impl Iterator<Item = &str> {
    header.split(';').filter_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then(|| value.trim().trim_matches('"'))
    })
}

/// The first valid pass among a request's cookies.
pub fn from_cookies(key: &Key, client: IpAddr, header: &str, now: i64) -> Option<Pass> {
    cookie_values(header).find_map(|v| verify(key, client, v, now).ok())
}

/// The `Set-Cookie` value that hands out a pass.
pub fn set_cookie(value: &str, max_age: u32, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}
