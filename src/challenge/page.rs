//! The challenge page: small, self-contained (no external resource), ASCII only, working
//! under a strict Content-Security-Policy that allows exactly its one inline script and one
//! inline style by their SHA-256 hashes, and Workers made from `blob:` URLs.
//!
//! The script reads its parameters from data attributes (so the script text never changes and
//! its hash is a constant), solves in a Worker made from a Blob of its own solver function,
//! falls back to the main thread when a Worker cannot be made, and, when WebCrypto is missing
//! (a plain-HTTP site that is not localhost is no "secure context"), uses a small SHA-256 of
//! its own. When done it replaces the location with the submission URL, which answers with a
//! redirect to the page that was refused.
use std::sync::OnceLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{percent_encode, SUBMIT_PATH};

const STYLE: &str =
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}\
main{max-width:34em;margin:12vh auto;padding:0 1.2em}h1{font-size:1.4em}\
progress{width:100%;height:.6em}.n{color:#666;font-size:.9em}";

/// The solver runs in the Worker and, as a fallback, on the page itself: it must be one
/// self-contained function (the Worker gets its source text).
const SCRIPT: &str = r#"
function solve(n, d, post) {
  "use strict";
  var K = [0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
    0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
    0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
    0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
    0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
    0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
    0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
    0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2];
  // SHA-256 of a short message (< 56 bytes: one block), for contexts without WebCrypto.
  function sha(m) {
    var w = new Array(64), i, h = [0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19];
    for (i = 0; i < 16; i++) w[i] = 0;
    for (i = 0; i < m.length; i++) w[i >> 2] |= m[i] << (24 - 8 * (i & 3));
    w[m.length >> 2] |= 0x80 << (24 - 8 * (m.length & 3));
    w[15] = m.length * 8;
    for (i = 16; i < 64; i++) {
      var a = w[i - 15], b = w[i - 2];
      var s0 = (a >>> 7 | a << 25) ^ (a >>> 18 | a << 14) ^ (a >>> 3);
      var s1 = (b >>> 17 | b << 15) ^ (b >>> 19 | b << 13) ^ (b >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    var A = h[0], B = h[1], C = h[2], D = h[3], E = h[4], F = h[5], G = h[6], H = h[7];
    for (i = 0; i < 64; i++) {
      var t1 = (H + ((E >>> 6 | E << 26) ^ (E >>> 11 | E << 21) ^ (E >>> 25 | E << 7)) + ((E & F) ^ (~E & G)) + K[i] + w[i]) | 0;
      var t2 = (((A >>> 2 | A << 30) ^ (A >>> 13 | A << 19) ^ (A >>> 22 | A << 10)) + ((A & B) ^ (A & C) ^ (B & C))) | 0;
      H = G; G = F; F = E; E = (D + t1) | 0; D = C; C = B; B = A; A = (t1 + t2) | 0;
    }
    var out = new Uint8Array(32), v = [A, B, C, D, E, F, G, H];
    for (i = 0; i < 8; i++) {
      var x = (v[i] + h[i]) | 0;
      out[4 * i] = x >>> 24; out[4 * i + 1] = x >>> 16; out[4 * i + 2] = x >>> 8; out[4 * i + 3] = x;
    }
    return out;
  }
  function zeros(h) {
    for (var i = 0, z = 0; i < h.length; i++, z += 8) if (h[i]) return z + Math.clz32(h[i]) - 24;
    return z;
  }
  var pre = new TextEncoder().encode(n + ":");
  function msg(s) {
    var t = String(s), m = new Uint8Array(pre.length + t.length);
    m.set(pre);
    for (var i = 0; i < t.length; i++) m[pre.length + i] = t.charCodeAt(i);
    return m;
  }
  var subtle = self.crypto && self.crypto.subtle, base = 0, BATCH = 512;
  function round() {
    if (!subtle) {
      for (var s = base; s < base + 20000; s++) if (zeros(sha(msg(s))) >= d) return post(s);
      base = s;
      return setTimeout(round, 0);
    }
    var jobs = [];
    for (var i = 0; i < BATCH; i++) jobs.push(subtle.digest("SHA-256", msg(base + i)));
    Promise.all(jobs).then(function (hs) {
      for (var i = 0; i < hs.length; i++) if (zeros(new Uint8Array(hs[i])) >= d) return post(base + i);
      base += BATCH;
      round();
    });
  }
  round();
}
(function () {
  var c = document.getElementById("c"), n = c.getAttribute("data-n"), d = +c.getAttribute("data-d");
  var next = c.getAttribute("data-next"), sent = false;
  function done(s) {
    if (sent) return;
    sent = true;
    document.getElementById("m").textContent = "Done, taking you back.";
    location.replace(next + s);
  }
  function here() { solve(n, d, done); }
  try {
    var src = solve.toString() + "\nonmessage=function(e){solve(e.data[0],e.data[1],postMessage)};";
    var w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
    w.onmessage = function (e) { done(e.data); };
    w.onerror = function (e) { e.preventDefault(); w.terminate(); here(); };
    w.postMessage([n, d]);
  } catch (e) {
    here();
  }
})();
"#;

fn sha256_b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

/// The `Content-Security-Policy` of the page: nothing but its own inline script and style
/// (by hash), Workers from `blob:`, no connections, frames, forms or base changes.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
             worker-src blob:; img-src 'none'; connect-src 'none'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
            sha256_b64(SCRIPT),
            sha256_b64(STYLE)
        )
    })
}

/// What one page shows and asks.
#[derive(Clone, Debug)]
pub struct Challenge<'a> {
    pub nonce: &'a str,
    /// Unix seconds.
    pub issued: i64,
    pub bits: u8,
    /// The refused URL (already [`safe_return`](super::safe_return)ed).
    pub return_to: &'a str,
    /// Seconds until the block ends (the `Retry-After` value); 0 when the client is not
    /// blocked (`DOSUnderAttack`: every browser is asked).
    pub retry_after: u64,
}

/// The submission URL without the solution (the script appends it).
pub fn submit_prefix(c: &Challenge) -> String {
    let mut out = String::with_capacity(128 + c.return_to.len() * 3);
    push_submit_prefix(&mut out, c, "&");
    out
}

/// [`submit_prefix`] appended to `out`, its separators written as `amp` (`&`, or `&amp;`
/// inside an HTML attribute).
fn push_submit_prefix(out: &mut String, c: &Challenge, amp: &str) {
    use std::fmt::Write;
    out.push_str(SUBMIT_PATH);
    out.push_str("?n=");
    out.push_str(c.nonce);
    out.push_str(amp);
    // Writing numbers into a String cannot fail.
    let _ = write!(out, "t={}", c.issued);
    out.push_str(amp);
    let _ = write!(out, "d={}", c.bits);
    out.push_str(amp);
    out.push_str("r=");
    out.push_str(&percent_encode(c.return_to));
    out.push_str(amp);
    out.push_str("s=");
}

/// The page in three pieces: the two that never change (everything before the `<noscript>`
/// hint's end, and the script) are made once per process and sent as they are, with no
/// copy; only the short middle (the wait, the nonce, the difficulty, the submission URL) is
/// written per page. A flood of navigations under attack is answered with this page, so it
/// must cost less than a file.
#[derive(Clone, Debug)]
pub struct Pieces {
    pub head: &'static str,
    pub middle: String,
    pub tail: &'static str,
}

impl Pieces {
    /// The whole page as one string.
    pub fn concat(&self) -> String {
        [self.head, &self.middle, self.tail].concat()
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.middle.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The HTML of the page. Every interpolated value is hex, digits or percent-encoded, so only
/// `&` needs escaping (in the attribute).
pub fn html(c: &Challenge) -> String {
    pieces(c).concat()
}

/// [`html`] in its [`Pieces`].
pub fn pieces(c: &Challenge) -> Pieces {
    let blocked = c.retry_after != 0;
    let mut middle = String::with_capacity(256 + c.return_to.len() * 3);
    if blocked {
        let wait = match c.retry_after {
            s if s >= 120 => format!("{} minutes", s.div_ceil(60)),
            s => format!("{s} seconds"),
        };
        middle.push_str(", or retry in ");
        middle.push_str(&wait);
        middle.push_str(", when the block ends.</p></noscript>\n<p class=\"n\">Retry-After: ");
        middle.push_str(&c.retry_after.to_string());
        middle.push_str(" seconds.</p>\n");
    } else {
        middle.push_str(".</p></noscript>\n");
    }
    middle.push_str("<div id=\"c\" data-n=\"");
    middle.push_str(c.nonce);
    middle.push_str("\" data-d=\"");
    let _ = std::fmt::Write::write_fmt(&mut middle, format_args!("{}", c.bits));
    middle.push_str("\" data-next=\"");
    push_submit_prefix(&mut middle, c, "&amp;");
    middle.push_str("\"></div>\n<script>");
    Pieces {
        head: head(blocked),
        middle,
        tail: tail(),
    }
}

/// The page up to the end of the `<noscript>` hint's first sentence: one for a blocked
/// client, one for every browser under attack.
fn head(blocked: bool) -> &'static str {
    static HEADS: OnceLock<[String; 2]> = OnceLock::new();
    let heads = HEADS.get_or_init(|| {
        [false, true].map(|blocked| {
            let why = if blocked {
                "Your address sent more requests than this site allows, so it is blocked for now."
            } else {
                "This site is receiving far more requests than usual, so it asks every browser \
                 to show it is one before it serves a page."
            };
            [
                HEAD,
                STYLE,
                "</style></head>\n<body><main>\n<h1>One moment, please</h1>\n<p>",
                why,
                " If you are a person, your browser can show it by doing a short calculation; \
                 then you are taken back to the page you asked for.</p>\n\
                 <p id=\"m\">Calculating... (usually a second or two)</p>\n<progress></progress>\n\
                 <noscript><p><strong>JavaScript is off, so the calculation cannot run.</strong> \
                 Please turn JavaScript on and reload",
            ]
            .concat()
        })
    });
    &heads[usize::from(blocked)]
}

/// The script and the end of the page.
fn tail() -> &'static str {
    static TAIL: OnceLock<String> = OnceLock::new();
    TAIL.get_or_init(|| [SCRIPT, "</script>\n</main></body></html>\n"].concat())
}

/// The page up to its style sheet.
const HEAD: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><title>One moment, please</title><style>";
