using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>
/// The Reduce* family and ArgMax/ArgMin. Axes are an attribute before opset 18 (13 for ReduceSum) and an optional
/// input from then on, where an empty list reduces everything unless noop_with_empty_axes is set.
/// </summary>
internal static class ReduceOps
{
    public static void Register(OnnxOps r)
    {
        Reduce(r, "ReduceSum", 13, 0, (acc, v) => acc + v, null);
        Reduce(r, "ReduceMean", 18, 0, (acc, v) => acc + v, (s, n) => s / n);
        Reduce(r, "ReduceMax", 18, double.NegativeInfinity, (acc, v) => double.IsNaN(acc) || v > acc || double.IsNaN(v) ? v : acc, null);
        Reduce(r, "ReduceMin", 18, double.PositiveInfinity, (acc, v) => double.IsNaN(acc) || v < acc || double.IsNaN(v) ? v : acc, null);
        Reduce(r, "ReduceProd", 18, 1, (acc, v) => acc * v, null);
        Reduce(r, "ReduceL1", 18, 0, (acc, v) => acc + Math.Abs(v), null);
        Reduce(r, "ReduceL2", 18, 0, (acc, v) => acc + v * v, (s, _) => Math.Sqrt(s));
        Reduce(r, "ReduceSumSquare", 18, 0, (acc, v) => acc + v * v, null);
        Reduce(r, "ReduceLogSum", 18, 0, (acc, v) => acc + v, (s, _) => Math.Log(s));
        r.Add("ReduceLogSumExp", c => One(Run(c, 18, (row, n) =>
        {
            double max = double.NegativeInfinity;
            for (int i = 0; i < n; i++) max = Math.Max(max, row[i]);
            if (double.IsNegativeInfinity(max)) return max;
            double s = 0;
            for (int i = 0; i < n; i++) s += Math.Exp(row[i] - max);
            return max + Math.Log(s);
        })));
        r.Add("ArgMax", c => One(Arg(c, true)));
        r.Add("ArgMin", c => One(Arg(c, false)));
    }

    static void Reduce(OnnxOps r, string name, long inputSince, double init, Func<double, double, double> step, Func<double, int, double>? finish) =>
        r.Add(name, c => One(Run(c, inputSince, (row, n) =>
        {
            double acc = init;
            for (int i = 0; i < n; i++) acc = step(acc, row[i]);
            return finish is null ? acc : finish(acc, n);
        })));

    static Tensor Run(OpContext c, long inputSince, Func<double[], int, double> reduce)
    {
        var x = c.Input(0);
        bool keep = c.Node.GetInt("keepdims", 1) != 0;
        var axes = AttrOrInput(c, "axes", 1, inputSince);
        int rank = x.Dim;
        if (axes is null || axes.Length == 0)
        {
            if (c.Opset >= inputSince && c.Node.GetInt("noop_with_empty_axes", 0) != 0) return x;
            axes = Enumerable.Range(0, rank).Select(i => (long)i).ToArray();
        }
        var reduced = axes.Select(a => Axis(c, a, rank)).ToHashSet();
        var kept = Enumerable.Range(0, rank).Where(d => !reduced.Contains(d)).ToArray();
        var perm = kept.Concat(reduced.Order()).ToArray();
        var shape = x.Shape;
        int outer = kept.Aggregate(1, (p, d) => p * shape[d]);
        int inner = reduced.Aggregate(1, (p, d) => p * shape[d]);
        var v = (rank == 0 ? x : x.Permute(perm)).Contiguous().ToDoubleArray();
        var o = new double[outer];
        var row = new double[inner];
        for (int i = 0; i < outer; i++)
        {
            Array.Copy(v, i * inner, row, 0, inner);
            o[i] = reduce(row, inner);
        }
        var outShape = keep ? shape.Select((s, d) => reduced.Contains(d) ? 1 : s).ToArray() : kept.Select(d => shape[d]).ToArray();
        return FromDoubles(o, outShape, x.DType);
    }

    static Tensor Arg(OpContext c, bool max)
    {
        var x = c.Input(0);
        int axis = Axis(c, c.Node.GetInt("axis", 0), x.Dim);
        bool keep = c.Node.GetInt("keepdims", 1) != 0, last = c.Node.GetInt("select_last_index", 0) != 0;
        var (outer, len, inner) = IndexOps.Split(x.Shape, axis);
        var v = x.ToDoubleArray();
        var o = new long[outer * inner];
        for (int a = 0; a < outer; a++)
            for (int b = 0; b < inner; b++)
            {
                int best = 0;
                double bv = v[a * len * inner + b];
                for (int i = 1; i < len; i++)
                {
                    double e = v[(a * len + i) * inner + b];
                    if (max ? e > bv || last && e == bv : e < bv || last && e == bv) { best = i; bv = e; }
                }
                o[a * inner + b] = best;
            }
        var shape = x.Shape.ToList();
        if (keep) shape[axis] = 1; else shape.RemoveAt(axis);
        return Tensor.FromArray(o, o.Length).Reshape(shape.ToArray());
    }
}
