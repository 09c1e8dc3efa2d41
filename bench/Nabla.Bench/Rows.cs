using Microsoft.ML.OnnxRuntime;
using Nabla.NN;
using Nabla.Optim;
using Nabla.Training;
using Torch = TorchSharp.torch;
using TTensor = TorchSharp.torch.Tensor;

namespace Nabla.Bench;

enum Unit { GFlops, MicrosPerOp, MsPerStep }

/// <summary>One line of the table: what is measured, how it is reported, and each framework's version of it.</summary>
sealed record Row(string Id, string Title, Unit Unit, double Flops, IReadOnlyList<Candidate> Candidates);

static class Rows
{
    public const string FwNabla = "Nabla", FwTorch = "TorchSharp", FwOrt = "ONNX Runtime";

    // NOTE: results land here so that no step's output is dead code.
    static object? sink;

    public static List<Row> All(int threads)
    {
        var rows = new List<Row>();
        foreach (int n in new[] { 512, 1024, 2048 })
            rows.Add(MatmulRow($"matmul{n}", $"matmul {n}x{n}x{n}", [n, n], [n, n], threads));
        rows.Add(MatmulRow("mm1x768x2304", "matmul 1x768 · 768x2304 (QKV, 1 token)", [1, 768], [768, 2304], threads));
        rows.Add(MatmulRow("mm64x768x3072", "matmul 64x768 · 768x3072 (MLP up, 64 tokens)", [64, 768], [768, 3072], threads));
        rows.Add(MatmulRow("bmm12x128x64x128", "batched matmul 12x(128x64 · 64x128) (attention scores)", [12, 128, 64], [12, 64, 128], threads));
        rows.Add(AddRow(1));
        rows.Add(AddRow(32));
        rows.Add(MlpRow(64));
        rows.Add(MlpRow(256));
        rows.Add(MlpRow(64, adam: true));
        rows.Add(MlpRow(256, adam: true));
        rows.Add(CnnRow(64));
        rows.Add(LeNetRow(1));
        rows.Add(LeNetRow(64));
        rows.AddRange(OnnxModelRows.All(threads));
        rows.AddRange(DecodeRows.All());
        return rows;
    }

    static Row MatmulRow(string id, string title, int[] a, int[] b, int threads)
    {
        int batch = a.Length == 3 ? a[0] : 1;
        int m = a[^2], k = a[^1], n = b[^1];
        int[] y = a.Length == 3 ? [batch, m, n] : [m, n];
        double flops = 2.0 * batch * m * n * k;
        return new Row(id, title, Unit.GFlops, flops,
        [
            new(FwNabla, () =>
            {
                Tensor.ManualSeed(1);
                var ta = Tensor.Randn(a);
                var tb = Tensor.Randn(b);
                // NOTE: the output is disposed, as the TorchSharp row disposes its output and ONNX Runtime's arena takes
                // its output back: all three allocators can reuse the block.
                return () => ta.Matmul(tb).Dispose();
            }),
            new(FwTorch, () =>
            {
                Torch.manual_seed(1);
                var ta = Torch.randn(Longs(a));
                var tb = Torch.randn(Longs(b));
                return () => Torch.matmul(ta, tb).Dispose();
            }),
            new(FwOrt, () =>
            {
                var model = OnnxModels.MatMul(Longs(a), Longs(b), Longs(y));
                var session = new InferenceSession(model, OrtOptions(threads));
                var rng = new Random(1);
                var da = RandomFloats(rng, a.Aggregate(1, (p, d) => p * d));
                var db = RandomFloats(rng, b.Aggregate(1, (p, d) => p * d));
                var va = OrtValue.CreateTensorValueFromMemory(da, Longs(a));
                var vb = OrtValue.CreateTensorValueFromMemory(db, Longs(b));
                var run = new RunOptions();
                string[] inNames = ["A", "B"], outNames = ["Y"];
                OrtValue[] inputs = [va, vb];
                return () =>
                {
                    using var outs = session.Run(run, inNames, inputs, outNames);
                };
            }),
        ]);
    }

    static Row AddRow(int n) => new($"add{n}x{n}", $"eager add {n}x{n} (out of place)", Unit.MicrosPerOp, 0,
    [
        new(FwNabla, () =>
        {
            var a = Tensor.Randn(n, n);
            var b = Tensor.Randn(n, n);
            return () => sink = a.Add(b);
        }),
        new(FwTorch, () =>
        {
            var a = Torch.randn(n, n);
            var b = Torch.randn(n, n);
            return () => a.add(b).Dispose();
        }),
    ]);

    static Row MlpRow(int batch, bool adam = false) => new($"mlp{batch}{(adam ? "-adam" : "")}",
        $"MLP 784-512-256-10 train step ({(adam ? "Adam" : "SGD")}), batch {batch}", Unit.MsPerStep, 0,
    [
        new(FwNabla, () =>
        {
            Tensor.ManualSeed(1);
            var model = BuiltinModels.Create("mlp");
            Optimizer opt = adam ? new Adam(model.Parameters(), lr: 1e-3) : new SGD(model.Parameters(), lr: 0.01);
            var x = Tensor.Randn(batch, 1, 28, 28);
            var y = Tensor.Randint(0, 10, [batch]);
            return () =>
            {
                // NOTE: a dispose scope per step, as the TorchSharp rows use: the next step reuses this one's buffers.
                using var scope = Tensor.NewDisposeScope();
                opt.ZeroGrad();
                var loss = Losses.CrossEntropy(model.Forward(x), y);
                loss.Backward();
                opt.Step();
            };
        }),
        new(FwTorch, () =>
        {
            Torch.manual_seed(1);
            var model = Torch.nn.Sequential(
                Torch.nn.Flatten(),
                Torch.nn.Linear(784, 512), Torch.nn.ReLU(),
                Torch.nn.Linear(512, 256), Torch.nn.ReLU(),
                Torch.nn.Linear(256, 10));
            Torch.optim.Optimizer opt = adam ? Torch.optim.Adam(model.parameters(), 1e-3) : Torch.optim.SGD(model.parameters(), 0.01);
            var x = Torch.randn(batch, 1, 28, 28);
            var y = Torch.randint(0, 10, [batch], dtype: Torch.int64);
            return () => TorchTrainStep(model, opt, x, y);
        }),
    ]);

    static Row CnnRow(int batch) => new($"cnn{batch}", $"quickstart CNN train step (Adam), batch {batch}", Unit.MsPerStep, 0,
    [
        new(FwNabla, () =>
        {
            Tensor.ManualSeed(1);
            var model = BuiltinModels.Cnn();
            var opt = new Adam(model.Parameters(), lr: 1e-3);
            var x = Tensor.Randn(batch, 1, 28, 28);
            var y = Tensor.Randint(0, 10, [batch]);
            return () =>
            {
                // NOTE: a dispose scope per step, as the TorchSharp rows use: the next step reuses this one's buffers.
                using var scope = Tensor.NewDisposeScope();
                opt.ZeroGrad();
                var loss = Losses.CrossEntropy(model.Forward(x), y);
                loss.Backward();
                opt.Step();
            };
        }),
        new(FwTorch, () =>
        {
            Torch.manual_seed(1);
            // Same architecture as BuiltinModels.Cnn().
            var model = Torch.nn.Sequential(
                Torch.nn.Conv2d(1, 32, 3, padding: 1), Torch.nn.BatchNorm2d(32), Torch.nn.ReLU(), Torch.nn.MaxPool2d(2),
                Torch.nn.Conv2d(32, 64, 3, padding: 1), Torch.nn.BatchNorm2d(64), Torch.nn.ReLU(), Torch.nn.MaxPool2d(2),
                Torch.nn.Flatten(), Torch.nn.Dropout(0.25), Torch.nn.Linear(64 * 7 * 7, 10));
            var opt = Torch.optim.Adam(model.parameters(), 1e-3);
            var x = Torch.randn(batch, 1, 28, 28);
            var y = Torch.randint(0, 10, [batch], dtype: Torch.int64);
            return () => TorchTrainStep(model, opt, x, y);
        }),
    ]);

    static Row LeNetRow(int batch) => new($"lenet{batch}", $"LeNet-5 inference, batch {batch}", Unit.MsPerStep, 0,
    [
        new(FwNabla, () =>
        {
            Tensor.ManualSeed(1);
            var model = BuiltinModels.LeNet();
            model.Eval();
            var x = Tensor.Randn(batch, 1, 28, 28);
            return () =>
            {
                using var scope = Tensor.NewDisposeScope();
                using var _ = GradMode.NoGrad();
                sink = model.Forward(x);
            };
        }),
        new(FwTorch, () =>
        {
            Torch.manual_seed(1);
            // Same architecture as BuiltinModels.LeNet().
            var model = Torch.nn.Sequential(
                Torch.nn.Conv2d(1, 6, 5, padding: 2), Torch.nn.ReLU(), Torch.nn.MaxPool2d(2),
                Torch.nn.Conv2d(6, 16, 5), Torch.nn.ReLU(), Torch.nn.MaxPool2d(2),
                Torch.nn.Flatten(), Torch.nn.Linear(16 * 5 * 5, 120), Torch.nn.ReLU(),
                Torch.nn.Linear(120, 84), Torch.nn.ReLU(), Torch.nn.Linear(84, 10));
            model.eval();
            var x = Torch.randn(batch, 1, 28, 28);
            return () =>
            {
                using var scope = Torch.NewDisposeScope();
                using var _ = Torch.no_grad();
                model.call(x);
            };
        }),
    ]);

    static void TorchTrainStep(TorchSharp.Modules.Sequential model, Torch.optim.Optimizer opt, TTensor x, TTensor y)
    {
        // NOTE: a dispose scope per step is idiomatic TorchSharp; it frees the step's native tensors at once.
        using var scope = Torch.NewDisposeScope();
        opt.zero_grad();
        var loss = Torch.nn.functional.cross_entropy(model.call(x), y);
        loss.backward();
        opt.step();
    }

    public static SessionOptions OrtOptions(int threads) => new()
    {
        IntraOpNumThreads = threads,
        InterOpNumThreads = 1,
        ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
        GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
    };

    static long[] Longs(int[] a) => a.Select(v => (long)v).ToArray();

    static float[] RandomFloats(Random rng, int n)
    {
        var r = new float[n];
        for (int i = 0; i < n; i++) r[i] = (float)(rng.NextDouble() * 2 - 1);
        return r;
    }
}
