//! The `cairn` command, run as a user would: every command, `--json`, exit codes, bad input.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cairn(dir: &Path, args: &[&str]) -> Output {
    cairn_with_stdin(dir, args, None)
}

fn cairn_with_stdin(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data")
        .arg(dir)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn");
    if let Some(bytes) = stdin {
        use std::io::Write;
        // A command that rejects its arguments exits without reading: a broken pipe is fine.
        let _ = child.stdin.take().expect("piped stdin").write_all(bytes);
    }
    child.wait_with_output().expect("cairn finished")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cairn failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

#[test]
fn put_get_head_ls_rm_round_trip_small_and_large() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let small = d.join("small.txt");
    std::fs::write(&small, b"hello, cairn").unwrap();
    let large = d.join("large.bin");
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(&large, &big).unwrap();
    let data = d.join("data");

    let out = ok(&cairn(
        &data,
        &[
            "put",
            "docs/a",
            small.to_str().unwrap(),
            "--content-type",
            "text/plain",
            "--meta",
            "owner=ada",
        ],
    ));
    assert!(out.contains("12 bytes, inline"), "{out}");
    let out = ok(&cairn(
        &data,
        &["put", "media/b", large.to_str().unwrap(), "--ttl", "1h"],
    ));
    assert!(out.contains("long-term (revision"), "{out}");

    assert_eq!(cairn(&data, &["get", "docs/a"]).stdout, b"hello, cairn");
    let copy = d.join("copy.bin");
    ok(&cairn(
        &data,
        &["get", "media/b", "-o", copy.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&copy).unwrap(), big);
    assert_eq!(
        cairn(&data, &["get", "media/b", "--range", "1000-1009"]).stdout,
        &big[1000..1010]
    );
    assert_eq!(
        cairn(&data, &["get", "media/b", "--range=-4"]).stdout,
        &big[big.len() - 4..]
    );

    let head = ok(&cairn(&data, &["head", "docs/a"]));
    for want in [
        "size:         12 bytes",
        "tier:         inline",
        "content type: text/plain",
        "expires:      never",
        "meta:         owner=ada",
    ] {
        assert!(head.contains(want), "{want:?} in\n{head}");
    }
    let head = json(&cairn(&data, &["--json", "head", "media/b"]));
    assert_eq!(head["size"], big.len() as u64);
    assert_eq!(head["tier"], "long-term");
    assert!(head["expires"].is_string());

    let ls = ok(&cairn(&data, &["ls"]));
    assert!(ls.contains("docs/a") && ls.contains("media/b"), "{ls}");
    let ls = json(&cairn(&data, &["--json", "ls", "media/"]));
    assert_eq!(ls.as_array().unwrap().len(), 1);

    ok(&cairn(&data, &["rm", "media/b"]));
    assert_eq!(
        code(&cairn(&data, &["get", "media/b"])),
        1,
        "a missing key exits 1"
    );
    assert_eq!(code(&cairn(&data, &["head", "media/b"])), 1);
    let fsck = ok(&cairn(&data, &["fsck"]));
    assert!(fsck.ends_with("ok\n"), "{fsck}");
}

#[test]
fn put_reads_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(
        &data,
        &["put", "from-stdin", "-"],
        Some(b"piped bytes"),
    ));
    ok(&cairn_with_stdin(
        &data,
        &["put", "implicit-stdin"],
        Some(b"more"),
    ));
    assert_eq!(cairn(&data, &["get", "from-stdin"]).stdout, b"piped bytes");
    assert_eq!(cairn(&data, &["get", "implicit-stdin"]).stdout, b"more");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let long = "k".repeat(1025);
    for args in [
        vec!["put", "", "-"],
        vec!["put", long.as_str(), "-"],
        vec!["put", "k", "-", "--ttl", "soon"],
        vec!["put", "k", "-", "--meta", "no-equals"],
        vec!["get", "k", "--range", "9-3"],
        vec!["put", "k", "/definitely/not/here"],
        vec!["put", "k", "-", "--ttl", "999us"],
        vec!["put", "k", "-", "--ttl", "1001years"],
        vec!["put", "k", "-", "--content-type", ""],
        vec!["get", "k", "--range", "+1-2"],
    ] {
        let out = cairn_with_stdin(&data, &args, Some(b"x"));
        assert_eq!(code(&out), 2, "{args:?} is bad input");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    let here = data.parent().unwrap();
    let out = cairn(&data, &["put", "k", here.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "a directory is not a file to store");
    // Nothing was written by any of them, not even the data directory.
    assert!(!data.exists());
    let err = json(&cairn(&data, &["--json", "put", "", "-"]));
    assert_eq!(err["kind"], "input");
    // A command line the parser refuses answers a script in JSON too, with the same exit code.
    for args in [
        &["--json", "put", "k", "-", "--ttl", "10"][..],
        &["--json", "frobnicate"],
    ] {
        let out = cairn(&data, args);
        assert_eq!(code(&out), 2, "{args:?}");
        let err = json(&out);
        assert_eq!(err["kind"], "input", "{args:?}");
        assert!(
            !err["error"].as_str().unwrap_or_default().is_empty(),
            "{args:?} says why"
        );
    }
    assert!(!data.exists(), "and wrote nothing");
    // A range past the end is the caller's fault too.
    ok(&cairn_with_stdin(
        &data,
        &["put", "short", "-"],
        Some(b"abc"),
    ));
    assert_eq!(
        code(&cairn(&data, &["get", "short", "--range", "10-20"])),
        2
    );
    // Numbers past any size: an end is trimmed to the object, a start selects nothing.
    let huge = "99999999999999999999";
    let whole = cairn(&data, &["get", "short", "--range", &format!("1-{huge}")]);
    assert_eq!(ok(&whole), "bc");
    let past = cairn(&data, &["get", "short", "--range", &format!("{huge}-")]);
    assert_eq!(code(&past), 2, "{past:?}");
}

#[test]
fn fsck_reports_an_orphan_and_repair_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(
        &data,
        &["put", "kept", "-"],
        Some(&vec![1u8; 2 << 20]),
    ));
    // A writer dies between its blob write and its commit...
    let crashed = cairn(&data, &["__crash-put", "lost", "2097152"]);
    assert!(!crashed.status.success(), "the crash put aborts");
    // ...and its change-log entry is lost too, so nothing covers its blob any more.
    let db = rusqlite::Connection::open(data.join("cairn.sqlite")).unwrap();
    assert_eq!(db.execute("DELETE FROM changes", []).unwrap(), 1);
    drop(db);
    let out = cairn(&data, &["fsck"]);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("orphan blob: lost"));
    let report = json(&cairn(&data, &["--json", "fsck", "--repair"]));
    assert_eq!(report["orphans_deleted"], 1);
    assert_eq!(report["clean"], true);
    assert!(ok(&cairn(&data, &["fsck"])).ends_with("ok\n"));
    assert_eq!(cairn(&data, &["get", "kept"]).stdout.len(), 2 << 20);
}

#[test]
fn fsck_goes_on_past_a_stray_file_and_reports_it_in_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(
        &data,
        &["put", "big", "-"],
        Some(&vec![1u8; 2 << 20]),
    ));
    let stray = data
        .join("blobs")
        .join("blobs")
        .join("00")
        .join(".DS_Store");
    std::fs::write(&stray, b"finder").unwrap();
    let out = cairn(&data, &["--json", "fsck", "--repair"]);
    assert_eq!(code(&out), 1);
    let report = json(&out);
    assert_eq!(report["problems"], 1, "{report}");
    assert_eq!(report["blobs"], 1, "{report}");
    let files = report["unreadable_files"].as_array().expect("a list");
    assert!(files[0].as_str().unwrap().contains(".DS_Store"), "{report}");
    assert!(stray.exists(), "repair never deletes what is not a blob");
    let text = String::from_utf8(cairn(&data, &["fsck"]).stdout).unwrap();
    assert!(text.contains("not a readable blob"), "{text}");
    assert!(text.ends_with("problems found\n"), "{text}");
}

#[test]
fn recover_reports_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"v")));
    let text = ok(&cairn(&data, &["recover"]));
    assert!(
        text.starts_with("recovery: 0 change-log entries examined"),
        "{text}"
    );
    // A writer dies mid-put, holding a lease of 200 ms. Until it runs out `recover` leaves the
    // entry alone; the first `recover` after reports the whole cleanup (it opens without the
    // recovery pass of other commands, which would otherwise have done it unreported).
    let crashed = cairn(
        &data,
        &["--lease-ms", "200", "__crash-put", "lost", "2097152"],
    );
    assert!(!crashed.status.success(), "the crash put aborts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let report = loop {
        let report = json(&cairn(&data, &["--json", "recover"]));
        if report["entries"] != 0 {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never ran out"
        );
    };
    assert_eq!(
        (report["entries"].as_u64(), report["cleaned"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert!(ok(&cairn(&data, &["fsck"])).ends_with("ok\n"));
}

/// The data directory is `--data`, else `$CAIRN_DATA` unless it is empty, else `./cairn-data`;
/// only a put creates one.
#[test]
fn the_data_directory_is_created_by_a_put_only() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .current_dir(dir.path())
            .env("CAIRN_DATA", env)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cairn")
    };
    for args in [
        &["ls"][..],
        &["get", "k"],
        &["head", "k"],
        &["rm", "k"],
        &["fsck"],
    ] {
        let out = run("", args);
        assert_eq!(code(&out), 2, "{args:?} on no data directory");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no data directory"), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
    ok(&run("", &["put", "k", "/dev/null"]));
    assert!(dir.path().join("cairn-data").join("cairn.sqlite").exists());
    ok(&run("elsewhere", &["put", "k", "/dev/null"]));
    assert!(dir.path().join("elsewhere").join("cairn.sqlite").exists());
    let out = run("x", &["--data", "", "ls"]);
    assert_eq!(code(&out), 2);
    // An existing directory that holds no cairn database is not made one by a read.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let out = run("", &["--data", other.to_str().unwrap(), "ls"]);
    assert_eq!(code(&out), 2);
    assert_eq!(
        std::fs::read_dir(&other).unwrap().count(),
        0,
        "nothing created"
    );
}

/// Output that cannot be written is an error with exit 3 (not a panic), and a closed pipe ends
/// the command quietly.
#[test]
fn failing_to_write_standard_output_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"v")));
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return; // no /dev/full on this system
    };
    for args in [
        &["head", "k"][..],
        &["ls"],
        &["--json", "head", "k"],
        &["get", "k"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--data")
            .arg(&data)
            .args(args)
            .stdout(full.try_clone().unwrap())
            .output()
            .expect("run cairn");
        assert_eq!(
            code(&out),
            3,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("standard output"), "{args:?}: {err}");
    }
}

#[test]
fn text_output_escapes_control_characters_in_keys_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = "esc\u{1b}[31mred\nline";
    ok(&cairn_with_stdin(
        &data,
        // (A value cannot hold control characters, but it can hold a mark that reorders text.)
        &["put", key, "-", "--meta", "note=a\u{202e}b"],
        Some(b"v"),
    ));
    for args in [&["ls"][..], &["head", key]] {
        let text = ok(&cairn(&data, args));
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{args:?}: {text:?}"
        );
        assert!(
            text.contains("esc\\u{1b}[31mred\\nline"),
            "{args:?}: {text:?}"
        );
    }
    // JSON carries the key as it is.
    let doc = json(&cairn(&data, &["--json", "head", key]));
    assert_eq!(doc["key"], key);
    // A key that is not there is escaped as much in the message that says so.
    let missing = "gone\u{1b}[2J\u{202e}\nforged line";
    let out = cairn(&data, &["head", missing]);
    assert_eq!(code(&out), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains('\u{1b}') && !err.contains('\u{202e}') && err.lines().count() == 1,
        "{err:?}"
    );
    let doc = json(&cairn(
        &data,
        &["--json", "get", missing, "-o", "/dev/null"],
    ));
    assert_eq!(
        (doc["kind"].as_str(), doc["key"].as_str()),
        (Some("not_found"), Some(missing))
    );
}

#[test]
fn small_things_a_script_relies_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"value")));
    // Deleting a missing key succeeds and says so.
    assert!(ok(&cairn(&data, &["rm", "nothere"])).starts_with("nothing under nothere"));
    assert_eq!(
        json(&cairn(&data, &["--json", "rm", "nothere"]))["deleted"],
        false
    );
    // `-o -` is standard output.
    assert_eq!(cairn(&data, &["get", "k", "-o", "-"]).stdout, b"value");
    // An output file that cannot be created is bad input.
    let out = cairn(&data, &["get", "k", "-o", "no/such/dir/out"]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    // A usage error in JSON names what is missing.
    let err = json(&cairn(&data, &["--json", "put"]));
    assert!(err["error"].as_str().unwrap().contains("<KEY>"), "{err}");
    // No command: the commands a user may give, and not the internal ones.
    let out = cairn(&data, &[]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(text.contains("put, get") && !text.contains("__"), "{text}");
    // After `--`, `--json` is a key, not the option.
    let out = cairn_with_stdin(&data, &["put", "--ttl", "bad", "--", "--json"], Some(b"v"));
    assert_eq!(code(&out), 2);
    assert!(out.stdout.is_empty(), "no JSON document: {out:?}");
    // A far expiry prints.
    ok(&cairn_with_stdin(
        &data,
        &["put", "far", "-", "--ttl", "1000years"],
        Some(b"v"),
    ));
    assert!(ok(&cairn(&data, &["head", "far"])).contains("expires:      30"));
    assert_eq!(json(&cairn(&data, &["--json", "rm", "k"]))["deleted"], true);
    // A tombstone whose blob was removed from outside reads as lost (a storage failure, not
    // a missing key); `rm` clears it, as fsck advises, and says so.
    ok(&cairn_with_stdin(
        &data,
        &["put", "big", "-"],
        Some(&vec![1u8; 2 << 20]),
    ));
    let blobs = data.join("blobs").join("blobs");
    for fanout in std::fs::read_dir(&blobs).unwrap() {
        for file in std::fs::read_dir(fanout.unwrap().path()).unwrap() {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
    }
    assert_eq!(code(&cairn(&data, &["fsck"])), 1, "dangling");
    for command in ["get", "head"] {
        let out = cairn(&data, &[command, "big"]);
        assert_eq!(code(&out), 3, "{command}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("the object is lost"));
    }
    assert!(ok(&cairn(&data, &["rm", "big"])).starts_with("deleted big"));
    assert!(ok(&cairn(&data, &["fsck"])).ends_with("ok\n"));
}

#[test]
fn demo_refuses_json_and_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--json", "demo"])
        .output()
        .expect("run demo");
    assert_eq!(code(&out), 2);
    assert_eq!(json(&out)["kind"], "input");
    std::fs::write(dir.path().join("mine"), b"precious").unwrap();
    let out = cairn(dir.path(), &["demo"]);
    assert_eq!(
        code(&out),
        2,
        "a directory with files in it is not the demo's"
    );
    assert_eq!(std::fs::read(dir.path().join("mine")).unwrap(), b"precious");
    // Nor is a new directory inside a store.
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"v")));
    for inside in [
        data.join("demo"),
        data.join("blobs").join("blobs").join("new"),
    ] {
        let out = cairn(&inside, &["demo"]);
        assert_eq!(code(&out), 2, "{out:?}");
        assert!(!inside.exists());
    }
    assert!(ok(&cairn(&data, &["fsck"])).ends_with("ok\n"));
}

#[test]
fn demo_runs_to_the_end() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("demo")
        .output()
        .expect("run demo");
    let text = ok(&out);
    assert!(text.contains("7. restart"), "{text}");
    assert!(
        text.trim_end().ends_with("the change log is empty"),
        "{text}"
    );
}

/// Every blob file under the data directory.
fn blob_files(data: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for fanout in std::fs::read_dir(data.join("blobs").join("blobs")).unwrap() {
        for file in std::fs::read_dir(fanout.unwrap().path()).unwrap() {
            found.push(file.unwrap().path());
        }
    }
    found
}

/// `get -o` must never write over the store it reads from: the database, a blob, or anything
/// else inside the data directory, however the path is spelled. A get that fails leaves an
/// existing output file as it was.
#[test]
fn get_never_writes_into_the_data_directory_and_a_failed_get_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"value")));
    ok(&cairn_with_stdin(
        &data,
        &["put", "big", "-"],
        Some(&vec![7u8; 2 << 20]),
    ));
    let blob = blob_files(&data).pop().expect("the blob of big");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(data.join("cairn.sqlite"), &link).unwrap();
    let sneaky = data.join("..").join("data").join("new-file");
    // A link to a file not made yet, which opening the store makes.
    let to_wal = dir.path().join("to-wal");
    std::os::unix::fs::symlink(data.join("cairn.sqlite-wal"), &to_wal).unwrap();
    for target in [
        data.join("cairn.sqlite"),
        blob.clone(),
        sneaky.clone(),
        link.clone(),
        to_wal.clone(),
    ] {
        let out = cairn(&data, &["get", "big", "-o", target.to_str().unwrap()]);
        assert_eq!(code(&out), 2, "{}: {out:?}", target.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("inside the data directory") || err.contains("symbolic link to nothing"),
            "{err}"
        );
    }
    assert!(!sneaky.exists());
    assert!(std::fs::metadata(&blob).unwrap().len() > 2 << 20);
    assert_eq!(cairn(&data, &["get", "k"]).stdout, b"value");
    assert_eq!(cairn(&data, &["get", "big"]).stdout.len(), 2 << 20);
    assert!(ok(&cairn(&data, &["fsck"])).ends_with("ok\n"));

    // A get that fails half way (its blob damaged) leaves the old file and no temporary one.
    let old = dir.path().join("out");
    std::fs::write(&old, b"precious").unwrap();
    let size = std::fs::metadata(&blob).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .and_then(|f| f.set_len(size - 1000))
        .unwrap();
    let out = cairn(&data, &["get", "big", "-o", old.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{out:?}");
    assert_eq!(std::fs::read(&old).unwrap(), b"precious");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left.len(),
        4,
        "data, link, to-wal, out and nothing else: {left:?}"
    );
    // A successful get replaces it whole.
    ok(&cairn(&data, &["get", "k", "-o", old.to_str().unwrap()]));
    assert_eq!(std::fs::read(&old).unwrap(), b"value");
}

/// A plain `fsck` changes nothing: right after a crash it shows the dead writer's entry — held
/// by its lease at first, stale once the lease ran out — and its blob, and only `--repair`
/// cleans them up. `recover` says why it leaves a live lease's entries alone.
#[test]
fn fsck_shows_what_a_crash_left_and_only_repair_cleans_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"v")));
    let crashed = cairn(
        &data,
        &["--lease-ms", "60000", "__crash-put", "held", "2097152"],
    );
    assert!(!crashed.status.success(), "the crash put aborts");
    let report = json(&cairn(&data, &["--json", "fsck"]));
    assert_eq!(
        report["clean"], true,
        "a live lease is not a problem: {report}"
    );
    let held = report["in_flight_log_entries"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{report}");
    assert_eq!(held[0]["key"], "held");
    let out = ok(&cairn(&data, &["recover"]));
    assert!(
        out.contains("1 change-log entry of another live instance left alone"),
        "{out}"
    );
    assert_eq!(
        json(&cairn(&data, &["--json", "recover"]))["held_by_live_instances"],
        1
    );

    // A writer with a short lease dies, under a key a terminal would garble.
    let key = "lost\nkey\u{1b}";
    let crashed = cairn(&data, &["--lease-ms", "1", "__crash-put", key, "2097152"]);
    assert!(!crashed.status.success(), "the crash put aborts");
    let before = blob_files(&data).len();
    for _ in 0..2 {
        let out = cairn(&data, &["--json", "fsck"]);
        assert_eq!(code(&out), 1, "{out:?}");
        let report = json(&out);
        let stale = report["stale_log_entries"].as_array().unwrap();
        assert_eq!(stale.len(), 1, "{report}");
        assert_eq!(stale[0]["key"], key, "JSON carries keys as they are");
        assert_eq!(
            blob_files(&data).len(),
            before,
            "a plain fsck deletes nothing"
        );
    }
    let report = json(&cairn(&data, &["--json", "fsck", "--repair"]));
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(blob_files(&data).len(), before - 1);
}

/// Files in the blob directory that cairn did not put there are reported wherever they are;
/// temporary files are counted, not reported as problems.
#[test]
fn fsck_finds_strays_anywhere_in_the_blob_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"v")));
    let blobs = data.join("blobs");
    std::fs::write(blobs.join("stray.txt"), b"x").unwrap();
    std::fs::write(blobs.join("blobs").join("stray"), b"x").unwrap();
    std::fs::write(blobs.join("tmp").join("not-a-temp"), b"x").unwrap();
    std::fs::write(blobs.join("tmp").join("1-2-3.partial"), b"half").unwrap();
    let out = cairn(&data, &["--json", "fsck", "--repair"]);
    assert_eq!(code(&out), 1);
    let report = json(&out);
    assert_eq!(report["problems"], 3, "{report}");
    assert_eq!(
        (report["temp_files"].as_u64(), report["temp_bytes"].as_u64()),
        (Some(1), Some(4))
    );
    let text = ok_or_problems(&cairn(&data, &["fsck"]));
    for name in ["stray.txt", "stray", "not-a-temp"] {
        assert!(text.contains(name), "{name}: {text}");
    }
    assert!(text.contains("1 temporary file (4 bytes)"), "{text}");
    assert!(blobs.join("stray.txt").exists(), "never deleted");
}

fn ok_or_problems(out: &Output) -> String {
    assert!(matches!(code(out), 0 | 1), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Small things a user runs into.
#[test]
fn puts_report_their_own_object_and_mistakes_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Gone before the put could look at it again, the object is still described.
    let report = json(&cairn_with_stdin(
        &data,
        &["--json", "put", "brief", "-", "--ttl", "1ms"],
        Some(b"hi"),
    ));
    assert_eq!(
        (report["size"].as_u64(), report["tier"].as_str()),
        (Some(2), Some("inline"))
    );
    // A dangling symbolic link as the data directory.
    let link = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
    let out = cairn_with_stdin(&link, &["put", "k", "-"], Some(b"v"));
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link to nothing"));
    // A time to live finer than a millisecond would be cut short; a name given twice, lost.
    for args in [
        &["put", "t", "-", "--ttl", "1999us"][..],
        &["put", "t", "-", "--meta", "a=1", "--meta", "A=2"][..],
    ] {
        let out = cairn_with_stdin(&data, args, Some(b"v"));
        assert_eq!(code(&out), 2, "{args:?}: {out:?}");
    }
    assert_eq!(code(&cairn(&data, &["head", "t"])), 1, "nothing was stored");
    // Of several metadata pairs, the message names the one refused.
    let args = ["put", "t", "-", "--meta", "fine=1", "--meta", "not fine=2"];
    let out = cairn_with_stdin(&data, &args, Some(b"v"));
    assert_eq!(code(&out), 2, "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("\"not fine\""), "{said}");
    // A key far too long is not repeated in full.
    let long = "k".repeat(5000);
    let out = cairn(&data, &["head", &long]);
    assert_eq!(code(&out), 2);
    assert!(
        out.stderr.len() < 300,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `put KEY` without a file on a terminal would store whatever is typed before Ctrl-D — or
/// nothing — over the key: refused, nothing read or written.
#[cfg(target_os = "linux")]
#[test]
fn a_put_without_a_file_refuses_to_read_a_terminal() {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"value")));
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data")
        .arg(&data)
        .args(["put", "k"])
        .stdin(Stdio::from(terminal))
        .output()
        .expect("run cairn");
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass - to type it"));
    assert_eq!(cairn(&data, &["get", "k"]).stdout, b"value");
}

/// A blob directory that is a link to another disk is the store all the same.
#[test]
fn get_never_writes_into_a_blob_directory_kept_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, data.join("blobs")).unwrap();
    ok(&cairn_with_stdin(
        &data,
        &["put", "big", "-"],
        Some(&vec![7u8; 2 << 20]),
    ));
    let blob = blob_files(&data).pop().expect("the blob of big");
    let real = std::fs::canonicalize(&blob).unwrap();
    assert!(real.starts_with(std::fs::canonicalize(&elsewhere).unwrap()));
    let out = cairn(&data, &["get", "big", "-o", real.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert_eq!(cairn(&data, &["get", "big"]).stdout.len(), 2 << 20);
}

/// `get -o` writes where `> PATH` would, and refuses what `> PATH` refuses: `/dev/stdout` is
/// the process's standard output as it is (a file opened for appending keeps what it had, a
/// pipe gets the bytes), a directory or a name ending in `/` is an error with nothing created,
/// and a new file gets the mode the umask gives.
#[cfg(unix)]
#[test]
fn get_o_writes_where_a_shell_redirection_would() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"value")));

    let log = dir.path().join("log.txt");
    std::fs::write(&log, b"before\n").unwrap();
    let appending = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--data",
            data.to_str().unwrap(),
            "get",
            "k",
            "-o",
            "/dev/stdout",
        ])
        .stdout(appending)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&log).unwrap(), b"before\nvalue");
    for stdout in ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"] {
        let out = cairn(&data, &["get", "k", "-o", stdout]);
        assert_eq!(out.stdout, b"value", "{stdout}: {out:?}");
        assert!(out.stderr.is_empty(), "{stdout}: no 'wrote' line: {out:?}");
    }
    // Another descriptor: a pipe is written (bash's `>(…)`), an open regular file refused, as
    // opened anew it would be written from its start over what a `>>` kept.
    let sh = |script: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .arg(&data)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let piped = sh(r#""$0" --data "$1" get k -o >(cat > piped.txt); wait"#);
    assert!(piped.status.success(), "{piped:?}");
    for _ in 0..100 {
        if std::fs::read(dir.path().join("piped.txt")).is_ok_and(|b| b == b"value") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read(dir.path().join("piped.txt")).unwrap(),
        b"value"
    );
    let appended = sh(r#""$0" --data "$1" get k -o /dev/fd/3 3>>log.txt"#);
    assert_eq!(code(&appended), 2, "{appended:?}");
    assert_eq!(std::fs::read(&log).unwrap(), b"before\nvalue", "untouched");
    // However a path through /proc or /dev/fd is spelled, the store is out of reach.
    let db = std::fs::canonicalize(data.join("cairn.sqlite")).unwrap();
    for via in ["/proc/self/fd/../../..", "/dev/fd/../.."] {
        let sneaky = format!("{via}{}", db.display());
        let out = cairn(&data, &["get", "k", "-o", &sneaky]);
        assert_eq!(code(&out), 2, "{sneaky}: {out:?}");
    }
    assert_eq!(ok(&cairn(&data, &["get", "k"])), "value");
    let out = cairn(&data, &["get", "k", "-o", "/dev/stderr"]);
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b""[..], &b"value"[..])
    );
    assert_eq!(
        code(&cairn(&data, &["--json", "get", "k", "-o", "/dev/stdout"])),
        2
    );

    let slash = dir.path().join("out/");
    let out = cairn(&data, &["get", "k", "-o", slash.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(!dir.path().join("out").exists(), "nothing created");
    let out = cairn(&data, &["get", "k", "-o", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 2, "a directory: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));

    for (umask, mode) in [("022", 0o644), ("077", 0o600)] {
        let new = dir.path().join(format!("new-{umask}"));
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .args(["--data", data.to_str().unwrap(), "get", "k", "-o"])
            .arg(&new)
            .status()
            .unwrap();
        assert!(status.success());
        let got = std::fs::metadata(&new).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "umask {umask}");
    }
}

/// A cleanup that keeps failing — here the old blob of an overwrite cannot be deleted, as in
/// a blob directory gone read-only — is never silent: every command warns, naming the cause,
/// `recover` and `fsck --repair` fail saying why, and once the cause is gone the next command
/// cleans up.
#[test]
fn a_cleanup_that_keeps_failing_is_reported_with_its_cause_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let big = vec![5u8; (1 << 20) + 1];
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(&big)));
    let [blob] = blob_files(&data).try_into().unwrap();
    // A directory where the old blob was: deleting it fails, for root too.
    std::fs::remove_file(&blob).unwrap();
    std::fs::create_dir(&blob).unwrap();
    std::fs::write(blob.join("x"), b"x").unwrap();
    let out = cairn_with_stdin(&data, &["put", "k", "-"], Some(b"small"));
    ok(&out);
    let cause = "Is a directory";
    let out = cairn(&data, &["ls"]);
    let warning = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ok(&out).ends_with(" k\n"), "{out:?}");
    assert!(
        warning
            .contains("warning: recovery could not finish cleaning up after 1 interrupted write"),
        "{warning}"
    );
    assert!(warning.contains(cause), "{warning}");

    let out = cairn(&data, &["--json", "fsck", "--repair"]);
    assert_eq!(code(&out), 1, "{out:?}");
    let doc = json(&out);
    assert_eq!(doc["recovery"]["deferred"], 1, "{doc}");
    assert!(
        doc["recovery"]["last_failure"]
            .as_str()
            .unwrap()
            .contains(cause),
        "{doc}"
    );
    assert_eq!(
        doc["stale_log_entries"].as_array().unwrap().len(),
        1,
        "{doc}"
    );
    assert_eq!(doc["clean"], false);
    let out = cairn(&data, &["recover"]);
    assert_eq!(code(&out), 1, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(cause),
        "{out:?}"
    );

    std::fs::remove_dir_all(&blob).unwrap();
    let out = cairn(&data, &["recover"]);
    assert!(ok(&out).contains("1 cleaned, 0 deferred"), "{out:?}");
    let out = cairn(&data, &["fsck"]);
    assert!(ok(&out).ends_with("ok\n"), "{out:?}");
    assert!(out.stderr.is_empty(), "no warning left: {out:?}");
}

/// A put creates a store only in a new or empty directory, and only once its input can be
/// read: a mistyped `--data` naming someone's files, the inside of another store, or input that
/// cannot be read at all, is refused with nothing created.
#[test]
fn a_put_makes_a_store_only_of_a_new_or_empty_directory_and_readable_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let from_a_directory = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--data", data.to_str().unwrap(), "put", "k", "-"])
        .stdin(std::fs::File::open(dir.path()).unwrap())
        .output()
        .unwrap();
    assert_eq!(code(&from_a_directory), 2, "{from_a_directory:?}");
    assert!(!data.exists(), "nothing created");

    let papers = dir.path().join("papers");
    std::fs::create_dir(&papers).unwrap();
    std::fs::write(papers.join("thesis.tex"), b"...").unwrap();
    let out = cairn_with_stdin(&papers, &["put", "k", "-"], Some(b"v"));
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither empty nor a cairn data directory")
    );
    assert_eq!(
        std::fs::read_dir(&papers).unwrap().count(),
        1,
        "nothing added"
    );

    ok(&cairn_with_stdin(
        &data,
        &["put", "k", "-"],
        Some(&vec![1u8; 2 << 20]),
    ));
    let blobs = data.join("blobs");
    for inner in [
        blobs.clone(),
        blobs.join("tmp"),
        blobs.join("blobs").join("00"),
        data.join("new"),
    ] {
        let out = cairn_with_stdin(&inner, &["put", "k", "-"], Some(b"v"));
        assert_eq!(code(&out), 2, "the inside of another store: {out:?}");
        assert!(!inner.join("cairn.sqlite").exists());
    }
    assert!(ok(&cairn(&data, &["fsck"])).ends_with("ok\n"));

    // Empty, or holding only a mount point's lost+found and an empty blob directory made ready.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("lost+found")).unwrap();
    std::fs::create_dir_all(empty.join("blobs")).unwrap();
    ok(&cairn_with_stdin(&empty, &["put", "k", "-"], Some(b"v")));
    assert_eq!(ok(&cairn(&empty, &["get", "k"])), "v");
    // A blob directory left over from a store whose database is gone is not an empty one: a
    // new database beside it would call every blob in it an orphan.
    let lost = dir.path().join("lost");
    std::fs::create_dir(&lost).unwrap();
    std::fs::rename(data.join("blobs"), lost.join("blobs")).unwrap();
    let out = cairn_with_stdin(&lost, &["put", "k", "-"], Some(b"v"));
    assert_eq!(code(&out), 2, "{out:?}");
}

#[test]
fn puts_racing_to_make_one_new_store_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..8 {
        let data = dir.path().join(format!("data{round}"));
        let puts: Vec<_> = (0..4)
            .map(|i| {
                let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
                    .arg("--data")
                    .arg(&data)
                    .args(["put", &format!("k{i}"), "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start cairn");
                drop(child.stdin.take());
                child
            })
            .collect();
        for put in puts {
            ok(&put.wait_with_output().unwrap());
        }
        assert_eq!(ok(&cairn(&data, &["ls"])).lines().count(), 4);
    }
}

/// A put without FILE whose standard input is `/dev/null` — also what a process started without
/// one (`<&-`) reads — would store an empty object by accident; it is refused, and the key
/// keeps its value. An explicit `-` reads it all the same.
#[cfg(unix)]
#[test]
fn a_put_without_a_file_refuses_a_closed_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cairn_with_stdin(&data, &["put", "k", "-"], Some(b"value")));
    let run = |put: &str, redirect: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("exec \"$0\" --data \"$1\" {put} {redirect}"))
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .arg(&data)
            .output()
            .unwrap()
    };
    for redirect in ["<&-", "</dev/null"] {
        let out = run("put k", redirect);
        assert_eq!(code(&out), 2, "{redirect}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("neither a pipe nor a file"));
    }
    assert_eq!(cairn(&data, &["get", "k"]).stdout, b"value");
    ok(&run("put k -", "</dev/null"));
    assert_eq!(cairn(&data, &["get", "k"]).stdout, b"");
}

/// The demo's temporary data directory goes when the demo is interrupted (Ctrl-C) or its
/// reader stops reading (`cairn demo | head`), as it goes at the end.
#[cfg(unix)]
#[test]
fn an_interrupted_demo_leaves_no_directory_behind() {
    use std::io::BufRead;
    let started = |child: &mut std::process::Child| {
        let mut first = String::new();
        let stdout = child.stdout.as_mut().expect("piped");
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .unwrap();
        let dir = first.trim_end().strip_prefix("cairn demo in ");
        std::path::PathBuf::from(dir.expect("the demo names its directory first"))
    };
    let demo = || {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("demo")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut interrupted = demo();
    let dir = started(&mut interrupted);
    assert!(dir.is_dir());
    let kill = Command::new("kill")
        .args(["-INT", &interrupted.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = interrupted.wait().unwrap();
    // Interrupted mid-tour (130), or it had just finished (0): either way, nothing is left.
    assert!(matches!(status.code(), Some(130 | 0)), "{status}");
    assert!(!dir.exists(), "{} left behind", dir.display());

    let mut headed = demo();
    let dir = started(&mut headed);
    drop(headed.stdout.take());
    let status = headed.wait().unwrap();
    assert!(
        status.success(),
        "a closed pipe ends the demo quietly: {status}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// `ls --json` streams one array a page at a time: a listing longer than a page is still one
/// valid document, in key order, and an empty one is `[]`.
#[test]
fn json_listing_spans_pages_as_one_array() {
    use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
    use cairn_adapters::{InlineRuntime, PutOptions};
    use futures_lite::future::block_on;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    ok(&cairn_with_stdin(&data, &["put", "first", "-"], Some(b"x")));
    let empty = json(&cairn(&data, &["--json", "ls", "nothing/"]));
    assert_eq!(empty, serde_json::json!([]));

    // More keys than the command lists per page (1,000), written through the library.
    let keys = 2_345;
    {
        let store = block_on(Embedded::open(
            &data,
            EmbeddedOptions::default(),
            InlineRuntime,
        ))
        .expect("open");
        for i in 0..keys {
            let key = format!("many/{i:05}");
            block_on(store.store().put(
                &key,
                bytes::Bytes::from(vec![7u8; i % 5]),
                &PutOptions::default(),
            ))
            .expect("put");
        }
    }
    let listed = json(&cairn(&data, &["--json", "ls", "many/"]));
    let listed = listed.as_array().expect("one array");
    assert_eq!(listed.len(), keys);
    for (i, doc) in listed.iter().enumerate() {
        assert_eq!(doc["key"], format!("many/{i:05}"));
        assert_eq!(doc["size"], (i % 5) as u64);
        assert_eq!(doc["tier"], "inline");
    }
    let text = ok(&cairn(&data, &["ls"]));
    assert_eq!(text.lines().count(), keys + 1);
}

/// `ls --json` that fails after it began its array (a damaged row on a later page) cannot take
/// back what it streamed, but its error document still stands on a line of its own, as every
/// `--json` error does, rather than glued to the end of the unfinished array.
#[test]
fn a_json_listing_failing_half_way_reports_its_error_on_a_line_of_its_own() {
    use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
    use cairn_adapters::{InlineRuntime, PutOptions};
    use futures_lite::future::block_on;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    ok(&cairn_with_stdin(&data, &["put", "first", "-"], Some(b"x")));
    {
        let store = block_on(Embedded::open(
            &data,
            EmbeddedOptions::default(),
            InlineRuntime,
        ))
        .expect("open");
        for i in 0..1_200 {
            let key = format!("many/{i:05}");
            block_on(store.store().put(&key, "v", &PutOptions::default())).expect("put");
        }
    }
    // Past the first page of 1,000: the listing has begun its array when it meets the row.
    let raw = rusqlite::Connection::open(data.join("cairn.sqlite")).unwrap();
    raw.execute(
        "UPDATE rows SET meta = X'01FFFF' WHERE key = CAST('many/01100' AS BLOB)",
        [],
    )
    .unwrap();
    drop(raw);
    let out = cairn(&data, &["--json", "ls", "many/"]);
    assert_eq!(code(&out), 3, "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("[{"), "{stdout}");
    let last = stdout.lines().last().unwrap();
    let doc: serde_json::Value = serde_json::from_str(last).expect("the error, one line");
    assert_eq!(doc["kind"], "storage", "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("damaged"), "{doc}");
}

/// A tmpfs of 8 MiB mounted for one test, unmounted when dropped; `None` where this user may
/// not mount one.
#[cfg(target_os = "linux")]
struct Tmpfs(tempfile::TempDir);

#[cfg(target_os = "linux")]
impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: this user may not mount a tmpfs");
        }
        mounted.then_some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills it to the last byte.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.path().join("filler")).unwrap();
        for block in [4096, 1] {
            let block = vec![0u8; block];
            while std::io::Write::write(&mut filler, &block).is_ok_and(|n| n > 0) {}
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// On a full disk every command works but a put that needs space: `ls`, `get`, `head`,
/// `fsck`, `recover`. A put that needs space fails as a storage failure (exit 3) naming the
/// cause — under `--json` as one well-formed document — and leaves nothing behind; so does a
/// `get -o` onto the full disk. `rm` of a large object frees its space, and the put then
/// succeeds.
#[cfg(target_os = "linux")]
#[test]
fn on_a_full_disk_every_command_works_and_rm_makes_room() {
    let Some(disk) = Tmpfs::mount() else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    let large = outside.path().join("large.bin");
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&large, &big).unwrap();
    let large = large.to_str().unwrap();
    let inline = outside.path().join("inline.bin");
    std::fs::write(&inline, vec![6u8; 900_000]).unwrap();
    let inline = inline.to_str().unwrap();
    let data = disk.path().join("data");
    ok(&cairn(&data, &["put", "big", large]));
    for i in 0..3u8 {
        let key = format!("small{i}");
        ok(&cairn_with_stdin(
            &data,
            &["put", &key, "-"],
            Some(&[i; 20_000]),
        ));
    }
    disk.fill();

    let ls = ok(&cairn(&data, &["ls"]));
    assert!(ls.contains(" big\n") && ls.contains(" small2\n"), "{ls}");
    assert_eq!(
        ok(&cairn(&data, &["get", "small1"])).as_bytes(),
        [1u8; 20_000]
    );
    assert!(ok(&cairn(&data, &["head", "big"])).contains("tier:         long-term"));
    assert_eq!(
        json(&cairn(&data, &["--json", "head", "big"]))["size"],
        3 << 20
    );

    let out = cairn(&data, &["put", "other", large]);
    assert_eq!(code(&out), 3, "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    for (key, file) in [("other", large), ("small1", inline)] {
        let out = cairn(&data, &["--json", "put", key, file]);
        assert_eq!(code(&out), 3, "{out:?}");
        let doc = json(&out);
        assert_eq!(doc["kind"], "storage", "{doc}");
        assert!(
            doc["error"].as_str().unwrap().contains("No space left"),
            "{doc}"
        );
        assert!(out.stderr.is_empty(), "{out:?}");
    }
    let temps = std::fs::read_dir(data.join("blobs").join("tmp")).unwrap();
    assert_eq!(temps.count(), 0, "no temporary blob left");
    assert_eq!(
        ok(&cairn(&data, &["get", "small1"])).as_bytes(),
        [1u8; 20_000]
    );
    let copy = disk.path().join("copy.bin");
    let out = cairn(
        &data,
        &["--json", "get", "big", "-o", copy.to_str().unwrap()],
    );
    assert_eq!(code(&out), 3, "{out:?}");
    assert_eq!(json(&out)["kind"], "storage");
    let mut left: Vec<_> = std::fs::read_dir(disk.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["data", "filler"], "no partial copy left");

    let fsck = cairn(&data, &["fsck"]);
    assert!(ok(&fsck).ends_with("ok\n"), "{fsck:?}");
    assert!(fsck.stderr.is_empty(), "{fsck:?}");
    assert!(ok(&cairn(&data, &["recover"])).contains("0 deferred"));

    assert_eq!(ok(&cairn(&data, &["rm", "big"])), "deleted big\n");
    ok(&cairn(&data, &["put", "other", large]));
    assert_eq!(cairn(&data, &["get", "other"]).stdout, big);
    ok(&cairn(&data, &["rm", "small0"]));
    let fsck = json(&cairn(&data, &["--json", "fsck"]));
    assert_eq!(fsck["clean"], true, "{fsck}");
    assert_eq!(
        (fsck["rows"].as_u64(), fsck["blobs"].as_u64()),
        (Some(3), Some(1))
    );
}

/// Puts until the disk is full, then every command still opens the store: `ls` lists what
/// the puts stored, `rm` deletes, and a put fits again. (The last put's pages, committed to
/// the WAL, once needed space the full disk no longer had to be copied into the database,
/// and every later command failed to open the store: `rm` included.)
#[cfg(target_os = "linux")]
#[test]
fn puts_that_fill_the_disk_leave_a_store_that_opens_and_deletes() {
    let Some(disk) = Tmpfs::mount() else {
        return;
    };
    let data = disk.path().join("data");
    let object = vec![4u8; 500_000];
    let mut stored = 0;
    loop {
        let key = format!("k{stored}");
        let out = cairn_with_stdin(&data, &["--json", "put", &key, "-"], Some(&object));
        if code(&out) != 0 {
            assert_eq!(code(&out), 3, "{out:?}");
            assert_eq!(json(&out)["kind"], "storage");
            break;
        }
        stored += 1;
        assert!(stored < 20, "the disk never filled");
    }
    let ls = ok(&cairn(&data, &["ls"]));
    assert_eq!(ls.lines().count(), stored, "{ls}");
    ok(&cairn(&data, &["rm", "k0"]));
    ok(&cairn(&data, &["rm", "k1"]));
    ok(&cairn_with_stdin(
        &data,
        &["put", "again", "-"],
        Some(&object),
    ));
    assert!(ok(&cairn(&data, &["fsck"])).ends_with("ok\n"));
}

/// A maintenance pass that finds no room on a full disk — here another process's read holds
/// the WAL, so writes have only the end of its file, too little to sweep the expired rows —
/// does not fail the command: it warns, and the command does its work; the next command with
/// room finishes the pass, without a word.
#[cfg(target_os = "linux")]
#[test]
fn on_a_full_disk_a_maintenance_pass_without_room_warns_and_the_command_goes_on() {
    use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
    use cairn_adapters::{InlineRuntime, ManualClock, PutOptions};
    use futures_lite::future::block_on;
    use std::sync::Arc;

    let Some(disk) = Tmpfs::mount() else {
        return;
    };
    let data = disk.path().join("data");
    // Written an hour ago: the rows that expire a minute later have expired for the command.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let clock = Arc::new(ManualClock::new(now.as_millis() as u64 - 3_600_000));
    let open = || {
        let options = EmbeddedOptions {
            clock: clock.clone(),
            ..EmbeddedOptions::default()
        };
        block_on(Embedded::open(&data, options, InlineRuntime)).expect("open")
    };
    let opts = PutOptions::default();
    // A WAL of some hundred pages, then rows in sessions that never grow it.
    block_on(open().store().put("pad", vec![1u8; 400_000], &opts)).unwrap();
    let mut expiring = opts.clone();
    expiring.ttl = Some(cairn_core::Duration::from_secs(60));
    for session in 0..30 {
        let store = open();
        for i in 0..10 {
            let key = format!("k{i}-{session}");
            let opts = if i % 2 == 0 { &expiring } else { &opts };
            block_on(store.store().put(key, vec![1u8; 3000], opts)).unwrap();
        }
    }
    let first = open();
    let reader = rusqlite::Connection::open(data.join("cairn.sqlite")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let rows: i64 = reader
        .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 301);
    disk.fill();

    let out = cairn(&data, &["--json", "ls"]);
    let listed = json(&out);
    assert_eq!(listed.as_array().unwrap().len(), 151, "{listed}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .starts_with("cairn: warning: the disk is too full for the maintenance pass to finish")
            && stderr.contains("disk is full"),
        "{stderr}"
    );
    drop(reader);
    let out = cairn(&data, &["ls"]);
    assert_eq!(ok(&out).lines().count(), 151);
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(first.db().rows(None, 1000).unwrap().len(), 151, "swept");
    assert!(ok(&cairn(&data, &["fsck"])).ends_with("ok\n"));
}
