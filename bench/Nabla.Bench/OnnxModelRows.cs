using Microsoft.ML.OnnxRuntime;
using Nabla.Interop.Onnx;
using Nabla.Interop.Onnx.Export;
using Nabla.Training;

namespace Nabla.Bench;

/// <summary>
/// Real ONNX models, Nabla's importer and graph executor vs ONNX Runtime on the same file and the same input:
/// mnist-8 (the copy vendored in tests/fixtures/serving) and ResNet18.onnx from the
/// Microsoft.ML.DnnImageFeaturizer.ResNet18 package. Both declare a fixed batch of 1; the batch-8 rows use a copy
/// with the batch dimension made dynamic (<see cref="OnnxBatchPatch"/>) where both frameworks accept it, and the
/// child says on stderr why a model has no batch-8 row otherwise.
/// </summary>
static class OnnxModelRows
{
    public static IEnumerable<Row> All(int threads)
    {
        // LeNet-5 (BuiltinModels.LeNet, random weights from seed 1) exported by Nabla's ONNX exporter with a dynamic
        // batch: both frameworks run the same bytes, so these rows are the issue's "LeNet-5 inference vs ONNX Runtime".
        var lenet = LeNetOnnx();
        var lenetInput = OnnxModel.Load(lenet).Graph.Inputs[0].Name;
        foreach (var batch in new[] { 1, 64 })
        {
            int[] shape = [batch, 1, 28, 28];
            if (TryBatch(lenet, lenetInput, shape) is { } bad) throw new InvalidOperationException($"LeNet-5: Nabla and ONNX Runtime disagree at batch {batch}: {bad}");
            yield return ModelRow($"onnx-lenet-b{batch}", $"ONNX LeNet-5 inference, batch {batch} [{string.Join("x", shape)}]", lenet, lenetInput, shape, threads);
        }
        // A linear layer with a constant weight, as PyTorch exports nn.Linear (Gemm, transB = 1): GPT-2's MLP-up shape,
        // 768 -> 3072, at 1 row (a decode step) and 16 and 64 rows (a short and a longer prompt). Nabla packs the weight
        // once (PackedLinear); ONNX Runtime prepacks constant weights too.
        foreach (var rows in new[] { 1, 16, 64 })
        {
            var linear = OnnxModels.Linear(rows, 768, 3072, seed: 3);
            int[] shape = [rows, 768];
            if (TryBatch(linear, "A", shape) is { } bad) throw new InvalidOperationException($"linear {rows} rows: Nabla and ONNX Runtime disagree: {bad}");
            yield return ModelRow($"onnx-linear-m{rows}", $"ONNX Gemm with a constant weight, {rows}x768 · 768x3072 + bias", linear, "A", shape, threads);
        }
        {
            // The same layer as MatMul + Add on a 3-D input (how PyTorch exports nn.Linear inside a transformer).
            var linear = OnnxModels.LinearMatMul(1, 16, 768, 3072, seed: 3);
            int[] shape = [1, 16, 768];
            if (TryBatch(linear, "A", shape) is { } bad) throw new InvalidOperationException($"linear MatMul: Nabla and ONNX Runtime disagree: {bad}");
            yield return ModelRow("onnx-linear-matmul-m16", "ONNX MatMul + Add with a constant weight, 1x16x768 · 768x3072 + bias", linear, "A", shape, threads);
        }
        foreach (var (id, name, path) in new[] { ("onnx-mnist8", "mnist-8", Mnist8Path()), ("onnx-resnet18", "ResNet18", ResNet18Path()) })
        {
            if (path is null)
            {
                Console.Error.WriteLine($"  note: {name}.onnx not found; its rows are skipped");
                continue;
            }
            var input = OnnxModel.Load(path).Graph.Inputs[0];
            var dims = input.Shape ?? throw new InvalidOperationException($"{path}: input '{input.Name}' has no declared shape");
            int[] shape1 = [.. dims.Select(d => (int)(d.Value ?? throw new InvalidOperationException($"{path}: dimension {d} is not fixed")))];
            var bytes = File.ReadAllBytes(path);
            if (TryBatch(bytes, input.Name, shape1) is { } bad) throw new InvalidOperationException($"{name}: Nabla and ONNX Runtime disagree at batch 1: {bad}");
            yield return ModelRow($"{id}-b1", $"ONNX {name} inference, batch 1 [{string.Join("x", shape1)}]", bytes, input.Name, shape1, threads);
            // NOTE: both models declare a fixed batch of 1. The batch-8 row runs a copy whose input and output batch
            // dimension is rewritten to a symbol, if both frameworks accept that copy at batch 8.
            int[] shape8 = [8, .. shape1.Skip(1)];
            var dynamic = dims[0].Value is null ? bytes : OnnxBatchPatch.DynamicBatch(bytes, input.Name);
            var why = TryBatch(dynamic, input.Name, shape8);
            if (why is null)
                yield return ModelRow($"{id}-b8", $"ONNX {name} inference, batch 8 [{string.Join("x", shape8)}]{(dims[0].Value is null ? "" : ", batch dim made dynamic")}", dynamic, input.Name, shape8, threads);
            else
                Console.Error.WriteLine($"  note: {name}: input '{input.Name}' [{string.Join(", ", dims)}] has a fixed batch; with it made dynamic, batch 8 fails: {why}");
        }
    }

    /// <summary>
    /// Null when Nabla and ONNX Runtime both run the model at <paramref name="shape"/> and agree within 1e-3 (the
    /// same-work check of the real-model rows); else why not.
    /// </summary>
    static string? TryBatch(byte[] model, string inputName, int[] shape)
    {
        var data = RandomInput(shape);
        float[] mine, theirs;
        try
        {
            var y = OnnxModel.Load(model).Run(Tensor.FromArray(data, shape))[0];
            if (y.Size(0) != shape[0]) return $"Nabla's output is [{string.Join(", ", y.Shape)}]";
            mine = y.ToArray<float>();
        }
        catch (Exception e) { return "Nabla: " + e.Message; }
        try
        {
            using var session = new InferenceSession(model);
            using var v = OrtValue.CreateTensorValueFromMemory(data, shape.Select(d => (long)d).ToArray());
            using var outs = session.Run(new RunOptions(), [inputName], [v], [session.OutputMetadata.Keys.First()]);
            theirs = outs[0].GetTensorDataAsSpan<float>().ToArray();
        }
        catch (Exception e) { return "ONNX Runtime: " + e.Message.Split('\n')[0]; }
        if (mine.Length != theirs.Length) return $"Nabla gives {mine.Length} values, ONNX Runtime {theirs.Length}";
        double max = 0;
        for (int i = 0; i < mine.Length; i++) max = Math.Max(max, Math.Abs(mine[i] - theirs[i]));
        return max <= 1e-3 ? null : $"outputs differ by up to {max:G3}";
    }

    static byte[] LeNetOnnx()
    {
        Tensor.ManualSeed(1);
        var model = BuiltinModels.LeNet();
        model.Eval();
        return OnnxExporter.ExportToBytes(model, Tensor.Randn(1, 1, 28, 28), dynamicBatch: true);
    }

    static float[] RandomInput(int[] shape)
    {
        var data = new float[shape.Aggregate(1, (p, d) => p * d)];
        var rng = new Random(1);
        for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1);
        return data;
    }

    static Row ModelRow(string id, string title, byte[] model, string inputName, int[] shape, int threads)
    {
        var data = RandomInput(shape);
        return new Row(id, title, Unit.MsPerStep, 0,
        [
            new(Rows.FwNabla, () =>
            {
                var nabla = OnnxModel.Load(model);
                var x = Tensor.FromArray(data, shape);
                // Steady-state managed allocation of one Run on this thread (the executor's memory plan reuses buffers).
                void Step()
                {
                    foreach (var y in nabla.Run(x)) y.Dispose();
                }
                for (int i = 0; i < 3; i++) Step();
                long before = GC.GetAllocatedBytesForCurrentThread();
                for (int i = 0; i < 5; i++) Step();
                Console.Error.WriteLine($"  note: {id}: Nabla allocates {(GC.GetAllocatedBytesForCurrentThread() - before) / 5:N0} bytes per Run (calling thread)");
                // NOTE: the outputs are disposed, as ONNX Runtime's are below (`using`, back to its arena): an output of
                // 85,000 bytes or more then goes back to Nabla's storage cache for the next Run.
                return Step;
            }),
            new(Rows.FwOrt, () =>
            {
                var session = new InferenceSession(model, Rows.OrtOptions(threads));
                var v = OrtValue.CreateTensorValueFromMemory(data, shape.Select(d => (long)d).ToArray());
                var run = new RunOptions();
                string[] inNames = [inputName], outNames = [session.OutputMetadata.Keys.First()];
                OrtValue[] inputs = [v];
                return () =>
                {
                    using var outs = session.Run(run, inNames, inputs, outNames);
                };
            }),
        ]);
    }

    /// <summary>The repository's vendored mnist-8 (tests/fixtures/serving/mnist-8/model.onnx), found above the binary.</summary>
    static string? Mnist8Path()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var p = Path.Combine(dir.FullName, "tests", "fixtures", "serving", "mnist-8", "model.onnx");
            if (File.Exists(p)) return p;
        }
        return null;
    }

    /// <summary>ResNet18.onnx as the package's build props copy it next to the binary, else in the NuGet package folder.</summary>
    static string? ResNet18Path()
    {
        var local = Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
        if (File.Exists(local)) return local;
        var root = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var p = Path.Combine(root, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
        return File.Exists(p) ? p : null;
    }
}
