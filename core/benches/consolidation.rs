//! Consolidation of 1,000,000 single-label annotations (333,334 items × 3 workers out of
//! 60, 5 classes, workers 60-95% accurate) with Dawid–Skene, and the job's agreement
//! coefficients. Run with `cargo bench -p atelier-core --bench consolidation`.

use std::time::Instant;

use atelier_core::labeling::{agreement, consolidation};

fn main() {
    const ANNOTATIONS: usize = 1_000_000;
    const WORKERS: usize = 60;
    const CLASSES: usize = 5;
    let items = ANNOTATIONS.div_ceil(3);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let accuracy: Vec<f64> = (0..WORKERS).map(|w| 0.6 + 0.35 * w as f64 / WORKERS as f64).collect();
    let truth: Vec<usize> = (0..items).map(|_| (next() % CLASSES as u64) as usize).collect();
    let mut annotations = Vec::with_capacity(ANNOTATIONS);
    for (i, &t) in truth.iter().enumerate() {
        for k in 0..3 {
            if annotations.len() == ANNOTATIONS {
                break;
            }
            let w = (i * 7 + k * 13) % WORKERS;
            let right = (next() % 10_000) as f64 / 10_000.0 < accuracy[w];
            let label = if right { t } else { (t + 1 + (next() % (CLASSES as u64 - 1)) as usize) % CLASSES };
            annotations.push((i, w, label));
        }
    }
    let started = Instant::now();
    let (labels, method) = consolidation::classification(&annotations, items, CLASSES);
    let consolidate = started.elapsed();
    let right = labels.iter().zip(&truth).filter(|(l, t)| l.as_ref().is_some_and(|l| l.class == **t)).count();
    let shares = {
        let mut votes = vec![0usize; items * CLASSES];
        for &(i, _, c) in &annotations {
            votes[i * CLASSES + c] += 1;
        }
        (0..items)
            .filter(|&i| {
                let row = &votes[i * CLASSES..(i + 1) * CLASSES];
                let best = row.iter().enumerate().max_by_key(|(c, v)| (**v, std::cmp::Reverse(*c))).map(|(c, _)| c);
                best == Some(truth[i])
            })
            .count()
    };
    let started = Instant::now();
    let fleiss = agreement::fleiss_kappa(&annotations);
    let alpha = agreement::krippendorff_alpha(&annotations);
    let agree = started.elapsed();
    println!("consolidation bench: {ANNOTATIONS} annotations, {items} items, {WORKERS} workers, {CLASSES} classes");
    println!(
        "  {method:?}: {:.2} s; accuracy {:.2}% (majority vote {:.2}%)",
        consolidate.as_secs_f64(),
        right as f64 / items as f64 * 100.0,
        shares as f64 / items as f64 * 100.0
    );
    println!(
        "  Fleiss' kappa {:.3}, Krippendorff's alpha {:.3}: {:.2} s",
        fleiss.unwrap_or(f64::NAN),
        alpha.unwrap_or(f64::NAN),
        agree.as_secs_f64()
    );
}
