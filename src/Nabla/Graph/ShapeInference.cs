using System.Globalization;

namespace Nabla.Graph;

/// <summary>
/// Propagates element types and (possibly symbolic) shapes through a graph of ONNX operators. A symbolic size is
/// linear in one symbol: "batch", "4*batch", "4*batch+1" (<see cref="SymbolicDim.Name"/>), so reshapes and
/// concatenations of batch-sized values stay exact. Small int64 vectors (shape constants, Shape → Gather → Mul →
/// Concat chains) are evaluated symbolically, so a Reshape to a runtime-computed shape still gets its shape.
/// </summary>
/// <remarks>
/// Operators it does not know give values of unknown shape (null) rather than failing. A contradiction (operands
/// that cannot broadcast, a MatMul whose inner sizes differ, a Reshape that changes the element count, a declared
/// output shape that disagrees with the inferred one) throws <see cref="ShapeMismatchException"/> naming the node.
/// </remarks>
public static class ShapeInference
{
    /// <summary>A size c + k·symbol (k = 0 for a fixed size); null symbol with k ≠ 0 never occurs.</summary>
    readonly record struct Lin(long C, long K, string? Sym)
    {
        public bool IsFixed => K == 0;
        public static Lin Of(long c) => new(c, 0, null);

        public static Lin? From(SymbolicDim d)
        {
            if (d.Value is long v) return Of(v);
            if (d.Name is not { Length: > 0 } name) return null;
            // "k*sym+c", "k*sym", "sym"
            long c = 0, k = 1;
            var s = name;
            int plus = s.LastIndexOf('+');
            if (plus > 0 && long.TryParse(s[(plus + 1)..], NumberStyles.Integer, CultureInfo.InvariantCulture, out var cc)) { c = cc; s = s[..plus]; }
            int star = s.IndexOf('*');
            if (star > 0 && long.TryParse(s[..star], NumberStyles.Integer, CultureInfo.InvariantCulture, out var kk)) { k = kk; s = s[(star + 1)..]; }
            return new Lin(c, k, s);
        }

        public SymbolicDim ToDim() => IsFixed ? SymbolicDim.Fixed(C)
            : SymbolicDim.Symbol((K == 1 ? Sym : $"{K}*{Sym}") + (C == 0 ? "" : $"+{C}"));

        public static Lin? Add(Lin a, Lin b) =>
            a.IsFixed ? b with { C = b.C + a.C } : b.IsFixed ? a with { C = a.C + b.C } : a.Sym == b.Sym ? new Lin(a.C + b.C, a.K + b.K, a.Sym) : null;

        public static Lin? Mul(Lin a, Lin b) =>
            a.IsFixed ? (a.C == 0 ? Of(0) : new Lin(b.C * a.C, b.K * a.C, b.K * a.C == 0 ? null : b.Sym))
            : b.IsFixed ? Mul(b, a) : null;

        /// <summary>a / b when it is exact and linear.</summary>
        public static Lin? Div(Lin a, Lin b)
        {
            if (b.IsFixed && b.C != 0 && a.C % b.C == 0 && a.K % b.C == 0) return new Lin(a.C / b.C, a.K / b.C, a.K == 0 ? null : a.Sym);
            if (!b.IsFixed && a.Sym == b.Sym && b.C == 0 && a.C == 0 && a.K % b.K == 0) return Of(a.K / b.K);
            return null;
        }
    }

    /// <summary>Infers every value of <paramref name="graph"/>: inputs, initializers and node outputs.</summary>
    public static Dictionary<string, ValueInfo> Infer(Graph graph)
    {
        var info = new Dictionary<string, ValueInfo>();
        var vectors = new Dictionary<string, Lin?[]>();   // int64 vectors whose values are known (possibly symbolically)
        foreach (var vi in graph.Inputs) info[vi.Name] = vi;
        foreach (var (name, t) in graph.Initializers)
        {
            info[name] = new ValueInfo(name, t.DType, t.Shape.Select(d => SymbolicDim.Fixed(d)).ToArray());
            if (t.DType == DType.Int64 && t.Dim <= 1 && t.NumElements <= 64)
                vectors[name] = t.ToArray<long>().Select(v => (Lin?)Lin.Of(v)).ToArray();
        }
        foreach (var node in graph.Nodes)
        {
            var ins = node.Inputs.Select(n => n.Length > 0 && info.TryGetValue(n, out var v) ? v : null).ToArray();
            var (dtype, shape) = InferNode(node, ins, vectors);
            for (int i = 0; i < node.Outputs.Length; i++)
                if (node.Outputs[i].Length > 0) info[node.Outputs[i]] = new ValueInfo(node.Outputs[i], i == 0 ? dtype : null, i == 0 ? shape : null);
        }
        foreach (var o in graph.Outputs)
        {
            if (!info.TryGetValue(o.Name, out var inferred) || o.Shape is null || inferred.Shape is null) continue;
            if (o.Shape.Length != inferred.Shape.Length)
                throw new ShapeMismatchException($"shape inference: graph output '{o.Name}' is declared with rank {o.Shape.Length} but computes rank {inferred.Shape.Length} ({Format(inferred.Shape)})");
            for (int i = 0; i < o.Shape.Length; i++)
                if (o.Shape[i].Value is long a && inferred.Shape[i].Value is long b && a != b)
                    throw new ShapeMismatchException($"shape inference: graph output '{o.Name}' is declared {Format(o.Shape)} but computes {Format(inferred.Shape)} (dimension {i})");
            if (o.DType is { } d && inferred.DType is { } e && d != e)
                throw new ShapeMismatchException($"shape inference: graph output '{o.Name}' is declared {d} but computes {e}");
        }
        return info;
    }

    /// <summary>The size of a dimension once its symbol is bound ("4*batch+1" with batch = 3 is 13); null when unknown.</summary>
    public static long? Evaluate(SymbolicDim d, IReadOnlyDictionary<string, long> symbols) =>
        Lin.From(d) is Lin l ? (l.IsFixed ? l.C : l.Sym is { } s && symbols.TryGetValue(s, out var v) ? l.C + l.K * v : null) : null;

    public static string Format(SymbolicDim[]? shape) => shape is null ? "(unknown)" : "[" + string.Join(", ", shape) + "]";

    static ShapeMismatchException Error(Node node, string message) => new($"shape inference: {node.Describe()}: {message}");

    static (DType?, SymbolicDim[]?) InferNode(Node node, ValueInfo?[] ins, Dictionary<string, Lin?[]> vectors)
    {
        var x = ins.Length > 0 ? ins[0] : null;
        var xs = x?.Shape;
        DType? dt = x?.DType;
        string Out() => node.Outputs[0];
        switch (node.OpType)
        {
            case "Identity" or "Neg" or "Exp" or "Log" or "Sqrt" or "Abs" or "Sin" or "Cos" or "Tanh" or "Sigmoid" or "Relu" or "Erf"
                or "Floor" or "Ceil" or "Round" or "Reciprocal" or "Softmax" or "LogSoftmax" or "LeakyRelu" or "Elu" or "Softplus"
                or "BatchNormalization" or "LayerNormalization" or "Dropout" or "CumSum" or "Gelu":
                if (node.OpType == "Identity" && x is not null && vectors.TryGetValue(node.Inputs[0], out var iv)) vectors[Out()] = iv;
                return (dt, xs);
            case "Cast":
                return (OnnxDType(node.GetInt("to", 1)), xs);
            case "Add" or "Sub" or "Mul" or "Div" or "Pow" or "Max" or "Min":
            {
                var shape = xs;
                for (int i = 1; i < ins.Length; i++) shape = Broadcast(node, shape, ins[i]?.Shape);
                if (node.OpType is "Add" or "Mul" && ins.Length == 2 && vectors.TryGetValue(node.Inputs[0], out var a) && vectors.TryGetValue(node.Inputs[1], out var b))
                {
                    int n = Math.Max(a.Length, b.Length);
                    if (a.Length == n && b.Length == n || a.Length == 1 || b.Length == 1)
                        vectors[Out()] = Enumerable.Range(0, n).Select(i =>
                        {
                            var (p, q) = (a[a.Length == 1 ? 0 : i], b[b.Length == 1 ? 0 : i]);
                            return p is Lin lp && q is Lin lq ? (node.OpType == "Add" ? Lin.Add(lp, lq) : Lin.Mul(lp, lq)) : null;
                        }).ToArray();
                }
                return (dt, shape);
            }
            case "MatMul":
                return (dt, MatMul(node, xs, ins.Length > 1 ? ins[1]?.Shape : null));
            case "Shape":
            {
                if (xs is null) return (DType.Int64, null);
                // Opset 15: the dims [start, end), negative counted from the end, clamped.
                long r = xs.Length, start = node.GetInt("start", 0), end = node.GetIntOrNull("end") ?? r;
                start = Math.Clamp(start < 0 ? start + r : start, 0, r);
                end = Math.Clamp(end < 0 ? end + r : end, 0, r);
                var dims = xs[(int)start..(int)Math.Max(start, end)];
                vectors[Out()] = dims.Select(Lin.From).ToArray();
                return (DType.Int64, [SymbolicDim.Fixed(dims.Length)]);
            }
            case "Gather":
            {
                var idx = ins.Length > 1 ? ins[1] : null;
                if (xs is null || idx?.Shape is null) return (dt, null);
                int axis = Axis(node, node.GetInt("axis", 0), xs.Length);
                if (xs.Length == 1 && vectors.TryGetValue(node.Inputs[0], out var data) && vectors.TryGetValue(node.Inputs[1], out var which))
                    vectors[Out()] = which.Select(w => w is { IsFixed: true } l && l.C >= -data.Length && l.C < data.Length ? data[(int)(l.C < 0 ? l.C + data.Length : l.C)] : null).ToArray();
                return (dt, [.. xs[..axis], .. idx.Shape, .. xs[(axis + 1)..]]);
            }
            case "Concat":
            {
                if (ins.Any(i => i?.Shape is null)) return (dt, null);
                int rank = xs!.Length;
                int axis = Axis(node, node.GetInt("axis", 0), rank);
                var r = (SymbolicDim[])xs.Clone();
                Lin? total = Lin.Of(0);
                foreach (var i in ins)
                {
                    if (i!.Shape!.Length != rank) throw Error(node, $"inputs of rank {rank} and {i.Shape.Length} cannot be concatenated");
                    for (int d = 0; d < rank; d++)
                        if (d != axis && i.Shape[d].Value is long p && r[d].Value is long q && p != q)
                            throw Error(node, $"inputs {Format(xs)} and {Format(i.Shape)} differ in dimension {d}, not only the concatenation axis {axis}");
                    total = total is Lin t && Lin.From(i.Shape[axis]) is Lin l ? Lin.Add(t, l) : null;
                }
                r[axis] = total?.ToDim() ?? SymbolicDim.Symbol(null);
                if (rank == 1 && node.Inputs.All(vectors.ContainsKey)) vectors[Out()] = node.Inputs.SelectMany(n => vectors[n]).ToArray();
                return (dt, r);
            }
            case "Reshape":
            {
                if (!vectors.TryGetValue(node.Inputs[1], out var target)) return (dt, null);
                var r = new SymbolicDim[target.Length];
                int infer = -1;
                Lin? known = Lin.Of(1);
                for (int i = 0; i < target.Length; i++)
                {
                    var t = target[i];
                    if (t is { IsFixed: true, C: -1 }) { infer = i; continue; }
                    if (t is { IsFixed: true, C: 0 } && node.GetInt("allowzero", 0) == 0) t = xs is not null && i < xs.Length ? Lin.From(xs[i]) : null;
                    r[i] = t?.ToDim() ?? SymbolicDim.Symbol(null);
                    known = known is Lin k && t is Lin tl ? Lin.Mul(k, tl) : null;
                }
                var numel = Numel(xs);
                if (infer >= 0) r[infer] = numel is Lin n && known is Lin k2 ? Lin.Div(n, k2)?.ToDim() ?? SymbolicDim.Symbol(null) : SymbolicDim.Symbol(null);
                else if (numel is Lin n2 && known is Lin k3 && n2 != k3 && n2.IsFixed == k3.IsFixed)
                    throw Error(node, $"cannot reshape {Format(xs)} to {Format(r)}: the element counts differ");
                return (dt, r);
            }
            case "Expand":
            {
                if (!vectors.TryGetValue(node.Inputs[1], out var target)) return (dt, null);
                var ts = target.Select(t => t?.ToDim() ?? SymbolicDim.Symbol(null)).ToArray();
                return (dt, Broadcast(node, xs, ts));
            }
            case "Transpose":
            {
                if (xs is null) return (dt, null);
                var perm = node.GetInts("perm") ?? Enumerable.Range(0, xs.Length).Reverse().Select(i => (long)i).ToArray();
                if (perm.Length != xs.Length || perm.Any(p => p < 0 || p >= xs.Length))
                    throw Error(node, $"perm [{string.Join(", ", perm)}] does not fit the input {Format(xs)}");
                return (dt, perm.Select(p => xs[p]).ToArray());
            }
            case "Slice":
            {
                if (xs is null) return (dt, null);
                var r = (SymbolicDim[])xs.Clone();
                if (!vectors.TryGetValue(node.Inputs[1], out var starts) || !vectors.TryGetValue(node.Inputs[2], out var ends)) return (dt, null);
                var axes = node.Inputs.Length > 3 && node.Inputs[3].Length > 0 ? (vectors.TryGetValue(node.Inputs[3], out var a) ? a : null) : Enumerable.Range(0, starts.Length).Select(i => (Lin?)Lin.Of(i)).ToArray();
                var steps = node.Inputs.Length > 4 && node.Inputs[4].Length > 0 ? (vectors.TryGetValue(node.Inputs[4], out var s) ? s : null) : starts.Select(_ => (Lin?)Lin.Of(1)).ToArray();
                if (axes is null || steps is null) return (dt, null);
                for (int i = 0; i < starts.Length; i++)
                {
                    if (axes[i] is not { IsFixed: true } ax) return (dt, null);
                    int d = Axis(node, ax.C, xs.Length);
                    if (xs[d].Value is long n && starts[i] is { IsFixed: true } st && ends[i] is { IsFixed: true } en && steps[i] is { IsFixed: true, C: > 0 } sp)
                    {
                        long b = Math.Clamp(st.C < 0 ? st.C + n : st.C, 0, n), e = Math.Clamp(en.C < 0 ? en.C + n : en.C, 0, n);
                        r[d] = SymbolicDim.Fixed(Math.Max(0, (e - b + sp.C - 1) / sp.C));
                    }
                    else if (starts[i] is { IsFixed: true, C: 0 } && steps[i] is { IsFixed: true, C: 1 } && ends[i] is Lin e2 && Lin.From(xs[d]) is Lin full && (e2 == full || e2 is { IsFixed: true, C: long.MaxValue })) { }
                    else r[d] = SymbolicDim.Symbol(null);
                }
                return (dt, r);
            }
            case "ReduceSum" or "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceMean":
            {
                if (xs is null) return (dt, null);
                long[]? axes = node.GetInts("axes");
                if (axes is null && node.Inputs.Length > 1 && node.Inputs[1].Length > 0)
                {
                    if (!vectors.TryGetValue(node.Inputs[1], out var av) || av.Any(v => v is not { IsFixed: true })) return (dt, null);
                    axes = av.Select(v => v!.Value.C).ToArray();
                }
                var set = (axes ?? Enumerable.Range(0, xs.Length).Select(i => (long)i).ToArray()).Select(a => Axis(node, a, xs.Length)).ToHashSet();
                bool keep = node.GetInt("keepdims", 1) != 0;
                var r = new List<SymbolicDim>();
                for (int i = 0; i < xs.Length; i++)
                    if (!set.Contains(i)) r.Add(xs[i]);
                    else if (keep) r.Add(SymbolicDim.Fixed(1));
                return (dt, r.ToArray());
            }
            case "Conv" or "MaxPool" or "AveragePool":
                return (dt, Window(node, xs, node.OpType == "Conv" && ins.Length > 1 ? ins[1]?.Shape : null));
            case "Flatten":
            {
                if (xs is null) return (dt, null);
                long a0 = node.GetInt("axis", 1);
                if (a0 < 0) a0 += xs.Length;
                if (a0 < 0 || a0 > xs.Length) throw Error(node, $"axis {node.GetInt("axis", 1)} is out of range for rank {xs.Length}");
                int axis = (int)a0;
                var a = Numel(xs[..axis]);
                var b = Numel(xs[axis..]);
                return (dt, [a?.ToDim() ?? SymbolicDim.Symbol(null), b?.ToDim() ?? SymbolicDim.Symbol(null)]);
            }
            case "Gemm":
            {
                var bs = ins.Length > 1 ? ins[1]?.Shape : null;
                if (xs is not { Length: 2 } || bs is not { Length: 2 }) return (dt, null);
                var m = node.GetInt("transA", 0) != 0 ? xs[1] : xs[0];
                var n = node.GetInt("transB", 0) != 0 ? bs[0] : bs[1];
                return (dt, [m, n]);
            }
            case "GlobalAveragePool":
                return (dt, xs is null ? null : [.. xs[..2], .. xs[2..].Select(_ => SymbolicDim.Fixed(1))]);
            default:
                return (null, null);
        }
    }

    static int Axis(Node node, long axis, int rank)
    {
        long a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= rank) throw Error(node, $"axis {axis} is out of range for rank {rank}");
        return (int)a;
    }

    static Lin? Numel(SymbolicDim[]? shape)
    {
        if (shape is null) return null;
        Lin? n = Lin.Of(1);
        foreach (var d in shape) n = n is Lin a && Lin.From(d) is Lin b ? Lin.Mul(a, b) : null;
        return n;
    }

    static SymbolicDim[]? Broadcast(Node node, SymbolicDim[]? a, SymbolicDim[]? b)
    {
        if (a is null || b is null) return null;
        int n = Math.Max(a.Length, b.Length);
        var r = new SymbolicDim[n];
        for (int i = 0; i < n; i++)
        {
            var p = i - (n - a.Length) >= 0 ? a[i - (n - a.Length)] : SymbolicDim.Fixed(1);
            var q = i - (n - b.Length) >= 0 ? b[i - (n - b.Length)] : SymbolicDim.Fixed(1);
            if (p.Value == 1) r[i] = q;
            else if (q.Value == 1) r[i] = p;
            else if (p.Value is long x && q.Value is long y)
                r[i] = x == y ? p : throw Error(node, $"shapes {Format(a)} and {Format(b)} cannot broadcast (dimension {i}: {x} vs {y})");
            else if (p.Value is not null) r[i] = p;
            else if (q.Value is not null) r[i] = q;
            else r[i] = p.Name == q.Name ? p : SymbolicDim.Symbol(null);
        }
        return r;
    }

    static SymbolicDim[]? MatMul(Node node, SymbolicDim[]? a, SymbolicDim[]? b)
    {
        if (a is null || b is null) return null;
        if (a.Length == 0 || b.Length == 0) throw Error(node, "MatMul needs inputs of rank 1 or more");
        var a2 = a.Length == 1 ? [SymbolicDim.Fixed(1), a[0]] : a;
        var b2 = b.Length == 1 ? [b[0], SymbolicDim.Fixed(1)] : b;
        if (a2[^1].Value is long k1 && b2[^2].Value is long k2 && k1 != k2)
            throw Error(node, $"inner dimensions differ: {Format(a)} · {Format(b)} ({k1} vs {k2})");
        var batch = Broadcast(node, a2[..^2], b2[..^2])!;
        var r = new List<SymbolicDim>(batch);
        if (a.Length > 1) r.Add(a2[^2]);
        if (b.Length > 1) r.Add(b2[^1]);
        return r.ToArray();
    }

    /// <summary>Conv / pooling: [N, C, spatial...] with floor((size + pads − dilation·(kernel−1) − 1) / stride) + 1.</summary>
    static SymbolicDim[]? Window(Node node, SymbolicDim[]? x, SymbolicDim[]? w)
    {
        if (x is null || x.Length < 3) return null;
        int sp = x.Length - 2;
        var kernel = node.GetInts("kernel_shape") ?? w?[2..].Select(d => d.Value ?? -1).ToArray();
        if (kernel is null || kernel.Length != sp || kernel.Any(k => k < 0)) return null;
        var strides = node.GetInts("strides") ?? Enumerable.Repeat(1L, sp).ToArray();
        var dil = node.GetInts("dilations") ?? Enumerable.Repeat(1L, sp).ToArray();
        var pads = node.GetInts("pads") ?? new long[2 * sp];
        bool ceil = node.GetInt("ceil_mode", 0) != 0;
        if (node.GetString("auto_pad", "NOTSET") != "NOTSET") return null;
        if (w is not null && x[1].Value is long c && w[1].Value is long wc && c != wc * node.GetInt("group", 1))
            throw Error(node, $"input {Format(x)} has {c} channels, the weight {Format(w)} with group {node.GetInt("group", 1)} expects {wc * node.GetInt("group", 1)}");
        var r = new SymbolicDim[x.Length];
        r[0] = x[0];
        r[1] = w is not null ? w[0] : x[1];
        for (int i = 0; i < sp; i++)
        {
            if (x[2 + i].Value is not long size) { r[2 + i] = SymbolicDim.Symbol(null); continue; }
            long num = size + pads[i] + pads[sp + i] - dil[i] * (kernel[i] - 1) - 1;
            long o = (ceil ? (num + strides[i] - 1) / strides[i] : num / strides[i]) + 1;
            if (ceil && (o - 1) * strides[i] >= size + pads[i]) o--;
            if (o <= 0) throw Error(node, $"the window {kernel[i]} does not fit the padded input size {size + pads[i] + pads[sp + i]} of dimension {2 + i}");
            r[2 + i] = SymbolicDim.Fixed(o);
        }
        return r;
    }

    static DType? OnnxDType(long code) => code switch
    {
        1 => DType.Float32, 2 => DType.UInt8, 3 => DType.Int8, 6 => DType.Int32, 7 => DType.Int64, 9 => DType.Bool,
        10 => DType.Float16, 11 => DType.Float64, 16 => DType.BFloat16,
        4 => DType.UInt16, 5 => DType.Int16, 12 => DType.UInt32, 13 => DType.UInt64, _ => null,
    };
}
