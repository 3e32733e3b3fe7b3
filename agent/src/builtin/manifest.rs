//! Ground Truth output manifests, the training input of the classification built-ins:
//! JSON Lines, one object per item, with the item (`source` text or a `source-ref`), the
//! label attribute (named after the labeling job; a class index or name) and its
//! `<attribute>-metadata` (`class-name`, `confidence`, ...).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// What an item is.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Inline content (`source`), e.g. the text of a text classification item.
    Inline(String),
    /// A reference to a file (`source-ref`), e.g. an image.
    Ref(String),
}

/// One labeled item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Where it came from, for error messages: `file line N`.
    pub origin: String,
    pub source: Source,
    pub class: String,
    /// The class index the labeling job gave, when the label was a number.
    pub index: Option<u64>,
}

/// The labeled items of a channel's manifests.
#[derive(Debug)]
pub struct Manifest {
    pub attribute: String,
    pub items: Vec<Item>,
    /// Lines without a label (e.g. items whose labeling failed), left out.
    pub unlabeled: usize,
}

impl Manifest {
    /// The class names, ordered by the labeling job's class index where there is one.
    pub fn classes(&self) -> Vec<String> {
        let mut first_index: BTreeMap<&str, u64> = BTreeMap::new();
        for item in &self.items {
            let index = item.index.unwrap_or(u64::MAX);
            let entry = first_index.entry(&item.class).or_insert(index);
            *entry = (*entry).min(index);
        }
        let mut classes: Vec<(u64, &str)> = first_index.into_iter().map(|(c, i)| (i, c)).collect();
        classes.sort();
        classes.into_iter().map(|(_, c)| c.to_string()).collect()
    }
}

/// Reads every `*.manifest` and `*.jsonl` file of the channel directory `dir`.
/// `attribute` names the label attribute; empty means: the one key that has a
/// `-metadata` companion.
pub fn read_channel(dir: &Path, attribute: &str) -> anyhow::Result<Manifest> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "manifest" || e == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("the channel {} has no manifest (a *.manifest or *.jsonl file)", dir.display());
    }
    let mut attribute = attribute.trim().to_string();
    let mut items = Vec::new();
    let mut unlabeled = 0;
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let origin = format!("{name} line {}", i + 1);
            let object: Map<String, Value> =
                serde_json::from_str(line).with_context(|| format!("{origin}: not a JSON object"))?;
            if attribute.is_empty() {
                attribute = detect_attribute(&object, &origin)?.unwrap_or_default();
            }
            match parse_item(&object, &attribute, origin)? {
                Some(item) => items.push(item),
                None => unlabeled += 1,
            }
        }
    }
    if items.is_empty() {
        bail!("the manifests in {} have no labeled items", dir.display());
    }
    Ok(Manifest { attribute, items, unlabeled })
}

/// The `train` channel's manifest (label attribute from the `label_attribute`
/// hyperparameter) and its classes, at least two.
pub fn read_training(env: &super::JobEnv) -> anyhow::Result<(Manifest, Vec<String>)> {
    let attribute: String = env.hp("label_attribute")?;
    let dir = env.channels.get("train").context("the train channel is missing")?;
    let manifest = read_channel(dir, &attribute)?;
    let classes = manifest.classes();
    if classes.len() < 2 {
        bail!("the manifest has only the class {:?}; classification needs at least two", classes.join(""));
    }
    Ok((manifest, classes))
}

/// The label attribute of a line: the key whose `-metadata` companion is present.
fn detect_attribute(object: &Map<String, Value>, origin: &str) -> anyhow::Result<Option<String>> {
    let candidates: Vec<&String> =
        object.keys().filter(|k| !k.ends_with("-metadata") && object.contains_key(&format!("{k}-metadata"))).collect();
    match candidates.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.to_string())),
        many => bail!(
            "{origin}: several label attributes ({}); set the hyperparameter label_attribute to one of them",
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn parse_item(object: &Map<String, Value>, attribute: &str, origin: String) -> anyhow::Result<Option<Item>> {
    let source = match (object.get("source"), object.get("source-ref")) {
        (Some(Value::String(s)), _) => Source::Inline(s.clone()),
        (_, Some(Value::String(r))) => Source::Ref(r.clone()),
        _ => bail!("{origin}: has neither a source nor a source-ref string"),
    };
    let metadata = object.get(&format!("{attribute}-metadata")).and_then(Value::as_object);
    let class_name = metadata.and_then(|m| m.get("class-name")).and_then(Value::as_str);
    let (class, index) = match object.get(attribute) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => {
            let Some(index) = n.as_u64() else { bail!("{origin}: the label {n} of {attribute} is not a class index") };
            (class_name.map(str::to_string).unwrap_or_else(|| index.to_string()), Some(index))
        }
        Some(Value::String(s)) => (class_name.unwrap_or(s).to_string(), None),
        Some(Value::Array(_)) => bail!(
            "{origin}: {attribute} holds a list of labels (multi-label); this algorithm trains single-label \
             classification"
        ),
        Some(other) => bail!("{origin}: the label of {attribute} is {other}, not a class index or name"),
    };
    if class.trim().is_empty() {
        bail!("{origin}: the class name of {attribute} is empty");
    }
    Ok(Some(Item { origin, source, class, index }))
}

/// The file a `source-ref` names, inside the channel directory: its path when that is a
/// plain relative path there, else its file name (so `s3://bucket/cats/1.jpg` finds
/// `1.jpg` uploaded into the channel).
pub fn resolve_ref(dir: &Path, reference: &str) -> Option<PathBuf> {
    let path = match reference.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => reference,
    };
    let relative = Path::new(path);
    if !path.is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_))) {
        let candidate = dir.join(relative);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let candidate = dir.join(relative.file_name()?);
    candidate.is_file().then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(lines: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("atelier-manifest-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("output.manifest"), lines).expect("write");
        dir
    }

    #[test]
    fn reads_ground_truth_classification_output() {
        let dir = channel(concat!(
            r#"{"source":"great film","sentiment":1,"sentiment-metadata":{"class-name":"positive","confidence":0.9}}"#,
            "\n",
            r#"{"source":"dull","sentiment":0,"sentiment-metadata":{"class-name":"negative"}}"#,
            "\n\n",
            r#"{"source":"unlabeled","sentiment-metadata":{"failure-reason":"ClientError: timed out"}}"#,
            "\n",
        ));
        let manifest = read_channel(&dir, "").expect("manifest");
        assert_eq!(manifest.attribute, "sentiment");
        assert_eq!(manifest.items.len(), 2);
        assert_eq!(manifest.unlabeled, 1);
        assert_eq!(manifest.items[0].source, Source::Inline("great film".into()));
        // Ordered by the job's class index, not alphabetically.
        assert_eq!(manifest.classes(), vec!["negative", "positive"]);
    }

    #[test]
    fn names_the_line_of_bad_input() {
        let dir = channel("{\"source\":\"a\",\"x\":0,\"x-metadata\":{}}\nnot json\n");
        let err = read_channel(&dir, "").expect_err("bad line").to_string();
        assert!(err.contains("output.manifest line 2"), "{err}");
        let dir = channel("{\"source\":\"a\",\"x\":[0,1],\"x-metadata\":{}}\n");
        let err = read_channel(&dir, "").expect_err("multi-label").to_string();
        assert!(err.contains("multi-label"), "{err}");
        let dir = channel("{\"source\":\"a\",\"x\":0,\"x-metadata\":{},\"y\":1,\"y-metadata\":{}}\n");
        let err = read_channel(&dir, "").expect_err("ambiguous").to_string();
        assert!(err.contains("label_attribute"), "{err}");
    }

    #[test]
    fn resolves_references_inside_the_channel_only() {
        let dir = channel("");
        std::fs::create_dir_all(dir.join("cats")).expect("dir");
        std::fs::write(dir.join("cats/1.jpg"), b"x").expect("write");
        std::fs::write(dir.join("2.jpg"), b"x").expect("write");
        assert_eq!(resolve_ref(&dir, "cats/1.jpg"), Some(dir.join("cats/1.jpg")));
        assert_eq!(resolve_ref(&dir, "s3://bucket/cats/1.jpg"), Some(dir.join("cats/1.jpg")));
        assert_eq!(resolve_ref(&dir, "s3://bucket/dogs/2.jpg"), Some(dir.join("2.jpg")));
        assert_eq!(resolve_ref(&dir, "../../etc/2.jpg"), Some(dir.join("2.jpg")));
        assert_eq!(resolve_ref(&dir, "missing.jpg"), None);
        assert_eq!(resolve_ref(&dir, "/etc/passwd"), None);
    }
}
