//! `DOSUnderAttack`: when the whole server is flooded by clients that each stay under their
//! own limits (a botnet of many addresses, one request a second each), every browser
//! navigation without a pass gets the challenge page, and every other request without a pass
//! is counted [`WEIGHT`] times, so scripts keep working at a human rate and no more.
//!
//! The switch of `auto` is one state for the whole httpd (all virtual hosts, all workers), in
//! the metrics mapping: once a second one request of all workers takes a sample of the
//! counted-request total (and, when `DOSUnderAttackThreshold` names a busy percentage, of the
//! scoreboard) and steps the switch ([`step`]). It goes on when the rate (or busy share) stays
//! above the threshold for [`ON_AFTER`], and off only after [`QUIET`] below half of it: a
//! load that hovers at the threshold keeps it on rather than flapping.
//!
//! Everything here is plain Rust; the FFI takes the samples and answers the requests.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::Micros;

/// Whether the configuration being read (reset at the start of each configuration pass) has
/// a `DOSUnderAttack on` or `auto` line: then the challenge's reserved submission path is
/// handled even where `DOSChallenge` is off.
static CONFIGURED: AtomicBool = AtomicBool::new(false);
/// ...and whether it has an `auto` one: only then does the switch move (without one it stays
/// off, and only the rate is measured, for the status page).
static AUTO: AtomicBool = AtomicBool::new(false);
/// ...and whether a `DOSUnderAttack` or `DOSEnabled` line sits in a `<Directory>`, `<Files>`,
/// `<Proxy>` or `<If>` section (or their Match forms). Those are merged only by httpd's directory walk, so then a
/// navigation is challenged after the walk, in fixups; without them it is answered before it
/// (see [`early_answer`]).
static DIRECTORY_SCOPED: AtomicBool = AtomicBool::new(false);

/// A configuration pass begins.
pub fn reset_configured() {
    CONFIGURED.store(false, Ordering::Relaxed);
    AUTO.store(false, Ordering::Relaxed);
    DIRECTORY_SCOPED.store(false, Ordering::Relaxed);
}

/// A setting that decides whether the mode applies was read inside such a section.
pub fn note_directory_scoped() {
    DIRECTORY_SCOPED.store(true, Ordering::Relaxed);
}

/// Whether a navigation under attack may be answered before httpd's directory walk: every
/// setting that decides whether the mode applies is known by then (the server's, the
/// virtual host's, `<Location>`), so the challenge costs the server no walk, no
/// file lookup and no handler of the page asked for.
pub fn early_answer() -> bool {
    !DIRECTORY_SCOPED.load(Ordering::Relaxed)
}

pub fn note_configured(mode: Mode) {
    if mode != Mode::Off {
        CONFIGURED.store(true, Ordering::Relaxed);
    }
    if mode == Mode::Auto {
        AUTO.store(true, Ordering::Relaxed);
    }
}

pub fn configured() -> bool {
    CONFIGURED.load(Ordering::Relaxed)
}

pub fn auto_configured() -> bool {
    AUTO.load(Ordering::Relaxed)
}

/// The threshold the switch is stepped with: the configured one when some context is `auto`,
/// else one never crossed.
pub fn effective_threshold(t: &Threshold) -> Threshold {
    if auto_configured() {
        *t
    } else {
        Threshold {
            rate: u32::MAX,
            busy_percent: None,
        }
    }
}

/// Default `DOSUnderAttackThreshold`: counted requests a second, all clients together.
pub const DEFAULT_RATE: u32 = 1000;
/// The switch goes on when the server stays above its threshold this long...
pub const ON_AFTER: Micros = 3_000_000;
/// ...and off after this long below half of it.
pub const QUIET: Micros = 30_000_000;
/// How often the switch is stepped.
pub const CHECK_EVERY: Micros = 1_000_000;
/// While the mode is on, a request without a pass that is not a browser navigation (an API
/// call, a feed, a crawler) counts this many times on its client's site and page scores: it
/// is blocked at a quarter of `DOSSiteCount` and `DOSPageCount`.
pub const WEIGHT: i64 = 4;

/// `DOSUnderAttack` of a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    On,
    Auto,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::Auto => "auto",
        }
    }

    pub fn parse(v: &str) -> Option<Mode> {
        [Mode::Off, Mode::On, Mode::Auto]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(v))
    }
}

/// `DOSUnderAttackThreshold REQUESTS_PER_SECOND [BUSY_PERCENT]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub rate: u32,
    /// Busy share of the scoreboard's worker slots, 1..=100; `None`: not looked at.
    pub busy_percent: Option<u8>,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            rate: DEFAULT_RATE,
            busy_percent: None,
        }
    }
}

impl Threshold {
    fn over(&self, rate: u64, busy: Option<u8>) -> bool {
        rate > u64::from(self.rate)
            || matches!((self.busy_percent, busy), (Some(limit), Some(b)) if b >= limit)
    }

    /// Below half of the threshold on every figure it looks at.
    fn quiet(&self, rate: u64, busy: Option<u8>) -> bool {
        rate.saturating_mul(2) < u64::from(self.rate)
            && match (self.busy_percent, busy) {
                (Some(limit), Some(b)) => u16::from(b) * 2 < u16::from(limit),
                _ => true,
            }
    }
}

/// `shieldctl under-attack on|off|auto`, kept in the store file's header so that it holds
/// across restarts: `Auto` is "as configured".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Override {
    #[default]
    Auto,
    /// On in every context that is not `DOSUnderAttack off`.
    On,
    /// Off everywhere.
    Off,
}

impl Override {
    pub fn as_str(self) -> &'static str {
        match self {
            Override::Auto => "auto",
            Override::On => "on",
            Override::Off => "off",
        }
    }

    pub fn parse(v: &str) -> Option<Override> {
        [Override::Auto, Override::On, Override::Off]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(v))
    }

    /// Two bits of the store header (0 is `Auto`, as in every older file).
    pub fn to_bits(self) -> u8 {
        match self {
            Override::Auto => 0,
            Override::On => 1,
            Override::Off => 2,
        }
    }

    pub fn from_bits(bits: u8) -> Override {
        match bits {
            1 => Override::On,
            2 => Override::Off,
            _ => Override::Auto,
        }
    }
}

/// Whether a request of a context with `mode` (`None`: not set, i.e. off) is under attack,
/// given the run-time override and the `auto` switch.
#[inline]
pub fn applies(mode: Option<Mode>, forced: Override, switch_on: bool) -> bool {
    match (forced, mode) {
        (Override::Off, _) | (_, Some(Mode::Off)) => false,
        (Override::On, _) | (Override::Auto, Some(Mode::On)) => true,
        (Override::Auto, Some(Mode::Auto)) => switch_on,
        (Override::Auto, None) => false,
    }
}

/// The counted-request total at an instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub at: Micros,
    pub counted: u64,
}

/// The `auto` switch, as kept in the metrics mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switch {
    pub on: bool,
    /// Since when the server has been above its threshold (0: it is not).
    pub above_since: Micros,
    /// Since when it has been below half of it while on (0: it is not).
    pub quiet_since: Micros,
    /// The last transition (0: never).
    pub changed_at: Micros,
    /// The last sample's rate, requests a second, and busy percent (`None`: not sampled).
    pub rate: u64,
    pub busy: Option<u8>,
    /// The sample the next step measures from.
    pub last: Sample,
}

/// A transition of the switch, with the figures behind it (for its one log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    On {
        rate: u64,
        busy: Option<u8>,
        over_secs: u64,
    },
    Off {
        rate: u64,
        busy: Option<u8>,
        quiet_secs: u64,
    },
}

/// Steps the switch with a new sample (and the scoreboard's busy percent, when sampled).
pub fn step(
    sw: Switch,
    now: Sample,
    busy: Option<u8>,
    t: &Threshold,
) -> (Switch, Option<Transition>) {
    let prev = sw.last;
    let mut next = Switch {
        last: now,
        busy,
        ..sw
    };
    if prev.at == 0 || now.at <= prev.at || now.counted < prev.counted {
        // The first sample (or a clock step back, or new counters): nothing to measure yet.
        next.above_since = 0;
        next.quiet_since = 0;
        return (next, None);
    }
    let elapsed = (now.at - prev.at) as u64;
    let rate = (now.counted - prev.counted).saturating_mul(1_000_000) / elapsed;
    next.rate = rate;
    if !sw.on {
        next.quiet_since = 0;
        if !t.over(rate, busy) {
            next.above_since = 0;
            return (next, None);
        }
        // Above since the start of this interval (a long gap counts as one check period: a
        // burst after a silence must still last ON_AFTER).
        let start = prev.at.max(now.at - CHECK_EVERY);
        let (since, over) = held(sw.above_since, start, now.at, ON_AFTER);
        next.above_since = since;
        let Some(over_secs) = over else {
            return (next, None);
        };
        next.on = true;
        next.changed_at = now.at;
        next.above_since = 0;
        return (
            next,
            Some(Transition::On {
                rate,
                busy,
                over_secs,
            }),
        );
    }
    next.above_since = 0;
    if !t.quiet(rate, busy) {
        next.quiet_since = 0;
        return (next, None);
    }
    // Quiet since the start of this interval: a silence with no requests at all is quiet.
    let (since, quiet) = held(sw.quiet_since, prev.at, now.at, QUIET);
    next.quiet_since = since;
    let Some(quiet_secs) = quiet else {
        return (next, None);
    };
    next.on = false;
    next.changed_at = now.at;
    next.quiet_since = 0;
    (
        next,
        Some(Transition::Off {
            rate,
            busy,
            quiet_secs,
        }),
    )
}

/// A condition that holds now and has held since `since` (0: it did not hold before, so since
/// `start`): when it began, and its whole seconds once it has held `need`.
fn held(since: Micros, start: Micros, now: Micros, need: Micros) -> (Micros, Option<u64>) {
    let since = if since == 0 { start } else { since };
    let lasted = now - since;
    (
        since,
        (lasted >= need).then_some((lasted / 1_000_000) as u64),
    )
}

/// The one log line of a transition.
pub fn line(t: &Transition, threshold: &Threshold) -> String {
    let busy = |b: Option<u8>| {
        b.map(|b| format!(", {b}% of the workers busy"))
            .unwrap_or_default()
    };
    let limit = match threshold.busy_percent {
        Some(p) => format!("{} requests a second or {p}% busy workers", threshold.rate),
        None => format!("{} requests a second", threshold.rate),
    };
    match *t {
        Transition::On {
            rate,
            busy: b,
            over_secs,
        } => format!(
            "under attack: on: {rate} counted requests a second{} for {over_secs} s \
             (DOSUnderAttackThreshold {limit}); browsers without a pass get the challenge",
            busy(b)
        ),
        Transition::Off {
            rate,
            busy: b,
            quiet_secs,
        } => format!(
            "under attack: off: {rate} counted requests a second{}, below half of \
             DOSUnderAttackThreshold {limit} for {quiet_secs} s",
            busy(b)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_800_000_000_000_000;
    const S: Micros = 1_000_000;

    fn t(rate: u32) -> Threshold {
        Threshold {
            rate,
            busy_percent: None,
        }
    }

    /// Steps the switch once a second at `rates` (requests a second), from a first sample at
    /// T0; returns the switch and the seconds (after T0) of each transition.
    fn run(sw: Switch, from: Micros, rates: &[u64], th: &Threshold) -> (Switch, Vec<(i64, bool)>) {
        let mut sw = sw;
        let mut counted = sw.last.counted;
        let mut changes = Vec::new();
        for (i, r) in rates.iter().enumerate() {
            counted += r;
            let at = from + (i as i64 + 1) * S;
            let (next, tr) = step(sw, Sample { at, counted }, None, th);
            if let Some(tr) = tr {
                changes.push(((at - T0) / S, matches!(tr, Transition::On { .. })));
            }
            sw = next;
        }
        (sw, changes)
    }

    fn started() -> Switch {
        step(
            Switch::default(),
            Sample { at: T0, counted: 0 },
            None,
            &t(100),
        )
        .0
    }

    #[test]
    fn on_after_three_seconds_above_and_off_after_thirty_quiet() {
        let th = t(100);
        let mut rates = vec![500; 10];
        rates.extend(vec![10; 40]);
        let (sw, changes) = run(started(), T0, &rates, &th);
        assert_eq!(changes, vec![(3, true), (40, false)]);
        assert!(!sw.on);
    }

    #[test]
    fn a_short_burst_does_not_switch_it_on() {
        let (sw, changes) = run(started(), T0, &[500, 500, 10, 500, 500, 10], &t(100));
        assert!(changes.is_empty() && !sw.on, "{changes:?}");
    }

    #[test]
    fn a_load_hovering_at_the_threshold_switches_once() {
        // 90..110 a second around a threshold of 100: on once, then never off (never below
        // half), so one transition in a quiet period and far more.
        let rates: Vec<u64> = (0..200)
            .map(|i| if i % 2 == 0 { 110 } else { 90 })
            .collect();
        let (sw, changes) = run(started(), T0, &rates, &t(100));
        assert!(changes.len() <= 1, "{changes:?}");
        // Mostly above: it did go on, and stays on.
        let steady: Vec<u64> = (0..200)
            .map(|i| if i % 5 == 4 { 90 } else { 120 })
            .collect();
        let (sw2, changes2) = run(started(), T0, &steady, &t(100));
        assert_eq!(changes2.len(), 1, "{changes2:?}");
        assert!(sw2.on);
        let _ = sw;
    }

    #[test]
    fn a_load_between_half_and_the_threshold_keeps_it_on() {
        let mut rates = vec![500; 5];
        rates.extend(vec![60; 100]);
        let (sw, changes) = run(started(), T0, &rates, &t(100));
        assert_eq!(changes, vec![(3, true)]);
        assert!(sw.on);
    }

    #[test]
    fn a_silence_with_no_requests_is_quiet() {
        let (sw, _) = run(started(), T0, &[500; 5], &t(100));
        assert!(sw.on);
        // The next request comes a minute later: the whole minute was quiet.
        let (sw, tr) = step(
            sw,
            Sample {
                at: sw.last.at + 60 * S,
                counted: sw.last.counted + 1,
            },
            None,
            &t(100),
        );
        assert!(!sw.on);
        assert!(
            matches!(tr, Some(Transition::Off { quiet_secs: 60, .. })),
            "{tr:?}"
        );
    }

    #[test]
    fn a_burst_after_a_silence_must_last_too() {
        let sw = started();
        // One second of 500 after 30 s of nothing: not yet.
        let (sw, tr) = step(
            sw,
            Sample {
                at: T0 + 30 * S,
                counted: 500,
            },
            None,
            &t(100),
        );
        // The average over 30 s is 16 a second: not above.
        assert!(tr.is_none() && !sw.on);
        let (sw, changes) = run(sw, T0 + 30 * S, &[500, 500], &t(100));
        assert!(changes.is_empty() && !sw.on);
        let (sw, changes) = run(sw, T0 + 32 * S, &[500], &t(100));
        assert_eq!(changes, vec![(33, true)]);
        assert!(sw.on);
    }

    #[test]
    fn busy_workers_switch_it_on_with_a_low_rate() {
        let th = Threshold {
            rate: 1000,
            busy_percent: Some(80),
        };
        let mut sw = started();
        let mut on_at = None;
        for i in 1..=5 {
            let (next, tr) = step(
                sw,
                Sample {
                    at: T0 + i * S,
                    counted: i as u64 * 10,
                },
                Some(95),
                &th,
            );
            if tr.is_some() {
                on_at = Some(i);
            }
            sw = next;
        }
        assert_eq!(on_at, Some(3));
        // Busy at 50%: not quiet (not below half of 80).
        let (sw, tr) = step(
            sw,
            Sample {
                at: T0 + 50 * S,
                counted: 60,
            },
            Some(50),
            &th,
        );
        assert!(tr.is_none() && sw.on && sw.quiet_since == 0);
        assert!(line(
            &Transition::On {
                rate: 10,
                busy: Some(95),
                over_secs: 3
            },
            &th
        )
        .contains("95% of the workers busy"));
    }

    #[test]
    fn new_counters_or_a_clock_step_back_measure_nothing() {
        let (sw, _) = run(started(), T0, &[500, 500], &t(100));
        assert!(sw.above_since != 0);
        let (sw, tr) = step(sw, Sample { at: T0, counted: 5 }, None, &t(100));
        assert!(tr.is_none() && sw.above_since == 0 && !sw.on);
    }

    #[test]
    fn the_override_and_each_context() {
        use Mode::*;
        for (mode, forced, switch, expect) in [
            (None, Override::Auto, true, false),
            (Some(Auto), Override::Auto, true, true),
            (Some(Auto), Override::Auto, false, false),
            (Some(On), Override::Auto, false, true),
            (Some(Off), Override::On, true, false),
            (None, Override::On, false, true),
            (Some(On), Override::Off, true, false),
        ] {
            assert_eq!(
                applies(mode, forced, switch),
                expect,
                "{mode:?} {forced:?} {switch}"
            );
        }
        for o in [Override::Auto, Override::On, Override::Off] {
            assert_eq!(Override::from_bits(o.to_bits()), o);
            assert_eq!(Override::parse(o.as_str()), Some(o));
        }
        assert_eq!(Mode::parse("AUTO"), Some(Mode::Auto));
        assert_eq!(Mode::parse("maybe"), None);
    }

    #[test]
    fn the_lines_name_the_directive_and_the_figures() {
        let th = t(100);
        let on = line(
            &Transition::On {
                rate: 480,
                busy: None,
                over_secs: 3,
            },
            &th,
        );
        assert!(
            on.contains("on: 480 counted requests a second for 3 s"),
            "{on}"
        );
        assert!(
            on.contains("DOSUnderAttackThreshold 100 requests a second"),
            "{on}"
        );
        let off = line(
            &Transition::Off {
                rate: 2,
                busy: None,
                quiet_secs: 30,
            },
            &th,
        );
        assert!(
            off.contains("off: 2 counted requests a second") && off.contains("30 s"),
            "{off}"
        );
    }
}
