//! An evaluation holds one chunk's activations at a time: the most bytes live at once while
//! `training::evaluate` runs over a split of eight chunks are about those of a split of one.
//! Before the fix, the sums of loss and hits kept each chunk's forward graph (its activations)
//! alive until the split's end, so a `quick` Conv-6 with dropout run peaked at 5.3 GB instead
//! of 2 GB in its first evaluation.
//!
//! Live bytes are counted by a wrapper around the system allocator, not read from the process's
//! resident memory: jemalloc (the allocator of `lth` and its other tests) keeps freed pages, so
//! resident memory shows a high-water mark that this test could not reset between the two
//! measurements. Its own test binary, so that no other test allocates meanwhile.

use candle_core::Device;
use lth::base::seeds::{stream, Purpose};
use lth::base::spec::ModelKind;
use lth::data::Split;
use lth::nn::{self, linear::Compact, Architecture};
use lth::train::training::{evaluate, EvalSplit};
use lth_tests::split;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn allocated(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(live, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            allocated(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            allocated(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            allocated(new_size);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes live at once during one evaluation of `split`, above those live before it.
fn peak_of_evaluating(net: &dyn nn::Network, split: &Split) -> usize {
    let eval = EvalSplit::new(net, split).unwrap();
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    evaluate(net, &eval).unwrap();
    PEAK.load(Relaxed) - before
}

#[test]
fn evaluating_eight_chunks_holds_about_the_bytes_of_one() {
    let arch = Architecture::of(ModelKind::Conv2);
    let weights = nn::initial_weights(&arch, &mut stream(0, Purpose::Init));
    // Parameters are variables, as in training, so that the forward pass builds its graph.
    let params = nn::to_params(&arch, &weights, &Device::Cpu).unwrap();
    let net = nn::build(ModelKind::Conv2, &params, &Compact::none()).unwrap();
    // 130 CIFAR images make one evaluation chunk (`EVAL_CHUNK_VALUES` in lth::train::training).
    let (one, eight) = (split(ModelKind::Conv2, 130), split(ModelKind::Conv2, 8 * 130));
    peak_of_evaluating(net.as_ref(), &one); // warm-up: caches and lazily built state
    let peak_one = peak_of_evaluating(net.as_ref(), &one);
    let peak_eight = peak_of_evaluating(net.as_ref(), &eight);
    // One chunk of Conv-2 holds about 100 MB of activations; eight chunks held at once would
    // be about 8 times one. A quarter more than one chunk leaves room for the sums and
    // allocation order.
    assert!(
        (peak_eight as f64) < 1.25 * peak_one as f64,
        "evaluating 8 chunks peaked at {} MB live, 1 chunk at {} MB: the evaluation keeps chunks alive",
        peak_eight >> 20,
        peak_one >> 20
    );
}
