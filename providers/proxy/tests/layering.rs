//! The proxy's modules follow a request's way (accept → http → route → policy → upstream →
//! shared, see `lib.rs`): each may use only the stages after it. This keeps the circle the
//! crate once had (the body and connection types in the request path, every other module
//! reaching up for them) from coming back.

use std::path::Path;

const STAGES: [&str; 6] = ["accept", "http", "route", "policy", "upstream", "shared"];

fn rank(stage: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == stage)
}

#[test]
fn no_stage_uses_one_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = Vec::new();
    let mut files = 0;
    for stage in STAGES {
        let dir = src.join(stage);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let text = std::fs::read_to_string(&path).expect("source file");
            files += 1;
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for (i, _) in line.match_indices("crate::") {
                    let used: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if let (Some(u), Some(own)) = (rank(&used), rank(stage)) {
                        if u < own {
                            upward.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    assert!(
        files > 20,
        "only {files} files found under {}",
        src.display()
    );
    assert!(
        upward.is_empty(),
        "uses of an earlier stage:\n{}",
        upward.join("\n")
    );
}
