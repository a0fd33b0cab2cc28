//! `[cluster]`: gossip membership with the other relays of a site (`relay-cluster`). Absent:
//! this relay stands alone.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfigError, ErrorKind, Source};
use crate::load::{check, in_range, parse_listen};

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// UDP address gossip is received on.
    pub listen: SocketAddr,
    /// The address the others send to (default `listen`; required when `listen` is an
    /// unspecified address). Port 0 in both: the port bound.
    pub advertise: Option<SocketAddr>,
    /// Members to announce this relay to at start (and again while it knows none).
    pub seeds: Vec<SocketAddr>,
    /// A file holding the cluster key: 64 hex digits, readable by its owner only.
    pub key_file: PathBuf,
    /// Failure detection tuned for a LAN (a probe a second) or a WAN (one every 5 s).
    pub wan: bool,
    /// The cluster size the timings are tuned for (default 16).
    pub size: u32,
    /// The site this relay serves, told to the others (default "default").
    pub site: String,
    /// Its share of the site's work relative to the others (default 100).
    pub weight: u32,
    /// TCP address other relays' chunk requests are served on (HTTP/1.1, each request
    /// authenticated under the cluster key: `relay_cluster::peer`); None: no peer listener.
    pub peer_listen: Option<SocketAddr>,
    /// The address steered flows reach this relay at (the outer destination of the
    /// encapsulated packets other relays' `relay_steer` sends it), told to the others;
    /// None: the host of the gossip address the others reach.
    pub steer_address: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [cluster] table")]
pub(crate) struct RawCluster {
    listen: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    seeds: Option<Spanned<Vec<String>>>,
    key_file: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    size: Option<Spanned<u64>>,
    site: Option<Spanned<String>>,
    weight: Option<Spanned<u64>>,
    peer_listen: Option<Spanned<String>>,
    steer_address: Option<Spanned<String>>,
}

impl ClusterConfig {
    /// The address steered flows reach this relay at: `steer_address`, else the host of
    /// the gossip address the others reach.
    pub fn steer_advertised(&self) -> IpAddr {
        self.steer_address
            .unwrap_or_else(|| self.advertise.unwrap_or(self.listen).ip())
    }

    /// The address other relays reach this one's peer listener at, once it is bound
    /// (`bound`: its real port when 0 was asked for): its own address, or, when it listens
    /// on every address, the host of the gossip address the others reach.
    pub fn peer_advertised(&self, bound: SocketAddr) -> SocketAddr {
        match bound.ip().is_unspecified() {
            true => {
                let host = self.advertise.unwrap_or(self.listen).ip();
                SocketAddr::new(host, bound.port())
            }
            false => bound,
        }
    }
}

/// A checked `[cluster]`, and where its key file was named (for `Config::load`'s look at
/// the file).
pub(crate) type Checked = (ClusterConfig, Option<Range<usize>>);

/// `[cluster]` checked.
pub(crate) fn cluster(
    src: Source<'_>,
    raw: Option<RawCluster>,
    base_dir: &Path,
    taken: &[(&str, SocketAddr)],
) -> Result<Option<Checked>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let Some(listen_raw) = raw.listen else {
        return Err(src.error(
            ErrorKind::MissingKey,
            "cluster.listen",
            None,
            "missing: the UDP address gossip is received on, e.g. \"0.0.0.0:7946\"",
        ));
    };
    let listen_span = Some(listen_raw.span());
    let listen = parse_listen(listen_raw.get_ref())
        .map_err(|m| src.invalid("cluster.listen", listen_span.clone(), m))?;
    let (advertise, _) = check(src, "cluster.advertise", raw.advertise, None, |s| {
        let a = parse_listen(&s)?;
        if a.ip().is_unspecified() || a.port() == 0 {
            return Err(format!("must be an address the others reach, got {a}"));
        }
        Ok(Some(a))
    })?;
    if advertise.is_none() && listen.ip().is_unspecified() {
        return Err(src.invalid(
            "cluster.listen",
            listen_span,
            format!(
                "{listen} is every address: set cluster.advertise to the one the other relays \
                 reach"
            ),
        ));
    }
    let (seeds, _) = check(src, "cluster.seeds", raw.seeds, Vec::new(), |list| {
        list.iter()
            .map(|s| {
                let a = parse_listen(s)?;
                if a.ip().is_unspecified() || a.port() == 0 {
                    return Err(format!("a seed must be an address and port, got {s:?}"));
                }
                Ok(a)
            })
            .collect()
    })?;
    let Some(key_raw) = raw.key_file else {
        return Err(src.error(
            ErrorKind::MissingKey,
            "cluster.key_file",
            None,
            "missing: a file holding the cluster key (64 hex digits, e.g. from \
             `openssl rand -hex 32`), readable by relay's user only",
        ));
    };
    let key_span = Some(key_raw.span());
    let key_file = base_dir.join(key_raw.into_inner());
    let (wan, _) = check(src, "cluster.mode", raw.mode, false, |m| match m.as_str() {
        "lan" => Ok(false),
        "wan" => Ok(true),
        _ => Err(format!("must be \"lan\" or \"wan\", got {m:?}")),
    })?;
    let (size, _) = check(src, "cluster.size", raw.size, 16, in_range(1, 100_000))?;
    let (site, _) = check(src, "cluster.site", raw.site, "default".to_string(), |s| {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        match ok {
            true => Ok(s),
            false => Err(format!(
                "must be 1 to 64 letters, digits, '.', '_' or '-', got {s:?}"
            )),
        }
    })?;
    let (weight, _) = check(src, "cluster.weight", raw.weight, 100, in_range(0, 10_000))?;
    let (peer_listen, _) = check(src, "cluster.peer_listen", raw.peer_listen, None, |s| {
        let a = parse_listen(&s)?;
        // `run` could not bind both.
        match taken.iter().find(|(_, t)| crate::load::overlaps(a, *t)) {
            Some((key, t)) => Err(format!(
                "{a} is also {key} ({t}): give the peer listener a port of its own"
            )),
            None => Ok(Some(a)),
        }
    })?;
    let (steer_address, _) =
        check(
            src,
            "cluster.steer_address",
            raw.steer_address,
            None,
            |s| match s.parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Ok(Some(ip)),
                _ => Err(format!(
                    "must be the IP address steered flows reach this relay at, got {s:?}"
                )),
            },
        )?;
    Ok(Some((
        ClusterConfig {
            listen,
            advertise,
            seeds,
            key_file,
            wan,
            size: size as u32,
            site,
            weight: weight as u32,
            peer_listen,
            steer_address,
        },
        key_span,
    )))
}

/// The cluster key in `path`: 64 hex digits (surrounding whitespace ignored), in a file no
/// one but its owner may read or write.
pub fn read_key(path: &Path) -> Result<[u8; 32], String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is open to others (mode {:o}): the key must be readable by its owner only \
             (chmod 600)",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let t = text.trim();
    let mut key = [0u8; 32];
    let hex = |i: usize| {
        t.get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    if t.len() != 64 {
        return Err(format!(
            "{} must hold 64 hex digits (32 bytes), it holds {} characters",
            path.display(),
            t.len()
        ));
    }
    for (i, b) in key.iter_mut().enumerate() {
        *b = hex(i)
            .ok_or_else(|| format!("{} holds something other than hex digits", path.display()))?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use crate::{Config, ErrorKind};
    use std::path::Path;

    const BASE: &str = "[origin]\ndirectory = \"/srv\"\n";

    fn parse(cluster: &str) -> Result<Config, crate::ConfigError> {
        Config::from_str(
            &format!("{BASE}[cluster]\n{cluster}"),
            Path::new("/etc/relay"),
            "relay.toml",
        )
    }

    fn refused(cluster: &str) -> (ErrorKind, String, String) {
        let e = parse(cluster).expect_err("must be refused");
        (e.kind(), e.key().unwrap_or("").to_owned(), e.to_string())
    }

    #[test]
    fn a_cluster_section_is_read_with_its_defaults() {
        let c = parse(
            "listen = \"10.0.0.1:7946\"\nseeds = [\"10.0.0.2:7946\", \"[2001:db8::3]:7946\"]\n\
             key_file = \"cluster.key\"\n",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.listen, "10.0.0.1:7946".parse().unwrap());
        assert_eq!(c.advertise, None);
        assert_eq!(c.seeds.len(), 2);
        assert_eq!(c.key_file, Path::new("/etc/relay/cluster.key"));
        assert!(!c.wan);
        assert_eq!(c.size, 16);
        assert_eq!((c.site.as_str(), c.weight), ("default", 100));
        assert!(
            Config::from_str(BASE, Path::new("/"), "r.toml")
                .unwrap()
                .cluster
                .is_none()
        );
    }

    #[test]
    fn each_mistake_names_its_key_and_says_why() {
        let (kind, key, _) = refused("key_file = \"k\"\n");
        assert_eq!(
            (kind, key.as_str()),
            (ErrorKind::MissingKey, "cluster.listen")
        );
        let (kind, key, _) = refused("listen = \"10.0.0.1:7946\"\n");
        assert_eq!(
            (kind, key.as_str()),
            (ErrorKind::MissingKey, "cluster.key_file")
        );
        let (_, key, msg) = refused("listen = \"0.0.0.0:7946\"\nkey_file = \"k\"\n");
        assert_eq!(key, "cluster.listen");
        assert!(msg.contains("cluster.advertise"), "{msg}");
        let (_, key, msg) =
            refused("listen = \"10.0.0.1:7946\"\nseeds = [\"relay-2:7946\"]\nkey_file = \"k\"\n");
        assert_eq!(key, "cluster.seeds");
        assert!(msg.contains("relay-2:7946"), "{msg}");
        let (_, key, _) =
            refused("listen = \"10.0.0.1:7946\"\nkey_file = \"k\"\nmode = \"mars\"\n");
        assert_eq!(key, "cluster.mode");
        let (_, key, _) =
            refused("listen = \"10.0.0.1:7946\"\nkey_file = \"k\"\nsite = \"a b\\\"\"\n");
        assert_eq!(key, "cluster.site");
        let (_, key, _) = refused("listen = \"10.0.0.1:7946\"\nkey_file = \"k\"\nweight = 20000\n");
        assert_eq!(key, "cluster.weight");
        let (kind, _, _) = refused("listen = \"10.0.0.1:7946\"\nkey_file = \"k\"\ngossip = 1\n");
        assert_eq!(kind, ErrorKind::UnknownKey);
        // The peer listener may not take the client listener's port (the default
        // server.listen is 127.0.0.1:8080), nor the admin listener's (127.0.0.1:9090).
        for taken in ["127.0.0.1:8080", "0.0.0.0:8080", "127.0.0.1:9090"] {
            let (_, key, msg) = refused(&format!(
                "listen = \"10.0.0.1:7946\"\nkey_file = \"k\"\npeer_listen = \"{taken}\"\n"
            ));
            assert_eq!(key, "cluster.peer_listen");
            assert!(msg.contains("a port of its own"), "{msg}");
        }
        let (_, key, _) =
            refused("listen = \"10.0.0.1:7946\"\nkey_file = \"k\"\npeer_listen = \"peer:1\"\n");
        assert_eq!(key, "cluster.peer_listen");
    }

    #[test]
    fn the_peer_listener_is_advertised_at_the_gossip_host_when_it_takes_every_address() {
        let c = parse(
            "listen = \"0.0.0.0:7946\"\nadvertise = \"192.0.2.11:7946\"\nkey_file = \"k\"\n\
             peer_listen = \"0.0.0.0:7947\"\n",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.peer_listen, Some("0.0.0.0:7947".parse().unwrap()));
        let bound = "0.0.0.0:7947".parse().unwrap();
        assert_eq!(c.peer_advertised(bound), "192.0.2.11:7947".parse().unwrap());
        let own = "10.0.0.5:7947".parse().unwrap();
        assert_eq!(c.peer_advertised(own), own);
    }

    #[test]
    fn steering_from_the_cluster_needs_it_and_names_its_keys() {
        let c = parse("listen = \"10.0.0.1:7946\"\nkey_file = \"k\"\n").unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.steer_address, None);
        assert_eq!(
            cluster.steer_advertised(),
            "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
        );
        let with = |extra: &str| {
            Config::from_str(
                &format!(
                    "{BASE}[cluster]\nlisten = \"10.0.0.1:7946\"\nkey_file = \"k\"\n\
                     steer_address = \"10.9.0.1\"\n\n[steer]\ncluster_nodes = true\n{extra}"
                ),
                Path::new("/etc/relay"),
                "relay.toml",
            )
        };
        let c = with("cluster_next_hop = \"10.0.0.254\"\n").unwrap();
        assert!(c.steer.cluster_nodes);
        assert_eq!(
            c.steer.cluster_next_hop,
            Some("10.0.0.254".parse().unwrap())
        );
        let cluster = c.cluster.unwrap();
        assert_eq!(
            cluster.steer_advertised(),
            "10.9.0.1".parse::<std::net::IpAddr>().unwrap()
        );
        let e = with("cluster_next_hop = \"fe80::1\"\n").unwrap_err();
        assert_eq!(e.key(), Some("steer.cluster_next_hop"));
        // Without [cluster] there are no relays to steer to.
        let e = Config::from_str(
            &format!("{BASE}[steer]\ncluster_nodes = true\n"),
            Path::new("/"),
            "relay.toml",
        )
        .unwrap_err();
        assert_eq!(e.key(), Some("steer.cluster_nodes"));
        assert!(e.to_string().contains("[cluster]"), "{e}");
        let (_, key, _) =
            refused("listen = \"10.0.0.1:7946\"\nkey_file = \"k\"\nsteer_address = \"0.0.0.0\"\n");
        assert_eq!(key, "cluster.steer_address");
    }

    #[test]
    fn the_key_file_holds_64_hex_digits_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("relay-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let good = write("good", &format!("{}\n", "0f".repeat(32)), 0o600);
        assert_eq!(super::read_key(&good).unwrap(), [0x0f; 32]);
        let open = write("open", &"0f".repeat(32), 0o644);
        assert!(super::read_key(&open).unwrap_err().contains("chmod 600"));
        let short = write("short", "0f0f", 0o600);
        assert!(
            super::read_key(&short)
                .unwrap_err()
                .contains("64 hex digits")
        );
        let text = write("text", &"zz".repeat(32), 0o600);
        assert!(super::read_key(&text).unwrap_err().contains("hex digits"));
        assert!(
            super::read_key(&dir.join("none"))
                .unwrap_err()
                .contains("cannot open")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
