//! Embeds the web dashboard that `cargo xtask ui` wrote to `frontend/dist/` (docs/design.md
//! §1): one `Asset` per file, with its gzip and brotli twins when there are. Without a built
//! dashboard the server still compiles (for work on the rest of it) and says so: a cargo
//! warning here, and a page at `/` naming the command that builds it. CI builds it first
//! (`cargo xtask test`), and `server/tests/web.rs` fails when it is missing.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let frontend = Path::new(&manifest).join("../frontend");
    let dist = frontend.join("dist");
    // The bundle when there is one; else the frontend directory, where creating dist/ must
    // rerun this script (a missing path would rerun it on every build).
    let watched = if dist.is_dir() { &dist } else { &frontend };
    println!("cargo:rerun-if-changed={}", watched.display());
    let mut names: Vec<String> = std::fs::read_dir(&dist)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".gz") && !n.ends_with(".br") && n != "README.md")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if !names.iter().any(|n| n == "index.html") {
        println!(
            "cargo:warning=the web dashboard is not built ({} has no index.html): `canopy` \
             will serve a page saying so; run `cargo xtask ui` first",
            dist.display()
        );
        names.clear();
    }
    let mut out = String::from("pub static ASSETS: &[Asset] = &[\n");
    for name in &names {
        let path = dist.join(name).canonicalize().expect("asset path");
        let twin = |ext: &str| match dist.join(format!("{name}.{ext}")).canonicalize() {
            Ok(p) => format!("Some(include_bytes!({:?}))", p.display().to_string()),
            Err(_) => "None".into(),
        };
        writeln!(
            out,
            "    Asset {{ name: {name:?}, body: include_bytes!({:?}), gzip: {}, brotli: {} }},",
            path.display().to_string(),
            twin("gz"),
            twin("br")
        )
        .unwrap();
    }
    out.push_str("];\n");
    let target =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui_assets.rs");
    std::fs::write(target, out).expect("write ui_assets.rs");
}
