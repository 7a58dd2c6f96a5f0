//! The cosine-similarity kernel on the GPU against the f64 reference.
//! Tolerance: max |gpu - ref| <= 1e-5 (cosines lie in [-1, 1]; f32 dot products of unit rows).

use crate::common;

use common::*;
use supcon_wgpu::kernels::similarity::reference::cosine_similarity;
use supcon_wgpu::{CosineSimilarity, Error, Strategy, wgpu};

const STRATEGIES: [Strategy; 2] = [Strategy::Tiles, Strategy::Direct];

#[test]
fn matches_the_reference_for_many_shapes() {
    let Some(ctx) = gpu() else { return };
    for strategy in STRATEGIES {
        let sim = CosineSimilarity::new(&ctx.device)
            .unwrap()
            .with_strategy(strategy);
        let mut rng = rng(21);
        for (n, m, d) in [
            (1, 1, 1),
            (2, 3, 3),
            (63, 65, 1),
            (64, 64, 128),
            (70, 130, 3),
            (129, 5, 2048),
            (300, 257, 17),
        ] {
            let a = random_features(&mut rng, n * d);
            let b = random_features(&mut rng, m * d);
            let got = sim.compute(&ctx.device, &ctx.queue, &a, &b, d).unwrap();
            let want = cosine_similarity(&to_f64(&a), &to_f64(&b), d);
            let err = max_rel_err(&got, &want, 1.0);
            assert!(
                err <= 1e-5,
                "{strategy:?} n={n} m={m} d={d}: max error {err:e}"
            );
        }
    }
}

#[test]
fn same_buffer_for_both_sides_and_zero_rows() {
    let Some(ctx) = gpu() else { return };
    for strategy in STRATEGIES {
        let sim = CosineSimilarity::new(&ctx.device)
            .unwrap()
            .with_strategy(strategy);
        let mut rng = rng(22);
        let (n, d) = (100, 24);
        let mut a = random_features(&mut rng, n * d);
        a[5 * d..6 * d].fill(0.0);
        let buf = {
            use wgpu::util::DeviceExt;
            ctx.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: bytemuck::cast_slice(&a),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let out = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (n * n * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        sim.encode(
            &ctx.device,
            &mut encoder,
            &buf,
            &buf,
            &out,
            n as u32,
            n as u32,
            d as u32,
        )
        .unwrap();
        ctx.queue.submit([encoder.finish()]);
        let got: Vec<f32> = read_back(ctx, &out, (n * n * 4) as u64);
        let want = cosine_similarity(&to_f64(&a), &to_f64(&a), d);
        assert!(max_rel_err(&got, &want, 1.0) <= 1e-5);
        for i in 0..n {
            if i != 5 {
                assert!((got[i * n + i] - 1.0).abs() < 1e-5, "diagonal {i}");
            }
            assert_eq!(got[5 * n + i], 0.0, "zero row gives 0, not NaN");
        }
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let Some(ctx) = gpu() else { return };
    let sim = CosineSimilarity::new(&ctx.device).unwrap();
    let (d, q) = (&ctx.device, &ctx.queue);
    assert!(matches!(
        sim.compute(d, q, &[1.0; 6], &[1.0; 5], 3),
        Err(Error::InvalidShape(_))
    ));
    assert!(matches!(
        sim.compute(d, q, &[], &[1.0; 3], 3),
        Err(Error::InvalidShape(_))
    ));
    assert!(matches!(
        sim.compute(d, q, &[1.0; 3], &[1.0; 3], 0),
        Err(Error::InvalidShape(_))
    ));
    // An output that cannot fit one binding (8,192^2 floats = 256 MiB > 128 MiB).
    let big = vec![1.0f32; 8192];
    assert!(matches!(
        sim.compute(d, q, &big, &big, 1),
        Err(Error::ExceedsBindingLimit { .. })
    ));
    let buf = |size| {
        d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let mut enc = d.create_command_encoder(&Default::default());
    let (a, out) = (buf(64), buf(32));
    assert!(matches!(
        sim.encode(d, &mut enc, &a, &a, &out, 4, 4, 4),
        Err(Error::BufferTooSmall {
            name: "out",
            needed: 64,
            got: 32
        })
    ));
}
