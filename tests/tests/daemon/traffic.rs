//! The daemon under load: 200 reloads alternating between two policies while traffic flows,
//! counted at both ends; and the metric series staying bounded when every port is probed.

use std::{
    collections::BTreeMap,
    net::UdpSocket,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use exfw_daemon::{config, metrics::series_bound, policy::compile};
use exfw_tests::{
    daemon::{GATEWAY_CONFIG, Scratch, scrape, value, wait_until, write_config},
    netns::Topology,
    require_root,
};

fn allow_udp(port: u16) -> String {
    format!(
        "\n[[allow]]\nname = \"udp-{port}\"\nfrom = [\"external\"]\nto = [\"mailbox\"]\nproto = \"udp\"\nports = [{port}]\nreason = \"test traffic\"\n"
    )
}

/// Ports: allowed by both policies, by the first only, by the second only, by neither.
const BOTH: u16 = 5001;
const FIRST: u16 = 5002;
const SECOND: u16 = 5003;
const NEITHER: u16 = 5004;
const RELOADS: usize = 200;

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn reloads_under_traffic_lose_nothing() {
    require_root();
    let scratch = Scratch::new("reload");
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    let first = format!("{GATEWAY_CONFIG}{}{}", allow_udp(BOTH), allow_udp(FIRST));
    let second = format!("{GATEWAY_CONFIG}{}{}", allow_udp(BOTH), allow_udp(SECOND));
    write_config(&scratch.config(), &first);
    let daemon = scratch.start_ready(&net.gateway, "daemon");

    // Receivers inside count what arrives; the sender outside counts what it sent.
    let received: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sockets: Vec<UdpSocket> = net.inside.run(|| {
        [BOTH, FIRST, SECOND, NEITHER]
            .iter()
            .map(|p| {
                let s = UdpSocket::bind(format!("0.0.0.0:{p}")).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                s
            })
            .collect()
    });
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let port = socket.local_addr().unwrap().port();
                let mut buf = [0u8; 64];
                loop {
                    match socket.recv(&mut buf) {
                        Ok(_) => *received.lock().unwrap().entry(port).or_default() += 1,
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    let sender_stop = Arc::new(AtomicBool::new(false));
    let sender_socket = net
        .outside
        .run(|| UdpSocket::bind("203.0.113.2:0").unwrap());
    let sender = {
        let stop = sender_stop.clone();
        std::thread::spawn(move || {
            let mut sent: BTreeMap<u16, u64> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                for port in [BOTH, FIRST, SECOND, NEITHER] {
                    sender_socket.send_to(b"ping", ("192.0.2.2", port)).unwrap();
                    *sent.entry(port).or_default() += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        })
    };

    let started = std::time::Instant::now();
    let mut generation = value(&net.gateway, "exfw_policy_generation", &[]);
    for i in 0..RELOADS {
        write_config(&scratch.config(), if i % 2 == 0 { &second } else { &first });
        daemon.signal(libc::SIGHUP);
        wait_until("the reload", Duration::from_secs(10), || {
            value(&net.gateway, "exfw_policy_generation", &[]) > generation
        });
        generation = value(&net.gateway, "exfw_policy_generation", &[]);
    }
    let elapsed = started.elapsed();
    sender_stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    wait_until(
        "every allowed datagram to arrive",
        Duration::from_secs(10),
        || received.lock().unwrap().get(&BOTH).copied().unwrap_or(0) >= sent[&BOTH],
    );
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        r.join().unwrap();
    }
    let received = received.lock().unwrap().clone();
    let body = scrape(&net.gateway);
    let successes =
        exfw_tests::daemon::metric(&body, "exfw_config_reloads_total", &[r#"result="success""#])
            .unwrap();
    assert!(
        successes as usize > RELOADS,
        "only {successes} successful reloads"
    );
    assert_eq!(
        exfw_tests::daemon::metric(&body, "exfw_config_reloads_total", &[r#"result="failure""#]),
        Some(0.0)
    );
    assert_eq!(
        received.get(&BOTH).copied().unwrap_or(0),
        sent[&BOTH],
        "datagrams allowed by both policies were lost"
    );
    assert_eq!(
        received.get(&NEITHER).copied().unwrap_or(0),
        0,
        "datagrams denied by both policies passed"
    );
    assert!(
        received.get(&FIRST).copied().unwrap_or(0) > 0
            && received.get(&SECOND).copied().unwrap_or(0) > 0
    );
    assert!(
        exfw_tests::daemon::metric(&body, "exfw_port_drops_total", &[r#"port="5001""#]).is_none(),
        "the kernel dropped datagrams to the port both policies allow"
    );
    eprintln!(
        "{RELOADS} reloads in {:.1} s ({:.1} ms each, scrape included); sent {sent:?}, received {received:?}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / RELOADS as f64
    );
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn series_stay_bounded_when_every_port_is_probed() {
    require_root();
    let scratch = Scratch::new("series");
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    let text = format!("{GATEWAY_CONFIG}{}", allow_udp(BOTH));
    write_config(&scratch.config(), &text);
    let compiled = compile(&config::parse(&text, "test").unwrap()).unwrap();
    let bound = series_bound(&compiled, 2);
    let _daemon = scratch.start_ready(&net.gateway, "daemon");
    let socket = net
        .outside
        .run(|| UdpSocket::bind("203.0.113.2:0").unwrap());
    for port in 0..=u16::MAX {
        if port != 0 {
            socket.send_to(b"x", ("192.0.2.2", port)).unwrap();
        }
        if port % 4096 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    wait_until(
        "the drops of 65,534 ports to be counted",
        Duration::from_secs(20),
        || value(&net.gateway, "exfw_port_drops_total", &[r#"proto="udp""#]) >= 65_534.0,
    );
    let body = scrape(&net.gateway);
    let series = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert!(
        series <= bound,
        "{series} series exceed the documented bound of {bound}"
    );
    assert!(bound < 1_000, "the bound itself must stay small: {bound}");
    eprintln!("every UDP port probed: {series} series (bound {bound})");
}
