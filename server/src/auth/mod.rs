//! Authentication and authorization: user passwords (argon2), access JWTs, refresh
//! tokens, agent credentials, and the extractors that put authorization in types.

pub mod cookie;
pub mod extract;
pub mod jwt;
pub mod keyfile;
pub mod password;
pub mod rate_limit;
pub mod sealed;
pub mod secrets;

pub use extract::{Admin, AgentAuth, Operator, RequireRole, UserAuth, Viewer};
