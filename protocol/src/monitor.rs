//! Data-quality monitoring in the manner of SageMaker Model Monitor, as the API shows it:
//! a [`Baseline`] profiled from a model's training data, the [`Constraints`] suggested
//! from it, and the [`Report`] of a window of captured inputs compared with it. The
//! statistics that compute them live in the server's core (`atelier_core::monitor::stats`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Category under which values are counted once a column has 1,000 distinct values.
pub const OTHER_CATEGORY: &str = "__other__";

/// How a feature's values are treated.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// At least 95% of the non-missing values (and at least one) are finite numbers.
    Numeric,
    /// Everything else, including columns with no values at all.
    Categorical,
}

/// Profile of one column.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBaseline {
    pub name: String,
    pub kind: FeatureKind,
    /// Rows seen.
    pub count: u64,
    /// Rows where the value was absent, empty or only whitespace.
    pub missing: u64,
    /// Share of rows with a value, 0..1 (0 when there were no rows).
    pub completeness: f64,
    /// Smallest number seen (numeric only).
    pub min: Option<f64>,
    /// Largest number seen (numeric only).
    pub max: Option<f64>,
    /// Mean of the numbers (numeric only).
    pub mean: Option<f64>,
    /// Sample standard deviation (n − 1) of the numbers (numeric only; 0 for one number).
    pub std: Option<f64>,
    /// The 0, 1, 5, 10, 25, 50, 75, 90, 95, 99 and 100% points (numeric only); the ends are
    /// the exact min and max, the rest are estimated from a sample of 20,000 values.
    pub quantiles: Vec<f64>,
    /// Inner edges of the histogram: the deciles, deduplicated; bin 0 is `x < bins[0]`, bin
    /// `i` is `bins[i-1] <= x < bins[i]`, the last is `x >= bins[last]` (numeric only).
    pub bins: Vec<f64>,
    /// Numbers per bin, `bins.len() + 1` of them, summing to the numbers seen (estimated from
    /// the sample beyond 20,000 numbers).
    pub histogram: Vec<u64>,
    /// Count per distinct value (with [`OTHER_CATEGORY`] beyond 1,000 distinct values) for a
    /// categorical feature; for a numeric one, kept only when it has at most 100 distinct
    /// values (a flag, a rating), otherwise empty.
    pub categories: BTreeMap<String, u64>,
}

/// Profile of a table: of training data (the baseline) or of a window of captured inputs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub rows: u64,
    pub features: Vec<FeatureBaseline>,
    /// Per numeric feature, up to 2,000 sorted values evenly spaced through its sample: what
    /// the KS test and the PSI of a later window are computed from.
    pub samples: BTreeMap<String, Vec<f64>>,
}

impl Baseline {
    /// The feature of that name.
    pub fn feature(&self, name: &str) -> Option<&FeatureBaseline> {
        self.features.iter().find(|f| f.name == name)
    }

    /// The stored sample of a numeric feature (empty for others).
    pub fn sample(&self, name: &str) -> &[f64] {
        self.samples.get(name).map_or(&[], Vec::as_slice)
    }
}

/// What a window may look like before it is reported; suggested from a baseline, then
/// editable by the user.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    pub features: Vec<FeatureConstraint>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureConstraint {
    pub name: String,
    pub kind: FeatureKind,
    /// Least share of rows with a value, 0..1.
    pub min_completeness: f64,
    /// Smallest allowed number (numeric).
    pub min: Option<f64>,
    /// Largest allowed number (numeric).
    pub max: Option<f64>,
    /// Allowed values (categorical); `None` allows any.
    pub categories: Option<Vec<String>>,
}

/// When a feature counts as drifted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Population stability index of a numeric feature over the baseline's decile bins;
    /// default 0.2 (the customary "significant shift"; 0.1–0.2 is a moderate one).
    pub psi: f64,
    /// Two-sample Kolmogorov–Smirnov statistic D of a numeric feature (the largest gap
    /// between the two cumulative distributions, not a p-value); default 0.1.
    pub ks: f64,
    /// Jensen–Shannon distance (log base 2, so 0..1) between the category frequencies of a
    /// categorical feature; default 0.1.
    pub js: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { psi: 0.2, ks: 0.1, js: 0.1 }
    }
}

/// Outcome of comparing a window with the baseline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Rows in the window.
    pub rows: u64,
    /// Drift of each baseline feature present in the window, in baseline order.
    pub features: Vec<FeatureDrift>,
    pub violations: Vec<Violation>,
    /// How many features drifted.
    pub drifted: usize,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub name: String,
    /// The baseline's kind.
    pub kind: FeatureKind,
    /// Numeric: over the baseline's bins; categorical: over the categories.
    pub psi: Option<f64>,
    /// Numeric only.
    pub ks: Option<f64>,
    /// Categorical only.
    pub js: Option<f64>,
    pub drifted: bool,
    /// (bin label such as "< 0.52", "0.52–1.3", "≥ 4.1", or category; share 0..1) for charts.
    pub baseline_distribution: Vec<(String, f64)>,
    /// Same labels as `baseline_distribution`.
    pub current_distribution: Vec<(String, f64)>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    MissingColumn,
    ExtraColumn,
    TypeMismatch,
    Completeness,
    OutOfRange,
    UnknownCategory,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub feature: String,
    pub kind: ViolationKind,
    /// For people: names the feature and the numbers.
    pub message: String,
}

impl Violation {
    pub fn new(feature: &str, kind: ViolationKind, message: String) -> Self {
        Violation { feature: feature.to_owned(), kind, message }
    }
}

/// `PUT /api/v1/endpoints/{name}/monitor`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// `hourly`, `daily` or `manual` (runs only on demand).
    pub frequency: String,
    #[serde(default)]
    pub thresholds: Thresholds,
}

/// An endpoint's model monitor: what it compares against and when it runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    pub endpoint: String,
    pub frequency: String,
    pub thresholds: Thresholds,
    /// The version whose training data the baseline was profiled from.
    pub model_group: String,
    pub model_version: i64,
    /// Without its samples (they are for computing).
    pub baseline: Baseline,
    pub constraints: Constraints,
    pub last_run_at: Option<i64>,
    pub next_run_at: Option<i64>,
    pub created_by: String,
    pub updated_at: i64,
}

/// One comparison of a window of captured inputs with the baseline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorRun {
    pub id: String,
    pub started_at: i64,
    pub window_from: i64,
    pub window_to: i64,
    /// `Completed`, `NoData` (nothing captured in the window) or `Failed`.
    pub status: String,
    pub message: String,
    pub rows: i64,
    pub drifted: i64,
    pub violations: i64,
    /// Present when one run is asked for.
    pub report: Option<Report>,
}
