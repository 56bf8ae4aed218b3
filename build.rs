//! Builds the HTTP health probe (`probe/cm-probe.c`) as a static executable, which the server
//! embeds and installs at start-up (docs/API.md, `health.http`). It must run in any image
//! (no libc there, or another one), hence `-static`. Needs a C compiler and a static libc:
//! on Debian `gcc` and `libc6-dev` (the toolchain links Rust programs with them anyway).
//! `CM_PROBE_CC` names another compiler (`musl-gcc` makes a smaller probe).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=probe/cm-probe.c");
    println!("cargo:rerun-if-env-changed=CM_PROBE_CC");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("cm-probe");
    let cc = std::env::var("CM_PROBE_CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-o"])
        .arg(&out)
        .arg("probe/cm-probe.c")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the health probe failed ({cc} -static exited with {s}): install a C compiler and a static libc (Debian: apt-get install gcc libc6-dev)"
        ),
        Err(e) => panic!(
            "building the health probe needs a C compiler ({cc}: {e}); Debian: apt-get install gcc libc6-dev"
        ),
    }
}
