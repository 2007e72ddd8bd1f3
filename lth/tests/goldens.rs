//! The golden smoke runs (`lth goldens`): LeNet on real MNIST and Conv-2 on the synthetic set
//! give exactly the committed digests (`tests/goldens.txt`), with 1 and 2 threads and through
//! every matrix-product kernel this CPU has (`LTH_KERNELS`). The portable kernel is checked bit
//! for bit against the others on the products themselves (`nn::gemm`'s unit test); run
//! end to end on x86 without hardware FMA it would take minutes per training.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use lth::ops::gemm::Path as Kernels;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mirror() -> String {
    std::env::var("LTH_DATA_MIRROR").ok().filter(|m| !m.is_empty()).unwrap_or_else(|| root().join("../shared/datasets").display().to_string())
}

fn check(kernels: Kernels, threads: &str, data_dir: &Path) {
    let out = std::env::temp_dir().join(format!("lth-goldens-test-{}-{}-{threads}", std::process::id(), kernels.name()));
    let _ = std::fs::remove_dir_all(&out);
    let result = Command::new(env!("CARGO_BIN_EXE_lth"))
        .args(["goldens", "--out", out.to_str().unwrap()])
        .current_dir(root())
        .env("LTH_DATA_DIR", data_dir)
        .env("LTH_DATA_MIRROR", mirror())
        .env("LTH_KERNELS", kernels.name())
        .env("RAYON_NUM_THREADS", threads)
        .env("CANDLE_NUM_THREADS", threads)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "kernels {}, {threads} thread(s):\n{stderr}", kernels.name());
    assert!(stderr.contains(&format!("(kernels: {})", kernels.name())), "{stderr}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn smoke_runs_give_the_golden_bits_with_any_thread_count_and_kernel() {
    let data_dir = std::env::temp_dir().join(format!("lth-goldens-data-{}", std::process::id()));
    let available = Kernels::available();
    let widest = *available.last().unwrap();
    check(widest, "2", &data_dir);
    // The other vector kernel (AVX2 on an AVX-512 machine) with one thread: both the thread
    // count and the kernel differ from the first check. Without one, the widest again.
    let other = available.iter().rev().copied().find(|&k| k != widest && k != Kernels::Portable).unwrap_or(widest);
    check(other, "1", &data_dir);
}
