using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nabla;

/// <summary>Fused CPU kernels for the hot layers of CNN training: max pooling and batch normalization.</summary>
internal static partial class Cpu
{
    static void ForPlanes(int planes, long work, Action<int> body)
    {
        if (planes > 1 && work > 1 << 15 && Gemm.Threads > 1)
            WorkerPool.For(planes, Gemm.Threads, body);
        else for (int p = 0; p < planes; p++) body(p);
    }

    /// <summary>Max pooling over [N, C, H, W]: values and the flat (H·W) index of each window's first maximum (NaN wins).</summary>
    public static (Tensor values, Tensor indices) MaxPool(Tensor x, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int oh, int ow)
    {
        if (x.DType is not (DType.Float32 or DType.Float64))
        {
            var (v, i) = MaxPool(Cast(x, DType.Float32), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
            return (Cast(v, x.DType), i);
        }
        return x.DType == DType.Float32 ? MaxPoolT<float>(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow) : MaxPoolT<double>(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);
    }

    static (Tensor, Tensor) MaxPoolT<T>(Tensor x, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int oh, int ow) where T : unmanaged, INumber<T>
    {
        int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var src = x.ContiguousData<T>();
        var vals = Tensor.Empty([n, c, oh, ow], x.DType);
        var idx = Tensor.Empty([n, c, oh, ow], DType.Int64);
        var vd = vals.storage.As<T>();
        var id = idx.storage.As<long>();
        if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && dh == 1 && dw == 1 && 2 * oh <= h && 2 * ow <= w)
        {
            // The common 2×2/2 window: two input rows per output row, no bounds checks.
            ForPlanes(n * c, (long)n * c * oh * ow * 4, plane => MaxPool2x2Plane(src, vd, id, plane, h, w, oh, ow));
            return (vals, idx);
        }
        ForPlanes(n * c, (long)n * c * oh * ow * kh * kw, plane =>
        {
            int sb = plane * h * w, db = plane * oh * ow;
            for (int y = 0; y < oh; y++)
            for (int xo = 0; xo < ow; xo++)
            {
                T best = T.Zero;
                int bi = -1;
                for (int i = 0; i < kh; i++)
                {
                    int iy = y * sh - ph + i * dh;
                    if ((uint)iy >= (uint)h) continue;
                    for (int j = 0; j < kw; j++)
                    {
                        int ix = xo * sw - pw + j * dw;
                        if ((uint)ix >= (uint)w) continue;
                        T v = src[sb + iy * w + ix];
                        if (bi < 0 || v > best || (T.IsNaN(v) && !T.IsNaN(best))) { best = v; bi = iy * w + ix; }
                    }
                }
                vd[db + y * ow + xo] = best;
                id[db + y * ow + xo] = bi;
            }
        });
        return (vals, idx);
    }

    static void MaxPool2x2Plane<T>(T[] srcArr, T[] vdArr, long[] idArr, int plane, int h, int w, int oh, int ow) where T : unmanaged, INumber<T>
    {
        var src = srcArr.AsSpan(plane * h * w, h * w);
        var vd = vdArr.AsSpan(plane * oh * ow, oh * ow);
        var id = idArr.AsSpan(plane * oh * ow, oh * ow);
        for (int y = 0; y < oh; y++)
        {
            var row0 = src.Slice(2 * y * w, w);
            var row1 = src.Slice((2 * y + 1) * w, w);
            int baseIndex = 2 * y * w;
            int xo = 0;
            if (typeof(T) == typeof(float) && Avx2.IsSupported)
                xo = MaxPool2x2RowAvx2(MemoryMarshal.Cast<T, float>(row0), MemoryMarshal.Cast<T, float>(row1), MemoryMarshal.Cast<T, float>(vd.Slice(y * ow, ow)), id.Slice(y * ow, ow), baseIndex, w, ow);
            for (; xo < ow; xo++)
            {
                int j = 2 * xo;
                T best = row0[j];
                int bi = baseIndex + j;
                if (!T.IsNaN(best))
                {
                    T v1 = row0[j + 1], v2 = row1[j], v3 = row1[j + 1];
                    if (v1 > best || T.IsNaN(v1)) { best = v1; bi = baseIndex + j + 1; }
                    if (!T.IsNaN(best) && (v2 > best || T.IsNaN(v2))) { best = v2; bi = baseIndex + w + j; }
                    if (!T.IsNaN(best) && (v3 > best || T.IsNaN(v3))) { best = v3; bi = baseIndex + w + j + 1; }
                }
                vd[y * ow + xo] = best;
                id[y * ow + xo] = bi;
            }
        }
    }

    /// <summary>
    /// Eight 2×2 windows at a time for one output row: the same choice as the scalar loop (the first maximum in
    /// the order row0[j], row0[j+1], row1[j], row1[j+1]; a NaN wins and then stays). Returns the first output
    /// column it did not handle.
    /// </summary>
    static int MaxPool2x2RowAvx2(ReadOnlySpan<float> row0, ReadOnlySpan<float> row1, Span<float> vals, Span<long> ids, int baseIndex, int w, int ow)
    {
        int xo = 0;
        var iota2 = Vector256.Create(0, 2, 4, 6, 8, 10, 12, 14);
        var one = Vector256.Create(1);
        var wv = Vector256.Create(w);
        ref float r0 = ref MemoryMarshal.GetReference(row0);
        ref float r1 = ref MemoryMarshal.GetReference(row1);
        for (; xo + 8 <= ow && 2 * xo + 16 <= row0.Length; xo += 8)
        {
            int j = 2 * xo;
            var a0 = Vector256.LoadUnsafe(ref r0, (nuint)j);
            var a1 = Vector256.LoadUnsafe(ref r0, (nuint)(j + 8));
            var b0 = Vector256.LoadUnsafe(ref r1, (nuint)j);
            var b1 = Vector256.LoadUnsafe(ref r1, (nuint)(j + 8));
            var c0 = EvenLanes(a0, a1);   // row0[j + 2i]
            var c1 = OddLanes(a0, a1);    // row0[j + 2i + 1]
            var c2 = EvenLanes(b0, b1);   // row1[j + 2i]
            var c3 = OddLanes(b0, b1);    // row1[j + 2i + 1]
            var best = c0;
            var off = Vector256<int>.Zero;   // offset of the chosen element from row0[j + 2i]: 0, 1, w or w + 1
            Step(ref best, ref off, c1, one);
            Step(ref best, ref off, c2, wv);
            Step(ref best, ref off, c3, wv + one);
            best.StoreUnsafe(ref MemoryMarshal.GetReference(vals), (nuint)xo);
            var idx = Vector256.Create(baseIndex + j) + iota2 + off;
            Avx2.ConvertToVector256Int64(idx.GetLower()).StoreUnsafe(ref MemoryMarshal.GetReference(ids), (nuint)xo);
            Avx2.ConvertToVector256Int64(idx.GetUpper()).StoreUnsafe(ref MemoryMarshal.GetReference(ids), (nuint)(xo + 4));
            // A tail shorter than 8 windows: one more block ending at the last window (it recomputes a few windows
            // with the same result), when the input row reaches that far.
            if (xo + 8 < ow && xo + 16 > ow && 2 * ow <= row0.Length) xo = ow - 16;
        }
        if (xo < ow && ow < 8 && ow >= 4 && 2 * ow <= row0.Length)
        {
            // Narrow rows (7 windows for a 14-wide input): two 4-window blocks, the second ending at the last window.
            Row4(row0, row1, vals, ids, baseIndex, w, 0);
            Row4(row0, row1, vals, ids, baseIndex, w, ow - 4);
            xo = ow;
        }
        return xo;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Row4(ReadOnlySpan<float> row0, ReadOnlySpan<float> row1, Span<float> vals, Span<long> ids, int baseIndex, int w, int xo)
        {
            int j = 2 * xo;
            ref float r0 = ref MemoryMarshal.GetReference(row0);
            ref float r1 = ref MemoryMarshal.GetReference(row1);
            var a0 = Vector128.LoadUnsafe(ref r0, (nuint)j);
            var a1 = Vector128.LoadUnsafe(ref r0, (nuint)(j + 4));
            var b0 = Vector128.LoadUnsafe(ref r1, (nuint)j);
            var b1 = Vector128.LoadUnsafe(ref r1, (nuint)(j + 4));
            var c0 = Sse.Shuffle(a0, a1, 0x88);   // row0[j + 2i]
            var c1 = Sse.Shuffle(a0, a1, 0xDD);   // row0[j + 2i + 1]
            var c2 = Sse.Shuffle(b0, b1, 0x88);
            var c3 = Sse.Shuffle(b0, b1, 0xDD);
            var one = Vector128.Create(1);
            var wv = Vector128.Create(w);
            var best = c0;
            var off = Vector128<int>.Zero;
            Step4(ref best, ref off, c1, one);
            Step4(ref best, ref off, c2, wv);
            Step4(ref best, ref off, c3, wv + one);
            best.StoreUnsafe(ref MemoryMarshal.GetReference(vals), (nuint)xo);
            var idx = Vector128.Create(baseIndex + j) + Vector128.Create(0, 2, 4, 6) + off;
            Avx2.ConvertToVector256Int64(idx).StoreUnsafe(ref MemoryMarshal.GetReference(ids), (nuint)xo);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Step4(ref Vector128<float> best, ref Vector128<int> off, Vector128<float> v, Vector128<int> at)
        {
            var bestIsNaN = ~Vector128.Equals(best, best);
            var take = (Vector128.GreaterThan(v, best) | ~Vector128.Equals(v, v)) & ~bestIsNaN;
            best = Vector128.ConditionalSelect(take, v, best);
            off = Vector128.ConditionalSelect(take.AsInt32(), at, off);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Step(ref Vector256<float> best, ref Vector256<int> off, Vector256<float> v, Vector256<int> at)
        {
            var bestIsNaN = ~Vector256.Equals(best, best);
            var take = (Vector256.GreaterThan(v, best) | ~Vector256.Equals(v, v)) & ~bestIsNaN;
            best = Vector256.ConditionalSelect(take, v, best);
            off = Vector256.ConditionalSelect(take.AsInt32(), at, off);
        }
    }

    /// <summary>Adds each gradient value at its window's argmax: [N, C, oh, ow] → [N, C, H, W].</summary>
    public static Tensor PlaneScatterAdd(Tensor g, Tensor indices, int h, int w)
    {
        int n = g.shape[0], c = g.shape[1], l = g.shape[2] * g.shape[3];
        // Uninitialized: each plane is cleared by the thread that scatters into it, while it is in cache.
        var r = Tensor.Empty([n, c, h, w], g.DType);
        var id = indices.ContiguousData<long>();
        if (g.DType == DType.Float32) ScatterPlanes(g.ContiguousData<float>(), id, r.storage.As<float>(), n * c, l, h * w);
        else if (g.DType == DType.Float64) ScatterPlanes(g.ContiguousData<double>(), id, r.storage.As<double>(), n * c, l, h * w);
        else return Cast(PlaneScatterAdd(Cast(g, DType.Float32), indices, h, w), g.DType);
        return r;
    }

    static void ScatterPlanes<T>(T[] g, long[] idx, T[] dst, int planes, int l, int hw) where T : unmanaged, INumber<T>
    {
        ForPlanes(planes, (long)planes * l, p =>
        {
            int gb = p * l, db = p * hw;
            Array.Clear(dst, db, hw);
            for (int i = 0; i < l; i++) dst[db + idx[gb + i]] += g[gb + i];
        });
    }

    /// <summary>Reads x at each window's argmax: [N, C, H, W] → [N, C, oh, ow].</summary>
    public static Tensor PlaneGather(Tensor x, Tensor indices)
    {
        int n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3];
        var r = Tensor.Empty((int[])indices.shape.Clone(), x.DType);
        int l = indices.shape[2] * indices.shape[3];
        var id = indices.ContiguousData<long>();
        if (x.DType == DType.Float32) GatherPlanes(x.ContiguousData<float>(), id, r.storage.As<float>(), n * c, l, hw);
        else if (x.DType == DType.Float64) GatherPlanes(x.ContiguousData<double>(), id, r.storage.As<double>(), n * c, l, hw);
        else return Cast(PlaneGather(Cast(x, DType.Float32), indices), x.DType);
        return r;
    }

    static void GatherPlanes<T>(T[] x, long[] idx, T[] dst, int planes, int l, int hw)
    {
        for (int p = 0; p < planes; p++)
        {
            int gb = p * l, sb = p * hw;
            for (int i = 0; i < l; i++) dst[gb + i] = x[sb + idx[gb + i]];
        }
    }

    /// <summary>
    /// Batch-norm statistics and normalization in one pass per channel: y = (x - mean)·invstd·w + b over [N, C, S].
    /// Returns y, the per-channel mean and invstd, and the biased variance.
    /// </summary>
    public static (Tensor y, double[] mean, double[] invstd, double[] var) BatchNormTrain(Tensor x, Tensor? weight, Tensor? bias, double eps)
    {
        int n = x.shape[0], c = x.shape[1], s = x.NumElements / Math.Max(n * c, 1);
        var dt = x.DType;
        var xd = dt == DType.Float32 ? null! : Cast(x, DType.Float64).storage.As<double>();
        var xf = dt == DType.Float32 ? x.ContiguousData<float>() : null;
        var wv = weight?.ToDoubleArray();
        var bv = bias?.ToDoubleArray();
        var mean = new double[c];
        var invstd = new double[c];
        var var = new double[c];
        var y = Tensor.Empty((int[])x.shape.Clone(), dt == DType.Float32 ? DType.Float32 : DType.Float64);
        var yf = dt == DType.Float32 ? y.storage.As<float>() : null;
        var yd = dt == DType.Float32 ? null : y.storage.As<double>();
        int count = n * s;
        ForPlanes(c, (long)n * c * s, ch =>
        {
            double sum = 0;
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * s;
                if (xf is not null) sum += TensorPrimitives.Sum<float>(xf.AsSpan(o, s));
                else for (int i = 0; i < s; i++) sum += xd[o + i];
            }
            double m = sum / count, sq = 0;
            float[]? tmp = xf is not null ? new float[s] : null;
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * s;
                if (xf is not null)
                {
                    // Two-pass variance; each row's squares sum in float, rows accumulate in double.
                    TensorPrimitives.Subtract(xf.AsSpan(o, s), (float)m, tmp);
                    sq += TensorPrimitives.SumOfSquares<float>(tmp);
                }
                else for (int i = 0; i < s; i++) { double d = xd[o + i] - m; sq += d * d; }
            }
            double v = sq / count, inv = 1 / Math.Sqrt(v + eps);
            mean[ch] = m; var[ch] = v; invstd[ch] = inv;
            double scale = inv * (wv?[ch] ?? 1), shift = (bv?[ch] ?? 0) - m * scale;
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * s;
                if (yf is not null) ScaleShift(xf!.AsSpan(o, s), (float)scale, (float)shift, yf.AsSpan(o, s));
                else for (int i = 0; i < s; i++) yd![o + i] = xd[o + i] * scale + shift;
            }
        });
        return (dt is DType.Float32 or DType.Float64 ? y : Cast(y, dt), mean, invstd, var);
    }

    /// <summary>The gradients of training-mode batch norm: (dx, dweight, dbias), all in one pass per channel.</summary>
    public static (Tensor gx, Tensor gw, Tensor gb) BatchNormBackward(Tensor g, Tensor x, double[] mean, double[] invstd, Tensor? weight)
    {
        int n = x.shape[0], c = x.shape[1], s = x.NumElements / Math.Max(n * c, 1), count = n * s;
        var dt = x.DType;
        var wv = weight?.ToDoubleArray();
        var gw = new double[c];
        var gb = new double[c];
        if (dt == DType.Float32)
        {
            var gf = CastIfNeeded(g, dt).ContiguousData<float>();
            var xf = x.ContiguousData<float>();
            var gx = Tensor.Empty((int[])x.shape.Clone(), dt);
            var gxf = gx.storage.As<float>();
            ForPlanes(c, (long)n * c * s, ch =>
            {
                double sg = 0, sgxRaw = 0, m = mean[ch], inv = invstd[ch];
                for (int b = 0; b < n; b++)
                {
                    int o = (b * c + ch) * s;
                    sg += TensorPrimitives.Sum<float>(gf.AsSpan(o, s));
                    sgxRaw += TensorPrimitives.Dot<float>(gf.AsSpan(o, s), xf.AsSpan(o, s));
                }
                double sgx = (sgxRaw - m * sg) * inv;   // sum of g·xhat
                gw[ch] = sgx;
                gb[ch] = sg;
                // gx = k·(count·g - sg - xhat·sgx) = a·g + bx·x + c0 with xhat = (x - m)·inv.
                double k = (wv?[ch] ?? 1) * inv / count;
                float a = (float)(k * count), bx = (float)(-k * inv * sgx), c0 = (float)(k * (-sg + m * inv * sgx));
                for (int b = 0; b < n; b++)
                {
                    int o = (b * c + ch) * s;
                    BatchNormGradRow(gf.AsSpan(o, s), xf.AsSpan(o, s), a, bx, c0, gxf.AsSpan(o, s));
                }
            });
            return (gx, Tensor.FromArray(gw).To(dt), Tensor.FromArray(gb).To(dt));
        }
        var gd = Cast(g, DType.Float64).storage.As<double>();
        var xd = Cast(x, DType.Float64).storage.As<double>();
        var gxd = new double[x.NumElements];
        ForPlanes(c, (long)n * c * s, ch =>
        {
            double sg = 0, sgx = 0, m = mean[ch], inv = invstd[ch];
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * s;
                for (int i = 0; i < s; i++) { sg += gd[o + i]; sgx += gd[o + i] * (xd[o + i] - m) * inv; }
            }
            gw[ch] = sgx;
            gb[ch] = sg;
            double k = (wv?[ch] ?? 1) * inv / count;
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * s;
                for (int i = 0; i < s; i++) gxd[o + i] = k * (count * gd[o + i] - sg - (xd[o + i] - m) * inv * sgx);
            }
        });
        return (Cast(Tensor.FromArray(gxd, x.shape), dt), Cast(Tensor.FromArray(gw), dt), Cast(Tensor.FromArray(gb), dt));
    }

    /// <summary>
    /// y = x·scale + shift in one pass, rounded after the product and after the sum (the same values as
    /// TensorPrimitives.Multiply followed by TensorPrimitives.Add, without the second pass over y).
    /// </summary>
    internal static void ScaleShift(ReadOnlySpan<float> x, float scale, float shift, Span<float> y)
    {
        int i = 0, n = x.Length;
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float yr = ref MemoryMarshal.GetReference(y);
        if (Vector256.IsHardwareAccelerated)
        {
            var sv = Vector256.Create(scale);
            var hv = Vector256.Create(shift);
            for (; i <= n - 8; i += 8)
                (Vector256.Multiply(Vector256.LoadUnsafe(ref xr, (nuint)i), sv) + hv).StoreUnsafe(ref yr, (nuint)i);
        }
        for (; i < n; i++) y[i] = x[i] * scale + shift;
    }

    /// <summary>
    /// One row of the batch-norm input gradient, gx = g·a + (x·bx + c0), each product and sum rounded as the
    /// three-pass TensorPrimitives form (Multiply, Add, MultiplyAdd) rounds it, in one pass.
    /// </summary>
    internal static void BatchNormGradRow(ReadOnlySpan<float> g, ReadOnlySpan<float> x, float a, float bx, float c0, Span<float> gx)
    {
        int i = 0, n = x.Length;
        ref float gr = ref MemoryMarshal.GetReference(g);
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float dr = ref MemoryMarshal.GetReference(gx);
        if (Vector256.IsHardwareAccelerated)
        {
            var av = Vector256.Create(a);
            var bv = Vector256.Create(bx);
            var cv = Vector256.Create(c0);
            for (; i <= n - 8; i += 8)
            {
                var t = Vector256.Multiply(Vector256.LoadUnsafe(ref xr, (nuint)i), bv) + cv;
                (Vector256.Multiply(Vector256.LoadUnsafe(ref gr, (nuint)i), av) + t).StoreUnsafe(ref dr, (nuint)i);
            }
        }
        for (; i < n; i++)
        {
            float t = x[i] * bx;
            t += c0;
            float u = g[i] * a;
            gx[i] = u + t;
        }
    }

    /// <summary>relu's gradient: g where y &gt; 0, else 0 (vectorized for contiguous float32 of equal shape).</summary>
    public static Tensor? ReluBackwardFast(Tensor g, Tensor y)
    {
        if (g.DType != DType.Float32 || y.DType != DType.Float32 || !ShapeUtil.Equal(g.shape, y.shape) || !g.IsContiguous || !y.IsContiguous) return null;
        int n = g.NumElements;
        var r = Tensor.Empty((int[])g.shape.Clone(), DType.Float32);
        var ga = g.storage.As<float>();
        var ya = y.storage.As<float>();
        var ra = r.storage.As<float>();
        int parts = ElementwiseParts(n);
        if (parts == 1) ReluBackwardRange(ga.AsSpan(g.offset, n), ya.AsSpan(y.offset, n), ra.AsSpan(0, n));
        else
        {
            // One contiguous piece per thread, as the other elementwise maps split.
            int chunk = (n + parts - 1) / parts;
            WorkerPool.For(parts, parts, p =>
            {
                int start = p * chunk, len = Math.Min(chunk, n - start);
                ReluBackwardRange(ga.AsSpan(g.offset + start, len), ya.AsSpan(y.offset + start, len), ra.AsSpan(start, len));
            });
        }
        return r;
    }

    static void ReluBackwardRange(ReadOnlySpan<float> gs, ReadOnlySpan<float> ys, Span<float> d)
    {
        int n = d.Length;
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - 8; i += 8)
            {
                var yv = Vector256.Create(ys.Slice(i, 8));
                var gv = Vector256.Create(gs.Slice(i, 8));
                (gv & Vector256.GreaterThan(yv, Vector256<float>.Zero)).CopyTo(d.Slice(i, 8));
            }
        }
        for (; i < n; i++) d[i] = ys[i] > 0 ? gs[i] : 0;
    }
}
