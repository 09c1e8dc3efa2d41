#!/usr/bin/python3
"""Debian's PyTorch (python3-torch, 1.13) as one more peer of Nabla.Bench (bench/README.md, "Debian's PyTorch").

Measures the bench's rows that have a PyTorch counterpart with the same method as Harness.cs: warm-up (at least 3
iterations and 0.4 s, and 60 iterations up to 4 s), then N samples of about 0.15 s each, 100 ms apart, and prints them
in the child protocol of Program.cs (tab-separated INFO and ROW lines) so that the parent adds a PyTorch column.

    /usr/bin/python3 pytorch_rows.py --threads 1 [--samples 9] [--sample-seconds 0.15] [--filter matmul,mlp]
    /usr/bin/python3 pytorch_rows.py lenet                 one LeNet-5 inference in a fresh process (cold start)
    /usr/bin/python3 pytorch_rows.py train-mlp [steps]     1,000 Adam steps of the MLP at batch 64, then the peak RSS
    /usr/bin/python3 pytorch_rows.py measure lenet [runs]  the wall time of `lenet` over fresh processes

Every row builds the same model or operands as Rows.cs (shapes, layers, optimizer settings); the numbers differ (other
random generators), which matters to no timing here.
"""
import os
import subprocess
import sys
import time


def parse(argv):
    opts = {"threads": 1, "samples": 9, "sample_seconds": 0.15, "filter": []}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--threads", "--samples", "--sample-seconds", "--filter"):
            if i + 1 >= len(argv):
                raise SystemExit(f"pytorch_rows.py: {a} needs a value")
            v = argv[i + 1]
            if a == "--threads":
                opts["threads"] = int(v)
            elif a == "--samples":
                opts["samples"] = int(v)
            elif a == "--sample-seconds":
                opts["sample_seconds"] = float(v)
            else:
                opts["filter"] = [f for f in v.split(",") if f]
            i += 2
        else:
            raise SystemExit(f"pytorch_rows.py: unknown option {a}")
    if opts["threads"] < 1 or opts["samples"] < 1:
        raise SystemExit("pytorch_rows.py: --threads and --samples must be at least 1")
    return opts


def lenet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def mlp(torch):
    nn = torch.nn
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 10))


def rows(torch):
    """(id, title, unit, flops, setup) in the order and with the titles of Rows.cs; setup returns the step to time."""
    out = []

    def matmul(rid, title, a, b):
        batch = a[0] if len(a) == 3 else 1
        m, k, n = a[-2], a[-1], b[-1]

        def setup():
            torch.manual_seed(1)
            ta, tb = torch.randn(*a), torch.randn(*b)
            return lambda: torch.matmul(ta, tb)
        out.append((rid, title, "GFlops", 2.0 * batch * m * n * k, setup))

    for n in (512, 1024, 2048):
        matmul(f"matmul{n}", f"matmul {n}x{n}x{n}", [n, n], [n, n])
    matmul("mm1x768x2304", "matmul 1x768 · 768x2304 (QKV, 1 token)", [1, 768], [768, 2304])
    matmul("mm64x768x3072", "matmul 64x768 · 768x3072 (MLP up, 64 tokens)", [64, 768], [768, 3072])
    matmul("bmm12x128x64x128", "batched matmul 12x(128x64 · 64x128) (attention scores)", [12, 128, 64], [12, 64, 128])

    for n in (1, 32):
        def add_setup(n=n):
            a, b = torch.randn(n, n), torch.randn(n, n)
            return lambda: a.add(b)
        out.append((f"add{n}x{n}", f"eager add {n}x{n} (out of place)", "MicrosPerOp", 0.0, add_setup))

    def train_setup(build, batch, adam):
        def setup():
            torch.manual_seed(1)
            model = build(torch)
            opt = torch.optim.Adam(model.parameters(), 1e-3) if adam else torch.optim.SGD(model.parameters(), 0.01)
            x = torch.randn(batch, 1, 28, 28)
            y = torch.randint(0, 10, (batch,))

            def step():
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
            return step
        return setup

    for adam in (False, True):
        for batch in (64, 256):
            out.append((f"mlp{batch}{'-adam' if adam else ''}",
                        f"MLP 784-512-256-10 train step ({'Adam' if adam else 'SGD'}), batch {batch}", "MsPerStep", 0.0,
                        train_setup(mlp, batch, adam)))
    out.append(("cnn64", "quickstart CNN train step (Adam), batch 64", "MsPerStep", 0.0, train_setup(cnn, 64, True)))

    for batch in (1, 64):
        def lenet_setup(batch=batch):
            torch.manual_seed(1)
            model = lenet(torch)
            model.eval()
            x = torch.randn(batch, 1, 28, 28)

            def step():
                with torch.no_grad():
                    model(x)
            return step
        out.append((f"lenet{batch}", f"LeNet-5 inference, batch {batch}", "MsPerStep", 0.0, lenet_setup))
    return out


def measure(step, samples, sample_seconds):
    """Harness.Run for one framework: warm-up, then samples of about sample_seconds each after a 100 ms pause."""
    t0 = time.perf_counter()
    n = 0
    while n < 3 or (time.perf_counter() - t0 < 0.4 and n < 10_000_000) or (n < 60 and time.perf_counter() - t0 < 4):
        step()
        n += 1
    per = (time.perf_counter() - t0) / n
    iters = int(min(max(sample_seconds / per, 1), 50_000_000))
    times = []
    for _ in range(samples):
        time.sleep(0.1)
        t = time.perf_counter()
        for _ in range(iters):
            step()
        times.append((time.perf_counter() - t) / iters)
    return iters, times


def quantile(sorted_values, q):
    pos = q * (len(sorted_values) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def run_rows(opts):
    import torch
    t = opts["threads"]
    torch.set_num_threads(t)
    torch.set_num_interop_threads(1)
    torch.matmul(torch.ones(8, 8), torch.ones(8, 8))
    print(f"INFO\tpytorch_version\t{torch.__version__}", flush=True)
    print(f"INFO\tpytorch_threads ({t} thread{'s' if t > 1 else ''})\t{torch.get_num_threads()}", flush=True)
    print(f"INFO\tpytorch_blas\t{loaded_blas()}", flush=True)
    for rid, title, unit, flops, setup in rows(torch):
        if opts["filter"] and not any(f.lower() in rid.lower() for f in opts["filter"]):
            continue
        started = time.perf_counter()
        iters, times = measure(setup(), opts["samples"], opts["sample_seconds"])
        s = sorted(times)
        med = quantile(s, 0.5)
        spread = (quantile(s, 0.75) - quantile(s, 0.25)) / med
        print(f"  [{t} thread{'s' if t > 1 else ''}] PyTorch {title} ... {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        print("\t".join(["ROW", rid, title, unit, repr(flops), "PyTorch", repr(med), repr(spread), str(iters),
                         ";".join(repr(x) for x in times)]), flush=True)


def loaded_blas():
    """The BLAS this process mapped (Debian's python3-torch calls the system libblas.so.3): its directory and file."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "blas" in line and "/" in line}
    return ", ".join(sorted(os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p)) for p in paths)) or "none"


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cold_lenet():
    """Nabla.Startup's `lenet`: build LeNet-5, one batch-1 inference, print the class."""
    import torch
    torch.manual_seed(0)
    model = lenet(torch)
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 1, 28, 28))
    print(f"class {int(y.argmax(1).item())}")


def train_mlp(steps):
    """Nabla.Startup's `train-mlp`: Adam on batch 64, then the loss, the time per step and the peak resident set."""
    import torch
    torch.manual_seed(0)
    model = mlp(torch)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))
    t = time.perf_counter()
    loss = None
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    ms = (time.perf_counter() - t) * 1e3 / steps
    print(f"steps {steps} loss {loss.item():.4f} ms_per_step {ms:.2f} peak_rss_mib {peak_rss_mib():.1f}")


def measure_processes(verb, runs):
    """Nabla.Startup's `measure`: start this script `runs` + 1 times with `verb`, the first run discarded."""
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, os.path.abspath(__file__), verb], capture_output=True, text=True)
        elapsed = (time.perf_counter() - t) * 1e3
        if p.returncode != 0:
            raise SystemExit(f"measure: run {i} exited with {p.returncode}: {p.stderr.strip()}")
        if i == 0:
            print(f"first run (discarded, warms the file cache): {elapsed:.1f} ms, output: {p.stdout.strip()}")
        else:
            times.append(elapsed)
    times.sort()
    print(f"{verb}: {runs} runs, wall ms median {times[len(times) // 2]:.1f}, min {times[0]:.1f}, max {times[-1]:.1f}")


def main(argv):
    if argv and argv[0] == "lenet":
        cold_lenet()
    elif argv and argv[0] == "train-mlp":
        train_mlp(int(argv[1]) if len(argv) > 1 else 1000)
    elif argv and argv[0] == "measure":
        measure_processes(argv[1] if len(argv) > 1 else "lenet", int(argv[2]) if len(argv) > 2 else 20)
    else:
        run_rows(parse(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
