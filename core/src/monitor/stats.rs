//! The statistics of model monitoring: a [`Profiler`] turns a table into a [`Baseline`],
//! [`suggest_constraints`] turns a baseline into editable [`Constraints`], and
//! [`compare`] reports how a window of captured inference inputs, profiled the same way,
//! drifts from the baseline and which constraints it breaks.
//!
//! Profiling is one streaming pass with a small, fixed amount of work per value: count,
//! missing, min, max, mean and standard deviation are exact; quantiles, histograms and the
//! drift tests use a deterministic reservoir sample, so a million rows profile in well under a
//! second and a baseline stays small enough to store as JSON (under 1 MB for 20 features).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use atelier_protocol::monitor::{
    Baseline, Constraints, FeatureBaseline, FeatureConstraint, FeatureDrift, FeatureKind, Report, Thresholds,
    Violation, ViolationKind, OTHER_CATEGORY,
};

/// Values kept per numeric column while profiling, for quantiles and histograms.
const RESERVOIR: usize = 20_000;
/// Sorted values kept per numeric feature in a [`Baseline`], for the KS test and PSI.
const STORED_SAMPLE: usize = 2_000;
/// Distinct values counted per column; further values count as [`OTHER_CATEGORY`].
const MAX_TRACKED_CATEGORIES: usize = 1_000;
/// Longest value counted as a category, in bytes.
const MAX_CATEGORY_BYTES: usize = 200;
/// Above this many distinct values a categorical constraint allows any value, and a numeric
/// feature keeps no category counts.
const MAX_ALLOWED_CATEGORIES: usize = 100;
/// Percent of non-missing values that must be numbers for a column to be numeric.
const NUMERIC_PERCENT: u64 = 95;
const QUANTILE_POINTS: [f64; 11] = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0];
/// Share given to an empty bin in PSI, which would otherwise be infinite.
const EMPTY_BIN: f64 = 1e-4;
/// Share of values beyond the baseline range, or outside its categories, that is tolerated.
const TOLERATED_SHARE: f64 = 0.01;
/// Completeness a suggested constraint allows below the baseline's (after rounding down).
const COMPLETENESS_SLACK: f64 = 0.02;
/// Most categories shown in a report's distributions; the rest are summed as `__other__`.
const CHART_CATEGORIES: usize = 20;

/// Streaming profiler: feed it rows with [`Profiler::add_row`], then [`Profiler::finish`].
#[derive(Debug, Clone)]
pub struct Profiler {
    columns: Vec<String>,
    rows: u64,
    accumulators: Vec<Column>,
}

impl Profiler {
    /// A profiler for rows with these columns, in order.
    pub fn new(columns: Vec<String>) -> Self {
        let accumulators = (0..columns.len() as u64).map(Column::new).collect();
        Profiler { columns, rows: 0, accumulators }
    }

    /// One row, its values aligned with the columns. `None`, an empty or a whitespace-only
    /// value is missing, and so is any value past the end of a short row; extra values are
    /// ignored.
    pub fn add_row(&mut self, values: &[Option<&str>]) {
        self.rows += 1;
        let mut values = values.iter();
        for column in &mut self.accumulators {
            column.add(values.next().copied().flatten());
        }
    }

    /// The profile of the rows added, features in column order.
    pub fn finish(self) -> Baseline {
        let rows = self.rows;
        let mut features = Vec::with_capacity(self.columns.len());
        let mut samples = BTreeMap::new();
        for (name, column) in self.columns.into_iter().zip(self.accumulators) {
            let (feature, sample) = column.finish(name, rows);
            if let Some(sample) = sample {
                samples.insert(feature.name.clone(), sample);
            }
            features.push(feature);
        }
        Baseline { rows, features, samples }
    }
}

/// Running state of one column.
#[derive(Debug, Clone)]
struct Column {
    missing: u64,
    numbers: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    reservoir: Vec<f64>,
    rng: SplitMix64,
    counts: HashMap<String, u64>,
    /// Values counted as [`OTHER_CATEGORY`].
    other: u64,
    /// Whether numbers are still counted by value. Once the counts are full, a continuous
    /// column would pay a hash lookup per value for nothing, so later numbers go to `other`
    /// without one.
    counting_numbers: bool,
}

impl Column {
    fn new(index: u64) -> Self {
        Column {
            missing: 0,
            numbers: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            reservoir: Vec::new(),
            rng: SplitMix64(0x5EED_0FA7_E11E_12AB ^ index),
            counts: HashMap::new(),
            other: 0,
            counting_numbers: true,
        }
    }

    fn add(&mut self, value: Option<&str>) {
        let value = match value.map(trim) {
            Some(v) if !v.is_empty() => v,
            _ => {
                self.missing += 1;
                return;
            }
        };
        match value.parse::<f64>() {
            Ok(x) if x.is_finite() => {
                self.add_number(x);
                if !self.counting_numbers {
                    self.other += 1;
                } else if !self.count(value) {
                    self.counting_numbers = false;
                }
            }
            _ => {
                self.count(value);
            }
        }
    }

    fn add_number(&mut self, x: f64) {
        self.numbers += 1;
        let delta = x - self.mean;
        self.mean += delta / self.numbers as f64;
        self.m2 += delta * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        if self.reservoir.len() < RESERVOIR {
            self.reservoir.push(x);
        } else {
            // Algorithm R: every number seen so far stays with equal probability.
            let slot = self.rng.below(self.numbers) as usize;
            if let Some(kept) = self.reservoir.get_mut(slot) {
                *kept = x;
            }
        }
    }

    /// Counts the value by name; false when the counts are full and it went to `other`.
    /// A value longer than [`MAX_CATEGORY_BYTES`] is free text, not a category: it is
    /// counted as `other` so that a baseline never stores it.
    fn count(&mut self, value: &str) -> bool {
        if value.len() > MAX_CATEGORY_BYTES {
            self.other += 1;
            true
        } else if let Some(n) = self.counts.get_mut(value) {
            *n += 1;
            true
        } else if self.counts.len() < MAX_TRACKED_CATEGORIES {
            self.counts.insert(value.to_owned(), 1);
            true
        } else {
            self.other += 1;
            false
        }
    }

    fn finish(self, name: String, rows: u64) -> (FeatureBaseline, Option<Vec<f64>>) {
        let present = rows.saturating_sub(self.missing);
        let numeric = self.numbers > 0 && self.numbers * 100 >= present * NUMERIC_PERCENT;
        let mut feature = FeatureBaseline {
            name,
            kind: FeatureKind::Categorical,
            count: rows,
            missing: self.missing,
            completeness: if rows == 0 { 0.0 } else { present as f64 / rows as f64 },
            min: None,
            max: None,
            mean: None,
            std: None,
            quantiles: Vec::new(),
            bins: Vec::new(),
            histogram: Vec::new(),
            categories: BTreeMap::new(),
        };
        if !numeric {
            feature.categories = self.counts.into_iter().collect();
            if self.other > 0 {
                *feature.categories.entry(OTHER_CATEGORY.to_owned()).or_default() += self.other;
            }
            return (feature, None);
        }

        let mut sorted = self.reservoir;
        sorted.sort_by(f64::total_cmp);
        let std = if self.numbers > 1 { (self.m2 / (self.numbers - 1) as f64).sqrt() } else { 0.0 };
        feature.kind = FeatureKind::Numeric;
        feature.min = Some(self.min);
        feature.max = Some(self.max);
        feature.mean = Some(self.mean).filter(|m| m.is_finite());
        feature.std = Some(std).filter(|s| s.is_finite());
        feature.quantiles = QUANTILE_POINTS
            .iter()
            .map(|&p| {
                if p <= 0.0 {
                    self.min
                } else if p >= 1.0 {
                    self.max
                } else {
                    quantile(&sorted, p)
                }
            })
            .collect();
        let mut bins: Vec<f64> = (1..10).map(|d| quantile(&sorted, d as f64 / 10.0)).collect();
        bins.dedup();
        feature.histogram = scale_counts(&bin_counts(&bins, &sorted), self.numbers);
        feature.bins = bins;
        if self.counting_numbers && self.other == 0 && self.counts.len() <= MAX_ALLOWED_CATEGORIES {
            feature.categories = self.counts.into_iter().collect();
        }
        (feature, Some(thin(&sorted)))
    }
}

/// `str::trim`, which decodes every edge character; ASCII edges (the usual case) are
/// trimmed without decoding, which made trimming the largest cost of profiling.
fn trim(value: &str) -> &str {
    let value = value.trim_ascii();
    match (value.as_bytes().first(), value.as_bytes().last()) {
        (Some(a), Some(b)) if !a.is_ascii() || !b.is_ascii() => value.trim(),
        _ => value,
    }
}

/// Deterministic generator for the reservoir: the same data always gives the same baseline.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Linearly interpolated quantile of sorted values (the usual "type 7"); 0 for none.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let Some(&first) = sorted.first() else { return 0.0 };
    let h = p * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let below = sorted.get(lo).copied().unwrap_or(first);
    let above = sorted.get(lo + 1).copied().unwrap_or(below);
    below + (h - lo as f64) * (above - below)
}

/// Values per bin of [`FeatureBaseline::bins`].
fn bin_counts(edges: &[f64], values: &[f64]) -> Vec<u64> {
    let mut counts = vec![0; edges.len() + 1];
    for &x in values {
        if let Some(c) = counts.get_mut(edges.partition_point(|&e| e <= x)) {
            *c += 1;
        }
    }
    counts
}

/// Sample counts scaled to `total`, by largest remainder so that they sum to it exactly.
fn scale_counts(counts: &[u64], total: u64) -> Vec<u64> {
    let sum: u64 = counts.iter().sum();
    if sum == 0 || sum == total {
        return counts.to_vec();
    }
    let exact: Vec<f64> = counts.iter().map(|&c| c as f64 * total as f64 / sum as f64).collect();
    let mut scaled: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let short = total.saturating_sub(scaled.iter().sum());
    let mut order: Vec<usize> = (0..exact.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    for &i in order.iter().take(short as usize) {
        scaled[i] += 1;
    }
    scaled
}

/// At most [`STORED_SAMPLE`] values evenly spaced through sorted values: the midpoints of
/// equal slices, which represent the distribution better than a random subset would.
fn thin(sorted: &[f64]) -> Vec<f64> {
    if sorted.len() <= STORED_SAMPLE {
        return sorted.to_vec();
    }
    (0..STORED_SAMPLE).filter_map(|i| sorted.get((2 * i + 1) * sorted.len() / (2 * STORED_SAMPLE)).copied()).collect()
}

/// Constraints that the baseline itself meets: completeness rounded down to whole percents
/// less 2 points, the baseline's range, and its categories unless it had more than 100.
pub fn suggest_constraints(b: &Baseline) -> Constraints {
    let features = b
        .features
        .iter()
        .map(|f| {
            // The small addend keeps e.g. 0.29 * 100 = 28.999… from rounding down to 28.
            let percent = (f.completeness * 100.0 + 1e-9).floor();
            let min_completeness = ((percent - COMPLETENESS_SLACK * 100.0) / 100.0).max(0.0);
            let categories = (f.kind == FeatureKind::Categorical
                && f.categories.len() <= MAX_ALLOWED_CATEGORIES
                && !f.categories.contains_key(OTHER_CATEGORY))
            .then(|| f.categories.keys().cloned().collect());
            FeatureConstraint {
                name: f.name.clone(),
                kind: f.kind,
                min_completeness,
                min: f.min,
                max: f.max,
                categories,
            }
        })
        .collect();
    Constraints { features }
}

/// Compares a window of captured inputs, profiled with [`Profiler`] like the baseline, with
/// the baseline: drift per feature and constraint violations. Features without a constraint
/// are only checked for drift.
pub fn compare(baseline: &Baseline, constraints: &Constraints, thresholds: &Thresholds, current: &Baseline) -> Report {
    let mut report = Report { rows: current.rows, features: Vec::new(), violations: Vec::new(), drifted: 0 };
    for base in &baseline.features {
        let name = base.name.as_str();
        let Some(now) = current.feature(name) else {
            let message = format!("{name}: column is missing from the current data");
            report.violations.push(Violation::new(name, ViolationKind::MissingColumn, message));
            continue;
        };
        let constraint = constraints.features.iter().find(|c| c.name == name);
        if let Some(c) = constraint {
            if current.rows > 0 && now.completeness < c.min_completeness {
                let message = format!(
                    "{name}: {} of values are present, below the required {} (baseline {})",
                    percent(now.completeness),
                    percent(c.min_completeness),
                    percent(base.completeness)
                );
                report.violations.push(Violation::new(name, ViolationKind::Completeness, message));
            }
        }
        let present = now.count.saturating_sub(now.missing);
        let drift = match base.kind {
            FeatureKind::Numeric if now.kind == FeatureKind::Categorical && present > 0 => {
                let message = format!(
                    "{name}: numeric in the baseline, but the current values are not numbers{}",
                    examples(&now.categories)
                );
                report.violations.push(Violation::new(name, ViolationKind::TypeMismatch, message));
                unmeasured(base)
            }
            FeatureKind::Numeric => {
                let sample = current.sample(name);
                if let Some(violation) = constraint.and_then(|c| out_of_range(c, now, sample)) {
                    report.violations.push(violation);
                }
                numeric_drift(base, baseline.sample(name), sample, thresholds)
            }
            FeatureKind::Categorical if now.kind == FeatureKind::Numeric && now.categories.is_empty() => {
                let message = format!(
                    "{name}: categorical in the baseline, but the current values are numbers with many distinct values"
                );
                report.violations.push(Violation::new(name, ViolationKind::TypeMismatch, message));
                unmeasured(base)
            }
            FeatureKind::Categorical => {
                if let Some(violation) = constraint.and_then(|c| unknown_categories(c, now)) {
                    report.violations.push(violation);
                }
                categorical_drift(base, now, thresholds)
            }
        };
        report.drifted += usize::from(drift.drifted);
        report.features.push(drift);
    }
    for now in &current.features {
        if baseline.feature(&now.name).is_none() {
            let message = format!("{}: column is not in the baseline", now.name);
            report.violations.push(Violation::new(&now.name, ViolationKind::ExtraColumn, message));
        }
    }
    report
}

/// A feature whose drift cannot be measured (its type changed).
fn unmeasured(base: &FeatureBaseline) -> FeatureDrift {
    FeatureDrift {
        name: base.name.clone(),
        kind: base.kind,
        psi: None,
        ks: None,
        js: None,
        drifted: false,
        baseline_distribution: Vec::new(),
        current_distribution: Vec::new(),
    }
}

fn numeric_drift(
    base: &FeatureBaseline,
    base_sample: &[f64],
    now_sample: &[f64],
    thresholds: &Thresholds,
) -> FeatureDrift {
    let expected = shares(&base.histogram);
    let actual = shares(&bin_counts(&base.bins, now_sample));
    let psi = (!now_sample.is_empty()).then(|| psi(&expected, &actual));
    let ks = (!now_sample.is_empty() && !base_sample.is_empty()).then(|| ks_statistic(base_sample, now_sample));
    let labels = bin_labels(&base.bins);
    FeatureDrift {
        name: base.name.clone(),
        kind: FeatureKind::Numeric,
        psi,
        ks,
        js: None,
        drifted: psi.is_some_and(|p| p > thresholds.psi) || ks.is_some_and(|d| d > thresholds.ks),
        baseline_distribution: labels.iter().cloned().zip(expected).collect(),
        current_distribution: labels.into_iter().zip(actual).collect(),
    }
}

fn categorical_drift(base: &FeatureBaseline, now: &FeatureBaseline, thresholds: &Thresholds) -> FeatureDrift {
    let names: Vec<&String> =
        base.categories.keys().chain(now.categories.keys()).collect::<BTreeSet<_>>().into_iter().collect();
    let count = |f: &FeatureBaseline| -> Vec<u64> {
        names.iter().map(|n| f.categories.get(*n).copied().unwrap_or(0)).collect()
    };
    let (expected, actual) = (shares(&count(base)), shares(&count(now)));
    let measurable = base.categories.values().any(|&c| c > 0) && now.categories.values().any(|&c| c > 0);
    let js = measurable.then(|| js_distance(&expected, &actual));
    let (baseline_distribution, current_distribution) = chart_categories(&names, &expected, &actual);
    FeatureDrift {
        name: base.name.clone(),
        kind: FeatureKind::Categorical,
        psi: measurable.then(|| psi(&expected, &actual)),
        ks: None,
        js,
        drifted: js.is_some_and(|d| d > thresholds.js),
        baseline_distribution,
        current_distribution,
    }
}

type Distribution = Vec<(String, f64)>;

/// Categories by baseline share, the ones past [`CHART_CATEGORIES`] summed as `__other__`.
fn chart_categories(names: &[&String], expected: &[f64], actual: &[f64]) -> (Distribution, Distribution) {
    let mut rows: Vec<(&str, f64, f64)> =
        names.iter().zip(expected).zip(actual).map(|((n, &e), &a)| (n.as_str(), e, a)).collect();
    let (mut other_e, mut other_a) = (0.0, 0.0);
    let had_other = rows.iter().any(|r| r.0 == OTHER_CATEGORY);
    rows.retain(|&(n, e, a)| {
        let keep = n != OTHER_CATEGORY;
        if !keep {
            other_e += e;
            other_a += a;
        }
        keep
    });
    rows.sort_by(|x, y| y.1.total_cmp(&x.1).then(y.2.total_cmp(&x.2)).then(x.0.cmp(y.0)));
    let room = if had_other || rows.len() > CHART_CATEGORIES { CHART_CATEGORIES - 1 } else { CHART_CATEGORIES };
    for &(_, e, a) in rows.iter().skip(room) {
        other_e += e;
        other_a += a;
    }
    let lumped = had_other || rows.len() > room;
    rows.truncate(room);
    let mut baseline: Distribution = rows.iter().map(|&(n, e, _)| (n.to_owned(), e)).collect();
    let mut current: Distribution = rows.iter().map(|&(n, _, a)| (n.to_owned(), a)).collect();
    if lumped {
        baseline.push((OTHER_CATEGORY.to_owned(), other_e));
        current.push((OTHER_CATEGORY.to_owned(), other_a));
    }
    (baseline, current)
}

/// More than 1% of the window's numbers beyond the constraint's range.
fn out_of_range(constraint: &FeatureConstraint, now: &FeatureBaseline, sorted: &[f64]) -> Option<Violation> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as f64;
    let mut parts = Vec::new();
    let mut outside = 0.0;
    if let (Some(lo), Some(seen)) = (constraint.min, now.min) {
        let share = sorted.partition_point(|&x| x < lo) as f64 / n;
        if seen < lo && share > 0.0 {
            outside += share;
            parts.push(format!(
                "{} of values are below the baseline minimum {} (min seen {})",
                percent(share),
                number(lo),
                number(seen)
            ));
        }
    }
    if let (Some(hi), Some(seen)) = (constraint.max, now.max) {
        let share = (sorted.len() - sorted.partition_point(|&x| x <= hi)) as f64 / n;
        if seen > hi && share > 0.0 {
            outside += share;
            parts.push(format!(
                "{} of values are above the baseline maximum {} (max seen {})",
                percent(share),
                number(hi),
                number(seen)
            ));
        }
    }
    (outside > TOLERATED_SHARE)
        .then(|| Violation::new(&now.name, ViolationKind::OutOfRange, format!("{}: {}", now.name, parts.join("; "))))
}

/// More than 1% of the window's values outside the constraint's categories.
fn unknown_categories(constraint: &FeatureConstraint, now: &FeatureBaseline) -> Option<Violation> {
    let allowed: BTreeSet<&str> = constraint.categories.as_ref()?.iter().map(String::as_str).collect();
    let total: u64 = now.categories.values().sum();
    let mut unknown: Vec<(&String, u64)> =
        now.categories.iter().filter(|(k, _)| !allowed.contains(k.as_str())).map(|(k, &c)| (k, c)).collect();
    let share = unknown.iter().map(|u| u.1).sum::<u64>() as f64 / total.max(1) as f64;
    if share <= TOLERATED_SHARE {
        return None;
    }
    unknown.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = unknown.iter().take(3).map(|(k, _)| format!("{k:?}")).collect();
    let message = format!(
        "{}: {} of values are not among the {} baseline categories (e.g. {})",
        now.name,
        percent(share),
        allowed.len(),
        shown.join(", ")
    );
    Some(Violation::new(&now.name, ViolationKind::UnknownCategory, message))
}

/// ", e.g. "abc", "n/a"" from the most frequent categories, or nothing.
fn examples(categories: &BTreeMap<String, u64>) -> String {
    let mut top: Vec<(&String, &u64)> = categories.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = top.iter().take(3).map(|(k, _)| format!("{k:?}")).collect();
    if shown.is_empty() {
        String::new()
    } else {
        format!(" (e.g. {})", shown.join(", "))
    }
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts.iter().map(|&c| if total == 0 { 0.0 } else { c as f64 / total as f64 }).collect()
}

/// Population stability index, Σ (actual − expected) · ln(actual / expected), with empty
/// bins counted as [`EMPTY_BIN`].
fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(EMPTY_BIN), a.max(EMPTY_BIN));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Exact two-sample Kolmogorov–Smirnov statistic of two sorted samples.
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0_f64);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        let at = x.min(y);
        while a.get(i).is_some_and(|&v| v <= at) {
            i += 1;
        }
        while b.get(j).is_some_and(|&v| v <= at) {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// Jensen–Shannon distance (square root of the divergence, log base 2).
fn js_distance(p: &[f64], q: &[f64]) -> f64 {
    let divergence: f64 = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| {
            let m = (a + b) / 2.0;
            let side = |x: f64| if x > 0.0 { 0.5 * x * (x / m).log2() } else { 0.0 };
            side(a) + side(b)
        })
        .sum();
    divergence.max(0.0).sqrt().min(1.0)
}

/// "< a", "a–b", …, "≥ z", with as few significant digits (at least 2) as keep edges apart.
fn bin_labels(edges: &[f64]) -> Vec<String> {
    let texts = (2..=17)
        .map(|digits| edges.iter().map(|&e| number_to(e, digits)).collect::<Vec<_>>())
        .find(|t| t.windows(2).all(|w| w[0] != w[1]))
        .unwrap_or_else(|| edges.iter().map(f64::to_string).collect());
    let (Some(first), Some(last)) = (texts.first(), texts.last()) else { return vec!["all values".to_owned()] };
    let mut labels = vec![format!("< {first}")];
    labels.extend(texts.windows(2).map(|w| format!("{}–{}", w[0], w[1])));
    labels.push(format!("≥ {last}"));
    labels
}

/// A number for messages: 4 significant digits.
fn number(x: f64) -> String {
    number_to(x, 4)
}

fn number_to(x: f64, digits: usize) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    if !x.is_finite() {
        return x.to_string();
    }
    let rounded: f64 = format!("{:.*e}", digits.saturating_sub(1), x).parse().unwrap_or(x);
    rounded.to_string()
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Test data generator: uniform and roughly normal (sum of 12 uniforms) values.
    struct Gen(SplitMix64);

    impl Gen {
        fn new(seed: u64) -> Self {
            Gen(SplitMix64(seed))
        }

        fn unit(&mut self) -> f64 {
            (self.0.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
        }
    }

    /// Profiles rows of strings; "" is missing.
    fn profile(columns: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Baseline {
        let mut profiler = Profiler::new(columns.iter().map(|c| c.to_string()).collect());
        for row in rows {
            let values: Vec<Option<&str>> = row.iter().map(|v| Some(v.as_str())).collect();
            profiler.add_row(&values);
        }
        profiler.finish()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn column_is_numeric_when_at_least_95_percent_of_values_are_numbers() {
        let rows = (0..100).map(|i| {
            vec![
                if i < 95 { i.to_string() } else { "n/a".to_owned() },
                if i < 94 { i.to_string() } else { "n/a".to_owned() },
                if i % 2 == 0 { format!("{i}.5") } else { ["", "  "][i % 4 / 2].to_owned() },
                String::new(),
                ["inf", "NaN", "1"][i % 3].to_owned(),
            ]
        });
        let b = profile(&["ninety_five", "ninety_four", "half_missing", "empty", "not_finite"], rows);
        let kinds: Vec<FeatureKind> = b.features.iter().map(|f| f.kind).collect();
        use FeatureKind::*;
        assert_eq!(kinds, [Numeric, Categorical, Numeric, Categorical, Categorical]);
        let half = &b.features[2];
        assert_eq!((half.count, half.missing), (100, 50));
        assert!(close(half.completeness, 0.5));
        assert_eq!(b.features[3].completeness, 0.0);
        assert!(b.features[3].categories.is_empty());
        assert_eq!(b.features[1].categories.get("n/a"), Some(&6));
        assert_eq!(b.features[4].categories.get("inf"), Some(&34));
        assert_eq!(b.samples.keys().collect::<Vec<_>>(), ["half_missing", "ninety_five"]);
    }

    #[test]
    fn baseline_stats_match_exact_values() {
        let rows = ["1", "2", "\u{a0}", "3", "\t4\u{2003}"]
            .iter()
            .zip(["a", "b", "a", "", "a"])
            .map(|(x, c)| vec![x.to_string(), c.to_string()]);
        let b = profile(&["x", "c"], rows);
        assert_eq!(b.rows, 5);
        let x = &b.features[0];
        assert_eq!((x.kind, x.count, x.missing), (FeatureKind::Numeric, 5, 1));
        assert!(close(x.completeness, 0.8));
        assert_eq!((x.min, x.max), (Some(1.0), Some(4.0)));
        assert!(close(x.mean.unwrap_or(f64::NAN), 2.5));
        assert!(close(x.std.unwrap_or(f64::NAN), (5.0_f64 / 3.0).sqrt()));
        let expected = [1.0, 1.03, 1.15, 1.3, 1.75, 2.5, 3.25, 3.7, 3.85, 3.97, 4.0];
        assert_eq!(x.quantiles.len(), expected.len());
        assert!(x.quantiles.iter().zip(expected).all(|(a, b)| close(*a, b)), "{:?}", x.quantiles);
        assert_eq!(b.samples["x"], [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(x.categories.len(), 4, "a numeric column with few values keeps its counts");
        let c = &b.features[1];
        assert_eq!((c.kind, c.missing, c.mean), (FeatureKind::Categorical, 1, None));
        assert!(c.quantiles.is_empty() && c.bins.is_empty() && c.histogram.is_empty());
        assert_eq!(c.categories, BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)]));
    }

    #[test]
    fn histogram_bins_are_equal_frequency_deciles() {
        let b = profile(&["x"], (1..=100).map(|i| vec![i.to_string()]));
        let x = &b.features[0];
        let edges = [10.9, 20.8, 30.7, 40.6, 50.5, 60.4, 70.3, 80.2, 90.1];
        assert!(x.bins.len() == 9 && x.bins.iter().zip(edges).all(|(a, b)| close(*a, b)), "{:?}", x.bins);
        assert_eq!(x.histogram, vec![10; 10]);
    }

    #[test]
    fn repeated_values_give_deduplicated_bins() {
        let b = profile(&["flag"], (0..100).map(|i| vec![u8::from(i % 10 < 3).to_string()]));
        let flag = &b.features[0];
        assert_eq!(flag.bins.len(), 3, "{:?}", flag.bins);
        assert_eq!(flag.histogram.iter().sum::<u64>(), 100);
        assert_eq!(flag.categories, BTreeMap::from([("0".to_owned(), 70), ("1".to_owned(), 30)]));
    }

    #[test]
    fn histogram_beyond_the_reservoir_is_scaled_to_all_values() {
        let mut g = Gen::new(9);
        let b = profile(&["x"], (0..50_000).map(|_| vec![g.unit().to_string()]));
        let x = &b.features[0];
        assert_eq!(x.histogram.iter().sum::<u64>(), 50_000);
        assert!(x.histogram.iter().all(|&c| (4_900..=5_100).contains(&c)), "{:?}", x.histogram);
        assert_eq!(b.samples["x"].len(), STORED_SAMPLE);
        assert!(b.samples["x"].windows(2).all(|w| w[0] <= w[1]));
        assert!(x.categories.is_empty());
        let median = x.quantiles[5];
        assert!((median - 0.5).abs() < 0.02, "{median}");
    }

    #[test]
    fn many_distinct_categories_are_capped_under_other() {
        let b = profile(&["id"], (0..1_500).map(|i| vec![format!("user{}", i % 1_200)]));
        let id = &b.features[0];
        assert_eq!(id.categories.len(), MAX_TRACKED_CATEGORIES + 1);
        assert_eq!(id.categories[OTHER_CATEGORY], 200);
        assert_eq!(id.categories["user5"], 2);
        assert_eq!(id.categories.values().sum::<u64>(), 1_500);
    }

    #[test]
    fn long_values_are_counted_but_never_stored_as_categories() {
        let long = "y".repeat(MAX_CATEGORY_BYTES + 1);
        let b = profile(&["note"], (0..10).map(|i| vec![if i < 4 { "short".to_string() } else { long.clone() }]));
        let note = &b.features[0];
        assert_eq!(note.categories.get("short"), Some(&4));
        assert_eq!(note.categories.get(OTHER_CATEGORY), Some(&6));
        assert!(note.categories.keys().all(|k| k.len() <= MAX_CATEGORY_BYTES));
    }

    const COLUMNS: [&str; 3] = ["x1", "x2", "color"];

    /// x1 ~ N(shift, 1), x2 ~ N(10 + 2·shift, 2²), color "a" with probability `share_a`.
    fn window(seed: u64, rows: usize, shift: f64, share_a: f64) -> Baseline {
        let mut g = Gen::new(seed);
        profile(
            &COLUMNS,
            (0..rows).map(|_| {
                let x1 = g.normal() + shift;
                let x2 = 10.0 + 2.0 * (g.normal() + shift);
                let color = if g.unit() < share_a { "a" } else { "b" };
                vec![format!("{x1:.6}"), format!("{x2:.6}"), color.to_owned()]
            }),
        )
    }

    fn check(current: &Baseline) -> (Baseline, Report) {
        let baseline = window(1, 10_000, 0.0, 0.7);
        let report = compare(&baseline, &suggest_constraints(&baseline), &Thresholds::default(), current);
        (baseline, report)
    }

    #[test]
    fn window_from_the_same_distribution_is_not_drifted() {
        let (baseline, report) = check(&window(2, 3_000, 0.0, 0.7));
        assert_eq!(baseline.features[0].histogram.iter().sum::<u64>(), 10_000);
        let [x1, x2, color] = &report.features[..] else { panic!("{report:?}") };
        for f in [x1, x2] {
            let (psi, ks) = (f.psi.unwrap_or(f64::NAN), f.ks.unwrap_or(f64::NAN));
            assert!(psi < 0.05 && ks < 0.05 && !f.drifted, "{}: psi {psi} ks {ks}", f.name);
            assert_eq!(f.baseline_distribution.len(), f.current_distribution.len());
            assert!(close(f.current_distribution.iter().map(|d| d.1).sum(), 1.0));
        }
        let js = color.js.unwrap_or(f64::NAN);
        assert!(js < 0.05 && !color.drifted, "js {js}");
        assert_eq!((report.drifted, report.rows), (0, 3_000));
        assert_eq!(report.violations, []);
    }

    #[test]
    fn mean_shifted_by_one_std_is_drifted() {
        let (_, report) = check(&window(3, 3_000, 1.0, 0.7));
        for f in &report.features[..2] {
            let (psi, ks) = (f.psi.unwrap_or(f64::NAN), f.ks.unwrap_or(f64::NAN));
            assert!(psi > 0.2 && ks > 0.1 && f.drifted, "{}: psi {psi} ks {ks}", f.name);
            // KS of N(0,1) against N(1,1) is 2Φ(0.5) − 1 ≈ 0.383.
            assert!((ks - 0.383).abs() < 0.04, "{}: ks {ks}", f.name);
        }
        assert!(!report.features[2].drifted);
        assert_eq!(report.drifted, 2);
    }

    #[test]
    fn categorical_proportions_flipped_from_70_30_to_30_70_is_drifted() {
        let (_, report) = check(&window(4, 3_000, 0.0, 0.3));
        let color = &report.features[2];
        let js = color.js.unwrap_or(f64::NAN);
        // p = (0.7, 0.3), q = (0.3, 0.7): JS distance ≈ 0.3446.
        assert!(color.drifted && (js - 0.3446).abs() < 0.03, "js {js}");
        assert_eq!(report.drifted, 1);
        let labels: Vec<&str> = color.baseline_distribution.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(labels, ["a", "b"]);
    }

    #[test]
    fn psi_matches_a_hand_computed_case() {
        let by_hand = 0.25 * 2.0_f64.ln() + 0.25 * 1.5_f64.ln();
        assert!(close(psi(&[0.5, 0.5], &[0.25, 0.75]), by_hand));

        let ab = |a: usize, b: usize| {
            profile(&["c"], std::iter::repeat_n("a", a).chain(std::iter::repeat_n("b", b)).map(|v| vec![v.to_owned()]))
        };
        let base = ab(50, 50);
        let report = compare(&base, &suggest_constraints(&base), &Thresholds::default(), &ab(25, 75));
        let c = &report.features[0];
        assert!(close(c.psi.unwrap_or(f64::NAN), by_hand));
        // m = (0.375, 0.625); JSD = ½·KL(p‖m) + ½·KL(q‖m).
        let kl = |p: [f64; 2]| p[0] * (p[0] / 0.375).log2() + p[1] * (p[1] / 0.625).log2();
        let js = (0.5 * kl([0.5, 0.5]) + 0.5 * kl([0.25, 0.75])).sqrt();
        assert!((js - 0.2209).abs() < 1e-4, "{js}");
        assert!(close(c.js.unwrap_or(f64::NAN), js));
        assert!(c.drifted);

        // 1..=100 against 1..=10: everything falls in the first decile bin, the other nine
        // are empty (1e-4): 0.9·ln(10) + 9·0.0999·ln(1000).
        let numbers = |n: u32| profile(&["x"], (1..=n).map(|i| vec![i.to_string()]));
        let base = numbers(100);
        let report = compare(&base, &suggest_constraints(&base), &Thresholds::default(), &numbers(10));
        let x = &report.features[0];
        let by_hand = 0.9 * 10.0_f64.ln() + 9.0 * 0.0999 * 1000.0_f64.ln();
        assert!(close(x.psi.unwrap_or(f64::NAN), by_hand), "{:?}", x.psi);
        assert!(close(x.ks.unwrap_or(f64::NAN), 0.9));
        assert_eq!(x.current_distribution[0], ("< 11".to_owned(), 1.0));
        assert_eq!(x.baseline_distribution[1], ("11–21".to_owned(), 0.1));
        assert_eq!(x.baseline_distribution[9], ("≥ 90".to_owned(), 0.1));
    }

    #[test]
    fn ks_statistic_handles_ties() {
        assert!(close(ks_statistic(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0));
        assert!(close(ks_statistic(&[1.0, 1.0, 2.0, 2.0], &[1.0, 2.0, 2.0, 2.0]), 0.25));
        assert!(close(ks_statistic(&[1.0, 2.0], &[3.0, 4.0]), 1.0));
    }

    #[test]
    fn bin_labels_use_enough_digits_to_tell_edges_apart() {
        assert_eq!(bin_labels(&[0.5234, 1.31, 4.12]), ["< 0.52", "0.52–1.3", "1.3–4.1", "≥ 4.1"]);
        assert_eq!(bin_labels(&[1.001, 1.002]), ["< 1.001", "1.001–1.002", "≥ 1.002"]);
        assert_eq!(bin_labels(&[]), ["all values"]);
    }

    /// Baseline of x (0..99.9, all present) and c ("a", "b", "c").
    fn small_baseline() -> (Baseline, Constraints) {
        let b = profile(
            &["x", "c"],
            (0..1_000).map(|i| vec![(i as f64 / 10.0).to_string(), ["a", "b", "c"][i % 3].to_owned()]),
        );
        let constraints = suggest_constraints(&b);
        (b, constraints)
    }

    fn violations(columns: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Vec<Violation> {
        let (baseline, constraints) = small_baseline();
        compare(&baseline, &constraints, &Thresholds::default(), &profile(columns, rows)).violations
    }

    fn kinds(violations: &[Violation]) -> Vec<ViolationKind> {
        violations.iter().map(|v| v.kind).collect()
    }

    fn row(x: impl ToString, c: &str) -> Vec<String> {
        vec![x.to_string(), c.to_owned()]
    }

    #[test]
    fn window_like_the_baseline_has_no_violations() {
        let found = violations(&["x", "c"], (0..300).map(|i| row(i % 100, ["a", "b", "c"][i % 3])));
        assert_eq!(found, []);
    }

    #[test]
    fn missing_column_is_a_violation() {
        let found = violations(&["x"], (0..100).map(|i| vec![i.to_string()]));
        assert_eq!(kinds(&found), [ViolationKind::MissingColumn]);
        assert_eq!(found[0].feature, "c");
        assert_eq!(found[0].message, "c: column is missing from the current data");
    }

    #[test]
    fn extra_column_is_a_violation() {
        let found = violations(&["x", "c", "z"], (0..100).map(|i| vec![i.to_string(), "a".to_owned(), "1".to_owned()]));
        assert_eq!(kinds(&found), [ViolationKind::ExtraColumn]);
        assert_eq!(found[0].message, "z: column is not in the baseline");
    }

    #[test]
    fn numeric_column_turned_text_is_a_type_mismatch() {
        let found = violations(&["x", "c"], (0..100).map(|i| row(if i % 2 == 0 { "high" } else { "low" }, "a")));
        assert_eq!(kinds(&found), [ViolationKind::TypeMismatch]);
        assert!(found[0].message.starts_with("x: numeric in the baseline"), "{}", found[0].message);
    }

    #[test]
    fn categorical_column_turned_continuous_numbers_is_a_type_mismatch() {
        let found = violations(&["x", "c"], (0..300).map(|i| row(i % 100, &format!("{}.25", i))));
        assert_eq!(kinds(&found), [ViolationKind::TypeMismatch]);
        assert_eq!(found[0].feature, "c");
    }

    #[test]
    fn completeness_below_the_constraint_is_a_violation() {
        let found = violations(
            &["x", "c"],
            (0..100).map(|i| row(if i < 10 { String::new() } else { (i % 100).to_string() }, "a")),
        );
        assert_eq!(kinds(&found), [ViolationKind::Completeness]);
        assert_eq!(found[0].message, "x: 90.0% of values are present, below the required 98.0% (baseline 100.0%)");
    }

    #[test]
    fn values_beyond_the_baseline_range_are_out_of_range() {
        let found = violations(&["x", "c"], (0..100).map(|i| row(if i < 12 { 150.0 + i as f64 } else { 50.0 }, "a")));
        assert_eq!(kinds(&found), [ViolationKind::OutOfRange]);
        assert_eq!(found[0].message, "x: 12.0% of values are above the baseline maximum 99.9 (max seen 161)");
        let found = violations(
            &["x", "c"],
            (0..100).map(|i| {
                row(
                    if i < 2 {
                        -1.5
                    } else if i < 4 {
                        120.0
                    } else {
                        50.0
                    },
                    "a",
                )
            }),
        );
        assert_eq!(
            found[0].message,
            "x: 2.0% of values are below the baseline minimum 0 (min seen -1.5); 2.0% of values are above the baseline maximum 99.9 (max seen 120)"
        );
    }

    #[test]
    fn one_percent_of_out_of_range_values_is_tolerated() {
        let found = violations(&["x", "c"], (0..200).map(|i| row(if i < 2 { 500.0 } else { 50.0 }, "a")));
        assert_eq!(found, []);
    }

    #[test]
    fn unseen_categories_are_unknown_category() {
        let found = violations(
            &["x", "c"],
            (0..100).map(|i| {
                row(
                    i,
                    if i < 5 {
                        "purple"
                    } else if i < 7 {
                        "teal"
                    } else {
                        "a"
                    },
                )
            }),
        );
        assert_eq!(kinds(&found), [ViolationKind::UnknownCategory]);
        assert_eq!(
            found[0].message,
            "c: 7.0% of values are not among the 3 baseline categories (e.g. \"purple\", \"teal\")"
        );
        let found = violations(&["x", "c"], (0..100).map(|i| row(i, if i < 1 { "purple" } else { "a" })));
        assert_eq!(found, [], "1% is tolerated");
    }

    #[test]
    fn suggested_constraints_follow_the_baseline() {
        let rows = (0..1_000).map(|i| {
            vec![
                if i % 100 < 3 { String::new() } else { format!("{}", i % 50) },
                ["x", "y"][i % 2].to_owned(),
                format!("id{}", i % 150),
                if i % 100 < 71 { "v".to_owned() } else { String::new() },
            ]
        });
        let b = profile(&["n", "two", "many", "sparse"], rows);
        let c = suggest_constraints(&b);
        let [n, two, many, sparse] = &c.features[..] else { panic!("{c:?}") };
        assert_eq!((n.kind, n.min, n.max, &n.categories), (FeatureKind::Numeric, Some(0.0), Some(49.0), &None));
        assert!(close(n.min_completeness, 0.95), "{}", n.min_completeness);
        assert_eq!(two.categories, Some(vec!["x".to_owned(), "y".to_owned()]));
        assert_eq!((two.min, two.max), (None, None));
        assert!(close(two.min_completeness, 0.98));
        assert_eq!(many.categories, None, "150 distinct values allow any");
        assert!(close(sparse.min_completeness, 0.69), "{}", sparse.min_completeness);
        let empty = suggest_constraints(&profile(&["e"], (0..10).map(|_| vec![String::new()])));
        assert_eq!(empty.features[0].min_completeness, 0.0);
    }

    #[test]
    fn baseline_json_of_twenty_features_stays_under_a_megabyte() {
        let mut g = Gen::new(5);
        let columns: Vec<String> = (0..20).map(|c| format!("feature_{c}")).collect();
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        let b = profile(&names, (0..5_000).map(|_| (0..20).map(|_| (g.normal() * 1e3).to_string()).collect()));
        let json = serde_json::to_string(&b).unwrap_or_default();
        assert!(json.len() > 100_000 && json.len() < 1_000_000, "{} bytes", json.len());
        let back: Baseline = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((back.rows, back.features.len(), back.samples.len()), (5_000, 20, 20));
        let report = compare(&b, &suggest_constraints(&b), &Thresholds::default(), &b);
        let json = serde_json::to_string(&report).unwrap_or_default();
        assert!(json.contains("\"kind\":\"numeric\""), "{json}");
    }

    #[test]
    #[ignore = "timing; run in release with --ignored --nocapture"]
    fn profile_a_million_rows() {
        const POOL: usize = 1 << 16;
        const WIDTH: usize = 20;
        let mut g = Gen::new(7);
        let columns: Vec<String> = (0..WIDTH).map(|c| format!("f{c}")).collect();
        // Rows laid out one after another in one buffer, as a CSV reader hands them over:
        // 16 numeric columns (1% missing), 4 categorical with 12 values each.
        let mut text = String::new();
        let mut bounds = Vec::with_capacity(POOL * WIDTH);
        for _ in 0..POOL {
            for c in 0..WIDTH {
                let start = text.len();
                match (c < 16, g.unit() < 0.01) {
                    (true, true) => {}
                    (true, false) => text.push_str(&format!("{:.5}", g.normal() * (c + 1) as f64)),
                    (false, _) => text.push_str(&format!("category_{}", (g.unit() * 12.0) as u32)),
                }
                bounds.push(start..text.len());
            }
        }
        let run = |rows: usize| {
            let mut profiler = Profiler::new(columns.clone());
            let mut row: Vec<Option<&str>> = Vec::with_capacity(WIDTH);
            for i in 0..rows {
                let first = (i % POOL) * WIDTH;
                row.clear();
                row.extend(bounds.get(first..first + WIDTH).unwrap_or_default().iter().map(|b| text.get(b.clone())));
                profiler.add_row(&row);
            }
            profiler.finish()
        };
        let started = std::time::Instant::now();
        let baseline = run(1_000_000);
        let profiled = started.elapsed();
        let current = run(100_000);
        let started = std::time::Instant::now();
        let report = compare(&baseline, &suggest_constraints(&baseline), &Thresholds::default(), &current);
        let compared = started.elapsed();
        let json = serde_json::to_string(&baseline).unwrap_or_default().len();
        println!("1,000,000 x 20 profiled in {profiled:?}; compare in {compared:?}; baseline JSON {json} bytes");
        assert_eq!(report.features.len(), 20);
        assert!(json < 1_000_000);
        if !cfg!(debug_assertions) {
            assert!(profiled.as_secs_f64() < 2.0, "{profiled:?}");
        }
    }
}
