//! Link flags of the module itself.
fn main() {
    // Keep the DSO mapped once loaded (`-z nodelete`): httpd unloads and reloads modules between
    // its configuration passes and on every restart; without this, whether Rust statics survive
    // depends on incidental thread-local destructors. With it, the lifetime is
    // deterministic: process-long. (It also means `graceful` never picks up a rebuilt .so.)
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rerun-if-changed=build.rs");
}
