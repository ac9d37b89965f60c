//! `switchboard-client`: register, verify, send, listen and chat from a terminal.
//! Keys are kept as `KEYS/+NUMBER.key` (hex), created by `verify`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use client::{Client, ClientError, Incoming, Trust};
use wire::frame::ReceiptKind;
use wire::{Key, Phone, Pin};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-client",
    version,
    about = "Switchboard command-line client"
)]
struct Cli {
    /// Server address.
    #[arg(long, global = true, default_value = "127.0.0.1:7443")]
    server: String,
    /// Trust the server by its certificate's SHA-256 fingerprint (printed by `switchboard serve`).
    #[arg(long, global = true, conflicts_with = "ca")]
    fingerprint: Option<String>,
    /// Trust the server by a CA (or self-signed) certificate in PEM, e.g. data/tls/cert.pem.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Name to verify in the server's certificate.
    #[arg(long, global = true, default_value = "localhost")]
    name: String,
    /// Where device keys are kept.
    #[arg(long, global = true, default_value = "./client-keys")]
    keys: PathBuf,
    /// Seconds to wait for each answer.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Asks for a registration PIN by SMS.
    Register { phone: Phone },
    /// Verifies the PIN and stores the device key.
    Verify { phone: Phone, pin: u32 },
    /// Sends one message and waits for the server's tick (and, with --wait, the delivery tick).
    Send {
        #[arg(long = "as")]
        me: Phone,
        to: Phone,
        text: String,
        #[arg(long)]
        wait: bool,
    },
    /// Prints incoming messages and receipts (acknowledging them) until stopped.
    Listen {
        #[arg(long = "as")]
        me: Phone,
        /// Stop after this many messages (0: never).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Also send read receipts for each message.
        #[arg(long)]
        read: bool,
    },
    /// Interactive chat: lines typed are sent to `--to`; incoming lines are printed.
    Chat {
        #[arg(long = "as")]
        me: Phone,
        #[arg(long)]
        to: Phone,
    },
}

fn key_path(dir: &Path, p: Phone) -> PathBuf {
    dir.join(format!("{p}.key"))
}

fn load_key(dir: &Path, p: Phone) -> Result<Key, String> {
    let path = key_path(dir, p);
    let hex = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (register and verify {p} first)", path.display()))?;
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(format!("{}: not a key", path.display()));
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{}: not a key", path.display()))?;
    }
    Ok(Key(k))
}

fn save_key(dir: &Path, p: Phone, key: &Key) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = key_path(dir, p);
    let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, hex + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn msg_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn print(m: &Incoming) {
    match m {
        Incoming::Deliver {
            from, body, msg_id, ..
        } => println!("{from}: {} (#{msg_id})", String::from_utf8_lossy(body)),
        Incoming::Receipt {
            by,
            msg_id,
            kind: ReceiptKind::Delivered,
            ..
        } => println!("✓✓ delivered to {by} (#{msg_id})"),
        Incoming::Receipt {
            by,
            msg_id,
            kind: ReceiptKind::Read,
            ..
        } => println!("✓✓ read by {by} (#{msg_id})"),
        Incoming::ServerAck { to, msg_id } => println!("✓ stored for {to} (#{msg_id})"),
        Incoming::Refused { to, msg_id, code } => {
            println!("✗ refused for {to} (#{msg_id}): {code:?}")
        }
        Incoming::Error { code, reason } => println!("error {code:?}: {reason}"),
        Incoming::Close { code, reason } => println!("closed {code:?}: {reason}"),
        other => println!("{other:?}"),
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let trust = match (&cli.fingerprint, &cli.ca) {
        (Some(f), _) => Trust::Fingerprint(f.clone()),
        (None, Some(ca)) => Trust::CaFile(ca.clone()),
        (None, None) => {
            return Err("say how to trust the server: --fingerprint HEX or --ca FILE".into())
        }
    };
    let t = Duration::from_secs(cli.timeout);
    let e = |e: ClientError| e.to_string();
    let mut c = Client::connect(&cli.server, &trust, &cli.name, t).map_err(e)?;
    match cli.command {
        Cmd::Register { phone } => {
            let s = c.request_pin(phone, t).map_err(e)?;
            println!("PIN sent to {phone} by SMS; valid for {s} s. Then: switchboard-client verify {phone} PIN");
        }
        Cmd::Verify { phone, pin } => {
            let pin = Pin::new(pin).ok_or("a PIN has five digits")?;
            let key = c.verify(phone, pin, t).map_err(e)?;
            let path = save_key(&cli.keys, phone, &key)?;
            println!("registered {phone}; key saved in {}", path.display());
        }
        Cmd::Send { me, to, text, wait } => {
            c.login(me, load_key(&cli.keys, me)?, t).map_err(e)?;
            let id = msg_id();
            c.send(to, id, text.as_bytes()).map_err(e)?;
            let m = c.wait_for(t, |m| matches!(m, Incoming::ServerAck { msg_id, .. } | Incoming::Refused { msg_id, .. } if *msg_id == id)).map_err(e)?;
            print(&m);
            if let Incoming::Refused { .. } = m {
                return Err("not sent".into());
            }
            if wait {
                let r = c
                    .wait_for(
                        t,
                        |m| matches!(m, Incoming::Receipt { msg_id, .. } if *msg_id == id),
                    )
                    .map_err(e)?;
                print(&r);
                if let Incoming::Receipt { seq, .. } = r {
                    c.ack(seq).map_err(e)?;
                }
            }
        }
        Cmd::Listen { me, count, read } => {
            let pending = c.login(me, load_key(&cli.keys, me)?, t).map_err(e)?;
            println!("logged in as {me}; {pending} waiting");
            let mut n = 0;
            while count == 0 || n < count {
                let Some(m) = c.next(Duration::from_secs(3600)).map_err(e)? else {
                    continue;
                };
                print(&m);
                match m {
                    Incoming::Deliver {
                        seq, from, msg_id, ..
                    } => {
                        c.ack(seq).map_err(e)?;
                        if read {
                            c.read(from, msg_id).map_err(e)?;
                        }
                        n += 1;
                    }
                    Incoming::Receipt { seq, .. } => c.ack(seq).map_err(e)?,
                    Incoming::Close { .. } => break,
                    _ => {}
                }
            }
        }
        Cmd::Chat { me, to } => {
            c.login(me, load_key(&cli.keys, me)?, t).map_err(e)?;
            println!("chatting with {to} as {me}; type lines, Ctrl-D to quit");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            loop {
                match rx.try_recv() {
                    Ok(line) => c.send(to, msg_id(), line.as_bytes()).map_err(e)?,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                if let Some(m) = c.next(Duration::from_millis(50)).map_err(e)? {
                    match &m {
                        Incoming::Deliver {
                            seq, from, msg_id, ..
                        } => {
                            print(&m);
                            c.ack(*seq).map_err(e)?;
                            c.read(*from, *msg_id).map_err(e)?;
                        }
                        Incoming::Receipt { seq, .. } => {
                            print(&m);
                            c.ack(*seq).map_err(e)?;
                        }
                        Incoming::ServerAck { .. } => {}
                        _ => print(&m),
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-client: {e}");
            ExitCode::FAILURE
        }
    }
}
