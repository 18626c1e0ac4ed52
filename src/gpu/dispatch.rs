//! A recorded kernel launch: pipeline + bind group + workgroup counts, built once and replayed;
//! and [`Binding`], what a kernel binds: a whole buffer or a byte range of one.

use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, Precision, Tensor};

/// A storage buffer as a kernel sees it: the whole buffer, or a byte range of it (a tensor inside
/// a flat parameter buffer). [`Dispatch::new`] checks that a range is not empty, lies inside the
/// buffer and starts at a multiple of the adapter's `min_storage_buffer_offset_alignment`.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    pub buffer: &'a wgpu::Buffer,
    /// Byte range; `None`: the whole buffer.
    range: Option<(u64, u64)>,
}

impl<'a> Binding<'a> {
    /// The bytes `range` of `buffer`.
    pub fn range(buffer: &'a wgpu::Buffer, range: Range<u64>) -> Binding<'a> {
        Binding { buffer, range: Some((range.start, range.end.saturating_sub(range.start))) }
    }

    /// First byte the kernel sees.
    pub fn offset(&self) -> u64 {
        self.range.map_or(0, |(offset, _)| offset)
    }

    /// Bytes the kernel sees.
    pub fn size(&self) -> u64 {
        self.range.map_or(self.buffer.size(), |(_, size)| size)
    }

    /// Whether the two share a byte of the same buffer.
    pub fn overlaps(&self, other: &Binding) -> bool {
        let (a, b) = (self.offset()..self.offset() + self.size(), other.offset()..other.offset() + other.size());
        self.buffer == other.buffer && a.start < b.end && b.start < a.end
    }

    fn resource(&self, gpu: &Gpu, what: &str) -> Result<wgpu::BindingResource<'a>> {
        let Some((offset, size)) = self.range else {
            return Ok(self.buffer.as_entire_binding());
        };
        let align = gpu.limits.min_storage_buffer_offset_alignment as u64;
        let size = NonZeroU64::new(size).filter(|s| offset + s.get() <= self.buffer.size() && offset % align == 0);
        let Some(size) = size else {
            return Err(Error::Shape(format!(
                "{what}: bytes {offset}..{} of a {}-byte buffer cannot be bound (empty, outside the buffer, or \
                 not at a multiple of this adapter's {align}-byte storage offset alignment)",
                offset + self.size(),
                self.buffer.size()
            )));
        };
        Ok(wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: self.buffer, offset, size: Some(size) }))
    }
}

impl<'a> From<&'a wgpu::Buffer> for Binding<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Binding<'a> {
        Binding { buffer, range: None }
    }
}

impl<'a> From<&'a Tensor> for Binding<'a> {
    fn from(tensor: &'a Tensor) -> Binding<'a> {
        Binding::from(&tensor.buffer)
    }
}

pub struct Dispatch {
    pub label: &'static str,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    /// Workgroup counts read by the GPU at this byte offset of this buffer instead (an
    /// earlier dispatch of the same submission may write them, e.g. 0 to skip this one).
    indirect: Option<(wgpu::Buffer, u64)>,
    /// The parameter block (binding 0); `update` rewrites it between submissions.
    uniform: wgpu::Buffer,
}

impl Dispatch {
    /// Bind `buffers` as `(binding, buffer or buffer range)` to group 0 of `kernel` in
    /// `precision`; binding 0 is the uniform `params` block.
    pub fn new<'b, P: bytemuck::Pod, B: Into<Binding<'b>> + Copy>(
        gpu: &Gpu,
        kernel: &Kernel,
        precision: Precision,
        params: &P,
        buffers: &[(u32, B)],
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
        for &(binding, buffer) in buffers {
            let resource = buffer.into().resource(gpu, kernel.entry)?;
            entries.push(wgpu::BindGroupEntry { binding, resource });
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Ok(Dispatch { label: kernel.entry, pipeline, bind_group, groups, indirect: None, uniform })
    }

    /// This dispatch with its workgroup counts read from `buffer` (`INDIRECT` usage) at byte
    /// `offset` when it runs: three u32, at most the counts it was made with.
    pub fn indirect(self, buffer: &wgpu::Buffer, offset: u64) -> Dispatch {
        Dispatch { indirect: Some((buffer.clone(), offset)), ..self }
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
        match &self.indirect {
            Some((buffer, offset)) => pass.dispatch_workgroups_indirect(buffer, *offset),
            None => pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]),
        }
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
