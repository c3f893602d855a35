//! Platforms (`os/architecture[/variant]`) as Docker matches them against the entries of a
//! multi-platform index: architecture aliases (`x86_64` is `amd64`, `aarch64` is `arm64`) and
//! default variants (`arm64` is `arm64/v8`, `arm` is `arm/v7`) compare equal, as containerd's
//! `platforms.Normalize` has them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A normalised platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `linux/amd64`, `linux/arm/v7`, `linux/arm64/v8`; aliases are normalised.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self::new(os, arch, None)),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self::new(os, arch, Some(variant)))
            }
            _ => Err(format!(
                "the platform {s:?} is not os/architecture[/variant] (linux/amd64, linux/arm/v7)"
            )),
        }
    }

    /// A platform from an index entry's fields, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let os = os.to_ascii_lowercase();
        let (architecture, default_variant) = match architecture.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), None),
            "aarch64" | "arm64" => ("arm64".to_string(), None),
            "armhf" => ("arm".to_string(), Some("v7")),
            "armel" => ("arm".to_string(), Some("v6")),
            "arm" => ("arm".to_string(), Some("v7")),
            "i386" | "i686" | "386" => ("386".to_string(), None),
            other => (other.to_string(), None),
        };
        let variant = variant
            .filter(|v| !v.is_empty())
            .map(|v| {
                let v = v.to_ascii_lowercase();
                if v.chars().all(|c| c.is_ascii_digit()) {
                    format!("v{v}")
                } else {
                    v
                }
            })
            .or(default_variant.map(str::to_string));
        // arm64's only variant in practice is v8, which Docker leaves out.
        let variant = match (architecture.as_str(), variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            _ => variant,
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn aliases_and_default_variants_compare_equal() {
        assert_eq!(p("linux/amd64"), p("linux/x86_64"));
        assert_eq!(p("linux/arm64"), p("linux/arm64/v8"));
        assert_eq!(p("linux/aarch64"), p("linux/arm64/8"));
        assert_eq!(p("linux/arm"), p("linux/arm/v7"));
        assert_ne!(p("linux/arm/v6"), p("linux/arm/v7"));
        assert_ne!(p("linux/amd64"), p("linux/arm64"));
        assert_ne!(p("linux/amd64"), p("windows/amd64"));
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
    }

    #[test]
    fn bad_platforms_are_named() {
        for s in ["", "linux", "linux/", "/amd64", "a/b/c/d", "linux/arm/"] {
            let e = Platform::parse(s).unwrap_err();
            assert!(e.contains(&format!("{s:?}")), "{e}");
        }
    }
}
