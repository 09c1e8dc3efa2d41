using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nabla;

/// <summary>
/// The Winograd path of <see cref="PackedConv2d"/>: 3×3, stride 1, padding 1 convolutions (the body of ResNet-style
/// networks) as F(2×2, 3×3). Each 2×2 block of outputs comes from a 4×4 input patch: the patch is transformed
/// (V = Bᵀ·d·B), multiplied elementwise by the transformed filter (U = G·g·Gᵀ) summed over input channels, and transformed
/// back (Y = Aᵀ·M·A). Summed over channels, the elementwise products are 16 independent GEMMs, U[ξ] [O, C] times
/// V[ξ] [C, tiles], with 16 multiply-adds per 4 outputs instead of 36: 2.25 times fewer than the im2col GEMM, and no
/// im2col buffer. The transforms run on whole planes with vector primitives: the padded input is split by row and column
/// parity, so every 4×4 patch operation becomes a shifted add or subtract of planes (one junk column per tile row, which
/// the GEMMs carry and the output transform drops). Results differ from the direct sum by rounding only (the transforms'
/// coefficients are 0, ±1 and ±½). U is built on first use (from a constant weight's own array, or else from the packed GEMM
/// weights), so layers that never take this path cost no memory for it.
/// </summary>
public sealed partial class PackedConv2d
{
    /// <summary>Whether the Winograd path may run (<c>NABLA_CONV_WINOGRAD=0</c> turns it off, for A/B measurements).
    /// Settable by tests to compare paths.</summary>
    internal static bool UseWinograd = Environment.GetEnvironmentVariable("NABLA_CONV_WINOGRAD") != "0";

    /// <summary>Fewest input and output channels (the GEMMs' K and M) and smallest map side for the Winograd path. With 32
    /// input channels the 16 GEMMs have K = 32 and lose to the other paths (the quickstart CNN's 32 → 64 layer at batch
    /// 64: 3.8 ms against 3.5 ms with images folded into one GEMM). Layers with at most 32 output channels on maps of up
    /// to 4096 positions run directly instead (faster there: 32 → 32 channels on 56×56, 1 thread, 0.24 ms direct against
    /// 0.26 ms Winograd; on 14×14 0.019 against 0.035 ms).</summary>
    internal static int WinogradMinInChannels = 64, WinogradMinOutChannels = 32, WinogradMinSide = 14;

    PackedA[]? winogradU;   // 16 transformed filters [O, C], packed; built on first use

    /// <summary>Whether the GEMM's packed copy of the weights exists (for tests: a constant weight gets it only when a
    /// GEMM path runs).</summary>
    internal bool HasPackedWeights => Volatile.Read(ref packed) is not null;

    /// <summary>Whether the transformed filters have been built, i.e. the Winograd path has run (for tests).</summary>
    internal bool HasWinogradFilters => Volatile.Read(ref winogradU) is not null || Volatile.Read(ref winograd4U) is not null;

    [ThreadStatic] static float[]? winogradV, winogradM, winogradPlanes;

    bool WinogradShape => Groups == 1 && KernelH == 3 && KernelW == 3 && Stride == (1, 1) && Dilation == (1, 1)
                          && Padding == (1, 1, 1, 1) && fastPath;

    bool TakesWinograd(int oh, int ow) => UseWinograd && WinogradShape && InChannels >= WinogradMinInChannels
                                          && OutChannels >= WinogradMinOutChannels && oh >= WinogradMinSide && ow >= WinogradMinSide;

    PackedA[] WinogradFilters() => Volatile.Read(ref winogradU) ?? Once(ref winogradU, () => FromUnpackedWeights(BuildWinogradFilters));

    PackedA[] BuildWinogradFilters(float[] flat)
    {
        int o = OutChannels, c = InChannels;
        var t = System.Buffers.ArrayPool<float>.Shared.Rent(16 * o * c);   // every entry written below
        Span<float> g = stackalloc float[9];
        Span<float> gg = stackalloc float[12];
        for (int oc = 0; oc < o; oc++)
            for (int ic = 0; ic < c; ic++)
            {
                flat.AsSpan((oc * c + ic) * 9, 9).CopyTo(g);
                // G·g, G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]: 4×3
                for (int j = 0; j < 3; j++)
                {
                    float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
                    gg[j] = g0;
                    gg[3 + j] = 0.5f * (g0 + g1 + g2);
                    gg[6 + j] = 0.5f * (g0 - g1 + g2);
                    gg[9 + j] = g2;
                }
                // (G·g)·Gᵀ: 4×4, element (i, j) is transformed filter ξ = 4i + j
                for (int i = 0; i < 4; i++)
                {
                    float a0 = gg[3 * i], a1 = gg[3 * i + 1], a2 = gg[3 * i + 2];
                    int at = (4 * i) * o * c + oc * c + ic, step = o * c;
                    t[at] = a0;
                    t[at + step] = 0.5f * (a0 + a1 + a2);
                    t[at + 2 * step] = 0.5f * (a0 - a1 + a2);
                    t[at + 3 * step] = a2;
                }
            }
        var packedU = new PackedA[16];
        for (int xi = 0; xi < 16; xi++) packedU[xi] = Gemm.PackAOnce(o, c, t, xi * o * c, c, 1);
        System.Buffers.ArrayPool<float>.Shared.Return(t);
        return packedU;
    }

    /// <summary>Whether, with several threads, each thread may run the whole pipeline on its own band of tile rows (one
    /// fork-join, nothing handed between cores) instead of all threads sharing each of the three stages
    /// (<c>NABLA_WINOGRAD_BANDS=0</c>, for A/B measurements). Bands are taken where the transformed filters are small
    /// next to the transformed input (output channels · 4 ≤ tile positions: ResNet-18's 56×56 layers, not its 28×28 or
    /// 14×14 ones), since every band reads all sixteen filters. ResNet-18 batch 1 at 2 threads, the two splits
    /// alternating in one process (bench/README.md, "Winograd bands"): 8.76–8.97 against 8.69–8.77 ms in the machine's
    /// normal phases, 11.75–12.07 against 12.50–12.65 ms in its slow ones, where data handed between the cores costs
    /// about five times as much.</summary>
    internal static bool WinogradBands = Environment.GetEnvironmentVariable("NABLA_WINOGRAD_BANDS") != "0";

    /// <summary>One image through F(2×2, 3×3), or F(4×4, 3×3) on maps of at least <see cref="WinogradF4MinSide"/>.
    /// <paramref name="serial"/>: the caller already runs images in parallel.</summary>
    void Winograd(int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, FusedActivation activation, bool serial)
    {
        bool f4 = WinogradF4 && Math.Min(h, w) >= WinogradF4MinSide;
        var u = f4 ? Winograd4Filters() : WinogradFilters();
        int tile = f4 ? 4 : 2, c = InChannels, o = OutChannels;
        int ty = (h + tile - 1) / tile, tx = (w + tile - 1) / tile, s = tx + 1;
        int threads = serial ? 1 : Gemm.Threads;
        int xBase = xo + b * c * h * w, yBase = yo + b * o * h * w, rBase = ro + b * o * h * w;
        if (threads > 1 && WinogradBands && ty >= 2 * threads && 4 * o <= ty * s)
        {
            // Bands of tile rows, one per thread: each stage's output stays in the core that made it (stage-shared
            // splits hand V and M across cores twice per layer).
            WinogradBandsSplit(threads, ty, u, f4, xa, xBase, ra, rBase, ya, yBase, h, w, s, activation);
            return;
        }
        WinogradBand(u, f4, 0, ty, xa, xBase, ra, rBase, ya, yBase, h, w, s, activation, threads);
    }

    // The threaded splits below are methods of their own, so that a call on one thread allocates no closure.
    void WinogradBandsSplit(int threads, int ty, PackedA[] u, bool f4, float[] xa, int xBase, float[]? ra, int rBase, float[] ya, int yBase,
        int h, int w, int s, FusedActivation activation) =>
        WorkerPool.For(threads, threads, p =>
            WinogradBand(u, f4, ty * p / threads, ty * (p + 1) / threads, xa, xBase, ra, rBase, ya, yBase, h, w, s, activation, 1));

    /// <summary>Tile rows [r0, r1) of one image: input transform, the 16 (or 36) GEMMs and the output transform, the
    /// stages split over <paramref name="threads"/> (by input channels, by ξ, by output channels).</summary>
    void WinogradBand(PackedA[] u, bool f4, int r0, int r1, float[] xa, int xBase, float[]? ra, int rBase, float[] ya, int yBase,
        int h, int w, int s, FusedActivation activation, int threads)
    {
        int c = InChannels, o = OutChannels, l = (r1 - r0) * s, products = u.Length;
        // F(4×4, 3×3)'s input transform writes V straight into the GEMM's micro-panels (nr wide; 0: V row-major, packed by
        // each product as before).
        int nr = f4 && WinogradPanels ? Gemm.PanelWidth : 0;
        long vSize = WinogradVSize(c, l, nr);
        var v = ThreadScratch.Grow(ref winogradV, checked((int)(products * vSize)));
        var m = ThreadScratch.Grow(ref winogradM, products * o * l);
        if (Math.Min(threads, c) > 1) InputSplit(Math.Min(threads, c), f4, xa, xBase, h, w, r0, r1, s, v, nr);
        else InputStage(f4, xa, xBase, 0, c, h, w, r0, r1, s, v, nr);
        if (threads > 1) ProductsSplit(products, threads, u, l, v, m, nr, vSize);
        else
            for (int xi = 0; xi < products; xi++) Product(u[xi], l, v, xi * vSize, m, xi * o * l, nr);
        if (Math.Min(threads, o) > 1) OutputSplit(Math.Min(threads, o), f4, m, h, w, r0, r1, s, ya, yBase, ra, rBase, activation);
        else OutputStage(f4, m, 0, o, h, w, r0, r1, s, ya, yBase, ra, rBase, activation);
    }

    /// <summary>Whether F(4×4, 3×3)'s input transform writes V in the GEMM's micro-panels, which saves each of the 36
    /// products its packing pass (<c>NABLA_WINOGRAD_PANELS=0</c>: row-major V, for A/B measurements). Settable by tests.</summary>
    internal static bool WinogradPanels = Environment.GetEnvironmentVariable("NABLA_WINOGRAD_PANELS") != "0";

    /// <summary>Floats from V[ξ] to V[ξ + 1]. In micro-panels, one cache line more than V[ξ] takes: its size is a multiple
    /// of 4 KB (64 channels × 224 columns), so without the line the six ξ planes one input-transform step writes, and the
    /// panels of one row, fell on the same L1 sets, and the panels made a 64→64 layer on 56×56 slower than packing per
    /// product (1 thread 559 against 483 µs; with the line 444 against 485, at 2 threads 230 against 251; scratch harness,
    /// 2026-11-28 02:20 UTC).</summary>
    static long WinogradVSize(int c, int l, int nr) => nr > 0 ? Gemm.PanelsLength(c, l, nr) + 16 : (long)c * l;

    /// <summary>One product M[ξ] = U[ξ]·V[ξ], V[ξ] at <paramref name="vOff"/>: in micro-panels <paramref name="nr"/> wide,
    /// or row-major [C, l] when nr is 0.</summary>
    static void Product(PackedA u, int l, float[] v, long vOff, float[] m, int mOff, int nr)
    {
        if (nr > 0) Gemm.SgemmPackedAB(u, l, nr, v, vOff, m, mOff, l);
        else Gemm.SgemmPacked(u, l, v, checked((int)vOff), l, 1, m, mOff, l, false, 1);
    }

    void InputStage(bool f4, float[] xa, int xBase, int from, int to, int h, int w, int r0, int r1, int s, float[] v, int nr)
    {
        if (f4) Input4(xa, xBase, from, to, h, w, r0, r1, s, v, nr);
        else InputTransform(xa, xBase, from, to, h, w, r0, r1, s, v);
    }

    void OutputStage(bool f4, float[] m, int from, int to, int h, int w, int r0, int r1, int s, float[] ya, int yBase, float[]? ra, int rBase,
        FusedActivation activation)
    {
        if (f4) Output4(m, from, to, h, w, r0, r1, s, ya, yBase, ra, rBase, activation);
        else OutputTransform(m, from, to, h, w, r0, r1, s, ya, yBase, ra, rBase, activation);
    }

    /// <summary>The input transform with its channels split over <paramref name="parts"/> threads.</summary>
    void InputSplit(int parts, bool f4, float[] xa, int xBase, int h, int w, int r0, int r1, int s, float[] v, int nr)
    {
        int c = InChannels;
        WorkerPool.For(parts, parts, p => InputStage(f4, xa, xBase, c * p / parts, c * (p + 1) / parts, h, w, r0, r1, s, v, nr));
    }

    /// <summary>The 16 (or 36) products over threads.</summary>
    void ProductsSplit(int products, int threads, PackedA[] u, int l, float[] v, float[] m, int nr, long vSize)
    {
        int o = OutChannels;
        WorkerPool.For(products, threads, xi => Product(u[xi], l, v, xi * vSize, m, xi * o * l, nr));
    }

    /// <summary>The output transform with its channels split over <paramref name="parts"/> threads.</summary>
    void OutputSplit(int parts, bool f4, float[] m, int h, int w, int r0, int r1, int s, float[] ya, int yBase, float[]? ra, int rBase,
        FusedActivation activation)
    {
        int o = OutChannels;
        WorkerPool.For(parts, parts, p => OutputStage(f4, m, o * p / parts, o * (p + 1) / parts, h, w, r0, r1, s, ya, yBase, ra, rBase, activation));
    }

    /// <summary>
    /// V[ξ][ch] for channels [from, to) and tile rows [r0, r1): the padded input P (P[r][q] = x[r - 1][q - 1], zero
    /// outside) split into four parity planes of (r1 - r0 + 1) rows × s columns, plane (rp, cp)[i][j] =
    /// P[2(r0 + i) + rp][2j + cp]; tile (r0 + i, j) reads rows 2(r0 + i)..2(r0 + i)+3 and columns 2j..2j+3 of P, i.e.
    /// entries (i, j) and (i, j + 1) / (i + 1, j) of the planes.
    /// </summary>
    unsafe void InputTransform(float[] xa, int xBase, int from, int to, int h, int w, int r0, int r1, int s, float[] v)
    {
        int c = InChannels, ty = r1 - r0, n = (ty + 1) * s, l = ty * s;
        // 4 parity planes + 8 row-transformed planes, each n floats and one of slack (the shifted reads at the end).
        int stride = n + 1;
        var planes = ThreadScratch.Grow(ref winogradPlanes, 12 * stride);
        fixed (float* px = xa, pp = planes, pv = v)
        {
            float* ee = pp, eo = pp + stride, oe = pp + 2 * stride, oo = pp + 3 * stride; // (row parity, column parity)
            float* hr = pp + 4 * stride;                                                 // h[rp][j] at hr + (4·rp + j)·stride
            for (int ch = from; ch < to; ch++)
            {
                float* plane = px + xBase + (long)ch * h * w;
                for (int i = 0; i <= ty; i++)
                {
                    // P row 2g is x row 2g - 1; P row 2g + 1 is x row 2g; P column q is x column q - 1 (g = r0 + i).
                    int g = r0 + i;
                    Cpu.SplitPaddedRow(2 * g - 1 >= 0 && 2 * g - 1 < h ? plane + (long)(2 * g - 1) * w : null, w, 1, ee + i * s, eo + i * s, s);
                    Cpu.SplitPaddedRow(2 * g < h ? plane + (long)(2 * g) * w : null, w, 1, oe + i * s, oo + i * s, s);
                }
                ee[n] = eo[n] = oe[n] = oo[n] = 0f;
                for (int rp = 0; rp < 2; rp++)
                {
                    // Columns: d·B, with the patch's columns E[j], O[j], E[j + 1], O[j + 1].
                    var e0 = new ReadOnlySpan<float>(rp == 0 ? ee : oe, n);
                    var e1 = new ReadOnlySpan<float>((rp == 0 ? ee : oe) + 1, n);
                    var o0 = new ReadOnlySpan<float>(rp == 0 ? eo : oo, n);
                    var o1 = new ReadOnlySpan<float>((rp == 0 ? eo : oo) + 1, n);
                    float* hb = hr + 4 * rp * stride;
                    TensorPrimitives.Subtract(e0, e1, new Span<float>(hb, n));
                    TensorPrimitives.Add(o0, e1, new Span<float>(hb + stride, n));
                    TensorPrimitives.Subtract(e1, o0, new Span<float>(hb + 2 * stride, n));
                    TensorPrimitives.Subtract(o0, o1, new Span<float>(hb + 3 * stride, n));
                    hb[n] = hb[stride + n] = hb[2 * stride + n] = hb[3 * stride + n] = 0f;
                }
                // Rows: Bᵀ·(d·B), with the patch's rows E[i], O[i], E[i + 1], O[i + 1] (one plane row = s floats).
                for (int j = 0; j < 4; j++)
                {
                    var w0 = new ReadOnlySpan<float>(hr + j * stride, l);
                    var w2 = new ReadOnlySpan<float>(hr + j * stride + s, l);
                    var w1 = new ReadOnlySpan<float>(hr + (4 + j) * stride, l);
                    var w3 = new ReadOnlySpan<float>(hr + (4 + j) * stride + s, l);
                    TensorPrimitives.Subtract(w0, w2, new Span<float>(pv + ((long)(0 + j) * c + ch) * l, l));
                    TensorPrimitives.Add(w1, w2, new Span<float>(pv + ((long)(4 + j) * c + ch) * l, l));
                    TensorPrimitives.Subtract(w2, w1, new Span<float>(pv + ((long)(8 + j) * c + ch) * l, l));
                    TensorPrimitives.Subtract(w1, w3, new Span<float>(pv + ((long)(12 + j) * c + ch) * l, l));
                }
            }
        }
    }

    /// <summary>
    /// Output channels [from, to), tile rows [r0, r1): Y = Aᵀ·M·A per tile (Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]) on whole planes, scattered
    /// into the NCHW output (the junk column and any row or column past the map dropped), then bias, residual, activation.
    /// </summary>
    unsafe void OutputTransform(float[] m, int from, int to, int h, int w, int r0, int r1, int s, float[] ya, int yBase,
        float[]? ra, int rBase, FusedActivation activation)
    {
        int o = OutChannels, ty = r1 - r0, l = ty * s, stride = l + 8;
        int row0 = 2 * r0, rows = Math.Min(2 * r1, h) - row0;   // the output rows of these tiles
        var planes = ThreadScratch.Grow(ref winogradPlanes, 12 * stride);
        fixed (float* pm = m, pp = planes, py = ya)
        {
            float* sr = pp;             // s[a][j] at sr + (4·a + j)·stride, a = 0, 1
            float* yr = pp + 8 * stride; // y[a][bcol] at yr + (2·a + bcol)·stride
            for (int oc = from; oc < to; oc++)
            {
                for (int j = 0; j < 4; j++)
                {
                    var m0 = new ReadOnlySpan<float>(pm + ((long)(0 + j) * o + oc) * l, l);
                    var m1 = new ReadOnlySpan<float>(pm + ((long)(4 + j) * o + oc) * l, l);
                    var m2 = new ReadOnlySpan<float>(pm + ((long)(8 + j) * o + oc) * l, l);
                    var m3 = new ReadOnlySpan<float>(pm + ((long)(12 + j) * o + oc) * l, l);
                    var s0 = new Span<float>(sr + j * stride, l);
                    var s1 = new Span<float>(sr + (4 + j) * stride, l);
                    TensorPrimitives.Add(m0, m1, s0);
                    TensorPrimitives.Add(s0, m2, s0);
                    TensorPrimitives.Subtract(m1, m2, s1);
                    TensorPrimitives.Subtract(s1, m3, s1);
                }
                for (int a = 0; a < 2; a++)
                {
                    var q0 = new ReadOnlySpan<float>(sr + (4 * a) * stride, l);
                    var q1 = new ReadOnlySpan<float>(sr + (4 * a + 1) * stride, l);
                    var q2 = new ReadOnlySpan<float>(sr + (4 * a + 2) * stride, l);
                    var q3 = new ReadOnlySpan<float>(sr + (4 * a + 3) * stride, l);
                    var y0 = new Span<float>(yr + (2 * a) * stride, l);
                    var y1 = new Span<float>(yr + (2 * a + 1) * stride, l);
                    TensorPrimitives.Add(q0, q1, y0);
                    TensorPrimitives.Add(y0, q2, y0);
                    TensorPrimitives.Subtract(q1, q2, y1);
                    TensorPrimitives.Subtract(y1, q3, y1);
                }
                float* dst = py + yBase + (long)oc * h * w + (long)row0 * w;
                for (int i = 0; i < ty; i++)
                    for (int a = 0; a < 2 && 2 * i + a < rows; a++)
                        Interleave(yr + (2 * a) * stride + i * s, yr + (2 * a + 1) * stride + i * s, dst + (long)(2 * i + a) * w, w);
                Epilogue(new Span<float>(dst, rows * w), bias?[oc] ?? 0f,
                    ra is null ? default : ra.AsSpan(rBase + oc * h * w + row0 * w, rows * w), ra is not null, activation);
            }
        }
    }

    /// <summary>dst[2j] = even[j], dst[2j + 1] = odd[j], for the w entries of one output row.</summary>
    static unsafe void Interleave(float* even, float* odd, float* dst, int w)
    {
        int j = 0;
        if (Avx.IsSupported)
            for (; 2 * j + 16 <= w; j += 8)
            {
                var e = Vector256.Load(even + j);
                var od = Vector256.Load(odd + j);
                var lo = Avx.UnpackLow(e, od);    // e0 o0 e1 o1 | e4 o4 e5 o5
                var hi = Avx.UnpackHigh(e, od);   // e2 o2 e3 o3 | e6 o6 e7 o7
                Avx.Permute2x128(lo, hi, 0x20).Store(dst + 2 * j);
                Avx.Permute2x128(lo, hi, 0x31).Store(dst + 2 * j + 8);
            }
        for (; 2 * j < w; j++)
        {
            dst[2 * j] = even[j];
            if (2 * j + 1 < w) dst[2 * j + 1] = odd[j];
        }
    }
}
