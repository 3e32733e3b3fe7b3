//! Image classification from a labeling job's output manifest: a small CNN (two blocks of
//! 3×3 convolution, ReLU and 2×2 max-pooling, then a dense layer) on images resized to
//! `image_size` square. `model.json` records the size and the pixel scaling a server
//! must apply.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::manifest::{self, Item, Source};
use super::{fit, write_model_spec, JobEnv, Objective, TensorExamples};

/// Units of the dense layer before the output.
const DENSE_UNITS: usize = 64;

/// `model.json` of an image classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageModel {
    pub algorithm: String,
    pub label_attribute: String,
    pub classes: Vec<String>,
    /// Images are resized (stretched) to this many pixels square, RGB.
    pub image_size: usize,
    /// Filters of the first convolution; the second has twice as many.
    pub channels: usize,
    /// Input layout and scaling: channels × height × width, each value `pixel / 127.5 - 1`.
    pub input: String,
}

/// The network.
pub struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    dense: Linear,
    out: Linear,
}

impl Cnn {
    pub fn new(spec: &ImageModel, vb: VarBuilder) -> candle_core::Result<Cnn> {
        let config = Conv2dConfig { padding: 1, ..Default::default() };
        let c = spec.channels;
        let side = spec.image_size / 4;
        Ok(Cnn {
            conv1: candle_nn::conv2d(3, c, 3, config, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(c, 2 * c, 3, config, vb.pp("conv2"))?,
            dense: candle_nn::linear(2 * c * side * side, DENSE_UNITS, vb.pp("dense"))?,
            out: candle_nn::linear(DENSE_UNITS, spec.classes.len(), vb.pp("out"))?,
        })
    }
}

impl Module for Cnn {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(x)?.relu()?.max_pool2d(2)?;
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?;
        let x = self.dense.forward(&x.flatten_from(1)?)?.relu()?;
        self.out.forward(&x)
    }
}

/// Decodes, resizes and scales one image to `3 × size × size` values.
pub fn pixels(bytes: &[u8], size: usize) -> anyhow::Result<Vec<f32>> {
    let image = image::load_from_memory(bytes)?.to_rgb8();
    let side = u32::try_from(size)?;
    let resized = image::imageops::resize(&image, side, side, image::imageops::FilterType::Triangle);
    let mut out = vec![0f32; 3 * size * size];
    for (x, y, pixel) in resized.enumerate_pixels() {
        for c in 0..3 {
            out[c * size * size + y as usize * size + x as usize] = f32::from(pixel[c]) / 127.5 - 1.0;
        }
    }
    Ok(out)
}

fn examples(
    spec: &ImageModel,
    dir: &std::path::Path,
    items: &[Item],
    device: &Device,
) -> anyhow::Result<TensorExamples> {
    let size = spec.image_size;
    let mut x = Vec::with_capacity(items.len() * 3 * size * size);
    let mut y = Vec::with_capacity(items.len());
    for item in items {
        let Source::Ref(reference) = &item.source else {
            bail!("{}: image classification needs a source-ref naming the image", item.origin)
        };
        let Some(path) = manifest::resolve_ref(dir, reference) else {
            bail!("{}: the image {reference} is not in the channel", item.origin)
        };
        let bytes = std::fs::read(&path).with_context(|| format!("{}: reading {reference}", item.origin))?;
        x.extend(
            pixels(&bytes, size)
                .with_context(|| format!("{}: {reference} is not a PNG, JPEG or WebP image", item.origin))?,
        );
        let Some(class) = spec.classes.iter().position(|c| *c == item.class) else {
            bail!("{}: class {:?} does not occur in the training data", item.origin, item.class)
        };
        y.push(class as u32);
    }
    let n = y.len();
    Ok(TensorExamples { x: Tensor::from_vec(x, (n, 3, size, size), device)?, y: Tensor::from_vec(y, n, device)? })
}

/// Trains and writes the model.
pub fn train(env: &JobEnv) -> anyhow::Result<()> {
    let device = env.device()?;
    let (manifest, classes) = manifest::read_training(env)?;
    let train_dir = env.channels.get("train").context("the train channel is missing")?;
    let spec = ImageModel {
        algorithm: "image_classification".into(),
        label_attribute: manifest.attribute.clone(),
        classes,
        image_size: env.hp("image_size")?,
        channels: env.hp("channels")?,
        input: "rgb chw pixel/127.5-1".into(),
    };
    let (train, validation) = match env.channels.get("validation") {
        Some(dir) => {
            let held = manifest::read_channel(dir, &manifest.attribute)?;
            (examples(&spec, train_dir, &manifest.items, &device)?, examples(&spec, dir, &held.items, &device)?)
        }
        None => {
            let (train, held) = env.holdout(manifest.items.len())?;
            let pick = |rows: &[usize]| rows.iter().map(|&i| manifest.items[i].clone()).collect::<Vec<_>>();
            (examples(&spec, train_dir, &pick(&train), &device)?, examples(&spec, train_dir, &pick(&held), &device)?)
        }
    };
    println!(
        "image classification ({}): {} training images, {} validation images, {} unlabeled skipped, \
         {}x{} pixels, {} classes, device {device:?}",
        manifest.attribute,
        super::Examples::len(&train),
        super::Examples::len(&validation),
        manifest.unlabeled,
        spec.image_size,
        spec.image_size,
        spec.classes.len()
    );
    let varmap = VarMap::new();
    let model = Cnn::new(&spec, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    fit(env, &model, &varmap, Objective::Classification, &train, Some(&validation), &device)?;
    write_model_spec(env, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_are_resized_and_scaled_channel_first() {
        let mut image = image::RgbImage::new(4, 2);
        for pixel in image.pixels_mut() {
            *pixel = image::Rgb([255, 0, 128]);
        }
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(image)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("encode");
        let values = pixels(&png, 2).expect("decode");
        assert_eq!(values.len(), 12);
        assert!(values[..4].iter().all(|v| (*v - 1.0).abs() < 1e-6), "red plane: {values:?}");
        assert!(values[4..8].iter().all(|v| (*v + 1.0).abs() < 1e-6), "green plane: {values:?}");
        assert!(pixels(b"not an image", 2).is_err());
    }
}
