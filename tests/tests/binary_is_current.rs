//! The broker binary every end-to-end test runs is built from the tree
//! under test: it is newer than every source file of the broker's crates.
//! (A binary left from an earlier build would let every suite pass against
//! old code.)

use std::path::Path;
use std::time::SystemTime;

use shardline_tests::{broker_binary, workspace_root};

fn newest_source(dir: &Path, newest: &mut (SystemTime, String)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            newest_source(&path, newest);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
            let modified = entry.metadata().and_then(|m| m.modified()).expect("mtime");
            if modified > newest.0 {
                *newest = (modified, path.display().to_string());
            }
        }
    }
}

#[test]
fn the_broker_binary_is_built_from_this_tree() {
    let binary = broker_binary();
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).expect("the broker binary exists");
    let root = workspace_root();
    let mut newest = (SystemTime::UNIX_EPOCH, String::new());
    for dir in ["src", "engine/src", "net/src"] {
        newest_source(&root.join(dir), &mut newest);
    }
    for manifest in ["Cargo.toml", "engine/Cargo.toml", "net/Cargo.toml"] {
        if let Ok(modified) = std::fs::metadata(root.join(manifest)).and_then(|m| m.modified()) {
            if modified > newest.0 {
                newest = (modified, manifest.to_string());
            }
        }
    }
    assert!(built >= newest.0, "{} is older than {}: the tests would run an earlier build", binary.display(), newest.1);
}
