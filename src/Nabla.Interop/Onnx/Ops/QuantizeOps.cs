using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>
/// QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear for int8/uint8 (and int32 dequantization), with
/// per-tensor, per-axis and blocked scales. Rounding is half to even, as ONNX specifies.
/// </summary>
internal static class QuantizeOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("QuantizeLinear", c =>
        {
            // y = saturate(round(x / scale) + zero_point)
            var x = c.Input(0);
            var zpT = c.OptionalInput(2);
            var outType = zpT?.DType ?? (c.Node.GetIntOrNull("output_dtype") is { } od && od != 0
                ? OnnxTypes.TryToDType((int)od) ?? throw Unsupported(c, $"output_dtype {OnnxTypes.Name((int)od)}") : DType.UInt8);
            var (lo, hi) = Range(c, outType);
            var scale = Broadcast(c, c.Input(1), x.Shape);
            var zp = zpT is null ? null : Broadcast(c, zpT, x.Shape);
            var v = x.ToDoubleArray();
            var o = new double[v.Length];
            // NOTE: float32 inputs divide in float32, so that values near a .5 boundary round as ONNX Runtime's do.
            bool single = x.DType == DType.Float32;
            for (int i = 0; i < v.Length; i++)
            {
                double q = single ? (float)v[i] / (float)scale[i] : v[i] / scale[i];
                o[i] = Math.Clamp(Math.Round(q, MidpointRounding.ToEven) + (zp?[i] ?? 0), lo, hi);
            }
            return One(FromDoubles(o, x.Shape, outType));
        }, since: 10);
        r.Add("DequantizeLinear", c =>
        {
            // y = (x - zero_point) · scale
            var x = c.Input(0);
            if (!x.DType.IsIntegral()) throw Unsupported(c, $"input type {x.DType}");
            var scaleT = c.Input(1);
            var outType = c.Node.GetIntOrNull("output_dtype") is { } od && od != 0
                ? OnnxTypes.TryToDType((int)od) ?? throw Unsupported(c, $"output_dtype {OnnxTypes.Name((int)od)}") : scaleT.DType;
            var scale = Broadcast(c, scaleT, x.Shape);
            var zp = c.OptionalInput(2) is { } zpT ? Broadcast(c, zpT, x.Shape) : null;
            var v = x.ToDoubleArray();
            var o = new double[v.Length];
            for (int i = 0; i < v.Length; i++) o[i] = (v[i] - (zp?[i] ?? 0)) * scale[i];
            return One(FromDoubles(o, x.Shape, outType));
        }, since: 10);
        r.Add("DynamicQuantizeLinear", c =>
        {
            // uint8 with scale = (max(0, max x) - min(0, min x)) / 255 and zero_point = saturate(round(-min / scale)).
            var x = c.Input(0);
            var v = x.ToDoubleArray();
            double min = 0, max = 0;
            foreach (var e in v) { min = Math.Min(min, e); max = Math.Max(max, e); }
            // NOTE: computed in float32 like the reference (scale, zero point and each x / scale).
            float scale = ((float)max - (float)min) / 255f;
            double zp = scale == 0 ? 0 : Math.Clamp(Math.Round((0f - (float)min) / scale, MidpointRounding.ToEven), 0, 255);
            var o = new double[v.Length];
            for (int i = 0; i < v.Length; i++)
                o[i] = scale == 0 ? zp : Math.Clamp(Math.Round((float)v[i] / scale, MidpointRounding.ToEven) + zp, 0, 255);
            return Outputs(c, FromDoubles(o, x.Shape, DType.UInt8), FromDoubles([scale], [], DType.Float32), FromDoubles([zp], [], DType.UInt8));
        }, since: 11);
        r.Add("MatMulInteger", c =>
        {
            // int32 (A - a_zero_point) @ (B - b_zero_point); a_zero_point per row of A, b_zero_point per column of B.
            Tensor a = c.Input(0), b = c.Input(1);
            var ad = Shift(c, a, c.OptionalInput(2), rowWise: true);
            var bd = Shift(c, b, c.OptionalInput(3), rowWise: false);
            return One(ad.Matmul(bd).To(DType.Int32));
        }, since: 10);
        r.Add("QLinearMatMul", c =>
        {
            // y = saturate(round(((a - a_zp)·a_scale @ (b - b_zp)·b_scale) / y_scale) + y_zp)
            Tensor a = c.Input(0), b = c.Input(3), yzpT = c.Input(7);
            double aScale = c.Input(1).ToDoubleArray()[0], bScale = c.Input(4).ToDoubleArray()[0], yScale = c.Input(6).ToDoubleArray()[0];
            if (c.Input(1).ToDoubleArray().Length != 1 || c.Input(4).ToDoubleArray().Length != 1 || c.Input(6).ToDoubleArray().Length != 1)
                throw Unsupported(c, "per-axis scales");
            var ad = Shift(c, a, c.Input(2), rowWise: true);
            var bd = Shift(c, b, c.Input(5), rowWise: false);
            var acc = ad.Matmul(bd).ToDoubleArray();
            var shape = BroadcastMatmulShape(a.Shape, b.Shape);
            double multiplier = aScale * bScale / yScale, yzp = yzpT.ToDoubleArray()[0];
            var (lo, hi) = Range(c, yzpT.DType);
            var o = new double[acc.Length];
            for (int i = 0; i < o.Length; i++) o[i] = Math.Clamp(Math.Round(acc[i] * multiplier, MidpointRounding.ToEven) + yzp, lo, hi);
            return One(FromDoubles(o, shape, yzpT.DType));
        }, since: 10);
    }

    /// <summary>x − zero_point in double: a scalar, or one value per row of x (rowWise) or per column.</summary>
    static Tensor Shift(OpContext c, Tensor x, Tensor? zp, bool rowWise)
    {
        var xd = x.To(DType.Float64);
        if (zp is null) return xd;
        var z = zp.To(DType.Float64);
        if (z.Shape.Aggregate(1, (p, d) => p * d) == 1) return xd.Sub(z.Reshape([]));
        if (z.Dim != 1) throw Unsupported(c, $"zero point of shape [{string.Join(", ", z.Shape)}]");
        return rowWise ? xd.Sub(z.Reshape(z.Size(0), 1)) : xd.Sub(z);
    }

    static int[] BroadcastMatmulShape(int[] a, int[] b)
    {
        if (a.Length < 2 || b.Length < 2) throw new ShapeMismatchException($"matmul: operands must have rank 2 or more; got [{string.Join(", ", a)}] and [{string.Join(", ", b)}]");
        var batch = BroadcastShape(a[..^2], b[..^2]);
        return [.. batch, a[^2], b[^1]];
    }

    static (double lo, double hi) Range(OpContext c, DType t) => t switch
    {
        DType.UInt8 => (0, 255),
        DType.Int8 => (-128, 127),
        DType.Int32 => (int.MinValue, int.MaxValue),
        DType.Int16 => (short.MinValue, short.MaxValue),
        DType.UInt16 => (0, ushort.MaxValue),
        _ => throw Unsupported(c, $"quantized type {t}"),
    };

    /// <summary>A scale or zero point, per tensor, per axis (1-D) or blocked (same rank), spread to every element of x.</summary>
    static double[] Broadcast(OpContext c, Tensor s, int[] xShape)
    {
        var v = s.ToDoubleArray();
        int count = xShape.Aggregate(1, (p, d) => p * d);
        if (v.Length == 1 && s.Dim <= 1) return Enumerable.Repeat(v[0], count).ToArray();
        int axis = Axis(c, c.Node.GetInt("axis", 1), xShape.Length);
        long block = c.Node.GetInt("block_size", 0);
        var (outer, len, inner) = IndexOps.Split(xShape, axis);
        var o = new double[count];
        if (block <= 0)
        {
            if (s.Dim != 1 || v.Length != len)
                throw new ShapeMismatchException($"{c.Node.Describe()}: per-axis scale [{string.Join(", ", s.Shape)}] must have {len} elements (axis {axis} of [{string.Join(", ", xShape)}])");
            for (int a = 0; a < outer; a++)
                for (int i = 0; i < len; i++)
                    for (int b = 0; b < inner; b++) o[(a * len + i) * inner + b] = v[i];
            return o;
        }
        // blocked: s has x's shape with axis reduced to ceil(len / block)
        int blocks = (int)((len + block - 1) / block);
        var expected = xShape.ToArray();
        expected[axis] = blocks;
        if (!s.Shape.SequenceEqual(expected))
            throw new ShapeMismatchException($"{c.Node.Describe()}: blocked scale [{string.Join(", ", s.Shape)}] must be [{string.Join(", ", expected)}] for block_size {block}");
        for (int a = 0; a < outer; a++)
            for (int i = 0; i < len; i++)
                for (int b = 0; b < inner; b++) o[(a * len + i) * inner + b] = v[(a * blocks + (int)(i / block)) * inner + b];
        return o;
    }
}
