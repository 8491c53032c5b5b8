//! Built against `diego:auction@9.0.0`, a major the host does not know: loading must fail with
//! a clear message, before anything runs.

wit_bindgen::generate!({ path: "wit", world: "auction-policy" });

use exports::diego::auction::policy::Guest;

struct Major9;

impl Guest for Major9 {
    fn place_v9(cells: u32) -> Vec<u32> {
        (0..cells).collect()
    }
}

export!(Major9);
