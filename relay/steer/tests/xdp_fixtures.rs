//! `relay_steer` through `BPF_PROG_TEST_RUN`: fixture tables of packets, each with its
//! expected verdict, output bytes and counters, on maps filled from a `[steer]` config.
//! Needs root and the embedded object; otherwise each test prints `SKIPPED: ...` and returns.
//!
//! Tables: [`steering`] (remote node: IPIP / IP6IP6 bytes, new and established flows, VLAN,
//! non-service traffic, malformed headers, fragments, options), [`local_node`], [`guard`]
//! (blocklist, token bucket, drop policies, malformed pass), [`decapsulation`],
//! [`unconfigured`], and the dynamic cases: flows across a table change and a node going down,
//! and per-service counters.

mod fixtures;

use fixtures::{
    Fixture, Loaded, Output, check, expect::encapsulated, object_or_skip, packet::*, plan,
    run_table,
};
use relay_common::{Counter, Reason, Verdict, flow_hash};

use Reason::*;

const VIP4: [u8; 4] = [10, 200, 251, 1];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x02, 0x51, 0, 0, 0, 0, 0, 0, 0, 1,
];
const CLIENT4: [u8; 4] = [10, 200, 1, 7];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const BLOCKED4: [u8; 4] = [10, 200, 99, 5];
const BLOCKED6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
];
const R1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfa, 0x11];
const R1_V4: [u8; 4] = [10, 200, 250, 11];
const R1_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x02, 0x50, 0, 0, 0, 0, 0, 0, 0, 0x11,
];

const SERVICES: &str = r#"
[[steer.services]]
address = "10.200.251.1"
port = 8080
[[steer.services]]
address = "10.200.251.1"
port = 5353
protocol = "udp"
[[steer.services]]
address = "2001:db8:0:251::1"
port = 443
[[steer.services]]
address = "2001:db8:0:251::1"
port = 443
protocol = "udp"
"#;

const R1: &str = r#"
[[steer.nodes]]
name = "r1"
address = "10.200.250.11"
address_v6 = "2001:db8:0:250::11"
mac = "02:00:00:00:fa:11"
"#;

const LOCAL: &str = r#"
[[steer.nodes]]
name = "self"
local = true
"#;

const BASE: &str = r#"
[steer]
ring_size = 251
max_services = 4
encap_source_v4 = "10.200.252.0/24"
encap_source_v6 = "2001:db8:0:252::/64"
"#;

fn config(extra: &str, nodes: &str) -> String {
    format!("{BASE}{extra}\n{SERVICES}{nodes}")
}

fn tcp4(src: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    ethernet(
        ETH_P_IP,
        None,
        &ipv4_full(
            src,
            VIP4,
            IPPROTO_TCP,
            0x4000,
            &[],
            &tcp_flags(sport, dport, flags, b""),
        ),
    )
}

fn udp4(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    ethernet(
        ETH_P_IP,
        None,
        &ipv4_full(src, VIP4, IPPROTO_UDP, 0, &[], &udp(sport, dport, b"query")),
    )
}

fn tcp6(src: [u8; 16], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    ethernet(
        ETH_P_IPV6,
        None,
        &ipv6_full(src, VIP6, IPPROTO_TCP, &tcp_flags(sport, dport, flags, b"")),
    )
}

fn udp6(src: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    ethernet(
        ETH_P_IPV6,
        None,
        &ipv6_full(src, VIP6, IPPROTO_UDP, &udp(sport, dport, b"quic")),
    )
}

#[test]
fn steering() {
    let Some(object) = object_or_skip("steering") else {
        return;
    };
    let plan = plan(&config("", R1));
    let s = &plan.settings;
    let to_r1 = |frame: &[u8]| {
        let node: &[u8] = if frame[l3_of(frame)] >> 4 == 4 {
            &R1_V4
        } else {
            &R1_V6
        };
        encapsulated(frame, R1_MAC, node, s)
    };

    let syn = tcp4(CLIENT4, 40000, 8080, TCP_SYN);
    let ack = tcp4(CLIENT4, 40000, 8080, TCP_ACK);
    let get = ethernet(
        ETH_P_IP,
        None,
        &ipv4_full(
            CLIENT4,
            VIP4,
            IPPROTO_TCP,
            0x4000,
            &[],
            &tcp_flags(40000, 8080, 0x18, b"GET / HTTP/1.1\r\n\r\n"),
        ),
    );
    let udp_new = udp4(CLIENT4, 5000, 5353);
    let syn6 = tcp6(CLIENT6, 40001, 443, TCP_SYN);
    let ack6 = tcp6(CLIENT6, 40001, 443, TCP_ACK);
    let udp6_new = udp6(CLIENT6, 5001, 443);
    let vlan_syn = ethernet(
        ETH_P_IP,
        Some(100),
        &ipv4_full(
            CLIENT4,
            VIP4,
            IPPROTO_TCP,
            0x4000,
            &[],
            &tcp_flags(40002, 8080, TCP_SYN, b""),
        ),
    );
    let vlan_udp6 = ethernet(
        ETH_P_IPV6,
        Some(4000),
        &ipv6_full(CLIENT6, VIP6, IPPROTO_UDP, &udp(5002, 443, b"x")),
    );
    let options = ethernet(
        ETH_P_IP,
        None,
        // NOP NOP NOP EOL: IHL 6.
        &ipv4_full(
            CLIENT4,
            VIP4,
            IPPROTO_TCP,
            0x4000,
            &[1, 1, 1, 0],
            &tcp_flags(40003, 8080, TCP_SYN, b""),
        ),
    );
    let options_out = to_r1(&options);
    // Ethernet padding after a short IP packet: kept after the inner packet.
    let mut padded = tcp4(CLIENT4, 40004, 8080, TCP_SYN);
    padded.extend_from_slice(&[0; 6]);
    let padded_out = to_r1(&padded);
    let jumbo = ethernet(
        ETH_P_IP,
        None,
        &ipv4_full(
            CLIENT4,
            VIP4,
            IPPROTO_TCP,
            0x4000,
            &[],
            &tcp_flags(40005, 8080, 0x18, &[7; 3000]),
        ),
    );
    let mut not_service = padded.clone();
    not_service[14 + 16..14 + 20].copy_from_slice(&[10, 200, 251, 2]);
    fix_v4_checksum(&mut not_service);

    let table = vec![
        Fixture::tx(
            "IPv4 TCP SYN, new flow → IPIP to r1",
            syn.clone(),
            to_r1(&syn),
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "IPv4 TCP ACK, established",
            ack.clone(),
            to_r1(&ack),
            &[Established, Remote],
        ),
        Fixture::tx(
            "IPv4 TCP request, established",
            get.clone(),
            to_r1(&get),
            &[Established, Remote],
        ),
        Fixture::tx(
            "IPv4 UDP, new flow",
            udp_new.clone(),
            to_r1(&udp_new),
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "IPv4 UDP, established",
            udp_new.clone(),
            to_r1(&udp_new),
            &[Established, Remote],
        ),
        Fixture::tx(
            "IPv6 TCP SYN, new flow → IP6IP6 to r1",
            syn6.clone(),
            to_r1(&syn6),
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "IPv6 TCP ACK, established",
            ack6.clone(),
            to_r1(&ack6),
            &[Established, Remote],
        ),
        Fixture::tx(
            "IPv6 UDP, new flow",
            udp6_new.clone(),
            to_r1(&udp6_new),
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "802.1Q VLAN 100 IPv4 SYN: tag kept",
            vlan_syn.clone(),
            to_r1(&vlan_syn),
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "802.1Q VLAN 4000 IPv6 UDP: tag kept",
            vlan_udp6.clone(),
            to_r1(&vlan_udp6),
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "IPv4 options (policy steer): inner untouched",
            options.clone(),
            options_out,
            &[IpOptions, NewFlow, Remote],
        ),
        Fixture::tx(
            "Ethernet padding kept behind the inner packet",
            padded.clone(),
            padded_out,
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "3000-byte IPv4 TCP segment",
            jumbo.clone(),
            to_r1(&jumbo),
            &[NewFlow, Remote],
        ),
        Fixture::pass(
            "IPv4 TCP to the VIP, other port",
            tcp4(CLIENT4, 40000, 8081, TCP_SYN),
            &[NoService],
        ),
        Fixture::pass(
            "IPv4 TCP to another address (padded)",
            not_service,
            &[NoService],
        ),
        Fixture::pass(
            "IPv4 UDP to the TCP service's port",
            udp4(CLIENT4, 5000, 8080),
            &[NoService],
        ),
        Fixture::pass(
            "IPv6 TCP to the VIP, other port",
            tcp6(CLIENT6, 1, 80, TCP_SYN),
            &[NoService],
        ),
        Fixture::pass(
            "ICMP echo to the VIP",
            ethernet(
                ETH_P_IP,
                None,
                &ipv4_full(
                    CLIENT4,
                    VIP4,
                    IPPROTO_ICMP,
                    0,
                    &[],
                    &[8, 0, 0, 0, 0, 1, 0, 1],
                ),
            ),
            &[NoService],
        ),
        Fixture::pass("ARP request", arp_request(), &[NotIp]),
        Fixture::pass(
            "unknown EtherType",
            ethernet(0x88B5, None, &[0xAB; 46]),
            &[NotIp],
        ),
        Fixture::pass(
            "IPv4 first fragment to the service (policy pass)",
            ethernet(
                ETH_P_IP,
                None,
                &ipv4_full(
                    CLIENT4,
                    VIP4,
                    IPPROTO_TCP,
                    0x2000,
                    &[],
                    &tcp(40006, 8080, b"frag"),
                ),
            ),
            &[Fragment],
        ),
        Fixture::pass(
            "IPv4 later fragment (no ports)",
            ethernet(
                ETH_P_IP,
                None,
                &ipv4_full(CLIENT4, VIP4, IPPROTO_TCP, 0x00B9, &[], &[0x55; 24]),
            ),
            &[Fragment],
        ),
        Fixture::pass(
            "IPv6 fragment header",
            ethernet(
                ETH_P_IPV6,
                None,
                &ipv6_full(CLIENT6, VIP6, 44, &[6, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0]),
            ),
            &[Fragment],
        ),
        Fixture::pass(
            "IPv6 hop-by-hop options (not walked: pass)",
            ethernet(
                ETH_P_IPV6,
                None,
                &ipv6_full(CLIENT6, VIP6, 0, &[6, 0, 1, 4, 0, 0, 0, 0]),
            ),
            &[IpOptions],
        ),
    ];
    let loaded = run_table(object, Some(&plan), &table);
    let service0 = loaded.maps.service_counters(0).expect("service counters");
    assert_eq!(
        service0[Verdict::Tx as usize].packets,
        7,
        "TCP/4 service: {service0:?}"
    );
    let service2 = loaded.maps.service_counters(2).expect("service counters");
    assert_eq!(
        service2[Verdict::Tx as usize].packets,
        2,
        "TCP/6 service: {service2:?}"
    );
}

#[test]
fn malformed_headers_are_dropped() {
    let Some(object) = object_or_skip("malformed_headers_are_dropped") else {
        return;
    };
    let syn = tcp4(CLIENT4, 40000, 8080, TCP_SYN);
    let mut table = Vec::new();
    // Every cut through the IPv4 and TCP headers (the kernel refuses frames shorter than an
    // Ethernet header: see `frames_shorter_than_ethernet_are_refused`).
    for len in 14..syn.len() {
        table.push(Fixture::drop(
            "SYN cut short",
            syn[..len].to_vec(),
            &[Malformed],
        ));
    }
    let mut bad_ihl = syn.clone();
    bad_ihl[14] = 0x43;
    let mut not_v4 = syn.clone();
    not_v4[14] = 0x65;
    let mut long = syn.clone();
    long[16..18].copy_from_slice(&100u16.to_be_bytes());
    let mut short = syn.clone();
    short[16..18].copy_from_slice(&16u16.to_be_bytes());
    let mut doff = syn.clone();
    doff[14 + 20 + 12] = 4 << 4;
    let mut doff_long = syn.clone();
    doff_long[14 + 20 + 12] = 15 << 4;
    let udp_cut = ethernet(
        ETH_P_IP,
        None,
        &ipv4_full(CLIENT4, VIP4, IPPROTO_UDP, 0, &[], &[0, 53, 0]),
    );
    let syn6 = tcp6(CLIENT6, 1, 443, TCP_SYN);
    let mut long6 = syn6.clone();
    long6[18..20].copy_from_slice(&200u16.to_be_bytes());
    let mut not_v6 = syn6.clone();
    not_v6[14] = 0x45;
    let cases = [
        Fixture::drop("IPv4 IHL 3", bad_ihl, &[Malformed]),
        Fixture::drop("IPv4 EtherType, version 6", not_v4, &[Malformed]),
        Fixture::drop("IPv4 total length beyond the frame", long, &[Malformed]),
        Fixture::drop("IPv4 total length below the header", short, &[Malformed]),
        Fixture::drop("TCP data offset 4", doff, &[Malformed]),
        Fixture::drop("TCP data offset beyond the packet", doff_long, &[Malformed]),
        Fixture::drop("UDP header cut short", udp_cut, &[Malformed]),
        Fixture::drop("IPv6 payload length beyond the frame", long6, &[Malformed]),
        Fixture::drop("IPv6 EtherType, version 4", not_v6, &[Malformed]),
        Fixture::drop("IPv6 header cut short", syn6[..40].to_vec(), &[Malformed]),
        Fixture::drop(
            "802.1Q tag cut short",
            ethernet(ETH_P_IP, Some(7), &[])[..16].to_vec(),
            &[Malformed],
        ),
    ];
    table.extend(cases);
    let loaded = run_table(object, Some(&plan(&config("", R1))), &table);
    assert_eq!(loaded.counters()[Verdict::Tx as usize], Counter::default());
}

#[test]
fn local_node() {
    let Some(object) = object_or_skip("local_node") else {
        return;
    };
    let syn = tcp4(CLIENT4, 41000, 8080, TCP_SYN);
    let table = [
        Fixture::pass("IPv4 SYN, new flow → local", syn.clone(), &[NewFlow, Local]),
        Fixture::pass(
            "IPv4 SYN again, established → local",
            syn,
            &[Established, Local],
        ),
        Fixture::pass(
            "IPv6 UDP, new flow → local",
            udp6(CLIENT6, 41001, 443),
            &[NewFlow, Local],
        ),
        Fixture::pass(
            "VLAN IPv6 TCP → local",
            ethernet(
                ETH_P_IPV6,
                Some(9),
                &ipv6_full(CLIENT6, VIP6, IPPROTO_TCP, &tcp(41002, 443, b"")),
            ),
            &[NewFlow, Local],
        ),
    ];
    run_table(object, Some(&plan(&config("", LOCAL))), &table);
}

#[test]
fn guard() {
    let Some(object) = object_or_skip("guard") else {
        return;
    };
    let guard = r#"
malformed = "pass"
fragments = "drop"
ip_options = "drop"
[steer.guard]
new_flows_per_second = 1
new_flow_burst = 2
blocklist = ["10.200.99.0/24", "2001:db8:bad::/48"]
"#;
    let plan = plan(&config(guard, R1));
    let s = &plan.settings;
    let to_r1 = |frame: &[u8]| encapsulated(frame, R1_MAC, &R1_V4, s);
    let limited = [10, 200, 98, 1];
    let first = tcp4(limited, 1000, 8080, TCP_SYN);
    let second = tcp4(limited, 1001, 8080, TCP_SYN);
    let third = tcp4(limited, 1002, 8080, TCP_SYN);
    let other = tcp4([10, 200, 98, 2], 1000, 8080, TCP_SYN);
    let outside = tcp4([10, 200, 100, 5], 1000, 8080, TCP_SYN);
    let mut bad_ihl = tcp4(CLIENT4, 1, 8080, TCP_SYN);
    bad_ihl[14] = 0x44;
    let table = [
        Fixture::drop(
            "blocked IPv4 source to the service",
            tcp4(BLOCKED4, 1, 8080, TCP_SYN),
            &[Blocked],
        ),
        Fixture::drop(
            "blocked IPv4 source to anything",
            udp4(BLOCKED4, 1, 9),
            &[Blocked],
        ),
        Fixture::drop(
            "blocked IPv6 source",
            tcp6(BLOCKED6, 1, 443, TCP_SYN),
            &[Blocked],
        ),
        Fixture::tx(
            "source next to the blocked /24",
            outside.clone(),
            to_r1(&outside),
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "rate: first new flow of a source",
            first.clone(),
            to_r1(&first),
            &[NewFlow, Remote],
        ),
        Fixture::tx(
            "rate: second (burst 2)",
            second.clone(),
            to_r1(&second),
            &[NewFlow, Remote],
        ),
        Fixture::drop(
            "rate: third within the second → limited",
            third.clone(),
            &[RateLimited],
        ),
        Fixture::tx(
            "rate: established flows are not limited",
            first.clone(),
            to_r1(&first),
            &[Established, Remote],
        ),
        Fixture::tx(
            "rate: another source has its own bucket",
            other.clone(),
            to_r1(&other),
            &[NewFlow, Remote],
        ),
        Fixture::drop("rate: still limited", third, &[RateLimited]),
        Fixture::drop(
            "fragment (policy drop)",
            ethernet(
                ETH_P_IP,
                None,
                &ipv4_full(CLIENT4, VIP4, IPPROTO_UDP, 0x2000, &[], &udp(1, 5353, b"")),
            ),
            &[Fragment],
        ),
        Fixture::drop(
            "IPv4 options (policy drop)",
            ethernet(
                ETH_P_IP,
                None,
                &ipv4_full(
                    CLIENT4,
                    VIP4,
                    IPPROTO_TCP,
                    0,
                    &[1, 1, 1, 0],
                    &tcp(1, 8080, b""),
                ),
            ),
            &[IpOptions],
        ),
        Fixture::pass("malformed (policy pass)", bad_ihl, &[Malformed]),
    ];
    run_table(object, Some(&plan), &table);
}

#[test]
fn decapsulation() {
    let Some(object) = object_or_skip("decapsulation") else {
        return;
    };
    // The entry's view: encapsulate.
    let entry_plan = plan(&config("", R1));
    let syn = tcp4(CLIENT4, 42000, 8080, TCP_SYN);
    let encapped = encapsulated(&syn, R1_MAC, &R1_V4, &entry_plan.settings);
    let syn6 = tcp6(CLIENT6, 42001, 443, TCP_SYN);
    let encapped6 = encapsulated(&syn6, R1_MAC, &R1_V6, &entry_plan.settings);
    // What the relay's stack should get: the frame as the entry received it, re-addressed.
    let inner = |encapped: &[u8], outer: usize| [&encapped[..14], &encapped[14 + outer..]].concat();
    let mut stranger = encapped.clone();
    stranger[14 + 12..14 + 16].copy_from_slice(&[10, 200, 9, 9]);
    fix_v4_checksum(&mut stranger);
    let table = [
        Fixture::new(
            "IPIP from the encap prefix → inner frame",
            encapped.clone(),
            Verdict::Pass,
            Output::Bytes(inner(&encapped, 20)),
            &[Decap],
        ),
        Fixture::new(
            "IP6IP6 from the encap prefix → inner frame",
            encapped6.clone(),
            Verdict::Pass,
            Output::Bytes(inner(&encapped6, 40)),
            &[Decap],
        ),
        Fixture::pass("IPIP from elsewhere: not ours", stranger, &[NoService]),
    ];
    run_table(object, Some(&plan(&config("decap = true", ""))), &table);
    // Without decap the same packets are just not service traffic.
    let table = [Fixture::pass("IPIP, decap off", encapped, &[NoService])];
    run_table(object, Some(&plan(&config("", ""))), &table);
}

#[test]
fn unconfigured() {
    let Some(object) = object_or_skip("unconfigured") else {
        return;
    };
    let mut bad = tcp4(CLIENT4, 1, 8080, TCP_SYN);
    bad[14] = 0x41;
    let table = [
        Fixture::pass(
            "zeroed settings: service packet passes",
            tcp4(CLIENT4, 1, 8080, TCP_SYN),
            &[Disabled],
        ),
        Fixture::pass("zeroed settings: malformed passes", bad, &[Disabled]),
        Fixture::pass("zeroed settings: ARP passes", arp_request(), &[Disabled]),
    ];
    run_table(object, None, &table);
    // A config with no services: everything passes, the guard still drops garbage.
    let table = [
        Fixture::pass("no services: HTTP request", http_get_v4(), &[NoService]),
        Fixture::drop(
            "no services: malformed",
            tcp4(CLIENT4, 1, 8080, TCP_SYN)[..40].to_vec(),
            &[Malformed],
        ),
    ];
    run_table(object, Some(&plan("")), &table);
}

/// Two nodes (local and r1) share the table; each flow's node is predicted from the table the
/// sync reports. Then r1 goes down: its established flows are chosen again (all local now),
/// flows on the local node stay put, and new flows avoid r1.
#[test]
fn flows_follow_the_table_and_leave_a_down_node() {
    let Some(object) = object_or_skip("flows_follow_the_table_and_leave_a_down_node") else {
        return;
    };
    fixtures::pin_to_one_cpu();
    let up = plan(&config("", &format!("{LOCAL}{R1}")));
    let mut loaded = Loaded::new(object, None);
    let report = loaded.maps.sync(&up).expect("sync");
    let (local_id, r1_id) = (report.node_ids[0], report.node_ids[1]);
    let ring = up.settings.ring_size;
    let flows: Vec<Vec<u8>> = (0..64u16)
        .map(|i| tcp4(CLIENT4, 50000 + i, 8080, TCP_SYN))
        .collect();
    let mut on_r1 = Vec::new();
    for flow in &flows {
        let hash = flow_hash(&fixtures::expect::flow_key(flow));
        let node = report.table[(hash % ring) as usize];
        let fixture = if node == r1_id {
            on_r1.push(flow.clone());
            Fixture::tx(
                "predicted r1",
                flow.clone(),
                encapsulated(flow, R1_MAC, &R1_V4, &up.settings),
                &[NewFlow, Remote],
            )
        } else {
            assert_eq!(node, local_id);
            Fixture::pass("predicted local", flow.clone(), &[NewFlow, Local])
        };
        check(&loaded, &fixture).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        (16..=48).contains(&on_r1.len()),
        "equal weights: about half of 64 flows on r1, got {}",
        on_r1.len()
    );

    // r1 down: established flows to it are rescheduled (to the only node left), local ones
    // stay established.
    let down = plan(&config(
        "",
        &format!("{LOCAL}{}", R1.replace("mac =", "up = false\nmac =")),
    ));
    let report = loaded.maps.sync(&down).expect("sync down");
    assert_eq!(report.node_ids, vec![local_id, r1_id], "ids are kept");
    assert!(report.table.iter().all(|&id| id == local_id));
    for flow in &flows {
        let reasons: &[Reason] = if on_r1.contains(flow) {
            &[Rescheduled, Local]
        } else {
            &[Established, Local]
        };
        check(
            &loaded,
            &Fixture::pass("after r1 went down", flow.clone(), reasons),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let fresh = tcp4(CLIENT4, 60000, 8080, TCP_SYN);
    check(
        &loaded,
        &Fixture::pass("new flow, r1 down", fresh, &[NewFlow, Local]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// `BPF_PROG_TEST_RUN` itself rejects XDP input shorter than an Ethernet header (EINVAL), so
/// such frames cannot reach the program this way; a NIC does not deliver them either.
#[test]
fn frames_shorter_than_ethernet_are_refused() {
    let Some(object) = object_or_skip("frames_shorter_than_ethernet_are_refused") else {
        return;
    };
    let loaded = Loaded::new(object, None);
    let short = &http_get_v4()[..10];
    assert!(
        loaded.run(short, 1).is_err(),
        "the kernel accepted a 10-byte XDP test frame"
    );
    assert_eq!(
        loaded.counters()[Verdict::Pass as usize],
        Counter::default()
    );
}

/// Repeat counts: one test_run of 1000 repeats counts 1000 packets.
#[test]
fn repeated_runs_are_counted() {
    let Some(object) = object_or_skip("repeated_runs_are_counted") else {
        return;
    };
    let loaded = Loaded::new(object, Some(&plan(&config("", R1))));
    let input = http_get_v4();
    let (action, output) = loaded.run(&input, 1000).expect("test_run");
    assert_eq!(action, Verdict::Pass as u32);
    assert_eq!(output, input);
    assert_eq!(
        loaded.counters()[Verdict::Pass as usize],
        Counter {
            packets: 1000,
            bytes: 1000 * input.len() as u64
        }
    );
    assert_eq!(loaded.reasons()[NoService as usize].packets, 1000);
}

fn l3_of(frame: &[u8]) -> usize {
    if frame[12..14] == ETH_P_8021Q.to_be_bytes() {
        18
    } else {
        14
    }
}

/// Recomputes the IPv4 header checksum of an untagged frame after a test edited it.
fn fix_v4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0F) * 4;
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
}
