//! The challenge's message authentication code: keyed BLAKE3 of a short message (a domain
//! string, the client group, a time, a difficulty or generation) under the server's key.
//!
//! Why BLAKE3 and not HMAC-SHA-256: a navigation under attack gets a fresh nonce and every
//! request of a pass holder checks its pass, so this MAC runs on the hot path of a flood.
//! HMAC-SHA-256 of a message this short is two SHA-256 blocks after the key schedule,
//! about 7,100 instructions on a CPU without SHA extensions (many servers in service, and
//! valgrind's); one keyed BLAKE3 compression is a few hundred. BLAKE3's keyed mode is a PRF
//! and a MAC by design, with a 256-bit key: the server's 32-byte key as it is.
//!
//! The message is built on the stack (every message here is under one 64-byte block) and
//! hashed in one call; the domain string at its start keeps the nonce's and the pass's MACs
//! apart.
use super::Key;

/// The longest message: a domain string, a client group (17 bytes) and two numbers.
const MAX: usize = 64;

/// A message being put together. Parts past [`MAX`] bytes are a programming error, caught
/// by the unit tests (the messages are fixed in shape); in release they are cut off, never
/// a panic on the request path.
pub struct Message {
    buf: [u8; MAX],
    len: usize,
}

impl Message {
    /// A message starting with `domain` (which names what is signed).
    pub fn new(domain: &[u8]) -> Message {
        let mut m = Message {
            buf: [0; MAX],
            len: 0,
        };
        m.update(domain);
        m
    }

    /// Appends `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        debug_assert!(
            self.len + bytes.len() <= MAX,
            "MAC message over {MAX} bytes"
        );
        let n = bytes.len().min(MAX - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// The 32-byte tag of the message under `key`.
    pub fn tag(&self, key: &Key) -> [u8; 32] {
        *blake3::keyed_hash(&key.0, &self.buf[..self.len]).as_bytes()
    }

    /// Whether `tag` is the first `tag.len()` bytes of the message's tag (at least 16), in
    /// constant time.
    pub fn verify_prefix(&self, key: &Key, tag: &[u8]) -> bool {
        tag.len() >= 16
            && tag.len() <= 32
            && constant_time_eq::constant_time_eq(&self.tag(key)[..tag.len()], tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_depend_on_key_domain_and_every_byte() {
        let k = Key([7; 32]);
        let base = {
            let mut m = Message::new(b"d\0");
            m.update(b"abc");
            m.tag(&k)
        };
        let mut other_domain = Message::new(b"e\0");
        other_domain.update(b"abc");
        assert_ne!(base, other_domain.tag(&k));
        let mut other_byte = Message::new(b"d\0");
        other_byte.update(b"abd");
        assert_ne!(base, other_byte.tag(&k));
        let mut same = Message::new(b"d\0");
        same.update(b"abc");
        assert_ne!(base, same.tag(&Key([8; 32])));
        assert_eq!(base, same.tag(&k));
        assert!(same.verify_prefix(&k, &base[..16]));
        assert!(same.verify_prefix(&k, &base));
        assert!(!same.verify_prefix(&k, &base[..15]), "too short to trust");
        let mut bad = base;
        bad[3] ^= 1;
        assert!(!same.verify_prefix(&k, &bad[..16]));
    }

    #[test]
    fn the_longest_message_fits() {
        // The pass: domain, client group, expiry, generation.
        let mut m = Message::new(b"mod_shield pass\0");
        m.update(&[0; 17]);
        m.update(&0i64.to_be_bytes());
        m.update(&0u32.to_be_bytes());
        assert!(m.len <= MAX);
    }
}
