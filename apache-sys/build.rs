//! Generates the httpd/APR bindings from the headers of the installed httpd, found the
//! way httpd's own tooling finds them: `apxs -q INCLUDEDIR` and `apr-1-config --includes`
//! (override with APXS / APR_CONFIG, or APACHE_INCLUDE_DIRS as a colon-separated list).
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn query(tool: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(tool).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn include_dirs() -> Vec<String> {
    if let Ok(dirs) = env::var("APACHE_INCLUDE_DIRS") {
        return dirs
            .split(':')
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect();
    }
    let apxs = env::var("APXS").unwrap_or_else(|_| "apxs".into());
    let apr = env::var("APR_CONFIG").unwrap_or_else(|_| "apr-1-config".into());
    let mut dirs = Vec::new();
    match query(&apxs, &["-q", "INCLUDEDIR"]) {
        Some(d) if !d.is_empty() => dirs.push(d),
        _ => panic!("apache-sys: `{apxs} -q INCLUDEDIR` failed: install apache2-dev (Debian) or httpd-devel"),
    }
    match query(&apr, &["--includes"]) {
        Some(flags) => dirs.extend(
            flags
                .split_whitespace()
                .filter_map(|f| f.strip_prefix("-I"))
                .map(String::from),
        ),
        None => panic!("apache-sys: `{apr} --includes` failed: install libapr1-dev"),
    }
    dirs
}

fn main() {
    for var in ["APXS", "APR_CONFIG", "APACHE_INCLUDE_DIRS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");

    let dirs = include_dirs();
    // The same defines apxs passes to modules (`apxs -q EXTRA_CPPFLAGS` on Debian).
    let defines = ["-DLINUX", "-D_REENTRANT", "-D_GNU_SOURCE"];

    let mut cc = cc::Build::new();
    cc.file("shim.c").include(".");
    for d in &dirs {
        cc.include(d);
    }
    for d in defines {
        cc.flag(d);
    }
    cc.compile("shield_shim");

    let mut b = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg("-I.")
        .allowlist_function("ap_(hook_(post_read_request|fixups|log_transaction|handler|post_config|child_init|pre_config)|log_error_|log_rerror_|get_server_module_loglevel|get_request_module_loglevel|check_cmd_context|retained_data_(get|create)|state_query|lookup_provider|rwrite|set_content_type|mpm_query|getword_conf|get_server_name|escape_html2|mutex_register|global_mutex_create|register_provider|list_provider_names|get_module_config|set_module_config)")
        .allowlist_function("apr_(table_(setn|set|get|unset|add|addn)|pstrdup|pstrndup|pstrmemdup|palloc|pcalloc|pool_cleanup_register|pool_cleanup_null|time_now|global_mutex_(lock|unlock|child_init|lockfile)|pool_userdata_(get|set)|strerror|pool_create_ex|pool_destroy|pool_clear|hook_debug_current)")
        .allowlist_function("shield_shim_.*")
        .allowlist_type("module_struct|command_struct|cmd_parms_struct|request_rec|conn_rec|server_rec|process_rec|ap_socache_provider_t|ap_socache_instance_t|ap_socache_hints|ap_list_provider_names_t|ap_directive_t")
        .allowlist_var("MODULE_MAGIC_.*|APR_HOOK_.*|OK|DECLINED|DONE|HTTP_.*|RSRC_CONF|ACCESS_CONF|OR_.*|GLOBAL_ONLY|NOT_IN_.*|APLOG_.*|AP_SQ_.*|AP_SOCACHE_.*|APR_SUCCESS|APR_NOTFOUND|APR_EGENERAL|M_GET|M_POST|AP_MPMQ_.*|AP_CONN_.*|AP_STATUS_.*|APR_LOCK_DEFAULT|ap_server_root")
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false);
    for d in &dirs {
        b = b.clang_arg(format!("-I{d}"));
    }
    for d in defines {
        b = b.clang_arg(d);
    }
    let bindings = b
        .generate()
        .expect("apache-sys: bindgen failed on the httpd headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings
        .write_to_file(out)
        .expect("apache-sys: cannot write bindings.rs");
}
