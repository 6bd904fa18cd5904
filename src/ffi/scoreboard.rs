//! The share of httpd's worker slots that are busy, from the scoreboard (as mod_status counts
//! them: every slot that is not dead, starting, idle or being killed), for
//! `DOSUnderAttackThreshold`'s BUSY_PERCENT. Read once a second by one request.
use std::ffi::c_int;

use apache_sys as ap;

fn query(code: i32) -> Option<c_int> {
    let mut v: c_int = 0;
    // SAFETY: ap_mpm_query writes one int for these codes; `v` outlives the call.
    let rv = unsafe { ap::ap_mpm_query(code, &mut v) };
    (rv == 0 && v > 0).then_some(v)
}

/// Busy slots as a percentage of the configured workers (MaxRequestWorkers); `None` without
/// a scoreboard.
pub fn busy_percent() -> Option<u8> {
    // SAFETY: a plain query of httpd's global state.
    if unsafe { ap::ap_exists_scoreboard_image() } == 0 {
        return None;
    }
    let (daemons, threads) = (
        query(ap::AP_MPMQ_HARD_LIMIT_DAEMONS)?,
        query(ap::AP_MPMQ_HARD_LIMIT_THREADS)?,
    );
    let workers = query(ap::AP_MPMQ_MAX_DAEMONS)? as u64 * query(ap::AP_MPMQ_MAX_THREADS)? as u64;
    let mut busy: u64 = 0;
    for i in 0..daemons {
        for j in 0..threads {
            // SAFETY: indexes within the scoreboard's hard limits, which httpd sized it by;
            // the slot lives in the scoreboard's shared memory for the process's life. The
            // status byte is read once (another process may be changing it: any value is
            // fine for a count).
            let status = unsafe {
                let w = ap::ap_get_scoreboard_worker_from_indexes(i, j);
                if w.is_null() {
                    continue;
                }
                std::ptr::read_volatile(&(*w).status)
            };
            if !matches!(
                i32::from(status),
                ap::SERVER_DEAD | ap::SERVER_STARTING | ap::SERVER_READY | ap::SERVER_IDLE_KILL
            ) {
                busy += 1;
            }
        }
    }
    Some((busy * 100 / workers.max(1)).min(100) as u8)
}
