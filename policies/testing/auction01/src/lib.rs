//! Built against `diego:auction@0.1.0`, the major before the byte-list batch: loading must fail
//! with a message asking for a rebuild, before anything runs.

wit_bindgen::generate!({ path: "wit", world: "auction-policy" });

use exports::diego::auction::policy::{Cell, Guest};

struct Auction01;

impl Guest for Auction01 {
    fn place(cells: Vec<Cell>) -> Vec<u32> {
        cells.iter().map(|c| c.zone).collect()
    }
}

export!(Auction01);
