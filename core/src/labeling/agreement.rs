//! Agreement between annotators on nominal labels: Cohen's kappa for a pair, Fleiss'
//! kappa and Krippendorff's alpha for a whole job. `None` when the data cannot say
//! (no item rated twice).

use std::collections::HashMap;

/// One label: (item, worker, class).
pub type Label = (usize, usize, usize);

/// Cohen's kappa of two workers over the items both labeled: pairs of (class by the
/// first, class by the second).
pub fn cohen_kappa(pairs: &[(usize, usize)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let classes = pairs.iter().map(|&(a, b)| a.max(b)).max().unwrap_or(0) + 1;
    let (mut first, mut second) = (vec![0.0; classes], vec![0.0; classes]);
    let mut agree = 0.0;
    for &(a, b) in pairs {
        first[a] += 1.0;
        second[b] += 1.0;
        if a == b {
            agree += 1.0;
        }
    }
    let observed = agree / n;
    let expected: f64 = first.iter().zip(&second).map(|(a, b)| (a / n) * (b / n)).sum();
    Some(kappa(observed, expected))
}

/// Agreement beyond chance; when chance alone predicts full agreement, 1 if it is
/// full and 0 otherwise.
fn kappa(observed: f64, expected: f64) -> f64 {
    if (1.0 - expected).abs() < 1e-12 {
        if observed >= 1.0 {
            1.0
        } else {
            0.0
        }
    } else {
        (observed - expected) / (1.0 - expected)
    }
}

/// Counts per item and class: `counts[item][class]`, items with fewer than two labels
/// left out (they carry no agreement).
fn rated_twice(labels: &[Label]) -> Vec<Vec<f64>> {
    let classes = labels.iter().map(|l| l.2).max().map_or(0, |m| m + 1);
    let mut by_item: HashMap<usize, Vec<f64>> = HashMap::new();
    for &(item, _, class) in labels {
        by_item.entry(item).or_insert_with(|| vec![0.0; classes])[class] += 1.0;
    }
    let mut items: Vec<(usize, Vec<f64>)> = by_item.into_iter().filter(|(_, c)| c.iter().sum::<f64>() >= 2.0).collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, c)| c).collect()
}

/// Fleiss' kappa, in its form for a varying number of raters per item.
pub fn fleiss_kappa(labels: &[Label]) -> Option<f64> {
    let items = rated_twice(labels);
    if items.is_empty() {
        return None;
    }
    let classes = items[0].len();
    let mut totals = vec![0.0; classes];
    let mut all = 0.0;
    let mut agreement = 0.0;
    for counts in &items {
        let n: f64 = counts.iter().sum();
        agreement += (counts.iter().map(|c| c * c).sum::<f64>() - n) / (n * (n - 1.0));
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
        all += n;
    }
    let observed = agreement / items.len() as f64;
    let expected: f64 = totals.iter().map(|t| (t / all) * (t / all)).sum();
    Some(kappa(observed, expected))
}

/// Krippendorff's alpha for nominal data; items with one label are not pairable and
/// left out, as the coefficient prescribes.
pub fn krippendorff_alpha(labels: &[Label]) -> Option<f64> {
    let items = rated_twice(labels);
    if items.is_empty() {
        return None;
    }
    let classes = items[0].len();
    // The coincidence matrix: o[c][k] = sum over items of (c-k pairs) / (m - 1).
    let mut o = vec![vec![0.0; classes]; classes];
    for counts in &items {
        let m: f64 = counts.iter().sum();
        for c in 0..classes {
            for k in 0..classes {
                let pairs = if c == k { counts[c] * (counts[c] - 1.0) } else { counts[c] * counts[k] };
                o[c][k] += pairs / (m - 1.0);
            }
        }
    }
    let marginals: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = marginals.iter().sum();
    let mut disagreement = 0.0;
    let mut chance = 0.0;
    for c in 0..classes {
        for k in 0..classes {
            if c != k {
                disagreement += o[c][k];
                chance += marginals[c] * marginals[k];
            }
        }
    }
    Some(if chance == 0.0 { 1.0 } else { 1.0 - (n - 1.0) * disagreement / chance })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels from a table of counts per item and class, workers numbered per item.
    fn from_counts(table: &[&[usize]]) -> Vec<Label> {
        let mut labels = Vec::new();
        for (item, row) in table.iter().enumerate() {
            let mut worker = 0;
            for (class, &count) in row.iter().enumerate() {
                for _ in 0..count {
                    labels.push((item, worker, class));
                    worker += 1;
                }
            }
        }
        labels
    }

    #[test]
    fn cohen_kappa_matches_the_textbook_example() {
        // 50 items: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: p_o 0.7, p_e 0.5.
        let mut pairs = vec![(1, 1); 20];
        pairs.extend([(1, 0); 5]);
        pairs.extend([(0, 1); 10]);
        pairs.extend([(0, 0); 15]);
        assert!((cohen_kappa(&pairs).expect("kappa") - 0.4).abs() < 1e-12);
        assert_eq!(cohen_kappa(&[(2, 2), (2, 2)]), Some(1.0));
        assert_eq!(cohen_kappa(&[]), None);
    }

    #[test]
    fn fleiss_kappa_matches_fleiss_1971_worked_example() {
        // The 10 subjects × 14 raters × 5 categories example: kappa 0.210.
        let table: &[&[usize]] = &[
            &[0, 0, 0, 0, 14],
            &[0, 2, 6, 4, 2],
            &[0, 0, 3, 5, 6],
            &[0, 3, 9, 2, 0],
            &[2, 2, 8, 1, 1],
            &[7, 7, 0, 0, 0],
            &[3, 2, 6, 3, 0],
            &[2, 5, 3, 2, 2],
            &[6, 5, 2, 1, 0],
            &[0, 2, 2, 3, 7],
        ];
        let kappa = fleiss_kappa(&from_counts(table)).expect("kappa");
        assert!((kappa - 0.2099).abs() < 1e-3, "{kappa}");
    }

    #[test]
    fn krippendorff_alpha_matches_the_reference_example() {
        // Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers,
        // 12 units, values 1-5 with gaps; nominal alpha 0.743.
        let observers: [[Option<usize>; 12]; 4] = [
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(1), Some(4), Some(1), Some(2), None, None, None],
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(2), Some(4), Some(1), Some(2), Some(5), None, Some(3)],
            [None, Some(3), Some(3), Some(3), Some(2), Some(3), Some(4), Some(2), Some(2), Some(5), Some(1), None],
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(4), Some(4), Some(1), Some(2), Some(5), Some(1), None],
        ];
        let mut labels = Vec::new();
        for (worker, row) in observers.iter().enumerate() {
            for (item, value) in row.iter().enumerate() {
                if let Some(v) = value {
                    labels.push((item, worker, *v));
                }
            }
        }
        let alpha = krippendorff_alpha(&labels).expect("alpha");
        assert!((alpha - 0.743).abs() < 1e-3, "{alpha}");
    }

    #[test]
    fn unanimous_labels_agree_fully() {
        let labels: Vec<Label> = (0..10).flat_map(|i| (0..3).map(move |w| (i, w, i % 2))).collect();
        assert_eq!(fleiss_kappa(&labels), Some(1.0));
        assert_eq!(krippendorff_alpha(&labels), Some(1.0));
        // Nothing rated twice: nothing to say.
        assert_eq!(fleiss_kappa(&[(0, 0, 1), (1, 0, 0)]), None);
    }
}
