//! `https://` origins: the TLS settings, and the keys refused where they do not apply.

use crate::{Config, ErrorKind};
use std::path::Path;

fn parse(origin: &str, dir: &Path) -> Result<Config, crate::ConfigError> {
    Config::from_str(&format!("[[origin.http]]\n{origin}"), dir, "relay.toml")
}

#[test]
fn an_https_origin_verifies_its_host_by_default_and_takes_a_name_and_a_ca_file() {
    let c = parse("url = \"https://localhost\"\n", Path::new("/")).unwrap();
    let o = &c.origin.http[0];
    assert_eq!(
        o.servers[0].host,
        crate::ServerHost::Name {
            name: "localhost".into(),
            port: 443
        },
        "a name looked up when the relay runs, on the scheme's port"
    );
    assert_eq!(o.authority, "localhost");
    let tls = o.tls.as_ref().expect("TLS");
    assert_eq!(tls.server_name, "localhost");
    assert_eq!(
        (tls.ca_file.as_deref(), tls.insecure_skip_verify),
        (None, false)
    );

    let dir = std::env::temp_dir().join(format!("relay-config-{}-tls", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let c = parse(
        "url = \"https://127.0.0.1:8443\"\ntls_server_name = \"origin.test\"\n\
         tls_ca_file = \"ca.pem\"\nhost_header = \"www.origin.test\"\n",
        &dir,
    )
    .unwrap();
    let o = &c.origin.http[0];
    assert_eq!(
        o.servers[0].address(),
        Some("127.0.0.1:8443".parse().unwrap())
    );
    assert_eq!(
        o.authority, "www.origin.test",
        "host_header is the Host sent"
    );
    // Without host_header, the name verified is the Host sent (the URL's port kept).
    let c = parse(
        "url = \"https://127.0.0.1:8443\"\ntls_server_name = \"origin.test\"\n",
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(c.origin.http[0].authority, "origin.test:8443");
    let c = parse(
        "url = \"https://127.0.0.1\"\ntls_server_name = \"origin.test\"\n",
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(c.origin.http[0].authority, "origin.test");
    let tls = o.tls.as_ref().expect("TLS");
    assert_eq!(tls.server_name, "origin.test");
    assert_eq!(tls.ca_file.as_deref(), Some(dir.join("ca.pem").as_path()));

    // A CA file that is missing, holds no certificate, or a damaged one beside a good
    // one: refused at load, named.
    std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        dir.join("damaged.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\
         -----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (file, says) in [
        ("absent.pem", "cannot read"),
        ("empty.pem", "no PEM certificate"),
        ("damaged.pem", "damaged.pem"),
    ] {
        let e = parse(
            &format!("url = \"https://127.0.0.1:8443\"\ntls_ca_file = \"{file}\"\n"),
            &dir,
        )
        .unwrap_err();
        assert_eq!(
            (e.kind(), e.key(), e.line()),
            (
                ErrorKind::InvalidValue,
                Some("origin.http[0].tls_ca_file"),
                Some(3)
            ),
            "{e}"
        );
        assert!(e.to_string().contains(says), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_keys_on_an_http_origin_and_bad_names_are_refused() {
    for (key, line) in [
        ("tls_ca_file = \"ca.pem\"", 3),
        ("tls_server_name = \"a.test\"", 3),
        ("tls_insecure_skip_verify = true", 3),
    ] {
        let e = parse(
            &format!("url = \"http://127.0.0.1:8000\"\n{key}\n"),
            Path::new("/"),
        )
        .unwrap_err();
        let name = key.split(' ').next().unwrap();
        assert_eq!(
            (e.key(), e.line()),
            (Some(format!("origin.http[0].{name}").as_str()), Some(line)),
            "{e}"
        );
        assert!(e.to_string().contains("https://"), "{e}");
    }
    let e = parse(
        "url = \"https://127.0.0.1:8443\"\ntls_server_name = \"not a name\"\n",
        Path::new("/"),
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("origin.http[0].tls_server_name"), "{e}");
    let e = parse(
        "url = \"https://127.0.0.1:8443\"\nhost_header = \"a b\"\n",
        Path::new("/"),
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("origin.http[0].host_header"), "{e}");
}
