//! The Debian package (`packaging/debian/build-deb.sh`) and the RPM spec
//! (`packaging/rpm/mod_shield.spec`).
//!
//! - The .deb is built for real and inspected with dpkg-deb: files, owners, modes, control
//!   fields, conffiles, maintainer scripts, and that the packaged module exports
//!   `shield_module`.
//! - `deb_installs_into_a_private_root_and_serves` installs it with `dpkg --root` into a
//!   throw-away root, enables it there with a2enmod, and runs a private apache2 on the packaged
//!   module and configuration: it serves, counts and blocks. Nothing of the system changes.
//! - `deb_installs_into_the_system_apache` does the same with this machine's dpkg and apache2
//!   (port 80) when `SHIELD_INSTALL_TESTS=1` or `CI=true` says the machine is throw-away (.ci/run
//!   sets it); without, it runs the throw-away-root flow again under the system's MPM.
//! - The spec is expanded with `rpmspec -P` and queried with `rpmspec -q`.
//!
//! Every external command runs under a deadline.

mod common;

use common::command::{must, run};
use common::{is_root, Apache, Client, Mpm, Response};
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PKG: &str = "libapache2-mod-shield";
const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/rpm/mod_shield.spec");
/// A release build of the module from scratch on two cores, plus packaging.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1200);
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
const SYSTEM_ERROR_LOG: &str = "/var/log/apache2/error.log";
/// Error-log lines that mean a crash (as in the real-Apache harness).
const CRASH_SIGNS: &[&str] = &[
    "exit signal",
    "AH00052",
    "panicked",
    "Segmentation fault",
    "[shield:crit]",
    "[shield:error]",
];

// ---------------------------------------------------------------------------------------------
// Commands under a deadline (see common::command)
// ---------------------------------------------------------------------------------------------

fn sh(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// A directory under the temp dir, removed on drop unless the test is failing.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shield-pkg-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("scratch dir kept for inspection: {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Facts the packages must agree with
// ---------------------------------------------------------------------------------------------

/// `version = "…"` of the [package] table of Cargo.toml.
fn cargo_version() -> String {
    let toml = fs::read_to_string(Path::new(REPO).join("Cargo.toml")).expect("read Cargo.toml");
    let mut in_package = false;
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(rest) = line.strip_prefix("version") {
                if let Some(v) = rest.trim().strip_prefix('=') {
                    return v.trim().trim_matches('"').to_owned();
                }
            }
        }
    }
    panic!("no [package] version in Cargo.toml");
}

fn deb_arch() -> String {
    must(&mut sh("dpkg", &["--print-architecture"]), TOOL_TIMEOUT)
        .stdout
        .trim()
        .to_owned()
}

/// The major module magic number of the httpd headers the module is built against.
fn httpd_mmn() -> String {
    let mmn = must(&mut sh("apxs", &["-q", "HTTPD_MMN"]), TOOL_TIMEOUT)
        .stdout
        .trim()
        .to_owned();
    assert!(
        !mmn.is_empty() && mmn.bytes().all(|b| b.is_ascii_digit()),
        "apxs -q HTTPD_MMN gave {mmn:?}"
    );
    mmn
}

// ---------------------------------------------------------------------------------------------
// The .deb, built once per test binary
// ---------------------------------------------------------------------------------------------

struct Deb {
    path: PathBuf,
}

/// Builds the package with build-deb.sh into its default place,
/// `${CARGO_TARGET_DIR:-target}/debian/` (the release module goes to the same target dir).
fn deb() -> &'static Deb {
    static DEB: OnceLock<Result<Deb, String>> = OnceLock::new();
    let result = DEB.get_or_init(|| {
        let out = run(
            &mut Command::new(Path::new(REPO).join("packaging/debian/build-deb.sh")),
            BUILD_TIMEOUT,
        )?;
        if !out.success {
            return Err(format!("build-deb.sh failed:\n{}", out.text()));
        }
        let path = PathBuf::from(out.stdout.lines().last().unwrap_or("").trim());
        let name = format!("{PKG}_{}_{}.deb", cargo_version(), deb_arch());
        if path.file_name().and_then(|n| n.to_str()) != Some(name.as_str()) || !path.is_file() {
            return Err(format!(
                "build-deb.sh reported {:?}, expected an existing {name}:\n{}",
                path,
                out.text()
            ));
        }
        Ok(Deb { path })
    });
    match result {
        Ok(deb) => deb,
        Err(e) => panic!("{e}"),
    }
}

/// One entry of `dpkg-deb -c`: "-rw-r--r-- root/root 64 2026-11-23 13:49 ./etc/…".
struct Entry {
    mode: String,
    owner: String,
    path: String,
}

fn deb_entries(deb: &Path) -> Vec<Entry> {
    let out = must(Command::new("dpkg-deb").arg("-c").arg(deb), TOOL_TIMEOUT);
    out.stdout
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 {
                return None;
            }
            let path = fields[5].trim_start_matches('.').trim_end_matches('/');
            Some(Entry {
                mode: fields[0].to_owned(),
                owner: fields[1].to_owned(),
                path: if path.is_empty() {
                    "/".to_owned()
                } else {
                    path.to_owned()
                },
            })
        })
        .collect()
}

const MODULE_SO: &str = "/usr/lib/apache2/modules/mod_shield.so";
const LOAD_FILE: &str = "/etc/apache2/mods-available/shield.load";
const CONF_FILE: &str = "/etc/apache2/mods-available/shield.conf";
const DOC: &str = "/usr/share/doc/libapache2-mod-shield";

#[test]
fn deb_holds_module_config_and_fail2ban_examples() {
    let deb = deb();
    let entries = deb_entries(&deb.path);
    let files: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        MODULE_SO.to_owned(),
        LOAD_FILE.to_owned(),
        CONF_FILE.to_owned(),
        format!("{DOC}/copyright"),
        format!("{DOC}/changelog.Debian.gz"),
        format!("{DOC}/README.Debian"),
        format!("{DOC}/examples/fail2ban/filter.d/shield.conf"),
        format!("{DOC}/examples/fail2ban/jail.d/shield.conf"),
    ] {
        assert!(
            files.contains(&expected.as_str()),
            "{expected} missing from the .deb: {files:#?}"
        );
    }
    // Installing the module must not activate a firewall jail.
    assert!(
        !files.iter().any(|f| f.starts_with("/etc/fail2ban")),
        "the .deb installs into /etc/fail2ban: {files:#?}"
    );
    for e in &entries {
        assert_eq!(e.owner, "root/root", "owner of {}", e.path);
        let mode = match e.path.as_str() {
            // The store file's directory is root's only; shieldctl is a program.
            "/var/lib/mod_shield" => "drwx------",
            "/usr/sbin/shieldctl" => "-rwxr-xr-x",
            _ if e.mode.starts_with('d') => "drwxr-xr-x",
            _ => "-rw-r--r--",
        };
        assert_eq!(e.mode, mode, "mode of {}", e.path);
    }
    for expected in ["/usr/sbin/shieldctl", "/var/lib/mod_shield"] {
        assert!(
            files.contains(&expected),
            "{expected} missing from the .deb: {files:#?}"
        );
    }

    // Control fields.
    let fields = must(
        Command::new("dpkg-deb").arg("-f").arg(&deb.path).args([
            "Package",
            "Version",
            "Architecture",
            "Depends",
        ]),
        TOOL_TIMEOUT,
    )
    .stdout;
    let field = |name: &str| -> String {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} field in:\n{fields}"))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Package"), PKG);
    assert_eq!(field("Version"), cargo_version());
    assert_eq!(field("Architecture"), deb_arch());
    let depends: Vec<String> = field("Depends")
        .split(',')
        .map(|d| d.trim().to_owned())
        .collect();
    let api = format!("apache2-api-{}", httpd_mmn());
    assert!(depends.contains(&api), "Depends {depends:?} lacks {api}");
    assert!(
        depends
            .iter()
            .any(|d| d == "libc6" || d.starts_with("libc6 (>= ")),
        "Depends {depends:?} lacks libc6"
    );
    // Whatever the package depends on must be satisfiable here (the machine it was built on).
    for dep in &depends {
        let name = dep.split_whitespace().next().unwrap_or(dep);
        let known = run(
            &mut sh("dpkg-query", &["-W", "-f=${Status}", name]),
            TOOL_TIMEOUT,
        )
        .map(|o| o.success && o.stdout.contains("installed"))
        .unwrap_or(false);
        let provided = run(
            &mut sh("dpkg-query", &["-W", "-f=${Provides}\n", "apache2-bin"]),
            TOOL_TIMEOUT,
        )
        .map(|o| o.stdout.split(',').any(|p| p.trim() == name))
        .unwrap_or(false);
        assert!(
            known || provided,
            "dependency {dep} is not installed or provided here"
        );
    }

    let conffiles = must(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb.path)
            .arg("conffiles"),
        TOOL_TIMEOUT,
    )
    .stdout;
    let mut conffiles: Vec<&str> = conffiles.lines().map(str::trim).collect();
    conffiles.sort_unstable();
    assert_eq!(conffiles, [CONF_FILE, LOAD_FILE]);

    // Contents.
    let scratch = Scratch::new("contents");
    let root = scratch.0.join("root");
    must(
        Command::new("dpkg-deb").arg("-x").arg(&deb.path).arg(&root),
        TOOL_TIMEOUT,
    );
    let read = |p: &str| {
        fs::read(root.join(p.trim_start_matches('/'))).unwrap_or_else(|e| panic!("read {p}: {e}"))
    };
    let load = String::from_utf8_lossy(&read(LOAD_FILE)).into_owned();
    let load_lines: Vec<&str> = load.lines().collect();
    assert_eq!(
        load_lines,
        [
            "# Conflicts: evasive".to_owned(),
            format!("LoadModule shield_module {MODULE_SO}")
        ],
        "{LOAD_FILE}"
    );
    assert_eq!(
        read(CONF_FILE),
        fs::read(Path::new(REPO).join("conf/shield.conf")).expect("read conf/shield.conf"),
        "{CONF_FILE} is not conf/shield.conf"
    );
    for part in ["filter.d/shield.conf", "jail.d/shield.conf"] {
        assert_eq!(
            read(&format!("{DOC}/examples/fail2ban/{part}")),
            fs::read(Path::new(REPO).join("packaging/fail2ban").join(part))
                .expect("read fail2ban file"),
            "packaged {part} differs from packaging/fail2ban/{part}"
        );
    }
    let so = root.join(MODULE_SO.trim_start_matches('/'));
    let symbols = must(
        Command::new("nm").args(["-D", "--defined-only"]).arg(&so),
        TOOL_TIMEOUT,
    )
    .stdout;
    assert!(
        symbols
            .lines()
            .any(|l| l.split_whitespace().last() == Some("shield_module")),
        "the packaged mod_shield.so does not export shield_module:\n{symbols}"
    );
    let sections = must(Command::new("objdump").arg("-h").arg(&so), TOOL_TIMEOUT).stdout;
    assert!(
        !sections.contains(".debug_info"),
        "the packaged module is not stripped"
    );

    // Maintainer scripts: executable, valid sh.
    let control = scratch.0.join("control");
    must(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb.path)
            .arg(&control),
        TOOL_TIMEOUT,
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{script} missing: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "mode of {script}");
        must(Command::new("sh").arg("-n").arg(&path), TOOL_TIMEOUT);
    }
}

// ---------------------------------------------------------------------------------------------
// Installing, enabling, serving and removing the package
// ---------------------------------------------------------------------------------------------

/// Installing into this machine's apache2 changes the system: only where asked to.
fn system_install_allowed() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SHIELD_INSTALL_TESTS").is_ok_and(|v| v == "1")
}

fn port_80_in_use() -> bool {
    TcpStream::connect_timeout(
        &"127.0.0.1:80".parse().expect("addr"),
        Duration::from_secs(1),
    )
    .is_ok()
}

const EVASIVE_LOAD: &str = "/etc/apache2/mods-available/evasive.load";

/// Where the package goes.
enum Target {
    /// This machine's dpkg database, /etc/apache2 and apache2 on port 80.
    System,
    /// A throw-away root: its own dpkg database (`dpkg --root`), its own /etc/apache2 for
    /// a2enmod (`APACHE_CONFDIR`), and a private apache2 on a free loopback port that loads the
    /// packaged module and configuration from there.
    Private {
        dir: Scratch,
        mpm: Mpm,
        /// The `X-Forwarded-For` client that is blocked (its own, so block files of tests
        /// running at the same time do not meet).
        scanner: String,
    },
}

impl Target {
    /// A root with what `dpkg --root` needs: an admin dir whose status lists the installed
    /// packages the .deb depends on (copied from this machine's, so dpkg really checks
    /// Depends), and /bin/sh and /bin/rm for the maintainer scripts, which dpkg runs chrooted
    /// there.
    fn private(mpm: Mpm) -> Target {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = Scratch::new("root");
        let root = dir.0.clone();
        let admin = root.join("var/lib/dpkg");
        for sub in ["updates", "info"] {
            fs::create_dir_all(admin.join(sub)).expect("create dpkg admin dir");
        }
        let arch = deb_arch();
        let mut status = String::new();
        for name in dependency_packages(&deb().path) {
            let stanza = must(&mut sh("dpkg-query", &["-s", &name]), TOOL_TIMEOUT).stdout;
            status.push_str(stanza.trim_end());
            status.push_str("\n\n");
            // Empty file lists: the packages own no files in this root.
            for list in [format!("{name}.list"), format!("{name}:{arch}.list")] {
                fs::write(admin.join("info").join(list), "").expect("write file list");
            }
        }
        fs::write(admin.join("status"), status).expect("write dpkg status");
        // What apache2's own package would have made.
        fs::create_dir_all(root.join("etc/apache2/mods-enabled")).expect("create mods-enabled");
        // The maintainer scripts' tools (postrm removes the store directory on purge).
        for tool in ["/bin/sh", "/bin/rm"] {
            copy_with_libraries(&root, tool);
        }
        Target::Private {
            dir,
            mpm,
            scanner: format!(
                "198.51.100.{}",
                10 + N.fetch_add(1, Ordering::Relaxed) % 200
            ),
        }
    }

    /// An absolute path of the installed system, inside the target.
    fn path(&self, abs: &str) -> PathBuf {
        match self {
            Target::System => PathBuf::from(abs),
            Target::Private { dir, .. } => dir.0.join(abs.trim_start_matches('/')),
        }
    }

    fn dpkg(&self, args: &[&str]) -> Command {
        let mut c = Command::new("dpkg");
        if let Target::Private { dir, .. } = self {
            c.arg(format!("--root={}", dir.0.display()));
        }
        c.args(args);
        c
    }

    /// a2enmod / a2dismod on the target's /etc/apache2 (Debian's scripts honour
    /// `APACHE_CONFDIR` and `APACHE_STATE_DIRECTORY`).
    fn a2(&self, program: &str, args: &[&str]) -> Command {
        let mut c = sh(program, args);
        if let Target::Private { .. } = self {
            c.env("APACHE_CONFDIR", self.path("/etc/apache2"))
                .env("APACHE_STATE_DIRECTORY", self.path("/var/lib/apache2"));
        }
        c
    }

    fn module_enabled(&self, name: &str) -> bool {
        match self {
            Target::System => {
                run(&mut sh("a2query", &["-q", "-m", name]), TOOL_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{e}"))
                    .success
            }
            // a2query reads /etc/apache2 only: look at the link a2enmod makes.
            Target::Private { .. } => {
                fs::symlink_metadata(self.path(&format!("/etc/apache2/mods-enabled/{name}.load")))
                    .is_ok()
            }
        }
    }
}

/// The installed packages that satisfy the .deb's Depends (a virtual package such as
/// apache2-api-<MMN> by the package that provides it).
fn dependency_packages(deb: &Path) -> Vec<String> {
    let depends = must(
        Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"),
        TOOL_TIMEOUT,
    )
    .stdout;
    let installed = must(
        &mut sh(
            "dpkg-query",
            &["-W", "-f=${db:Status-Abbrev}|${Package}|${Provides}\n"],
        ),
        TOOL_TIMEOUT,
    )
    .stdout;
    let mut out: Vec<String> = Vec::new();
    for dep in depends.split(',') {
        let name = dep.split_whitespace().next().unwrap_or("").to_owned();
        let provider = installed.lines().find_map(|line| {
            let mut f = line.splitn(3, '|');
            let (status, package, provides) = (f.next()?, f.next()?, f.next().unwrap_or(""));
            let provides_it = provides
                .split(',')
                .any(|p| p.split_whitespace().next() == Some(name.as_str()));
            (status.starts_with("ii") && (package == name || provides_it))
                .then(|| package.to_owned())
        });
        let provider = provider
            .unwrap_or_else(|| panic!("nothing installed here satisfies the dependency {dep}"));
        if !out.contains(&provider) {
            out.push(provider);
        }
    }
    out
}

/// Copies `program` and the shared libraries it loads into the same paths under `root`.
fn copy_with_libraries(root: &Path, program: &str) {
    let real = fs::canonicalize(program).unwrap_or_else(|e| panic!("{program}: {e}"));
    let ldd = must(Command::new("ldd").arg(&real), TOOL_TIMEOUT).stdout;
    let libraries = ldd
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from);
    for (from, to) in std::iter::once((real.clone(), PathBuf::from(program)))
        .chain(libraries.map(|l| (l.clone(), l)))
    {
        let dest = root.join(to.strip_prefix("/").unwrap_or(&to));
        fs::create_dir_all(dest.parent().expect("parent")).expect("create dir in root");
        fs::copy(&from, &dest)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), dest.display()));
    }
}

/// One request on its own `Connection: close` connection; returns once the server has closed
/// it, i.e. after `log_transaction` of that request (where status penalties are scored) ran,
/// so the next request cannot overtake it.
fn get_settled(client: &Client, path: &str) -> Response {
    let mut conn = client.conn();
    let r = conn.send("GET", path, &[("Connection", "close")]);
    assert!(
        conn.is_closed(Duration::from_secs(5)),
        "GET {path}: the server kept a Connection: close connection open"
    );
    r
}

/// What the packaged conf/shield.conf does, seen from a client: pages are served, and a
/// scanner's 404 probes (1 + `DOSSiteStatusPenalty 404 50` each against `DOSSiteCount 500`)
/// start a block when the 10th is logged, so the 11th request is refused with 429 and a
/// `Retry-After` of at most 5 s (the first `DOSBlockingPeriod`).
fn assert_packaged_policy(scanner: &Client, bystander: Option<&Client>) {
    let page = get_settled(scanner, "/");
    assert_eq!(page.status, 200, "GET / with the packaged configuration");
    for i in 1..=10 {
        let probe = get_settled(scanner, &format!("/wp-content/probe-{i}.php"));
        assert_eq!(probe.status, 404, "probe {i}: not refused before the 11th");
    }
    let refused = get_settled(scanner, "/");
    assert_eq!(
        refused.status, 429,
        "the request after ten 404 probes: {refused:?}"
    );
    let retry = refused.header_u64("Retry-After");
    assert!(
        retry.is_some_and(|s| (1..=5).contains(&s)),
        "Retry-After {retry:?} is not within the first blocking period (5 s)"
    );
    if let Some(other) = bystander {
        assert_eq!(
            other.get("/").status,
            200,
            "another client is refused with the scanner"
        );
    }
}

/// Undoes what the install flow did, whatever happened: stops the system apache2 if the flow
/// started it, disables the module, purges the package, restores mod_evasive's state and
/// removes the block files the flow caused.
struct Cleanup<'t> {
    target: &'t Target,
    started_apache: bool,
    installed: bool,
    /// Whether mod_evasive was enabled before the flow touched it (None: untouched).
    evasive_was_enabled: Option<bool>,
    /// `/tmp/dos-<ip>…` names (the packaged `DOSLogDir /tmp`) written since `since`.
    block_files_of: String,
    since: std::time::SystemTime,
}

fn best_effort(mut cmd: Command) {
    match run(&mut cmd, TOOL_TIMEOUT) {
        Ok(o) if !o.success => eprintln!("cleanup {cmd:?}: {}", o.text()),
        Err(e) => eprintln!("cleanup: {e}"),
        _ => {}
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let t = self.target;
        if self.started_apache {
            best_effort(sh("apache2ctl", &["stop"]));
        }
        if self.installed {
            best_effort(t.a2("a2dismod", &["-q", "-f", "shield"]));
            best_effort(t.dpkg(&["-P", PKG]));
        }
        match self.evasive_was_enabled {
            Some(true) => best_effort(t.a2("a2enmod", &["-q", "evasive"])),
            Some(false) => best_effort(t.a2("a2dismod", &["-q", "evasive"])),
            None => {}
        }
        let prefix = format!("dos-{}", self.block_files_of);
        for entry in fs::read_dir("/tmp").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name
                .strip_prefix(&prefix)
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m >= self.since);
            if ours {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The package's life on `target`: dpkg -i (dependencies checked, maintainer scripts run), not
/// enabled by installing, a2enmod refused next to mod_evasive, a2enmod, the configuration test,
/// a server that loads the packaged module and conf and counts and blocks, a2dismod, dpkg -r
/// (conffiles kept) and dpkg -P (conffiles gone).
fn install_enable_serve_remove(target: &Target) {
    let deb = deb();
    assert!(
        Path::new(EVASIVE_LOAD).is_file(),
        "libapache2-mod-evasive is not installed (scripts/deps installs it): this test checks \
         that a2enmod refuses to enable mod_shield next to it"
    );
    let scanner_ip = match target {
        Target::System => "127.0.0.1".to_owned(),
        Target::Private { scanner, .. } => scanner.clone(),
    };
    let mut cleanup = Cleanup {
        target,
        started_apache: false,
        installed: false,
        evasive_was_enabled: None,
        block_files_of: scanner_ip.clone(),
        since: std::time::SystemTime::now(),
    };

    // The package is not installed yet, so no store file of its can exist: one left over from
    // an interrupted earlier run of this test would carry the scanner's block into this one.
    if let Target::System = target {
        let _ = fs::remove_dir_all("/var/lib/mod_shield");
    }
    cleanup.installed = true;
    must(
        &mut target.dpkg(&["-i", &deb.path.to_string_lossy()]),
        TOOL_TIMEOUT,
    );
    let so = target.path(MODULE_SO);
    assert!(so.is_file(), "{} not installed", so.display());
    let status = must(&mut target.dpkg(&["-s", PKG]), TOOL_TIMEOUT).stdout;
    assert!(
        status.contains("Status: install ok installed"),
        "dpkg -s {PKG} after dpkg -i:\n{status}"
    );
    // Policy: installing does not enable the module.
    assert!(
        !target.module_enabled("shield"),
        "dpkg -i enabled the module; the package must leave that to the admin"
    );

    // mod_evasive registers the same directives: a2enmod must refuse while it is enabled.
    if let Target::Private { .. } = target {
        fs::copy(EVASIVE_LOAD, target.path(EVASIVE_LOAD)).expect("copy evasive.load");
    }
    cleanup.evasive_was_enabled = Some(target.module_enabled("evasive"));
    must(&mut target.a2("a2enmod", &["-q", "evasive"]), TOOL_TIMEOUT);
    let refused =
        run(&mut target.a2("a2enmod", &["shield"]), TOOL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !refused.success && refused.text().contains("conflicts"),
        "a2enmod shield with mod_evasive enabled did not refuse:\n{}",
        refused.text()
    );
    assert!(!target.module_enabled("shield"));
    must(&mut target.a2("a2dismod", &["-q", "evasive"]), TOOL_TIMEOUT);

    must(&mut target.a2("a2enmod", &["shield"]), TOOL_TIMEOUT);
    assert!(
        target.module_enabled("shield"),
        "a2enmod shield did not enable it"
    );

    match target {
        Target::System => serve_system(&mut cleanup),
        Target::Private { mpm, scanner, .. } => serve_private(target, *mpm, scanner),
    }

    must(&mut target.a2("a2dismod", &["shield"]), TOOL_TIMEOUT);
    assert!(
        !target.module_enabled("shield"),
        "a2dismod shield left it enabled"
    );
    must(&mut target.dpkg(&["-r", PKG]), TOOL_TIMEOUT);
    assert!(!so.exists(), "{} left after dpkg -r", so.display());
    // dpkg -r keeps conffiles; purge removes them.
    let load = target.path(LOAD_FILE);
    assert!(
        load.exists(),
        "dpkg -r removed the conffile {}",
        load.display()
    );
    must(&mut target.dpkg(&["-P", PKG]), TOOL_TIMEOUT);
    assert!(!load.exists(), "{} left after dpkg -P", load.display());
    cleanup.installed = false;
}

/// apache2ctl -t / -M / start with Debian's own apache2.conf, the packaged policy on port 80,
/// stop, and no crash in the system error log.
fn serve_system(cleanup: &mut Cleanup) {
    must(&mut sh("apache2ctl", &["-t"]), TOOL_TIMEOUT);
    let modules = must(&mut sh("apache2ctl", &["-M"]), TOOL_TIMEOUT).stdout;
    assert!(
        modules.contains("shield_module"),
        "apache2ctl -M does not list shield_module:\n{modules}"
    );

    let log_start = fs::metadata(SYSTEM_ERROR_LOG).map(|m| m.len()).unwrap_or(0);
    cleanup.started_apache = true;
    must(&mut sh("apache2ctl", &["start"]), TOOL_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !port_80_in_use() {
        assert!(
            Instant::now() < deadline,
            "apache2 does not listen on port 80 after apache2ctl start"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_packaged_policy(&Client::new(80), None);
    // The shipped DOSCache file lives in the package's directory, and the installed
    // shieldctl reads it at its default path.
    assert!(Path::new("/var/lib/mod_shield/shield.store").is_file());
    let stats = must(&mut sh("/usr/sbin/shieldctl", &["stats"]), TOOL_TIMEOUT).stdout;
    assert!(
        stats.contains("area capacity entries"),
        "shieldctl stats:\n{stats}"
    );

    must(&mut sh("apache2ctl", &["stop"]), TOOL_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while port_80_in_use() {
        assert!(
            Instant::now() < deadline,
            "apache2 still listens on port 80 after apache2ctl stop"
        );
        thread::sleep(Duration::from_millis(100));
    }
    cleanup.started_apache = false;

    let log = fs::read(SYSTEM_ERROR_LOG).unwrap_or_default();
    let log = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or(&[]));
    assert!(
        log.contains("resuming normal operations"),
        "{SYSTEM_ERROR_LOG} shows no start of apache2 (wrong log?):\n{log}"
    );
    let crashes: Vec<&str> = log
        .lines()
        .filter(|l| CRASH_SIGNS.iter().any(|c| l.contains(c)))
        .collect();
    assert!(
        crashes.is_empty(),
        "crash lines in {SYSTEM_ERROR_LOG}:\n{}",
        crashes.join("\n")
    );
}

/// A private apache2 (tests/common) whose mod_shield lines are the enabled shield.load, with
/// the module's path moved into the root, and an Include of the enabled shield.conf.
fn serve_private(target: &Target, mpm: Mpm, scanner: &str) {
    let load = fs::read_to_string(target.path("/etc/apache2/mods-enabled/shield.load"))
        .expect("read the enabled shield.load");
    assert!(load.contains(MODULE_SO), "shield.load:\n{load}");
    let load = load.replace(MODULE_SO, &target.path(MODULE_SO).to_string_lossy());
    let conf = target.path("/etc/apache2/mods-enabled/shield.conf");
    let mut apache = Apache::builder()
        .mpm(mpm)
        .shield(false)
        .remoteip()
        .config(&load)
        .config("LogLevel warn shield:info")
        .config(&format!("Include \"{}\"", conf.display()))
        // The packaged store directory, inside the throw-away root: not the machine's own
        // /var/lib/mod_shield, whose blocks would outlive this test (the store is a file).
        .config(&format!(
            "DOSCache \"shmcb:{}(524288)\"",
            target.path("/var/lib/mod_shield/shield.store").display()
        ))
        .build();
    let (ok, text) = apache.config_test();
    assert!(ok, "apache2 -t with the packaged files:\n{text}");
    let modules = apache.loaded_modules();
    assert!(
        modules.contains("shield_module"),
        "apache2 -M does not list shield_module:\n{modules}"
    );
    apache.start();
    let bystander = apache.client().ip("203.0.113.9");
    assert_packaged_policy(&apache.client().ip(scanner), Some(&bystander));
    let line = format!("blocking period started for IP: {scanner} ");
    assert!(
        apache.wait_for_log(&line, Duration::from_secs(5)),
        "no {line:?} in the error log:\n{}",
        apache.error_log()
    );
    apache.stop();
    apache.assert_clean_log();
}

/// The default run: the package in a throw-away root and a private apache2 (prefork), with
/// nothing on this machine's own apache2 touched.
#[test]
fn deb_installs_into_a_private_root_and_serves() {
    assert!(
        is_root(),
        "dpkg --root runs the maintainer scripts chrooted, which needs root (as ./scripts/test runs)"
    );
    install_enable_serve_remove(&Target::private(Mpm::Prefork));
}

/// With `SHIELD_INSTALL_TESTS=1` or `CI=true` (as .ci/run sets, on a throw-away machine) the
/// same life on this machine's apache2: dpkg -i, a2enmod, apache2ctl start on port 80, the
/// packaged policy, stop, dpkg -r and -P. Without, the system is left alone and the same flow
/// runs on a throw-away root again, under the MPM the system apache2 has enabled.
#[test]
fn deb_installs_into_the_system_apache() {
    assert!(
        is_root(),
        "installing a package (even into a throw-away root) needs root, as ./scripts/test runs"
    );
    if !system_install_allowed() {
        let mpm = must(&mut sh("a2query", &["-M"]), TOOL_TIMEOUT).stdout;
        let mpm = match mpm.trim() {
            "prefork" => Mpm::Prefork,
            "worker" => Mpm::Worker,
            _ => Mpm::Event,
        };
        eprintln!(
            "SHIELD_INSTALL_TESTS=1 / CI=true not set: the system apache2 is left alone; \
             the package goes into a throw-away root, served by a private {} apache2",
            mpm.name()
        );
        install_enable_serve_remove(&Target::private(mpm));
        return;
    }
    assert!(
        !port_80_in_use(),
        "port 80 is already in use on 127.0.0.1: stop whatever listens there (systemctl stop \
         apache2?) before running this test"
    );
    install_enable_serve_remove(&Target::System);
}

// ---------------------------------------------------------------------------------------------
// RPM spec
// ---------------------------------------------------------------------------------------------

/// rpmspec with RHEL's values for the macros httpd-devel and the platform define.
fn rpmspec(args: &[&str]) -> String {
    let mut cmd = Command::new("rpmspec");
    cmd.args(["--define", "_httpd_mmn 20120211x8664"])
        .args(["--define", "_libdir /usr/lib64"])
        .args(["--define", "_sysconfdir /etc"])
        .args(args)
        .arg(SPEC);
    must(&mut cmd, TOOL_TIMEOUT).stdout
}

#[test]
fn rpm_spec_parses_and_installs_the_rhel_paths() {
    let parsed = rpmspec(&["-P"]);
    for expected in [
        "BuildRequires:  httpd-devel",
        "BuildRequires:  cargo",
        "BuildRequires:  clang-devel",
        "Requires:       httpd-mmn = 20120211x8664",
        "LoadModule shield_module modules/mod_shield.so",
        "/usr/lib64/httpd/modules/mod_shield.so",
        "%config(noreplace) /etc/httpd/conf.modules.d/10-shield.conf",
        "%config(noreplace) /etc/httpd/conf.d/shield.conf",
        "install -m 0644 conf/shield.conf",
        "cargo build --release --offline --locked",
    ] {
        assert!(
            parsed.contains(expected),
            "rpmspec -P output lacks {expected:?}:\n{parsed}"
        );
    }
    // The %files list names exactly the module, shieldctl, the store's directory, the two
    // config files and the docs.
    let files: Vec<&str> = parsed
        .split("%files")
        .nth(1)
        .unwrap_or_else(|| panic!("no %files in:\n{parsed}"))
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("%changelog"))
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        files,
        [
            "/usr/lib64/httpd/modules/mod_shield.so",
            "/usr/sbin/shieldctl",
            "%dir %attr(0700,root,root) /var/lib/mod_shield",
            "%config(noreplace) /etc/httpd/conf.modules.d/10-shield.conf",
            "%config(noreplace) /etc/httpd/conf.d/shield.conf",
            "%doc /usr/share/doc/mod_shield",
        ]
    );
    // The raw spec keeps the MMN macro (the pattern RHEL's httpd modules use), not a value.
    let raw = fs::read_to_string(SPEC).expect("read spec");
    assert!(raw.contains("Requires:       httpd-mmn = %{_httpd_mmn}"));

    let version = rpmspec(&["-q", "--qf", "%{VERSION}\n"]);
    assert_eq!(
        version.trim(),
        cargo_version(),
        "spec Version differs from Cargo.toml"
    );
    let requires = rpmspec(&["-q", "--requires"]);
    assert!(
        requires
            .lines()
            .any(|l| l.trim() == "httpd-mmn = 20120211x8664"),
        "rpmspec -q --requires:\n{requires}"
    );
    let build_requires = rpmspec(&["-q", "--buildrequires"]);
    for br in ["httpd-devel", "cargo", "clang-devel"] {
        assert!(
            build_requires.lines().any(|l| l.trim() == br),
            "BuildRequires lacks {br}:\n{build_requires}"
        );
    }
}
