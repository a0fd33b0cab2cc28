//! The Debian package (`cargo xtask package`; `cargo xtask test` builds it from the debug
//! binary under test and names it in `RELAY_DEB`): its control data and file list, its
//! maintainer scripts, the systemd unit, the manual pages, and the package installed into
//! a root of its own (its files, and the libraries the binary links, nothing else) where
//! `relay --version` and `relay check-config` run on the config as installed, chrooted
//! there when root.

use relay_tests::TempDir;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn deb(test: &str) -> Option<PathBuf> {
    match std::env::var_os("RELAY_DEB") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!(
                "SKIPPED: {test}: no package to check (RELAY_DEB: `cargo xtask test` builds it)"
            );
            None
        }
    }
}

#[test]
fn the_package_installs_a_relay_that_checks_its_own_config() {
    let test = "the_package_installs_a_relay_that_checks_its_own_config";
    let Some(deb) = deb(test) else {
        return;
    };
    let (ok, info) = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(ok, "{info}");
    for field in [
        "Package: relay",
        "Version: 0.1.0",
        "Depends: libc6 (>= 2.",
        "Section: net",
        " postinst",
        " prerm",
        " postrm",
        " conffiles",
    ] {
        assert!(info.contains(field), "{field:?} not in:\n{info}");
    }
    let (ok, conffiles) = run(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .arg("Package"));
    assert!(ok && conffiles.trim() == "relay");
    let (ok, list) = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(ok, "{list}");
    eprintln!("package contents:\n{list}");
    for file in [
        "./usr/bin/relay",
        "./lib/systemd/system/relay.service",
        "./lib/systemd/system/relay.socket",
        "./etc/relay/relay.toml",
        "./usr/share/man/man1/relay.1.gz",
        "./usr/share/man/man1/relay-run.1.gz",
        "./usr/share/man/man1/relay-check-config.1.gz",
        "./usr/share/man/man1/relay-steer-attach.1.gz",
        "./usr/share/doc/relay/relay.toml.example",
        "./usr/share/doc/relay/copyright",
    ] {
        assert!(list.contains(file), "{file} not in the package");
    }
    assert!(
        list.lines().all(|l| l.contains("root/root")),
        "files owned by root"
    );

    // Installed into a root of its own: the package's files as dpkg lays them out.
    let root = TempDir::new("pkg-root");
    let (ok, text) = run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    assert!(ok, "{text}");
    let control = TempDir::new("pkg-control");
    let (ok, text) = run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    assert!(ok, "{text}");
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles, "/etc/relay/relay.toml\n");
    for script in ["postinst", "prerm", "postrm"] {
        let (ok, text) = run(Command::new("sh")
            .arg("-n")
            .arg(control.path().join(script)));
        assert!(ok, "{script}: {text}");
    }
    let bin = root.path().join("usr/bin/relay");
    let (ok, text) = run(Command::new("file").arg(&bin));
    if ok {
        assert!(!text.contains("with debug_info"), "not stripped: {text}");
    }
    let unit =
        std::fs::read_to_string(root.path().join("lib/systemd/system/relay.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/relay run --config /etc/relay/relay.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=",
        "CAP_NET_ADMIN",
        "CAP_BPF",
        "CAP_IPC_LOCK",
        "LimitNOFILE=",
        "LimitMEMLOCK=infinity",
        "RuntimeDirectory=relay",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(line), "{line:?} not in the unit");
    }
    assert!(
        unit.contains("Type=notify"),
        "relay tells systemd when it serves"
    );
    let socket =
        std::fs::read_to_string(root.path().join("lib/systemd/system/relay.socket")).unwrap();
    assert!(socket.contains("ListenStream=127.0.0.1:8080"), "{socket}");
    verify_units(root.path());
    let (ok, page) =
        run(Command::new("zcat").arg(root.path().join("usr/share/man/man1/relay.1.gz")));
    assert!(
        ok && page.contains(".TH relay 1") && page.contains("check\\-config"),
        "{page}"
    );

    // relay --version and check-config on the config as installed: chrooted into the root
    // (with the libraries the binary links) when root, else from the root as it lies.
    let chroot = relay_tests::is_root() && with_libraries(&bin, root.path());
    let relay = |args: &[&str]| -> (bool, String) {
        match chroot {
            true => run(Command::new("chroot")
                .arg(root.path())
                .arg("/usr/bin/relay")
                .args(args)),
            false => run(Command::new(&bin).args(args)),
        }
    };
    let (ok, version) = relay(&["--version"]);
    assert!(ok && version.starts_with("relay 0.1.0 (git "), "{version}");
    let config = match chroot {
        true => "/etc/relay/relay.toml".to_string(),
        false => root
            .path()
            .join("etc/relay/relay.toml")
            .display()
            .to_string(),
    };
    let (ok, checked) = relay(&["check-config", "--config", &config]);
    assert!(ok && checked.contains(": ok"), "{checked}");
    eprintln!("{version}{checked}(chrooted: {chroot})");
    if !chroot {
        eprintln!("SKIPPED: {test}: chroot part: needs root");
    }
}

/// Copies the shared libraries `bin` links (as `ldd` lists them) into `root`; false when
/// they cannot be listed.
fn with_libraries(bin: &Path, root: &Path) -> bool {
    let (ok, text) = run(Command::new("ldd").arg(bin));
    if !ok {
        return false;
    }
    for path in text
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
    {
        let dest = root.join(path.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if std::fs::copy(&path, &dest).is_err() {
            return false;
        }
    }
    true
}

/// systemd's own check of the units as installed (`systemd-analyze verify`): every key
/// known, every value parsed, the commands there. It needs the targets they name, taken
/// from this machine's systemd.
fn verify_units(root: &Path) {
    let host = Path::new("/lib/systemd/system");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
        || !host.is_dir()
    {
        eprintln!("SKIPPED: the units' check: no systemd-analyze here");
        return;
    }
    let units = root.join("lib/systemd/system");
    for entry in std::fs::read_dir(host).unwrap().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".target") && !units.join(&name).exists() {
            let _ = std::fs::copy(entry.path(), units.join(&name));
        }
    }
    let (ok, text) = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg(units.join("relay.service"))
        .arg(units.join("relay.socket")));
    // (It warns of an unknown key or a bad value and still exits 0.)
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
}
