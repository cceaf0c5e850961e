//! SVG plots of a sweep (`mau-sim plot --input sweep.json --out DIR`):
//! hops vs n (ours, Go, theory), success vs churn (found / counted, and
//! found / all scheduled: one measure per plot), messages per lookup vs n,
//! memory per node vs n; plus `table.md`, ours and Go side by side. Every
//! plot has its legend in a panel right of the data, and no two of its
//! series share a colour.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::sweep::ratio;

/// One plotted series: a name, a colour and its points.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

const OURS: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const GO: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const THEORY: RGBColor = RGBColor(0x55, 0x55, 0x55);
const THEORY2: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
/// Ten distinct colours (matplotlib's tab10).
const PALETTE: [RGBColor; 10] = [
    OURS,
    GO,
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Width of the data area and of the legend panel right of it, px.
const PLOT_W: u32 = 640;
const LEGEND_W: u32 = 300;

/// Halfway to white.
fn lighter(c: RGBColor) -> RGBColor {
    RGBColor(
        ((c.0 as u16 + 255) / 2) as u8,
        ((c.1 as u16 + 255) / 2) as u8,
        ((c.2 as u16 + 255) / 2) as u8,
    )
}

fn f(r: &Value, c: &str) -> f64 {
    r[c].as_f64().unwrap_or(0.0)
}

fn s(r: &Value, c: &str) -> String {
    r[c].as_str().unwrap_or("").to_string()
}

/// `column` against n for `policy` at churn `churn`, sorted by n: cold-start
/// rows, or warm-start rows with `warm` (their own series: a warm start's
/// evenly known nodes take fewer hops than a cold network's, see
/// docs/scaling.md).
fn by_n(rows: &[Value], policy: &str, churn: f64, column: &str, warm: bool) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| s(r, "policy") == policy && f(r, "churn") == churn)
        .filter(|r| (f(r, "warm_start") > 0.0) == warm)
        .map(|r| (f(r, "nodes"), f(r, column)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

fn draw(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    series: &[Series],
) -> Result<(), String> {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(format!("{title}: no data"));
    }
    if x0 == x1 {
        x0 = if log_x { x0 / 2.0 } else { x0 - 1.0 };
        x1 = if log_x { x1 * 2.0 } else { x1 + 1.0 };
    }
    let y_lo = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min);
    // Zoom in when every value is close to the top (success rates near 1).
    let y0 = if y1 > 0.0 && y_lo > 0.8 * y1 {
        (y_lo - 0.1 * (y1 - y_lo).max(0.01 * y1)).max(0.0)
    } else {
        0.0
    };
    let y1 = if y1 <= 0.0 {
        1.0
    } else if y0 > 0.0 {
        y1 + 0.5 * (y1 - y0)
    } else {
        y1 * 1.15
    };
    let root = SVGBackend::new(path, (PLOT_W + LEGEND_W, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (plot_area, legend_area) = root.split_horizontally(PLOT_W);
    // The legend in its own panel: it never covers a point.
    for (i, se) in series.iter().filter(|s| !s.points.is_empty()).enumerate() {
        let y = 60 + 24 * i as i32;
        legend_area
            .draw(&PathElement::new(
                vec![(8, y), (32, y)],
                se.color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        legend_area
            .draw(&Circle::new((20, y), 3, se.color.filled()))
            .map_err(|e| e.to_string())?;
        legend_area
            .draw(&Text::new(
                se.name.clone(),
                (40, y - 7),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(|e| e.to_string())?;
    }
    let mut b = ChartBuilder::on(&plot_area);
    b.caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| e.to_string())?;
            for se in series {
                let color = se.color;
                chart
                    .draw_series(LineSeries::new(
                        se.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(se.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }};
    }
    if log_x {
        body!(b
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
            .map_err(|e| e.to_string())?);
    } else {
        body!(b
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?);
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// Reads sweep JSONs (`mau-sim sweep --out X.json`; rows of all of them,
/// e.g. a 1k/10k sweep and a separate 100k run, the scenario of the first)
/// and writes `hops_vs_n.svg`, `success_vs_churn.svg`,
/// `success_all_vs_churn.svg`, `messages_vs_n.svg` and `memory_vs_n.svg`
/// into `out`; returns the files written.
pub fn plot(inputs: &[&Path], out: &Path) -> Result<Vec<String>, String> {
    let mut doc = Value::Null;
    let mut rows: Vec<Value> = Vec::new();
    for input in inputs {
        let text =
            std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
        let d: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", input.display()))?;
        rows.extend(d["rows"].as_array().cloned().ok_or("no rows")?);
        if doc.is_null() {
            doc = d;
        }
    }
    if rows.is_empty() {
        return Err("no rows".into());
    }
    let k = doc["base_scenario"]["protocol"]["k"]
        .as_f64()
        .unwrap_or(20.0);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut churns: Vec<f64> = rows.iter().map(|r| f(r, "churn")).collect();
    churns.sort_by(f64::total_cmp);
    churns.dedup();
    let mut sizes: Vec<f64> = rows.iter().map(|r| f(r, "nodes")).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let c0 = churns[0];
    let mut written = Vec::new();
    let mut emit = |name: &str,
                    title: &str,
                    xl: &str,
                    yl: &str,
                    log_x: bool,
                    series: Vec<Series>|
     -> Result<(), String> {
        let p = out.join(name);
        draw(&p, title, xl, yl, log_x, &series)?;
        written.push(p.display().to_string());
        Ok(())
    };

    let theory_k: Vec<(f64, f64)> = sizes.iter().map(|&n| (n, n.log2() / k.log2())).collect();
    let theory_2: Vec<(f64, f64)> = sizes.iter().map(|&n| (n, n.log2().ceil())).collect();
    emit(
        "hops_vs_n.svg",
        &format!("Lookup hops vs n (mean, churn {c0})"),
        "nodes (log)",
        "hops",
        true,
        vec![
            Series {
                name: "ours (mean)".into(),
                color: OURS,
                points: by_n(&rows, "ours", c0, "hops_mean", false),
            },
            Series {
                name: "ours, warm start (mean)".into(),
                color: lighter(OURS),
                points: by_n(&rows, "ours", c0, "hops_mean", true),
            },
            Series {
                name: "ours (p99)".into(),
                color: PALETTE[4],
                points: by_n(&rows, "ours", c0, "hops_p99", false),
            },
            Series {
                name: "go baseline (mean)".into(),
                color: GO,
                points: by_n(&rows, "go", c0, "hops_mean", false),
            },
            Series {
                name: "go baseline, warm start (mean)".into(),
                color: lighter(GO),
                points: by_n(&rows, "go", c0, "hops_mean", true),
            },
            Series {
                name: "theory log2(n)/log2(K)".into(),
                color: THEORY2,
                points: theory_k,
            },
            Series {
                name: "theory ceil(log2 n)".into(),
                color: THEORY,
                points: theory_2,
            },
        ],
    )?;

    // One measure per plot: the lookups counted (target still alive) and
    // all scheduled (also those whose source or target left meanwhile).
    for (file, column, title) in [
        (
            "success_vs_churn.svg",
            "success",
            "Lookups found / counted (target alive) vs churn",
        ),
        (
            "success_all_vs_churn.svg",
            "success_all",
            "Lookups found / all scheduled vs churn",
        ),
    ] {
        let mut series = Vec::new();
        for &n in &sizes {
            for p in ["ours", "go"] {
                let mut pts: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| s(r, "policy") == p && f(r, "nodes") == n)
                    .filter(|r| f(r, "warm_start") == 0.0)
                    .map(|r| (f(r, "churn"), f(r, column)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                series.push(Series {
                    name: format!("{p}, n={n}"),
                    color: PALETTE[series.len() % PALETTE.len()],
                    points: pts,
                });
            }
        }
        emit(
            file,
            title,
            "churn (fraction of nodes replaced)",
            "success rate",
            false,
            series,
        )?;
    }

    let mut series = Vec::new();
    for (i, &c) in churns.iter().enumerate() {
        for (j, p) in ["ours", "go"].iter().enumerate() {
            series.push(Series {
                name: format!("{p}, churn {c}"),
                color: PALETTE[(2 * i + j) % PALETTE.len()],
                points: by_n(&rows, p, c, "msgs_per_lookup_mean", false),
            });
        }
    }
    for (p, color) in [("ours", OURS), ("go", GO)] {
        series.push(Series {
            name: format!("{p}, warm start, churn {c0}"),
            color: lighter(color),
            points: by_n(&rows, p, c0, "msgs_per_lookup_mean", true),
        });
    }
    emit(
        "messages_vs_n.svg",
        "Requests per lookup vs n (mean)",
        "nodes (log)",
        "requests per lookup",
        true,
        series,
    )?;

    emit(
        "memory_vs_n.svg",
        &format!("Memory per node vs n (churn {c0})"),
        "nodes (log)",
        "bytes per node",
        true,
        vec![
            Series {
                name: "ours: protocol state (Node::heap_bytes)".into(),
                color: OURS,
                points: by_n(&rows, "ours", c0, "est_bytes_per_node", false),
            },
            Series {
                name: "ours: peak RSS / n".into(),
                color: PALETTE[4],
                points: by_n(&rows, "ours", c0, "rss_bytes_per_node", false),
            },
            Series {
                name: "ours, warm start: peak RSS / n".into(),
                color: lighter(PALETTE[4]),
                points: by_n(&rows, "ours", c0, "rss_bytes_per_node", true),
            },
            Series {
                name: "go: protocol state".into(),
                color: GO,
                points: by_n(&rows, "go", c0, "est_bytes_per_node", false),
            },
            Series {
                name: "go: peak RSS / n".into(),
                color: PALETTE[3],
                points: by_n(&rows, "go", c0, "rss_bytes_per_node", false),
            },
            Series {
                name: "go, warm start: peak RSS / n".into(),
                color: lighter(PALETTE[3]),
                points: by_n(&rows, "go", c0, "rss_bytes_per_node", true),
            },
        ],
    )?;
    let p = out.join("table.md");
    std::fs::write(&p, markdown_table(&rows)).map_err(|e| format!("{}: {e}", p.display()))?;
    written.push(p.display().to_string());
    Ok(written)
}

/// A Markdown table with ours and Go side by side per (size, churn, start),
/// with ratios computed here, so rows from separate sweep files pair up.
pub fn markdown_table(rows: &[Value]) -> String {
    let mut t = String::from(
        "| n | churn | success ours / go (ratio) | hops mean ours / go (ratio) | hops median / p99 ours; go | msgs/lookup mean ours / go (ratio) | latency median ms ours / go | join msgs/node ours / go | table entries | bytes/entry | est. bytes/node | peak RSS/node ours; go | CPU s ours / go | ⌈log₂ n⌉ | log₂n/log₂K |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in rows.iter().filter(|r| s(r, "policy") == "ours") {
        let g = rows.iter().find(|g| {
            s(g, "policy") == "go"
                && f(g, "nodes") == f(o, "nodes")
                && f(g, "churn") == f(o, "churn")
                && f(g, "warm_start") == f(o, "warm_start")
        });
        // A Go cell, or "–" where only ours ran (the cold 100k row).
        let go = |cell: &dyn Fn(&Value) -> String| g.map_or_else(|| "–".to_string(), cell);
        let vs = |c: &str| go(&|g| format!("{:.3}", ratio(f(o, c), f(g, c))));
        let n = match f(o, "warm_start") {
            w if w > 0.0 => format!("{} warm ({w} joins)", f(o, "nodes")),
            _ => f(o, "nodes").to_string(),
        };
        t.push_str(&format!(
            "| {n} | {} | {:.2}% / {} ({}) | {:.2} / {} ({}) | {} / {}; {} | {:.1} / {} ({}) | {} / {} | {:.0} / {} | {} | {} | {} | {} B; {} | {:.1} / {} | {} | {:.2} |\n",
            f(o, "churn"),
            100.0 * f(o, "success"),
            go(&|g| format!("{:.2}%", 100.0 * f(g, "success"))),
            vs("success"),
            f(o, "hops_mean"),
            go(&|g| format!("{:.2}", f(g, "hops_mean"))),
            vs("hops_mean"),
            f(o, "hops_median"),
            f(o, "hops_p99"),
            go(&|g| format!("{} / {}", f(g, "hops_median"), f(g, "hops_p99"))),
            f(o, "msgs_per_lookup_mean"),
            go(&|g| format!("{:.1}", f(g, "msgs_per_lookup_mean"))),
            vs("msgs_per_lookup_mean"),
            f(o, "latency_median_ms"),
            go(&|g| f(g, "latency_median_ms").to_string()),
            f(o, "join_msgs_per_node"),
            go(&|g| format!("{:.0}", f(g, "join_msgs_per_node"))),
            f(o, "table_entries_median"),
            f(o, "bytes_per_entry"),
            f(o, "est_bytes_per_node"),
            f(o, "rss_bytes_per_node"),
            go(&|g| format!("{} B", f(g, "rss_bytes_per_node"))),
            f(o, "cpu_ms") / 1000.0,
            go(&|g| format!("{:.1}", f(g, "cpu_ms") / 1000.0)),
            f(o, "theory_log2_n"),
            f(o, "theory_log2n_over_log2k"),
        ));
    }
    t
}
