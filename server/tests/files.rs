//! End-to-end tests of the file service: logins, the jail, quota,
//! verified and resumable transfers, chat.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff::client::{Client, ClientError};

use common::{USER_LIMIT, serve_args, skiffd, start_with};
use testkit::{
    Server, TempDir, code, connect, eventually, get, header_bytes, md5_hex, obj, put, run,
};

const PASSWORD: &str = "correct horse battery";

/// Adds a user to the data dir of a server not started yet.
fn add_user(data_dir: &std::path::Path, name: &str, extra: &[&str]) {
    common::add_user(data_dir, name, PASSWORD, extra);
}

/// A server with users alice (10 KiB quota... set per test) and bob.
fn server_with_users(alice_quota: &str) -> Server {
    let dir = TempDir::new("files");
    let data = dir.path("data");
    add_user(&data, "alice", &["--quota", alice_quota]);
    add_user(&data, "bob", &[]);
    start_with(&serve_args(&data), dir)
}

fn login(server: &Server, user: &str) -> Client {
    let (c, f) = testkit::login(&server.framed, user, PASSWORD);
    assert_eq!(f.header.str("user"), Some(user));
    assert_eq!(f.header.str("cwd"), Some("/"));
    c
}

#[test]
fn login_failures_look_alike_and_ops_need_login() {
    let server = server_with_users("1M");
    let mut c = server.client();
    assert_eq!(code(c.request(json!({"op":"ls"}), b"")), "auth_required");
    assert_eq!(code(c.request(json!({"op":"stats"}), b"")), "auth_required");
    let wrong = c
        .request(json!({"op":"login","user":"alice","password":"nope"}), b"")
        .unwrap_err();
    let unknown = c
        .request(
            json!({"op":"login","user":"mallory","password":"nope"}),
            b"",
        )
        .unwrap_err();
    match (&wrong, &unknown) {
        (
            ClientError::Server {
                code: a,
                message: ma,
            },
            ClientError::Server {
                code: b,
                message: mb,
            },
        ) => {
            assert_eq!((a.as_str(), b.as_str()), ("auth_failed", "auth_failed"));
            assert_eq!(ma, mb, "the two failures must read the same");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        code(c.request(json!({"op":"login","user":"alice"}), b"")),
        "bad_request"
    );
    let mut alice = login(&server, "alice");
    let q = alice.request(json!({"op":"quota"}), b"").unwrap();
    assert_eq!(q.header.u64("quota"), Some(1 << 20));
    assert!(alice.request(json!({"op":"stats"}), b"").is_ok());
}

#[test]
fn repeated_failures_lock_only_that_user_on_that_address_and_say_for_how_long() {
    let server = server_with_users("1M");
    let mut c = server.client();
    for _ in 0..3 {
        assert_eq!(
            code(c.request(json!({"op":"login","user":"alice","password":"x"}), b"")),
            "auth_failed"
        );
    }
    // The fourth attempt, even with the right password, is told to wait,
    // and for how long; the password is not even checked.
    let started = Instant::now();
    let err = c
        .request(
            json!({"op":"login","user":"alice","password":PASSWORD}),
            b"",
        )
        .unwrap_err();
    let ClientError::Server { code, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(code, "too_busy");
    assert!(message.contains("retry in"), "{message}");
    // Bob, on the same address, is not affected.
    login(&server, "bob");
    // Once the lock has run out, the right password works again.
    let mut waited = 0;
    loop {
        match c.request(
            json!({"op":"login","user":"alice","password":PASSWORD}),
            b"",
        ) {
            Ok(f) => {
                assert_eq!(f.header.str("user"), Some("alice"));
                break;
            }
            Err(ClientError::Server { code, .. }) if code == "too_busy" && waited < 50 => {
                waited += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{e:?} after {:?}", started.elapsed()),
        }
    }
}

#[test]
fn a_throttled_login_carries_the_reason_and_the_seconds() {
    let server = server_with_users("1M");
    let mut c = server.client();
    for _ in 0..3 {
        let _ = c.request(json!({"op":"login","user":"alice","password":"x"}), b"");
    }
    let id = c.next_id();
    c.send(
        obj(json!({"op":"login","id":id,"user":"alice","password":"x"})),
        b"",
    )
    .unwrap();
    let f = c.recv().unwrap();
    assert_eq!(f.header.op, "error");
    assert_eq!(f.header.str("code"), Some("too_busy"));
    assert_eq!(f.header.str("reason"), Some("throttled"));
    let secs = f.header.u64("retry_after").unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
}

#[test]
fn navigation_and_listing() {
    let server = server_with_users("1M");
    let mut c = login(&server, "alice");
    c.request(json!({"op":"mkdir","path":"docs"}), b"").unwrap();
    assert_eq!(
        code(c.request(json!({"op":"mkdir","path":"docs"}), b"")),
        "exists"
    );
    let f = c.request(json!({"op":"cd","path":"docs"}), b"").unwrap();
    assert_eq!(f.header.str("cwd"), Some("/docs"));
    put(&mut c, "b.txt", b"bee").unwrap();
    put(&mut c, "a.txt", b"ay").unwrap();
    c.request(json!({"op":"mkdir","path":"sub"}), b"").unwrap();
    let ls = c.request(json!({"op":"ls"}), b"").unwrap();
    let entries = ls.header.fields["entries"].as_array().unwrap().clone();
    let names: Vec<_> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "b.txt", "sub"]);
    assert_eq!(entries[1]["size"], 3);
    assert_eq!(entries[1]["kind"], "file");
    assert_eq!(entries[2]["kind"], "dir");
    assert!(entries[0]["mtime"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(
        c.request(json!({"op":"pwd"}), b"")
            .unwrap()
            .header
            .str("cwd"),
        Some("/docs")
    );
    assert_eq!(
        code(c.request(json!({"op":"cd","path":"a.txt"}), b"")),
        "not_a_directory"
    );
    assert_eq!(
        code(c.request(json!({"op":"cd","path":"nowhere"}), b"")),
        "not_found"
    );
    assert_eq!(
        code(c.request(json!({"op":"rm","path":"/docs"}), b"")),
        "not_empty"
    );
    assert_eq!(
        code(c.request(json!({"op":"get","path":"sub"}), b"")),
        "is_a_directory"
    );
    assert_eq!(
        code(c.request(json!({"op":"get","path":"missing"}), b"")),
        "not_found"
    );
    c.request(json!({"op":"rm","path":"a.txt"}), b"").unwrap();
    c.request(json!({"op":"rm","path":"sub"}), b"").unwrap();
    assert_eq!(
        code(c.request(json!({"op":"rm","path":"a.txt"}), b"")),
        "not_found"
    );
    let f = c
        .request(json!({"op":"cd","path":"../../.."}), b"")
        .unwrap();
    assert_eq!(f.header.str("cwd"), Some("/"));
}

/// Sends one frame on a raw socket and returns the raw header of the reply
/// (the replies here have no body).
fn raw_request(s: &mut std::net::TcpStream, header: Value) -> String {
    use std::io::{Read, Write};
    let h = serde_json::to_vec(&header).unwrap();
    s.write_all(&(h.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&h).unwrap();
    let mut len = [0; 4];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    String::from_utf8(reply).unwrap()
}

#[test]
fn a_small_listing_is_one_reply_exactly_as_before_paging() {
    let server = server_with_users("1M");
    let home = server.data_dir().join("homes/alice");
    std::fs::write(home.join("b.txt"), b"bee").unwrap();
    std::fs::create_dir(home.join("sub")).unwrap();
    let mtime = |name: &str| {
        let m = std::fs::metadata(home.join(name))
            .unwrap()
            .modified()
            .unwrap();
        m.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    };
    let mut s = std::net::TcpStream::connect(&server.framed).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let login = json!({"op":"login","id":1,"user":"alice","password":PASSWORD});
    assert!(raw_request(&mut s, login).starts_with(r#"{"op":"ok","id":1,"#));
    assert_eq!(
        raw_request(&mut s, json!({"op":"ls","id":2})),
        format!(
            r#"{{"op":"ok","id":2,"entries":[{{"name":"b.txt","kind":"file","size":3,"mtime":{}}},{{"name":"sub","kind":"dir","size":0,"mtime":{}}}]}}"#,
            mtime("b.txt"),
            mtime("sub")
        )
    );
}

#[test]
fn ls_pages_with_offset_limit_and_next() {
    let server = server_with_users("1M");
    let big = server.data_dir().join("homes/alice/big");
    // Short names, so that 1000 of them fit in one header.
    std::fs::create_dir(&big).unwrap();
    for i in 0..2500 {
        std::fs::write(big.join(format!("f{i:04}")), b"").unwrap();
    }
    let mut c = login(&server, "alice");
    let mut page = |fields: Value| {
        let mut header = json!({"op":"ls","path":"big"});
        header.as_object_mut().unwrap().extend(obj(fields));
        let f = c.request(header, b"").unwrap();
        let names: Vec<String> = f.header.fields["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        (names, f.header.u64("next"))
    };
    // No offset or limit: the first 1000, and where to go on.
    let (names, next) = page(json!({}));
    assert_eq!((names.len(), next), (1000, Some(1000)));
    assert_eq!(names[999], "f0999");
    let (names, next) = page(json!({"offset": 2000}));
    assert_eq!(
        (names.len(), next),
        (500, None),
        "the last page has no next"
    );
    assert_eq!(names[0], "f2000");
    let (names, next) = page(json!({"offset": 10, "limit": 3}));
    assert_eq!(names, ["f0010", "f0011", "f0012"]);
    assert_eq!(next, Some(13));
    // A limit above the page size is capped; past the end is empty.
    assert_eq!(page(json!({"limit": 5000})).0.len(), 1000);
    assert_eq!(page(json!({"offset": 99999})), (vec![], None));
    let mut c = login(&server, "alice");
    assert_eq!(
        code(c.request(json!({"op":"ls","limit":0}), b"")),
        "bad_request"
    );
    assert_eq!(
        code(c.request(json!({"op":"ls","offset":-1}), b"")),
        "bad_request"
    );
}

#[test]
fn the_jail_holds() {
    let server = server_with_users("1M");
    let data = server.data_dir();
    // a secret beside the homes, and symlinks planted inside alice's home
    std::fs::write(data.join("secret.txt"), "top secret").unwrap();
    let home = data.join("homes").join("alice");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink("/etc", home.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("../../secret.txt", home.join("secret-link")).unwrap();
    std::os::unix::fs::symlink("../bob", home.join("bob-link")).unwrap();
    let mut c = login(&server, "alice");
    for path in [
        "../../secret.txt",
        "/../secret.txt",
        "../bob",
        "/etc/passwd",
    ] {
        let got = c.request(json!({"op":"get","path":path}), b"");
        assert_eq!(code(got), "not_found", "{path}");
    }
    for path in ["etc-link/passwd", "secret-link", "bob-link"] {
        let got = c.request(json!({"op":"get","path":path}), b"");
        let code = code(got);
        assert!(code == "forbidden" || code == "not_found", "{path}: {code}");
    }
    assert_eq!(
        code(c.request(json!({"op":"cd","path":"etc-link"}), b"")),
        "forbidden"
    );
    assert_eq!(
        code(c.request(json!({"op":"ls","path":"bob-link"}), b"")),
        "forbidden"
    );
    assert_eq!(
        code(c.request(json!({"op":"get","path":"a\u{0}b"}), b"")),
        "bad_request"
    );
    assert_eq!(code(put(&mut c, "etc-link/evil", b"x")), "forbidden");
    // ".." stops at the home's root: this lands in alice's home, not beside it
    put(&mut c, "../../escape.txt", b"x").unwrap();
    assert!(home.join("escape.txt").exists());
    assert!(!data.join("escape.txt").exists() && !data.join("homes").join("escape.txt").exists());
    // and the secret was never touched
    assert_eq!(
        std::fs::read_to_string(data.join("secret.txt")).unwrap(),
        "top secret"
    );
}

#[test]
fn round_trip_of_a_large_file_with_offset() {
    let server = server_with_users("64M");
    let mut c = login(&server, "alice");
    let bytes: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let f = put(&mut c, "big.bin", &bytes).unwrap();
    assert_eq!(f.header.u64("length"), Some(bytes.len() as u64));
    assert_eq!(f.header.str("md5"), Some(md5_hex(&bytes).as_str()));
    let (got, md5) = get(&mut c, "big.bin").unwrap();
    assert!(got == bytes);
    assert_eq!(md5, md5_hex(&bytes));
    let f = c
        .request(json!({"op":"get","path":"big.bin","offset":4_000_000}), b"")
        .unwrap();
    assert_eq!(f.header.u64("offset"), Some(4_000_000));
    assert_eq!(f.header.u64("length"), Some(bytes.len() as u64));
    assert!(f.body == bytes[4_000_000..]);
    let bad = c.request(
        json!({"op":"get","path":"big.bin","offset":6u64 << 20}),
        b"",
    );
    assert_eq!(code(bad), "bad_request");
    // a file placed by hand (no cached MD5) is hashed on a worker, then served
    let home = server.data_dir().join("homes").join("alice");
    std::fs::write(home.join("byhand.bin"), &bytes[..3_000_000]).unwrap();
    let (got, md5) = get(&mut c, "byhand.bin").unwrap();
    assert_eq!(md5, md5_hex(&bytes[..3_000_000]));
    assert!(got == bytes[..3_000_000]);
    let empty = put(&mut c, "empty", b"").unwrap();
    assert_eq!(empty.header.u64("length"), Some(0));
    assert_eq!(get(&mut c, "empty").unwrap().0, b"");
    // `used` is kept by put and rm (a file placed behind the server's back
    // is counted from the next start, when the home is measured again)
    let used = c
        .request(json!({"op":"quota"}), b"")
        .unwrap()
        .header
        .u64("used")
        .unwrap();
    assert_eq!(used, bytes.len() as u64);
}

#[test]
fn quota_is_checked_at_put_and_reserved() {
    let server = server_with_users("10K");
    let mut c = login(&server, "alice");
    put(&mut c, "a", &[1; 6000]).unwrap();
    let id = c.next_id();
    let too_big = c.request(
        json!({"op":"put","id":id,"path":"b","length":5000,"md5":md5_hex(&[2; 5000])}),
        b"",
    );
    assert_eq!(code(too_big), "quota_exceeded");
    // replacing a file only needs the difference
    put(&mut c, "a", &[3; 9000]).unwrap();
    // two concurrent uploads may not together pass the quota
    let mut c2 = login(&server, "alice");
    put(&mut c, "a", &[3; 10]).unwrap();
    let m = md5_hex(&[4; 6000]);
    c.request(json!({"op":"put","path":"x","length":6000,"md5":m}), b"")
        .unwrap();
    let second = c2.request(json!({"op":"put","path":"y","length":6000,"md5":m}), b"");
    assert_eq!(code(second), "quota_exceeded");
    let used = c2
        .request(json!({"op":"quota"}), b"")
        .unwrap()
        .header
        .u64("used")
        .unwrap();
    assert_eq!(used, 10);
    assert!(!server.data_dir().join("homes/alice/b").exists());
}

#[test]
fn a_mismatched_upload_replaces_nothing() {
    let server = server_with_users("1M");
    let mut c = login(&server, "alice");
    put(&mut c, "f.txt", b"original").unwrap();
    let id = c.next_id();
    c.send(
        obj(json!({"op":"put","id":id,"path":"f.txt","length":8,"md5":md5_hex(b"expected")})),
        b"",
    )
    .unwrap();
    c.recv().unwrap().into_result().unwrap();
    c.send(obj(json!({"op":"data","id":id})), b"tampered")
        .unwrap();
    assert_eq!(code(c.recv().unwrap().into_result()), "checksum_mismatch");
    assert_eq!(get(&mut c, "f.txt").unwrap().0, b"original");
    // bad requests around put
    assert_eq!(
        code(c.request(json!({"op":"data"}), b"stray")),
        "bad_request"
    );
    assert_eq!(
        code(c.request(json!({"op":"put","path":"g","length":1,"md5":"zz"}), b"")),
        "bad_request"
    );
    assert_eq!(
        code(c.request(
            json!({"op":"put","path":"/","length":1,"md5":md5_hex(b"x")}),
            b""
        )),
        "is_a_directory"
    );
    assert_eq!(
        code(c.request(
            json!({"op":"put","path":"nodir/g","length":1,"md5":md5_hex(b"x")}),
            b""
        )),
        "not_found"
    );
    assert_eq!(get(&mut c, "f.txt").unwrap().0, b"original");
}

/// Starts an upload of `bytes` to `path` and sends only `part` of them.
fn start_upload(c: &mut Client, path: &str, bytes: &[u8], part: usize) -> u64 {
    let id = c.next_id();
    c.send(
        obj(json!({"op":"put","id":id,"path":path,"length":bytes.len(),"md5":md5_hex(bytes)})),
        b"",
    )
    .unwrap();
    let offset = c
        .recv()
        .unwrap()
        .into_result()
        .unwrap()
        .header
        .u64("offset")
        .unwrap();
    c.send_header(
        obj(json!({"op":"data","id":id})),
        bytes.len() as u64 - offset,
    )
    .unwrap();
    c.send_body(&bytes[offset as usize..part]).unwrap();
    c.flush().unwrap();
    offset
}

fn partial_len(server: &Server) -> u64 {
    let dir = server.data_dir().join("partial").join("alice");
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_client_killed_mid_upload_leaves_the_old_file_and_can_resume() {
    let server = server_with_users("64M");
    let mut c = login(&server, "alice");
    put(&mut c, "doc", b"old version").unwrap();
    let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut dying = login(&server, "alice");
    assert_eq!(start_upload(&mut dying, "doc", &bytes, 1_200_000), 0);
    eventually("the partial upload reached the server", || {
        partial_len(&server) == 1_200_000
    });
    drop(dying);
    assert_eq!(get(&mut c, "doc").unwrap().0, b"old version");
    let id = c.next_id();
    c.send(
        obj(json!({"op":"put","id":id,"path":"doc","length":bytes.len(),"md5":md5_hex(&bytes)})),
        b"",
    )
    .unwrap();
    let offset = c
        .recv()
        .unwrap()
        .into_result()
        .unwrap()
        .header
        .u64("offset")
        .unwrap();
    assert_eq!(offset, 1_200_000);
    c.send(obj(json!({"op":"data","id":id})), &bytes[offset as usize..])
        .unwrap();
    let f = c.recv().unwrap().into_result().unwrap();
    assert_eq!(f.header.str("md5"), Some(md5_hex(&bytes).as_str()));
    assert!(get(&mut c, "doc").unwrap().0 == bytes);
    assert_eq!(partial_len(&server), 0);
}

fn parked(c: &mut Client) -> u64 {
    let f = c.request(json!({"op":"quota"}), b"").unwrap();
    f.header.u64("parked").unwrap()
}

/// Abandoned uploads keep their partial file for a resume. Those bytes
/// count against the quota (else a user could fill the disk with them),
/// and a put that needs the room discards them, oldest first.
#[test]
fn abandoned_uploads_stay_within_the_quota() {
    let server = server_with_users("100K");
    let mut c = login(&server, "alice");
    let mut last = Vec::new();
    for i in 0..5u32 {
        let bytes: Vec<u8> = (0..80_000u32).map(|j| ((i * 7 + j) % 251) as u8).collect();
        let mut dying = login(&server, "alice");
        start_upload(&mut dying, &format!("f{i}"), &bytes, 60_000);
        eventually("the partial reached the server", || {
            partial_len(&server) >= 60_000
        });
        drop(dying);
        eventually("the abandoned upload is parked", || {
            parked(&mut c) == 60_000
        });
        // Without the count this would grow by 60,000 each round.
        assert!(partial_len(&server) <= 100_000, "{}", partial_len(&server));
        last = bytes;
    }
    // A put that fits beside the parked part keeps it ...
    put(&mut c, "small", &[1; 10_000]).unwrap();
    assert_eq!(parked(&mut c), 60_000);
    // ... and the last abandoned upload resumes where it stopped.
    let mut again = login(&server, "alice");
    assert_eq!(start_upload(&mut again, "f4", &last, 60_000), 60_000);
    drop(again);
    eventually("parked again", || parked(&mut c) == 60_000);
    // A put that needs the room discards it.
    put(&mut c, "big", &[2; 70_000]).unwrap();
    assert_eq!(parked(&mut c), 0);
    assert_eq!(partial_len(&server), 0);
    let used = c.request(json!({"op":"quota"}), b"").unwrap();
    assert_eq!(used.header.u64("used"), Some(80_000));
}

#[test]
fn a_server_killed_mid_upload_keeps_the_old_file_and_resumes_after_restart() {
    let server = server_with_users("64M");
    let bytes: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    let args = serve_args(server.data_dir());
    let dir = {
        let mut c = login(&server, "alice");
        put(&mut c, "doc", b"old version").unwrap();
        start_upload(&mut c, "doc", &bytes, 700_000);
        eventually("the partial upload reached the server", || {
            partial_len(&server) == 700_000
        });
        server.kill() // SIGKILL mid-upload: no chance to clean up
    };
    let server = start_with(&args, dir);
    let mut c = login(&server, "alice");
    assert_eq!(get(&mut c, "doc").unwrap().0, b"old version");
    assert_eq!(start_upload(&mut c, "doc", &bytes, bytes.len()), 700_000);
    let f = c.recv().unwrap().into_result().unwrap();
    assert_eq!(f.header.u64("length"), Some(bytes.len() as u64));
    assert!(get(&mut c, "doc").unwrap().0 == bytes);
}

#[test]
fn say_pushes_messages_between_replies() {
    let server = server_with_users("1M");
    let mut alice = login(&server, "alice");
    let mut bob = login(&server, "bob");
    alice
        .request(json!({"op":"say","to":"bob"}), b"hi bob")
        .unwrap();
    assert_eq!(
        code(alice.request(json!({"op":"say","to":"nobody"}), b"x")),
        "not_found"
    );
    assert_eq!(
        code(alice.request(json!({"op":"say"}), b"x")),
        "bad_request"
    );
    let mut pushed = Vec::new();
    let echo = bob
        .request_with(obj(json!({"op":"echo"})), b"mine", |m| pushed.push(m))
        .unwrap();
    assert_eq!(echo.body, b"mine");
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].header.str("from"), Some("alice"));
    assert_eq!(pushed[0].body, b"hi bob");
    // "*" reaches everyone else, not the sender
    bob.request(json!({"op":"say","to":"*"}), b"all").unwrap();
    let mut got = Vec::new();
    alice
        .request_with(obj(json!({"op":"pwd"})), b"", |m| got.push(m))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"all");
    let mut none = Vec::new();
    bob.request_with(obj(json!({"op":"pwd"})), b"", |m| none.push(m))
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn say_to_a_user_with_no_session_is_not_found() {
    let server = server_with_users("1M");
    let mut alice = login(&server, "alice");
    let say_bob = |alice: &mut Client| alice.request(json!({"op":"say","to":"bob"}), b"hi");
    let refused = say_bob(&mut alice).unwrap_err();
    let ClientError::Server { code: c, message } = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(c, "not_found");
    assert!(message.contains("nobody is logged in as bob"), "{message}");

    // Nor does the sender's own session, which never gets its message.
    assert_eq!(
        code(alice.request(json!({"op":"say","to":"alice"}), b"me")),
        "not_found"
    );

    let mut bob = login(&server, "bob");
    say_bob(&mut alice).unwrap();
    assert_eq!(bob.recv().unwrap().body, b"hi");
    // A second login on the same connection leaves bob's count.
    bob.request(
        json!({"op":"login","user":"alice","password":PASSWORD}),
        b"",
    )
    .unwrap();
    assert_eq!(code(say_bob(&mut alice)), "not_found");

    // A closed connection leaves it too, once the server has seen it go.
    let bob = login(&server, "bob");
    say_bob(&mut alice).unwrap();
    drop(bob);
    eventually("bob's closed session to be forgotten", || {
        match say_bob(&mut alice) {
            Ok(_) => false,
            Err(e) => e.code() == Some("not_found"),
        }
    });
}

#[test]
fn a_recipient_that_never_reads_is_cut_off() {
    let server = server_with_users("1M");
    let mut alice = login(&server, "alice");
    let bob = login(&server, "bob"); // never reads again
    let msg = vec![b'm'; 60_000];
    let mut cut = false;
    for _ in 0..200 {
        alice.request(json!({"op":"say","to":"bob"}), &msg).unwrap();
        let stats = alice.request(json!({"op":"stats"}), b"").unwrap();
        if stats.header.u64("connections") == Some(1) {
            cut = true;
            break;
        }
    }
    assert!(cut, "bob was never disconnected");
    drop(bob);
    assert_eq!(
        alice.request(json!({"op":"echo"}), b"fine").unwrap().body,
        b"fine"
    );
}

#[test]
fn users_added_while_running_can_log_in() {
    let server = server_with_users("1M");
    add_user(server.data_dir(), "carol", &["--quota", "1M"]);
    let mut c = connect(&server.framed);
    let f = c
        .request(
            json!({"op":"login","user":"carol","password":PASSWORD}),
            b"",
        )
        .unwrap();
    assert_eq!(f.header.u64("quota"), Some(1 << 20));
}

#[test]
fn user_mod_changes_quota_and_exec_for_the_next_login() {
    let server = server_with_users("1M");
    let skiffd_user = |args: &[&str]| {
        let mut command = Command::new(skiffd());
        command.args(["user", "--data-dir"]).arg(server.data_dir());
        run(command.args(args), b"", USER_LIMIT)
    };
    let login_quota = |user: &str| {
        let mut c = login(&server, user);
        let quota = c.request(json!({"op":"quota"}), b"").unwrap();
        let exec = code(c.request(json!({"op":"exec","id":1,"cmd":"true"}), b""));
        (quota.header.u64("quota"), exec)
    };
    assert_eq!(login_quota("alice"), (Some(1 << 20), "forbidden".into()));

    let out = skiffd_user(&["mod", "alice", "--quota", "2M", "--exec"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "changed alice: quota 2 MiB, exec yes\n"
    );
    let mut c = login(&server, "alice");
    assert_eq!(
        c.request(json!({"op":"quota"}), b"")
            .unwrap()
            .header
            .u64("quota"),
        Some(2 << 20)
    );
    c.send(obj(json!({"op":"exec","id":2,"cmd":"echo ran"})), b"")
        .unwrap();
    let f = c.recv().unwrap();
    assert_eq!((f.header.op.as_str(), &f.body[..]), ("out", &b"ran\n"[..]));

    let out = skiffd_user(&["mod", "alice", "--quota", "none", "--no-exec"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(login_quota("alice"), (None, "forbidden".into()));

    // Nothing to change, both rights at once, or nobody: refused.
    assert_eq!(skiffd_user(&["mod", "alice"]).status.code(), Some(2));
    let both = skiffd_user(&["mod", "alice", "--exec", "--no-exec"]);
    assert_eq!(both.status.code(), Some(2));
    let nobody = skiffd_user(&["mod", "nobody", "--exec"]);
    assert_eq!(nobody.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no user nobody"));
}

#[test]
fn first_start_creates_demo_once() {
    let dir = TempDir::new("demo");
    let args = serve_args(&dir.path("data"));
    let server = start_with(&args, dir);
    let password = server.demo_password.clone().expect("demo password printed");
    let users = std::fs::read_to_string(server.data_dir().join("users.json")).unwrap();
    assert!(users.contains("\"demo\""));
    assert!(
        !users.contains(&password),
        "the password itself is never stored"
    );
    server.demo_client();
    // a restart on the same data dir creates nothing and prints no password
    let dir = server.kill();
    let again = start_with(&args, dir);
    assert!(again.demo_password.is_none());
    assert!(again.next_line(Duration::from_millis(300)).is_none());
}

#[test]
fn a_start_that_cannot_bind_creates_no_demo() {
    let dir = TempDir::new("demo-busy");
    let data = dir.path("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let mut command = Command::new(skiffd());
    command
        .args(["serve", "--data-dir", &dir.str("data")])
        .args(["--listen", &busy_addr])
        .env("RUST_LOG", "off");
    let out = run(&mut command, b"", USER_LIMIT);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&busy_addr), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("created user demo"),
        "a password was printed for a server that never ran"
    );
    assert!(!data.join("users.json").exists(), "demo saved anyway");
    assert!(!data.join("homes").join("demo").exists());

    // The next start, with a free port, creates demo and shows its password.
    drop(busy);
    let server = start_with(&serve_args(&data), dir);
    assert!(server.demo_password.is_some(), "the second start hid demo");
    server.demo_client();
}

#[test]
fn requests_pipelined_behind_a_get_are_answered_after_its_body() {
    let server = server_with_users("64M");
    let mut c = login(&server, "alice");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    put(&mut c, "f", &bytes).unwrap();
    // get twice (the second is served from the MD5 cache) and an echo,
    // all in one write: replies must come whole and in order
    let mut batch = Vec::new();
    for (id, op) in [(900, "get"), (901, "get")] {
        batch.extend(header_bytes(json!({"op":op,"id":id,"path":"f"})));
    }
    batch.extend(header_bytes(json!({"op":"echo","id":902,"size":4})));
    batch.extend_from_slice(b"tail");
    c.send_raw(&batch).unwrap();
    for id in [900u64, 901] {
        let f = c.recv().unwrap();
        assert_eq!(f.header.id.as_ref().and_then(|n| n.as_u64()), Some(id));
        assert!(f.body == bytes, "get {id} body differs");
    }
    let f = c.recv().unwrap();
    assert_eq!(
        (
            f.header.id.as_ref().and_then(|n| n.as_u64()),
            f.body.as_slice()
        ),
        (Some(902), &b"tail"[..])
    );
}

#[test]
fn mkdir_under_a_missing_directory_names_the_missing_parent() {
    let server = server_with_users("1M");
    let mut c = login(&server, "alice");
    match c.request(json!({"op":"mkdir","path":"a/b"}), b"") {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, "not_found");
            assert!(message.starts_with("/a: no such directory"), "{message}");
        }
        other => panic!("expected not_found, got {other:?}"),
    }
}
