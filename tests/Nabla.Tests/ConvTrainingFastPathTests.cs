using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The fused conv2d training primitive ("conv2d": batch-wide im2col + GEMM forward, fused backward with scratch
/// buffers) against the composite reference <see cref="Functional.Conv2dComposite"/> (unfold, matmul, views, add),
/// and the narrow-row 2×2 max-pooling kernel against the readable per-window search.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class ConvTrainingFastPathTests
{
    // n, c, h, w, o, kh, kw, stride, padding, dilation, bias
    public static IEnumerable<object[]> Shapes() => new object[][]
    {
        [64, 1, 28, 28, 32, 3, 3, 1, 1, 1, true],    // quickstart conv1: few taps (weight gradient computed transposed)
        [8, 32, 14, 14, 64, 3, 3, 1, 1, 1, true],    // quickstart conv2 (smaller batch)
        [1, 3, 7, 9, 5, 3, 3, 1, 0, 1, true],        // batch 1, odd sizes, no padding
        [2, 4, 11, 10, 6, 3, 2, 2, 1, 1, false],     // stride 2, non-square kernel, no bias
        [3, 2, 9, 13, 7, 3, 3, 1, 2, 2, true],       // dilation 2, padding 2
        [2, 5, 8, 8, 3, 1, 1, 1, 0, 1, true],        // 1×1
        [2, 3, 10, 7, 4, 5, 3, 3, 2, 1, true],       // stride 3 (strided gather in im2col)
        [1, 40, 6, 6, 8, 3, 3, 1, 1, 1, true],       // K = 360 > KC: the GEMMs split the reduction
        // N·oh·ow ≥ 2048: the forward runs PackedConv2d, the backward makes each chunk's columns itself.
        [16, 32, 14, 14, 64, 3, 3, 1, 1, 1, true],   // channel-tiled forward
        [8, 3, 40, 40, 8, 7, 7, 2, 3, 1, false],     // stride-2 direct forward (a first layer)
        [4, 64, 24, 24, 40, 3, 3, 1, 1, 1, true],    // Winograd forward
    };

    static (Tensor x, Tensor w, Tensor? b, Tensor v) Inputs(int seed, int n, int c, int h, int wd, int o, int kh, int kw, bool bias, DType dt, int oh, int ow)
    {
        var gen = new Generator((ulong)seed);
        var x = Tensor.Randn([n, c, h, wd], dt, gen);
        var w = Tensor.Randn([o, c, kh, kw], dt, gen).Mul(0.3);
        var b = bias ? Tensor.Randn([o], dt, gen) : null;
        var v = Tensor.Randn([n, o, oh, ow], dt, gen);
        return (x, w, b, v);
    }

    static (Tensor y, Tensor gx, Tensor gw, Tensor? gb) Run(bool fast, Tensor x0, Tensor w0, Tensor? b0, Tensor v, int s, int p, int d)
    {
        var x = x0.Detach().RequiresGrad_();
        var w = w0.Detach().RequiresGrad_();
        var b = b0?.Detach().RequiresGrad_();
        var y = fast
            ? Functional.Conv2d(x, w, b, (s, s), (p, p), (d, d))
            : Functional.Conv2dComposite(x, w, b, (s, s), (p, p), (d, d), 1);
        // A weighted sum, so every output element gets a different gradient.
        y.Mul(v).Sum().Backward();
        return (y, x.Grad!, w.Grad!, b?.Grad);
    }

    [Fact]
    public void KernelWiderThanTheInputThrowsAtAnyStride()
    {
        // (1 − 1 − 1) / 2 truncates to 0, which once made this one output column instead of an error.
        var x = Tensor.Randn(1, 2, 1, 1);
        Assert.Throws<ShapeMismatchException>(() => Functional.Conv2d(x, Tensor.Randn(3, 2, 2, 2), null, (2, 2), (0, 0)));
        Assert.Throws<ShapeMismatchException>(() => Functional.AvgPool2d(x, (2, 2), (2, 2)));
        Assert.Equal([1, 3, 1, 1], Functional.Conv2d(Tensor.Randn(1, 2, 2, 2), Tensor.Randn(3, 2, 2, 2), null, (2, 2), (0, 0)).Shape);
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Float32ForwardAndGradientsMatchTheComposite(int n, int c, int h, int wd, int o, int kh, int kw, int s, int p, int d, bool bias)
    {
        int oh = Cpu.ConvOut(h, kh, s, p, d), ow = Cpu.ConvOut(wd, kw, s, p, d);
        var (x, w, b, v) = Inputs(n * 7 + c, n, c, h, wd, o, kh, kw, bias, DType.Float32, oh, ow);
        var fast = Run(true, x, w, b, v, s, p, d);
        var reference = Run(false, x, w, b, v, s, p, d);
        Assert.Equal("conv2d", GradFnName(x, w, b, s, p, d));
        // Sums of up to N·oh·ow products in a different order: tolerances scale with the reduction length.
        TensorAssert.Close("y", reference.y, fast.y, 1e-5, 1e-4);
        TensorAssert.Close("dx", reference.gx, fast.gx, 1e-5, 1e-4);
        TensorAssert.Close("dW", reference.gw, fast.gw, 1e-4, 1e-5 * n * oh * ow);
        if (bias) TensorAssert.Close("db", reference.gb!, fast.gb!, 1e-4, 1e-5 * n * oh * ow);
        else Assert.Null(fast.gb);
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Float64GradientsMatchTheCompositeTightly(int n, int c, int h, int wd, int o, int kh, int kw, int s, int p, int d, bool bias)
    {
        int oh = Cpu.ConvOut(h, kh, s, p, d), ow = Cpu.ConvOut(wd, kw, s, p, d);
        var (x, w, b, v) = Inputs(n * 13 + o, n, c, h, wd, o, kh, kw, bias, DType.Float64, oh, ow);
        var fast = Run(true, x, w, b, v, s, p, d);
        var reference = Run(false, x, w, b, v, s, p, d);
        TensorAssert.Close("y", reference.y, fast.y, 1e-12, 1e-12);
        TensorAssert.Close("dx", reference.gx, fast.gx, 1e-12, 1e-11);
        TensorAssert.Close("dW", reference.gw, fast.gw, 1e-12, 1e-11);
        if (bias) TensorAssert.Close("db", reference.gb!, fast.gb!, 1e-12, 1e-11);
    }

    static string? GradFnName(Tensor x0, Tensor w0, Tensor? b0, int s, int p, int d)
    {
        var x = x0.Detach().RequiresGrad_();
        var y = Functional.Conv2d(x, w0, b0, (s, s), (p, p), (d, d));
        return y.gradFn?.Op;
    }

    [Fact]
    public void FiniteDifferencesAgreeWithTheFusedBackward()
    {
        var gen = new Generator(5);
        GradCheck.Check("conv2d", xs => Functional.Conv2d(xs[0], xs[1], xs[2], (1, 2), (1, 0), (2, 1)),
            [GradCheck.Randn(gen, 2, 3, 6, 5), GradCheck.Randn(gen, 4, 3, 2, 3), GradCheck.Randn(gen, 4)], gen);
    }

    [Fact]
    public void SecondDerivativesGoThroughTheDifferentiableForm()
    {
        var gen = new Generator(9);
        GradCheck.CheckSecondOrder("conv2d", xs => Functional.Conv2d(xs[0], xs[1], xs[2], 1, 1),
            [GradCheck.Randn(gen, 2, 2, 4, 4), GradCheck.Randn(gen, 3, 2, 3, 3), GradCheck.Randn(gen, 3)], gen);
    }

    [Fact]
    public void InputWithoutGradGetsNoGradientAndTheWeightGradientIsRight()
    {
        var gen = new Generator(3);
        var x = Tensor.Randn([4, 1, 9, 9], DType.Float32, gen);
        var w = Tensor.Randn([6, 1, 3, 3], DType.Float32, gen).RequiresGrad_();
        var b = Tensor.Randn([6], DType.Float32, gen).RequiresGrad_();
        var v = Tensor.Randn([4, 6, 9, 9], DType.Float32, gen);
        Functional.Conv2d(x, w, b, 1, 1).Mul(v).Sum().Backward();
        Assert.Null(x.Grad);
        var reference = Run(false, x, w.Detach(), b.Detach(), v, 1, 1, 1);
        TensorAssert.Close("dW", reference.gw, w.Grad!, 1e-4, 1e-3);
        TensorAssert.Close("db", reference.gb!, b.Grad!, 1e-4, 1e-3);
    }

    [Fact]
    public void RetainedGraphBackwardTwiceAccumulatesTheSameGradientTwice()
    {
        // The first backward consumes the forward's saved columns; the second must recompute them, not read reused scratch.
        var gen = new Generator(4);
        var x = Tensor.Randn([3, 2, 8, 8], DType.Float32, gen).RequiresGrad_();
        var w = Tensor.Randn([5, 2, 3, 3], DType.Float32, gen).RequiresGrad_();
        var v = Tensor.Randn([3, 5, 8, 8], DType.Float32, gen);
        var loss = Functional.Conv2d(x, w, null, 1, 1).Mul(v).Sum();
        loss.Backward(retainGraph: true);
        var gw1 = w.Grad!.Clone();
        var gx1 = x.Grad!.Clone();
        // Another convolution in between takes the scratch buffers the first backward returned.
        Functional.Conv2d(Tensor.Randn([3, 2, 8, 8], DType.Float32, gen).RequiresGrad_(), w.Detach(), null, 1, 1).Sum().Backward();
        loss.Backward();
        TensorAssert.Close("dW twice", gw1.Mul(2), w.Grad!, 1e-5, 1e-4);
        TensorAssert.Close("dx twice", gx1.Mul(2), x.Grad!, 1e-5, 1e-4);
    }

    [Fact]
    public void GroupedConvolutionEqualsPerGroupFastConvolutions()
    {
        var gen = new Generator(8);
        var x = Tensor.Randn([2, 6, 7, 7], DType.Float32, gen);
        var w = Tensor.Randn([4, 3, 3, 3], DType.Float32, gen);
        var b = Tensor.Randn([4], DType.Float32, gen);
        var grouped = Functional.Conv2d(x, w, b, (1, 1), (1, 1), (1, 1), groups: 2);
        var xs = x.Chunk(2, 1);
        var ws = w.Chunk(2, 0);
        var bs = b.Chunk(2, 0);
        var perGroup = Tensor.Cat([Functional.Conv2d(xs[0].Contiguous(), ws[0].Contiguous(), bs[0].Contiguous(), 1, 1),
            Functional.Conv2d(xs[1].Contiguous(), ws[1].Contiguous(), bs[1].Contiguous(), 1, 1)], 1);
        TensorAssert.Close("grouped", perGroup, grouped, 1e-5, 1e-5);
    }

    [Fact]
    public void NonContiguousInputIsReadThroughItsStrides()
    {
        var gen = new Generator(12);
        var x = Tensor.Randn([2, 7, 3, 8], DType.Float32, gen).Permute(0, 2, 1, 3);   // [2, 3, 7, 8], not contiguous
        var w = Tensor.Randn([4, 3, 3, 3], DType.Float32, gen);
        var fast = Functional.Conv2d(x, w, null, 1, 1);
        var reference = Functional.Conv2dComposite(x.Contiguous(), w, null, (1, 1), (1, 1), (1, 1), 1);
        TensorAssert.Close("y", reference, fast, 1e-5, 1e-5);
    }

    [Fact]
    public void ScratchBuffersAreReusedPerElementType()
    {
        var a = ConvScratch.Rent<float>(1000);
        Assert.True(a.Length >= 1000);
        ConvScratch.Return(a);
        Assert.Same(a, ConvScratch.Rent<float>(900));
        ConvScratch.Return(a);
        var d = ConvScratch.Rent<double>(500);   // a float[] is never handed out as double[]
        Assert.IsType<double[]>(d);
        Assert.True(d.Length >= 500);
        Assert.NotSame(a, ConvScratch.Rent<float>(5000));   // too small: a new one
    }

    [Theory]
    [InlineData(3, 9)]
    [InlineData(5, 16)]
    [InlineData(6, 17)]
    [InlineData(7, 24)]
    [InlineData(11, 300)]
    [InlineData(13, 257)]
    [InlineData(64, 1000)]
    public void SgemmWithRowMajorAPackedThroughTransposesMatchesReference(int m, int k)
    {
        // Row-major A with a row stride larger than k, every row count modulo the 6-row panel, k around the 8-column blocks.
        var rng = new Random(m * 1000 + k);
        int lda = k + 5, n = 37;
        var a = new float[m * lda];
        var b = new float[k * n];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int i = 0; i < b.Length; i++) b[i] = (float)(rng.NextDouble() * 2 - 1);
        var fast = new float[m * n];
        var reference = new float[m * n];
        Gemm.Sgemm(m, n, k, a, 0, lda, 1, b, 0, n, 1, fast, 0, n, false);
        Gemm.Reference(m, n, k, a, 0, lda, 1, b, 0, n, 1, reference, 0, n, false);
        for (int i = 0; i < m * n; i++)
            Assert.True(Math.Abs(fast[i] - reference[i]) <= 1e-6 * k + 1e-6, $"m={m} k={k}: C[{i / n},{i % n}] = {fast[i]}, reference {reference[i]}");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(196)]
    [InlineData(787)]
    public void OnePassBatchNormRowsEqualTheMultiPassForm(int n)
    {
        var rng = new Random(n);
        float[] x = new float[n], g = new float[n];
        for (int i = 0; i < n; i++) { x[i] = (float)(rng.NextDouble() * 4 - 2); g[i] = (float)(rng.NextDouble() * 2 - 1); }
        float scale = 1.37f, shift = -0.21f, a = 0.83f, bx = -0.017f, c0 = 0.0041f;

        var y = new float[n];
        Cpu.ScaleShift(x, scale, shift, y);
        var y2 = new float[n];
        System.Numerics.Tensors.TensorPrimitives.Multiply(x, scale, y2);
        System.Numerics.Tensors.TensorPrimitives.Add(y2, shift, y2);
        Assert.Equal(y2, y);

        var gx = new float[n];
        Cpu.BatchNormGradRow(g, x, a, bx, c0, gx);
        var gx2 = new float[n];
        System.Numerics.Tensors.TensorPrimitives.Multiply(x, bx, gx2);
        System.Numerics.Tensors.TensorPrimitives.Add(gx2, c0, gx2);
        System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(g, a, gx2, gx2);
        Assert.Equal(gx2, gx);
    }

    [Theory]
    [InlineData(13)]
    [InlineData(131_072)]
    [InlineData(200_003)]
    public void ReluBackwardSplitAcrossThreadsMatchesTheDefinition(int n)
    {
        var rng = new Random(n);
        var ya = new float[n + 3];
        var ga = new float[n + 3];
        for (int i = 0; i < ya.Length; i++) { ya[i] = rng.Next(3) - 1; ga[i] = (float)rng.NextDouble(); }
        // Views starting at element 3, so the kernel must honour the offsets.
        var y = Tensor.FromArray(ya, n + 3).Narrow(0, 3, n);
        var g = Tensor.FromArray(ga, n + 3).Narrow(0, 3, n);
        var r = Cpu.ReluBackwardFast(g, y)!.ToArray<float>();
        for (int i = 0; i < n; i++)
        {
            float expected = ya[i + 3] > 0 ? ga[i + 3] : 0;
            Assert.True(expected == r[i], $"n={n} element {i}: {r[i]}, expected {expected}");
        }
    }

    public static TheoryData<int, int> PoolSizes()
    {
        var data = new TheoryData<int, int>();
        foreach (var w in new[] { 2, 6, 8, 9, 10, 14, 15, 16, 17, 22, 28, 30, 31, 34 })
            foreach (var h in new[] { 2, 5 })
                data.Add(h, w);
        return data;
    }

    [Theory, MemberData(nameof(PoolSizes))]
    public void MaxPool2x2MatchesThePerWindowSearchOnNarrowRows(int h, int w)
    {
        var rng = new Random(h * 100 + w);
        int planes = 3, oh = h / 2, ow = w / 2;
        var data = new float[planes * h * w];
        for (int i = 0; i < data.Length; i++)
        {
            // Few distinct values (ties) and a sprinkling of NaNs.
            int r = rng.Next(12);
            data[i] = r == 0 ? float.NaN : r % 4 - 1.5f;
        }
        var x = Tensor.FromArray(data, 1, planes, h, w);
        var (vals, idx) = Cpu.MaxPool(x, 2, 2, 2, 2, 0, 0, 1, 1, oh, ow);
        var reference = Cpu.MaxPoolIndices(x, 2, 2, 2, 2, 0, 0, 1, 1, oh, ow).ToArray<long>();
        var got = idx.ToArray<long>();
        var v = vals.ToArray<float>();
        for (int p = 0; p < planes; p++)
            for (int i = 0; i < oh * ow; i++)
            {
                int at = p * oh * ow + i;
                Assert.True(reference[at] == got[at], $"plane {p} window {i}: index {got[at]}, reference {reference[at]}");
                float expected = data[p * h * w + reference[at]];
                Assert.True(expected.Equals(v[at]), $"plane {p} window {i}: value {v[at]}, reference {expected}");
            }
    }
}
