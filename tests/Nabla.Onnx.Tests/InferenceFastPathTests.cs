using Nabla.Graph;
using Nabla.Interop.Onnx;
using Xunit;

namespace Nabla.Onnx.Tests;

/// <summary>
/// The inference fast paths against the reference paths: <see cref="PackedConv2d"/> against the float64 eager
/// <see cref="Functional.Conv2d"/>, <see cref="InferencePool"/> against <see cref="Functional.MaxPool2d"/>, the load-time
/// fusion pass (<see cref="OnnxFusion"/>) against the unfused graph, and the executor's buffer reuse against runs
/// without it.
/// </summary>
public class InferenceFastPathTests
{
    static void Close(Tensor expected, Tensor actual, double tol = 1e-4)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        var e = expected.Contiguous().ToArray<float>();
        var a = actual.Contiguous().ToArray<float>();
        for (int i = 0; i < e.Length; i++)
            Assert.True(Math.Abs(e[i] - a[i]) <= tol * Math.Max(1, Math.Abs(e[i])), $"element {i}: expected {e[i]}, got {a[i]}");
    }

    /// <summary>The eager convolution in float64 (im2col and a double GEMM): independent of <see cref="PackedConv2d"/>,
    /// which the float32 eager convolution itself runs on.</summary>
    static Tensor Reference(Tensor x, Tensor w, Tensor? b, (int, int) stride, (int, int) pad, (int, int)? dil = null, int groups = 1) =>
        Functional.Conv2d(x.To(DType.Float64), w.To(DType.Float64), b?.To(DType.Float64), stride, pad, dil ?? (1, 1), groups).To(DType.Float32);

    // n, c, h, w, o, k, stride, pad (t, l, b, r), dilation, groups
    public static TheoryData<int, int, int, int, int, int, int, int[], int, int> ConvCases() => new()
    {
        { 1, 3, 9, 11, 5, 3, 1, new[] { 1, 1, 1, 1 }, 1, 1 },
        { 2, 4, 8, 8, 6, 1, 1, new[] { 0, 0, 0, 0 }, 1, 1 },     // pointwise: the input is the GEMM operand
        { 1, 4, 9, 9, 8, 1, 2, new[] { 0, 0, 0, 0 }, 1, 1 },     // strided 1x1 (ResNet downsample)
        { 3, 3, 17, 15, 7, 5, 2, new[] { 2, 1, 0, 3 }, 1, 1 },   // asymmetric padding, stride 2, batch 3
        { 1, 6, 10, 10, 6, 3, 1, new[] { 2, 2, 2, 2 }, 2, 3 },   // dilation and groups
        { 1, 40, 9, 9, 130, 3, 1, new[] { 1, 1, 1, 1 }, 1, 1 },  // K = 360 > one K block, M = 130 > one M block
        { 2, 300, 5, 5, 250, 1, 1, new[] { 0, 0, 0, 0 }, 1, 1 }, // pointwise with K and M across blocks, batch 2
        { 1, 3, 23, 23, 4, 7, 3, new[] { 3, 3, 3, 3 }, 1, 1 },   // stride 3
        { 1, 3, 61, 59, 9, 3, 1, new[] { 1, 1, 1, 1 }, 1, 1 },   // oh·ow = 3599 columns: more than one column block
        { 2, 2, 70, 50, 3, 3, 1, new[] { 0, 2, 1, 0 }, 2, 1 },   // batch 2, > one column block, asymmetric padding, dilation
        { 37, 6, 14, 14, 18, 5, 1, new[] { 0, 0, 0, 0 }, 1, 1 }, // K = 150 on 10x10 maps: images folded into shared GEMMs, chunks of 30 and 7
        { 37, 30, 10, 10, 5, 3, 1, new[] { 1, 1, 1, 1 }, 1, 1 }, // K = 270, padded, folded in chunks of 30 and 7
        { 3, 7, 20, 37, 5, 5, 1, new[] { 2, 0, 1, 3 }, 1, 1 },   // K = 175, asymmetric padding, 555 columns per image, folded
        { 2, 1, 30, 70, 3, 5, 1, new[] { 2, 2, 2, 2 }, 1, 1 },   // direct (K = 25), 70 columns: two 32-column blocks and a tail
        { 9, 8, 7, 7, 10, 3, 2, new[] { 1, 1, 1, 1 }, 1, 1 },    // 16 columns per image, all nine folded into one GEMM
        { 5, 12, 6, 6, 7, 1, 1, new[] { 0, 0, 0, 0 }, 1, 1 },    // pointwise, folded
        { 2, 3, 12, 28, 10, 3, 1, new[] { 1, 1, 1, 1 }, 1, 1 },  // direct (K = 27): a full and a partial group of 8 channels, 28 columns
        { 3, 1, 28, 28, 6, 5, 1, new[] { 2, 2, 2, 2 }, 1, 1 },   // direct: LeNet's first layer
        { 2, 6, 14, 14, 16, 5, 1, new[] { 0, 0, 0, 0 }, 1, 1 },  // narrow direct (16 channels, K = 150): LeNet's second layer
        { 1, 8, 14, 14, 16, 5, 1, new[] { 2, 2, 2, 2 }, 1, 1 },  // narrow direct, padded: mnist-8's second layer
        { 1, 57, 9, 8, 32, 3, 1, new[] { 1, 0, 2, 1 }, 1, 1 },   // narrow direct, K = 513 > 512: not direct; 32 channels
        { 1, 56, 9, 8, 25, 3, 1, new[] { 1, 0, 2, 1 }, 1, 1 },   // narrow direct at K = 504, asymmetric padding, 25 channels
        { 1, 4, 70, 60, 12, 5, 1, new[] { 2, 2, 2, 2 }, 1, 1 },  // narrow, 4200 positions: past the direct limit, the GEMM path
        { 1, 6, 180, 180, 9, 5, 2, new[] { 2, 2, 2, 2 }, 1, 1 }, // 8100 positions from K = 150: blocks of output rows, threads take blocks
        { 2, 6, 181, 179, 9, 5, 2, new[] { 2, 1, 2, 3 }, 1, 1 }, // the same in a batch (each image's blocks on one thread), uneven sizes
        { 1, 3, 60, 61, 20, 7, 2, new[] { 3, 3, 2, 4 }, 1, 1 },  // stride-2 direct over parity planes (3 channels, 7x7): two threads split channel groups
        { 2, 4, 33, 31, 9, 3, 2, new[] { 0, 1, 1, 0 }, 1, 1 },   // stride-2 direct, batch 2, odd sizes, asymmetric padding
        { 1, 3, 5, 1, 8, 3, 2, new[] { 1, 0, 1, 2 }, 1, 1 },     // stride-2 direct on a 1-wide input, SAME_UPPER-style padding: a parity plane with no input column
    };

    [Theory]
    [MemberData(nameof(ConvCases))]
    public void PackedConvMatchesEagerConvWithBiasResidualAndRelu(int n, int c, int h, int w, int o, int k, int stride, int[] pad, int dil, int groups)
    {
        var gen = new Generator(7);
        var x = Tensor.Randn([n, c, h, w], DType.Float32, gen);
        var weight = Tensor.Randn([o, c / groups, k, k], DType.Float32, gen).Mul(0.2);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        // Reference: explicit zero padding (F.pad order: left, right, top, bottom), then the eager convolution.
        var reference = Reference(Functional.Pad(x, [pad[1], pad[3], pad[0], pad[2]]), weight, bias, (stride, stride), (0, 0), (dil, dil), groups);
        var residual = Tensor.Randn(reference.Shape, DType.Float32, gen);
        foreach (bool constant in new[] { false, true })   // packed here, or shared and packed on first use
        {
            var conv = new PackedConv2d(weight, bias, (stride, stride), (pad[0], pad[1], pad[2], pad[3]), (dil, dil), groups, FusedActivation.Relu, constantWeight: constant);
            Assert.Equal(reference.Shape, conv.OutputShape(x.Shape));
            Close(reference.Add(residual).Relu(), conv.Run(x, residual));
            Close(reference.Relu(), conv.Run(x));
            var y = Tensor.Full(reference.Shape, float.NaN);   // every element must be overwritten
            conv.Run(x, null, y, FusedActivation.None);
            Close(reference, y);
        }
    }

    [Fact]
    public void PackedConvReadsAStridedView()
    {
        var gen = new Generator(3);
        var x = Tensor.Randn([3, 2, 8, 8], DType.Float32, gen).Permute(1, 0, 2, 3);   // [2, 3, 8, 8], not contiguous
        var weight = Tensor.Randn([4, 3, 3, 3], DType.Float32, gen);
        var conv = new PackedConv2d(weight, null, (1, 1), (1, 1, 1, 1), (1, 1), 1, FusedActivation.None);
        Close(Reference(x, weight, null, (1, 1), (1, 1)), conv.Run(x));
    }

    [Fact]
    public void PackedConvRejectsBadShapes()
    {
        var conv = new PackedConv2d(Tensor.Randn(4, 3, 3, 3), null, (1, 1), (0, 0, 0, 0), (1, 1), 1, FusedActivation.None);
        Assert.Throws<ShapeMismatchException>(() => conv.Run(Tensor.Randn(1, 2, 8, 8)));
        Assert.Throws<ShapeMismatchException>(() => conv.Run(Tensor.Randn(1, 3, 2, 2)));
        Assert.Throws<ShapeMismatchException>(() => conv.Run(Tensor.Randn(1, 3, 8, 8), null, Tensor.Randn(1, 4, 5, 5)));
        Assert.Throws<ShapeMismatchException>(() => new PackedConv2d(Tensor.Randn(4, 3, 3), null, (1, 1), (0, 0, 0, 0), (1, 1), 1, FusedActivation.None));
        Assert.Throws<ShapeMismatchException>(() => new PackedConv2d(Tensor.Randn(4, 3, 3, 3), null, (1, 1), (0, 0, 0, 0), (1, 1), 3, FusedActivation.None));
        // A kernel wider than the input at stride 2: the span is negative (truncating division once gave one column).
        var wide = new PackedConv2d(Tensor.Randn(4, 3, 2, 2), null, (2, 2), (0, 0, 0, 0), (1, 1), 1, FusedActivation.None);
        Assert.Throws<ShapeMismatchException>(() => wide.Run(Tensor.Randn(1, 3, 1, 1)));
        Assert.Throws<ShapeMismatchException>(() => wide.Run(Tensor.Randn(1, 3, 4, 1)));
    }

    [Theory]
    [InlineData(3, 2, 1, 1, false, 12)]
    [InlineData(2, 2, 0, 1, false, 12)]
    [InlineData(2, 2, 0, 1, true, 11)]      // 2×2 stride 2 on narrow rows (fewer than 8 outputs): the scalar 2×2 pass, a cut window
    [InlineData(3, 1, 1, 2, false, 12)]
    [InlineData(3, 2, 1, 1, true, 12)]
    // Rows wide enough for the eight-output vector paths (strides 1 and 2) with a scalar tail, odd and even dilations.
    [InlineData(3, 2, 1, 1, false, 45)]
    [InlineData(3, 2, 1, 1, true, 46)]
    [InlineData(3, 2, 1, 2, false, 45)]
    [InlineData(2, 2, 0, 3, true, 45)]
    [InlineData(3, 1, 1, 1, false, 45)]
    [InlineData(5, 1, 2, 2, true, 45)]
    [InlineData(3, 3, 1, 1, true, 45)]
    [InlineData(1, 2, 0, 1, false, 45)]
    [InlineData(4, 2, 2, 1, false, 45)]    // four rows per window (the most the one-pass vertical max takes)
    [InlineData(4, 1, 1, 1, true, 46)]
    [InlineData(9, 2, 4, 1, false, 45)]    // nine rows: two folds of the running max into the next four
    public void MaxPoolMatchesEagerMaxPool(int k, int s, int p, int d, bool ceil, int width)
    {
        var x = Tensor.Randn([2, 3, 13, width], DType.Float32, new Generator(5));
        var data = x.ToArray<float>();
        data[width * 5 + 9] = float.NaN;        // plane 0, row 5: inside the vector part
        data[13 * width + width - 1] = float.NaN; // plane 1, last row, last column: the right edge
        x = Tensor.FromArray(data, x.Shape);
        var reference = Functional.MaxPool2d(x, (k, k), (s, s), (p, p), (d, d), ceil);
        var y = Tensor.Full(reference.Shape, 7f);
        InferencePool.MaxPool2d(x, y, (k, k), (s, s), (p, p), (d, d));
        var e = reference.ToArray<float>();
        var a = y.ToArray<float>();
        Assert.Contains(a, float.IsNaN);
        for (int i = 0; i < e.Length; i++)
            Assert.True(e[i].Equals(a[i]), $"element {i}: expected {e[i]}, got {a[i]}");   // Equals: NaN equals NaN
    }

    [Fact]
    public void MaxPoolWindowWithNoInputGivesNegativeInfinity()
    {
        // Padding 2 with a 1×1 window: the first output row and column look only at padding.
        var x = Tensor.Randn([1, 2, 5, 20], DType.Float32, new Generator(8));
        var y = Tensor.Full([1, 2, 3, 11], 7f);
        InferencePool.MaxPool2d(x, y, (1, 1), (2, 2), (2, 2), (1, 1));
        var a = y.ToArray<float>();
        var xs = x.ToArray<float>();
        for (int c = 0; c < 2; c++)
            for (int r = 0; r < 3; r++)
                for (int q = 0; q < 11; q++)
                {
                    int iy = 2 * r - 2, ix = 2 * q - 2;
                    float expected = iy < 0 || ix < 0 ? float.NegativeInfinity : xs[c * 100 + iy * 20 + ix];
                    Assert.Equal(expected, a[c * 33 + r * 11 + q]);
                }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MaxPool2x2MatchesEagerMaxPoolOnWideRowsWithNaN(bool ceil)
    {
        // Wide enough for the eight-window vector path; odd sizes leave a scalar tail (and, in ceil mode, a cut window).
        var x = Tensor.Randn([2, 3, 13, 41], DType.Float32, new Generator(6));
        var data = x.ToArray<float>();
        data[5] = float.NaN;           // plane 0, row 0, vector part
        data[41 * 2 + 39] = float.NaN; // plane 0, row 2, scalar tail
        x = Tensor.FromArray(data, 2, 3, 13, 41);
        var reference = Functional.MaxPool2d(x, (2, 2), (2, 2), (0, 0), (1, 1), ceil);
        var y = Tensor.Full(reference.Shape, 7f);
        InferencePool.MaxPool2d(x, y, (2, 2), (2, 2), (0, 0), (1, 1));
        var e = reference.ToArray<float>();
        var a = y.ToArray<float>();
        for (int i = 0; i < e.Length; i++)
            Assert.True(e[i].Equals(a[i]), $"element {i}: expected {e[i]}, got {a[i]}");   // Equals: NaN equals NaN
        Assert.True(float.IsNaN(a[2]) && float.IsNaN(a[ceil ? 21 + 19 : 20 + 19]));
    }

    /// <summary>End padding of 2 (ONNX pads [0, 0, 2, 2]) gives output rows and columns whose 2×2 windows hold no input
    /// position: -inf, on narrow and on wide rows, without reading the next plane (its values are all larger).</summary>
    [Theory]
    [InlineData(4, 4, 3, 3)]
    [InlineData(4, 20, 3, 11)]
    public void MaxPool2x2WindowsBelowTheInputGiveNegativeInfinity(int h, int w, int oh, int ow)
    {
        var data = new float[2 * h * w];
        for (int i = 0; i < data.Length; i++) data[i] = i < h * w ? i : 1000 + i;
        var x = Tensor.FromArray(data, 1, 2, h, w);
        var y = Tensor.Full([1, 2, oh, ow], 7f);
        InferencePool.MaxPool2d(x, y, (2, 2), (2, 2), (0, 0), (1, 1));
        var a = y.ToArray<float>();
        for (int c = 0; c < 2; c++)
            for (int r = 0; r < oh; r++)
                for (int q = 0; q < ow; q++)
                {
                    float expected = float.NegativeInfinity;
                    for (int i = 2 * r; i < Math.Min(2 * r + 2, h); i++)
                        for (int j = 2 * q; j < Math.Min(2 * q + 2, w); j++)
                            expected = Math.Max(expected, data[c * h * w + i * w + j]);
                    Assert.Equal(expected, a[(c * oh + r) * ow + q]);
                }
    }

    [Fact]
    public void MaxPoolPropagatesNaNAndAveragePoolAverages()
    {
        var data = Enumerable.Range(0, 16).Select(i => (float)i).ToArray();
        data[5] = float.NaN;
        var x = Tensor.FromArray(data, 1, 1, 4, 4);
        var y = Tensor.Zeros(1, 1, 2, 2);
        InferencePool.MaxPool2d(x, y, (2, 2), (2, 2), (0, 0), (1, 1));
        var v = y.ToArray<float>();
        Assert.True(float.IsNaN(v[0]));
        Assert.Equal(new float[] { 7, 13, 15 }, v[1..]);
        var avg = Tensor.Zeros(1, 1, 1, 1);
        InferencePool.GlobalAveragePool2d(Tensor.FromArray(new float[] { 1, 2, 3, 6 }, 1, 1, 2, 2), avg);
        Assert.Equal(3f, avg.ToArray<float>()[0]);
    }

    /// <summary>Global average pooling of every plane of a batch, from a contiguous input and from a strided view of the
    /// same values, against the mean in float64.</summary>
    [Fact]
    public void GlobalAveragePoolAveragesEveryPlane()
    {
        var x = Tensor.Randn([3, 5, 7, 9], DType.Float32, new Generator(8));
        var v = x.ToArray<float>();
        var want = new double[15];
        for (int p = 0; p < 15; p++)
            want[p] = Enumerable.Range(0, 63).Average(i => (double)v[p * 63 + i]);
        // The same values through a view: [3, 5, 9, 7] transposed back to [3, 5, 7, 9] in its last two dims.
        var strided = x.Transpose(2, 3).Contiguous().Transpose(2, 3);
        Assert.False(strided.IsContiguous);
        foreach (var input in new[] { x, strided })
        {
            var y = Tensor.Zeros(3, 5, 1, 1);
            InferencePool.GlobalAveragePool2d(input, y);
            var got = y.ToArray<float>();
            for (int p = 0; p < 15; p++) Assert.True(Math.Abs(got[p] - want[p]) <= 1e-6, $"plane {p}: {got[p]} vs {want[p]}");
        }
    }

    static NodeAttribute Ints(string name, params long[] v) => new() { Name = name, Kind = AttributeKind.Ints, Ints = v };
    static NodeAttribute Float(string name, double v) => new() { Name = name, Kind = AttributeKind.Float, Float = v };

    /// <summary>
    /// A small residual block: y = Relu(BN2(Conv2(Relu(BN1(Conv1(x))))) + Conv3(x) + b3), plus a side output that
    /// reshapes the first activation (a view that must keep its buffer alive), and a MaxPool and GlobalAveragePool.
    /// </summary>
    static Graph.Graph Block(bool weightsAreInputs)
    {
        var gen = new Generator(11);
        Tensor R(params int[] s) => Tensor.Randn(s, DType.Float32, gen);
        Tensor Pos(int n) => Tensor.Rand([n], DType.Float32, gen).Add(0.5);
        var init = new Dictionary<string, Tensor>
        {
            ["w1"] = R(8, 3, 3, 3).Mul(0.3), ["w2"] = R(8, 8, 3, 3).Mul(0.2), ["w3"] = R(8, 3, 1, 1), ["b3"] = R(8, 1, 1),
            ["g1"] = Pos(8), ["be1"] = R(8), ["m1"] = R(8), ["v1"] = Pos(8),
            ["g2"] = Pos(8), ["be2"] = R(8), ["m2"] = R(8), ["v2"] = Pos(8),
            ["shape"] = Tensor.FromArray(new long[] { 2, -1 }),
        };
        var inputs = new List<ValueInfo> { new("x", DType.Float32, [SymbolicDim.Symbol("N"), SymbolicDim.Fixed(3), SymbolicDim.Symbol("H"), SymbolicDim.Symbol("W")]) };
        if (weightsAreInputs) inputs.AddRange(init.Keys.Select(k => new ValueInfo(k, init[k].DType, null)));
        return new Graph.Graph
        {
            Name = "block",
            Opsets = new() { [""] = 13 },
            Inputs = inputs,
            Outputs = [new ValueInfo("pooled", DType.Float32, null), new ValueInfo("side", DType.Float32, null), new ValueInfo("avg", DType.Float32, null)],
            Initializers = init,
            Nodes =
            [
                new Node { OpType = "Conv", Name = "c1", Inputs = ["x", "w1"], Outputs = ["c1"], Attributes = new() { ["pads"] = Ints("pads", 1, 1, 1, 1) } },
                new Node { OpType = "BatchNormalization", Inputs = ["c1", "g1", "be1", "m1", "v1"], Outputs = ["bn1"], Attributes = new() { ["epsilon"] = Float("epsilon", 1e-3) } },
                new Node { OpType = "Relu", Inputs = ["bn1"], Outputs = ["r1"] },
                new Node { OpType = "Reshape", Inputs = ["r1", "shape"], Outputs = ["flat"] },
                new Node { OpType = "Conv", Name = "c2", Inputs = ["r1", "w2"], Outputs = ["c2"], Attributes = new() { ["pads"] = Ints("pads", 1, 1, 1, 1) } },
                new Node { OpType = "BatchNormalization", Inputs = ["c2", "g2", "be2", "m2", "v2"], Outputs = ["bn2"] },
                new Node { OpType = "Conv", Name = "c3", Inputs = ["x", "w3"], Outputs = ["c3"] },
                new Node { OpType = "Add", Inputs = ["c3", "b3"], Outputs = ["c3b"] },
                new Node { OpType = "Add", Inputs = ["c3b", "bn2"], Outputs = ["sum"] },
                new Node { OpType = "Relu", Inputs = ["sum"], Outputs = ["y"] },
                new Node { OpType = "MaxPool", Inputs = ["y"], Outputs = ["pooled"], Attributes = new() { ["kernel_shape"] = Ints("kernel_shape", 3, 3), ["strides"] = Ints("strides", 2, 2), ["pads"] = Ints("pads", 1, 1, 1, 1) } },
                new Node { OpType = "Exp", Inputs = ["flat"], Outputs = ["side"] },
                new Node { OpType = "GlobalAveragePool", Inputs = ["y"], Outputs = ["avg"] },
            ],
        };
    }

    [Fact]
    public void FusionFoldsBatchNormBiasResidualAndReluAndKeepsTheResult()
    {
        var x = Tensor.Randn([2, 3, 10, 10], DType.Float32, new Generator(2));
        var reference = new GraphExecutor(Block(false), OnnxOps.Resolver) { ReuseBuffers = false }.Run(x);
        var g = Block(false);
        var report = OnnxFusion.Apply(g, irVersion: 8);
        Assert.Equal(new FusionReport(FusedConvs: 3, FoldedBatchNorms: 2, FoldedBiasAdds: 1, FusedResidualAdds: 1, FusedRelus: 2), report);
        Assert.Equal(3, g.Nodes.Count(n => n.OpType == "FusedConv"));
        Assert.DoesNotContain(g.Nodes, n => n.OpType is "BatchNormalization" or "Conv" or "Relu");
        Assert.DoesNotContain("m1", g.Initializers.Keys);     // statistics only the folded BatchNorm read are gone
        var fused = new GraphExecutor(g, OnnxOps.Resolver).Run(x);
        for (int i = 0; i < reference.Length; i++) Close(reference[i], fused[i]);
    }

    /// <summary>Two convolutions read one weight, each followed by its own BatchNorm: folding at load scales a weight only
    /// its convolution reads in place, so a shared one must be copied, or the second fold would scale the first's result.
    /// A third convolution owns its weight, which is folded in its own array at load, and copied by the public Apply.</summary>
    [Fact]
    public void FoldingLeavesAWeightTwoConvolutionsShareIntact()
    {
        Graph.Graph Build()
        {
            var gen = new Generator(21);
            Tensor R(params int[] s) => Tensor.Randn(s, DType.Float32, gen);
            Tensor P(int n) => Tensor.Rand([n], DType.Float32, gen).Add(0.5);
            var init = new Dictionary<string, Tensor>
            {
                ["w"] = R(4, 3, 3, 3), ["w3"] = R(4, 3, 3, 3),
                ["g1"] = P(4), ["b1"] = R(4), ["m1"] = R(4), ["v1"] = P(4),
                ["g2"] = P(4), ["b2"] = R(4), ["m2"] = R(4), ["v2"] = P(4),
            };
            var pads = Ints("pads", 1, 1, 1, 1);
            return new Graph.Graph
            {
                Name = "shared",
                Opsets = new() { [""] = 13 },
                Inputs = [new ValueInfo("x", DType.Float32, null)],
                Outputs = [new ValueInfo("y1", DType.Float32, null), new ValueInfo("y2", DType.Float32, null), new ValueInfo("y3", DType.Float32, null)],
                Initializers = init,
                Nodes =
                [
                    new Node { OpType = "Conv", Name = "c1", Inputs = ["x", "w"], Outputs = ["c1"], Attributes = new() { ["pads"] = pads } },
                    new Node { OpType = "BatchNormalization", Inputs = ["c1", "g1", "b1", "m1", "v1"], Outputs = ["y1"] },
                    new Node { OpType = "Conv", Name = "c2", Inputs = ["x", "w"], Outputs = ["c2"], Attributes = new() { ["pads"] = pads } },
                    new Node { OpType = "BatchNormalization", Inputs = ["c2", "g2", "b2", "m2", "v2"], Outputs = ["y2"] },
                    new Node { OpType = "Conv", Name = "c3", Inputs = ["x", "w3"], Outputs = ["c3"], Attributes = new() { ["pads"] = pads } },
                    new Node { OpType = "BatchNormalization", Inputs = ["c3", "g1", "b1", "m1", "v1"], Outputs = ["y3"] },
                ],
            };
        }
        var x = Tensor.Randn([1, 3, 8, 8], DType.Float32, new Generator(5));
        var reference = new GraphExecutor(Build(), OnnxOps.Resolver) { ReuseBuffers = false }.Run(x);
        var g = Build();
        var ownArray = g.Initializers["w3"].Storage.Data;
        Assert.Equal(3, OnnxFusion.Apply(g, irVersion: 8, foldInPlace: true).FoldedBatchNorms);   // as OnnxModel.Load does
        Assert.Contains(g.Initializers.Values, t => ReferenceEquals(t.Storage.Data, ownArray));   // folded in place
        var fused = new GraphExecutor(g, OnnxOps.Resolver).Run(x);
        for (int i = 0; i < reference.Length; i++) Close(reference[i], fused[i]);
        // The public Apply writes into no initializer: a caller's weights, or another graph sharing them, keep their values.
        var g2 = Build();
        var (w, w3) = (g2.Initializers["w"], g2.Initializers["w3"]);
        var (wBefore, w3Before) = (w.ToArray<float>(), w3.ToArray<float>());
        Assert.Equal(3, OnnxFusion.Apply(g2, irVersion: 8).FoldedBatchNorms);
        Assert.Equal(wBefore, w.ToArray<float>());
        Assert.Equal(w3Before, w3.ToArray<float>());
        fused = new GraphExecutor(g2, OnnxOps.Resolver).Run(x);
        for (int i = 0; i < reference.Length; i++) Close(reference[i], fused[i]);
    }

    /// <summary>A fused convolution reads its weight as a constant, building its layouts from the tensor's own array; an
    /// in-place write to the weight or the bias between runs (which bumps its storage version) makes the node prepare it
    /// again, so the next run computes with the new values, on the path that builds its layout lazily (Winograd) and on
    /// the direct one; a run with no write in between keeps what was prepared.</summary>
    [Theory]
    [InlineData(64)]
    [InlineData(3)]
    public void AFusedConvolutionFollowsAnInPlaceWriteToItsWeightOrBias(int channels)
    {
        var gen = new Generator(41);
        var g = WeightAndBias("Conv", Tensor.Randn([40, channels, 3, 3], DType.Float32, gen).Mul(0.1), Tensor.Randn([40], DType.Float32, gen),
            Ints("pads", 1, 1, 1, 1));
        Assert.Equal(1, OnnxFusion.Apply(g, irVersion: 8).FusedConvs);
        var node = g.Nodes.Single(n => n.OpType == "FusedConv");
        var x = Tensor.Randn([1, channels, 14, 14], DType.Float32, gen);
        var executor = new GraphExecutor(g, OnnxOps.Resolver);
        var (w, b) = (g.Initializers["w"], g.Initializers["b"]);
        Close(Reference(x, w, b, (1, 1), (1, 1)), executor.Run(x)[0]);
        var prepared = Nabla.Interop.Onnx.Ops.FusedOps.Prepared(node);
        Assert.NotNull(prepared);
        Close(Reference(x, w, b, (1, 1), (1, 1)), executor.Run(x)[0]);
        Assert.Same(prepared, Nabla.Interop.Onnx.Ops.FusedOps.Prepared(node));
        w.Mul_(-2);
        Close(Reference(x, w, b, (1, 1), (1, 1)), executor.Run(x)[0]);
        Assert.NotSame(prepared, Nabla.Interop.Onnx.Ops.FusedOps.Prepared(node));
        b.Add_(Tensor.Full([40], 3f));
        Close(Reference(x, w, b, (1, 1), (1, 1)), executor.Run(x)[0]);
    }

    /// <summary>One node <paramref name="op"/>(x, w, b) → y with the weight and bias as initializers.</summary>
    static Graph.Graph WeightAndBias(string op, Tensor w, Tensor b, NodeAttribute attribute) => new()
    {
        Name = op,
        Opsets = new() { [""] = 13 },
        Inputs = [new ValueInfo("x", DType.Float32, null)],
        Outputs = [new ValueInfo("y", DType.Float32, null)],
        Initializers = new() { ["w"] = w, ["b"] = b },
        Nodes = [new Node { OpType = op, Name = "n", Inputs = ["x", "w", "b"], Outputs = ["y"], Attributes = new() { [attribute.Name] = attribute } }],
    };

    /// <summary>The same for a fused linear layer (ONNX Gemm with transB): its packed weight follows in-place writes to
    /// the weight and the bias, and stays put across runs without one.</summary>
    [Fact]
    public void AFusedGemmFollowsAnInPlaceWriteToItsWeightOrBias()
    {
        var gen = new Generator(43);
        var g = WeightAndBias("Gemm", Tensor.Randn([12, 20], DType.Float32, gen), Tensor.Randn([12], DType.Float32, gen),
            new NodeAttribute { Name = "transB", Kind = AttributeKind.Int, Int = 1 });
        OnnxFusion.Apply(g, irVersion: 8);
        var node = g.Nodes.Single(n => n.OpType == "FusedGemm");
        var a = Tensor.Randn([5, 20], DType.Float32, gen);
        var executor = new GraphExecutor(g, OnnxOps.Resolver);
        var (w, b) = (g.Initializers["w"], g.Initializers["b"]);
        Tensor Expected() => a.To(DType.Float64).Matmul(w.To(DType.Float64).T).Add(b.To(DType.Float64)).To(DType.Float32);
        Close(Expected(), executor.Run(a)[0]);
        var prepared = Nabla.Interop.Onnx.Ops.FusedOps.Prepared(node);
        Assert.NotNull(prepared);
        executor.Run(a);
        Assert.Same(prepared, Nabla.Interop.Onnx.Ops.FusedOps.Prepared(node));
        w.Mul_(0.5);
        Close(Expected(), executor.Run(a)[0]);
        b.Mul_(-1);
        Close(Expected(), executor.Run(a)[0]);
    }

    /// <summary>Folding at load writes into a weight's own array only when nothing else can see it: a weight that is also a
    /// graph output, also a graph input (IR version 3, where inputs list every initializer), or also read by another node
    /// keeps its values, and the fused graph still computes the unfused one's results.</summary>
    [Theory]
    [InlineData("output", 8L)]
    [InlineData("input", 3L)]
    [InlineData("shared", 8L)]
    public void FoldingAtLoadLeavesAVisibleWeightIntact(string how, long irVersion)
    {
        Graph.Graph Build()
        {
            var gen = new Generator(31);
            Tensor P(int n) => Tensor.Rand([n], DType.Float32, gen).Add(0.5);
            var init = new Dictionary<string, Tensor>
            {
                ["w"] = Tensor.Randn([4, 3, 3, 3], DType.Float32, gen),
                ["g"] = P(4), ["b"] = Tensor.Randn([4], DType.Float32, gen), ["m"] = Tensor.Randn([4], DType.Float32, gen), ["v"] = P(4),
            };
            var nodes = new List<Node>
            {
                new() { OpType = "Conv", Name = "c", Inputs = ["x", "w"], Outputs = ["c"], Attributes = new() { ["pads"] = Ints("pads", 1, 1, 1, 1) } },
                new() { OpType = "BatchNormalization", Inputs = ["c", "g", "b", "m", "v"], Outputs = ["y"] },
            };
            var outputs = new List<ValueInfo> { new("y", DType.Float32, null) };
            var inputs = new List<ValueInfo> { new("x", DType.Float32, null) };
            if (how == "output") outputs.Add(new ValueInfo("w", DType.Float32, null));
            if (how == "input") inputs.Add(new ValueInfo("w", DType.Float32, null));
            if (how == "shared")
            {
                nodes.Add(new Node { OpType = "Identity", Inputs = ["w"], Outputs = ["w_seen"] });
                outputs.Add(new ValueInfo("w_seen", DType.Float32, null));
            }
            return new Graph.Graph { Name = how, Opsets = new() { [""] = 13 }, Inputs = inputs, Outputs = outputs, Initializers = init, Nodes = nodes };
        }
        var x = Tensor.Randn([1, 3, 6, 6], DType.Float32, new Generator(6));
        var reference = new GraphExecutor(Build(), OnnxOps.Resolver) { ReuseBuffers = false }.Run(x);
        var g = Build();
        var w = g.Initializers["w"];
        var before = w.ToArray<float>();
        Assert.Equal(1, OnnxFusion.Apply(g, irVersion, foldInPlace: true).FoldedBatchNorms);
        Assert.Equal(before, w.ToArray<float>());
        var fused = new GraphExecutor(g, OnnxOps.Resolver).Run(x);
        Assert.Equal(reference.Length, fused.Length);
        for (int i = 0; i < reference.Length; i++) Close(reference[i], fused[i]);
    }

    /// <summary>
    /// Three convolutions, each read by a MaxPool: 7×7 stride 2 + BatchNorm + Relu + 3×3 stride-2 pool (ResNet's stem), 3×3
    /// with a bias + 2×2 pool in ceil mode, and a dilated 3×3 + Relu + stride-1 pool. With <paramref name="readBeforePool"/>
    /// each pool's input is also a graph output, so no pool may join its convolution.
    /// </summary>
    static Graph.Graph PoolChains(bool readBeforePool)
    {
        var gen = new Generator(12);
        Tensor R(params int[] s) => Tensor.Randn(s, DType.Float32, gen);
        var init = new Dictionary<string, Tensor>
        {
            ["w1"] = R(8, 3, 7, 7).Mul(0.2), ["g1"] = Tensor.Rand([8], DType.Float32, gen).Add(0.5), ["be1"] = R(8), ["m1"] = R(8),
            ["v1"] = Tensor.Rand([8], DType.Float32, gen).Add(0.5), ["w2"] = R(6, 3, 3, 3), ["b2"] = R(6), ["w3"] = R(5, 3, 3, 3),
        };
        NodeAttribute Int(string name, long v) => new() { Name = name, Kind = AttributeKind.Int, Int = v };
        var outputs = new List<ValueInfo> { new("p1", DType.Float32, null), new("p2", DType.Float32, null), new("p3", DType.Float32, null) };
        if (readBeforePool) outputs.AddRange(new[] { "r1", "c2", "r3" }.Select(n => new ValueInfo(n, DType.Float32, null)));
        return new Graph.Graph
        {
            Name = "pools",
            Opsets = new() { [""] = 13 },
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = outputs,
            Initializers = init,
            Nodes =
            [
                new Node { OpType = "Conv", Name = "c1", Inputs = ["x", "w1"], Outputs = ["c1"], Attributes = new() { ["pads"] = Ints("pads", 3, 3, 3, 3), ["strides"] = Ints("strides", 2, 2) } },
                new Node { OpType = "BatchNormalization", Inputs = ["c1", "g1", "be1", "m1", "v1"], Outputs = ["bn1"] },
                new Node { OpType = "Relu", Inputs = ["bn1"], Outputs = ["r1"] },
                new Node { OpType = "MaxPool", Inputs = ["r1"], Outputs = ["p1"], Attributes = new() { ["kernel_shape"] = Ints("kernel_shape", 3, 3), ["strides"] = Ints("strides", 2, 2), ["pads"] = Ints("pads", 1, 1, 1, 1) } },
                new Node { OpType = "Conv", Name = "c2", Inputs = ["x", "w2", "b2"], Outputs = ["c2"], Attributes = new() { ["pads"] = Ints("pads", 1, 1, 1, 1) } },
                new Node { OpType = "MaxPool", Inputs = ["c2"], Outputs = ["p2"], Attributes = new() { ["kernel_shape"] = Ints("kernel_shape", 2, 2), ["strides"] = Ints("strides", 2, 2), ["ceil_mode"] = Int("ceil_mode", 1) } },
                new Node { OpType = "Conv", Name = "c3", Inputs = ["x", "w3"], Outputs = ["c3"], Attributes = new() { ["pads"] = Ints("pads", 2, 2, 2, 2), ["dilations"] = Ints("dilations", 2, 2) } },
                new Node { OpType = "Relu", Inputs = ["c3"], Outputs = ["r3"] },
                new Node { OpType = "MaxPool", Inputs = ["r3"], Outputs = ["p3", ""], Attributes = new() { ["kernel_shape"] = Ints("kernel_shape", 3, 2), ["pads"] = Ints("pads", 1, 0, 1, 1) } },
            ],
        };
    }

    /// <summary>A MaxPool that alone reads a fused convolution's result joins it when the convolution takes the direct
    /// AVX-512 kernel (<see cref="PackedConv2d.RunMaxPooled"/>; the dilated third one does not, nor anything on other CPUs):
    /// its outputs are bit for bit those of the fused convolution and the MaxPool node apart, and close to the unfused graph's.</summary>
    [Fact]
    public void MaxPoolJoinsTheConvolutionItReadsAndKeepsTheResult()
    {
        var x = Tensor.Randn([2, 3, 23, 17], DType.Float32, new Generator(4));
        var pooled = PoolChains(readBeforePool: false);
        var report = OnnxFusion.Apply(pooled, irVersion: 8);
        int joined = System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? 2 : 0;
        Assert.Equal(new FusionReport(FusedConvs: 3, FoldedBatchNorms: 1, FoldedBiasAdds: 0, FusedResidualAdds: 0, FusedRelus: 2, FusedMaxPools: joined), report);
        Assert.Equal(3 - joined, pooled.Nodes.Count(n => n.OpType == "MaxPool"));
        var apart = PoolChains(readBeforePool: true);
        Assert.Equal(0, OnnxFusion.Apply(apart, irVersion: 8).FusedMaxPools);
        Assert.Equal(3, apart.Nodes.Count(n => n.OpType == "MaxPool"));
        var reference = new GraphExecutor(PoolChains(false), OnnxOps.Resolver).Run(x);
        var got = new GraphExecutor(pooled, OnnxOps.Resolver).Run(x);
        var want = new GraphExecutor(apart, OnnxOps.Resolver).Run(x);
        Assert.Equal([2, 8, 6, 5], got[0].Shape);
        Assert.Equal([2, 6, 12, 9], got[1].Shape);    // ceil mode: 23 → 12, 17 → 9
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(want[i].ToArray<float>(), got[i].ToArray<float>());
            Close(reference[i], got[i]);
        }
    }

    /// <summary>A pool window that does not fit the convolution's output fails naming the node, fused or not.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PoolRejectsAWindowLargerThanItsInput(bool fuse)
    {
        var g = new Graph.Graph
        {
            Name = "big-window",
            Opsets = new() { [""] = 13 },
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = [new ValueInfo("p", DType.Float32, null)],
            Initializers = new() { ["w"] = Tensor.Ones(4, 3, 1, 1) },
            Nodes =
            [
                new Node { OpType = "Conv", Name = "c", Inputs = ["x", "w"], Outputs = ["c"] },
                new Node { OpType = "MaxPool", Name = "pool", Inputs = ["c"], Outputs = ["p"], Attributes = new() { ["kernel_shape"] = Ints("kernel_shape", 3, 3) } },
            ],
        };
        if (fuse) Assert.Equal(System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? 1 : 0, OnnxFusion.Apply(g, irVersion: 8).FusedMaxPools);
        var e = Assert.Throws<ModelFormatException>(() => new GraphExecutor(g, OnnxOps.Resolver).Run(Tensor.Ones(1, 3, 2, 2)));
        Assert.Contains("does not fit", e.Message);
        Assert.Contains(fuse && System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? "'c'" : "'pool'", e.Message);
    }

    /// <summary>A MaxPool with a named Indices output, or with auto_pad, stays a node of its own.</summary>
    [Theory]
    [InlineData("indices")]
    [InlineData("same")]
    public void MaxPoolWithIndicesOrAutoPadStaysApart(string variant)
    {
        var attrs = new Dictionary<string, NodeAttribute> { ["kernel_shape"] = Ints("kernel_shape", 2, 2), ["strides"] = Ints("strides", 2, 2) };
        if (variant == "same") attrs["auto_pad"] = new NodeAttribute { Name = "auto_pad", Kind = AttributeKind.String, String = "SAME_UPPER" };
        var g = new Graph.Graph
        {
            Name = "apart",
            Opsets = new() { [""] = 13 },
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = [new ValueInfo("p", DType.Float32, null)],
            Initializers = new() { ["w"] = Tensor.Randn([8, 3, 3, 3], DType.Float32, new Generator(2)) },
            Nodes =
            [
                new Node { OpType = "Conv", Name = "c", Inputs = ["x", "w"], Outputs = ["c"], Attributes = new() { ["pads"] = Ints("pads", 1, 1, 1, 1) } },
                new Node { OpType = "MaxPool", Name = "pool", Inputs = ["c"], Outputs = variant == "indices" ? ["p", "idx"] : ["p"], Attributes = attrs },
            ],
        };
        var report = OnnxFusion.Apply(g, irVersion: 8);
        Assert.Equal(1, report.FusedConvs);
        Assert.Equal(0, report.FusedMaxPools);
        Assert.Single(g.Nodes, n => n.OpType == "MaxPool");
    }

    /// <summary>A value that something else also reads (another node, or the caller as a graph output) must keep its
    /// value: a Relu or BatchNormalization after it stays a node of its own.</summary>
    [Fact]
    public void FusionLeavesAValueWithASecondReaderAlone()
    {
        var gen = new Generator(21);
        Tensor R(params int[] sh) => Tensor.Randn(sh, DType.Float32, gen);
        var weights = new Dictionary<string, Tensor>
        {
            ["w"] = R(4, 3, 3, 3).Mul(0.3), ["g"] = Tensor.Rand([4], DType.Float32, gen).Add(0.5), ["be"] = R(4), ["m"] = R(4),
            ["v"] = Tensor.Rand([4], DType.Float32, gen).Add(0.5),
        };
        Graph.Graph Make(bool secondReader, bool convIsOutput)
        {
            // A copy per graph: fusion edits a graph's initializers.
            var init = weights.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
            var outputs = new List<ValueInfo> { new("r", DType.Float32, null) };
            if (secondReader) outputs.Add(new ValueInfo("e", DType.Float32, null));
            if (convIsOutput) outputs.Add(new ValueInfo("c", DType.Float32, null));
            var nodes = new List<Node>
            {
                new() { OpType = "Conv", Name = "conv", Inputs = ["x", "w"], Outputs = ["c"], Attributes = new() { ["pads"] = Ints("pads", 1, 1, 1, 1) } },
            };
            // The second reader comes first, so that the BatchNormalization is the last node to read the convolution.
            if (secondReader) nodes.Add(new() { OpType = "Exp", Inputs = ["c"], Outputs = ["e"] });
            nodes.Add(new() { OpType = "BatchNormalization", Inputs = ["c", "g", "be", "m", "v"], Outputs = ["b"] });
            nodes.Add(new() { OpType = "Relu", Inputs = ["b"], Outputs = ["r"] });
            return new Graph.Graph
            {
                Name = "second-reader",
                Opsets = new() { [""] = 13 },
                Inputs = [new ValueInfo("x", DType.Float32, [SymbolicDim.Fixed(1), SymbolicDim.Fixed(3), SymbolicDim.Fixed(9), SymbolicDim.Fixed(9)])],
                Outputs = outputs,
                Initializers = init,
                Nodes = nodes,
            };
        }
        var x = R(1, 3, 9, 9);
        foreach (var (secondReader, convIsOutput) in new[] { (true, false), (false, true) })
        {
            var reference = new GraphExecutor(Make(secondReader, convIsOutput), OnnxOps.Resolver) { ReuseBuffers = false }.Run(x);
            var g = Make(secondReader, convIsOutput);
            var report = OnnxFusion.Apply(g, irVersion: 8);
            Assert.Equal(0, report.FoldedBatchNorms);
            Assert.Equal(0, report.FusedRelus);
            Assert.Contains(g.Nodes, n => n.OpType == "BatchNormalization");
            Assert.Contains(g.Nodes, n => n.OpType == "Relu");
            var fused = new GraphExecutor(g, OnnxOps.Resolver).Run(x);
            Assert.Equal(reference.Length, fused.Length);
            for (int i = 0; i < reference.Length; i++) Close(reference[i], fused[i]);
        }
    }

    [Fact]
    public void OverridableWeightsAreNotFoldedFromIrVersion4()
    {
        var g = Block(weightsAreInputs: true);
        var report = OnnxFusion.Apply(g, irVersion: 7);
        Assert.Equal(0, report.FusedConvs);
        var old = Block(weightsAreInputs: true);
        Assert.Equal(3, OnnxFusion.Apply(old, irVersion: 3).FusedConvs);   // before IR 4 every initializer was listed
    }

    [Fact]
    public void BufferReuseKeepsOutputsAndViewsIntactAndAllocatesLess()
    {
        var g = Block(false);
        OnnxFusion.Apply(g, irVersion: 8);
        var x = Tensor.Randn([2, 3, 32, 32], DType.Float32, new Generator(4));
        var plain = new GraphExecutor(g, OnnxOps.Resolver) { ReuseBuffers = false };
        var pooled = new GraphExecutor(g, OnnxOps.Resolver);
        var expected = plain.Run(x).Select(t => t.ToArray<float>()).ToArray();
        var first = pooled.Run(x);
        var firstCopy = first.Select(t => t.ToArray<float>()).ToArray();
        for (int r = 0; r < 3; r++)
        {
            var again = pooled.Run(Tensor.Randn([2, 3, 32, 32], DType.Float32, new Generator((ulong)(100 + r))));   // different data through the same buffers
            Assert.Equal(3, again.Length);
        }
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i], firstCopy[i]);
            Assert.Equal(firstCopy[i], first[i].ToArray<float>());   // outputs of an earlier run are never reused
        }

        long Allocated(GraphExecutor e)
        {
            e.Run(x);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 5; i++) e.Run(x);
            return (GC.GetAllocatedBytesForCurrentThread() - before) / 5;
        }
        long withReuse = Allocated(pooled), without = Allocated(plain);
        // The three fused convolutions' [2, 8, 32, 32] outputs (64 KiB each) come from the pool; what remains is the
        // graph outputs, the Exp side branch and bookkeeping (under 1 KiB more with the pool).
        Assert.True(without - withReuse >= 3 * 65536 - 1024, $"with reuse {withReuse} B per run, without {without} B");
    }

    /// <summary>A run's outputs are new buffers, not the memory plan's: disposed, a large one goes back to StorageCache
    /// and the next run's output takes it; kept, it is never written by a later run. Also through a fused MatMul + Add on
    /// a 3-D input, whose kernel works on 2-D views of the output.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DisposedLargeOutputsServeTheNextRun(bool matmul3d)
    {
        // [3, 7121] or [1, 3, 7123] floats, over 85,000 bytes, lengths no other test here allocates (StorageCache is process-wide).
        int n = matmul3d ? 7123 : 7121;
        var transB = new NodeAttribute { Name = "transB", Kind = AttributeKind.Int, Int = 1 };
        var g = new Graph.Graph
        {
            Name = "linear",
            Opsets = new() { [""] = 13 },
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = [new ValueInfo("y", DType.Float32, null)],
            Initializers = new()
            {
                ["w"] = matmul3d ? Tensor.Randn([16, n], DType.Float32, new Generator(7)) : Tensor.Randn([n, 16], DType.Float32, new Generator(7)),
                ["b"] = Tensor.Randn([n], DType.Float32, new Generator(8)),
            },
            Nodes = matmul3d
                ? [new Node { OpType = "MatMul", Inputs = ["x", "w"], Outputs = ["p"] }, new Node { OpType = "Add", Inputs = ["p", "b"], Outputs = ["y"] }]
                : [new Node { OpType = "Gemm", Inputs = ["x", "w", "b"], Outputs = ["y"], Attributes = new() { ["transB"] = transB } }],
        };
        int[] xShape = matmul3d ? [1, 3, 16] : [3, 16];
        var plainGraph = new Graph.Graph { Name = g.Name, Opsets = g.Opsets, Inputs = g.Inputs, Outputs = g.Outputs, Initializers = g.Initializers, Nodes = [.. g.Nodes] };
        Assert.Equal(1, OnnxFusion.Apply(g, irVersion: 8).FusedGemms);
        var executor = new GraphExecutor(g, OnnxOps.Resolver);
        var plain = new GraphExecutor(plainGraph, OnnxOps.Resolver) { ReuseBuffers = false };
        var x1 = Tensor.Randn(xShape, DType.Float32, new Generator(9));
        var x2 = Tensor.Randn(xShape, DType.Float32, new Generator(10));
        float[] expected1 = plain.Run(x1)[0].ToArray<float>(), expected2 = plain.Run(x2)[0].ToArray<float>();

        var y1 = executor.Run(x1)[0];
        Assert.Equal(expected1, y1.ToArray<float>());
        var array = y1.Storage.Data;
        y1.Dispose();
        var y2 = executor.Run(x2)[0];
        Assert.Same(array, y2.Storage.Data);   // the disposed output's array, through StorageCache
        Assert.Equal(expected2, y2.ToArray<float>());

        // Kept outputs stay as they were while later runs go on.
        var y3 = executor.Run(x1)[0];
        Assert.NotSame(y2.Storage.Data, y3.Storage.Data);
        Assert.Equal(expected2, y2.ToArray<float>());
        Assert.Equal(expected1, y3.ToArray<float>());

        // Steady state with disposal: a run allocates far less than its 85 KB output.
        y2.Dispose();
        y3.Dispose();
        executor.Run(x1)[0].Dispose();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 5; i++) executor.Run(x1)[0].Dispose();
        long perRun = (GC.GetAllocatedBytesForCurrentThread() - before) / 5;
        Assert.True(perRun < 16_384, $"a run with its output disposed allocated {perRun} bytes");
    }

    [Fact]
    public void ConcurrentRunsOfOneExecutorAgree()
    {
        var g = Block(false);
        OnnxFusion.Apply(g, irVersion: 8);
        var executor = new GraphExecutor(g, OnnxOps.Resolver);
        var inputs = Enumerable.Range(0, 8).Select(i => Tensor.Randn([2, 3, 10, 10], DType.Float32, new Generator((ulong)(50 + i)))).ToArray();
        var expected = inputs.Select(t => new GraphExecutor(g, OnnxOps.Resolver) { ReuseBuffers = false }.Run(t)[0].ToArray<float>()).ToArray();
        Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 4 }, j =>
        {
            int i = j % inputs.Length;
            var y = executor.Run(inputs[i])[0].ToArray<float>();
            Assert.Equal(expected[i], y);
        });
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(70)]
    public void GemmFusionMatchesTheUnfusedGraph(int batch)
    {
        var gen = new Generator(21);
        Graph.Graph Mlp() => new()
        {
            Name = "mlp",
            Opsets = new() { [""] = 13 },
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = [new ValueInfo("y", DType.Float32, null)],
            Initializers = new()
            {
                ["w1"] = Tensor.Randn([40, 300], DType.Float32, new Generator(1)), ["b1"] = Tensor.Randn([40], DType.Float32, new Generator(2)),
                ["w2"] = Tensor.Randn([40, 7], DType.Float32, new Generator(3)), ["b2"] = Tensor.Randn([1, 7], DType.Float32, new Generator(4)),
            },
            Nodes =
            [
                new Node { OpType = "Gemm", Inputs = ["x", "w1", "b1"], Outputs = ["h"], Attributes = new() { ["transB"] = new NodeAttribute { Name = "transB", Kind = AttributeKind.Int, Int = 1 } } },
                new Node { OpType = "Relu", Inputs = ["h"], Outputs = ["r"] },
                new Node { OpType = "Gemm", Inputs = ["r", "w2", "b2"], Outputs = ["y"] },
            ],
        };
        var x = Tensor.Randn([batch, 300], DType.Float32, gen);
        var expected = new GraphExecutor(Mlp(), OnnxOps.Resolver).Run(x)[0];
        var g = Mlp();
        var report = OnnxFusion.Apply(g, irVersion: 8);
        Assert.Equal(2, report.FusedGemms);
        Assert.Equal(1, report.FusedRelus);
        Assert.Equal(2, g.Nodes.Count);
        Close(expected, new GraphExecutor(g, OnnxOps.Resolver).Run(x)[0]);
    }

    /// <summary>nn.Linear as PyTorch exports it for inputs of any rank: MatMul with a constant weight, Add of a constant
    /// bias, Relu. Fused into FusedGemm with the leading dimensions as rows; a bias that would change the output's rank,
    /// and a product with a second reader, are left alone.</summary>
    [Theory]
    [InlineData(new[] { 2, 5 })]
    [InlineData(new[] { 1 })]
    [InlineData(new int[0])]
    [InlineData(new[] { 3, 1, 70 })]
    [InlineData(new[] { 2, 0 })]
    public void MatMulWithAConstantWeightFusesWithItsBiasAndRelu(int[] lead)
    {
        Graph.Graph Linear() => new()
        {
            Name = "linear",
            Opsets = new() { [""] = 13 },
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = [new ValueInfo("y", DType.Float32, null), new ValueInfo("z", DType.Float32, null)],
            Initializers = new()
            {
                ["w1"] = Tensor.Randn([300, 40], DType.Float32, new Generator(1)), ["b1"] = Tensor.Randn([40], DType.Float32, new Generator(2)),
                ["w2"] = Tensor.Randn([40, 7], DType.Float32, new Generator(3)), ["b2"] = Tensor.Randn([1, 7], DType.Float32, new Generator(4)),
                ["w3"] = Tensor.Randn([40, 3], DType.Float32, new Generator(5)), ["b3"] = Tensor.Randn([3], DType.Float32, new Generator(6)),
            },
            Nodes =
            [
                new Node { OpType = "MatMul", Inputs = ["x", "w1"], Outputs = ["h"] },
                new Node { OpType = "Add", Inputs = ["b1", "h"], Outputs = ["hb"] },
                new Node { OpType = "Relu", Inputs = ["hb"], Outputs = ["r"] },
                new Node { OpType = "MatMul", Inputs = ["r", "w2"], Outputs = ["p"] },
                new Node { OpType = "Add", Inputs = ["p", "b2"], Outputs = ["y"] },          // [1, 7]: kept (could change the rank)
                new Node { OpType = "MatMul", Inputs = ["r", "w3"], Outputs = ["q"] },
                new Node { OpType = "Add", Inputs = ["q", "b3"], Outputs = ["q2"] },
                new Node { OpType = "Sub", Inputs = ["q2", "q"], Outputs = ["z"] },           // q has a second reader: its Add stays
            ],
        };
        var x = Tensor.Randn([.. lead, 300], DType.Float32, new Generator(9));
        var expected = new GraphExecutor(Linear(), OnnxOps.Resolver).Run(x);
        var g = Linear();
        var report = OnnxFusion.Apply(g, irVersion: 8);
        Assert.Equal(3, report.FusedGemms);
        Assert.Equal(1, report.FoldedBiasAdds);
        Assert.Equal(1, report.FusedRelus);
        Assert.Equal(["FusedGemm", "FusedGemm", "Add", "FusedGemm", "Add", "Sub"], g.Nodes.Select(n => n.OpType));
        var actual = new GraphExecutor(g, OnnxOps.Resolver).Run(x);
        Close(expected[0], actual[0]);
        Close(expected[1], actual[1]);
    }

    /// <summary>A MatMul with a Relu and no Add, and one whose product is also a graph output (its Add stays).</summary>
    [Fact]
    public void MatMulFusesWithARelu_AndLeavesAnAddOnAProductThatIsAnOutput()
    {
        Graph.Graph Two() => new()
        {
            Name = "two",
            Opsets = new() { [""] = 13 },
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = [new ValueInfo("r", DType.Float32, null), new ValueInfo("p", DType.Float32, null), new ValueInfo("y", DType.Float32, null)],
            Initializers = new()
            {
                ["w1"] = Tensor.Randn([20, 6], DType.Float32, new Generator(1)),
                ["w2"] = Tensor.Randn([20, 5], DType.Float32, new Generator(2)), ["b2"] = Tensor.Randn([5], DType.Float32, new Generator(3)),
            },
            Nodes =
            [
                new Node { OpType = "MatMul", Inputs = ["x", "w1"], Outputs = ["h"] },
                new Node { OpType = "Relu", Inputs = ["h"], Outputs = ["r"] },
                new Node { OpType = "MatMul", Inputs = ["x", "w2"], Outputs = ["p"] },
                new Node { OpType = "Add", Inputs = ["p", "b2"], Outputs = ["y"] },
            ],
        };
        var x = Tensor.Randn([4, 3, 20], DType.Float32, new Generator(9));
        var expected = new GraphExecutor(Two(), OnnxOps.Resolver).Run(x);
        var g = Two();
        var report = OnnxFusion.Apply(g, irVersion: 8);
        Assert.Equal((2, 0, 1), (report.FusedGemms, report.FoldedBiasAdds, report.FusedRelus));
        Assert.Equal(["FusedGemm", "FusedGemm", "Add"], g.Nodes.Select(n => n.OpType));
        var actual = new GraphExecutor(g, OnnxOps.Resolver).Run(x);
        for (int i = 0; i < 3; i++) Close(expected[i], actual[i]);
    }

    [Fact]
    public void FusedMatMulRejectsAnInputOfTheWrongWidth()
    {
        var g = new Graph.Graph
        {
            Name = "linear",
            Opsets = new() { [""] = 13 },
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = [new ValueInfo("y", DType.Float32, null)],
            Initializers = new() { ["w"] = Tensor.Randn([30, 4], DType.Float32, new Generator(1)) },
            Nodes = [new Node { OpType = "MatMul", Inputs = ["x", "w"], Outputs = ["y"] }],
        };
        Assert.Equal(1, OnnxFusion.Apply(g, irVersion: 8).FusedGemms);
        var e = Assert.ThrowsAny<NablaException>(() => new GraphExecutor(g, OnnxOps.Resolver).Run(Tensor.Zeros(2, 29)));
        Assert.Contains("last dimension is 30", e.ToString());
    }

    [Fact]
    public void Mnist8FusesItsConvolutionsAndGivesTheSameOutput()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "fixtures", "mnist-8", "model.onnx");
        var bytes = File.ReadAllBytes(path);
        var fused = OnnxModel.Load(bytes, null, "mnist-8", fuse: true);
        var plain = OnnxModel.Load(bytes, null, "mnist-8", fuse: false);
        Assert.Equal(2, fused.Graph.Nodes.Count(n => n.OpType == "FusedConv"));
        Assert.Equal(2, plain.Graph.Nodes.Count(n => n.OpType == "Conv"));
        var x = Tensor.Rand([1, 1, 28, 28], DType.Float32, new Generator(9));
        Close(plain.Run(x)[0], fused.Run(x)[0]);
    }

    [Fact]
    public void ResNet18FusesEveryConvolutionAndMatchesTheUnfusedGraph()
    {
        Assert.True(File.Exists(RealModelTests.ResNet18Path), $"{RealModelTests.ResNet18Path} is missing");
        var bytes = File.ReadAllBytes(RealModelTests.ResNet18Path);
        var fused = OnnxModel.Load(bytes, null, "ResNet18", fuse: true);
        var plain = OnnxModel.Load(bytes, null, "ResNet18", fuse: false);
        int convs = plain.Graph.Nodes.Count(n => n.OpType == "Conv");
        Assert.Equal(convs, fused.Graph.Nodes.Count(n => n.OpType == "FusedConv"));
        Assert.DoesNotContain(fused.Graph.Nodes, n => n.OpType is "BatchNormalization" or "Relu" or "Add");
        // With AVX-512 the max pool joins the first layer (its direct kernel pools band by band).
        Assert.Equal(System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? 0 : 1, fused.Graph.Nodes.Count(n => n.OpType == "MaxPool"));
        var x = Tensor.Randn([1, 3, 224, 224], DType.Float32, new Generator(8));
        Close(plain.Run(x)[0], fused.Run(x)[0], 1e-3);
    }

    /// <summary>
    /// Runs inside dispose scopes (an inference loop that recycles its tensors) give the same output run after run: the
    /// executor's own buffer pool must not lose buffers to the scope, and the input and output buffers are reused.
    /// </summary>
    [Fact]
    public void ResNet18RunsInsideDisposeScopesGiveTheSameOutput()
    {
        var bytes = File.ReadAllBytes(RealModelTests.ResNet18Path);
        var expected = OnnxModel.Load(bytes, null, "ResNet18").Run(Tensor.Randn([1, 3, 224, 224], DType.Float32, new Generator(8)))[0].ToArray<float>();
        // NOTE: a model of its own, whose buffers no run outside a scope ever wrapped.
        var model = OnnxModel.Load(bytes, null, "ResNet18");
        for (int i = 0; i < 3; i++)
        {
            using var scope = Tensor.NewDisposeScope();
            var x = Tensor.Randn([1, 3, 224, 224], DType.Float32, new Generator(8));
            Assert.Equal(expected, model.Run(x)[0].ToArray<float>());
            Assert.True(scope.Count >= 1, "the input should belong to the scope");
        }
    }
}
