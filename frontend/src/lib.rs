//! The yew dashboard. The UI issue fills this crate; it depends only on api-types.
