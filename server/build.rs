//! Makes sure the browser bundle folder exists before `src/assets.rs` is compiled:
//! rust-embed resolves the folder at compile time, and a server compiled before the
//! first `cargo xtask build` (clippy, tests) must still find the bundle once built.

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let pkg = std::path::Path::new(&manifest_dir).join("../target/site/pkg");
    if let Err(err) = std::fs::create_dir_all(&pkg) {
        println!("cargo:warning=cannot create {}: {err}", pkg.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
