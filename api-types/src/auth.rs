//! Users, sessions and registration tokens.

use crate::{RegistrationTokenId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "viewer" => Self::Viewer,
            "operator" => Self::Operator,
            "admin" => Self::Admin,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Answer to login and refresh. The refresh token is rotated on every refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TokenPair {
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    pub user: User,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub role: Role,
    /// A disabled user cannot log in, refresh or use an access token issued earlier.
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateUserRequest {
    pub username: String,
    pub password: String,
    pub role: Role,
}

/// `POST /api/v1/registration-tokens` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateRegistrationToken {
    #[serde(default)]
    pub label: String,
    /// How many agents may register with it.
    pub seats: u32,
    /// Lifetime in seconds.
    pub expires_in_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegistrationToken {
    pub id: RegistrationTokenId,
    pub label: String,
    pub seats: u32,
    pub seats_used: u32,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    /// When an admin revoked it (`canopy token revoke`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The guest this token may enrol (deploy tokens); an agent registering with it is
    /// attached to that guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_id: Option<crate::GuestId>,
}

/// The only time the token's secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreatedRegistrationToken {
    pub token: String,
    pub info: RegistrationToken,
}

/// `PUT /api/v1/users/{username}/role` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SetRoleRequest {
    pub role: Role,
}

/// `PUT /api/v1/users/{username}/password` (admin, for anyone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SetPasswordRequest {
    pub password: String,
}

/// `POST /api/v1/me/password`: a user changes their own password, proving the current
/// one. The answer is a fresh [`TokenPair`]: every other session of the user ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

/// What a change to a user's account did to their sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccountChange {
    /// The user as it is now (absent after a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Refresh tokens revoked by the change; access tokens issued before it stop
    /// working at once.
    pub revoked_refresh_tokens: u64,
}

/// Answer to `POST /api/v1/auth/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LogoutResponse {
    /// `false` when the refresh token was unknown or already revoked.
    pub revoked: bool,
}

/// `POST /auth/session` and `POST /auth/session/refresh`: the dashboard's session. The
/// tokens themselves are in HttpOnly cookies, never in this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BrowserSession {
    pub user: User,
    /// Seconds until the access cookie expires (then the dashboard refreshes it).
    pub expires_in: u64,
}
