//! Test helpers: start etcd (one member or a cluster), BBS processes, temp dirs
