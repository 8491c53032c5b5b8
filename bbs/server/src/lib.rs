//! The BBS: records, state machines, the HTTP API and the event stream
