//! The archive checks, the plan, extraction and the commit, on archives built here.
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::guard::*;
use super::*;
use crate::appdir::confine;
use crate::appdir::confine::{MAX_PATH_BYTES, MAX_PATH_COMPONENTS};
use crate::appdir::plan::{NodeKind, Plan};
use crate::appdir::{journal, place};
use crate::config::UserIds;
// Refusals are checked as the client sees them: through the one mapping of `http/`.
use crate::error::ApiError;
use std::io::Cursor;
use zip::write::SimpleFileOptions;

fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, SimpleFileOptions::default()).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn zip_file(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
    file_of(&zip_bytes(entries))
}

/// The same archive with ZIP64 end records (a ZIP64 record and its locator before an end
/// record whose fields all say "see ZIP64").
fn to_zip64(zip: &[u8]) -> Vec<u8> {
    let eocd = zip.len() - EOCD_LEN;
    let (entries, size, offset) = (
        le16(zip, eocd + 10),
        le32(zip, eocd + 12),
        le32(zip, eocd + 16),
    );
    let mut out = zip[..eocd].to_vec();
    let record_at = out.len() as u64;
    out.extend_from_slice(&SIG_ZIP64_EOCD);
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for v in [entries, entries, size, offset] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&SIG_ZIP64_LOCATOR);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&record_at.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&SIG_EOCD);
    out.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    out.extend_from_slice(&[0xFF; 8]);
    out.extend_from_slice(&[0, 0]);
    out
}

const ROOMY: Limits = Limits {
    max_entries: 1000,
    max_inflated_bytes: 1 << 30,
    max_ratio: 1_000_000,
};

fn me() -> UserIds {
    UserIds {
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
    }
}

#[test]
fn the_declared_entry_count_is_read_from_the_end_record() {
    let f = zip_file(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
    assert_eq!(end_record(&mut f.reopen().unwrap()).unwrap().entries, 3);
    let mut g = tempfile::tempfile().unwrap();
    g.write_all(b"not a zip at all, not at all").unwrap();
    assert_eq!(
        end_record(&mut g).map_err(ApiError::from).unwrap_err().code,
        "INVALID_ZIP"
    );
    let limits = Limits {
        max_entries: 2,
        ..ROOMY
    };
    assert_eq!(
        open(f.path(), &limits)
            .map_err(ApiError::from)
            .unwrap_err()
            .code,
        "ZIP_TOO_MANY_ENTRIES"
    );
}

#[test]
fn the_central_directory_size_is_read_from_the_end_records() {
    let zip = zip_bytes(&[("a", b"1"), ("dir/b", b"2"), ("c", b"3")]);
    let eocd = zip.len() - EOCD_LEN;
    let (size, offset) = (le32(&zip, eocd + 12), le32(&zip, eocd + 16));
    assert_eq!(offset + size, eocd as u64);
    let want = Directory {
        entries: 3,
        size,
        start: offset,
    };
    let f = file_of(&zip);
    assert_eq!(end_record(&mut f.reopen().unwrap()).unwrap(), want);
    assert_eq!(open(f.path(), &ROOMY).unwrap().len(), 3);

    // Data before the archive (a self-extractor's stub) moves the directory, not its size.
    let mut prefixed = vec![b'#'; 100];
    prefixed.extend_from_slice(&zip);
    let f = file_of(&prefixed);
    let dir = end_record(&mut f.reopen().unwrap()).unwrap();
    assert_eq!((dir.size, dir.start), (size, offset + 100));
    let archive = open(f.path(), &ROOMY).unwrap();
    plan(&archive, &[], &ROOMY).unwrap();

    // ZIP64 end records: the size comes from the ZIP64 record, and the ZIP library reads
    // the very directory that was checked.
    let zip64 = to_zip64(&zip);
    let f = file_of(&zip64);
    assert_eq!(end_record(&mut f.reopen().unwrap()).unwrap(), want);
    let archive = open(f.path(), &ROOMY).unwrap();
    assert_eq!(archive.len(), 3);
    plan(&archive, &[], &ROOMY).unwrap();

    // A declared size over the cap is refused before anything else is read.
    for huge in [MAX_DIRECTORY_BYTES + 1, 0xFFFF_FFF0] {
        let mut forged = zip.clone();
        forged[eocd + 12..eocd + 16].copy_from_slice(&(huge as u32).to_le_bytes());
        let e = end_record(&mut file_of(&forged).reopen().unwrap())
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(e.kind.status().as_u16(), 413);
        assert_eq!(e.code, "ZIP_DIRECTORY_TOO_LARGE");
        let mut forged = zip64.clone();
        let at = eocd + 40;
        forged[at..at + 8].copy_from_slice(&huge.to_le_bytes());
        let e = end_record(&mut file_of(&forged).reopen().unwrap())
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(e.code, "ZIP_DIRECTORY_TOO_LARGE");
    }

    // A size smaller than the directory: the ZIP library would read past it, so refused
    // (whether or not the shortened directory starts on a header).
    let last_record = 46 + 1;
    for small in [size - 1, last_record, 0] {
        let mut forged = zip.clone();
        forged[eocd + 12..eocd + 16].copy_from_slice(&(small as u32).to_le_bytes());
        let f = file_of(&forged);
        let e = open(f.path(), &ROOMY).map_err(ApiError::from).unwrap_err();
        assert_eq!(e.code, "INVALID_ZIP", "{small}: {}", e.message);
    }
    // More entries declared than the directory holds.
    let mut forged = zip.clone();
    forged[eocd + 8..eocd + 12].copy_from_slice(&[4, 0, 4, 0]);
    let e = open(file_of(&forged).path(), &ROOMY)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.code, "INVALID_ZIP", "{}", e.message);

    // A name over the cap is refused while walking the directory.
    let long = "d/".repeat(MAX_ENTRY_NAME_BYTES / 2) + "f";
    let f = zip_file(&[("a", b"1"), (&long, b"2")]);
    let mut file = f.reopen().unwrap();
    let dir = end_record(&mut file).unwrap();
    let e = walk_directory(&mut file, &dir)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.code, "UNSAFE_ZIP_ENTRY");
    assert_eq!(
        open(f.path(), &ROOMY)
            .map_err(ApiError::from)
            .unwrap_err()
            .code,
        "UNSAFE_ZIP_ENTRY"
    );
}

#[test]
fn the_plan_puts_entries_under_the_prefix_and_finds_collisions() {
    let f = zip_file(&[("a/b.txt", b"1"), ("./c.txt", b"2")]);
    let archive = open(f.path(), &ROOMY).unwrap();
    let plan = plan(&archive, &["t".into()], &ROOMY).unwrap();
    let paths: Vec<String> = plan.entries.iter().map(|e| plan.path(e.node)).collect();
    assert_eq!(paths, ["t/a/b.txt", "t/c.txt"]);
    let a = plan.find(&["t", "a"]).unwrap();
    assert_eq!(plan.nodes[a].kind, NodeKind::Dir);

    // A target path that is a file of the archive's own tree collides.
    for entries in [
        &[("x", &b"1"[..]), ("x/y", b"2")][..],
        &[("x/y", b"2"), ("x", b"1")],
        &[("x/y/", b""), ("x/y", b"1")],
    ] {
        let f = zip_file(entries);
        let archive = open(f.path(), &ROOMY).unwrap();
        let e = super::plan(&archive, &[], &ROOMY)
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(e.code, "DUPLICATE_ZIP_ENTRY");
    }
}

/// Deep names: over MAX_PATH_COMPONENTS (the target's components included) is refused;
/// at the cap, many entries cost time and memory linear in their names (the plan keeps
/// one node per distinct name, not every ancestor's path per entry).
#[test]
fn deep_names_are_capped_and_planned_in_linear_time() {
    let deep = "a/".repeat(MAX_PATH_COMPONENTS) + "f";
    let f = zip_file(&[("ok", b"1"), (&deep, b"2")]);
    let archive = open(f.path(), &ROOMY).unwrap();
    let e = plan(&archive, &[], &ROOMY)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.code, "UNSAFE_ZIP_ENTRY");
    assert_eq!(
        e.details.as_ref().unwrap()["reason"],
        "the path is too deep"
    );
    // The target directory's components count too.
    let at_cap = "a/".repeat(MAX_PATH_COMPONENTS - 2) + "f";
    let f = zip_file(&[(&at_cap, b"1")]);
    let archive = open(f.path(), &ROOMY).unwrap();
    plan(&archive, &["t".into()], &ROOMY).unwrap();
    let e = plan(&archive, &["t".into(), "u".into()], &ROOMY)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.code, "UNSAFE_ZIP_ENTRY");

    // 300 entries of 256 components (~3.8 KB each), in distinct top directories.
    let names: Vec<String> = (0..300)
        .map(|i| format!("{i:05}/") + &"abcdefghijklm/".repeat(MAX_PATH_COMPONENTS - 2) + "f")
        .collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    let f = zip_file(&entries);
    let limits = Limits {
        max_entries: 300 * MAX_PATH_COMPONENTS as u64,
        ..ROOMY
    };
    let archive = open(f.path(), &limits).unwrap();
    let t = std::time::Instant::now();
    let plan = plan(&archive, &[], &limits).unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(plan.nodes.len(), 1 + 300 * MAX_PATH_COMPONENTS);
}

/// Directories only implied by entry paths count against the entry limit: 3 entries of
/// 40 components make 120 directories to create.
#[test]
fn implied_directories_count_against_the_entry_limit() {
    let names: Vec<String> = (0..3)
        .map(|i| format!("top{i}/") + &"d/".repeat(38) + "f")
        .collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let f = zip_file(&entries);
    let limits = Limits {
        max_entries: 100,
        ..ROOMY
    };
    let archive = open(f.path(), &limits).unwrap();
    let e = plan(&archive, &[], &limits)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.kind.status().as_u16(), 413);
    assert_eq!(e.code, "ZIP_TOO_MANY_ENTRIES");
    assert!(e.message.contains("directories"), "{}", e.message);
    assert_eq!(e.details.as_ref().unwrap()["limit"], 100);
    // Exactly at the limit (3 × 40 names) it passes; the target's components count too.
    let at_limit = Limits {
        max_entries: 120,
        ..ROOMY
    };
    let plan_ok = plan(&archive, &[], &at_limit).unwrap();
    assert_eq!(plan_ok.nodes.len() - 1, 120);
    let e = plan(&archive, &["t".into()], &at_limit)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.code, "ZIP_TOO_MANY_ENTRIES");
}

#[test]
fn extraction_counts_bytes_actually_inflated() {
    let zeros = vec![0u8; 3 << 20];
    let f = zip_file(&[("small", b"abc"), ("zeros", &zeros)]);
    let dir = tempfile::tempdir().unwrap();
    let mut archive = open(f.path(), &ROOMY).unwrap();
    // Planned under generous limits, extracted under strict ones: the counting during
    // inflation stops it, whatever the headers said.
    let plan = plan(&archive, &[], &ROOMY).unwrap();
    let strict = Limits {
        max_inflated_bytes: 2 << 20,
        ..ROOMY
    };
    let e = extract(&mut archive, &plan, &tree_in(dir.path(), "t1"), &strict)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.code, "ZIP_TOO_LARGE");
    let ratio = Limits {
        max_ratio: 100,
        ..ROOMY
    };
    let e = extract(&mut archive, &plan, &tree_in(dir.path(), "t2"), &ratio)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.code, "ZIP_RATIO_EXCEEDED");
    // And under the plan's limits it goes through, byte for byte.
    let out = extract(&mut archive, &plan, &tree_in(dir.path(), "t3"), &ROOMY).unwrap();
    assert_eq!(
        out,
        Outcome {
            files: 2,
            bytes: 3 + (3 << 20)
        }
    );
    assert_eq!(std::fs::read(dir.path().join("t3/small")).unwrap(), b"abc");
}

/// A fresh directory `base/name`, opened.
fn tree_in(base: &Path, name: &str) -> OwnedFd {
    let path = base.join(name);
    std::fs::create_dir(&path).unwrap();
    rustix::fs::open(&path, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap()
}

/// Plans and extracts `entries` into `base/name`; returns the plan and the tree.
fn staged(base: &Path, name: &str, entries: &[(&str, &[u8])]) -> (Plan, OwnedFd) {
    let f = zip_file(entries);
    let mut archive = open(f.path(), &ROOMY).unwrap();
    let plan = plan(&archive, &[], &ROOMY).unwrap();
    let tree = tree_in(base, name);
    extract(&mut archive, &plan, &tree, &ROOMY).unwrap();
    (plan, tree)
}

fn owner_of(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path).unwrap();
    (md.uid(), md.mode() & 0o7777)
}

#[test]
fn commit_replaces_links_merges_directories_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(app.join("keep")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(app.join("keep/old"), b"old").unwrap();
    std::os::unix::fs::symlink(&outside, app.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("f"), app.join("file")).unwrap();

    let (plan, tree) = staged(
        dir.path(),
        "tree",
        &[("keep/new", b"new"), ("link/in", b"in"), ("file", b"file")],
    );
    let root = confine::open_root(&app, "c").unwrap();
    place::commit(&plan, dir.path(), tree, root, &app, me()).unwrap();
    assert_eq!(std::fs::read(app.join("keep/old")).unwrap(), b"old");
    assert_eq!(std::fs::read(app.join("keep/new")).unwrap(), b"new");
    assert!(std::fs::symlink_metadata(app.join("link"))
        .unwrap()
        .is_dir());
    assert!(std::fs::symlink_metadata(app.join("file"))
        .unwrap()
        .is_file());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // A file where a directory is: conflict, and the earlier moves are undone.
    let (plan, tree) = staged(
        dir.path(),
        "tree2",
        &[("a-new", b"x"), ("file", b"file2"), ("keep", b"not a dir")],
    );
    let root = confine::open_root(&app, "c").unwrap();
    let e = place::commit(&plan, dir.path(), tree, root, &app, me())
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(e.code, "PATH_CONFLICT");
    assert!(!app.join("a-new").exists());
    assert_eq!(std::fs::read(app.join("file")).unwrap(), b"file");
    assert!(app.join("keep").is_dir());
}

/// Staged items stay the server's (0700/0600) until placed; placed ones get the owner and
/// their modes. The commit works on the staged tree's descriptor: a symlink put where
/// the staged tree was (or in it) is never followed.
#[test]
fn staged_items_stay_private_and_the_commit_never_resolves_staging_paths() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("d/sub")).unwrap();
    let f = {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let o = SimpleFileOptions::default();
        w.add_directory("n/", o.unix_permissions(0o750)).unwrap();
        w.start_file("n/m/f", o.unix_permissions(0o640)).unwrap();
        w.write_all(b"nf").unwrap();
        w.start_file("d/sub/g", o).unwrap();
        w.write_all(b"g").unwrap();
        file_of(&w.finish().unwrap().into_inner())
    };
    let mut archive = open(f.path(), &ROOMY).unwrap();
    let plan = plan(&archive, &[], &ROOMY).unwrap();
    let tree = tree_in(dir.path(), "tree");
    extract(&mut archive, &plan, &tree, &ROOMY).unwrap();
    let server = rustix::process::getuid().as_raw();
    let staged = dir.path().join("tree");
    assert_eq!(owner_of(&staged.join("n")), (server, 0o700));
    assert_eq!(owner_of(&staged.join("n/m")), (server, 0o700));
    assert_eq!(owner_of(&staged.join("n/m/f")), (server, 0o600));

    // The staged tree's path now leads elsewhere, and so does its d/sub: a path-based
    // merge would move `elsewhere`'s files into /app.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("d/sub")).unwrap();
    std::fs::write(elsewhere.join("d/sub/secret"), b"s").unwrap();
    std::fs::write(elsewhere.join("host-file"), b"h").unwrap();
    std::fs::rename(&staged, dir.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &staged).unwrap();

    // Another owner than the server, when the server may give files away (root).
    let owner = if server == 0 {
        UserIds {
            uid: 4242,
            gid: 4242,
        }
    } else {
        me()
    };
    let root = confine::open_root(&app, "c").unwrap();
    place::commit(&plan, dir.path(), tree, root, &app, owner).unwrap();
    assert_eq!(std::fs::read(app.join("n/m/f")).unwrap(), b"nf");
    assert_eq!(std::fs::read(app.join("d/sub/g")).unwrap(), b"g");
    assert!(!app.join("d/sub/secret").exists());
    assert!(!app.join("host-file").exists());
    assert!(elsewhere.join("d/sub/secret").exists());
    assert_eq!(owner_of(&app.join("n")), (owner.uid, 0o750));
    assert_eq!(owner_of(&app.join("n/m")), (owner.uid, 0o755));
    assert_eq!(owner_of(&app.join("n/m/f")), (owner.uid, 0o640));
    assert_eq!(owner_of(&app.join("d/sub/g")), (owner.uid, 0o644));
}

/// What a directory holds, recursively, without following anything.
fn listing(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let what = if md.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if md.is_file() {
                format!("file {:?}", std::fs::read(&p).unwrap())
            } else {
                "other".to_owned()
            };
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            out.insert(rel, format!("{what} {}:{:o}", md.uid(), md.mode() & 0o7777));
        }
    }
    out
}

/// A root container may enter the server's 0700 directory the commit just moved into
/// its /app and `mknod` a FIFO at a name the commit is about to give away: the FIFO is
/// never opened (nor chowned), the upload is a conflict and /app is rolled back.
#[test]
fn a_fifo_planted_in_a_placed_directory_is_never_opened() {
    use rustix::fs::inotify;
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(app.join("old"), b"old").unwrap();
    let before = listing(&app);
    let (plan, tree) = staged(dir.path(), "tree", &[("d/f", b"x"), ("d/g", b"y")]);
    let watcher =
        inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    let planted = std::cell::Cell::new(0);
    let hook = |moves: u64| {
        if moves == 1 {
            let fifo = app.join("fifo");
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::FileType::Fifo,
                Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
            for name in ["f", "g"] {
                std::fs::hard_link(&fifo, app.join("d").join(name).with_extension("tmp")).unwrap();
                std::fs::rename(
                    app.join("d").join(name).with_extension("tmp"),
                    app.join("d").join(name),
                )
                .unwrap();
            }
            // Watched once planted (a new link is itself an attribute change).
            inotify::add_watch(
                &watcher,
                &fifo,
                inotify::WatchFlags::OPEN | inotify::WatchFlags::ATTRIB,
            )
            .unwrap();
            planted.set(planted.get() + 1);
        }
    };
    let root = confine::open_root(&app, "c").unwrap();
    let e = place::commit_with(&plan, dir.path(), tree, root, &app, me(), Some(&hook), None)
        .map_err(ApiError::from)
        .unwrap_err();
    assert_eq!(planted.get(), 1);
    assert_eq!(e.code, "PATH_CONFLICT", "{}", e.message);
    assert_eq!(
        listing(&app)
            .into_iter()
            .filter(|(k, _)| k != "fifo")
            .collect::<Vec<_>>(),
        before.into_iter().collect::<Vec<_>>()
    );
    // Not one open (an O_PATH handle is not one) or change of owner or mode.
    let mut buf = [0u8; 1024];
    assert_eq!(rustix::io::read(&watcher, &mut buf), Err(Errno::AGAIN));
}

/// A crash after any move of a commit (a panic at that point, no rollback run) is
/// undone from the journal as the next start does: /app holds its old tree exactly,
/// owners and modes included; once the commit is recorded, the new tree stays.
#[test]
fn a_commit_interrupted_after_any_move_is_rolled_back_from_its_journal() {
    let entries: &[(&str, &[u8])] = &[
        ("a", b"new a"),
        ("b/x", b"new x"),
        ("c/d/e", b"e"),
        ("keep/new", b"new"),
        ("link/in", b"in"),
        ("z", b"z"),
    ];
    let setup = |base: &Path| {
        let app = base.join("app");
        std::fs::create_dir_all(app.join("b")).unwrap();
        std::fs::create_dir_all(app.join("keep")).unwrap();
        std::fs::write(app.join("a"), b"old a").unwrap();
        std::fs::write(app.join("b/x"), b"old x").unwrap();
        std::fs::write(app.join("keep/old"), b"old").unwrap();
        std::os::unix::fs::symlink("/etc", app.join("link")).unwrap();
        app
    };
    let moves = 6;
    for crash_at in 1..=moves {
        let dir = tempfile::tempdir().unwrap();
        let app = setup(dir.path());
        let before = listing(&app);
        let stage = dir.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        let (plan, tree) = staged(&stage, journal::TREE, entries);
        let hook = |n: u64| {
            if n == crash_at {
                panic!("simulated crash after move {n}");
            }
        };
        let root = confine::open_root(&app, "c").unwrap();
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            place::commit_with(&plan, &stage, tree, root, &app, me(), Some(&hook), None)
        }));
        assert!(crashed.is_err(), "no crash at {crash_at}");
        assert_ne!(listing(&app), before, "nothing moved before {crash_at}");
        journal::recover(&stage);
        assert_eq!(listing(&app), before, "after a crash at move {crash_at}");
        // Recovering again changes nothing.
        journal::recover(&stage);
        assert_eq!(listing(&app), before);
    }
    // A whole commit: recorded, and the start-up leaves it as it is.
    let dir = tempfile::tempdir().unwrap();
    let app = setup(dir.path());
    let stage = dir.path().join("stage");
    std::fs::create_dir(&stage).unwrap();
    let (plan, tree) = staged(&stage, journal::TREE, entries);
    let root = confine::open_root(&app, "c").unwrap();
    let count = std::cell::Cell::new(0);
    let hook = |n: u64| count.set(n);
    place::commit_with(&plan, &stage, tree, root, &app, me(), Some(&hook), None).unwrap();
    assert_eq!(count.get(), moves);
    let after = listing(&app);
    assert_eq!(std::fs::read(app.join("a")).unwrap(), b"new a");
    journal::recover(&stage);
    assert_eq!(listing(&app), after);
}

/// A name close to PATH_MAX is created relative to the tree's descriptor: the staging
/// area's own path does not make it fail (it used to: ENAMETOOLONG, a 500).
#[test]
fn names_near_the_path_limit_are_staged_and_placed() {
    let part = "p".repeat(200);
    let mut name = vec![part.as_str(); 20].join("/");
    name.push_str("/fff");
    assert!(name.len() > 4000 && name.len() < MAX_PATH_BYTES);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    let (plan, tree) = staged(dir.path(), "tree", &[(&name, b"deep")]);
    let root = confine::open_root(&app, "c").unwrap();
    place::commit(&plan, dir.path(), tree, root, &app, me()).unwrap();
    let app_fd = confine::open_root(&app, "c").unwrap();
    match confine::lookup(&app_fd, &confine::parse_path(&name).unwrap(), &name).unwrap() {
        confine::Found::File(_, size) => assert_eq!(size, 4),
        _ => panic!("not a file"),
    }
}
