using Xunit;

namespace Nabla.Tests;

/// <summary>
/// The threaded splits of <see cref="Gemm.Sgemm"/> and the vector packing of row-major B
/// (<see cref="Gemm.UseVectorPackB"/>) against <see cref="Gemm.Reference"/> and against each other: odd sizes around the
/// register tile and the KC/MC/NC blocks, row-major, transposed and strided operands, offsets, ldc &gt; n, accumulation,
/// 1 to 3 threads, both micro-kernels, and batched Tensor.Matmul split over the batch.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public class GemmThreadingTests
{
    sealed record Operand(float[] Data, int Off, int Rs, int Cs)
    {
        public float this[int i, int j] => Data[Off + i * Rs + j * Cs];
    }

    static Operand Make(Random rng, int rows, int cols, string layout)
    {
        int off = layout == "row" ? 0 : 5;
        (int rs, int cs) = layout switch
        {
            "row" => (cols, 1),
            "col" => (1, rows),
            _ => (2 * cols + 1, 2),
        };
        var data = new float[off + (rows - 1) * rs + (cols - 1) * cs + 1];
        Array.Fill(data, float.NaN);
        for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            data[off + i * rs + j * cs] = (float)(rng.NextDouble() * 2 - 1);
        return new Operand(data, off, rs, cs);
    }

    sealed record Case(int M, int N, int K, Operand A, Operand B, float[] C0, int COff, int Ldc);

    static Case MakeCase(int m, int n, int k, string layoutA, string layoutB, int seed)
    {
        var rng = new Random(seed);
        var a = Make(rng, m, k, layoutA);
        var b = Make(rng, k, n, layoutB);
        int ldc = n + 5, cOff = 3;
        var c0 = new float[cOff + m * ldc + 2];
        for (int i = 0; i < c0.Length; i++) c0[i] = (float)(rng.NextDouble() * 2 - 1);
        return new Case(m, n, k, a, b, c0, cOff, ldc);
    }

    static float[] Run(Case t, bool accumulate, int threads, bool vectorPackB)
    {
        int savedThreads = Gemm.Threads;
        bool savedVector = Gemm.UseVectorPackB;
        try
        {
            Gemm.Threads = threads;
            Gemm.UseVectorPackB = vectorPackB;
            var c = (float[])t.C0.Clone();
            Gemm.Sgemm(t.M, t.N, t.K, t.A.Data, t.A.Off, t.A.Rs, t.A.Cs, t.B.Data, t.B.Off, t.B.Rs, t.B.Cs, c, t.COff, t.Ldc, accumulate);
            return c;
        }
        finally
        {
            Gemm.Threads = savedThreads;
            Gemm.UseVectorPackB = savedVector;
        }
    }

    static void AssertMatchesReference(Case t, bool accumulate, float[] fast, string what)
    {
        var reference = (float[])t.C0.Clone();
        Gemm.Reference(t.M, t.N, t.K, t.A.Data, t.A.Off, t.A.Rs, t.A.Cs, t.B.Data, t.B.Off, t.B.Rs, t.B.Cs, reference, t.COff, t.Ldc, accumulate);
        for (int idx = 0; idx < reference.Length; idx++)
        {
            int rel = idx - t.COff, i = rel / t.Ldc, j = rel % t.Ldc;
            if (rel < 0 || i >= t.M || j >= t.N)
            {
                Assert.True(t.C0[idx] == fast[idx], $"{what}: wrote outside C at flat index {idx}");
                continue;
            }
            double scale = accumulate ? Math.Abs(t.C0[idx]) : 0;
            for (int p = 0; p < t.K; p++) scale += Math.Abs(t.A[i, p] * t.B[p, j]);
            double tol = 2 * t.K * 6e-8 * scale + 1e-6;
            Assert.True(Math.Abs(fast[idx] - reference[idx]) <= tol, $"{what}: C[{i},{j}] = {fast[idx]}, reference {reference[idx]}");
        }
    }

    public static TheoryData<int, int, int, string, string> Shapes() => new()
    {
        // Sizes straddle MR = 6, NR = 16/32, MC = 120, KC = 256; m ≥ n splits rows, n > m columns (and see below).
        { 64, 64, 64, "row", "row" },
        { 127, 33, 257, "row", "row" },
        { 241, 47, 100, "row", "col" },
        { 121, 121, 513, "col", "row" },
        { 200, 70, 40, "strided", "strided" },
        { 130, 129, 300, "row", "col" },
        { 37, 250, 60, "row", "row" },
        { 13, 333, 129, "col", "strided" },
        // About square with a row-major A read in place: columns split although m ≥ n (2 and 3 threads).
        { 250, 200, 90, "row", "row" },
        // One or two rows of A: the GEMV path (row-major B: 128-, 16- and 1-column chunks with AVX-512, 8-column steps and a
        // scalar rest in the AVX2 kernel; threads split columns from n·k ≥ 2^17).
        { 1, 300, 129, "row", "row" },
        { 2, 1000, 200, "strided", "row" },
        { 1, 130, 400, "col", "row" },
        { 2, 77, 50, "row", "col" },
    };

    [Theory, MemberData(nameof(Shapes))]
    public void ThreadedSplitsMatchReference(int m, int n, int k, string layoutA, string layoutB)
    {
        var t = MakeCase(m, n, k, layoutA, layoutB, m * 31 + n * 7 + k);
        foreach (var acc in new[] { false, true })
        foreach (var threads in new[] { 1, 2, 3 })
            AssertMatchesReference(t, acc, Run(t, acc, threads, vectorPackB: true), $"m={m} n={n} k={k} A {layoutA} B {layoutB} acc={acc} threads={threads}");
    }

    /// <summary>
    /// Every C element is computed by the same micro-kernel over the same k-blocks whichever thread owns it, and the
    /// vector copy packs the same floats as Array.Copy, so all variants give the same bits; with either kernel (the AVX2
    /// one's 16-wide band copy included on an AVX-512 host).
    /// </summary>
    [Theory, MemberData(nameof(Shapes))]
    public void ThreadsAndPackingVariantsGiveTheSameBits(int m, int n, int k, string layoutA, string layoutB)
    {
        var t = MakeCase(m, n, k, layoutA, layoutB, m + n + k);
        bool saved = Gemm.Use512;
        try
        {
            foreach (var use512 in new[] { false, System.Runtime.Intrinsics.X86.Avx512F.IsSupported }.Distinct())
            {
                Gemm.Use512 = use512;
                foreach (var acc in new[] { false, true })
                {
                    var serial = Run(t, acc, 1, vectorPackB: false);
                    Assert.Equal(serial, Run(t, acc, 1, vectorPackB: true));
                    Assert.Equal(serial, Run(t, acc, 2, vectorPackB: true));
                    Assert.Equal(serial, Run(t, acc, 3, vectorPackB: false));
                }
            }
        }
        finally { Gemm.Use512 = saved; }
    }

    /// <summary>Both micro-kernels (AVX-512 6×32 and AVX2 6×16: NR changes the packed B layout and the vector copy count).</summary>
    [Fact]
    public void ThreadedSplitWithBothKernels()
    {
        bool saved = Gemm.Use512;
        try
        {
            foreach (var use512 in new[] { false, System.Runtime.Intrinsics.X86.Avx512F.IsSupported })
            {
                Gemm.Use512 = use512;
                var t = MakeCase(157, 75, 270, "row", "row", use512 ? 1 : 2);
                AssertMatchesReference(t, true, Run(t, true, 2, vectorPackB: true), $"use512={use512}");
                AssertMatchesReference(t, false, Run(t, false, 1, vectorPackB: true), $"use512={use512}, 1 thread");
            }
        }
        finally { Gemm.Use512 = saved; }
    }

    /// <summary>B wider than one NC = 3072 block, split over threads by rows and by columns.</summary>
    [Fact]
    public void ThreadedSplitBeyondNcBlock()
    {
        var t = MakeCase(3200, 3100, 3, "row", "row", 4);
        AssertMatchesReference(t, false, Run(t, false, 2, vectorPackB: true), "m=3200 n=3100 k=3");
        var u = MakeCase(40, 3090, 20, "col", "row", 5);
        AssertMatchesReference(u, true, Run(u, true, 2, vectorPackB: true), "m=40 n=3090 k=20");
    }

    /// <summary>
    /// A batch of mid-sized products (12 × 128×64·64×128, attention scores) runs one matrix per thread; the result equals
    /// the one-thread result bit for bit and a float64 loop within rounding.
    /// </summary>
    [Fact]
    public void BatchedMatmulSplitOverTheBatch()
    {
        int saved = Gemm.Threads;
        try
        {
            var gen = new Generator(3);
            var a = Tensor.Randn([12, 128, 64], DType.Float32, gen);
            var b = Tensor.Randn([12, 64, 128], DType.Float32, gen);
            Gemm.Threads = 1;
            var one = a.Matmul(b).ToArray<float>();
            Gemm.Threads = 2;
            var two = a.Matmul(b).ToArray<float>();
            Assert.Equal(one, two);
            var av = a.ToArray<float>();
            var bv = b.ToArray<float>();
            foreach (var (z, i, j) in new[] { (0, 0, 0), (5, 77, 3), (11, 127, 127), (7, 64, 100) })
            {
                double s = 0;
                for (int p = 0; p < 64; p++) s += (double)av[(z * 128 + i) * 64 + p] * bv[(z * 64 + p) * 128 + j];
                Assert.True(Math.Abs(two[(z * 128 + i) * 128 + j] - s) <= 1e-4 * (1 + Math.Abs(s)), $"[{z},{i},{j}] = {two[(z * 128 + i) * 128 + j]}, loop {s}");
            }
        }
        finally { Gemm.Threads = saved; }
    }
}
