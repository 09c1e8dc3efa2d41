using Nabla.Optim;
using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The training-side fast paths against their readable references: the in-register transposing pack of a
/// column-contiguous B in the GEMM, the weight gradient of x·Wᵀ computed in W's own layout, and the vectorized
/// SGD/Adam updates (lane by lane against the scalar loop, and against the tensor-op form of each algorithm).
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class TrainingFastPathTests
{
    static float[] RandomArray(Random rng, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }

    public static TheoryData<int, int, int> TransposedBSizes()
    {
        var data = new TheoryData<int, int, int>();
        // n around the 8-column transpose blocks and the 16/32-wide tiles, k around 8-row blocks and the KC = 256 panel.
        foreach (var n in new[] { 1, 7, 8, 9, 16, 24, 31, 32, 33, 40, 77 })
            foreach (var k in new[] { 1, 7, 8, 9, 63, 257 })
                data.Add(7, n, k);
        data.Add(64, 512, 784);
        return data;
    }

    [Theory, MemberData(nameof(TransposedBSizes))]
    public void SgemmWithColumnContiguousBMatchesReference(int m, int n, int k)
    {
        var rng = new Random(m * 1000 + n * 31 + k);
        var a = RandomArray(rng, m * k);
        // B[p, j] = bt[j * ldb + p]: B is the transpose of a row-major [n, ldb] matrix (ldb > k leaves a gap).
        int ldb = k + 3;
        var bt = RandomArray(rng, n * ldb);
        bool saved = Gemm.Use512;
        try
        {
            foreach (var use512 in System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? new[] { true, false } : new[] { false })
            {
                Gemm.Use512 = use512;
                foreach (var accumulate in new[] { false, true })
                {
                    var c0 = RandomArray(rng, m * n);
                    var fast = (float[])c0.Clone();
                    var reference = (float[])c0.Clone();
                    Gemm.Sgemm(m, n, k, a, 0, k, 1, bt, 0, 1, ldb, fast, 0, n, accumulate);
                    Gemm.Reference(m, n, k, a, 0, k, 1, bt, 0, 1, ldb, reference, 0, n, accumulate);
                    for (int i = 0; i < m * n; i++)
                    {
                        double tol = 2 * k * 6e-8 * (k + 1) + 1e-6;
                        Assert.True(Math.Abs(fast[i] - reference[i]) <= tol,
                            $"m={m} n={n} k={k} 512={use512} acc={accumulate}: C[{i / n},{i % n}] = {fast[i]}, reference {reference[i]}");
                    }
                }
            }
        }
        finally { Gemm.Use512 = saved; }
    }

    [Theory]
    [InlineData(new[] { 6, 5 }, 4, 3)]
    [InlineData(new[] { 2, 3, 5 }, 4, 3)]
    public void WeightGradientOfXTimesWTransposedIsContiguousAndCorrect(int[] xShape, int outF, int seed)
    {
        var gen = new Generator((ulong)seed);
        int inF = xShape[^1];
        var x = Tensor.Randn(xShape, DType.Float32, gen);
        var w = Tensor.Randn([outF, inF], DType.Float32, gen).RequiresGrad_();
        var v = Tensor.Randn([.. xShape[..^1], outF], DType.Float32, gen);
        x.Matmul(w.T).Mul(v).Sum().Backward();
        var fast = w.Grad!;
        Assert.True(fast.IsContiguous, "the weight gradient should be produced in the weight's own layout");

        // Reference: Σ over rows of vᵀ·x, written out element by element.
        var xa = x.Reshape(-1, inF).ToArray<float>();
        var va = v.Reshape(-1, outF).ToArray<float>();
        int rows = xa.Length / inF;
        var expected = new float[outF * inF];
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++)
            {
                double s = 0;
                for (int r = 0; r < rows; r++) s += va[r * outF + o] * xa[r * inF + i];
                expected[o * inF + i] = (float)s;
            }
        TensorAssert.Close("dW", Tensor.FromArray(expected, outF, inF), fast, 1e-5, 1e-5);
    }

    [Fact]
    public void WeightGradientThroughTransposeSupportsSecondOrder()
    {
        var gen = new Generator(11);
        GradCheck.CheckSecondOrder("x·Wᵀ", xs => xs[0].Matmul(xs[1].T), [GradCheck.Randn(gen, 3, 4), GradCheck.Randn(gen, 5, 4)], gen);
        GradCheck.Check("x·Wᵀ (3-D x)", xs => xs[0].Matmul(xs[1].T), [GradCheck.Randn(gen, 2, 3, 4), GradCheck.Randn(gen, 5, 4)], gen);
    }

    /// <summary>Runs <paramref name="steps"/> updates of one optimizer on the given parameters with fixed gradients.</summary>
    static void RunSteps(Optimizer opt, IReadOnlyList<Tensor> ps, IReadOnlyList<Tensor[]> grads, int steps)
    {
        for (int s = 0; s < steps; s++)
        {
            opt.ZeroGrad();
            for (int i = 0; i < ps.Count; i++) ps[i].Grad = grads[s][i];
            opt.Step();
        }
    }

    public static TheoryData<string> OptimizerNames() => new() { "sgd", "sgd_wd", "adam", "adam_wd", "adamw" };

    static Optimizer Make(string name, IEnumerable<Tensor> ps) => name switch
    {
        "sgd" => new SGD(ps, lr: 0.1),
        "sgd_wd" => new SGD(ps, lr: 0.1, weightDecay: 0.01),
        "adam" => new Adam(ps, lr: 0.01),
        "adam_wd" => new Adam(ps, lr: 0.01, weightDecay: 0.1),
        "adamw" => new AdamW(ps, lr: 0.01),
        _ => throw new ArgumentException(name),
    };

    [Theory, MemberData(nameof(OptimizerNames))]
    public void VectorizedUpdateEqualsScalarUpdateBitForBit(string name)
    {
        // One 1,003-element parameter takes the SIMD loop (and a 3-element tail); 1,003 one-element parameters
        // take the scalar loop. The same operations in the same order must give identical floats.
        const int n = 1003, steps = 4;
        var rng = new Random(5);
        var init = RandomArray(rng, n);
        var grads = Enumerable.Range(0, steps).Select(_ => RandomArray(rng, n)).ToArray();
        var big = Tensor.FromArray((float[])init.Clone(), n).RequiresGrad_();
        var smalls = init.Select(v => Tensor.FromArray(new[] { v }, 1).RequiresGrad_()).ToArray();
        RunSteps(Make(name, [big]), [big], grads.Select(g => new[] { Tensor.FromArray(g, n) }).ToArray(), steps);
        RunSteps(Make(name, smalls), smalls, grads.Select(g => g.Select(v => Tensor.FromArray(new[] { v }, 1)).ToArray()).ToArray(), steps);
        var b = big.ToArray<float>();
        for (int i = 0; i < n; i++)
            Assert.True(BitConverter.SingleToInt32Bits(b[i]) == BitConverter.SingleToInt32Bits(smalls[i].ToArray<float>()[0]),
                $"{name}: element {i}: vectorized {b[i]:R}, scalar {smalls[i].ToArray<float>()[0]:R}");
    }

    [Theory, MemberData(nameof(OptimizerNames))]
    public void FusedUpdateMatchesTensorOpForm(string name)
    {
        // A transposed (non-contiguous) leaf has no fused path, so it runs the readable tensor-op Update.
        const int rows = 37, cols = 29, steps = 4;
        var rng = new Random(9);
        var init = RandomArray(rng, rows * cols);
        var grads = Enumerable.Range(0, steps).Select(_ => RandomArray(rng, rows * cols)).ToArray();
        var fast = Tensor.FromArray((float[])init.Clone(), rows, cols).RequiresGrad_();
        var slow = Tensor.FromArray((float[])init.Clone(), rows, cols).T.Contiguous().T.Detach().RequiresGrad_();
        Assert.False(slow.IsContiguous);
        RunSteps(Make(name, [fast]), [fast], grads.Select(g => new[] { Tensor.FromArray(g, rows, cols) }).ToArray(), steps);
        RunSteps(Make(name, [slow]), [slow], grads.Select(g => new[] { Tensor.FromArray(g, rows, cols) }).ToArray(), steps);
        TensorAssert.Close(name, slow.Contiguous(), fast, 1e-5, 1e-6);
        Assert.NotEqual(init, fast.ToArray<float>());
    }

    [Theory]
    [InlineData(0.25)]
    [InlineData(0.5)]
    [InlineData(0.9)]
    public void Float32DropoutMaskIsTheSameStreamAsBernoulli(double p)
    {
        var x = Tensor.Randn([7, 13], DType.Float32, new Generator(3));
        var fast = Functional.Dropout(x, p, generator: new Generator(42));
        var reference = x.Mul(Tensor.Full([7, 13], 1 - p).Bernoulli(new Generator(42))).Div(1 - p);
        Assert.Equal(reference.ToArray<float>(), fast.ToArray<float>());
        int zeros = fast.ToArray<float>().Count(v => v == 0);
        Assert.InRange(zeros, 1, 7 * 13 - 1);
    }

    [Theory]
    [InlineData(28, 28)]
    [InlineData(6, 34)]
    [InlineData(4, 16)]
    [InlineData(5, 9)]
    public void MaxPool2x2MatchesFirstMaximumReference(int h, int w)
    {
        // Few distinct values (ties) and some NaNs, so the order in which a window's elements are compared shows.
        var rng = new Random(h * 100 + w);
        int n = 2, c = 3;
        var data = new float[n * c * h * w];
        for (int i = 0; i < data.Length; i++) data[i] = rng.Next(20) == 0 ? float.NaN : rng.Next(-3, 4);
        var x = Tensor.FromArray(data, n, c, h, w);
        var (vals, ids) = Functional.MaxPool2dWithIndices(x, (2, 2));
        int oh = h / 2, ow = w / 2;
        var v = vals.ToArray<float>();
        var id = ids.ToArray<long>();
        for (int plane = 0; plane < n * c; plane++)
            for (int y = 0; y < oh; y++)
                for (int xo = 0; xo < ow; xo++)
                {
                    float best = float.NaN;
                    int bi = -1;
                    foreach (var (dy, dx) in new[] { (0, 0), (0, 1), (1, 0), (1, 1) })
                    {
                        int flat = (2 * y + dy) * w + 2 * xo + dx;
                        float e = data[plane * h * w + flat];
                        if (bi < 0 || (!float.IsNaN(best) && (e > best || float.IsNaN(e)))) { best = e; bi = flat; }
                    }
                    int o = plane * oh * ow + y * ow + xo;
                    Assert.True(id[o] == bi, $"{h}x{w} plane {plane} ({y},{xo}): index {id[o]}, expected {bi}");
                    Assert.True(float.IsNaN(best) ? float.IsNaN(v[o]) : v[o] == best, $"{h}x{w} plane {plane} ({y},{xo}): value {v[o]}, expected {best}");
                }
    }

    [Fact]
    public void ElementwiseKernelsSplitAcrossThreadsMatchOneThread()
    {
        // Outputs above Cpu.ParallelElements are split across threads: broadcast + strided (odometer rows), flat
        // contiguous, scalar operand and unary maps must give exactly the single-threaded result.
        var gen = new Generator(21);
        var a = Tensor.Randn([64, 1, 80], DType.Float32, gen);
        var b = Tensor.Randn([32, 64, 80], DType.Float32, gen).Permute(1, 0, 2);
        var c = Tensor.Randn([Cpu.ParallelElements + 77], DType.Float32, gen);
        var d = Tensor.Randn([Cpu.ParallelElements + 77], DType.Float32, gen);
        Func<Tensor>[] ops =
        [
            () => a.Add(b), () => b.Mul(a), () => c.Sub(d), () => c.Mul(2.5), () => Tensor.Scalar(3f).Sub(d),
            () => c.Exp(), () => b.Relu(), () => b.Gt(a),
        ];
        int saved = Gemm.Threads;
        try
        {
            foreach (var (op, i) in ops.Select((o, i) => (o, i)))
            {
                Gemm.Threads = 1;
                var one = op();
                Gemm.Threads = 2;
                var two = op();
                Assert.True(one.NumElements >= Cpu.ParallelElements, $"op {i} is below the parallel threshold");
                Assert.Equal(one.Shape, two.Shape);
                if (one.DType == DType.Bool) Assert.Equal(one.ToArray<bool>(), two.ToArray<bool>());
                else Assert.Equal(one.ToArray<float>(), two.ToArray<float>());
            }
            // And against an element-by-element reference for the strided broadcast case.
            var sum = a.Add(b).ToArray<float>();
            var aa = a.ToArray<float>();
            var bb = b.Contiguous().ToArray<float>();
            for (int i = 0; i < 64; i++)
                for (int j = 0; j < 32; j++)
                    for (int k = 0; k < 80; k++)
                        Assert.Equal(aa[i * 80 + k] + bb[(i * 32 + j) * 80 + k], sum[(i * 32 + j) * 80 + k]);
        }
        finally { Gemm.Threads = saved; }
    }
}
