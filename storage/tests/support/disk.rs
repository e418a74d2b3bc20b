//! Bytes a database directory holds, fjall's journal apart: shared by the churn test
//! and the churn example (`#[path]`-included by both).

use std::path::Path;

/// Bytes under `path`: (journal files, everything else).
pub(crate) fn du(path: &Path) -> (u64, u64) {
    let (mut journal, mut rest) = (0, 0);
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            let (j, r) = du(&p);
            journal += j;
            rest += r;
        } else {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match p.extension().is_some_and(|e| e == "jnl") {
                true => journal += len,
                false => rest += len,
            }
        }
    }
    (journal, rest)
}
