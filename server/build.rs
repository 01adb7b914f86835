//! Link settings that make the release `skiffd` smaller without making it
//! slower (BENCHMARKS.md §14 has the sizes):
//!
//! - `--icf=all`: functions that compile to identical bytes (generic
//!   copies, mostly) are kept once.
//! - `unwind.ld` drops the unwind tables. Under `panic = "abort"` nothing
//!   unwinds; the tables only let a panic's backtrace list frames, which
//!   in a stripped binary are bare addresses anyway. A build that keeps its
//!   symbols for profiling (`CARGO_PROFILE_RELEASE_STRIP=false`) keeps the
//!   tables too, so that perf and gdb can walk the stack.
//!
//! - `-z pack-relative-relocs` (RELR): the relocations a position-
//!   independent binary needs at start are packed into a bitmap instead of
//!   24 bytes each. The loader must know the format: glibc 2.36 or later
//!   (Debian 12, Ubuntu 22.10), which marks it with the version
//!   `GLIBC_ABI_DT_RELR`. It is used only when the C library this build
//!   links against has that version, so the binary runs where it is built;
//!   copied to a host with an older glibc, it refuses to start, naming the
//!   missing version.
//!
//! All are options of lld, the linker rustc uses by itself on
//! x86_64-unknown-linux-gnu since Rust 1.90. With any other linker (an
//! older rustc, another target, a linker chosen in the environment or in a
//! Cargo config) nothing is added, and the binary is only larger.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=unwind.ld");
    println!("cargo::rerun-if-env-changed=CARGO_PROFILE_RELEASE_STRIP");
    if env::var("PROFILE").as_deref() != Ok("release") || !links_with_rusts_own_lld() {
        return;
    }
    println!("cargo::rustc-link-arg-bins=-Wl,--icf=all");
    if glibc_knows_relr() {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let keeps_symbols = matches!(
        env::var("CARGO_PROFILE_RELEASE_STRIP").as_deref(),
        Ok("false" | "none" | "debuginfo")
    );
    if !keeps_symbols {
        let script = format!(
            "{}/unwind.ld",
            env::var("CARGO_MANIFEST_DIR").unwrap_or_default()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,-T,{script}");
    }
}

/// Whether the binary will be linked by the lld that comes with rustc:
/// the target is x86_64-unknown-linux-gnu, rustc is 1.90 or later and has
/// its lld (a distribution's rustc may not), and no linker was chosen
/// (`RUSTC_LINKER`, or a linker flag in RUSTFLAGS).
fn links_with_rusts_own_lld() -> bool {
    let target = env::var("TARGET").unwrap_or_default();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu"
        || env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("link")
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let ask = |arg: &str| Command::new(&rustc).arg(arg).output().ok();
    let Some(sysroot) = ask("--print=sysroot") else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let lld = format!("{sysroot}/lib/rustlib/{target}/bin/gcc-ld/ld.lld");
    let Some(out) = ask("-vV").filter(|_| std::path::Path::new(&lld).exists()) else {
        return false;
    };
    // "release: 1.95.0" (or "1.96.0-nightly")
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .lines()
        .find_map(|line| line.strip_prefix("release: 1."))
        .and_then(|rest| rest.split('.').next())
        .and_then(|minor| minor.parse::<u32>().ok());
    minor.is_some_and(|minor| minor >= 90)
}

/// Whether the C library the binary links against can load packed
/// relative relocations (it defines the symbol version
/// `GLIBC_ABI_DT_RELR`, glibc 2.36 and later).
fn glibc_knows_relr() -> bool {
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/usr/lib64/libc.so.6",
    ]
    .iter()
    .find_map(|path| std::fs::read(path).ok());
    libc.is_some_and(|bytes| bytes.windows(17).any(|w| w == b"GLIBC_ABI_DT_RELR"))
}
