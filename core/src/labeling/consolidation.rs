//! Consolidation: turning several workers' annotations of an item into one label with a
//! confidence in [0, 1].
//!
//! - Single-label classification: Dawid–Skene expectation-maximization, which learns a
//!   confusion matrix per worker, so a reliable worker outweighs two careless ones;
//!   majority vote when there is too little overlap to estimate reliabilities.
//! - Multi-label classification: a vote per class.
//! - Bounding boxes: boxes matched across workers by IoU, clusters with majority
//!   support kept and averaged.
//! - Named entities: spans clustered by overlap; the most common boundaries and the
//!   majority label win.
//!
//! An item labeled by one worker gets confidence 0: nothing confirms it.

use std::collections::HashMap;

/// Below this many items with two or more annotations, worker reliabilities cannot be
/// estimated and majority vote is used.
pub const MIN_ITEMS_FOR_EM: usize = 10;
const MAX_ITERATIONS: usize = 50;
const TOLERANCE: f64 = 1e-6;
/// Pseudo-count added to each confusion cell, so an unseen confusion is unlikely, not
/// impossible.
const SMOOTHING: f64 = 0.01;

/// One single-label annotation: (item, worker, class).
pub type Annotation = (usize, usize, usize);

/// The consolidated label of an item.
#[derive(Debug, Clone, PartialEq)]
pub struct Consolidated {
    pub class: usize,
    pub confidence: f64,
    /// How many annotations the item had.
    pub annotations: usize,
}

/// Which method produced the labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    DawidSkene,
    MajorityVote,
}

/// Consolidates single-label classification. `items` and `classes` bound the indices
/// used in `annotations`; items without annotations get `None`.
pub fn classification(annotations: &[Annotation], items: usize, classes: usize) -> (Vec<Option<Consolidated>>, Method) {
    let mut counts = vec![0usize; items];
    for &(i, _, _) in annotations {
        counts[i] += 1;
    }
    let overlapping = counts.iter().filter(|&&c| c >= 2).count();
    let (posterior, method) = if overlapping >= MIN_ITEMS_FOR_EM && classes >= 2 {
        (dawid_skene(annotations, items, classes), Method::DawidSkene)
    } else {
        (vote_shares(annotations, items, classes), Method::MajorityVote)
    };
    let labels = (0..items)
        .map(|i| {
            if counts[i] == 0 {
                return None;
            }
            let row = &posterior[i * classes..(i + 1) * classes];
            // Lowest class index wins a tie, so results do not depend on worker order.
            let (class, p) = row
                .iter()
                .enumerate()
                .fold((0, f64::MIN), |best, (c, &p)| if p > best.1 + 1e-12 { (c, p) } else { best });
            let confidence = if counts[i] == 1 { 0.0 } else { p.clamp(0.0, 1.0) };
            Some(Consolidated { class, confidence, annotations: counts[i] })
        })
        .collect();
    (labels, method)
}

/// Each item's share of votes per class, `items × classes` row-major.
fn vote_shares(annotations: &[Annotation], items: usize, classes: usize) -> Vec<f64> {
    let mut t = vec![0.0; items * classes];
    let mut n = vec![0.0; items];
    for &(i, _, c) in annotations {
        t[i * classes + c] += 1.0;
        n[i] += 1.0;
    }
    for i in 0..items {
        if n[i] > 0.0 {
            for c in 0..classes {
                t[i * classes + c] /= n[i];
            }
        }
    }
    t
}

/// Dawid & Skene (1979): the posterior class probabilities of each item, row-major.
/// Starts from vote shares; each iteration re-estimates class priors and every worker's
/// confusion matrix (M step), then the items' posteriors (E step), until they settle.
fn dawid_skene(annotations: &[Annotation], items: usize, classes: usize) -> Vec<f64> {
    let workers = annotations.iter().map(|a| a.1).max().map_or(0, |w| w + 1);
    let mut t = vote_shares(annotations, items, classes);
    let mut confusion = vec![0.0; workers * classes * classes];
    let mut log_confusion = vec![0.0; workers * classes * classes];
    let mut prior = vec![0.0; classes];
    let mut next = vec![0.0; items * classes];
    let mut labeled = vec![false; items];
    for &(i, _, _) in annotations {
        labeled[i] = true;
    }
    for _ in 0..MAX_ITERATIONS {
        // M step.
        confusion.iter_mut().for_each(|v| *v = SMOOTHING);
        for &(i, w, l) in annotations {
            for k in 0..classes {
                confusion[(w * classes + k) * classes + l] += t[i * classes + k];
            }
        }
        for row in confusion.chunks_mut(classes) {
            let total: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= total);
        }
        for (lv, v) in log_confusion.iter_mut().zip(&confusion) {
            *lv = v.ln();
        }
        prior.iter_mut().for_each(|p| *p = SMOOTHING);
        for i in (0..items).filter(|&i| labeled[i]) {
            for k in 0..classes {
                prior[k] += t[i * classes + k];
            }
        }
        let total: f64 = prior.iter().sum();
        prior.iter_mut().for_each(|p| *p /= total);
        // E step, in logs.
        for i in 0..items {
            for k in 0..classes {
                next[i * classes + k] = prior[k].ln();
            }
        }
        for &(i, w, l) in annotations {
            for k in 0..classes {
                next[i * classes + k] += log_confusion[(w * classes + k) * classes + l];
            }
        }
        let mut change: f64 = 0.0;
        for i in 0..items {
            let row = &mut next[i * classes..(i + 1) * classes];
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            row.iter_mut().for_each(|v| *v = (*v - max).exp());
            let sum: f64 = row.iter().sum();
            for k in 0..classes {
                let p = if labeled[i] { row[k] / sum } else { 0.0 };
                change = change.max((p - t[i * classes + k]).abs());
                t[i * classes + k] = p;
            }
        }
        if change < TOLERANCE {
            break;
        }
    }
    t
}

/// Multi-label classification: each class is in the label when at least half of the
/// item's workers chose it; its confidence is its vote share (0 with one worker).
/// `selections` holds (item, worker, chosen classes).
pub fn multi_label(
    selections: &[(usize, usize, Vec<usize>)],
    items: usize,
    classes: usize,
) -> Vec<Option<Vec<(usize, f64)>>> {
    let mut votes = vec![0.0; items * classes];
    let mut workers = vec![0usize; items];
    for (i, _, chosen) in selections {
        workers[*i] += 1;
        for &c in chosen {
            votes[i * classes + c] += 1.0;
        }
    }
    (0..items)
        .map(|i| {
            (workers[i] > 0).then(|| {
                let n = workers[i] as f64;
                (0..classes)
                    .filter(|&c| votes[i * classes + c] * 2.0 >= n && votes[i * classes + c] > 0.0)
                    .map(|c| (c, if workers[i] == 1 { 0.0 } else { votes[i * classes + c] / n }))
                    .collect()
            })
        })
        .collect()
}

/// A bounding box in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub class: usize,
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl BoundingBox {
    pub fn iou(&self, other: &BoundingBox) -> f64 {
        let x1 = self.left.max(other.left);
        let y1 = self.top.max(other.top);
        let x2 = (self.left + self.width).min(other.left + other.width);
        let y2 = (self.top + self.height).min(other.top + other.height);
        let intersection = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
        let union = self.width * self.height + other.width * other.height - intersection;
        if union <= 0.0 {
            0.0
        } else {
            intersection / union
        }
    }
}

/// A consolidated box and its confidence.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsolidatedBox {
    pub bbox: BoundingBox,
    pub confidence: f64,
    /// How many workers drew it.
    pub support: usize,
}

/// Boxes of one item from `workers` workers: (worker, box). A box joins the cluster of
/// its class whose running average it overlaps most (IoU ≥ `min_iou`) and that has no
/// box of the same worker yet; clusters drawn by at least half the workers are kept,
/// averaged, with confidence = support share × mean IoU with the average.
pub fn boxes(drawn: &[(usize, BoundingBox)], workers: usize, min_iou: f64) -> Vec<ConsolidatedBox> {
    let mut order: Vec<&(usize, BoundingBox)> = drawn.iter().collect();
    // Large boxes first, then by position: the result does not depend on input order.
    order.sort_by(|a, b| {
        (b.1.width * b.1.height)
            .total_cmp(&(a.1.width * a.1.height))
            .then(a.1.left.total_cmp(&b.1.left))
            .then(a.1.top.total_cmp(&b.1.top))
            .then(a.0.cmp(&b.0))
    });
    let mut clusters: Vec<(BoundingBox, Vec<(usize, BoundingBox)>)> = Vec::new();
    for &&(worker, b) in &order {
        let best = clusters
            .iter()
            .enumerate()
            .filter(|(_, (mean, members))| mean.class == b.class && members.iter().all(|m| m.0 != worker))
            .map(|(n, (mean, _))| (n, mean.iou(&b)))
            .filter(|(_, iou)| *iou >= min_iou)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((n, _)) => {
                clusters[n].1.push((worker, b));
                clusters[n].0 = average(&clusters[n].1);
            }
            None => clusters.push((b, vec![(worker, b)])),
        }
    }
    let workers = workers.max(1);
    clusters
        .into_iter()
        .filter(|(_, members)| members.len() * 2 >= workers)
        .map(|(mean, members)| {
            let mean_iou = members.iter().map(|(_, b)| b.iou(&mean)).sum::<f64>() / members.len() as f64;
            let confidence = if workers == 1 { 0.0 } else { members.len() as f64 / workers as f64 * mean_iou };
            ConsolidatedBox { bbox: mean, confidence, support: members.len() }
        })
        .collect()
}

fn average(members: &[(usize, BoundingBox)]) -> BoundingBox {
    let n = members.len() as f64;
    let sum = |f: fn(&BoundingBox) -> f64| members.iter().map(|(_, b)| f(b)).sum::<f64>() / n;
    BoundingBox {
        class: members[0].1.class,
        left: sum(|b| b.left),
        top: sum(|b| b.top),
        width: sum(|b| b.width),
        height: sum(|b| b.height),
    }
}

/// A named-entity span: characters `start..end` of the text, with a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub label: usize,
}

/// A consolidated span and its confidence.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsolidatedSpan {
    pub span: Span,
    pub confidence: f64,
    pub support: usize,
}

/// Spans of one text from `workers` workers: (worker, span). Overlapping spans of
/// different workers form a cluster; clusters marked by at least half the workers are
/// kept with the most common boundaries and the majority label; confidence = support
/// share × the share of the winning label.
pub fn spans(marked: &[(usize, Span)], workers: usize) -> Vec<ConsolidatedSpan> {
    let mut order: Vec<&(usize, Span)> = marked.iter().collect();
    order.sort_by_key(|(w, s)| (s.start, s.end, s.label, *w));
    // (start, end of the union so far, the members)
    type Cluster = (usize, usize, Vec<(usize, Span)>);
    let mut clusters: Vec<Cluster> = Vec::new();
    for &&(worker, s) in &order {
        let joined = clusters
            .iter_mut()
            .find(|(start, end, members)| s.start < *end && *start < s.end && members.iter().all(|m| m.0 != worker));
        match joined {
            Some((_, end, members)) => {
                *end = (*end).max(s.end);
                members.push((worker, s));
            }
            None => clusters.push((s.start, s.end, vec![(worker, s)])),
        }
    }
    let workers = workers.max(1);
    clusters
        .into_iter()
        .filter(|(_, _, members)| members.len() * 2 >= workers)
        .map(|(_, _, members)| {
            let (start, end) = mode(members.iter().map(|(_, s)| (s.start, s.end)));
            let label = mode(members.iter().map(|(_, s)| s.label));
            let agreeing = members.iter().filter(|(_, s)| s.label == label).count();
            let confidence = if workers == 1 {
                0.0
            } else {
                members.len() as f64 / workers as f64 * agreeing as f64 / members.len() as f64
            };
            ConsolidatedSpan { span: Span { start, end, label }, confidence, support: members.len() }
        })
        .collect()
}

/// The most frequent value; the smallest among equally frequent ones.
fn mode<T: Ord + Copy + std::hash::Hash>(values: impl Iterator<Item = T>) -> T {
    let mut counts: HashMap<T, usize> = HashMap::new();
    let mut first = None;
    for v in values {
        first.get_or_insert(v);
        *counts.entry(v).or_default() += 1;
    }
    let mut best: Vec<(usize, T)> = counts.into_iter().map(|(v, c)| (c, v)).collect();
    best.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    best.first().map(|(_, v)| *v).or(first).expect("mode of an empty cluster")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 50 items, 5 workers each: workers 0 and 1 are always right; workers 2-4 are
    /// right 60% of the time, and on every tenth item all three are wrong together, so
    /// majority vote gets those 5 items wrong.
    fn two_experts_three_careless() -> (Vec<Annotation>, Vec<usize>) {
        let truth: Vec<usize> = (0..50).map(|i| i % 2).collect();
        let mut annotations = Vec::new();
        let mut others = 0;
        for (i, &t) in truth.iter().enumerate() {
            annotations.push((i, 0, t));
            annotations.push((i, 1, t));
            // Which careless worker errs: all of them on every tenth item, one in turn
            // on the others.
            let wrong_one = if i % 10 == 0 {
                None
            } else {
                others += 1;
                Some(2 + others % 3)
            };
            for w in 2..5 {
                let right = wrong_one.is_some_and(|x| x != w);
                annotations.push((i, w, if right { t } else { 1 - t }));
            }
        }
        (annotations, truth)
    }

    #[test]
    fn dawid_skene_trusts_the_reliable_worker_where_majority_vote_fails() {
        let (annotations, truth) = two_experts_three_careless();
        let majority = vote_shares(&annotations, 50, 2);
        let majority_right = (0..50).filter(|&i| (majority[i * 2 + 1] > 0.5) as usize == truth[i]).count();
        assert_eq!(majority_right, 45);
        let (labels, method) = classification(&annotations, 50, 2);
        assert_eq!(method, Method::DawidSkene);
        let right = labels.iter().zip(&truth).filter(|(l, t)| l.as_ref().is_some_and(|l| l.class == **t)).count();
        assert_eq!(right, 50);
        // Where the careless two agree with the reliable one, confidence is high.
        assert!(labels[3].as_ref().is_some_and(|l| l.confidence > 0.99), "{:?}", labels[3]);
    }

    #[test]
    fn permuting_workers_or_annotations_changes_nothing() {
        let (annotations, _) = two_experts_three_careless();
        let (base, _) = classification(&annotations, 50, 2);
        let mut permuted: Vec<Annotation> = annotations.iter().map(|&(i, w, c)| (i, (w + 3) % 5, c)).collect();
        permuted.reverse();
        let (other, _) = classification(&permuted, 50, 2);
        for (a, b) in base.iter().zip(&other) {
            let (a, b) = (a.as_ref().expect("label"), b.as_ref().expect("label"));
            assert_eq!(a.class, b.class);
            assert!((a.confidence - b.confidence).abs() < 1e-9);
        }
    }

    #[test]
    fn unanimity_is_full_confidence_and_a_single_worker_none() {
        let mut annotations: Vec<Annotation> = (0..12).flat_map(|i| (0..3).map(move |w| (i, w, i % 3))).collect();
        annotations.push((12, 0, 2));
        let (labels, _) = classification(&annotations, 14, 3);
        for (i, label) in labels.iter().enumerate().take(12) {
            let label = label.as_ref().expect("label");
            assert_eq!(label.class, i % 3);
            assert!(label.confidence > 0.999, "{label:?}");
        }
        assert_eq!(labels[12], Some(Consolidated { class: 2, confidence: 0.0, annotations: 1 }));
        assert_eq!(labels[13], None);
    }

    #[test]
    fn few_overlapping_items_fall_back_to_majority_vote() {
        let annotations = [(0, 0, 1), (0, 1, 1), (0, 2, 0), (1, 0, 0), (1, 1, 0)];
        let (labels, method) = classification(&annotations, 2, 2);
        assert_eq!(method, Method::MajorityVote);
        let first = labels[0].as_ref().expect("label");
        assert_eq!(first.class, 1);
        assert!((first.confidence - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn multi_label_keeps_classes_half_the_workers_chose() {
        let selections = vec![(0, 0, vec![0, 2]), (0, 1, vec![2]), (0, 2, vec![1, 2]), (1, 0, vec![1])];
        let out = multi_label(&selections, 2, 3);
        assert_eq!(out[0], Some(vec![(2, 1.0)]));
        assert_eq!(out[1], Some(vec![(1, 0.0)]));
    }

    fn bx(class: usize, left: f64, top: f64, width: f64, height: f64) -> BoundingBox {
        BoundingBox { class, left, top, width, height }
    }

    #[test]
    fn boxes_are_matched_by_iou_and_averaged() {
        let drawn = [
            (0, bx(0, 10.0, 10.0, 100.0, 50.0)),
            (1, bx(0, 12.0, 8.0, 100.0, 54.0)),
            (2, bx(0, 8.0, 12.0, 100.0, 46.0)),
            // Only one worker saw this one: dropped.
            (0, bx(1, 300.0, 300.0, 20.0, 20.0)),
            // Same place, other class: its own cluster, also unsupported.
            (1, bx(1, 10.0, 10.0, 100.0, 50.0)),
        ];
        let out = boxes(&drawn, 3, 0.5);
        assert_eq!(out.len(), 1, "{out:?}");
        let b = &out[0];
        assert_eq!(b.support, 3);
        assert_eq!(b.bbox, bx(0, 10.0, 10.0, 100.0, 50.0));
        assert!(b.confidence > 0.85 && b.confidence <= 1.0, "{b:?}");
        // Input order does not matter.
        let mut reversed = drawn.to_vec();
        reversed.reverse();
        assert_eq!(boxes(&reversed, 3, 0.5), out);
        assert!((bx(0, 0.0, 0.0, 10.0, 10.0).iou(&bx(0, 5.0, 0.0, 10.0, 10.0)) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn spans_take_the_common_boundaries_and_the_majority_label() {
        let s = |start, end, label| Span { start, end, label };
        let marked = [
            (0, s(0, 5, 0)),
            (1, s(0, 5, 0)),
            (2, s(0, 6, 1)),
            (0, s(10, 15, 2)),
            // Marked by one of three: dropped.
        ];
        let out = spans(&marked, 3);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].span, s(0, 5, 0));
        assert_eq!(out[0].support, 3);
        assert!((out[0].confidence - 2.0 / 3.0).abs() < 1e-12);
    }
}
