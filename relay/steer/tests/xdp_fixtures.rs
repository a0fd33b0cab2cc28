//! `relay_steer` through `BPF_PROG_TEST_RUN`: fixture tables of packets, each with its
//! expected verdict, output and counters. Needs root and the embedded object; otherwise each
//! test prints `SKIPPED: ...` and returns.

mod fixtures;

use fixtures::{Fixture, Loaded, object_or_skip, packet::*, run_table};
use relay_common::{Counter, Verdict};

const XDP_PASS: u32 = 2;

#[test]
fn tcp_packet_passes_unchanged_and_is_counted() {
    let Some(object) = object_or_skip("tcp_packet_passes_unchanged_and_is_counted") else {
        return;
    };
    let input = http_get_v4();
    let loaded = Loaded::new(object);
    let repeat = 1000;
    let (action, output) = loaded.run(&input, repeat).expect("test_run");
    assert_eq!(action, XDP_PASS);
    assert_eq!(output, input, "the program must not touch the packet");
    let counters = loaded.counters();
    assert_eq!(
        counters[Verdict::Pass as usize],
        Counter {
            packets: u64::from(repeat),
            bytes: u64::from(repeat) * input.len() as u64,
        }
    );
    for verdict in [
        Verdict::Aborted,
        Verdict::Drop,
        Verdict::Tx,
        Verdict::Redirect,
    ] {
        assert_eq!(
            counters[verdict as usize],
            Counter::default(),
            "{}",
            verdict.name()
        );
    }
}

#[test]
fn truncated_packets_pass_and_are_counted() {
    let Some(object) = object_or_skip("truncated_packets_pass_and_are_counted") else {
        return;
    };
    let full = http_get_v4();
    let mut table = Vec::new();
    // Every cut through the Ethernet, IPv4 and TCP headers. The kernel refuses test input
    // shorter than an Ethernet header (see `frames_shorter_than_ethernet_are_refused`).
    for len in 14..=54 {
        table.push(Fixture::pass("GET cut short", full[..len].to_vec()));
    }
    run_table(object, &table, 3);
}

#[test]
fn parsed_packets_of_every_kind_pass() {
    let Some(object) = object_or_skip("parsed_packets_of_every_kind_pass") else {
        return;
    };
    let mut bad_ihl = http_get_v4();
    bad_ihl[14] = 0x43; // IHL 3: shorter than the fixed header
    let mut not_v4 = http_get_v4();
    not_v4[14] = 0x65; // says IPv4 in the EtherType, version 6 in the header
    let mut options = ipv4(IPPROTO_TCP, &tcp(1, 2, b"opt"));
    options.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL
    options[0] = 0x46;
    let table = [
        Fixture::pass("IPv4/TCP HTTP request", http_get_v4()),
        Fixture::pass(
            "IPv4/UDP",
            ethernet(ETH_P_IP, None, &ipv4(IPPROTO_UDP, &udp(5353, 53, b"q"))),
        ),
        Fixture::pass("IPv4/TCP with options", ethernet(ETH_P_IP, None, &options)),
        Fixture::pass(
            "IPv6/TCP",
            ethernet(ETH_P_IPV6, None, &ipv6(IPPROTO_TCP, &tcp(1, 80, b"x"))),
        ),
        Fixture::pass(
            "IPv6/UDP",
            ethernet(ETH_P_IPV6, None, &ipv6(IPPROTO_UDP, &udp(1, 53, b""))),
        ),
        Fixture::pass(
            "802.1Q VLAN 100, IPv4/TCP",
            ethernet(ETH_P_IP, Some(100), &ipv4(IPPROTO_TCP, &tcp(1, 80, b"x"))),
        ),
        Fixture::pass(
            "802.1Q VLAN 4095, IPv6/UDP",
            ethernet(ETH_P_IPV6, Some(4095), &ipv6(IPPROTO_UDP, &udp(1, 2, b"x"))),
        ),
        Fixture::pass(
            "802.1Q tag cut short",
            ethernet(ETH_P_IP, Some(7), &[])[..16].to_vec(),
        ),
        Fixture::pass("ARP request", arp_request()),
        Fixture::pass("IPv4 with IHL 3", bad_ihl),
        Fixture::pass("IPv4 EtherType, version 6", not_v4),
        Fixture::pass("unknown EtherType", ethernet(0x88B5, None, &[0xAB; 46])),
        Fixture::pass(
            "jumbo IPv4/TCP",
            ethernet(ETH_P_IP, None, &ipv4(IPPROTO_TCP, &tcp(1, 2, &[7; 3000]))),
        ),
    ];
    run_table(object, &table, 10);
}

/// `BPF_PROG_TEST_RUN` itself rejects XDP input shorter than an Ethernet header (EINVAL), so
/// such frames cannot reach the program this way; a NIC does not deliver them either.
#[test]
fn frames_shorter_than_ethernet_are_refused() {
    let Some(object) = object_or_skip("frames_shorter_than_ethernet_are_refused") else {
        return;
    };
    let loaded = Loaded::new(object);
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
