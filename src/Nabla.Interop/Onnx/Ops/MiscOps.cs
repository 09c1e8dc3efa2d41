using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>Clip, Einsum, Resize/Upsample and the control-flow operator If.</summary>
internal static class MiscOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("Clip", c =>
        {
            var x = c.Input(0);
            double lo, hi;
            if (c.Opset < 11)
            {
                lo = c.Node.GetFloat("min", double.NegativeInfinity);
                hi = c.Node.GetFloat("max", double.PositiveInfinity);
            }
            else
            {
                lo = c.OptionalInput(1) is { } a ? a.Item() : double.NegativeInfinity;
                hi = c.OptionalInput(2) is { } b ? b.Item() : double.PositiveInfinity;
            }
            return One(Map(x, v => double.IsNaN(v) ? v : Math.Min(Math.Max(v, lo), hi)));
        });
        r.Add("Einsum", c =>
        {
            var eq = c.Node.GetString("equation", "");
            var ops = c.Inputs.Select(t => t!).ToArray();
            var dt = ops[0].DType;
            bool native = dt is DType.Float32 or DType.Float64;
            var operands = native ? ops : ops.Select(t => t.To(DType.Float64)).ToArray();
            var res = Tensor.Einsum(TakeDiagonals(ExpandEllipsis(eq.Replace(" ", ""), ops), operands), operands);
            return One(res.To(dt));
        });
        r.Add("Resize", c => One(Resize(c)), since: 10);
        r.Add("Upsample", c => One(Resize(c)), max: 9);
        r.Add("EyeLike", c =>
        {
            // (rows, cols): ones where col = row + k.
            var x = c.Input(0);
            if (x.Dim != 2) throw Invalid(c, $"input must be rank 2, got [{string.Join(", ", x.Shape)}]");
            var dtype = c.Node.GetIntOrNull("dtype") is { } dt ? OnnxTypes.TryToDType((int)dt) ?? throw Unsupported(c, $"dtype {OnnxTypes.Name((int)dt)}") : x.DType;
            long k = c.Node.GetInt("k", 0);
            int rows = x.Size(0), cols = x.Size(1);
            var o = new double[rows * cols];
            for (int i = 0; i < rows; i++)
                if (i + k >= 0 && i + k < cols) o[i * cols + i + k] = 1;
            return One(FromDoubles(o, [rows, cols], dtype));
        }, since: 9);
        r.Add("Det", c =>
        {
            // (..., M, M) → (...): LU with partial pivoting in double.
            var x = c.Input(0);
            if (x.Dim < 2 || x.Size(-1) != x.Size(-2)) throw new ShapeMismatchException($"{c.Node.Describe()}: input [{string.Join(", ", x.Shape)}] is not a batch of square matrices");
            int m = x.Size(-1);
            var v = x.ToDoubleArray();
            int count = v.Length / Math.Max(m * m, 1);
            var det = new double[count];
            var a = new double[m * m];
            for (int b = 0; b < count; b++)
            {
                Array.Copy(v, b * m * m, a, 0, m * m);
                double d = 1;
                for (int col = 0; col < m && d != 0; col++)
                {
                    int piv = col;
                    for (int row = col + 1; row < m; row++) if (Math.Abs(a[row * m + col]) > Math.Abs(a[piv * m + col])) piv = row;
                    if (a[piv * m + col] == 0) { d = 0; break; }
                    if (piv != col)
                    {
                        for (int j = 0; j < m; j++) (a[col * m + j], a[piv * m + j]) = (a[piv * m + j], a[col * m + j]);
                        d = -d;
                    }
                    d *= a[col * m + col];
                    for (int row = col + 1; row < m; row++)
                    {
                        double f = a[row * m + col] / a[col * m + col];
                        for (int j = col; j < m; j++) a[row * m + j] -= f * a[col * m + j];
                    }
                }
                det[b] = d;
            }
            return One(FromDoubles(det, x.Shape[..^2], x.DType));
        }, since: 11);
        r.Add("If", c =>
        {
            bool cond = c.Input(0).Reshape(-1).Item() != 0;
            var branch = c.Node.GetGraph(cond ? "then_branch" : "else_branch") ?? throw Invalid(c, "branch graph is missing");
            return c.RunSubgraph(branch, []);
        });
    }

    /// <summary>
    /// Nabla's Einsum takes no repeated subscript within one operand ('ii'); such an operand is replaced by its diagonal:
    /// x[.., i, .., j, ..]·δ(i, j) summed over j.
    /// </summary>
    static string TakeDiagonals(string eq, Tensor[] ops)
    {
        var parts = eq.Split("->");
        var inputs = parts[0].Split(',');
        // The implicit output (letters used once, sorted) must be fixed before letters are dropped.
        var output = parts.Length > 1 ? parts[1]
            : new string(string.Concat(inputs).GroupBy(ch => ch).Where(g => g.Count() == 1).Select(g => g.Key).Order().ToArray());
        for (int i = 0; i < inputs.Length && i < ops.Length; i++)
        {
            while (true)
            {
                var s = inputs[i];
                int p = -1, q = -1;
                for (int a = 0; a < s.Length && p < 0; a++)
                    for (int b = a + 1; b < s.Length; b++)
                        if (s[a] == s[b]) { p = a; q = b; break; }
                if (p < 0) break;
                int n = ops[i].Size(p);
                var eyeShape = Enumerable.Repeat(1, s.Length).ToArray();
                eyeShape[p] = n;
                eyeShape[q] = n;
                ops[i] = ops[i].Mul(Tensor.Eye(n, n, ops[i].DType).Reshape(eyeShape)).Sum([q]);
                inputs[i] = s.Remove(q, 1);
            }
        }
        return string.Join(',', inputs) + "->" + output;
    }

    /// <summary>Rewrites "..." into explicit subscripts (right-aligned, as numpy broadcasts them).</summary>
    static string ExpandEllipsis(string eq, Tensor[] ops)
    {
        if (!eq.Contains("...", StringComparison.Ordinal)) return eq;
        var parts = eq.Split("->");
        var inputs = parts[0].Split(',');
        var free = "ABCDEFGHIJKLMNOPQRSTUVWXYZ".Where(ch => !eq.Contains(ch)).ToArray();
        int most = 0;
        for (int i = 0; i < inputs.Length && i < ops.Length; i++)
            if (inputs[i].Contains("...", StringComparison.Ordinal)) most = Math.Max(most, ops[i].Dim - (inputs[i].Length - 3));
        for (int i = 0; i < inputs.Length && i < ops.Length; i++)
        {
            if (!inputs[i].Contains("...", StringComparison.Ordinal)) continue;
            int k = ops[i].Dim - (inputs[i].Length - 3);
            inputs[i] = inputs[i].Replace("...", new string(free, most - k, k));
        }
        string ell = new(free, 0, most);
        string output = parts.Length > 1 ? parts[1].Replace("...", ell) : null!;
        if (parts.Length == 1)
        {
            // Implicit output: the broadcast dims, then the letters that appear once, sorted.
            var all = string.Concat(inputs.Select(x => x.Where(char.IsLower)));
            output = ell + new string(all.GroupBy(ch => ch).Where(g => g.Count() == 1).Select(g => g.Key).Order().ToArray());
        }
        return string.Join(',', inputs) + "->" + output;
    }

    static Tensor Resize(OpContext c)
    {
        var x = c.Input(0);
        int rank = x.Dim;
        var inShape = x.Shape;
        var n = c.Node;
        string mode = n.GetString("mode", "nearest");
        bool legacy = c.Node.OpType == "Upsample" || c.Opset < 11;
        string coord = legacy ? "asymmetric" : n.GetString("coordinate_transformation_mode", "half_pixel");
        string nearestMode = legacy ? "floor" : n.GetString("nearest_mode", "round_prefer_floor");
        double cubicA = n.GetFloat("cubic_coeff_a", -0.75);
        bool excludeOutside = n.GetInt("exclude_outside", 0) != 0;
        double extrapolation = n.GetFloat("extrapolation_value", 0);
        if (n.GetInt("antialias", 0) != 0) throw Unsupported(c, "antialias=1");
        string policy = n.GetString("keep_aspect_ratio_policy", "stretch");
        if (mode is not ("nearest" or "linear" or "bilinear" or "cubic")) throw Unsupported(c, $"mode '{mode}'");

        double[]? scales = null;
        long[]? sizes = null;
        double[]? roi = null;
        if (c.Node.OpType == "Upsample" && c.Opset < 9) scales = n.GetFloats("scales")?.Select(v => (double)v).ToArray();
        else if (legacy) scales = c.Input(1).ToDoubleArray();
        else
        {
            if (c.OptionalInput(1) is { } rt && rt.NumElements > 0) roi = rt.ToDoubleArray();
            if (c.OptionalInput(2) is { } st && st.NumElements > 0) scales = st.ToDoubleArray();
            if (c.OptionalInput(3) is { } zt && zt.NumElements > 0) sizes = Longs(zt);
        }
        var axes = n.GetInts("axes")?.Select(a => Axis(c, a, rank)).ToArray() ?? Enumerable.Range(0, rank).ToArray();
        var scale = Enumerable.Repeat(1.0, rank).ToArray();
        var outShape = (int[])inShape.Clone();
        if (scales is not null)
        {
            if (scales.Length != axes.Length) throw Invalid(c, $"{scales.Length} scales for {axes.Length} axes");
            for (int i = 0; i < axes.Length; i++)
            {
                scale[axes[i]] = scales[i];
                outShape[axes[i]] = (int)Math.Floor(inShape[axes[i]] * scales[i]);
            }
        }
        else if (sizes is not null)
        {
            if (sizes.Length != axes.Length) throw Invalid(c, $"{sizes.Length} sizes for {axes.Length} axes");
            if (policy != "stretch")
            {
                var ratios = axes.Select((a, i) => (double)sizes[i] / inShape[a]).ToArray();
                double s = policy == "not_larger" ? ratios.Min() : ratios.Max();
                foreach (var a in axes) { scale[a] = s; outShape[a] = (int)Math.Round(s * inShape[a], MidpointRounding.AwayFromZero); }
            }
            else
                for (int i = 0; i < axes.Length; i++)
                {
                    outShape[axes[i]] = (int)sizes[i];
                    scale[axes[i]] = (double)sizes[i] / inShape[axes[i]];
                }
        }
        else throw Invalid(c, "neither scales nor sizes is given");

        var v = x.ToDoubleArray();
        var cur = (int[])inShape.Clone();
        for (int d = 0; d < rank; d++)
        {
            if (outShape[d] == cur[d] && scale[d] == 1 && coord != "tf_crop_and_resize") continue;
            double roiStart = roi is null ? 0 : roi[Array.IndexOf(axes, d) is var ai && ai >= 0 ? ai : d];
            double roiEnd = roi is null ? 1 : roi[(Array.IndexOf(axes, d) is var aj && aj >= 0 ? aj : d) + (roi.Length / 2)];
            v = ResizeAxis(c, v, cur, d, outShape[d], scale[d], mode, coord, nearestMode, cubicA, excludeOutside, extrapolation, roiStart, roiEnd);
            cur[d] = outShape[d];
        }
        return FromDoubles(v, outShape, x.DType);
    }

    static double[] ResizeAxis(OpContext c, double[] v, int[] shape, int axis, int outLen, double scale, string mode, string coord,
        string nearestMode, double a, bool excludeOutside, double extrapolation, double roiStart, double roiEnd)
    {
        var (outer, inLen, inner) = IndexOps.Split(shape, axis);
        var o = new double[outer * outLen * inner];
        var taps = new List<(int idx, double w)>[outLen];
        var outside = new bool[outLen];
        for (int i = 0; i < outLen; i++)
        {
            double xo = coord switch
            {
                "half_pixel" => (i + 0.5) / scale - 0.5,
                "half_pixel_symmetric" => inLen / 2.0 * (1 - outLen / (scale * inLen)) + (i + 0.5) / scale - 0.5,
                "pytorch_half_pixel" => outLen > 1 ? (i + 0.5) / scale - 0.5 : 0,
                // NOTE: the reference divides by scale·in − 1, not out − 1, when a scale does not give a whole size.
                "align_corners" => outLen == 1 ? 0 : i * (double)(inLen - 1) / (scale * inLen - 1),
                "asymmetric" => i / scale,
                "tf_crop_and_resize" => outLen > 1 ? roiStart * (inLen - 1) + i * (roiEnd - roiStart) * (inLen - 1) / (outLen - 1)
                    : 0.5 * (roiStart + roiEnd) * (inLen - 1),
                _ => throw Unsupported(c, $"coordinate_transformation_mode '{coord}'"),
            };
            var list = new List<(int, double)>();
            if (coord == "tf_crop_and_resize" && (xo < 0 || xo > inLen - 1)) { outside[i] = true; taps[i] = list; continue; }
            if (mode == "nearest")
            {
                double f = Math.Floor(xo);
                int k = nearestMode switch
                {
                    "round_prefer_floor" => (int)(xo - f == 0.5 ? f : Math.Round(xo)),
                    "round_prefer_ceil" => (int)(xo - f == 0.5 ? f + 1 : Math.Round(xo)),
                    "floor" => (int)f,
                    "ceil" => (int)Math.Ceiling(xo),
                    _ => throw Unsupported(c, $"nearest_mode '{nearestMode}'"),
                };
                list.Add((Math.Clamp(k, 0, inLen - 1), 1));
            }
            else if (mode is "linear" or "bilinear")
            {
                double xc = Math.Clamp(xo, 0, inLen - 1);
                int f = (int)Math.Floor(xc);
                double t = xc - f;
                list.Add((f, 1 - t));
                list.Add((Math.Min(f + 1, inLen - 1), t));
            }
            else
            {
                int f = (int)Math.Floor(xo);
                double t = xo - f;
                double[] w =
                [
                    ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                    ((a + 2) * t - (a + 3)) * t * t + 1,
                    ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                    ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
                ];
                double sum = 0;
                for (int j = 0; j < 4; j++)
                {
                    int idx = f - 1 + j;
                    if (excludeOutside && (idx < 0 || idx >= inLen)) continue;
                    list.Add((Math.Clamp(idx, 0, inLen - 1), w[j]));
                    sum += w[j];
                }
                if (excludeOutside && sum != 0)
                    for (int j = 0; j < list.Count; j++) list[j] = (list[j].Item1, list[j].Item2 / sum);
            }
            taps[i] = list;
        }
        for (int p = 0; p < outer; p++)
            for (int i = 0; i < outLen; i++)
                for (int q = 0; q < inner; q++)
                {
                    double acc = 0;
                    if (outside[i]) acc = extrapolation;
                    else foreach (var (idx, w) in taps[i]) acc += w * v[(p * inLen + idx) * inner + q];
                    o[(p * outLen + i) * inner + q] = acc;
                }
        return o;
    }
}
