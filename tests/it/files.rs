//! Files (docs/API.md §5): streamed, confined ZIP upload; file and folder download; a hostile
//! container that plants symlinks and FIFOs in its own /app.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::common::*;

// ---------------------------------------------------------------- helpers

fn opts() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// Replaces every occurrence of `from` by `to` (same length): how names the writer refuses
/// to write get into an archive (the CRC does not cover names).
fn patch(mut data: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    let mut hits = 0;
    while i + from.len() <= data.len() {
        if &data[i..i + from.len()] == from {
            data[i..i + from.len()].copy_from_slice(to);
            hits += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "placeholder not found");
    data
}

/// A ZIP with a harmless file first, then one entry whose name is `hostile`.
fn zip_with_name(hostile: &[u8]) -> Vec<u8> {
    let placeholder = vec![b'Q'; hostile.len()];
    let placeholder = String::from_utf8(placeholder).unwrap();
    let data = zip_of(&[("good.txt", b"good"), (&placeholder, b"evil")]);
    patch(data, placeholder.as_bytes(), hostile)
}

/// GET returning raw bytes (the harness's `Resp` keeps text).
async fn download(
    s: &Server,
    cuid: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    get_bytes(
        s,
        &format!("/containers/{cuid}/download?path={}", url_encode(path)),
    )
    .await
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn upload_then_download_each_file_and_the_folder() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let boot = b"print('hello from boot')\n".to_vec();
    let reqs = b"requests==2.32.3\n".to_vec();
    let config = br#"{"debug": false, "name": "caf\u00e9"}"#.to_vec();

    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("boot.py", opts().unix_permissions(0o4755))
        .unwrap();
    w.write_all(&boot).unwrap();
    w.start_file("requirements.txt", opts()).unwrap();
    w.write_all(&reqs).unwrap();
    w.add_directory("data/", opts().unix_permissions(0o2775))
        .unwrap();
    w.start_file("data/config.json", opts().unix_permissions(0o600))
        .unwrap();
    w.write_all(&config).unwrap();
    let body = w.finish().unwrap().into_inner();

    let r = s.upload_zip(&cuid, "", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"files": 3, "bytes": boot.len() + reqs.len() + config.len()})
    );

    // On the host: owned by DEFAULT_USER_UID, setuid/setgid dropped, other bits kept.
    let m = s.mount(&cuid);
    for (p, mode) in [
        ("boot.py", 0o755),
        ("requirements.txt", 0o644),
        ("data", 0o775),
        ("data/config.json", 0o600),
    ] {
        let md = std::fs::symlink_metadata(m.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{p}");
        assert_eq!(md.permissions().mode() & 0o7777, mode, "{p}");
    }

    // Each file byte-exact, under each spelling of its path.
    for (path, want, ctype) in [
        ("boot.py", &boot, "text/plain; charset=utf-8"),
        ("/app/requirements.txt", &reqs, "text/plain; charset=utf-8"),
        ("data/config.json", &config, "application/json"),
        ("/app/data/config.json", &config, "application/json"),
        ("/data/config.json", &config, "application/json"),
        ("./data//config.json", &config, "application/json"),
    ] {
        let (status, headers, got) = download(&s, &cuid, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(&got, want, "{path}");
        assert_eq!(
            headers["content-length"].to_str().unwrap(),
            want.len().to_string()
        );
        assert_eq!(headers["content-type"], ctype, "{path}");
        let name = path.rsplit('/').next().unwrap();
        assert!(
            headers["content-disposition"]
                .to_str()
                .unwrap()
                .contains(&format!("filename=\"{name}\"")),
            "{headers:?}"
        );
    }

    // The whole /app, and one folder, as ZIPs.
    let (status, headers, data) = get_bytes(&s, &format!("/containers/{cuid}/download-zip")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/zip");
    let all = unzip_all(&data);
    assert_eq!(all["boot.py"].as_deref(), Some(&boot[..]));
    assert_eq!(all["requirements.txt"].as_deref(), Some(&reqs[..]));
    assert_eq!(all["data/config.json"].as_deref(), Some(&config[..]));
    assert_eq!(all["data/"], None);
    assert_eq!(all.len(), 4, "{:?}", all.keys());

    for q in ["data", "/app/data", "/data/"] {
        let (status, _, data) = get_bytes(
            &s,
            &format!("/containers/{cuid}/download-zip?path={}", url_encode(q)),
        )
        .await;
        assert_eq!(status, 200, "{q}");
        let sub = unzip_all(&data);
        assert_eq!(sub.keys().collect::<Vec<_>>(), ["config.json"], "{q}");
        assert_eq!(sub["config.json"].as_deref(), Some(&config[..]));
    }

    // ?path= puts the archive under a directory, created as needed; overwrites by name.
    let r = s
        .upload_zip(&cuid, "?path=/app/sub/dir", zip_of(&[("x.txt", b"one")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .upload_zip(&cuid, "?path=sub/dir", zip_of(&[("x.txt", b"two")]))
        .await;
    assert_eq!(r.json, json!({"files": 1, "bytes": 3}));
    let (_, _, got) = download(&s, &cuid, "sub/dir/x.txt").await;
    assert_eq!(got, b"two");
    let md = std::fs::metadata(m.join("sub")).unwrap();
    assert_eq!((md.uid(), md.permissions().mode() & 0o777), (1000, 0o755));

    // An empty archive is fine and changes nothing.
    let before = listing(&m);
    let r = s.upload_zip(&cuid, "", zip_of(&[])).await;
    assert_eq!(r.json, json!({"files": 0, "bytes": 0}), "{}", r.text);
    assert_eq!(listing(&m), before);
    assert!(staging_is_empty(&s));
}

#[tokio::test]
async fn two_thousand_files_round_trip() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..2000u64 {
        let dir = match i % 4 {
            0 => String::new(),
            1 => format!("d{}/", i % 17),
            2 => format!("d{}/ü-ñ {}/", i % 5, i % 3),
            _ => format!("deep/{}/{}/{}/", i % 2, i % 3, i % 7),
        };
        let name = if i % 10 == 0 {
            format!("{dir}файл-{i}.bin")
        } else {
            format!("{dir}f{i}.bin")
        };
        files.push((name, noise(i, (i as usize * 37) % 3000)));
    }
    let empty_dirs = ["empty/", "deep/empty/", "日本/空/"];
    let mut entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    for d in empty_dirs {
        entries.push((d, b""));
    }
    let body = zip_of(&entries);
    let r = s.upload_zip(&cuid, "", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let total: usize = files.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(r.json, json!({"files": 2000, "bytes": total}));

    let (status, _, data) = get_bytes(&s, &format!("/containers/{cuid}/download-zip")).await;
    assert_eq!(status, 200);
    let got = unzip_all(&data);
    for (name, content) in &files {
        assert_eq!(got.get(name), Some(&Some(content.clone())), "{name}");
    }
    for d in empty_dirs {
        assert_eq!(got.get(d), Some(&None), "{d}");
    }
    let file_count = got.values().filter(|v| v.is_some()).count();
    assert_eq!(file_count, 2000);

    // What download-zip produces, upload-zip takes back: same tree in another container.
    let other = s.create_sleeper().await;
    let r = s.upload_zip(&other, "", data).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let strip = |l: BTreeMap<String, Node>| -> BTreeMap<String, Node> { l };
    assert_eq!(
        strip(listing(&s.mount(&cuid))),
        strip(listing(&s.mount(&other)))
    );
    let (_, _, one) = download(&s, &other, &files[10].0).await;
    assert_eq!(one, files[10].1);
}

#[tokio::test]
async fn every_unsafe_or_broken_archive_is_refused_and_app_is_unchanged() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);
    let r = s
        .upload_zip(
            &cuid,
            "",
            zip_of(&[("keep.txt", b"keep"), ("dir/", b""), ("dir/a", b"a")]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = listing(&m);

    let mut cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "dot-dot",
            zip_with_name(b"../evil.txt"),
            400,
            "UNSAFE_ZIP_ENTRY",
        ),
        (
            "inner dot-dot",
            zip_with_name(b"a/../../evil"),
            400,
            "UNSAFE_ZIP_ENTRY",
        ),
        (
            "absolute",
            zip_with_name(b"/tmp/evil.txt"),
            400,
            "UNSAFE_ZIP_ENTRY",
        ),
        (
            "drive",
            zip_with_name(b"C:/evil.txt"),
            400,
            "UNSAFE_ZIP_ENTRY",
        ),
        (
            "backslash",
            zip_with_name(b"..\\evil.txt"),
            400,
            "UNSAFE_ZIP_ENTRY",
        ),
        (
            "backslash inside",
            zip_with_name(b"a\\b.txt"),
            400,
            "UNSAFE_ZIP_ENTRY",
        ),
        ("NUL", zip_with_name(b"evil\0.txt"), 400, "UNSAFE_ZIP_ENTRY"),
    ];
    // A symlink entry.
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("good.txt", opts()).unwrap();
    w.write_all(b"good").unwrap();
    w.add_symlink("link", "/etc/passwd", opts()).unwrap();
    cases.push((
        "symlink",
        w.finish().unwrap().into_inner(),
        400,
        "UNSAFE_ZIP_ENTRY",
    ));
    // The same name twice.
    let dup = zip_of(&[
        ("good.txt", b"good"),
        ("dupA.txt", b"1"),
        ("dupB.txt", b"2"),
    ]);
    cases.push((
        "duplicate",
        patch(dup, b"dupB.txt", b"dupA.txt"),
        400,
        "DUPLICATE_ZIP_ENTRY",
    ));
    // A file and a directory of the same name.
    let clash = zip_of(&[("good.txt", b"good"), ("a", b"file"), ("a/b", b"in dir")]);
    cases.push(("file vs dir", clash, 400, "DUPLICATE_ZIP_ENTRY"));
    let clash = zip_of(&[("good.txt", b"good"), ("a/", b""), ("a", b"file")]);
    cases.push(("dir vs file", clash, 400, "DUPLICATE_ZIP_ENTRY"));
    // Not a ZIP, truncated, corrupt data (the CRC catches it during extraction).
    cases.push(("garbage", noise(7, 5000), 400, "INVALID_ZIP"));
    cases.push(("empty body", Vec::new(), 400, "INVALID_ZIP"));
    let big = zip_of(&[("good.txt", b"good"), ("data.bin", &noise(3, 200_000))]);
    cases.push((
        "truncated",
        big[..big.len() / 2].to_vec(),
        400,
        "INVALID_ZIP",
    ));
    cases.push((
        "cut tail",
        big[..big.len() - 10].to_vec(),
        400,
        "INVALID_ZIP",
    ));
    let mut corrupt = zip_of(&[("good.txt", b"good"), ("data.bin", &noise(4, 200_000))]);
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 64] {
        *b ^= 0x5A;
    }
    cases.push(("corrupt data", corrupt, 400, "INVALID_ZIP"));

    for (what, body, status, code) in cases {
        let r = s.upload_zip(&cuid, "", body).await;
        r.assert_error(
            status,
            if status == 400 {
                "validation_error"
            } else {
                "payload_too_large"
            },
            code,
        );
        assert_eq!(listing(&m), before, "{what}: /app changed");
        assert!(staging_is_empty(&s), "{what}: staging left behind");
    }

    // Unsafe target directories.
    for q in ["../x", "a/../../x", "a%5Cb", "a%00b"] {
        let r = s
            .upload_zip(&cuid, &format!("?path={q}"), zip_of(&[("x", b"x")]))
            .await;
        r.assert_error(400, "validation_error", "UNSAFE_PATH");
    }
    // Not a ZIP by its declared type.
    let r = s
        .send(
            s.request(Method::POST, &format!("/containers/{cuid}/upload-zip"))
                .header("content-type", "multipart/form-data; boundary=x")
                .body(zip_of(&[("x", b"x")])),
        )
        .await;
    r.assert_error(400, "validation_error", "UNSUPPORTED_CONTENT_TYPE");
    assert_eq!(listing(&m), before);
}

#[tokio::test]
async fn limits_on_size_entries_and_bombs() {
    let s = Server::start_with(Options {
        env: vec![
            ("UPLOAD_MAX_BYTES".into(), (3 * 1024 * 1024).to_string()),
            ("ZIP_MAX_ENTRIES".into(), "50".into()),
        ],
        ..Default::default()
    })
    .await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);
    let before = listing(&m);

    // Over UPLOAD_MAX_BYTES, with a Content-Length and streamed (chunked).
    let big = zip_of(&[("x.bin", &noise(1, 4 * 1024 * 1024))]);
    let r = s.upload_zip(&cuid, "", big.clone()).await;
    r.assert_error(413, "payload_too_large", "UPLOAD_TOO_LARGE");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = s
        .send(
            s.request(Method::POST, &format!("/containers/{cuid}/upload-zip"))
                .header("content-type", "application/zip")
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                ))),
        )
        .await;
    r.assert_error(413, "payload_too_large", "UPLOAD_TOO_LARGE");

    // Too many entries.
    let names: Vec<String> = (0..51).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let r = s.upload_zip(&cuid, "", zip_of(&entries)).await;
    r.assert_error(413, "payload_too_large", "ZIP_TOO_MANY_ENTRIES");
    let r = s.upload_zip(&cuid, "", zip_of(&entries[..50])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.upload_zip(&cuid, "", zip_of(&[])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for n in &names[..50] {
        std::fs::remove_file(m.join(n)).unwrap();
    }

    // A bomb: 2 GiB of zeros in about 2 MB, built streaming into a temporary file.
    let tmp = tempfile::tempfile().unwrap();
    let mut w = ZipWriter::new(tmp);
    w.start_file("good.txt", opts()).unwrap();
    w.write_all(b"good").unwrap();
    w.start_file("zeros.bin", opts().compression_level(Some(9)))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..2048 {
        w.write_all(&zeros).unwrap();
    }
    let mut tmp = w.finish().unwrap();
    let mut bomb = Vec::new();
    std::io::Seek::rewind(&mut tmp).unwrap();
    tmp.read_to_end(&mut bomb).unwrap();
    assert!(bomb.len() < 3 * 1024 * 1024, "{}", bomb.len());
    let r = s.upload_zip(&cuid, "", bomb.clone()).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(
        ["ZIP_RATIO_EXCEEDED", "ZIP_TOO_LARGE"].contains(&r.json["code"].as_str().unwrap()),
        "{}",
        r.text
    );
    assert_eq!(listing(&m), before);
    assert!(staging_is_empty(&s));

    // The same bomb lying about its size (1000 bytes declared): stopped on bytes actually
    // inflated, nothing left behind.
    let eocd = bomb.len() - 22;
    let cd = u32::from_le_bytes(bomb[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    // Second central record (zeros.bin).
    let first_len = 46
        + u16::from_le_bytes([bomb[cd + 28], bomb[cd + 29]]) as usize
        + u16::from_le_bytes([bomb[cd + 30], bomb[cd + 31]]) as usize
        + u16::from_le_bytes([bomb[cd + 32], bomb[cd + 33]]) as usize;
    let rec = cd + first_len;
    assert_eq!(&bomb[rec..rec + 4], b"PK\x01\x02");
    let local = u32::from_le_bytes(bomb[rec + 42..rec + 46].try_into().unwrap()) as usize;
    assert_eq!(&bomb[local..local + 4], b"PK\x03\x04");
    let mut liar = bomb.clone();
    liar[rec + 24..rec + 28].copy_from_slice(&1000u32.to_le_bytes());
    liar[local + 22..local + 26].copy_from_slice(&1000u32.to_le_bytes());
    let t = Instant::now();
    let r = s.upload_zip(&cuid, "", liar).await;
    assert!(
        matches!(
            (r.status, r.json["code"].as_str()),
            (413, Some("ZIP_RATIO_EXCEEDED" | "ZIP_TOO_LARGE")) | (400, Some("INVALID_ZIP"))
        ),
        "{}",
        r.text
    );
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(listing(&m), before);
    assert!(staging_is_empty(&s));
}

/// A central directory over the 64 MiB cap (`unzip::MAX_DIRECTORY_BYTES`), really or only by
/// the end record's word, is refused before the ZIP library indexes it; so is one whose end
/// record understates it (the library would read past the declared size). `/app` unchanged,
/// nothing left in staging.
#[tokio::test]
async fn an_oversized_central_directory_is_refused_before_indexing() {
    const CAP: u64 = 64 * 1024 * 1024;
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);
    let r = s
        .upload_zip(&cuid, "", zip_of(&[("keep.txt", b"keep")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = listing(&m);
    // The end record's "size of the central directory" field (no archive comment).
    let size_field = |zip: &[u8]| zip.len() - 22 + 12;
    let check = |what: &str| {
        assert_eq!(listing(&m), before, "{what}: /app changed");
        assert!(staging_is_empty(&s), "{what}: staging left behind");
    };

    // A small archive whose end record declares a 4 GiB directory.
    let mut forged = zip_of(&[("a.txt", b"a"), ("b.txt", b"b")]);
    let at = size_field(&forged);
    forged[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    s.upload_zip(&cuid, "", forged).await.assert_error(
        413,
        "payload_too_large",
        "ZIP_DIRECTORY_TOO_LARGE",
    );
    check("declared 4 GiB");

    // A real one: 1,100 entries of one byte, each with a 64,000-byte extra field in its
    // central header only (about 70 MB), built streaming into a temporary file.
    let mut w = ZipWriter::new(std::io::BufWriter::new(tempfile::tempfile().unwrap()));
    let extra = vec![0x5Au8; 64_000];
    for i in 0..1100 {
        let mut o =
            zip::write::FullFileOptions::default().compression_method(CompressionMethod::Stored);
        o.add_extra_field(0x6a6a, &extra, true).unwrap();
        w.start_file(format!("f{i}"), o).unwrap();
        w.write_all(b"x").unwrap();
    }
    let mut tmp = w.finish().unwrap().into_inner().unwrap();
    let mut big = Vec::new();
    std::io::Seek::rewind(&mut tmp).unwrap();
    tmp.read_to_end(&mut big).unwrap();
    let at = size_field(&big);
    let size = u32::from_le_bytes(big[at..at + 4].try_into().unwrap());
    assert!(u64::from(size) > CAP, "{size}");
    let t = Instant::now();
    s.upload_zip(&cuid, "", big.clone()).await.assert_error(
        413,
        "payload_too_large",
        "ZIP_DIRECTORY_TOO_LARGE",
    );
    check("70 MB directory");
    assert!(t.elapsed() < Duration::from_secs(60));

    // The same directory declared small: once a size that lands nowhere, once exactly the
    // last header's length (so the shortened directory starts on a header). Each time the
    // library would have read all 1,100 headers; the walk refuses it first.
    let eocd = big.len() - 22;
    let last = big[..eocd]
        .windows(4)
        .rposition(|w| w == b"PK\x01\x02")
        .unwrap();
    for small in [1000u32, (eocd - last) as u32] {
        big[at..at + 4].copy_from_slice(&small.to_le_bytes());
        s.upload_zip(&cuid, "", big.clone()).await.assert_error(
            400,
            "validation_error",
            "INVALID_ZIP",
        );
        check(&format!("declared {small} bytes"));
    }

    // Uploads still work afterwards (every extraction permit was given back).
    for i in 0..3 {
        let r = s
            .upload_zip(
                &cuid,
                "",
                zip_of(&[("after.txt", format!("{i}").as_bytes())]),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

#[tokio::test]
async fn download_errors_and_unknown_containers() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let r = s
        .upload_zip(&cuid, "", zip_of(&[("data/x.txt", b"x"), ("empty/", b"")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let dl = |q: &str| format!("/containers/{cuid}/download{q}");

    s.get(&dl(""))
        .await
        .assert_error(400, "validation_error", "MISSING_PATH");
    for q in [
        "../etc/passwd",
        "data/../../x",
        "/app/../x",
        "data%5Cx.txt",
        "data/x.txt%00",
    ] {
        s.get(&dl(&format!("?path={q}"))).await.assert_error(
            400,
            "validation_error",
            "UNSAFE_PATH",
        );
    }
    for q in ["nope.txt", "data/nope", "data/x.txt/more", "nodir/x"] {
        s.get(&dl(&format!("?path={q}")))
            .await
            .assert_error(404, "not_found", "FILE_NOT_FOUND");
    }
    for q in ["data", "/app", "/", "empty/"] {
        s.get(&dl(&format!("?path={q}"))).await.assert_error(
            400,
            "validation_error",
            "IS_A_DIRECTORY",
        );
    }
    s.get(&format!("/containers/{cuid}/download-zip?path=data/x.txt"))
        .await
        .assert_error(400, "validation_error", "NOT_A_DIRECTORY");
    s.get(&format!("/containers/{cuid}/download-zip?path=missing"))
        .await
        .assert_error(404, "not_found", "FILE_NOT_FOUND");
    let (status, _, data) =
        get_bytes(&s, &format!("/containers/{cuid}/download-zip?path=empty")).await;
    assert_eq!(status, 200);
    assert!(unzip_all(&data).is_empty());

    // Unknown, malformed and deleted containers: 404 on all three routes.
    let unknown = "c123e4567-e89b-12d3-a456-426614174000";
    for id in [unknown, "nope", cuid.as_str()] {
        if id == cuid {
            let r = s.delete(&format!("/containers/{cuid}")).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        s.get(&format!("/containers/{id}/download?path=data/x.txt"))
            .await
            .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
        s.get(&format!("/containers/{id}/download-zip"))
            .await
            .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
        s.upload_zip(id, "", zip_of(&[("x", b"x")]))
            .await
            .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    }
}

#[tokio::test]
async fn a_failed_move_into_place_is_rolled_back() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);
    let old: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("f{i:03}"), b"old".to_vec()))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = old
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    entries.push(("zz/keep", b"keep"));
    let r = s.upload_zip(&cuid, "", zip_of(&entries)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = listing(&m);

    // 300 files (10 replacing old ones), new directories, then a file where /app has the
    // directory zz: the last move fails, every earlier one is undone.
    let new: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("f{i:03}"), b"new".to_vec()))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = new
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    entries.push(("newdir/a", b"a"));
    entries.push(("zz", b"file over a directory"));
    let r = s.upload_zip(&cuid, "", zip_of(&entries)).await;
    r.assert_error(409, "conflict", "PATH_CONFLICT");
    assert_eq!(listing(&m), before);
    assert!(staging_is_empty(&s));
}

#[tokio::test]
async fn concurrent_uploads_to_one_container_are_each_all_or_nothing() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);
    let mk = |tag: &str| -> Vec<u8> {
        let names: Vec<(String, Vec<u8>)> = (0..400)
            .map(|i| (format!("d{}/f{i}", i % 8), format!("{tag}{i}").into_bytes()))
            .collect();
        let entries: Vec<(&str, &[u8])> = names
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        zip_of(&entries)
    };
    // A third upload fails at its last move (a file where /app has a directory).
    let r = s.upload_zip(&cuid, "", zip_of(&[("zz/keep", b"k")])).await;
    assert_eq!(r.status, 200);
    let failing = {
        let names: Vec<(String, Vec<u8>)> = (0..400)
            .map(|i| (format!("d{}/f{i}", i % 8), format!("C{i}").into_bytes()))
            .collect();
        let mut entries: Vec<(&str, &[u8])> = names
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        entries.push(("zz", b"x"));
        zip_of(&entries)
    };
    for round in 0..3 {
        let (a, b, c) = tokio::join!(
            s.upload_zip(&cuid, "", mk("A")),
            s.upload_zip(&cuid, "", mk("B")),
            s.upload_zip(&cuid, "", failing.clone()),
        );
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(b.status, 200, "{}", b.text);
        c.assert_error(409, "conflict", "PATH_CONFLICT");
        // Every file comes from the same upload: A's or B's, never a mix, never C's.
        let mut tags = std::collections::BTreeSet::new();
        for i in 0..400 {
            let data = std::fs::read(m.join(format!("d{}/f{i}", i % 8))).unwrap();
            tags.insert(data[0]);
        }
        assert_eq!(tags.len(), 1, "round {round}: mixed uploads {tags:?}");
        assert!(!tags.contains(&b'C'));
    }
    assert!(staging_is_empty(&s));
}

/// From inside a running container, as uid 1000: symlinks to the host's root and
/// /etc/passwd, a dangling link where an upload will write, a FIFO.
#[tokio::test]
async fn a_hostile_container_cannot_reach_the_host() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let r = s
        .upload_zip(&cuid, "", zip_of(&[("data/x.txt", b"x")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post(&format!("/containers/{cuid}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A host file the dangling link names: it must never be created.
    let outside = s.dir.path().join("outside-target");
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let script = format!(
        "set -e; cd /app; ln -s / root; ln -s /etc/passwd pw; ln -s {} dangling; \
         mkfifo f; ln -s ../.. up; ln -s data inside; ln -s /etc etcdir; ln data/x.txt hard",
        outside.display()
    );
    run_ok(std::process::Command::new("docker").args([
        "exec",
        "-u",
        "1000:1000",
        &cuid,
        "sh",
        "-c",
        &script,
    ]));
    let m = s.mount(&cuid);
    assert!(std::fs::symlink_metadata(m.join("f"))
        .unwrap()
        .file_type()
        .is_fifo());

    // Downloads never return host content.
    for p in [
        "pw",
        "root/etc/passwd",
        "up/etc/passwd",
        "etcdir/passwd",
        "dangling",
    ] {
        let (status, _, body) = download(&s, &cuid, p).await;
        assert_ne!(status, 200, "{p}");
        assert!(!String::from_utf8_lossy(&body).contains("root:"), "{p}");
    }
    for p in ["root", "up", "etcdir"] {
        let (status, _, _) =
            get_bytes(&s, &format!("/containers/{cuid}/download-zip?path={p}")).await;
        assert_ne!(status, 200, "{p}");
    }
    // A link that stays inside is followed.
    let (status, _, body) = download(&s, &cuid, "inside/x.txt").await;
    assert_eq!((status, body.as_slice()), (200, &b"x"[..]));

    // The FIFO is refused at once, never opened.
    let t = Instant::now();
    s.get(&format!("/containers/{cuid}/download?path=f"))
        .await
        .assert_error(400, "validation_error", "NOT_A_REGULAR_FILE");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // The folder download holds only /app's own files: no link followed, FIFO skipped, and
    // the hard-linked file's bytes once (under the name met first: `hard`, listed before
    // the files of `data/`).
    let t = Instant::now();
    let (status, _, data) = get_bytes(&s, &format!("/containers/{cuid}/download-zip")).await;
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(5));
    let all = unzip_all(&data);
    let names: Vec<&String> = all.keys().collect();
    assert_eq!(names, ["data/", "hard"], "{names:?}");

    // Uploads never write outside: each planted name is replaced, not followed.
    let r = s
        .upload_zip(
            &cuid,
            "",
            zip_of(&[
                ("dangling", b"written in /app"),
                ("pw", b"not the host's passwd"),
                ("f", b"was a fifo"),
                ("hard", b"new hard"),
                ("root/x.txt", b"not in the host's root"),
                ("etcdir/passwd", b"not the host's"),
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!outside.exists(), "the dangling link was followed");
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    assert!(!Path::new("/x.txt").exists());
    for (p, want) in [
        ("dangling", &b"written in /app"[..]),
        ("pw", b"not the host's passwd"),
        ("f", b"was a fifo"),
        ("hard", b"new hard"),
        ("root/x.txt", b"not in the host's root"),
        ("etcdir/passwd", b"not the host's"),
    ] {
        let md = std::fs::symlink_metadata(m.join(p)).unwrap();
        assert!(md.file_type().is_file(), "{p}");
        assert_eq!(std::fs::read(m.join(p)).unwrap(), want, "{p}");
    }
    // The hard link's other name kept its content: replaced, not written through.
    assert_eq!(std::fs::read(m.join("data/x.txt")).unwrap(), b"x");
    assert!(std::fs::symlink_metadata(m.join("root")).unwrap().is_dir());

    // The container sees the uploaded files, owned by its user.
    let out = docker(&[
        "exec",
        &cuid,
        "sh",
        "-c",
        "cat /app/root/x.txt; stat -c %u /app/pw",
    ]);
    assert_eq!(out, "not in the host's root1000\n");
}

/// Deep entry names are refused at once (the plan's work is linear, and bounded by the
/// component cap); names near PATH_MAX go through (staged relative to a descriptor).
#[tokio::test]
async fn deep_and_long_entry_names() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);

    // 20 entries of 2,000 components each (4 KB names): quadratic planning took ~234 MB
    // per entry; now each is refused at its first look.
    let names: Vec<String> = (0..20)
        .map(|i| format!("{i:02}/") + &"a/".repeat(1999) + "f")
        .collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let t = Instant::now();
    let r = s.upload_zip(&cuid, "", zip_of(&entries)).await;
    r.assert_error(400, "validation_error", "UNSAFE_ZIP_ENTRY");
    assert_eq!(
        r.json["details"]["reason"], "the path is too deep",
        "{}",
        r.text
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(staging_is_empty(&s));

    // The target directory counts: 250 components of ?path= plus 10 of the entry.
    let deep_target = "t/".repeat(250);
    let entry = "e/".repeat(9) + "f";
    let r = s
        .upload_zip(
            &cuid,
            &format!("?path={}", url_encode(&deep_target)),
            zip_of(&[(&entry, b"x")]),
        )
        .await;
    r.assert_error(400, "validation_error", "UNSAFE_ZIP_ENTRY");
    // And ?path= alone over the cap.
    let r = s
        .upload_zip(
            &cuid,
            &format!("?path={}", url_encode(&"t/".repeat(300))),
            zip_of(&[("f", b"x")]),
        )
        .await;
    r.assert_error(400, "validation_error", "UNSAFE_PATH");

    // A name of ~4,000 bytes (20 names of 200 bytes): stored, placed, downloadable.
    let long = vec!["p".repeat(200); 20].join("/") + "/long.txt";
    let r = s.upload_zip(&cuid, "", zip_of(&[(&long, b"long")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (status, _, body) = download(&s, &cuid, &long).await;
    assert_eq!((status, body.as_slice()), (200, &b"long"[..]));
    assert!(m.join("p".repeat(200)).is_dir());
    assert!(staging_is_empty(&s));
}

/// A file the container holds a write lease on (`F_SETLEASE`) would make an open wait for
/// the lease break (45 s): the download answers `409 FILE_BUSY` at once, and download-zip
/// skips the file. The lease is taken here on the host by a python3 child.
#[tokio::test]
async fn a_leased_file_is_busy_not_waited_for() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let r = s
        .upload_zip(
            &cuid,
            "",
            zip_of(&[("leased.txt", b"held"), ("free.txt", b"free")]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let script = "import fcntl, os, signal, sys, time\n\
        signal.signal(signal.SIGIO, signal.SIG_IGN)\n\
        fd = os.open(sys.argv[1], os.O_RDONLY)\n\
        fcntl.fcntl(fd, 1024, fcntl.F_WRLCK)\n\
        print('ok', flush=True)\n\
        time.sleep(120)\n";
    // python3 is part of every machine this suite runs on: without it the test fails
    // rather than passing without having checked anything.
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(s.mount(&cuid).join("leased.txt"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 takes the lease");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ok", "the lease could not be taken");

    let t = Instant::now();
    let r = s
        .get(&format!("/containers/{cuid}/download?path=leased.txt"))
        .await;
    let first = t.elapsed();
    let t = Instant::now();
    let (status, _, data) = get_bytes(&s, &format!("/containers/{cuid}/download-zip")).await;
    let zipped = t.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    r.assert_error(409, "conflict", "FILE_BUSY");
    assert!(first < Duration::from_secs(5), "{first:?}");
    assert_eq!(status, 200);
    assert!(zipped < Duration::from_secs(5), "{zipped:?}");
    let all = unzip_all(&data);
    let names: Vec<&String> = all.keys().collect();
    assert_eq!(names, ["free.txt"], "{names:?}");
}
