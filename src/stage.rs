//! Where one request is in its counting life, and what each event httpd shows the module owes.
//!
//! "Every request of a counted client counts exactly once, with its status penalties once and
//! its deadline penalty once" is the invariant. httpd can end a request at many points: a
//! normal response (fixups ran), an answer before fixups (TRACE in map_to_storage, a cached
//! response from mod_cache's quick handler), an error response (401, 403, 404 …), a request
//! rejected while it was being read (no hook but log_transaction runs). The hooks in
//! `ffi::hooks` translate each into an [`Event`]; [`Stage::on`] says what it owes, and the
//! unit tests below run every order of events httpd can produce.

/// The counting state of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A counted client; nothing counted yet.
    Screened,
    /// Its 1 point is on the site and page records.
    Counted,
    /// Counted, and its status penalties added (its error response was on its way).
    Scored,
    /// Refused by the module (blocked, challenged, or at its count): nothing more is owed.
    Refused,
    /// log_transaction has run: the request is over.
    Logged,
}

/// What httpd told the module about an initial request (subrequests and internal redirects
/// are no events: the FFI never turns them into one, see [`Event::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A point where the request can still be refused before its answer leaves: fixups, the
    /// map_to_storage of a TRACE, the filters of a quick-handler answer.
    Count,
    /// httpd's own error response is about to be sent.
    ErrorResponse,
    /// The request's count refused it.
    Refused,
    /// log_transaction (also of a request httpd rejected while reading it).
    Logged,
}

/// What an event owes the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Duty {
    /// Add the request's 1 point (site and page).
    pub count: bool,
    /// Add its status penalties.
    pub status: bool,
    /// Add its deadline penalty (only known once the response is written).
    pub deadline: bool,
}

impl Duty {
    const NOTHING: Duty = Duty {
        count: false,
        status: false,
        deadline: false,
    };

    pub fn is_nothing(&self) -> bool {
        *self == Duty::NOTHING
    }
}

impl Event {
    /// The event a hook call is, if any: only the initial request of a chain has a life here.
    pub fn of(event: Event, initial: bool) -> Option<Event> {
        initial.then_some(event)
    }
}

impl Stage {
    /// What `event` owes in this stage, and the stage after it.
    pub fn on(self, event: Event) -> (Duty, Stage) {
        use Event as E;
        use Stage as S;
        let owes = |count, status, deadline| Duty {
            count,
            status,
            deadline,
        };
        match (self, event) {
            // Nothing is owed once refused or over.
            (S::Refused, _) => (Duty::NOTHING, S::Refused),
            (S::Logged, _) => (Duty::NOTHING, S::Logged),
            (_, E::Refused) => (Duty::NOTHING, S::Refused),
            (S::Screened, E::Count) => (owes(true, false, false), S::Counted),
            (S::Counted | S::Scored, E::Count) => (Duty::NOTHING, self),
            (S::Screened, E::ErrorResponse) => (owes(true, true, false), S::Scored),
            (S::Counted, E::ErrorResponse) => (owes(false, true, false), S::Scored),
            (S::Scored, E::ErrorResponse) => (Duty::NOTHING, S::Scored),
            (S::Screened, E::Logged) => (owes(true, true, true), S::Logged),
            (S::Counted, E::Logged) => (owes(false, true, true), S::Logged),
            (S::Scored, E::Logged) => (owes(false, false, true), S::Logged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [Event; 4] = [
        Event::Count,
        Event::ErrorResponse,
        Event::Refused,
        Event::Logged,
    ];

    /// Points, status penalties, deadline penalties.
    type Owed = (u32, u32, u32);

    /// What a life owed in total: (points, status penalties, deadline penalties).
    fn run(start: Stage, events: &[Event]) -> (u32, u32, u32, Stage) {
        let (mut c, mut s, mut d, mut stage) = (0, 0, 0, start);
        for &e in events {
            let (duty, next) = stage.on(e);
            c += u32::from(duty.count);
            s += u32::from(duty.status);
            d += u32::from(duty.deadline);
            stage = next;
        }
        (c, s, d, stage)
    }

    /// Every sequence of up to `len` events (with repeats: a hook running twice).
    fn sequences(len: usize) -> Vec<Vec<Event>> {
        let mut all = vec![vec![]];
        let mut last = vec![vec![]];
        for _ in 0..len {
            let next: Vec<Vec<Event>> = last
                .iter()
                .flat_map(|s: &Vec<Event>| {
                    EVENTS.iter().map(move |&e| {
                        let mut s = s.clone();
                        s.push(e);
                        s
                    })
                })
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    #[test]
    fn any_order_counts_at_most_once_and_a_logged_unrefused_request_exactly_once() {
        for seq in sequences(6) {
            let (c, s, d, end) = run(Stage::Screened, &seq);
            assert!(c <= 1 && s <= 1 && d <= 1, "{seq:?}: {c} {s} {d}");
            let refused_first = seq
                .iter()
                .take_while(|e| **e != Event::Logged)
                .any(|e| *e == Event::Refused);
            if seq.contains(&Event::Logged) && !refused_first {
                // Whatever ran before log_transaction, the request counted once, its
                // status was scored once, its deadline once.
                assert_eq!((c, s, d), (1, 1, 1), "{seq:?}");
                assert_eq!(end, Stage::Logged, "{seq:?}");
            }
            if refused_first {
                // A refused request owes no penalty after its refusal.
                let before: Vec<Event> = seq
                    .iter()
                    .copied()
                    .take_while(|e| *e != Event::Refused)
                    .collect();
                assert_eq!(run(Stage::Screened, &before).0, c, "{seq:?}");
                assert_eq!(d, 0, "{seq:?}");
            }
        }
    }

    #[test]
    fn a_request_refused_before_screening_owes_nothing() {
        for seq in sequences(5) {
            assert_eq!(run(Stage::Refused, &seq), (0, 0, 0, Stage::Refused));
        }
    }

    #[test]
    fn the_orders_httpd_produces() {
        use Event::*;
        let cases: [(&str, &[Event], Owed); 9] = [
            (
                "a normal 200: fixups, filters, log",
                &[Count, Count, Logged],
                (1, 1, 1),
            ),
            (
                "a 404 from the handler",
                &[Count, ErrorResponse, Logged],
                (1, 1, 1),
            ),
            ("a 401 before fixups", &[ErrorResponse, Logged], (1, 1, 1)),
            ("rejected while read (400, 414, 417)", &[Logged], (1, 1, 1)),
            (
                "a cached answer (quick handler)",
                &[Count, Logged],
                (1, 1, 1),
            ),
            ("TRACE in map_to_storage", &[Count, Logged], (1, 1, 1)),
            (
                "refused at its count",
                &[Count, Refused, ErrorResponse, Logged],
                (1, 0, 0),
            ),
            (
                "an ErrorDocument redirect: the second error is not the initial request's",
                &[Count, ErrorResponse, ErrorResponse, Logged],
                (1, 1, 1),
            ),
            (
                "a quick answer refused",
                &[Count, Refused, Logged],
                (1, 0, 0),
            ),
        ];
        for (what, seq, want) in cases {
            let (c, s, d, _) = run(Stage::Screened, seq);
            assert_eq!((c, s, d), want, "{what}");
        }
    }

    #[test]
    fn subrequests_and_internal_redirects_are_no_events() {
        for e in EVENTS {
            assert_eq!(Event::of(e, false), None);
            assert_eq!(Event::of(e, true), Some(e));
        }
    }
}
