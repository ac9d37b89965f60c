//! Sending registration PINs: `log` (writes them to `data_dir/sms.log` and the log: for
//! development and tests) and `http` (POSTs JSON to an SMS provider's endpoint, with a
//! timeout and retries, from its own thread behind a bounded queue so a slow provider
//! never stalls a router shard).
//!
//! The `http` body: `{"to": "+15551234567", "pin": "01234", "text": "..."}`; any 2xx
//! answer is success; others and timeouts are retried with backoff.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use wire::{Phone, Pin};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// `log` (default) or `http`.
    pub kind: SmsKind,
    /// `http`: the endpoint (http:// or https://).
    pub url: Option<String>,
    /// `http`: per attempt. Default: 5,000 ms. Range: 100 to 60,000.
    pub timeout_ms: u64,
    /// `http`: retries after the first attempt. Default: 3. Maximum: 10.
    pub retries: u32,
    /// `http`: PINs waiting to be sent; more are dropped (and counted). Default: 10,000.
    pub queue: usize,
    /// The message text; `{pin}` is replaced. Default: "Your Switchboard code is {pin}".
    pub text: String,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            kind: SmsKind::Log,
            url: None,
            timeout_ms: 5000,
            retries: 3,
            queue: 10_000,
            text: "Your Switchboard code is {pin}".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsKind {
    #[default]
    Log,
    Http,
}

impl SmsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.kind == SmsKind::Http {
            let url = self
                .url
                .as_deref()
                .ok_or("sms.url: required with kind = \"http\"")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "sms.url = {url}: must start with http:// or https://"
                ));
            }
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err("sms.timeout_ms: from 100 to 60,000".into());
        }
        if self.retries > 10 {
            return Err("sms.retries: at most 10".into());
        }
        if self.queue == 0 {
            return Err("sms.queue: at least 1".into());
        }
        Ok(())
    }
}

pub enum Sms {
    Log(Mutex<std::fs::File>),
    Http {
        tx: SyncSender<(Phone, Pin)>,
        dropped: AtomicU64,
    },
}

impl Sms {
    pub fn start(config: &SmsConfig, data_dir: &Path) -> Result<Sms, String> {
        match config.kind {
            SmsKind::Log => {
                let path = data_dir.join("sms.log");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Sms::Log(Mutex::new(file)))
            }
            SmsKind::Http => {
                let (tx, rx) = mpsc::sync_channel::<(Phone, Pin)>(config.queue);
                let c = config.clone();
                let url = c.url.clone().expect("validated");
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_millis(c.timeout_ms)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                std::thread::Builder::new()
                    .name("sms-http".into())
                    .spawn(move || {
                        for (phone, pin) in rx {
                            let body = serde_json::json!({
                                "to": phone.to_string(),
                                "pin": pin.to_string(),
                                "text": c.text.replace("{pin}", &pin.to_string()),
                            })
                            .to_string();
                            let mut ok = false;
                            for attempt in 0..=c.retries {
                                match agent
                                    .post(&url)
                                    .header("content-type", "application/json")
                                    .send(&body)
                                {
                                    Ok(r) if r.status().is_success() => {
                                        ok = true;
                                        break;
                                    }
                                    Ok(r) => tracing::warn!(
                                        "sms to {phone}: attempt {}: HTTP {}",
                                        attempt + 1,
                                        r.status()
                                    ),
                                    Err(e) => tracing::warn!(
                                        "sms to {phone}: attempt {}: {e}",
                                        attempt + 1
                                    ),
                                }
                                std::thread::sleep(Duration::from_millis(100 << attempt.min(6)));
                            }
                            if !ok {
                                tracing::warn!(
                                    "sms to {phone}: gave up after {} attempts",
                                    c.retries + 1
                                );
                            }
                        }
                    })
                    .map_err(|e| e.to_string())?;
                Ok(Sms::Http {
                    tx,
                    dropped: AtomicU64::new(0),
                })
            }
        }
    }

    pub fn send(&self, phone: Phone, pin: Pin) {
        match self {
            Sms::Log(file) => {
                let line = format!("{} {phone} {pin}\n", router::driver::unix_ms());
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.flush()) {
                    tracing::warn!("sms log: {e}");
                }
                tracing::info!("sms to {phone}: PIN {pin}");
            }
            Sms::Http { tx, dropped } => match tx.try_send((phone, pin)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!("sms to {phone}: queue full, dropped ({n} so far)");
                }
            },
        }
    }
}
