//! Write diego plug-ins in a few typed lines.
//!
//! A plug-in is a Wasm component built with plain `cargo build --target wasm32-wasip2`. This
//! crate carries the WIT (`wit/`, the single source of truth for both worlds), the generated
//! guest bindings, and the glue that keeps a plug-in short:
//!
//! - **Auction policy** (feature `policy`): implement [`Policy`] on plain Rust data
//!   ([`scoring::Batch`] in, one [`scoring::Outcome`] per work item out) and call
//!   [`export_policy!`]. The batch's wire bytes are decoded for you, and the same code runs
//!   natively in `cargo test`.
//! - **Lifecycle** (feature `lifecycle`): implement [`lifecycle::Guest`] (describe, stage,
//!   resume-staging, launch, healthcheck), build action plans with [`plan::PlanBuilder`], log
//!   with [`lifecycle::log`], and call [`export_lifecycle!`].
//!
//! Enable only the feature of the world you export (`default-features = false`): each world's
//! bindings embed its type information, and a policy must not import lifecycle's `log`.
//!
//! See `docs/plugins.md` for the how-to and `plugin-sdk/examples/` for worked examples.

// The generated bindings and export macros name this crate by its path, so that they also
// work from the plug-in crate (which depends on us, not on wit-bindgen).
extern crate self as diego_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[cfg(feature = "policy")]
#[doc(hidden)]
pub mod __auction_bindings {
    wit_bindgen::generate!({
        path: "wit/auction",
        world: "auction-policy",
        pub_export_macro: true,
        export_macro_name: "__export_auction_policy",
        default_bindings_module: "diego_plugin_sdk::__auction_bindings",
        runtime_path: "diego_plugin_sdk::__wit_bindgen::rt",
        bitflags_path: "diego_plugin_sdk::__wit_bindgen::rt::bitflags",
    });
}

#[cfg(feature = "lifecycle")]
#[doc(hidden)]
pub mod __lifecycle_bindings {
    wit_bindgen::generate!({
        path: "wit/lifecycle",
        world: "lifecycle",
        pub_export_macro: true,
        export_macro_name: "__export_lifecycle",
        default_bindings_module: "diego_plugin_sdk::__lifecycle_bindings",
        runtime_path: "diego_plugin_sdk::__wit_bindgen::rt",
        bitflags_path: "diego_plugin_sdk::__wit_bindgen::rt::bitflags",
    });
}

#[cfg(feature = "policy")]
mod policy;
#[cfg(feature = "policy")]
#[doc(hidden)]
pub use policy::glue as __policy_glue;
#[cfg(feature = "policy")]
pub use policy::{Policy, PolicyInfo};

/// The pure-Rust batch model and Diego's classic scoring, to build on or compare against.
#[cfg(feature = "policy")]
pub use diego_auction_scoring as scoring;

/// The raw `diego:auction/policy` WIT types, for policies that want to read the batch's bytes
/// themselves (layout: `scoring::wire`).
#[cfg(feature = "policy")]
pub mod auction {
    pub use crate::__auction_bindings::exports::diego::auction::policy::*;
}

#[cfg(feature = "lifecycle")]
pub mod lifecycle;
#[cfg(feature = "lifecycle")]
pub mod plan;

/// Exports `$ty`, which implements [`Policy`], as the component's `diego:auction/policy`.
#[cfg(feature = "policy")]
#[macro_export]
macro_rules! export_policy {
    ($ty:ident) => {
        impl $crate::auction::Guest for $ty {
            fn describe() -> $crate::auction::PolicyInfo {
                $crate::__policy_glue::describe::<$ty>()
            }

            fn place(batch: ::std::vec::Vec<u8>) -> ::std::vec::Vec<$crate::auction::Outcome> {
                $crate::__policy_glue::place::<$ty>(batch)
            }
        }

        $crate::__auction_bindings::__export_auction_policy!($ty);
    };
}

/// Exports `$ty`, which implements [`lifecycle::Guest`], as the component's
/// `diego:lifecycle/plugin`.
#[cfg(feature = "lifecycle")]
#[macro_export]
macro_rules! export_lifecycle {
    ($ty:ident) => {
        $crate::__lifecycle_bindings::__export_lifecycle!($ty);
    };
}
