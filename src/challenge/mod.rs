//! `DOSChallenge`: a proof-of-work page instead of the plain refusal for a blocked browser, and
//! the signed pass that lets it through the block afterwards.
//!
//! Everything here is plain Rust (no httpd): the settings, the key, the issued nonce
//! ([`nonce`]), the work check ([`pow`]), the pass cookie ([`pass`]), the page ([`page`]) and
//! the small request facts the FFI asks about (is this a navigation, a submission, a safe
//! return URL). `docs/challenge.md` describes the design.
//!
//! A nonce is a MAC ([`mac`]) of the client group, the issue time and the difficulty under
//! the server's key, so issuing one stores nothing and a submission is checked with one MAC
//! and one SHA-256 (a flood of bogus ones costs no memory). Only an accepted solution is written
//! down ([`ledger`]): its nonce is spent, and the client's passes are counted, capped and made
//! dearer.

pub mod ledger;
pub mod mac;
pub mod nonce;
pub mod page;
pub mod pass;
pub mod pow;
pub mod stats;

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use sha2::{Digest, Sha256};

pub use stats::{stats, Stats};

/// The reserved path a solved challenge is submitted to.
pub const SUBMIT_PATH: &str = "/.shield/challenge";
/// The pass cookie's name.
pub const COOKIE: &str = "shield_pass";
/// Default leading zero bits for generation 1, and the increase per later generation: 2^14
/// WebCrypto digests are a fraction of a second in desktop Chromium and about a second on a
/// phone; each later generation costs four times more (docs/challenge.md has measurements).
pub const DEFAULT_BASE_BITS: u8 = 14;
pub const DEFAULT_STEP_BITS: u8 = 2;
/// No challenge asks for more than this many bits (about 2^28 hashes: minutes on a phone).
pub const MAX_BITS: u8 = 28;
/// Default lifetime of a pass, seconds.
pub const DEFAULT_PASS_SECS: u32 = 3600;
/// Default cap on the passes one client earns per pass lifetime, and the bits each pass it
/// already earned adds (each further pass costs twice the work of the one before).
pub const DEFAULT_PASS_LIMIT: u32 = 8;
pub const DEFAULT_PASS_STEP_BITS: u8 = 1;
/// How long an issued nonce can be answered, seconds.
pub const NONCE_SECS: i64 = 600;
/// A key file must hold at least this many bytes.
pub const MIN_KEY_FILE_BYTES: usize = 32;
/// ...and at most this many.
pub const MAX_KEY_FILE_BYTES: usize = 65_536;

/// The server's 32-byte MAC key ([`mac`]). Debug never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// What is wrong with a `DOSChallengeKey` file (the caller names the directive and path).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "holds {0} bytes; at least {MIN_KEY_FILE_BYTES} are needed (e.g. head -c 48 /dev/urandom | base64 > FILE)",
        MIN_KEY_FILE_BYTES = MIN_KEY_FILE_BYTES
    )]
    TooShort(usize),
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("is not a regular file")]
    NotARegularFile,
    #[error("is larger than {MAX_KEY_FILE_BYTES} bytes", MAX_KEY_FILE_BYTES = MAX_KEY_FILE_BYTES)]
    TooLarge,
}

impl Key {
    /// The key of a `DOSChallengeKey` file: SHA-256 of its contents (any bytes, at least
    /// [`MIN_KEY_FILE_BYTES`] after trimming surrounding whitespace), so a hex, base64 or raw
    /// random file all work and every server reading the same file gets the same key.
    pub fn from_file_contents(bytes: &[u8]) -> Result<Key, KeyFileError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_FILE_BYTES {
            return Err(KeyFileError::TooShort(trimmed.len()));
        }
        let mut h = Sha256::new();
        h.update(b"mod_shield challenge key\0");
        h.update(trimmed);
        Ok(Key(h.finalize().into()))
    }

    /// Reads a key file (at configuration time; the error names the problem, the caller the
    /// directive and path).
    /// Only a regular file of at most [`MAX_KEY_FILE_BYTES`] is read (never a device such as
    /// /dev/urandom, which would never end).
    pub fn read_file(path: &str) -> Result<Key, KeyFileError> {
        use std::io::Read;
        let cannot = KeyFileError::Unreadable;
        // Checked before opening: opening a FIFO would wait for a writer.
        if !std::fs::metadata(path).map_err(cannot)?.is_file() {
            return Err(KeyFileError::NotARegularFile);
        }
        let file = std::fs::File::open(path).map_err(cannot)?;
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyFileError::TooLarge);
        }
        Key::from_file_contents(&bytes)
    }
}

/// The resolved challenge settings of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    /// Leading zero bits asked of generation 1.
    pub base_bits: u8,
    /// Added per later generation.
    pub step_bits: u8,
    /// Pass lifetime, seconds.
    pub pass_secs: u32,
    /// Passes one client may earn per `pass_secs`.
    pub pass_limit: u32,
    /// Bits added per pass the client already earned in that time.
    pub pass_step_bits: u8,
    /// `DOSChallengeKey`: the file and its key; None = the store's random key.
    pub key_file: Option<String>,
    pub key: Option<Key>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: false,
            base_bits: DEFAULT_BASE_BITS,
            step_bits: DEFAULT_STEP_BITS,
            pass_secs: DEFAULT_PASS_SECS,
            pass_limit: DEFAULT_PASS_LIMIT,
            pass_step_bits: DEFAULT_PASS_STEP_BITS,
            key_file: None,
            key: None,
        }
    }
}

impl Settings {
    /// Leading zero bits asked of a client in block generation `generation` (1-based).
    pub fn bits_for_generation(&self, generation: u32) -> u8 {
        let extra = u64::from(generation.max(1) - 1) * u64::from(self.step_bits);
        (u64::from(self.base_bits) + extra).min(u64::from(MAX_BITS)) as u8
    }

    /// Leading zero bits asked of a client in block generation `generation` that already
    /// earned `passes` passes within the pass lifetime: each one makes the next dearer.
    pub fn bits_for(&self, generation: u32, passes: u32) -> u8 {
        let extra = u64::from(passes) * u64::from(self.pass_step_bits);
        (u64::from(self.bits_for_generation(generation)) + extra).min(u64::from(MAX_BITS)) as u8
    }
}

/// The 17 bytes that bind a nonce or a pass to a client group: family, then the address in
/// its 16-byte IPv6 form (IPv4 mapped).
fn client_bytes(client: IpAddr) -> [u8; 17] {
    let (family, v6) = match client {
        IpAddr::V4(a) => (4u8, a.to_ipv6_mapped()),
        IpAddr::V6(a) => (6u8, a),
    };
    let mut out = [0u8; 17];
    out[0] = family;
    out[1..].copy_from_slice(&v6.octets());
    out
}

/// The address every pass holder of `client` is counted under: `fdXX:XXXX:XXXX:XXXX::` in
/// the unique-local range fd00::/8, the 56 bits after `fd` a keyed hash of the client group.
/// One address per client, whatever the number of its passes: they share one budget. Such
/// an address never connects from outside, so it cannot collide with a real client; its host
/// bits are zero, so it is its own /64 group. It is never blocked itself: when its count is
/// crossed, the client's own block moves on a generation (see `Store::holder_key`).
pub fn pass_client(key: &Key, client: IpAddr) -> IpAddr {
    let mut h = Sha256::new();
    h.update(b"mod_shield pass client\0");
    h.update(key.0);
    h.update(client_bytes(client));
    let d = h.finalize();
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..8].copy_from_slice(&d[..7]);
    IpAddr::V6(Ipv6Addr::from(octets))
}

/// A request the page is for: a browser navigation (GET or HEAD) whose `Accept` names
/// `text/html`. `*/*` alone is not enough: that is what scripts, APIs and feed readers send.
pub fn is_navigation(method: &str, accept: Option<&str>) -> bool {
    (method == "GET" || method == "HEAD")
        && accept.is_some_and(|a| {
            a.split(',').any(|item| {
                let mut parts = item.split(';');
                let kind = parts.next().unwrap_or("").trim();
                // "text/html;q=0" refuses HTML.
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
                });
                kind.eq_ignore_ascii_case("text/html") && !refused
            })
        })
}

/// The URL to go back to after a challenge: a local path (with its query), never another
/// site. Anything else becomes `/`.
pub fn safe_return(target: &str) -> &str {
    let ok = target.starts_with('/')
        && !target.starts_with("//")
        && !target.starts_with("/\\")
        && target.len() <= 2048
        && target
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'"' && b != b'<' && b != b'>');
    if ok {
        target
    } else {
        "/"
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a query value).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// Decodes `%XX` (and `+` as space); None for bad escapes or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A submitted solution, from the query string of [`SUBMIT_PATH`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub nonce: String,
    /// Issue time, unix seconds.
    pub issued: i64,
    pub bits: u8,
    pub solution: u64,
    /// Already checked by [`safe_return`].
    pub return_to: String,
}

impl Submission {
    /// `n=…&t=…&d=…&s=…&r=…`; None when a field is missing or malformed.
    pub fn parse(query: &str) -> Option<Submission> {
        let (mut n, mut t, mut d, mut s, mut r) = (None, None, None, None, None);
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "n" => n = Some(v),
                "t" => t = v.parse().ok(),
                "d" => d = v.parse().ok(),
                "s" => s = v.parse().ok(),
                "r" => r = percent_decode(v),
                _ => {}
            }
        }
        let nonce = n.filter(|n| n.len() == nonce::HEX_LEN)?.to_string();
        let return_to = safe_return(&r?).to_string();
        Some(Submission {
            nonce,
            issued: t?,
            bits: d?,
            solution: s?,
            return_to,
        })
    }
}

#[cfg(test)]
mod tests;
