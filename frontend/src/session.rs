//! Who is logged in, shared with every component through a context.

use canopy_api_types::auth::{Role, User};
use yew::prelude::*;

#[derive(Clone, PartialEq)]
pub struct SessionContext {
    pub user: User,
    /// The session ended (a 401 that a refresh could not cure): back to the login page.
    pub expired: Callback<()>,
}

impl SessionContext {
    /// Operators and admins see action buttons; the API refuses viewers anyway.
    pub fn may_act(&self) -> bool {
        self.user.role >= Role::Operator
    }
}
