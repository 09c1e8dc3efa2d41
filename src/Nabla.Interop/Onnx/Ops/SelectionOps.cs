using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>Unique, NonMaxSuppression and ReverseSequence: data-dependent selections, on reference loops.</summary>
internal static class SelectionOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("Unique", Unique, since: 11);
        r.Add("NonMaxSuppression", c => One(NonMaxSuppression(c)), since: 10);
        r.Add("ReverseSequence", c =>
        {
            var x = c.Input(0);
            int time = Axis(c, c.Node.GetInt("time_axis", 0), x.Dim), batch = Axis(c, c.Node.GetInt("batch_axis", 1), x.Dim);
            if (time == batch || time > 1 || batch > 1) throw Invalid(c, $"time_axis {time} and batch_axis {batch} must be 0 and 1 in some order");
            var lens = Longs(c.Input(1));
            if (lens.Length != x.Size(batch)) throw Invalid(c, $"sequence_lens has {lens.Length} elements, batch is {x.Size(batch)}");
            var v = x.ToDoubleArray();
            var o = (double[])v.Clone();
            int t = x.Size(time), inner = v.Length / Math.Max(x.Size(0) * x.Size(1), 1);
            for (int b = 0; b < lens.Length; b++)
            {
                if (lens[b] < 0 || lens[b] > t) throw Invalid(c, $"sequence length {lens[b]} is outside [0, {t}]");
                for (int i = 0; i < lens[b]; i++)
                {
                    int src = time == 0 ? (i * lens.Length + b) : (b * t + i);
                    int dst = time == 0 ? ((int)(lens[b] - 1 - i) * lens.Length + b) : (b * t + (int)(lens[b] - 1 - i));
                    Array.Copy(v, src * inner, o, dst * inner, inner);
                }
            }
            return One(FromDoubles(o, x.Shape, x.DType));
        }, since: 10);
    }

    /// <summary>
    /// Unique elements (no axis: of the flattened input) or unique slices along an axis; sorted ascending
    /// (lexicographically for slices) or in order of first occurrence. Outputs Y, indices (first occurrence),
    /// inverse_indices and counts (int64).
    /// </summary>
    static Tensor?[] Unique(OpContext c)
    {
        var x = c.Input(0);
        bool sorted = c.Node.GetInt("sorted", 1) != 0;
        long? axisAttr = c.Node.GetIntOrNull("axis");
        int axis = axisAttr is { } a ? Axis(c, a, x.Dim) : -1;
        var v = x.ToDoubleArray();
        var shape = axis < 0 ? [v.Length] : x.Shape;
        if (axis < 0) axis = 0;
        var (outer, len, inner) = IndexOps.Split(shape, axis);
        // slice s = all elements with index s on the axis, in (outer, inner) order
        double[] Slice(int s)
        {
            var r = new double[outer * inner];
            for (int o = 0; o < outer; o++) Array.Copy(v, (o * len + s) * inner, r, o * inner, inner);
            return r;
        }
        var slices = Enumerable.Range(0, len).Select(Slice).ToArray();
        var firstOf = new List<int>();
        var inverse = new long[len];
        var counts = new List<long>();
        for (int s = 0; s < len; s++)
        {
            int found = firstOf.FindIndex(f => slices[f].AsSpan().SequenceEqual(slices[s]));
            if (found < 0) { firstOf.Add(s); counts.Add(0); found = firstOf.Count - 1; }
            inverse[s] = found;
            counts[found]++;
        }
        var order = Enumerable.Range(0, firstOf.Count).ToArray();
        if (sorted) Array.Sort(order, (p, q) => Lexicographic(slices[firstOf[p]], slices[firstOf[q]]));
        var rank = new long[order.Length];
        for (int i = 0; i < order.Length; i++) rank[order[i]] = i;
        int u = order.Length;
        var y = new double[outer * u * inner];
        for (int i = 0; i < u; i++)
        {
            var sl = slices[firstOf[order[i]]];
            for (int o = 0; o < outer; o++) Array.Copy(sl, o * inner, y, (o * u + i) * inner, inner);
        }
        var yShape = shape.ToArray();
        yShape[axis] = u;
        var indices = order.Select(i => (long)firstOf[i]).ToArray();
        var inv = inverse.Select(i => rank[i]).ToArray();
        var cnt = order.Select(i => counts[i]).ToArray();
        return Outputs(c, FromDoubles(y, yShape, x.DType), Tensor.FromArray(indices, u), Tensor.FromArray(inv, len), Tensor.FromArray(cnt, u));
    }

    static int Lexicographic(double[] a, double[] b)
    {
        for (int i = 0; i < a.Length; i++)
        {
            int r = a[i].CompareTo(b[i]);
            if (r != 0) return r;
        }
        return 0;
    }

    /// <summary>
    /// boxes (B, N, 4), scores (B, C, N) → selected (K, 3) int64 rows [batch, class, box]: per batch and class, boxes
    /// above score_threshold in descending score order, each kept unless its IoU with a kept box exceeds iou_threshold,
    /// at most max_output_boxes_per_class.
    /// </summary>
    static Tensor NonMaxSuppression(OpContext c)
    {
        Tensor boxesT = c.Input(0), scoresT = c.Input(1);
        if (boxesT.Dim != 3 || boxesT.Size(2) != 4 || scoresT.Dim != 3 || scoresT.Size(0) != boxesT.Size(0) || scoresT.Size(2) != boxesT.Size(1))
            throw new ShapeMismatchException($"{c.Node.Describe()}: boxes [{string.Join(", ", boxesT.Shape)}] must be (B, N, 4) and scores [{string.Join(", ", scoresT.Shape)}] (B, C, N)");
        long maxOut = c.OptionalInput(2) is { } m && m.Shape.Aggregate(1, (p, d) => p * d) > 0 ? Longs(m)[0] : 0;
        double iouTh = c.OptionalInput(3) is { } it && it.Shape.Aggregate(1, (p, d) => p * d) > 0 ? it.ToDoubleArray()[0] : 0;
        double? scoreTh = c.OptionalInput(4) is { } st && st.Shape.Aggregate(1, (p, d) => p * d) > 0 ? st.ToDoubleArray()[0] : null;
        bool center = c.Node.GetInt("center_point_box", 0) != 0;
        int nb = boxesT.Size(0), n = boxesT.Size(1), nc = scoresT.Size(1);
        var boxes = boxesT.ToDoubleArray();
        var scores = scoresT.ToDoubleArray();
        // corners (y1, x1, y2, x2) with y1 <= y2, x1 <= x2
        var corners = new double[boxes.Length];
        for (int i = 0; i < nb * n; i++)
        {
            double a0 = boxes[4 * i], a1 = boxes[4 * i + 1], a2 = boxes[4 * i + 2], a3 = boxes[4 * i + 3];
            if (center)
            {
                // [x_center, y_center, width, height]
                corners[4 * i] = a1 - a3 / 2; corners[4 * i + 1] = a0 - a2 / 2;
                corners[4 * i + 2] = a1 + a3 / 2; corners[4 * i + 3] = a0 + a2 / 2;
            }
            else
            {
                corners[4 * i] = Math.Min(a0, a2); corners[4 * i + 1] = Math.Min(a1, a3);
                corners[4 * i + 2] = Math.Max(a0, a2); corners[4 * i + 3] = Math.Max(a1, a3);
            }
        }
        var selected = new List<long>();
        for (int b = 0; b < nb; b++)
            for (int cl = 0; cl < nc; cl++)
            {
                if (maxOut <= 0) continue;
                int sOff = (b * nc + cl) * n;
                var cand = Enumerable.Range(0, n).Where(i => scoreTh is not { } th || scores[sOff + i] > th)
                    .OrderByDescending(i => scores[sOff + i]).ToList();
                var kept = new List<int>();
                foreach (var i in cand)
                {
                    if (kept.Count >= maxOut) break;
                    if (kept.Any(k => Iou(corners, (b * n + i) * 4, (b * n + k) * 4) > iouTh)) continue;
                    kept.Add(i);
                    selected.AddRange([b, cl, i]);
                }
            }
        return Tensor.FromArray(selected.ToArray(), selected.Count / 3, 3);
    }

    static double Iou(double[] c, int p, int q)
    {
        double areaP = (c[p + 2] - c[p]) * (c[p + 3] - c[p + 1]), areaQ = (c[q + 2] - c[q]) * (c[q + 3] - c[q + 1]);
        if (areaP <= 0 || areaQ <= 0) return 0;
        double h = Math.Min(c[p + 2], c[q + 2]) - Math.Max(c[p], c[q]);
        double w = Math.Min(c[p + 3], c[q + 3]) - Math.Max(c[p + 1], c[q + 1]);
        if (h <= 0 || w <= 0) return 0;
        double inter = h * w;
        return inter / (areaP + areaQ - inter);
    }
}
