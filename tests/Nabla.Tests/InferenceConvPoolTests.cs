using Xunit;

namespace Nabla.Tests;

/// <summary>
/// <see cref="PackedConv2d.RunMaxPooled"/> (a convolution and the max pooling of its output in one call) against the same
/// convolution through <see cref="PackedConv2d.Run(Tensor, Tensor?, Tensor)"/> followed by
/// <see cref="InferencePool.MaxPool2d"/>: the same bits, on the banded direct path (with bands of every size down to one
/// pooled row, so the rows two bands share are carried over) and on the other paths, at one, two and three threads,
/// batch 1 and 3. Changes <see cref="Gemm.Threads"/> and the band size, so it runs in the GEMM settings collection.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class InferenceConvPoolTests
{
    // c, h, w, o, conv k, conv stride, conv pad, pool k, pool stride, pool pad, pool dilation, ceil mode
    public static IEnumerable<object[]> Cases() => new object[][]
    {
        [3, 64, 64, 64, 7, 2, 3, 3, 2, 1, 1, false],   // ResNet's first layer and pool (direct at stride 2)
        [3, 45, 37, 20, 7, 2, 3, 3, 2, 1, 1, true],    // odd sizes, a part group of 4 channels, ceil mode
        [1, 28, 28, 6, 5, 1, 2, 2, 2, 0, 1, false],    // LeNet-5's first layer (direct, the 2×2 pool kernel)
        [6, 14, 14, 16, 5, 1, 0, 2, 2, 0, 1, false],   // LeNet-5's second layer (narrow direct)
        [8, 15, 15, 16, 5, 1, 2, 2, 2, 0, 1, true],    // 2×2 windows past the last row and column (ceil mode)
        [3, 30, 26, 8, 3, 1, 1, 3, 1, 1, 1, false],    // a stride-1 pool: every row shared by three windows
        [3, 40, 40, 12, 3, 1, 1, 3, 3, 2, 2, false],   // a dilated pool (span 5) with stride 3
        [2, 33, 21, 9, 3, 1, 1, 2, 3, 0, 1, false],    // pool stride above its window: rows no window reads
        [32, 20, 20, 64, 3, 1, 1, 2, 2, 0, 1, false],  // not direct: Winograd or channel tiles, then the pool
        [16, 21, 21, 24, 3, 2, 1, 3, 2, 1, 1, true],   // not direct: im2col + GEMM at stride 2
    };

    static int Pooled(int n, int k, int s, int p, int d, bool ceil)
    {
        int span = (k - 1) * d + 1;
        double q = (double)(n + 2 * p - span) / s;
        int len = (int)(ceil ? Math.Ceiling(q) : Math.Floor(q)) + 1;
        if (ceil && (len - 1) * s >= n + p) len--;
        return len;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesTheConvolutionThenTheMaxPool(int c, int h, int w, int o, int k, int stride, int pad, int pk, int ps, int pp, int pd, bool ceil)
    {
        var gen = new Generator(23);
        var weight = Tensor.Randn([o, c, k, k], DType.Float32, gen).Mul(0.2);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        var convs = new[]
        {
            new PackedConv2d(weight, bias, (stride, stride), (pad, pad, pad, pad), (1, 1), 1, FusedActivation.Relu),
            new PackedConv2d(weight, null, (stride, stride), (pad, pad, pad, pad), (1, 1), 1, FusedActivation.None),
        };
        int savedThreads = Gemm.Threads, savedBand = PackedConv2d.PoolBandFloats;
        long bandedBefore = PackedConv2d.BandedPoolCalls;
        try
        {
            foreach (int n in new[] { 1, 3 })
            {
                var x = Tensor.Randn([n, c, h, w], DType.Float32, gen);
                foreach (var conv in convs)
                {
                    var cs = conv.OutputShape(x.Shape);
                    int ph = Pooled(cs[2], pk, ps, pp, pd, ceil), pw = Pooled(cs[3], pk, ps, pp, pd, ceil);
                    Gemm.Threads = 1;
                    var full = conv.Run(x);
                    var want = Tensor.Empty([n, o, ph, pw], DType.Float32);
                    InferencePool.MaxPool2d(full, want, (pk, pk), (ps, ps), (pp, pp), (pd, pd));
                    var expected = want.ToArray<float>();
                    // Bands of 1, 2, 5 pooled rows (a buffer of just one window's rows upwards) and the default.
                    int span = (pk - 1) * pd + 1;
                    foreach (int bandRows in new[] { span, span + ps, span + 4 * ps, 0 })
                    {
                        PackedConv2d.PoolBandFloats = bandRows == 0 ? savedBand : 8 * cs[3] * bandRows;
                        foreach (int threads in new[] { 1, 2, 3 })
                        {
                            Gemm.Threads = threads;
                            var y = Tensor.Full([n, o, ph, pw], float.NaN);
                            conv.RunMaxPooled(x, y, (pk, pk), (ps, ps), (pp, pp), (pd, pd));
                            Assert.Equal(expected, y.ToArray<float>());
                        }
                    }
                }
            }
        }
        finally
        {
            Gemm.Threads = savedThreads;
            PackedConv2d.PoolBandFloats = savedBand;
        }
        // The direct cases took the banded path (AVX-512 only; elsewhere every case convolves whole, then pools).
        bool direct = c * k * k <= 32 && stride == 1 || stride == 2 && c <= 4 || stride == 1 && o <= 32 && c * k * k <= 512;
        bool avx512 = System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
        if (avx512) Assert.Equal(direct, PackedConv2d.BandedPoolCalls > bandedBefore);
        // The importer's test for fusing a pool into the convolution says the same.
        Assert.Equal(direct && avx512, PackedConv2d.PoolsInBands(o, c, k, k, (stride, stride), (1, 1), 1));
    }

    /// <summary>Windows that reach no convolution output (an output larger than the windows cover) give -inf, as the
    /// pool alone does.</summary>
    [Fact]
    public void WindowsPastTheOutputGiveNegativeInfinity()
    {
        var gen = new Generator(5);
        var conv = new PackedConv2d(Tensor.Randn([8, 3, 7, 7], DType.Float32, gen), null, (2, 2), (3, 3, 3, 3), (1, 1), 1, FusedActivation.Relu);
        var x = Tensor.Randn([1, 3, 20, 20], DType.Float32, gen);
        // The 10×10 output pooled 3×3 stride 2 pad 1 gives 5×5; ask for 7×7.
        var want = Tensor.Empty([1, 8, 7, 7], DType.Float32);
        InferencePool.MaxPool2d(conv.Run(x), want, (3, 3), (2, 2), (1, 1), (1, 1));
        int saved = PackedConv2d.PoolBandFloats;
        try
        {
            // The default band (all rows at once), and bands of one pooled row: the last bands lie wholly past the output.
            foreach (int band in new[] { saved, 8 * 10 * 3 })
            {
                PackedConv2d.PoolBandFloats = band;
                var y = Tensor.Full([1, 8, 7, 7], 0f);
                conv.RunMaxPooled(x, y, (3, 3), (2, 2), (1, 1), (1, 1));
                Assert.Equal(want.ToArray<float>(), y.ToArray<float>());
                Assert.True(float.IsNegativeInfinity(y.ToArray<float>()[6 * 7 + 6]));
            }
        }
        finally
        {
            PackedConv2d.PoolBandFloats = saved;
        }
    }

    [Fact]
    public void RejectsABadOutputOrWindow()
    {
        var conv = new PackedConv2d(Tensor.Ones(4, 3, 3, 3), null, (1, 1), (1, 1, 1, 1), (1, 1), 1, FusedActivation.None);
        var x = Tensor.Ones(1, 3, 8, 8);
        var e = Assert.Throws<ShapeMismatchException>(() => conv.RunMaxPooled(x, Tensor.Empty([1, 5, 4, 4], DType.Float32), (2, 2), (2, 2), (0, 0), (1, 1)));
        Assert.Contains("[1, 4, ph, pw]", e.Message);
        Assert.Throws<ShapeMismatchException>(() => conv.RunMaxPooled(x, Tensor.Empty([1, 4, 4], DType.Float32), (2, 2), (2, 2), (0, 0), (1, 1)));
        Assert.Throws<ShapeMismatchException>(() => conv.RunMaxPooled(Tensor.Ones(1, 2, 8, 8), Tensor.Empty([1, 4, 4, 4], DType.Float32), (2, 2), (2, 2), (0, 0), (1, 1)));
        var k = Assert.Throws<NablaException>(() => conv.RunMaxPooled(x, Tensor.Empty([1, 4, 4, 4], DType.Float32), (0, 2), (2, 2), (0, 0), (1, 1)));
        Assert.Contains("must be positive", k.Message);
        Assert.Throws<NablaException>(() => conv.RunMaxPooled(x, Tensor.Empty([1, 4, 4, 4], DType.Float32), (2, 2), (2, 2), (-1, 0), (1, 1)));
    }
}
