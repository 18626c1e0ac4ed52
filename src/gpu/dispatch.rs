//! A recorded kernel launch: pipeline + bind group + workgroup counts, built once and replayed.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, Precision};

pub struct Dispatch {
    pub label: &'static str,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    /// The parameter block (binding 0); `update` rewrites it between submissions.
    uniform: wgpu::Buffer,
}

impl Dispatch {
    /// Bind `buffers` as `(binding, buffer)` to group 0 of `kernel` in `precision`; binding 0 is the
    /// uniform `params` block.
    pub fn new<P: bytemuck::Pod>(
        gpu: &Gpu,
        kernel: &Kernel,
        precision: Precision,
        params: &P,
        buffers: &[(u32, &wgpu::Buffer)],
        groups: [u32; 3],
    ) -> Result<Dispatch> {
        let max = gpu.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(Error::Shape(format!(
                "{}::{} needs {groups:?} workgroups, over this adapter's {max} per dimension; use smaller tiles",
                kernel.shader.name, kernel.entry
            )));
        }
        let pipeline = gpu.pipeline(kernel, precision)?;
        let uniform = crate::gpu::uniform(gpu, kernel.entry, params);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        entries.extend(
            buffers.iter().map(|(b, buf)| wgpu::BindGroupEntry { binding: *b, resource: buf.as_entire_binding() }),
        );
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Ok(Dispatch { label: kernel.entry, pipeline, bind_group, groups, uniform })
    }

    /// Replace the parameters (same type as at creation); takes effect at the next submission.
    pub fn update<P: bytemuck::Pod>(&self, gpu: &Gpu, params: &P) {
        gpu.queue.write_buffer(&self.uniform, 0, bytemuck::bytes_of(params));
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.groups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// Workgroup counts covering `count` invocations of a 1-D kernel of `wg` lanes, folded into
/// (x, y) so no dimension exceeds the adapter's limit. Kernels index `gid.x + gid.y * nwg.x * wg`.
pub fn grid_1d(gpu: &Gpu, count: usize, wg: usize) -> [u32; 2] {
    let groups = count.div_ceil(wg).max(1);
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if groups <= max { [groups as u32, 1] } else { [max as u32, groups.div_ceil(max) as u32] }
}

impl Gpu {
    /// Record `dispatches` into one compute pass, submit, and wait.
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<()> {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        self.queue.submit([enc.finish()]);
        self.wait()
    }
}
