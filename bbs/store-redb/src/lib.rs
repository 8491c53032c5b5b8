//! The embedded store: a diego-store backend on redb, on local disk
