using Nabla.Graph;
using Nabla.Interop.Onnx.Ops;

namespace Nabla.Interop.Onnx;

/// <summary>A registered ONNX operator: its kernel and the opset range Nabla implements.</summary>
internal sealed record OpDef(OpKernel Kernel, long SinceOpset, long MaxOpset);

/// <summary>The table of ONNX operators (default domain) that Nabla runs. Each family registers itself.</summary>
internal sealed class OnnxOps : IOpResolver
{
    public static readonly OnnxOps Resolver = Build();

    readonly Dictionary<string, OpDef> ops = new();

    public IEnumerable<string> Operators => ops.Keys;

    public void Add(string op, OpKernel kernel, long since = 1, long max = OnnxModel.MaxOpset) => ops[op] = new OpDef(kernel, since, max);

    public OpKernel Resolve(Node node, long opset)
    {
        if (node.Domain == FusedOps.Domain) return FusedOps.Resolve(node);
        if (node.Domain.Length > 0)
            throw new ModelFormatException($"{node.Describe()}: unsupported operator {node.Domain}.{node.OpType} (domain '{node.Domain}' opset {opset})");
        if (!ops.TryGetValue(node.OpType, out var def))
            throw new ModelFormatException($"{node.Describe()}: unsupported operator {node.OpType} at opset {opset}");
        if (opset < def.SinceOpset || opset > def.MaxOpset)
            throw new ModelFormatException($"{node.Describe()}: unsupported opset {opset} for {node.OpType} (Nabla implements opsets {def.SinceOpset}..{def.MaxOpset})");
        foreach (var a in node.Attributes.Values)
            if (a.Kind == AttributeKind.Other)
                throw new ModelFormatException($"{node.Describe()}: unsupported attribute '{a.Name}' of {node.OpType} at opset {opset}");
        return def.Kernel;
    }

    static OnnxOps Build()
    {
        var r = new OnnxOps();
        ElementwiseOps.Register(r);
        ActivationOps.Register(r);
        ShapeOps.Register(r);
        IndexOps.Register(r);
        ReduceOps.Register(r);
        NnOps.Register(r);
        MiscOps.Register(r);
        LossOps.Register(r);
        RecurrentOps.Register(r);
        LoopOps.Register(r);
        AttentionOps.Register(r);
        SelectionOps.Register(r);
        SignalOps.Register(r);
        GridSampleOps.Register(r);
        QuantizeOps.Register(r);
        return r;
    }
}
