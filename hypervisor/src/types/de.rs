//! Tolerant deserializers for the shapes real PVE puts on the wire.
//!
//! PVE's Perl JSON encoder writes booleans as `0`/`1` (sometimes `"0"`/`"1"`), some versions
//! write numbers as strings (`"maxmem": "2147483648"`), and tags arrive as one string
//! separated by `;` (the GUI also accepts `,` and spaces). These helpers accept every form
//! seen in the wild and treat `null` as absent.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// A `0`/`1`, `"0"`/`"1"`, `true`/`false` or absent/`null` boolean (absent = false).
pub fn bool01<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a boolean as 0/1, \"0\"/\"1\" or true/false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
            Ok(v != 0.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim() {
                "" | "0" | "false" | "no" | "off" => Ok(false),
                "1" | "true" | "yes" | "on" => Ok(true),
                other => Err(E::custom(format!("{other:?} is not a boolean"))),
            }
        }
        fn visit_none<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(V)
}

/// A number that may arrive as a JSON number or a numeric string; `null`, `""` = absent.
pub fn opt_num<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + TryFrom<u64> + TryFrom<i64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        U(u64),
        I(i64),
        F(f64),
        S(String),
    }
    let raw: Option<Raw> = Option::deserialize(d)?;
    let out = match raw {
        None => None,
        Some(Raw::U(v)) => {
            Some(T::try_from(v).map_err(|_| de::Error::custom(format!("{v} is out of range")))?)
        }
        Some(Raw::I(v)) => {
            Some(T::try_from(v).map_err(|_| de::Error::custom(format!("{v} is out of range")))?)
        }
        // PVE sends fractional values for cpu shares only; integers are never fractional.
        Some(Raw::F(v)) => Some(
            T::try_from(v as i64).map_err(|_| de::Error::custom(format!("{v} is out of range")))?,
        ),
        Some(Raw::S(s)) if s.trim().is_empty() => None,
        Some(Raw::S(s)) => Some(
            s.trim()
                .parse::<T>()
                .map_err(|_| de::Error::custom(format!("{s:?} is not a number")))?,
        ),
    };
    Ok(out)
}

/// A floating-point number as a JSON number or a numeric string; `null`, `""` = absent.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        F(f64),
        S(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::F(v)) => Ok(Some(v)),
        Some(Raw::S(s)) if s.trim().is_empty() => Ok(None),
        Some(Raw::S(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{s:?} is not a number"))),
    }
}

/// A required `u32` (a VMID, a line number): number or numeric string.
pub fn u32_required<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    opt_num::<D, u32>(d)?.ok_or_else(|| de::Error::custom("a number is required here"))
}

/// Tags as PVE stores them (`"prod;web"`); also a JSON array, `,` or space separators.
pub fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        L(Vec<String>),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => Vec::new(),
        Some(Raw::S(s)) => split_tags(&s),
        Some(Raw::L(l)) => l.iter().flat_map(|t| split_tags(t)).collect(),
    })
}

/// Split a PVE tag string; empty parts dropped, order kept, duplicates removed.
pub fn split_tags(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in s
        .split([';', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

/// A string that some versions send as a number (e.g. `exitstatus`, `version`).
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        U(u64),
        I(i64),
        F(f64),
        B(bool),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => None,
        Some(Raw::S(s)) => Some(s),
        Some(Raw::U(v)) => Some(v.to_string()),
        Some(Raw::I(v)) => Some(v.to_string()),
        Some(Raw::F(v)) => Some(v.to_string()),
        Some(Raw::B(v)) => Some(v.to_string()),
    })
}
