using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Numerics.Tensors;

namespace Nabla;

/// <summary>
/// float32 GEMM: C[M,N] (+)= A[M,K]·B[K,N] with any strides for A and B. Cache-blocked (KC×NC panels of B,
/// MC×KC blocks of A), packed into micro-panels, and computed by a 6×32 (AVX-512) or 6×16 (AVX2) register-tile FMA
/// micro-kernel. Large problems are split across threads by rows or columns of C. <see cref="Reference"/> is the plain
/// triple loop every path is tested against.
/// </summary>
internal static unsafe partial class Gemm
{
    const int MR = 6, KC = 256, MC = 120, NC = 3072;

    /// <summary>Register-tile width: two vectors of 16 floats with AVX-512, of 8 floats with AVX2.</summary>
    static int NR => Use512 ? 32 : 16;

    /// <summary>Whether the 512-bit micro-kernel runs (AVX-512F). Settable by tests to compare both kernels.</summary>
    internal static bool Use512 = Avx512F.IsSupported;

    /// <summary>Threads for the kernels; defaults to the core count. Set NABLA_NUM_THREADS to override.</summary>
    internal static int Threads = DefaultThreads();

    static int DefaultThreads()
    {
        var env = Environment.GetEnvironmentVariable("NABLA_NUM_THREADS");
        return int.TryParse(env, out var t) && t > 0 ? t : Environment.ProcessorCount;
    }

    /// <summary>m·n·k from which a threaded GEMM counts as large for <see cref="WorkerPool.For"/>: 2^26, about 0.3 ms at
    /// two threads, where a sleeping thread-pool worker's wake-up would show.</summary>
    const long LargeWork = 1L << 26;

    /// <summary>Multiply-adds of a batched product split one matrix per thread from which it counts as large for
    /// <see cref="WorkerPool.For"/>: 2^23, about 40 µs at two threads, where Parallel.For's hand-off showed (12 ×
    /// 128×64·64×128, bench row at 2 threads, 13:23 UTC: 430 GFLOP/s through Parallel.For, 455 on the pool).</summary>
    internal const long LargeBatchWork = 1L << 23;

    internal static bool UseFastPath = Fma.IsSupported && Avx.IsSupported;

    public static void Sgemm(int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff, int rsB, int csB,
        float[] c, int cOff, int ldc, bool accumulate)
    {
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate) for (int i = 0; i < m; i++) Array.Clear(c, cOff + i * ldc, n);
            return;
        }
        if (!UseFastPath)
        {
            Reference(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
            return;
        }
        if (m <= 2)
        {
            Gemv(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
            return;
        }
        long work = (long)m * n * k;
        int threads = Threads;
        if (threads <= 1 || work < 1 << 18)
        {
            Serial(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
            return;
        }
        // Split the longer side of C into one range per thread, aligned to the register tile. When A is read in place
        // and C is about square, split the columns instead: each thread then packs only its own columns of B and packs
        // nothing of A, where splitting rows has every thread pack all of B (scratch harness, 2 threads, in-process
        // alternation at 13:13 UTC, with in-place A up to 1024-float rows: 512² 469.5 -> 480.2 GFLOP/s, 768³ 454.5 ->
        // 478.7, 1024² 456.4 -> 476.0; 64×768·768×3072 unchanged).
        bool splitRows = m >= n && !(ReadsAInPlace(rsA, csA) && 2L * n >= m && n >= 2 * NR * threads);
        int extent = splitRows ? m : n, align = splitRows ? MR : NR;
        int parts = Math.Min(threads, Math.Max(1, extent / align));
        if (parts <= 1)
        {
            Serial(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
            return;
        }
        int chunk = (extent + parts - 1) / parts;
        chunk = (chunk + align - 1) / align * align;
        Split(parts, chunk, extent, splitRows, m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate, work >= LargeWork);
    }

    /// <summary>The threaded part of <see cref="Sgemm"/>, a method of its own: the closure it hands to the pool is then
    /// allocated only when the call is split, not on every serial call (a lambda's captured parameters are allocated on
    /// entry to the method that declares them).</summary>
    static void Split(int parts, int chunk, int extent, bool splitRows, int m, int n, int k, float[] a, int aOff, int rsA, int csA,
        float[] b, int bOff, int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate, bool large)
    {
        WorkerPool.For(parts, parts, p =>
        {
            int start = p * chunk, len = Math.Min(chunk, extent - start);
            if (len <= 0) return;
            if (splitRows)
                Serial(len, n, k, a, aOff + start * rsA, rsA, csA, b, bOff, rsB, csB, c, cOff + start * ldc, ldc, accumulate);
            else
                Serial(m, len, k, a, aOff, rsA, csA, b, bOff + start * csB, rsB, csB, c, cOff + start, ldc, accumulate);
        }, large);
    }

    /// <summary>
    /// One or two rows of A: no packing. With row-major B each row of C is a sum of scaled rows of B (AXPY);
    /// with column-major B each element is a dot product. Columns are split across threads when large.
    /// </summary>
    static void Gemv(int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff, int rsB, int csB,
        float[] c, int cOff, int ldc, bool accumulate)
    {
        int parts = Threads > 1 && (long)n * k >= 1 << 17 ? Math.Min(Threads, Math.Max(1, n / 64)) : 1;
        GemvParts(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate, parts);
    }

    static void GemvSerial(int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff, int rsB, int csB,
        float[] c, int cOff, int ldc, bool accumulate) => GemvParts(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate, 1);

    static void GemvParts(int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff, int rsB, int csB,
        float[] c, int cOff, int ldc, bool accumulate, int parts)
    {
        int chunk = (n + parts - 1) / parts;
        // A B beyond the cache goes along its rows (GemvRowBand512); one that fits is read in 128-column strips with the
        // sums in registers (GemvRow512). Thresholds measured on the bench machine (1 MiB L2, 32 MiB L3), scratch harness,
        // 2026-11-26 12:36-12:40 UTC, GFLOP/s strips -> bands: 1 thread 512x512 (1 MiB) 60.0 -> 53.3, 768x2304 47.6 -> 52.5,
        // 3072x768 37.0 -> 50.2, 4096x4096 7.3 -> 19.3; 2 threads 768x2304 84.0 -> 74.2, 1024x4096 55.5 -> 55.7, 4096x4096
        // 13.8 -> 32.3. (Without AVX-512 the GEMV always reads along rows: GemvRowBand256.)
        bool bands = parts == 1 ? (long)n * k > 1 << 18 : (long)n * k >= 1 << 22;
        if (parts == 1) GemvRange(0, chunk, bands, m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
        else GemvSplit(parts, chunk, bands, m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
    }

    /// <summary>Whether a split GEMV with n·k of at least <see cref="LargeGemvWork"/> (B's size) counts as large for
    /// <see cref="WorkerPool.For"/> (the pool's spinning workers outside graph runs too, instead of Parallel.For's
    /// hand-off). Settable for measurements.</summary>
    /// <remarks>The eager QKV projection of one token (1×768·768×2304, about 40 µs a thread) at two threads, bench row
    /// <c>mm1x768</c>, four runs of 15 samples alternating (2026-11-27 11:57–12:00 UTC), Nabla / ORT time: 1.45 and 1.25
    /// through Parallel.For, 0.83 and 0.80 on the pool. GPT-2 decode at two threads: 530 against 518 ms.</remarks>
    internal static bool GemvOnPool = true;
    const long LargeGemvWork = 1L << 20;

    /// <summary>The threaded GEMV, apart so that its closure is allocated only when the columns are split.</summary>
    static void GemvSplit(int parts, int chunk, bool bands, int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff,
        int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate) =>
        WorkerPool.For(parts, parts, part => GemvRange(part, chunk, bands, m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate),
            large: GemvOnPool && (long)n * k >= LargeGemvWork);

    /// <summary>Columns [part·chunk, (part + 1)·chunk) of every row of C.</summary>
    static void GemvRange(int part, int chunk, bool bands, int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff,
        int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate)
    {
        int j0 = part * chunk, len = Math.Min(chunk, n - j0);
        if (len <= 0) return;
        // Row-major B with SIMD: AVX-512 strips or bands, else the AVX2 bands (also with Use512 off, as tests set it).
        bool wide = Use512 && Avx512F.IsSupported;
        if (csB == 1 && (wide || UseFastPath))
        {
            fixed (float* pa = a, pb = b, pc = c)
                for (int i = 0; i < m; i++)
                {
                    float* ar = pa + aOff + i * rsA, br = pb + bOff + j0, cr = pc + cOff + i * ldc + j0;
                    if (!wide) GemvRowBand256(k, ar, csA, br, rsB, cr, len, accumulate);
                    else if (bands) GemvRowBand512(k, ar, csA, br, rsB, cr, len, accumulate);
                    else GemvRow512(k, ar, csA, br, rsB, cr, len, accumulate);
                }
            return;
        }
        for (int i = 0; i < m; i++)
        {
            var crow = c.AsSpan(cOff + i * ldc + j0, len);
            if (csB == 1)
            {
                if (!accumulate) crow.Clear();
                for (int p = 0; p < k; p++)
                    TensorPrimitives.MultiplyAdd(b.AsSpan(bOff + p * rsB + j0, len), a[aOff + i * rsA + p * csA], crow, crow);
            }
            else
            {
                // Each element is a dot product of A's row with a column of B. A row that is contiguous is used where it
                // lies; a strided one is gathered into this thread's scratch row (grown once, no allocation per call).
                ReadOnlySpan<float> arow;
                if (csA == 1) arow = a.AsSpan(aOff + i * rsA, k);
                else
                {
                    var row = ThreadScratch.Grow(ref gemvRow, k);
                    for (int p = 0; p < k; p++) row[p] = a[aOff + i * rsA + p * csA];
                    arow = row.AsSpan(0, k);
                }
                for (int j = 0; j < len; j++)
                {
                    float s;
                    if (rsB == 1) s = TensorPrimitives.Dot<float>(arow, b.AsSpan(bOff + (j0 + j) * csB, k));
                    else
                    {
                        s = 0;
                        for (int p = 0; p < k; p++) s += arow[p] * b[bOff + p * rsB + (j0 + j) * csB];
                    }
                    crow[j] = accumulate ? crow[j] + s : s;
                }
            }
        }
    }

    /// <summary>
    /// c[0..n) (+)= Σ_p a[p·csA]·b[p·rsB + 0..n): 128 columns at a time held in eight registers over the whole k loop.
    /// (A primitive call per row of B cost ~8 ns each: LeNet's 400 → 120 layer at batch 1 took 3.8 µs.) A chunk narrower
    /// than 128 runs <see cref="GemvChunk512{TFull}"/> compiled for its count of whole vectors, plus one masked vector
    /// for the rest.
    /// </summary>
    static void GemvRow512(int k, float* a, int csA, float* b, int rsB, float* c, int n, bool accumulate)
    {
        for (int j = 0; j < n; j += 128)
        {
            int cw = Math.Min(128, n - j);
            float* bj = b + j, cj = c + j;
            switch (cw >> 4)
            {
                case 8: GemvChunk512<Full8>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
                case 7: GemvChunk512<Full7>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
                case 6: GemvChunk512<Full6>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
                case 5: GemvChunk512<Full5>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
                case 4: GemvChunk512<Full4>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
                case 3: GemvChunk512<Full3>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
                case 2: GemvChunk512<Full2>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
                case 1: GemvChunk512<Full1>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
                default: GemvChunk512<Full0>(k, a, csA, bj, rsB, cj, cw, accumulate); break;
            }
        }
    }

    /// <summary>How many whole 16-float vectors a GEMV chunk has (0 to 8), as a type argument.</summary>
    interface IFull { static abstract int Value { get; } }
    struct Full0 : IFull { public static int Value => 0; }
    struct Full1 : IFull { public static int Value => 1; }
    struct Full2 : IFull { public static int Value => 2; }
    struct Full3 : IFull { public static int Value => 3; }
    struct Full4 : IFull { public static int Value => 4; }
    struct Full5 : IFull { public static int Value => 5; }
    struct Full6 : IFull { public static int Value => 6; }
    struct Full7 : IFull { public static int Value => 7; }
    struct Full8 : IFull { public static int Value => 8; }

    /// <summary>
    /// One chunk of <paramref name="cw"/> ≤ 128 columns: <typeparamref name="TFull"/> whole vectors with plain loads, then,
    /// when cw is not a multiple of 16, one masked vector. All eight masked loads of the former version converted their
    /// vector mask to a mask register on every row: LeNet's three layers (400→120→84→10) took 12% of the samples of a
    /// 13.5 µs run, 8.4% after (perf, 14:00 UTC); the run itself moved within its noise (13.3–13.7 µs).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void GemvChunk512<TFull>(int k, float* a, int csA, float* b, int rsB, float* c, int cw, bool accumulate) where TFull : struct, IFull
    {
        int f = TFull.Value;
        bool partial = cw > 16 * f;
        var z = Vector512<float>.Zero;
        var m = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(cw - 16 * f)).AsSingle();
        float* tailC = c + 16 * f;
        Vector512<float> c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z, ct = z;
        if (accumulate)
        {
            if (f > 0) c0 = Vector512.Load(c);
            if (f > 1) c1 = Vector512.Load(c + 16);
            if (f > 2) c2 = Vector512.Load(c + 32);
            if (f > 3) c3 = Vector512.Load(c + 48);
            if (f > 4) c4 = Vector512.Load(c + 64);
            if (f > 5) c5 = Vector512.Load(c + 80);
            if (f > 6) c6 = Vector512.Load(c + 96);
            if (f > 7) c7 = Vector512.Load(c + 112);
            if (partial) ct = Avx512F.MaskLoad(tailC, m, z);
        }
        // (f = 8 is a whole chunk, so a masked rest only ever comes with f ≤ 7: c7 and ct are never both live.)
        for (int p = 0; p < k; p++, b += rsB)
        {
            var av = Vector512.Create(a[(long)p * csA]);
            if (f > 0) c0 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(b), c0);
            if (f > 1) c1 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(b + 16), c1);
            if (f > 2) c2 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(b + 32), c2);
            if (f > 3) c3 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(b + 48), c3);
            if (f > 4) c4 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(b + 64), c4);
            if (f > 5) c5 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(b + 80), c5);
            if (f > 6) c6 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(b + 96), c6);
            if (f > 7) c7 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(b + 112), c7);
            else if (partial) ct = Avx512F.FusedMultiplyAdd(av, Avx512F.MaskLoad(b + 16 * f, m, z), ct);
        }
        if (f > 0) c0.Store(c);
        if (f > 1) c1.Store(c + 16);
        if (f > 2) c2.Store(c + 32);
        if (f > 3) c3.Store(c + 48);
        if (f > 4) c4.Store(c + 64);
        if (f > 5) c5.Store(c + 80);
        if (f > 6) c6.Store(c + 96);
        if (f > 7) c7.Store(c + 112);
        if (partial) Avx512F.MaskStore(tailC, m, ct);
    }

    /// <summary>
    /// c[0..n) (+)= Σ_p a[p·csA]·b[p·rsB + 0..n) four rows of B at a time, each pass reading those rows from start to end
    /// (four sequential streams the prefetchers follow) and updating c, which stays in L1. For a B that does not fit in
    /// L2: GemvRow512's 128-column strips walk down B at a stride of a whole row, a new page every row once B is wide.
    /// </summary>
    static void GemvRowBand512(int k, float* a, int csA, float* b, int rsB, float* c, int n, bool accumulate)
    {
        if (!accumulate) new Span<float>(c, n).Clear();
        // When every row of B starts at the same offset within a cache line (a row stride of whole lines), the first h
        // columns go in one masked vector so that the loads after them start on a 64-byte boundary: a load that straddles
        // two lines costs the streaming read 7–9 % (1×768·768×2304 at 1 thread, scratch harness, 106.6–108.6 against
        // 115.7–117.4 GB/s; bench/README.md, "Session 9"). A GC array lands at no particular offset.
        int h = rsB % 16 == 0 ? Math.Min(n, (int)((64 - ((nint)b & 63)) & 63) / sizeof(float)) : 0;
        int full = h + ((n - h) & ~15);
        var head = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(h)).AsSingle();
        var tail = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(n - full)).AsSingle();
        var z = Vector512<float>.Zero;
        int p = 0;
        for (; p + 4 <= k; p += 4)
        {
            var a0 = Vector512.Create(a[(long)p * csA]);
            var a1 = Vector512.Create(a[(long)(p + 1) * csA]);
            var a2 = Vector512.Create(a[(long)(p + 2) * csA]);
            var a3 = Vector512.Create(a[(long)(p + 3) * csA]);
            float* b0 = b + (long)p * rsB, b1 = b0 + rsB, b2 = b1 + rsB, b3 = b2 + rsB;
            if (h > 0)
            {
                var s = Avx512F.FusedMultiplyAdd(a0, Avx512F.MaskLoad(b0, head, z), Avx512F.MaskLoad(c, head, z));
                s = Avx512F.FusedMultiplyAdd(a1, Avx512F.MaskLoad(b1, head, z), s);
                s = Avx512F.FusedMultiplyAdd(a2, Avx512F.MaskLoad(b2, head, z), s);
                Avx512F.MaskStore(c, head, Avx512F.FusedMultiplyAdd(a3, Avx512F.MaskLoad(b3, head, z), s));
            }
            int j = h;
            for (; j < full; j += 16)
            {
                var s = Avx512F.FusedMultiplyAdd(a0, Vector512.Load(b0 + j), Vector512.Load(c + j));
                s = Avx512F.FusedMultiplyAdd(a1, Vector512.Load(b1 + j), s);
                s = Avx512F.FusedMultiplyAdd(a2, Vector512.Load(b2 + j), s);
                Avx512F.FusedMultiplyAdd(a3, Vector512.Load(b3 + j), s).Store(c + j);
            }
            if (j < n)
            {
                var s = Avx512F.FusedMultiplyAdd(a0, Avx512F.MaskLoad(b0 + j, tail, z), Avx512F.MaskLoad(c + j, tail, z));
                s = Avx512F.FusedMultiplyAdd(a1, Avx512F.MaskLoad(b1 + j, tail, z), s);
                s = Avx512F.FusedMultiplyAdd(a2, Avx512F.MaskLoad(b2 + j, tail, z), s);
                Avx512F.MaskStore(c + j, tail, Avx512F.FusedMultiplyAdd(a3, Avx512F.MaskLoad(b3 + j, tail, z), s));
            }
        }
        for (; p < k; p++)
        {
            var av = Vector512.Create(a[(long)p * csA]);
            float* bp = b + (long)p * rsB;
            if (h > 0) Avx512F.MaskStore(c, head, Avx512F.FusedMultiplyAdd(av, Avx512F.MaskLoad(bp, head, z), Avx512F.MaskLoad(c, head, z)));
            int j = h;
            for (; j < full; j += 16) Avx512F.FusedMultiplyAdd(av, Vector512.Load(bp + j), Vector512.Load(c + j)).Store(c + j);
            if (j < n) Avx512F.MaskStore(c + j, tail, Avx512F.FusedMultiplyAdd(av, Avx512F.MaskLoad(bp + j, tail, z), Avx512F.MaskLoad(c + j, tail, z)));
        }
    }

    /// <summary>
    /// The AVX2 + FMA form of <see cref="GemvRowBand512"/>: c[0..n) (+)= Σ_p a[p·csA]·b[p·rsB + 0..n), four rows of B
    /// per pass over c (in L1), 8 columns at a time, the rest of a row in scalar FMAs in the same order. Before it, an
    /// AVX2 machine made one TensorPrimitives call per row of B.
    /// </summary>
    static void GemvRowBand256(int k, float* a, int csA, float* b, int rsB, float* c, int n, bool accumulate)
    {
        if (!accumulate) new Span<float>(c, n).Clear();
        int full = n & ~7;
        int p = 0;
        for (; p + 4 <= k; p += 4)
        {
            float s0 = a[(long)p * csA], s1 = a[(long)(p + 1) * csA], s2 = a[(long)(p + 2) * csA], s3 = a[(long)(p + 3) * csA];
            var a0 = Vector256.Create(s0);
            var a1 = Vector256.Create(s1);
            var a2 = Vector256.Create(s2);
            var a3 = Vector256.Create(s3);
            float* b0 = b + (long)p * rsB, b1 = b0 + rsB, b2 = b1 + rsB, b3 = b2 + rsB;
            int j = 0;
            for (; j < full; j += 8)
            {
                var v = Fma.MultiplyAdd(a0, Avx.LoadVector256(b0 + j), Avx.LoadVector256(c + j));
                v = Fma.MultiplyAdd(a1, Avx.LoadVector256(b1 + j), v);
                v = Fma.MultiplyAdd(a2, Avx.LoadVector256(b2 + j), v);
                Avx.Store(c + j, Fma.MultiplyAdd(a3, Avx.LoadVector256(b3 + j), v));
            }
            for (; j < n; j++)
            {
                float v = MathF.FusedMultiplyAdd(s0, b0[j], c[j]);
                v = MathF.FusedMultiplyAdd(s1, b1[j], v);
                v = MathF.FusedMultiplyAdd(s2, b2[j], v);
                c[j] = MathF.FusedMultiplyAdd(s3, b3[j], v);
            }
        }
        for (; p < k; p++)
        {
            float s0 = a[(long)p * csA];
            var av = Vector256.Create(s0);
            float* bp = b + (long)p * rsB;
            int j = 0;
            for (; j < full; j += 8) Avx.Store(c + j, Fma.MultiplyAdd(av, Avx.LoadVector256(bp + j), Avx.LoadVector256(c + j)));
            for (; j < n; j++) c[j] = MathF.FusedMultiplyAdd(s0, bp[j], c[j]);
        }
    }

    /// <summary>Single-threaded entry (the caller already runs in parallel, e.g. over a batch).</summary>
    public static void SgemmSerial(int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff, int rsB, int csB,
        float[] c, int cOff, int ldc, bool accumulate)
    {
        if (m == 0 || n == 0) return;
        if (k == 0 || !UseFastPath) { Reference(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate); return; }
        if (m <= 2) { GemvSerial(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate); return; }
        Serial(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
    }

    [ThreadStatic] static float[]? packA, packB, gemvRow;

    /// <summary>
    /// Whether a row-major A with short rows is read in place by the 512-bit kernel (six row pointers, one broadcast
    /// from each per k step) instead of packed into MR-row micro-panels. With a row stride of at most
    /// <see cref="DirectARowStride"/> floats the rows of a block sit in L1/L2 without conflicts and the packing was a
    /// large share of small products (two builds alternating, 1 thread: 128×64·64×128 212–220 → 241–242 GFLOP/s,
    /// 256³ 238–243 → 248–249; 512² and 1024² 0.5–1% faster in one process at 13:13); with long rows (an 8 KB stride at
    /// 2048²) the six streams collide in the cache and reading in place was slower (2048² 229 → 214). Settable by tests.
    /// </summary>
    internal static bool UseDirectA = true;
    const int DirectARowStride = 1024;

    /// <summary>Whether the kernels read A in place (<see cref="UseDirectA"/>). A stride of 0 (rows broadcast by Expand)
    /// stays packed: Macro takes lda = 0 to mean packed.</summary>
    static bool ReadsAInPlace(int rsA, int csA) => UseDirectA && NR == 32 && csA == 1 && rsA > 0 && rsA <= DirectARowStride;

    /// <summary>Whether row-major B micro-panels are packed with vector copies instead of Array.Copy (A/B switch for benchmarks).</summary>
    internal static bool UseVectorPackB = true;

    static void Serial(int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff, int rsB, int csB,
        float[] c, int cOff, int ldc, bool accumulate) =>
        Blocked(m, n, k, a, aOff, rsA, csA, b, bOff, rsB, csB, null, 0, c, cOff, ldc, accumulate);

    /// <summary>Whether the blocked loop over prepacked B (<see cref="SgemmPackedB"/>) prefetches each next B micro-panel during
    /// the last row tile of the current one, in blocks of at least four row tiles. Settable for A/B measurements and tests.</summary>
    /// <remarks>
    /// <c>PackedLinear</c> 768→3072 (weights 9.4 MB) at 1 thread, on and off alternated in one process, nine rounds of 31
    /// calls (scratch harness, 2026-11-27 04:40 UTC): 24–256 rows 3.5–7 % faster (median per-round ratios 0.930–0.966);
    /// 12 and 16 rows (two and three row tiles) unchanged; 4 rows (one tile, every tile prefetching) 26 % slower, hence
    /// the four-tile minimum. A second run of 15 rounds: 24–128 rows 0.930–0.964. At 2 threads (15 rounds): 24 and 32 rows
    /// 1.015 and 1.022, 64 rows 0.990, 128 rows 0.952 (an earlier 9-round run: 24 rows 1.09, 256 rows 0.92). The host's
    /// noise moved single medians by up to 30 % during these runs.
    /// </remarks>
    internal static bool PrefetchPackedB = true;

    /// <summary>
    /// The cache-blocked loop on this thread: columns [j0, j0 + n) of B times A [m, k] into C, whose column j0 is at
    /// <paramref name="cOff"/>. B is either packed here panel by panel (<paramref name="b"/>, with j0 = 0) or was packed
    /// once (<paramref name="packed"/>, with j0 and the range's panels as <see cref="PackBOnce"/> laid them out).
    /// </summary>
    /// <remarks>With <paramref name="bias"/> (indexed by B's column) or <paramref name="relu"/>, the last KC block applies
    /// the fused epilogue to each tile (<see cref="Macro"/>).</remarks>
    static void Blocked(int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[]? b, int bOff, int rsB, int csB,
        PackedB? packed, int j0, float[] c, int cOff, int ldc, bool accumulate, float[]? bias = null, bool relu = false)
    {
        packA ??= new float[MC * KC];
        if (packed is null) packB ??= new float[KC * NC];
        var pa = packA;
        var pb = packB;
        bool direct = ReadsAInPlace(rsA, csA);
        bool nextB = packed is not null && PrefetchPackedB && NR == 32;
        bool farC = (long)m * ldc > PrefetchCFloats;
        fixed (float* pA = pa, pB = pb, pC = c, aRaw = a, pP = packed?.Data, pBias = bias)
        {
            for (int jc = j0; jc < j0 + n; )
            {
                // Column blocks end at multiples of NC, where PackBOnce's panels end (for B packed here, j0 is 0).
                int nc = Math.Min(j0 + n, (jc / NC + 1) * NC) - jc;
                for (int pc = 0; pc < k; pc += KC)
                {
                    int kc = Math.Min(KC, k - pc);
                    bool acc = accumulate || pc > 0;
                    float* panel;
                    if (packed is null)
                    {
                        PackB(kc, nc, b!, bOff + pc * rsB + jc * csB, rsB, csB, pb!);
                        panel = pB;
                    }
                    else panel = pP + packed.Offsets[jc / NC, pc / KC] + (long)(jc % NC) * kc;
                    float* cBlock = pC + cOff + (jc - j0);
                    bool epilogue = pc + kc >= k && (bias != null || relu);
                    float* biasBlock = pBias == null ? null : pBias + jc;
                    for (int ic = 0; ic < m; ic += MC)
                    {
                        int mc = Math.Min(MC, m - ic);
                        if (direct)
                        {
                            Macro(mc, nc, kc, aRaw + aOff + ic * rsA + pc, panel, cBlock + ic * ldc, ldc, acc, lda: rsA,
                                epilogue: epilogue, bias: biasBlock, relu: relu, prefetchB: nextB, prefetchC: farC);
                            continue;
                        }
                        PackA(mc, kc, a, aOff + ic * rsA + pc * csA, rsA, csA, pa);
                        Macro(mc, nc, kc, pA, panel, cBlock + ic * ldc, ldc, acc, epilogue: epilogue, bias: biasBlock, relu: relu, prefetchB: nextB,
                            prefetchC: farC);
                    }
                }
                jc += nc;
            }
        }
    }

    /// <summary>Packs an MC×KC block of A into <paramref name="dst"/> from <paramref name="dOff"/> on (0 for the per-call
    /// scratch; the block's place in one array for <see cref="PackAOnce"/>).</summary>
    static void PackA(int mc, int kc, float[] a, int off, int rs, int cs, float[] dst, int dOff = 0)
    {
        int d = dOff;
        if (cs == 1 && kc > 8 && Avx.IsSupported)
        {
            // Row-major A (long rows, as the output gradient in a convolution's weight gradient): 8 columns of the
            // MR rows at a time through an in-register transpose.
            fixed (float* pa = a, pd = dst)
            {
                for (int i = 0; i < mc; i += MR, d += kc * MR)
                    PackAPanelRowMajor(Math.Min(MR, mc - i), kc, pa + off + i * rs, rs, pd + d);
            }
            return;
        }
        for (int i = 0; i < mc; i += MR)
        {
            int mr = Math.Min(MR, mc - i);
            for (int p = 0; p < kc; p++)
            {
                int src = off + i * rs + p * cs;
                for (int r = 0; r < mr; r++) dst[d + r] = a[src + r * rs];
                for (int r = mr; r < MR; r++) dst[d + r] = 0;
                d += MR;
            }
        }
    }

    /// <summary>
    /// One MR-row micro-panel of a row-major A: dst[p·MR + r] = a[r·rs + p], zero for r ≥ mr. Each 8-column block is
    /// transposed in registers and stored as eight 8-float rows at stride MR = 6; each store's last two floats are
    /// overwritten by the next one (or by the next block), so blocks run only while another column follows them and
    /// the tail is copied one element at a time.
    /// </summary>
    static void PackAPanelRowMajor(int mr, int kc, float* a, int rs, float* d)
    {
        var z = Vector256<float>.Zero;
        int p = 0;
        for (; p + 8 < kc; p += 8)
        {
            var r0 = Avx.LoadVector256(a + p);
            var r1 = mr > 1 ? Avx.LoadVector256(a + rs + p) : z;
            var r2 = mr > 2 ? Avx.LoadVector256(a + 2 * rs + p) : z;
            var r3 = mr > 3 ? Avx.LoadVector256(a + 3 * rs + p) : z;
            var r4 = mr > 4 ? Avx.LoadVector256(a + 4 * rs + p) : z;
            var r5 = mr > 5 ? Avx.LoadVector256(a + 5 * rs + p) : z;
            Transpose8x8(r0, r1, r2, r3, r4, r5, z, z, d + p * MR, MR);
        }
        for (; p < kc; p++)
            for (int r = 0; r < MR; r++) d[p * MR + r] = r < mr ? a[r * rs + p] : 0;
    }

    /// <summary>Packs a KC×NC panel of B into <paramref name="dst"/> from <paramref name="dOff"/> on (0 for the per-call
    /// scratch; the panel's place in one array for <see cref="PackBOnce"/>).</summary>
    static void PackB(int kc, int nc, float[] b, int off, int rs, int cs, float[] dst, int dOff = 0)
    {
        int d = dOff;
        if (cs == 1 && nc >= NR && UseVectorPackB && Avx.IsSupported)
        {
            int full = nc / NR * NR;
            fixed (float* ps = b, pd = dst)
            {
                if (NR == 32) PackBRowMajor<Row32>(kc, full, ps + off, rs, pd + d);
                else PackBRowMajor<Row16>(kc, full, ps + off, rs, pd + d);
            }
            if (full == nc) return;
            // The last, partial micro-panel goes through the general loop below.
            d += full * kc;
            off += full;
            nc -= full;
        }
        for (int j = 0; j < nc; j += NR)
        {
            int nr = Math.Min(NR, nc - j);
            if (cs == 1 && nr == NR)
            {
                // (Reached with the vector copies switched off or without AVX: otherwise full micro-panels of a row-major B go through
                // the bands above.)
                for (int p = 0; p < kc; p++)
                {
                    Array.Copy(b, off + p * rs + j, dst, d, NR);
                    d += NR;
                }
                continue;
            }
            if (rs == 1 && Avx.IsSupported)
            {
                // B is a transposed row-major matrix: transpose 8×8 blocks in registers.
                PackBTransposed(kc, nr, b, off + j * cs, cs, dst, d);
                d += kc * NR;
                continue;
            }
            if (rs == 1)
            {
                // B is a transposed row-major matrix: read each column as a contiguous run.
                for (int q = 0; q < NR; q++)
                {
                    if (q < nr)
                    {
                        int src = off + (j + q) * cs;
                        for (int p = 0; p < kc; p++) dst[d + p * NR + q] = b[src + p];
                    }
                    else for (int p = 0; p < kc; p++) dst[d + p * NR + q] = 0;
                }
                d += kc * NR;
                continue;
            }
            for (int p = 0; p < kc; p++)
            {
                int src = off + p * rs + j * cs;
                for (int q = 0; q < nr; q++) dst[d + q] = b[src + q * cs];
                for (int q = nr; q < NR; q++) dst[d + q] = 0;
                d += NR;
            }
        }
    }

    /// <summary>
    /// Row-major B: the <paramref name="full"/> columns (a multiple of the panel width) as micro-panels, in bands of 8 rows
    /// of B, so the reads go along the rows of B (8 streams) instead of down one column strip at a time (a new page every
    /// row when B is wide). Compiled optimized at once: at tier 0 this loop ran long enough in a cold start to need an
    /// on-stack replacement.
    /// </summary>
    /// <remarks>With the 512-bit kernel and without its prefetch: 2048² at 2 threads 453 → 473 GFLOP/s (bench/README.md,
    /// "Session 7"). The AVX2 kernel's 16-wide panels were copied one strip at a time until session 21, which took 37 % of
    /// a 64×768·768×3072 product at one thread (AVX-512 switched off with DOTNET_EnableAVX512=0, perf, 2026-11-28; B's 12 KB
    /// rows put every row of a strip on a new page). The bands against that per-panel copy, alternated in one process
    /// (scratch harness, 7–9 rounds, 04:20–04:24 UTC), time: 64×768·768×3072 0.86–0.91 at one thread and 0.89–0.96 at two,
    /// 256×768·768×3072 0.97, squares 512²–2048² 0.97–1.01.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackBRowMajor<TRow>(int kc, int full, float* src, int rs, float* dst) where TRow : struct, IPanelRow
    {
        int width = TRow.Width;
        for (int p0 = 0; p0 < kc; p0 += 8)
        {
            int pe = Math.Min(p0 + 8, kc);
            for (int j = 0; j < full; j += width)
            {
                float* s = src + (long)p0 * rs + j, o = dst + j * kc + p0 * width;
                for (int p = p0; p < pe; p++, s += rs, o += width) TRow.Copy(s, o);
            }
        }
    }

    /// <summary>One row of a B micro-panel, copied whole (a type argument of <see cref="PackBRowMajor{TRow}"/>).</summary>
    interface IPanelRow { static abstract int Width { get; } static abstract void Copy(float* s, float* o); }

    /// <summary>32 floats, the 512-bit kernel's panel width.</summary>
    struct Row32 : IPanelRow
    {
        public static int Width => 32;
        public static void Copy(float* s, float* o)
        {
            Vector512.Load(s).Store(o);
            Vector512.Load(s + 16).Store(o + 16);
        }
    }

    /// <summary>16 floats, the AVX2 kernel's panel width.</summary>
    struct Row16 : IPanelRow
    {
        public static int Width => 16;
        public static void Copy(float* s, float* o)
        {
            Avx.Store(o, Avx.LoadVector256(s));
            Avx.Store(o + 8, Avx.LoadVector256(s + 8));
        }
    }

    /// <summary>
    /// Packs one NR-wide micro-panel of a B whose columns are contiguous (rs = 1, column q at src + q·cs): full
    /// 8-column groups go through an in-register 8×8 transpose, the rest (and the zero padding past nr) element by element.
    /// </summary>
    static void PackBTransposed(int kc, int nr, float[] b, int src, int cs, float[] dst, int d)
    {
        int nrp = NR;
        fixed (float* pb = b, pd = dst)
        {
            int q0 = 0;
            for (; q0 + 8 <= nr; q0 += 8)
            {
                float* s0 = pb + src + q0 * cs;
                float* o = pd + d + q0;
                int p = 0;
                for (; p + 8 <= kc; p += 8)
                {
                    Transpose8x8(s0 + p, cs, o + p * nrp, nrp);
                }
                for (; p < kc; p++)
                    for (int q = 0; q < 8; q++) o[p * nrp + q] = s0[q * cs + p];
            }
            for (int q = q0; q < nrp; q++)
            {
                float* o = pd + d + q;
                if (q < nr)
                {
                    float* sq = pb + src + q * cs;
                    for (int p = 0; p < kc; p++) o[p * nrp] = sq[p];
                }
                else for (int p = 0; p < kc; p++) o[p * nrp] = 0;
            }
        }
    }

    /// <summary>Writes the transpose of the 8×8 block at <paramref name="s"/> (row stride ls) to <paramref name="o"/> (row stride lo).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose8x8(float* s, int ls, float* o, int lo)
    {
        var r0 = Avx.LoadVector256(s);
        var r1 = Avx.LoadVector256(s + ls);
        var r2 = Avx.LoadVector256(s + 2 * ls);
        var r3 = Avx.LoadVector256(s + 3 * ls);
        var r4 = Avx.LoadVector256(s + 4 * ls);
        var r5 = Avx.LoadVector256(s + 5 * ls);
        var r6 = Avx.LoadVector256(s + 6 * ls);
        var r7 = Avx.LoadVector256(s + 7 * ls);
        Transpose8x8(r0, r1, r2, r3, r4, r5, r6, r7, o, lo);
    }

    /// <summary>Stores the transpose of the 8×8 block whose rows are r0..r7 to <paramref name="o"/> (row stride lo).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose8x8(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, float* o, int lo)
    {
        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44);
        var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44);
        var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44);
        var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44);
        var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(o, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(o + lo, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(o + 2 * lo, Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(o + 3 * lo, Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(o + 4 * lo, Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(o + 5 * lo, Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(o + 6 * lo, Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(o + 7 * lo, Avx.Permute2x128(u3, u7, 0x31));
    }

    /// <param name="prefetchA">whether the 512-bit kernel fetches the next A micro-panel ahead: for prepacked weights, which
    /// come from DRAM when the model's weights exceed the cache and serve few columns (Winograd's 16 products on 14×14 maps:
    /// 1.01 → 0.75 ms for a 256-channel layer); A packed by the call itself is in L2 already.</param>
    /// <param name="lda">0: <paramref name="pa"/> is packed MR-row micro-panels; otherwise it is the row-major A block
    /// itself with this row stride, read in place (AVX-512 only, see <see cref="UseDirectA"/>).</param>
    /// <param name="epilogue">whether this is the last KC block of a product with a fused epilogue: each tile, once
    /// complete and still in L1, gets <paramref name="bias"/> (C's columns from the block's first on, or null) added and,
    /// with <paramref name="relu"/>, max(·, 0) applied (<see cref="BiasRelu"/>).</param>
    static void Macro(int mc, int nc, int kc, float* pa, float* pb, float* c, int ldc, bool acc, bool prefetchA = false, int lda = 0,
        bool epilogue = false, float* bias = null, bool relu = false, bool prefetchB = false, bool prefetchC = false)
    {
        float* tmp = stackalloc float[8 * 32];
        for (int j = 0; j < nc; j += NR)
        {
            int nr = Math.Min(NR, nc - j);
            // A block of up to 64 rows read in place takes 8-row tiles (see EightRows); packed micro-panels hold MR rows.
            int step = lda != 0 && mc <= 64 && EightRows ? 8 : MR;
            for (int i = 0, mr; i < mc; i += mr)
            {
                mr = Math.Min(step, mc - i);
                float* a = lda == 0 ? pa + i * kc : pa + (long)i * lda;
                float* b = pb + j * kc;
                // (An A read in place, lda ≠ 0, only ever comes with the 32-wide tile: the 16-wide kernel reads packed A.)
                if (NR == 32 || lda != 0)
                {
                    // Full width goes straight into C, the last row panel of a block with as many rows as it has (a 6-row
                    // tile into tmp for the 2 rows left of 128 cost three tiles' work for one: 128×64·64×128 at 1 thread
                    // 212 → 218 GFLOP/s without it); a narrower tile goes into tmp and is copied back below.
                    bool wide = nr == NR;
                    float* target = wide ? c + i * ldc + j : tmp;
                    int ld = wide ? ldc : NR;
                    bool add = wide && acc, pfC = wide && prefetchC;
                    if (prefetchB && mc >= 4 * MR && i + mr >= mc && j + NR < nc)
                    {
                        // The last row tile of this micro-panel fetches the next one (prepacked weights, from DRAM).
                        if (lda != 0) Tile<PrefetchB, Direct>(mr, kc, a, lda, b, target, ld, add, b + NR * kc, pfC);
                        else Tile<PrefetchB, Packed>(mr, kc, a, 0, b, target, ld, add, b + NR * kc, pfC);
                    }
                    else if (lda != 0) Tile<Direct>(mr, kc, a, lda, b, target, ld, add, pfC);
                    else if (prefetchA && mr == MR) Kernel512<Prefetch, Rows6, Packed>(kc, a, 0, b, target, ld, add, a + MR * kc, pfC);
                    else Tile<Packed>(mr, kc, a, 0, b, target, ld, add, pfC);
                    if (!wide) CopyTile(mr, nr, tmp, c + i * ldc + j, ldc, acc);
                }
                else if (mr == MR && nr == NR) Kernel(kc, a, b, c + i * ldc + j, ldc, acc);
                else
                {
                    Kernel(kc, a, b, tmp, NR, false);
                    CopyTile(mr, nr, tmp, c + i * ldc + j, ldc, acc);
                }
                if (epilogue)
                    for (int r = 0; r < mr; r++) BiasRelu(c + (i + r) * ldc + j, nr, bias == null ? null : bias + j, relu);
            }
        }
    }

    /// <summary>Rows of a narrow tile computed into <paramref name="tmp"/> (row stride NR), stored or added into C.</summary>
    static void CopyTile(int mr, int nr, float* tmp, float* c, int ldc, bool acc)
    {
        for (int r = 0; r < mr; r++)
        {
            float* dst = c + r * ldc, src = tmp + r * NR;
            int q = 0;
            for (; q + 8 <= nr; q += 8)
            {
                var v = Avx.LoadVector256(src + q);
                Avx.Store(dst + q, acc ? Avx.Add(v, Avx.LoadVector256(dst + q)) : v);
            }
            for (; q < nr; q++) dst[q] = acc ? dst[q] + src[q] : src[q];
        }
    }

    /// <summary>
    /// The fused epilogue on <paramref name="n"/> floats of one row of C: c += bias (when not null), then with
    /// <paramref name="relu"/> c = max(c, 0) as IEEE maximum (NaN stays NaN, −0 becomes +0, as TensorPrimitives.Max
    /// and the unfused path give). The same float operations in the same order as adding the bias after the product,
    /// so fusing changes no bit.
    /// </summary>
    internal static void BiasRelu(float* c, int n, float* bias, bool relu)
    {
        int q = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; q + 8 <= n; q += 8)
            {
                var v = Vector256.Load(c + q);
                if (bias != null) v += Vector256.Load(bias + q);
                if (relu) v = Vector256.Max(v, Vector256<float>.Zero);
                v.Store(c + q);
            }
        for (; q < n; q++)
        {
            float v = c[q];
            if (bias != null) v += bias[q];
            c[q] = relu ? MathF.Max(v, 0f) : v;
        }
    }

    /// <summary>
    /// The convolution epilogue on <paramref name="n"/> floats of one output row (a row of C when A holds the weights): c +=
    /// residual (when not null), then c += bias unless it is 0, then with <paramref name="relu"/> c = max(c, 0) as IEEE
    /// maximum (NaN stays NaN, −0 becomes +0), in one pass. The one implementation: <see cref="PackedConv2d.Epilogue"/> and
    /// the fused epilogue of <see cref="SgemmPacked"/> both run it, so fusing changes no bit.
    /// </summary>
    internal static void RowEpilogue(float* c, int n, float* res, float bias, bool relu)
    {
        int q = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            // 16 lanes: the 512-bit kernel's stores, read back whole.
            var bv = Vector512.Create(bias);
            for (; q + 16 <= n; q += 16)
            {
                var v = Vector512.Load(c + q);
                if (res != null) v += Vector512.Load(res + q);
                if (bias != 0f) v += bv;
                if (relu) v = Vector512.Max(v, Vector512<float>.Zero);
                v.Store(c + q);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var bv = Vector256.Create(bias);
            for (; q + 8 <= n; q += 8)
            {
                var v = Vector256.Load(c + q);
                if (res != null) v += Vector256.Load(res + q);
                if (bias != 0f) v += bv;
                if (relu) v = Vector256.Max(v, Vector256<float>.Zero);
                v.Store(c + q);
            }
        }
        for (; q < n; q++)
        {
            float v = c[q];
            if (res != null) v += res[q];
            if (bias != 0f) v += bias;
            c[q] = relu ? MathF.Max(v, 0f) : v;
        }
    }

    /// <summary>An <paramref name="mr"/>-row tile of the 512-bit kernel (no prefetch).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Tile<TA>(int mr, int kc, float* a, int lda, float* b, float* c, int ldc, bool acc, bool prefetchC = false)
        where TA : struct, IAccess =>
        Tile<NoPrefetch, TA>(mr, kc, a, lda, b, c, ldc, acc, a, prefetchC);

    /// <summary>An <paramref name="mr"/>-row tile of the 512-bit kernel with the prefetch <typeparamref name="TP"/> (of
    /// <paramref name="next"/>).</summary>
    static void Tile<TP, TA>(int mr, int kc, float* a, int lda, float* b, float* c, int ldc, bool acc, float* next,
        bool prefetchC = false) where TP : struct, IPrefetch where TA : struct, IAccess
    {
        switch (mr)
        {
            case 8: Kernel512<TP, Rows8, TA>(kc, a, lda, b, c, ldc, acc, next, prefetchC); break;
            case 7: Kernel512<TP, Rows7, TA>(kc, a, lda, b, c, ldc, acc, next, prefetchC); break;
            case 6: Kernel512<TP, Rows6, TA>(kc, a, lda, b, c, ldc, acc, next, prefetchC); break;
            case 5: Kernel512<TP, Rows5, TA>(kc, a, lda, b, c, ldc, acc, next, prefetchC); break;
            case 4: Kernel512<TP, Rows4, TA>(kc, a, lda, b, c, ldc, acc, next, prefetchC); break;
            case 3: Kernel512<TP, Rows3, TA>(kc, a, lda, b, c, ldc, acc, next, prefetchC); break;
            case 2: Kernel512<TP, Rows2, TA>(kc, a, lda, b, c, ldc, acc, next, prefetchC); break;
            default: Kernel512<TP, Rows1, TA>(kc, a, lda, b, c, ldc, acc, next, prefetchC); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel(int kc, float* a, float* b, float* c, int ldc, bool acc)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Avx.LoadVector256(b);
            var b1 = Avx.LoadVector256(b + 8);
            var a0 = Vector256.Create(a[0]);
            c00 = Fma.MultiplyAdd(a0, b0, c00); c01 = Fma.MultiplyAdd(a0, b1, c01);
            var a1 = Vector256.Create(a[1]);
            c10 = Fma.MultiplyAdd(a1, b0, c10); c11 = Fma.MultiplyAdd(a1, b1, c11);
            var a2 = Vector256.Create(a[2]);
            c20 = Fma.MultiplyAdd(a2, b0, c20); c21 = Fma.MultiplyAdd(a2, b1, c21);
            var a3 = Vector256.Create(a[3]);
            c30 = Fma.MultiplyAdd(a3, b0, c30); c31 = Fma.MultiplyAdd(a3, b1, c31);
            var a4 = Vector256.Create(a[4]);
            c40 = Fma.MultiplyAdd(a4, b0, c40); c41 = Fma.MultiplyAdd(a4, b1, c41);
            var a5 = Vector256.Create(a[5]);
            c50 = Fma.MultiplyAdd(a5, b0, c50); c51 = Fma.MultiplyAdd(a5, b1, c51);
            a += MR;
            b += NR;
        }
        Store(c, c00, c01, acc); c += ldc;
        Store(c, c10, c11, acc); c += ldc;
        Store(c, c20, c21, acc); c += ldc;
        Store(c, c30, c31, acc); c += ldc;
        Store(c, c40, c41, acc); c += ldc;
        Store(c, c50, c51, acc);
    }

    /// <summary>Whether <see cref="Kernel512{TPrefetch, TRows, TA}"/> fetches the next A micro-panel ahead, or the packed-B
    /// GEMV (<c>PanelDot32</c>) its stream (a type argument, so the JIT compiles the variant without the prefetch and its
    /// address arithmetic when it is off).</summary>
    interface IPrefetch { static abstract bool On { get; } static abstract bool B { get; } }
    struct Prefetch : IPrefetch { public static bool On => true; public static bool B => false; }
    struct NoPrefetch : IPrefetch { public static bool On => false; public static bool B => false; }
    /// <summary>Prefetch the next B micro-panel instead: at step p the two lines (32 floats) that step p of the next
    /// micro-panel reads, at <c>next + p·32</c>.</summary>
    struct PrefetchB : IPrefetch { public static bool On => true; public static bool B => true; }

    /// <summary>How many rows of the tile <see cref="Kernel512{TPrefetch, TRows, TA}"/> computes and stores (1 to MR), as a
    /// type argument: each count is compiled on its own, without the other rows' registers, loads and FMAs.</summary>
    interface IRows { static abstract int Value { get; } }
    struct Rows1 : IRows { public static int Value => 1; }
    struct Rows2 : IRows { public static int Value => 2; }
    struct Rows3 : IRows { public static int Value => 3; }
    struct Rows4 : IRows { public static int Value => 4; }
    struct Rows5 : IRows { public static int Value => 5; }
    struct Rows6 : IRows { public static int Value => 6; }
    /// <summary>Seven and eight rows: only for A read in place (packed micro-panels hold MR = 6 rows).</summary>
    struct Rows7 : IRows { public static int Value => 7; }
    struct Rows8 : IRows { public static int Value => 8; }

    /// <summary>Whether a block of A of at most 64 rows read in place takes 8-row tiles (16 accumulators; the last one
    /// shorter) instead of 6-row ones: each B micro-panel is read from L1 fewer times, and 16, 32 or 64 rows leave no short
    /// tile (16 rows ran as 6 + 6 + 4). Same bits either way.</summary>
    /// <remarks>Paired in one process, JIT tiering off (scratch harness, 2026-11-27), time with / without, prepacked
    /// ×768·768×3072: at 1 thread 16 rows 0.91–0.95, 24 rows 0.97, 32 rows 0.92, 64 rows 0.95–0.97; at 2 threads 16 rows
    /// 0.92–0.94, 32 rows 0.93, 64 rows 0.97–0.98. In blocks of 120 rows (the MC block of larger products) it was no
    /// better and sometimes worse: 256 rows 0.99–1.03, 512 rows 1.02–1.05, 2048×768·768×768 1.01–1.02; square 512² and
    /// 1024² 0.98–1.02. Settable for measurements.</remarks>
    internal static bool EightRows = true;

    /// <summary>How the kernel reads A: a packed micro-panel (element (r, p) at a[p·MR + r]) or the row-major matrix in
    /// place (at a[r·lda + p]).</summary>
    interface IAccess { static abstract bool InPlace { get; } }
    struct Packed : IAccess { public static bool InPlace => false; }
    struct Direct : IAccess { public static bool InPlace => true; }

    /// <summary>The 6×32 AVX-512 tile: 12 zmm accumulators, two B vectors and six broadcasts of A per step (fewer rows for
    /// the last panel of a block).</summary>
    /// <remarks>With <typeparamref name="TPrefetch"/> on, each k step prefetches <paramref name="next"/> + p·MR into L1 (the
    /// next A micro-panel), or with <see cref="PrefetchB"/> the two lines at <paramref name="next"/> + p·32 (the next B
    /// micro-panel). Off, the loop carries no prefetch: prefetching the line being read, as it did before, cost
    /// up to 1.5% (1 thread, in one process at 12:23 UTC: 512² 246.3 → 248.4 GFLOP/s, 1024² 234.5 → 238.1, 2048² equal;
    /// bench/README.md "Session 7"). In place, the
    /// pointers of rows past <typeparamref name="TRows"/> are formed but never read.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Kernel512<TPrefetch, TRows, TA>(int kc, float* a, int lda, float* b, float* c, int ldc, bool acc, float* next,
        bool prefetchC = false)
        where TPrefetch : struct, IPrefetch where TRows : struct, IRows where TA : struct, IAccess
    {
        float* r1 = a + lda, r2 = r1 + lda, r3 = r2 + lda, r4 = r3 + lda, r5 = r4 + lda, r6 = r5 + lda, r7 = r6 + lda;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        Vector512<float> c60 = default, c61 = default, c70 = default, c71 = default;
        if (prefetchC)
        {
            PrefetchRow(c);
            if (TRows.Value > 1) PrefetchRow(c + ldc);
            if (TRows.Value > 2) PrefetchRow(c + 2 * ldc);
            if (TRows.Value > 3) PrefetchRow(c + 3 * ldc);
            if (TRows.Value > 4) PrefetchRow(c + 4 * ldc);
            if (TRows.Value > 5) PrefetchRow(c + 5 * ldc);
            if (TRows.Value > 6) PrefetchRow(c + 6 * ldc);
            if (TRows.Value > 7) PrefetchRow(c + 7 * ldc);
        }
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            if (TPrefetch.On)
            {
                if (TPrefetch.B)
                {
                    Sse.Prefetch0(next + p * 32);
                    Sse.Prefetch0(next + p * 32 + 16);
                }
                else Sse.Prefetch0(next + p * MR);
            }
            var a0 = Vector512.Create(TA.InPlace ? a[p] : a[0]);
            c00 = Avx512F.FusedMultiplyAdd(a0, b0, c00); c01 = Avx512F.FusedMultiplyAdd(a0, b1, c01);
            if (TRows.Value > 1)
            {
                var a1 = Vector512.Create(TA.InPlace ? r1[p] : a[1]);
                c10 = Avx512F.FusedMultiplyAdd(a1, b0, c10); c11 = Avx512F.FusedMultiplyAdd(a1, b1, c11);
            }
            if (TRows.Value > 2)
            {
                var a2 = Vector512.Create(TA.InPlace ? r2[p] : a[2]);
                c20 = Avx512F.FusedMultiplyAdd(a2, b0, c20); c21 = Avx512F.FusedMultiplyAdd(a2, b1, c21);
            }
            if (TRows.Value > 3)
            {
                var a3 = Vector512.Create(TA.InPlace ? r3[p] : a[3]);
                c30 = Avx512F.FusedMultiplyAdd(a3, b0, c30); c31 = Avx512F.FusedMultiplyAdd(a3, b1, c31);
            }
            if (TRows.Value > 4)
            {
                var a4 = Vector512.Create(TA.InPlace ? r4[p] : a[4]);
                c40 = Avx512F.FusedMultiplyAdd(a4, b0, c40); c41 = Avx512F.FusedMultiplyAdd(a4, b1, c41);
            }
            if (TRows.Value > 5)
            {
                var a5 = Vector512.Create(TA.InPlace ? r5[p] : a[5]);
                c50 = Avx512F.FusedMultiplyAdd(a5, b0, c50); c51 = Avx512F.FusedMultiplyAdd(a5, b1, c51);
            }
            if (TRows.Value > 6)
            {
                var a6 = Vector512.Create(r6[p]);
                c60 = Avx512F.FusedMultiplyAdd(a6, b0, c60); c61 = Avx512F.FusedMultiplyAdd(a6, b1, c61);
            }
            if (TRows.Value > 7)
            {
                var a7 = Vector512.Create(r7[p]);
                c70 = Avx512F.FusedMultiplyAdd(a7, b0, c70); c71 = Avx512F.FusedMultiplyAdd(a7, b1, c71);
            }
            if (!TA.InPlace) a += MR;
            b += 32;
        }
        Store512(c, c00, c01, acc);
        if (TRows.Value > 1) Store512(c + ldc, c10, c11, acc);
        if (TRows.Value > 2) Store512(c + 2 * ldc, c20, c21, acc);
        if (TRows.Value > 3) Store512(c + 3 * ldc, c30, c31, acc);
        if (TRows.Value > 4) Store512(c + 4 * ldc, c40, c41, acc);
        if (TRows.Value > 5) Store512(c + 5 * ldc, c50, c51, acc);
        if (TRows.Value > 6) Store512(c + 6 * ldc, c60, c61, acc);
        if (TRows.Value > 7) Store512(c + 7 * ldc, c70, c71, acc);
    }

    /// <summary>The 512-bit kernel prefetches its C tile's lines when it starts, when the rows this thread computes span
    /// more than this many floats of C (rows × row stride; a row split halves it): C is read (accumulating over KC blocks)
    /// and written at the tile's end, and a C that does not stay in the caches is otherwise fetched there, with nothing
    /// left to overlap it. Settable for measurements (<see cref="long.MaxValue"/> turns it off) and tests (0 turns it on
    /// everywhere); it changes no bit. The prepacked-A GEMM (<see cref="SgemmPacked"/>) does not prefetch C.</summary>
    /// <remarks>Scratch harness (<c>Gemm.Sgemm</c> via reflection, on and off alternated per round, 11 rounds, JIT tiering
    /// off), 2026-11-27 21:15–21:19 UTC on a quiet host (probe: FMA 259 GFLOP/s a core): 2048² 226.0 → 233.0 GFLOP/s at one
    /// thread (time 0.968, then 0.980) and 433.9 → 451.6 at two (0.967, 0.967). The first version prefetched every C:
    /// 1024×2048·2048×1024 read 0.988 / 0.983 with it (the limit leaves it out: 2^20 floats, not over), and 256², 512²,
    /// 1024² and 64×768·768×3072 1.00–1.01 (no gain while C stays in L2 or the small last-level cache), hence the limit:
    /// 2^20 floats, 4 MB. Packed-B products over the limit (512×768·768×3072 and larger) prefetch too; see bench/README.md,
    /// "Session 18".</remarks>
    internal static long PrefetchCFloats = 1L << 20;

    /// <summary>The lines of one 32-float row of a C tile (three when it straddles them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchRow(float* c)
    {
        Sse.Prefetch0(c);
        Sse.Prefetch0(c + 16);
        Sse.Prefetch0(c + 31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store512(float* c, Vector512<float> v0, Vector512<float> v1, bool acc)
    {
        if (acc)
        {
            v0 += Vector512.Load(c);
            v1 += Vector512.Load(c + 16);
        }
        v0.Store(c);
        v1.Store(c + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(float* c, Vector256<float> v0, Vector256<float> v1, bool acc)
    {
        if (acc)
        {
            v0 = Avx.Add(v0, Avx.LoadVector256(c));
            v1 = Avx.Add(v1, Avx.LoadVector256(c + 8));
        }
        Avx.Store(c, v0);
        Avx.Store(c + 8, v1);
    }

    /// <summary>The readable reference: C (+)= A·B with a float accumulator per output.</summary>
    public static void Reference(int m, int n, int k, float[] a, int aOff, int rsA, int csA, float[] b, int bOff, int rsB, int csB,
        float[] c, int cOff, int ldc, bool accumulate)
    {
        for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
        {
            float s = 0;
            for (int p = 0; p < k; p++) s += a[aOff + i * rsA + p * csA] * b[bOff + p * rsB + j * csB];
            ref float dst = ref c[cOff + i * ldc + j];
            dst = accumulate ? dst + s : s;
        }
    }

    /// <summary>float64 GEMM (used by gradient checks): i-p-j loops over contiguous rows of C.</summary>
    public static void Dgemm(int m, int n, int k, double[] a, int aOff, int rsA, int csA, double[] b, int bOff, int rsB, int csB,
        double[] c, int cOff, int ldc, bool accumulate)
    {
        for (int i = 0; i < m; i++)
        {
            var row = c.AsSpan(cOff + i * ldc, n);
            if (!accumulate) row.Clear();
            for (int p = 0; p < k; p++)
            {
                double av = a[aOff + i * rsA + p * csA];
                int bo = bOff + p * rsB;
                for (int j = 0; j < n; j++) row[j] += av * b[bo + j * csB];
            }
        }
    }
}
