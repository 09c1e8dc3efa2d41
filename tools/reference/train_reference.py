#!/usr/bin/env python3
"""Trains the same architectures and hyperparameters as `nabla train` with Debian's PyTorch, for comparison.

Run with Debian's PyTorch 1.13:  /usr/bin/python3 tools/reference/train_reference.py --model lenet --epochs 10
Data: the bundled Fashion-MNIST in data/fashion-mnist. Images scaled to [0, 1], no other transform; Adam lr 1e-3;
batch 64; shuffled every epoch; the final test accuracy is printed as JSON on the last line.
"""
import argparse, gzip, json, os, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "fashion-mnist")


def idx(name):
    with gzip.open(os.path.join(ROOT, name), "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def model(name):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 10))
    raise SystemExit(f"unknown model {name}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="lenet")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                   help="cosine: per-step CosineAnnealingLR down to 0 at the end, as `nabla train --schedule cosine`")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr = torch.tensor(idx("train-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    ytr = torch.tensor(idx("train-labels-idx1-ubyte.gz"), dtype=torch.int64)
    xte = torch.tensor(idx("t10k-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    yte = torch.tensor(idx("t10k-labels-idx1-ubyte.gz"), dtype=torch.int64)
    net = model(a.model)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    steps = a.epochs * ((len(xtr) + a.batch_size - 1) // a.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if a.schedule == "cosine" else None
    start = time.time()
    for epoch in range(a.epochs):
        net.train()
        perm = torch.randperm(len(xtr))
        for s in range(0, len(xtr), a.batch_size):
            b = perm[s:s + a.batch_size]
            loss = F.cross_entropy(net(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(xte[s:s + 1000]) for s in range(0, len(xte), 1000)])
            acc = (logits.argmax(1) == yte).float().mean().item()
            tl = F.cross_entropy(logits, yte).item()
        print(f"epoch {epoch + 1}/{a.epochs}: test accuracy {acc:.4f}, test loss {tl:.4f}, {time.time() - start:.1f}s", flush=True)
    print(json.dumps({"framework": f"torch {torch.__version__}", "model": a.model, "schedule": a.schedule, "test_accuracy": round(acc, 4),
                      "test_loss": round(tl, 4), "epochs": a.epochs, "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
