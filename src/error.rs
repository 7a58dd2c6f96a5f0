//! The crate's error type: every bad argument at the library boundary is one of these.

/// Everything that can go wrong at the library boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shape argument is invalid (zero, too few rows, too large for 32-bit indexing, ...).
    #[error("invalid shape: {0}")]
    InvalidShape(String),
    /// `temperature` lies outside [`MIN_TEMPERATURE`, `MAX_TEMPERATURE`] (τ and 1/τ must be
    /// normal f32 numbers on the device).
    ///
    /// [`MIN_TEMPERATURE`]: crate::kernels::supcon::MIN_TEMPERATURE
    /// [`MAX_TEMPERATURE`]: crate::kernels::supcon::MAX_TEMPERATURE
    #[error(
        "temperature must lie in [{min:e}, {max:e}] (it and its reciprocal normal f32 numbers), \
         got {0}",
        min = crate::kernels::supcon::MIN_TEMPERATURE,
        max = crate::kernels::supcon::MAX_TEMPERATURE
    )]
    InvalidTemperature(f64),
    /// `base_temperature` lies outside [`MIN_TEMPERATURE`, `MAX_TEMPERATURE`], or the loss scale
    /// `temperature / base_temperature` is not a normal f32 number.
    ///
    /// [`MIN_TEMPERATURE`]: crate::kernels::supcon::MIN_TEMPERATURE
    /// [`MAX_TEMPERATURE`]: crate::kernels::supcon::MAX_TEMPERATURE
    #[error(
        "base_temperature must lie in [{min:e}, {max:e}], with temperature / base_temperature \
         a normal f32 number, got {0}",
        min = crate::kernels::supcon::MIN_TEMPERATURE,
        max = crate::kernels::supcon::MAX_TEMPERATURE
    )]
    InvalidBaseTemperature(f64),
    /// A host slice has the wrong number of elements.
    #[error("`{name}` has {got} elements, expected {expected}")]
    LengthMismatch {
        /// The argument.
        name: &'static str,
        /// Elements the problem needs.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A positives buffer was given that the chosen positive kind does not use, or none was given
    /// where one is needed.
    #[error("positives: {0}")]
    Positives(String),
    /// Keys (contrast-only rows) were given where the problem has none, or are missing, or
    /// their shape or labels do not fit the batch.
    #[error("keys: {0}")]
    Keys(String),
    /// A caller's buffer is smaller than the problem needs.
    #[error("buffer `{name}` is {got} bytes, the problem needs at least {needed}")]
    BufferTooSmall {
        /// The buffer's role.
        name: &'static str,
        /// Bytes the problem needs.
        needed: u64,
        /// The buffer's size in bytes.
        got: u64,
    },
    /// A caller's buffer lacks a usage flag the kernels need.
    #[error("buffer `{name}` lacks the usage flag(s) {missing:?}")]
    MissingUsage {
        /// The buffer's role.
        name: &'static str,
        /// The usage flags it lacks.
        missing: wgpu::BufferUsages,
    },
    /// One storage binding would exceed the device's `max_storage_buffer_binding_size`.
    #[error(
        "`{name}` needs {needed} bytes in one storage binding, the device allows {limit} \
         (max_storage_buffer_binding_size)"
    )]
    ExceedsBindingLimit {
        /// The binding's role.
        name: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// The device's `max_storage_buffer_binding_size`.
        limit: u64,
    },
    /// The dispatch needs more workgroups than a 2-D grid of the device allows.
    #[error("{what} needs {groups} workgroups, more than the device's 2-D grid allows ({limit}^2)")]
    TooManyWorkgroups {
        /// The kernel.
        what: &'static str,
        /// Workgroups it needs.
        groups: u64,
        /// The device's `max_compute_workgroups_per_dimension`.
        limit: u32,
    },
    /// The device's limits are below what the kernels were written for.
    #[error("device limit too low: {0}")]
    DeviceLimit(String),
    /// A list of devices is unusable: empty, a device named twice, an index no adapter has.
    #[error("devices: {0}")]
    Devices(String),
    /// The operation cannot run on this device or configuration.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A feature row holds a NaN or an infinity (reported by the kernels' status word).
    #[error("the features contain NaN or infinite values")]
    NonFiniteFeatures,
    /// No adapter could be found.
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused the device request.
    #[error("device request failed: {0}")]
    RequestDevice(String),
    /// wgpu reported a validation or out-of-memory error.
    #[error("wgpu error: {0}")]
    Wgpu(String),
    /// Mapping a buffer for readback failed.
    #[error("reading back a result failed: {0}")]
    Readback(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A size as the kernels' 32-bit index type, or [`Error::InvalidShape`] naming it (the checks
/// of the convenience calls and of the Burn extension).
pub(crate) fn to_u32(value: usize, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::InvalidShape(format!("{what} = {value} is too large")))
}
