using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace Nabla;

/// <summary>
/// The float32 (and float64, for gradient checks) training path of conv2d (groups = 1) as one recorded primitive,
/// "conv2d". Forward in float32 with at least <see cref="PackedForwardMinColumns"/> output positions over the batch:
/// <see cref="PackedConv2d"/> with the weights packed for the call (its kernels chosen by shape). Otherwise (float64, or <see cref="PackedForward"/> off): im2col of the whole batch into [C·kh·kw, N·L]
/// (L = oh·ow), one GEMM with the weight into [O, N·L], and one copy into [N, O, oh, ow] that adds the bias; the columns
/// are lent to the backward rule (without them the backward makes each chunk's own). Backward, when no
/// graph of the gradient is being recorded: <see cref="Cpu.ConvBackward"/> (chunks of images: gradient copy, weight
/// gradient GEMM against the saved columns, Wᵀ·g folded into dx). Scratch arrays come from <see cref="ConvScratch"/>
/// instead of fresh allocations. With grad mode on in the rule (create_graph), the gradients are the same formulas
/// written with differentiable ops (unfold, matmul, fold), so higher derivatives work.
/// <see cref="Functional.Conv2dComposite"/> is the readable reference every part is tested against.
/// </summary>
internal static class ConvTrain
{
    /// <summary>Whether <see cref="Functional.Conv2d"/> takes this path when it applies (float32 or float64, groups = 1).</summary>
    internal static bool Enabled = true;

    /// <summary>Whether the float32 forward runs through <see cref="PackedConv2d"/> (<c>NABLA_CONV_TRAIN_PACKED=0</c>: the
    /// batch-wide im2col + GEMM, whose columns the backward then reuses).</summary>
    internal static bool PackedForward = Environment.GetEnvironmentVariable("NABLA_CONV_TRAIN_PACKED") != "0";

    /// <summary>
    /// Fewest output positions over the batch (N·oh·ow) for the packed forward: the weights are prepared on every call
    /// (packed, and for the Winograd and channel-tiled paths transformed again), which only pays when each weight serves
    /// enough positions. 1 thread, 3×3 convolutions, packed per call against the batch-wide im2col: 256 channels on 14×14
    /// at batch 1 (196 positions) 4.9 against 1.35 ms, 512 on 7×7 7.2 against 1.7 ms; 64 on 56×56 (3136) 1.06 against
    /// 1.34 ms; 256 on 14×14 at batch 16 (3136) 16.4 against 23.7 ms; the quickstart CNN's layers (12544 and 50176) gain.
    /// </summary>
    internal const int PackedForwardMinColumns = 2048;

    public static bool Applies(Tensor x, Tensor weight, Tensor? bias, int groups) =>
        Enabled && groups == 1 && x.DType is (DType.Float32 or DType.Float64) && weight.DType == x.DType
        && (bias is null || (bias.DType == x.DType && bias.Dim == 1 && bias.shape[0] == weight.shape[0]));

    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias, (int h, int w) s, (int h, int w) p, (int h, int w) d)
    {
        var xs = (int[])x.shape.Clone();
        var ws = (int[])weight.shape.Clone();
        int n = xs[0], c = xs[1], h = xs[2], w = xs[3];
        int o = ws[0], kh = ws[2], kw = ws[3];
        int oh = Cpu.ConvOut(h, kh, s.h, p.h, d.h), ow = Cpu.ConvOut(w, kw, s.w, p.w, d.w);
        var geo = new Cpu.ConvGeometry(n, c, h, w, o, kh, kw, s.h, s.w, p.h, p.w, d.h, d.w, oh, ow);
        var dt = x.DType;
        var y = Tensor.Empty([n, o, oh, ow], dt);
        // The forward's im2col columns are lent to the backward rule, which returns them to the scratch pool after
        // its first fast run; a rule run again (retainGraph) or never run recomputes or drops them.
        Array? cols;
        if (dt == DType.Float32 && PackedForward && (long)n * oh * ow >= PackedForwardMinColumns)
        {
            // The inference kernels (direct, Winograd, channel tiles, blocked im2col: whichever fits the shape) with the
            // weights packed for this call; no batch-wide columns are kept, the backward makes each chunk's own.
            using (GradMode.NoGrad())
                new PackedConv2d(weight, bias, s, (p.h, p.w, p.h, p.w), d, 1, FusedActivation.None).Run(x, null, y);
            cols = null;
        }
        else if (dt == DType.Float32)
        {
            var c32 = ConvScratch.Rent<float>(geo.K * geo.NL);
            Cpu.ConvForward(geo, x.ContiguousData<float>(), weight.ContiguousData<float>(), bias?.ContiguousData<float>(), y.storage.As<float>(), c32);
            cols = c32;
        }
        else
        {
            var c64 = ConvScratch.Rent<double>(geo.K * geo.NL);
            Cpu.ConvForward(geo, x.ContiguousData<double>(), weight.ContiguousData<double>(), bias?.ContiguousData<double>(), y.storage.As<double>(), c64);
            cols = c64;
        }
        var lease = new ColumnsLease { Columns = cols };
        Tensor[] inputs = bias is null ? [x, weight] : [x, weight, bias];
        var r = Tensor.Record(y, "conv2d", inputs, g =>
        {
            bool needX = x.RequiresGrad, needW = weight.RequiresGrad, needB = bias is not null && bias.RequiresGrad;
            Tensor? gx = null, gw = null, gb = null;
            if (GradMode.IsEnabled || g.DType != dt)
            {
                // The same gradients as differentiable ops, so a graph of the gradient is recorded.
                var g2 = g.Permute(1, 0, 2, 3).Reshape(o, -1);                       // [O, N·L]
                if (needX) gx = Functional.FoldBatchInner(weight.Reshape(o, -1).T.Matmul(g2), xs, (kh, kw), s, p, d);
                if (needW) gw = g2.Matmul(Functional.UnfoldBatchInner(x, (kh, kw), s, p, d).T).Reshape(ws);
                if (needB) gb = g.Sum([0, 2, 3]);
            }
            else
            {
                var gxa = needX ? Tensor.Empty(xs, dt) : null;
                var gwa = needW ? Tensor.Empty(ws, dt) : null;
                var gba = needB ? Tensor.Empty([o], dt) : null;
                var saved = Interlocked.Exchange(ref lease.Columns, null);
                if (dt == DType.Float32)
                    Cpu.ConvBackward(geo, g.ContiguousData<float>(), x.ContiguousData<float>(), weight.ContiguousData<float>(),
                        gxa?.storage.As<float>(), gwa?.storage.As<float>(), gba?.storage.As<float>(), (float[]?)saved);
                else
                    Cpu.ConvBackward(geo, g.ContiguousData<double>(), x.ContiguousData<double>(), weight.ContiguousData<double>(),
                        gxa?.storage.As<double>(), gwa?.storage.As<double>(), gba?.storage.As<double>(), (double[]?)saved);
                gx = gxa; gw = gwa; gb = gba;
            }
            return bias is null ? [gx, gw] : [gx, gw, gb];
        }, x, weight);
        if (!r.RequiresGrad && cols is not null) ConvScratch.Return(cols);   // no node holds them
        return r;
    }

    sealed class ColumnsLease
    {
        public Array? Columns;
    }
}

/// <summary>
/// Per-thread scratch arrays for the convolution kernels (im2col columns, GEMM outputs): rented for the duration of
/// one kernel call and returned, so a training loop reuses the same few buffers instead of allocating (and page
/// faulting) tens of megabytes per step. Each thread keeps at most <see cref="MaxKept"/> arrays alive.
/// </summary>
internal static class ConvScratch
{
    const int MaxKept = 4;
    [ThreadStatic] static List<Array>? free;

    /// <summary>An array of at least <paramref name="length"/> elements, contents undefined.</summary>
    public static T[] Rent<T>(int length) where T : unmanaged
    {
        var list = free ??= [];
        int best = -1;
        for (int i = 0; i < list.Count; i++)
            if (list[i] is T[] && list[i].Length >= length && (best < 0 || list[i].Length < list[best].Length)) best = i;
        if (best >= 0)
        {
            var a = (T[])list[best];
            list.RemoveAt(best);
            return a;
        }
        return GC.AllocateUninitializedArray<T>(length);
    }

    public static void Return(Array a)
    {
        var list = free ??= [];
        list.Add(a);
        if (list.Count > MaxKept)
        {
            int smallest = 0;
            for (int i = 1; i < list.Count; i++) if (list[i].Length < list[smallest].Length) smallest = i;
            list.RemoveAt(smallest);
        }
    }
}

internal static partial class Cpu
{
    internal readonly record struct ConvGeometry(int N, int C, int H, int W, int O, int Kh, int Kw, int Sh, int Sw, int Ph, int Pw, int Dh, int Dw, int Oh, int Ow)
    {
        public int K => C * Kh * Kw;
        public int L => Oh * Ow;
        public int NL => N * Oh * Ow;
    }

    /// <summary>y [N, O, oh, ow] = conv(x [N, C, H, W], w [O, C, kh, kw]) + bias, through one batch-wide GEMM.</summary>
    /// <param name="cols">receives the im2col columns [C·kh·kw, N·L] (at least that many elements)</param>
    public static void ConvForward<T>(ConvGeometry g, T[] x, T[] w, T[]? bias, T[] y, T[] cols) where T : unmanaged, INumber<T>
    {
        int k = g.K, l = g.L, nl = g.NL, o = g.O;
        var yo = ConvScratch.Rent<T>(o * nl);
        try
        {
            UnfoldT(x, cols, g.N, g.C, g.H, g.W, g.Kh, g.Kw, g.Sh, g.Sw, g.Ph, g.Pw, g.Dh, g.Dw, g.Oh, g.Ow, knl: true);
            ConvGemm(o, nl, k, w, 0, k, 1, cols, 0, nl, 1, yo, 0, nl, accumulate: false, threaded: true);
            // [O, N·L] → [N, O, L], adding the bias.
            ForPlanes(g.N, (long)o * nl, b =>
            {
                for (int oc = 0; oc < o; oc++)
                {
                    var src = yo.AsSpan(oc * nl + b * l, l);
                    var dst = y.AsSpan((b * o + oc) * l, l);
                    if (bias is null) src.CopyTo(dst);
                    else TensorPrimitives.Add(src, bias[oc], dst);
                }
            });
        }
        finally
        {
            ConvScratch.Return(yo);
        }
    }

    /// <summary>
    /// The gradients of <see cref="ConvForward"/> for an output gradient gy [N, O, oh, ow]; each of gx [N, C, H, W],
    /// gw [O, C, kh, kw] and gb [O] is computed only when given (and then fully overwritten). <paramref name="savedCols"/>,
    /// when given, holds the forward's im2col of x and is taken over (returned to the scratch pool here).
    /// The batch is cut into chunks of images small enough that a chunk's output gradient [O, cb·L] and column
    /// gradient [C·kh·kw, cb·L] stay in cache: per chunk, one copy of gy into [O, cb·L], one GEMM into this thread's
    /// partial weight gradient, and one GEMM (Wᵀ·g) whose columns are folded straight into gx. Threads take chunks
    /// round-robin and their partial sums are added in thread order, so results depend only on the thread count.
    /// </summary>
    public static void ConvBackward<T>(ConvGeometry g, T[] gy, T[] x, T[] w, T[]? gx, T[]? gw, T[]? gb, T[]? savedCols = null) where T : unmanaged, INumber<T>
    {
        int k = g.K, l = g.L, nl = g.NL, o = g.O, n = g.N;
        T[]? cols = savedCols, partW = null;
        try
        {
            // Images per chunk: about 256 K elements in the larger of the two per-chunk buffers.
            int cb = Math.Clamp((1 << 18) / Math.Max(1, Math.Max(k, o) * l), 1, n);
            int chunks = (n + cb - 1) / cb;
            int threads = Math.Max(1, Math.Min(Gemm.Threads, chunks));
            if ((long)k * o * nl < 1 << 20) threads = 1;
            bool transposed = k < o;   // few taps (a first layer): gwᵀ [K, O] = cols · g2ᵀ keeps the wide side on the register tile
            // Each thread's slice is overwritten by its first GEMM (or cleared when it gets no chunk).
            partW = gw is null ? null : ConvScratch.Rent<T>(threads * k * o);
            var partB = gb is null ? null : new double[threads * o];
            void Worker(int t)
            {
                var g2 = ConvScratch.Rent<T>(o * cb * l);
                var gc = gx is null ? null : ConvScratch.Rent<T>(k * cb * l);
                // Without the forward's columns, each chunk's are made here, into a chunk-sized buffer that stays in cache.
                var cc = gw is not null && cols is null ? ConvScratch.Rent<T>(k * cb * l) : null;
                try
                {
                    bool first = true;
                    for (int chunk = t; chunk < chunks; chunk += threads)
                    {
                        int b0 = chunk * cb, nb = Math.Min(cb, n - b0), cl = nb * l;
                        // gy [b, O, L] → g2 [O, nb·L] (row stride cl), with the bias gradient's partial sums.
                        for (int b = 0; b < nb; b++)
                            for (int oc = 0; oc < o; oc++)
                            {
                                var src = gy.AsSpan(((b0 + b) * o + oc) * l, l);
                                src.CopyTo(g2.AsSpan(oc * cl + b * l, l));
                                if (partB is not null) partB[t * o + oc] += double.CreateTruncating(TensorPrimitives.Sum<T>(src));
                            }
                        if (partW is not null)
                        {
                            var src = cols;
                            int at = b0 * l, ld = nl;
                            if (cc is not null)
                            {
                                UnfoldT(x, cc, nb, g.C, g.H, g.W, g.Kh, g.Kw, g.Sh, g.Sw, g.Ph, g.Pw, g.Dh, g.Dw, g.Oh, g.Ow, knl: true, b0: b0, parallel: false);
                                (src, at, ld) = (cc, 0, cl);
                            }
                            if (transposed) ConvGemm(k, o, cl, src!, at, ld, 1, g2, 0, 1, cl, partW, t * k * o, o, !first, threaded: false);
                            else ConvGemm(o, k, cl, g2, 0, cl, 1, src!, at, 1, ld, partW, t * k * o, k, !first, threaded: false);
                        }
                        first = false;
                        if (gc is not null)
                        {
                            ConvGemm(k, cl, o, w, 0, 1, k, g2, 0, cl, 1, gc, 0, cl, accumulate: false, threaded: false);
                            for (int b = 0; b < nb; b++) FoldImage(gc, cl, b * l, gx!, (b0 + b) * g.C * g.H * g.W, g);
                        }
                    }
                    // A thread without chunks leaves its partial sums zero.
                    if (first && partW is not null) Array.Clear(partW, t * k * o, k * o);
                }
                finally
                {
                    if (cc is not null) ConvScratch.Return(cc);
                    if (gc is not null) ConvScratch.Return(gc);
                    ConvScratch.Return(g2);
                }
            }
            if (threads == 1) Worker(0);
            else WorkerPool.For(threads, threads, Worker);

            if (gw is not null)
            {
                for (int t = 1; t < threads; t++)
                    for (int i = 0; i < k * o; i++) partW![i] += partW[t * k * o + i];
                if (transposed)
                {
                    for (int oc = 0; oc < o; oc++)
                        for (int r = 0; r < k; r++) gw[oc * k + r] = partW![r * o + oc];
                }
                else Array.Copy(partW!, gw, k * o);
            }
            if (gb is not null)
            {
                for (int oc = 0; oc < o; oc++)
                {
                    double sum = 0;
                    for (int t = 0; t < threads; t++) sum += partB![t * o + oc];
                    gb[oc] = T.CreateTruncating(sum);
                }
            }
        }
        finally
        {
            if (cols is not null) ConvScratch.Return(cols);
            if (partW is not null) ConvScratch.Return(partW);
        }
    }

    /// <summary>col2im of one image: columns src[row·ld + c0 + (y·ow + x)] summed into dst[off + ch·H·W + ...] (overwritten).</summary>
    static void FoldImage<T>(T[] src, int ld, int c0, T[] dst, int off, ConvGeometry g) where T : unmanaged, INumber<T>
    {
        int h = g.H, w = g.W, oh = g.Oh, ow = g.Ow;
        Array.Clear(dst, off, g.C * h * w);
        for (int row = 0; row < g.K; row++)
        {
            int ch = row / (g.Kh * g.Kw), ki = row / g.Kw % g.Kh, kj = row % g.Kw;
            int dstBase = off + ch * h * w, srcBase = row * ld + c0;
            for (int y = 0; y < oh; y++)
            {
                int iy = y * g.Sh - g.Ph + ki * g.Dh;
                if ((uint)iy >= (uint)h) continue;
                int sp = srcBase + y * ow, dbase = dstBase + iy * w;
                if (g.Sw == 1)
                {
                    int ix0 = -g.Pw + kj * g.Dw;
                    int x0 = Math.Clamp(-ix0, 0, ow), x1 = Math.Clamp(w - ix0, x0, ow);
                    if (x1 - x0 >= 8)
                    {
                        var run = dst.AsSpan(dbase + ix0 + x0, x1 - x0);
                        TensorPrimitives.Add(run, src.AsSpan(sp + x0, x1 - x0), run);
                    }
                    else for (int xo = x0; xo < x1; xo++) dst[dbase + ix0 + xo] += src[sp + xo];
                    continue;
                }
                for (int xo = 0; xo < ow; xo++)
                {
                    int ix = xo * g.Sw - g.Pw + kj * g.Dw;
                    if ((uint)ix < (uint)w) dst[dbase + ix] += src[sp + xo];
                }
            }
        }
    }

    /// <summary>C (+)= A·B in float32 (the packed GEMM, threaded or on the calling thread) or float64.</summary>
    static void ConvGemm<T>(int m, int n, int k, T[] a, int aOff, int rsA, int csA, T[] b, int bOff, int rsB, int csB, T[] c, int cOff, int ldc, bool accumulate, bool threaded)
    {
        if (typeof(T) == typeof(float))
        {
            if (threaded) Nabla.Gemm.Sgemm(m, n, k, Unsafe.As<float[]>(a), aOff, rsA, csA, Unsafe.As<float[]>(b), bOff, rsB, csB, Unsafe.As<float[]>(c), cOff, ldc, accumulate);
            else Nabla.Gemm.SgemmSerial(m, n, k, Unsafe.As<float[]>(a), aOff, rsA, csA, Unsafe.As<float[]>(b), bOff, rsB, csB, Unsafe.As<float[]>(c), cOff, ldc, accumulate);
        }
        else if (typeof(T) == typeof(double))
            Nabla.Gemm.Dgemm(m, n, k, Unsafe.As<double[]>(a), aOff, rsA, csA, Unsafe.As<double[]>(b), bOff, rsB, csB, Unsafe.As<double[]>(c), cOff, ldc, accumulate);
        else throw new DTypeException($"conv2d: no GEMM for {typeof(T).Name}");
    }
}
