//! Points the library at the built-in lifecycle components (buildpack, docker) that
//! `diego-plugin-artifacts` builds from this repo's sources, so `src/lifecycles.rs` can embed
//! them with `include_bytes!(env!(..))`: an installed binary needs no files next to it.

fn main() {
    for (var, path) in [
        (
            "DIEGO_LIFECYCLE_BUILDPACK_WASM",
            diego_plugin_artifacts::LIFECYCLE_BUILDPACK,
        ),
        (
            "DIEGO_LIFECYCLE_DOCKER_WASM",
            diego_plugin_artifacts::LIFECYCLE_DOCKER,
        ),
    ] {
        println!("cargo:rerun-if-changed={path}");
        println!("cargo:rustc-env={var}={path}");
    }
}
