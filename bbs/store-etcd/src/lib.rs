//! The etcd store: a diego-store backend on etcd v3
