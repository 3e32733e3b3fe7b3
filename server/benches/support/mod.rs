//! What the benches share (server and agent benches include this file by path).

/// The `q` quantile (0-1) of sorted samples, nearest rank; the default on no samples.
pub fn percentile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
