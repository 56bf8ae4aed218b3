//! `LOG_DIR/actions.jsonl`: one JSON object per line for every request and every reconciler
//! action. Lines are written whole under one lock with one `write_all` on an `O_APPEND` file,
//! so concurrent writers never interleave. Past `AUDIT_MAX_BYTES` the file is rotated to
//! `actions.jsonl.1` (the previous `.1` becomes `.2`, and so on, keeping [`KEEP`] files).
//!
//! Callers pass only what may be logged: never credentials, never env values.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value};

/// Rotated files kept beside the live one.
const KEEP: u32 = 3;

pub struct Audit {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<(File, u64)>,
}

impl Audit {
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("actions.jsonl");
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes,
            file: Mutex::new((file, size)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line: `ts` first, then the given fields.
    pub fn record(&self, fields: Map<String, Value>) {
        let mut object = Map::with_capacity(fields.len() + 1);
        object.insert("ts".into(), Value::String(crate::store::now()));
        object.extend(fields);
        let mut line = Value::Object(object).to_string();
        line.push('\n');

        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.1 > 0 && guard.1 + line.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate(&mut guard) {
                tracing::warn!(error = %e, "audit log rotation failed; appending anyway");
            }
        }
        match guard.0.write_all(line.as_bytes()) {
            Ok(()) => guard.1 += line.len() as u64,
            Err(e) => tracing::error!(error = %e, "audit log write failed"),
        }
    }

    fn rotate(&self, guard: &mut (File, u64)) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..KEEP).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        *guard = (open_append(&self.path)?, 0);
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Builds the field map of a line: `fields!{"method" => m, "status" => 200}`.
#[macro_export]
macro_rules! fields {
    ($($k:expr => $v:expr),* $(,)?) => {{
        let mut m = serde_json::Map::new();
        $( m.insert($k.to_string(), serde_json::json!($v)); )*
        m
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_limit_and_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path(), 300).unwrap();
        for i in 0..20 {
            audit.record(fields! {"i" => i, "pad" => "x".repeat(40)});
        }
        let live = std::fs::read_to_string(audit.path()).unwrap();
        assert!(live.len() <= 300, "live file {} bytes", live.len());
        let rotated = std::fs::read_to_string(dir.path().join("actions.jsonl.1")).unwrap();
        for line in live.lines().chain(rotated.lines()) {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(v["ts"].is_string());
        }
        assert!(!dir.path().join("actions.jsonl.4").exists());
    }
}
