//! The parsers on `systemctl` and `needrestart` output, the checks against real listeners
//! and programs on 127.0.0.1, and the report's words.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `systemctl --failed --plain --no-legend --no-pager` as systemd 252 prints it in a UTF-8
/// locale (the `●` marker), in the C locale the runner sets (`*`), and as versions without
/// the marker print it.
#[test]
fn failed_units_are_the_first_column_with_or_without_the_marker() {
    let utf8 = "● canopy-broken.service loaded failed failed Canopy lab service\n\
                ● systemd-fsck@dev-disk-by\\x2duuid-1234.service loaded failed failed File System Check\n";
    assert_eq!(
        parse_failed_units(utf8),
        [
            "canopy-broken.service",
            "systemd-fsck@dev-disk-by\\x2duuid-1234.service"
        ]
    );
    let c_locale = "* nginx.service loaded failed failed A high performance web server\n\
                    * -.mount       loaded failed failed Root Mount\n";
    assert_eq!(parse_failed_units(c_locale), ["nginx.service", "-.mount"]);
    let plain = "postgresql@15-main.service loaded failed failed PostgreSQL Cluster 15-main\n\
                 \n\
                 logrotate.timer            loaded failed failed Daily rotation of log files\n";
    assert_eq!(
        parse_failed_units(plain),
        ["postgresql@15-main.service", "logrotate.timer"]
    );
}

/// A legend or a count (printed without `--no-legend`), an empty answer and garbage are no
/// units; a unit listed twice is one.
#[test]
fn failed_units_skip_what_is_not_a_unit() {
    let with_legend = "  UNIT          LOAD   ACTIVE SUB    DESCRIPTION\n\
                       ● cron.service  loaded failed failed Regular background program\n\
                       \n\
                       LOAD   = Reflects whether the unit definition was properly loaded.\n\
                       0 loaded units listed.\n\
                       1 loaded units listed.\n\
                       ● cron.service  loaded failed failed Regular background program\n\
                       ●\n\
                       notaunit.txt loaded failed failed x\n";
    assert_eq!(parse_failed_units(with_legend), ["cron.service"]);
    assert!(parse_failed_units("").is_empty());
    assert!(parse_failed_units("\n  \n").is_empty());
}

/// `needrestart -b` (the apt-dater batch format): only the `NEEDRESTART-SVC` lines, once each.
#[test]
fn needrestart_batch_lines_name_the_services() {
    let out = "NEEDRESTART-VER: 3.6\n\
               NEEDRESTART-KCUR: 6.1.0-18-amd64\n\
               NEEDRESTART-KEXP: 6.1.0-18-amd64\n\
               NEEDRESTART-KSTA: 1\n\
               NEEDRESTART-SVC: systemd-journald.service\n\
               NEEDRESTART-SVC: cron.service\n\
               NEEDRESTART-CONT: LXC web1\n\
               NEEDRESTART-SESS: alice @ session #3\n\
               NEEDRESTART-SVC: cron.service\n\
               NEEDRESTART-SVC:\n";
    assert_eq!(
        parse_needrestart(out),
        ["systemd-journald.service", "cron.service"]
    );
    // needrestart 3.6 (Debian 12) as root in a container without systemd: no services.
    let container = "NEEDRESTART-VER: 3.6\n\
                     NEEDRESTART-KCUR: 6.18.44-fc-v1300\n\
                     NEEDRESTART-KSTA: 0\n\
                     NEEDRESTART-UCSTA: 1\n\
                     NEEDRESTART-UCCUR: 0x0001\n\
                     NEEDRESTART-UCEXP: \n";
    assert!(parse_needrestart(container).is_empty());
}

#[test]
fn the_budget_leaves_room_for_the_stop_and_the_answer() {
    assert_eq!(budget(Duration::from_secs(120)), Duration::from_secs(110));
    assert_eq!(budget(Duration::from_secs(8)), Duration::from_secs(6));
    assert_eq!(budget(Duration::from_secs(1)), Duration::from_secs(1));
}

/// A server on 127.0.0.1 answering every request with `head` (a status line and headers).
async fn answering(head: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = format!("{head}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr.to_string()
}

/// A port on 127.0.0.1 nothing listens on (bound, then closed).
async fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    drop(l);
    addr
}

async fn check(c: HealthCheck, budget: Duration) -> CheckOutcome {
    let client = crate::http::check_client(budget).expect("client");
    run_check(&c, Some(&client), budget).await
}

fn http(url: String, status: Option<u16>) -> HealthCheck {
    HealthCheck::Http { url, status }
}

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn http_checks_see_the_status() {
    let up = answering("HTTP/1.1 200 OK").await;
    let down = answering("HTTP/1.1 503 Service Unavailable").await;
    let moved =
        answering("HTTP/1.1 301 Moved Permanently\r\nLocation: https://example.test/").await;

    let ok = check(http(format!("http://{up}/health"), None), T).await;
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.detail, "200 OK");
    assert_eq!(ok.check, format!("http http://{up}/health"));

    let bad = check(http(format!("http://{down}/"), None), T).await;
    assert!(!bad.ok, "{bad:?}");
    assert_eq!(bad.detail, "503 Service Unavailable, expected 2xx");
    let wanted = check(http(format!("http://{down}/"), Some(503)), T).await;
    assert!(wanted.ok, "{wanted:?}");
    let not_wanted = check(http(format!("http://{up}/"), Some(204)), T).await;
    assert!(!not_wanted.ok);
    assert_eq!(not_wanted.detail, "200 OK, expected 204");

    // Redirects are the URL's own answer, not followed.
    let redirect = check(http(format!("http://{moved}/"), None), T).await;
    assert!(!redirect.ok, "{redirect:?}");
    assert_eq!(
        redirect.detail,
        "301 Moved Permanently → https://example.test/, expected 2xx"
    );
    let redirect = check(http(format!("http://{moved}/"), Some(301)), T).await;
    assert!(redirect.ok, "{redirect:?}");
}

#[tokio::test]
async fn http_checks_refuse_other_schemes_and_report_refused_connections() {
    let ftp = check(http("ftp://127.0.0.1/".into(), None), T).await;
    assert!(!ftp.ok);
    assert_eq!(
        ftp.detail,
        "only http:// and https:// URLs are checked, not ftp://"
    );
    let garbage = check(http("not a url".into(), None), T).await;
    assert!(
        !garbage.ok && garbage.detail.starts_with("not a URL"),
        "{garbage:?}"
    );
    let closed = check(http(format!("http://{}/", closed_port().await), None), T).await;
    assert!(!closed.ok);
    assert!(
        closed.detail.to_lowercase().contains("connection refused"),
        "{closed:?}"
    );
    assert!(
        run_check(&http("http://127.0.0.1/".into(), None), None, T)
            .await
            .detail
            == "no HTTP client"
    );
}

#[tokio::test]
async fn tcp_checks_connect() {
    let up = answering("HTTP/1.1 200 OK").await;
    let ok = check(
        HealthCheck::Tcp {
            address: up.clone(),
        },
        T,
    )
    .await;
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.detail, format!("connected to {up}"));
    let closed = check(
        HealthCheck::Tcp {
            address: closed_port().await,
        },
        T,
    )
    .await;
    assert!(!closed.ok);
    assert!(
        closed.detail.starts_with("cannot connect: ")
            && closed.detail.to_lowercase().contains("refused"),
        "{closed:?}"
    );
    for bad in ["127.0.0.1", "127.0.0.1:http", ":80", "127.0.0.1:70000"] {
        let o = check(
            HealthCheck::Tcp {
                address: bad.into(),
            },
            T,
        )
        .await;
        assert!(!o.ok);
        assert_eq!(o.detail, format!("`{bad}` is not host:port"));
    }
}

fn argv(a: &[&str]) -> HealthCheck {
    HealthCheck::Command {
        argv: a.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn command_checks_pass_on_exit_0_and_show_the_exit_and_stderr() {
    let ok = check(argv(&["true"]), T).await;
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.detail, "exit 0");
    let no = check(argv(&["false"]), T).await;
    assert!(!no.ok);
    assert_eq!(no.detail, "exit 1: (no stderr)");
    // argv, no shell of ours: the `;` and `>&2` are sh's because sh is the program.
    let said = check(
        argv(&["sh", "-c", "echo first >&2; echo boom >&2; exit 3"]),
        T,
    )
    .await;
    assert!(!said.ok);
    assert_eq!(said.detail, "exit 3: first | boom");
    let literal = check(argv(&["test", "a;b", "=", "a;b"]), T).await;
    assert!(
        literal.ok,
        "arguments are not split or interpreted: {literal:?}"
    );
    let missing = check(argv(&["canopy-no-such-program-xyz"]), T).await;
    assert!(!missing.ok);
    assert!(
        missing
            .detail
            .starts_with("could not start `canopy-no-such-program-xyz`"),
        "{missing:?}"
    );
    let empty = check(argv(&[]), T).await;
    assert!(!empty.ok);
    assert_eq!(empty.detail, "no program given");
}

/// A command past the budget is stopped (its process group) and the check fails saying so.
#[tokio::test]
async fn command_checks_are_stopped_at_the_budget() {
    let slow = check(argv(&["sleep", "600"]), Duration::from_secs(1)).await;
    assert!(!slow.ok);
    assert_eq!(slow.detail, "timed out after 1 s");
}

/// The files of a system without systemd: no units, reboot required from the scanner's test,
/// checks in their order.
#[tokio::test]
async fn a_report_without_systemd() {
    let root = tempfile::tempdir().expect("tempdir");
    let started = chrono::Utc::now();
    let mut g = gather(
        root.path(),
        &[argv(&["true"]), argv(&["false"])],
        T,
        Some(started),
    )
    .await;
    assert_eq!(g.error, None);
    // needrestart, where this machine has it, reports this machine's own services (a
    // dockerd on old libraries): not this test's subject (the summary's services part is
    // tested below with a list of its own).
    g.report.services_to_restart.clear();
    assert!(!g.report.systemd && g.report.failed_units.is_empty());
    assert!(!g.report.reboot_required);
    assert_eq!(g.report.agent_started_at, Some(started));
    assert_eq!(
        g.report.checks.iter().map(|c| c.ok).collect::<Vec<_>>(),
        [true, false]
    );
    assert!(!g.healthy());
    assert_eq!(
        summary(&g),
        "no systemd; 1 of 2 checks failed: command false (exit 1: (no stderr))"
    );

    std::fs::create_dir_all(root.path().join("run")).expect("mkdir");
    std::fs::write(root.path().join("run/reboot-required"), "").expect("write");
    let mut g = gather(root.path(), &[], T, None).await;
    g.report.services_to_restart.clear();
    assert!(g.report.reboot_required && g.healthy());
    assert_eq!(summary(&g), "no systemd; reboot required");
}

/// Where systemd runs (`run/systemd/system` under the root), its failed units are asked of
/// `systemctl`; when that cannot answer, the report is not made (an empty list would read as
/// healthy).
#[tokio::test]
async fn with_systemd_the_failed_units_come_from_systemctl() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("run/systemd/system")).expect("mkdir");
    let g = gather(root.path(), &[], T, None).await;
    assert!(g.report.systemd);
    let answers = process::run(&Cmd::new("systemctl").args([
        "--failed",
        "--plain",
        "--no-legend",
        "--no-pager",
    ]))
    .await
    .ok()
    .filter(|o| o.success());
    match answers {
        Some(out) => {
            assert_eq!(g.error, None);
            assert_eq!(g.report.failed_units, parse_failed_units(&out.stdout));
        }
        None => {
            let e = g
                .error
                .clone()
                .expect("systemctl cannot answer here: no report");
            assert!(
                e.starts_with("cannot list the failed systemd units: "),
                "{e}"
            );
            let r = result(g);
            assert!(!r.success && r.health.is_none(), "{r:?}");
            assert!(r
                .summary
                .starts_with("cannot list the failed systemd units"));
        }
    }
}

#[test]
fn the_summary_names_failed_units_reboots_services_and_checks() {
    let mut g = Gathered {
        report: HealthReport {
            failed_units: vec!["a.service".into(), "b.service".into()],
            reboot_required: true,
            systemd: true,
            ..HealthReport::default()
        },
        error: None,
        notes: vec![],
    };
    assert_eq!(
        summary(&g),
        "2 failed units: a.service b.service; reboot required"
    );
    let r = result(g.clone());
    assert!(r.success && r.exit_code == 0);
    assert_eq!(r.health.as_ref(), Some(&g.report));
    assert!(
        r.stdout
            .contains("failed units:        a.service b.service"),
        "{}",
        r.stdout
    );

    g.report.failed_units = (1..=7).map(|i| format!("u{i}.service")).collect();
    g.report.reboot_required = false;
    g.report.services_to_restart = vec!["cron.service".into()];
    g.report.checks = vec![CheckOutcome {
        check: "tcp 127.0.0.1:22".into(),
        ok: true,
        detail: "connected to 127.0.0.1:22".into(),
    }];
    assert_eq!(
        summary(&g),
        "7 failed units: u1.service u2.service u3.service u4.service u5.service and 2 more; \
         1 service to restart: cron.service; 1 check passed"
    );
    g.report.failed_units.clear();
    g.notes.push("services to restart unknown: x".into());
    assert!(g.healthy());
    let r = result(g);
    assert!(r.summary.starts_with("no failed units; "), "{}", r.summary);
    assert_eq!(r.stderr, "services to restart unknown: x");
}
