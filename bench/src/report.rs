//! Results: a table on stdout, a JSON file, an SVG chart.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::server::{Host, Sample};

#[derive(Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub params: serde_json::Value,
    pub host: Host,
    /// (figure, value, unit) in the order printed.
    pub results: Vec<(String, f64, String)>,
    pub server_before: Sample,
    pub server_after: Sample,
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, params: serde_json::Value) -> Report {
        Report {
            scenario,
            params,
            host: crate::server::host(),
            results: Vec::new(),
            server_before: Sample::default(),
            server_after: Sample::default(),
            errors: Vec::new(),
        }
    }

    pub fn add(&mut self, figure: impl Into<String>, value: f64, unit: &str) {
        self.results.push((figure.into(), value, unit.into()));
    }

    /// Adds `NAME pXX` for each quantile of a microsecond histogram.
    pub fn quantiles(&mut self, name: &str, h: &Histogram<u64>, qs: &[f64]) {
        for q in qs {
            let pct = q * 100.0;
            let label = if (pct - pct.round()).abs() < 1e-9 {
                format!("{pct:.0}")
            } else {
                format!("{pct}").replace('.', "") // 99.9 → p999
            };
            self.add(
                format!("{name} p{label}"),
                h.value_at_quantile(*q) as f64,
                "µs",
            );
        }
    }

    pub fn print(&self) {
        println!(
            "switchboard-bench {} — {} ({} cores), kernel {}, commit {}, {}",
            self.scenario,
            self.host.cpu_model,
            self.host.cores,
            self.host.kernel,
            self.host.commit,
            self.host.date
        );
        println!("parameters: {}", self.params);
        let w = self.results.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (f, v, u) in &self.results {
            let v = if v.fract() == 0.0 || v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            };
            println!("  {f:<w$}  {v:>12} {u}");
        }
        for e in &self.errors {
            println!("  error: {e}");
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Latency percentiles (left) and delivered messages per second over time (right).
pub fn chart(
    path: &Path,
    title: &str,
    latency: &Histogram<u64>,
    timeline: &[(f64, f64)],
) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(500);

    // Latency by percentile, log-scaled "nines" on x.
    let mut pts = Vec::new();
    if !latency.is_empty() {
        for nines in 0..=50 {
            let q = 1.0 - 10f64.powf(-(nines as f64) / 10.0);
            pts.push((
                nines as f64 / 10.0,
                latency.value_at_quantile(q) as f64 / 1000.0,
            ));
        }
        pts.push((5.0, latency.max() as f64 / 1000.0));
    }
    let ymax = pts.iter().map(|p| p.1).fold(0.1, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&left)
        .caption("latency by percentile", ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..5f64, 0f64..ymax)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("{:.3}", 100.0 * (1.0 - 10f64.powf(-x))))
        .draw()
        .map_err(|e| err(&e))?;
    c.draw_series(LineSeries::new(pts, &BLUE))
        .map_err(|e| err(&e))?;

    let xmax = timeline.last().map_or(1.0, |p| p.0).max(1.0);
    let ymax = timeline.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&right)
        .caption("delivered msgs/s over time", ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("msgs/s")
        .draw()
        .map_err(|e| err(&e))?;
    c.draw_series(LineSeries::new(timeline.iter().copied(), &RED))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The median of some runs' figures.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
