//! `llm-sidecar usage`: a table of usage (by provider, model, app or key source, per day or
//! month) with a bar per row and the projected month-end; `usage export|import|clear`.

use super::status::to_json;
use super::Cli;
use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use llm_sidecar::rpc::client::field;
use rmpv::Value;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const BAR_WIDTH: usize = 24;
const IMPORT_CHUNK: usize = 1000;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UsageArgs {
    #[command(subcommand)]
    command: Option<UsageCommand>,
    /// Group rows by
    #[arg(long, value_enum, default_value_t = By::Provider)]
    by: By,
    /// Calendar period (UTC)
    #[arg(long, value_enum, default_value_t = PeriodArg::Month)]
    period: PeriodArg,
    /// First period (YYYY-MM-DD for days, YYYY-MM for months; default: the current one)
    #[arg(long)]
    from: Option<String>,
    /// Last period (default: the current one)
    #[arg(long)]
    to: Option<String>,
    /// Print the raw summary as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum UsageCommand {
    /// Write every record to a file (or stdout) in the versioned export format (JSON Lines)
    Export {
        /// Output file (default: stdout)
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Import records from an export file; records already present are skipped
    Import { file: PathBuf },
    /// Remove the local usage history (records not yet synced are kept unless --force)
    Clear {
        /// Also drop records that were never synced
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum By {
    Provider,
    Model,
    App,
    /// `key-source` or `key_source` (the field's name in records)
    #[value(alias = "key_source")]
    KeySource,
    User,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PeriodArg {
    Day,
    Month,
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

fn num(v: &Value, name: &str) -> i64 {
    field(v, name)
        .and_then(|x| x.as_i64().or_else(|| x.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX))))
        .unwrap_or(0)
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).and_then(Value::as_str).unwrap_or("?")
}

/// `$1,234.56`; amounts under a cent keep four decimals.
pub fn money(micro: i64) -> String {
    let usd = micro as f64 / 1_000_000.0;
    if micro != 0 && micro.abs() < 10_000 {
        format!("${usd:.4}")
    } else {
        let cents = (usd * 100.0).round() as i64;
        format!("${}.{:02}", thousands(cents / 100), (cents % 100).abs())
    }
}

pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn bar(value: i64, max: i64) -> String {
    if value <= 0 || max <= 0 {
        return String::new();
    }
    let n = ((value as f64 / max as f64) * BAR_WIDTH as f64).round() as usize;
    "█".repeat(n.clamp(1, BAR_WIDTH))
}

pub async fn run(cli: &Cli, args: &UsageArgs) -> Result<ExitCode> {
    match &args.command {
        Some(UsageCommand::Export { output }) => export(cli, output.as_ref()).await,
        Some(UsageCommand::Import { file }) => import(cli, file).await,
        Some(UsageCommand::Clear { force }) => clear(cli, *force).await,
        None => table(cli, args).await,
    }
}

async fn table(cli: &Cli, args: &UsageArgs) -> Result<ExitCode> {
    let client = cli.connect().await?;
    let (by, by_name) = match args.by {
        By::Provider => ("provider", "provider"),
        By::Model => ("model", "model"),
        By::App => ("app", "app"),
        By::KeySource => ("key_source", "key source"),
        By::User => ("user", "user"),
    };
    let period = match args.period {
        PeriodArg::Day => "day",
        PeriodArg::Month => "month",
    };
    let mut p = vec![("period", Value::from(period)), ("group_by", Value::from(by))];
    if let Some(f) = &args.from {
        p.push(("from", f.as_str().into()));
    }
    if let Some(t) = &args.to {
        p.push(("to", t.as_str().into()));
    }
    let s = client.call("usage.summary", vec![map(p)]).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&to_json(&s))?);
        return Ok(ExitCode::SUCCESS);
    }
    let (from, to) = (text(&s, "from"), text(&s, "to"));
    let span = if from == to { from.to_string() } else { format!("{from} – {to}") };
    outln!("Usage for {span} (UTC) by {by_name}");
    let groups = field(&s, "groups").and_then(Value::as_array).cloned().unwrap_or_default();
    let totals = field(&s, "totals").cloned().unwrap_or(Value::Nil);
    if groups.is_empty() {
        outln!("  no usage recorded");
    } else {
        let by_cost = num(&totals, "cost_microusd") > 0;
        let measure = |g: &Value| if by_cost { num(g, "cost_microusd") } else { num(g, "total_tokens") };
        let max = groups.iter().map(measure).max().unwrap_or(0);
        let width = groups.iter().map(|g| text(g, "key").chars().count()).max().unwrap_or(0).clamp(by_name.len(), 48);
        outln!("{:<width$}  {:>9}  {:>13}  {:>11}", by_name, "requests", "tokens", "cost");
        for g in &groups {
            let key: String = text(g, "key").chars().take(48).collect();
            let key = if key.is_empty() { "-".to_string() } else { key };
            outln!(
                "{:<width$}  {:>9}  {:>13}  {:>11}  {}",
                key,
                thousands(num(g, "requests")),
                thousands(num(g, "total_tokens")),
                money(num(g, "cost_microusd")),
                bar(measure(g), max)
            );
        }
        outln!(
            "{:<width$}  {:>9}  {:>13}  {:>11}",
            "total",
            thousands(num(&totals, "requests")),
            thousands(num(&totals, "total_tokens")),
            money(num(&totals, "cost_microusd"))
        );
    }
    if let Some(p) = field(&s, "projected_month_end") {
        let elapsed = field(p, "elapsed_fraction").and_then(Value::as_f64).unwrap_or(0.0);
        outln!(
            "Projected month-end ({}, {:.0}% elapsed): {} · {} tokens · {} requests",
            text(p, "month"),
            elapsed * 100.0,
            money(num(p, "cost_microusd")),
            thousands(num(p, "total_tokens")),
            thousands(num(p, "requests"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(cli: &Cli, output: Option<&PathBuf>) -> Result<ExitCode> {
    let client = cli.connect().await?;
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut cursor: Option<String> = None;
    let mut count = 0u64;
    loop {
        let mut p = vec![("limit", Value::from(1000))];
        if let Some(c) = &cursor {
            p.push(("cursor", c.as_str().into()));
        }
        let page = client.call("usage.export", vec![map(p)]).await?;
        if count == 0 && cursor.is_none() {
            let header = serde_json::json!({
                "format": text(&page, "format"),
                "version": num(&page, "version"),
                "device_id": text(&page, "device_id"),
                "exported_at_ms": num(&page, "exported_at_ms"),
            });
            writeln!(out, "{header}")?;
        }
        for r in field(&page, "records").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            writeln!(out, "{}", to_json(r))?;
            count += 1;
        }
        match field(&page, "next_cursor").and_then(Value::as_str) {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    out.flush()?;
    if output.is_some() {
        eprintln!("exported {count} records");
    }
    Ok(ExitCode::SUCCESS)
}

async fn import(cli: &Cli, file: &PathBuf) -> Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut lines = std::io::BufReader::new(f).lines();
    let header_line = lines.next().transpose()?.unwrap_or_default();
    let header: serde_json::Value = serde_json::from_str(&header_line)
        .with_context(|| format!("{}: line 1 is not an export header", file.display()))?;
    let format = header["format"].as_str().unwrap_or_default().to_string();
    let version = header["version"].as_u64().unwrap_or(0);
    let client = cli.connect().await?;
    let (mut imported, mut duplicates) = (0i64, 0i64);
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
    let mut line_no = 1usize;
    let send = |chunk: Vec<Value>| {
        let args = map(vec![
            ("format", format.as_str().into()),
            ("version", version.into()),
            ("records", Value::Array(chunk)),
        ]);
        let client = &client;
        async move { client.call("usage.import", vec![args]).await }
    };
    for line in lines {
        line_no += 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let j: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: line {line_no} is not JSON", file.display()))?;
        chunk.push(llm_sidecar::rpc::json_to_value(&j));
        if chunk.len() == IMPORT_CHUNK {
            let r = send(std::mem::take(&mut chunk)).await?;
            imported += num(&r, "imported");
            duplicates += num(&r, "duplicates");
        }
    }
    if !chunk.is_empty() || (imported == 0 && duplicates == 0) {
        let r = send(chunk).await?;
        imported += num(&r, "imported");
        duplicates += num(&r, "duplicates");
    }
    outln!("imported {imported} records ({duplicates} already present)");
    Ok(ExitCode::SUCCESS)
}

async fn clear(cli: &Cli, force: bool) -> Result<ExitCode> {
    let client = cli.connect().await?;
    let r = client.call("usage.clear", vec![map(vec![("force", force.into())])]).await?;
    outln!("removed {} records from the local history", num(&r, "records_removed"));
    if force {
        outln!(
            "dropped {} unsynced records and {} dead letters",
            num(&r, "outbox_removed"),
            num(&r, "dead_letters_removed")
        );
    } else if num(&r, "pending_kept") > 0 {
        outln!("kept {} records that are not synced yet (they will still be sent)", num(&r, "pending_kept"));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_thousands() {
        assert_eq!(money(2_500_000), "$2.50");
        assert_eq!(money(1_234_567_890), "$1,234.57");
        assert_eq!(money(1_200), "$0.0012");
        assert_eq!(money(0), "$0.00");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(bar(1, 1000).chars().count(), 1);
        assert_eq!(bar(1000, 1000).chars().count(), BAR_WIDTH);
        assert_eq!(bar(0, 1000), "");
    }
}
