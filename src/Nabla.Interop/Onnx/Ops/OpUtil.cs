using Nabla.Graph;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>Small helpers shared by the ONNX operator families.</summary>
internal static class OpUtil
{
    public static Tensor?[] One(Tensor t) => [t];

    public static ModelFormatException Unsupported(OpContext c, string what) =>
        new($"{c.Node.Describe()}: unsupported {what} for {c.Node.OpType} at opset {c.Opset}");

    public static ModelFormatException Invalid(OpContext c, string what) => new($"{c.Node.Describe()}: {what}");

    /// <summary>The values of an integer (or any) tensor as longs.</summary>
    public static long[] Longs(Tensor t) => t.DType switch
    {
        DType.Int64 => t.ToArray<long>(),
        DType.Int32 => t.ToArray<int>().Select(v => (long)v).ToArray(),
        // Exact for every integer type (uint64 as its 64 bits: values from 2^63 read negative).
        DType.Int16 or DType.Int8 or DType.UInt8 or DType.UInt16 or DType.UInt32 or DType.UInt64 or DType.Bool => t.To(DType.Int64).ToArray<long>(),
        _ => t.ToDoubleArray().Select(v => (long)v).ToArray(),
    };

    public static int Axis(OpContext c, long axis, int rank)
    {
        if (axis < -rank || axis >= Math.Max(rank, 1) && !(rank == 0 && axis == 0))
            throw Invalid(c, $"axis {axis} is out of range for rank {rank}");
        return (int)(axis < 0 ? axis + rank : axis);
    }

    public static int[] Ints(IEnumerable<long> v) => v.Select(x => checked((int)x)).ToArray();

    /// <summary>A contiguous tensor of <paramref name="shape"/> from doubles, converted to <paramref name="dtype"/>.</summary>
    public static Tensor FromDoubles(double[] data, int[] shape, DType dtype)
    {
        var t = Tensor.FromArray(data, data.Length).Reshape(shape);
        return dtype == DType.Float64 ? t : t.To(dtype);
    }

    /// <summary>Applies <paramref name="f"/> to every element (computed in double); keeps the dtype unless told.</summary>
    public static Tensor Map(Tensor x, Func<double, double> f, DType? outType = null)
    {
        var d = x.ToDoubleArray();
        var r = new double[d.Length];
        for (int i = 0; i < d.Length; i++) r[i] = f(d[i]);
        return FromDoubles(r, x.Shape, outType ?? x.DType);
    }

    /// <summary>Elementwise binary op with numpy broadcasting, computed in double.</summary>
    public static Tensor Map2(Tensor a, Tensor b, Func<double, double, double> f, DType outType)
    {
        var shape = BroadcastShape(a.Shape, b.Shape);
        var x = a.Expand(shape).ToDoubleArray();
        var y = b.Expand(shape).ToDoubleArray();
        var r = new double[x.Length];
        for (int i = 0; i < r.Length; i++) r[i] = f(x[i], y[i]);
        return FromDoubles(r, shape, outType);
    }

    public static int[] BroadcastShape(int[] a, int[] b) => Tensor.BroadcastShapes(a, b);

    public static Tensor?[] Outputs(OpContext c, params Tensor?[] values)
    {
        var r = new Tensor?[c.OutputCount];
        for (int i = 0; i < r.Length && i < values.Length; i++) r[i] = values[i];
        return r;
    }

    /// <summary>Either the attribute (before <paramref name="inputSince"/>) or the optional input of the same meaning.</summary>
    public static long[]? AttrOrInput(OpContext c, string attr, int input, long inputSince)
    {
        if (c.Opset < inputSince) return c.Node.GetInts(attr);
        var t = c.OptionalInput(input);
        return t is null ? null : Longs(t);
    }
}
