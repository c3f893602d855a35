use super::commands::{commands, dnf_nevra, PATH};
use super::*;
use canopy_api_types::updates::PackageManager::{self, *};

fn args(line: &str) -> Vec<String> {
    line.split(' ').map(String::from).collect()
}

fn parse(line: &str) -> Result<Verb, String> {
    Verb::parse(&args(line))
}

fn argv(verb: &Verb) -> Vec<Vec<String>> {
    commands(verb)
        .expect("commands")
        .iter()
        .map(|c| {
            let mut v = vec![c.program.clone()];
            v.extend(c.args.iter().cloned());
            v
        })
        .collect()
}

#[test]
fn every_verb_round_trips_through_its_command_line() {
    for line in [
        "refresh apt",
        "refresh dnf",
        "refresh apk",
        "simulate dnf canopy-demo-ssl canopy-demo-tools",
        "install apt canopy-demo-tools=2.0 canopy-demo-libextra=1.0 libc6:amd64=2.36-9+deb12u4",
        "install dnf openssl-libs=1:3.5.1-4.el9_7 perl-Net_SSLeay=1.92-2.el9",
        "install apk busybox=1.36.1-r29",
        "upgrade apt curl g++-12",
        "audit apt",
        "audit dnf",
        "audit apk",
        "repair apt",
        "repair apk",
    ] {
        let verb = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(verb.to_args().join(" "), line);
        assert!(commands(&verb).is_ok(), "{line}");
    }
}

/// Options, paths, globs, shell syntax and package files never get through, as a name, a
/// version or anything else.
#[test]
fn bad_verbs_names_and_versions_are_refused() {
    let refused = [
        ("", "no verb"),
        ("run", "unknown verb"),
        ("install", "no package manager"),
        ("install docker nginx=1", "unknown package manager"),
        ("install yum x=1", "unknown package manager"),
        ("install apt", "no packages"),
        (
            "install apt -oAPT::Update::Pre-Invoke::=id",
            "must start with a letter",
        ),
        ("install apt -y", "has no version"),
        ("install apt -o=1", "must start with a letter"),
        (
            "install apt x=1 -oAPT::Update::Pre-Invoke::=id=1",
            "must start with a letter",
        ),
        ("install apt canopy-demo-hello", "has no version"),
        ("install apt canopy-demo-hello=-1", "invalid version"),
        ("install apt canopy-demo-hello=1;id", "invalid version"),
        ("install apt canopy-demo-hello=1.0$(id)", "invalid version"),
        ("install apt x=1=2", "invalid version"),
        ("install apt ./evil.deb=1", "must start with a letter"),
        ("install apt evil.deb=1", "package file"),
        ("install dnf evil.rpm=1", "package file"),
        ("install apt a/b=1", "'/' is not allowed"),
        ("install apt a*=1", "'*' is not allowed"),
        ("install apt ?name(x)=1", "must start with a letter"),
        ("install dnf @core=1", "must start with a letter"),
        ("install dnf x:y=1", "`:` is not allowed"),
        ("install apt x:-evil=1", "bad architecture"),
        ("upgrade apt -y", "must start with a letter"),
        ("upgrade apt --allow-downgrades", "must start with a letter"),
        ("upgrade apt bash=5", "'=' is not allowed"),
        (
            "refresh apt -oAPT::Update::Pre-Invoke::=id",
            "takes no packages",
        ),
        ("audit apt extra", "takes no packages"),
        ("simulate apt bash", "dnf only"),
        ("repair dnf", "no safe automatic repair"),
    ];
    for (line, why) in refused {
        let a: Vec<String> = if line.is_empty() { vec![] } else { args(line) };
        let e = Verb::parse(&a).expect_err(line);
        assert!(e.contains(why), "{line:?}: {e}");
    }
    let space = vec!["install".into(), "apt".into(), "a b=1".into()];
    assert!(Verb::parse(&space)
        .unwrap_err()
        .contains("' ' is not allowed"));
    let long = format!("install apt {}=1", "a".repeat(200));
    assert!(parse(&long).unwrap_err().contains("too long"));
    let many: Vec<String> = ["upgrade", "apt"]
        .into_iter()
        .map(String::from)
        .chain((0..1001).map(|i| format!("p{i}")))
        .collect();
    assert!(Verb::parse(&many).unwrap_err().contains("at most 1000"));
}

#[test]
fn pinned_installs_name_every_version_per_manager() {
    let apt = parse("install apt canopy-demo-tools=2.0 canopy-demo-libextra=1.0").unwrap();
    assert_eq!(
        argv(&apt),
        [args(
            "apt-get -y -q -o DPkg::Lock::Timeout=120 -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
             install -- canopy-demo-tools=2.0 canopy-demo-libextra=1.0"
        )]
    );
    // dnf: the dry-run's to_version is the table's [EPOCH:]VERSION-RELEASE.
    let dnf = parse("install dnf canopy-demo-tools=2.0-1 openssl-libs=1:3.5.1-4.el9_7").unwrap();
    assert_eq!(
        argv(&dnf),
        [args(
            "dnf -y install canopy-demo-tools-2.0-1 openssl-libs-1:3.5.1-4.el9_7"
        )]
    );
    let p = verbs::pin(Dnf, "canopy-demo-tools", "0:2.0-1").unwrap();
    assert_eq!(dnf_nevra(&p), "canopy-demo-tools-0:2.0-1");
    // apk: the pins live in a virtual package for the transaction only.
    let apk = parse("install apk busybox=1.36.1-r29 ssl_client=1.36.1-r29").unwrap();
    assert_eq!(
        argv(&apk),
        [
            args("apk add --virtual .canopy-pinned busybox=1.36.1-r29 ssl_client=1.36.1-r29"),
            args("apk del .canopy-pinned"),
        ]
    );
}

#[test]
fn the_other_verbs_build_fixed_commands() {
    let table: [(&str, &[&str]); 10] = [
        ("refresh apt", &["apt-get -q update"]),
        ("refresh dnf", &["dnf -q makecache"]),
        ("refresh apk", &["apk update"]),
        ("simulate dnf a b", &["dnf --assumeno upgrade a b"]),
        (
            "upgrade apt a",
            &["apt-get -y -q -o DPkg::Lock::Timeout=120 -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install -- a"],
        ),
        ("upgrade dnf a", &["dnf -y upgrade a"]),
        ("audit apt", &["dpkg --audit"]),
        ("audit dnf", &["dnf -q -C check"]),
        ("audit apk", &["apk fix --simulate"]),
        (
            "repair apt",
            &["dpkg --force-confdef --force-confold --configure -a"],
        ),
    ];
    for (line, want) in table {
        let got: Vec<String> = argv(&parse(line).unwrap())
            .iter()
            .map(|v| v.join(" "))
            .collect();
        assert_eq!(got, want, "{line}");
    }
    assert_eq!(argv(&Verb::Repair(Apk)), [args("apk fix")]);
    assert_eq!(
        commands::repair_line(PackageManager::Apt),
        Some("dpkg --configure -a")
    );
    assert_eq!(commands::repair_line(PackageManager::Dnf), None);
    // Built directly (not parsed), the impossible ones are refused all the same.
    assert!(commands(&Verb::Repair(Dnf)).is_err());
    assert!(commands(&Verb::Refresh(Docker)).is_err());
    assert!(commands(&Verb::Simulate {
        manager: Apt,
        packages: vec!["x".into()]
    })
    .is_err());
}

/// The package managers get an environment built from nothing and `/` as working directory.
#[test]
fn commands_take_nothing_from_the_callers_environment() {
    for verb in [
        parse("install apt x=1").unwrap(),
        parse("audit dnf").unwrap(),
        parse("repair apk").unwrap(),
    ] {
        for c in commands(&verb).unwrap() {
            assert!(c.clear_env, "{c}");
            assert_eq!(c.dir.as_deref(), Some("/"));
            assert!(c.env.contains(&("PATH".into(), PATH.into())));
            assert!(c.env.contains(&("LC_ALL".into(), "C".into())));
            assert_eq!(
                c.limit,
                Limit::Unlimited,
                "the agent watches, not the helper"
            );
        }
    }
    let apt = &commands(&parse("install apt x=1").unwrap()).unwrap()[0];
    assert!(apt
        .env
        .contains(&("DEBIAN_FRONTEND".into(), "noninteractive".into())));
}

#[test]
fn the_agent_calls_the_helper_through_sudo_n() {
    let verb = parse("install apt canopy-demo-hello=1.1").unwrap();
    let cmd = sudo_cmd("/usr/local/bin/canopy-agent", &verb);
    assert_eq!(
        cmd.to_string(),
        "sudo -n -- /usr/local/bin/canopy-agent helper install apt canopy-demo-hello=1.1"
    );
    assert!(!cmd.clear_env);
}

#[tokio::test]
async fn the_helper_refuses_before_running_anything() {
    assert_eq!(
        main(&args("install apt -oAPT::Update::Pre-Invoke::=id")).await,
        REFUSED
    );
    assert_eq!(main(&args("repair dnf")).await, REFUSED);
    assert_eq!(main(&[]).await, REFUSED);
}
