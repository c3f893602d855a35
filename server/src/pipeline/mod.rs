//! The update pipeline around the store: validating agent reports, the long-poll
//! check-in, background jobs (command timeouts, token and event clean-up) and the
//! first-admin bootstrap.

pub mod bootstrap;
pub mod checkin;
pub mod jobs;
pub mod report;
