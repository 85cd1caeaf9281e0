//! Pinned state at the library level: enforcement outlives the process that attached it, a new
//! load adopts the maps (generation, counters) and replaces the program through the pinned link,
//! a second holder is refused, an incompatible build's pins are refused or replaced, and
//! removing the pins detaches everything.

use std::{collections::BTreeSet, path::PathBuf};

use exfw_common::{Reason, Verdict, map_names, proto};
use exfw_daemon::{
    dataplane::{self, AttachMode, AttachedMode, Dataplane, DataplaneError, LoadOptions},
    policy::{Accepts, Class, Interface, Policy, PortRange, Rule},
};
use exfw_tests::{netns::Topology, require_root};

/// Removes the test's pin directory however the test ends.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = dataplane::remove_pinned(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn policy() -> Policy {
    Policy {
        classes: vec![Class {
            id: 1,
            name: "cas".into(),
            protected: true,
            trusted: true,
            prefixes: vec!["192.0.2.2/32".parse().unwrap()],
            ..Default::default()
        }],
        rules: vec![Rule {
            id: 1,
            service: "https".into(),
            dst_class: 1,
            src_classes: BTreeSet::from([0]),
            proto: proto::TCP,
            ports: PortRange::single(443),
        }],
        interfaces: vec![
            Interface {
                name: "out0".into(),
                reverse_path: true,
                accepts: Accepts::Classes(BTreeSet::from([0])),
            },
            Interface {
                name: "in0".into(),
                reverse_path: true,
                accepts: Accepts::Classes(BTreeSet::from([1])),
            },
        ],
        ..Default::default()
    }
}

fn connects(net: &Topology, port: u16) -> bool {
    exfw_tests::daemon::connects(&net.outside, port)
}

/// A gateway whose links run a pinned data plane (pins named after `tag`) with [`policy`] in
/// force, an HTTPS and an RDP listener behind it; returns the loader still holding the pins.
struct Pinned {
    net: Topology,
    _listeners: Vec<std::net::TcpListener>,
    options: LoadOptions,
    generation: u32,
    // Dropped last: the pins go after everything that uses them.
    dir: PinDir,
}

impl Pinned {
    fn new(tag: &str) -> (Pinned, Dataplane) {
        require_root();
        let dir = PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/exfw-test-{tag}-{}",
            std::process::id()
        )));
        let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
        let listeners = net.listen(&[443, 3389]);
        let options = LoadOptions {
            pin_dir: Some(dir.0.clone()),
            ..Default::default()
        };
        let mut first = Dataplane::load(options.clone()).expect("load with pins");
        let generation = net.gateway.run(|| first.apply(&policy()).unwrap());
        net.gateway.run(|| {
            assert_eq!(
                first.attach("out0", AttachMode::Driver).unwrap(),
                AttachedMode::Driver
            );
            assert_eq!(
                first.attach("in0", AttachMode::Driver).unwrap(),
                AttachedMode::Driver
            );
        });
        assert!(connects(&net, 443));
        assert!(!connects(&net, 3389));
        let pinned = Pinned {
            net,
            _listeners: listeners,
            options,
            generation,
            dir,
        };
        (pinned, first)
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn pinned_enforcement_outlives_the_loader_and_is_adopted() {
    let (pinned, first) = Pinned::new("adopt");
    let Pinned {
        net,
        options,
        generation,
        dir,
        ..
    } = &pinned;
    let generation = *generation;
    // A second daemon on the same pin path is refused while the first holds it.
    match Dataplane::load(options.clone()) {
        Err(DataplaneError::Busy(path)) => assert_eq!(path, dir.0),
        other => panic!("expected Busy, got {:?}", other.err()),
    }
    let drops_before = first
        .reason_counter(Verdict::Drop, Reason::Policy)
        .unwrap()
        .packets;
    drop(first);

    // The process is gone: the pinned links keep enforcing, and status can read the pins.
    assert!(connects(net, 443));
    assert!(!connects(net, 3389));
    let status = Dataplane::open_pinned(&dir.0).expect("open the pinned state");
    assert_eq!(status.policy_state().unwrap().generation, generation);
    assert!(
        status
            .reason_counter(Verdict::Drop, Reason::Policy)
            .unwrap()
            .packets
            > drops_before,
        "drops while no daemon ran were not counted"
    );
    assert_eq!(
        status.pinned_links(),
        vec![
            ("in0".to_string(), AttachedMode::Driver),
            ("out0".to_string(), AttachedMode::Driver)
        ]
    );
    drop(status);

    // A new load adopts: same generation and counters, the program replaced through the links.
    let mut second = Dataplane::load(options.clone()).expect("adopt");
    assert_eq!(second.generation(), generation);
    let counted = second
        .reason_counter(Verdict::Drop, Reason::Policy)
        .unwrap()
        .packets;
    net.gateway.run(|| {
        assert_eq!(
            second.attach("out0", AttachMode::Auto).unwrap(),
            AttachedMode::Driver
        );
        assert_eq!(
            second.attach("in0", AttachMode::Auto).unwrap(),
            AttachedMode::Driver
        );
    });
    assert!(!connects(net, 3389));
    assert!(
        second
            .reason_counter(Verdict::Drop, Reason::Policy)
            .unwrap()
            .packets
            > counted,
        "counters did not continue"
    );
    assert_eq!(
        net.gateway.run(|| second.apply(&policy()).unwrap()),
        generation + 1
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn an_incompatible_builds_pins_are_refused_by_readers_and_replaced_by_a_load() {
    let (pinned, first) = Pinned::new("foreign");
    drop(first);
    let Pinned {
        net, options, dir, ..
    } = &pinned;
    // State pinned by an older, incompatible build: its drop counters had another key.
    exfw_tests::daemon::pin_foreign_drop_map(&dir.0);
    // A reader refuses it, saying why, rather than overrun its buffers.
    match Dataplane::open_pinned(&dir.0) {
        Err(e @ DataplaneError::IncompatiblePins { .. }) => assert!(
            e.to_string()
                .contains("EXFW_DROPS: key size 12, this build 8"),
            "{e}"
        ),
        other => panic!("expected IncompatiblePins, got {:?}", other.err()),
    }
    // A daemon's load replaces it. The old program keeps its own maps and filters until the
    // new one is attached: no moment unfiltered.
    let mut third = Dataplane::load(options.clone()).expect("replace the incompatible state");
    assert_eq!(
        third.generation(),
        0,
        "incompatible state must not be adopted"
    );
    assert!(connects(net, 443));
    assert!(!connects(net, 3389));
    net.gateway.run(|| {
        third.apply(&policy()).unwrap();
        third.attach("out0", AttachMode::Driver).unwrap();
        third.attach("in0", AttachMode::Driver).unwrap();
    });
    assert!(connects(net, 443));
    assert!(!connects(net, 3389));
    assert!(
        third
            .reason_counter(Verdict::Drop, Reason::Policy)
            .unwrap()
            .packets
            >= 1,
        "the new maps count"
    );
    drop(third);
    let status = Dataplane::open_pinned(&dir.0).expect("the replaced state is this build's");
    assert_eq!(status.policy_state().unwrap().generation, 1);
    drop(status);
    // Same sizes, another meaning: the layout stamp of another build is refused too.
    let config_pin = dir.0.join("maps").join(map_names::CONFIG);
    let mut config = aya::maps::Map::Array(aya::maps::MapData::from_pin(&config_pin).unwrap());
    aya::maps::Array::<_, u64>::try_from(&mut config)
        .unwrap()
        .set(exfw_common::config::PINNED_LAYOUT, 999, 0)
        .unwrap();
    match Dataplane::open_pinned(&dir.0) {
        Err(e @ DataplaneError::IncompatiblePins { .. }) => {
            assert!(e.to_string().contains("layout 999, this build"), "{e}")
        }
        other => panic!("expected IncompatiblePins, got {:?}", other.err()),
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn removing_the_pins_detaches_everything() {
    let (pinned, first) = Pinned::new("remove");
    drop(first);
    let Pinned { net, dir, .. } = &pinned;
    let detached = dataplane::remove_pinned(&dir.0).unwrap();
    assert_eq!(detached, vec!["in0".to_string(), "out0".to_string()]);
    assert!(connects(net, 3389));
    assert!(!dir.0.exists());
}
