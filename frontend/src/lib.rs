//! The yew dashboard embedded in `canopy` (docs/design.md §1, §5): the tree with rollups,
//! a selector filter with its live preview, detail panes. `view` holds the pure functions
//! from API answers to view models (tested natively); the rest is components.

pub mod view;

mod api;
mod app;
mod components;
mod loadable;
mod nav;
mod session;
mod sse;

/// Mounts the app on `<body>`; on the host (tests, clippy) there is no document, so it
/// only says so.
pub fn start() {
    #[cfg(target_arch = "wasm32")]
    yew::Renderer::<app::App>::new().render();
    #[cfg(not(target_arch = "wasm32"))]
    {
        // The same app is compiled (and linted) on the host; it only runs in a browser.
        let _mount = yew::Renderer::<app::App>::new;
        eprintln!("canopy-frontend runs in a browser: build it with `cargo xtask ui`");
    }
}
