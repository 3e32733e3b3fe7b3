//! Placement: which queued job a node should run next, and why a job still waits.
//!
//! Pure functions over a snapshot of node capacity, so they are tested with simulated
//! inventories; [`super::jobs`] loads the snapshot and commits a placement with a
//! conditional update, which is what keeps two replicas from placing one job twice.

use std::collections::{BTreeMap, BTreeSet};

use atelier_protocol::Resources;

/// What a node has, and what its running jobs already use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub name: String,
    pub cpus: u32,
    pub memory_mb: u64,
    /// Every GPU index on the node.
    pub gpus: Vec<u32>,
    pub labels: BTreeMap<String, String>,
    pub used_cpus: u32,
    pub used_memory_mb: u64,
    /// GPU indices held by running jobs.
    pub used_gpus: BTreeSet<u32>,
}

impl Capacity {
    /// An idle node.
    pub fn idle(name: &str, cpus: u32, memory_mb: u64, gpu_count: u32) -> Capacity {
        Capacity {
            name: name.to_string(),
            cpus,
            memory_mb,
            gpus: (0..gpu_count).collect(),
            labels: BTreeMap::new(),
            used_cpus: 0,
            used_memory_mb: 0,
            used_gpus: BTreeSet::new(),
        }
    }

    pub fn free_cpus(&self) -> u32 {
        self.cpus.saturating_sub(self.used_cpus)
    }

    pub fn free_memory_mb(&self) -> u64 {
        self.memory_mb.saturating_sub(self.used_memory_mb)
    }

    pub fn free_gpus(&self) -> Vec<u32> {
        self.gpus.iter().copied().filter(|g| !self.used_gpus.contains(g)).collect()
    }

    fn has_labels(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Whether the node could run the job when idle.
    pub fn could_ever_fit(&self, r: &Resources) -> bool {
        self.has_labels(&r.labels)
            && r.cpus <= self.cpus
            && r.memory_mb <= self.memory_mb
            && r.gpus as usize <= self.gpus.len()
    }

    /// The GPUs the job would get if it fits now (one job per GPU).
    pub fn fit(&self, r: &Resources) -> Option<Vec<u32>> {
        if !self.has_labels(&r.labels) || r.cpus > self.free_cpus() || r.memory_mb > self.free_memory_mb() {
            return None;
        }
        let free = self.free_gpus();
        (free.len() >= r.gpus as usize).then(|| free[..r.gpus as usize].to_vec())
    }

    /// Records a placement in this snapshot.
    pub fn take(&mut self, r: &Resources, gpus: &[u32]) {
        self.used_cpus += r.cpus;
        self.used_memory_mb += r.memory_mb;
        self.used_gpus.extend(gpus.iter().copied());
    }
}

/// A queued job, as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: String,
    pub priority: i64,
    /// Milliseconds; FIFO within a priority.
    pub created_at: i64,
    pub resources: Resources,
}

/// Orders the queue: higher priority first, then oldest first.
pub fn queue_order(queue: &mut [Queued]) {
    queue.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.created_at.cmp(&b.created_at)).then(a.id.cmp(&b.id)));
}

/// The first job of the (ordered) queue that fits on `node` now, with its GPUs. Jobs
/// that do not fit are passed over, so a small job can use capacity a large one at the
/// head cannot (the large one keeps its place for nodes where it fits).
pub fn pick<'a>(node: &Capacity, queue: &'a [Queued]) -> Option<(&'a Queued, Vec<u32>)> {
    queue.iter().find_map(|job| node.fit(&job.resources).map(|gpus| (job, gpus)))
}

/// Why a job cannot be placed on any node now (or `None` if some node has room).
pub fn why_waiting(r: &Resources, nodes: &[Capacity]) -> Option<String> {
    if nodes.is_empty() {
        return Some("no compute node is ready".into());
    }
    let labelled: Vec<&Capacity> = nodes.iter().filter(|n| n.has_labels(&r.labels)).collect();
    if labelled.is_empty() {
        let wanted: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Some(format!("no ready node has the labels {}", wanted.join(", ")));
    }
    if labelled.iter().any(|n| n.fit(r).is_some()) {
        return None;
    }
    let plural = |n: u64, what: &str| if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") };
    let most_gpus = labelled.iter().map(|n| n.free_gpus().len() as u64).max().unwrap_or(0);
    if r.gpus as u64 > most_gpus {
        return Some(format!("needs {}; largest free on any node is {most_gpus}", plural(r.gpus as u64, "GPU")));
    }
    let most_cpus = labelled.iter().map(|n| n.free_cpus() as u64).max().unwrap_or(0);
    if r.cpus as u64 > most_cpus {
        return Some(format!("needs {}; most free on any node is {most_cpus}", plural(r.cpus as u64, "CPU")));
    }
    let most_memory = labelled.iter().map(|n| n.free_memory_mb()).max().unwrap_or(0);
    if r.memory_mb > most_memory {
        return Some(format!("needs {} MB of memory; most free on any node is {most_memory} MB", r.memory_mb));
    }
    Some("no single node has all of the CPUs, memory and GPUs it needs free at once".into())
}

/// Why no registered node could ever run the job (checked at submit), or `None`.
pub fn never_fits(r: &Resources, nodes: &[Capacity]) -> Option<String> {
    if nodes.is_empty() {
        return Some("no compute node is registered; add one under Compute".into());
    }
    if nodes.iter().any(|n| n.could_ever_fit(r)) {
        return None;
    }
    let most_gpus = nodes.iter().map(|n| n.gpus.len()).max().unwrap_or(0);
    let most_cpus = nodes.iter().map(|n| n.cpus).max().unwrap_or(0);
    let most_memory = nodes.iter().map(|n| n.memory_mb).max().unwrap_or(0);
    let wanted: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(format!(
        "no compute node can ever run this job: it asks for {} CPUs, {} MB, {} GPUs{}; the largest node has \
         {most_cpus} CPUs, {most_memory} MB, {most_gpus} GPUs",
        r.cpus,
        r.memory_mb,
        r.gpus,
        if wanted.is_empty() { String::new() } else { format!(" and labels {}", wanted.join(", ")) }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpus: u32, memory_mb: u64, gpus: u32) -> Resources {
        Resources { cpus, memory_mb, gpus, labels: BTreeMap::new() }
    }

    fn queued(id: &str, priority: i64, created_at: i64, r: Resources) -> Queued {
        Queued { id: id.into(), priority, created_at, resources: r }
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = vec![
            queued("late-low", 0, 3, res(1, 100, 0)),
            queued("early-low", 0, 1, res(1, 100, 0)),
            queued("high", 5, 9, res(1, 100, 0)),
        ];
        queue_order(&mut q);
        let ids: Vec<&str> = q.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["high", "early-low", "late-low"]);
    }

    #[test]
    fn one_job_per_gpu_and_several_jobs_per_node() {
        let mut node = Capacity::idle("g", 16, 64_000, 4);
        let mut q = vec![
            queued("a", 0, 1, res(2, 1000, 2)),
            queued("b", 0, 2, res(2, 1000, 1)),
            queued("c", 0, 3, res(2, 1000, 2)),
            queued("d", 0, 4, res(2, 1000, 0)),
        ];
        queue_order(&mut q);
        let mut placed = Vec::new();
        while let Some((job, gpus)) = pick(&node, &q) {
            let (id, r) = (job.id.clone(), job.resources.clone());
            node.take(&r, &gpus);
            placed.push((id.clone(), gpus));
            q.retain(|j| j.id != id);
        }
        // a gets GPUs 0-1, b gets 2, c (2 GPUs) cannot fit in the one left, d needs none.
        assert_eq!(placed, vec![("a".to_string(), vec![0, 1]), ("b".to_string(), vec![2]), ("d".to_string(), vec![])]);
        assert_eq!(q.len(), 1);
        assert_eq!(
            why_waiting(&q[0].resources, &[node]).as_deref(),
            Some("needs 2 GPUs; largest free on any node is 1")
        );
    }

    #[test]
    fn multi_gpu_nodes_take_the_job_a_small_node_cannot() {
        let small = Capacity::idle("small", 8, 32_000, 1);
        let big = Capacity::idle("big", 32, 256_000, 8);
        let q = vec![queued("eight", 0, 1, res(4, 8000, 8)), queued("one", 0, 2, res(1, 1000, 1))];
        // The small node skips the 8-GPU job and takes the 1-GPU one.
        assert_eq!(pick(&small, &q).map(|(j, g)| (j.id.as_str(), g)), Some(("one", vec![0])));
        assert_eq!(pick(&big, &q).map(|(j, g)| (j.id.as_str(), g)), Some(("eight", (0..8).collect())));
    }

    #[test]
    fn cpu_and_memory_limits_are_respected() {
        let mut node = Capacity::idle("c", 4, 8000, 0);
        node.take(&res(3, 7000, 0), &[]);
        assert!(node.fit(&res(2, 100, 0)).is_none());
        assert!(node.fit(&res(1, 2000, 0)).is_none());
        assert_eq!(node.fit(&res(1, 1000, 0)), Some(vec![]));
        assert_eq!(
            why_waiting(&res(2, 100, 0), std::slice::from_ref(&node)).as_deref(),
            Some("needs 2 CPUs; most free on any node is 1")
        );
    }

    #[test]
    fn labels_must_all_match() {
        let mut node = Capacity::idle("l", 8, 8000, 0);
        node.labels.insert("zone".into(), "a".into());
        let mut r = res(1, 100, 0);
        r.labels.insert("zone".into(), "b".into());
        assert!(node.fit(&r).is_none());
        assert_eq!(
            why_waiting(&r, std::slice::from_ref(&node)).as_deref(),
            Some("no ready node has the labels zone=b")
        );
        r.labels.insert("zone".into(), "a".into());
        assert!(node.fit(&r).is_some());
    }

    #[test]
    fn impossible_requests_are_refused_with_the_reason() {
        let nodes = [Capacity::idle("a", 8, 16_000, 1), Capacity::idle("b", 4, 64_000, 2)];
        let msg = never_fits(&res(2, 1000, 4), &nodes).expect("4 GPUs never fit");
        assert!(msg.contains("asks for 2 CPUs, 1000 MB, 4 GPUs") && msg.contains("2 GPUs"), "{msg}");
        assert!(never_fits(&res(4, 60_000, 2), &nodes).is_none());
        // Busy does not mean impossible.
        let mut busy = nodes.clone();
        busy[1].take(&res(4, 64_000, 2), &[0, 1]);
        assert!(never_fits(&res(4, 60_000, 2), &busy).is_none());
        assert!(never_fits(&res(1, 1, 0), &[]).is_some());
    }

    #[test]
    fn thousand_node_inventory_places_each_job_once() {
        let mut nodes: Vec<Capacity> = (0..1000).map(|i| Capacity::idle(&format!("n{i}"), 8, 32_000, i % 3)).collect();
        let mut q: Vec<Queued> =
            (0..5000).map(|i| queued(&format!("j{i}"), i % 4, i, res(2, 4000, (i % 3) as u32))).collect();
        queue_order(&mut q);
        let mut placed = BTreeSet::new();
        for node in nodes.iter_mut() {
            while let Some((job, gpus)) = pick(node, &q) {
                let (id, r) = (job.id.clone(), job.resources.clone());
                node.take(&r, &gpus);
                assert!(placed.insert(id.clone()), "{id} placed twice");
                q.retain(|j| j.id != id);
            }
            assert!(node.used_cpus <= node.cpus && node.used_memory_mb <= node.memory_mb);
        }
        assert!(!placed.is_empty());
        // Every job left waits for a stated reason.
        for job in q.iter().take(20) {
            assert!(why_waiting(&job.resources, &nodes).is_some());
        }
    }
}
