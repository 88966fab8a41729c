//! `llm-sidecar chat [--model M] "prompt"`: stream one answer to the terminal, then print usage
//! and cost on stderr. Ctrl-C sends `$/cancel` and prints what was billed; a second Ctrl-C quits
//! at once.

use super::Cli;
use anyhow::{bail, Context, Result};
use llm_sidecar::rpc::client::field;
use llm_sidecar::rpc::{Client, ClientError, ErrorCode};
use rmpv::Value;
use std::io::{Read, Write};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// Route, alias or provider/model (default: the route `default`, else the first route, else
    /// the first model of a provider that has a key)
    #[arg(long, short)]
    model: Option<String>,
    /// System prompt
    #[arg(long, short)]
    system: Option<String>,
    /// Maximum output tokens
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature (0-2)
    #[arg(long)]
    temperature: Option<f64>,
    /// Wait for the whole answer instead of streaming it
    #[arg(long)]
    no_stream: bool,
    /// The prompt (words are joined with spaces); `-` or nothing reads standard input
    prompt: Vec<String>,
}

pub async fn run(cli: &Cli, args: &ChatArgs) -> Result<ExitCode> {
    let prompt = read_prompt(&args.prompt)?;
    let client = cli.connect().await?;
    let _ = client.call("daemon.hello", vec![map(vec![("app", Value::from("llm-sidecar-cli"))])]).await;
    let (model, why) = match &args.model {
        Some(m) => (m.clone(), "given with --model".to_string()),
        None => default_model(&client).await?,
    };
    let stream = !args.no_stream;
    let message = map(vec![("role", Value::from("user")), ("content", Value::from(prompt))]);
    let mut entries = vec![
        ("model", Value::from(model.as_str())),
        ("messages", Value::Array(vec![message])),
        ("stream", Value::from(stream)),
    ];
    if let Some(s) = &args.system {
        entries.push(("system", Value::from(s.as_str())));
    }
    if let Some(n) = args.max_tokens {
        entries.push(("max_tokens", Value::from(n)));
    }
    if let Some(t) = args.temperature {
        entries.push(("temperature", Value::from(t)));
    }
    let mut notes = client.take_notifications().context("notifications already taken")?;
    let (id, rx) = client.start("chat", vec![map(entries)]).await?;
    let response = Client::finish(id, rx);
    tokio::pin!(response);
    let mut out = std::io::stdout().lock();
    let mut printed_any = false;
    let mut cancelled = false;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot install the Ctrl-C handler")?;
    let result = loop {
        tokio::select! {
            biased;
            Some((method, params)) = notes.recv() => {
                if method == "chat.chunk" && params.first().and_then(Value::as_u64) == Some(u64::from(id)) {
                    if let Some(delta) = params.get(1).and_then(|p| field(p, "delta")).and_then(Value::as_str) {
                        out.write_all(delta.as_bytes())?;
                        out.flush()?;
                        printed_any = true;
                    }
                }
            }
            r = &mut response => break r,
            _ = sigint.recv() => {
                if cancelled {
                    // A second Ctrl-C ends the process without waiting.
                    std::process::exit(130);
                }
                cancelled = true;
                client.cancel(id).await?;
            }
        }
    };
    while let Ok((method, params)) = notes.try_recv() {
        if method == "chat.chunk" && params.first().and_then(Value::as_u64) == Some(u64::from(id)) {
            if let Some(delta) = params.get(1).and_then(|p| field(p, "delta")).and_then(Value::as_str) {
                out.write_all(delta.as_bytes())?;
                printed_any = true;
            }
        }
    }
    match result {
        Ok(r) => {
            if !stream {
                let content = field(&r, "content").and_then(Value::as_str).unwrap_or_default();
                out.write_all(content.as_bytes())?;
                printed_any = !content.is_empty();
            }
            if printed_any {
                writeln!(out)?;
            }
            out.flush()?;
            eprintln!("{}", summary(&r));
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Rpc(e)) => {
            if printed_any {
                writeln!(out)?;
            }
            out.flush()?;
            if e.code == ErrorCode::Cancelled {
                eprintln!("cancelled; {}", summary(&e.data));
                return Ok(ExitCode::from(130));
            }
            // Only the error, the model and why it was chosen; usage only if the provider
            // billed something for the failed call.
            eprintln!("error: {}", e.message);
            if let Some(hint) = e.data_field("upgrade").and_then(Value::as_str) {
                eprintln!("hint: {hint}");
            }
            eprintln!("model: {model} ({why})");
            if billed(&e.data) {
                eprintln!("billed: {}", summary(&e.data));
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a failed call's error data reports usage the provider billed.
fn billed(data: &Value) -> bool {
    let usage = field(data, "usage");
    let n = |k: &str| usage.and_then(|u| field(u, k)).and_then(Value::as_u64).unwrap_or(0);
    n("input") + n("output") > 0 || field(data, "cost_microusd").and_then(Value::as_i64).unwrap_or(0) > 0
}

fn read_prompt(words: &[String]) -> Result<String> {
    if words.is_empty() || (words.len() == 1 && words[0] == "-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the prompt from standard input")?;
        if text.trim().is_empty() {
            bail!("no prompt: give it as an argument or on standard input");
        }
        return Ok(text);
    }
    Ok(words.join(" "))
}

/// The route `default`, else the first route, else the first model of a provider with a key
/// (keyless local providers such as Ollama count), with the reason it was chosen.
async fn default_model(client: &Client) -> Result<(String, String)> {
    let list = client.call("models.list", vec![]).await?;
    let routes = field(&list, "routes").and_then(Value::as_array).cloned().unwrap_or_default();
    let name = |v: &Value| field(v, "name").and_then(Value::as_str).map(str::to_string);
    if let Some(r) = routes.iter().find(|r| name(r).as_deref() == Some("default")) {
        if let Some(n) = name(r) {
            return Ok((n, "no --model given; the route `default`".into()));
        }
    }
    if let Some(n) = routes.first().and_then(name) {
        return Ok((n, "no --model given and no route `default`; the first configured route".into()));
    }
    let providers = field(&list, "providers").and_then(Value::as_array).cloned().unwrap_or_default();
    for p in providers.iter().filter(|p| field(p, "key_present").and_then(Value::as_bool) == Some(true)) {
        let first = field(p, "models").and_then(Value::as_array).and_then(|m| m.first()).and_then(|m| field(m, "id"));
        if let (Some(provider), Some(model)) = (name(p), first.and_then(Value::as_str)) {
            let how = if field(p, "keyless").and_then(Value::as_bool) == Some(true) {
                format!("`{provider}` needs no key")
            } else {
                format!("`{provider}` has a key")
            };
            return Ok((
                format!("{provider}/{model}"),
                format!("no --model given and no route configured; the first model of the first provider usable now ({how})"),
            ));
        }
    }
    bail!("no route is configured and no provider has a key; pass --model provider/model or add a key with `llm-sidecar keys add <provider>`")
}

/// `provider/model · 12 in (3 cached) / 7 out · $0.000006 · 523 ms (first token 120 ms)`
fn summary(r: &Value) -> String {
    let s = |v: &Value, k: &str| field(v, k).and_then(Value::as_str).unwrap_or("?").to_string();
    let n = |v: &Value, k: &str| field(v, k).and_then(Value::as_u64);
    let usage = field(r, "usage").cloned().unwrap_or(Value::Nil);
    let mut line = format!("{}/{} · {} in", s(r, "provider"), s(r, "model"), n(&usage, "input").unwrap_or(0));
    if let Some(c) = n(&usage, "cached").filter(|c| *c > 0) {
        line.push_str(&format!(" ({c} cached)"));
    }
    line.push_str(&format!(" / {} out", n(&usage, "output").unwrap_or(0)));
    if let Some(rz) = n(&usage, "reasoning").filter(|c| *c > 0) {
        line.push_str(&format!(" ({rz} reasoning)"));
    }
    if field(&usage, "estimated").and_then(Value::as_bool) == Some(true) {
        line.push_str(" (estimated)");
    }
    let cost = field(r, "cost_microusd").and_then(Value::as_i64).unwrap_or(0);
    line.push_str(&format!(" · ${}.{:06}", cost / 1_000_000, (cost % 1_000_000).abs()));
    if let Some(ms) = n(r, "latency_ms") {
        line.push_str(&format!(" · {ms} ms"));
        if let Some(t) = n(r, "ttft_ms") {
            line.push_str(&format!(" (first token {t} ms)"));
        }
    }
    line
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}
