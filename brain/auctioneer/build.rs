//! Points the library at the built-in auction policies (classic, binpack, spread) that
//! `diego-plugin-artifacts` builds from this repo's sources, so `src/policy.rs` can embed them
//! with `include_bytes!(env!(..))`: an installed binary needs no files next to it.

fn main() {
    for (var, path) in [
        ("DIEGO_POLICY_CLASSIC_WASM", diego_plugin_artifacts::CLASSIC),
        ("DIEGO_POLICY_BINPACK_WASM", diego_plugin_artifacts::BINPACK),
        ("DIEGO_POLICY_SPREAD_WASM", diego_plugin_artifacts::SPREAD),
    ] {
        println!("cargo:rerun-if-changed={path}");
        println!("cargo:rustc-env={var}={path}");
    }
}
