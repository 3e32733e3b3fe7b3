//! `atelier-agent`: the process that runs on each compute node, reports its CPUs and
//! GPUs, and runs training jobs, kernels and model servers for the Atelier server.
//!
//! The compute issue brings its behaviour; until then the binary only identifies itself
//! so that the workspace, packaging and CI already include it.

fn main() {
    println!("atelier-agent {}: the compute agent is not implemented yet", env!("CARGO_PKG_VERSION"));
}
