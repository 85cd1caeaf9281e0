//! The fuzz corpus in the repository (`fuzz/corpus/TARGET/`: the seeds and every input a fuzz
//! run found interesting) replayed through the targets' bodies, so what fuzzing once found
//! stays fixed. `cargo xtask fuzz --seconds N` runs the targets themselves, coverage-guided.
//! The differential target loads the XDP program: its corpus replays in the kernel suite.

use exfw_tests::fuzz::replay_corpus;

#[test]
fn the_config_corpus_replays() {
    replay_corpus("config");
}

#[test]
fn the_classifier_corpus_replays() {
    replay_corpus("classifier");
}
