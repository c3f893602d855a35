//! The helper's verbs and what they accept: `refresh`, `simulate`, `install`, `upgrade`,
//! `audit`, `repair`, each for one package manager, with package names and versions checked
//! character by character. Anything else is refused before a command is built.

use canopy_api_types::updates::PackageManager;
use std::fmt;

/// The longest name or version accepted.
pub const MAX_LEN: usize = 128;
/// The most packages one call may name.
pub const MAX_PACKAGES: usize = 1000;

/// One thing the helper does as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// Refresh the package lists: `apt-get update`, `dnf makecache`, `apk update`.
    Refresh(PackageManager),
    /// Simulate upgrading `packages` (dnf only: it refuses `--assumeno` to non-root users;
    /// apt and apk simulate without root).
    Simulate {
        manager: PackageManager,
        packages: Vec<String>,
    },
    /// Install exactly these versions (the confirmed dry-run's plan).
    Install {
        manager: PackageManager,
        pins: Vec<Pin>,
    },
    /// Upgrade these packages to their candidates, unpinned (a server that sends no plan).
    Upgrade {
        manager: PackageManager,
        packages: Vec<String>,
    },
    /// Check the package database (read-only).
    Audit(PackageManager),
    /// Repair an interrupted package database (apt: `dpkg --configure -a`; apk: `apk fix`).
    Repair(PackageManager),
}

/// A package at an exact version: `NAME=VERSION` on the helper's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub version: String,
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.version)
    }
}

impl Verb {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Refresh(_) => "refresh",
            Self::Simulate { .. } => "simulate",
            Self::Install { .. } => "install",
            Self::Upgrade { .. } => "upgrade",
            Self::Audit(_) => "audit",
            Self::Repair(_) => "repair",
        }
    }

    pub fn manager(&self) -> PackageManager {
        match self {
            Self::Refresh(m) | Self::Audit(m) | Self::Repair(m) => *m,
            Self::Simulate { manager, .. }
            | Self::Install { manager, .. }
            | Self::Upgrade { manager, .. } => *manager,
        }
    }

    /// Parses `VERB MANAGER [ITEM…]` (the helper's command line after `helper`). Every
    /// name and version is checked; the first bad one refuses the whole call.
    pub fn parse(args: &[String]) -> Result<Verb, String> {
        let (verb, rest) = args.split_first().ok_or(
            "no verb given: use refresh, simulate, install, upgrade, audit or repair".to_string(),
        )?;
        let verb = verb.as_str();
        if ![
            "refresh", "simulate", "install", "upgrade", "audit", "repair",
        ]
        .contains(&verb)
        {
            return Err(format!(
                "unknown verb {verb:?}: use refresh, simulate, install, upgrade, audit or repair"
            ));
        }
        let (manager, items) = rest
            .split_first()
            .ok_or_else(|| format!("{verb}: no package manager given (apt, dnf or apk)"))?;
        let m = parse_manager(manager)?;
        let names = |items: &[String]| -> Result<Vec<String>, String> {
            check_count(verb, items)?;
            items
                .iter()
                .map(|n| check_name(m, n).map(|()| n.clone()))
                .collect()
        };
        match verb {
            "refresh" | "audit" | "repair" => {
                if let Some(extra) = items.first() {
                    return Err(format!("{verb} takes no packages (got {extra:?})"));
                }
                match verb {
                    "refresh" => Ok(Self::Refresh(m)),
                    "audit" => Ok(Self::Audit(m)),
                    _ => Self::repair(m),
                }
            }
            "simulate" => Self::simulate(m, names(items)?),
            "upgrade" => Ok(Self::Upgrade {
                manager: m,
                packages: names(items)?,
            }),
            _ => {
                check_count(verb, items)?;
                let pins = items
                    .iter()
                    .map(|item| {
                        let (name, version) = item.split_once('=').ok_or_else(|| {
                            format!("install takes NAME=VERSION: {item:?} has no version")
                        })?;
                        pin(m, name, version)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Self::Install { manager: m, pins })
            }
        }
    }

    /// A dnf simulation (the only manager that needs root for one).
    pub fn simulate(m: PackageManager, packages: Vec<String>) -> Result<Verb, String> {
        if m != PackageManager::Dnf {
            return Err(format!(
                "simulate is for dnf only: {} simulates without root",
                m.as_str()
            ));
        }
        Ok(Self::Simulate {
            manager: m,
            packages,
        })
    }

    /// A repair, for the managers that have a safe one.
    pub fn repair(m: PackageManager) -> Result<Verb, String> {
        match m {
            PackageManager::Dnf => Err(
                "dnf has no safe automatic repair: `dnf check` problems (duplicates, broken \
                 dependencies) need an operator"
                    .into(),
            ),
            _ => Ok(Self::Repair(m)),
        }
    }

    /// The helper's command line after `helper` (what [`Verb::parse`] reads back).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![self.name().to_string(), self.manager().as_str().to_string()];
        match self {
            Self::Simulate { packages, .. } | Self::Upgrade { packages, .. } => {
                args.extend(packages.iter().cloned())
            }
            Self::Install { pins, .. } => args.extend(pins.iter().map(Pin::to_string)),
            _ => {}
        }
        args
    }
}

/// A pinned package, checked.
pub fn pin(m: PackageManager, name: &str, version: &str) -> Result<Pin, String> {
    check_name(m, name)?;
    check_version(name, version)?;
    Ok(Pin {
        name: name.to_string(),
        version: version.to_string(),
    })
}

fn check_count(verb: &str, items: &[String]) -> Result<(), String> {
    if items.is_empty() {
        return Err(format!("{verb}: no packages given"));
    }
    if items.len() > MAX_PACKAGES {
        return Err(format!(
            "{verb}: {} packages given, at most {MAX_PACKAGES} allowed",
            items.len()
        ));
    }
    Ok(())
}

/// `apt`, `dnf` or `apk`, exactly.
pub fn parse_manager(s: &str) -> Result<PackageManager, String> {
    match s {
        "apt" => Ok(PackageManager::Apt),
        "dnf" => Ok(PackageManager::Dnf),
        "apk" => Ok(PackageManager::Apk),
        other => Err(format!(
            "unknown package manager {other:?}: use apt, dnf or apk"
        )),
    }
}

/// A package name: starts with a letter or digit, then letters, digits and `+ . _ -` only
/// (no option, no path, no glob, no shell or apt/dnf pattern syntax), at most [`MAX_LEN`];
/// apt names may carry one `:ARCH`. Local package files (`x.deb`, `x.rpm`, `x.apk`) are
/// refused: the managers would install the file instead of a repository package.
pub fn check_name(m: PackageManager, name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid package name {name:?}: {why}"));
    let (base, arch) = match name.split_once(':') {
        Some((b, a)) if m == PackageManager::Apt => (b, Some(a)),
        Some(_) => return bad("`:` is not allowed"),
        None => (name, None),
    };
    if name.len() > MAX_LEN {
        return bad("too long");
    }
    if !base.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or digit");
    }
    if let Some(c) = base
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+._-".contains(*c)))
    {
        return bad(&format!("{c:?} is not allowed"));
    }
    if let Some(a) = arch {
        let ok = a.starts_with(|c: char| c.is_ascii_alphanumeric())
            && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return bad("bad architecture");
        }
    }
    let lower = base.to_ascii_lowercase();
    if [".deb", ".rpm", ".apk", ".dsc", ".changes"]
        .iter()
        .any(|s| lower.ends_with(s))
    {
        return bad("a package file name, not a package");
    }
    Ok(())
}

/// A version: starts with a letter or digit, then letters, digits and `. + ~ : _ - ^` only
/// (Debian `[epoch:]upstream-revision`, rpm `[epoch:]version-release`, apk `1.2-r3`).
pub fn check_version(name: &str, version: &str) -> Result<(), String> {
    let ok = !version.is_empty()
        && version.len() <= MAX_LEN
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~:_-^".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid version {version:?} for {name}"))
    }
}
