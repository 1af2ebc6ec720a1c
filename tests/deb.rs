//! The Debian package: built with cargo-deb from the debug binary these
//! tests already built (deploy/debian/build-deb.sh --no-build), its contents listed with `dpkg-deb -c`, and installed into
//! a temporary root with `dpkg --root`, which runs the maintainer scripts
//! (the flowgate user is created there, not on this machine), then purged.
//! Building takes a minute, so outside CI it runs only with
//! FLOWGATE_TEST_DEB=1; the checks of the files it packages always run.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn wanted() -> bool {
    if std::env::var_os("CI").is_some() || std::env::var_os("FLOWGATE_TEST_DEB").is_some() {
        return true;
    }
    eprintln!("building the .deb is slow: set FLOWGATE_TEST_DEB=1 to run this (CI always does)");
    false
}

/// The lines of a unit from `[Unit]` on: the header comment says where
/// each copy is installed, the rest must agree.
fn unit_body(text: &str) -> String {
    text.split_once("[Unit]")
        .map(|(_, b)| b)
        .unwrap()
        .to_string()
}

#[test]
fn the_packaged_unit_is_the_deploy_unit_with_the_packaged_binary() {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    let manual = unit_body(&read("deploy/systemd/flowgate.service"));
    let packaged = unit_body(&read("deploy/debian/flowgate.service"));
    assert_eq!(
        manual.replace("/usr/local/bin/flowgate", "/usr/bin/flowgate"),
        packaged,
        "deploy/debian/flowgate.service has drifted from deploy/systemd/flowgate.service"
    );
    for line in [
        "ExecStart=/usr/bin/flowgate run /etc/flowgate/pipelines ",
        " --data-dir /var/lib/flowgate ",
        "StateDirectory=flowgate\n",
        "User=flowgate\n",
        "ExecReload=/bin/kill -HUP $MAINPID\n",
    ] {
        assert!(packaged.contains(line), "the packaged unit lacks {line:?}");
    }
    if let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "deploy/debian/flowgate.service"])
        .current_dir(repo())
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

#[test]
fn the_example_pipeline_validates_and_its_tests_pass() {
    let file = repo().join("deploy/debian/example.yaml");
    let file = file.to_str().unwrap();
    ok(run(&["validate", file], None), "flowgate validate");
    let said = ok(run(&["test", file], None), "flowgate test");
    assert!(said.contains("1 passed, 0 failed"), "{said}");
}

fn dpkg(root: &Path, args: &[&str]) -> String {
    // Scripts run outside a chroot with DPKG_ROOT set (the empty root has
    // no shell to chroot into); they and systemd-sysusers honour it.
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
        ])
        .args(args)
        .output()
        .unwrap();
    ok(out, &format!("dpkg {args:?}"))
}

#[test]
fn the_deb_installs_the_binary_unit_user_example_completions_and_man_pages() {
    if !wanted() {
        return;
    }
    let cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    if !cargo_deb.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install cargo-deb (.ci/packaging.sh)"
        );
        eprintln!("cargo-deb is not installed: cargo install --locked cargo-deb --version 3.8.0");
        return;
    }
    let s = Scratch::new();
    let out_dir = s.path("deb");
    std::fs::create_dir(&out_dir).unwrap();
    // Package the binary this test run built, as the release binary of a
    // scratch target dir (cargo-deb's --no-build packages
    // TARGET/release/flowgate): no release build, and no dev profile, which
    // cargo-deb is deprecating. Linked, not copied (it is ~200 MB); cargo-deb
    // strips into a file of its own, so the link is never written through.
    let target = Path::new(bin()).parent().unwrap().parent().unwrap();
    let scratch_target = tempfile::Builder::new()
        .prefix("deb-test-")
        .tempdir_in(target)
        .unwrap();
    let release = scratch_target.path().join("release");
    std::fs::create_dir(&release).unwrap();
    if std::fs::hard_link(bin(), release.join("flowgate")).is_err() {
        std::fs::copy(bin(), release.join("flowgate")).unwrap();
    }
    let built = Command::new(repo().join("deploy/debian/build-deb.sh"))
        .args(["--no-build", "--fast", "--output"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", scratch_target.path())
        .output()
        .unwrap();
    ok(built, "deploy/debian/build-deb.sh");
    let debs: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = debs[0].to_str().unwrap();

    let listing = ok(
        Command::new("dpkg-deb").args(["-c", deb]).output().unwrap(),
        "dpkg-deb -c",
    );
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for path in [
        "./usr/bin/flowgate",
        "./usr/lib/systemd/system/flowgate.service",
        "./usr/lib/sysusers.d/flowgate.conf",
        "./etc/flowgate/pipelines/example.yaml",
        "./usr/share/bash-completion/completions/flowgate",
        "./usr/share/zsh/vendor-completions/_flowgate",
        "./usr/share/fish/vendor_completions.d/flowgate.fish",
        "./usr/share/man/man1/flowgate.1.gz",
        "./usr/share/man/man1/flowgate-run.1.gz",
        "./usr/share/man/man1/flowgate-buffer-check.1.gz",
        "./usr/share/doc/flowgate/prometheus/alerts.yml",
        "./usr/share/doc/flowgate/prometheus/prometheus.yml",
        "./usr/share/doc/flowgate/grafana/flowgate-dashboard.json",
        "./usr/share/doc/flowgate/README.md",
        "./usr/share/doc/flowgate/copyright",
    ] {
        assert!(
            paths.contains(&path),
            "the package lacks {path}:\n{listing}"
        );
    }
    let field = |name: &str| {
        ok(
            Command::new("dpkg-deb")
                .args(["-f", deb, name])
                .output()
                .unwrap(),
            "dpkg-deb -f",
        )
    };
    assert_eq!(field("Package").trim(), "flowgate");
    assert!(
        field("Depends").contains("systemd | systemd-standalone-sysusers | systemd-sysusers"),
        "{}",
        field("Depends")
    );
    let conffiles = ok(
        Command::new("dpkg-deb")
            .args(["--info", deb, "conffiles"])
            .output()
            .unwrap(),
        "dpkg-deb --info conffiles",
    );
    assert_eq!(conffiles.trim(), "/etc/flowgate/pipelines/example.yaml");

    // Install into an empty root: dpkg's database and /etc, nothing else.
    let root = s.path("root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    dpkg(&root, &["--install", deb]);

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("flowgate:"))
        .unwrap_or_else(|| panic!("postinst created no flowgate user:\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "not a system user: {user}");
    assert_eq!(fields[5..], ["/var/lib/flowgate", "/usr/sbin/nologin"]);
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("flowgate:")), "{group}");

    // The installed binary validates and tests the installed example.
    let installed = root.join("usr/bin/flowgate");
    let pipelines = root.join("etc/flowgate/pipelines");
    let said = ok(
        Command::new(&installed)
            .arg("validate")
            .arg(&pipelines)
            .output()
            .unwrap(),
        "installed flowgate validate",
    );
    assert!(
        said.contains("example.yaml: ok (pipeline 'example'"),
        "{said}"
    );
    let said = ok(
        Command::new(&installed)
            .args(["test"])
            .arg(&pipelines)
            .output()
            .unwrap(),
        "installed flowgate test",
    );
    assert!(said.contains("1 passed, 0 failed"), "{said}");
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/flowgate.service")).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(repo().join("deploy/debian/flowgate.service")).unwrap()
    );
    let bash = std::fs::read_to_string(root.join("usr/share/bash-completion/completions/flowgate"))
        .unwrap();
    assert!(bash.contains("complete -F _flowgate"), "{bash}");
    if Command::new("man").arg("--version").output().is_ok() {
        let page = ok(
            Command::new("man")
                .arg("-l")
                .arg(root.join("usr/share/man/man1/flowgate-run.1.gz"))
                .env("MANPAGER", "cat")
                .output()
                .unwrap(),
            "man -l flowgate-run.1.gz",
        );
        assert!(page.contains("--metrics-address"), "{page}");
    }

    // Purge: the files and the service's state go, the user stays.
    let state = root.join("var/lib/flowgate/example");
    std::fs::create_dir_all(&state).unwrap();
    dpkg(&root, &["--purge", "flowgate"]);
    for gone in [
        "usr/bin/flowgate",
        "etc/flowgate/pipelines/example.yaml",
        "usr/lib/systemd/system/flowgate.service",
        "var/lib/flowgate",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is left after purge");
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("flowgate:"), "{passwd}");
}
