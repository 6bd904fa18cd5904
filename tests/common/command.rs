//! Running external tools (fail2ban, dpkg, rpmspec, …) under a deadline: a tool that hangs
//! fails the test instead of blocking it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` in its own process group; on timeout the whole group is killed (only processes
/// this test started) and an error is returned.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill_group(&child);
                let _ = child.wait();
                return Err(format!(
                    "{what} did not finish within {timeout:?}; output:\n{}{}",
                    out.join().unwrap_or_default(),
                    err.join().unwrap_or_default()
                ));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    Ok(Output {
        success: status.success(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

pub fn kill_group(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) only sends a signal; -pid is the process group this test created for
        // its own child (process_group(0)).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// Runs a command that must succeed; panics with its output otherwise.
pub fn must(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let out = run(cmd, timeout).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.success, "{what} failed:\n{}", out.text());
    out
}
