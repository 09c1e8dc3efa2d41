using Microsoft.ML.OnnxRuntime;
using Nabla.Interop.Onnx;
using Nabla.Interop.Onnx.Export;
using Nabla.NN;
using Xunit;

namespace Nabla.OnnxExport.Tests;

/// <summary>Export, then run the file in ONNX Runtime and in Nabla's own importer, and compare both with Nabla's forward.</summary>
internal static class ExportCheck
{
    /// <summary>Convolutions (strided, transposed, grouped, "same"), batch norm, pooling (ceil mode) and activations: the
    /// layer mix both exporters are tested on.</summary>
    public static Sequential ConvPoolActivationModel() => new(
        new Conv2d(3, 8, 3, stride: 2, padding: 1), new BatchNorm2d(8), new LeakyReLU(0.2),
        new ConvTranspose2d(8, 6, 3, stride: 2, padding: 1, outputPadding: 1), new ELU(0.5),
        new Conv2d(6, 6, 3, paddingMode: "same", groups: 2), new SiLU(),
        new AvgPool2d(2, padding: 1), new Tanh(), new MaxPool2d(3, stride: 2, padding: 1, ceilMode: true),
        new AdaptiveAvgPool2d(1), new Flatten(), new Dropout(0.3), new Linear(6, 5), new Sigmoid());

    public const double Tolerance = 1e-4;

    /// <summary>Exports with an example of batch 1, then checks batches 1 and 5 (the dynamic batch) in both runtimes.</summary>
    /// <returns>the path of the exported file</returns>
    public static string RoundTrip(Module model, Func<int, Tensor> input, int opset = 17, params int[] batches)
    {
        if (batches.Length == 0) batches = [1, 5];
        model.Eval();
        var path = Path.Combine(Path.GetTempPath(), $"nabla-export-{Guid.NewGuid():N}.onnx");
        OnnxExporter.Export(model, path, input(1), dynamicBatch: true, opset);
        using var session = new InferenceSession(path);
        var imported = OnnxModel.Load(path);
        foreach (int n in batches)
        {
            var x = input(n);
            Tensor expected;
            using (GradMode.NoGrad()) expected = model.Forward(x);
            AssertClose(expected, RunOrt(session, x), $"ONNX Runtime, batch {n}");
            AssertClose(expected, imported.Run(x)[0], $"Nabla OnnxModel, batch {n}");
        }
        return path;
    }

    /// <summary>The graph as written in the file: loaded without the load-time fusion (which renames and folds weights).</summary>
    public static Nabla.Graph.Graph FileGraph(string path) =>
        OnnxModel.Load(File.ReadAllBytes(path), Path.GetDirectoryName(path), Path.GetFileName(path), fuse: false).Graph;

    public static Tensor RunOrt(InferenceSession session, Tensor x)
    {
        var shape = x.Shape.Select(d => (long)d).ToArray();
        using var input = x.DType switch
        {
            DType.Float32 => OrtValue.CreateTensorValueFromMemory(x.ToArray<float>(), shape),
            DType.Int64 => OrtValue.CreateTensorValueFromMemory(x.ToArray<long>(), shape),
            _ => throw new ArgumentException($"test helper: dtype {x.DType} not handled"),
        };
        using var options = new RunOptions();
        using var outputs = session.Run(options, [session.InputNames[0]], [input], [session.OutputNames[0]]);
        var o = outputs[0];
        var outShape = o.GetTensorTypeAndShape().Shape.Select(d => (int)d).ToArray();
        return Tensor.FromArray(o.GetTensorDataAsSpan<float>().ToArray(), outShape);
    }

    public static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        Assert.True(expected.Shape.SequenceEqual(actual.Shape), $"{what}: shape [{string.Join(", ", actual.Shape)}], expected [{string.Join(", ", expected.Shape)}]");
        var e = expected.ToArray<float>();
        var a = actual.ToArray<float>();
        double worst = 0;
        int at = -1;
        for (int i = 0; i < e.Length; i++)
        {
            double diff = Math.Abs(e[i] - a[i]) / Math.Max(1, Math.Abs(e[i]));
            if (!(diff <= worst)) (worst, at) = (diff, i);
        }
        Assert.True(worst <= Tolerance, $"{what}: element {at} is {(at >= 0 ? a[at] : 0)}, expected {(at >= 0 ? e[at] : 0)} (difference {worst:g3})");
    }

    /// <summary>Gives every batch norm non-trivial running statistics and affine parameters.</summary>
    public static void RandomizeBatchNorms(Module model, ulong seed)
    {
        var g = new Generator(seed);
        using var noGrad = GradMode.NoGrad();
        foreach (var (_, m) in model.NamedModules())
        {
            if (m is not BatchNorm bn || bn.RunningMean is null || bn.RunningVar is null) continue;
            int c = bn.RunningMean.Size(0);
            bn.RunningMean.Copy_(Tensor.Randn([c], generator: g).Mul(0.3));
            bn.RunningVar.Copy_(Tensor.Rand([c], generator: g).Add(0.5));
            bn.Weight?.Copy_(Tensor.Rand([c], generator: g).Add(0.5));
            bn.Bias?.Copy_(Tensor.Randn([c], generator: g).Mul(0.2));
        }
    }

    public static Func<int, Tensor> Images(int channels, int size, ulong seed) =>
        n => Tensor.Randn([n, channels, size, size], generator: new Generator(seed + (ulong)n));
}
