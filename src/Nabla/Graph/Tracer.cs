using Nabla.NN;

namespace Nabla.Graph;

/// <summary>The tracer met an operation it cannot put into the graph, or the traced graph is not faithful.</summary>
public sealed class TraceException(string message) : NablaException(message);

/// <summary>Options of <see cref="Tracer.Trace(Func{Tensor[], Tensor[]}, Tensor[], TraceOptions?)"/>.</summary>
public sealed record TraceOptions
{
    /// <summary>Graph input names, one per example input ("input" / "input_i" when null).</summary>
    public string[]? InputNames { get; init; }

    /// <summary>Graph output names ("output" / "output_i" when null).</summary>
    public string[]? OutputNames { get; init; }

    /// <summary>
    /// Input index → axis that is the symbolic dimension <see cref="BatchSymbol"/>. Every listed axis must have the
    /// same size in the examples. Null or empty: a static graph.
    /// </summary>
    public IReadOnlyDictionary<int, int>? DynamicAxes { get; init; }

    /// <summary>The name of the symbolic dimension.</summary>
    public string BatchSymbol { get; init; } = "batch";

    /// <summary>Tensors (by reference) that become initializers under the given name: parameters and buffers.</summary>
    public IReadOnlyDictionary<Tensor, string>? Parameters { get; init; }

    /// <summary>
    /// When set, the finished graph is replayed with this resolver on the example inputs (and at a second batch size)
    /// and must reproduce the eager outputs to <see cref="VerifyTolerance"/>, or the trace throws.
    /// </summary>
    public IOpResolver? VerifyWith { get; init; }

    /// <summary>max |graph − eager| / max(1, |eager|) accepted by the verification.</summary>
    public double VerifyTolerance { get; init; } = 1e-4;
}

/// <summary>
/// Records the primitive ops a function executes on example inputs into a <see cref="Graph"/> of ONNX (opset 17)
/// operators. Every primitive calls <c>Tensor.Record</c>; while a trace is active that call is forwarded here and
/// becomes a node. Composite functions that have no primitive form in ONNX (convolution, pooling, embedding) are
/// recorded as one node by hooks in <see cref="Functional"/>. Tensors that enter the computation without being
/// produced by a recorded op become initializers (parameters under their names, other tensors as constants).
/// </summary>
/// <remarks>
/// With dynamic axes the function is traced twice, at batch b = max(B, 2) and b+1 (B is the example's; the inputs
/// grow along the dynamic axis by repeating elements in front), because at size 1 some ops record nothing. The two graphs must have the same nodes;
/// integer shape constants (Reshape, Expand, Slice) that differ must be k·B and become expressions of the input's
/// runtime shape; constants that differ must be uniform (a Full/Ones/Zeros of batch-dependent shape) and become an
/// Expand of a scalar. Anything else that differs throws <see cref="TraceException"/> naming the consuming node.
/// </remarks>
public static class Tracer
{
    [ThreadStatic] static TraceSession? active;

    /// <summary>The session that records on this thread, or null (no trace, or inside a composite op).</summary>
    internal static TraceSession? Active => active;

    /// <summary>Whether a trace is recording on this thread.</summary>
    public static bool IsTracing => active is not null;

    /// <summary>Called by Tensor.Record for every primitive.</summary>
    internal static void OnRecord(Tensor result, string op, Tensor[] inputs) => active?.Primitive(result, op, inputs);

    /// <summary>Traces <paramref name="module"/>'s Forward on one example input (eval mode; modes restored after).</summary>
    public static Graph Trace(Module module, Tensor exampleInput, TraceOptions? options = null) =>
        Trace(module, xs => [module.Forward(xs[0])], [exampleInput], options);

    /// <summary>
    /// Traces <paramref name="fn"/> with <paramref name="module"/>'s parameters and buffers as initializers named by
    /// their state-dict keys. The module is in eval mode during the trace and each module's mode is restored after.
    /// </summary>
    public static Graph Trace(Module module, Func<Tensor[], Tensor[]> fn, Tensor[] exampleInputs, TraceOptions? options = null)
    {
        var parameters = new Dictionary<Tensor, string>(ReferenceEqualityComparer.Instance);
        if (options?.Parameters is { } extra) foreach (var (t, n) in extra) parameters.TryAdd(t, n);
        // NOTE: StateDict() hands out detached copies; the tensors the forward pass reads are these.
        foreach (var (name, t) in module.NamedParameters()) parameters.TryAdd(t, name);
        foreach (var (name, t) in module.NamedBuffers()) parameters.TryAdd(t, name);
        var modes = module.NamedModules().Select(m => (m.module, m.module.Training)).ToList();
        module.Eval();
        try
        {
            var g = Trace(fn, exampleInputs, (options ?? new TraceOptions()) with { Parameters = parameters });
            return g;
        }
        finally
        {
            foreach (var (m, training) in modes) m.Train(training);
        }
    }

    /// <summary>Traces <paramref name="fn"/> on <paramref name="exampleInputs"/> into a graph (see the class remarks).</summary>
    public static Graph Trace(Func<Tensor[], Tensor[]> fn, Tensor[] exampleInputs, TraceOptions? options = null)
    {
        options ??= new TraceOptions();
        if (active is not null) throw new TraceException("trace: a trace is already running on this thread");
        if (exampleInputs.Length == 0) throw new TraceException("trace: at least one example input is needed");
        if (options.InputNames is { } names && names.Length != exampleInputs.Length)
            throw new TraceException($"trace: {names.Length} input names for {exampleInputs.Length} inputs");
        var dynamic = options.DynamicAxes ?? new Dictionary<int, int>();
        int batch = -1;
        foreach (var (i, axis) in dynamic)
        {
            if (i < 0 || i >= exampleInputs.Length) throw new TraceException($"trace: dynamic axis given for input {i}, but there are {exampleInputs.Length} inputs");
            var x = exampleInputs[i];
            if (axis < 0 || axis >= x.Dim) throw new TraceException($"trace: input {i} has rank {x.Dim}, so axis {axis} cannot be dynamic");
            if (batch >= 0 && x.Size(axis) != batch)
                throw new TraceException($"trace: dynamic axes must have one size; input {i} axis {axis} is {x.Size(axis)}, another is {batch}");
            batch = x.Size(axis);
        }
        if (batch == 0) throw new TraceException("trace: a dynamic axis has size 0 in the example");

        var first = Run(fn, exampleInputs, options, out var eager1);
        if (dynamic.Count == 0)
        {
            var g = first.ToGraph(options, null, batch);
            if (options.VerifyWith is { } r) Verify(g, r, exampleInputs, eager1, options.VerifyTolerance, "the example inputs");
            return g;
        }
        // NOTE: at size 1 many ops are no-ops that record nothing (an Expand or Reshape to the same shape), so the two
        // traces are taken at sizes b ≥ 2 and b + 1; the example itself is then checked by the verification.
        int b1 = Math.Max(batch, 2);
        var at1 = b1 == batch ? exampleInputs : Grow(exampleInputs, dynamic, b1);
        var at2 = Grow(exampleInputs, dynamic, b1 + 1);
        var traced = b1 == batch ? first : Run(fn, at1, options, out _);
        var other = Run(fn, at2, options, out var eager2);
        var graph = traced.ToGraph(options, other, b1);
        if (options.VerifyWith is { } resolver)
        {
            Verify(graph, resolver, exampleInputs, eager1, options.VerifyTolerance, $"the example inputs ({options.BatchSymbol} {batch})");
            Verify(graph, resolver, at2, eager2, options.VerifyTolerance, $"{options.BatchSymbol} {b1 + 1}");
        }
        return graph;
    }

    /// <summary>The inputs with their dynamic axes grown to <paramref name="size"/> by putting earlier elements in front again.</summary>
    static Tensor[] Grow(Tensor[] inputs, IReadOnlyDictionary<int, int> dynamic, int size)
    {
        using var _ = Suspend();
        return inputs.Select((x, i) =>
        {
            if (!dynamic.TryGetValue(i, out var axis)) return x;
            var y = x;
            while (y.Size(axis) < size) y = Tensor.Cat([x.Narrow(axis, x.Size(axis) - 1, 1), y], axis);
            return y.Contiguous();
        }).ToArray();
    }

    static TraceSession Run(Func<Tensor[], Tensor[]> fn, Tensor[] inputs, TraceOptions options, out Tensor[] outputs)
    {
        var session = new TraceSession(options.Parameters);
        for (int i = 0; i < inputs.Length; i++)
            session.AddInput(options.InputNames?[i] ?? (inputs.Length == 1 ? "input" : $"input_{i}"), inputs[i]);
        using (GradMode.NoGrad())
        {
            active = session;
            try { outputs = fn(inputs); }
            finally { active = null; }
        }
        if (outputs.Length == 0) throw new TraceException("trace: the function returned no outputs");
        for (int i = 0; i < outputs.Length; i++)
            session.AddOutput(options.OutputNames?[i] ?? (outputs.Length == 1 ? "output" : $"output_{i}"), outputs[i]);
        return session;
    }

    /// <summary>Runs the graph with <paramref name="resolver"/> and compares with the eager outputs.</summary>
    public static void Verify(Graph graph, IOpResolver resolver, Tensor[] inputs, Tensor[] expected, double tolerance, string what)
    {
        var outs = new GraphExecutor(graph, resolver).Run(inputs);
        for (int i = 0; i < expected.Length; i++)
        {
            var e = expected[i];
            var a = outs[i];
            if (!e.Shape.SequenceEqual(a.Shape))
                throw new TraceException($"trace: replaying the graph at {what} gives output '{graph.Outputs[i].Name}' shape [{string.Join(", ", a.Shape)}], eager gives [{string.Join(", ", e.Shape)}]");
            double[] ev, av;
            using (Suspend())
            {
                ev = e.To(DType.Float64).ToArray<double>();
                av = a.To(DType.Float64).ToArray<double>();
            }
            for (int k = 0; k < ev.Length; k++)
            {
                double diff = Math.Abs(ev[k] - av[k]) / Math.Max(1, Math.Abs(ev[k]));
                if (!(diff <= tolerance) && !(double.IsNaN(ev[k]) && double.IsNaN(av[k])) && ev[k] != av[k])
                    throw new TraceException($"trace: replaying the graph at {what} gives output '{graph.Outputs[i].Name}' element {k} = {av[k]}, eager gives {ev[k]}; "
                        + "an operation the tracer does not see (an index or mask computed outside the recorded ops, an in-place write) changed the result");
            }
        }
    }

    /// <summary>Stops recording on this thread until disposed (for work the tracer does itself, and composite ops).</summary>
    internal static SuspendScope Suspend()
    {
        var s = new SuspendScope(active);
        active = null;
        return s;
    }

    internal readonly struct SuspendScope(TraceSession? saved) : IDisposable
    {
        public void Dispose() => active = saved;
    }

    // ---------- composite ops, called from Functional while a trace is active ----------

    internal static Tensor Conv2d(TraceSession s, Tensor x, Tensor weight, Tensor? bias, (int h, int w) stride, (int h, int w) padding,
        (int h, int w) dilation, int groups, string? paddingMode)
    {
        Tensor y;
        using (Suspend()) y = Functional.Conv2d(x, weight, bias, stride, padding, dilation, groups, paddingMode);
        int kh = weight.Size(2), kw = weight.Size(3);
        long[] pads = [padding.h, padding.w, padding.h, padding.w];
        if (paddingMode == "valid") pads = [0, 0, 0, 0];
        else if (paddingMode == "same")
        {
            int th = dilation.h * (kh - 1), tw = dilation.w * (kw - 1);
            pads = [th / 2, tw / 2, th - th / 2, tw - tw / 2];
        }
        s.Node("Conv", bias is null ? [x, weight] : [x, weight, bias], y,
            TraceSession.Ints("kernel_shape", kh, kw), TraceSession.Ints("strides", stride.h, stride.w), TraceSession.Ints("pads", pads),
            TraceSession.Ints("dilations", dilation.h, dilation.w), TraceSession.Int("group", groups));
        return y;
    }

    internal static Tensor ConvTranspose2d(TraceSession s, Tensor x, Tensor weight, Tensor? bias, (int h, int w) stride, (int h, int w) padding,
        (int h, int w) outputPadding, int groups, (int h, int w) dilation)
    {
        Tensor y;
        using (Suspend()) y = Functional.ConvTranspose2d(x, weight, bias, stride, padding, outputPadding, groups, dilation);
        s.Node("ConvTranspose", bias is null ? [x, weight] : [x, weight, bias], y,
            TraceSession.Ints("kernel_shape", weight.Size(2), weight.Size(3)), TraceSession.Ints("strides", stride.h, stride.w),
            TraceSession.Ints("pads", padding.h, padding.w, padding.h, padding.w), TraceSession.Ints("output_padding", outputPadding.h, outputPadding.w),
            TraceSession.Ints("dilations", dilation.h, dilation.w), TraceSession.Int("group", groups));
        return y;
    }

    internal static Tensor Pad(TraceSession s, Tensor x, int[] pads, string mode, double value)
    {
        Tensor y;
        using (Suspend()) y = Functional.Pad(x, pads, mode, value);
        // Nabla lists (begin, end) from the last dim backwards; ONNX lists every dim's begin, then every dim's end.
        var onnx = new long[2 * x.Dim];
        for (int i = 0; i < pads.Length / 2; i++)
        {
            int d = x.Dim - 1 - i;
            (onnx[d], onnx[x.Dim + d]) = (pads[2 * i], pads[2 * i + 1]);
        }
        string onnxMode = mode switch { "replicate" => "edge", _ => mode };
        if (mode == "constant")
        {
            string fill;
            using (Suspend()) fill = s.NameOf(Tensor.Scalar(value, x.DType));
            s.Node("Pad", [x, s.ShapeConst("pads", onnx), fill], y, TraceSession.Str("mode", onnxMode));
        }
        else s.Node("Pad", [x, s.ShapeConst("pads", onnx)], y, TraceSession.Str("mode", onnxMode));
        return y;
    }

    internal static Tensor MaxPool2d(TraceSession s, Tensor x, (int h, int w) kernel, (int h, int w) stride, (int h, int w) padding, (int h, int w) dilation, bool ceilMode)
    {
        Tensor y;
        using (Suspend()) y = Functional.MaxPool2d(x, kernel, stride, padding, dilation, ceilMode);
        s.Node("MaxPool", [x], y, TraceSession.Ints("kernel_shape", kernel.h, kernel.w), TraceSession.Ints("strides", stride.h, stride.w),
            TraceSession.Ints("pads", padding.h, padding.w, padding.h, padding.w), TraceSession.Ints("dilations", dilation.h, dilation.w),
            TraceSession.Int("ceil_mode", ceilMode ? 1 : 0));
        return y;
    }

    internal static Tensor AvgPool2d(TraceSession s, Tensor x, (int h, int w) kernel, (int h, int w) stride, (int h, int w) padding)
    {
        Tensor y;
        using (Suspend()) y = Functional.AvgPool2d(x, kernel, stride, padding);
        s.Node("AveragePool", [x], y, TraceSession.Ints("kernel_shape", kernel.h, kernel.w), TraceSession.Ints("strides", stride.h, stride.w),
            TraceSession.Ints("pads", padding.h, padding.w, padding.h, padding.w), TraceSession.Int("count_include_pad", 1));
        return y;
    }

    internal static Tensor Compare(TraceSession s, string op, Tensor a, Tensor b, Tensor result)
    {
        s.Comparison(op, a, b, result);
        return result;
    }

    internal static void Where(TraceSession s, Tensor condition, Tensor a, Tensor b, Tensor result) => s.WhereOf(condition, a, b, result);

    internal static Tensor Embedding(TraceSession s, Tensor indices, Tensor weight, int? paddingIdx)
    {
        Tensor y;
        using (Suspend()) y = Functional.Embedding(indices, weight, paddingIdx);
        // NOTE: the padding index only stops the gradient; the forward is a plain row lookup.
        s.Node("Gather", [weight, indices], y, TraceSession.Int("axis", 0));   // int32/int64 indices, as ONNX Gather
        return y;
    }
}

/// <summary>One recording: values by tensor identity, nodes, initializers, and what the merge of two traces needs.</summary>
internal sealed class TraceSession
{
    readonly Dictionary<Tensor, string> names = new(ReferenceEqualityComparer.Instance);
    // Views made without a recorded op (Detach) share storage and layout with a named tensor.
    readonly Dictionary<Storage, List<(Tensor t, string name)>> byStorage = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<Tensor, string> parameters;
    readonly HashSet<string> usedNames = [];
    int counter;

    public readonly List<Node> Nodes = [];
    public readonly Dictionary<string, Tensor> Initializers = new();
    /// <summary>Int64 vectors that carry sizes (Reshape/Expand shapes, Slice bounds): may become batch expressions.</summary>
    public readonly Dictionary<string, long[]> ShapeConstants = new();
    /// <summary>Tensors captured as constants (neither parameters nor produced by a recorded op).</summary>
    public readonly HashSet<string> Captured = [];
    public readonly List<(string name, Tensor t)> Inputs = [];
    public readonly List<(string name, Tensor t)> Outputs = [];
    public readonly Dictionary<string, (DType dtype, int[] shape)> Values = new();

    public TraceSession(IReadOnlyDictionary<Tensor, string>? parameters)
    {
        this.parameters = new Dictionary<Tensor, string>(ReferenceEqualityComparer.Instance);
        if (parameters is not null) foreach (var (t, n) in parameters) this.parameters[t] = n;
    }

    string Fresh(string hint)
    {
        var n = hint;
        while (!usedNames.Add(n)) n = $"{hint}_{++counter}";
        return n;
    }

    void Bind(Tensor t, string name)
    {
        names[t] = name;
        if (!byStorage.TryGetValue(t.storage, out var list)) byStorage[t.storage] = list = [];
        list.Add((t, name));
        Values[name] = (t.DType, (int[])t.shape.Clone());
    }

    public void AddInput(string name, Tensor t)
    {
        if (!usedNames.Add(name)) throw new TraceException($"trace: input name '{name}' is used twice");
        Bind(t, name);
        Inputs.Add((name, t));
    }

    public void AddOutput(string name, Tensor t)
    {
        var value = NameOf(t);
        if (!usedNames.Add(name)) throw new TraceException($"trace: output name '{name}' is used twice");
        // An output that is an input, an initializer or another output gets its own Identity node.
        var producer = Nodes.FindIndex(n => n.Outputs.Contains(value));
        bool renamable = producer >= 0 && !Outputs.Any(o => o.name == value) && Inputs.All(i => i.name != value);
        if (renamable)
        {
            Rename(value, name);
        }
        else Nodes.Add(new Node { OpType = "Identity", Name = name, Inputs = [value], Outputs = [name] });
        Values[name] = (t.DType, (int[])t.shape.Clone());
        Outputs.Add((name, t));
    }

    void Rename(string from, string to)
    {
        foreach (var n in Nodes)
        {
            for (int i = 0; i < n.Inputs.Length; i++) if (n.Inputs[i] == from) n.Inputs[i] = to;
            for (int i = 0; i < n.Outputs.Length; i++) if (n.Outputs[i] == from) n.Outputs[i] = to;
        }
        foreach (var key in names.Where(kv => kv.Value == from).Select(kv => kv.Key).ToList()) names[key] = to;
        foreach (var list in byStorage.Values)
            for (int i = 0; i < list.Count; i++) if (list[i].name == from) list[i] = (list[i].t, to);
        if (Values.Remove(from, out var v)) Values[to] = v;
    }

    /// <summary>Whether the tensor is a value of the graph (an input, a parameter or a node output), not a constant.</summary>
    bool IsLive(Tensor t) => Lookup(t) is not null || parameters.ContainsKey(t);

    string? Lookup(Tensor t)
    {
        if (names.TryGetValue(t, out var n)) return n;
        if (byStorage.TryGetValue(t.storage, out var list))
            foreach (var (u, name) in list)
                if (u.offset == t.offset && u.shape.AsSpan().SequenceEqual(t.shape) && u.strides.AsSpan().SequenceEqual(t.strides))
                {
                    names[t] = name;
                    return name;
                }
        return null;
    }

    /// <summary>The value name of a tensor: a known value, a parameter initializer, or a new captured constant.</summary>
    public string NameOf(Tensor t)
    {
        if (Lookup(t) is { } known) return known;
        if (parameters.TryGetValue(t, out var pname))
        {
            var n = Fresh(pname);
            t.storage.Keep();   // the graph keeps the parameter itself, not a copy
            Initializers[n] = t;
            Bind(t, n);
            return n;
        }
        Tensor snapshot;
        using (Tracer.Suspend()) snapshot = t.Clone();
        snapshot.storage.Keep();
        var c = Fresh($"const_{Initializers.Count}");
        Initializers[c] = snapshot;
        Captured.Add(c);
        Bind(t, c);
        return c;
    }

    public static NodeAttribute Str(string name, string v) => new() { Name = name, Kind = AttributeKind.String, String = v };
    public static NodeAttribute Int(string name, long v) => new() { Name = name, Kind = AttributeKind.Int, Int = v };
    public static NodeAttribute Ints(string name, params long[] v) => new() { Name = name, Kind = AttributeKind.Ints, Ints = v };
    static NodeAttribute Ints(string name, int[] v) => Ints(name, v.Select(x => (long)x).ToArray());

    /// <summary>An int64 vector constant that holds sizes (merged across traces into batch expressions when it differs).</summary>
    public string ShapeConst(string hint, long[] values)
    {
        var n = Fresh(hint);
        using (Tracer.Suspend()) Initializers[n] = Tensor.FromArray((long[])values.Clone(), values.Length);
        ShapeConstants[n] = values;
        return n;
    }

    /// <summary>Adds a node whose inputs are tensors (named on the way) or value names (strings).</summary>
    public string Node(string op, object[] inputs, Tensor? result, params NodeAttribute[] attributes)
    {
        var ins = new string[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
            ins[i] = inputs[i] switch { Tensor t => NameOf(t), string s => s, _ => throw new InvalidOperationException("trace: bad node input") };
        var output = Fresh($"{op}_{Nodes.Count}");
        var node = new Node { OpType = op, Name = $"{op}_{Nodes.Count}", Inputs = ins, Outputs = [output] };
        foreach (var a in attributes) node.Attributes[a.Name] = a;
        Nodes.Add(node);
        if (result is not null) Bind(result, output);
        return output;
    }

    string Cast(Tensor t, DType to)
    {
        if (t.DType != to && !IsLive(t))
        {
            Tensor converted;
            using (Tracer.Suspend()) converted = t.To(to);
            return NameOf(converted);
        }
        var name = NameOf(t);
        if (t.DType == to) return name;
        var output = Fresh($"Cast_{Nodes.Count}");
        Nodes.Add(new Node { OpType = "Cast", Name = output, Inputs = [name], Outputs = [output], Attributes = { ["to"] = Int("to", OnnxType(to)) } });
        Values[output] = (to, (int[])t.shape.Clone());
        return output;
    }

    static readonly Dictionary<string, string> Unary = new()
    {
        ["neg"] = "Neg", ["exp"] = "Exp", ["log"] = "Log", ["sqrt"] = "Sqrt", ["abs"] = "Abs", ["sin"] = "Sin", ["cos"] = "Cos",
        ["tanh"] = "Tanh", ["sigmoid"] = "Sigmoid", ["relu"] = "Relu", ["erf"] = "Erf", ["floor"] = "Floor", ["ceil"] = "Ceil", ["round"] = "Round",
        ["contiguous"] = "Identity", ["clone"] = "Identity",
    };

    static readonly Dictionary<string, string> Binary = new()
    {
        ["add"] = "Add", ["sub"] = "Sub", ["mul"] = "Mul", ["div"] = "Div", ["pow"] = "Pow", ["maximum"] = "Max", ["minimum"] = "Min", ["matmul"] = "MatMul",
    };

    static readonly Dictionary<string, string> NotTraceable = new()
    {
        ["index_select"] = "its index tensor is not an input of the recorded op (Functional.Embedding is traced as Gather)",
        ["index_add"] = "its index tensor is not an input of the recorded op",
        ["gather"] = "its index tensor is not an input of the recorded op",
        ["scatter"] = "its index tensor is not an input of the recorded op",
        ["scatter_add"] = "its index tensor is not an input of the recorded op",
        ["unfold"] = "im2col has no ONNX operator (Functional.Conv2d and AvgPool2d on 4-D inputs are traced as Conv and AveragePool)",
        ["fold"] = "col2im has no ONNX operator (Functional.ConvTranspose2d on 4-D inputs is traced as ConvTranspose)",
        ["max_pool2d"] = "only Functional.MaxPool2d on a 4-D input is traced (as MaxPool); MaxPool2dWithIndices is not",
        ["constant_pad"] = "only Functional.Pad is traced (as Pad)",
        ["batch_norm"] = "batch norm in training mode uses batch statistics; trace in eval mode",
        ["cumsum"] = "cumsum is not traced yet",
    };

    /// <summary>A comparison (eq, ne, lt, le, gt, ge): a bool tensor.</summary>
    public void Comparison(string op, Tensor a, Tensor b, Tensor result)
    {
        if (!IsLive(a) && !IsLive(b)) return;
        // Operands compare in their common type; ONNX compares equal types only.
        var dt = a.DType == b.DType ? a.DType : result.DType == DType.Bool ? Promoted(a, b) : a.DType;
        var (x, y) = (Cast(a, dt), Cast(b, dt));
        switch (op)
        {
            case "eq": Node("Equal", [x, y], result); break;
            case "lt": Node("Less", [x, y], result); break;
            case "le": Node("LessOrEqual", [x, y], result); break;
            case "gt": Node("Greater", [x, y], result); break;
            case "ge": Node("GreaterOrEqual", [x, y], result); break;
            case "ne": Node("Not", [Node("Equal", [x, y], null)], result); break;
            default: throw new TraceException($"trace: comparison '{op}' is not known to the tracer");
        }
    }

    static DType Promoted(Tensor a, Tensor b) =>
        a.DType.IsFloatingPoint() && !b.DType.IsFloatingPoint() ? a.DType
        : b.DType.IsFloatingPoint() && !a.DType.IsFloatingPoint() ? b.DType
        : a.Dim == 0 && b.Dim > 0 ? b.DType : a.DType;

    /// <summary>where(condition, a, b); Tensor.Where calls this before Record, which then skips "where".</summary>
    public void WhereOf(Tensor condition, Tensor a, Tensor b, Tensor result)
    {
        if (!IsLive(condition) && !IsLive(a) && !IsLive(b)) return;
        var c = condition.DType == DType.Bool ? NameOf(condition) : Node("Not", [Node("Equal", [Cast(condition, condition.DType), Scalar(0, condition.DType)], null)], null);
        Node("Where", [c, Cast(a, result.DType), Cast(b, result.DType)], result);
    }

    /// <summary>One primitive, as Tensor.Record reports it.</summary>
    public void Primitive(Tensor result, string op, Tensor[] inputs)
    {
        if (op == "where") return;   // recorded by WhereOf, which also sees the condition
        // A computation on constants only stays a constant: it is captured (folded) where it is used.
        if (!inputs.Any(IsLive)) return;
        if (NotTraceable.TryGetValue(op, out var why))
            throw new TraceException($"trace: op '{op}' cannot be traced: {why}");
        if (Unary.TryGetValue(op, out var u)) { Node(u, [inputs[0]], result); return; }
        if (Binary.TryGetValue(op, out var b))
        {
            var dt = op == "matmul" ? inputs[0].DType : result.DType;
            var ins = inputs.Select(t => (object)Cast(t, dt)).ToArray();
            Node(b, ins, result);
            return;
        }
        var x = inputs[0];
        switch (op)
        {
            case "log1p":
                Node("Log", [Node("Add", [x, Scalar(1, x.DType)], null)], result);
                return;
            case "expm1":
                Node("Sub", [Node("Exp", [x], null), Scalar(1, x.DType)], result);
                return;
            case "to":
                Node("Cast", [x], result, Int("to", OnnxType(result.DType)));
                return;
            case "reshape" or "view" or "unsqueeze" or "squeeze":
                Node("Reshape", [x, ShapeConst("shape", result.shape.Select(d => (long)d).ToArray())], result);
                return;
            case "expand":
                Node("Expand", [x, ShapeConst("shape", result.shape.Select(d => (long)d).ToArray())], result);
                return;
            case "permute":
                Node("Transpose", [x], result, Ints("perm", Permutation(x, result)));
                return;
            case "slice":
                SliceOf(x, result);
                return;
            case "cat":
                CatOf(inputs, result);
                return;
            case "sum" or "prod" or "max" or "min":
                ReduceOf(op, x, result);
                return;
            default:
                throw new TraceException($"trace: op '{op}' is not known to the tracer; add its mapping in Nabla.Graph.TraceSession.Primitive");
        }
    }

    string Scalar(double v, DType dtype)
    {
        Tensor t;
        using (Tracer.Suspend()) t = Tensor.Scalar(v, dtype);
        return NameOf(t);
    }

    static int[] Permutation(Tensor x, Tensor r)
    {
        var perm = new int[r.Dim];
        var used = new bool[x.Dim];
        for (int i = 0; i < r.Dim; i++)
        {
            int found = -1;
            for (int j = 0; j < x.Dim && found < 0; j++)
                if (!used[j] && x.shape[j] == r.shape[i] && (x.strides[j] == r.strides[i] || x.shape[j] == 1)) found = j;
            if (found < 0) throw new TraceException($"trace: op 'permute': cannot match output dim {i} of [{string.Join(", ", r.shape)}] to the input [{string.Join(", ", x.shape)}]");
            used[found] = true;
            perm[i] = found;
        }
        return perm;
    }

    void SliceOf(Tensor x, Tensor r)
    {
        int d = -1;
        for (int i = 0; i < x.Dim; i++)
            if (x.shape[i] != r.shape[i] || (x.strides[i] != r.strides[i] && x.shape[i] > 1)) { d = i; break; }
        if (d < 0) { Node("Identity", [x], r); return; }
        long stride = x.strides[d];
        long step = stride == 0 ? 1 : r.strides[d] / stride;
        long start = stride == 0 ? 0 : (r.offset - x.offset) / stride;
        if (step <= 0) step = 1;
        long end = start + (r.shape[d] - 1) * step + 1;
        if (r.shape[d] == 0) end = start;
        Node("Slice", [x, ShapeConst("starts", [start]), ShapeConst("ends", [end]), ShapeConst("axes", [d]), ShapeConst("steps", [step])], r);
    }

    void CatOf(Tensor[] inputs, Tensor r)
    {
        var parts = inputs.Where(t => t.NumElements > 0 || inputs.All(u => u.NumElements == 0)).ToArray();
        if (parts.Length == 1 && parts[0].shape.AsSpan().SequenceEqual(r.shape)) { Node("Identity", [parts[0]], r); return; }
        int axis = -1;
        for (int i = 0; i < r.Dim; i++) if (parts[0].shape[i] != r.shape[i]) { axis = i; break; }
        if (axis < 0) axis = 0;
        Node("Concat", parts.Cast<object>().ToArray(), r, Int("axis", axis));
    }

    void ReduceOf(string op, Tensor x, Tensor r)
    {
        string onnx = op switch { "sum" => "ReduceSum", "prod" => "ReduceProd", "max" => "ReduceMax", _ => "ReduceMin" };
        int[] axes;
        bool keep = r.Dim == x.Dim;
        if (keep)
        {
            axes = Enumerable.Range(0, x.Dim).Where(i => x.shape[i] != r.shape[i]).ToArray();
            if (axes.Length == 0) { Node("Identity", [x], r); return; }
        }
        else
        {
            var candidates = RemovedDims(x.shape, r.shape).ToList();
            if (candidates.Count == 0) throw new TraceException($"trace: op '{op}': cannot tell which dims of [{string.Join(", ", x.shape)}] give [{string.Join(", ", r.shape)}]");
            axes = candidates[0];
            if (candidates.Count > 1)
            {
                // Several dims fit the shapes: pick the one whose result equals the recorded one.
                using var _ = Tracer.Suspend();
                var want = r.To(DType.Float64).ToArray<double>();
                axes = candidates.FirstOrDefault(c => Reduce(op, x, c).To(DType.Float64).ToArray<double>().SequenceEqual(want))
                    ?? throw new TraceException($"trace: op '{op}': no choice of dims reproduces the result");
            }
        }
        if (op == "sum") Node(onnx, [x, ShapeConst("axes", axes.Select(a => (long)a).ToArray())], r, Int("keepdims", keep ? 1 : 0));
        else Node(onnx, [x], r, Ints("axes", axes), Int("keepdims", keep ? 1 : 0));
    }

    static Tensor Reduce(string op, Tensor x, int[] dims)
    {
        var y = x;
        foreach (var d in dims.OrderByDescending(d => d))
            y = op switch { "sum" => y.Sum(d), "prod" => y.Prod(d), "max" => y.Max(d).values, _ => y.Min(d).values };
        return y;
    }

    static IEnumerable<int[]> RemovedDims(int[] a, int[] b)
    {
        int removed = a.Length - b.Length;
        if (removed <= 0) yield break;
        foreach (var combo in Combinations(a.Length, removed))
        {
            var rest = Enumerable.Range(0, a.Length).Where(i => !combo.Contains(i)).Select(i => a[i]);
            if (rest.SequenceEqual(b)) yield return combo;
        }
    }

    static IEnumerable<int[]> Combinations(int n, int k)
    {
        if (k == 0) { yield return []; yield break; }
        for (int first = 0; first <= n - k; first++)
            foreach (var rest in Combinations(n - first - 1, k - 1))
                yield return [first, .. rest.Select(r => r + first + 1)];
    }

    /// <summary>The ONNX TensorProto element type code of a dtype.</summary>
    public static long OnnxType(DType t) => t switch
    {
        DType.Float32 => 1, DType.UInt8 => 2, DType.Int8 => 3, DType.Int32 => 6, DType.Int64 => 7, DType.Bool => 9,
        DType.Float16 => 10, DType.Float64 => 11, DType.BFloat16 => 16,
        DType.UInt16 => 4, DType.Int16 => 5, DType.UInt32 => 12, DType.UInt64 => 13,
        _ => throw new TraceException($"trace: dtype {t} has no ONNX element type"),
    };

    // ---------- the finished graph ----------

    /// <summary>
    /// The graph of this trace. With <paramref name="other"/> (the same function traced at batch + 1), sizes that
    /// differ become expressions of the runtime batch and the inputs/outputs get the symbolic dimension.
    /// </summary>
    public Graph ToGraph(TraceOptions options, TraceSession? other, int batch)
    {
        var nodes = Nodes.Select(Copy).ToList();
        var inits = new Dictionary<string, Tensor>(Initializers);
        var prefix = new List<Node>();
        var dynamic = options.DynamicAxes ?? new Dictionary<int, int>();
        string sym = options.BatchSymbol;
        if (other is not null)
        {
            if (other.Nodes.Count != Nodes.Count)
                throw new TraceException($"trace: the function records {Nodes.Count} nodes at {sym} {batch} and {other.Nodes.Count} at {sym} {batch + 1}; its control flow depends on the input");
            for (int i = 0; i < Nodes.Count; i++)
                if (Nodes[i].ToString() != other.Nodes[i].ToString())
                    throw new TraceException($"trace: node {i} differs between {sym} {batch} ({Nodes[i]}) and {sym} {batch + 1} ({other.Nodes[i]}); its control flow depends on the input");
            var (inputIndex, axis) = dynamic.OrderBy(kv => kv.Key).First();
            string? batchValue = null;
            string BatchValue()
            {
                if (batchValue is not null) return batchValue;
                var shape = Fresh("batch_shape");
                var idx = Fresh("batch_axis");
                inits[idx] = Tensor.FromArray(new long[] { axis }, 1);
                batchValue = Fresh("batch_size");
                prefix.Add(new Node { OpType = "Shape", Name = shape, Inputs = [Inputs[inputIndex].name], Outputs = [shape] });
                prefix.Add(new Node { OpType = "Gather", Name = batchValue, Inputs = [shape, idx], Outputs = [batchValue], Attributes = { ["axis"] = Int("axis", 0) } });
                return batchValue;
            }
            // One int64 [1] value per multiple k of the batch.
            var multiples = new Dictionary<long, string>();
            string Multiple(long k)
            {
                if (multiples.TryGetValue(k, out var m)) return m;
                if (k == 1) return multiples[k] = BatchValue();
                var kn = Fresh($"batch_times_{k}_factor");
                inits[kn] = Tensor.FromArray(new long[] { k }, 1);
                m = Fresh($"batch_times_{k}");
                prefix.Add(new Node { OpType = "Mul", Name = m, Inputs = [BatchValue(), kn], Outputs = [m] });
                return multiples[k] = m;
            }
            long? Factor(long a, long b) => b - a is var d && d != 0 && a % batch == 0 && a / batch == d ? d : null;

            foreach (var (name, v1) in ShapeConstants)
            {
                if (!other.ShapeConstants.TryGetValue(name, out var v2))
                    throw new TraceException($"trace: the constant '{name}' read by {Consumer(name)} exists only at {sym} {batch}");
                if (v1.SequenceEqual(v2)) continue;
                var pieces = new List<string>();
                var run = new List<long>();
                void Flush()
                {
                    if (run.Count == 0) return;
                    var c = Fresh(name + "_part");
                    inits[c] = Tensor.FromArray(run.ToArray(), run.Count);
                    pieces.Add(c);
                    run.Clear();
                }
                for (int i = 0; i < v1.Length; i++)
                {
                    if (v1[i] == v2[i]) { run.Add(v1[i]); continue; }
                    var k = Factor(v1[i], v2[i]) ?? throw new TraceException(
                        $"trace: size {i} of the constant '{name}' read by {Consumer(name)} is {v1[i]} at {sym} {batch} and {v2[i]} at {sym} {batch + 1}, not a multiple of the {sym}; this size cannot be made dynamic");
                    Flush();
                    pieces.Add(Multiple(k));
                }
                Flush();
                inits.Remove(name);
                prefix.Add(new Node { OpType = "Concat", Name = name, Inputs = pieces.ToArray(), Outputs = [name], Attributes = { ["axis"] = Int("axis", 0) } });
            }
            foreach (var name in Captured)
            {
                if (!other.Initializers.TryGetValue(name, out var b))
                    throw new TraceException($"trace: the constant '{name}' read by {Consumer(name)} exists only at {sym} {batch}");
                var a = Initializers[name];
                if (SameTensor(a, b)) continue;
                // A uniform constant of batch-dependent shape (ones, zeros, full) becomes Expand(scalar, shape).
                if (a.Dim == b.Dim && Uniform(a) is double va && Uniform(b) is double vb && va == vb)
                {
                    var pieces = new List<string>();
                    var fixedRun = new List<long>();
                    for (int i = 0; i < a.Dim; i++)
                    {
                        if (a.shape[i] == b.shape[i]) { fixedRun.Add(a.shape[i]); continue; }
                        var k = Factor(a.shape[i], b.shape[i]) ?? throw new TraceException(
                            $"trace: the constant '{name}' read by {Consumer(name)} has shape [{string.Join(", ", a.shape)}] at {sym} {batch} and [{string.Join(", ", b.shape)}] at {sym} {batch + 1}; dimension {i} is not a multiple of the {sym}");
                        if (fixedRun.Count > 0) { var c = Fresh(name + "_dims"); inits[c] = Tensor.FromArray(fixedRun.ToArray(), fixedRun.Count); pieces.Add(c); fixedRun.Clear(); }
                        pieces.Add(Multiple(k));
                    }
                    if (fixedRun.Count > 0) { var c = Fresh(name + "_dims"); inits[c] = Tensor.FromArray(fixedRun.ToArray(), fixedRun.Count); pieces.Add(c); }
                    var scalar = Fresh(name + "_value");
                    using (Tracer.Suspend()) inits[scalar] = Tensor.Scalar(va, a.DType);
                    var shapeName = Fresh(name + "_shape");
                    prefix.Add(new Node { OpType = "Concat", Name = shapeName, Inputs = pieces.ToArray(), Outputs = [shapeName], Attributes = { ["axis"] = Int("axis", 0) } });
                    prefix.Add(new Node { OpType = "Expand", Name = name, Inputs = [scalar, shapeName], Outputs = [name] });
                    inits.Remove(name);
                    continue;
                }
                throw new TraceException($"trace: the constant '{name}' read by {Consumer(name)} differs between {sym} {batch} and {sym} {batch + 1}: "
                    + "a value computed by an op the tracer does not record (a comparison, an integer cast, an index built on the host) depends on the inputs");
            }
        }

        var g = new Graph { Name = "traced", Opsets = { [""] = 17 } };
        foreach (var (k, v) in inits) g.Initializers[k] = v;
        g.Nodes.AddRange(prefix);
        g.Nodes.AddRange(nodes);
        for (int i = 0; i < Inputs.Count; i++)
        {
            var (name, t) = Inputs[i];
            var shape = t.shape.Select((d, ax) => dynamic.TryGetValue(i, out var a) && a == ax ? SymbolicDim.Symbol(sym) : SymbolicDim.Fixed(d)).ToArray();
            g.Inputs.Add(new ValueInfo(name, t.DType, shape));
        }
        foreach (var (name, t) in Outputs)
        {
            var shape = t.shape.Select((d, ax) =>
            {
                if (other is null) return SymbolicDim.Fixed(d);
                int d2 = other.Values[name].shape.Length > ax ? other.Values[name].shape[ax] : d;
                if (d2 == d) return SymbolicDim.Fixed(d);
                long k = d2 - d;
                return d == k * batch ? SymbolicDim.Symbol(k == 1 ? sym : $"{k}*{sym}") : SymbolicDim.Symbol(null);
            }).ToArray();
            g.Outputs.Add(new ValueInfo(name, t.DType, shape));
        }
        return g;
    }

    string Consumer(string value) =>
        Nodes.FirstOrDefault(n => n.Inputs.Contains(value))?.Describe() ?? "no node";

    static Node Copy(Node n) => new()
    {
        OpType = n.OpType, Domain = n.Domain, Name = n.Name, Inputs = (string[])n.Inputs.Clone(), Outputs = (string[])n.Outputs.Clone(),
        Attributes = new Dictionary<string, NodeAttribute>(n.Attributes),
    };

    static bool SameTensor(Tensor a, Tensor b)
    {
        if (a.DType != b.DType || !a.shape.AsSpan().SequenceEqual(b.shape)) return false;
        using var _ = Tracer.Suspend();
        return a.To(DType.Float64).ToArray<double>().SequenceEqual(b.To(DType.Float64).ToArray<double>());
    }

    static double? Uniform(Tensor t)
    {
        if (t.NumElements == 0) return null;
        double[] v;
        using (Tracer.Suspend()) v = t.To(DType.Float64).ToArray<double>();
        return v.All(x => x.Equals(v[0])) ? v[0] : null;
    }

    public override string ToString() => string.Join("\n", Nodes) + "\n" + string.Join(", ", Initializers.Keys);
}
