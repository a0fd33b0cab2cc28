//! Embeds the XDP object built by `cargo xtask build` (or by hand, see `ebpf/xdp`).
//!
//! `RELAY_EBPF_OBJECT` names the object (an absolute path); it is copied to
//! `$OUT_DIR/relay-xdp.o`, which `src/lib.rs` includes. Without it an empty file is written
//! there, and the crate builds without XDP programs: `relay_steer::object()` then returns
//! `SteerError::NotBuilt`, so plain `cargo build` / `cargo test` work without nightly.

use std::{env, fs, path::PathBuf, process};

const ENV: &str = "RELAY_EBPF_OBJECT";

fn main() {
    println!("cargo:rerun-if-env-changed={ENV}");
    let Some(out_dir) = env::var_os("OUT_DIR") else {
        fail("OUT_DIR is not set (this script runs under cargo)");
    };
    let out = PathBuf::from(out_dir).join("relay-xdp.o");

    match env::var_os(ENV).filter(|value| !value.is_empty()) {
        Some(object) => {
            let object = PathBuf::from(object);
            if !object.is_absolute() {
                fail(&format!(
                    "{ENV}={} must be an absolute path",
                    object.display()
                ));
            }
            println!("cargo:rerun-if-changed={}", object.display());
            let bytes = match fs::read(&object) {
                Ok(bytes) => bytes,
                Err(error) => fail(&format!("{ENV}={}: {error}", object.display())),
            };
            if !bytes.starts_with(b"\x7fELF") {
                fail(&format!("{ENV}={} is not an ELF object", object.display()));
            }
            if let Err(error) = fs::write(&out, bytes) {
                fail(&format!("writing {}: {error}", out.display()));
            }
        }
        None => {
            if let Err(error) = fs::write(&out, b"") {
                fail(&format!("writing {}: {error}", out.display()));
            }
            println!(
                "cargo:warning=relay-steer is built without XDP programs ({ENV} is not set); \
                 run `cargo xtask build` to build and embed them"
            );
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("relay-steer build script: {message}");
    process::exit(1);
}
