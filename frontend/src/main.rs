//! The dashboard's entry point: `cargo xtask ui` builds this binary for wasm32 and
//! wasm-bindgen turns it into the ES module that `boot.js` starts.

fn main() {
    canopy_frontend::start();
}
