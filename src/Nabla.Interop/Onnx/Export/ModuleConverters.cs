using System.Diagnostics.CodeAnalysis;
using Nabla.NN;
using Module = Nabla.NN.Module;

namespace Nabla.Interop.Onnx.Export;

/// <summary>The built-in converters: Nabla.NN layers, and the Nabla.Training built-in models.</summary>
internal static class ModuleConverters
{
    public const string Supported =
        "Sequential, Identity, Dropout, Linear, Conv1d, Conv2d, ConvTranspose2d, BatchNorm1d/2d, LayerNorm, Embedding, MaxPool2d, AvgPool2d, "
        + "AdaptiveAvgPool2d, Flatten, Unflatten, ReLU, GELU, SiLU, Sigmoid, Tanh, LeakyReLU, ELU, Softplus, Softmax, LogSoftmax, "
        + "and Nabla.Training's ClassificationTask, SmallResNet and BasicBlock";

    public static OnnxValue? TryConvert(OnnxGraphBuilder b, Module m, string path, OnnxValue x) => m switch
    {
        Sequential s => SequentialOf(b, s, path, x),
        Identity or Dropout => Unary(b, m, path, x, "Identity"),
        Linear l => LinearOf(b, l, path, x),
        Conv2d c => Conv2dOf(b, c, path, x),
        Conv1d c => Conv1dOf(b, c, path, x),
        ConvTranspose2d c => ConvTranspose2dOf(b, c, path, x),
        BatchNorm bn => BatchNormOf(b, bn, path, x),
        LayerNorm ln => LayerNormOf(b, ln, path, x),
        Embedding e => new OnnxValue(b.Node("Gather", NodeName(path, "Gather"), [b.Initializer(Key(path, "weight"), e.Weight), x.Name], ("axis", 0)), e.Forward(x.Example)),
        MaxPool2d p => MaxPoolOf(b, p, path, x),
        AvgPool2d p => AvgPoolOf(b, p, path, x),
        AdaptiveAvgPool2d p => AdaptiveAvgPoolOf(b, p, path, x),
        Flatten f => FlattenOf(b, f, path, x),
        Unflatten u => ReshapeTo(b, u, path, x, u.Forward(x.Example), u.Dim),
        ReLU => Unary(b, m, path, x, "Relu"),
        Sigmoid => Unary(b, m, path, x, "Sigmoid"),
        Tanh => Unary(b, m, path, x, "Tanh"),
        SiLU => new OnnxValue(b.Node("Mul", NodeName(path, "Mul"), [x.Name, b.Node("Sigmoid", NodeName(path, "Sigmoid"), [x.Name])]), m.Forward(x.Example)),
        GELU g => GeluOf(b, g, path, x),
        LeakyReLU l => Unary(b, m, path, x, "LeakyRelu", ("alpha", l.NegativeSlope)),
        ELU e => Unary(b, m, path, x, "Elu", ("alpha", e.Alpha)),
        Softplus s => SoftplusOf(b, s, path, x),
        Softmax s => Unary(b, m, path, x, "Softmax", ("axis", s.Dim)),
        LogSoftmax s => Unary(b, m, path, x, "LogSoftmax", ("axis", s.Dim)),
        _ => TrainingModel(b, m, path, x),
    };

    static string Key(string path, string name) => path.Length == 0 ? name : path + "." + name;
    static string NodeName(string path, string op) => path.Length == 0 ? op : path + "/" + op;

    static OnnxValue Unary(OnnxGraphBuilder b, Module m, string path, OnnxValue x, string op, params (string, object)[] attributes) =>
        new(b.Node(op, NodeName(path, op), [x.Name], attributes), m.Forward(x.Example));

    static OnnxValue SequentialOf(OnnxGraphBuilder b, Module s, string path, OnnxValue x)
    {
        foreach (var (name, child) in s.NamedChildren()) x = b.Emit(child, Key(path, name), x);
        return x;
    }

    static OnnxValue LinearOf(OnnxGraphBuilder b, Linear l, string path, OnnxValue x)
    {
        var w = b.Initializer(Key(path, "weight"), l.Weight);
        string? bias = l.Bias is { } bt ? b.Initializer(Key(path, "bias"), bt) : null;
        var y = l.Forward(x.Example);
        if (x.Example.Dim == 2)
            return new(b.Node("Gemm", NodeName(path, "Gemm"), bias is null ? [x.Name, w] : [x.Name, w, bias], ("transB", 1)), y);
        // NOTE: Gemm takes only matrices; other ranks use MatMul with the transposed weight (ONNX Runtime folds the Transpose).
        var wt = b.Node("Transpose", NodeName(path, "Transpose"), [w], ("perm", new long[] { 1, 0 }));
        var mm = b.Node("MatMul", NodeName(path, "MatMul"), [x.Name, wt]);
        return new(bias is null ? mm : b.Node("Add", NodeName(path, "Add"), [mm, bias]), y);
    }

    static string[] ConvInputs(OnnxGraphBuilder b, string path, Tensor weight, Tensor? bias, OnnxValue x) =>
        bias is null ? [x.Name, b.Initializer(Key(path, "weight"), weight)]
        : [x.Name, b.Initializer(Key(path, "weight"), weight), b.Initializer(Key(path, "bias"), bias)];

    /// <summary>Explicit [begin..., end...] pads for a padding mode: null/"valid" use the numbers, "same" pads d·(k−1) with the extra one at the end, as PyTorch.</summary>
    static long[] ConvPads(string? mode, int[] padding, int[] kernel, int[] dilation, string where)
    {
        int n = kernel.Length;
        var pads = new long[2 * n];
        for (int i = 0; i < n; i++)
        {
            if (mode == "same")
            {
                int total = dilation[i] * (kernel[i] - 1);
                (pads[i], pads[n + i]) = (total / 2, total - total / 2);
            }
            else if (mode is null) (pads[i], pads[n + i]) = (padding[i], padding[i]);
            else if (mode != "valid") throw new NablaException($"onnx export: {where}: padding mode '{mode}' is not supported");
        }
        return pads;
    }

    static OnnxValue Conv2dOf(OnnxGraphBuilder b, Conv2d c, string path, OnnxValue x)
    {
        RequireRank(x, 4, "Conv2d", path);
        int[] k = [c.KernelSize.h, c.KernelSize.w], d = [c.Dilation.h, c.Dilation.w];
        var pads = ConvPads(c.PaddingMode, [c.Padding.h, c.Padding.w], k, d, $"Conv2d at '{path}'");
        return new(b.Node("Conv", NodeName(path, "Conv"), ConvInputs(b, path, c.Weight, c.Bias, x),
            ("kernel_shape", k), ("strides", new[] { c.Stride.h, c.Stride.w }), ("pads", pads), ("dilations", d), ("group", c.Groups)), c.Forward(x.Example));
    }

    static OnnxValue Conv1dOf(OnnxGraphBuilder b, Conv1d c, string path, OnnxValue x)
    {
        RequireRank(x, 3, "Conv1d", path);
        int stride = c.Stride, padding = c.Padding, dilation = c.Dilation, groups = c.Groups;
        int[] k = [c.Weight.Size(2)];
        var pads = ConvPads(c.PaddingMode, [padding], k, [dilation], $"Conv1d at '{path}'");
        return new(b.Node("Conv", NodeName(path, "Conv"), ConvInputs(b, path, c.Weight, c.Bias, x),
            ("kernel_shape", k), ("strides", new[] { stride }), ("pads", pads), ("dilations", new[] { dilation }), ("group", groups)), c.Forward(x.Example));
    }

    static OnnxValue ConvTranspose2dOf(OnnxGraphBuilder b, ConvTranspose2d c, string path, OnnxValue x)
    {
        RequireRank(x, 4, "ConvTranspose2d", path);
        var s = c.Stride;
        var p = c.Padding;
        var op = c.OutputPadding;
        var d = c.Dilation;
        int groups = c.Groups;
        return new(b.Node("ConvTranspose", NodeName(path, "ConvTranspose"), ConvInputs(b, path, c.Weight, c.Bias, x),
            ("kernel_shape", new[] { c.Weight.Size(2), c.Weight.Size(3) }), ("strides", new[] { s.Item1, s.Item2 }),
            ("pads", new[] { p.Item1, p.Item2, p.Item1, p.Item2 }), ("output_padding", new[] { op.Item1, op.Item2 }),
            ("dilations", new[] { d.Item1, d.Item2 }), ("group", groups)), c.Forward(x.Example));
    }

    static OnnxValue BatchNormOf(OnnxGraphBuilder b, BatchNorm bn, string path, OnnxValue x)
    {
        if (bn.RunningMean is null || bn.RunningVar is null)
            throw new NablaException($"onnx export: {bn.GetType().Name} at '{path}' has no running statistics (track_running_stats=False), so it normalizes with batch statistics even in eval mode; ONNX BatchNormalization cannot express that");
        int c = bn.RunningMean.Size(0);
        var scale = b.Initializer(bn.Weight is null ? Key(path, "weight_ones") : Key(path, "weight"), bn.Weight ?? Tensor.Ones([c]));
        var bias = b.Initializer(bn.Bias is null ? Key(path, "bias_zeros") : Key(path, "bias"), bn.Bias ?? Tensor.Zeros([c]));
        var mean = b.Initializer(Key(path, "running_mean"), bn.RunningMean);
        var var = b.Initializer(Key(path, "running_var"), bn.RunningVar);
        return new(b.Node("BatchNormalization", NodeName(path, "BatchNormalization"), [x.Name, scale, bias, mean, var], ("epsilon", bn.Eps)), bn.Forward(x.Example));
    }

    static OnnxValue LayerNormOf(OnnxGraphBuilder b, LayerNorm ln, string path, OnnxValue x)
    {
        if (b.Opset < 17)
            throw new NablaException($"onnx export: LayerNorm at '{path}' needs opset 17 or later (LayerNormalization), the export targets {b.Opset}");
        var shape = ln.NormalizedShape;
        double eps = ln.Eps;
        var scale = b.Initializer(ln.Weight is null ? Key(path, "weight_ones") : Key(path, "weight"), ln.Weight ?? Tensor.Ones(shape));
        string[] inputs = ln.Bias is null ? [x.Name, scale] : [x.Name, scale, b.Initializer(Key(path, "bias"), ln.Bias)];
        return new(b.Node("LayerNormalization", NodeName(path, "LayerNormalization"), inputs, ("axis", -shape.Length), ("epsilon", eps)), ln.Forward(x.Example));
    }

    static OnnxValue MaxPoolOf(OnnxGraphBuilder b, MaxPool2d p, string path, OnnxValue x)
    {
        RequireRank(x, 4, "MaxPool2d", path);
        var k = p.KernelSize;
        var s = p.Stride;
        var pad = p.Padding;
        var d = p.Dilation;
        bool ceil = p.CeilMode;
        return new(b.Node("MaxPool", NodeName(path, "MaxPool"), [x.Name], ("kernel_shape", new[] { k.Item1, k.Item2 }), ("strides", new[] { s.Item1, s.Item2 }),
            ("pads", new[] { pad.Item1, pad.Item2, pad.Item1, pad.Item2 }), ("dilations", new[] { d.Item1, d.Item2 }), ("ceil_mode", ceil ? 1 : 0)), p.Forward(x.Example));
    }

    static OnnxValue AvgPoolOf(OnnxGraphBuilder b, AvgPool2d p, string path, OnnxValue x)
    {
        RequireRank(x, 4, "AvgPool2d", path);
        var k = p.KernelSize;
        var s = p.Stride;
        var pad = p.Padding;
        // NOTE: Nabla averages over the zero-padded window (PyTorch's count_include_pad=True).
        return new(b.Node("AveragePool", NodeName(path, "AveragePool"), [x.Name], ("kernel_shape", new[] { k.Item1, k.Item2 }), ("strides", new[] { s.Item1, s.Item2 }),
            ("pads", new[] { pad.Item1, pad.Item2, pad.Item1, pad.Item2 }), ("count_include_pad", 1)), p.Forward(x.Example));
    }

    static OnnxValue AdaptiveAvgPoolOf(OnnxGraphBuilder b, AdaptiveAvgPool2d p, string path, OnnxValue x)
    {
        RequireRank(x, 4, "AdaptiveAvgPool2d", path);
        var (oh, ow) = p.OutputSize;
        int h = x.Example.Size(2), w = x.Example.Size(3);
        var y = p.Forward(x.Example);
        if (oh == 1 && ow == 1) return new(b.Node("GlobalAveragePool", NodeName(path, "GlobalAveragePool"), [x.Name]), y);
        if (h % oh != 0 || w % ow != 0)
            throw new NablaException($"onnx export: AdaptiveAvgPool2d at '{path}': output {oh}x{ow} does not divide the input {h}x{w}, so the windows are uneven and AveragePool cannot express them");
        return new(b.Node("AveragePool", NodeName(path, "AveragePool"), [x.Name], ("kernel_shape", new[] { h / oh, w / ow }), ("strides", new[] { h / oh, w / ow })), y);
    }

    static OnnxValue FlattenOf(OnnxGraphBuilder b, Flatten f, string path, OnnxValue x)
    {
        int rank = x.Example.Dim;
        int start = f.StartDim, end = f.EndDim;
        if (start < 0) start += rank;
        if (end < 0) end += rank;
        var y = f.Forward(x.Example);
        if (start == 1 && end == rank - 1) return new(b.Node("Flatten", NodeName(path, "Flatten"), [x.Name], ("axis", 1)), y);
        return ReshapeTo(b, f, path, x, y, start);
    }

    /// <summary>
    /// Reshape to the example output's shape, where the dimensions before <paramref name="firstChanged"/> are copied from
    /// the input (0) so the batch stays dynamic; when the batch itself is reshaped, one dimension is inferred (−1).
    /// </summary>
    static OnnxValue ReshapeTo(OnnxGraphBuilder b, Module m, string path, OnnxValue x, Tensor y, int firstChanged)
    {
        if (firstChanged < 0) firstChanged += x.Example.Dim;
        var shape = y.Shape.Select(d => (long)d).ToArray();
        for (int i = 0; i < Math.Min(firstChanged, shape.Length); i++) shape[i] = 0;
        if (firstChanged == 0 && shape.Length > 0) shape[0] = -1;
        var target = b.Int64s(Key(path, "shape"), shape);
        return new(b.Node("Reshape", NodeName(path, "Reshape"), [x.Name, target]), y);
    }

    static OnnxValue GeluOf(OnnxGraphBuilder b, GELU g, string path, OnnxValue x)
    {
        var approximate = g.Approximate;
        var y = g.Forward(x.Example);
        if (b.Opset >= 20) return new(b.Node("Gelu", NodeName(path, "Gelu"), [x.Name], ("approximate", approximate)), y);
        var half = b.Scalar("const_0_5", 0.5f);
        var one = b.Scalar("const_1", 1f);
        string N(string op) => NodeName(path, op);
        if (approximate == "tanh")
        {
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            var cube = b.Node("Mul", N("Mul"), [b.Node("Mul", N("Mul"), [x.Name, x.Name]), x.Name]);
            var inner = b.Node("Add", N("Add"), [x.Name, b.Node("Mul", N("Mul"), [cube, b.Scalar("const_0_044715", 0.044715f)])]);
            var th = b.Node("Tanh", N("Tanh"), [b.Node("Mul", N("Mul"), [inner, b.Scalar("const_sqrt_2_over_pi", (float)Math.Sqrt(2 / Math.PI))])]);
            return new(b.Node("Mul", N("Mul"), [b.Node("Mul", N("Mul"), [x.Name, half]), b.Node("Add", N("Add"), [th, one])]), y);
        }
        // 0.5·x·(1 + erf(x/√2)), the form torch.onnx writes before opset 20.
        var erf = b.Node("Erf", N("Erf"), [b.Node("Div", N("Div"), [x.Name, b.Scalar("const_sqrt_2", (float)Math.Sqrt(2))])]);
        return new(b.Node("Mul", N("Mul"), [b.Node("Mul", N("Mul"), [x.Name, b.Node("Add", N("Add"), [erf, one])]), half]), y);
    }

    static OnnxValue SoftplusOf(OnnxGraphBuilder b, Softplus s, string path, OnnxValue x)
    {
        // NOTE: ONNX Softplus has neither beta nor threshold; above the threshold log(1+eᶻ) equals z to float precision, so it is dropped.
        double beta = s.Beta;
        var y = s.Forward(x.Example);
        if (beta == 1) return new(b.Node("Softplus", NodeName(path, "Softplus"), [x.Name]), y);
        var betaName = b.Scalar(Key(path, "beta"), (float)beta);
        var sp = b.Node("Softplus", NodeName(path, "Softplus"), [b.Node("Mul", NodeName(path, "Mul"), [x.Name, betaName])]);
        return new(b.Node("Div", NodeName(path, "Div"), [sp, betaName]), y);
    }

    /// <summary>
    /// Nabla.Training's built-in models. NOTE: Nabla.Interop may not reference Nabla.Training (layering), so these are
    /// recognized by full type name and read through their registered children, whose names are their state-dict keys.
    /// </summary>
    static OnnxValue? TrainingModel(OnnxGraphBuilder b, Module m, string path, OnnxValue x)
    {
        switch (m.GetType().FullName)
        {
            case "Nabla.Training.ClassificationTask":
                return b.Emit(Child(m, "net", path), Key(path, "net"), x);
            case "Nabla.Training.SmallResNet":
            {
                var h = b.Emit(Child(m, "layers", path), Key(path, "layers"), b.Emit(Child(m, "stem", path), Key(path, "stem"), x));
                var pooled = b.Opset >= 18
                    ? b.Node("ReduceMean", NodeName(path, "ReduceMean"), [h.Name, b.Int64s(Key(path, "pool_axes"), 2, 3)], ("keepdims", 0))
                    : b.Node("ReduceMean", NodeName(path, "ReduceMean"), [h.Name], ("axes", new long[] { 2, 3 }), ("keepdims", 0));
                return b.Emit(Child(m, "fc", path), Key(path, "fc"), new OnnxValue(pooled, h.Example.Mean([2, 3])));
            }
            case "Nabla.Training.BasicBlock":
            {
                var y = Sequence(b, m, path, x, "conv1", "bn1");
                y = new(b.Node("Relu", NodeName(path, "Relu"), [y.Name]), y.Example.Relu());
                y = Sequence(b, m, path, y, "conv2", "bn2");
                var shortcut = m.NamedChildren().Any(c => c.name == "downsample") ? b.Emit(Child(m, "downsample", path), Key(path, "downsample"), x) : x;
                var sum = b.Node("Add", NodeName(path, "Add"), [y.Name, shortcut.Name]);
                return new(b.Node("Relu", NodeName(path, "Relu"), [sum]), m.Forward(x.Example));
            }
            default:
                return null;
        }
    }

    static OnnxValue Sequence(OnnxGraphBuilder b, Module parent, string path, OnnxValue x, params string[] children)
    {
        foreach (var c in children) x = b.Emit(Child(parent, c, path), Key(path, c), x);
        return x;
    }

    static Module Child(Module m, string name, string path) =>
        m.NamedChildren().FirstOrDefault(c => c.name == name).module
        ?? throw new NablaException($"onnx export: {m.GetType().Name} at '{(path.Length == 0 ? "(root)" : path)}' has no child module '{name}'; the exporter does not match this version of the model");

    static void RequireRank(OnnxValue x, int rank, string module, string path)
    {
        if (x.Example.Dim != rank)
            throw new NablaException($"onnx export: {module} at '{path}' gets a {x.Example.Dim}-D input {ShapeText(x.Example)}; the exporter handles batched {rank}-D inputs only");
    }

    static string ShapeText(Tensor t) => "[" + string.Join(", ", t.Shape) + "]";
}
