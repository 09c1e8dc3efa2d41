using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>Constants, casts and the operators that only move elements: reshape, transpose, concat, split, slice, pad, tile.</summary>
internal static class ShapeOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("CenterCropPad", c =>
        {
            // Each listed axis is cropped (centered, extra element dropped at the end) or zero-padded (centered, extra at the end).
            var x = c.Input(0);
            var target = Longs(c.Input(1));
            var axes = (c.Node.GetInts("axes") ?? Enumerable.Range(0, x.Dim).Select(a => (long)a).ToArray()).Select(a => Axis(c, a, x.Dim)).ToArray();
            if (axes.Length != target.Length) throw Invalid(c, $"shape has {target.Length} entries for {axes.Length} axes");
            var y = x;
            for (int i = 0; i < axes.Length; i++)
            {
                int ax = axes[i], have = y.Size(ax), want = checked((int)target[i]);
                if (want < have) y = y.Narrow(ax, (have - want) / 2, want);
                else if (want > have)
                {
                    int before = (want - have) / 2;
                    var beforeShape = y.Shape.ToArray(); beforeShape[ax] = before;
                    var afterShape = y.Shape.ToArray(); afterShape[ax] = want - have - before;
                    y = Tensor.Cat([Tensor.Zeros(beforeShape, y.DType), y, Tensor.Zeros(afterShape, y.DType)], ax);
                }
            }
            return One(y.Contiguous());
        }, since: 18);
        r.Add("Identity", c => One(c.Input(0)));
        r.Add("Dropout", c =>
        {
            var training = c.OptionalInput(2);
            if (training is not null && training.Item() != 0) throw Unsupported(c, "training_mode=true");
            if (c.Opset < 7 && c.Node.GetInt("is_test", 0) == 0) throw Unsupported(c, "is_test=0");
            var x = c.Input(0);
            return Outputs(c, x, Tensor.Ones(x.Shape, DType.Bool));
        });
        r.Add("Cast", c =>
        {
            var to = (int)c.Node.GetInt("to", 0);
            return One(c.Input(0).To(OnnxTypes.TryToDType(to) ?? throw Unsupported(c, $"target type {OnnxTypes.Name(to)}")));
        });
        r.Add("CastLike", c => One(c.Input(0).To(c.Input(1).DType)), since: 15);
        r.Add("BitCast", c =>
        {
            // Reinterprets each element's bytes as another type of the same width (bool reads any nonzero byte as true).
            var x = c.Input(0);
            var to = (int)c.Node.GetInt("to", 0);
            var dtype = OnnxTypes.TryToDType(to) ?? throw Unsupported(c, $"target type {OnnxTypes.Name(to)}");
            if (dtype.ElementSize() != x.DType.ElementSize())
                throw Invalid(c, $"cannot bit-cast {x.DType.TorchName()} ({x.DType.ElementSize() * 8} bits) to {OnnxTypes.Name(to)} ({dtype.ElementSize() * 8} bits): the widths differ");
            return One(Tensor.FromBytes(x.ToBytes(), dtype, x.Shape));
        }, since: 26);
        r.Add("Constant", c => One(Constant(c)));
        r.Add("ConstantOfShape", c =>
        {
            var shape = Ints(Longs(c.Input(0)));
            var value = c.Node.GetTensor("value");
            var dtype = value?.DType ?? DType.Float32;
            double v = value is null ? 0 : value.Reshape(-1).Item();
            return One(Tensor.Full(shape, v, dtype));
        });
        r.Add("Shape", c =>
        {
            var shape = c.Input(0).Shape;
            int rank = shape.Length;
            long start = c.Node.GetInt("start", 0), end = c.Node.GetInt("end", rank);
            int s = (int)Math.Clamp(start < 0 ? start + rank : start, 0, rank), e = (int)Math.Clamp(end < 0 ? end + rank : end, 0, rank);
            var dims = shape.Skip(s).Take(Math.Max(0, e - s)).Select(d => (long)d).ToArray();
            return One(Tensor.FromArray(dims, dims.Length));
        });
        r.Add("Size", c => One(Tensor.Scalar(c.Input(0).NumElements, DType.Int64)));
        r.Add("Reshape", c =>
        {
            var x = c.Input(0);
            var target = c.Opset < 5 ? c.Node.GetInts("shape") ?? [] : Longs(c.Input(1));
            bool allowZero = c.Node.GetInt("allowzero", 0) != 0;
            var shape = new int[target.Length];
            int infer = -1;
            long known = 1;
            for (int i = 0; i < shape.Length; i++)
            {
                long d = target[i];
                if (d == 0 && !allowZero)
                {
                    if (i >= x.Dim) throw Invalid(c, $"shape entry {i} is 0 but the input has rank {x.Dim}");
                    d = x.Size(i);
                }
                if (d == -1)
                {
                    if (infer >= 0) throw Invalid(c, "more than one -1 in the shape");
                    infer = i;
                    continue;
                }
                if (d < 0) throw Invalid(c, $"shape entry {i} is {d}");
                shape[i] = checked((int)d);
                known *= d;
            }
            if (infer >= 0)
            {
                if (known == 0 || x.NumElements % known != 0)
                    throw new ShapeMismatchException($"reshape: cannot infer -1 for {x.NumElements} elements into [{string.Join(", ", target)}]");
                shape[infer] = (int)(x.NumElements / known);
            }
            return One(x.Reshape(shape));
        });
        r.Add("Flatten", c =>
        {
            var x = c.Input(0);
            long a = c.Node.GetInt("axis", 1);
            // NOTE: Flatten's axis ranges over [-r, r]; a negative one counts from r.
            int axis = (int)(a < 0 ? a + x.Dim : a);
            if (axis < 0 || axis > x.Dim) throw Invalid(c, $"axis {a} is out of range for rank {x.Dim}");
            int outer = x.Shape.Take(axis).Aggregate(1, (p, d) => p * d);
            int inner = x.Shape.Skip(axis).Aggregate(1, (p, d) => p * d);
            return One(x.Reshape(outer, inner));
        });
        r.Add("Squeeze", c =>
        {
            var x = c.Input(0);
            var axes = AttrOrInput(c, "axes", 1, 13);
            var shape = x.Shape;
            var drop = axes is null ? Enumerable.Range(0, shape.Length).Where(i => shape[i] == 1).ToHashSet()
                : axes.Select(a => Axis(c, a, shape.Length)).ToHashSet();
            foreach (var d in drop)
                if (shape[d] != 1) throw new ShapeMismatchException($"squeeze: dimension {d} of [{string.Join(", ", shape)}] is {shape[d]}, not 1");
            return One(x.Reshape(shape.Where((_, i) => !drop.Contains(i)).ToArray()));
        });
        r.Add("Unsqueeze", c =>
        {
            var x = c.Input(0);
            var axes = AttrOrInput(c, "axes", 1, 13) ?? throw Invalid(c, "axes are missing");
            int rank = x.Dim + axes.Length;
            var insert = axes.Select(a => Axis(c, a, rank)).ToHashSet();
            if (insert.Count != axes.Length) throw Invalid(c, "repeated axes");
            var shape = new int[rank];
            int src = 0;
            for (int i = 0; i < rank; i++) shape[i] = insert.Contains(i) ? 1 : x.Size(src++);
            return One(x.Reshape(shape));
        });
        r.Add("Transpose", c =>
        {
            var x = c.Input(0);
            var perm = c.Node.GetInts("perm")?.Select(p => Axis(c, p, x.Dim)).ToArray() ?? Enumerable.Range(0, x.Dim).Reverse().ToArray();
            return One(x.Permute(perm).Contiguous());
        });
        r.Add("Concat", c =>
        {
            var parts = c.Inputs.Where(t => t is not null).Select(t => t!).ToList();
            int axis = Axis(c, c.Node.GetInt("axis", c.Opset < 4 ? 1 : long.MinValue) is var a && a == long.MinValue
                ? throw Invalid(c, "axis is missing") : a, parts[0].Dim);
            return One(Tensor.Cat(parts, axis));
        });
        r.Add("Split", c =>
        {
            var x = c.Input(0);
            int axis = Axis(c, c.Node.GetInt("axis", 0), x.Dim);
            var split = c.Opset < 13 ? c.Node.GetInts("split") ?? (c.OptionalInput(1) is { } s1 ? Longs(s1) : null) : c.OptionalInput(1) is { } s ? Longs(s) : null;
            int n = c.OutputCount, dim = x.Size(axis);
            int[] sizes;
            if (split is not null) sizes = Ints(split);
            else
            {
                if (c.Opset >= 18 && c.Node.GetIntOrNull("num_outputs") is long no) n = (int)no;
                int chunk = (dim + n - 1) / n;
                sizes = Enumerable.Range(0, n).Select(i => Math.Max(0, Math.Min(chunk, dim - i * chunk))).ToArray();
            }
            if (sizes.Sum() != dim) throw new ShapeMismatchException($"split: sizes [{string.Join(", ", sizes)}] do not add up to dimension {axis} of {dim}");
            var outs = new Tensor?[sizes.Length];
            int start = 0;
            for (int i = 0; i < sizes.Length; i++) { outs[i] = x.Narrow(axis, start, sizes[i]).Contiguous(); start += sizes[i]; }
            return outs;
        });
        r.Add("Slice", c => One(Slice(c)));
        r.Add("Expand", c =>
        {
            var x = c.Input(0);
            var shape = BroadcastShape(x.Shape, Ints(Longs(c.Input(1))));
            return One(x.Expand(shape).Contiguous());
        });
        r.Add("Tile", c =>
        {
            var x = c.Input(0);
            var reps = c.Opset < 6 ? throw Unsupported(c, "tiles/axis inputs") : Longs(c.Input(1));
            if (reps.Length != x.Dim) throw Invalid(c, $"{reps.Length} repeats for rank {x.Dim}");
            for (int d = 0; d < x.Dim; d++)
            {
                int size = x.Size(d), n = size * (int)reps[d];
                var idx = new long[n];
                for (int i = 0; i < n; i++) idx[i] = i % size;
                x = x.IndexSelect(d, Tensor.FromArray(idx, n));
            }
            return One(x);
        });
        r.Add("Pad", c => One(Pad(c)));
        r.Add("DepthToSpace", c =>
        {
            var x = c.Input(0);
            int b = (int)c.Node.GetInt("blocksize", 1);
            var s = x.Shape;
            int n = s[0], ch = s[1], h = s[2], w = s[3];
            bool crd = c.Node.GetString("mode", "DCR") == "CRD";
            var t = crd ? x.Reshape(n, ch / (b * b), b, b, h, w).Permute(0, 1, 4, 2, 5, 3)
                        : x.Reshape(n, b, b, ch / (b * b), h, w).Permute(0, 3, 4, 1, 5, 2);
            return One(t.Contiguous().Reshape(n, ch / (b * b), h * b, w * b));
        });
        r.Add("SpaceToDepth", c =>
        {
            var x = c.Input(0);
            int b = (int)c.Node.GetInt("blocksize", 1);
            var s = x.Shape;
            int n = s[0], ch = s[1], h = s[2], w = s[3];
            var t = x.Reshape(n, ch, h / b, b, w / b, b).Permute(0, 3, 5, 1, 2, 4);
            return One(t.Contiguous().Reshape(n, ch * b * b, h / b, w / b));
        });
    }

    static Tensor Constant(OpContext c)
    {
        var n = c.Node;
        if (n.GetTensor("value") is { } t) return t;
        if (n.Has("value_float")) return Tensor.Scalar(n.GetFloat("value_float", 0), DType.Float32);
        if (n.GetFloats("value_floats") is { } fs) return Tensor.FromArray(fs, fs.Length);
        if (n.GetIntOrNull("value_int") is long i) return Tensor.Scalar(i, DType.Int64);
        if (n.GetInts("value_ints") is { } ints) return Tensor.FromArray(ints, ints.Length);
        throw Unsupported(c, "value kind (" + string.Join(", ", n.Attributes.Keys) + ")");
    }

    /// <summary>ONNX Slice: per-axis starts/ends/steps with clamping; negative steps walk backwards.</summary>
    static Tensor Slice(OpContext c)
    {
        var x = c.Input(0);
        long[] starts, ends;
        long[]? axes, steps = null;
        if (c.Opset < 10)
        {
            starts = c.Node.GetInts("starts") ?? throw Invalid(c, "starts are missing");
            ends = c.Node.GetInts("ends") ?? throw Invalid(c, "ends are missing");
            axes = c.Node.GetInts("axes");
        }
        else
        {
            starts = Longs(c.Input(1));
            ends = Longs(c.Input(2));
            axes = c.OptionalInput(3) is { } a ? Longs(a) : null;
            steps = c.OptionalInput(4) is { } s ? Longs(s) : null;
        }
        axes ??= Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
        if (ends.Length != starts.Length || axes.Length != starts.Length || steps is not null && steps.Length != starts.Length)
            throw Invalid(c, "starts, ends, axes and steps differ in length");
        for (int i = 0; i < starts.Length; i++)
        {
            int axis = Axis(c, axes[i], x.Dim);
            long dim = x.Size(axis), step = steps?[i] ?? 1;
            if (step == 0) throw Invalid(c, "a step is 0");
            long st = starts[i], en = ends[i];
            if (st < 0) st += dim;
            if (en < 0) en += dim;
            if (step > 0)
            {
                st = Math.Clamp(st, 0, dim);
                en = Math.Clamp(en, 0, dim);
                if (step == 1) { x = x.Narrow(axis, (int)st, (int)Math.Max(0, en - st)); continue; }
            }
            else
            {
                st = Math.Clamp(st, 0, dim - 1);
                en = Math.Clamp(en, -1, dim - 1);
            }
            var idx = new List<long>();
            for (long k = st; step > 0 ? k < en : k > en; k += step) idx.Add(k);
            x = x.IndexSelect(axis, Tensor.FromArray(idx.ToArray(), idx.Count));
        }
        return x.Contiguous();
    }

    static Tensor Pad(OpContext c)
    {
        var x = c.Input(0);
        int rank = x.Dim;
        string mode = c.Node.GetString("mode", "constant");
        long[] pads;
        double value;
        if (c.Opset < 11)
        {
            pads = c.Node.GetInts(c.Opset < 2 ? "paddings" : "pads") ?? throw Invalid(c, "pads are missing");
            value = c.Node.GetFloat("value", 0);
        }
        else
        {
            pads = Longs(c.Input(1));
            value = c.OptionalInput(2) is { } v && v.NumElements > 0 ? v.Reshape(-1).Item() : 0;
        }
        var axes = c.OptionalInput(3) is { } ax && c.Opset >= 18 ? Longs(ax).Select(a => Axis(c, a, rank)).ToArray() : Enumerable.Range(0, rank).ToArray();
        if (pads.Length != 2 * axes.Length) throw Invalid(c, $"{pads.Length} pads for {axes.Length} axes");
        var begin = new long[rank];
        var end = new long[rank];
        for (int i = 0; i < axes.Length; i++) { begin[axes[i]] = pads[i]; end[axes[i]] = pads[i + axes.Length]; }

        if (mode == "constant")
        {
            // Crop negative pads, then fill the positive ones with the value.
            for (int d = 0; d < rank; d++)
            {
                long b = Math.Max(0, -begin[d]), e = Math.Max(0, -end[d]);
                if (b > 0 || e > 0) x = x.Narrow(d, (int)b, (int)Math.Max(0, x.Size(d) - b - e));
            }
            var outShape = x.Shape.Select((s, d) => s + (int)Math.Max(0, begin[d]) + (int)Math.Max(0, end[d])).ToArray();
            var result = Tensor.Full(outShape, value, x.DType);
            var view = result;
            for (int d = 0; d < rank; d++) view = view.Narrow(d, (int)Math.Max(0, begin[d]), x.Size(d));
            view.Copy_(x);
            return result;
        }
        for (int d = 0; d < rank; d++)
        {
            if (begin[d] == 0 && end[d] == 0) continue;
            int n = x.Size(d);
            int outLen = (int)(n + begin[d] + end[d]);
            var idx = new long[outLen];
            for (int o = 0; o < outLen; o++)
            {
                long s = o - begin[d];
                idx[o] = mode switch
                {
                    "edge" => Math.Clamp(s, 0, n - 1),
                    "wrap" => ((s % n) + n) % n,
                    "reflect" => Reflect(s, n),
                    _ => throw Unsupported(c, $"mode '{mode}'"),
                };
            }
            x = x.IndexSelect(d, Tensor.FromArray(idx, outLen));
        }
        return x;
    }

    static long Reflect(long s, long n)
    {
        if (n == 1) return 0;
        long period = 2 * (n - 1);
        s = ((s % period) + period) % period;
        return s < n ? s : period - s;
    }
}
