//! Builds every Wasm guest of the repo (policies, SDK examples, test guests) from source for
//! `wasm32-wasip2` and writes their paths as constants.
//!
//! Why a nested cargo here: guests must be built from this repo's sources by a plain
//! `cargo build`/`cargo test`, for another target. They live in their own workspace
//! (`policies/Cargo.toml`, own Cargo.lock) and build into their own target dir
//! (`target/wasm`), so the nested cargo never waits on the outer build's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant name, cargo package, wasm file stem)
const GUESTS: &[(&str, &str)] = &[
    ("CLASSIC", "diego_policy_classic"),
    ("BINPACK", "diego_policy_binpack"),
    ("SPREAD", "diego_policy_spread"),
    ("EXAMPLE_CUSTOM_POLICY", "diego_example_custom_policy"),
    ("EXAMPLE_CUSTOM_LIFECYCLE", "diego_example_custom_lifecycle"),
    ("LIFECYCLE_BUILDPACK", "diego_lifecycle_buildpack"),
    ("LIFECYCLE_DOCKER", "diego_lifecycle_docker"),
    ("TEST_LOOPER", "diego_test_guest_looper"),
    ("TEST_MEMBOMB", "diego_test_guest_membomb"),
    ("TEST_PANICKER", "diego_test_guest_panicker"),
    ("TEST_TRAPPER", "diego_test_guest_trapper"),
    ("TEST_RECURSER", "diego_test_guest_recurser"),
    ("TEST_INVALID", "diego_test_guest_invalid"),
    ("TEST_MAJOR9", "diego_test_guest_major9"),
    ("TEST_AUCTION01", "diego_test_guest_auction01"),
    ("TEST_LIFECYCLE_FAULTY", "diego_test_guest_lifecycle_faulty"),
    ("TEST_LIFECYCLE_MAJOR9", "diego_test_guest_lifecycle_major9"),
    (
        "TEST_LIFECYCLE_MISBEHAVING",
        "diego_test_guest_lifecycle_misbehaving",
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("plugin-sdk/artifacts sits two levels below the repo root")
        .to_path_buf();
    let guests_manifest = root.join("policies/Cargo.toml");
    let target_dir = root.join("target/wasm");

    for dir in [
        "policies",
        "plugin-sdk/src",
        "plugin-sdk/wit",
        "plugin-sdk/examples",
        "plugin-sdk/Cargo.toml",
        "lifecycles/buildpack",
        "lifecycles/docker",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target=wasm32-wasip2")
        .arg("--workspace")
        .arg("--manifest-path")
        .arg(&guests_manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags are for the host target, not for the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // Start guests with 4 MiB of linear memory (rustc's default is the 1 MiB stack plus
    // data): a 5,000-cell auction batch then fits without `memory.grow`, each of which costs
    // the host an `mprotect` on every fresh instance. Untouched pages cost nothing (the pool
    // resets only dirtied pages), and per-call memory caps are far above this.
    cmd.env(
        "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
        "-C link-arg=--initial-memory=4194304",
    );
    let output = cmd
        .output()
        .expect("could not run cargo to build the Wasm guests");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint =
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                "\nhint: run `rustup target add wasm32-wasip2`\n"
            } else {
                ""
            };
        panic!(
            "building the Wasm guests failed ({}):\n{stderr}{hint}",
            guests_manifest.display()
        );
    }

    let out_dir = target_dir.join("wasm32-wasip2/release");
    let mut src = String::new();
    for (name, stem) in GUESTS {
        let path = out_dir.join(format!("{stem}.wasm"));
        assert!(
            exists(&path),
            "guest build did not produce {}",
            path.display()
        );
        src.push_str(&format!(
            "/// `{stem}.wasm`, built from this repo's sources.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    src.push_str("/// Every guest: (constant name, path).\npub const ALL: &[(&str, &str)] = &[\n");
    for (name, _) in GUESTS {
        src.push_str(&format!("    ({name:?}, {name}),\n"));
    }
    src.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("artifacts.rs");
    std::fs::write(&dest, src).expect("could not write artifacts.rs");
}

fn exists(p: &Path) -> bool {
    p.is_file()
}
