//! farmctl: declarative plan/apply for server farms over SSH.
pub mod edit;
pub mod farm;
pub mod live;
pub mod transport;
pub mod plan;
