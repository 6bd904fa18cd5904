//! The Debian package (`debian/`, built by `scripts/package deb` with dpkg-buildpackage and
//! debhelper) and the RPM spec (`packaging/rpm/mod_shield.spec`).
//!
//! - The .deb is built for real and inspected with dpkg-deb: files, owners, modes, control
//!   fields (the Conflicts and Replaces on libapache2-mod-evasive), conffiles, maintainer
//!   scripts, and that the packaged module exports `shield_module`.
//! - `deb_installs_into_a_private_root_and_serves` installs libapache2-mod-evasive and then
//!   this package with `dpkg --root` into a throw-away root (evasive is replaced), and runs a
//!   private apache2 on the packaged module and configuration: it serves, counts and blocks.
//!   Nothing of the system changes.
//! - `deb_replaces_mod_evasive_in_the_system_apache` runs the documented migration from an
//!   installed and enabled libapache2-mod-evasive on this machine's dpkg and apache2 (port 80),
//!   `apache2ctl -t` checked at every step, when `SHIELD_INSTALL_TESTS=1` or `CI=true` says
//!   the machine is throw-away (.ci/run sets it); without, it runs the throw-away-root flow
//!   again under the system's MPM.
//! - The spec is expanded with `rpmspec -P` and queried with `rpmspec -q`. (scripts/package
//!   builds the RPM and scripts/check-packages lints both packages, in .ci/run.)
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

/// Builds the package with `scripts/package deb` into `${CARGO_TARGET_DIR:-target}/packages/`
/// (the release module is built in the same target dir).
fn deb() -> &'static Deb {
    static DEB: OnceLock<Result<Deb, String>> = OnceLock::new();
    let result = DEB.get_or_init(|| {
        let out = run(
            Command::new(Path::new(REPO).join("scripts/package")).arg("deb"),
            BUILD_TIMEOUT,
        )?;
        if !out.success {
            return Err(format!("scripts/package deb failed:\n{}", out.text()));
        }
        let path = PathBuf::from(out.stdout.lines().last().unwrap_or("").trim());
        let name = format!("{PKG}_{}_{}.deb", cargo_version(), deb_arch());
        if path.file_name().and_then(|n| n.to_str()) != Some(name.as_str()) || !path.is_file() {
            return Err(format!(
                "scripts/package reported {:?}, expected an existing {name}:\n{}",
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
        // A native package: the changelog is debian/changelog.
        format!("{DOC}/changelog.gz"),
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
            "/usr/sbin/shieldctl" => "-rwxr-xr-x",
            _ if e.mode.starts_with('d') => "drwxr-xr-x",
            _ => "-rw-r--r--",
        };
        assert_eq!(e.mode, mode, "mode of {}", e.path);
    }
    assert!(
        files.contains(&"/usr/sbin/shieldctl"),
        "shieldctl missing from the .deb: {files:#?}"
    );
    // The state directories are made by the postinst (owner www-data's group, modes 0700 and
    // 0770), not shipped: dpkg would reset their modes on every upgrade.
    for dir in [STORE_DIR, BLOCK_DIR] {
        assert!(!files.contains(&dir), "{dir} is shipped in the .deb");
    }
    // shieldctl's man page and completions (generated by shieldctl-gen in the build).
    for installed in [
        "/usr/share/man/man8/shieldctl.8.gz",
        "/usr/share/bash-completion/completions/shieldctl",
        "/usr/share/zsh/vendor-completions/_shieldctl",
    ] {
        assert!(
            files.contains(&installed),
            "{installed} missing from the .deb: {files:#?}"
        );
    }

    // Control fields.
    let fields = must(
        Command::new("dpkg-deb").arg("-f").arg(&deb.path).args([
            "Package",
            "Version",
            "Architecture",
            "Depends",
            "Conflicts",
            "Replaces",
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
    // mod_evasive registers the same directives: the two cannot be installed together, and
    // installing this package removes it (its prerm disables it first).
    assert_eq!(field("Conflicts"), "libapache2-mod-evasive");
    assert_eq!(field("Replaces"), "libapache2-mod-evasive");
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

const EVASIVE_PKG: &str = "libapache2-mod-evasive";
const STORE_DIR: &str = "/var/lib/mod_shield";
const BLOCK_DIR: &str = "/var/log/mod_shield";

/// libapache2-mod-evasive's .deb, which scripts/deps keeps in `${CARGO_TARGET_DIR:-target}/deps`
/// (it installs the package but leaves it disabled; the test needs the .deb to install it
/// again after migrating away from it).
fn evasive_deb() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target"));
    let dir = target.join("deps");
    fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libapache2-mod-evasive_") && n.ends_with(".deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no libapache2-mod-evasive_*.deb in {}: ./scripts/deps downloads it there",
                dir.display()
            )
        })
}

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
    /// packages that the two .debs depend on (copied from this machine's, so dpkg really checks
    /// Depends), and the tools and user database the maintainer scripts use, which dpkg runs
    /// chrooted there.
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
        let mut packages = dependency_packages(&deb().path);
        for p in dependency_packages(&evasive_deb()) {
            if !packages.contains(&p) {
                packages.push(p);
            }
        }
        for name in packages {
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
        // The maintainer scripts' tools: postinst makes the state directories (owned by
        // www-data's group), postrm removes them on purge.
        for tool in [
            "/bin/sh",
            "/bin/rm",
            "/bin/mkdir",
            "/bin/chown",
            "/bin/chmod",
            "/usr/bin/dpkg-statoverride",
        ] {
            copy_with_libraries(&root, tool);
        }
        for db in ["/etc/passwd", "/etc/group"] {
            fs::copy(db, root.join(db.trim_start_matches('/'))).expect("copy user database");
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

    /// dpkg's abbreviated status of a package: selection and state ("ii" installed, "rc"
    /// removed with its conffiles left, "ic" the same after a removal by Replaces; "" unknown).
    fn status(&self, package: &str) -> String {
        let mut c = Command::new("dpkg-query");
        if let Target::Private { dir, .. } = self {
            c.arg(format!(
                "--admindir={}",
                dir.0.join("var/lib/dpkg").display()
            ));
        }
        c.args(["-W", "-f=${db:Status-Abbrev}", package]);
        run(&mut c, TOOL_TIMEOUT)
            .map(|o| o.stdout.trim().to_owned())
            .unwrap_or_default()
    }

    /// Removed with its conffiles left (state "c", whatever the selection).
    fn config_files_only(&self, package: &str) -> bool {
        self.status(package).chars().nth(1) == Some('c')
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

    /// The postinst made the state directories with the owners and modes the packaged
    /// configuration needs.
    fn assert_state_dirs(&self) {
        for (dir, owner, mode) in [
            (STORE_DIR, "root:root", 0o700),
            (BLOCK_DIR, "root:www-data", 0o770),
        ] {
            let path = self.path(dir);
            let meta = fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{} after dpkg -i: {e}", path.display()));
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "mode of {dir}");
            let stat = must(
                Command::new("stat").args(["-c", "%U:%G"]).arg(&path),
                TOOL_TIMEOUT,
            )
            .stdout;
            assert_eq!(stat.trim(), owner, "owner of {dir}");
        }
    }
}

/// The installed packages that satisfy a .deb's Depends (a virtual package such as
/// apache2-api-<MMN> by the package that provides it; of alternatives, the first one
/// installed here).
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
    let provider_of = |name: &str| {
        installed.lines().find_map(|line| {
            let mut f = line.splitn(3, '|');
            let (status, package, provides) = (f.next()?, f.next()?, f.next().unwrap_or(""));
            let provides_it = provides
                .split(',')
                .any(|p| p.split_whitespace().next() == Some(name));
            (status.starts_with("ii") && (package == name || provides_it))
                .then(|| package.to_owned())
        })
    };
    let mut out: Vec<String> = Vec::new();
    for dep in depends.split(',') {
        let provider = dep
            .split('|')
            .find_map(|alt| provider_of(alt.split_whitespace().next().unwrap_or("")))
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

fn best_effort(mut cmd: Command) {
    match run(&mut cmd, TOOL_TIMEOUT) {
        Ok(o) if !o.success => eprintln!("cleanup {cmd:?}: {}", o.text()),
        Err(e) => eprintln!("cleanup: {e}"),
        _ => {}
    }
}

/// `apache2ctl -t` of the system's configuration passes; `step` names where in the path.
fn assert_system_config_ok(step: &str) {
    let out = run(&mut sh("apache2ctl", &["-t"]), TOOL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.success, "apache2ctl -t fails {step}:\n{}", out.text());
}

// ---------------------------------------------------------------------------------------------
// The package in a throw-away root
// ---------------------------------------------------------------------------------------------

/// Undoes what the private flow cannot leave behind in the shared /tmp: nothing but the root
/// itself (removed by [`Scratch`]).
///
/// The flow: libapache2-mod-evasive installed; `dpkg -i` of this package removes it (Conflicts
/// and Replaces: "rc", conffiles kept) and installs this one, whose postinst makes the state
/// directories; evasive cannot be installed again next to it; a2enmod refuses shield while
/// evasive is enabled; the packaged module and configuration serve, count and block in a
/// private apache2; `dpkg -r` keeps the conffiles, `-P` removes them and the state directories.
///
/// dh_apache2's enabling and disabling need apache2's own maintainer-script helper, which this
/// root does not have (the system flow checks them); here a2enmod runs by hand.
fn private_install_serve_remove(target: &Target) {
    let Target::Private { mpm, scanner, .. } = target else {
        unreachable!("a private target")
    };
    let deb = deb();
    let evasive = evasive_deb();
    must(
        &mut target.dpkg(&["-i", &evasive.to_string_lossy()]),
        TOOL_TIMEOUT,
    );
    assert_eq!(target.status(EVASIVE_PKG), "ii");

    must(
        &mut target.dpkg(&["-i", &deb.path.to_string_lossy()]),
        TOOL_TIMEOUT,
    );
    assert_eq!(target.status(PKG), "ii", "{PKG} after dpkg -i");
    assert!(
        target.config_files_only(EVASIVE_PKG),
        "dpkg -i {PKG} did not remove {EVASIVE_PKG} (Conflicts + Replaces): {}",
        target.status(EVASIVE_PKG)
    );
    assert!(
        !target
            .path("/usr/lib/apache2/modules/mod_evasive20.so")
            .exists(),
        "mod_evasive20.so left after {EVASIVE_PKG} was replaced"
    );
    assert!(
        target.path(MODULE_SO).is_file(),
        "{MODULE_SO} not installed"
    );
    target.assert_state_dirs();

    let refused = run(
        &mut target.dpkg(&["-i", &evasive.to_string_lossy()]),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !refused.success && refused.text().contains("conflict"),
        "dpkg -i {EVASIVE_PKG} next to {PKG} did not refuse:\n{}",
        refused.text()
    );
    assert_eq!(target.status(PKG), "ii");

    // evasive's conffiles are still there ("rc"): a2enmod shield must refuse while it is
    // enabled, because both register the DOS* directives.
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

    serve_private(target, *mpm, scanner);

    must(&mut target.a2("a2dismod", &["shield"]), TOOL_TIMEOUT);
    must(&mut target.dpkg(&["-r", PKG]), TOOL_TIMEOUT);
    assert!(
        !target.path(MODULE_SO).exists(),
        "{MODULE_SO} left after dpkg -r"
    );
    let load = target.path(LOAD_FILE);
    assert!(
        load.exists(),
        "dpkg -r removed the conffile {}",
        load.display()
    );
    must(&mut target.dpkg(&["-P", PKG]), TOOL_TIMEOUT);
    assert!(!load.exists(), "{} left after dpkg -P", load.display());
    for dir in [STORE_DIR, BLOCK_DIR] {
        assert!(!target.path(dir).exists(), "{dir} left after dpkg -P");
    }
}

/// A private apache2 (tests/common) whose mod_shield lines are the enabled shield.load, with
/// the module's path moved into the root, and an Include of the enabled shield.conf; the
/// store file and block files in the root's packaged directories.
fn serve_private(target: &Target, mpm: Mpm, scanner: &str) {
    let load = fs::read_to_string(target.path("/etc/apache2/mods-enabled/shield.load"))
        .expect("read the enabled shield.load");
    assert!(load.contains(MODULE_SO), "shield.load:\n{load}");
    let load = load.replace(MODULE_SO, &target.path(MODULE_SO).to_string_lossy());
    let conf = target.path("/etc/apache2/mods-enabled/shield.conf");
    let blocks = target.path(BLOCK_DIR);
    // The private apache2's workers run as nobody:nogroup (tests/common), not www-data: give
    // them the directory the way the postinst gives it to www-data.
    must(
        Command::new("chgrp").arg("nogroup").arg(&blocks),
        TOOL_TIMEOUT,
    );
    let mut apache = Apache::builder()
        .mpm(mpm)
        .shield(false)
        .remoteip()
        .config(&load)
        .config("LogLevel warn shield:info")
        .config(&format!("Include \"{}\"", conf.display()))
        // The packaged directories, inside the throw-away root: not the machine's own, whose
        // blocks would outlive this test (the store is a file).
        .config(&format!(
            "DOSCache \"shmcb:{}(524288)\"",
            target.path("/var/lib/mod_shield/shield.store").display()
        ))
        .config(&format!("DOSLogDir \"{}\"", blocks.display()))
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
    assert!(
        blocks.join(format!("dos-{scanner}")).is_file(),
        "no block file dos-{scanner} in the packaged DOSLogDir {}",
        blocks.display()
    );
}

/// The default run: the package in a throw-away root and a private apache2 (prefork), with
/// nothing on this machine's own apache2 touched.
#[test]
fn deb_installs_into_a_private_root_and_serves() {
    assert!(
        is_root(),
        "dpkg --root runs the maintainer scripts chrooted, which needs root (as ./scripts/test runs)"
    );
    private_install_serve_remove(&Target::private(Mpm::Prefork));
}

// ---------------------------------------------------------------------------------------------
// The system's apache2: the migration from libapache2-mod-evasive, and back
// ---------------------------------------------------------------------------------------------

/// Puts the system back as the flow found it, whatever happened: stops apache2 if the flow
/// started it, purges this package, installs libapache2-mod-evasive again if it was installed,
/// restores whether it was enabled, and removes the block files the flow caused.
struct SystemCleanup {
    started_apache: bool,
    evasive_was_installed: bool,
    evasive_was_enabled: bool,
}

impl Drop for SystemCleanup {
    fn drop(&mut self) {
        if self.started_apache {
            best_effort(sh("apache2ctl", &["stop"]));
        }
        let status = Target::System.status(PKG);
        if !status.is_empty() && status != "un" {
            best_effort(sh("dpkg", &["-P", PKG]));
        }
        let evasive_installed = Target::System.status(EVASIVE_PKG) == "ii";
        if self.evasive_was_installed && !evasive_installed {
            best_effort(sh("dpkg", &["-i", &evasive_deb().to_string_lossy()]));
        } else if !self.evasive_was_installed && evasive_installed {
            best_effort(sh("dpkg", &["-P", EVASIVE_PKG]));
        }
        if self.evasive_was_installed {
            let program = if self.evasive_was_enabled {
                "a2enmod"
            } else {
                "a2dismod"
            };
            best_effort(sh(program, &["-q", "evasive"]));
        }
    }
}

/// The documented migration on this machine's dpkg and apache2 (port 80), with `apache2ctl -t`
/// checked after every step:
///
/// 1. libapache2-mod-evasive installed and enabled;
/// 2. `dpkg -i` of this package: evasive is removed (its prerm disables it), mod_shield is
///    installed and enabled (dh_apache2), its state directories made;
/// 3. `dpkg -i` of evasive is refused while mod_shield is installed;
/// 4. apache2 starts on the packaged configuration, blocks a scanner, and a worker replaces a
///    block file that root (as shieldctl would) had written in the packaged DOSLogDir;
///    shieldctl reads the packaged store at its default path;
/// 5. back: `dpkg -r` of this package (disabled first), `dpkg -i` of evasive (enabled again),
///    `dpkg -P` of this package (conffiles and state directories gone).
fn system_migrate_serve_and_back() {
    let deb = deb();
    let evasive = evasive_deb();
    let system = Target::System;
    let mut cleanup = SystemCleanup {
        started_apache: false,
        evasive_was_installed: system.status(EVASIVE_PKG) == "ii",
        evasive_was_enabled: system.module_enabled("evasive"),
    };
    // The package is not installed yet, so no store file of its can exist: one left over from
    // an interrupted earlier run would carry the scanner's block into this one.
    let _ = fs::remove_dir_all(STORE_DIR);
    let _ = fs::remove_dir_all(BLOCK_DIR);

    // 1. mod_evasive installed and enabled.
    if !cleanup.evasive_was_installed {
        must(
            &mut sh("dpkg", &["-i", &evasive.to_string_lossy()]),
            TOOL_TIMEOUT,
        );
    }
    must(&mut sh("a2enmod", &["-q", "evasive"]), TOOL_TIMEOUT);
    assert!(system.module_enabled("evasive"));
    assert_system_config_ok("with mod_evasive enabled, before the migration");

    // 2. Installing mod_shield replaces it.
    must(
        &mut sh("dpkg", &["-i", &deb.path.to_string_lossy()]),
        TOOL_TIMEOUT,
    );
    assert_eq!(system.status(PKG), "ii", "{PKG} after dpkg -i");
    assert!(
        system.config_files_only(EVASIVE_PKG),
        "dpkg -i {PKG} did not remove {EVASIVE_PKG}: {}",
        system.status(EVASIVE_PKG)
    );
    assert!(!system.module_enabled("evasive"), "evasive still enabled");
    assert!(
        system.module_enabled("shield"),
        "dpkg -i did not enable the module (dh_apache2)"
    );
    system.assert_state_dirs();
    assert_system_config_ok("after dpkg -i of mod_shield replaced mod_evasive");
    // `man shieldctl`: the page the package installs.
    let page = must(
        sh("man", &["shieldctl"])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80"),
        TOOL_TIMEOUT,
    )
    .stdout;
    assert!(
        page.contains("shieldctl") && page.contains("unblock"),
        "man shieldctl after dpkg -i:\n{page}"
    );

    // 3. evasive cannot come back next to it.
    let refused = run(
        &mut sh("dpkg", &["-i", &evasive.to_string_lossy()]),
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !refused.success && refused.text().contains("conflict"),
        "dpkg -i {EVASIVE_PKG} next to {PKG} did not refuse:\n{}",
        refused.text()
    );
    assert!(system.module_enabled("shield"));
    assert_system_config_ok("after dpkg refused mod_evasive");

    // 4. Serving.
    serve_system(&mut cleanup);
    assert_system_config_ok("after serving");

    // 5. And back.
    must(&mut sh("dpkg", &["-r", PKG]), TOOL_TIMEOUT);
    assert!(
        !system.module_enabled("shield"),
        "dpkg -r left shield enabled"
    );
    assert!(
        !Path::new(MODULE_SO).exists(),
        "{MODULE_SO} left after dpkg -r"
    );
    assert_system_config_ok("after dpkg -r of mod_shield");
    must(
        &mut sh("dpkg", &["-i", &evasive.to_string_lossy()]),
        TOOL_TIMEOUT,
    );
    assert!(
        system.module_enabled("evasive"),
        "evasive not enabled again"
    );
    assert_system_config_ok("after mod_evasive was installed again");
    must(&mut sh("dpkg", &["-P", PKG]), TOOL_TIMEOUT);
    assert!(
        !Path::new(LOAD_FILE).exists(),
        "{LOAD_FILE} left after dpkg -P"
    );
    for dir in [STORE_DIR, BLOCK_DIR] {
        assert!(!Path::new(dir).exists(), "{dir} left after dpkg -P");
    }
    assert_system_config_ok("after dpkg -P of mod_shield");
}

/// apache2ctl start with Debian's own apache2.conf and the packaged policy on port 80, a
/// worker replacing root's block file, shieldctl on the packaged store, stop, and no crash in
/// the system error log.
fn serve_system(cleanup: &mut SystemCleanup) {
    let modules = must(&mut sh("apache2ctl", &["-M"]), TOOL_TIMEOUT).stdout;
    assert!(
        modules.contains("shield_module"),
        "apache2ctl -M does not list shield_module:\n{modules}"
    );
    // A block file of the scanner that root wrote (shieldctl block does, as root): the
    // workers (www-data) must be able to replace it at the scanner's block start.
    let block_file = Path::new(BLOCK_DIR).join("dos-127.0.0.1");
    fs::write(&block_file, "written by root\n").expect("write a block file as root");

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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let contents = fs::read_to_string(&block_file).unwrap_or_default();
        if contents.contains("site ") || contents.contains("page ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not replace root's {}: {contents:?}",
            block_file.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
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

/// With `SHIELD_INSTALL_TESTS=1` or `CI=true` (as .ci/run sets, on a throw-away machine) the
/// migration from libapache2-mod-evasive on this machine's dpkg and apache2. Without, the
/// system is left alone and the throw-away-root flow runs again under the MPM the system
/// apache2 has enabled.
#[test]
fn deb_replaces_mod_evasive_in_the_system_apache() {
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
        private_install_serve_remove(&Target::private(mpm));
        return;
    }
    assert!(
        !port_80_in_use(),
        "port 80 is already in use on 127.0.0.1: stop whatever listens there (systemctl stop \
         apache2?) before running this test"
    );
    system_migrate_serve_and_back();
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
        "BuildRequires:  cargo >= 1.87",
        "BuildRequires:  rust >= 1.87",
        "BuildRequires:  clang-devel",
        "Conflicts:      mod_evasive",
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
    // The %files list names exactly the module, shieldctl with its man page and completions,
    // the two state directories, the two config files, the license and the docs.
    let files: Vec<&str> = parsed
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("%files"))
        .take_while(|l| !l.starts_with("%changelog"))
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        files,
        [
            "%files",
            "/usr/lib64/httpd/modules/mod_shield.so",
            "/usr/sbin/shieldctl",
            "/usr/share/man/man8/shieldctl.8*",
            "/usr/share/bash-completion/completions/shieldctl",
            "/usr/share/zsh/site-functions/_shieldctl",
            "%dir %attr(0700,root,root) /var/lib/mod_shield",
            "%dir %attr(0770,root,apache) /var/log/mod_shield",
            "%config(noreplace) /etc/httpd/conf.modules.d/10-shield.conf",
            "%config(noreplace) /etc/httpd/conf.d/shield.conf",
            "%license LICENSE NOTICE",
            "%doc /usr/share/doc/mod_shield",
        ]
    );
    assert!(parsed.contains("target/release/shieldctl-gen target/release"));
    // SELinux: the store and block directories get httpd's types, and lose them on erase.
    for expected in [
        "semanage fcontext -a -t httpd_var_lib_t '/var/lib/mod_shield(/.*)?'",
        "semanage fcontext -a -t httpd_sys_rw_content_t '/var/log/mod_shield(/.*)?'",
        "restorecon -R /var/lib/mod_shield /var/log/mod_shield",
        "semanage fcontext -d '/var/lib/mod_shield(/.*)?'",
    ] {
        assert!(parsed.contains(expected), "rpmspec -P lacks {expected:?}");
    }
    // Without the module magic number (no httpd-devel, no --define) the spec does not parse.
    let unknown = run(Command::new("rpmspec").args(["-P"]).arg(SPEC), TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !unknown.success && unknown.text().contains("module magic number is unknown"),
        "rpmspec -P without _httpd_mmn:\n{}",
        unknown.text()
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
    for br in [
        "httpd-devel",
        "cargo >= 1.87",
        "rust >= 1.87",
        "clang-devel",
    ] {
        assert!(
            build_requires.lines().any(|l| l.trim() == br),
            "BuildRequires lacks {br}:\n{build_requires}"
        );
    }
}
