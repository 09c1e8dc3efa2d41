using Google.Protobuf;
using Nabla.Graph;
using Nabla.Interop.Onnx.Ops;
using Nabla.Interop.Onnx.Proto;
using G = Nabla.Graph.Graph;

namespace Nabla.Interop.Onnx;

/// <summary>
/// An ONNX model imported into Nabla's graph IR, ready to run. <c>OnnxModel.Load("model.onnx").Run(x)</c>.
/// Loading checks the whole model: a truncated or corrupt file, a missing initializer, a cycle, or an operator,
/// attribute or opset Nabla does not support throws <see cref="ModelFormatException"/> naming the node.
/// </summary>
public sealed class OnnxModel
{
    /// <summary>The highest default-domain opset whose semantics the importer knows.</summary>
    public const long MaxOpset = 26;

    GraphExecutor executor;
    readonly IOpResolver resolver;

    public G Graph { get; }
    public long IrVersion { get; }
    public string ProducerName { get; }
    public IReadOnlyDictionary<string, long> Opsets => Graph.Opsets;

    /// <summary>Names of the graph's inputs and outputs whose element type is STRING (carried as <see cref="StringTensor"/>s).</summary>
    public IReadOnlySet<string> StringValues { get; }

    OnnxModel(G graph, long irVersion, string producer, IReadOnlySet<string> stringValues, IOpResolver resolver)
    {
        Graph = graph;
        IrVersion = irVersion;
        ProducerName = producer;
        StringValues = stringValues;
        this.resolver = resolver;
        executor = new GraphExecutor(graph, resolver);
    }

    /// <summary>
    /// Another runnable instance of this model: the same graph and weights (read-only, shared), its own executor, so
    /// instances can run at the same time. Each instance runs one call at a time (its <see cref="CancellationToken"/> is
    /// per instance); <see cref="Optimize"/> rewrites the shared graph, so call it before making instances.
    /// </summary>
    public OnnxModel NewInstance() => new(Graph, IrVersion, ProducerName, StringValues, resolver);

    /// <summary>
    /// Applies the inference passes (constant folding, dead-code elimination; <see cref="GraphOptimizer"/>) to this
    /// model's graph. The graph was already checked at load, so errors still name the original nodes.
    /// </summary>
    /// <param name="foldOverridableInitializers">also fold weights listed as graph inputs (see <see cref="GraphOptimizer.Optimize"/>)</param>
    public OptimizationReport Optimize(bool foldOverridableInitializers = false)
    {
        var report = GraphOptimizer.Optimize(Graph, resolver, foldOverridableInitializers);
        executor = new GraphExecutor(Graph, resolver) { CancellationToken = executor.CancellationToken, Profiler = executor.Profiler };
        return report;
    }

    /// <summary>Per-node timings of this instance's runs (<see cref="NodeProfiler"/>); null, the default, times nothing.</summary>
    public NodeProfiler? Profiler
    {
        get => executor.Profiler;
        set => executor.Profiler = value;
    }

    public CancellationToken CancellationToken
    {
        get => executor.CancellationToken;
        set => executor.CancellationToken = value;
    }

    public static OnnxModel Load(string path) => Load(path, FuseAtLoad);

    /// <param name="fuse">apply the inference fusions (<see cref="OnnxFusion"/>); off keeps the file's graph node for node,
    /// as inspection and export checks want</param>
    public static OnnxModel Load(string path, bool fuse)
    {
        if (GraphFile.IsGraphFile(path)) return NablaGraphFiles.Load(path, fuse);
        byte[] bytes;
        try
        {
            if (LoadLean(path, fuse) is { } lean) return lean;
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ModelFormatException($"{path}: {e.Message}", e); }
        return Load(bytes, Path.GetDirectoryName(Path.GetFullPath(path)), path, fuse);
    }

    /// <param name="baseDir">Folder that external tensor data paths are relative to; null forbids external data.</param>
    public static OnnxModel Load(byte[] bytes, string? baseDir = null, string name = "model.onnx") => Load(bytes, baseDir, name, FuseAtLoad);

    /// <summary>Whether loading applies <see cref="OnnxFusion"/> (Conv+BatchNorm+bias+residual+Relu, Gemm+Relu, MatMul+bias+Relu with a
    /// constant weight); NABLA_ONNX_FUSE=0 turns it off.</summary>
    internal static readonly bool FuseAtLoad = Environment.GetEnvironmentVariable("NABLA_ONNX_FUSE") != "0";

    /// <summary>Whether <see cref="Load(string, bool)"/> reads large initializers from the file straight into their
    /// tensors (<see cref="OnnxPayloads"/>); <c>NABLA_ONNX_LEAN_LOAD=0</c> reads and parses the file whole.</summary>
    internal static bool LeanLoad = Environment.GetEnvironmentVariable("NABLA_ONNX_LEAN_LOAD") != "0";

    /// <summary>The model with its main graph's large initializers read from the file into their tensors, or null when
    /// the file is not a model message <see cref="OnnxPayloads"/> can split (the caller then loads it whole).</summary>
    static OnnxModel? LoadLean(string path, bool fuse)
    {
        if (!LeanLoad) return null;
        // (The caller turns IOException and UnauthorizedAccessException into a ModelFormatException naming the file.)
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
        var split = OnnxPayloads.Split(file);
        if (split is null) return null;
        ModelProto proto;
        try { proto = ModelProto.Parser.ParseFrom(split.Stripped); }
        catch (InvalidProtocolBufferException) { return null; }   // the whole file's parse names the error
        return Load(proto, Path.GetDirectoryName(Path.GetFullPath(path)), path, fuse, split);
    }

    internal static OnnxModel Load(byte[] bytes, string? baseDir, string name, bool fuse)
    {
        ModelProto proto;
        try { proto = ModelProto.Parser.ParseFrom(bytes); }
        catch (InvalidProtocolBufferException e) { throw new ModelFormatException($"{name}: not a valid ONNX model: {e.Message}", e); }
        return Load(proto, baseDir, name, fuse, null);
    }

    static OnnxModel Load(ModelProto proto, string? baseDir, string name, bool fuse,
        OnnxPayloads? detached)
    {
        if (proto.Graph is null) throw new ModelFormatException($"{name}: the model has no graph");
        var opsets = new Dictionary<string, long>();
        foreach (var o in proto.OpsetImport)
        {
            var domain = o.Domain == "ai.onnx" ? "" : o.Domain;
            opsets[domain] = o.Version;
        }
        if (proto.IrVersion < 3 && !opsets.ContainsKey("")) opsets[""] = 1;
        if (!opsets.ContainsKey("") && opsets.Count == 0)
            throw new ModelFormatException($"{name}: the model imports no operator set");
        if (opsets.TryGetValue("", out var v) && v > MaxOpset)
            throw new ModelFormatException($"{name}: unsupported opset ai.onnx {v} (Nabla knows up to {MaxOpset})");
        var graph = new Importer(baseDir, name, opsets).ImportGraph(proto.Graph, outerNames: null, detached);
        if (fuse) OnnxFusion.Apply(graph, proto.IrVersion, foldInPlace: true);   // the initializers were just decoded
        // NOTE: only models that use strings get the string-aware resolver, so numeric models run the plain kernels.
        bool strings = StringOps.Uses(proto.Graph);
        var stringValues = proto.Graph.Input.Concat(proto.Graph.Output)
            .Where(v => v.Type?.TensorType?.ElemType == OnnxTypes.String).Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        return new OnnxModel(graph, proto.IrVersion, proto.ProducerName, stringValues, strings ? StringOps.Wrap(OnnxOps.Resolver) : OnnxOps.Resolver);
    }

    /// <summary>
    /// A runnable model over a graph that is already in memory (a loaded <see cref="GraphFile"/>, a traced graph): the same
    /// operator kernels as ONNX import, string-aware where the graph uses strings. The graph is checked here; with
    /// <paramref name="fuse"/>, <see cref="OnnxFusion"/> rewrites it in place first (initializers that are also graph
    /// inputs stay overridable, as from ONNX IR version 4).
    /// </summary>
    public static OnnxModel FromGraph(G graph, string producer = "", bool fuse = true)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var resolver = NablaGraphFiles.UsesStrings(graph) ? StringOps.Wrap(OnnxOps.Resolver) : OnnxOps.Resolver;
        if (fuse)
        {
            _ = new GraphExecutor(graph, resolver);   // check before rewriting, so errors name the original nodes
            OnnxFusion.Apply(graph, Export.OnnxExporter.IrVersion);
        }
        return new OnnxModel(graph, 0, producer, new HashSet<string>(StringComparer.Ordinal), resolver);
    }

    /// <summary>Runs the model with inputs in declaration order (inputs that have initializers may be left out).</summary>
    public Tensor[] Run(params Tensor[] inputs) => executor.Run(inputs);

    public Dictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs) => executor.Run(inputs);

    /// <summary>Reads one serialized TensorProto (an ONNX test's input_N.pb or output_N.pb).</summary>
    public static Tensor ReadTensor(string path) => OnnxTensors.ReadTensorFile(path);

    sealed class Importer(string? baseDir, string file, Dictionary<string, long> opsets)
    {
        /// <param name="detached">for the main graph of a split file: where its initializers' raw_data lie</param>
        public G ImportGraph(GraphProto g, HashSet<string>? outerNames,
            OnnxPayloads? detached = null)
        {
            var where = $"{file}: graph '{g.Name}'";
            if (g.SparseInitializer.Count > 0) throw new ModelFormatException($"{where}: unsupported sparse initializers");
            var initializers = new Dictionary<string, Tensor>();
            for (int i = 0; i < g.Initializer.Count; i++)
            {
                var t = g.Initializer[i];
                if (t.Name.Length == 0) throw new ModelFormatException($"{where}: an initializer has no name");
                if (!initializers.TryAdd(t.Name, OnnxTensors.ToTensor(t, baseDir, where, detached?[i])))
                    throw new ModelFormatException($"{where}: initializer '{t.Name}' appears twice");
            }
            var graph = new G
            {
                Name = g.Name,
                Initializers = initializers,
                Opsets = opsets,
                Inputs = g.Input.Select(vi => Value(vi, where)).ToList(),
                Outputs = g.Output.Select(vi => Value(vi, where)).ToList(),
            };
            foreach (var vi in graph.Inputs.Concat(graph.Outputs))
                if (vi.Kind != ValueKind.Tensor && vi.Kind != ValueKind.Unknown)
                    throw new ModelFormatException($"{where}: unsupported value kind {vi.Kind} for '{vi.Name}'");
            foreach (var vi in g.Input.Concat(g.Output))
                if (vi.Type?.TensorType is { } tt && tt.ElemType != 0 && tt.ElemType != OnnxTypes.String && OnnxTypes.TryToDType(tt.ElemType) is null)
                    throw new ModelFormatException($"{where}: unsupported element type {OnnxTypes.Name(tt.ElemType)} for '{vi.Name}'");
            foreach (var n in g.Node) graph.Nodes.Add(ImportNode(n, where));
            return graph;
        }

        Node ImportNode(NodeProto n, string where)
        {
            var node = new Node
            {
                OpType = n.OpType,
                Domain = n.Domain == "ai.onnx" ? "" : n.Domain,
                Name = n.Name,
                Inputs = n.Input.ToArray(),
                Outputs = n.Output.ToArray(),
            };
            if (node.OpType.Length == 0) throw new ModelFormatException($"{where}: a node has no op_type");
            foreach (var a in n.Attribute)
            {
                if (a.RefAttrName.Length > 0)
                    throw new ModelFormatException($"{where}: {node.Describe()}: unsupported attribute reference '{a.Name}'");
                if (!node.Attributes.TryAdd(a.Name, Attribute(a, $"{where}: {node.Describe()}")))
                    throw new ModelFormatException($"{where}: {node.Describe()}: attribute '{a.Name}' appears twice");
            }
            return node;
        }

        NodeAttribute Attribute(AttributeProto a, string where)
        {
            var type = a.Type;
            if (!a.HasType)
            {
                // IR version 1 files may omit the type: infer it from the one field that is set.
                type = a.HasF ? AttributeProto.Types.AttributeType.Float : a.HasI ? AttributeProto.Types.AttributeType.Int
                    : a.HasS ? AttributeProto.Types.AttributeType.String : a.T is not null ? AttributeProto.Types.AttributeType.Tensor
                    : a.G is not null ? AttributeProto.Types.AttributeType.Graph : a.Floats.Count > 0 ? AttributeProto.Types.AttributeType.Floats
                    : a.Ints.Count > 0 ? AttributeProto.Types.AttributeType.Ints : a.Strings.Count > 0 ? AttributeProto.Types.AttributeType.Strings
                    : a.Tensors.Count > 0 ? AttributeProto.Types.AttributeType.Tensors : a.Graphs.Count > 0 ? AttributeProto.Types.AttributeType.Graphs
                    : AttributeProto.Types.AttributeType.Undefined;
            }
            var at = $"{where}: attribute '{a.Name}'";
            return type switch
            {
                AttributeProto.Types.AttributeType.Float => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Float, Float = a.F },
                AttributeProto.Types.AttributeType.Int => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Int, Int = a.I },
                AttributeProto.Types.AttributeType.String => new NodeAttribute { Name = a.Name, Kind = AttributeKind.String, String = a.S.ToStringUtf8() },
                AttributeProto.Types.AttributeType.Tensor => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Tensor, Tensor = OnnxTensors.ToTensor(a.T ?? new TensorProto(), baseDir, at) },
                AttributeProto.Types.AttributeType.Graph => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Graph, Graph = ImportGraph(a.G ?? new GraphProto(), null) },
                AttributeProto.Types.AttributeType.Floats => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Floats, Floats = a.Floats.ToArray() },
                AttributeProto.Types.AttributeType.Ints => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Ints, Ints = a.Ints.ToArray() },
                AttributeProto.Types.AttributeType.Strings => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Strings, Strings = a.Strings.Select(s => s.ToStringUtf8()).ToArray() },
                AttributeProto.Types.AttributeType.Tensors => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Tensors, Tensors = a.Tensors.Select(t => OnnxTensors.ToTensor(t, baseDir, at)).ToArray() },
                AttributeProto.Types.AttributeType.Graphs => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Graphs, Graphs = a.Graphs.Select(x => ImportGraph(x, null)).ToArray() },
                _ => new NodeAttribute { Name = a.Name, Kind = AttributeKind.Other },
            };
        }

        static ValueInfo Value(ValueInfoProto vi, string where)
        {
            var t = vi.Type;
            if (t is null) return new ValueInfo(vi.Name, null, null, ValueKind.Unknown);
            switch (t.ValueCase)
            {
                case TypeProto.ValueOneofCase.TensorType:
                    var tt = t.TensorType;
                    var shape = tt.Shape?.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue
                        ? SymbolicDim.Fixed(d.DimValue) : SymbolicDim.Symbol(d.DimParam)).ToArray();
                    return new ValueInfo(vi.Name, OnnxTypes.TryToDType(tt.ElemType), shape);
                case TypeProto.ValueOneofCase.SequenceType: return new ValueInfo(vi.Name, null, null, ValueKind.Sequence);
                case TypeProto.ValueOneofCase.MapType: return new ValueInfo(vi.Name, null, null, ValueKind.Map);
                case TypeProto.ValueOneofCase.OptionalType: return new ValueInfo(vi.Name, null, null, ValueKind.Optional);
                case TypeProto.ValueOneofCase.SparseTensorType: return new ValueInfo(vi.Name, null, null, ValueKind.SparseTensor);
                default: return new ValueInfo(vi.Name, null, null, ValueKind.Unknown);
            }
        }
    }
}
