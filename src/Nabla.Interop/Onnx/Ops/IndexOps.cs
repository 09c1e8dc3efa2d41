using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>Gather/scatter, Where, TopK, CumSum/CumProd, NonZero, OneHot, Trilu, Range and friends.</summary>
internal static class IndexOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("Gather", c =>
        {
            var x = c.Input(0);
            int axis = Axis(c, c.Node.GetInt("axis", 0), x.Dim);
            var idx = c.Input(1);
            var flat = Normalize(c, Longs(idx), x.Size(axis));
            var picked = x.IndexSelect(axis, Tensor.FromArray(flat, flat.Length));
            var shape = x.Shape.Take(axis).Concat(idx.Shape).Concat(x.Shape.Skip(axis + 1)).ToArray();
            return One(picked.Reshape(shape));
        });
        r.Add("GatherElements", c =>
        {
            var x = c.Input(0);
            int axis = Axis(c, c.Node.GetInt("axis", 0), x.Dim);
            var idx = c.Input(1);
            var flat = Normalize(c, Longs(idx), x.Size(axis));
            return One(x.Gather(axis, Tensor.FromArray(flat, flat.Length).Reshape(idx.Shape)));
        });
        r.Add("GatherND", c => One(GatherNd(c)));
        r.Add("ScatterElements", c => One(ScatterElements(c)));
        r.Add("Scatter", c => One(ScatterElements(c)), max: 10);
        r.Add("ScatterND", c => One(ScatterNd(c)));
        r.Add("Where", c =>
        {
            Tensor cond = c.Input(0), x = c.Input(1), y = c.Input(2);
            var shape = BroadcastShape(BroadcastShape(cond.Shape, x.Shape), y.Shape);
            return One(Tensor.Where(cond.To(DType.Bool).Expand(shape), x.Expand(shape), y.Expand(shape)).Contiguous());
        });
        r.Add("Range", c =>
        {
            Tensor s = c.Input(0);
            double start = s.Item(), limit = c.Input(1).Item(), delta = c.Input(2).Item();
            int n = (int)Math.Max(Math.Ceiling((limit - start) / delta), 0);
            var v = new double[n];
            for (int i = 0; i < n; i++) v[i] = start + i * delta;
            return One(FromDoubles(v, [n], s.DType));
        });
        r.Add("TopK", c => TopK(c));
        r.Add("CumSum", c => One(Cumulative(c, 0, (acc, v) => acc + v)));
        r.Add("CumProd", c => One(Cumulative(c, 1, (acc, v) => acc * v)), since: 26);
        r.Add("NonZero", c =>
        {
            var x = c.Input(0);
            var v = x.ToDoubleArray();
            var shape = x.Shape;
            var hits = new List<int>();
            for (int i = 0; i < v.Length; i++) if (v[i] != 0) hits.Add(i);
            int rank = Math.Max(shape.Length, 1);
            var o = new long[rank * hits.Count];
            for (int j = 0; j < hits.Count; j++)
            {
                int rem = hits[j];
                for (int d = shape.Length - 1; d >= 0; d--) { o[d * hits.Count + j] = rem % shape[d]; rem /= shape[d]; }
            }
            return One(Tensor.FromArray(o, o.Length).Reshape(rank, hits.Count));
        });
        r.Add("OneHot", c =>
        {
            var idx = Longs(c.Input(0));
            var ishape = c.Input(0).Shape;
            long depth = (long)c.Input(1).Reshape(-1).Item();
            var values = c.Input(2);
            var vv = values.ToDoubleArray();
            int rank = ishape.Length + 1;
            int axis = Axis(c, c.Node.GetInt("axis", -1), rank);
            var outShape = ishape.Take(axis).Append((int)depth).Concat(ishape.Skip(axis)).ToArray();
            var (outer, _, inner) = Split(outShape, axis);
            var o = new double[outer * depth * inner];
            Array.Fill(o, vv[0]);
            for (int a = 0; a < outer; a++)
                for (int b = 0; b < inner; b++)
                {
                    long k = idx[a * inner + b];
                    if (k < 0) k += depth;
                    if (k >= 0 && k < depth) o[(a * depth + k) * inner + b] = vv[1];
                }
            return One(FromDoubles(o, outShape, values.DType));
        });
        r.Add("Trilu", c =>
        {
            var x = c.Input(0);
            long k = c.OptionalInput(1) is { } kt ? Longs(kt)[0] : 0;
            bool upper = c.Node.GetInt("upper", 1) != 0;
            int rows = x.Size(-2), cols = x.Size(-1);
            var mask = new bool[rows * cols];
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) mask[i * cols + j] = upper ? j - i >= k : j - i <= k;
            var m = Tensor.FromArray(mask, mask.Length).Reshape(rows, cols).Expand(x.Shape);
            return One(Tensor.Where(m, x, Tensor.Zeros(x.Shape, x.DType)).Contiguous());
        }, since: 14);
        r.Add("Compress", c =>
        {
            var x = c.Input(0);
            var cond = c.Input(1).ToDoubleArray();
            long? axisAttr = c.Node.GetIntOrNull("axis");
            if (axisAttr is null) x = x.Reshape(-1);
            int axis = axisAttr is long a ? Axis(c, a, x.Dim) : 0;
            var keep = Enumerable.Range(0, Math.Min(cond.Length, x.Size(axis))).Where(i => cond[i] != 0).Select(i => (long)i).ToArray();
            return One(x.IndexSelect(axis, Tensor.FromArray(keep, keep.Length)));
        });
    }

    /// <summary>CumSum/CumProd: a running <paramref name="step"/> along the axis input, with exclusive and reverse.</summary>
    static Tensor Cumulative(OpContext c, double seed, Func<double, double, double> step)
    {
        var x = c.Input(0);
        int axis = Axis(c, Longs(c.Input(1))[0], x.Dim);
        bool exclusive = c.Node.GetInt("exclusive", 0) != 0, reverse = c.Node.GetInt("reverse", 0) != 0;
        var (outer, len, inner) = Split(x.Shape, axis);
        var v = x.ToDoubleArray();
        var o = new double[v.Length];
        for (int a = 0; a < outer; a++)
            for (int b = 0; b < inner; b++)
            {
                double acc = seed;
                for (int k = 0; k < len; k++)
                {
                    int i = reverse ? len - 1 - k : k;
                    int at = (a * len + i) * inner + b;
                    if (exclusive) { o[at] = acc; acc = step(acc, v[at]); }
                    else { acc = step(acc, v[at]); o[at] = acc; }
                }
            }
        return FromDoubles(o, x.Shape, x.DType);
    }

    public static (int outer, int len, int inner) Split(int[] shape, int axis) =>
        (shape.Take(axis).Aggregate(1, (p, d) => p * d), shape.Length == 0 ? 1 : shape[axis], shape.Skip(axis + 1).Aggregate(1, (p, d) => p * d));

    static long[] Normalize(OpContext c, long[] idx, int size)
    {
        var r = new long[idx.Length];
        for (int i = 0; i < idx.Length; i++)
        {
            long k = idx[i] < 0 ? idx[i] + size : idx[i];
            if (k < 0 || k >= size) throw new IndexOutOfBoundsException($"{c.Node.OpType}: index {idx[i]} is out of range for a dimension of size {size}");
            r[i] = k;
        }
        return r;
    }

    static Tensor?[] TopK(OpContext c)
    {
        var x = c.Input(0);
        int axis = Axis(c, c.Node.GetInt("axis", -1), x.Dim);
        long k = c.Opset < 10 ? c.Node.GetInt("k", 0) : Longs(c.Input(1))[0];
        bool largest = c.Node.GetInt("largest", 1) != 0;
        var (outer, len, inner) = Split(x.Shape, axis);
        if (k < 0 || k > len) throw Invalid(c, $"k={k} is out of range for a dimension of size {len}");
        var v = x.ToDoubleArray();
        var vals = new double[outer * k * inner];
        var idx = new long[outer * k * inner];
        var order = new int[len];
        for (int a = 0; a < outer; a++)
            for (int b = 0; b < inner; b++)
            {
                for (int i = 0; i < len; i++) order[i] = i;
                int baseIdx = a * len * inner + b;
                // NOTE: ties keep the lower index first, as the ONNX reference does.
                Array.Sort(order, (p, q) =>
                {
                    double vp = v[baseIdx + p * inner], vq = v[baseIdx + q * inner];
                    int cmp = largest ? vq.CompareTo(vp) : vp.CompareTo(vq);
                    return cmp != 0 ? cmp : p.CompareTo(q);
                });
                for (int j = 0; j < k; j++)
                {
                    int at = (a * (int)k + j) * inner + b;
                    vals[at] = v[baseIdx + order[j] * inner];
                    idx[at] = order[j];
                }
            }
        var shape = x.Shape;
        shape[axis] = (int)k;
        return Outputs(c, FromDoubles(vals, shape, x.DType), Tensor.FromArray(idx, idx.Length).Reshape(shape));
    }

    static Tensor GatherNd(OpContext c)
    {
        var data = c.Input(0);
        var indices = c.Input(1);
        int b = (int)c.Node.GetInt("batch_dims", 0);
        var ds = data.Shape;
        var ishape = indices.Shape;
        int k = ishape[^1];
        int batch = ds.Take(b).Aggregate(1, (p, d) => p * d);
        int indexed = ds.Skip(b).Take(k).Aggregate(1, (p, d) => p * d);
        var rest = ds.Skip(b + k).ToArray();
        int restSize = rest.Aggregate(1, (p, d) => p * d);
        var idx = Longs(indices);
        int tuples = idx.Length / Math.Max(k, 1);
        int perBatch = tuples / Math.Max(batch, 1);
        var flat = new long[tuples];
        for (int t = 0; t < tuples; t++)
        {
            long f = 0;
            for (int j = 0; j < k; j++)
            {
                long dim = ds[b + j], v = idx[t * k + j];
                if (v < 0) v += dim;
                if (v < 0 || v >= dim) throw new IndexOutOfBoundsException($"GatherND: index {idx[t * k + j]} is out of range for a dimension of size {dim}");
                f = f * dim + v;
            }
            flat[t] = (t / Math.Max(perBatch, 1)) * (long)indexed + f;
        }
        var rows = data.Reshape(batch * indexed, restSize).IndexSelect(0, Tensor.FromArray(flat, flat.Length));
        return rows.Reshape(ishape.Take(ishape.Length - 1).Concat(rest).ToArray());
    }

    static Func<double, double, double> Reduction(OpContext c) => c.Node.GetString("reduction", "none") switch
    {
        "none" => (_, u) => u,
        "add" => (a, u) => a + u,
        "mul" => (a, u) => a * u,
        "max" => Math.Max,
        "min" => Math.Min,
        var s => throw Unsupported(c, $"reduction '{s}'"),
    };

    static Tensor ScatterElements(OpContext c)
    {
        var data = c.Input(0);
        var indices = c.Input(1);
        var updates = c.Input(2);
        int axis = Axis(c, c.Node.GetInt("axis", 0), data.Dim);
        var f = Reduction(c);
        var o = data.ToDoubleArray();
        var idx = Longs(indices);
        var u = updates.ToDoubleArray();
        var ds = data.Shape;
        var ishape = indices.Shape;
        var dstrides = new int[ds.Length];
        for (int d = ds.Length - 1, s = 1; d >= 0; s *= ds[d], d--) dstrides[d] = s;
        var coord = new int[ishape.Length];
        for (int i = 0; i < idx.Length; i++)
        {
            int rem = i;
            for (int d = ishape.Length - 1; d >= 0; d--) { coord[d] = rem % ishape[d]; rem /= ishape[d]; }
            long k = idx[i] < 0 ? idx[i] + ds[axis] : idx[i];
            if (k < 0 || k >= ds[axis]) throw new IndexOutOfBoundsException($"{c.Node.OpType}: index {idx[i]} is out of range for a dimension of size {ds[axis]}");
            long at = 0;
            for (int d = 0; d < ds.Length; d++) at += (d == axis ? k : coord[d]) * dstrides[d];
            o[at] = f(o[at], u[i]);
        }
        return FromDoubles(o, ds, data.DType);
    }

    static Tensor ScatterNd(OpContext c)
    {
        var data = c.Input(0);
        var indices = c.Input(1);
        var updates = c.Input(2);
        var f = Reduction(c);
        var ds = data.Shape;
        var ishape = indices.Shape;
        int k = ishape[^1];
        int restSize = ds.Skip(k).Aggregate(1, (p, d) => p * d);
        var o = data.ToDoubleArray();
        var u = updates.ToDoubleArray();
        var idx = Longs(indices);
        int tuples = idx.Length / Math.Max(k, 1);
        for (int t = 0; t < tuples; t++)
        {
            long row = 0;
            for (int j = 0; j < k; j++)
            {
                long v = idx[t * k + j];
                if (v < 0) v += ds[j];
                if (v < 0 || v >= ds[j]) throw new IndexOutOfBoundsException($"ScatterND: index {idx[t * k + j]} is out of range for a dimension of size {ds[j]}");
                row = row * ds[j] + v;
            }
            for (int e = 0; e < restSize; e++) o[row * restSize + e] = f(o[row * restSize + e], u[t * restSize + e]);
        }
        return FromDoubles(o, ds, data.DType);
    }
}
