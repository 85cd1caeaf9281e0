//! The differential target's fuzz corpus (`fuzz/corpus/differential/`) replayed through the
//! loaded XDP program, so what fuzzing once found stays fixed.

use exfw_tests::{fuzz::replay_corpus, require_root};

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_differential_corpus_replays() {
    require_root();
    replay_corpus("differential");
}
