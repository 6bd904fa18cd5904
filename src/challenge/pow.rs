//! The work: find a decimal number `s` such that `SHA-256(nonce ":" s)` starts with at least
//! `bits` zero bits. Checking costs one SHA-256; finding costs about `2^bits` of them.
use sha2::{Digest, Sha256};

/// SHA-256 of the ASCII text `nonce:solution`, as the page computes it.
pub fn digest(nonce: &str, solution: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(nonce.as_bytes());
    h.update(b":");
    h.update(solution.to_string().as_bytes());
    h.finalize().into()
}

/// Leading zero bits of a hash.
pub fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for &b in hash {
        if b == 0 {
            bits += 8;
        } else {
            return bits + b.leading_zeros();
        }
    }
    bits
}

/// True when `solution` does the work asked by a nonce of `bits`.
pub fn check(nonce: &str, solution: u64, bits: u8) -> bool {
    leading_zero_bits(&digest(nonce, solution)) >= u32::from(bits)
}

/// Finds the smallest solution (what the page does, for tests and benches).
pub fn solve(nonce: &str, bits: u8) -> u64 {
    (0u64..)
        .find(|&s| check(nonce, s, bits))
        .unwrap_or_default()
}
