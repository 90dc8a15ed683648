//! The SVG timeline: per provider, every attempt (green served, red failed) over the circuit
//! state (shaded: red open, amber half-open, grey isolated), for both strategies.

use std::path::Path;

use fusebox::CircuitState;
use plotters::prelude::*;

use crate::engine::Report;

const ROW: f64 = 1.0;

fn state_colour(state: CircuitState) -> Option<RGBAColor> {
    match state {
        CircuitState::Closed => None,
        CircuitState::HalfOpen => Some(RGBColor(245, 166, 35).mix(0.35)),
        CircuitState::Open => Some(RGBColor(208, 2, 27).mix(0.25)),
        CircuitState::Isolated => Some(RGBColor(120, 120, 120).mix(0.35)),
    }
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    report: &Report,
    providers: &[String],
    seconds: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let rows = providers.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: {} served, {} failed, {} calls reached a failing provider",
                report.strategy, report.served, report.failed, report.reached_failing
            ),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..seconds, 0f64..rows * ROW)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(providers.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let row = (rows - y / ROW - 0.5).round();
            if (y / ROW).fract() > 0.4 && (y / ROW).fract() < 0.6 && row >= 0.0 {
                providers.get(row as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("seconds")
        .draw()?;
    let top = |i: usize| rows - i as f64;
    // Circuit states as shaded bands.
    for pair in report.states.windows(2) {
        let (t0, states) = (&pair[0].0, &pair[0].1);
        let t1 = pair[1].0;
        for (i, state) in states.iter().enumerate() {
            if let Some(colour) = state_colour(*state) {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(*t0, top(i) - ROW), (t1, top(i))],
                    colour.filled(),
                )))?;
            }
        }
    }
    // Attempts: a tick per call, served low in the row, failed high.
    chart.draw_series(report.marks.iter().map(|m| {
        let y = top(m.provider) - if m.ok { 0.75 } else { 0.25 };
        let colour = if m.ok {
            RGBColor(46, 160, 67)
        } else {
            RGBColor(208, 2, 27)
        };
        Rectangle::new(
            [(m.at, y - 0.08), (m.at + seconds / 2000.0, y + 0.08)],
            colour.filled(),
        )
    }))?;
    Ok(())
}

/// Writes the timeline of both strategies to `path`.
pub(crate) fn write(
    path: &Path,
    reports: &[&Report],
    providers: &[String],
    seconds: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let height = 260 * reports.len() as u32;
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((reports.len(), 1));
    for (area, report) in panels.iter().zip(reports) {
        panel(area, report, providers, seconds)?;
    }
    root.present()?;
    Ok(())
}
