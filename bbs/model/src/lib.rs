//! Diego's records, requests, errors, events and action language: the BBS wire types
