//! `mau-sim`: run one simulation scenario from the command line.

use std::process::ExitCode;

use mau_sim::sweep::{to_csv, to_json, Sweep};
use mau_sim::{run_with_progress, Policy, Scenario};

const USAGE: &str = "\
mau-sim: deterministic simulation of the Mau Kademlia core (mau-proto)

USAGE: mau-sim [OPTIONS]
       mau-sim sweep --sizes N,N.. --churn F,F.. [--policies ours,go] [--out FILE.json|.csv] [OPTIONS]
       mau-sim plot --input SWEEP.json --out DIR

Sweep: runs every (size, churn, policy), prints one CSV line per run to
stderr as it goes, and writes the table (FILE.json and FILE.csv, whichever
extension is given, both written) or prints the JSON to stdout. Exits 2 if
a row is below --min-success or ours finds less than go on a row (found
/ counted; found / all scheduled by more than one lookup).

Network and workload:
  --nodes N              initial nodes                                [1000]
  --lookups N            measured find-peer lookups                   [1000]
  --churn F              fraction of nodes leaving (and as many
                         arriving) during the lookup phase             [0]
  --loss F               probability a message is lost                 [0]
  --seed N               seed of every random choice                   [1]
  --latency MIN-MAX      one-way latency range in ms                   [10-100]
  --bootstrap N          bootstrap peers per newcomer                  [3]
  --join-interval MS     virtual ms between two initial joins          [10]
  --settle MS            pause between joins and lookups               [1000]
  --lookup-interval MS   virtual ms between two lookups                [10]
  --duration T           minimum virtual time (ms, or with s/m/h)      [0]
  --adversaries F        fraction of adversarial nodes (lookups are
                         measured between honest nodes)                [0]
  --attack eclipse|garbage  what adversaries answer to find_peer:
                         eclipse = the adversaries closest to the
                         target; garbage = made-up and misaddressed
                         peers                                         [eclipse]
  --warm-start M         start the --nodes with converged tables (K
                         random peers per bucket range) instead of
                         joining them one by one, then let M newcomers
                         join through the protocol (the join cost)
                         before the lookups: how 1M nodes fit  [cold start]

Protocol:
  --k N  --alpha N  --rpc-timeout MS  --stall-period T  --ping-backoff T
  --max-candidates N     candidates a lookup remembers                 [200]
  --probe-every-caller   probe every caller not in the table, even one
                         that could only wait behind a full bucket of
                         live peers and a full replacement cache (the
                         rule before; always on for --policy go)
  --policy ours|go       go = the Go implementation's policies: no
                         replacement cache, evict on first failure, no
                         periodic refresh, lookups stop on exact match or
                         empty queue                                   [ours]

Output and checks:
  --json                 print the report as JSON instead of a summary
  --progress             print progress lines to stderr
  --check                check every node's invariants after each step
  --min-success F        exit with status 2 if the lookup success rate
                         (found / target alive) is below F (e.g. 0.99)
  -h, --help             this text
";

struct Cli {
    scenario: Scenario,
    json: bool,
    progress: bool,
    min_success: Option<f64>,
}

fn parse_time_ms(v: &str) -> Result<u64, String> {
    let (num, mult) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = v.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (v, 1)
    };
    let x: f64 = num.parse().map_err(|_| format!("bad time {v:?}"))?;
    if !x.is_finite() || x < 0.0 {
        return Err(format!("bad time {v:?}"));
    }
    Ok((x * mult as f64).round() as u64)
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: bad value {v:?}"))
}

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Cli>, String> {
    let mut cli = Cli {
        scenario: Scenario::default(),
        json: false,
        progress: false,
        min_success: None,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let s = &mut cli.scenario;
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => {
                cli.json = true;
                continue;
            }
            "--progress" => {
                cli.progress = true;
                continue;
            }
            "--check" => {
                s.check_invariants = true;
                continue;
            }
            "--probe-every-caller" => {
                s.protocol.probe_every_caller = true;
                continue;
            }
            _ => {}
        }
        let v = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        match flag.as_str() {
            "--nodes" => s.nodes = num(&flag, &v)?,
            "--policy" => s.protocol.apply(Policy::parse(&v)?),
            "--lookups" => s.lookups = num(&flag, &v)?,
            "--churn" => s.churn = num(&flag, &v)?,
            "--loss" => s.loss = num(&flag, &v)?,
            "--seed" => s.seed = num(&flag, &v)?,
            "--latency" => {
                let (a, b) = v
                    .split_once('-')
                    .ok_or_else(|| format!("--latency wants MIN-MAX, got {v:?}"))?;
                s.latency_min_ms = num(&flag, a)?;
                s.latency_max_ms = num(&flag, b)?;
            }
            "--bootstrap" => s.bootstrap_peers = num(&flag, &v)?,
            "--join-interval" => s.join_interval_ms = parse_time_ms(&v)?,
            "--settle" => s.settle_ms = parse_time_ms(&v)?,
            "--lookup-interval" => s.lookup_interval_ms = parse_time_ms(&v)?,
            "--duration" => s.duration_ms = parse_time_ms(&v)?,
            "--adversaries" => s.adversaries = num(&flag, &v)?,
            "--attack" => s.attack = mau_sim::Attack::parse(&v)?,
            "--k" => s.protocol.k = num(&flag, &v)?,
            "--max-candidates" => s.protocol.max_lookup_candidates = num(&flag, &v)?,
            "--alpha" => s.protocol.alpha = num(&flag, &v)?,
            "--rpc-timeout" => s.protocol.rpc_timeout_ms = parse_time_ms(&v)?,
            "--stall-period" => s.protocol.stall_period_ms = parse_time_ms(&v)?,
            "--ping-backoff" => s.protocol.ping_min_backoff_ms = parse_time_ms(&v)?,
            "--min-success" => cli.min_success = Some(num(&flag, &v)?),
            "--warm-start" => s.warm_start = Some(num(&flag, &v)?),
            _ => return Err(format!("unknown option {flag:?} (try --help)")),
        }
    }
    Ok(Some(cli))
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(',').map(|x| num(flag, x.trim())).collect()
}

/// `mau-sim sweep-row` (internal): one sweep row, job JSON on stdin, row JSON on stdout.
fn sweep_row_main() -> ExitCode {
    let result = std::io::read_to_string(std::io::stdin())
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str::<mau_sim::sweep::RowJob>(&s).map_err(|e| e.to_string()))
        .and_then(|job| mau_sim::sweep::run_row(&job))
        .and_then(|row| serde_json::to_string(&row).map_err(|e| e.to_string()));
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mau-sim sweep-row: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mau-sim sweep ...`: sweep flags, then the single-run flags for the base scenario.
fn sweep_main(args: Vec<String>) -> ExitCode {
    let mut sweep = Sweep {
        sizes: vec![1000, 10_000],
        churns: vec![0.0, 0.1, 0.2],
        policies: Policy::ALL.to_vec(),
        base: Scenario::default(),
        isolate: std::env::current_exe().ok(),
    };
    let mut out: Option<String> = None;
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    let res: Result<(), String> = (|| {
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            if !matches!(
                flag.as_str(),
                "--sizes" | "--churn" | "--policies" | "--out"
            ) {
                rest.push(a);
                continue;
            }
            let v = match inline {
                Some(v) => v,
                None => it.next().ok_or_else(|| format!("{flag} needs a value"))?,
            };
            match flag.as_str() {
                "--sizes" => sweep.sizes = list(&flag, &v)?,
                "--churn" => sweep.churns = list(&flag, &v)?,
                "--policies" => {
                    sweep.policies = v
                        .split(',')
                        .map(|p| Policy::parse(p.trim()))
                        .collect::<Result<_, _>>()?
                }
                _ => out = Some(v),
            }
        }
        Ok(())
    })();
    if let Err(e) = res {
        eprintln!("mau-sim sweep: {e}");
        return ExitCode::from(64);
    }
    let min_success = match parse(rest.into_iter()) {
        Ok(Some(cli)) => {
            sweep.base = cli.scenario;
            cli.min_success
        }
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mau-sim sweep: {e}");
            return ExitCode::from(64);
        }
    };
    eprintln!("{}", mau_sim::sweep::COLUMNS.join(","));
    let rows = match sweep.run(|r| {
        eprint!(
            "{}",
            to_csv(std::slice::from_ref(r))
                .lines()
                .nth(1)
                .map(|l| format!("{l}\n"))
                .unwrap_or_default()
        )
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mau-sim sweep: {e}");
            return ExitCode::from(64);
        }
    };
    let json = to_json(&rows, &sweep.base);
    let csv = to_csv(&rows);
    match out {
        None => println!("{json}"),
        Some(path) => {
            let stem = path
                .strip_suffix(".json")
                .or_else(|| path.strip_suffix(".csv"))
                .unwrap_or(&path)
                .to_string();
            for (p, body) in [(format!("{stem}.json"), json), (format!("{stem}.csv"), csv)] {
                if let Err(e) = std::fs::write(&p, body) {
                    eprintln!("mau-sim sweep: {p}: {e}");
                    return ExitCode::from(74);
                }
                eprintln!("wrote {p}");
            }
        }
    }
    // CI checks: every row reaches --min-success, ours never below Go (on
    // found / counted and on found / all scheduled).
    let mut code = ExitCode::SUCCESS;
    for r in &rows {
        if min_success.is_some_and(|m| r.success < m) {
            eprintln!(
                "mau-sim sweep: {} n={} churn={}: success {} below --min-success",
                r.policy, r.nodes, r.churn, r.success
            );
            code = ExitCode::from(2);
        }
    }
    for below in mau_sim::sweep::below_go(&rows) {
        eprintln!("mau-sim sweep: {below}");
        code = ExitCode::from(2);
    }
    code
}

/// `mau-sim plot --input SWEEP.json --out DIR`.
fn plot_main(args: Vec<String>) -> ExitCode {
    let (mut inputs, mut out) = (Vec::new(), None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let v = inline.or_else(|| it.next());
        match (flag.as_str(), v) {
            ("--input", Some(v)) => inputs.push(v),
            ("--out", Some(v)) => out = Some(v),
            _ => {
                eprintln!("mau-sim plot: usage: mau-sim plot --input SWEEP.json [--input MORE.json] --out DIR");
                return ExitCode::from(64);
            }
        }
    }
    let (false, Some(out)) = (inputs.is_empty(), out) else {
        eprintln!(
            "mau-sim plot: usage: mau-sim plot --input SWEEP.json [--input MORE.json] --out DIR"
        );
        return ExitCode::from(64);
    };
    let inputs: Vec<&std::path::Path> = inputs.iter().map(std::path::Path::new).collect();
    match mau_sim::plot::plot(&inputs, std::path::Path::new(&out)) {
        Ok(files) => {
            for f in files {
                eprintln!("wrote {f}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mau-sim plot: {e}");
            ExitCode::from(65)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("sweep") => return sweep_main(args[1..].to_vec()),
        Some("sweep-row") => return sweep_row_main(),
        Some("plot") => return plot_main(args[1..].to_vec()),
        _ => {}
    }
    let cli = match parse(args.into_iter()) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mau-sim: {e}");
            return ExitCode::from(64);
        }
    };
    let report = match run_with_progress(&cli.scenario, cli.progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mau-sim: {e}");
            return ExitCode::from(64);
        }
    };
    if cli.json {
        println!("{}", report.to_json_pretty());
    } else {
        print!("{}", report.summary());
    }
    let rate = report.deterministic.lookups.success_rate;
    let mut code = ExitCode::SUCCESS;
    if let Some(min) = cli.min_success {
        if rate < min {
            eprintln!("mau-sim: lookup success {rate} is below --min-success {min}");
            code = ExitCode::from(2);
        }
    }
    if report.deterministic.tables.invariant_violations > 0 {
        eprintln!(
            "mau-sim: {} invariant violations",
            report.deterministic.tables.invariant_violations
        );
        code = ExitCode::from(3);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Cli {
        parse(s.split_whitespace().map(String::from))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn parses_flags() {
        let c = p("--nodes 500 --churn=0.2 --duration 2h --latency 5-50 --json --min-success 0.99");
        assert_eq!(c.scenario.nodes, 500);
        assert_eq!(c.scenario.churn, 0.2);
        assert_eq!(c.scenario.duration_ms, 7_200_000);
        assert_eq!(
            (c.scenario.latency_min_ms, c.scenario.latency_max_ms),
            (5, 50)
        );
        assert!(c.json);
        assert_eq!(c.min_success, Some(0.99));
        assert!(parse(["--bogus".to_string()].into_iter()).is_err());
        assert!(parse(["--help".to_string()].into_iter()).unwrap().is_none());
        assert_eq!(parse_time_ms("1.5s").unwrap(), 1500);
        assert_eq!(parse_time_ms("30m").unwrap(), 1_800_000);
    }
}
