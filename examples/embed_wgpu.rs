//! Embedding the SupCon kernels in an application that owns its wgpu device.
//!
//! The application creates its own device, fills a feature buffer with a compute shader of its
//! own, and records the SupCon loss and its gradient on that buffer into the same command
//! encoder: one submission, no copy through the CPU until the application chooses to read the
//! result. The features are the golden case of the tests (6 samples x 2 views x 5 dims, labels
//! b mod 3, tau = 0.07), so the loss printed is 9.792975 (tests/golden/supcon_golden.py).
//!
//! ```text
//! cargo run --release --example embed_wgpu
//! ```

use supcon_wgpu::wgpu::{self, util::DeviceExt};
use supcon_wgpu::{PositiveKind, SupConLoss, SupConOptions, SupConOutput, SupConShape};

/// The application's own kernel: features[b][v][k] = sin(0.37(b+1)(k+1) + 0.11v) + 0.1 cos(1.3b - 0.7k + v).
const FILL: &str = r#"
@group(0) @binding(0) var<storage, read_write> features: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&features)) { return; }
    let k = f32(i % 5u);
    let v = f32((i / 5u) % 2u);
    let b = f32(i / 10u);
    features[i] = sin(0.37 * (b + 1.0) * (k + 1.0) + 0.11 * v) + 0.1 * cos(1.3 * b - 0.7 * k + v);
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let loss = run()?;
    println!("SupCon loss = {loss:.6}");
    Ok(())
}

/// `cargo test` runs this example too (`test = true` in Cargo.toml).
#[test]
fn embedded_loss_is_the_golden_value() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let no_adapter = pollster::block_on(instance.request_adapter(&Default::default())).is_err();
    if no_adapter && !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        eprintln!("SKIPPED: no GPU adapter; the embed example did not run");
        return;
    }
    assert!((run().expect("embed example") - 9.792975).abs() < 1e-3);
}

fn run() -> Result<f32, Box<dyn std::error::Error>> {
    // 1. The application's device (any adapter; WebGPU's default limits are enough).
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    println!("adapter: {}", adapter.get_info().name);

    // 2. The application's buffers.
    let shape = SupConShape::new(6, 2, 5);
    let bytes = shape.len() * 4;
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let features = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("features"),
        size: bytes,
        usage,
        mapped_at_creation: false,
    });
    let grad = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("grad"),
        size: bytes,
        usage,
        mapped_at_creation: false,
    });
    let labels: Vec<i32> = (0..6).map(|b| b % 3).collect();
    let labels = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("labels"),
        contents: bytemuck::cast_slice(&labels),
        usage: wgpu::BufferUsages::STORAGE,
    });

    // 3. The application's own pipeline.
    let fill = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("fill"),
        layout: None,
        module: &device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("fill"),
            source: wgpu::ShaderSource::Wgsl(FILL.into()),
        }),
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let fill_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &fill.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: features.as_entire_binding(),
        }],
    });

    // 4. The SupCon kernels: pipelines once per device, a plan once per problem shape.
    let supcon = SupConLoss::new(&device)?;
    let plan = supcon.plan(
        &device,
        shape,
        PositiveKind::Labels,
        &SupConOptions::new(0.07),
    )?;

    // 5. One encoder: the application's pass, then the loss and its gradient, then a copy of the
    //    16-byte result block and the gradient for the host.
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&fill);
        pass.set_bind_group(0, &fill_group, &[]);
        pass.dispatch_workgroups((shape.len() as u32).div_ceil(64), 1, 1);
    }
    plan.encode_forward(&device, &mut encoder, &features, Some(&labels))?;
    plan.encode_backward(&device, &mut encoder, &features, Some(&labels), &grad)?;
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("staging"),
        size: 16 + bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(plan.output(), 0, &staging, 0, 16);
    encoder.copy_buffer_to_buffer(&grad, 0, &staging, 16, bytes);
    queue.submit([encoder.finish()]);

    // 6. Read back (only because this example prints the result).
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let view = staging.slice(..).get_mapped_range()?;
    let out: SupConOutput = *bytemuck::from_bytes(&view[..16]);
    let g: &[f32] = bytemuck::cast_slice(&view[16..]);
    if out.status != 0 {
        return Err("the features held NaN or infinity".into());
    }
    let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt();
    println!(
        "SupCon loss = {:.6} over {} anchors with a positive; |dL/dfeatures| = {norm:.6}",
        out.loss, out.n_valid
    );
    let expected = 9.792975;
    if (out.loss - expected).abs() > 1e-4 * expected {
        return Err(format!("expected {expected}, got {}", out.loss).into());
    }
    Ok(out.loss)
}
