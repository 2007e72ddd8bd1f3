//! `cargo xtask cuda-build` and `cargo xtask gpu-check`.
//!
//! cuda-build makes the CUDA `lth` binary on a machine with no CUDA toolkit (and no GPU): nvcc
//! and the CUDA libraries come from NVIDIA's PyPI wheels, pinned to 13.0.2, the version PyTorch
//! 2.11+cu130 installs beside driver 580 (nvcc 13.0 emits PTX that driver accepts; newer nvcc
//! emits PTX it refuses). The wheels ship no unversioned `.so` links and no `libcuda.so` (that
//! comes with the driver), so a link folder gets both: symlinks, and a stub `libcuda.so.1` of
//! empty functions named after cudarc's driver API, good for linking only. The real driver's
//! library is loaded at run time on the GPU machine. With an installed toolkit (`nvcc` on
//! PATH) the plain cargo build is used. Recipe and sizes: docs/cluster.md.
//!
//! Output: `target/cuda/release/lth` and `target/lth-cuda.xz` (about 6 MB, to copy to a GPU
//! machine), which `xtask/gpu-check.sh` unpacks and runs there without a Rust toolchain.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

/// The CUDA packages, one version set (see the module docs for why 13.0.2).
const TOOLKIT: &str = "cuda-toolkit[nvcc,crt,cccl,cudart,cublas,curand,nvrtc,nvvm]==13.0.2";
/// Libraries cudarc links (`-l…`), as the wheels name them.
const LIBRARIES: [&str; 5] = ["cudart.so.13", "cublas.so.13", "cublasLt.so.13", "curand.so.10", "nvrtc.so.13"];

/// Builds the CUDA `lth` into `target/cuda` and returns the binary's path.
pub fn build(sh: &Shell, root: &Path, compute_cap: &str) -> Result<PathBuf> {
    let target = root.join("target");
    let cuda_target = target.join("cuda");
    let _target_dir = sh.push_env("CARGO_TARGET_DIR", &cuda_target);
    let _cap = sh.push_env("CUDA_COMPUTE_CAP", compute_cap);
    // candle-kernels runs one nvcc per core by default; each takes ~0.8 GB.
    let _threads = sh.push_env("CUDAFORGE_THREADS", std::env::var("CUDAFORGE_THREADS").unwrap_or_else(|_| "1".into()));
    let have_nvcc = cmd!(sh, "nvcc --version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    if have_nvcc {
        println!("cuda-build: using the installed nvcc");
        cmd!(sh, "cargo build --release --package lth --bin lth --features cuda").run()?;
    } else {
        let toolkit = target.join("cuda-toolkit");
        let cu = pip_toolkit(sh, &toolkit)?;
        let link_root = link_folder(sh, root, &toolkit, &cu)?;
        let path = format!("{}:{}", cu.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let _path = sh.push_env("PATH", path);
        let _root = sh.push_env("CUDA_ROOT", &link_root);
        println!("cuda-build: nvcc from PyPI in {}, compute capability {compute_cap} (a clean build takes ~16 min on 2 cores)", cu.display());
        cmd!(sh, "cargo build --release --package lth --bin lth --features cuda").run()?;
    }
    Ok(cuda_target.join("release").join("lth"))
}

/// `target/lth-cuda.xz`: the binary compressed for copying to a GPU machine (~50 MB → ~6 MB).
pub fn pack(sh: &Shell, root: &Path, binary: &Path) -> Result<PathBuf> {
    let packed = root.join("target").join("lth-cuda.xz");
    let partial = packed.with_extension("xz.part");
    let bytes = cmd!(sh, "xz -9 --stdout {binary}").output().context("compressing the binary with xz")?.stdout;
    std::fs::write(&partial, &bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &packed)?;
    println!("cuda-build: {} ({:.1} MB), packed as {} ({:.1} MB)", binary.display(), size_mb(binary), packed.display(), size_mb(&packed));
    Ok(packed)
}

/// A venv holding the pinned CUDA wheels; returns their `nvidia/cu13` folder.
fn pip_toolkit(sh: &Shell, toolkit: &Path) -> Result<PathBuf> {
    let venv = toolkit.join("venv");
    let python = venv.join("bin").join("python");
    let done = toolkit.join("installed");
    if std::fs::read_to_string(&done).ok().as_deref() != Some(TOOLKIT) {
        println!("cuda-build: installing {TOOLKIT} from PyPI (~1.2 GB)");
        cmd!(sh, "python3 -m venv {venv}").run().context("creating a Python venv (needs python3 with venv)")?;
        cmd!(sh, "{python} -m pip install --quiet {TOOLKIT}").run().context("pip install of the CUDA wheels")?;
        std::fs::write(&done, TOOLKIT)?;
    }
    let site = cmd!(sh, "{python} -c 'import site; print(site.getsitepackages()[0])'").read()?;
    let cu = PathBuf::from(site.trim()).join("nvidia").join("cu13");
    if !cu.join("bin").join("nvcc").exists() {
        bail!("{} has no bin/nvcc; delete {} and rerun", cu.display(), toolkit.display());
    }
    Ok(cu)
}

/// `<toolkit>/root/lib64` with the unversioned links cudarc's `-l` flags need and a link-only
/// `libcuda.so` stub; returns `<toolkit>/root` (what `CUDA_ROOT` must name).
fn link_folder(sh: &Shell, root: &Path, toolkit: &Path, cu: &Path) -> Result<PathBuf> {
    let link_root = toolkit.join("root");
    let lib64 = link_root.join("lib64");
    std::fs::create_dir_all(&lib64)?;
    for lib in LIBRARIES {
        let source = cu.join("lib").join(format!("lib{lib}"));
        let stem = lib.split(".so").next().unwrap_or(lib);
        let link = lib64.join(format!("lib{stem}.so"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&source, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    let stub = lib64.join("libcuda.so");
    if !stub.exists() {
        let sys = cudarc_driver_sys(sh, root)?;
        let text = std::fs::read_to_string(&sys).with_context(|| format!("reading {}", sys.display()))?;
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("pub unsafe fn "))
            .filter_map(|rest| rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next())
            .filter(|name| name.starts_with("cu"))
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            bail!("found no driver functions in {}", sys.display());
        }
        let source = link_root.join("libcuda_stub.c");
        std::fs::write(&source, names.iter().map(|n| format!("void {n}(void) {{}}\n")).collect::<String>())?;
        cmd!(sh, "gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o {stub} {source}").run().context("building the libcuda stub with gcc")?;
        println!("cuda-build: libcuda stub with {} functions", names.len());
    }
    Ok(link_root)
}

/// cudarc's `src/driver/sys/mod.rs`, found through `cargo metadata` (which also downloads it).
fn cudarc_driver_sys(sh: &Shell, root: &Path) -> Result<PathBuf> {
    let metadata = cmd!(sh, "cargo metadata --format-version 1 --features lth/cuda --manifest-path {root}/Cargo.toml").quiet().read()?;
    // Parsed by hand to keep xtask free of a JSON crate: the first manifest path of cudarc.
    let manifest = metadata
        .split("\"manifest_path\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|p| p.contains("/cudarc-"))
        .context("cudarc is not in Cargo.lock; is the `cuda` feature of lth intact?")?;
    let dir = Path::new(manifest).parent().context("cudarc's manifest path has no parent")?;
    Ok(dir.join("src").join("driver").join("sys").join("mod.rs"))
}

fn size_mb(path: &Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len() as f64 / 1e6).unwrap_or(f64::NAN)
}
