//! The header checksum, and the store's file (`DOSCache shmcb:/path(BYTES)`): use it when it
//! is sound, else build a new one beside it, carrying over the blocks that can still be read.
//! See `layout` ("Header", "File mapping") for the rules.

use super::layout::*;
use super::region::Region;
use super::table::tag_of;
use super::{Micros, Store, StoreError};
use siphasher::sip::SipHasher13;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Fixed key of the header checksum: it tells damage from a sound header, it is no secret.
const CHECKSUM_KEY: (u64, u64) = (0x6d73_6869_656c_6468, 0x6865_6164_6572_0002);

/// The checksum of a header given as bytes: over the fixed fields and the challenge key.
pub fn checksum_of(header: &[u8; HEADER_BYTES]) -> u64 {
    let mut h = SipHasher13::new_with_keys(CHECKSUM_KEY.0, CHECKSUM_KEY.1);
    h.write(&header[..H_FIXED_END]);
    h.write(&header[H_CHALLENGE_KEY..H_CHECKSUM]);
    h.finish()
}

/// The region's header copied out (atomically, word by word).
pub fn header_bytes(region: &Region) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
        let word = region.u64_at(i * 8).load(Ordering::Relaxed);
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// Writes the checksum of the region's fixed header fields; call after changing any of them.
pub fn seal_header(region: &Region) {
    let sum = checksum_of(&header_bytes(region));
    region.u64_at(H_CHECKSUM).store(sum, Ordering::Release);
}

fn word(header: &[u8; HEADER_BYTES], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&header[off..off + 8]);
    u64::from_le_bytes(b)
}

/// Whether a header's stored checksum matches its contents.
pub fn sealed(header: &[u8; HEADER_BYTES]) -> bool {
    word(header, H_CHECKSUM) == checksum_of(header)
}

/// What the parent found at the configured path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A sound file of the right size: used as it is.
    Kept,
    /// No file: a new one was made.
    Created,
    /// The file was unusable (`why`) and was replaced; `carried` block records copied over.
    Replaced { why: String, carried: usize },
}

impl Opened {
    /// The one log line of a start that did not simply keep the file (`None` for `Kept`).
    pub fn log_line(&self, path: &Path) -> Option<String> {
        match self {
            Opened::Kept => None,
            Opened::Created => Some(format!("store file {} created", path.display())),
            Opened::Replaced { why, carried } => Some(format!(
                "store file {} {why}: replaced by a new one, {carried} block records carried over",
                path.display()
            )),
        }
    }
}

/// Opens the store file at `path` for areas of `area_bytes`, replacing it when it is missing
/// or unusable. Runs in the parent before the workers fork. An error means no file could be
/// used or made (the caller falls back to anonymous memory).
pub fn open(path: &Path, area_bytes: usize, now: Micros) -> io::Result<(Store, Opened)> {
    let geo = Geometry::for_area(area_bytes).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("area size {area_bytes} is out of range"),
        )
    })?;
    let existing = match open_existing(path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(existing) = existing else {
        ensure_dir(path)?;
        let store = replace(path, area_bytes, None, now)?.0;
        return Ok((store, Opened::Created));
    };
    let why = match existing {
        Existing::Foreign(why) => why,
        Existing::File(file) => match keep(&file, geo) {
            Ok(store) => return Ok((store, Opened::Kept)),
            Err(why) => {
                let old = salvage(&file);
                let (store, carried) = replace(path, area_bytes, old.as_ref(), now)?;
                return Ok((store, Opened::Replaced { why, carried }));
            }
        },
    };
    let (store, carried) = replace(path, area_bytes, None, now)?;
    Ok((store, Opened::Replaced { why, carried }))
}

enum Existing {
    File(File),
    /// Something is at the path that must not be read as a store.
    Foreign(String),
}

/// Opens what is at `path` without following a symlink; `NotFound` when nothing is there.
fn open_existing(path: &Path) -> io::Result<Existing> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() {
        return Ok(Existing::Foreign("is not a regular file".to_string()));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Ok(Existing::Foreign(format!(
            "is owned by uid {}, not by the server's uid {euid}",
            meta.uid()
        )));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    Ok(Existing::File(file))
}

/// Creates the file's directory (one level, mode 0700) when it is missing.
fn ensure_dir(path: &Path) -> io::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Why an attach failed, as the log line says it.
fn describe(e: &StoreError) -> String {
    match e {
        StoreError::TooSmall(len) => format!("is truncated ({len} bytes)"),
        StoreError::BadMagic => "is not a mod_shield store".to_string(),
        StoreError::BadVersion(v) => format!("has layout version {v}, not {VERSION}"),
        StoreError::BadChecksum => "has a damaged header (checksum mismatch)".to_string(),
        StoreError::BadGeometry(why) => format!("has a damaged header ({why})"),
    }
}

/// Uses the file as it is if it is exactly `len` bytes and its header checks out; else says
/// why not.
fn keep(file: &File, geo: Geometry) -> Result<Store, String> {
    let len = geo.region_len;
    let actual = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?
        .len();
    let mut header = [0u8; HEADER_BYTES];
    let have_header = read_at(file, 0, &mut header).is_ok_and(|n| n == HEADER_BYTES);
    let header_ok = have_header
        && word(&header, H_MAGIC) == MAGIC
        && word(&header, H_VERSION) as u32 == VERSION
        && sealed(&header);
    if actual != len as u64 {
        if header_ok {
            let made_for = word(&header, H_AREA_BYTES);
            if word(&header, H_REGION_LEN) == actual {
                return Err(format!(
                    "was made for {made_for} bytes per area, DOSCache asks for {}",
                    geo.area_bytes
                ));
            }
        }
        return Err(if actual < len as u64 {
            format!("is truncated ({actual} of {len} bytes)")
        } else {
            format!("has {actual} bytes, expected {len}")
        });
    }
    let region = Region::map_file(file, len).map_err(|e| format!("cannot be mapped: {e}"))?;
    // Checked only: the configuration pass that adopts the region counts the attach.
    let store = Store::attach_uncounted(region).map_err(|e| describe(&e))?;
    // Its tag summaries may predate a crash: recompute them from the tags.
    store.resummarize();
    // A copied file may be sparse: allocate every block now, so that a full disk fails here
    // and never as SIGBUS in a worker writing a record.
    allocate(file, len).map_err(|e| format!("cannot be allocated: {e}"))?;
    Ok(store)
}

fn read_at(file: &File, off: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn allocate(file: &File, len: usize) -> io::Result<()> {
    // SAFETY: a valid open descriptor; posix_fallocate only allocates blocks of this file.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// How an unusable file's records are laid out, as far as its header tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// This layout's.
    Current,
    /// Whole 176-byte records of a layout in [`OLDER_RECORDS`], rewritten into this layout
    /// before they are read.
    Older,
    /// The header cannot tell (scribbled over intact areas): the block area decides (see
    /// [`sniff_records`]).
    Unknown,
}

/// The geometry an unusable file was most likely made with, and its records' layout: its
/// header's when that is sound, else the one its length fits (a scribbled header over
/// intact areas).
pub fn salvage_geometry(
    header: Option<&[u8; HEADER_BYTES]>,
    file_len: u64,
) -> Option<(Geometry, Records)> {
    if let Some(h) = header {
        if word(h, H_MAGIC) == MAGIC && sealed(h) {
            // Another version's records cannot be read, unless this one knows their layout
            // (the carry-over re-keys every block it copies).
            let version = word(h, H_VERSION) as u32;
            let records = if version == VERSION {
                Records::Current
            } else if OLDER_RECORDS.contains(&version) {
                Records::Older
            } else {
                return None;
            };
            let geo = usize::try_from(word(h, H_AREA_BYTES))
                .ok()
                .and_then(Geometry::for_area)?;
            return Some((geo, records));
        }
    }
    let body = usize::try_from(file_len).ok()?.checked_sub(HEADER_BYTES)?;
    let stride = body / 3;
    if body % 3 != 0 || stride % 64 != 0 {
        return None;
    }
    Geometry::for_area(stride).map(|geo| (geo, Records::Unknown))
}

/// The layout under which more of the block area's tags match the ids of their records, for
/// a copy whose header cannot tell (ties: this layout). Both layouts put the tag line in the
/// same place; only the ids' offsets differ.
fn sniff_records(region: &Region, geo: &Geometry) -> Records {
    let at = |off: usize| region.u64_at(off).load(Ordering::Relaxed);
    let (mut current, mut older) = (0usize, 0usize);
    for sub in 0..geo.subcaches {
        let base = geo.subcache_offset(2, sub);
        for slot in 0..SLOTS {
            let tag = region
                .u32_at(base + tag_offset(slot))
                .load(Ordering::Relaxed);
            if tag == 0 {
                continue;
            }
            let id_here = at(base + field_offset(slot, R_ID0));
            let id_before = at(base + SUB_HEADER_BYTES + slot * RECORD_BYTES + older::R_ID0);
            current += usize::from(tag_of([id_here, 0]) == tag);
            older += usize::from(tag_of([id_before, 0]) == tag);
        }
    }
    if older > current {
        Records::Older
    } else {
        Records::Current
    }
}

/// Where a field of this layout was in a record of the layouts in [`OLDER_RECORDS`].
const OLDER_FIELDS: [(usize, usize); 12] = [
    (R_ID0, older::R_ID0),
    (R_ID1, older::R_ID1),
    (R_META, older::R_META),
    (R_SCORE, older::R_SCORE),
    (R_ORIGIN, older::R_ORIGIN),
    (R_EXPIRES, older::R_EXPIRES),
    (R_LAST_USED, older::R_LAST_USED),
    (R_UNTIL, older::R_UNTIL),
    (R_GEN_COUNT, older::R_GEN_COUNT),
    (R_INTERVAL, older::R_INTERVAL),
    (R_ADDR0, older::R_ADDR0),
    (R_ADDR1, older::R_ADDR1),
];

/// Rewrites the records of a private copy of a file of an older layout
/// ([`OLDER_RECORDS`]) into this layout, sub-cache by sub-cache: control and tag lines are
/// where they were, the records' fields move to their bodies and columns.
fn upgrade_records(region: &mut Region, geo: &Geometry) {
    let at = |region: &Region, off: usize| region.u64_at(off).load(Ordering::Relaxed);
    for area in 0..3 {
        for sub in 0..geo.subcaches {
            let base = geo.subcache_offset(area, sub);
            let old: Vec<[u64; RECORD_BYTES / 8]> = (0..SLOTS)
                .map(|slot| {
                    let rec = base + SUB_HEADER_BYTES + slot * RECORD_BYTES;
                    std::array::from_fn(|w| at(region, rec + w * 8))
                })
                .collect();
            for (slot, words) in old.iter().enumerate() {
                let put = |field: usize, value: u64| {
                    region
                        .u64_at(base + field_offset(slot, field))
                        .store(value, Ordering::Relaxed)
                };
                for (field, was) in OLDER_FIELDS {
                    put(field, words[was / 8]);
                }
                for w in 0..TEXT_BYTES / 8 {
                    put(R_TEXT + w * 8, words[older::R_TEXT / 8 + w]);
                }
            }
        }
    }
}

/// A private copy of an unusable file's areas, readable as a store: what is missing reads as
/// empty slots, lock words are cleared (nobody holds a lock in a private copy), records of
/// an older layout are rewritten into this one. `None` when its layout cannot be told.
fn salvage(file: &File) -> Option<Store> {
    let file_len = file.metadata().ok()?.len();
    let mut header = [0u8; HEADER_BYTES];
    let have = read_at(file, 0, &mut header).ok()?;
    let (geo, records) = salvage_geometry((have == HEADER_BYTES).then_some(&header), file_len)?;
    let mut region = Region::new(geo.region_len).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = HEADER_BYTES;
    let end = geo.region_len.min(usize::try_from(file_len).ok()?);
    while off < end {
        let want = (end - off).min(buf.len());
        let n = read_at(file, off as u64, &mut buf[..want]).ok()?;
        if n == 0 {
            break;
        }
        region.fill_private(off, &buf[..n]);
        off += n;
    }
    let records = match records {
        Records::Unknown => sniff_records(&region, &geo),
        known => known,
    };
    if records == Records::Older {
        upgrade_records(&mut region, &geo);
    }
    Some(Store::salvaged(region, geo))
}

/// Builds a new store file beside `path` (carrying `old`'s blocks over) and renames it over
/// `path`. Returns the store (mapped from the new file) and how many records were carried.
fn replace(
    path: &Path,
    area_bytes: usize,
    old: Option<&Store>,
    now: Micros,
) -> io::Result<(Store, usize)> {
    let tmp = temp_path(path)?;
    let _ = fs::remove_file(&tmp); // a leftover of a parent that died here
    let result = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let len = Store::region_bytes(area_bytes);
        allocate(&file, len)?;
        let store = Store::create_in(Region::map_file(&file, len)?, area_bytes)?;
        let carried = old.map_or(0, |old| store.copy_blocks_from(old, now));
        store.flush()?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok((store, carried))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".new.{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Opens an existing store file for a tool (shieldctl): maps it and checks its header; never
/// creates, replaces or writes the header.
pub fn open_for_tool(path: &Path, access: ToolAccess) -> Result<Store, ToolOpenError> {
    let file = OpenOptions::new()
        .read(true)
        .write(access == ToolAccess::ReadWrite)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(ToolOpenError::Io)?;
    let len = file.metadata().map_err(ToolOpenError::Io)?.len();
    if len < HEADER_BYTES as u64 {
        return Err(ToolOpenError::NotAStore(StoreError::TooSmall(len as usize)));
    }
    let mut header = [0u8; HEADER_BYTES];
    read_at(&file, 0, &mut header).map_err(ToolOpenError::Io)?;
    if word(&header, H_MAGIC) != MAGIC {
        return Err(ToolOpenError::NotAStore(StoreError::BadMagic));
    }
    let region_len = usize::try_from(word(&header, H_REGION_LEN))
        .ok()
        .filter(|&l| l as u64 == len)
        .ok_or_else(|| {
            ToolOpenError::NotAStore(StoreError::BadGeometry(format!(
                "header says {} bytes, the file has {len}",
                word(&header, H_REGION_LEN)
            )))
        })?;
    let region = match access {
        ToolAccess::ReadWrite => Region::map_file(&file, region_len),
        ToolAccess::ReadOnly => Region::map_file_private(&file, region_len),
    }
    .map_err(ToolOpenError::Io)?;
    Store::attach_uncounted(region).map_err(ToolOpenError::NotAStore)
}

/// How a tool opens a store file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolAccess {
    /// Shared with the server: the tool's writes (blocks, unblocks) are the server's.
    ReadWrite,
    /// Read permission is enough: the file is opened read-only and mapped copy-on-write, so
    /// the tool's lock words and counters stay in its own pages. The tool's locks then
    /// exclude nobody: a record a worker is writing at that instant may read half old, half
    /// new (a display glitch of one record, never written anywhere).
    ReadOnly,
}

/// Why a tool could not open a store file. (Each message includes its cause's, so neither
/// is a `source`: a report of the chain would repeat it.)
#[derive(Debug, thiserror::Error)]
pub enum ToolOpenError {
    #[error("{0}")]
    Io(io::Error),
    #[error("not a mod_shield store: {0}")]
    NotAStore(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlockInfo, Counter};
    use std::net::IpAddr;

    const AREA: usize = 16_384;
    const NOW: Micros = 1_700_000_000_000_000;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "shield-file-{tag}-{}-{:x}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            ));
            fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn store(&self) -> PathBuf {
            self.0.join("shield.store")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn block(store: &Store, client: IpAddr, secs: u32) {
        let info = BlockInfo {
            rule: Counter::Page,
            score: 9,
            count: 5,
            interval: 60,
            host: "example.org",
            uri: "/x",
        };
        store
            .start_block(client, &info, NOW, &|_| secs, 86_400)
            .expect("block started");
    }

    fn poke(path: &Path, off: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, off).unwrap();
    }

    /// Rewrites a store file of this layout into the whole records of the older layouts
    /// (`OLDER_RECORDS`) and seals its header as `version`.
    fn downgrade(path: &Path, area_bytes: usize, version: u32) {
        poke(path, H_VERSION as u64, &version.to_le_bytes());
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let region = Region::map_file(&f, Store::region_bytes(area_bytes)).unwrap();
        let geo = Geometry::for_area(area_bytes).unwrap();
        let at = |off: usize| region.u64_at(off).load(Ordering::Relaxed);
        for area in 0..3 {
            for sub in 0..geo.subcaches {
                let base = geo.subcache_offset(area, sub);
                let records: Vec<Vec<(usize, u64)>> = (0..SLOTS)
                    .map(|slot| {
                        let text = (0..TEXT_BYTES / 8).map(|w| {
                            let was = older::R_TEXT + w * 8;
                            (was, at(base + field_offset(slot, R_TEXT + w * 8)))
                        });
                        OLDER_FIELDS
                            .iter()
                            .map(|&(field, was)| (was, at(base + field_offset(slot, field))))
                            .chain(text)
                            .collect()
                    })
                    .collect();
                for (slot, words) in records.iter().enumerate() {
                    let rec = base + SUB_HEADER_BYTES + slot * RECORD_BYTES;
                    for &(was, value) in words {
                        region.u64_at(rec + was).store(value, Ordering::Relaxed);
                    }
                }
            }
        }
        seal_header(&region);
    }

    #[test]
    fn checksum_covers_the_fixed_fields_and_the_challenge_key_only() {
        let store = Store::create(AREA).unwrap();
        let region = store.into_region();
        assert!(sealed(&header_bytes(&region)));
        // Runtime fields change freely.
        for off in [H_ATTACHES, H_HINTS, H_FAIL_OPENS] {
            region.u64_at(off).store(0xdead_beef, Ordering::Relaxed);
        }
        assert!(sealed(&header_bytes(&region)));
        let region = Store::attach(region).unwrap().into_region();
        // Any fixed field or the reserved key range breaks it, until resealed.
        for off in [
            H_KEY0,
            H_KEY1,
            H_CREATED,
            H_CHALLENGE_KEY,
            H_CHALLENGE_KEY + 24,
        ] {
            let w = region.u64_at(off);
            let was = w.load(Ordering::Relaxed);
            w.store(was ^ 1, Ordering::Relaxed);
            assert!(!sealed(&header_bytes(&region)), "offset {off}");
            w.store(was, Ordering::Relaxed);
        }
        region.u64_at(H_CHALLENGE_KEY).store(42, Ordering::Relaxed);
        assert!(!sealed(&header_bytes(&region)));
        assert_eq!(Store::attach(region).err(), Some(StoreError::BadChecksum));
    }

    #[test]
    fn sealing_after_a_change_is_accepted() {
        let region = Store::create(AREA).unwrap().into_region();
        region
            .u64_at(H_CHALLENGE_KEY + 8)
            .store(7, Ordering::Relaxed);
        seal_header(&region);
        let store = Store::attach(region).unwrap();
        assert_eq!(store.attaches(), 1);
        store.set_hints(48, 172_800);
        assert_eq!(store.hints(), (Some(48), Some(172_800)));
    }

    #[test]
    fn a_kept_file_with_stale_tag_summaries_still_finds_its_blocks() {
        let dir = Dir::new("summary");
        let path = dir.store();
        let (store, _) = open(&path, AREA, NOW).unwrap();
        block(&store, ip(1), 600);
        let geo = Geometry::for_area(AREA).unwrap();
        drop(store);
        // A crash that lost the summaries' pages: every block sub-cache's summary zeroed.
        for sub in 0..geo.subcaches {
            poke(
                &path,
                (geo.subcache_offset(2, sub) + C_TAGS) as u64,
                &[0; 8],
            );
        }
        let (store, opened) = open(&path, AREA, NOW + 1).unwrap();
        assert_eq!(opened, Opened::Kept);
        assert!(
            store.active_block(ip(1), NOW + 1).is_some(),
            "the summaries are recomputed from the tags when the file is taken over"
        );
    }

    #[test]
    fn missing_file_is_created_and_kept_next_time_with_its_blocks() {
        let dir = Dir::new("keep");
        let path = dir.store();
        let (store, opened) = open(&path, AREA, NOW).unwrap();
        assert_eq!(opened, Opened::Created);
        assert!(store.is_file_backed());
        block(&store, ip(1), 600);
        drop(store);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len() as usize, Store::region_bytes(AREA));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let (store, opened) = open(&path, AREA, NOW + 1).unwrap();
        assert_eq!(opened, Opened::Kept);
        let b = store.active_block(ip(1), NOW + 1).expect("block survived");
        assert_eq!((b.generation, b.until), (1, NOW + 600_000_000));
        assert_eq!(store.attaches(), 0, "checking a file is no attach");
    }

    #[test]
    fn scribbled_header_is_replaced_carrying_blocks_over() {
        let dir = Dir::new("scribble");
        let path = dir.store();
        let (store, _) = open(&path, AREA, NOW).unwrap();
        for n in 1..=5 {
            block(&store, ip(n), 600);
        }
        drop(store);
        poke(&path, 0, &[0x55; 100]);
        let (store, opened) = open(&path, AREA, NOW + 1).unwrap();
        match &opened {
            Opened::Replaced { why, carried } => {
                assert!(why.contains("not a mod_shield store"), "{why}");
                assert_eq!(*carried, 5);
            }
            other => panic!("{other:?}"),
        }
        for n in 1..=5 {
            assert!(store.active_block(ip(n), NOW + 1).is_some(), "{n}");
        }
        let line = opened.log_line(&path).unwrap();
        assert!(line.contains(&path.display().to_string()), "{line}");
        // The replacement is sound, and no temporary file is left.
        drop(store);
        assert_eq!(open(&path, AREA, NOW + 2).unwrap().1, Opened::Kept);
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
        // A file of an older layout whose header is gone: its block area tells the layout.
        downgrade(&path, AREA, 6);
        poke(&path, 0, &[0x55; 100]);
        let (store, opened) = open(&path, AREA, NOW + 3).unwrap();
        assert!(
            matches!(&opened, Opened::Replaced { carried: 5, .. }),
            "{opened:?}"
        );
        for n in 1..=5 {
            assert!(store.active_block(ip(n), NOW + 3).is_some(), "{n}");
        }
    }

    #[test]
    fn damaged_checksum_and_truncation_are_replaced() {
        let dir = Dir::new("trunc");
        let path = dir.store();
        let (store, _) = open(&path, AREA, NOW).unwrap();
        block(&store, ip(9), 600);
        drop(store);
        poke(&path, H_KEY0 as u64, &[1, 2, 3]);
        let (store, opened) = open(&path, AREA, NOW).unwrap();
        assert!(
            matches!(&opened, Opened::Replaced { why, carried: 1 } if why.contains("checksum"))
        );
        assert!(store.active_block(ip(9), NOW).is_some());
        drop(store);
        // Cut inside the site area: the block area is gone, nothing can be carried.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(4096).unwrap();
        drop(f);
        let (store, opened) = open(&path, AREA, NOW).unwrap();
        match &opened {
            Opened::Replaced { why, carried } => {
                assert!(why.contains("truncated (4096 of"), "{why}");
                assert_eq!(*carried, 0);
            }
            other => panic!("{other:?}"),
        }
        assert!(store.active_block(ip(9), NOW).is_none());
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            Store::region_bytes(AREA)
        );
    }

    #[test]
    fn truncated_tail_keeps_the_blocks_before_the_cut() {
        let dir = Dir::new("tail");
        let path = dir.store();
        let (store, _) = open(&path, AREA, NOW).unwrap();
        let geo = Geometry::for_area(AREA).unwrap();
        let clients: Vec<IpAddr> = (1..=40).map(ip).collect();
        for c in &clients {
            block(&store, *c, 600);
        }
        drop(store);
        // Keep the header and the first half of the block area.
        let cut = geo.subcache_offset(2, geo.subcaches / 2);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let (store, opened) = open(&path, AREA, NOW).unwrap();
        let Opened::Replaced { carried, .. } = opened else {
            panic!("{opened:?}")
        };
        let kept = clients
            .iter()
            .filter(|c| store.active_block(**c, NOW).is_some())
            .count();
        assert_eq!(kept, carried);
        assert!(carried > 0 && carried < clients.len(), "{carried}");
    }

    #[test]
    fn resize_and_other_version_are_replaced() {
        let dir = Dir::new("resize");
        let path = dir.store();
        let (store, _) = open(&path, AREA, NOW).unwrap();
        block(&store, ip(3), 600);
        drop(store);
        let (store, opened) = open(&path, AREA * 2, NOW).unwrap();
        assert_eq!(
            opened,
            Opened::Replaced {
                why: format!(
                    "was made for {AREA} bytes per area, DOSCache asks for {}",
                    AREA * 2
                ),
                carried: 1
            }
        );
        assert_eq!(store.area_bytes(), AREA * 2);
        assert!(store.active_block(ip(3), NOW).is_some());
        drop(store);
        // An older layout version: whole records (rewritten so here), under other ids, so
        // its blocks are carried over, re-keyed.
        downgrade(&path, AREA * 2, 6);
        let (store, opened) = open(&path, AREA * 2, NOW).unwrap();
        assert!(
            matches!(&opened, Opened::Replaced { why, carried: 1 } if why.contains("layout version 6")),
            "{opened:?}"
        );
        assert!(store.active_block(ip(3), NOW).is_some());
        drop(store);
        downgrade(&path, AREA * 2, 3);
        let (store, opened) = open(&path, AREA * 2, NOW).unwrap();
        assert!(
            matches!(&opened, Opened::Replaced { why, carried: 1 } if why.contains("layout version 3")),
            "{opened:?}"
        );
        assert!(store.active_block(ip(3), NOW).is_some());
        drop(store);
        // Another layout version (sealed, so only the version differs): not read at all.
        poke(&path, H_VERSION as u64, &1u32.to_le_bytes());
        let region = {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            Region::map_file(&f, Store::region_bytes(AREA * 2)).unwrap()
        };
        seal_header(&region);
        drop(region);
        let (store, opened) = open(&path, AREA * 2, NOW).unwrap();
        assert!(
            matches!(&opened, Opened::Replaced { why, carried: 0 } if why.contains("layout version 1")),
            "{opened:?}"
        );
        assert!(store.active_block(ip(3), NOW).is_none());
    }

    #[test]
    fn a_symlink_is_replaced_not_followed_and_a_bad_dir_is_an_error() {
        let dir = Dir::new("link");
        let victim = dir.0.join("victim");
        fs::write(&victim, b"keep me").unwrap();
        let path = dir.store();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let (_, opened) = open(&path, AREA, NOW).unwrap();
        assert!(
            matches!(opened, Opened::Replaced { ref why, .. } if why.contains("not a regular file"))
        );
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        // A directory in the way cannot be replaced; a missing parent two levels up is an error.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert!(open(&path, AREA, NOW).is_err());
        assert!(open(&dir.0.join("a/b/shield.store"), AREA, NOW).is_err());
        // One missing level is created (mode 0700).
        let (_, opened) = open(&dir.0.join("new/shield.store"), AREA, NOW).unwrap();
        assert_eq!(opened, Opened::Created);
    }

    #[test]
    fn geometry_is_inferred_from_the_length_when_the_header_is_gone() {
        let geo = Geometry::for_area(AREA).unwrap();
        assert_eq!(
            salvage_geometry(None, geo.region_len as u64).map(|g| g.0.subcaches),
            Some(geo.subcaches)
        );
        assert_eq!(salvage_geometry(None, geo.region_len as u64 + 1), None);
        assert_eq!(salvage_geometry(None, 10), None);
    }

    #[test]
    fn tools_open_without_counting_and_refuse_non_stores() {
        let dir = Dir::new("tool");
        let path = dir.store();
        let (store, _) = open(&path, AREA, NOW).unwrap();
        drop(Store::attach(store.into_region()).unwrap()); // a configuration pass
        let store = open_for_tool(&path, ToolAccess::ReadWrite).unwrap();
        assert_eq!(store.attaches(), 1);
        drop(store);
        assert_eq!(
            open_for_tool(&path, ToolAccess::ReadWrite)
                .unwrap()
                .attaches(),
            1
        );
        let other = dir.0.join("other");
        fs::write(&other, vec![7u8; 4096]).unwrap();
        assert!(open_for_tool(&other, ToolAccess::ReadWrite)
            .unwrap_err()
            .to_string()
            .contains("not a mod_shield store"));
        assert!(matches!(
            open_for_tool(&dir.0.join("missing"), ToolAccess::ReadOnly),
            Err(ToolOpenError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn a_read_only_tool_sees_the_file_and_writes_nothing_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Dir::new("tool-ro");
        let path = dir.store();
        let (server, _) = open(&path, AREA, NOW).unwrap();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        server.block_manually(client, 60, 600, NOW).unwrap();
        // A file the tool may only read (root ignores modes, so this also holds for others).
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        let reader = open_for_tool(&path, ToolAccess::ReadOnly).unwrap();
        assert_eq!(reader.active_blocks(NOW, 10).len(), 1);
        // Its own write (here a block) stays in its private pages.
        reader
            .block_manually("192.0.2.8".parse().unwrap(), 60, 600, NOW)
            .unwrap();
        assert_eq!(reader.active_blocks(NOW, 10).len(), 2);
        assert_eq!(server.active_blocks(NOW, 10).len(), 1);
        drop(reader);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let again = open_for_tool(&path, ToolAccess::ReadWrite).unwrap();
        assert_eq!(again.active_blocks(NOW, 10).len(), 1);
    }
}
