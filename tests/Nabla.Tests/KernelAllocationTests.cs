using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The kernels' hot loops allocate nothing once warm: their scratch (packing buffers, padded rows, transform planes) is
/// per thread and reused, so a steady stream of calls gives the GC no work. Measured on the calling thread at one
/// thread (a split over threads allocates its fork-join bookkeeping, a few hundred bytes a call, on purpose). It sets
/// <see cref="Gemm.Threads"/> and the convolution switches, so it runs in the GEMM settings collection; every test
/// starts at one thread and gets the settings back when it ends.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public sealed class KernelAllocationTests : IDisposable
{
    readonly int savedThreads = Gemm.Threads;
    readonly bool savedWinograd = PackedConv2d.UseWinograd, savedTiles = PackedConv2d.UseChannelTiles;

    public KernelAllocationTests() => Gemm.Threads = 1;

    public void Dispose()
    {
        Gemm.Threads = savedThreads;
        PackedConv2d.UseWinograd = savedWinograd;
        PackedConv2d.UseChannelTiles = savedTiles;
    }

    /// <summary>Bytes allocated on this thread by one call of <paramref name="call"/>, averaged over 5 after 3 warm-ups.</summary>
    /// <remarks>The least of up to three windows of 5 calls: an allocation on every call shows in each of them, a one-off
    /// in one only. (A one-off did show: the 3×64×28×28 → 32 pointwise case read 1593 B a call, about 8 KB once, in two of
    /// about a dozen full runs of this project on 2026-11-27, never when this class ran alone; its source was not found.)</remarks>
    static long Steady(Action call)
    {
        for (int i = 0; i < 3; i++) call();
        long least = long.MaxValue;
        for (int window = 0; window < 3 && least > 0; window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 5; i++) call();
            least = Math.Min(least, (GC.GetAllocatedBytesForCurrentThread() - before) / 5);
        }
        return least;
    }

    public static TheoryData<int, int, int, bool> GemmShapes() => new()
    {
        { 1, 300, 200, false },   // GEMV in 128-column strips
        { 1, 600, 600, false },   // GEMV along the rows of a B beyond L2
        { 2, 50, 40, true },      // GEMV against a B with strided columns (dot products)
        { 64, 100, 70, false },   // packed A and B
        { 200, 300, 256, false }, // A read in place (with AVX-512), several MC blocks
        { 70, 90, 300, true },    // B transposed through the 8×8 packing, two KC blocks
    };

    [Theory, MemberData(nameof(GemmShapes))]
    public void SgemmAllocatesNothingWhenWarm(int m, int n, int k, bool transposedB)
    {
        var rng = new Random(m + n + k);
        var a = new float[m * k];
        var b = new float[k * n];
        var c = new float[m * n];
        for (int i = 0; i < a.Length; i++) a[i] = (float)rng.NextDouble();
        for (int i = 0; i < b.Length; i++) b[i] = (float)rng.NextDouble();
        (int rsB, int csB) = transposedB ? (1, k) : (n, 1);
        long bytes = Steady(() => Gemm.Sgemm(m, n, k, a, 0, k, 1, b, 0, rsB, csB, c, 0, n, false));
        Assert.True(bytes == 0, $"sgemm {m}x{k}·{k}x{n}: {bytes} B a call");
        // The result is the product, so the calls above were the real work.
        var want = new float[m * n];
        Gemm.Reference(m, n, k, a, 0, k, 1, b, 0, rsB, csB, want, 0, n, false);
        for (int i = 0; i < c.Length; i++) Assert.True(Math.Abs(c[i] - want[i]) <= 1e-4f * k, $"[{i}]: {c[i]} vs {want[i]}");
    }

    // n, c, h, w, o, kernel, stride, pad: the direct kernel, a pointwise layer, Winograd F(2×2) and F(4×4), a strided
    // layer, channel tiles, a large map in blocks of rows; each at batch 1 and more (the batch loops allocated per image
    // before). With gemmPaths, Winograd and channel tiles are off, so the same shapes take the im2col + GEMM paths: one
    // image at a time, several folded into one GEMM, or rows in blocks.
    static readonly int[][] ConvCases =
    [
        [1, 3, 16, 16, 8, 3, 1, 1], [3, 3, 32, 32, 8, 3, 1, 1],
        [1, 64, 14, 14, 32, 1, 1, 0], [3, 64, 28, 28, 32, 1, 1, 0],
        [1, 64, 14, 14, 33, 3, 1, 1], [3, 64, 28, 28, 33, 3, 1, 1],
        [2, 16, 15, 15, 24, 3, 2, 1], [6, 16, 31, 31, 24, 3, 2, 1],
        [1, 24, 7, 7, 70, 3, 1, 1], [3, 24, 7, 7, 70, 3, 1, 1],
        [1, 5, 128, 128, 16, 7, 2, 3],
    ];

    public static TheoryData<int, bool> ConvShapes()
    {
        var data = new TheoryData<int, bool>();
        for (int i = 0; i < ConvCases.Length; i++)
        {
            data.Add(i, false);
            data.Add(i, true);
        }
        return data;
    }

    [Theory, MemberData(nameof(ConvShapes))]
    public void PackedConvAllocatesNothingWhenWarm(int index, bool gemmPaths)
    {
        var (n, c, h, w, o, k, stride, pad) = (ConvCases[index][0], ConvCases[index][1], ConvCases[index][2], ConvCases[index][3],
            ConvCases[index][4], ConvCases[index][5], ConvCases[index][6], ConvCases[index][7]);
        bool winograd = savedWinograd, tiles = savedTiles;
        PackedConv2d.UseWinograd = winograd && !gemmPaths;
        PackedConv2d.UseChannelTiles = tiles && !gemmPaths;
        var gen = new Generator(3);
        var x = Tensor.Randn([n, c, h, w], DType.Float32, gen);
        var weight = Tensor.Randn([o, c, k, k], DType.Float32, gen).Mul(0.2);
        var bias = Tensor.Randn([o], DType.Float32, gen);
        var conv = new PackedConv2d(weight, bias, (stride, stride), (pad, pad, pad, pad), (1, 1), 1, FusedActivation.Relu);
        var y = Tensor.Zeros(conv.OutputShape(x.Shape), DType.Float32);
        var residual = Tensor.Randn(y.Shape, DType.Float32, gen);
        long bytes = Steady(() => conv.Run(x, residual, y));
        Assert.True(bytes == 0, $"conv {n}x{c}x{h}x{w} -> {o} {k}x{k}/{stride}: {bytes} B a call");
        // The path that ran: the 64→33 3×3 cases are Winograd's and the 24→70 ones the channel tiles' where the CPU and
        // the switches allow them (AVX-512 for the tiles, FMA for Winograd), and never with gemmPaths. (On other CPUs,
        // CI's AVX2-only and no-SIMD runs, the same shapes take the paths those CPUs have.)
        if (o == 33 && k == 3) Assert.Equal(Gemm.UseFastPath && winograd && !gemmPaths, conv.HasWinogradFilters);
        if (o == 70) Assert.Equal(Gemm.UseFastPath && tiles && !gemmPaths, conv.HasChannelPanels);
        var reference = ConvReference.Conv(x, weight, bias, (stride, stride), (pad, pad));
        // F(4×4, 3×3) Winograd on maps of 28 and more costs about a decimal digit (InferenceWinogradTests).
        double tol = k == 3 && stride == 1 && Math.Min(h, w) >= PackedConv2d.WinogradF4MinSide ? 5e-4 : 1e-4;
        ConvReference.Close(reference.Add(residual).Relu(), y, tol);
    }

    [Fact]
    public void MaxPoolAllocatesNothingWhenWarm()
    {
        var x = Tensor.Randn([2, 8, 30, 30], DType.Float32, new Generator(5));
        // 2×2 stride 2 (one pass) and 3×3 stride 2 padded (the separable path with its scratch row).
        foreach (var (kernel, stride, pad) in new[] { (2, 2, 0), (3, 2, 1) })
        {
            int o = (30 + 2 * pad - kernel) / stride + 1;
            var y = Tensor.Zeros([2, 8, o, o], DType.Float32);
            long bytes = Steady(() => InferencePool.MaxPool2d(x, y, (kernel, kernel), (stride, stride), (pad, pad), (1, 1)));
            Assert.True(bytes == 0, $"max pool {kernel}x{kernel}/{stride}: {bytes} B a call");
            var want = Functional.MaxPool2d(x, (kernel, kernel), (stride, stride), (pad, pad));
            Assert.Equal(want.ToArray<float>(), y.ToArray<float>());
        }
    }

    /// <summary>Rows wider than the 4096-float stack scratch use a thread-static one, grown once.</summary>
    [Fact]
    public void MaxPoolOnRowsWiderThanTheStackScratchAllocatesNothingWhenWarm()
    {
        var x = Tensor.Randn([1, 2, 5, 5000], DType.Float32, new Generator(6));
        var y = Tensor.Zeros([1, 2, 3, 2500], DType.Float32);
        long bytes = Steady(() => InferencePool.MaxPool2d(x, y, (3, 3), (2, 2), (1, 1), (1, 1)));
        Assert.True(bytes == 0, $"max pool on 5000-wide rows: {bytes} B a call");
        Assert.Equal(Functional.MaxPool2d(x, (3, 3), (2, 2), (1, 1)).ToArray<float>(), y.ToArray<float>());
    }

    /// <summary>A convolution with its max pool in one call: the banded direct path (ResNet's first layer) and a path that
    /// convolves whole into thread scratch first (3×3, 16 → 40 channels: im2col + GEMM).</summary>
    [Fact]
    public void ConvWithMaxPoolAllocatesNothingWhenWarm()
    {
        var gen = new Generator(7);
        foreach (var (o, c, k, stride, pad) in new[] { (24, 3, 7, 2, 3), (40, 16, 3, 1, 1) })
        {
            var conv = new PackedConv2d(Tensor.Randn([o, c, k, k], DType.Float32, gen), null, (stride, stride), (pad, pad, pad, pad), (1, 1), 1, FusedActivation.Relu);
            var x = Tensor.Randn([1, c, 40, 40], DType.Float32, gen);
            var cs = conv.OutputShape(x.Shape);
            var y = Tensor.Zeros([1, o, (cs[2] - 1) / 2 + 1, (cs[3] - 1) / 2 + 1], DType.Float32);
            long bytes = Steady(() => conv.RunMaxPooled(x, y, (3, 3), (2, 2), (1, 1), (1, 1)));
            Assert.True(bytes == 0, $"conv {k}x{k} + max pool: {bytes} B a call");
            var want = Functional.MaxPool2d(conv.Run(x), (3, 3), (2, 2), (1, 1));
            Assert.Equal(want.ToArray<float>(), y.ToArray<float>());
        }
    }
}
