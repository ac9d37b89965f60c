//! The kernel's share of a connection set-up on this machine, without TLS or the
//! appliance: a server thread on CPU 0 accepts loopback connections and exchanges the
//! bytes a TLS 1.3 handshake and a login exchange (client 517 → server 1,400 → client 180 →
//! server 300), then the client closes; a client thread on CPU 1 drives it, one
//! connection at a time. The server thread's CPU time (user + system, `getrusage`) per
//! connection is the floor the kernel puts under "server CPU per connection set-up";
//! add the in-memory TLS handshake (`cargo bench -p gateway --bench handshake`) for the
//! floor of the whole.
//!
//! `cargo run --release -p bench --example tcp_floor -- [CONNECTIONS]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn thread_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn exchange(s: &mut TcpStream, read: usize, write: usize) {
    let mut buf = vec![0u8; read];
    s.read_exact(&mut buf).expect("read");
    s.write_all(&vec![0x17u8; write]).expect("write");
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a number of connections"))
        .unwrap_or(20_000);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        pin(0);
        let cpu0 = thread_cpu_s();
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            exchange(&mut s, 517, 1400);
            exchange(&mut s, 180, 300);
            let mut end = [0u8; 1];
            let _ = s.read(&mut end); // the client's close
        }
        thread_cpu_s() - cpu0
    });
    pin(1);
    let started = Instant::now();
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        c.write_all(&[0x16u8; 517]).unwrap();
        let mut buf = vec![0u8; 1400];
        c.read_exact(&mut buf).unwrap();
        c.write_all(&[0x17u8; 180]).unwrap();
        let mut buf = vec![0u8; 300];
        c.read_exact(&mut buf).unwrap();
        // Reset on close: no TIME_WAIT port left per connection.
        socket2::SockRef::from(&c)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
    }
    let server_cpu = server.join().unwrap();
    let el = started.elapsed().as_secs_f64();
    println!(
        "{n} loopback connections in {el:.1} s ({:.0}/s): server thread CPU {:.1} µs per connection (accept, 2 reads, 2 writes, close)",
        n as f64 / el,
        server_cpu * 1e6 / n as f64
    );
}
