//! Built-in tabular training throughput (samples/s on CPU), against the same MLP in
//! PyTorch on the same machine: same generated CSV, batch size, epochs and network.
//!
//! Run with `cargo bench -p atelier-agent --bench tabular`. PyTorch is taken from the
//! Python in `TORCH_PYTHON` (default `python3`); without it only Atelier's figure is
//! printed. `BENCH_ROWS` (default 20000) and `BENCH_EPOCHS` (default 5) size the run.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

const BATCH: usize = 64;
const HIDDEN: usize = 64;
const LAYERS: usize = 2;
const LR: f64 = 0.01;

fn samples_per_sec(output: &str) -> Option<f64> {
    output.lines().rev().find_map(|l| {
        l.split_whitespace().find_map(|kv| kv.strip_prefix("samples_per_sec=")).and_then(|v| v.parse().ok())
    })
}

fn write_csv(path: &Path, rows: usize) -> anyhow::Result<()> {
    let mut out = String::from("f0,f1,f2,f3,f4,f5,f6,f7,f8,f9,label\n");
    let mut seed = 1u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
    };
    for _ in 0..rows {
        let f: Vec<f64> = (0..10).map(|_| next()).collect();
        let score = f[0] + 0.5 * f[1] - f[2] * f[3];
        let cells: Vec<String> = f.iter().map(|v| format!("{v:.5}")).collect();
        out.push_str(&format!("{},{}\n", cells.join(","), if score > 0.0 { "a" } else { "b" }));
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::var("BENCH_ROWS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let epochs: usize = std::env::var("BENCH_EPOCHS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("atelier-tabular-{}", uuid::Uuid::new_v4().simple()));
    for sub in ["input/config", "input/data/train", "model", "checkpoints"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let csv = dir.join("input/data/train/data.csv");
    write_csv(&csv, rows)?;
    let hps = serde_json::json!({
        "task": "classification", "label": "label", "epochs": epochs.to_string(), "batch_size": BATCH.to_string(),
        "learning_rate": LR.to_string(), "hidden_units": HIDDEN.to_string(), "hidden_layers": LAYERS.to_string(),
        "validation_fraction": "0.2", "seed": "42"
    });
    std::fs::write(dir.join("input/config/hyperparameters.json"), hps.to_string())?;
    let output = Command::new(env!("CARGO_BIN_EXE_atelier-agent"))
        .args(["builtin", "tabular"])
        .env("SM_CHANNELS", r#"["train"]"#)
        .env("SM_CHANNEL_TRAIN", dir.join("input/data/train"))
        .env("SM_INPUT_CONFIG_DIR", dir.join("input/config"))
        .env("SM_MODEL_DIR", dir.join("model"))
        .env("SM_CHECKPOINT_DIR", dir.join("checkpoints"))
        .env("SM_NUM_GPUS", "0")
        .output()
        .context("running the built-in algorithm")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("built-in tabular failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let ours = samples_per_sec(&stdout).context("no samples_per_sec from the built-in")?;
    let accuracy =
        stdout.lines().rev().find_map(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("validation_accuracy=")));
    println!("tabular bench: {rows} rows x 10 features, 2 classes, MLP {LAYERS}x{HIDDEN}, batch {BATCH}, {epochs} epochs, CPU");
    println!(
        "  Atelier built-in (candle): {ours:.0} samples/s (final validation accuracy {})",
        accuracy.unwrap_or("?")
    );
    let python = std::env::var("TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/tabular_torch.py");
    let torch = Command::new(&python)
        .arg(&script)
        .arg(&csv)
        .args([epochs.to_string(), BATCH.to_string(), HIDDEN.to_string(), LAYERS.to_string(), LR.to_string()])
        .output();
    match torch {
        Ok(out) if out.status.success() => {
            let theirs = samples_per_sec(&String::from_utf8_lossy(&out.stdout)).unwrap_or(0.0);
            println!("  PyTorch {} (same MLP): {theirs:.0} samples/s", torch_version(&python));
            if theirs > 0.0 {
                println!("  ratio: {:.2}x PyTorch's throughput", ours / theirs);
            }
        }
        _ => println!("  PyTorch: not available in {python} (set TORCH_PYTHON to a Python with torch installed)"),
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn torch_version(python: &str) -> String {
    Command::new(python)
        .args(["-c", "import torch; print(torch.__version__, 'threads', torch.get_num_threads())"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
