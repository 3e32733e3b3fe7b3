//! Building the browser bundle and the server.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{cargo, exec, root, server_binary, target_dir, Profile};

/// Where the bundle goes; the server embeds (release) or reads (debug) it from here.
pub fn site_pkg_dir() -> std::path::PathBuf {
    root().join("target/site/pkg")
}

/// The bundle, then the server.
pub fn run(release: bool) -> Result<()> {
    let profile = Profile::from_release(release);
    crate::setup::run(false)?;
    bundle(profile)?;
    let mut build = cargo();
    build.args(["build", "-p", "atelier-server", "-p", "atelier-agent"]);
    if release {
        build.arg("--release");
    }
    exec(&mut build)
}

/// Builds the release binary and runs `atelier serve` with `args`; with `--demo` among
/// them, `atelier demo` with the others (a studio seeded with the whole story).
pub fn start(args: &[String]) -> Result<()> {
    run(true)?;
    let demo = args.iter().any(|a| a == "--demo");
    let mut serve = Command::new(server_binary(Profile::Release));
    serve.arg(if demo { "demo" } else { "serve" }).args(args.iter().filter(|a| *a != "--demo"));
    exec(&mut serve)
}

/// Compiles the `frontend` crate to WASM and generates its JS glue, plus the CSS.
pub fn bundle(profile: Profile) -> Result<()> {
    let (cargo_profile, dir) = match profile {
        Profile::Dev => ("dev", "debug"),
        Profile::Release => ("wasm-release", "wasm-release"),
    };
    exec(cargo().args([
        "build",
        "-p",
        "frontend",
        "--lib",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        cargo_profile,
    ]))?;
    let wasm = target_dir().join("wasm32-unknown-unknown").join(dir).join("frontend.wasm");
    let out = site_pkg_dir();
    std::fs::create_dir_all(&out)?;
    // Regenerating rewrites the files, and a release server embeds them, so an
    // unchanged input must leave the outputs untouched: that keeps a second
    // `cargo xtask start` to seconds instead of a server rebuild.
    let stamp = out.join(".source");
    let source = stamp_of(&wasm, profile)?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(source.as_str()) || !out.join("atelier_bg.wasm").exists()
    {
        eprintln!("$ wasm-bindgen --target web --out-name atelier {}", wasm.display());
        wasm_bindgen_cli_support::Bindgen::new()
            .input_path(&wasm)
            .web(true)?
            .out_name("atelier")
            .debug(profile == Profile::Dev)
            .remove_name_section(profile == Profile::Release)
            .remove_producers_section(profile == Profile::Release)
            .generate(&out)
            .context("generating the JS bindings")?;
        std::fs::write(&stamp, source)?;
    }
    let css = std::fs::read(root().join("style/main.css")).context("reading style/main.css")?;
    if std::fs::read(out.join("atelier.css")).ok().as_deref() != Some(css.as_slice()) {
        std::fs::write(out.join("atelier.css"), css)?;
    }
    Ok(())
}

/// Identifies a compiled WASM file (size and modification time) and the profile.
fn stamp_of(wasm: &Path, profile: Profile) -> Result<String> {
    let meta = std::fs::metadata(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let modified = meta.modified()?.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    Ok(format!("{profile:?} {} {modified}", meta.len()))
}
