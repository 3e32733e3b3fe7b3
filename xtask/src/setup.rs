//! Installs what the build and the tests need, idempotently: each step first checks
//! whether its tool is already there.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{exec, on_path, root};

/// `browser`: also Chromium and the Playwright package (for the browser tests).
pub fn run(browser: bool) -> Result<()> {
    wasm_target()?;
    // Agents run users' code in bubblewrap sandboxes (`setpriv` from util-linux drops a
    // root agent's sandboxes to their own uid; Debian always has it).
    if !on_path("bwrap") {
        apt_install(&["bubblewrap"])?;
    }
    if browser {
        if !std::path::Path::new("/usr/bin/chromium").exists() {
            apt_install(&["chromium"])?;
        }
        npm_install()?;
    }
    Ok(())
}

fn wasm_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown") => Ok(()),
        Ok(_) => exec(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"])),
        Err(_) => bail!("rustup not found: install the wasm32-unknown-unknown target for your Rust toolchain"),
    }
}

/// Installs Debian packages (as root, or through sudo).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    if !on_path("apt-get") {
        bail!("please install {} (no apt-get on this machine)", packages.join(", "));
    }
    let sudo = if is_root() { None } else { Some("sudo") };
    let apt = |args: &[&str]| {
        let mut cmd = match sudo {
            Some(s) => {
                let mut c = Command::new(s);
                c.arg("apt-get");
                c
            }
            None => Command::new("apt-get"),
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    exec(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(packages);
    exec(&mut install)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn npm_install() -> Result<()> {
    let dir = root().join("end2end");
    if dir.join("node_modules/@playwright/test/package.json").exists() {
        return Ok(());
    }
    if !on_path("npm") {
        bail!("npm not found: install Node.js 18+ for the browser tests");
    }
    // Playwright must use the system Chromium; never download a browser.
    exec(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
    )
}
