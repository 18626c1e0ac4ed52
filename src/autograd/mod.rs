//! The autograd tape: operations recorded in forward order, each an [`Op`] holding its forward
//! launches and the backward launches that turn the gradient of its outputs into the gradients of
//! its inputs and parameters; the backward replays the ops in reverse. Gradients stay on the GPU.
//! Small and explicit: the graph is fixed for a tile shape (a training plan builds it once and
//! replays it every step). The trainable ops themselves are units in [`layers`], each keeping
//! the state its backward needs from its forward.

pub mod layers;

use crate::gpu::Dispatch;

/// One recorded operation: its forward dispatches and its backward dispatches.
pub struct Op {
    pub label: &'static str,
    pub forward: Vec<Dispatch>,
    /// Run, in their own order, when the tape is replayed in reverse.
    pub backward: Vec<Dispatch>,
}

#[derive(Default)]
pub struct Tape {
    ops: Vec<Op>,
}

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    /// Record an op after the ones recorded so far.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Labels in forward order (for debugging and tests).
    pub fn labels(&self) -> Vec<&'static str> {
        self.ops.iter().map(|op| op.label).collect()
    }

    /// Every op's forward dispatches, in recording order.
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in self.ops.iter().flat_map(|op| &op.forward) {
            d.record(pass);
        }
    }

    /// Every op's backward dispatches, the ops in reverse recording order.
    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in self.ops.iter().rev().flat_map(|op| &op.backward) {
            d.record(pass);
        }
    }
}
