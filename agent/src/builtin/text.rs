//! Text classification from a labeling job's output manifest: a bag of words and word
//! pairs over the most frequent terms of the training texts (counts log-scaled, each
//! text L2-normalized), then an MLP. Fast on a CPU and a sound baseline; `model.json`
//! holds the vocabulary and the tokenizer's name so a server encodes texts identically.

use std::collections::HashMap;

use anyhow::bail;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::manifest::{self, Item, Source};
use super::{fit, write_model_spec, Examples, JobEnv, Mlp, Objective};

/// The tokenizer `tokens` implements, recorded in `model.json`.
pub const TOKENIZER: &str = "lowercase-alphanumeric-unigrams-bigrams-v1";

/// `model.json` of a text classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextModel {
    pub algorithm: String,
    pub tokenizer: String,
    pub label_attribute: String,
    pub classes: Vec<String>,
    /// Term `i` is input `i`.
    pub vocabulary: Vec<String>,
    pub hidden_units: usize,
    pub hidden_layers: usize,
}

/// Lowercased runs of letters and digits, then each adjacent pair as `a b`.
pub fn tokens(text: &str) -> Vec<String> {
    let words: Vec<String> =
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    let pairs: Vec<String> = words.windows(2).map(|w| format!("{} {}", w[0], w[1])).collect();
    words.into_iter().chain(pairs).collect()
}

impl TextModel {
    /// The text as sparse input: (term index, log-scaled count), L2-normalized.
    pub fn encode(&self, index: &HashMap<&str, u32>, text: &str) -> Vec<(u32, f32)> {
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for token in tokens(text) {
            if let Some(&i) = index.get(token.as_str()) {
                *counts.entry(i).or_default() += 1.0;
            }
        }
        let mut features: Vec<(u32, f32)> = counts.into_iter().map(|(i, c)| (i, (1.0 + c).ln())).collect();
        let norm = features.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            features.iter_mut().for_each(|(_, v)| *v /= norm);
        }
        features.sort_by_key(|(i, _)| *i);
        features
    }

    pub fn term_index(&self) -> HashMap<&str, u32> {
        self.vocabulary.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect()
    }
}

/// Sparse rows, made dense one batch at a time (a dense matrix of every text would take
/// vocabulary × texts floats).
struct SparseExamples {
    rows: Vec<Vec<(u32, f32)>>,
    classes: Vec<u32>,
    width: usize,
}

impl Examples for SparseExamples {
    fn len(&self) -> usize {
        self.rows.len()
    }
    fn batch(&self, rows: &[u32], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = vec![0f32; rows.len() * self.width];
        let mut y = Vec::with_capacity(rows.len());
        for (r, &row) in rows.iter().enumerate() {
            for &(i, v) in &self.rows[row as usize] {
                x[r * self.width + i as usize] = v;
            }
            y.push(self.classes[row as usize]);
        }
        Ok((Tensor::from_vec(x, (rows.len(), self.width), device)?, Tensor::from_vec(y, rows.len(), device)?))
    }
}

fn texts(items: &[Item]) -> anyhow::Result<Vec<&str>> {
    items
        .iter()
        .map(|item| match &item.source {
            Source::Inline(text) => Ok(text.as_str()),
            Source::Ref(_) => bail!("{}: text classification needs the text inline in `source`", item.origin),
        })
        .collect()
}

fn examples(model: &TextModel, items: &[Item]) -> anyhow::Result<SparseExamples> {
    let index = model.term_index();
    let mut rows = Vec::with_capacity(items.len());
    let mut classes = Vec::with_capacity(items.len());
    for (item, text) in items.iter().zip(texts(items)?) {
        let Some(class) = model.classes.iter().position(|c| *c == item.class) else {
            bail!("{}: class {:?} does not occur in the training data", item.origin, item.class)
        };
        rows.push(model.encode(&index, text));
        classes.push(class as u32);
    }
    Ok(SparseExamples { rows, classes, width: model.vocabulary.len() })
}

/// The `max_vocabulary` terms found in the most training texts (at least `min_count`).
fn vocabulary(texts: &[&str], max_vocabulary: usize, min_count: usize) -> Vec<String> {
    let mut document_frequency: HashMap<String, usize> = HashMap::new();
    for text in texts {
        let mut seen = tokens(text);
        seen.sort();
        seen.dedup();
        for token in seen {
            *document_frequency.entry(token).or_default() += 1;
        }
    }
    let mut terms: Vec<(String, usize)> = document_frequency.into_iter().filter(|(_, n)| *n >= min_count).collect();
    terms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    terms.into_iter().take(max_vocabulary).map(|(t, _)| t).collect()
}

/// Trains and writes the model.
pub fn train(env: &JobEnv) -> anyhow::Result<()> {
    let device = env.device()?;
    let (manifest, classes) = manifest::read_training(env)?;
    let (train_items, validation_items): (Vec<Item>, Vec<Item>) = match env.channels.get("validation") {
        Some(dir) => (manifest.items.clone(), manifest::read_channel(dir, &manifest.attribute)?.items),
        None => {
            let (train, held) = env.holdout(manifest.items.len())?;
            let pick = |rows: &[usize]| rows.iter().map(|&i| manifest.items[i].clone()).collect();
            (pick(&train), pick(&held))
        }
    };
    let model_spec = TextModel {
        algorithm: "text_classification".into(),
        tokenizer: TOKENIZER.into(),
        label_attribute: manifest.attribute.clone(),
        classes,
        vocabulary: vocabulary(&texts(&train_items)?, env.hp("max_vocabulary")?, env.hp("min_count")?),
        hidden_units: env.hp("hidden_units")?,
        hidden_layers: 1,
    };
    if model_spec.vocabulary.is_empty() {
        bail!("the training texts have no words");
    }
    let train = examples(&model_spec, &train_items)?;
    let validation = examples(&model_spec, &validation_items)?;
    println!(
        "text classification ({}): {} training texts, {} validation texts, {} unlabeled skipped, {} terms, \
         {} classes, device {device:?}",
        manifest.attribute,
        train.len(),
        validation.len(),
        manifest.unlabeled,
        model_spec.vocabulary.len(),
        model_spec.classes.len()
    );
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = Mlp::new(
        model_spec.vocabulary.len(),
        model_spec.hidden_units,
        model_spec.hidden_layers,
        model_spec.classes.len(),
        vb,
    )?;
    fit(env, &model, &varmap, Objective::Classification, &train, Some(&validation), &device)?;
    write_model_spec(env, &model_spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercased_words_and_pairs() {
        assert_eq!(tokens("Great film, GREAT!"), vec!["great", "film", "great", "great film", "film great"]);
    }

    #[test]
    fn encoding_is_normalized_and_ignores_unknown_terms() {
        let model = TextModel {
            algorithm: "text_classification".into(),
            tokenizer: TOKENIZER.into(),
            label_attribute: "x".into(),
            classes: vec!["a".into(), "b".into()],
            vocabulary: vocabulary(&["good good film", "bad film"], 10, 1),
            hidden_units: 0,
            hidden_layers: 1,
        };
        // "film" is in both texts, so it comes first.
        assert_eq!(model.vocabulary[0], "film");
        let encoded = model.encode(&model.term_index(), "Good good unseen");
        let norm: f32 = encoded.iter().map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{encoded:?}");
        assert_eq!(encoded.len(), 2, "good and `good good`: {encoded:?}");
    }
}
