//! The Debian package (`packaging/debian/build-deb.sh`) and the RPM spec
//! (`packaging/rpm/mod_shield.spec`).
//!
//! - The .deb is built for real and inspected with dpkg-deb: files, owners, modes, control
//!   fields, conffiles, maintainer scripts, and that the packaged module exports
//!   `shield_module`.
//! - `deb_installs_into_the_system_apache` installs it into this machine's apache2, enables it,
//!   serves a request on port 80 and removes everything again. It changes the system, so it runs
//!   only as root with `CI=true` or `SHIELD_INSTALL_TESTS=1`, and otherwise FAILS saying so: it
//!   is never skipped silently.
//! - The spec is expanded with `rpmspec -P` and queried with `rpmspec -q`.
//!
//! Every external command runs under a deadline.

mod common;

use common::command::{must, run};
use std::fs;
use std::io::{Read, Write};
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
// Installing into the system apache2
// ---------------------------------------------------------------------------------------------

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn port_80_in_use() -> bool {
    TcpStream::connect_timeout(
        &"127.0.0.1:80".parse().expect("addr"),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// One HTTP/1.1 GET on port 80: (status, head and body).
fn get_port_80(path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(
        &"127.0.0.1:80".parse().expect("addr"),
        Duration::from_secs(5),
    )
    .map_err(|e| format!("connect 127.0.0.1:80: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: shield-packaging-test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    Ok((status, text))
}

/// Undoes what the install test did, whatever happened: stops apache2 if the test started
/// it, disables the module and purges the package.
struct SystemCleanup {
    started_apache: bool,
    installed: bool,
    /// Whether mod_evasive was enabled before the test touched it (None: untouched).
    evasive_was_enabled: Option<bool>,
}

fn best_effort(mut cmd: Command) {
    match run(&mut cmd, TOOL_TIMEOUT) {
        Ok(o) if !o.success => eprintln!("cleanup {cmd:?}: {}", o.text()),
        Err(e) => eprintln!("cleanup: {e}"),
        _ => {}
    }
}

impl Drop for SystemCleanup {
    fn drop(&mut self) {
        if self.started_apache {
            best_effort(sh("apache2ctl", &["stop"]));
        }
        if self.installed {
            best_effort(sh("a2dismod", &["-q", "-f", "shield"]));
            best_effort(sh("dpkg", &["-P", PKG]));
        }
        match self.evasive_was_enabled {
            Some(true) => best_effort(sh("a2enmod", &["-q", "evasive"])),
            Some(false) => best_effort(sh("a2dismod", &["-q", "evasive"])),
            None => {}
        }
    }
}

fn module_enabled(name: &str) -> bool {
    run(&mut sh("a2query", &["-q", "-m", name]), TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"))
        .success
}

/// Installs the .deb into this machine's apache2: dpkg -i, a2enmod, apache2ctl -t, start on
/// port 80, a request, stop, a2dismod, dpkg -r (and -P). Runs only as root with CI=true or
/// SHIELD_INSTALL_TESTS=1, and fails otherwise.
#[test]
fn deb_installs_into_the_system_apache() {
    let allowed = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SHIELD_INSTALL_TESTS").is_ok_and(|v| v == "1");
    assert!(
        is_root() && allowed,
        "this test installs libapache2-mod-shield into the system apache2 and starts it on port \
         80, so it only runs as root with CI=true or SHIELD_INSTALL_TESTS=1 (root: {}, CI={:?}, \
         SHIELD_INSTALL_TESTS={:?}). Run it on a throw-away Debian machine, e.g.\n  \
         sudo SHIELD_INSTALL_TESTS=1 cargo test --test packaging",
        is_root(),
        std::env::var("CI").ok(),
        std::env::var("SHIELD_INSTALL_TESTS").ok()
    );
    assert!(
        !port_80_in_use(),
        "port 80 is already in use on 127.0.0.1: stop whatever listens there (systemctl stop \
         apache2?) before running this test"
    );
    let deb = deb();
    assert!(
        Path::new("/etc/apache2/mods-available/evasive.load").is_file(),
        "libapache2-mod-evasive is not installed (scripts/deps installs it): this test checks \
         that a2enmod refuses to enable mod_shield next to it"
    );
    let mut cleanup = SystemCleanup {
        started_apache: false,
        installed: false,
        evasive_was_enabled: None,
    };

    cleanup.installed = true;
    must(Command::new("dpkg").arg("-i").arg(&deb.path), TOOL_TIMEOUT);
    assert!(Path::new(MODULE_SO).is_file(), "{MODULE_SO} not installed");
    // Policy: installing does not enable the module.
    assert!(
        !module_enabled("shield"),
        "dpkg -i enabled the module; the package must leave that to the admin"
    );

    // mod_evasive registers the same directives: a2enmod must refuse while it is enabled.
    cleanup.evasive_was_enabled = Some(module_enabled("evasive"));
    must(&mut sh("a2enmod", &["-q", "evasive"]), TOOL_TIMEOUT);
    let refused =
        run(&mut sh("a2enmod", &["shield"]), TOOL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !refused.success && refused.text().contains("conflicts"),
        "a2enmod shield with mod_evasive enabled did not refuse:\n{}",
        refused.text()
    );
    assert!(!module_enabled("shield"));
    must(&mut sh("a2dismod", &["-q", "evasive"]), TOOL_TIMEOUT);

    must(&mut sh("a2enmod", &["shield"]), TOOL_TIMEOUT);
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
    let (status, response) = get_port_80("/").unwrap_or_else(|e| panic!("GET / on port 80: {e}"));
    assert_eq!(status, 200, "GET http://127.0.0.1/:\n{response}");
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

    must(&mut sh("a2dismod", &["shield"]), TOOL_TIMEOUT);
    must(&mut sh("dpkg", &["-r", PKG]), TOOL_TIMEOUT);
    assert!(
        !Path::new(MODULE_SO).exists(),
        "{MODULE_SO} left after dpkg -r"
    );
    // dpkg -r keeps conffiles; purge removes them.
    assert!(
        Path::new(LOAD_FILE).exists(),
        "dpkg -r removed the conffile {LOAD_FILE}"
    );
    must(&mut sh("dpkg", &["-P", PKG]), TOOL_TIMEOUT);
    assert!(
        !Path::new(LOAD_FILE).exists(),
        "{LOAD_FILE} left after dpkg -P"
    );
    cleanup.installed = false;
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
