//! Image inputs have no columns to compare, so the monitor profiles each image by a
//! few statistics of its pixels. A camera that got darker, a new colour cast or a
//! different resolution shows up as drift in these, as it would hurt the model.

use std::collections::BTreeMap;
use std::io::Cursor;

/// The statistics profiled per image, in the order they are listed.
pub const FEATURES: [&str; 7] = ["width", "height", "mean_red", "mean_green", "mean_blue", "brightness", "contrast"];

/// Larger images are refused rather than decoded: a captured payload is untrusted.
const MAX_PIXELS: u64 = 40_000_000;

/// The [`FEATURES`] of an encoded image (PNG, JPEG or WebP), or `None` when the bytes
/// are not one. Channel means are 0..255; brightness is the mean luma (Rec. 601) and
/// contrast its standard deviation.
pub fn features(bytes: &[u8]) -> Option<[f64; FEATURES.len()]> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?;
    reader.format()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4);
    reader.limits(limits);
    let (width, height) = reader.into_dimensions().ok()?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return None;
    }
    // `into_dimensions` consumed the reader; decoding needs a fresh one.
    let img = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?.decode().ok()?.into_rgb8();
    let n = f64::from(width) * f64::from(height);
    if n == 0.0 {
        return None;
    }
    let (mut r, mut g, mut b, mut luma, mut luma_sq) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in img.pixels() {
        let [pr, pg, pb] = p.0.map(f64::from);
        let y = 0.299 * pr + 0.587 * pg + 0.114 * pb;
        (r, g, b, luma, luma_sq) = (r + pr, g + pg, b + pb, luma + y, luma_sq + y * y);
    }
    let mean = luma / n;
    let contrast = (luma_sq / n - mean * mean).max(0.0).sqrt();
    Some([f64::from(width), f64::from(height), r / n, g / n, b / n, mean, contrast])
}

/// A value as the profiler reads it: three decimals are plenty for pixel statistics.
pub fn format(value: f64) -> String {
    format!("{value:.3}")
}

/// The statistics of an image as a row of named values, as captured rows are.
pub fn row(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    let values = features(bytes)?;
    Some(FEATURES.iter().zip(values).map(|(name, v)| (name.to_string(), format(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(width, height, image::Rgb(rgb)))
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .expect("encode");
        bytes
    }

    #[test]
    fn statistics_of_an_image() {
        let f = row(&png(8, 4, [200, 100, 0])).expect("a PNG");
        let get = |k: &str| f.get(k).map(String::as_str);
        assert_eq!(get("width"), Some("8.000"));
        assert_eq!(get("height"), Some("4.000"));
        assert_eq!(get("mean_red"), Some("200.000"));
        assert_eq!(get("mean_blue"), Some("0.000"));
        assert_eq!(get("brightness"), Some("118.500"));
        assert_eq!(get("contrast"), Some("0.000"));
        assert_eq!(features(&png(2, 2, [0, 0, 0])).map(|f| f[5]), Some(0.0));
        assert!(features(b"x1,x2\n1,2\n").is_none());
        assert!(features(&png(8, 4, [1, 2, 3])[..20]).is_none());
    }
}
