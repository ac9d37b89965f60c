//! The appliance's own log: `tracing` events printed one line each as
//! `switchboard: [level: ]message`, information and debug on stdout, warnings and errors
//! on stderr (what systemd's journal and the tests read), at a level that can be
//! changed while running (`[log] level`, the `log_level` knob).
//!
//! Levels, from quiet to verbose: `error`, `warn`, `info` (default), `debug` (one line
//! per connection closed, login and link batch), `trace`. An event below the level costs
//! one cached check at its call site.

use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The level names, in knob order (the `log_level` knob's value is the index).
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// One of `error`, `warn`, `info`, `debug`, `trace`. Default: `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl LogConfig {
    /// The level's index in [`LEVELS`].
    pub fn index(&self) -> Result<u64, String> {
        level_index(&self.level).ok_or_else(|| {
            format!(
                "log.level: {:?} is not a level (one of {})",
                self.level,
                LEVELS.join(", ")
            )
        })
    }
}

pub fn level_index(name: &str) -> Option<u64> {
    LEVELS
        .iter()
        .position(|l| l.eq_ignore_ascii_case(name.trim()))
        .map(|i| i as u64)
}

fn filter(index: u64) -> LevelFilter {
    match index {
        0 => LevelFilter::ERROR,
        1 => LevelFilter::WARN,
        2 => LevelFilter::INFO,
        3 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

type Handle = reload::Handle<LevelFilter, tracing_subscriber::Registry>;

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Installs the log at `index` (a [`LEVELS`] index). Once per process; later calls only
/// set the level.
pub fn init(index: u64) {
    if HANDLE.get().is_some() {
        set_level(index);
        return;
    }
    let (layer, handle) = reload::Layer::new(filter(index));
    let out = std::io::stderr
        .with_max_level(Level::WARN)
        .or_else(std::io::stdout);
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(Line)
                .with_writer(out),
        )
        .try_init()
        .is_ok();
    if installed {
        let _ = HANDLE.set(handle);
    }
}

/// Changes the level of the running process (the `log_level` knob).
pub fn set_level(index: u64) {
    if let Some(h) = HANDLE.get() {
        let _ = h.modify(|f| *f = filter(index));
    }
}

/// `switchboard: [warning: |error: |debug: |trace: ]message fields`.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let tag = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::INFO => "",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
        };
        write!(w, "switchboard: {tag}")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_are_known_and_bad_ones_named() {
        assert_eq!(level_index("DEBUG"), Some(3));
        assert_eq!(LogConfig::default().index(), Ok(2));
        let bad = LogConfig {
            level: "loud".into(),
        };
        assert!(bad.index().unwrap_err().contains("\"loud\" is not a level"));
    }
}
