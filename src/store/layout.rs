//! Byte layout of the shared region.
//!
//! ```text
//! Region = [ Header (128) | site area | page area | block area ]
//! Area   = [ Sub-cache 0 | Sub-cache 1 | ... | Sub-cache N-1 | unused tail < 2944 ]
//! Sub-cache (2944 bytes) =
//!     [ control line (64): lock word, inserted, expired, evicted, hits, misses, repairs, tag summary ]
//!     [ tag line (64): 16 x u32 ]
//!     [ columns (4 x 128): expires, score, last_used, until of the 16 records, 16 x i64 each ]
//!     [ record bodies (16 x 144) ]
//! ```
//!
//! Invariants and reasoning, in one place:
//!
//! * **Header** (offset 0, 128 bytes), two parts:
//!   - *fixed*, written once when the region is made and covered by a checksum: magic,
//!     layout version, record size, slots per sub-cache, sub-caches per area, area size,
//!     region size, the 16-byte hash key, creation time (bytes 0..64), and bytes 80..112,
//!     **reserved for the 32-byte challenge key** (zero until that feature writes it; whoever
//!     writes it must call `file::seal_header` afterwards). The checksum (SipHash-1-3 with a
//!     fixed key over 0..64 and 80..112) is at 112. It detects damage and foreign files, not
//!     tampering: whoever can write the file can recompute it, and nothing below trusts the
//!     contents anyway.
//!   - *runtime*, outside the checksum because it changes while the region is in use: the
//!     attach counter (64), the server's hints for shieldctl (72: DOSIPv6Prefix in the low
//!     byte, the block memory in seconds in the high half), and the fail-open counter (120).
//!
//!   The header is written once by `Store::create` and *read once* by `Store::attach`, which
//!   checks magic, version, checksum and every field against the geometry recomputed from
//!   the area size. After that, each process works from its own copy (in `Store`) of geometry
//!   and key: nothing in the shared header is trusted at request time, so a scribbled header
//!   can at worst break the next restart's `attach` (which then builds a new region).
//! * **File mapping** (`DOSCache shmcb:/path(BYTES)`): the same bytes, in a file mapped
//!   `MAP_SHARED` by the parent before the workers fork (they inherit the mapping; they never
//!   open the file). All times in records are wall-clock µs, so a region read back after a
//!   stop, an upgrade or a reboot means what it meant. The parent uses the file as it is only
//!   when its length is exactly the region's and its header passes `attach`. Otherwise (missing,
//!   truncated, scribbled, another version, another DOSCache size) it builds a new file beside
//!   it (`.<name>.new.<pid>`, mode 0600), copies into it the valid block records it can still
//!   find in the old one (its geometry from the header when that checks out, else from the
//!   file's length, and then its layout from whichever one's ids match more of its block
//!   area's tags; a truncated tail reads as empty slots; a file of an unknown layout
//!   version is not read, one of an older layout, see `OLDER_RECORDS`, is rewritten into
//!   this layout and its blocks re-keyed), and renames it over the old name (old workers
//!   keep the old inode mapped until they exit). The file is fully allocated (`posix_fallocate`), so a full disk fails at
//!   start, never as SIGBUS in a worker writing a record. One log line names the file. A
//!   **resize** is the same: blocks and generations are carried over, site and page counts
//!   start from zero. If no file can be made, the store falls back to anonymous memory (one
//!   log line): the server always starts. Lock words are kept in the file like everything
//!   else: one left by a server or shieldctl killed while holding it names a dead pid (or is
//!   seconds old) and is taken over as below. Tools (shieldctl) map the same file and use the
//!   same functions and locks; they never write the header.
//! * **Areas** start at `HEADER_BYTES + k * area_stride` (k = site 0, page 1, block 2), where
//!   `area_stride` is the configured area size rounded down to 64 bytes. Every sub-cache starts
//!   on a 64-byte boundary, every record on a 16-byte boundary, every field on an 8-byte one,
//!   so all fields can be accessed as naturally aligned atomics.
//! * **Sub-cache choice**: a record's identity is a 64-bit keyed hash (aHash, seeded from
//!   the region's random 128-bit key) of one stream per client: the family and the 16
//!   address bytes, finished there for the block record; then `len(host)` and the host,
//!   finished there for the site record; then `len(path)` and the path for the page record
//!   (aHash's finish does not consume the state, so a request hashes each part once). The
//!   length prefixes keep `("ab","c")` and `("a","bc")` apart, and ids of different areas
//!   live in different tables. The record keeps it as two words: the hash, and a
//!   fixed bijection of it whose high bits pick the sub-cache (multiply-shift); the low 32
//!   bits of the hash (bit 0 forced to 1 so that 0 can mean "empty") are the slot's tag, and a
//!   tag match is always confirmed against the full id in the record.
//!   *Why aHash resists chosen keys here*: the threat is a client choosing addresses and paths
//!   so that its records (or a victim's) land in one sub-cache and evict each other. That
//!   needs hash values, and every value depends on 128 secret random bits drawn per region
//!   (kept in the header, or the store file) that requests never see: no response, header or
//!   timing reveals a record's sub-cache. aHash's fallback mixing (folded 64×64→128-bit
//!   multiplies of input and key, no AES required) is built for exactly this use, hash tables
//!   facing adversarial input with a secret seed, and is several times cheaper than
//!   SipHash-1-3 on these short keys (the request path hashes one stream of them). Even a
//!   perfect collision attack only evicts: all probing stays inside the 16 slots of one
//!   sub-cache, so every operation keeps a constant bound, and active blocks are evicted
//!   last. aHash's output may change between crate versions: the lock file pins it, and a
//!   change of hash bumps `VERSION`, so an old region or file is never used with new ids
//!   (its blocks are carried over re-keyed when its records are otherwise the same, see
//!   `OLDER_RECORDS`).
//! * **Record** (176 bytes, see the `R_*` field codes): a 144-byte body in the slot's place
//!   among the bodies, and one word in each of the four columns. The body: id (2 x u64), a
//!   `meta` word packing kind, family, rule, host length, path length and prefix length (one
//!   atomic store, so these agree with each other; the prefix length is 0 for a client's own
//!   records and 24, 56 or 48 for a network's, see "Networks" below), origin (window start,
//!   or block start), generation and count, interval, the client address (16 bytes as
//!   2 x u64, IPv4 in the first 4 bytes), and 80 bytes of text: the host, then the path (or,
//!   for blocks, the URI that crossed the count), truncated on a character boundary. The
//!   text is for display only; identity is the id. The columns: expires (slot reusable from
//!   then on; always origin + interval for site/page records), score, last_used (LRU), until
//!   (end of a block). A field code below `BODY_BYTES` is an offset in the body; one from
//!   `BODY_BYTES` on names a column ([`field_offset`]).
//! * **Why columns**: the numbers eviction compares (expires, score, last use, end of a
//!   block) of all 16 records sit together, in 8 cache lines, so a victim is chosen without
//!   touching the 36 lines of the bodies; a lookup reads the tag line and then one body line
//!   (id and meta), an update the origin there and the record's words in the columns.
//!   Layouts 2 to 6 kept every field in one 176-byte record (`OLDER_RECORDS`).
//! * **Why 176 bytes**: it is fixed (docs/directives.md sizes `DOSCache` by it), and a good
//!   fit: 96 bytes of fixed fields plus 80 bytes of display text, a multiple of 16 (aligned
//!   fields, no padding games), and about 2,800 records per default 512 KiB area. Tags live
//!   apart from records, in the line next to the lock, so that a lookup reads one line of
//!   tags instead of sixteen records.
//! * **Tag summary** (the control line's last word), kept in the block area: a 64-bit mask
//!   with bit `tag >> 26` set for the tag of every occupied slot. A block check whose bit is
//!   clear knows the client is not blocked after one load, without reading the tag line;
//!   every request makes that check (twice: before counting, and under the site lock), and
//!   the block area is mostly empty or sparse (16 tags set at most 16 of the 64 bits).
//!   Invariant: a block sub-cache's slot has a non-zero tag only while its bit is set. Only
//!   lock holders write the mask: `put` of a block record sets the new tag's bit before it
//!   publishes the tag (release), and recomputes the mask from the other tags when it
//!   replaces one; freeing a slot (an administrator's removal, a corrupt record dropped)
//!   recomputes it from the tags left. A lock-free reader that sees the bit clear is
//!   therefore ordered before the tag's publication, as if it had scanned a moment earlier;
//!   under the site lock, the mask a block start wrote is seen like its tag (see "One client
//!   on one site" below). A stale extra bit only costs a scan. Only that lock-free check
//!   consults the mask; lookups under the lock scan the tags, so a mask scribbled on can at
//!   worst hide a block from the check (as a scribbled tag can), never make a record be
//!   inserted twice, and the next `put` sets its bit again. A region taken over from a
//!   file has its masks recomputed under each sub-cache's lock first (`Store::resummarize`;
//!   where a lock cannot be had the mask is set to all ones, which rules nothing out), so a
//!   file written before a crash cannot hide a block behind a stale mask.
//! * **Occupied slots** (the same word, in the site and page areas): bit `slot` set while
//!   the slot's tag is set. Kept by lock holders (`put` sets the bit; freeing a slot and the
//!   repair after a lock takeover recompute the word from the tags; so does a region taken
//!   over from a file). A victim search reads it first: in a flood every sub-cache is
//!   full, and one load says so instead of a scan of 16 tags. A slot it calls free is
//!   taken only when its tag is 0 (else the tags are scanned), so a word scribbled on can
//!   only steer the choice between an empty slot and an eviction. (A tag summary would not
//!   pay there: every insert of a flood evicts, and keeping it exact would cost a pass over
//!   16 tags per insert, more than the lookups it would save.)
//! * **Untrusted contents**: any worker (say, a compromised mod_php) can write anything into
//!   the region. So a slot is used only when its tag is non-zero, its `meta` names the right
//!   kind, a valid family and lengths that fit the text field, its id matches the tag, and for
//!   blocks the rule is valid; anything else is *dropped* (the slot is freed). Other numbers
//!   (scores, times, generations) cannot break anything: they are only compared and added.
//!   All arithmetic on stored numbers saturates; stored strings are decoded lossily. No offset
//!   or index is ever read from shared memory: they all come from the process-local geometry.
//! * **Lock protocol**: each sub-cache has its own lock word (no lock shared by all workers).
//!   `0` = free; otherwise `pid << 32 | waiters bit << 31 | coarse
//!   monotonic seconds`. Taken by CAS, spun on briefly; then a waiter sets the waiters bit and
//!   sleeps on a process-shared futex on the word's low half (see `lock.rs`), woken by the
//!   release; a holder whose pid is gone (`kill(pid, 0)` fails with `ESRCH`, or a zombie), or
//!   that has held it for several seconds (pid reuse, a stopped process), is replaced by CAS,
//!   and the new owner re-validates the sub-cache (drops any half-written record). Counting
//!   gives up only after 500 ms (far beyond any preemption of a live holder): the caller fails
//!   open and the header's fail-open counter says so (the status page and `?metrics` show
//!   it). Looks that can do without the lock (the block check before counting, listings) wait
//!   only 2 ms.
//! * **One client on one site, one decision at a time**: every decision about a request
//!   (is its client blocked, add to its site and page records, start its block) is made
//!   while holding the lock of the sub-cache of the client's *site* record, the record of
//!   client and virtual host (`Store::lock_site`, a `SiteGuard`). The site record is
//!   updated in that held sub-cache; the page sub-cache, or the block sub-cache, is locked
//!   inside it, always in the order site → page or site → block (never page and block at
//!   once). A decision about a client counted in networks (see "Networks") also holds the
//!   locks of its networks' site records: all its site-area locks are taken in ascending
//!   sub-cache index, each sub-cache once (a network's record may share the client's
//!   sub-cache, or the other network's), before any page or block lock. An order by role
//!   (client, then /56, then /48) would not do: one sub-cache holds one client's own record
//!   and another client's network record, so two decisions could each hold what the other
//!   waits for. No other operation holds two locks, so there is no deadlock. Two requests
//!   of one client to one site are therefore decided one after the other: a request can
//!   never add into a window that a block start is restarting, and N requests at once
//!   against a count C serve exactly C. Every count is per site (the site record, and page
//!   records, whose key includes the site), so the counts of one site need no lock of
//!   another. The block check under the site lock is the lock-free tag scan below: a block
//!   is written under the block sub-cache's lock by a decision that still holds the site
//!   lock, so a later holder of the site lock sees its tag (release/acquire through the two
//!   locks). A decision of the same client on *another* site may run meanwhile; if it
//!   starts the block first, this decision's own block start finds it active and the
//!   request is refused by it. Every record write happens under the lock of its
//!   sub-cache. Lock-free reads are few: the tag scan of `active_block` (a miss needs no
//!   lock; a new record's tag is cleared before its fields are written and set last, so a
//!   tag seen there is confirmed under the lock), the statistics, and `active_block`'s
//!   fallback when the lock cannot be had (fail closed for known blocks), which validates
//!   what it reads and may at worst see a mix of two updates.
//! * **Networks** (`DOSPrefixCount`): a client's IPv4 /24 and IPv6 /56 and /48 are counted
//!   beside it. A network's site record is a site record like a client's, keyed by the
//!   masked network address with the prefix length hashed into the family word (so
//!   `192.0.2.0/24` never has the ids of the client `192.0.2.0`; a client's ids, length 0,
//!   are those of layout 5), and carries the length in `meta` (bits 40..48). Its block is a
//!   block record keyed the same way, with the length in `meta`: a layout-5 record reads as
//!   a client's (length 0). Every decision of a client in the network holds the network
//!   record's lock (above), so its count is exact, and its block is seen by the next
//!   decision of any client of the network. The block check before counting loads one more
//!   tag summary per network (two for IPv6, one for IPv4).
//! * **Accesses**: every shared byte is read and written through atomics (relaxed unless
//!   ordering matters: lock acquire/release, tag publication), never through `&mut`, so even a
//!   racing or malicious writer cannot cause undefined behaviour in this process.
//! * **Statistics** (inserted, expired, evicted, hits, misses, plus the repairs word: dropped
//!   records and lock takeovers, a u32 each) are
//!   atomics in each sub-cache's control line, next to the lock the writer already owns, and
//!   summed per area on demand: the hot path writes only the lines of the one sub-cache it
//!   works on, never a line shared by all workers. The lock holder adds with a plain load
//!   and store (no locked instruction); the block area's hits and misses, which the
//!   lock-free block check counts, are the only ones added atomically, and no lock holder
//!   writes those.
//! * **Eviction** (a new record, sub-cache full) is frequency-aware: an empty slot, else an
//!   expired record, else the live site or page record with the **lowest score** (ties: the
//!   least recently used), so a flood of one-request clients only ever pushes out records
//!   scoring as little as their own, never a client that is counting up towards its limit
//!   while one of them is there (Space-Saving's rule for keeping heavy hitters, without its
//!   overestimate: an evicted record's score is not inherited, so nobody is blocked for
//!   another's requests). In the block area: a block only remembered for its generation
//!   (least recently used first), else, when all 16 are active blocks, the block that ends
//!   first; that last case is counted (`H_BLOCKS_EVICTED`) and warned about (the store is
//!   too small for the attack). The choice reads only each record's numbers (one pass, no
//!   validation): garbage there can only steer the choice, and the chosen slot is
//!   overwritten whole; if it held a corrupt record, that counts as dropped. It reads only
//!   the tag line and the columns. This is shmcb's
//!   "reclaim expired first, then drop" with fixed slots instead of a cyclic buffer: records
//!   are updated in place, so a busy client's record never has to be re-appended.
#![forbid(unsafe_code)]

/// Size of one record (fixed: `DOSCache` sizes are documented in records of this size): its
/// body and its four column words.
pub const RECORD_BYTES: usize = 176;
/// The part of a record in its slot's place among the bodies.
pub const BODY_BYTES: usize = 144;
/// Records per sub-cache: the probing bound of every operation.
pub const SLOTS: usize = 16;
/// Control line (lock + counters) of a sub-cache.
pub const CONTROL_BYTES: usize = 64;
/// Control line plus the tag line (16 x u32).
pub const SUB_HEADER_BYTES: usize = CONTROL_BYTES + SLOTS * 4;
/// One column: one i64 per slot.
pub const COLUMN_BYTES: usize = SLOTS * 8;
/// The four columns (expires, score, last_used, until), after the tag line.
pub const COLUMNS: usize = (RECORD_BYTES - BODY_BYTES) / 8;
/// Where the bodies start.
pub const BODIES: usize = SUB_HEADER_BYTES + COLUMNS * COLUMN_BYTES;
/// One sub-cache.
pub const SUBCACHE_BYTES: usize = BODIES + SLOTS * BODY_BYTES;
/// Region header.
pub const HEADER_BYTES: usize = 128;
/// Smallest accepted area (shmcb's minimum, as `DOSCache` documents).
pub const MIN_AREA_BYTES: usize = 8192;
/// Largest accepted area: keeps every count in a u32 and every offset far from overflow.
pub const MAX_AREA_BYTES: usize = 1 << 32;

pub const MAGIC: u64 = u64::from_le_bytes(*b"mshield\x01");
/// 7: expires, score, last_used and until in per-sub-cache columns, the rest of a record in
/// a 144-byte body (6: networks' records, a prefix length in `meta` bits 40..48, 0 = the
/// client itself, as every record of 5 and before reads, their ids hashing the length with
/// the family; 5: the tag summary in the control line; 4: record ids from one hash stream
/// per client; 3: records keyed by aHash; 2: the header checksum and the challenge-key
/// range; 1: the first layout).
pub const VERSION: u32 = 7;
/// Layout versions whose records are whole 176-byte records, every field inside (offsets
/// in [`older`]), in sub-caches of this size: a store file of one of these has its blocks
/// carried over (read at the old offsets, re-keyed) when it is replaced. That is every
/// version that was ever kept in a file before this one: 2 (the first store file, ids by
/// SipHash-1-3; its control line had other counters, which are not read), 3, 4, 5 (their
/// records read as clients' records: prefix length 0), 6. Version 1 lived in anonymous
/// memory only.
pub const OLDER_RECORDS: [u32; 5] = [2, 3, 4, 5, 6];

/// Field offsets of a record of the layouts in [`OLDER_RECORDS`] (all in the record, which
/// follows the tag line: `SUB_HEADER_BYTES + slot * RECORD_BYTES`).
pub mod older {
    pub const R_ID0: usize = 0;
    pub const R_ID1: usize = 8;
    pub const R_META: usize = 16;
    pub const R_SCORE: usize = 24;
    pub const R_ORIGIN: usize = 32;
    pub const R_EXPIRES: usize = 40;
    pub const R_LAST_USED: usize = 48;
    pub const R_UNTIL: usize = 56;
    pub const R_GEN_COUNT: usize = 64;
    pub const R_INTERVAL: usize = 72;
    pub const R_ADDR0: usize = 80;
    pub const R_ADDR1: usize = 88;
    pub const R_TEXT: usize = 96;
}

// Header field offsets.
pub const H_MAGIC: usize = 0;
pub const H_VERSION: usize = 8; // u32 version | u32 record bytes
pub const H_GEOMETRY: usize = 16; // u32 slots | u32 sub-caches per area
pub const H_AREA_BYTES: usize = 24;
pub const H_REGION_LEN: usize = 32;
pub const H_KEY0: usize = 40;
pub const H_KEY1: usize = 48;
pub const H_CREATED: usize = 56;
/// End of the first checksummed part.
pub const H_FIXED_END: usize = 64;
// Runtime part (not checksummed).
pub const H_ATTACHES: usize = 64;
pub const H_HINTS: usize = 72; // u8 DOSIPv6Prefix | u32 block memory secs << 32
/// Reserved: the 32-byte challenge key (checksummed).
pub const H_CHALLENGE_KEY: usize = 80;
pub const CHALLENGE_KEY_BYTES: usize = 32;
pub const H_CHECKSUM: usize = 112;
/// Operations that gave up waiting for a sub-cache lock (fail open), a u32. Written at run
/// time, rarely (one atomic add per give-up), so a shared line costs nothing on the hot path.
pub const H_FAIL_OPENS: usize = 120;
/// Active blocks evicted because all 16 slots of their sub-cache held active blocks, a u32
/// (the store was too small for the attack; as rare as the fail-opens beside it).
pub const H_BLOCKS_EVICTED: usize = 124;

// Control line offsets (within a sub-cache).
pub const C_LOCK: usize = 0;
pub const C_INSERTED: usize = 8;
pub const C_EXPIRED: usize = 16;
pub const C_EVICTED: usize = 24;
pub const C_HITS: usize = 32;
pub const C_MISSES: usize = 40;
/// u32 corrupt records dropped | u32 locks taken over from dead holders << 32.
pub const C_REPAIRS: usize = 48;
/// The tag summary (block area): bit `tag >> 26` set for the tag of every occupied slot; in
/// the site and page areas, the occupied slots (bit `slot`).
pub const C_TAGS: usize = 56;

// Record field codes: offsets in the body, then the columns (see `field_offset`).
pub const R_ID0: usize = 0;
pub const R_ID1: usize = 8;
pub const R_META: usize = 16;
pub const R_ORIGIN: usize = 24;
pub const R_GEN_COUNT: usize = 32; // u32 generation | u32 count << 32
pub const R_INTERVAL: usize = 40; // u32 interval | u32 spare
pub const R_ADDR0: usize = 48;
pub const R_ADDR1: usize = 56;
pub const R_TEXT: usize = 64;
pub const TEXT_BYTES: usize = BODY_BYTES - R_TEXT;
pub const R_EXPIRES: usize = BODY_BYTES;
pub const R_SCORE: usize = BODY_BYTES + 8;
pub const R_LAST_USED: usize = BODY_BYTES + 16;
pub const R_UNTIL: usize = BODY_BYTES + 24;
/// Host text is cut to this many bytes; the path gets the rest.
pub const HOST_TEXT_MAX: usize = 40;

const _: () = assert!(R_TEXT + TEXT_BYTES == BODY_BYTES && TEXT_BYTES == 80);
const _: () = assert!(R_UNTIL + 8 == RECORD_BYTES && COLUMNS == 4);
const _: () = assert!(BODY_BYTES.is_multiple_of(16) && SUBCACHE_BYTES.is_multiple_of(64));
const _: () = assert!(SUBCACHE_BYTES == SUB_HEADER_BYTES + SLOTS * RECORD_BYTES);
const _: () = assert!(HEADER_BYTES.is_multiple_of(64) && H_BLOCKS_EVICTED + 4 == HEADER_BYTES);
const _: () = assert!(H_CHALLENGE_KEY + CHALLENGE_KEY_BYTES == H_CHECKSUM);

/// Everything about where things are, computed from the area size alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub area_bytes: usize,
    pub area_stride: usize,
    pub subcaches: usize,
    pub region_len: usize,
}

impl Geometry {
    /// `None` when the size is outside `MIN_AREA_BYTES..=MAX_AREA_BYTES`.
    pub fn for_area(area_bytes: usize) -> Option<Geometry> {
        if !(MIN_AREA_BYTES..=MAX_AREA_BYTES).contains(&area_bytes) {
            return None;
        }
        let area_stride = area_bytes & !63;
        Some(Geometry {
            area_bytes,
            area_stride,
            subcaches: area_stride / SUBCACHE_BYTES,
            region_len: region_len(area_bytes),
        })
    }

    /// Records per area.
    pub fn capacity(&self) -> usize {
        self.subcaches * SLOTS
    }

    /// Offset of sub-cache `sub` of area `area` (0..3); callers pass `sub < subcaches`.
    pub fn subcache_offset(&self, area: usize, sub: usize) -> usize {
        HEADER_BYTES + area * self.area_stride + sub * SUBCACHE_BYTES
    }
}

/// Region length for three areas of `area_bytes` each, plus the header (saturating).
pub fn region_len(area_bytes: usize) -> usize {
    (area_bytes & !63)
        .saturating_mul(3)
        .saturating_add(HEADER_BYTES)
}

/// Offset of the body of record `slot` inside a sub-cache.
pub const fn record_offset(slot: usize) -> usize {
    BODIES + slot * BODY_BYTES
}

/// Offset inside a sub-cache of field `field` (an `R_*` code, or any multiple of 8 below
/// `RECORD_BYTES`) of record `slot`: in its body, or its word in a column.
#[inline(always)]
pub const fn field_offset(slot: usize, field: usize) -> usize {
    if field < BODY_BYTES {
        record_offset(slot) + field
    } else {
        SUB_HEADER_BYTES + (field - BODY_BYTES) / 8 * COLUMN_BYTES + slot * 8
    }
}

/// Offset of the (u32) tag of `slot` inside a sub-cache.
pub const fn tag_offset(slot: usize) -> usize {
    CONTROL_BYTES + slot * 4
}
