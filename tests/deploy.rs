//! The files under deploy/: alert rules and the dashboard use only metrics
//! a running flowgate exposes, promtool accepts the rules, and the systemd
//! unit reloads with SIGHUP and restarts on failure.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};

/// Metric names referenced in a text (PromQL in YAML or JSON).
fn referenced(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("flowgate_") || w.starts_with("process_"))
        .map(String::from)
        .collect()
}

#[test]
fn alerts_and_dashboard_use_only_metrics_flowgate_exposes() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, rate: 100, events: [{a: 1}]}\n  web: {type: http_server, address: '127.0.0.1:0', acknowledgements: true}\ntransforms:\n  f:\n    type: filter\n    inputs: [g]\n    condition: '.a.b == 1'\n    rate_limit: {rate: 1000}\n    retry: {attempts: 2}\n    circuit_breaker: {consecutive_failures: 5}\nsinks:\n  o: {type: blackhole, inputs: [f, g, web]}\n",
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    assert!(eventually(std::time::Duration::from_secs(30), || metric(
        &d.metrics(),
        "flowgate_errors_total",
        &[("component", "f")]
    )
    .unwrap_or(0.0)
        > 0.0));
    let exposed: BTreeSet<String> = d
        .metrics()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|t| t.split_whitespace().next())
                .map(String::from)
        })
        .collect();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/flowgate-dashboard.json",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let names = referenced(&text);
        assert!(names.len() >= 5, "{file} references {names:?}");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, suffix| {
                    n.strip_suffix(suffix).map(String::from).unwrap_or(n)
                });
            assert!(
                exposed.contains(&family),
                "{file} uses {name}, which flowgate does not expose; exposed: {exposed:?}"
            );
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/flowgate-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}

#[test]
fn promtool_accepts_the_rules_and_the_scrape_config() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install promtool (Debian's prometheus package)"
        );
        eprintln!("promtool is not installed here; .ci/run installs it");
        return;
    }
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["check", "config", "deploy/prometheus/prometheus.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn the_systemd_unit_reloads_with_sighup_and_restarts_on_failure() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/flowgate.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/flowgate run /etc/flowgate/pipelines",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    if let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "deploy/systemd/flowgate.service"])
        .current_dir(repo())
        .stderr(Stdio::piped())
        .output()
    {
        // The binary is not installed here; every other finding is a mistake in the unit.
        let findings: Vec<String> = text(&out.stderr)
            .lines()
            .filter(|l| !l.contains("is not executable"))
            .map(String::from)
            .collect();
        assert!(findings.is_empty(), "systemd-analyze: {findings:?}");
    }
}
