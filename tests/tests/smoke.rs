use exfw_daemon::dataplane::{Dataplane, LoadOptions};
#[test]
fn loads() {
    let dp = Dataplane::load(LoadOptions::default()).unwrap();
    let r = dp.test_run("exfw_xdp", &[0u8; 64], 1).unwrap();
    println!("{r:?}");
}
