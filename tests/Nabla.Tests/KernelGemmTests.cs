using Xunit;

namespace Nabla.Tests;

/// <summary>These tests change the process-wide <see cref="Gemm.Threads"/> and <see cref="Gemm.UseFastPath"/>, so they run alone.</summary>
[CollectionDefinition(nameof(GemmSettingsCollection), DisableParallelization = true)]
public class GemmSettingsCollection { }

/// <summary>
/// The packed float32 GEMM against <see cref="Gemm.Reference"/>: sizes around the 6×16 register tile and the
/// KC = 256 / MC = 120 / NC = 3072 cache blocks, strided and transposed operands, offsets, ldc &gt; n, accumulation,
/// threading and the scalar fallback.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class KernelGemmTests
{
    /// <summary>An operand stored with any strides inside a larger array (unused slots hold NaN, so a wrong read shows).</summary>
    sealed record Operand(float[] Data, int Off, int Rs, int Cs, int Rows, int Cols)
    {
        public float this[int i, int j] => Data[Off + i * Rs + j * Cs];
    }

    static Operand MakeOperand(Random rng, int rows, int cols, string layout)
    {
        int off = layout == "row" ? 0 : 3;
        (int rs, int cs) = layout switch
        {
            "row" => (cols, 1),
            "padded" => (cols + 7, 1),                // row-major with a row stride above the width
            "long" => (2048, 1),                      // row-major with a stride above the in-place limit (cols ≤ 2048)
            "col" => (1, rows),                       // transposed: column-major storage
            "strided" => (2 * cols + 1, 2),           // odd row stride, every other column
            _ => (3, 3 * rows + 2),                   // transposed and strided
        };
        int size = off + Math.Max(0, rows - 1) * rs + Math.Max(0, cols - 1) * cs + 1;
        var data = new float[Math.Max(size, 1)];
        Array.Fill(data, float.NaN);
        for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            data[off + i * rs + j * cs] = (float)(rng.NextDouble() * 2 - 1);
        return new Operand(data, off, rs, cs, rows, cols);
    }

    static void CompareToReference(int m, int n, int k, string layoutA, string layoutB, bool accumulate, int seed, bool packB = false)
    {
        var rng = new Random(seed);
        var a = MakeOperand(rng, m, k, layoutA);
        var b = MakeOperand(rng, k, n, layoutB);
        int ldc = n + 3, cOff = 2;
        var c0 = new float[cOff + m * ldc + 1];
        for (int i = 0; i < c0.Length; i++) c0[i] = (float)(rng.NextDouble() * 2 - 1);
        var fast = (float[])c0.Clone();
        var reference = (float[])c0.Clone();
        if (packB) Gemm.SgemmPackedB(m, a.Data, a.Off, a.Rs, a.Cs, Gemm.PackBOnce(k, n, b.Data, b.Off, b.Rs, b.Cs), fast, cOff, ldc, accumulate);
        else Gemm.Sgemm(m, n, k, a.Data, a.Off, a.Rs, a.Cs, b.Data, b.Off, b.Rs, b.Cs, fast, cOff, ldc, accumulate);
        Gemm.Reference(m, n, k, a.Data, a.Off, a.Rs, a.Cs, b.Data, b.Off, b.Rs, b.Cs, reference, cOff, ldc, accumulate);
        string what = $"{(packB ? "packed-B sgemm" : "sgemm")} m={m} n={n} k={k} A {layoutA} B {layoutB} acc={accumulate} threads={Gemm.Threads}";
        for (int idx = 0; idx < c0.Length; idx++)
        {
            int rel = idx - cOff;
            int i = rel / ldc, j = rel % ldc;
            bool inside = rel >= 0 && i < m && j < n;
            if (!inside)
            {
                Assert.True(c0[idx] == fast[idx], $"{what}: wrote outside C at flat index {idx}");
                continue;
            }
            // Float sums in another order differ by at most ~k·ε·Σ|a||b|.
            double scale = Math.Abs(accumulate ? c0[idx] : 0);
            for (int p = 0; p < k; p++) scale += Math.Abs(a[i, p] * b[p, j]);
            double tol = 2 * Math.Max(k, 1) * 6e-8 * scale + 1e-6;
            Assert.True(Math.Abs(fast[idx] - reference[idx]) <= tol, $"{what}: C[{i},{j}] = {fast[idx]}, reference {reference[idx]}");
        }
    }

    static readonly int[] Ms = [1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 23, 63, 64, 65, 119, 120, 121, 127];   // up to 64 rows in place: 8-row tiles, the last of 1–8 rows
    static readonly int[] Ns = [1, 3, 8, 15, 16, 17, 31, 32, 33, 47];
    static readonly int[] Ks = [0, 1, 2, 7, 255, 256, 257, 300, 513];

    public static TheoryData<int, int, int> Sizes()
    {
        // Every edge of one axis, against a few sizes of the others (the full cube is too slow for a unit test).
        var set = new HashSet<(int, int, int)>();
        foreach (var m in Ms) foreach (var n in Ns) set.Add((m, n, 9));
        foreach (var m in Ms) foreach (var k in Ks) set.Add((m, 17, k));
        foreach (var n in Ns) foreach (var k in Ks) set.Add((13, n, k));
        set.Add((121, 33, 257));
        set.Add((241, 50, 513));
        var data = new TheoryData<int, int, int>();
        foreach (var (m, n, k) in set) data.Add(m, n, k);
        return data;
    }

    [Theory, MemberData(nameof(Sizes))]
    public void SgemmMatchesReference(int m, int n, int k)
    {
        CompareToReference(m, n, k, "row", "row", false, m * 10007 + n * 101 + k);
        CompareToReference(m, n, k, "row", "row", true, m * 10007 + n * 101 + k + 1);
    }

    public static TheoryData<string, string> Layouts() => new()
    {
        { "row", "col" }, { "col", "row" }, { "col", "col" }, { "strided", "row" }, { "row", "strided" }, { "tstrided", "tstrided" },
    };

    [Theory, MemberData(nameof(Layouts))]
    public void SgemmStridedAndTransposedOperands(string layoutA, string layoutB)
    {
        // (1 and 2 rows take the GEMV path: a B with strided columns gets dot products, from a strided A gathered first.)
        foreach (var (m, n, k) in new[] { (1, 1, 1), (1, 37, 50), (2, 40, 33), (6, 16, 8), (7, 17, 3), (13, 33, 257), (121, 20, 40), (5, 3, 300) })
        {
            CompareToReference(m, n, k, layoutA, layoutB, false, m + n + k);
            CompareToReference(m, n, k, layoutA, layoutB, true, m + n + k + 1);
        }
    }

    /// <summary>A row-major A with a row stride of at most 1024 floats is read in place by the 512-bit kernel
    /// (<see cref="Gemm.UseDirectA"/>); off, or with a longer stride (2048, "long"), it is packed through the 8×8
    /// transposes. Against the reference: every row count modulo the 6-row panel, a row stride above k with an offset
    /// ("padded"), more than one MC and KC block, and accumulation. (Without AVX-512 every run takes the packed path.)</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RowMajorAReadInPlaceOrPacked(bool direct)
    {
        bool saved = Gemm.UseDirectA;
        try
        {
            Gemm.UseDirectA = direct;
            foreach (var (m, n, k) in new[] { (7, 33, 9), (128, 128, 64), (131, 70, 200), (10, 64, 256), (3, 40, 17), (245, 40, 300), (16, 70, 300) })
            {
                CompareToReference(m, n, k, "row", "row", false, m + n + k);
                CompareToReference(m, n, k, "padded", "row", true, m + n + k + 1);
                CompareToReference(m, n, k, "padded", "col", false, m + n + k + 2);
            }
            foreach (var (m, n, k) in new[] { (130, 45, 70), (61, 64, 300) })
            {
                CompareToReference(m, n, k, "long", "row", false, m + n + k + 3);
                CompareToReference(m, n, k, "long", "row", true, m + n + k + 4);
            }
        }
        finally { Gemm.UseDirectA = saved; }
    }

    /// <summary>The 512-bit kernel's C prefetch (Gemm.PrefetchCFloats) on every product, limit 0: tiles of every height, narrow
    /// tiles through the scratch tile, A in place and packed, accumulating or not, one thread and two; with B packed once
    /// too, whose blocks of four or more row tiles also prefetch the next B micro-panel in their last tile.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void CPrefetchLeavesResultsAsTheReference(int threads)
    {
        long savedLimit = Gemm.PrefetchCFloats;
        int savedThreads = Gemm.Threads;
        try
        {
            Gemm.PrefetchCFloats = 0;
            Gemm.Threads = threads;
            foreach (var (m, n, k) in new[] { (7, 33, 9), (131, 70, 300), (64, 96, 40), (250, 130, 513) })
            {
                CompareToReference(m, n, k, "row", "row", false, m + n + k);
                CompareToReference(m, n, k, "long", "row", true, m + n + k + 1);
                CompareToReference(m, n, k, "col", "row", true, m + n + k + 2);
                CompareToReference(m, n, k, "row", "row", true, m + n + k + 3, packB: true);
                CompareToReference(m, n, k, "strided", "col", false, m + n + k + 4, packB: true);
            }
        }
        finally
        {
            Gemm.PrefetchCFloats = savedLimit;
            Gemm.Threads = savedThreads;
        }
    }

    /// <summary>One or two rows of A against a row-major B too large for L2: B is read along its rows, four at a time
    /// (Gemm.GemvRowBand512), serially above 2^18 elements of B and on two threads from 2^22. Odd k leaves single rows at
    /// the end, odd n a masked last vector; n = 15 has only the masked one.</summary>
    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    [InlineData(1, 2)]
    [InlineData(2, 2)]
    public void GemvAlongRowsOfALargeB(int m, int threads)
    {
        int saved = Gemm.Threads;
        try
        {
            Gemm.Threads = threads;
            foreach (var (n, k) in new[] { (600, 517), (1001, 263), (15, 20003), (2056, 2049) })
            {
                CompareToReference(m, n, k, "row", "row", false, n + k + m);
                CompareToReference(m, n, k, "row", "row", true, n + k + m + 1);
            }
        }
        finally { Gemm.Threads = saved; }
    }

    /// <summary>The GEMV along rows of B with B starting at each of the 16 float offsets within a cache line (row stride a
    /// whole number of lines, so the kernel peels the columns before the first boundary), widths that end inside the
    /// peeled head, just past it, and many vectors past it. One thread runs the band kernel; two run 128-column strips (below the threaded band
    /// threshold), which must not care where B starts either.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public unsafe void GemvAlongRowsAtEveryAlignmentOfB(int threads)
    {
        int saved = Gemm.Threads;
        try
        {
            Gemm.Threads = threads;
            var rng = new Random(17);
            // (n, k, row stride): n·k above the band threshold, strides of whole lines. The narrow widths fit inside the
            // peeled head, or end just past it.
            foreach (var (n, k, ld) in new[] { (1000, 601, 1024), (1024 - 16, 600, 1024), (7 + 16 * 40, 603, 1024), (1, 270_001, 16), (7, 40_003, 16), (15, 20_002, 16) })
            {
                var b = GC.AllocateArray<float>(k * ld + 64, pinned: true);
                for (int i = 0; i < b.Length; i++) b[i] = (float)(rng.NextDouble() * 2 - 1);
                int lineStart;
                fixed (float* p = b) lineStart = (int)((64 - ((nint)p & 63)) & 63) / sizeof(float);
                var a = new float[2 * k];
                for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
                for (int shift = 0; shift < 16; shift++)
                    for (int m = 1; m <= 2; m++)
                    {
                        int bOff = lineStart + shift;
                        var fast = new float[m * n];
                        var reference = new float[m * n];
                        Gemm.Sgemm(m, n, k, a, 0, k, 1, b, bOff, ld, 1, fast, 0, n, false);
                        Gemm.Reference(m, n, k, a, 0, k, 1, b, bOff, ld, 1, reference, 0, n, false);
                        float tol = 1e-5f * k;
                        for (int i = 0; i < fast.Length; i++)
                            Assert.True(Math.Abs(fast[i] - reference[i]) <= tol, $"n={n} k={k} shift={shift} m={m} [{i}]: {fast[i]} vs {reference[i]}");
                    }
            }
        }
        finally { Gemm.Threads = saved; }
    }

    /// <summary>GEMV chunks of every count of whole 16-float vectors (0 to 8), with and without a masked rest, one and
    /// two rows of A, a padded B and an offset A.</summary>
    [Fact]
    public void GemvChunksOfEveryWidth()
    {
        foreach (int n in new[] { 5, 16, 29, 32, 40, 48, 50, 64, 80, 90, 96, 100, 112, 127, 128, 200 })
        foreach (int m in new[] { 1, 2 })
        {
            CompareToReference(m, n, 37, "row", "row", false, n * 3 + m);
            CompareToReference(m, n, 37, "padded", "padded", true, n * 3 + m + 1);
        }
    }

    /// <summary>The AVX2 GEMV (four rows of B per pass, 8 columns at a time, a scalar rest), as an AVX2-only CPU runs it:
    /// the 512-bit kernels switched off. Widths around the 8-float vector, row counts of B not a multiple of 4, a strided
    /// and an offset A, 1 and 2 threads (the columns split from n·k ≥ 2^17: 2305 × 401 splits at 1153, inside a vector
    /// and with a row of B left over), accumulation. Against the reference.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void GemvOfTheAvx2Kernel(int threads)
    {
        if (!Gemm.UseFastPath) return;   // (a CPU without FMA has only the reference loop, tested everywhere else)
        bool saved512 = Gemm.Use512;
        int savedThreads = Gemm.Threads;
        try
        {
            Gemm.Use512 = false;
            Gemm.Threads = threads;
            foreach (int n in new[] { 1, 7, 8, 9, 15, 16, 17, 31, 120, 300, 2304, 2305 })
            foreach (int k in new[] { 1, 3, 4, 37, 400, 401 })
            foreach (int m in new[] { 1, 2 })
            {
                CompareToReference(m, n, k, "row", "row", false, n * 7 + k + m);
                CompareToReference(m, n, k, "padded", "padded", true, n * 7 + k + m + 1);
                CompareToReference(m, n, k, "strided", "row", true, n * 7 + k + m + 2);
            }
        }
        finally
        {
            Gemm.Use512 = saved512;
            Gemm.Threads = savedThreads;
        }
    }

    [Fact]
    public void SgemmWideBeyondNcBlock()
    {
        CompareToReference(3, 3100, 5, "row", "row", false, 1);
        CompareToReference(7, 3090, 3, "row", "col", true, 2);
    }

    /// <summary>B packed once (an inference layer's weight): the GEMV over micro-panels (1–2 rows), the blocked loop on one
    /// thread and split by rows or by micro-panels of columns, panels beyond NC and KC, both micro-panel widths.</summary>
    [Theory]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(3, true)]
    [InlineData(2, false)]
    public void PackedBMatchesReference(int threads, bool wide)
    {
        if (!Gemm.UseFastPath) return;   // (without FMA SgemmPackedB unpacks B and calls Sgemm: FallbackOfPackedB)
        bool saved512 = Gemm.Use512;
        int savedThreads = Gemm.Threads;
        try
        {
            Gemm.Use512 = wide && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
            Gemm.Threads = threads;
            foreach (var (m, n, k) in new[] { (1, 1, 1), (1, 33, 257), (2, 100, 513), (1, 3100, 7), (2, 2304, 300), (3, 17, 5),
                (7, 64, 256), (13, 100, 300), (64, 768, 40), (64, 65, 600), (121, 33, 70), (241, 50, 257), (9, 3100, 11),
                (25, 100, 300), (26, 70, 40), (27, 64, 257), (29, 97, 33),   // blocks of four or more row tiles prefetch the next B micro-panel in their last tile of 1, 2, 3, 5 rows
                (16, 100, 300), (16, 3100, 260), (23, 100, 300), (63, 70, 257), (64, 3100, 40),   // up to 64 rows read in place: 8-row tiles, the last of 7 in two of them
                (530, 200, 40), (300, 200, 40),   // rows split at 2 threads above 512 rows, columns below (and at 3 threads both)
                (1, 3100, 300), (2, 3100, 300), (9, 3100, 300), (100, 3100, 260) })   // (last four: column blocks past NC and KC blocks past the first together)
            {
                int seed = m * 1009 + n * 13 + k;
                CompareToReference(m, n, k, "row", "row", false, seed, packB: true);
                CompareToReference(m, n, k, "strided", "col", true, seed + 1, packB: true);
                CompareToReference(m, n, k, "long", "strided", true, seed + 2, packB: true);
            }
        }
        finally
        {
            Gemm.Use512 = saved512;
            Gemm.Threads = savedThreads;
        }
    }

    [Fact]
    public void PackedBWithNoRowsOrAnEmptyInnerDimension()
    {
        var b = new float[5 * 40];
        for (int i = 0; i < b.Length; i++) b[i] = i;
        var packed = Gemm.PackBOnce(5, 40, b, 0, 40, 1);
        var c = new float[3 * 40];
        Array.Fill(c, 7f);
        Gemm.SgemmPackedB(0, [], 0, 5, 1, packed, c, 0, 40, false);   // no rows: C untouched
        Assert.All(c, v => Assert.Equal(7f, v));
        var empty = Gemm.PackBOnce(0, 40, b, 0, 40, 1);
        Gemm.SgemmPackedB(3, new float[3], 0, 0, 1, empty, c, 0, 40, true);   // k = 0, accumulate: C unchanged
        Assert.All(c, v => Assert.Equal(7f, v));
        Gemm.SgemmPackedB(3, new float[3], 0, 0, 1, empty, c, 0, 40, false);   // k = 0: C = 0
        Assert.All(c, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void PackedBUnpacksToItsSourceAndSplitsWithTheSameBits()
    {
        int saved = Gemm.Threads;
        try
        {
            var rng = new Random(3);
            foreach (var (m, n, k) in new[] { (1, 3100, 300), (2, 200, 600), (40, 3100, 300), (200, 300, 257), (530, 200, 40) })
            {
                var a = MakeOperand(rng, m, k, "row");
                var b = MakeOperand(rng, k, n, "col");
                var packed = Gemm.PackBOnce(k, n, b.Data, b.Off, b.Rs, b.Cs);
                var dense = Gemm.UnpackB(packed);
                for (int p = 0; p < k; p++)
                    for (int j = 0; j < n; j++)
                        Assert.True(dense[p * n + j] == b[p, j], $"UnpackB {k}x{n}: ({p}, {j}) = {dense[p * n + j]}, source {b[p, j]}");
                // Each element of C comes from the same kernel and k-blocking whichever thread computes it.
                float[] Run(int t)
                {
                    Gemm.Threads = t;
                    var c = new float[m * n];
                    Gemm.SgemmPackedB(m, a.Data, a.Off, a.Rs, a.Cs, packed, c, 0, n, false);
                    return c;
                }
                var serial = Run(1);
                Assert.Equal(serial, Run(2));
                Assert.Equal(serial, Run(3));
                // Prefetching the next B micro-panel only moves data into the cache.
                Gemm.PrefetchPackedB = false;
                Assert.Equal(serial, Run(1));
                Gemm.PrefetchPackedB = true;
            }
        }
        finally
        {
            Gemm.Threads = saved;
            Gemm.PrefetchPackedB = true;
        }
    }

    /// <summary>The bias and ReLU fused into the packed-B GEMM give the same bits as adding the bias and taking max(·, 0)
    /// after the product (the same float operations in the same order): the GEMV (1–2 rows), the blocked loop with full
    /// and narrow tiles, several KC blocks (the epilogue only after the last), column blocks past NC, accumulation, the
    /// split by rows and by micro-panels, both micro-panel widths and the fallback without FMA.</summary>
    [Theory]
    [InlineData(1, true, true)]
    [InlineData(2, true, true)]
    [InlineData(3, true, true)]
    [InlineData(2, false, true)]
    [InlineData(2, true, false)]
    public void PackedBFusedBiasAndReluMatchTheUnfusedEpilogue(int threads, bool wide, bool fast)
    {
        bool saved512 = Gemm.Use512, savedFast = Gemm.UseFastPath;
        int savedThreads = Gemm.Threads;
        try
        {
            Gemm.Use512 = wide && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
            Gemm.UseFastPath = fast && savedFast;
            Gemm.Threads = threads;
            foreach (var (m, n, k) in new[] { (1, 33, 257), (2, 100, 513), (2, 3100, 300), (3, 17, 5), (7, 64, 256), (13, 100, 300),
                (16, 768, 40), (64, 65, 600), (121, 33, 70), (9, 3100, 300), (100, 3100, 260) })
            {
                var rng = new Random(m * 7919 + n * 31 + k);
                var a = MakeOperand(rng, m, k, "row");
                var b = MakeOperand(rng, k, n, "col");
                var packed = Gemm.PackBOnce(k, n, b.Data, b.Off, b.Rs, b.Cs);
                var bias = new float[n];
                for (int j = 0; j < n; j++) bias[j] = (float)(rng.NextDouble() * 4 - 2);
                int ldc = n + 5, cOff = 3;
                var c0 = new float[cOff + m * ldc + 2];
                for (int i = 0; i < c0.Length; i++) c0[i] = (float)(rng.NextDouble() * 2 - 1);
                foreach (var (accumulate, withBias, relu) in new[] { (false, true, false), (false, true, true), (true, true, true), (false, false, true) })
                {
                    var fused = (float[])c0.Clone();
                    Gemm.SgemmPackedB(m, a.Data, a.Off, a.Rs, a.Cs, packed, fused, cOff, ldc, accumulate, withBias ? bias : null, relu);
                    var expected = (float[])c0.Clone();
                    Gemm.SgemmPackedB(m, a.Data, a.Off, a.Rs, a.Cs, packed, expected, cOff, ldc, accumulate);
                    int negatives = 0;
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++)
                        {
                            ref float v = ref expected[cOff + i * ldc + j];
                            if (withBias) v += bias[j];
                            if (v < 0) negatives++;
                            if (relu) v = MathF.Max(v, 0f);
                        }
                    Assert.True(negatives > 0, "the case has negative sums for ReLU to clip");
                    for (int idx = 0; idx < c0.Length; idx++)
                        Assert.True(BitConverter.SingleToInt32Bits(fused[idx]) == BitConverter.SingleToInt32Bits(expected[idx]),
                            $"m={m} n={n} k={k} acc={accumulate} bias={withBias} relu={relu} threads={threads} wide={wide} fast={fast}: " +
                            $"flat index {idx} (row {(idx - cOff) / ldc}, column {(idx - cOff) % ldc}) fused {fused[idx]}, unfused {expected[idx]}");
                }
            }
        }
        finally
        {
            Gemm.Use512 = saved512;
            Gemm.UseFastPath = savedFast;
            Gemm.Threads = savedThreads;
        }
    }

    /// <summary>The convolution epilogue fused into the prepacked-A GEMM (residual, per-row bias, ReLU) gives the same bits as
    /// the product followed by <see cref="PackedConv2d.Epilogue"/> on each row: one and several KC blocks (the epilogue only
    /// after the last), several MC row blocks, columns past NC, narrow last tiles, zero bias entries (skipped, as
    /// unfused), offsets into bias and residual, accumulation, and the splits by columns (a thread's columns crossing NC
    /// from an offset: 7000 columns at two threads) and by row blocks.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void PackedAFusedConvEpilogueMatchesTheUnfusedOne(int threads)
    {
        if (!Gemm.UseFastPath) return;   // SgemmPacked needs the FMA path
        int savedThreads = Gemm.Threads;
        try
        {
            Gemm.Threads = threads;
            foreach (var (m, n, k) in new[] { (3, 17, 5), (7, 64, 256), (13, 100, 300), (130, 784, 64), (128, 40, 300), (64, 3100, 260), (121, 33, 70),
                (20, 7000, 100) })
            {
                var rng = new Random(m * 7919 + n * 31 + k);
                var a = MakeOperand(rng, m, k, "row");
                var packedA = Gemm.PackAOnce(m, k, a.Data, a.Off, a.Rs, a.Cs);
                var b = MakeOperand(rng, k, n, "row");
                int biasOff = 2, resOff = 5, ldc = n + 3, cOff = 4;
                var bias = new float[biasOff + m + 1];
                for (int i = 0; i < bias.Length; i++) bias[i] = i % 5 == 0 ? 0f : (float)(rng.NextDouble() * 4 - 2);
                var residual = new float[resOff + m * ldc];
                for (int i = 0; i < residual.Length; i++) residual[i] = (float)(rng.NextDouble() * 4 - 2);
                var c0 = new float[cOff + m * ldc + 2];
                for (int i = 0; i < c0.Length; i++) c0[i] = (float)(rng.NextDouble() * 2 - 1);
                foreach (var (accumulate, withBias, withResidual, relu) in new[] { (false, true, false, false), (false, true, true, true),
                    (true, true, true, true), (false, false, true, false), (false, false, false, true) })
                {
                    var fused = (float[])c0.Clone();
                    Gemm.SgemmPacked(packedA, n, b.Data, b.Off, b.Rs, b.Cs, fused, cOff, ldc, accumulate, threads,
                        withBias ? bias : null, biasOff, withResidual ? residual : null, resOff, relu);
                    var expected = (float[])c0.Clone();
                    Gemm.SgemmPacked(packedA, n, b.Data, b.Off, b.Rs, b.Cs, expected, cOff, ldc, accumulate, threads);
                    int negatives = 0;
                    for (int i = 0; i < m; i++)
                    {
                        var row = expected.AsSpan(cOff + i * ldc, n);
                        foreach (var v in row) if (v < 0) negatives++;
                        PackedConv2d.Epilogue(row, withBias ? bias[biasOff + i] : 0f, withResidual ? residual.AsSpan(resOff + i * ldc, n) : default,
                            withResidual, relu ? FusedActivation.Relu : FusedActivation.None);
                    }
                    Assert.True(negatives > 0, "the case has negative values for ReLU to clip");
                    for (int idx = 0; idx < c0.Length; idx++)
                        Assert.True(BitConverter.SingleToInt32Bits(fused[idx]) == BitConverter.SingleToInt32Bits(expected[idx]),
                            $"m={m} n={n} k={k} acc={accumulate} bias={withBias} residual={withResidual} relu={relu} threads={threads}: " +
                            $"flat index {idx} (row {(idx - cOff) / ldc}, column {(idx - cOff) % ldc}) fused {fused[idx]}, unfused {expected[idx]}");
                }
                // Operands too short for C are refused, not read past.
                var ex = Assert.Throws<ArgumentException>(() => Gemm.SgemmPacked(packedA, n, b.Data, b.Off, b.Rs, b.Cs, new float[cOff + m * ldc], cOff, ldc,
                    false, threads, new float[m - 1]));
                Assert.Contains("row bias", ex.Message);
                ex = Assert.Throws<ArgumentException>(() => Gemm.SgemmPacked(packedA, n, b.Data, b.Off, b.Rs, b.Cs, new float[cOff + m * ldc], cOff, ldc,
                    false, threads, null, 0, new float[(m - 1) * ldc + n - 1]));
                Assert.Contains("residual", ex.Message);
            }
        }
        finally
        {
            Gemm.Threads = savedThreads;
        }
    }

    /// <summary>ReLU fused into the packed-B GEMM keeps a NaN (IEEE maximum, as TensorPrimitives.Max), and a bias shorter
    /// than C's width is refused.</summary>
    [Fact]
    public void PackedBFusedReluKeepsNaNAndRefusesAShortBias()
    {
        foreach (int m in new[] { 1, 8 })
        {
            int n = 40, k = 3;
            var a = new float[m * k];
            Array.Fill(a, 1f);
            var b = new float[k * n];
            for (int j = 0; j < n; j++) b[j] = j % 3 == 0 ? -1f - j : j;   // row 0; rows 1, 2 stay 0
            b[5] = float.NaN;
            var packed = Gemm.PackBOnce(k, n, b, 0, n, 1);
            var c = new float[m * n];
            Gemm.SgemmPackedB(m, a, 0, k, 1, packed, c, 0, n, false, null, relu: true);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    float v = c[i * n + j];
                    if (j == 5) Assert.True(float.IsNaN(v), $"m={m}: column 5 should stay NaN, got {v}");
                    else Assert.Equal(j % 3 == 0 ? 0f : j, v);
                }
            var ex = Assert.Throws<ArgumentException>(() => Gemm.SgemmPackedB(m, a, 0, k, 1, packed, c, 0, n, false, new float[n - 1]));
            Assert.Contains("bias has 39 elements", ex.Message);
        }
    }

    /// <summary>B packed for one micro-panel width and run with the other (a test that switched kernels), or on the
    /// fallback: SgemmPackedB unpacks and still gives the product.</summary>
    [Fact]
    public void FallbackOfPackedB()
    {
        bool saved512 = Gemm.Use512, savedFast = Gemm.UseFastPath;
        try
        {
            var rng = new Random(5);
            int m = 9, n = 70, k = 300;
            var a = MakeOperand(rng, m, k, "row");
            var b = MakeOperand(rng, k, n, "row");
            var expected = new float[m * n];
            Gemm.Reference(m, n, k, a.Data, a.Off, a.Rs, a.Cs, b.Data, b.Off, b.Rs, b.Cs, expected, 0, n, false);
            foreach (var (packWide, runWide, runFast) in new[] { (true, false, true), (false, true, true), (true, true, false) })
            {
                Gemm.Use512 = packWide && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
                var packed = Gemm.PackBOnce(k, n, b.Data, b.Off, b.Rs, b.Cs);
                Gemm.Use512 = runWide && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
                Gemm.UseFastPath = runFast && savedFast;
                var c = new float[m * n];
                Gemm.SgemmPackedB(m, a.Data, a.Off, a.Rs, a.Cs, packed, c, 0, n, false);
                for (int i = 0; i < c.Length; i++)
                    Assert.True(Math.Abs(c[i] - expected[i]) <= 1e-4f, $"packed {packWide}, run {runWide}/{runFast}: [{i}] {c[i]} vs {expected[i]}");
                if (packed.Dense is { } dense)
                {
                    // A fallback unpacks once and keeps the copy.
                    Gemm.SgemmPackedB(m, a.Data, a.Off, a.Rs, a.Cs, packed, c, 0, n, false);
                    Assert.Same(dense, packed.Dense);
                }
                else Assert.True(Gemm.UseFastPath && packed.NR == (Gemm.Use512 ? 32 : 16), "the fast path ran, so nothing was unpacked");
            }
        }
        finally
        {
            Gemm.Use512 = saved512;
            Gemm.UseFastPath = savedFast;
        }
    }

    static float[] RunSgemm(int m, int n, int k, int seed, bool accumulate)
    {
        var rng = new Random(seed);
        var a = MakeOperand(rng, m, k, "row");
        var b = MakeOperand(rng, k, n, "col");
        var c = new float[m * n];
        for (int i = 0; i < c.Length; i++) c[i] = (float)rng.NextDouble();
        Gemm.Sgemm(m, n, k, a.Data, a.Off, a.Rs, a.Cs, b.Data, b.Off, b.Rs, b.Cs, c, 0, n, accumulate);
        return c;
    }

    [Fact]
    public void ThreadedEqualsSingleThreaded()
    {
        int saved = Gemm.Threads;
        try
        {
            // Big enough (m·n·k ≥ 2^18) to split; rows (m ≥ n) and columns (n > m). Each C element is computed by
            // the same kernel and k-blocking whichever thread owns it, so the results are bitwise equal.
            foreach (var (m, n, k) in new[] { (200, 70, 40), (37, 250, 60), (130, 131, 300) })
            foreach (var acc in new[] { false, true })
            {
                Gemm.Threads = 1;
                var serial = RunSgemm(m, n, k, m, acc);
                foreach (var threads in new[] { 2, 3, 4, 7 })
                {
                    Gemm.Threads = threads;
                    Assert.Equal(serial, RunSgemm(m, n, k, m, acc));
                }
            }
        }
        finally { Gemm.Threads = saved; }
    }

    [Fact]
    public void FallbackEqualsFastPath()
    {
        bool saved = Gemm.UseFastPath;
        if (!System.Runtime.Intrinsics.X86.Fma.IsSupported || !System.Runtime.Intrinsics.X86.Avx.IsSupported)
        {
            // A CPU without them (or DOTNET_EnableAVX2=0, DOTNET_EnableHWIntrinsic=0) has only the fallback, and must
            // not start on the fast path, whose kernels would throw PlatformNotSupportedException.
            Assert.False(saved);
            return;
        }
        try
        {
            foreach (var (m, n, k) in new[] { (1, 1, 1), (6, 16, 256), (7, 17, 257), (121, 33, 70), (300, 20, 30) })
            {
                Gemm.UseFastPath = true;
                var fast = RunSgemm(m, n, k, 5, true);
                Gemm.UseFastPath = false;
                var slow = RunSgemm(m, n, k, 5, true);
                for (int i = 0; i < fast.Length; i++)
                    Assert.True(Math.Abs(fast[i] - slow[i]) <= 1e-6 * k + 1e-5, $"m={m} n={n} k={k} [{i}]: fast {fast[i]}, fallback {slow[i]}");
            }
        }
        finally { Gemm.UseFastPath = saved; }
    }

    /// <summary>The AVX-512 6×32 tile and the AVX2 6×16 tile give the same products (where the CPU has AVX-512).</summary>
    [Fact]
    public void Avx512KernelEqualsAvx2Kernel()
    {
        bool saved = Gemm.Use512;
        try
        {
            foreach (var (m, n, k) in new[] { (3, 1, 1), (6, 32, 256), (7, 33, 257), (121, 65, 70), (13, 100, 300) })
            {
                Gemm.Use512 = false;
                var narrow = RunSgemm(m, n, k, 11, true);
                Gemm.Use512 = System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
                var wide = RunSgemm(m, n, k, 11, true);
                for (int i = 0; i < wide.Length; i++)
                    Assert.True(Math.Abs(wide[i] - narrow[i]) <= 1e-6 * k + 1e-5, $"m={m} n={n} k={k} [{i}]: 512 {wide[i]}, 256 {narrow[i]}");
            }
        }
        finally { Gemm.Use512 = saved; }
    }

    /// <summary>Tensor.Matmul in float32 (all batch paths) against a float64 triple loop over the logical values.</summary>
    [Fact]
    public void TensorMatmulLayoutsAgainstLoops()
    {
        var gen = new Generator(9);
        var cases = new (Tensor a, Tensor b)[]
        {
            (Tensor.Randn(3, 5, 7), Tensor.Randn(7, 9)),                                     // batch folded into rows
            (Tensor.Randn(3, 7, 5).MT, Tensor.Randn(7, 9)),                                  // batch of transposed blocks
            (Tensor.Randn(2, 1, 4, 6), Tensor.Randn(3, 6, 5)),                               // broadcast batch
            (Tensor.Randn(4, 2, 6).Transpose(0, 1), Tensor.Randn(2, 6, 3)),                  // permuted batch
            (Tensor.Randn(2, 3, 40, 30), Tensor.Randn(30, 20).T.Contiguous().T),            // threaded batch
            (Tensor.Randn(1, 1, 5).Expand(4, 3, 5), Tensor.Randn(4, 5, 2)),                  // expanded rows (stride 0)
            (Tensor.Randn(2, 6, 3).Unsqueeze(1), Tensor.Randn(3, 4)),                        // size-1 batch dim
            (Tensor.Randn(130, 70), Tensor.Randn(70, 40).Slice(1, 0, 40, 2)),               // strided columns
        };
        foreach (var (a, b) in cases)
        {
            var got = a.Matmul(b);
            var want = a.Double().Matmul(b.Double());   // float64 path: plain loops (Gemm.Dgemm)
            Assert.Equal(want.Shape, got.Shape);
            var g = got.ToArray<float>();
            var w = want.ToArray<double>();
            for (int i = 0; i < g.Length; i++)
                Assert.True(Math.Abs(g[i] - w[i]) <= 1e-4 * (1 + Math.Abs(w[i])), $"{ShapeUtil.Format(a.shape)}·{ShapeUtil.Format(b.shape)} [{i}]: {g[i]} vs {w[i]}");
        }
        // The float64 path itself against an explicit loop.
        var x = Tensor.Randn([3, 4], DType.Float64, gen);
        var y = Tensor.Randn([5, 4], DType.Float64, gen).T;
        var xy = x.Matmul(y).ToArray<double>();
        var xv = x.ToArray<double>();
        var yv = y.ToArray<double>();
        for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++)
        {
            double s = 0;
            for (int p = 0; p < 4; p++) s += xv[i * 4 + p] * yv[p * 5 + j];
            Assert.Equal(s, xy[i * 5 + j], 12);
        }
    }
}
