//! The autograd tape: forward launches recorded in order, each with the backward launches that
//! turn the gradient of its outputs into the gradients of its inputs and parameters; backward
//! replays them in reverse. Gradients stay on the GPU. Small and explicit: the graph is fixed
//! for a tile shape (a training plan builds it once and replays it every step).

use crate::gpu::Dispatch;

/// One recorded operation: its forward dispatches and its backward dispatches.
struct Entry {
    label: &'static str,
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
}

#[derive(Default)]
pub struct Tape {
    entries: Vec<Entry>,
}

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    /// Record an op. `backward` runs, in its own order, when the tape is replayed in reverse.
    pub fn push(&mut self, label: &'static str, forward: Vec<Dispatch>, backward: Vec<Dispatch>) {
        self.entries.push(Entry { label, forward, backward });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Labels in forward order (for debugging and tests).
    pub fn labels(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.label).collect()
    }

    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for e in &self.entries {
            for d in &e.forward {
                d.record(pass);
            }
        }
    }

    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for e in self.entries.iter().rev() {
            for d in &e.backward {
                d.record(pass);
            }
        }
    }
}
