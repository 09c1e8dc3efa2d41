using System.Numerics;
using System.Runtime.Intrinsics;

namespace Nabla;

/// <summary>
/// Winograd F(4×4, 3×3) for the same layers as F(2×2, 3×3) (<see cref="Winograd"/>): each 4×4 block of outputs from a
/// 6×6 input patch, 36 GEMMs of [O, C]·[C, tiles] instead of 16, i.e. 36 multiply-adds per 16 outputs instead of
/// 16 per 4 (1.78 times fewer on large maps). Transforms (Lavin and Gray's matrices):
/// Bᵀ = [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0], [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0],
/// [0, 4, 0, −5, 0, 1]]; G = [[¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1/24, 1/12, ⅙], [1/24, −1/12, ⅙], [0, 0, 1]];
/// Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0], [0, 1, −1, 8, −8, 1]].
/// As in F(2×2, 3×3) the transforms run on whole planes: the padded input split by row and column residue mod 4, every
/// patch operation a combination of planes and planes shifted by one tile.
/// </summary>
public sealed partial class PackedConv2d
{
    /// <summary>Whether Winograd layers on maps of at least <see cref="WinogradF4MinSide"/> use F(4×4, 3×3)
    /// (<c>NABLA_WINOGRAD_F4=0</c>: F(2×2, 3×3) everywhere). ResNet-18 at 1 thread, per layer against F(2×2, 3×3): 56×56
    /// layers 0.76–0.82 of the time, 28×28 0.84–0.86, 14×14 1.38–1.39 (16×16 tiles for 14 positions, a junk column per
    /// tile row, and 36/16 times the filter bytes: 9.4 MB for a 256-channel layer), hence the bound.</summary>
    internal static bool WinogradF4 = Environment.GetEnvironmentVariable("NABLA_WINOGRAD_F4") != "0";

    internal static int WinogradF4MinSide = 28;

    PackedA[]? winograd4U;   // 36 transformed filters [O, C], packed; built on first use

    PackedA[] Winograd4Filters() => Volatile.Read(ref winograd4U) ?? Once(ref winograd4U, () => FromUnpackedWeights(BuildWinograd4Filters));

    PackedA[] BuildWinograd4Filters(float[] flat)
    {
        int o = OutChannels, c = InChannels;
        var t = System.Buffers.ArrayPool<float>.Shared.Rent(36 * o * c);   // every entry written below
        double[,] g6 =
        {
            { 0.25, 0, 0 }, { -1.0 / 6, -1.0 / 6, -1.0 / 6 }, { -1.0 / 6, 1.0 / 6, -1.0 / 6 },
            { 1.0 / 24, 1.0 / 12, 1.0 / 6 }, { 1.0 / 24, -1.0 / 12, 1.0 / 6 }, { 0, 0, 1 },
        };
        Span<double> gg = stackalloc double[18];
        for (int oc = 0; oc < o; oc++)
            for (int ic = 0; ic < c; ic++)
            {
                int src = (oc * c + ic) * 9;
                // G·g: 6×3
                for (int a = 0; a < 6; a++)
                    for (int q = 0; q < 3; q++)
                        gg[3 * a + q] = g6[a, 0] * flat[src + q] + g6[a, 1] * flat[src + 3 + q] + g6[a, 2] * flat[src + 6 + q];
                // (G·g)·Gᵀ: 6×6, element (a, k) is transformed filter ξ = 6a + k
                for (int a = 0; a < 6; a++)
                    for (int k = 0; k < 6; k++)
                        t[(6 * a + k) * o * c + oc * c + ic] =
                            (float)(gg[3 * a] * g6[k, 0] + gg[3 * a + 1] * g6[k, 1] + gg[3 * a + 2] * g6[k, 2]);
            }
        var packedU = new PackedA[36];
        for (int xi = 0; xi < 36; xi++) packedU[xi] = Gemm.PackAOnce(o, c, t, xi * o * c, c, 1);
        System.Buffers.ArrayPool<float>.Shared.Return(t);
        return packedU;
    }

    /// <summary>
    /// V[ξ][ch] for channels [from, to), tile rows [r0, r1). Plane (m, q)[i][j] = P[4(r0 + i) + m][4j + q] of the padded
    /// input P (P[r][c] = x[r − 1][c − 1], zero outside); tile (r0 + i, j) reads entries (i, j) of all sixteen planes and
    /// (i, j + 1) / (i + 1, j) of those with residue 0 or 1. Columns first (d·B), then rows (Bᵀ·(d·B)).
    /// </summary>
    /// <remarks>With <paramref name="nr"/> &gt; 0, V[ξ] goes into the GEMM's micro-panels of that width
    /// (<see cref="Gemm.PanelRowOffset"/>), V[ξ] at ξ·(<see cref="Gemm.PanelsLength"/> + 16) (<see cref="WinogradVSize"/>); else row-major [C, l] at ξ·C·l.</remarks>
    unsafe void Input4(float[] xa, int xBase, int from, int to, int h, int w, int r0, int r1, int s, float[] v, int nr)
    {
        // Each plane has room past its n floats: one zero for the shifted reads, and the junk of SplitRow4's whole blocks.
        int c = InChannels, tb = r1 - r0, n = (tb + 1) * s, l = tb * s, stride = n + 16;
        bool row4 = Cpu.UseRow4;
        // 16 residue planes, 24 column-transformed planes, and two half-split rows.
        var planes = ThreadScratch.Grow(ref winogradPlanes, 40 * stride + 4 * s);
        long vSize = WinogradVSize(c, l, nr);
        fixed (float* px = xa, pp = planes, pv = v)
        {
            float* res = pp, hc = pp + 16 * stride, half = pp + 40 * stride;
            for (int ch = from; ch < to; ch++)
            {
                float* plane = px + xBase + (long)ch * h * w;
                for (int i = 0; i <= tb; i++)
                    for (int mr = 0; mr < 4; mr++)
                    {
                        int row = 4 * (r0 + i) + mr - 1;   // x row of P row 4(r0 + i) + mr
                        float* xr = row >= 0 && row < h ? plane + (long)row * w : null;
                        float* q0 = res + (4 * mr) * stride + i * s;
                        if (row4)
                        {
                            // Rows go in order, so a row's junk past s lands where the next row or the zero below goes.
                            Cpu.SplitRow4(xr, w, 1, q0, q0 + stride, q0 + 2 * stride, q0 + 3 * stride, s);
                            continue;
                        }
                        float* e = half, od = half + 2 * s;
                        // P[2j'] and P[2j' + 1], then each split again: residues 0, 2 from the evens, 1, 3 from the odds.
                        Cpu.SplitPaddedRow(xr, w, 1, e, od, 2 * s);
                        Cpu.SplitPaddedRow(e, 2 * s, 0, q0, q0 + 2 * stride, s);
                        Cpu.SplitPaddedRow(od, 2 * s, 0, q0 + stride, q0 + 3 * stride, s);
                    }
                for (int q = 0; q < 16; q++) res[q * stride + n] = 0f;
                // Columns: for each row residue, u = (q0, q1, q2, q3 at j; q0, q1 at j + 1) → six planes.
                for (int mr = 0; mr < 4; mr++)
                {
                    float* b0 = res + 4 * mr * stride;
                    float* o0 = hc + 6 * mr * stride;
                    Combine(b0, b0 + stride, b0 + 2 * stride, b0 + 3 * stride, b0 + 1, b0 + stride + 1, o0, stride, n);
                }
                // Rows: for each column output k, u = (residues 0..3 at row i; 0, 1 at row i + 1) → V[6a + k].
                int panelStride = 0;
                long rowAt = nr > 0 ? Gemm.PanelRowOffset(c, l, nr, ch, out panelStride) : (long)ch * l;
                for (int k = 0; k < 6; k++)
                {
                    float* r0p = hc + k * stride, r1p = hc + (6 + k) * stride, r2p = hc + (12 + k) * stride, r3p = hc + (18 + k) * stride;
                    Combine(r0p, r1p, r2p, r3p, r0p + s, r1p + s, pv + k * vSize + rowAt, 6 * vSize, l, nr, panelStride);
                }
            }
        }
    }

    /// <summary>The six outputs of Bᵀ·u for six input streams, at <paramref name="dst"/> + k·<paramref name="dstStride"/>:
    /// plain rows, or with <paramref name="panel"/> &gt; 0 the GEMM's micro-panels of that width, position j of an output
    /// at (j / panel)·<paramref name="panelStride"/> + j mod panel.</summary>
    static unsafe void Combine(float* u0, float* u1, float* u2, float* u3, float* u4, float* u5, float* dst, long dstStride, int count,
        int panel = 0, int panelStride = 0)
    {
        if (panel > 0)
        {
            // One panel's columns at a time: each call below writes a plain run of at most one panel's width.
            for (int j0 = 0; j0 < count; j0 += panel)
                Combine(u0 + j0, u1 + j0, u2 + j0, u3 + j0, u4 + j0, u5 + j0, dst + (long)(j0 / panel) * panelStride, dstStride,
                    Math.Min(panel, count - j0));
            // The last panel's columns past count: never part of a result (Gemm.PanelRowOffset), but zeros keep stale scratch
            // (or a denormal) out of the kernel's arithmetic.
            int used = count % panel;
            if (used != 0)
                for (int k = 0; k < 6; k++)
                    new Span<float>(dst + k * dstStride + (long)(count / panel) * panelStride + used, panel - used).Clear();
            return;
        }
        float* d0 = dst, d1 = dst + dstStride, d2 = dst + 2 * dstStride, d3 = dst + 3 * dstStride, d4 = dst + 4 * dstStride, d5 = dst + 5 * dstStride;
        int j = 0, vw = Vector<float>.Count;
        if (Vector512.IsHardwareAccelerated)
        {
            // The same operations as the loops below, 16 lanes at a time (Vector<float> stays at 8 lanes on AVX-512).
            var four = Vector512.Create(4f);
            var five = Vector512.Create(5f);
            for (; j + 16 <= count; j += 16)
            {
                var a0 = Vector512.Load(u0 + j); var a1 = Vector512.Load(u1 + j); var a2 = Vector512.Load(u2 + j);
                var a3 = Vector512.Load(u3 + j); var a4 = Vector512.Load(u4 + j); var a5 = Vector512.Load(u5 + j);
                var t1 = a4 - four * a2;
                var t2 = a3 - four * a1;
                var t3 = a4 - a2;
                var t4 = (a3 - a1) * 2f;
                (four * a0 - five * a2 + a4).Store(d0 + j);
                (t1 + t2).Store(d1 + j);
                (t1 - t2).Store(d2 + j);
                (t3 + t4).Store(d3 + j);
                (t3 - t4).Store(d4 + j);
                (four * a1 - five * a3 + a5).Store(d5 + j);
            }
        }
        if (Vector.IsHardwareAccelerated)
        {
            var four = new Vector<float>(4f);
            var five = new Vector<float>(5f);
            for (; j + vw <= count; j += vw)
            {
                var a0 = Vector.Load(u0 + j); var a1 = Vector.Load(u1 + j); var a2 = Vector.Load(u2 + j);
                var a3 = Vector.Load(u3 + j); var a4 = Vector.Load(u4 + j); var a5 = Vector.Load(u5 + j);
                var t1 = a4 - four * a2;          // u4 − 4u2
                var t2 = a3 - four * a1;          // u3 − 4u1
                var t3 = a4 - a2;                 // u4 − u2
                var t4 = (a3 - a1) * 2f;          // 2(u3 − u1)
                Vector.Store(four * a0 - five * a2 + a4, d0 + j);
                Vector.Store(t1 + t2, d1 + j);
                Vector.Store(t1 - t2, d2 + j);
                Vector.Store(t3 + t4, d3 + j);
                Vector.Store(t3 - t4, d4 + j);
                Vector.Store(four * a1 - five * a3 + a5, d5 + j);
            }
        }
        for (; j < count; j++)
        {
            float a0 = u0[j], a1 = u1[j], a2 = u2[j], a3 = u3[j], a4 = u4[j], a5 = u5[j];
            float t1 = a4 - 4f * a2, t2 = a3 - 4f * a1, t3 = a4 - a2, t4 = 2f * (a3 - a1);
            d0[j] = 4f * a0 - 5f * a2 + a4;
            d1[j] = t1 + t2;
            d2[j] = t1 - t2;
            d3[j] = t3 + t4;
            d4[j] = t3 - t4;
            d5[j] = 4f * a1 - 5f * a3 + a5;
        }
    }

    /// <summary>The four outputs of Aᵀ·m for six input streams (m_t at <paramref name="m"/> + t·<paramref name="mStride"/>).</summary>
    static unsafe void Reduce(float* m, long mStride, float* dst, long dstStride, int count)
    {
        float* m0 = m, m1 = m + mStride, m2 = m + 2 * mStride, m3 = m + 3 * mStride, m4 = m + 4 * mStride, m5 = m + 5 * mStride;
        float* d0 = dst, d1 = dst + dstStride, d2 = dst + 2 * dstStride, d3 = dst + 3 * dstStride;
        int j = 0, vw = Vector<float>.Count;
        if (Vector512.IsHardwareAccelerated)
            for (; j + 16 <= count; j += 16)
            {
                // As below, 16 lanes at a time.
                var a1 = Vector512.Load(m1 + j); var a2 = Vector512.Load(m2 + j);
                var a3 = Vector512.Load(m3 + j); var a4 = Vector512.Load(m4 + j);
                var p = a1 + a2; var q = a1 - a2; var r = a3 + a4; var t = a3 - a4;
                (Vector512.Load(m0 + j) + p + r).Store(d0 + j);
                (q + t * 2f).Store(d1 + j);
                (p + r * 4f).Store(d2 + j);
                (q + t * 8f + Vector512.Load(m5 + j)).Store(d3 + j);
            }
        if (Vector.IsHardwareAccelerated)
            for (; j + vw <= count; j += vw)
            {
                var a1 = Vector.Load(m1 + j); var a2 = Vector.Load(m2 + j);
                var a3 = Vector.Load(m3 + j); var a4 = Vector.Load(m4 + j);
                var p = a1 + a2; var q = a1 - a2; var r = a3 + a4; var t = a3 - a4;
                Vector.Store(Vector.Load(m0 + j) + p + r, d0 + j);
                Vector.Store(q + t * 2f, d1 + j);
                Vector.Store(p + r * 4f, d2 + j);
                Vector.Store(q + t * 8f + Vector.Load(m5 + j), d3 + j);
            }
        for (; j < count; j++)
        {
            float p = m1[j] + m2[j], q = m1[j] - m2[j], r = m3[j] + m4[j], t = m3[j] - m4[j];
            d0[j] = m0[j] + p + r;
            d1[j] = q + 2f * t;
            d2[j] = p + 4f * r;
            d3[j] = q + 8f * t + m5[j];
        }
    }

    /// <summary>Output channels [from, to), tile rows [r0, r1): Y = Aᵀ·M·A on whole planes, scattered into NCHW rows
    /// (rows and columns past the map dropped), then bias, residual, activation.</summary>
    unsafe void Output4(float[] m, int from, int to, int h, int w, int r0, int r1, int s, float[] ya, int yBase,
        float[]? ra, int rBase, FusedActivation activation)
    {
        // Room past each plane's l floats: MergeRow4 reads whole blocks of 16 (at most 15 floats past a row's positions).
        int o = OutChannels, tb = r1 - r0, l = tb * s, stride = l + 16;
        bool row4 = Cpu.UseRow4;
        int row0 = 4 * r0, rows = Math.Min(4 * r1, h) - row0;
        var planes = ThreadScratch.Grow(ref winogradPlanes, 40 * stride + 4 * stride);
        fixed (float* pm = m, pp = planes, py = ya)
        {
            float* sr = pp;               // S[a][k] at sr + (6a + k)·stride
            float* yr = pp + 24 * stride; // Y[a][b] at yr + (4a + b)·stride
            float* ab = pp + 40 * stride; // two interleaved halves of one output row
            for (int oc = from; oc < to; oc++)
            {
                // Rows of the 6×6 (t = ξ / 6) first: S[a][k] = Σ_t Aᵀ[a][t]·M[6t + k].
                for (int k = 0; k < 6; k++)
                    Reduce(pm + ((long)k * o + oc) * l, 6L * o * l, sr + k * stride, 6L * stride, l);
                // Then columns: Y[a][b] = Σ_k Aᵀ[b][k]·S[a][k].
                for (int a = 0; a < 4; a++)
                    Reduce(sr + 6 * a * stride, stride, yr + 4 * a * stride, stride, l);
                float* dst = py + yBase + (long)oc * h * w + (long)row0 * w;
                for (int i = 0; i < tb; i++)
                    for (int a = 0; a < 4 && 4 * i + a < rows; a++)
                    {
                        float* y0 = yr + 4 * a * stride + i * s;
                        // Positions 4j..4j+3 = Y[a][0..3][j]: in one pass, or interleave (0, 2) and (1, 3), then the two.
                        if (row4)
                        {
                            Cpu.MergeRow4(y0, y0 + stride, y0 + 2 * stride, y0 + 3 * stride, dst + (long)(4 * i + a) * w, w);
                            continue;
                        }
                        Interleave(y0, y0 + 2 * stride, ab, 2 * s);
                        Interleave(y0 + stride, y0 + 3 * stride, ab + 2 * s, 2 * s);
                        Interleave(ab, ab + 2 * s, dst + (long)(4 * i + a) * w, w);
                    }
                Epilogue(new Span<float>(dst, rows * w), bias?[oc] ?? 0f,
                    ra is null ? default : ra.AsSpan(rBase + oc * h * w + row0 * w, rows * w), ra is not null, activation);
            }
        }
    }
}
