//! `DOSSystemCommand` against the real apache2: it runs once per block start with the
//! client's address, and one httpd process runs at most `spawn::MAX_IN_FLIGHT` of them at once,
//! however many clients cross their thresholds together; the starts dropped over that are
//! reported by one error-log line per burst.
//!
//! The server has a single child process (event MPM, `ServerLimit 1`), since the cap is per
//! process; distinct clients come through mod_remoteip (`X-Forwarded-For` from 127.0.0.1). The
//! command is a script that records its start and then waits for a `release` file, so the test
//! decides how long the commands are in flight.

mod common;

use common::*;
use mod_shield::spawn::MAX_IN_FLIGHT;
use std::fs;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// One child process with enough threads for every client at once.
const ONE_PROCESS: &str = "StartServers 1\nServerLimit 1\nThreadLimit 32\nThreadsPerChild 32\n\
                           MinSpareThreads 1\nMaxSpareThreads 64\nMaxRequestWorkers 32\n";

const DROP_LINE: &str = "DOSSystemCommand failed to start: ";

/// `calls/start-<ip>` when a command starts, `calls/end-<ip>` when it is let go (at most 30 s).
const SCRIPT: &str = "#!/bin/sh\n\
d=\"$(dirname \"$0\")/blocks\"\n\
touch \"$d/start-$1\"\n\
i=0\n\
while [ ! -e \"$d/release\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n\
touch \"$d/end-$1\"\n";

fn server() -> Apache {
    let apache = Apache::builder()
        .mpm(Mpm::Event)
        .mpm_config(ONE_PROCESS)
        .remoteip()
        .config(
            "LogLevel warn shield:info\n\
             DOSPageCount 2\nDOSPageInterval 30\nDOSSiteCount 1000\nDOSSiteInterval 30\n\
             DOSBlockingPeriod 60\nDOSLogDir \"@BLOCKS@\"\n\
             DOSSystemCommand \"/bin/sh @ROOT@/command.sh %s\"",
        )
        .build();
    fs::write(apache.root().join("command.sh"), SCRIPT).expect("write command.sh");
    apache
}

/// Names in the calls dir starting with `prefix`, without it.
fn calls(apache: &Apache, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(apache.blocks_dir())
        .expect("read blocks dir")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Processes whose parent is `pid`, zombies included (a zombie is a child not yet reaped).
fn children_incl_zombies(pid: i32) -> usize {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok())
                == Some(pid)
        })
        .count()
}

/// Each client sends requests to one page until refused (the 3rd with `DOSPageCount 2`); all
/// clients start together.
fn cross_together(apache: &Apache, clients: &[String]) {
    let barrier = Arc::new(Barrier::new(clients.len()));
    let handles: Vec<_> = clients
        .iter()
        .map(|ip| {
            let client = apache.client().ip(ip);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let statuses: Vec<u16> = (0..3).map(|_| client.get("/page.html").status).collect();
                assert_eq!(statuses, [200, 200, 429], "client {:?}", client.xff);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
}

#[test]
fn commands_in_flight_are_capped_per_process_and_a_burst_logs_once() {
    let mut apache = server();
    apache.start();
    let clients: Vec<String> = (1..=24).map(|i| format!("10.9.0.{i}")).collect();
    cross_together(&apache, &clients);

    // Every block started (one line each), then give excess starts time to show.
    wait_until("24 block starts", Duration::from_secs(10), || {
        apache.log_count("blocking period started for IP: 10.9.0.") == 24
    });
    wait_until("the first commands", Duration::from_secs(10), || {
        calls(&apache, "start-").len() >= MAX_IN_FLIGHT
    });
    thread::sleep(Duration::from_millis(500));
    let started = calls(&apache, "start-");
    assert_eq!(
        started.len(),
        MAX_IN_FLIGHT,
        "commands running at once in one process: {started:?}"
    );
    assert!(calls(&apache, "end-").is_empty());
    // The command got the blocked clients' addresses.
    assert!(
        started.iter().all(|ip| clients.contains(ip)),
        "command arguments: {started:?}"
    );
    let drops = apache.log_lines(DROP_LINE);
    assert_eq!(
        drops.len(),
        1,
        "one line for the burst of {} dropped starts:\n{}",
        clients.len() - MAX_IN_FLIGHT,
        apache.error_log()
    );
    assert!(
        drops[0].contains(&format!("{MAX_IN_FLIGHT} already running in this process"))
            && drops[0].contains("(0 dropped before)"),
        "{}",
        drops[0]
    );

    // One process served everyone (the cap is per process).
    let pids: std::collections::HashSet<i32> = apache
        .access_entries()
        .iter()
        .filter(|e| e.client.starts_with("10.9.0."))
        .map(|e| e.pid)
        .collect();
    assert_eq!(pids.len(), 1, "requests served by {pids:?}");
    let child = *pids.iter().next().expect("pid");

    // Let the commands go; once reaped, their slots are free again.
    fs::write(apache.blocks_dir().join("release"), "").expect("write release");
    wait_until("the held commands to end", Duration::from_secs(10), || {
        calls(&apache, "end-").len() == MAX_IN_FLIGHT
    });
    wait_until(
        "the ended commands to be reaped",
        Duration::from_secs(10),
        || children_incl_zombies(child) == 0,
    );
    // The slot is given back right after the reap, in the same thread.
    thread::sleep(Duration::from_millis(200));

    let late: Vec<String> = (1..=MAX_IN_FLIGHT).map(|i| format!("10.9.1.{i}")).collect();
    cross_together(&apache, &late);
    wait_until(
        "the late clients' commands",
        Duration::from_secs(10),
        || calls(&apache, "end-").len() == 2 * MAX_IN_FLIGHT,
    );
    let ended = calls(&apache, "end-");
    assert!(
        late.iter().all(|ip| ended.contains(ip)),
        "late clients' commands: {ended:?}"
    );
    assert_eq!(
        apache.log_count(DROP_LINE),
        1,
        "a start within the cap was reported as dropped:\n{}",
        apache.error_log()
    );
    apache.stop();
}
