//! `cocoon worker demand`: which models a proxy is short of workers for and at what price,
//! read from its `/demand` (what GPU owners and autoscalers act on).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

/// `cocoon worker demand` flags.
#[derive(Debug, Args)]
pub struct DemandArgs {
    /// The proxy's stats URL (its `http_listen`, e.g. http://proxy.example.net:8080;
    /// default: the running devnet's proxy, from DIR/devnet.json).
    #[arg(long)]
    proxy: Option<String>,
    /// The devnet directory.
    #[arg(long, default_value = crate::devnet::DEFAULT_DIR)]
    dir: PathBuf,
    /// Print the proxy's answer as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// What a GPU owner should know of one model, in a sentence.
pub fn advice(m: &Value, recent_minutes: u64) -> String {
    let name = m["model"].as_str().unwrap_or("?");
    let recent = &m["recent"];
    let supply = &m["supply"];
    let (workers, running, max) = (
        n(&supply["workers"]),
        n(&supply["running"]),
        n(&supply["max_running"]),
    );
    let unserved = n(&recent["refused_no_worker"]) + n(&recent["refused_busy"]);
    let price = n(&recent["refused_price"]);
    if unserved > 0 {
        return format!(
            "{name}: short of workers: {unserved} requests found no free worker in the last {recent_minutes} min \
             ({workers} workers, {running}/{max} running) — a worker of this model would be used"
        );
    }
    if price > 0 {
        return format!(
            "{name}: short of cheaper workers: {price} requests were refused because every worker costs more \
             than the client accepts (up to {} = {:.2}×) — a worker at or below that coefficient would be used",
            n(&recent["highest_refused_price"]),
            n(&recent["highest_refused_price"]) as f64 / 1000.0
        );
    }
    if workers > 0 && running == 0 && n(&recent["routed"]) == 0 {
        return format!(
            "{name}: idle: {workers} workers and no request in the last {recent_minutes} min"
        );
    }
    format!("{name}: served: {workers} workers, {running}/{max} running")
}

/// Runs `cocoon worker demand`.
pub async fn run(args: DemandArgs) -> anyhow::Result<()> {
    let Some(base) = args
        .proxy
        .clone()
        .or_else(|| crate::devnet::info_text(&args.dir, "proxy_http"))
    else {
        bail!(
            "no proxy: pass --proxy http://HOST:PORT (the proxy's http_listen), or run it next to a devnet ({} has none)",
            args.dir.display()
        );
    };
    let url = format!("{}/demand", base.trim_end_matches('/'));
    let answer: Value = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?
        .error_for_status()
        .with_context(|| format!("{url} (a cocoon-rs proxy serves it)"))?
        .json()
        .await
        .with_context(|| format!("{url}: not JSON"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let minutes = n(&answer["recent_minutes"]);
    let models = answer["models"].as_array().cloned().unwrap_or_default();
    if models.is_empty() {
        println!("no model served or asked for at {base}");
        return Ok(());
    }
    println!(
        "{:<28} {:>7} {:>11} {:>12} {:>9} {:>9} {:>9} {:>10}",
        "model", "workers", "running", "coefficient", "routed", "no room", "price", "asked ≤"
    );
    for m in &models {
        let supply = &m["supply"];
        let recent = &m["recent"];
        let coefficient = match supply["lowest_coefficient"].as_u64() {
            Some(lo) => format!("{lo}–{}", n(&supply["highest_coefficient"])),
            None => "—".into(),
        };
        println!(
            "{:<28} {:>7} {:>11} {:>12} {:>9} {:>9} {:>9} {:>10}",
            m["model"].as_str().unwrap_or("?"),
            n(&supply["workers"]),
            format!("{}/{}", n(&supply["running"]), n(&supply["max_running"])),
            coefficient,
            n(&recent["routed"]),
            n(&recent["refused_no_worker"]) + n(&recent["refused_busy"]),
            n(&recent["refused_price"]),
            match n(&recent["highest_refused_price"]) {
                0 => "—".to_string(),
                c => c.to_string(),
            },
        );
    }
    println!("(requests over the last {minutes} minutes; coefficient 1000 = 1.0× the base price)");
    println!();
    for m in &models {
        println!("{}", advice(m, minutes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(supply: Value, recent: Value) -> Value {
        json!({"model": "m", "supply": supply, "recent": recent})
    }

    #[test]
    fn advice_names_what_is_short() {
        let supply = json!({"workers": 1, "running": 8, "max_running": 8});
        let busy = model(
            supply.clone(),
            json!({"refused_busy": 5, "refused_no_worker": 0}),
        );
        assert!(
            advice(&busy, 5).starts_with("m: short of workers: 5 requests"),
            "{}",
            advice(&busy, 5)
        );
        let dear = model(
            supply,
            json!({"refused_price": 3, "highest_refused_price": 1500}),
        );
        assert!(
            advice(&dear, 5).contains("up to 1500 = 1.50×"),
            "{}",
            advice(&dear, 5)
        );
        let idle = model(
            json!({"workers": 2, "running": 0, "max_running": 16}),
            json!({}),
        );
        assert!(advice(&idle, 5).starts_with("m: idle"));
    }
}
