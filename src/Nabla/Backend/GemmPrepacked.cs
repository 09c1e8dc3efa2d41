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
        var block = new float[MC * KC];
        for (int pb = 0; pb < kBlocks; pb++)
            for (int ib = 0; ib < mBlocks; ib++)
            {
                int kc = Math.Min(KC, k - pb * KC), mc = Math.Min(MC, m - ib * MC);
                PackA(mc, kc, a, off + ib * MC * rs + pb * KC * cs, rs, cs, block);
                Array.Copy(block, 0, data, offsets[pb, ib], (mc + MR - 1) / MR * MR * kc);
            }
        return new PackedA { M = m, K = k, Data = data, Offsets = offsets };
    }

    /// <summary>The row-major [M, K] matrix that <paramref name="a"/> was packed from (for kernels that lay the same
    /// constant out another way on first use, so the model keeps one copy of it until then).</summary>
    public static float[] UnpackA(PackedA a)
    {
        int m = a.M, k = a.K;
        var dst = new float[(long)m * k is var len && len <= int.MaxValue ? (int)len : throw new NablaException("UnpackA: matrix too large")];
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
    public static void SgemmPacked(PackedA a, int n, float[] b, int bOff, int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate, int threads)
    {
        if (!UseFastPath) throw new InvalidOperationException("SgemmPacked needs the FMA fast path");
        int m = a.M, k = a.K;
        if (m == 0 || n == 0 || k == 0) throw new ArgumentException($"SgemmPacked: empty product {m}x{k}x{n}");
        int mBlocks = (m + MC - 1) / MC;
        if (threads <= 1 || (long)m * n * k < 1 << 18)
        {
            PackedRange(a, 0, mBlocks, 0, n, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
            return;
        }
        PackedSplit(a, mBlocks, n, b, bOff, rsB, csB, c, cOff, ldc, accumulate, threads);
    }

    /// <summary>The threaded part of <see cref="SgemmPacked"/>, a method of its own so that a call on one thread allocates
    /// no closure.</summary>
    static void PackedSplit(PackedA a, int mBlocks, int n, float[] b, int bOff, int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate, int threads)
    {
        int colParts = Math.Min(threads, n / (2 * NR));
        if (colParts >= threads || mBlocks < 2)
        {
            int parts = Math.Max(1, colParts);
            int chunk = ((n + parts - 1) / parts + NR - 1) / NR * NR;
            WorkerPool.For(parts, parts, p =>
            {
                int start = p * chunk, len = Math.Min(chunk, n - start);
                if (len > 0) PackedRange(a, 0, mBlocks, start, len, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
            });
        }
        else
        {
            int parts = Math.Min(threads, mBlocks);
            WorkerPool.For(parts, parts, p =>
            {
                int from = mBlocks * p / parts, to = mBlocks * (p + 1) / parts;
                if (to > from) PackedRange(a, from, to, 0, n, b, bOff, rsB, csB, c, cOff, ldc, accumulate);
            });
        }
    }

    /// <summary>Row blocks [ibFrom, ibTo) of C times columns [j0, j0 + n), on this thread.</summary>
    static void PackedRange(PackedA a, int ibFrom, int ibTo, int j0, int n, float[] b, int bOff, int rsB, int csB, float[] c, int cOff, int ldc, bool accumulate)
    {
        int m = a.M, k = a.K;
        packB ??= new float[KC * NC];
        var pbuf = packB;
        fixed (float* pA = a.Data, pB = pbuf, pC = c)
        {
            for (int jc = 0; jc < n; jc += NC)
            {
                int nc = Math.Min(NC, n - jc);
                for (int pc = 0, pbIdx = 0; pc < k; pc += KC, pbIdx++)
                {
                    int kc = Math.Min(KC, k - pc);
                    PackB(kc, nc, b, bOff + pc * rsB + (j0 + jc) * csB, rsB, csB, pbuf);
                    for (int ib = ibFrom; ib < ibTo; ib++)
                    {
                        int ic = ib * MC, mc = Math.Min(MC, m - ic);
                        Macro(mc, nc, kc, pA + a.Offsets[pbIdx, ib], pB, pC + cOff + ic * ldc + j0 + jc, ldc, accumulate || pc > 0, prefetchA: true);
                    }
                }
            }
        }
    }
}
