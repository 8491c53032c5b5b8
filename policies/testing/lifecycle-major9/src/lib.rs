//! Built against `diego:lifecycle@9.0.0`, a major the host does not know: adding it must fail
//! with a clear message, before anything runs.

wit_bindgen::generate!({ path: "wit", world: "lifecycle" });

use exports::diego::lifecycle::plugin::Guest;

struct Major9;

impl Guest for Major9 {
    fn describe_v9() -> String {
        "major9".to_owned()
    }
}

export!(Major9);
