//! Pure functions from API answers to what the components show. No web-sys here: this
//! module is tested natively with `cargo test -p canopy-frontend`.

pub mod actions;
pub mod admin;
pub mod detail;
pub mod loaded;
pub mod operation;
pub mod operations;
pub mod page;
pub mod tree;
