using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>
/// GridSample for any number of spatial dimensions: X (N, C, D1..Dk), grid (N, O1..Ok, k) holding normalized
/// coordinates in reverse dimension order (x for Dk first) → Y (N, C, O1..Ok). Nearest, (multi)linear and cubic
/// (Keys, a = -0.75) sampling with zeros, border or reflection padding; a reference loop in double.
/// </summary>
internal static class GridSampleOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("GridSample", GridSample, since: 16);
        r.Add("AffineGrid", c => One(AffineGrid(c)), since: 20);
    }

    /// <summary>
    /// theta (N, k, k+1), size (N, C, D1..Dk) → grid (N, D1..Dk, k): theta applied to each output position's normalized
    /// coordinates (x for the last dimension first, then y, z), with align_corners as in GridSample.
    /// </summary>
    static Tensor AffineGrid(OpContext c)
    {
        var theta = c.Input(0);
        var size = Longs(c.Input(1));
        int k = size.Length - 2;
        if (k is not (2 or 3) || theta.Dim != 3 || theta.Size(1) != k || theta.Size(2) != k + 1 || theta.Size(0) != size[0])
            throw new ShapeMismatchException($"{c.Node.Describe()}: theta [{string.Join(", ", theta.Shape)}] does not fit size [{string.Join(", ", size)}]");
        bool align = c.Node.GetInt("align_corners", 0) != 0;
        int n = (int)size[0];
        var dims = size[2..].Select(d => (int)d).ToArray();
        int count = dims.Aggregate(1, (p, d) => p * d);
        var t = theta.ToDoubleArray();
        var grid = new double[n * count * k];
        var pos = new double[k + 1];
        for (int b = 0; b < n; b++)
            for (int o = 0; o < count; o++)
            {
                // pos = (x, y[, z], 1) with x from the last spatial dimension
                int rest = o;
                for (int i = k - 1; i >= 0; i--)
                {
                    int idx = rest % dims[i];
                    rest /= dims[i];
                    double v = align ? (dims[i] == 1 ? 0 : -1 + 2.0 * idx / (dims[i] - 1)) : (2.0 * idx + 1) / dims[i] - 1;
                    pos[k - 1 - i] = v;
                }
                pos[k] = 1;
                for (int r = 0; r < k; r++)
                {
                    double acc = 0;
                    for (int j = 0; j <= k; j++) acc += t[(b * k + r) * (k + 1) + j] * pos[j];
                    grid[(b * count + o) * k + r] = acc;
                }
            }
        return FromDoubles(grid, [n, .. dims, k], theta.DType);
    }

    static Tensor?[] GridSample(OpContext c)
    {
        Tensor xT = c.Input(0), gridT = c.Input(1);
        int k = xT.Dim - 2;
        if (k < 1 || gridT.Dim != k + 2 || gridT.Size(0) != xT.Size(0) || gridT.Size(-1) != k)
            throw new ShapeMismatchException($"{c.Node.Describe()}: X [{string.Join(", ", xT.Shape)}] and grid [{string.Join(", ", gridT.Shape)}] must be (N, C, D1..Dk) and (N, O1..Ok, k)");
        if (c.Opset < 20 && k != 2) throw Unsupported(c, $"{k}-D sampling before opset 20");
        string mode = c.Node.GetString("mode", c.Opset < 20 ? "bilinear" : "linear") switch
        {
            "bilinear" or "linear" => "linear",
            "bicubic" or "cubic" => "cubic",
            "nearest" => "nearest",
            var m => throw Unsupported(c, $"mode '{m}'"),
        };
        string padding = c.Node.GetString("padding_mode", "zeros");
        if (padding is not ("zeros" or "border" or "reflection")) throw Unsupported(c, $"padding_mode '{padding}'");
        bool align = c.Node.GetInt("align_corners", 0) != 0;
        int n = xT.Size(0), ch = xT.Size(1);
        var dims = xT.Shape[2..];
        var outDims = gridT.Shape[1..^1];
        int inSize = dims.Aggregate(1, (p, d) => p * d), outSize = outDims.Aggregate(1, (p, d) => p * d);
        var strides = new int[k];
        for (int i = k - 1, s = 1; i >= 0; s *= dims[i], i--) strides[i] = s;
        double[] lo = new double[k], hi = new double[k];
        for (int i = 0; i < k; i++) (lo[i], hi[i]) = align ? (0.0, dims[i] - 1.0) : (-0.5, dims[i] - 0.5);
        var x = xT.ToDoubleArray();
        var grid = gridT.ToDoubleArray();
        var y = new double[n * ch * outSize];
        int taps = mode switch { "nearest" => 1, "linear" => 2, _ => 4 };
        var index = new int[k, taps];
        var weight = new double[k, taps];
        var coord = new double[k];
        for (int b = 0; b < n; b++)
            for (int o = 0; o < outSize; o++)
            {
                for (int i = 0; i < k; i++)
                {
                    double g = grid[(b * outSize + o) * k + (k - 1 - i)];
                    double v = align ? (g + 1) / 2 * (dims[i] - 1) : ((g + 1) * dims[i] - 1) / 2;
                    // NOTE: nearest rounds half to even in every rank; the v1.22 volumetric expected outputs need it in 3-D too.
                    if (mode == "nearest") v = Math.Round(v, MidpointRounding.ToEven);
                    if (v < lo[i] || v > hi[i])
                        v = padding == "border" ? Math.Clamp(v, 0, dims[i] - 1) : padding == "reflection" ? Reflect(v, lo[i], hi[i]) : v;
                    coord[i] = v;
                    if (mode == "nearest") { index[i, 0] = (int)v; weight[i, 0] = 1; continue; }
                    int x0 = (int)Math.Floor(v);
                    double t = v - x0;
                    if (mode == "linear")
                    {
                        index[i, 0] = x0; weight[i, 0] = 1 - t;
                        index[i, 1] = x0 + 1; weight[i, 1] = t;
                    }
                    else
                    {
                        const double A = -0.75;
                        double t1 = t + 1, t2 = 1 - t, t3 = 2 - t;
                        weight[i, 0] = ((A * t1 - 5 * A) * t1 + 8 * A) * t1 - 4 * A;
                        weight[i, 1] = ((A + 2) * t - (A + 3)) * t * t + 1;
                        weight[i, 2] = ((A + 2) * t2 - (A + 3)) * t2 * t2 + 1;
                        weight[i, 3] = ((A * t3 - 5 * A) * t3 + 8 * A) * t3 - 4 * A;
                        for (int j = 0; j < 4; j++) index[i, j] = x0 - 1 + j;
                    }
                }
                // Fix each tap's index by the padding rule; -1 marks a zero (outside, zeros padding).
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < taps; j++)
                    {
                        int idx = index[i, j];
                        if (idx >= 0 && idx < dims[i]) continue;
                        index[i, j] = padding switch
                        {
                            "zeros" => -1,
                            "border" => Math.Clamp(idx, 0, dims[i] - 1),
                            _ => Math.Clamp((int)Reflect(idx, lo[i], hi[i]), 0, dims[i] - 1),
                        };
                    }
                int combos = (int)Math.Pow(taps, k);
                for (int cc = 0; cc < ch; cc++)
                {
                    int xOff = (b * ch + cc) * inSize;
                    double acc = 0;
                    for (int combo = 0; combo < combos; combo++)
                    {
                        double w = 1;
                        int at = 0, rest = combo;
                        bool zero = false;
                        for (int i = k - 1; i >= 0; i--)
                        {
                            int j = rest % taps;
                            rest /= taps;
                            int idx = index[i, j];
                            if (idx < 0) { zero = true; break; }
                            w *= weight[i, j];
                            at += idx * strides[i];
                        }
                        if (!zero) acc += w * x[xOff + at];
                    }
                    y[(b * ch + cc) * outSize + o] = acc;
                }
            }
        return One(FromDoubles(y, [n, ch, .. outDims], xT.DType));
    }

    /// <summary>Reflects <paramref name="v"/> off the borders until it lies in [lo, hi].</summary>
    static double Reflect(double v, double lo, double hi)
    {
        double range = hi - lo;
        if (range <= 0) return lo;
        if (v < lo)
        {
            double dx = lo - v;
            int m = (int)(dx / range);
            double r = dx - m * range;
            return m % 2 == 0 ? lo + r : hi - r;
        }
        if (v > hi)
        {
            double dx = v - hi;
            int m = (int)(dx / range);
            double r = dx - m * range;
            return m % 2 == 0 ? hi - r : lo + r;
        }
        return v;
    }
}
