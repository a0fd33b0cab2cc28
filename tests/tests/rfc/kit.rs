//! What every conformance module uses: node's `http` module as the origin
//! (`tests/origins/answers.js`, with a raw socket beside it for answers `http` will not
//! send), relay in front of it, and curl as the client.

use relay_tests::{Got, Relay, curl, fetch};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const CHUNK: usize = 256 * 1024;

/// `node tests/origins/answers.js` on two loopback ports it picked; killed on drop.
pub(crate) struct Node {
    child: Child,
    pub(crate) http: u16,
    pub(crate) raw: u16,
}

impl Node {
    pub(crate) fn start() -> Node {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/origins/answers.js");
        let mut child = Command::new("node")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is installed by `cargo xtask setup`");
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        // The script prints its ports once listening, or exits.
        let _ = BufReader::new(stdout).read_line(&mut line);
        let port = |name: &str| -> u16 {
            let at = line.find(&format!("\"{name}\":")).expect("ports line") + name.len() + 3;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        };
        let (http, raw) = (port("http"), port("raw"));
        Node { child, http, raw }
    }

    /// How many requests the origin got for `path`.
    pub(crate) fn count(&self, path: &str) -> u64 {
        let (_, body, _) = curl(&[&format!("http://127.0.0.1:{}/count", self.http)]);
        let text = String::from_utf8_lossy(&body).into_owned();
        let Some(at) = text.find(&format!("\"{path}\":")) else {
            return 0;
        };
        text[at + path.len() + 3..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// A relay in front of both ports (the raw one for its paths).
    pub(crate) fn relay(&self) -> Relay {
        self.relay_with("")
    }

    /// [`Node::relay`] with more `[origin]` settings (lines of TOML).
    pub(crate) fn relay_with(&self, origin: &str) -> Relay {
        let mut config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = {CHUNK}\n\
             memory_bytes = 67108864\n\n[origin]\n{origin}"
        );
        for prefix in ["/close", "/te-cl", "/short"] {
            config.push_str(&format!(
                "\n[[origin.http]]\nurl = \"http://127.0.0.1:{}\"\nprefix = \"{prefix}\"\n",
                self.raw
            ));
        }
        config.push_str(&format!(
            "\n[[origin.http]]\nurl = \"http://127.0.0.1:{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            self.http
        ));
        Relay::start(&config)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes `answers.js` sends (its `pattern`).
pub(crate) fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) + seed * 7 + (i >> 8)) as u8)
        .collect()
}

pub(crate) fn get(relay: &Relay, path: &str) -> Got {
    fetch(&relay.url(path), &[])
}

/// `clients` curl fetches of `url`, started `apart` from one another: each gets `want`
/// whole.
pub(crate) fn fetch_together(url: &str, clients: usize, apart: Duration, want: &[u8]) {
    let started: Vec<_> = (0..clients)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(apart);
            }
            let url = url.to_string();
            std::thread::spawn(move || fetch(&url, &[]))
        })
        .collect();
    for c in started {
        let got = c.join().expect("client");
        assert_eq!((got.code, got.status), (0, 200), "{}", got.head);
        assert!(got.body == want, "{} bytes", got.body.len());
    }
}

/// Seconds since the epoch of `got`'s HTTP-date field `name` (`Date`, `Expires`).
pub(crate) fn date_field(got: &Got, name: &str) -> u64 {
    let value = got
        .field(name)
        .unwrap_or_else(|| panic!("no {name}: {}", got.head));
    httpdate::parse_http_date(value)
        .unwrap_or_else(|e| panic!("{name}: {value}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

/// `got`'s `Age`, in seconds.
pub(crate) fn age(got: &Got) -> u64 {
    got.field("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no Age: {}", got.head))
}

/// Now, in seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

/// Whether `a` is within `by` of `b`.
pub(crate) fn near(a: u64, b: u64, by: u64) -> bool {
    a.abs_diff(b) <= by
}

/// The fields of `got`'s head sent with an empty value.
pub(crate) fn empty_fields(got: &Got) -> Vec<&str> {
    got.head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(n, _)| n)
        .collect()
}
