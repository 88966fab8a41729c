//! `llm-sidecar chat [--model M] [--image F|URL]... [--file F.pdf]... [--reasoning E] [--json |
//! --json-schema F] "prompt"`: stream one answer to the terminal (reasoning, when streamed, goes to
//! stderr), then print usage and cost on stderr. Ctrl-C sends `$/cancel` and prints what was
//! billed; a second Ctrl-C quits at once.

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
    /// Attach an image: a file (png, jpg, gif, webp) or an http(s) URL (repeatable)
    #[arg(long, value_name = "FILE|URL")]
    image: Vec<String>,
    /// Attach a PDF document (repeatable)
    #[arg(long, value_name = "FILE")]
    file: Vec<std::path::PathBuf>,
    /// Ask the model to reason first (its thinking is shown on stderr)
    #[arg(long, value_parser = ["low", "medium", "high"])]
    reasoning: Option<String>,
    /// Ask for a JSON object as the answer
    #[arg(long, conflicts_with = "json_schema")]
    json: bool,
    /// Ask for JSON matching this JSON Schema file (its name is the file's stem)
    #[arg(long, value_name = "FILE")]
    json_schema: Option<std::path::PathBuf>,
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
    let content = if args.image.is_empty() && args.file.is_empty() {
        Value::from(prompt)
    } else {
        let mut parts = vec![map(vec![("type", Value::from("text")), ("text", Value::from(prompt))])];
        for i in &args.image {
            parts.push(image_part(i)?);
        }
        for f in &args.file {
            parts.push(document_part(f)?);
        }
        Value::Array(parts)
    };
    let message = map(vec![("role", Value::from("user")), ("content", content)]);
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
    if let Some(e) = &args.reasoning {
        entries.push(("reasoning", map(vec![("effort", Value::from(e.as_str()))])));
    }
    if args.json {
        entries.push(("response_format", map(vec![("type", Value::from("json_object"))])));
    }
    if let Some(path) = &args.json_schema {
        entries.push(("response_format", schema_format(path)?));
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
                    printed_any |= show_chunk(&mut out, params.get(1))?;
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
            printed_any |= show_chunk(&mut out, params.get(1))?;
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

/// Prints a chunk: text to `out` (true when it printed some), reasoning to stderr.
fn show_chunk(out: &mut impl Write, body: Option<&Value>) -> Result<bool> {
    let text = |k: &str| body.and_then(|p| field(p, k)).and_then(Value::as_str);
    if let Some(delta) = text("delta") {
        out.write_all(delta.as_bytes())?;
        out.flush()?;
        return Ok(!delta.is_empty());
    }
    if let Some(thinking) = text("reasoning_delta") {
        eprint!("{thinking}");
    }
    Ok(false)
}

/// The media type of an image file, from its extension.
fn image_type(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => return None,
    })
}

fn base64_file(path: &std::path::Path) -> Result<String> {
    use base64::Engine as _;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `--image`: a URL part, or the file's bytes.
fn image_part(arg: &str) -> Result<Value> {
    if arg.starts_with("https://") || arg.starts_with("http://") {
        return Ok(map(vec![("type", Value::from("image")), ("url", Value::from(arg))]));
    }
    let path = std::path::Path::new(arg);
    let Some(media_type) = image_type(path) else {
        bail!("--image {arg}: not a .png, .jpg, .gif or .webp file, nor an http(s) URL");
    };
    Ok(map(vec![
        ("type", Value::from("image")),
        ("data", Value::from(base64_file(path)?)),
        ("media_type", Value::from(media_type)),
    ]))
}

/// `--file`: a PDF document part.
fn document_part(path: &std::path::Path) -> Result<Value> {
    if !path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("pdf")) {
        bail!("--file {}: only PDF documents can be attached", path.display());
    }
    let mut entries = vec![
        ("type", Value::from("document")),
        ("data", Value::from(base64_file(path)?)),
        ("media_type", Value::from("application/pdf")),
    ];
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        entries.push(("name", Value::from(name)));
    }
    Ok(map(entries))
}

/// `--json-schema FILE`: `{type: json_schema, name: <file stem>, schema}`.
fn schema_format(path: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let schema: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let name: String = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("answer")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .take(64)
        .collect();
    let schema = rmpv::ext::to_value(&schema).context("cannot encode the schema")?;
    Ok(map(vec![("type", Value::from("json_schema")), ("name", Value::from(name)), ("schema", schema)]))
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
    match field(r, "cost_source").and_then(Value::as_str) {
        Some("unknown") => line.push_str(" (no price for this model)"),
        Some("provider") => line.push_str(" (as the provider reported)"),
        _ => {}
    }
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
