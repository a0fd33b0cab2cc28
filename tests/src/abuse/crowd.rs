//! Attacking connections, thousands of them on one thread: non-blocking sockets driven by
//! `poll(2)`. Each group of connections follows one [`Behaviour`]: send some bytes as fast
//! as the relay takes them, then trickle a byte at a time, reading (and dropping) what comes
//! or never reading at all. Connections come from loopback addresses 127.0.1.0 and up (every
//! 127/8 address is this machine's), spread over as many as the group says, so the relay
//! sees several clients; the good client stays on 127.0.0.1.
//!
//! Bounded: connects time out after 2 s, the crowd leaves at its deadline (or when `stop`
//! is raised), and reconnects are capped at 100 per connection, a quarter of a second apart.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What each connection of a group does.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Sent at once after the connect, as fast as the relay takes it.
    pub first: Arc<[u8]>,
    /// Then this byte every `every`, at most `max` times.
    pub drip: Option<Drip>,
    /// Read what arrives (and drop it); otherwise never read.
    pub read: bool,
    /// `SO_RCVBUF` before the connect (a small window: a client that takes its bytes slowly,
    /// and little kernel memory for the harness); None: the kernel's default.
    pub rcvbuf: Option<usize>,
    /// Connect again when the relay closes the connection (a quarter of a second later, at
    /// most 100 times each).
    pub reconnect: bool,
    /// Read the first answer's status line even when not reading: an answer other than 200
    /// (a 503 when relay has no room) closes the connection, to be opened again when
    /// `reconnect`: an attacker that keeps asking until it holds what it came for.
    pub retry_refused: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Drip {
    pub byte: u8,
    pub every: Duration,
    pub max: u64,
}

/// Connections that behave alike.
#[derive(Clone, Debug)]
pub struct Group {
    pub target: SocketAddr,
    pub count: usize,
    /// Source addresses the connections are spread over (127.0.1.0 + i % sources).
    pub sources: usize,
    /// First source address (an offset from 127.0.1.0), so groups can use different ones.
    pub first_source: usize,
    pub behaviour: Behaviour,
}

/// What the crowd did and what the relay did to it.
#[derive(Clone, Debug, Default)]
pub struct CrowdStats {
    /// Connections opened (first connects and reconnects).
    pub opened: u64,
    /// Connects that failed or timed out.
    pub connect_failed: u64,
    /// Connections the relay closed (or reset) while the crowd held them.
    pub closed_by_relay: u64,
    pub reconnects: u64,
    /// First answers other than 200 ([`Behaviour::retry_refused`]).
    pub refused: u64,
    pub bytes_sent: u64,
    /// Connections still open when the crowd left.
    pub open_at_end: u64,
    /// From the first connect until every connection was open (or failed).
    pub connect_time: Duration,
}

struct Conn {
    stream: Option<TcpStream>,
    group: usize,
    /// Its number within its group (which source address it uses).
    index: usize,
    sent: usize,
    drips: u64,
    next_drip: Instant,
    reconnects: u32,
    /// When a closed connection may be opened again.
    next_connect: Instant,
    /// The first bytes of the first answer, until its status is known.
    status: Vec<u8>,
    status_known: bool,
}

/// Source address number `i` (127.0.1.0 + i, within 127.0.0.0/8).
fn source(i: usize) -> Ipv4Addr {
    let n = (127u32 << 24) + 256 + (i as u32 % ((1 << 24) - 512));
    Ipv4Addr::from(n)
}

fn connect(group: &Group, index: usize) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let from = source(group.first_source + index % group.sources.max(1));
    s.bind(&SocketAddr::V4(SocketAddrV4::new(from, 0)).into())?;
    if let Some(n) = group.behaviour.rcvbuf {
        s.set_recv_buffer_size(n)?;
    }
    s.connect_timeout(&group.target.into(), Duration::from_secs(2))?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    Ok(s.into())
}

/// Opens every group's connections, drives them for `hold` after the last is open (or
/// until `stop`), then closes them all; what happened.
pub fn run(groups: &[Group], hold: Duration, stop: &AtomicBool) -> CrowdStats {
    let mut stats = CrowdStats::default();
    let started = Instant::now();
    let mut conns = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for i in 0..group.count {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let stream = match connect(group, i) {
                Ok(s) => {
                    stats.opened += 1;
                    Some(s)
                }
                Err(_) => {
                    stats.connect_failed += 1;
                    None
                }
            };
            // Trickles start spread over their first interval, not all at once.
            let spread = group
                .behaviour
                .drip
                .map_or(Duration::ZERO, |d| d.every.mul_f64((i % 16) as f64 / 16.0));
            conns.push(Conn {
                stream,
                group: g,
                index: i,
                sent: 0,
                drips: 0,
                next_drip: Instant::now() + spread,
                reconnects: 0,
                next_connect: Instant::now(),
                status: Vec::new(),
                status_known: false,
            });
            // Send what goes first at once, so a flood is under way while the others connect;
            // now and then the earlier connections' too.
            let last = conns.len() - 1;
            drive_send(&mut conns[last..], groups, &mut stats);
            if last % 128 == 127 {
                drive_send(&mut conns, groups, &mut stats);
            }
        }
    }
    stats.connect_time = started.elapsed();
    let deadline = Instant::now() + hold;
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(conns.len());
    let mut at: Vec<usize> = Vec::with_capacity(conns.len());
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        fds.clear();
        at.clear();
        // Wake at least every 100 ms: for trickles, and for reconnects.
        let mut wake = deadline.min(now + Duration::from_millis(100));
        for (i, c) in conns.iter().enumerate() {
            let Some(s) = &c.stream else { continue };
            let b = &groups[c.group].behaviour;
            let mut events = libc::POLLRDHUP;
            if b.read || (b.retry_refused && !c.status_known) {
                events |= libc::POLLIN;
            }
            if c.sent < b.first.len() {
                events |= libc::POLLOUT;
            } else if let Some(d) = b.drip
                && c.drips < d.max
            {
                wake = wake.min(c.next_drip);
            }
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events,
                revents: 0,
            });
            at.push(i);
        }
        let timeout = wake.saturating_duration_since(now).as_millis() as libc::c_int;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut buf = [0u8; 64 << 10];
        for (k, pfd) in fds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let c = &mut conns[at[k]];
            let b = &groups[c.group].behaviour;
            let mut gone = pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) != 0;
            // The answer's status is read even when the close came with it (a refused
            // upload is answered and closed at once).
            if b.retry_refused
                && !c.status_known
                && pfd.revents & libc::POLLIN != 0
                && let Some(s) = c.stream.as_mut()
            {
                // Only the status line's first bytes, "HTTP/1.1 200".
                let mut head = [0u8; 12];
                let want = 12 - c.status.len();
                match s.read(&mut head[..want]) {
                    Ok(0) => gone = true,
                    Ok(n) => c.status.extend_from_slice(&head[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => gone = true,
                }
                // (A status cut short by the close is not a refusal: the close counts.)
                if c.status.len() == 12 {
                    c.status_known = true;
                    if &c.status[9..12] != b"200" {
                        stats.refused += 1;
                        // Closed by the attacker: not counted as closed by relay.
                        c.stream = None;
                        c.next_connect = Instant::now() + Duration::from_millis(250);
                        continue;
                    }
                }
            }
            if !gone
                && b.read
                && pfd.revents & libc::POLLIN != 0
                && let Some(s) = c.stream.as_mut()
            {
                // At most 1 MiB a round from one connection.
                for _ in 0..16 {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            gone = true;
                            break;
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            gone = true;
                            break;
                        }
                    }
                }
            }
            if gone {
                c.stream = None;
                c.next_connect = Instant::now() + Duration::from_millis(250);
                stats.closed_by_relay += 1;
            }
        }
        drive_send(&mut conns, groups, &mut stats);
        // Trickles.
        let now = Instant::now();
        for c in conns.iter_mut() {
            let b = &groups[c.group].behaviour;
            let (Some(d), Some(s)) = (b.drip, c.stream.as_mut()) else {
                continue;
            };
            if c.sent < b.first.len() || c.drips >= d.max || now < c.next_drip {
                continue;
            }
            match s.write(&[d.byte]) {
                Ok(1) => {
                    c.drips += 1;
                    stats.bytes_sent += 1;
                    c.next_drip += d.every;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => c.next_drip = now + d.every,
                _ => {
                    c.stream = None;
                    c.next_connect = now + Duration::from_millis(250);
                    stats.closed_by_relay += 1;
                }
            }
        }
        // Reconnects of what was closed.
        let now = Instant::now();
        for c in conns.iter_mut() {
            let group = &groups[c.group];
            if c.stream.is_some()
                || !group.behaviour.reconnect
                || c.reconnects >= 100
                || now < c.next_connect
            {
                continue;
            }
            // From the address it came from before.
            let stream = connect(group, c.index).ok();
            c.reconnects += 1;
            stats.reconnects += 1;
            match stream {
                Some(s) => {
                    stats.opened += 1;
                    c.stream = Some(s);
                    c.sent = 0;
                    c.drips = 0;
                    c.next_drip = Instant::now();
                    c.status.clear();
                    c.status_known = false;
                }
                None => {
                    stats.connect_failed += 1;
                    c.next_connect = now + Duration::from_millis(250);
                }
            }
        }
    }
    // Whatever the relay closed in the last round counts as closed, not as held.
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .filter_map(|c| c.stream.as_ref())
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries for the call.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    stats.open_at_end = fds
        .iter()
        .filter(|p| p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) == 0)
        .count() as u64;
    drop(conns);
    stats
}

/// Sends what goes first on every connection that still has some to send, as much as each
/// socket takes now.
fn drive_send(conns: &mut [Conn], groups: &[Group], stats: &mut CrowdStats) {
    for c in conns.iter_mut() {
        let b = &groups[c.group].behaviour;
        let Some(s) = c.stream.as_mut() else { continue };
        while c.sent < b.first.len() {
            match s.write(&b.first[c.sent..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.sent += n;
                    stats.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.stream = None;
                    stats.closed_by_relay += 1;
                    break;
                }
            }
        }
    }
}
