//! Burn's remote backend (burn-remote over WebSocket) with the fused ops: a server that hosts
//! this machine's wgpu devices with the supcon-wgpu operations registered, and the client
//! half that sends them (feature `remote`).
//!
//! - [`server`] builds Burn's `RemoteServer` on local devices with the three operations
//!   (cosine similarity, the loss's forward and backward) registered as custom operations;
//!   `examples/serve_device.rs` serves it on an address the user names, with a token.
//! - [`connect`] opens every device of such a server as Burn devices. On them
//!   [`SupConLoss`](super::SupConLoss) with [`Implementation::Auto`](super::Implementation)
//!   runs the fused kernels on the server's GPU: the client ships each operation and its
//!   parameters, the server launches the same WGSL as on a local device, and autodiff stays on
//!   the client (the backward is another operation). A remote device opened some other way
//!   (Burn's `Device::remote_options`) may serve no such operations, so there the loss takes
//!   the composed Burn ops, which every Burn server runs.
//! - The data-parallel step ([`DataParallelConfig`](super::DataParallelConfig)) and the
//!   training app (`train_wgpu --remote ws://HOST:PORT`) mix local and remote devices: Burn's
//!   `to_device` moves features and gradients between them.
//!
//! WebSocket is not encrypted: the token keeps stray clients out on a trusted network, not a
//! reader of the traffic. A problem is checked on the client against WebGPU's default limits
//! (the server's own are not known there): a typed error before anything is sent.

use std::net::TcpListener;
use std::sync::Mutex;

use burn::backend::ir::{ScalarIr, TensorIr};
use burn::backend::{
    Cube, DispatchDevice, Remote, TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn::remote::{ConnectError, CustomOpClient, RemoteHost};
use burn::server::{CustomOpIr, RemoteServer, TokenAuthorizer, WebSocketTransport};
use burn::tensor::{DType, Device, Shape};

use super::loss::{FusedDevice, fused_device};
use super::ops::{LossParams, SupConBackend};
use crate::kernels::supcon::{PositiveKind, ProblemLimits, Strategy, SupConShape};
use crate::{ContrastMode, Error, Reduction, Result, SupConOptions, Variant};

/// The operations' ids on the wire.
const COSINE_SIMILARITY: &str = "supcon_wgpu/cosine_similarity";
const SUPCON_FORWARD: &str = "supcon_wgpu/supcon_forward";
const SUPCON_BACKWARD: &str = "supcon_wgpu/supcon_backward";

/// The version of the parameters' encoding, first of the scalars: a server refuses another.
const WIRE_VERSION: u64 = 1;

/// Remote devices opened by [`connect`], whose server runs the fused operations.
static FUSED_REMOTES: Mutex<Vec<burn::backend::RemoteDevice>> = Mutex::new(Vec::new());

/// A Burn `RemoteServer` hosting `devices` (local wgpu devices, e.g. from
/// [`request_burn_devices`](super::device::request_burn_devices)) with the supcon-wgpu
/// operations registered and only clients presenting `token` admitted. Serve it with
/// [`serve`], or with Burn's own `serve`/`serve_async` on a transport of your choice.
///
/// # Errors
/// [`Error::Devices`] for no device, a device that is not a local wgpu device, or an empty
/// token.
pub fn server(devices: &[Device], token: &str) -> Result<RemoteServer> {
    if devices.is_empty() {
        return Err(Error::Devices("a server needs at least one device".into()));
    }
    let local = |d: &Device| matches!(fused_device(d), Some(FusedDevice::Cube(_)));
    if let Some(other) = devices.iter().find(|d| !local(d)) {
        return Err(Error::Devices(format!(
            "a server hosts local wgpu devices that run the fused kernels, got {other:?}"
        )));
    }
    let authorizer = TokenAuthorizer::new(token)
        .map_err(|_| Error::Devices("a server needs a token: it is never served open".into()))?;
    let devices: Vec<Device> = devices.iter().map(|d| d.clone().inner()).collect();
    Ok(RemoteServer::new(devices)
        .with_authorizer(authorizer)
        .with_custom_op::<Cube, _>(COSINE_SIMILARITY, |handles, op, _| {
            let a = handles.get_float_tensor::<Cube>(&op.inputs[0]);
            let b = handles.get_float_tensor::<Cube>(&op.inputs[1]);
            let out = <Cube as SupConBackend>::cosine_similarity(a, b);
            handles.register_float_tensor::<Cube>(&op.outputs[0].id, out);
        })
        .with_custom_op::<Cube, _>(SUPCON_FORWARD, |handles, op, _| {
            let params = decode(&op.scalars);
            let features = handles.get_float_tensor::<Cube>(&op.inputs[0]);
            let keys = handles.get_float_tensor::<Cube>(&op.inputs[1]);
            let positives = handles.get_int_tensor::<Cube>(&op.inputs[2]);
            let (stats, inv_norm, output) =
                <Cube as SupConBackend>::supcon_forward(features, keys, positives, params);
            for (ir, tensor) in op.outputs.iter().zip([stats, inv_norm, output]) {
                handles.register_float_tensor::<Cube>(&ir.id, tensor);
            }
        })
        .with_custom_op::<Cube, _>(SUPCON_BACKWARD, |handles, op, _| {
            let params = decode(&op.scalars);
            let features = handles.get_float_tensor::<Cube>(&op.inputs[0]);
            let keys = handles.get_float_tensor::<Cube>(&op.inputs[1]);
            let positives = handles.get_int_tensor::<Cube>(&op.inputs[2]);
            let inv_norm = handles.get_float_tensor::<Cube>(&op.inputs[3]);
            let stats = handles.get_float_tensor::<Cube>(&op.inputs[4]);
            let output = handles.get_float_tensor::<Cube>(&op.inputs[5]);
            let grad = <Cube as SupConBackend>::supcon_backward(
                features, keys, positives, inv_norm, stats, output, params,
            );
            handles.register_float_tensor::<Cube>(&op.outputs[0].id, grad);
        }))
}

/// Serves `server` over WebSocket on `listener` (bound by the caller to the address it names,
/// e.g. `127.0.0.1:3000`; port 0 picks a free one), blocking until Ctrl+C or `SIGTERM`.
///
/// # Errors
/// [`Error::Devices`] when Burn cannot start the server.
pub fn serve(server: &RemoteServer, listener: TcpListener) -> Result<()> {
    server
        .serve(WebSocketTransport::from_listener(listener))
        .map_err(|e| Error::Devices(format!("the remote server stopped: {e}")))
}

/// Connects every device of the server at `url` (`ws://HOST:PORT`, served by [`server`]) with
/// `token`, as autodiff-free Burn devices in the server's order (call `.autodiff()` to train
/// on them). The loss runs the fused kernels on them.
///
/// Burn retries an unreachable server for about 16 seconds before giving up.
///
/// # Errors
/// [`Error::Devices`] for a URL that is not `ws://HOST:PORT`, an empty token, a server that
/// cannot be reached, refuses the token or speaks another protocol version.
pub fn connect(url: &str, token: &str) -> Result<Vec<Device>> {
    check_url(url)?;
    if token.is_empty() {
        return Err(Error::Devices(format!(
            "{url}: an empty token (the server admits only its own)"
        )));
    }
    let host = RemoteHost::websocket(url).with_credential(token);
    let failed = |e: ConnectError| {
        let why = match e {
            ConnectError::Unauthorized => "the server refused the token".to_string(),
            other => other.to_string(),
        };
        Error::Devices(format!("remote server {url}: {why}"))
    };
    let count = host.devices().map_err(failed)?.into_iter().count();
    let mut devices = Vec::with_capacity(count);
    for index in 0..count {
        // Each device's session opens here, so a refusal is an error now, not at first use.
        let device = Device::remote_options(&host)
            .device_index(index)
            .init()
            .map_err(failed)?;
        if let DispatchDevice::Remote(remote) = device.as_dispatch() {
            let mut fused = FUSED_REMOTES.lock().unwrap_or_else(|e| e.into_inner());
            if !fused.contains(remote) {
                fused.push(remote.clone());
            }
        }
        devices.push(device);
    }
    Ok(devices)
}

/// The environment variable [`read_token`] reads when no file is named.
pub const TOKEN_ENV: &str = "SUPCON_REMOTE_TOKEN";

/// The token of a server and its clients: the first line of `file` where one is named, else
/// the environment variable [`TOKEN_ENV`] (never a command-line argument, which other users
/// of the machine can list).
///
/// # Errors
/// [`Error::Devices`] when the file cannot be read or neither gives a non-empty token.
pub fn read_token(file: Option<&std::path::Path>) -> Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::Devices(format!("the token file {}: {e}", path.display())))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        None => std::env::var(TOKEN_ENV).unwrap_or_default(),
    };
    if token.is_empty() {
        return Err(Error::Devices(format!(
            "no token: a remote server and its clients share one, from {TOKEN_ENV} or a token \
             file (first line)"
        )));
    }
    Ok(token)
}

/// `ws://HOST:PORT`, with a port.
fn check_url(url: &str) -> Result<()> {
    let bad = || {
        Error::Devices(format!(
            "{url:?}: a remote server is ws://HOST:PORT (e.g. ws://gpu-box:3000)"
        ))
    };
    let rest = url.strip_prefix("ws://").ok_or_else(bad)?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Whether `device` is a device opened by [`connect`], whose server runs the fused operations.
pub(crate) fn is_fused_remote(device: &DispatchDevice) -> bool {
    match device {
        DispatchDevice::Remote(remote) => FUSED_REMOTES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(remote),
        _ => false,
    }
}

/// The limits a remote problem is checked against: WebGPU's defaults, which every wgpu device
/// meets (the server's own are not known on the client).
fn limits() -> ProblemLimits {
    let limits = wgpu::Limits::default();
    ProblemLimits {
        max_binding: limits.max_storage_buffer_binding_size,
        max_groups_per_dim: limits.max_compute_workgroups_per_dimension,
    }
}

/// Checks a loss problem for a remote device: against [`limits`], with the strategy asked for,
/// else with both (the server picks its device's).
pub(crate) fn check_problem(params: &LossParams) -> Result<()> {
    let strategies = match params.strategy {
        Some(s) => vec![s],
        None => vec![Strategy::Tiles, Strategy::Direct],
    };
    strategies
        .into_iter()
        .try_for_each(|strategy| params.check(strategy, limits()))
}

/// Checks an `[n, d] × [m, d]` cosine similarity for a remote device (as [`check_problem`]).
pub(crate) fn check_similarity(n: usize, m: usize, d: usize) -> Result<()> {
    let limits = limits();
    for strategy in [Strategy::Tiles, Strategy::Direct] {
        crate::kernels::similarity::check_problem(
            strategy,
            crate::error::to_u32(n, "n")?,
            crate::error::to_u32(m, "m")?,
            crate::error::to_u32(d, "dim")?,
            limits.max_binding,
            limits.max_groups_per_dim,
        )?;
    }
    Ok(())
}

/// `params` as the operation's scalars (after [`WIRE_VERSION`]).
fn encode(params: &LossParams) -> Vec<ScalarIr> {
    let u = |v: u64| ScalarIr::UInt(v);
    let option = |v: Option<u32>| u(v.map_or(u64::MAX, u64::from));
    let o = &params.options;
    vec![
        u(WIRE_VERSION),
        u(params.shape.bsz.into()),
        u(params.shape.n_views.into()),
        u(params.shape.dim.into()),
        u(params.shape.keys.into()),
        u(match params.kind {
            PositiveKind::Labels => 0,
            PositiveKind::Labels64 => 1,
            PositiveKind::None => 2,
            PositiveKind::Mask => 3,
        }),
        ScalarIr::Float(o.temperature),
        ScalarIr::Float(o.base_temperature),
        u(match o.contrast_mode {
            ContrastMode::All => 0,
            ContrastMode::One => 1,
        }),
        u(match o.variant {
            Variant::Out => 0,
            Variant::In => 1,
        }),
        u(match o.reduction {
            Reduction::AllAnchors => 0,
            Reduction::AnchorsWithPositives => 1,
        }),
        option(params.pass_columns),
        option(params.split_columns),
        u(match params.strategy {
            None => 0,
            Some(Strategy::Tiles) => 1,
            Some(Strategy::Direct) => 2,
        }),
    ]
}

/// The parameters [`encode`] wrote. A server handler cannot return an error to the client, so
/// a malformed block (a client of another supcon-wgpu version) panics with the reason.
fn decode(scalars: &[ScalarIr]) -> LossParams {
    try_decode(scalars).unwrap_or_else(|why| {
        panic!("supcon-wgpu remote operation: {why} (client and server must be the same version)")
    })
}

fn try_decode(scalars: &[ScalarIr]) -> std::result::Result<LossParams, String> {
    let u = |i: usize| match scalars.get(i) {
        Some(ScalarIr::UInt(v)) => Ok(*v),
        other => Err(format!(
            "scalar {i} is {other:?}, expected an unsigned integer"
        )),
    };
    let f = |i: usize| match scalars.get(i) {
        Some(ScalarIr::Float(v)) => Ok(*v),
        other => Err(format!("scalar {i} is {other:?}, expected a float")),
    };
    let u32_at =
        |i: usize| u32::try_from(u(i)?).map_err(|_| format!("scalar {i} does not fit in 32 bits"));
    let option = |i: usize| match u(i)? {
        u64::MAX => Ok(None),
        v => u32::try_from(v)
            .map(Some)
            .map_err(|_| format!("scalar {i} does not fit in 32 bits")),
    };
    let enum_at = |i: usize, n: u64| match u(i)? {
        v if v < n => Ok(v),
        v => Err(format!("scalar {i} is {v}, expected below {n}")),
    };
    if scalars.len() != 14 || u(0)? != WIRE_VERSION {
        return Err(format!(
            "a parameter block of {} scalars, version {:?}; this server reads version \
             {WIRE_VERSION}",
            scalars.len(),
            scalars.first()
        ));
    }
    Ok(LossParams {
        shape: SupConShape::new(u32_at(1)?, u32_at(2)?, u32_at(3)?).with_keys(u32_at(4)?),
        kind: [
            PositiveKind::Labels,
            PositiveKind::Labels64,
            PositiveKind::None,
            PositiveKind::Mask,
        ][enum_at(5, 4)? as usize],
        options: SupConOptions::new(f(6)?)
            .with_base_temperature(f(7)?)
            .with_contrast_mode([ContrastMode::All, ContrastMode::One][enum_at(8, 2)? as usize])
            .with_variant([Variant::Out, Variant::In][enum_at(9, 2)? as usize])
            .with_reduction(
                [Reduction::AllAnchors, Reduction::AnchorsWithPositives][enum_at(10, 2)? as usize],
            ),
        pass_columns: option(11)?,
        split_columns: option(12)?,
        strategy: [None, Some(Strategy::Tiles), Some(Strategy::Direct)][enum_at(13, 3)? as usize],
    })
}

/// Ships one operation to the server of `device` and returns its outputs.
fn send(
    device: &burn::backend::RemoteDevice,
    id: &'static str,
    inputs: Vec<TensorIr>,
    outputs: &[(Shape, DType)],
    scalars: Vec<ScalarIr>,
) -> Vec<FloatTensor<Remote>> {
    let client = CustomOpClient::new(device);
    let outputs: Vec<TensorIr> = outputs
        .iter()
        .map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape.clone(), *dtype))
        .collect();
    client.register(CustomOpIr::with_scalars(id, &inputs, &outputs, scalars))
}

/// The client half: each operation becomes a custom operation that the server of
/// [`server`] runs on its device.
impl SupConBackend for Remote {
    fn cosine_similarity(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let device = a.device();
        let shape = Shape::new([a.shape()[0], b.shape()[0]]);
        let dtype = a.dtype();
        let inputs = vec![a.into_ir(), b.into_ir()];
        send(
            &device,
            COSINE_SIMILARITY,
            inputs,
            &[(shape, dtype)],
            Vec::new(),
        )
        .remove(0)
    }

    fn supcon_forward(
        features: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        positives: IntTensor<Self>,
        params: LossParams,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let device = features.device();
        let inputs = vec![features.into_ir(), keys.into_ir(), positives.into_ir()];
        let outputs = [
            Shape::new([params.n_anchors(), 4]),
            Shape::new([params.shape.contrast_rows() as usize]),
            Shape::new([4]),
        ]
        .map(|shape| (shape, DType::F32));
        let mut out = send(&device, SUPCON_FORWARD, inputs, &outputs, encode(&params)).into_iter();
        let mut next = || out.next().expect("three outputs");
        (next(), next(), next())
    }

    fn supcon_backward(
        features: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        positives: IntTensor<Self>,
        inv_norm: FloatTensor<Self>,
        anchor_stats: FloatTensor<Self>,
        output: FloatTensor<Self>,
        params: LossParams,
    ) -> FloatTensor<Self> {
        let device = features.device();
        let grad = (features.shape(), features.dtype());
        let inputs = vec![
            features.into_ir(),
            keys.into_ir(),
            positives.into_ir(),
            inv_norm.into_ir(),
            anchor_stats.into_ir(),
            output.into_ir(),
        ];
        send(&device, SUPCON_BACKWARD, inputs, &[grad], encode(&params)).remove(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_survive_the_wire() {
        let params = LossParams {
            shape: SupConShape::new(7, 3, 130).with_keys(11),
            kind: PositiveKind::Labels64,
            options: SupConOptions::new(0.07)
                .with_base_temperature(0.5)
                .with_contrast_mode(ContrastMode::One)
                .with_variant(Variant::In)
                .with_reduction(Reduction::AnchorsWithPositives),
            pass_columns: Some(64),
            split_columns: None,
            strategy: Some(Strategy::Direct),
        };
        assert_eq!(try_decode(&encode(&params)), Ok(params));
        let plain = LossParams {
            kind: PositiveKind::Mask,
            options: SupConOptions::default(),
            pass_columns: None,
            split_columns: Some(128),
            strategy: None,
            ..params
        };
        assert_eq!(try_decode(&encode(&plain)), Ok(plain));
        let mut other_version = encode(&plain);
        other_version[0] = ScalarIr::UInt(WIRE_VERSION + 1);
        assert!(try_decode(&other_version).unwrap_err().contains("version"));
        let mut bad_enum = encode(&plain);
        bad_enum[5] = ScalarIr::UInt(4);
        assert!(try_decode(&bad_enum).is_err());
        assert!(try_decode(&encode(&plain)[..13]).is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("ws://127.0.0.1:3000").is_ok());
        assert!(check_url("ws://gpu-box:3000/").is_ok());
        for bad in [
            "127.0.0.1:3000",
            "http://h:1",
            "ws://h",
            "ws://:1",
            "ws://h:x",
            "ws://h:70000",
        ] {
            assert!(matches!(check_url(bad), Err(Error::Devices(_))), "{bad}");
        }
    }
}
