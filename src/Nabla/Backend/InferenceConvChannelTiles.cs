using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nabla;

/// <summary>
/// The channel-tiled path of <see cref="PackedConv2d"/> (AVX-512): the GEMM roles are swapped so the output channels are
/// the dimension the register tile vectorizes, which keeps the tile full on small maps (7×7 = 49 positions filled two
/// 32-column GEMM tiles to 77%). The weights are packed once, on first use, into [O/TC][C·kh·kw][TC] panels; the im2col
/// columns [C·kh·kw, L] (L padded to the tile) are the broadcast operand. Wide layers (O ≥ 64) use 64-channel panels and
/// a 6-position × 64-channel tile (24 accumulators); narrow ones (12 ≤ O ≤ 32) 16-channel panels and a 12 × 16 tile.
/// The [L, O] result is transposed back to NCHW with the bias/residual/activation epilogue per channel block while it
/// is in cache. Images of a batch run one by one (split over threads); batch 1 splits the channel blocks or the output
/// rows over threads, each thread building the im2col columns it reads (<see cref="ChannelPart"/>).
/// </summary>
public sealed partial class PackedConv2d
{
    /// <summary>Whether the channel-tiled path may run (AVX-512F; <c>NABLA_CONV_CHANNEL_TILES=0</c> turns it off, for
    /// A/B measurements). Settable by tests to compare both paths.</summary>
    internal static bool UseChannelTiles = Avx512F.IsSupported && Environment.GetEnvironmentVariable("NABLA_CONV_CHANNEL_TILES") != "0";

    /// <summary>Largest output positions per image (oh·ow) that take the channel-tiled path (ResNet's 56×56 maps gain
    /// too; its 112×112 first layer, K = 147, did not).</summary>
    internal static int ChannelTileMaxColumns = 4096;

    /// <summary>Fewest taps (C·kh·kw) and output channels for the channel-tiled path: with fewer the 64-channel tile is
    /// mostly padding or the K loop too short to pay for the transposed epilogue (measured: 1×1 layers with K = 64–128
    /// and LeNet's 16-channel layers were slower).</summary>
    const int ChannelTileMinK = 192, ChannelTileMinO = 64;

    /// <summary>Narrow layers (12 ≤ O ≤ 32, such as LeNet's and mnist-8's 16-channel second convolutions) use 16-channel
    /// panels and a 12-position × 16-channel tile instead, from this many taps (48 channels measured slower than the GEMM).</summary>
    const int NarrowMinK = 64, NarrowMinO = 12, NarrowMaxO = 32;

    static bool ChannelTileEligible(int o, int k) => (o >= ChannelTileMinO && k >= ChannelTileMinK) || (o >= NarrowMinO && o <= NarrowMaxO && k >= NarrowMinK);

    /// <summary>Channels per panel and positions per register tile: 64 × 6 for wide layers (64 × 5 where that pads at
    /// least 5% fewer positions: ResNet's 7×7 maps are 49 = 10 × 5 − 1 positions against 9 × 6 − 5; the five-row tile is
    /// otherwise slower, 0.60 → 0.70 ms on a 28×28 map), 16 × 12 for narrow ones.</summary>
    int TC => OutChannels >= ChannelTileMinO ? 64 : 16;
    int TR(int l) => OutChannels < ChannelTileMinO ? 12 : 20 * ((l + 5) / 6 * 6 - (l + 4) / 5 * 5) > (l + 5) / 6 * 6 ? 5 : 6;

    const int TK = 256;


    float[]? channelPanels;        // [ceil(O/64)][K][64], zero padded
    readonly Lock panelLock = new();

    [ThreadStatic] static float[]? tileOut;

    /// <summary>Whether either layout of channel panels has been built, i.e. the channel-tiled path has run (for tests).</summary>
    internal bool HasChannelPanels => Volatile.Read(ref channelPanels) is not null || Volatile.Read(ref nhwcPanels) is not null;

    /// <summary>Whether the im2col tiles' panels have been built (for tests: layers on the channels-last tiles never build them).</summary>
    internal bool HasIm2ColPanels => Volatile.Read(ref channelPanels) is not null;

    /// <summary>Whether the wide tiles read a channels-last copy of the input (<see cref="NhwcBlocks"/>) rather than im2col
    /// columns: where that copy is smaller (stride² &lt; kh·kw).</summary>
    bool NhwcTiles => UseNhwcTiles && TC == 64 && Stride.H * Stride.W < KernelH * KernelW;

    bool ChannelTilesPossible => Groups == 1 && !direct && fastPath && ChannelTileEligible(OutChannels, InChannels * KernelH * KernelW);

    float[] ChannelPanels() => Volatile.Read(ref channelPanels) ?? Once(ref channelPanels, () => FromUnpackedWeights(BuildChannelPanels));

    float[] BuildChannelPanels(float[] w)
    {
        int TC = this.TC, o = OutChannels, k = InChannels * KernelH * KernelW, blocks = (o + TC - 1) / TC;
        var d = new float[(long)blocks * k * TC is var len && len <= int.MaxValue ? (int)len : throw new NablaException("packed conv2d: weight too large for channel panels")];
        for (int ob = 0; ob < blocks; ob++)
        {
            int n = Math.Min(TC, o - ob * TC);
            for (int q = 0; q < k; q++)
            {
                long dst = ((long)ob * k + q) * TC, src = (long)ob * TC * k + q;
                for (int j = 0; j < n; j++) d[dst + j] = w[src + (long)j * k];
            }
        }
        return d;
    }

    /// <summary>Runs <paramref name="build"/> on the weights as [O, K]: a constant weight's own array, or else the packed
    /// weights unpacked into a rented array, which is returned afterwards: the layouts are built once per layer, and fresh
    /// arrays for each layer's unpacked copy cost ResNet-18's first run 170 ms of page faults on the bench machine. (The
    /// shared pool keeps such arrays until it trims them after a while unused; ONNX models, whose weights are constant,
    /// no longer rent them.)</summary>
    T FromUnpackedWeights<T>(Func<float[], T> build)
    {
        if (weight is not null) return build(weight);   // a constant weight, read where it lies
        var p = packed![0];
        var w = System.Buffers.ArrayPool<float>.Shared.Rent(p.M * p.K);
        try { return build(Gemm.UnpackA(p, w)); }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(w); }
    }

    /// <summary>A weight layout (or, for a constant weight, the GEMM's packed copy) built on first use, once even when
    /// threads race for it. (Callers
    /// read the field first: the delegate they pass is allocated only on that slow path.)</summary>
    T Once<T>(ref T? field, Func<T> build) where T : class
    {
        var v = Volatile.Read(ref field);
        if (v is not null) return v;
        lock (panelLock)
        {
            if (field is null) Volatile.Write(ref field, build());
            return field!;
        }
    }

    /// <summary>One image through the channel-tiled path.</summary>
    void ChannelTiled(int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow, FusedActivation activation, bool serial)
    {
        var panels = NhwcTiles ? null : ChannelPanels();   // the channels-last tiles have panels of their own
        int TC = this.TC, c = InChannels, o = OutChannels, l = oh * ow, kdim = c * KernelH * KernelW;
        int blocks = (o + TC - 1) / TC, tr = TR(l), tiles = (l + tr - 1) / tr;
        int threads = serial ? 1 : Gemm.Threads;
        if (threads > 1 && (long)kdim * tiles * tr * blocks * TC < 1 << 20) threads = 1;
        // Split the channel blocks when there are many (each thread then reads only its weights), else the output rows
        // (each thread reads all weights but builds and reads only its rows' columns).
        bool byBlocks = blocks >= 4 * threads || (blocks >= threads && tiles < 4 * threads);
        int parts = byBlocks ? threads : Math.Min(threads, oh);
        if (parts > 1)
            ChannelPartsSplit(parts, byBlocks, panels, b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation);
        else ChannelPart(0, 1, false, panels, b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, 0);
    }

    /// <summary>The threaded split of <see cref="ChannelTiled"/>; a method of its own so that only a split call allocates
    /// its closure.</summary>
    void ChannelPartsSplit(int parts, bool byBlocks, float[]? panels, int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo,
        int h, int w, int oh, int ow, FusedActivation activation)
    {
        long call = Interlocked.Increment(ref splitCalls);
        WorkerPool.For(parts, parts, p => ChannelPart(p, parts, byBlocks, panels, b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, call));
    }

    /// <summary>Numbers the threaded calls, so that a thread that runs several parts of one call (an inline
    /// <see cref="WorkerPool.For"/>, a late worker's part taken over) builds the whole-image columns once: the call whose
    /// columns (or channels-last copy) this thread's scratch holds is <see cref="inputCall"/> (0: none known; one call is
    /// one layer, so one number serves both kinds of scratch).</summary>
    static long splitCalls;
    [ThreadStatic] static long inputCall;

    /// <summary>
    /// Part <paramref name="p"/> of <paramref name="parts"/> of one image: its share of the channel blocks over all
    /// positions (<paramref name="byBlocks"/>), or all channel blocks over its band of output rows. Each part builds its
    /// im2col columns and its [positions, channels] tile result in its own thread's scratch, so no cache line is written
    /// by one core and read by the other.
    /// </summary>
    /// <remarks>
    /// Before, the columns were built once (split by input channel over the threads) and read by both: at two threads the
    /// im2col of ResNet-18's stride-2 28×28 layer took 290–500 µs against 130–230 µs at one (and 340 µs when only the
    /// caller built it), because every line it wrote was still cached by the other core from the previous layer.
    /// A split by blocks builds the whole im2col on each thread: the same wall time as one thread's, without a second
    /// fork-join. Paired in one process at two threads (scratch harness, 2026-11-27 07:40 UTC), new / old time: stride-2
    /// layers 56→28 0.60, 28→14 0.63, 14→7 0.79; five cold 7×7 512-channel layers 0.87; one thread 0.99–1.00. Old and new
    /// builds in alternating processes with JIT tiering off (07:55): 56→28 485–500 against 637–693 µs, 28→14 451–468
    /// against 604–626, 14→7 500–531 against 541–578, the 7×7 layers 878–942 against 948–1052. ResNet-18 batch 1 at two
    /// threads: 12.5 against 13.4–13.7 ms. Forcing the row split where blocks are split now (the 14→7 and 7×7 layers) was
    /// 7–10 % slower.
    /// </remarks>
    void ChannelPart(int p, int parts, bool byBlocks, float[]? panels, int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo,
        int h, int w, int oh, int ow, FusedActivation activation, long call)
    {
        int TC = this.TC, c = InChannels, o = OutChannels, l = oh * ow, kdim = c * KernelH * KernelW;
        int blocks = (o + TC - 1) / TC, opad = blocks * TC;
        int y0 = 0, y1 = oh, obFrom = 0, obTo = blocks;
        if (byBlocks) (obFrom, obTo) = (blocks * p / parts, blocks * (p + 1) / parts);
        else (y0, y1) = (oh * p / parts, oh * (p + 1) / parts);
        int lb = (y1 - y0) * ow, TR = this.TR(lb), lp = (lb + TR - 1) / TR * TR;
        if (lb == 0 || obFrom == obTo) return;
        var ct = ThreadScratch.Grow(ref tileOut, lp * opad);
        int off = b * o * l + y0 * ow;
        // A block part reads the whole image's input: built already when this thread ran another part of this call.
        bool built = byBlocks && call != 0 && inputCall == call;
        inputCall = 0;
        if (panels is null)
        {
            int wp = NhwcWidth(ow);
            var xs = built ? nhwcInput! : NhwcRows(b, xa, xo, h, w, y0, y1, ow, out wp);
            if (byBlocks) inputCall = call;
            NhwcBlocks(obFrom, obTo, xs, wp, y0, y1, ow, ct, opad, ya, yo + off, l, ra, ro + off, activation);
            return;
        }
        var cols = ThreadScratch.Grow(ref scratch, kdim * lp);
        if (!built)
        {
            Im2Col(xa, xo + b * c * h * w, 0, c, h, w, cols, y1 - y0, ow, lp, 0, y0);
            if (lp > lb)
                for (int r = 0; r < kdim; r++)
                    for (int q = r * lp + lb; q < (r + 1) * lp; q++) cols[q] = 0;
        }
        if (byBlocks) inputCall = call;
        ChannelBlocks(obFrom, obTo, TR, panels, cols, ct, kdim, lb, lp, opad, ya, yo + off, l, ra, ro + off, activation);
    }

    /// <summary>Channel blocks [obFrom, obTo) × the <paramref name="l"/> positions of <paramref name="cols"/> (padded to
    /// <paramref name="lp"/>, a multiple of the tile height), epilogue included: channel oc's outputs go to
    /// <paramref name="ya"/> from <c>yBase + oc·ldy</c> (the residual likewise from <paramref name="rBase"/>).</summary>
    unsafe void ChannelBlocks(int obFrom, int obTo, int TR, float[] panels, float[] cols, float[] ct, int kdim, int l, int lp, int opad,
        float[] ya, int yBase, int ldy, float[]? ra, int rBase, FusedActivation activation)
    {
        int TC = this.TC;
        fixed (float* pw = panels, pa = cols, pc = ct)
        {
            for (int ob = obFrom; ob < obTo; ob++)
            {
                float* wBlock = pw + (long)ob * kdim * TC;
                float* cBlock = pc + ob * TC;
                for (int k0 = 0; k0 < kdim; k0 += TK)
                {
                    int kc = Math.Min(TK, kdim - k0);
                    float* wk = wBlock + (long)k0 * TC;
                    // The weight sub-panel after this one (the next k block, or the next channel block's first: they follow
                    // in memory) is fetched into L2 by the first tiles, one line per k step, so its first tile does not
                    // wait on DRAM: layers with 45 MB of weights (ResNet's last stage) stream them on every call.
                    float* next = wk + (long)kc * TC;
                    int nextLines = kc * TC / 16;
                    for (int t = 0, i = 0; t < lp; t += TR, i++)
                    {
                        bool fetch = (long)i * kc < nextLines;
                        float* pf = fetch ? next + (long)i * kc * 16 : wk;
                        int pfStep = fetch ? 16 : 0;
                        if (TR == 6) Tile<SixRows>(kc, pa + (long)k0 * lp + t, lp, wk, cBlock + t * opad, opad, k0 > 0, pf, pfStep);
                        else if (TR == 5) Tile<FiveRows>(kc, pa + (long)k0 * lp + t, lp, wk, cBlock + t * opad, opad, k0 > 0, pf, pfStep);
                        else Tile12x16(kc, pa + (long)k0 * lp + t, lp, wk, cBlock + t * opad, opad, k0 > 0);
                    }
                }
                // This block's epilogue while its result is in cache.
                ChannelEpilogue(ob, ct, l, opad, ya, yBase, ldy, ra, rBase, activation);
            }
        }
    }

    /// <summary>The channel tiles' epilogue: channel block <paramref name="ob"/> of the [positions, channels] result
    /// <paramref name="ct"/> (row stride <paramref name="opad"/>) transposed back to NCHW rows, adding bias and residual, then
    /// the activation; channel oc's outputs go to <paramref name="ya"/> from <c>yBase + oc·ldy</c>.</summary>
    unsafe void ChannelEpilogue(int ob, float[] ct, int l, int opad, float[] ya, int yBase, int ldy, float[]? ra, int rBase, FusedActivation activation)
    {
        int o = OutChannels, TC = this.TC;
        bool relu = activation == FusedActivation.Relu;
        fixed (float* pc = ct, py = ya, pb = bias, pr = ra)
        {
            int oc0 = ob * TC, ocEnd = Math.Min(o, oc0 + TC);
            // Whole blocks of 16 positions × 16 channels are transposed in registers; the last positions (fewer than 16)
            // one by one.
            int qVec = Avx512F.IsSupported ? l / 16 * 16 : 0;
            for (int q0 = 0; q0 < qVec; q0 += 16)
                for (int oc = oc0; oc < ocEnd; oc += 16)
                    Epilogue16(pc + (long)q0 * opad + oc, opad, py + yBase + (long)oc * ldy + q0, ldy,
                        pr is null ? null : pr + rBase + (long)oc * ldy + q0, pb is null ? null : pb + oc, Math.Min(16, ocEnd - oc), relu);
            for (int oc = oc0; oc < ocEnd && qVec < l; oc++)
            {
                float bv = pb is null ? 0f : pb[oc];
                float* src = pc + oc;
                float* dst = py + yBase + (long)oc * ldy;
                float* res = pr is null ? null : pr + rBase + (long)oc * ldy;
                for (int q = qVec; q < l; q++)
                {
                    float v = src[(long)q * opad] + bv;
                    if (res is not null) v += res[q];
                    dst[q] = relu ? MathF.Max(v, 0f) : v;
                }
            }
        }
    }

    /// <summary>
    /// The epilogue of 16 positions × <paramref name="channels"/> (≤ 16) channels: rows of <paramref name="src"/> (stride
    /// <paramref name="lds"/>) are positions, 16 channels each (read whole, also past <paramref name="channels"/>: the
    /// [L, opad] block is padded to whole 64- or 16-channel blocks); channel j's 16 outputs go to <c>dst + j·ldd</c> with
    /// its bias, the residual at <c>res + j·ldd</c> and the activation, in the scalar epilogue's order of operations.
    /// </summary>
    /// <remarks>The 16 × 16 transpose: 32-bit then 64-bit interleaves leave 4 × 4 blocks transposed inside each 128-bit
    /// lane (vector 4j + k, lane L: channel 4L + k of positions 4j..4j+3); two rounds of 128-bit lane shuffles then move
    /// lane L of the four vectors k, 4 + k, 8 + k, 12 + k into channel 4L + k's vector. Against the scalar epilogue
    /// (which took 78 µs of the 56→28 stride-2 layer at one thread), paired in one process with JIT tiering off
    /// (scratch harness, 2026-11-27 08:20 UTC), whole-layer time: 56→28 0.89 at one thread and 0.87 at two, 28→14 0.95 and
    /// 0.90, 14→7 0.98 and 0.97, the 7×7 layers 0.99. (With the 16 vectors in stackalloc'd arrays instead of locals it
    /// gained half as much.)</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Epilogue16(float* src, int lds, float* dst, int ldd, float* res, float* bias, int channels, bool relu)
    {
        var x0 = Vector512.Load(src + 0L * lds); var x1 = Vector512.Load(src + 1L * lds);
        var x2 = Vector512.Load(src + 2L * lds); var x3 = Vector512.Load(src + 3L * lds);
        var x4 = Vector512.Load(src + 4L * lds); var x5 = Vector512.Load(src + 5L * lds);
        var x6 = Vector512.Load(src + 6L * lds); var x7 = Vector512.Load(src + 7L * lds);
        var x8 = Vector512.Load(src + 8L * lds); var x9 = Vector512.Load(src + 9L * lds);
        var x10 = Vector512.Load(src + 10L * lds); var x11 = Vector512.Load(src + 11L * lds);
        var x12 = Vector512.Load(src + 12L * lds); var x13 = Vector512.Load(src + 13L * lds);
        var x14 = Vector512.Load(src + 14L * lds); var x15 = Vector512.Load(src + 15L * lds);
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
        Finish(0, Avx512F.Shuffle4x128(p00, p02, 0x88), dst, ldd, res, bias, channels, relu);
        Finish(4, Avx512F.Shuffle4x128(p00, p02, 0xDD), dst, ldd, res, bias, channels, relu);
        Finish(8, Avx512F.Shuffle4x128(p01, p03, 0x88), dst, ldd, res, bias, channels, relu);
        Finish(12, Avx512F.Shuffle4x128(p01, p03, 0xDD), dst, ldd, res, bias, channels, relu);
        Finish(1, Avx512F.Shuffle4x128(p10, p12, 0x88), dst, ldd, res, bias, channels, relu);
        Finish(5, Avx512F.Shuffle4x128(p10, p12, 0xDD), dst, ldd, res, bias, channels, relu);
        Finish(9, Avx512F.Shuffle4x128(p11, p13, 0x88), dst, ldd, res, bias, channels, relu);
        Finish(13, Avx512F.Shuffle4x128(p11, p13, 0xDD), dst, ldd, res, bias, channels, relu);
        Finish(2, Avx512F.Shuffle4x128(p20, p22, 0x88), dst, ldd, res, bias, channels, relu);
        Finish(6, Avx512F.Shuffle4x128(p20, p22, 0xDD), dst, ldd, res, bias, channels, relu);
        Finish(10, Avx512F.Shuffle4x128(p21, p23, 0x88), dst, ldd, res, bias, channels, relu);
        Finish(14, Avx512F.Shuffle4x128(p21, p23, 0xDD), dst, ldd, res, bias, channels, relu);
        Finish(3, Avx512F.Shuffle4x128(p30, p32, 0x88), dst, ldd, res, bias, channels, relu);
        Finish(7, Avx512F.Shuffle4x128(p30, p32, 0xDD), dst, ldd, res, bias, channels, relu);
        Finish(11, Avx512F.Shuffle4x128(p31, p33, 0x88), dst, ldd, res, bias, channels, relu);
        Finish(15, Avx512F.Shuffle4x128(p31, p33, 0xDD), dst, ldd, res, bias, channels, relu);
    }

    /// <summary>Channel <paramref name="j"/>'s 16 outputs of <see cref="Epilogue16"/>: bias, residual, activation, store.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Finish(int j, Vector512<float> v, float* dst, int ldd, float* res, float* bias, int channels, bool relu)
    {
        if (j >= channels) return;
        v += Vector512.Create(bias is null ? 0f : bias[j]);
        if (res is not null) v += Vector512.Load(res + (long)j * ldd);
        if (relu) v = Vector512.Max(v, Vector512<float>.Zero);
        v.Store(dst + (long)j * ldd);
    }

    /// <summary>C[6, 64] (or C[5, 64]: <typeparamref name="R"/>) (+)= A[positions, kc]·W[kc, 64]: A read column-wise from
    /// im2col rows (stride lda), W a panel.</summary>
    /// <remarks>Each k step also prefetches the line at <paramref name="pf"/> into L2 and advances it by <paramref name="pfStep"/>
    /// floats (0: the same line again, already in cache).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tile<R>(int kc, float* a, int lda, float* w, float* c, int ldc, bool acc, float* pf, int pfStep) where R : struct, ITileRows
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        for (int p = 0; p < kc; p++)
        {
            var w0 = Vector512.Load(w);
            var w1 = Vector512.Load(w + 16);
            var w2 = Vector512.Load(w + 32);
            var w3 = Vector512.Load(w + 48);
            Sse.Prefetch1(pf);
            pf += pfStep;
            var a0 = Vector512.Create(a[0]);
            c00 = Avx512F.FusedMultiplyAdd(a0, w0, c00); c01 = Avx512F.FusedMultiplyAdd(a0, w1, c01);
            c02 = Avx512F.FusedMultiplyAdd(a0, w2, c02); c03 = Avx512F.FusedMultiplyAdd(a0, w3, c03);
            var a1 = Vector512.Create(a[1]);
            c10 = Avx512F.FusedMultiplyAdd(a1, w0, c10); c11 = Avx512F.FusedMultiplyAdd(a1, w1, c11);
            c12 = Avx512F.FusedMultiplyAdd(a1, w2, c12); c13 = Avx512F.FusedMultiplyAdd(a1, w3, c13);
            var a2 = Vector512.Create(a[2]);
            c20 = Avx512F.FusedMultiplyAdd(a2, w0, c20); c21 = Avx512F.FusedMultiplyAdd(a2, w1, c21);
            c22 = Avx512F.FusedMultiplyAdd(a2, w2, c22); c23 = Avx512F.FusedMultiplyAdd(a2, w3, c23);
            var a3 = Vector512.Create(a[3]);
            c30 = Avx512F.FusedMultiplyAdd(a3, w0, c30); c31 = Avx512F.FusedMultiplyAdd(a3, w1, c31);
            c32 = Avx512F.FusedMultiplyAdd(a3, w2, c32); c33 = Avx512F.FusedMultiplyAdd(a3, w3, c33);
            var a4 = Vector512.Create(a[4]);
            c40 = Avx512F.FusedMultiplyAdd(a4, w0, c40); c41 = Avx512F.FusedMultiplyAdd(a4, w1, c41);
            c42 = Avx512F.FusedMultiplyAdd(a4, w2, c42); c43 = Avx512F.FusedMultiplyAdd(a4, w3, c43);
            if (R.Six)
            {
                var a5 = Vector512.Create(a[5]);
                c50 = Avx512F.FusedMultiplyAdd(a5, w0, c50); c51 = Avx512F.FusedMultiplyAdd(a5, w1, c51);
                c52 = Avx512F.FusedMultiplyAdd(a5, w2, c52); c53 = Avx512F.FusedMultiplyAdd(a5, w3, c53);
            }
            a += lda;
            w += 64;
        }
        Store4(c, c00, c01, c02, c03, acc); c += ldc;
        Store4(c, c10, c11, c12, c13, acc); c += ldc;
        Store4(c, c20, c21, c22, c23, acc); c += ldc;
        Store4(c, c30, c31, c32, c33, acc); c += ldc;
        Store4(c, c40, c41, c42, c43, acc);
        if (R.Six) Store4(c + ldc, c50, c51, c52, c53, acc);
    }

    /// <summary>The channel tile's height as a type, so each <see cref="Tile{R}"/> instantiation is compiled with its
    /// own rows only (a static abstract member of a struct type argument is a constant to the JIT).</summary>
    interface ITileRows { static abstract bool Six { get; } }
    struct FiveRows : ITileRows { public static bool Six => false; }
    struct SixRows : ITileRows { public static bool Six => true; }

    /// <summary>C[12, 16] (+)= A[12 positions, kc]·W[kc, 16]: the narrow tile, twelve accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tile12x16(int kc, float* a, int lda, float* w, float* c, int ldc, bool acc)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        Vector512<float> c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (int p = 0; p < kc; p++)
        {
            var w0 = Vector512.Load(w);
            c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[0]), w0, c0);
            c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[1]), w0, c1);
            c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[2]), w0, c2);
            c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[3]), w0, c3);
            c4 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[4]), w0, c4);
            c5 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[5]), w0, c5);
            c6 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[6]), w0, c6);
            c7 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[7]), w0, c7);
            c8 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[8]), w0, c8);
            c9 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[9]), w0, c9);
            c10 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[10]), w0, c10);
            c11 = Avx512F.FusedMultiplyAdd(Vector512.Create(a[11]), w0, c11);
            a += lda;
            w += 16;
        }
        Store1(c, c0, acc); Store1(c + ldc, c1, acc); Store1(c + 2 * ldc, c2, acc); Store1(c + 3 * ldc, c3, acc);
        c += 4 * ldc;
        Store1(c, c4, acc); Store1(c + ldc, c5, acc); Store1(c + 2 * ldc, c6, acc); Store1(c + 3 * ldc, c7, acc);
        c += 4 * ldc;
        Store1(c, c8, acc); Store1(c + ldc, c9, acc); Store1(c + 2 * ldc, c10, acc); Store1(c + 3 * ldc, c11, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store1(float* c, Vector512<float> v, bool acc)
    {
        if (acc) v += Vector512.Load(c);
        v.Store(c);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store4(float* c, Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3, bool acc)
    {
        if (acc)
        {
            v0 += Vector512.Load(c);
            v1 += Vector512.Load(c + 16);
            v2 += Vector512.Load(c + 32);
            v3 += Vector512.Load(c + 48);
        }
        v0.Store(c);
        v1.Store(c + 16);
        v2.Store(c + 32);
        v3.Store(c + 48);
    }
}
