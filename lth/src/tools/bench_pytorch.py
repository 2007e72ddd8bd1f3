"""The PyTorch side of `lth bench --vs-pytorch`: the same workloads as lth's rows, timed the
same way (one untimed warm-up call, then the timed steps), at the thread count lth asks for.

lth starts this script once and sends one request per line on standard input,
`key threads scale`; the script answers each with one line, the per-second figure of one
timing, so lth can interleave its own timings with these. Its first line names the torch
version.

Training is masked the way the reference lottery-ticket implementations do it: the dense
network, gradients of pruned weights zeroed before the optimizer's step (Adam for LeNet and
Conv-2/4/6; SGD with momentum 0.9 and weight decay 1e-4 for ResNet-18 and VGG-19, in training
mode so BatchNorm uses batch statistics), weights re-masked after it. PyTorch does the same
dense work at any density, so its masks are random at the given density. Evaluation is loss and
accuracy under no_grad in batches of 1,000, as a reference implementation evaluates. Needs only
torch (`pip install torch`).
"""

import sys
import time

import torch
from torch import nn

def lenet():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def convnet(widths):
    """Conv-2/4/6: 3x3 same-padding convolutions with bias and ReLU, a 2x2 max-pool after each
    pair, then fully connected 256-256-10."""
    layers, channels = [], 3
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
        channels = width
    side = 32 >> (len(widths) // 2)
    layers += [nn.Flatten(), nn.Linear(channels * side * side, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)]
    return nn.Sequential(*layers)


def conv2():
    return convnet([64, 64])


def conv4():
    return convnet([64, 64, 128, 128])


def conv6():
    return convnet([64, 64, 128, 128, 256, 256])


def vgg19():
    """VGG-19 for CIFAR-10 as lth builds it: 3x3 convs without bias, BatchNorm, ReLU, max-pools,
    2x2 average pool, fc 512 -> 10."""
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
    layers, channels = [], 3
    for width in plan:
        if width == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
    return nn.Sequential(*layers, nn.AvgPool2d(2), nn.Flatten(), nn.Linear(512, 10))


class Block(nn.Module):
    def __init__(self, inputs, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = nn.Sequential()
        if inputs != width:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18():
    """The paper's ResNet-18: He et al.'s 20-layer CIFAR ResNet (16/32/64 channels)."""
    blocks, inputs = [], 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            blocks.append(Block(inputs, width, 2 if stage > 0 and block == 0 else 1))
            inputs = width
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), *blocks,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


NETS = {"lenet": (lenet, 60), "conv2": (conv2, 60), "conv4": (conv4, 60), "conv6": (conv6, 60), "resnet18": (resnet18, 128), "vgg19": (vgg19, 64)}


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


def train_steps(kind, density, steps):
    torch.manual_seed(0)
    make, batch = NETS[kind]
    net = make()
    net.train()
    masks = {}
    if density < 1.0:
        for name, p in net.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                masks[name] = (torch.rand_like(p) < density).float()
                p.data.mul_(masks[name])
    params = dict(net.named_parameters())
    if kind in ("resnet18", "vgg19"):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=1.2e-3)
    xs, ys = images(kind, batch), torch.arange(batch) % 10
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


def evaluate(kind, n, passes):
    """Loss and accuracy over n images, under no_grad, in batches of 1,000 (PyTorch's dense
    products cost the same at any density)."""
    torch.manual_seed(0)
    net = NETS[kind][0]()
    net.eval()
    xs = images(kind, n)
    ys = torch.arange(n) % 10

    def step():
        with torch.no_grad():
            loss, correct = 0.0, 0
            for start in range(0, n, 1000):
                logits = net(xs[start:start + 1000])
                loss += nn.functional.cross_entropy(logits, ys[start:start + 1000], reduction="sum").item()
                correct += (logits.argmax(1) == ys[start:start + 1000]).sum().item()

    return n * per_second(passes, step)


# Steps per training timing and images per evaluation timing, as lth's rows (`bench.rs`).
TRAIN_STEPS = {"lenet": 300, "conv2": 4, "conv4": 2, "conv6": 2, "resnet18": 1, "vgg19": 1}
EVAL_IMAGES = {"lenet": 15000, "conv2": 520, "conv4": 520, "conv6": 520, "resnet18": 260, "vgg19": 130}
DENSITY = {"dense": 1.0, "20%": 0.2, "5%": 0.05}


def time_once(key, scale):
    steps = lambda n: max(2, round(n * scale))
    kind, what, label = key.split("_", 2)
    if what == "train":
        return train_steps(kind, DENSITY[label], steps(TRAIN_STEPS[kind]))
    if what == "eval":
        return evaluate(kind, EVAL_IMAGES[kind], steps(2) if kind == "lenet" else 1)
    raise ValueError(f"unknown workload key {key}")


def main():
    print(f"torch {torch.__version__} (oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'})", flush=True)
    for line in sys.stdin:
        key, threads, scale = line.split()
        torch.set_num_threads(int(threads))
        print(f"{time_once(key, float(scale)):.6f}", flush=True)


if __name__ == "__main__":
    main()
