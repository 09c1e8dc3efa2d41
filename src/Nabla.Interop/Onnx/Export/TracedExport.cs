using Google.Protobuf;
using Nabla.Graph;
using Nabla.Interop.Onnx.Proto;
using Nabla.NN;
using G = Nabla.Graph.Graph;

namespace Nabla.Interop.Onnx.Export;

/// <summary>
/// ONNX export by tracing: the model runs on example inputs, <see cref="Tracer"/> records the primitive ops into the
/// graph IR, the trace is replayed through Nabla's ONNX kernels and must reproduce the eager outputs, shape inference
/// annotates every value, and the graph is written as a ModelProto (opset 17 by default).
/// <c>model.ExportOnnx("model.onnx", [Tensor.Randn([1, 1, 28, 28])], new Dictionary&lt;int, int&gt; { [0] = 0 })</c>.
/// </summary>
/// <remarks>
/// Unlike the structural <see cref="OnnxExporter"/>, this needs no converter per module type: any model built from
/// traceable ops exports, including the model zoo's transformers. Ops the tracer cannot represent throw
/// <see cref="TraceException"/> naming the op.
/// </remarks>
public static class TracedOnnxExporter
{
    /// <summary>The resolver of Nabla's ONNX operator kernels (for replaying traced graphs).</summary>
    public static IOpResolver Resolver => OnnxOps.Resolver;

    /// <summary>Traces <paramref name="model"/>.Forward on one example input and writes the ONNX file.</summary>
    /// <param name="dynamicAxes">input index → axis exported as the symbolic "batch"; null: axis 0 of every input; empty: static</param>
    public static void ExportOnnx(this Module model, string path, Tensor[] exampleInputs, IReadOnlyDictionary<int, int>? dynamicAxes = null, int opset = 17)
    {
        CheckOpset(opset);
        if (exampleInputs.Length != 1)
            throw new NablaException($"onnx export: Module.Forward takes one input, {exampleInputs.Length} examples were given; trace a function for several inputs");
        Write(path, ToModel(Trace(model, xs => [model.Forward(xs[0])], exampleInputs, dynamicAxes, null, null), opset, model.GetType().Name));
    }

    /// <summary>Traces <paramref name="fn"/> (with <paramref name="model"/>'s parameters as named initializers) and writes the ONNX file.</summary>
    public static void ExportOnnx(this Module model, Func<Tensor[], Tensor[]> fn, string path, Tensor[] exampleInputs,
        IReadOnlyDictionary<int, int>? dynamicAxes = null, string[]? inputNames = null, string[]? outputNames = null, int opset = 17)
    {
        CheckOpset(opset);
        Write(path, ToModel(Trace(model, fn, exampleInputs, dynamicAxes, inputNames, outputNames), opset, model.GetType().Name));
    }

    /// <summary>Traces a function of tensors (its captured tensors become constants) and writes the ONNX file.</summary>
    public static void ExportOnnx(Func<Tensor[], Tensor[]> fn, string path, Tensor[] exampleInputs, IReadOnlyDictionary<int, int>? dynamicAxes = null,
        string[]? inputNames = null, string[]? outputNames = null, int opset = 17)
    {
        CheckOpset(opset);
        Write(path, ToModel(Tracer.Trace(fn, exampleInputs, Options(exampleInputs, dynamicAxes, inputNames, outputNames)), opset, "traced"));
    }

    static void CheckOpset(int opset)
    {
        if (opset < 17 || opset > OnnxExporter.MaxOpset)
            throw new NablaException($"onnx export: opset {opset} is not supported by the traced export (it writes opsets 17..{OnnxExporter.MaxOpset})");
    }

    /// <summary>The traced graph of a module (verified against eager execution), before serialization.</summary>
    public static G Trace(Module model, Func<Tensor[], Tensor[]> fn, Tensor[] exampleInputs, IReadOnlyDictionary<int, int>? dynamicAxes = null,
        string[]? inputNames = null, string[]? outputNames = null)
    {
        var g = Tracer.Trace(model, fn, exampleInputs, Options(exampleInputs, dynamicAxes, inputNames, outputNames));
        RemoveDeadNodes(g);
        return g;
    }

    static TraceOptions Options(Tensor[] inputs, IReadOnlyDictionary<int, int>? dynamicAxes, string[]? inputNames, string[]? outputNames) => new()
    {
        DynamicAxes = dynamicAxes ?? Enumerable.Range(0, inputs.Length).Where(i => inputs[i].Dim > 0).ToDictionary(i => i, _ => 0),
        InputNames = inputNames,
        OutputNames = outputNames,
        VerifyWith = OnnxOps.Resolver,
    };

    static void Write(string path, ModelProto model)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllBytes(path, model.ToByteArray());
    }

    /// <summary>Drops nodes and initializers that no output depends on (a trace records checks whose results are unused).</summary>
    public static void RemoveDeadNodes(G g)
    {
        var needed = new HashSet<string>(g.Outputs.Select(o => o.Name));
        for (int i = g.Nodes.Count - 1; i >= 0; i--)
        {
            // Traced nodes are in execution order, so one backward sweep finds every live node.
            var n = g.Nodes[i];
            if (n.Outputs.Any(needed.Contains)) foreach (var x in n.Inputs) needed.Add(x);
            else g.Nodes.RemoveAt(i);
        }
        foreach (var k in g.Initializers.Keys.Where(k => !needed.Contains(k)).ToList()) g.Initializers.Remove(k);
    }

    /// <summary>The serialized ModelProto of a graph of ONNX operators (what <see cref="ExportOnnx(Module, string, Tensor[], IReadOnlyDictionary{int, int}?, int)"/> writes).</summary>
    public static byte[] ToOnnxBytes(G g, int opset = 17, string name = "traced") => ToModel(g, opset, name).ToByteArray();

    /// <summary>The ModelProto of a graph of ONNX operators, with value_info from <see cref="ShapeInference"/>.</summary>
    internal static ModelProto ToModel(G g, int opset = 17, string name = "traced")
    {
        CheckOpset(opset);
        if (opset >= 18 && g.Nodes.Any(n => n.OpType is "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceMean"))
            g = WithAxesInputs(g);
        var info = ShapeInference.Infer(g);
        var gp = new GraphProto { Name = name };
        foreach (var (k, t) in g.Initializers) gp.Initializer.Add(OnnxGraphBuilder.ToProto(k, t));
        foreach (var n in g.Nodes)
        {
            var np = new NodeProto { OpType = n.OpType, Name = n.Name, Domain = n.Domain };
            np.Input.AddRange(n.Inputs);
            np.Output.AddRange(n.Outputs);
            foreach (var a in n.Attributes.Values) np.Attribute.Add(Attribute(a, n));
            gp.Node.Add(np);
        }
        foreach (var vi in g.Inputs) gp.Input.Add(ValueInfo(vi));
        foreach (var vi in g.Outputs) gp.Output.Add(ValueInfo(info.TryGetValue(vi.Name, out var inferred) ? Merge(vi, inferred) : vi));
        var declared = new HashSet<string>(g.Inputs.Select(v => v.Name).Concat(g.Outputs.Select(v => v.Name)).Concat(g.Initializers.Keys));
        foreach (var n in g.Nodes)
            foreach (var o in n.Outputs)
                if (o.Length > 0 && !declared.Contains(o) && info.TryGetValue(o, out var vi) && vi.DType is not null)
                    gp.ValueInfo.Add(ValueInfo(vi));
        var model = new ModelProto
        {
            IrVersion = OnnxExporter.IrVersion,
            ProducerName = "nabla",
            ProducerVersion = typeof(TracedOnnxExporter).Assembly.GetName().Version?.ToString() ?? "",
            Graph = gp,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        return model;
    }

    // The declared output keeps its symbolic names; inference fills what the declaration leaves open.
    static ValueInfo Merge(ValueInfo declared, ValueInfo inferred) =>
        declared.Shape is null ? declared with { Shape = inferred.Shape } : declared;

    /// <summary>From opset 18 the reductions take their axes as an input, not an attribute.</summary>
    static G WithAxesInputs(G g)
    {
        var copy = new G { Name = g.Name, Inputs = g.Inputs, Outputs = g.Outputs, Initializers = new(g.Initializers), Opsets = g.Opsets };
        foreach (var n in g.Nodes)
        {
            if (n.OpType is "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceMean" && n.GetInts("axes") is { } axes)
            {
                var name = n.Outputs[0] + "_axes";
                copy.Initializers[name] = Tensor.FromArray(axes, axes.Length);
                var attrs = new Dictionary<string, NodeAttribute>(n.Attributes);
                attrs.Remove("axes");
                copy.Nodes.Add(new Node { OpType = n.OpType, Name = n.Name, Inputs = [.. n.Inputs, name], Outputs = n.Outputs, Attributes = attrs });
            }
            else copy.Nodes.Add(n);
        }
        return copy;
    }

    static AttributeProto Attribute(NodeAttribute a, Node n)
    {
        var p = new AttributeProto { Name = a.Name };
        switch (a.Kind)
        {
            case AttributeKind.Int: p.Type = AttributeProto.Types.AttributeType.Int; p.I = a.Int; break;
            case AttributeKind.Float: p.Type = AttributeProto.Types.AttributeType.Float; p.F = (float)a.Float; break;
            case AttributeKind.String: p.Type = AttributeProto.Types.AttributeType.String; p.S = ByteString.CopyFromUtf8(a.String ?? ""); break;
            case AttributeKind.Ints: p.Type = AttributeProto.Types.AttributeType.Ints; p.Ints.AddRange(a.Ints ?? []); break;
            case AttributeKind.Floats: p.Type = AttributeProto.Types.AttributeType.Floats; p.Floats.AddRange(a.Floats ?? []); break;
            case AttributeKind.Tensor: p.Type = AttributeProto.Types.AttributeType.Tensor; p.T = OnnxGraphBuilder.ToProto(a.Name, a.Tensor!); break;
            default: throw new NablaException($"onnx export: {n.Describe()}: attribute '{a.Name}' of kind {a.Kind} is not written");
        }
        return p;
    }

    static ValueInfoProto ValueInfo(ValueInfo vi)
    {
        var tt = new TypeProto.Types.Tensor { ElemType = OnnxGraphBuilder.DataType(vi.DType ?? DType.Float32, vi.Name) };
        if (vi.Shape is { } shape)
        {
            tt.Shape = new TensorShapeProto();
            foreach (var d in shape)
                tt.Shape.Dim.Add(d.Value is long v ? new TensorShapeProto.Types.Dimension { DimValue = v }
                    : d.Name is { } s ? new TensorShapeProto.Types.Dimension { DimParam = s } : new TensorShapeProto.Types.Dimension());
        }
        return new ValueInfoProto { Name = vi.Name, Type = new TypeProto { TensorType = tt } };
    }
}
