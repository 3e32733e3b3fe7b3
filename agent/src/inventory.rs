//! What this node is and how busy it is: CPUs, memory and disk through `sysinfo`, NVIDIA
//! GPUs through NVML. A node without NVML (no driver, no GPU) is a CPU node; that is not
//! an error.

use std::collections::BTreeMap;
use std::path::Path;

use atelier_protocol::{Gpu, GpuUsage, NodeInfo, Usage};
use nvml_wrapper::Nvml;
use sysinfo::{Disks, System};

/// Reads the node's inventory and utilization.
pub struct Inventory {
    system: System,
    nvml: Option<Nvml>,
}

impl Inventory {
    pub fn new() -> Inventory {
        let nvml = match Nvml::init() {
            Ok(nvml) => Some(nvml),
            Err(err) => {
                tracing::info!(reason = %err, "NVML not available: this is a CPU node");
                None
            }
        };
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        Inventory { system, nvml }
    }

    /// The GPUs NVML reports (none without NVML).
    pub fn gpus(&self) -> Vec<Gpu> {
        let Some(nvml) = &self.nvml else { return Vec::new() };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|index| {
                let device = nvml.device_by_index(index).ok()?;
                Some(Gpu {
                    index,
                    uuid: device.uuid().unwrap_or_default(),
                    model: device.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                    memory_mb: device.memory_info().map(|m| m.total / (1024 * 1024)).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Each GPU's device node number (`/dev/nvidiaN`) by NVML index: they need not be
    /// equal, and a sandbox must get the device of the GPU it was assigned.
    pub fn gpu_minors(&self) -> BTreeMap<u32, u32> {
        let Some(nvml) = &self.nvml else { return BTreeMap::new() };
        let count = nvml.device_count().unwrap_or(0);
        (0..count).filter_map(|index| Some((index, nvml.device_by_index(index).ok()?.minor_number().ok()?))).collect()
    }

    /// The node's description for registration.
    pub fn node_info(&mut self, name: &str, work_dir: &Path, labels: BTreeMap<String, String>) -> NodeInfo {
        self.system.refresh_memory();
        let hostname = System::host_name().unwrap_or_else(|| "unknown".into());
        NodeInfo {
            name: name.to_string(),
            hostname,
            os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
            cpus: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            memory_mb: self.system.total_memory() / (1024 * 1024),
            disk_free_mb: disk_free_mb(work_dir),
            gpus: self.gpus(),
            labels,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            sandbox: String::new(),
            advertise_host: String::new(),
        }
    }

    /// A utilization sample (CPU usage is measured since the previous sample).
    pub fn usage(&mut self) -> Usage {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let gpus = match &self.nvml {
            None => Vec::new(),
            Some(nvml) => (0..nvml.device_count().unwrap_or(0))
                .filter_map(|index| {
                    let device = nvml.device_by_index(index).ok()?;
                    Some(GpuUsage {
                        index,
                        utilization_pct: device.utilization_rates().map(|u| f64::from(u.gpu)).unwrap_or(0.0),
                        memory_used_mb: device.memory_info().map(|m| m.used / (1024 * 1024)).unwrap_or(0),
                    })
                })
                .collect(),
        };
        Usage {
            cpu_pct: f64::from(self.system.global_cpu_usage()),
            memory_used_mb: self.system.used_memory() / (1024 * 1024),
            gpus,
        }
    }
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory::new()
    }
}

/// Free space on the file system holding `dir`.
fn disk_free_mb(dir: &Path) -> u64 {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let disks = Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space() / (1024 * 1024))
        .unwrap_or(0)
}
