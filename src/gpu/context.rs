//! Adapter selection and device creation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::adapter_choice::AdapterChoice;
use crate::gpu::pipeline::{Kernel, Precision};

/// How to pick the adapter. `backend` is `auto|vulkan|dx12|metal|gl`; `adapter` an index, PCI
/// bus id or name ([`AdapterChoice`]); `force_f32` hides
/// SHADER_F16 even where the adapter offers it (also `PSI_GPU_FORCE_F32=1`).
#[derive(Clone, Debug)]
pub struct GpuOptions {
    pub backend: String,
    pub adapter: Option<AdapterChoice>,
    pub force_f32: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { backend: "auto".into(), adapter: None, force_f32: false }
    }
}

impl GpuOptions {
    /// Options from the environment: `PSI_GPU_BACKEND`, `PSI_GPU_ADAPTER` (as [`AdapterChoice`]
    /// parses it; an empty value is none), `PSI_GPU_FORCE_F32`.
    pub fn from_env() -> Self {
        let mut o = GpuOptions::default();
        if let Ok(b) = std::env::var("PSI_GPU_BACKEND")
            && !b.is_empty()
        {
            o.backend = b;
        }
        o.adapter = std::env::var("PSI_GPU_ADAPTER").ok().and_then(|s| s.parse().ok());
        o.force_f32 = env_flag("PSI_GPU_FORCE_F32");
        o
    }
}

/// The environment variable to set, before any thread starts, so that opening Vulkan prints no
/// `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` lines; `None` when nothing
/// needs to change.
///
/// Mesa's device-select layer (an implicit Vulkan layer) asks libwayland for the display's GPU
/// whenever the instance enables `VK_KHR_wayland_surface`, which wgpu always does where it
/// exists. Without an absolute `XDG_RUNTIME_DIR` (or an absolute `WAYLAND_DISPLAY`, or
/// `WAYLAND_SOCKET`) libwayland cannot reach a display at all and says so on stderr, once per
/// enumeration. Then — and only then: a runtime folder of the user's own is never replaced —
/// `XDG_RUNTIME_DIR=/dev/null` makes the same failed probe silent (no socket can exist under
/// `/dev/null`, so the connection fails at once), and the layer goes on exactly as before
/// (`MESA_VK_DEVICE_SELECT`, `DRI_PRIME`, the X11 and boot-VGA probes), which disabling it
/// (`NODEVICE_SELECT=1`) would not. Changing the environment is the embedder's part: the CLI
/// does it first thing in `main`; an embedding such as the Python package can set the same
/// variable before it opens a device.
pub fn quiet_display_probe_env() -> Option<(&'static str, &'static str)> {
    quiet_display_probe(|name| std::env::var_os(name))
}

fn quiet_display_probe(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<(&'static str, &'static str)> {
    if !cfg!(all(unix, not(target_vendor = "apple"), not(target_os = "android"))) {
        return None;
    }
    let absolute = |name: &str| var(name).is_some_and(|v| v.to_string_lossy().starts_with('/'));
    let unset = var("XDG_RUNTIME_DIR").is_none_or(|v| v.is_empty());
    let other_route = absolute("WAYLAND_DISPLAY") || var("WAYLAND_SOCKET").is_some();
    (unset && !other_route).then_some(("XDG_RUNTIME_DIR", "/dev/null"))
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).map(|v| !v.is_empty() && v != "0").unwrap_or(false)
}

pub fn parse_backends(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "auto" | "" => wgpu::Backends::all(),
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "metal" | "mtl" => wgpu::Backends::METAL,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        other => return Err(Error::UnknownBackend(other.into())),
    })
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Adapters in a stable order of preference: discrete, integrated, virtual, software (CPU), other;
/// Vulkan/DX12/Metal before GL within a type.
fn sorted_adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let inst = instance(backends);
    let mut adapters = pollster::block_on(inst.enumerate_adapters(backends));
    let rank = |a: &wgpu::Adapter| {
        let info = a.get_info();
        let t = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        let b = if info.backend == wgpu::Backend::Gl { 1 } else { 0 };
        (t, b)
    };
    adapters.sort_by_key(rank);
    adapters
}

/// What `psi-gpu info` prints for one adapter.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// `DDDD:BB:DD.F` where the driver reports it, else empty.
    pub pci_bus_id: String,
    pub shader_f16: bool,
    pub float32_atomics: bool,
    pub subgroups: bool,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations_per_workgroup: u32,
    pub cooperative_matrix: Vec<String>,
}

fn report(index: usize, a: &wgpu::Adapter) -> AdapterReport {
    let info = a.get_info();
    let f = a.features();
    let l = a.limits();
    let coop = a
        .cooperative_matrix_properties()
        .iter()
        .map(|c| format!("{}x{}x{} {:?}->{:?}", c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type))
        .collect();
    AdapterReport {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        pci_bus_id: info.device_pci_bus_id.clone(),
        shader_f16: f.contains(wgpu::Features::SHADER_F16),
        float32_atomics: f.contains(wgpu::Features::SHADER_FLOAT32_ATOMIC),
        subgroups: f.contains(wgpu::Features::SUBGROUP),
        max_storage_binding: l.max_storage_buffer_binding_size,
        max_buffer: l.max_buffer_size,
        max_workgroup_storage: l.max_compute_workgroup_storage_size,
        max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
        cooperative_matrix: coop,
    }
}

/// Every adapter the chosen backends expose, in the order `--adapter N` counts them.
pub fn list_adapters(backend: &str) -> Result<Vec<AdapterReport>> {
    let backends = parse_backends(backend)?;
    Ok(sorted_adapters(backends).iter().enumerate().map(|(i, a)| report(i, a)).collect())
}

/// (shader, entry point, precision).
type PipelineKey = (&'static str, &'static str, Precision);

/// An open device with its queue, what was enabled, and the compiled-pipeline cache.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: AdapterReport,
    pub limits: wgpu::Limits,
    /// SHADER_F16 was enabled on the device.
    pub f16: bool,
    /// SHADER_FLOAT32_ATOMIC was enabled on the device.
    pub float32_atomics: bool,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

impl Gpu {
    /// Open the adapter chosen by `opts` (the first in preference order unless `adapter` is set).
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        let backends = parse_backends(&opts.backend)?;
        // `auto` opens GL only when no Vulkan/DX12/Metal adapter exists: probing GL is slow and
        // noisy on machines without a display.
        let mut adapters = if backends == wgpu::Backends::all() && opts.adapter.is_none() {
            let primary = sorted_adapters(wgpu::Backends::PRIMARY);
            if primary.is_empty() { sorted_adapters(wgpu::Backends::GL) } else { primary }
        } else {
            sorted_adapters(backends)
        };
        if adapters.is_empty() {
            return Err(Error::NoAdapter { backend: opts.backend.clone() });
        }
        let index = match &opts.adapter {
            None => 0,
            Some(choice) => {
                let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
                let listed = infos.iter().enumerate().map(|(i, a)| (i, a.name.as_str(), a.device_pci_bus_id.as_str()));
                choice.select(listed, &opts.backend)?
            }
        };
        let adapter = adapters.swap_remove(index);
        Self::from_adapter(index, adapter, opts.force_f32 || env_flag("PSI_GPU_FORCE_F32"))
    }

    /// One context per adapter present for `backend` (tests run every kernel on each).
    pub fn all(backend: &str) -> Result<Vec<Gpu>> {
        let backends = parse_backends(backend)?;
        sorted_adapters(backends)
            .into_iter()
            .enumerate()
            .map(|(i, a)| Self::from_adapter(i, a, env_flag("PSI_GPU_FORCE_F32")))
            .collect()
    }

    fn from_adapter(index: usize, adapter: wgpu::Adapter, force_f32: bool) -> Result<Gpu> {
        let info = report(index, &adapter);
        let offered = adapter.features();
        let mut features = wgpu::Features::empty();
        if offered.contains(wgpu::Features::SHADER_F16) && !force_f32 {
            features |= wgpu::Features::SHADER_F16;
        }
        if offered.contains(wgpu::Features::SHADER_FLOAT32_ATOMIC) {
            features |= wgpu::Features::SHADER_FLOAT32_ATOMIC;
        }
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("psi-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::Device(e.to_string()))?;
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            f16: features.contains(wgpu::Features::SHADER_F16),
            float32_atomics: features.contains(wgpu::Features::SHADER_FLOAT32_ATOMIC),
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The precision `auto` resolves to: f16 where the device has SHADER_F16.
    pub fn resolve_precision(&self, requested: Option<Precision>) -> Result<Precision> {
        match requested {
            None => Ok(if self.f16 { Precision::F16 } else { Precision::F32 }),
            Some(Precision::F16) if !self.f16 => Err(Error::Invalid(format!(
                "--precision f16 needs SHADER_F16, which adapter '{}' ({}) does not offer; use f32 or auto",
                self.info.name, self.info.backend
            ))),
            Some(p) => Ok(p),
        }
    }

    /// A one-line description for logs and benchmark output.
    pub fn describe(&self) -> String {
        format!("{} ({}, {})", self.info.name, self.info.backend, self.info.device_type)
    }

    /// The pipeline for `kernel.entry` in `precision`, compiled on first use and cached.
    pub fn pipeline(&self, kernel: &Kernel, precision: Precision) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = (kernel.shader.name, kernel.entry, precision);
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        if precision == Precision::F16 && !self.f16 {
            return Err(Error::Invalid(format!(
                "kernel {}::{} requested in f16 on a device without SHADER_F16",
                kernel.shader.name, kernel.entry
            )));
        }
        let source = kernel.shader.source(precision);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.shader.name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.entry),
            layout: None,
            module: &module,
            entry_point: Some(kernel.entry),
            // Every kernel writes its workgroup memory before reading it (staged tiles, full-width
            // reductions), so the zero-fill is pure cost — and on GL it is a huge array literal
            // that takes llvmpipe tens of seconds to compile.
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory: false,
                ..Default::default()
            },
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                name: format!("{}::{}", kernel.shader.name, kernel.entry),
                precision: precision.to_string(),
                message: err.to_string(),
            });
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Wait for all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| Error::Gpu(e.to_string()))
    }

    /// Largest buffer a single storage binding may cover on this device.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_display_probe_is_quietened_only_where_it_cannot_reach_a_display() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.into())
        };
        let want = if cfg!(all(unix, not(target_vendor = "apple"), not(target_os = "android"))) {
            Some(("XDG_RUNTIME_DIR", "/dev/null"))
        } else {
            None
        };
        assert_eq!(quiet_display_probe(env(&[])), want);
        assert_eq!(quiet_display_probe(env(&[("XDG_RUNTIME_DIR", "")])), want);
        assert_eq!(quiet_display_probe(env(&[("WAYLAND_DISPLAY", "wayland-1")])), want);
        // The user's own runtime folder, or another way to the display: left alone.
        assert_eq!(quiet_display_probe(env(&[("XDG_RUNTIME_DIR", "/run/user/1000")])), None);
        assert_eq!(quiet_display_probe(env(&[("XDG_RUNTIME_DIR", "relative")])), None);
        assert_eq!(quiet_display_probe(env(&[("WAYLAND_DISPLAY", "/tmp/wayland-0")])), None);
        assert_eq!(quiet_display_probe(env(&[("WAYLAND_SOCKET", "3")])), None);
    }
}
