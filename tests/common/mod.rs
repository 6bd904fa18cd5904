//! Integration-test harness: drives the real Debian `apache2` with `mod_shield.so` loaded.
//!
//! - [`module_so`] builds the cdylib once per test binary (cargo does not build it for tests).
//! - [`Apache`] is a throw-away server: its own ServerRoot under the temp dir, its own loopback
//!   port, a generated `httpd.conf`; `Drop` stops it and fails the test on crash lines in the
//!   error log.
//! - [`Client`] / [`Conn`] are a dependency-free HTTP/1.1 client on `TcpStream`, so tests
//!   control keep-alive, `Host` and `X-Forwarded-For` exactly.
//!
//! Placeholders in config text given to the builder: `@ROOT@` (ServerRoot), `@PORT@`,
//! `@DOCS@` (DocumentRoot), `@BLOCKS@` (a 0777 dir for `DOSLogDir`), `@REPO@` (the crate).
//!
//! At most [`MAX_SERVERS`] servers run at once (the machines have 2 cores); a test must not
//! hold more started servers at the same time, or it may wait for a slot forever. A binary
//! whose tests need more at once (a farm of three) raises its own limit with
//! [`set_max_servers`]; other binaries keep [`MAX_SERVERS`].

#![allow(dead_code)]

pub mod command;

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const MODULES_DIR: &str = "/usr/lib/apache2/modules";
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Servers allowed to run at the same time in one test binary, unless it calls
/// [`set_max_servers`].
pub const MAX_SERVERS: usize = 2;
/// Crash signatures; a line containing one fails the test unless it also contains an allowed
/// substring (see [`ApacheBuilder::allow`]).
pub const FORBIDDEN: &[&str] = &[
    "exit signal",
    "AH00052",
    "panicked",
    "Segmentation fault",
    "[shield:crit]",
    "[shield:error]",
];

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The status page at /shield-status, its own requests uncounted (`DOSEnabled off`): the
/// section the tests that read `?auto` add to their configuration.
pub const STATUS_LOCATION: &str = "<Location /shield-status>\n\
     \x20   SetHandler shield-handler\n\
     \x20   DOSEnabled off\n\
     </Location>\n";

/// Host header of the readiness probe.
pub const PROBE_HOST: &str = "probe.invalid";
/// Source address of the readiness probe: a client of its own (sites are keyed by client and
/// virtual host, not by the Host header), so the probe never adds to the counts a test
/// asserts on.
pub const PROBE_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// The 40-byte stylesheet every DocumentRoot gets as `/style.css`.
pub const STYLE_CSS: &[u8] = b"body { color: #123456; margin: 0 1px; }\n";
pub const INDEX_HTML: &[u8] = b"<html><body>shield test index</body></html>\n";

// ---------------------------------------------------------------------------------------------
// Building the module
// ---------------------------------------------------------------------------------------------

/// Path of the freshly built `libmod_shield.so` (same profile and target dir as this test).
/// Panics with cargo's output when the build fails.
pub fn module_so() -> PathBuf {
    static SO: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SO.get_or_init(build_module)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_module() -> Result<PathBuf, String> {
    // current_exe = <target>/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("test executable is not in <target>/<profile>/deps")?
        .to_path_buf();
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => profile_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Path::new(REPO).join("target")),
    };
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_owned))
        .unwrap_or_else(|| "cargo".to_owned());
    let build = || -> Result<(), String> {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(REPO)
            .args(["build", "-p", "mod_shield"])
            .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build -p mod_shield failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    };
    // A private copy for this test binary: another cargo run in the same target dir (a second
    // test binary run at the same time) may relink libmod_shield.so while servers copy it. If
    // the copy catches it mid-link, building again waits for that link (cargo's lock).
    // One copy per test binary, replaced whole by a rename (a run of the same binary at the
    // same time reads either the old or the new file, never half of one).
    let so = profile_dir.join("libmod_shield.so");
    let stem = exe
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let private = profile_dir.join(format!("mod_shield-{stem}.so"));
    let partial = profile_dir.join(format!("mod_shield-{stem}.so.{}", std::process::id()));
    let mut last = String::new();
    for _ in 0..3 {
        build()?;
        match fs::copy(&so, &partial).and_then(|_| fs::rename(&partial, &private)) {
            Ok(()) => return Ok(private),
            Err(e) => last = format!("{} after cargo build: {e}", so.display()),
        }
    }
    let _ = fs::remove_file(&partial);
    Err(last)
}

// ---------------------------------------------------------------------------------------------
// One test at a time
// ---------------------------------------------------------------------------------------------

/// Held by a test for its whole run, so that the tests of a binary that take it never overlap
/// (a flood, a farm of servers, forked busy children). Each test binary has its own. A failed
/// test poisons the mutex; the next one still runs alone.
pub fn one_test_at_a_time() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Server slots (a counting semaphore)
// ---------------------------------------------------------------------------------------------

static SLOTS: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();
/// This binary's limit of running servers ([`MAX_SERVERS`] unless [`set_max_servers`] ran).
static SLOT_LIMIT: AtomicUsize = AtomicUsize::new(MAX_SERVERS);

/// Lets this test binary run up to `n` servers at once (e.g. 3 for a farm whose tests take
/// turns). Only the calling binary's limit changes: each test binary has its own harness.
pub fn set_max_servers(n: usize) {
    assert!(n >= 1, "at least one server must be allowed");
    let _used = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
    SLOT_LIMIT.store(n, Ordering::SeqCst);
    SLOT_FREED.notify_all();
}

struct Slot;

impl Slot {
    fn acquire() -> Slot {
        let mut used = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= SLOT_LIMIT.load(Ordering::SeqCst) {
            used = SLOT_FREED.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        *used -= 1;
        SLOT_FREED.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mpm {
    Prefork,
    Worker,
    Event,
}

impl Mpm {
    pub fn name(self) -> &'static str {
        match self {
            Mpm::Prefork => "prefork",
            Mpm::Worker => "worker",
            Mpm::Event => "event",
        }
    }

    fn default_sizing(self) -> &'static str {
        match self {
            Mpm::Prefork => {
                "StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\n\
                 ServerLimit 8\nMaxRequestWorkers 8\n"
            }
            Mpm::Worker | Mpm::Event => {
                "StartServers 2\nServerLimit 4\nThreadLimit 8\nThreadsPerChild 4\n\
                 MinSpareThreads 4\nMaxSpareThreads 12\nMaxRequestWorkers 16\n"
            }
        }
    }
}

pub struct ApacheBuilder {
    mpm: Mpm,
    shield: bool,
    modules: Vec<String>,
    config: String,
    mpm_config: Option<String>,
    files: Vec<(String, Vec<u8>)>,
    forbidden: Vec<String>,
    allowed: Vec<String>,
}

impl ApacheBuilder {
    pub fn mpm(mut self, mpm: Mpm) -> Self {
        self.mpm = mpm;
        self
    }

    /// Load mod_shield (default: yes).
    pub fn shield(mut self, load: bool) -> Self {
        self.shield = load;
        self
    }

    /// Load `/usr/lib/apache2/modules/mod_<name>.so` as `<name>_module` (e.g. "remoteip").
    pub fn module(mut self, name: &str) -> Self {
        if !self.modules.iter().any(|m| m == name) {
            self.modules.push(name.to_owned());
        }
        self
    }

    /// mod_remoteip trusting 127.0.0.1's `X-Forwarded-For`, so [`Client::ip`] picks the
    /// client address.
    pub fn remoteip(self) -> Self {
        self.module("remoteip")
            .config("RemoteIPHeader X-Forwarded-For\nRemoteIPInternalProxy 127.0.0.1\n")
    }

    /// Append configuration text (after the LoadModule and base lines).
    pub fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        if !text.ends_with('\n') {
            self.config.push('\n');
        }
        self
    }

    /// Replace the default MPM sizing directives.
    pub fn mpm_config(mut self, text: &str) -> Self {
        self.mpm_config = Some(text.to_owned());
        self
    }

    /// A file under the DocumentRoot (relative path).
    pub fn file(mut self, path: &str, bytes: &[u8]) -> Self {
        self.files.push((path.to_owned(), bytes.to_vec()));
        self
    }

    /// Fail the test when an error-log line contains `pattern`.
    pub fn forbid(mut self, pattern: &str) -> Self {
        self.forbidden.push(pattern.to_owned());
        self
    }

    /// Do not fail on forbidden lines that also contain `pattern`.
    pub fn allow(mut self, pattern: &str) -> Self {
        self.allowed.push(pattern.to_owned());
        self
    }

    /// Create the ServerRoot and write the configuration; the server is not started.
    pub fn build(self) -> Apache {
        let root = unique_root();
        let apache = Apache {
            root: root.clone(),
            port: free_port(),
            mpm: self.mpm,
            shield: self.shield,
            modules: self.modules,
            config: self.config,
            mpm_config: self.mpm_config,
            forbidden: self.forbidden,
            allowed: self.allowed,
            running: false,
            slot: None,
            checked: false,
        };
        for dir in ["conf", "logs", "run", "htdocs", "blocks"] {
            fs::create_dir_all(root.join(dir)).expect("create ServerRoot dirs");
        }
        // Block files are written by the children, which run as `nobody`.
        chmod(&root.join("blocks"), 0o777);
        fs::write(
            root.join("conf/mime.types"),
            "text/html html htm\ntext/css css\ntext/plain txt\napplication/json json\n",
        )
        .expect("write mime.types");
        let defaults: [(&str, &[u8]); 6] = [
            ("index.html", INDEX_HTML),
            ("style.css", STYLE_CSS),
            ("page.html", b"<html><body>page</body></html>\n"),
            ("other.html", b"<html><body>other</body></html>\n"),
            ("big.html", &[b'x'; 4096]),
            ("a.txt", b"plain text a\n"),
        ];
        for (path, bytes) in defaults {
            apache.add_file(path, bytes);
        }
        for (path, bytes) in &self.files {
            apache.add_file(path, bytes);
        }
        if apache.shield {
            fs::copy(module_so(), root.join("mod_shield.so")).expect("copy mod_shield.so");
        }
        apache.write_config();
        apache
    }

    /// Build and start; panics when the server does not come up.
    pub fn start(self) -> Apache {
        let mut apache = self.build();
        apache.start();
        apache
    }
}

pub struct Apache {
    root: PathBuf,
    port: u16,
    mpm: Mpm,
    shield: bool,
    modules: Vec<String>,
    config: String,
    mpm_config: Option<String>,
    forbidden: Vec<String>,
    allowed: Vec<String>,
    running: bool,
    slot: Option<Slot>,
    checked: bool,
}

impl Apache {
    pub fn builder() -> ApacheBuilder {
        ApacheBuilder {
            mpm: Mpm::Event,
            shield: true,
            modules: Vec::new(),
            config: String::new(),
            mpm_config: None,
            files: Vec::new(),
            forbidden: FORBIDDEN.iter().map(|s| s.to_string()).collect(),
            allowed: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mpm(&self) -> Mpm {
        self.mpm
    }

    pub fn docs(&self) -> PathBuf {
        self.root.join("htdocs")
    }

    /// The 0777 directory meant for `DOSLogDir` (`@BLOCKS@` in config text).
    pub fn blocks_dir(&self) -> PathBuf {
        self.root.join("blocks")
    }

    pub fn conf_path(&self) -> PathBuf {
        self.root.join("conf/httpd.conf")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.root.join("run/httpd.pid")
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.root.join("logs/error.log")
    }

    /// Write (or overwrite) a file under the DocumentRoot.
    pub fn add_file(&self, path: &str, bytes: &[u8]) {
        let full = self.docs().join(path.trim_start_matches('/'));
        if let Some(dir) = full.parent() {
            fs::create_dir_all(dir).expect("create htdocs subdir");
        }
        fs::write(&full, bytes).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
    }

    /// Replace the extra configuration (takes effect at the next start, graceful or restart).
    pub fn set_config(&mut self, text: &str) {
        self.config = text.to_owned();
        self.write_config();
    }

    fn expand(&self, text: &str) -> String {
        text.replace("@ROOT@", &self.root.display().to_string())
            .replace("@PORT@", &self.port.to_string())
            .replace("@DOCS@", &self.docs().display().to_string())
            .replace("@BLOCKS@", &self.blocks_dir().display().to_string())
            .replace("@REPO@", REPO)
    }

    /// The full httpd.conf text.
    pub fn config_text(&self) -> String {
        let root = self.root.display();
        let mut c = String::new();
        c.push_str(&format!("ServerRoot \"{root}\"\n"));
        c.push_str("ServerName 127.0.0.1\n");
        c.push_str(&format!("Listen 127.0.0.1:{}\n", self.port));
        c.push_str(&format!("PidFile \"{root}/run/httpd.pid\"\n"));
        c.push_str(&format!("DefaultRuntimeDir \"{root}/run\"\n"));
        c.push_str(&format!("ErrorLog \"{root}/logs/error.log\"\n"));
        if is_root() {
            c.push_str("User nobody\nGroup nogroup\n");
        }
        let mpm = self.mpm.name();
        c.push_str(&format!(
            "LoadModule mpm_{mpm}_module {MODULES_DIR}/mod_mpm_{mpm}.so\n"
        ));
        c.push_str(
            self.mpm_config
                .as_deref()
                .unwrap_or(self.mpm.default_sizing()),
        );
        let mut loaded: HashSet<&str> = HashSet::new();
        for name in ["authz_core", "mime", "dir"]
            .into_iter()
            .chain(self.modules.iter().map(String::as_str))
        {
            if loaded.insert(name) {
                c.push_str(&format!(
                    "LoadModule {name}_module {MODULES_DIR}/mod_{name}.so\n"
                ));
            }
        }
        if self.shield {
            c.push_str(&format!(
                "LoadModule shield_module \"{root}/mod_shield.so\"\n"
            ));
            c.push_str("LogLevel warn shield:debug\n");
        } else {
            c.push_str("LogLevel warn\n");
        }
        c.push_str(
            "LogFormat \"%P %a %h \\\"%r\\\" %>s %b %D \\\"%{Host}i\\\" \\\"%{X-Forwarded-For}i\\\"\" shield\n",
        );
        c.push_str(&format!("CustomLog \"{root}/logs/access.log\" shield\n"));
        c.push_str("Timeout 10\nGracefulShutdownTimeout 3\n");
        c.push_str(&format!("TypesConfig \"{root}/conf/mime.types\"\n"));
        c.push_str("DirectoryIndex index.html\n");
        c.push_str(&format!("DocumentRoot \"{root}/htdocs\"\n"));
        c.push_str(&format!(
            "<Directory \"{root}/htdocs\">\n    Require all granted\n</Directory>\n"
        ));
        c.push_str(&self.expand(&self.config));
        c
    }

    fn write_config(&self) {
        fs::write(self.conf_path(), self.config_text()).expect("write httpd.conf");
    }

    fn apache2(&self, args: &[&str]) -> std::process::Output {
        let root = self.root.display().to_string();
        let conf = self.conf_path().display().to_string();
        let mut full = vec!["-d", &root, "-f", &conf];
        full.extend_from_slice(args);
        Command::new(apache2_binary())
            .args(&full)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", apache2_binary()))
    }

    /// `apache2 -t`: (syntax ok, combined stdout + stderr).
    pub fn config_test(&self) -> (bool, String) {
        let out = self.apache2(&["-t"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Start and wait until a request is answered; panics on failure.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            self.keep_dir();
            panic!(
                "apache did not start: {e}\n(server root kept: {})",
                self.root.display()
            );
        }
    }

    pub fn try_start(&mut self) -> Result<(), String> {
        assert!(!self.running, "server already running");
        if self.slot.is_none() {
            self.slot = Some(Slot::acquire());
        }
        let mut last = String::new();
        for attempt in 0..5 {
            if attempt > 0 {
                // The port was taken between probing and binding: pick another one.
                self.port = free_port();
                self.write_config();
            }
            let log_start = self.error_log().len();
            let out = self.apache2(&["-k", "start"]);
            if !out.status.success() {
                self.slot = None;
                return Err(format!(
                    "apache2 -k start exited with {}:\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            self.running = true;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if probe(self.port) {
                    return self.wait_for_cgid(deadline);
                }
                let new_log = self.error_log().get(log_start..).unwrap_or("").to_owned();
                if new_log.contains("AH00072") || new_log.contains("Address already in use") {
                    last = new_log;
                    self.wait_stopped();
                    self.running = false;
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "no answer on port {} within {START_TIMEOUT:?}; error log:\n{new_log}",
                        self.port
                    ));
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        self.slot = None;
        Err(format!("port clashes 5 times; last error log:\n{last}"))
    }

    /// With mod_cgid loaded: waits until its daemon has handed its socket (`cgisock.<pid>` in
    /// `run/`, where DefaultRuntimeDir and the tests' `ScriptSock` put it) to the user the
    /// workers run as. The daemon, started beside the workers, binds the socket as root with
    /// mode 0700 and changes its owner only afterwards; a CGI request in between gets a 503
    /// at once (the worker's connect fails with EACCES, which mod_cgid does not retry). Only
    /// at a start: after a restart the old generation's socket file may still be there.
    fn wait_for_cgid(&self, deadline: Instant) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        if !self.modules.iter().any(|m| m == "cgid") {
            return Ok(());
        }
        let run = self.root.join("run");
        loop {
            let handed = fs::read_dir(&run).into_iter().flatten().flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("cgisock")
                    && e.metadata().is_ok_and(|m| !is_root() || m.uid() != 0)
            });
            if handed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "mod_cgid's socket in {} was not handed to the workers' user within \
                     {START_TIMEOUT:?}",
                    run.display()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `apache2 -k graceful`; returns once the new generation is up and answers.
    pub fn graceful(&mut self) {
        self.signal_and_wait("graceful");
    }

    /// `apache2 -k restart`; returns once the new generation is up and answers.
    pub fn restart(&mut self) {
        self.signal_and_wait("restart");
    }

    fn signal_and_wait(&mut self, how: &str) {
        assert!(self.running, "{how} of a server that is not running");
        // AH00489 "... configured -- resuming normal operations" marks each new generation;
        // notice-level startup lines are logged whatever the LogLevel.
        let before = self.log_count("resuming normal operations");
        let out = self.apache2(&["-k", how]);
        assert!(
            out.status.success(),
            "apache2 -k {how} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while self.log_count("resuming normal operations") <= before {
            assert!(
                Instant::now() < deadline,
                "no new generation after -k {how}; error log:\n{}",
                self.error_log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        while !probe(self.port) {
            assert!(Instant::now() < deadline, "no answer after -k {how}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `apache2 -k stop`; waits for the pid file to go and the port to close.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        // graceful-stop, not stop: Debian's event MPM can crash a child that is torn down
        // while its listener still handles closing connections (a race inside mod_mpm_event,
        // backtraces without any mod_shield frame); letting children finish avoids it, and
        // GracefulShutdownTimeout bounds the wait.
        let out = self.apache2(&["-k", "graceful-stop"]);
        if !out.status.success() {
            eprintln!(
                "apache2 -k graceful-stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.wait_stopped();
        self.running = false;
        self.slot = None;
    }

    fn wait_stopped(&self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let parent = self.parent_pid();
        while self.pid_file().exists() || TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                // Do not leak a server past the test: kill what is left of ours.
                eprintln!("apache did not stop in time; killing {parent:?}");
                for pid in self.pids() {
                    kill(pid, libc::SIGKILL);
                }
                if let Some(p) = parent {
                    kill(p, libc::SIGKILL);
                }
                let _ = fs::remove_file(self.pid_file());
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    // --- logs -----------------------------------------------------------------------------

    pub fn error_log(&self) -> String {
        fs::read(self.error_log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.root.join("logs/access.log")).unwrap_or_default()
    }

    /// Parsed access-log lines (format `%P %a %h "%r" %>s ...`).
    pub fn access_entries(&self) -> Vec<AccessEntry> {
        self.access_log()
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                Some(AccessEntry {
                    pid: f.first()?.parse().ok()?,
                    client: f.get(1)?.to_string(),
                    path: f.get(4)?.to_string(),
                    status: f.get(6)?.parse().ok()?,
                })
            })
            .collect()
    }

    /// `apache2 -M`: the loaded modules' lines (e.g. `shield_module (shared)`).
    pub fn loaded_modules(&self) -> String {
        let out = self.apache2(&["-M"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Number of error-log lines containing `pattern`.
    pub fn log_count(&self, pattern: &str) -> usize {
        self.error_log()
            .lines()
            .filter(|l| l.contains(pattern))
            .count()
    }

    /// Error-log lines containing `pattern`.
    pub fn log_lines(&self, pattern: &str) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|l| l.contains(pattern))
            .map(str::to_owned)
            .collect()
    }

    /// Wait until an error-log line contains `pattern`; false on timeout.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_count(pattern) > 0 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Error-log lines that match a forbidden pattern and no allowed one.
    pub fn crash_lines(&self) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|l| self.forbidden.iter().any(|p| l.contains(p.as_str())))
            .filter(|l| !self.allowed.iter().any(|p| l.contains(p.as_str())))
            .map(str::to_owned)
            .collect()
    }

    /// Panics when the error log holds crash lines (also done by `Drop`).
    pub fn assert_clean_log(&self) {
        let bad = self.crash_lines();
        assert!(
            bad.is_empty(),
            "error log of {} has crash lines:\n{}",
            self.root.display(),
            bad.join("\n")
        );
    }

    // --- processes ------------------------------------------------------------------------

    pub fn parent_pid(&self) -> Option<i32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Pids of the parent's children (the MPM's worker processes, plus e.g. cgid's daemon).
    pub fn pids(&self) -> Vec<i32> {
        let Some(parent) = self.parent_pid() else {
            return Vec::new();
        };
        children_of(parent)
    }

    /// SIGKILL one process (a child from [`Apache::pids`]).
    pub fn kill_child(&self, pid: i32) {
        kill(pid, libc::SIGKILL);
    }

    /// RSS of the parent and all children, in KiB.
    pub fn total_rss_kib(&self) -> u64 {
        self.parent_pid()
            .into_iter()
            .chain(self.pids())
            .filter_map(rss_kib)
            .sum()
    }

    // --- clients --------------------------------------------------------------------------

    pub fn client(&self) -> Client {
        Client::new(self.port)
    }

    pub fn get(&self, path: &str) -> Response {
        self.client().get(path)
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.client().request(method, path, headers)
    }

    pub fn conn(&self) -> Conn {
        self.client().conn()
    }

    fn keep_dir(&mut self) {
        self.checked = true;
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        self.stop();
        let bad = self.crash_lines();
        let failing = thread::panicking() || !bad.is_empty() || self.checked;
        if failing {
            eprintln!("server root kept for inspection: {}", self.root.display());
            let log = self.error_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- error.log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
        if !bad.is_empty() && !thread::panicking() {
            panic!(
                "error log of {} has crash lines:\n{}",
                self.root.display(),
                bad.join("\n")
            );
        }
    }
}

fn apache2_binary() -> String {
    std::env::var("SHIELD_APACHE2").unwrap_or_else(|_| "/usr/sbin/apache2".to_owned())
}

/// Whether the tests run as root (then servers drop to `nobody`, and system tools may run).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn unique_root() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "shield-test-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create ServerRoot");
    chmod(&dir, 0o755);
    dir
}

/// A loopback port that was free a moment ago (the caller retries on a clash).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Any HTTP answer on the port (from the probe host, so no test's counts move).
fn probe(port: u16) -> bool {
    Client::new(port)
        .host(PROBE_HOST)
        .source(PROBE_SOURCE)
        .try_request("GET", "/index.html", &[])
        .is_ok()
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) only sends a signal; pids come from our own server's process tree.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Direct children of `parent`, from /proc/<pid>/stat.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// An integer header, e.g. `Retry-After`.
    pub fn header_u64(&self, name: &str) -> Option<u64> {
        self.header(name)?.trim().parse().ok()
    }
}

/// One access-log line.
#[derive(Clone, Debug)]
pub struct AccessEntry {
    /// The child process that served the request.
    pub pid: i32,
    /// `%a`: the client address after mod_remoteip.
    pub client: String,
    pub path: String,
    pub status: u16,
}

/// Request defaults for one test client: port, `Host`, and an optional `X-Forwarded-For`
/// identity (meaningful with [`ApacheBuilder::remoteip`]).
#[derive(Clone, Debug)]
pub struct Client {
    pub port: u16,
    pub host: String,
    pub xff: Option<String>,
    /// Local address to connect from (another loopback address is another client).
    pub source: Option<std::net::Ipv4Addr>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client {
            port,
            host: "127.0.0.1".to_owned(),
            xff: None,
            source: None,
        }
    }

    /// Connect from this loopback address (e.g. 127.0.0.2): a different client without
    /// mod_remoteip.
    pub fn source(mut self, addr: std::net::Ipv4Addr) -> Client {
        self.source = Some(addr);
        self
    }

    pub fn host(mut self, host: &str) -> Client {
        self.host = host.to_owned();
        self
    }

    /// Requests carry `X-Forwarded-For: ip`.
    pub fn ip(mut self, ip: &str) -> Client {
        self.xff = Some(ip.to_owned());
        self
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[])
    }

    /// One request on its own connection (`Connection: close`); panics on I/O errors.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.try_request(method, path, headers)
            .unwrap_or_else(|e| panic!("{method} {path} on port {}: {e}", self.port))
    }

    pub fn try_get(&self, path: &str) -> io::Result<Response> {
        self.try_request("GET", path, &[])
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Response> {
        let mut conn = self.try_conn()?;
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !all
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
        {
            all.push(("Connection", "close"));
        }
        conn.try_send(method, path, &all)
    }

    /// A keep-alive connection.
    pub fn conn(&self) -> Conn {
        self.try_conn()
            .unwrap_or_else(|e| panic!("connect to port {}: {e}", self.port))
    }

    pub fn try_conn(&self) -> io::Result<Conn> {
        let stream = match self.source {
            None => TcpStream::connect(("127.0.0.1", self.port))?,
            Some(src) => connect_from(src, self.port)?,
        };
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            client: self.clone(),
        })
    }
}

/// A TCP connection to 127.0.0.1:`port` from the local address `src` (std cannot bind
/// before connecting).
fn connect_from(src: std::net::Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket owned by the TcpStream built from it (closed on error paths
    // by that same TcpStream's drop); the sockaddrs are valid for the given length.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(src, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sockaddr(std::net::Ipv4Addr::LOCALHOST, port);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// A connection that may carry several requests (HTTP/1.1 keep-alive).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    client: Client,
}

impl Conn {
    pub fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, &[])
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.try_send(method, path, headers)
            .unwrap_or_else(|e| panic!("{method} {path} on keep-alive connection: {e}"))
    }

    pub fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Response> {
        let req = self.request_text(method, path, headers);
        self.stream.write_all(req.as_bytes())?;
        self.read_response(method == "HEAD")
    }

    /// `n` requests in one write (pipelined), then their `n` responses: the server reads the
    /// next request from its buffer as soon as it has answered one, so they come together.
    pub fn send_pipelined(
        &mut self,
        n: usize,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Vec<Response>> {
        let req = self.request_text(method, path, headers).repeat(n);
        self.stream.write_all(req.as_bytes())?;
        (0..n)
            .map(|_| self.read_response(method == "HEAD"))
            .collect()
    }

    fn request_text(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !has("host") {
            req.push_str(&format!("Host: {}\r\n", self.client.host));
        }
        if let (Some(ip), false) = (&self.client.xff, has("x-forwarded-for")) {
            req.push_str(&format!("X-Forwarded-For: {ip}\r\n"));
        }
        if !has("user-agent") {
            req.push_str("User-Agent: shield-tests\r\n");
        }
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req
    }

    /// True when the server has closed the connection (EOF or reset within `wait`).
    pub fn is_closed(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut byte = [0u8; 1];
        let closed = match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => {
                self.buf.push(byte[0]);
                false
            }
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ),
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        closed
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The socket itself, for tests that write raw bytes.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn read_response(&mut self, head: bool) -> io::Result<Response> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before the response head ({} bytes read)",
                        self.buf.len()
                    ),
                ));
            }
        };
        let head_text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad_data(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            resp.body = self.read_chunked()?;
        } else if let Some(len) = resp.header_u64("content-length") {
            let len = usize::try_from(len).map_err(|_| bad_data("huge content-length"))?;
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            while self.fill()? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in chunk"));
            }
        }
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| bad_data(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers up to the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            while self.buf.len() < size + 2 {
                if self.fill()? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}
