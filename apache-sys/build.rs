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

    let dirs = include_dirs();
    // The same defines apxs passes to modules (`apxs -q EXTRA_CPPFLAGS` on Debian).
    let defines = ["-DLINUX", "-D_REENTRANT", "-D_GNU_SOURCE"];

    // Only what mod_shield calls (apr_table_get: the DOSChallenge work reads request headers);
    // the types these reach are pulled in with them.
    let mut b = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("ap_(hook_(post_read_request|translate_name|type_checker|fixups|insert_error_filter|insert_filter|map_to_storage|log_transaction|handler|post_config|child_init|pre_config)|register_output_filter|add_output_filter_handle|remove_output_filter|send_error_response|log_error_|log_rerror_|get_request_module_loglevel|check_cmd_context|retained_data_(get|create)|state_query|lookup_provider)")
        .allowlist_function("ap_(rwrite|pass_brigade|set_content_type|mutex_register|global_mutex_create|get_module_config|set_module_config|custom_response|run_http_scheme|exists_scoreboard_image|get_scoreboard_worker_from_indexes|mpm_query)")
        .allowlist_function("apr_(brigade_(cleanup|create)|bucket_(immortal|transient|eos)_create|table_(setn|get)|pstrdup|pstrmemdup|palloc|pool_cleanup_register|pool_cleanup_null|time_now|global_mutex_(lock|unlock|child_init|lockfile)|strerror)")
        .allowlist_type("module_struct|command_struct|cmd_parms_struct|request_rec|server_rec|ap_socache_provider_t|ap_socache_instance_t|ap_socache_hints|worker_score")
        .allowlist_var("MODULE_MAGIC_.*|APR_HOOK_.*|OK|DECLINED|HTTP_.*|RSRC_CONF|ACCESS_CONF|GLOBAL_ONLY|NOT_IN_DIRECTORY|NOT_IN_FILES|NOT_IN_PROXY|APLOG_.*|AP_SQ_.*|AP_SOCACHE_.*|APR_NOTFOUND|APR_EGENERAL|M_GET|M_TRACE|M_OPTIONS|AP_CONN_.*|APR_LOCK_DEFAULT|SERVER_(DEAD|STARTING|READY|IDLE_KILL)|AP_MPMQ_(HARD_LIMIT_DAEMONS|HARD_LIMIT_THREADS|MAX_DAEMONS|MAX_THREADS)")
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
