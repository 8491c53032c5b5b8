//! A typed client for the BBS HTTP API and its event stream
