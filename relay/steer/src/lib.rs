//! Userspace side of relay's XDP steering: loads the embedded `relay_steer` program, attaches
//! it to an interface, pins it so the attachment outlives the process, and reads its counters.
//!
//! Layout:
//! - this file: the public API — [`attach`], [`detach`], [`status`], [`object`], [`Mode`].
//! - `error`: [`SteerError`] and the aya errors behind it ([`BpfError`]).
//! - `pins`: the pin layout (`<pin root>/<iface>/{link,RELAY_STATS,...}`) and making sure the
//!   pin root is on a BPF filesystem (mounting `/sys/fs/bpf` when needed).
//! - `status`: [`IfaceStatus`], the counters summed over CPUs, the nodes, and its `Display`.
//! - `sys`: the few libc calls made directly; the crate's only `unsafe`.
//! - [`maglev`], [`plan`], [`tables`]: the weighted Maglev tables, the [`Plan`] a config asks
//!   for, and [`SteerMaps::sync`], which writes it with an atomic table swap.
//! - [`keeper`], [`health`], [`proximity`]: what `relay run` does — [`Keeper`] syncs the maps
//!   at start and on reload, and its thread marks nodes down and up from HTTP health checks
//!   and weighs them by the round trips those checks measure.
//!
//! The object is built by `cargo xtask build` (nightly, `ebpf/xdp`) and embedded by
//! `build.rs` from `RELAY_EBPF_OBJECT`; without it the crate still builds and [`object`]
//! returns [`SteerError::NotBuilt`].

mod error;
pub mod health;
pub mod keeper;
pub mod maglev;
pub mod members;
mod pins;
pub mod plan;
pub mod proximity;
mod status;
mod sys;
pub mod tables;

use std::{fmt, path::Path, str::FromStr};

use aya::{
    EbpfLoader,
    programs::{Xdp, XdpMode, links::FdLink},
};
use relay_common::{XDP_PROGRAM, maps as map_names};

use crate::pins::IfacePins;
pub use crate::{
    error::{BpfError, SteerError},
    keeper::Keeper,
    plan::{Plan, PlanNode},
    status::{Attachment, IfaceStatus, render_metrics},
    tables::{SteerMaps, SyncReport},
};
pub use relay_config::SteerConfig;

/// Where `relay steer` pins its links and maps unless told otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/relay";

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Let the kernel choose (native when the driver supports it, else generic).
    #[default]
    Default,
    /// Generic XDP, run by the kernel's network stack (`xdpgeneric`); works on any device.
    Skb,
    /// Native XDP, run by the driver (`xdpdrv`).
    Native,
}

impl Mode {
    /// The names [`FromStr`] accepts and [`Display`](fmt::Display) prints.
    pub const NAMES: [&'static str; 3] = ["default", "skb", "native"];

    const fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Default => XdpMode::Default,
            Self::Skb => XdpMode::Skb,
            Self::Native => XdpMode::Driver,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::Skb => "skb",
            Self::Native => "native",
        })
    }
}

/// A mode name that is none of [`Mode::NAMES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown XDP mode {0:?} (expected default, skb or native)")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Self::Default),
            "skb" | "generic" => Ok(Self::Skb),
            "native" | "driver" | "drv" => Ok(Self::Native),
            other => Err(ParseModeError(other.to_owned())),
        }
    }
}

/// The embedded XDP object (an ELF BPF object holding `relay_steer` and its maps).
pub fn object() -> Result<&'static [u8], SteerError> {
    let bytes: &'static [u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay-xdp.o"));
    if bytes.is_empty() {
        Err(SteerError::NotBuilt)
    } else {
        Ok(bytes)
    }
}

/// Attaches `relay_steer` to `iface` in `mode` with the default steering config (no
/// services: traffic passes, the guard's defaults apply). See [`attach_with`].
pub fn attach(iface: &str, mode: Mode, pin_root: &Path) -> Result<(), SteerError> {
    let plan = Plan::from_config(&SteerConfig::default())?;
    attach_with(iface, mode, pin_root, &plan).map(|_| ())
}

/// Loads the embedded object with the map sizes of `plan`, fills the maps from it, attaches
/// `relay_steer` to `iface` in `mode` and pins the link and every map under
/// `<pin_root>/<iface>/`, so the program stays attached after this process exits and
/// [`sync`] can update it.
///
/// Mounts bpffs at `/sys/fs/bpf` first if `pin_root` lies under it and nothing is mounted
/// there. Fails with [`SteerError::AlreadyAttached`] if the interface already has our link
/// pinned; stale pins of an interface that was deleted and re-created are cleared first.
pub fn attach_with(
    iface: &str,
    mode: Mode,
    pin_root: &Path,
    plan: &Plan,
) -> Result<SyncReport, SteerError> {
    validate_iface(iface)?;
    if !sys::is_root() {
        return Err(SteerError::NotRoot);
    }
    if sys::if_index(iface).is_none() {
        return Err(SteerError::NoSuchInterface(iface.to_owned()));
    }
    let object = object()?;
    pins::prepare_root(pin_root)?;

    let pins = IfacePins::new(pin_root, iface);
    claim_dir(iface, &pins)?;
    // From here on, a failure removes what was pinned; the unpinned link detaches on drop.
    let guard = RemoveOnError(&pins);

    let mut ebpf = loader(plan)
        .load(object)
        .map_err(|error| SteerError::bpf("loading the embedded XDP object", error))?;
    program_mut(&mut ebpf)?.load().map_err(|error| {
        SteerError::bpf(format!("loading {XDP_PROGRAM} into the kernel"), error)
    })?;
    for name in map_names::ALL {
        let map = ebpf
            .map(name)
            .ok_or_else(|| SteerError::InvalidObject(format!("map {name}")))?;
        let path = pins.map(name);
        map.pin(&path).map_err(|error| {
            SteerError::bpf(format!("pinning {name} at {}", path.display()), error)
        })?;
    }
    // Fill the maps before the program sees a packet on the interface.
    let report = SteerMaps::from_ebpf(&mut ebpf)?.sync(plan)?;

    let program = program_mut(&mut ebpf)?;
    let attach_context = || format!("attaching {XDP_PROGRAM} to {iface} in {mode} mode");
    let link_id = program
        .attach(iface, mode.xdp_mode())
        .map_err(|error| SteerError::bpf(attach_context(), error))?;
    let link = program
        .take_link(link_id)
        .map_err(|error| SteerError::bpf(attach_context(), error))?;
    // A netlink attachment (kernels before 5.9) has no bpf_link and cannot be pinned.
    let link = FdLink::try_from(link).map_err(|error| {
        SteerError::bpf(format!("{}: no bpf_link to pin", attach_context()), error)
    })?;
    // Pinning the link is the commit point: from now on the attachment outlives us.
    link.pin(&pins.link).map_err(|error| {
        SteerError::bpf(
            format!("pinning the link at {}", pins.link.display()),
            error,
        )
    })?;
    guard.disarm();
    log::info!(
        "attached {XDP_PROGRAM} to {iface} ({mode}); pinned under {}",
        pins.dir.display()
    );
    Ok(report)
}

/// An object loader with the map sizes `plan` asks for.
pub fn loader(plan: &Plan) -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(map_names::RINGS, plan.max_services * 2)
        .map_max_entries(map_names::STATS, plan.max_services + 1)
        .map_max_entries(map_names::FLOWS, plan.flow_entries)
        .map_max_entries(map_names::RATE, plan.rate_entries);
    loader
}

/// `relay_steer` in a loaded object.
fn program_mut(ebpf: &mut aya::Ebpf) -> Result<&mut Xdp, SteerError> {
    ebpf.program_mut(XDP_PROGRAM)
        .ok_or_else(|| SteerError::InvalidObject(format!("program {XDP_PROGRAM}")))?
        .try_into()
        .map_err(|error| SteerError::bpf(format!("{XDP_PROGRAM} is not an XDP program"), error))
}

/// Brings the maps pinned for `iface` in step with `plan`: settings, services, nodes, the
/// Maglev tables (swapped atomically), the blocklist. The program stays attached throughout.
pub fn sync(iface: &str, pin_root: &Path, plan: &Plan) -> Result<SyncReport, SteerError> {
    validate_iface(iface)?;
    if !sys::is_root() {
        return Err(SteerError::NotRoot);
    }
    let pins = IfacePins::new(pin_root, iface);
    if !pins.link.exists() {
        return Err(SteerError::NotAttached(iface.to_owned()));
    }
    let report = SteerMaps::from_pins(&pins.dir)?.sync(plan)?;
    log::info!(
        "synced {iface}: {} services, {} nodes, table half {}",
        plan.services.len(),
        plan.nodes.len(),
        report.half
    );
    Ok(report)
}

/// Creates the interface's pin directory, or finds it stale and clears it.
fn claim_dir(iface: &str, pins: &IfacePins) -> Result<(), SteerError> {
    match std::fs::create_dir(&pins.dir) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(SteerError::io(&pins.dir, error)),
    }
    if pins.link.exists() && matches!(status::link_state(&pins.link)?, Attachment::Attached { .. })
    {
        return Err(SteerError::AlreadyAttached(iface.to_owned()));
    }
    log::warn!(
        "clearing stale pins of {iface} under {}",
        pins.dir.display()
    );
    pins.remove_all()?;
    std::fs::create_dir(&pins.dir).map_err(|error| match error.kind() {
        // Someone else attached in between.
        std::io::ErrorKind::AlreadyExists => SteerError::AlreadyAttached(iface.to_owned()),
        _ => SteerError::io(&pins.dir, error),
    })
}

/// Removes an interface's pins unless disarmed.
struct RemoveOnError<'a>(&'a IfacePins);

impl RemoveOnError<'_> {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for RemoveOnError<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.0.remove_all() {
            log::warn!("cleaning up after a failed attach: {error}");
        }
    }
}

/// Detaches `relay_steer` from `iface`: removes the link pin (the program leaves the
/// interface once no process holds the link), the counters pin and the directory.
pub fn detach(iface: &str, pin_root: &Path) -> Result<(), SteerError> {
    validate_iface(iface)?;
    if !sys::is_root() {
        return Err(SteerError::NotRoot);
    }
    let pins = IfacePins::new(pin_root, iface);
    if !pins.dir.is_dir() {
        return Err(SteerError::NotAttached(iface.to_owned()));
    }
    let had_link = pins.link.exists();
    if had_link {
        let link = aya::programs::links::PinnedLink::from_pin(&pins.link).map_err(|error| {
            SteerError::bpf(
                format!("opening the link pinned at {}", pins.link.display()),
                error,
            )
        })?;
        // Unpinning drops the pin's reference; dropping the returned fd drops ours, the last.
        let link = link
            .unpin()
            .map_err(|error| SteerError::io(&pins.link, error))?;
        drop(link);
    }
    pins.remove_all()?;
    if had_link {
        log::info!("detached {XDP_PROGRAM} from {iface}");
        Ok(())
    } else {
        Err(SteerError::NotAttached(iface.to_owned()))
    }
}

/// One entry per interface with pins under `pin_root`, sorted by name; empty if `pin_root`
/// does not exist.
pub fn status(pin_root: &Path) -> Result<Vec<IfaceStatus>, SteerError> {
    if !sys::is_root() {
        return Err(SteerError::NotRoot);
    }
    status::read_all(pin_root)
}

/// Accepts what Linux accepts as an interface name (`dev_valid_name`); the name is also a
/// path component under the pin root, so this keeps it from leaving that directory.
pub(crate) fn validate_iface(name: &str) -> Result<(), SteerError> {
    let invalid = |reason| {
        Err(SteerError::InvalidInterface {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() >= libc::IFNAMSIZ {
        return invalid("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return invalid("not a name");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return invalid("contains '/', ':', NUL or whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        for good in ["eth0", "veth-relay1", "a", "x23456789012345"] {
            assert!(validate_iface(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a b",
            "a:1",
            "x234567890123456",
            "a\0",
        ] {
            assert!(
                matches!(
                    validate_iface(bad),
                    Err(SteerError::InvalidInterface { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_names_fail_before_anything_else() {
        let root = Path::new("/nonexistent-relay-root");
        assert!(matches!(
            attach("../x", Mode::Skb, root),
            Err(SteerError::InvalidInterface { .. })
        ));
        assert!(matches!(
            detach("", root),
            Err(SteerError::InvalidInterface { .. })
        ));
    }

    #[test]
    fn modes_parse_and_print() {
        for name in Mode::NAMES {
            let mode: Mode = name.parse().unwrap();
            assert_eq!(mode.to_string(), name);
        }
        assert_eq!("driver".parse::<Mode>(), Ok(Mode::Native));
        assert_eq!("generic".parse::<Mode>(), Ok(Mode::Skb));
        assert!("fast".parse::<Mode>().is_err());
    }

    #[test]
    fn status_prints_one_line_per_verdict() {
        let mut counters = [relay_common::Counter::default(); 5];
        counters[relay_common::Verdict::Pass as usize] = relay_common::Counter {
            packets: 3,
            bytes: 180,
        };
        let status = IfaceStatus {
            iface: "veth0".into(),
            counters,
            attachment: Attachment::Attached {
                ifindex: 7,
                link_id: 12,
                program_id: 34,
            },
            reasons: [relay_common::Counter::default(); relay_common::Reason::COUNT as usize],
            nodes: vec![
                (
                    0,
                    relay_common::Node {
                        flags: relay_common::Node::LOCAL | relay_common::Node::UP,
                        ..Default::default()
                    },
                ),
                (
                    1,
                    relay_common::Node {
                        flags: relay_common::Node::HAS_V4,
                        v4: u32::from_ne_bytes([10, 200, 250, 12]),
                        ..Default::default()
                    },
                ),
            ],
        };
        assert_eq!(
            status.to_string(),
            "veth0: attached ifindex=7 link_id=12 prog_id=34\n\
             \x20 aborted   packets=0 bytes=0\n\
             \x20 drop      packets=0 bytes=0\n\
             \x20 pass      packets=3 bytes=180\n\
             \x20 tx        packets=0 bytes=0\n\
             \x20 redirect  packets=0 bytes=0\n\
             \x20 nodes     local=up 10.200.250.12=down"
        );
    }
}
