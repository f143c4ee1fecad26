//! Every end-to-end test, in one binary: each starts a real `switchyard`
//! process on a scratch services and data folder, with real components built
//! from source, and talks HTTP to it. One module per area; `support` holds
//! what they share.

mod support;

mod hardening;
mod limits;
mod loading;
mod operations;
mod shop;
mod storage;
mod swap;
