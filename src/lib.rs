//! farmctl: declarative plan/apply for server farms over SSH.
pub mod edit;
pub mod farm;
pub mod live;
pub mod transport;
pub mod plan;
pub mod render;
pub mod apply;
pub mod app;
pub mod cli;
