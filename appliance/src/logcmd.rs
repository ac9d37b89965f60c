//! `switchboard log inspect`: open a log the way the router does and say what is there.

use std::path::Path;
use std::process::ExitCode;

use storage::{Log, LogConfig};

fn load_config(path: Option<&Path>) -> Result<LogConfig, String> {
    let Some(path) = path else {
        return Ok(LogConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: LogConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    config
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(config)
}

pub fn inspect(dir: &Path, config: Option<&Path>, quiet: bool) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard log inspect: {e}");
            return ExitCode::from(2);
        }
    };
    if !dir.is_dir() {
        eprintln!(
            "switchboard log inspect: {}: no such log directory",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (log, report) = match Log::open(dir, config, now) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("switchboard log inspect: {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    let stats = log.stats();
    let ms = |d: std::time::Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let rows: [(&str, String); 17] = [
        ("segments", report.segments.to_string()),
        ("records", report.records.to_string()),
        ("record_bytes", report.bytes.to_string()),
        ("messages_pending", stats.pending_messages.to_string()),
        ("pending_bytes", stats.pending_bytes.to_string()),
        ("users_with_pending", stats.users_with_pending.to_string()),
        ("accounts", stats.accounts.to_string()),
        ("expired_dropped", report.expired.to_string()),
        ("skipped_ranges", report.skipped_ranges.to_string()),
        ("skipped_bytes", report.skipped_bytes.to_string()),
        ("torn_bytes_cut", report.torn_bytes_cut.to_string()),
        ("damaged_headers", report.damaged_headers.to_string()),
        ("unknown_records", report.unknown_records.to_string()),
        ("disk_bytes", stats.disk_bytes.to_string()),
        ("recovery_ms", ms(report.elapsed)),
        ("recovery_scan_ms", ms(report.scan_elapsed)),
        ("recovery_index_ms", ms(report.index_elapsed)),
    ];
    for (k, v) in rows {
        println!("{k} = {v}");
    }
    if !quiet {
        for note in &report.notes {
            println!("# {note}");
        }
    }
    if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
