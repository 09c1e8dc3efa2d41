using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nabla;

/// <summary>
/// The wide channel tiles without im2col: the tile's broadcast operand is read straight from a zero-padded channels-last
/// copy of the input rows ([row][column][channel]). For output position (y, x) and tap (ki, kj) the C input channels are
/// consecutive floats at ((y·sh + ki·dh)·Wp + x·sw + kj·dw)·C, so each tile keeps six position pointers, adds a tap offset,
/// and walks the channels. The weights are packed with K ordered (tap, channel) to match. The copy is the input's size;
/// the im2col it replaces is kh·kw/s² times that (9× for ResNet's 7×7 layers, whose 920 KB im2col each thread built whole
/// at two threads), so this path is taken where s² &lt; kh·kw: a 1×1 stride-2 layer keeps im2col (its columns are a quarter
/// of the input; ResNet's 256 → 512 one took 226 against 131 µs this way).
/// </summary>
public sealed partial class PackedConv2d
{
    /// <summary>Whether the wide channel tiles read a channels-last copy of the input instead of im2col columns. Settable
    /// by tests and measurements.</summary>
    internal static bool UseNhwcTiles = Avx512F.IsSupported;

    float[]? nhwcPanels;        // [ceil(O/64)][kh·kw][C][64], zero padded

    [ThreadStatic] static float[]? nhwcInput;
    [ThreadStatic] static long[]? nhwcPositions;

    /// <summary>Whether the (tap, channel) panels have been built, i.e. this path has run (for tests).</summary>
    internal bool HasNhwcPanels => Volatile.Read(ref nhwcPanels) is not null;

    float[] NhwcPanels() => Volatile.Read(ref nhwcPanels) ?? Once(ref nhwcPanels, () => FromUnpackedWeights(BuildNhwcPanels));

    float[] BuildNhwcPanels(float[] w)
    {
        int o = OutChannels, c = InChannels, taps = KernelH * KernelW, k = c * taps, blocks = (o + 63) / 64;
        var d = new float[(long)blocks * k * 64 is var len && len <= int.MaxValue ? (int)len : throw new NablaException("packed conv2d: weight too large for channel panels")];
        // Written in order (a 64-channel × taps patch of w read per input channel), not scattered: the scattered order
        // took 370 ms over ResNet-18's layers on the first run.
        for (int ob = 0; ob < blocks; ob++)
        {
            int n = Math.Min(64, o - ob * 64);
            for (int ci = 0; ci < c; ci++)
                for (int t = 0; t < taps; t++)
                {
                    long dst = ((long)ob * k + t * c + ci) * 64, src = (long)ob * 64 * k + ci * taps + t;
                    for (int j = 0; j < n; j++) d[dst + j] = w[src + (long)j * k];
                }
        }
        return d;
    }

    /// <summary>
    /// Fills this thread's channels-last copy of image <paramref name="b"/>'s input rows for output rows [y0, y1): padded
    /// row r, column q, channel ci at <c>(r·wp + q)·C + ci</c>, where padded row r is input row y0·s + r − top and column q
    /// input column q − left (zero outside the input). Returns the buffer and its padded width.
    /// </summary>
    unsafe float[] NhwcRows(int b, float[] xa, int xo, int h, int w, int y0, int y1, int ow, out int wp)
    {
        int c = InChannels, s = Stride.H, pt = Padding.Top, pl = Padding.Left;
        int hb = (y1 - 1 - y0) * s + (KernelH - 1) * Dilation.H + 1;
        wp = NhwcWidth(ow);
        var buf = ThreadScratch.Grow(ref nhwcInput, hb * wp * c);
        int cols = Math.Min(w, wp - pl);   // input columns the padded rows hold
        fixed (float* px = xa, pb = buf)
        {
            float* plane0 = px + xo + (long)b * c * h * w;
            for (int r = 0; r < hb; r++)
            {
                float* row = pb + (long)r * wp * c;
                int iy = y0 * s + r - pt;
                if ((uint)iy >= (uint)h || cols <= 0)
                {
                    new Span<float>(row, wp * c).Clear();
                    continue;
                }
                new Span<float>(row, pl * c).Clear();
                if (pl + cols < wp) new Span<float>(row + (long)(pl + cols) * c, (wp - pl - cols) * c).Clear();
                float* src = plane0 + (long)iy * w;
                float* dst = row + (long)pl * c;
                int c16 = c / 16 * 16;
                for (int ci = 0; ci < c16; ci += 16)
                    for (int x = 0; x < cols; x += 16)
                        Transpose16(src + (long)ci * h * w + x, (long)h * w, dst + (long)x * c + ci, c, Math.Min(16, cols - x));
                for (int ci = c16; ci < c; ci++)
                    for (int x = 0; x < cols; x++) dst[(long)x * c + ci] = src[(long)ci * h * w + x];
            }
        }
        return buf;
    }

    /// <summary>The padded width of the channels-last rows: the columns the output's windows reach.</summary>
    int NhwcWidth(int ow) => (ow - 1) * Stride.W + (KernelW - 1) * Dilation.W + 1;

    /// <summary>The first <paramref name="n"/> (≤ 16) columns of the 16 rows at <paramref name="src"/> (rows
    /// <paramref name="lds"/> apart) transposed into <paramref name="n"/> rows of 16 at <paramref name="dst"/> (rows
    /// <paramref name="ldd"/> apart); the same shuffles as <see cref="Epilogue16"/>. A part block loads under a mask, so
    /// nothing past column n is read. (Epilogue16 keeps its own copy: built on this one through a 16×16 stack block it took
    /// 1.01–1.02 of the time at one thread and up to 1.10 at two on the stride-2 layers, scratch harness, 10:48 UTC.)</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Transpose16(float* src, long lds, float* dst, long ldd, int n)
    {
        var m = n == 16 ? Vector512<float>.AllBitsSet : Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(n)).AsSingle();
        var x0 = Load(src + 0 * lds, m, n); var x1 = Load(src + 1 * lds, m, n);
        var x2 = Load(src + 2 * lds, m, n); var x3 = Load(src + 3 * lds, m, n);
        var x4 = Load(src + 4 * lds, m, n); var x5 = Load(src + 5 * lds, m, n);
        var x6 = Load(src + 6 * lds, m, n); var x7 = Load(src + 7 * lds, m, n);
        var x8 = Load(src + 8 * lds, m, n); var x9 = Load(src + 9 * lds, m, n);
        var x10 = Load(src + 10 * lds, m, n); var x11 = Load(src + 11 * lds, m, n);
        var x12 = Load(src + 12 * lds, m, n); var x13 = Load(src + 13 * lds, m, n);
        var x14 = Load(src + 14 * lds, m, n); var x15 = Load(src + 15 * lds, m, n);
        var r0 = Avx512F.UnpackLow(x0, x1).AsDouble(); var r1 = Avx512F.UnpackHigh(x0, x1).AsDouble();
        var r2 = Avx512F.UnpackLow(x2, x3).AsDouble(); var r3 = Avx512F.UnpackHigh(x2, x3).AsDouble();
        var r4 = Avx512F.UnpackLow(x4, x5).AsDouble(); var r5 = Avx512F.UnpackHigh(x4, x5).AsDouble();
        var r6 = Avx512F.UnpackLow(x6, x7).AsDouble(); var r7 = Avx512F.UnpackHigh(x6, x7).AsDouble();
        var r8 = Avx512F.UnpackLow(x8, x9).AsDouble(); var r9 = Avx512F.UnpackHigh(x8, x9).AsDouble();
        var r10 = Avx512F.UnpackLow(x10, x11).AsDouble(); var r11 = Avx512F.UnpackHigh(x10, x11).AsDouble();
        var r12 = Avx512F.UnpackLow(x12, x13).AsDouble(); var r13 = Avx512F.UnpackHigh(x12, x13).AsDouble();
        var r14 = Avx512F.UnpackLow(x14, x15).AsDouble(); var r15 = Avx512F.UnpackHigh(x14, x15).AsDouble();
        var b0 = Avx512F.UnpackLow(r0, r2).AsSingle(); var b1 = Avx512F.UnpackHigh(r0, r2).AsSingle();
        var b2 = Avx512F.UnpackLow(r1, r3).AsSingle(); var b3 = Avx512F.UnpackHigh(r1, r3).AsSingle();
        var b4 = Avx512F.UnpackLow(r4, r6).AsSingle(); var b5 = Avx512F.UnpackHigh(r4, r6).AsSingle();
        var b6 = Avx512F.UnpackLow(r5, r7).AsSingle(); var b7 = Avx512F.UnpackHigh(r5, r7).AsSingle();
        var b8 = Avx512F.UnpackLow(r8, r10).AsSingle(); var b9 = Avx512F.UnpackHigh(r8, r10).AsSingle();
        var b10 = Avx512F.UnpackLow(r9, r11).AsSingle(); var b11 = Avx512F.UnpackHigh(r9, r11).AsSingle();
        var b12 = Avx512F.UnpackLow(r12, r14).AsSingle(); var b13 = Avx512F.UnpackHigh(r12, r14).AsSingle();
        var b14 = Avx512F.UnpackLow(r13, r15).AsSingle(); var b15 = Avx512F.UnpackHigh(r13, r15).AsSingle();
        var p00 = Avx512F.Shuffle4x128(b0, b4, 0x44); var p01 = Avx512F.Shuffle4x128(b0, b4, 0xEE);
        var p02 = Avx512F.Shuffle4x128(b8, b12, 0x44); var p03 = Avx512F.Shuffle4x128(b8, b12, 0xEE);
        var p10 = Avx512F.Shuffle4x128(b1, b5, 0x44); var p11 = Avx512F.Shuffle4x128(b1, b5, 0xEE);
        var p12 = Avx512F.Shuffle4x128(b9, b13, 0x44); var p13 = Avx512F.Shuffle4x128(b9, b13, 0xEE);
        var p20 = Avx512F.Shuffle4x128(b2, b6, 0x44); var p21 = Avx512F.Shuffle4x128(b2, b6, 0xEE);
        var p22 = Avx512F.Shuffle4x128(b10, b14, 0x44); var p23 = Avx512F.Shuffle4x128(b10, b14, 0xEE);
        var p30 = Avx512F.Shuffle4x128(b3, b7, 0x44); var p31 = Avx512F.Shuffle4x128(b3, b7, 0xEE);
        var p32 = Avx512F.Shuffle4x128(b11, b15, 0x44); var p33 = Avx512F.Shuffle4x128(b11, b15, 0xEE);
        Put(0, Avx512F.Shuffle4x128(p00, p02, 0x88), dst, ldd, n);
        Put(4, Avx512F.Shuffle4x128(p00, p02, 0xDD), dst, ldd, n);
        Put(8, Avx512F.Shuffle4x128(p01, p03, 0x88), dst, ldd, n);
        Put(12, Avx512F.Shuffle4x128(p01, p03, 0xDD), dst, ldd, n);
        Put(1, Avx512F.Shuffle4x128(p10, p12, 0x88), dst, ldd, n);
        Put(5, Avx512F.Shuffle4x128(p10, p12, 0xDD), dst, ldd, n);
        Put(9, Avx512F.Shuffle4x128(p11, p13, 0x88), dst, ldd, n);
        Put(13, Avx512F.Shuffle4x128(p11, p13, 0xDD), dst, ldd, n);
        Put(2, Avx512F.Shuffle4x128(p20, p22, 0x88), dst, ldd, n);
        Put(6, Avx512F.Shuffle4x128(p20, p22, 0xDD), dst, ldd, n);
        Put(10, Avx512F.Shuffle4x128(p21, p23, 0x88), dst, ldd, n);
        Put(14, Avx512F.Shuffle4x128(p21, p23, 0xDD), dst, ldd, n);
        Put(3, Avx512F.Shuffle4x128(p30, p32, 0x88), dst, ldd, n);
        Put(7, Avx512F.Shuffle4x128(p30, p32, 0xDD), dst, ldd, n);
        Put(11, Avx512F.Shuffle4x128(p31, p33, 0x88), dst, ldd, n);
        Put(15, Avx512F.Shuffle4x128(p31, p33, 0xDD), dst, ldd, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe Vector512<float> Load(float* p, Vector512<float> mask, int n) => n == 16 ? Vector512.Load(p) : Avx512F.MaskLoad(p, mask, Vector512<float>.Zero);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Put(int row, Vector512<float> v, float* dst, long ldd, int n)
    {
        if (row < n) v.Store(dst + row * ldd);
    }

    /// <summary>
    /// Channel blocks [obFrom, obTo) over output rows [y0, y1) from the channels-last copy (<see cref="NhwcRows"/>), into
    /// this thread's [positions, channels] tile result, then the epilogue as in <see cref="ChannelBlocks"/>. A "tap" of the
    /// tile is a run of consecutive floats of the copy: a whole kernel row (kw·C floats) without column dilation, else one
    /// tap's C channels. K is walked in chunks of at most <see cref="TK"/> rows: whole runs while a run fits, else a run in
    /// parts of TK floats (which may cross from one tap's channels into the next's).
    /// </summary>
    unsafe void NhwcBlocks(int obFrom, int obTo, float[] xs, int wp, int y0, int y1, int ow, float[] ct, int opad,
        float[] ya, int yBase, int ldy, float[]? ra, int rBase, FusedActivation activation)
    {
        int c = InChannels, sh = Stride.H, sw = Stride.W, kdim = c * KernelH * KernelW;
        // With no column dilation a kernel row's kw·C taps are consecutive floats of the copy, and K's (tap, channel) order
        // walks them in order: each "tap" of the tile is then a whole kernel row (3 pointer sets for a 3×3, not 9).
        bool rowRuns = Dilation.W == 1;
        int taps = rowRuns ? KernelH : KernelH * KernelW, run = rowRuns ? KernelW * c : c;
        int l = (y1 - y0) * ow, TR = this.TR(l), lp = (l + TR - 1) / TR * TR;
        var panels = NhwcPanels();
        var pos = ThreadScratch.Grow(ref nhwcPositions, lp);
        for (int q = 0; q < lp; q++)
        {
            int qq = Math.Min(q, l - 1), y = qq / ow, x = qq % ow;   // padding positions repeat the last one (dropped later)
            pos[q] = ((long)y * sh * wp + (long)x * sw) * c;
        }
        int tapsPer = run <= TK ? TK / run : 1, cPer = run <= TK ? run : TK;
        // On the stack up to 64 taps (a column-dilated kernel larger than 8×8 takes an array).
        Span<long> tapOffsets = taps <= 64 ? stackalloc long[taps] : new long[taps];
        for (int t = 0; t < taps; t++)
            tapOffsets[t] = rowRuns ? (long)t * Dilation.H * wp * c : ((long)(t / KernelW) * Dilation.H * wp + t % KernelW * Dilation.W) * c;
        fixed (float* pw = panels, px = xs, pc = ct)
        fixed (long* pq = pos, offs = tapOffsets)
        {
            for (int ob = obFrom; ob < obTo; ob++)
            {
                float* wBlock = pw + (long)ob * kdim * 64;
                float* cBlock = pc + ob * 64;
                bool first = true;
                for (int t0 = 0; t0 < taps; t0 += tapsPer)
                {
                    int nt = Math.Min(tapsPer, taps - t0);
                    for (int c0 = 0; c0 < run; c0 += cPer)
                    {
                        int cc = Math.Min(cPer, run - c0), kc = nt * cc;
                        float* wk = wBlock + ((long)t0 * run + c0) * 64;
                        float* next = wk + (long)kc * 64;
                        int nextLines = kc * 4;
                        float* a = px + c0;
                        for (int t = 0, i = 0; t < lp; t += TR, i++)
                        {
                            bool fetch = (long)i * kc < nextLines;
                            float* pf = fetch ? next + (long)i * kc * 16 : wk;
                            int pfStep = fetch ? 16 : 0;
                            if (TR == 6) TileTaps<SixRows>(nt, offs + t0, cc, a, pq + t, wk, cBlock + t * opad, opad, !first, pf, pfStep);
                            else TileTaps<FiveRows>(nt, offs + t0, cc, a, pq + t, wk, cBlock + t * opad, opad, !first, pf, pfStep);
                        }
                        first = false;
                    }
                }
                // This block's epilogue while its result is in cache.
                ChannelEpilogue(ob, ct, l, opad, ya, yBase, ldy, ra, rBase, activation);
            }
        }
    }

    /// <summary>C[6, 64] (or C[5, 64]) (+)= Σ over <paramref name="taps"/> taps and <paramref name="cc"/> channels of
    /// A·W, where position j's channels for tap t start at <c>a + pos[j] + offs[t]</c> and W is the panel's rows in
    /// (tap, channel) order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void TileTaps<R>(int taps, long* offs, int cc, float* a, long* pos, float* w, float* c, int ldc, bool acc, float* pf, int pfStep)
        where R : struct, ITileRows
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        for (int t = 0; t < taps; t++)
        {
            float* at = a + offs[t];
            float* a0 = at + pos[0], a1 = at + pos[1], a2 = at + pos[2], a3 = at + pos[3], a4 = at + pos[4];
            float* a5 = R.Six ? at + pos[5] : a4;
            for (int p = 0; p < cc; p++)
            {
                var w0 = Vector512.Load(w);
                var w1 = Vector512.Load(w + 16);
                var w2 = Vector512.Load(w + 32);
                var w3 = Vector512.Load(w + 48);
                Sse.Prefetch1(pf);
                pf += pfStep;
                var b0 = Vector512.Create(a0[p]);
                c00 = Avx512F.FusedMultiplyAdd(b0, w0, c00); c01 = Avx512F.FusedMultiplyAdd(b0, w1, c01);
                c02 = Avx512F.FusedMultiplyAdd(b0, w2, c02); c03 = Avx512F.FusedMultiplyAdd(b0, w3, c03);
                var b1 = Vector512.Create(a1[p]);
                c10 = Avx512F.FusedMultiplyAdd(b1, w0, c10); c11 = Avx512F.FusedMultiplyAdd(b1, w1, c11);
                c12 = Avx512F.FusedMultiplyAdd(b1, w2, c12); c13 = Avx512F.FusedMultiplyAdd(b1, w3, c13);
                var b2 = Vector512.Create(a2[p]);
                c20 = Avx512F.FusedMultiplyAdd(b2, w0, c20); c21 = Avx512F.FusedMultiplyAdd(b2, w1, c21);
                c22 = Avx512F.FusedMultiplyAdd(b2, w2, c22); c23 = Avx512F.FusedMultiplyAdd(b2, w3, c23);
                var b3 = Vector512.Create(a3[p]);
                c30 = Avx512F.FusedMultiplyAdd(b3, w0, c30); c31 = Avx512F.FusedMultiplyAdd(b3, w1, c31);
                c32 = Avx512F.FusedMultiplyAdd(b3, w2, c32); c33 = Avx512F.FusedMultiplyAdd(b3, w3, c33);
                var b4 = Vector512.Create(a4[p]);
                c40 = Avx512F.FusedMultiplyAdd(b4, w0, c40); c41 = Avx512F.FusedMultiplyAdd(b4, w1, c41);
                c42 = Avx512F.FusedMultiplyAdd(b4, w2, c42); c43 = Avx512F.FusedMultiplyAdd(b4, w3, c43);
                if (R.Six)
                {
                    var b5 = Vector512.Create(a5[p]);
                    c50 = Avx512F.FusedMultiplyAdd(b5, w0, c50); c51 = Avx512F.FusedMultiplyAdd(b5, w1, c51);
                    c52 = Avx512F.FusedMultiplyAdd(b5, w2, c52); c53 = Avx512F.FusedMultiplyAdd(b5, w3, c53);
                }
                w += 64;
            }
        }
        Store4(c, c00, c01, c02, c03, acc); c += ldc;
        Store4(c, c10, c11, c12, c13, acc); c += ldc;
        Store4(c, c20, c21, c22, c23, acc); c += ldc;
        Store4(c, c30, c31, c32, c33, acc); c += ldc;
        Store4(c, c40, c41, c42, c43, acc);
        if (R.Six) Store4(c + ldc, c50, c51, c52, c53, acc);
    }
}
