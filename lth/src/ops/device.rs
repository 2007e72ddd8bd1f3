//! Which code a device runs, and the one way the generic path reads tensors back.
//!
//! **Two paths.** On the CPU the project's own kernels run (fixed summation orders, the same
//! bits on every machine); on any other device (CUDA) every op is candle's ("the generic
//! path"). Every place that chooses asks [`fast_kernels`]. The generic path can also run on
//! the CPU (`--device cpu-generic`, [`use_generic_path`]), so that the code a GPU takes is
//! trained end to end and tested on every commit without a GPU (docs/gpu.md).
//!
//! **Reads.** On a GPU every read of a tensor back to the host waits for the device to finish
//! its queue. The generic path reads only through [`to_host`] and [`scalar`], which count the
//! reads of the calling thread ([`reads`]): the tests assert that a training step makes none
//! (the running train metrics and the evaluations are read at the evaluation cadence only).

use crate::base::error::{Error, Result};

use candle_core::{Device, Tensor, WithDType};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The process-wide choice: set once, at start-up, by `--device cpu-generic`.
static GENERIC: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// A choice for this thread alone ([`with_path`]), over the process-wide one.
    static THIS_THREAD: Cell<Option<bool>> = const { Cell::new(None) };
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// Whether ops on `dev` run the project's CPU kernels (true only on the CPU, unless the
/// generic path was chosen there).
pub fn fast_kernels(dev: &Device) -> bool {
    dev.is_cpu() && !generic()
}

/// Whether the CPU runs the generic path (on this thread).
pub fn generic() -> bool {
    THIS_THREAD.with(Cell::get).unwrap_or_else(|| GENERIC.load(Ordering::Relaxed))
}

/// Makes every thread of the process run the generic path on the CPU. Called once, before
/// any network is built (`lth::device("cpu-generic")`): a network built under one path and run
/// under the other would mix their parameter layouts (sparse layers exist on the fast path only).
pub fn use_generic_path() {
    GENERIC.store(true, Ordering::Relaxed);
}

/// Runs `f` with the CPU on the generic path (`generic: true`) or the fast one, on this
/// thread only; for comparing the two in one process (`gpu_check`, tests). Everything `f`
/// builds must be used inside it.
pub fn with_path<R>(generic: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THIS_THREAD.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(THIS_THREAD.with(|c| c.replace(Some(generic))));
    f()
}

/// Device-to-host reads made by this thread through [`to_host`] and [`scalar`] so far.
pub fn reads() -> u64 {
    READS.with(Cell::get)
}

fn count() {
    READS.with(|r| r.set(r.get() + 1));
}

/// Every value of `t`, flattened, on the host (one read).
pub fn to_host<T: WithDType>(t: &Tensor) -> candle_core::Result<Vec<T>> {
    count();
    t.flatten_all()?.to_vec1()
}

/// The value of a scalar tensor on the host (one read).
pub fn scalar<T: WithDType>(t: &Tensor) -> candle_core::Result<T> {
    count();
    t.to_scalar()
}

/// Parses `--device`: `cpu`, `cuda`, `cuda:N`, `auto` (CUDA when built with it and present),
/// or `cpu-generic`: the CPU running the code a GPU runs (candle's ops, no CPU kernels), for
/// testing that code without a GPU. It chooses that path for the whole process
/// (`ops::device`), so it is parsed once, before any network is built.
pub fn named(name: &str) -> Result<candle_core::Device> {
    use candle_core::Device;
    match name {
        "cpu" => Ok(Device::Cpu),
        "cpu-generic" => {
            use_generic_path();
            Ok(Device::Cpu)
        }
        "auto" => Ok(Device::cuda_if_available(0)?),
        cuda if cuda.starts_with("cuda") => {
            let ordinal = match cuda.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| Error::Invalid(format!("--device {cuda}: `{n}` is not a GPU number")))?,
                None if cuda == "cuda" => 0,
                None => return Err(Error::Invalid(format!("--device {cuda}: use cpu, cuda, cuda:N, auto or cpu-generic"))),
            };
            Device::new_cuda(ordinal).map_err(|e| {
                Error::Invalid(format!(
                    "--device {cuda}: {e}; use a CUDA build of lth (`cargo xtask cuda-build`, which `cargo xtask reproduce --device cuda` runs) on a machine with a GPU"
                ))
            })
        }
        other => Err(Error::Invalid(format!("--device {other}: use cpu, cuda, cuda:N, auto or cpu-generic"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_choice_is_scoped_and_reads_are_counted() {
        let dev = Device::Cpu;
        let before = fast_kernels(&dev);
        assert!(with_path(true, || !fast_kernels(&dev) && with_path(false, || fast_kernels(&dev))));
        assert_eq!(fast_kernels(&dev), before, "the choice outlives with_path");
        let start = reads();
        let t = Tensor::new(&[1f32, 2.], &dev).unwrap();
        assert_eq!(to_host::<f32>(&t).unwrap(), vec![1., 2.]);
        assert_eq!(scalar::<f32>(&t.sum_all().unwrap()).unwrap(), 3.);
        assert_eq!(reads() - start, 2);
    }
}
