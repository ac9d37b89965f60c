//! `Client::connect` against servers that do not behave: every wait it makes is bounded
//! by its timeout, and bad answers are errors, not hangs.

use std::io::Write;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use client::{Client, ClientError, Trust};

/// Runs `connect` on a thread and gives up on it after 30 s (a hang fails the test
/// instead of stalling the suite).
fn connect_bounded(addr: String, timeout: Duration) -> Result<(), ClientError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = Client::connect(
            &addr,
            &Trust::Fingerprint("00".repeat(32)),
            "localhost",
            timeout,
        );
        let _ = tx.send(r.map(|_| ()));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("connect returned within its timeout (30 s allowed)")
}

#[test]
fn a_server_that_accepts_and_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accepted and held open, never a byte back.
    let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let r = connect_bounded(addr, Duration::from_millis(300));
    assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
    drop(held.join());
}

#[test]
fn a_server_that_answers_garbage_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        std::thread::sleep(Duration::from_secs(2));
    });
    let r = connect_bounded(addr, Duration::from_secs(5));
    assert!(
        matches!(r, Err(ClientError::Io(_) | ClientError::Tls(_))),
        "{r:?}"
    );
    server.join().unwrap();
}
