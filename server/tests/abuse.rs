//! Hostile clients against a real skiffd: each test is an attack that once
//! stalled, crashed or corrupted the server, with the answer it must get
//! now and a check that nothing stored was lost.
//!
//! "Does not stall" is asserted by order, not by a clock: a hostile client
//! starts a long run of expensive requests, a bystander then sends one
//! echo, and the bystander's answer must arrive before the hostile run is
//! over. On a server that did the work on its loop, it arrives after.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff::client::{Client, ClientError};

use common::{add_user, start, start_prepared};
use testkit::{Server, code, eventually, header_bytes, md5_hex, obj, put};

const PASSWORD: &str = "correct horse battery";

/// Sends a request with the given id and waits for its reply.
fn call(
    c: &mut Client,
    id: u64,
    header: Value,
    body: &[u8],
) -> Result<skiff::client::Frame, ClientError> {
    let mut h = obj(header);
    h.insert("id".into(), id.into());
    c.send(h, body)?;
    c.recv()?.into_result()
}

fn login(server: &Server, user: &str) -> Client {
    testkit::login(&server.framed, user, PASSWORD).0
}

/// Bytes in the user's partial uploads, as the disk says.
fn partial_bytes(server: &Server, user: &str) -> u64 {
    let dir = server.data_dir().join("partial").join(user);
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

/// Sends `count` copies of `header` in one write, then (after the server
/// had time to start on them) has a bystander ask for an echo. Returns
/// whether the bystander was answered before the last of the run was.
fn bystander_answered_first(
    server: &Server,
    hostile: &mut Client,
    header: Value,
    count: usize,
) -> bool {
    let mut batch = Vec::new();
    for i in 0..count {
        let mut h = obj(header.clone());
        h.insert("id".into(), json!(1000 + i));
        h.insert("size".into(), json!(0));
        batch.extend(header_bytes(Value::Object(h)));
    }
    hostile.send_raw(&batch).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut bystander = server.client();
    bystander
        .stream()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let echoed = std::thread::spawn(move || {
        let f = bystander.request(json!({"op":"echo"}), b"ping").unwrap();
        assert_eq!(f.body, b"ping");
        Instant::now()
    });
    hostile
        .stream()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    for _ in 0..count {
        hostile.recv().unwrap();
    }
    let run_over = Instant::now();
    echoed.join().unwrap() < run_over
}

#[test]
fn get_of_a_fifo_is_refused_and_stalls_no_one() {
    let server = start_prepared(|data| {
        add_user(data, "alice", PASSWORD, &[]);
        let fifo = data.join("homes/alice/pipe");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
    });
    let mut c = login(&server, "alice");
    // Once, opening the FIFO blocked the loop until a writer came: this
    // reply never came, and neither did anyone else's.
    assert_eq!(
        code(c.request(json!({"op":"get","path":"pipe"}), b"")),
        "forbidden"
    );
    let mut other = server.client();
    assert_eq!(
        other.request(json!({"op":"echo"}), b"hi").unwrap().body,
        b"hi"
    );
    // Nor can it be the target of an upload.
    assert_eq!(code(put(&mut c, "pipe", b"x")), "forbidden");
}

#[test]
fn two_sessions_putting_the_same_file_never_share_a_partial() {
    let server = start_prepared(|data| add_user(data, "alice", PASSWORD, &["--quota", "64M"]));
    let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let sum = md5_hex(&body);
    let mut a = login(&server, "alice");
    let mut b = login(&server, "alice");
    let put_header = json!({"op":"put","path":"f.bin","length":body.len(),"md5":sum});
    let ida = a.next_id();
    let f = call(&mut a, ida, put_header.clone(), b"").unwrap();
    assert_eq!(f.header.u64("offset"), Some(0));
    // The second session is told to wait instead of writing into the same
    // partial file (which once corrupted the first one's stored file).
    let idb = b.next_id();
    let err = call(&mut b, idb, put_header, b"").unwrap_err();
    let ClientError::Server { code, message } = err else {
        panic!()
    };
    assert_eq!(code, "too_busy", "{message}");
    let f = call(&mut a, ida, json!({"op":"data"}), &body).unwrap();
    assert_eq!(f.header.str("md5"), Some(sum.as_str()));
    // Now the second may go, and its upload lands whole too.
    let f = put(&mut b, "f.bin", &body).unwrap();
    assert_eq!(f.header.str("md5"), Some(sum.as_str()));
    let got = a.request(json!({"op":"get","path":"f.bin"}), b"").unwrap();
    assert_eq!(got.header.str("md5"), Some(sum.as_str()));
    assert_eq!(got.body, body);
    // No phantom usage: exactly one copy is counted, nothing is parked.
    let q = a.request(json!({"op":"quota"}), b"").unwrap();
    assert_eq!(q.header.u64("used"), Some(body.len() as u64));
    assert_eq!(q.header.u64("parked"), Some(0));
}

/// Starts an upload of `bytes`, sends `part` of it, and drops the client.
/// Returns how many bytes the server kept: what it had written when the
/// connection went (it writes the body in batches), once it has parked
/// them for a resume.
fn interrupted_upload(server: &Server, user: &str, path: &str, bytes: &[u8], part: usize) -> u64 {
    let mut c = login(server, user);
    let id = c.next_id();
    let header = json!({"op":"put","path":path,"length":bytes.len(),"md5":md5_hex(bytes)});
    let f = call(&mut c, id, header, b"").unwrap();
    assert_eq!(f.header.u64("offset"), Some(0));
    c.send_header(obj(json!({"op":"data","id":id})), bytes.len() as u64)
        .unwrap();
    c.send_body(&bytes[..part]).unwrap();
    c.flush().unwrap();
    drop(c);
    let mut watcher = login(server, user);
    let mut kept = 0;
    eventually("the partial upload is parked", || {
        let q = watcher.request(json!({"op":"quota"}), b"").unwrap();
        kept = partial_bytes(server, user);
        kept > 0 && q.header.u64("parked") == Some(kept)
    });
    assert!(kept <= part as u64);
    kept
}

#[test]
fn a_user_without_a_quota_can_resume_an_interrupted_upload() {
    let server = start_prepared(|data| add_user(data, "bob", PASSWORD, &[]));
    let body = vec![7u8; 1 << 20];
    let kept = interrupted_upload(&server, "bob", "r.bin", &body, 600_000);
    let mut c = login(&server, "bob");
    // Once, with no quota the room was u64::MAX and adding to it wrapped:
    // quota_exceeded, forever, for that file.
    let id = c.next_id();
    let header = json!({"op":"put","path":"r.bin","length":body.len(),"md5":md5_hex(&body)});
    let f = call(&mut c, id, header, b"").unwrap();
    assert_eq!(f.header.u64("offset"), Some(kept));
    let f = call(&mut c, id, json!({"op":"data"}), &body[kept as usize..]).unwrap();
    assert_eq!(f.header.u64("length"), Some(1 << 20));
}

#[test]
fn a_client_can_discard_its_unfinished_upload() {
    let server = start_prepared(|data| add_user(data, "alice", PASSWORD, &["--quota", "4M"]));
    let body = vec![9u8; 2 << 20];
    let kept = interrupted_upload(&server, "alice", "big.bin", &body, 1 << 20);
    let mut c = login(&server, "alice");
    let f = c
        .request(
            json!({"op":"put","path":"big.bin","length":body.len(),"md5":md5_hex(&body),"discard":true}),
            b"",
        )
        .unwrap();
    assert_eq!(f.header.u64("discarded"), Some(kept));
    assert_eq!(partial_bytes(&server, "alice"), 0);
    let q = c.request(json!({"op":"quota"}), b"").unwrap();
    assert_eq!(q.header.u64("parked"), Some(0));
    // Discarding nothing is not an error.
    let f = c
        .request(
            json!({"op":"put","path":"big.bin","length":body.len(),"md5":md5_hex(&body),"discard":true}),
            b"",
        )
        .unwrap();
    assert_eq!(f.header.u64("discarded"), Some(0));
    // And the file was never there.
    assert_eq!(
        code(c.request(json!({"op":"get","path":"big.bin"}), b"")),
        "not_found"
    );
}

#[test]
fn pipelined_logins_do_not_stall_other_clients() {
    let server = start_prepared(|data| add_user(data, "alice", PASSWORD, &[]));
    let mut hostile = login(&server, "alice");
    let login = json!({"op":"login","user":"alice","password":PASSWORD});
    assert!(bystander_answered_first(&server, &mut hostile, login, 40));
}

#[test]
fn pipelined_listings_of_a_big_directory_do_not_stall_other_clients() {
    let server = start_prepared(|data| {
        add_user(data, "alice", PASSWORD, &[]);
        let big = data.join("homes/alice/big");
        std::fs::create_dir(&big).unwrap();
        for i in 0..10_000 {
            std::fs::write(big.join(format!("IMG_{i:05}.jpg")), b"").unwrap();
        }
    });
    let mut hostile = login(&server, "alice");
    let ls = json!({"op":"ls","path":"big"});
    assert!(bystander_answered_first(&server, &mut hostile, ls, 30));
}

#[test]
fn the_first_login_counts_files_at_any_depth() {
    let server = start_prepared(|data| {
        add_user(data, "alice", PASSWORD, &["--quota", "1M"]);
        let mut deep = data.join("homes/alice");
        for _ in 0..100 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("bottom.bin"), vec![1u8; 600_000]).unwrap();
    });
    let mut c = server.client();
    let f = c
        .request(
            json!({"op":"login","user":"alice","password":PASSWORD}),
            b"",
        )
        .unwrap();
    // Once, files below 64 levels were not counted: a restart let a user
    // store past the quota.
    assert_eq!(f.header.u64("used"), Some(600_000));
    assert_eq!(
        code(put(&mut c, "more.bin", &vec![2u8; 600_000])),
        "quota_exceeded"
    );
}

#[test]
fn concurrent_gets_of_a_new_file_all_get_it_whole() {
    let body: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    let sum = md5_hex(&body);
    let planted = body.clone();
    let server = start_prepared(move |data| {
        add_user(data, "alice", PASSWORD, &[]);
        std::fs::write(data.join("homes/alice/new.bin"), &planted).unwrap();
    });
    let mut clients: Vec<Client> = (0..20).map(|_| login(&server, "alice")).collect();
    for c in &mut clients {
        c.send(obj(json!({"op":"get","id":1,"path":"new.bin"})), b"")
            .unwrap();
    }
    for c in &mut clients {
        let f = c.recv().unwrap();
        assert_eq!(f.header.str("md5"), Some(sum.as_str()));
        assert_eq!(f.body.len(), body.len());
        assert!(f.body == body);
    }
}

#[test]
fn removing_a_file_gives_its_quota_back() {
    let server = start_prepared(|data| add_user(data, "alice", PASSWORD, &["--quota", "3M"]));
    let mut c = login(&server, "alice");
    put(&mut c, "a.bin", &vec![1u8; 2 << 20]).unwrap();
    assert_eq!(
        code(put(&mut c, "b.bin", &vec![1u8; 2 << 20])),
        "quota_exceeded"
    );
    c.request(json!({"op":"rm","path":"a.bin"}), b"").unwrap();
    put(&mut c, "b.bin", &vec![1u8; 2 << 20]).unwrap();
    assert!(!Path::new(&server.data_dir().join("homes/alice/a.bin")).exists());
}

#[test]
fn requests_pipelined_by_a_client_that_reset_are_not_worked_on() {
    let server = start(&[]);
    let mut probe = server.demo_client();
    let stats = |c: &mut Client| {
        let f = c.request(json!({"op":"stats"}), b"").unwrap();
        let count = |k: &str| f.header.u64(k).unwrap();
        (count("requests"), count("connections"))
    };
    let (before, _) = stats(&mut probe);
    let password = server.demo_password.clone().unwrap();
    let mut batch = Vec::new();
    for (i, op) in [
        json!({"op":"login","user":"demo","password":password}),
        json!({"op":"ls"}),
        json!({"op":"quota"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut h = obj(op);
        h.insert("id".into(), json!(i));
        batch.extend(header_bytes(Value::Object(h)));
    }
    for _ in 0..20 {
        let s = std::net::TcpStream::connect(&server.framed).unwrap();
        std::io::Write::write_all(&mut &s, &batch).unwrap();
        // Close with a reset (linger 0): nobody is left to answer.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    }
    let mut polls = 0;
    eventually("the reset connections are gone", || {
        polls += 1;
        stats(&mut probe).1 == 1
    });
    // At most the login each had in flight was worked on; the rest of
    // each pipeline was dropped with the connection.
    let (after, _) = stats(&mut probe);
    let worked = after - before - polls - 1;
    assert!(
        worked <= 20,
        "{worked} requests worked on for 20 reset clients"
    );
}

#[test]
fn uploads_and_removals_of_one_path_take_turns_so_quota_stays_exact() {
    // Two stores (or a store and an rm) of one path at once both counted
    // the file they replaced: `used` drifted from what the disk held.
    let server = start_prepared(|data| add_user(data, "alice", PASSWORD, &["--quota", "64M"]));
    let mut a = login(&server, "alice");
    let mut b = login(&server, "alice");
    put(&mut a, "p.bin", &vec![1u8; 300_000]).unwrap();
    let first = vec![2u8; 100_000];
    let id = a.next_id();
    let header = json!({"op":"put","path":"p.bin","length":first.len(),"md5":md5_hex(&first)});
    assert_eq!(
        call(&mut a, id, header, b"").unwrap().header.u64("offset"),
        Some(0)
    );
    // While A's upload of p.bin is under way, B may neither upload other
    // content to it nor remove it.
    assert_eq!(code(put(&mut b, "p.bin", &vec![3u8; 50_000])), "too_busy");
    assert_eq!(
        code(b.request(json!({"op":"rm","path":"p.bin"}), b"")),
        "too_busy"
    );
    call(&mut a, id, json!({"op":"data"}), &first).unwrap();
    // Then it may, and the numbers match the disk.
    put(&mut b, "p.bin", &vec![3u8; 50_000]).unwrap();
    let q = b.request(json!({"op":"quota"}), b"").unwrap();
    let on_disk = std::fs::metadata(server.data_dir().join("homes/alice/p.bin"))
        .unwrap()
        .len();
    assert_eq!(on_disk, 50_000);
    assert_eq!(q.header.u64("used"), Some(on_disk));
    b.request(json!({"op":"rm","path":"p.bin"}), b"").unwrap();
    let q = b.request(json!({"op":"quota"}), b"").unwrap();
    assert_eq!(q.header.u64("used"), Some(0));
}
