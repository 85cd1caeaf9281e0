//! The fuzz corpus in the repository (`fuzz/corpus/TARGET/`: the seeds and every input a fuzz
//! run found interesting) replayed through the targets' bodies, so what fuzzing once found
//! stays fixed. `cargo xtask fuzz --seconds N` runs the targets themselves, coverage-guided.

use std::path::{Path, PathBuf};

use exfw_tests::{fuzz, require_root};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} holds {} inputs: the corpus is missing",
        dir.display(),
        files.len()
    );
    files
}

fn replay(target: &str) {
    let files = corpus(target);
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| fuzz::run(target, &data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
    eprintln!("{target}: {} corpus inputs replayed", files.len());
}

#[test]
fn the_config_corpus_replays() {
    replay("config");
}

#[test]
fn the_classifier_corpus_replays() {
    replay("classifier");
}

#[test]
fn the_differential_corpus_replays() {
    require_root();
    replay("differential");
}
