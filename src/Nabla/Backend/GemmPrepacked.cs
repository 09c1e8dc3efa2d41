using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nabla;

/// <summary>
/// A constant left operand A [M, K] packed once into the GEMM's A-block layout (MC×KC blocks of MR-row micro-panels,
/// zero-padded to MR rows), so an inference kernel that multiplies the same weights by many right operands skips
/// packing A on every call. <see cref="Gemm.SgemmPacked"/> consumes it.
/// </summary>
internal sealed class PackedA
{
    public required int M { get; init; }
    public required int K { get; init; }
    public required float[] Data { get; init; }
    /// <summary>Offset of block (pc / KC, ic / MC) in <see cref="Data"/>.</summary>
    public required int[,] Offsets { get; init; }
}

internal static unsafe partial class Gemm
{
    /// <summary>Packs A [m, k] (element (i, p) at off + i·rs + p·cs) once for <see cref="SgemmPacked"/>.</summary>
    public static PackedA PackAOnce(int m, int k, float[] a, int off, int rs, int cs)
    {
        int kBlocks = (k + KC - 1) / KC, mBlocks = (m + MC - 1) / MC;
        var offsets = new int[kBlocks, mBlocks];
        long total = 0;
        for (int pb = 0; pb < kBlocks; pb++)
            for (int ib = 0; ib < mBlocks; ib++)
            {
                int kc = Math.Min(KC, k - pb * KC), mc = Math.Min(MC, m - ib * MC);
                offsets[pb, ib] = checked((int)total);
                total += (long)(mc + MR - 1) / MR * MR * kc;
            }
        var data = new float[checked((int)total)];
        for (int pb = 0; pb < kBlocks; pb++)
            for (int ib = 0; ib < mBlocks; ib++)
                PackA(Math.Min(MC, m - ib * MC), Math.Min(KC, k - pb * KC), a, off + ib * MC * rs + pb * KC * cs, rs, cs, data, offsets[pb, ib]);
        return new PackedA { M = m, K = k, Data = data, Offsets = offsets };
    }

    /// <summary>The row-major [M, K] matrix that <paramref name="a"/> was packed from (for kernels that lay the same
    /// constant out another way on first use, so the model keeps one copy of it until then).</summary>
    public static float[] UnpackA(PackedA a) =>
        UnpackA(a, new float[(long)a.M * a.K is var len && len <= int.MaxValue ? (int)len : throw new NablaException("UnpackA: matrix too large")]);

    /// <summary>Unpacks into <paramref name="dst"/> (at least M·K long, e.g. a rented array), row-major [M, K].</summary>
    public static float[] UnpackA(PackedA a, float[] dst)
    {
        int m = a.M, k = a.K;
        if ((long)m * k > dst.Length) throw new ArgumentException($"UnpackA: {dst.Length} floats cannot hold {m}×{k}", nameof(dst));
        for (int pb = 0; pb * KC < k; pb++)
            for (int ib = 0; ib * MC < m; ib++)
            {
                int kc = Math.Min(KC, k - pb * KC), mc = Math.Min(MC, m - ib * MC), d = a.Offsets[pb, ib];
                for (int i = 0; i < mc; i += MR, d += MR * kc)
                    for (int r = 0, mr = Math.Min(MR, mc - i); r < mr; r++)
                    {
                        int row = (ib * MC + i + r) * k + pb * KC;
                        for (int p = 0; p < kc; p++) dst[row + p] = a.Data[d + p * MR + r];
                    }
            }
        return dst;
    }

    /// <summary>
    /// C[M, n] (+)= A·B with A prepacked (<see cref="PackAOnce"/>); B and C as in <see cref="Sgemm"/>. Needs the fast
    /// path (<see cref="UseFastPath"/>); <paramref name="threads"/> &gt; 1 splits C by columns, or by row blocks when C
    /// is narrow.
    /// </summary>
    /// <remarks>With <paramref name="rowBias"/>, <paramref name="residual"/> or <paramref name="relu"/>, each MC×NC block of C
    /// gets the epilogue of a convolution whose output channels are A's rows once its last KC block is done, on the thread
    /// that computed it (<see cref="RowEpilogue"/>): C[i, j] += residual[resOff + i·ldc + j], then += rowBias[biasOff + i] (unless 0), then
    /// max(·, 0). Unfused, the caller's pass over C ran on one thread after the split product and read lines the other
    /// core had written.</remarks>
    public static void SgemmPacked(PackedA a, int n, float[] b, int bOff, int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate, int threads,
        float[]? rowBias = null, int biasOff = 0, float[]? residual = null, int resOff = 0, bool relu = false)
    {
        var ep = new RowEpilogueArgs(rowBias, biasOff, residual, resOff, relu);
        if (!UseFastPath) throw new InvalidOperationException("SgemmPacked needs the FMA fast path");
        int m = a.M, k = a.K;
        if (m == 0 || n == 0 || k == 0) throw new ArgumentException($"SgemmPacked: empty product {m}x{k}x{n}");
        // The epilogue reads through pointers: operands too short are refused here, not read past.
        if (rowBias is not null && (biasOff < 0 || (long)biasOff + m > rowBias.Length))
            throw new ArgumentException($"SgemmPacked: row bias of {rowBias.Length} elements from {biasOff} is shorter than C's {m} rows");
        if (residual is not null && (resOff < 0 || resOff + (long)(m - 1) * ldc + n > residual.Length))
            throw new ArgumentException($"SgemmPacked: residual of {residual.Length} elements from {resOff} does not cover C's {m}x{n} with row stride {ldc}");
        int mBlocks = (m + MC - 1) / MC;
        if (threads <= 1 || (long)m * n * k < 1 << 18)
        {
            PackedRange(a, 0, mBlocks, 0, n, b, bOff, rsB, csB, c, cOff, ldc, accumulate, ep);
            return;
        }
        PackedSplit(a, mBlocks, n, b, bOff, rsB, csB, c, cOff, ldc, accumulate, threads, ep);
    }

    /// <summary>The micro-panel width of the layout <see cref="SgemmPackedAB"/> reads (the kernel's NR: 32 with AVX-512, else
    /// 16). Read it once per product: tests switch kernels between calls.</summary>
    internal static int PanelWidth => NR;

    /// <summary>Floats of a [k, n] B in the layout of <see cref="SgemmPackedAB"/>, for panels <paramref name="nr"/> wide.</summary>
    internal static long PanelsLength(int k, int n, int nr) => k * PaddedColumns(n, nr);

    /// <summary>n rounded up to whole panels <paramref name="nr"/> wide.</summary>
    static long PaddedColumns(int n, int nr) => (n + nr - 1) / nr * (long)nr;

    /// <summary>
    /// Where row <paramref name="row"/> of a [k, n] B starts in the layout <see cref="SgemmPackedAB"/> reads (the one
    /// <see cref="PackB"/> writes per KC block, the blocks one after another): element (row, j) is at the returned offset
    /// + (j / nr)·<paramref name="panelStride"/> + j % nr. Columns past n up to the panel's width are read and their
    /// products dropped, so they need no zeros.
    /// </summary>
    internal static long PanelRowOffset(int k, int n, int nr, int row, out int panelStride)
    {
        int block = row / KC, kc = Math.Min(KC, k - block * KC);
        panelStride = nr * kc;
        return block * KC * PaddedColumns(n, nr) + (long)(row - block * KC) * nr;
    }

    /// <summary>
    /// C[M, n] = A·B on this thread with A prepacked (<see cref="PackAOnce"/>) and B already in micro-panels
    /// (<see cref="PanelRowOffset"/>, <paramref name="nr"/> = the <see cref="PanelWidth"/> it was written for): a producer
    /// that writes B in that layout, as Winograd's input transform does, saves the product its packing pass.
    /// </summary>
    public static void SgemmPackedAB(PackedA a, int n, int nr, float[] pb, long pbOff, float[] c, int cOff, int ldc)
    {
        if (!UseFastPath) throw new InvalidOperationException("SgemmPackedAB needs the FMA fast path");
        int m = a.M, k = a.K;
        if (m == 0 || n == 0 || k == 0) throw new ArgumentException($"SgemmPackedAB: empty product {m}x{k}x{n}");
        if (nr != NR) throw new ArgumentException($"SgemmPackedAB: B was laid out in panels of {nr}, the kernel reads {NR}");
        if (pbOff < 0 || pbOff + PanelsLength(k, n, nr) > pb.Length)
            throw new ArgumentException($"SgemmPackedAB: B of {pb.Length} floats from {pbOff} is shorter than {k}x{n} in panels of {nr}");
        PackedRange(a, 0, (m + MC - 1) / MC, 0, n, null!, 0, 0, 0, c, cOff, ldc, false, default, pb, pbOff);
    }

    /// <summary>The row epilogue's operands for <see cref="SgemmPacked"/> (all null / false: none).</summary>
    readonly record struct RowEpilogueArgs(float[]? RowBias, int BiasOff, float[]? Residual, int ResOff, bool Relu)
    {
        public bool Any => RowBias is not null || Residual is not null || Relu;
    }

    /// <summary>The threaded part of <see cref="SgemmPacked"/>, a method of its own so that a call on one thread allocates
    /// no closure.</summary>
    static void PackedSplit(PackedA a, int mBlocks, int n, float[] b, int bOff, int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate, int threads,
        RowEpilogueArgs ep)
    {
        int colParts = Math.Min(threads, n / (2 * NR));
        if (colParts >= threads || mBlocks < 2)
        {
            int parts = Math.Max(1, colParts);
            int chunk = ((n + parts - 1) / parts + NR - 1) / NR * NR;
            WorkerPool.For(parts, parts, p =>
            {
                int start = p * chunk, len = Math.Min(chunk, n - start);
                if (len > 0) PackedRange(a, 0, mBlocks, start, len, b, bOff, rsB, csB, c, cOff, ldc, accumulate, ep);
            });
        }
        else
        {
            int parts = Math.Min(threads, mBlocks);
            WorkerPool.For(parts, parts, p =>
            {
                int from = mBlocks * p / parts, to = mBlocks * (p + 1) / parts;
                if (to > from) PackedRange(a, from, to, 0, n, b, bOff, rsB, csB, c, cOff, ldc, accumulate, ep);
            });
        }
    }

    /// <summary>Row blocks [ibFrom, ibTo) of C times columns [j0, j0 + n), on this thread.</summary>
    /// <remarks>With <paramref name="prepacked"/>, B is read in place from it (<see cref="SgemmPackedAB"/>, with j0 = 0)
    /// and <paramref name="b"/> is not used.</remarks>
    static void PackedRange(PackedA a, int ibFrom, int ibTo, int j0, int n, float[] b, int bOff, int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate,
        RowEpilogueArgs ep, float[]? prepacked = null, long ppOff = 0)
    {
        int m = a.M, k = a.K;
        if (prepacked is null) packB ??= new float[KC * NC];
        var pbuf = packB;
        fixed (float* pA = a.Data, pB = pbuf, pC = c, pBias = ep.RowBias, pRes = ep.Residual, pPre = prepacked)
        {
            for (int jc = 0; jc < n; jc += NC)
            {
                int nc = Math.Min(NC, n - jc);
                for (int pc = 0, pbIdx = 0; pc < k; pc += KC, pbIdx++)
                {
                    int kc = Math.Min(KC, k - pc);
                    float* panel = pB;
                    // (NC is a multiple of NR, so column jc starts micro-panel jc / NR of the KC block at row pc.)
                    if (pPre != null) panel = pPre + ppOff + PanelRowOffset(k, n, NR, pc, out int panelStride) + (long)(jc / NR) * panelStride;
                    else PackB(kc, nc, b, bOff + pc * rsB + (j0 + jc) * csB, rsB, csB, pbuf!);
                    for (int ib = ibFrom; ib < ibTo; ib++)
                    {
                        int ic = ib * MC, mc = Math.Min(MC, m - ic);
                        float* cBlock = pC + cOff + ic * ldc + j0 + jc;
                        Macro(mc, nc, kc, pA + a.Offsets[pbIdx, ib], panel, cBlock, ldc, accumulate || pc > 0, prefetchA: true);
                        // The epilogue on this block of C (at most MC × NC) once its last KC block is in: per tile,
                        // right after the kernel's stores, it cost more than a pass over the whole product (1×1 stride-2
                        // 64→128 layer on 56×56 at one thread: 83.6 against 75.9 µs).
                        if (ep.Any && pc + kc >= k)
                            for (int r = 0; r < mc; r++)
                                RowEpilogue(cBlock + (long)r * ldc, nc, pRes == null ? null : pRes + ep.ResOff + (long)(ic + r) * ldc + j0 + jc,
                                    pBias == null ? 0f : pBias[ep.BiasOff + ic + r], ep.Relu);
                    }
                }
            }
        }
    }
}

/// <summary>
/// A constant right operand B [K, N] (an inference layer's weight) packed once into the GEMM's B-panel layout: for each
/// NC-column block and KC-row block, <see cref="NR"/>-column micro-panels of KC rows, the last one zero-padded. Packing
/// B was 7–34 % of a call's time for the shapes of a transformer's linear layers at a few rows (bench/README.md,
/// "Session 9"); <see cref="Gemm.SgemmPackedB"/> skips it, and at two threads both threads read the one copy.
/// </summary>
internal sealed class PackedB
{
    public required int K { get; init; }
    public required int N { get; init; }
    /// <summary>The micro-panel width it was packed for (32 with the AVX-512 kernel, 16 otherwise).</summary>
    public required int NR { get; init; }
    public required float[] Data { get; init; }
    /// <summary>Offset of panel (jc / NC, pc / KC) in <see cref="Data"/>.</summary>
    public required int[,] Offsets { get; init; }
    /// <summary>The row-major [K, N] matrix, made on first use by the fallback (a CPU without FMA, or a kernel width other
    /// than the one B was packed for) and kept, so that such a machine unpacks once, not on every call.</summary>
    internal float[]? Dense;
}

internal static unsafe partial class Gemm
{
    /// <summary>Packs B [k, n] (element (p, j) at off + p·rs + j·cs) once for <see cref="SgemmPackedB"/>.</summary>
    public static PackedB PackBOnce(int k, int n, float[] b, int off, int rs, int cs)
    {
        int nr = NR, jBlocks = (n + NC - 1) / NC, kBlocks = (k + KC - 1) / KC;
        var offsets = new int[jBlocks, kBlocks];
        long total = 0;
        for (int jb = 0; jb < jBlocks; jb++)
            for (int pb = 0; pb < kBlocks; pb++)
            {
                int nc = Math.Min(NC, n - jb * NC), kc = Math.Min(KC, k - pb * KC);
                offsets[jb, pb] = total <= int.MaxValue - 16 ? (int)total : throw new NablaException($"PackBOnce: a {k}x{n} matrix is too large to pack");
                total += (long)(nc + nr - 1) / nr * nr * kc;
            }
        // Pinned and started on a 64-byte boundary, so that no 512-bit load of a micro-panel row straddles two cache lines
        // (a GC array is only 8-byte aligned, and where a large one lands differs from run to run). The start is folded
        // into the offsets. Unaligned, one row times 768×3072 took 97.7–98.9 µs in PackedLinear; aligned, 79.9
        // (bench/README.md, "Session 9").
        if (total > Array.MaxLength - 16) throw new NablaException($"PackBOnce: a {k}x{n} matrix is too large to pack");
        var data = GC.AllocateUninitializedArray<float>((int)total + 16, pinned: true);
        int start;
        fixed (float* p = data) start = (int)((64 - ((nint)p & 63)) & 63) / sizeof(float);
        for (int jb = 0; jb < jBlocks; jb++)
            for (int pb = 0; pb < kBlocks; pb++) offsets[jb, pb] += start;
        for (int jb = 0; jb < jBlocks; jb++)
            for (int pb = 0; pb < kBlocks; pb++)
                PackB(Math.Min(KC, k - pb * KC), Math.Min(NC, n - jb * NC), b, off + pb * KC * rs + jb * NC * cs, rs, cs, data, offsets[jb, pb]);
        return new PackedB { K = k, N = n, NR = nr, Data = data, Offsets = offsets };
    }

    /// <summary>The row-major [K, N] matrix that <paramref name="b"/> was packed from.</summary>
    public static float[] UnpackB(PackedB b)
    {
        int k = b.K, n = b.N, nr = b.NR;
        var dst = new float[(long)k * n is var len && len <= Array.MaxLength ? (int)len : throw new NablaException("UnpackB: matrix too large")];
        for (int jb = 0; jb * NC < n; jb++)
            for (int pb = 0; pb * KC < k; pb++)
            {
                int nc = Math.Min(NC, n - jb * NC), kc = Math.Min(KC, k - pb * KC), d = b.Offsets[jb, pb];
                for (int j = 0; j < nc; j += nr, d += nr * kc)
                    for (int p = 0; p < kc; p++)
                        for (int q = 0, w = Math.Min(nr, nc - j); q < w; q++)
                            dst[(pb * KC + p) * n + jb * NC + j + q] = b.Data[d + p * nr + q];
            }
        return dst;
    }

    /// <summary>
    /// C[m, N] (+)= A[m, K]·B with B packed once (<see cref="PackBOnce"/>); A and C as in <see cref="Sgemm"/>. One or two
    /// rows run down each micro-panel (a sequential read of B); more split C's rows across threads when there are enough
    /// of them to balance, else its columns, and every thread reads the same packed B. Without the fast path, or when B
    /// was packed for the other micro-panel width (a test that switched kernels), it unpacks B once (kept in
    /// <see cref="PackedB.Dense"/>) and calls Sgemm.
    /// </summary>
    /// <param name="bias">[N] or null: added to every row of C after the product (C = A·B + bias, or C + A·B + bias when
    /// accumulating), fused into the kernels' last pass over each tile rather than a second pass over C.</param>
    /// <param name="relu">then C = max(C, 0) in the same place.</param>
    public static void SgemmPackedB(int m, float[] a, int aOff, int rsA, int csA, PackedB b, float[] c, int cOff, int ldc, bool accumulate,
        float[]? bias = null, bool relu = false)
    {
        int n = b.N, k = b.K;
        if (m == 0 || n == 0) return;
        if (bias is not null && bias.Length < n) throw new ArgumentException($"SgemmPackedB: bias has {bias.Length} elements, C has {n} columns");
        if (!UseFastPath || b.NR != NR || (b.NR == 32 && !Avx512F.IsSupported) || k == 0)
        {
            var dense = Volatile.Read(ref b.Dense);
            if (dense is null) Volatile.Write(ref b.Dense, dense = UnpackB(b));   // two threads may both unpack; either copy serves
            Sgemm(m, n, k, a, aOff, rsA, csA, dense, 0, n, 1, c, cOff, ldc, accumulate);
            if (bias is not null || relu)
                fixed (float* pc = c, pBias = bias)
                    for (int i = 0; i < m; i++) BiasRelu(pc + cOff + (long)i * ldc, n, pBias, relu);
            return;
        }
        int threads = Threads;
        if (m <= 2)
        {
            int panels = (n + b.NR - 1) / b.NR;
            int parts = threads > 1 && (long)n * k >= 1 << 17 ? Math.Min(threads, panels) : 1;
            if (parts <= 1) PackedGemvRange(0, panels, m, a, aOff, rsA, csA, b, c, cOff, ldc, accumulate, bias, relu);
            else PackedGemvSplit(parts, panels, m, a, aOff, rsA, csA, b, c, cOff, ldc, accumulate, bias, relu);
            return;
        }
        if (threads <= 1 || (long)m * n * k < 1 << 18)
        {
            Blocked(m, n, k, a, aOff, rsA, csA, null, 0, 0, 0, b, 0, c, cOff, ldc, accumulate, bias, relu);
            return;
        }
        PackedBSplit(m, n, k, a, aOff, rsA, csA, b, c, cOff, ldc, accumulate, threads, (long)m * n * k >= LargeWork, bias, relu);
    }

    /// <summary>Rows of C per thread above which <see cref="PackedBSplit"/> splits rows rather than columns.</summary>
    /// <remarks>
    /// Split by rows, every thread streams all of the packed weights from L3 or DRAM; split by columns, each streams its
    /// own part of them, and with A too long to read in place each packs all of A. Paired in one process at 2 threads, JIT
    /// tiering off (scratch harness, 2026-11-27 11:30–11:34 UTC), columns / rows time: 96×768·768×3072 0.81, 128 rows 0.82,
    /// 256 rows 0.83, 512 rows 0.94; 128×3072·3072×768 0.87, 512 rows 1.01; 128×768·768×768 0.88, 512 rows 0.96; but
    /// 1024×768·768×768 1.03, 2048×768·768×3072 1.03 and 2048×3072·3072×768 1.06. Until then rows were split from 96 on.
    /// </remarks>
    const int RowSplitRows = 256;

    /// <summary>The threaded part of <see cref="SgemmPackedB"/>. Rows when each thread gets more than
    /// <see cref="RowSplitRows"/> of them or when there are fewer than two micro-panels per thread, else whole micro-panels
    /// of columns; each part packs only its own rows of A.</summary>
    static void PackedBSplit(int m, int n, int k, float[] a, int aOff, int rsA, int csA, PackedB b, float[] c, int cOff, int ldc,
        bool accumulate, int threads, bool large, float[]? bias, bool relu)
    {
        int panels = (n + b.NR - 1) / b.NR;
        bool rows = m > RowSplitRows * threads || panels < 2 * threads;
        int parts = rows ? Math.Min(threads, Math.Max(1, m / MR)) : threads;
        WorkerPool.For(parts, parts, p =>
        {
            if (rows)
            {
                int chunk = ((m + parts - 1) / parts + MR - 1) / MR * MR, i0 = p * chunk, len = Math.Min(chunk, m - i0);
                if (len > 0) Blocked(len, n, k, a, aOff + i0 * rsA, rsA, csA, null, 0, 0, 0, b, 0, c, cOff + i0 * ldc, ldc, accumulate, bias, relu);
            }
            else
            {
                int from = panels * p / parts, to = panels * (p + 1) / parts;
                int j0 = from * b.NR, len = Math.Min(n, to * b.NR) - j0;
                if (len > 0) Blocked(m, len, k, a, aOff, rsA, csA, null, 0, 0, 0, b, j0, c, cOff + j0, ldc, accumulate, bias, relu);
            }
        }, large);
    }

    /// <summary>Whether the split GEMV over packed B (<see cref="PackedGemvSplit"/>) prefetches the micro-panels
    /// <see cref="GemvAhead"/> floats (4 KB) ahead of what it reads: every line of the stream, into L1. Settable for
    /// measurements; it changes no bit.</summary>
    /// <remarks>Scratch harness (<c>SgemmPackedB</c> with bias inside a pool scope, JIT tiering off), the build before and
    /// this one in alternating processes, three times, 2026-11-27 21:59–22:02 UTC: at two threads 1×768·768×3072 51.3–56.0 →
    /// 44.2–48.6 µs, 2 rows 99.8–100.7 → 86.1–90.7, 1×768·768×2304 37.6–39.5 → 33.2–33.7. On one thread it gained nothing
    /// (with the prefetch compiled into the serial path too: 1 row 80.5–100.4 µs before, 84.9–87.0 with it), so the serial
    /// GEMV runs the kernel without it. 256, 2048 and 4096 floats ahead were no better than 1024 (one noisy run each).</remarks>
    internal static bool PrefetchGemv = true;
    internal const int GemvAhead = 1024;

    static void PackedGemvSplit(int parts, int panels, int m, float[] a, int aOff, int rsA, int csA, PackedB b, float[] c, int cOff, int ldc,
        bool accumulate, float[]? bias, bool relu) =>
        WorkerPool.For(parts, parts, p => PackedGemvRange(panels * p / parts, panels * (p + 1) / parts, m, a, aOff, rsA, csA, b, c, cOff, ldc,
            accumulate, bias, relu, PrefetchGemv));

    /// <summary>
    /// Micro-panels [from, to) of B for one or two rows of A (a second row reads B again: a kernel that shared each load
    /// between two rows measured no faster), in the order they lie in memory when B is at most NC = 3072 columns wide:
    /// for each KC-row block, the range's micro-panels one after another (one sequential stream), each adding its KC rows
    /// into C's NR columns, which stay in L1. A wider B jumps between column blocks at each KC block. (What mattered
    /// more was where the packed array starts: see <see cref="PackBOnce"/>.)
    /// </summary>
    static void PackedGemvRange(int from, int to, int m, float[] a, int aOff, int rsA, int csA, PackedB b, float[] c, int cOff, int ldc, bool accumulate,
        float[]? bias, bool relu, bool ahead = false)
    {
        int n = b.N, k = b.K, nr = b.NR;
        bool fused = bias is not null || relu;
        fixed (float* pa = a, pd = b.Data, pc = c, pBias = bias)
            for (int i = 0; i < m; i++)
                for (int pb = 0; pb * KC < k; pb++)
                {
                    int kc = Math.Min(KC, k - pb * KC);
                    bool add = accumulate || pb > 0, last = fused && (pb + 1) * KC >= k;
                    float* ar = pa + aOff + (long)i * rsA + (long)pb * KC * csA;
                    for (int panel = from; panel < to; panel++)
                    {
                        int j = panel * nr, jb = j / NC, width = Math.Min(nr, n - j);
                        float* micro = pd + b.Offsets[jb, pb] + (long)(j - jb * NC) * kc, cr = pc + cOff + (long)i * ldc + j;
                        if (nr == 32)
                        {
                            if (ahead) PanelDot32<Prefetch>(kc, ar, csA, micro, cr, width, add);
                            else PanelDot32<NoPrefetch>(kc, ar, csA, micro, cr, width, add);
                        }
                        else PanelDot16(kc, ar, csA, micro, cr, width, add);
                        if (last) BiasRelu(cr, width, pBias == null ? null : pBias + j, relu);
                    }
                }
    }

    /// <summary>c[0..width) (+)= Σ_p a[p·csA]·micro[p·32 + 0..width): a 32-wide micro-panel as two 16-float columns, four
    /// rows per step into eight independent sums; with <typeparamref name="TP"/> on, each step prefetches the eight lines
    /// <see cref="GemvAhead"/> floats ahead (<see cref="PrefetchGemv"/>).</summary>
    static void PanelDot32<TP>(int kc, float* a, int csA, float* micro, float* c, int width, bool add) where TP : struct, IPrefetch
    {
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
        int p = 0;
        for (; p + 4 <= kc; p += 4)
        {
            float* r = micro + p * 32;
            if (TP.On)
            {
                float* f = r + GemvAhead;
                Sse.Prefetch0(f); Sse.Prefetch0(f + 16); Sse.Prefetch0(f + 32); Sse.Prefetch0(f + 48);
                Sse.Prefetch0(f + 64); Sse.Prefetch0(f + 80); Sse.Prefetch0(f + 96); Sse.Prefetch0(f + 112);
            }
            var a0 = Vector512.Create(a[(long)p * csA]);
            var a1 = Vector512.Create(a[(long)(p + 1) * csA]);
            var a2 = Vector512.Create(a[(long)(p + 2) * csA]);
            var a3 = Vector512.Create(a[(long)(p + 3) * csA]);
            s0 = Avx512F.FusedMultiplyAdd(a0, Vector512.Load(r), s0);
            s1 = Avx512F.FusedMultiplyAdd(a0, Vector512.Load(r + 16), s1);
            s2 = Avx512F.FusedMultiplyAdd(a1, Vector512.Load(r + 32), s2);
            s3 = Avx512F.FusedMultiplyAdd(a1, Vector512.Load(r + 48), s3);
            s4 = Avx512F.FusedMultiplyAdd(a2, Vector512.Load(r + 64), s4);
            s5 = Avx512F.FusedMultiplyAdd(a2, Vector512.Load(r + 80), s5);
            s6 = Avx512F.FusedMultiplyAdd(a3, Vector512.Load(r + 96), s6);
            s7 = Avx512F.FusedMultiplyAdd(a3, Vector512.Load(r + 112), s7);
        }
        for (; p < kc; p++)
        {
            float* r = micro + p * 32;
            var av = Vector512.Create(a[(long)p * csA]);
            s0 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(r), s0);
            s1 = Avx512F.FusedMultiplyAdd(av, Vector512.Load(r + 16), s1);
        }
        var lo = (s0 + s2) + (s4 + s6);
        var hi = (s1 + s3) + (s5 + s7);
        if (width == 32)
        {
            if (add) { lo += Vector512.Load(c); hi += Vector512.Load(c + 16); }
            lo.Store(c);
            hi.Store(c + 16);
            return;
        }
        float* sums = stackalloc float[32];
        lo.Store(sums);
        hi.Store(sums + 16);
        for (int q = 0; q < width; q++) c[q] = add ? c[q] + sums[q] : sums[q];
    }

    /// <summary>c[0..width) (+)= Σ_p a[p·csA]·micro[p·16 + 0..width): a 16-wide micro-panel (the AVX2 kernel's) as two
    /// 8-float columns, four rows per step into eight independent sums.</summary>
    static void PanelDot16(int kc, float* a, int csA, float* micro, float* c, int width, bool add)
    {
        const int stride = 16;
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
        int p = 0;
        for (; p + 4 <= kc; p += 4)
        {
            float* r = micro + (long)p * stride;
            var a0 = Vector256.Create(a[(long)p * csA]);
            var a1 = Vector256.Create(a[(long)(p + 1) * csA]);
            var a2 = Vector256.Create(a[(long)(p + 2) * csA]);
            var a3 = Vector256.Create(a[(long)(p + 3) * csA]);
            s0 = Fma.MultiplyAdd(a0, Avx.LoadVector256(r), s0);
            s1 = Fma.MultiplyAdd(a0, Avx.LoadVector256(r + 8), s1);
            s2 = Fma.MultiplyAdd(a1, Avx.LoadVector256(r + stride), s2);
            s3 = Fma.MultiplyAdd(a1, Avx.LoadVector256(r + stride + 8), s3);
            s4 = Fma.MultiplyAdd(a2, Avx.LoadVector256(r + 2 * stride), s4);
            s5 = Fma.MultiplyAdd(a2, Avx.LoadVector256(r + 2 * stride + 8), s5);
            s6 = Fma.MultiplyAdd(a3, Avx.LoadVector256(r + 3 * stride), s6);
            s7 = Fma.MultiplyAdd(a3, Avx.LoadVector256(r + 3 * stride + 8), s7);
        }
        for (; p < kc; p++)
        {
            float* r = micro + (long)p * stride;
            var av = Vector256.Create(a[(long)p * csA]);
            s0 = Fma.MultiplyAdd(av, Avx.LoadVector256(r), s0);
            s1 = Fma.MultiplyAdd(av, Avx.LoadVector256(r + 8), s1);
        }
        float* sums = stackalloc float[16];
        Avx.Store(sums, Avx.Add(Avx.Add(s0, s2), Avx.Add(s4, s6)));
        Avx.Store(sums + 8, Avx.Add(Avx.Add(s1, s3), Avx.Add(s5, s7)));
        for (int q = 0; q < width; q++) c[q] = add ? c[q] + sums[q] : sums[q];
    }
}
