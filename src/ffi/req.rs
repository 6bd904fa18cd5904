//! `Req<'r>`: the request a hook was handed, behind safe methods. The one `unsafe` step is
//! [`Req::from_raw`]: the hook promises that the pointer is httpd's live request for the
//! duration of the call, and every borrow handed out lives no longer than that (`'r`).
use std::borrow::Cow;
use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use apache_sys as ap;

use super::hooks::RequestState;
use super::log;
use super::module::{config_slot, module_ptr};
use super::server::{DirHolder, ServerHolder};
use crate::config::{DirConfig, ServerSettings};
use crate::log::{Level, Log};

/// A live `request_rec` for the duration of one hook call.
#[derive(Clone, Copy)]
pub struct Req<'r> {
    raw: *mut ap::request_rec,
    _hook: PhantomData<&'r mut ap::request_rec>,
}

/// Borrow a C string field of httpd's structures.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives `'a`.
#[inline(always)]
unsafe fn text<'a>(p: *const c_char) -> Option<Cow<'a, str>> {
    if p.is_null() {
        return None;
    }
    // Paths and query strings are nearly always ASCII: their length and that answer from
    // one pass (cheaper on these short strings than strlen, then an ASCII check, then the
    // UTF-8 validator).
    // SAFETY: per the contract.
    let (len, ascii) = unsafe { length_and_ascii(p) };
    if ascii {
        // SAFETY: the `len` bytes before the NUL (per the contract, alive for 'a); every
        // ASCII byte sequence is valid UTF-8.
        return Some(Cow::Borrowed(unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(p.cast::<u8>(), len))
        }));
    }
    // SAFETY: per the contract.
    let c = unsafe { CStr::from_ptr(p) };
    // Other valid UTF-8 takes the plain check, cheaper than the lossy decoder's chunk walk.
    Some(match c.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => c.to_string_lossy(),
    })
}

/// The length of the NUL-terminated string at `p` (as `strlen`), and whether all those
/// bytes are ASCII. On x86_64 16 bytes at a time: aligned 16-byte loads (in assembly), each
/// giving its NUL bytes and its high bits as two masks (SSE2). An aligned load never crosses
/// a page, so it reads nothing that is not mapped, even past the NUL (as strlen does).
///
/// # Safety
/// `p` is a NUL-terminated string.
#[inline(always)]
unsafe fn length_and_ascii(p: *const c_char) -> (usize, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        // (NUL bytes, bytes with the high bit) of the aligned 16 bytes at `block`.
        let masks = |block: usize| -> (u32, u32) {
            let (nul, high): (u32, u32);
            // SAFETY: `block` is 16-aligned and holds at least one byte of the string (or
            // its NUL): those 16 bytes are in one mapped page. Only registers are written.
            unsafe {
                std::arch::asm!(
                    "movdqa {v}, xmmword ptr [{b}]",
                    "pxor {z}, {z}",
                    "pcmpeqb {z}, {v}",
                    "pmovmskb {nul:e}, {z}",
                    "pmovmskb {high:e}, {v}",
                    b = in(reg) block,
                    v = out(xmm_reg) _,
                    z = out(xmm_reg) _,
                    nul = lateout(reg) nul,
                    high = lateout(reg) high,
                    options(readonly, nostack, preserves_flags),
                );
            }
            (nul, high)
        };
        let start = p as usize;
        let skip = (start & 15) as u32;
        let mut block = start & !15;
        // The first block, without the bytes before the string.
        let (nul, high) = masks(block);
        let (mut nul, mut high) = (nul >> skip, high >> skip);
        let mut len = 0usize;
        let mut width = 16 - skip;
        let mut seen_high = 0;
        loop {
            if nul != 0 {
                let n = nul.trailing_zeros();
                seen_high |= high & ((1u32 << n) - 1);
                return (len + n as usize, seen_high == 0);
            }
            seen_high |= high;
            len += width as usize;
            width = 16;
            block += 16;
            (nul, high) = masks(block);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: per the contract.
        let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
        (bytes.len(), bytes.is_ascii())
    }
}

/// The preamble of every request hook: the panic barrier, then the request as a [`Req`]
/// (`fallback` for a NULL pointer, or when `body` panics).
///
/// # Safety
/// `r` is NULL or the live request httpd passed to the calling hook (see [`Req::from_raw`]).
#[inline(always)]
pub unsafe fn hook<R: Copy>(
    what: &str,
    r: *mut ap::request_rec,
    fallback: R,
    body: impl FnOnce(&Req) -> R,
) -> R {
    super::guard::guard(what, fallback, || {
        // SAFETY: per this function's contract; the Req lives only for this call.
        match unsafe { Req::from_raw(r) } {
            Some(req) => body(&req),
            None => fallback,
        }
    })
}

impl<'r> Req<'r> {
    /// # Safety
    /// `r` is NULL or the live request httpd passed to the calling hook, and the `Req` (and
    /// everything borrowed from it) is dropped before that hook returns. Hooks of one request
    /// run on one thread, one after the other, so no two `Req`s of a request are used at once.
    pub unsafe fn from_raw(r: *mut ap::request_rec) -> Option<Req<'r>> {
        (!r.is_null()).then_some(Req {
            raw: r,
            _hook: PhantomData,
        })
    }

    /// The raw request, for the few httpd calls without a method here.
    pub fn raw(&self) -> *mut ap::request_rec {
        self.raw
    }

    fn rec(&self) -> &'r ap::request_rec {
        // SAFETY: from_raw's contract: live for 'r; only read through this reference (every
        // write below goes through httpd's API or a raw field store, never while a reference
        // to the field is out).
        unsafe { &*self.raw }
    }

    /// Neither a subrequest nor an internal redirect.
    pub fn is_initial(&self) -> bool {
        self.rec().main.is_null() && self.rec().prev.is_null()
    }

    /// `r->uri` (decoded path, no query string).
    #[inline(always)]
    pub fn uri(&self) -> Cow<'r, str> {
        // SAFETY: request-pool string of the live request.
        unsafe { text(self.rec().uri) }.unwrap_or(Cow::Borrowed(""))
    }

    /// `r->path_info` when the URI maps to an existing file: what followed it (`/1` of
    /// `/xmlrpc.php/1`). (For a path that does not exist httpd puts the missing part in
    /// path_info too: that is no file's PATH_INFO.)
    #[inline]
    pub fn file_path_info(&self) -> Option<Cow<'r, str>> {
        let info = self.rec().path_info;
        // SAFETY: NULL or a NUL-terminated request-pool string: its first byte is readable.
        if self.rec().finfo.filetype != ap::apr_filetype_e_APR_REG
            || info.is_null()
            || unsafe { *info } == 0
        {
            // The common case: a file with nothing after it.
            return None;
        }
        // SAFETY: as for uri.
        unsafe { text(info) }
    }

    /// A TRACE or an `OPTIONS *`: httpd answers both itself, in map_to_storage.
    pub fn is_answered_in_map_to_storage(&self) -> bool {
        let method = self.rec().method_number;
        method == ap::M_TRACE as c_int || (method == ap::M_OPTIONS as c_int && self.uri() == "*")
    }

    /// `r->args` (the raw query string).
    pub fn args(&self) -> Option<Cow<'r, str>> {
        // SAFETY: as for uri.
        unsafe { text(self.rec().args) }
    }

    pub fn protocol(&self) -> Cow<'r, str> {
        // SAFETY: as for uri.
        unsafe { text(self.rec().protocol) }.unwrap_or(Cow::Borrowed("-"))
    }

    /// A request header (`Accept`, `Cookie` …).
    pub fn header_in(&self, name: &CStr) -> Option<Cow<'r, str>> {
        // SAFETY: headers_in is the request's table; the value is request-pool memory.
        unsafe { text(ap::apr_table_get(self.rec().headers_in, name.as_ptr())) }
    }

    pub fn method(&self) -> Cow<'r, str> {
        // SAFETY: as for uri.
        unsafe { text(self.rec().method) }.unwrap_or(Cow::Borrowed(""))
    }

    /// The request target as the client sent it (path and query, still encoded).
    pub fn unparsed_uri(&self) -> Cow<'r, str> {
        // SAFETY: as for uri.
        unsafe { text(self.rec().unparsed_uri) }.unwrap_or(Cow::Borrowed(""))
    }

    /// `r->handler`: the name of the handler chosen for the request.
    pub fn handler(&self) -> Option<&'r CStr> {
        let h = self.rec().handler;
        // SAFETY: NULL or a NUL-terminated string that lives as long as the request.
        (!h.is_null()).then(|| unsafe { CStr::from_ptr(h) })
    }

    /// A GET (or HEAD, which httpd numbers as GET).
    pub fn is_get(&self) -> bool {
        self.rec().method_number == ap::M_GET as c_int
    }

    /// A HEAD request: headers only, no body.
    pub fn header_only(&self) -> bool {
        self.rec().header_only != 0
    }

    /// Sets the response's Content-Type.
    pub fn set_content_type(&self, value: &'static CStr) {
        // SAFETY: the live request; httpd keeps the pointer, which is 'static.
        unsafe { ap::ap_set_content_type(self.raw, value.as_ptr()) }
    }

    /// Writes response body bytes (through the output filters).
    pub fn write(&self, bytes: &[u8]) {
        let Ok(len) = c_int::try_from(bytes.len()) else {
            return;
        };
        // SAFETY: the live request; httpd copies or sends the bytes before returning.
        unsafe { ap::ap_rwrite(bytes.as_ptr().cast(), len, self.raw) };
    }

    /// Sends a handler's whole response body, ended, in one brigade: the `'static` parts as
    /// they are (immortal buckets: no copy), the others as transient buckets (any filter that
    /// keeps one past this call copies it, as transient buckets require). The body's length is
    /// known to the filters at once, so the response keeps its connection alive.
    pub fn send_body(&self, parts: &[BodyPart]) {
        let r = self.rec();
        // SAFETY: the live request and its connection's bucket allocator. Each bucket is
        // created from it and linked into the brigade's ring exactly as APR's
        // APR_BRIGADE_INSERT_TAIL macro does (see `insert_tail`); the transient buckets point
        // at `parts`, which outlive ap_pass_brigade, after which nothing reads them (filters
        // set aside what they keep, which copies a transient bucket); the immortal ones at
        // 'static data.
        unsafe {
            let list = (*r.connection).bucket_alloc;
            let bb = ap::apr_brigade_create(r.pool, list);
            if bb.is_null() {
                return;
            }
            for part in parts {
                let (bytes, fixed) = match part {
                    BodyPart::Static(b) => (*b, true),
                    BodyPart::Copied(b) => (*b, false),
                };
                let e = if fixed {
                    ap::apr_bucket_immortal_create(bytes.as_ptr().cast(), bytes.len(), list)
                } else {
                    ap::apr_bucket_transient_create(bytes.as_ptr().cast(), bytes.len(), list)
                };
                insert_tail(bb, e);
            }
            insert_tail(bb, ap::apr_bucket_eos_create(list));
            ap::ap_pass_brigade(r.output_filters, bb);
            ap::apr_brigade_cleanup(bb.cast());
        }
    }

    /// Sets the status a handler answers with (it then returns OK).
    pub fn set_status(&self, status: u16) {
        // SAFETY: a plain field of the live request, read by httpd after the handler.
        unsafe { (*self.raw).status = c_int::from(status) }
    }

    /// Names the handler that serves the request.
    pub fn set_handler(&self, name: &'static CStr) {
        // SAFETY: a plain field of the live request, read by httpd after the hook; the name
        // is 'static.
        unsafe { (*self.raw).handler = name.as_ptr() }
    }

    /// The client address as mod_remoteip (or the connection) left it: the binary form,
    /// else the text form.
    #[inline]
    pub fn client_addr(&self) -> Option<IpAddr> {
        let sa = self.rec().useragent_addr;
        // SAFETY: useragent_addr is NULL or an APR sockaddr whose ipaddr_ptr points at
        // ipaddr_len bytes of address inside it (checked to be 4 or 16 before reading).
        let binary = unsafe {
            if sa.is_null() || (*sa).ipaddr_ptr.is_null() {
                None
            } else {
                let bytes = (*sa).ipaddr_ptr as *const u8;
                match (*sa).ipaddr_len {
                    4 => Some(IpAddr::V4(Ipv4Addr::from(*(bytes as *const [u8; 4])))),
                    16 => Some(IpAddr::V6(Ipv6Addr::from(*(bytes as *const [u8; 16])))),
                    _ => None,
                }
            }
        };
        binary.map(crate::client::normalise).or_else(|| {
            // SAFETY: as for uri.
            crate::client::parse_client(&unsafe { text(self.rec().useragent_ip) }?)
        })
    }

    /// The resolved settings of the virtual host httpd selected for the request.
    pub fn server(&self) -> Option<&'r ServerSettings> {
        // SAFETY: r->server is the live server_rec of the request; its holder's settings are
        // only written during post_config, before any request.
        unsafe { ServerHolder::settings(self.rec().server) }
    }

    /// The merged per-directory settings (the server's defaults before the walks).
    pub fn dir(&self) -> Option<&'r DirConfig> {
        // SAFETY: per_dir_config is the live request's merged vector.
        unsafe { DirHolder::of_request(self.raw) }
    }

    /// `r->status`.
    pub fn status(&self) -> u16 {
        u16::try_from(self.rec().status).unwrap_or(0)
    }

    /// The status of the last request of an internal-redirect chain (ErrorDocument).
    pub fn final_status(&self) -> u16 {
        let mut last = self.rec();
        while !last.next.is_null() {
            // SAFETY: next is NULL or the live redirected request.
            last = unsafe { &*last.next };
        }
        u16::try_from(last.status).unwrap_or(0)
    }

    /// The id httpd gave the request's connection: it names the worker slot that first
    /// served it, so connections served at once mostly differ in it (not always: a slot's
    /// earlier connection may still be open).
    #[inline(always)]
    pub fn conn_id(&self) -> u64 {
        // SAFETY: r->connection is the request's live connection; id is a plain field.
        unsafe { (*self.rec().connection).id as u64 }
    }

    /// When httpd started reading the request (µs since the epoch).
    pub fn request_time(&self) -> i64 {
        self.rec().request_time
    }

    /// The request's state, if [`Req::set_state`] stored one: the module's one typed slot
    /// (shared: the hooks change it through its cells only).
    pub fn state(&self) -> Option<&'r RequestState<'r>> {
        // SAFETY: the slot is NULL or the RequestState that set_state put there, in the
        // request pool, which outlives 'r; only shared references to it are ever handed out.
        unsafe { (config_slot(self.rec().request_config) as *const RequestState<'r>).as_ref() }
    }

    /// Makes `state` (in the request pool, see [`Req::alloc`]) the request's state, the one
    /// [`Req::state`] returns.
    #[inline(always)]
    pub fn set_state(&self, state: &'r RequestState<'r>) {
        // SAFETY: the request's live config vector; the value lives in the request pool, as
        // long as the request, and is only read through shared references from here on.
        unsafe {
            ap::ap_set_module_config(
                self.rec().request_config,
                module_ptr(),
                (state as *const RequestState<'r>).cast_mut().cast(),
            );
        }
    }

    /// Moves a value into the request pool (freed with the request, without running
    /// destructors: hence types with no drop glue only).
    #[inline(always)]
    pub fn alloc<T>(&self, value: T) -> Option<&'r mut T> {
        Some(self.alloc_uninit()?.write(value))
    }

    /// Room for a `T` in the request pool, to be written in place (see [`Req::alloc`]).
    #[inline(always)]
    pub fn alloc_uninit<T>(&self) -> Option<&'r mut MaybeUninit<T>> {
        const { assert!(!std::mem::needs_drop::<T>()) };
        if std::mem::align_of::<T>() > 8 {
            return None;
        }
        // SAFETY: apr_palloc returns memory of the requested size from the live request pool,
        // aligned to 8 (T's alignment is checked above), valid until the pool is destroyed
        // with the request, which outlives 'r; MaybeUninit makes no claim on its contents.
        unsafe {
            let slot = ap::apr_palloc(self.rec().pool, std::mem::size_of::<T>() as _)
                as *mut MaybeUninit<T>;
            slot.as_mut()
        }
    }

    /// Sets a response header kept on error responses too (`err_headers_out`).
    pub fn set_err_header(&self, name: &'static CStr, value: &str) {
        // SAFETY: the value is copied into the request pool; the name is 'static (apr tables
        // keep the pointers).
        unsafe {
            let v = ap::apr_pstrmemdup(self.rec().pool, value.as_ptr().cast(), value.len() as _);
            ap::apr_table_setn(self.rec().err_headers_out, name.as_ptr(), v);
        }
    }

    /// [`Req::set_err_header`] of a `'static` value (kept by pointer, not copied).
    pub fn set_err_header_static(&self, name: &'static CStr, value: &'static CStr) {
        // SAFETY: 'static strings into the request's table (apr tables keep the pointers).
        unsafe { ap::apr_table_setn(self.rec().err_headers_out, name.as_ptr(), value.as_ptr()) }
    }

    /// Closes the connection after this response (`Connection: close`).
    pub fn close_connection(&self) {
        // SAFETY: r->connection is the request's live connection; keepalive is a plain field
        // httpd reads after the hook.
        unsafe {
            (*self.rec().connection).keepalive = ap::ap_conn_keepalive_e_AP_CONN_CLOSE;
        }
    }

    /// Sets a variable in the request's environment (seen by CGI, logs, `SetEnvIf`).
    pub fn set_env(&self, name: &'static CStr, value: &'static CStr) {
        // SAFETY: 'static strings into the request's table.
        unsafe { ap::apr_table_setn(self.rec().subprocess_env, name.as_ptr(), value.as_ptr()) }
    }

    pub fn server_rec(&self) -> *mut ap::server_rec {
        self.rec().server
    }
}

/// A piece of a response body for [`Req::send_body`].
pub enum BodyPart<'a> {
    /// Sent as it is.
    Static(&'static [u8]),
    /// Copied only by a filter that keeps it past the call.
    Copied(&'a [u8]),
}

/// Links bucket `e` at the end of brigade `bb` (APR's APR_BRIGADE_INSERT_TAIL, a macro that
/// bindgen cannot translate).
///
/// # Safety
/// `bb` is a live brigade and `e` a live bucket that is in no ring (a NULL `e`, from a failed
/// allocation, is skipped: APR's allocators abort rather than return one).
unsafe fn insert_tail(bb: *mut ap::apr_bucket_brigade, e: *mut ap::apr_bucket) {
    if e.is_null() {
        return;
    }
    // SAFETY: (the caller's) the brigade's ring head `list` has the layout of a bucket's
    // `link` (next, prev), and `link` is a bucket's first field, so the head read as a bucket
    // is the ring's sentinel (APR_RING_SENTINEL); only its `link` is ever touched. Splicing
    // `e` in before the sentinel is APR_RING_SPLICE_BEFORE with one element.
    unsafe {
        const { assert!(std::mem::offset_of!(ap::apr_bucket, link) == 0) };
        let sentinel: *mut ap::apr_bucket = std::ptr::addr_of_mut!((*bb).list).cast();
        let last = (*sentinel).link.prev;
        (*e).link.next = sentinel;
        (*e).link.prev = last;
        (*last).link.next = e;
        (*sentinel).link.prev = e;
    }
}

impl Log for Req<'_> {
    fn log(&self, level: Level, msg: &str) {
        log::request(self.raw, level, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_ascii_is_strlen_and_is_ascii_at_every_alignment() {
        // 16-aligned room, so every start offset within a block is tried.
        #[repr(align(64))]
        struct Buf([u8; 256]);
        let mut buf = Buf([0; 256]);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let start = (x % 48) as usize;
            let len = ((x >> 8) % 80) as usize;
            // Bytes around the string too: high bits before it and after its NUL must not
            // count.
            for (i, b) in buf.0.iter_mut().enumerate() {
                *b = 0x80 | (i as u8 & 0x7f);
            }
            for i in 0..len {
                let byte = (x >> (i % 50)) as u8 % 0x7f + 1;
                buf.0[start + i] = byte;
            }
            if round % 3 == 0 && len > 0 {
                buf.0[start + ((x >> 20) as usize % len)] = 0xc3;
            }
            buf.0[start + len] = 0;
            let p = buf.0[start..].as_ptr().cast::<c_char>();
            // SAFETY: NUL-terminated within the buffer.
            let (got_len, got_ascii) = unsafe { length_and_ascii(p) };
            // SAFETY: as above.
            let want = unsafe { CStr::from_ptr(p) }.to_bytes();
            assert_eq!(
                (got_len, got_ascii),
                (want.len(), want.is_ascii()),
                "{start} {len}"
            );
            // And text() as before.
            // SAFETY: as above.
            let t = unsafe { text(p) }.unwrap();
            assert_eq!(t, String::from_utf8_lossy(want));
        }
    }
}
