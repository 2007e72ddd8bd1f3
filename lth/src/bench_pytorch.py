"""The PyTorch side of `lth bench --vs-pytorch`: the same workloads as lth's rows, timed the
same way (one untimed warm-up call, then the median of three timings), at 1 and 2 threads.

Training is masked the way the reference lottery-ticket implementations do it: the dense
network, gradients of pruned weights zeroed before `Adam.step()`, weights re-masked after it.
PyTorch does the same dense work at any density, so its masks are random at the given density.
Prints one line per row: `key threads per_second`. Needs only torch (`pip install torch`).
"""

import statistics
import sys
import time

import torch
from torch import nn

BATCH = 60
SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0


def lenet():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def conv2():
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16384, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10),
    )


def images(kind, n):
    shape = (n, 1, 28, 28) if kind == "lenet" else (n, 3, 32, 32)
    count = shape[0] * shape[1] * shape[2] * shape[3]
    values = (torch.arange(count, dtype=torch.int64) * 7919 % 255).float() / 255.0 - 0.5
    return values.reshape(shape)


def per_second(steps, step):
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def median3(measure):
    return statistics.median([measure(), measure(), measure()])


def train_steps(kind, density, steps):
    torch.manual_seed(0)
    net = lenet() if kind == "lenet" else conv2()
    masks = {}
    if density < 1.0:
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                masks[name] = (torch.rand_like(p) < density).float()
                p.data.mul_(masks[name])
    params = dict(net.named_parameters())
    opt = torch.optim.Adam(net.parameters(), lr=1.2e-3)
    xs, ys = images(kind, BATCH), torch.arange(BATCH) % 10
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xs), ys)
        loss.backward()
        for name, m in masks.items():
            params[name].grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for name, m in masks.items():
                params[name].mul_(m)
        loss.item()

    return per_second(steps, step)


def evaluate(kind, batches):
    torch.manual_seed(0)
    net = lenet() if kind == "lenet" else conv2()
    n = 510 if kind == "lenet" else 130
    xs = images(kind, n)

    def step():
        with torch.no_grad():
            net(xs)

    return n * per_second(batches, step)


def main():
    steps = lambda n: max(2, round(n * SCALE))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for density, label in ((1.0, "dense"), (0.2, "20%"), (0.05, "5%")):
            print(f"lenet_train_{label} {threads} {median3(lambda: train_steps('lenet', density, steps(300))):.3f}", flush=True)
        for density, label in ((1.0, "dense"), (0.2, "20%"), (0.05, "5%")):
            print(f"conv2_train_{label} {threads} {median3(lambda: train_steps('conv2', density, steps(4))):.3f}", flush=True)
        print(f"lenet_eval {threads} {median3(lambda: evaluate('lenet', steps(40))):.3f}", flush=True)
        print(f"conv2_eval {threads} {median3(lambda: evaluate('conv2', steps(4))):.3f}", flush=True)


if __name__ == "__main__":
    main()
