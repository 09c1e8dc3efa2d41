using System.Numerics;

namespace Nabla;

/// <summary>Fused CPU kernels for the hot layers of CNN training: max pooling and batch normalization.</summary>
internal static partial class Cpu
{
    static void ForPlanes(int planes, long work, Action<int> body)
    {
        if (planes > 1 && work > 1 << 15 && Gemm.Threads > 1)
            Parallel.For(0, planes, new ParallelOptions { MaxDegreeOfParallelism = Gemm.Threads }, body);
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

    /// <summary>Adds each gradient value at its window's argmax: [N, C, oh, ow] → [N, C, H, W].</summary>
    public static Tensor PlaneScatterAdd(Tensor g, Tensor indices, int h, int w)
    {
        int n = g.shape[0], c = g.shape[1], l = g.shape[2] * g.shape[3];
        var r = Tensor.Zeros([n, c, h, w], g.DType);
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
                if (xf is not null) sum += System.Numerics.Tensors.TensorPrimitives.Sum<float>(xf.AsSpan(o, s));
                else for (int i = 0; i < s; i++) sum += xd[o + i];
            }
            double m = sum / count, sq = 0;
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * s;
                if (xf is not null) for (int i = 0; i < s; i++) { double d = xf[o + i] - m; sq += d * d; }
                else for (int i = 0; i < s; i++) { double d = xd[o + i] - m; sq += d * d; }
            }
            double v = sq / count, inv = 1 / Math.Sqrt(v + eps);
            mean[ch] = m; var[ch] = v; invstd[ch] = inv;
            double scale = inv * (wv?[ch] ?? 1), shift = (bv?[ch] ?? 0) - m * scale;
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * s;
                if (yf is not null) { float fs = (float)scale, fb = (float)shift; for (int i = 0; i < s; i++) yf[o + i] = xf![o + i] * fs + fb; }
                else for (int i = 0; i < s; i++) yd![o + i] = xd[o + i] * scale + shift;
            }
        });
        return (dt is DType.Float32 or DType.Float64 ? y : Cast(y, dt), mean, invstd, var);
    }

    /// <summary>The gradients of training-mode batch norm: (dx, dweight, dbias), all in one pass per channel.</summary>
    public static (Tensor gx, Tensor gw, Tensor gb) BatchNormBackward(Tensor g, Tensor x, double[] mean, double[] invstd, Tensor? weight)
    {
        int n = x.shape[0], c = x.shape[1], s = x.NumElements / Math.Max(n * c, 1), count = n * s;
        var gd = Cast(g, DType.Float64).storage.As<double>();
        var xd = Cast(x, DType.Float64).storage.As<double>();
        var wv = weight?.ToDoubleArray();
        var gx = new double[x.NumElements];
        var gw = new double[c];
        var gb = new double[c];
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
                for (int i = 0; i < s; i++) gx[o + i] = k * (count * gd[o + i] - sg - (xd[o + i] - m) * inv * sgx);
            }
        });
        var dt = x.DType;
        return (Cast(Tensor.FromArray(gx, x.shape), dt), Cast(Tensor.FromArray(gw), dt), Cast(Tensor.FromArray(gb), dt));
    }
}
