using System.Runtime.InteropServices;
using Google.Protobuf;
using Nabla.Interop.Onnx.Proto;
using Nabla.NN;

namespace Nabla.Interop.Onnx.Export;

/// <summary>
/// A value in the graph being exported: its ONNX name and the tensor Nabla computed for it on the example input.
/// The example gives every later step exact ranks and static sizes (only the batch dimension is left symbolic).
/// </summary>
public readonly record struct OnnxValue(string Name, Tensor Example);

/// <summary>
/// Builds one ONNX graph: nodes, initializers (raw little-endian data), unique value names. Module converters,
/// built in or registered with <see cref="OnnxExporter.Register{TModule}"/>, emit their nodes through it.
/// </summary>
public sealed class OnnxGraphBuilder
{
    readonly GraphProto graph = new();
    readonly HashSet<string> names = new(StringComparer.Ordinal);
    readonly Dictionary<Tensor, string> initializerOf = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<float, string> scalars = new();
    readonly OnnxExporter.ConverterTable converters;

    internal OnnxGraphBuilder(int opset, OnnxExporter.ConverterTable converters)
    {
        Opset = opset;
        this.converters = converters;
    }

    /// <summary>The ai.onnx opset the graph targets.</summary>
    public int Opset { get; }

    internal GraphProto Graph => graph;

    /// <summary>Emits the nodes of <paramref name="module"/> applied to <paramref name="input"/>; <paramref name="path"/> is its state-dict prefix.</summary>
    public OnnxValue Emit(Module module, string path, OnnxValue input) => converters.Convert(this, module, path, input);

    /// <summary>A name not yet used in the graph, derived from <paramref name="hint"/>.</summary>
    public string UniqueName(string hint)
    {
        if (hint.Length == 0) hint = "value";
        if (names.Add(hint)) return hint;
        for (int i = 1; ; i++)
        {
            var candidate = $"{hint}_{i}";
            if (names.Add(candidate)) return candidate;
        }
    }

    /// <summary>
    /// Adds <paramref name="tensor"/> as an initializer named <paramref name="name"/> (made unique) and returns the name.
    /// The same tensor object added twice (tied weights) becomes one initializer.
    /// </summary>
    public string Initializer(string name, Tensor tensor)
    {
        if (initializerOf.TryGetValue(tensor, out var existing)) return existing;
        var unique = UniqueName(name);
        graph.Initializer.Add(ToProto(unique, tensor));
        initializerOf[tensor] = unique;
        return unique;
    }

    /// <summary>A float32 scalar (rank 0) initializer, for the constants of expanded formulas.
    /// One initializer per distinct value.</summary>
    public string Scalar(string name, float value)
    {
        if (!scalars.TryGetValue(value, out var existing))
            scalars[value] = existing = Initializer(name, Tensor.FromArray(new[] { value }).Reshape([]));
        return existing;
    }

    /// <summary>A 1-D int64 initializer (Reshape shapes, ReduceMean axes from opset 18).</summary>
    public string Int64s(string name, params long[] values) => Initializer(name, Tensor.FromArray(values, values.Length));

    /// <summary>Adds a node and returns the name of its (single) output.</summary>
    /// <param name="nodeName">used for the node and, suffixed, for its output value</param>
    /// <param name="inputs">input value names; "" marks an omitted optional input</param>
    public string Node(string opType, string nodeName, IReadOnlyList<string> inputs, params (string name, object value)[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = UniqueName(nodeName) };
        node.Input.AddRange(inputs);
        var output = UniqueName(node.Name + "_output");
        node.Output.Add(output);
        foreach (var (n, v) in attributes) node.Attribute.Add(Attribute(n, v));
        graph.Node.Add(node);
        return output;
    }

    /// <summary>Renames the output of the last node to <paramref name="name"/> when it produced <paramref name="value"/>; false otherwise.</summary>
    internal bool TryRenameLastOutput(string value, string name)
    {
        if (graph.Node.Count == 0) return false;
        var last = graph.Node[^1];
        if (last.Output.Count != 1 || last.Output[0] != value || graph.Node.Take(graph.Node.Count - 1).Any(n => n.Input.Contains(value))) return false;
        if (!names.Add(name)) return false;
        last.Output[0] = name;
        return true;
    }

    static AttributeProto Attribute(string name, object value) => value switch
    {
        int i => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = i },
        long l => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = l },
        float f => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = f },
        double d => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = (float)d },
        string s => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(s) },
        long[] ls => Ints(name, ls),
        int[] iss => Ints(name, iss.Select(x => (long)x)),
        _ => throw new NablaException($"onnx export: attribute '{name}' has an unsupported value type {value.GetType().Name}"),
    };

    static AttributeProto Ints(string name, IEnumerable<long> values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>A TensorProto with the elements in raw_data (fixed-width little-endian, row-major).</summary>
    internal static TensorProto ToProto(string name, Tensor t)
    {
        var p = new TensorProto { Name = name, DataType = DataType(t.DType, name) };
        p.Dims.AddRange(t.Shape.Select(d => (long)d));
        byte[] bytes = t.DType switch
        {
            DType.Float32 => LittleEndian<float>(t.ToArray<float>(), 4),
            DType.Float64 => LittleEndian<double>(t.ToArray<double>(), 8),
            DType.Int64 => LittleEndian<long>(t.ToArray<long>(), 8),
            DType.Int32 => LittleEndian<int>(t.ToArray<int>(), 4),
            DType.Int8 => MemoryMarshal.AsBytes(t.ToArray<sbyte>().AsSpan()).ToArray(),
            DType.UInt8 => t.ToArray<byte>(),
            DType.Bool => t.ToArray<bool>().Select(b => b ? (byte)1 : (byte)0).ToArray(),
            DType.Int16 => LittleEndian<short>(t.ToArray<short>(), 2),
            DType.UInt16 => LittleEndian<ushort>(t.ToArray<ushort>(), 2),
            DType.UInt32 => LittleEndian<uint>(t.ToArray<uint>(), 4),
            DType.UInt64 => LittleEndian<ulong>(t.ToArray<ulong>(), 8),
            _ => throw new NablaException($"onnx export: tensor '{name}' has dtype {t.DType.TorchName()}, which the exporter does not write"),
        };
        p.RawData = ByteString.CopyFrom(bytes);
        return p;
    }

    internal static int DataType(DType t, string name) => t switch
    {
        DType.Float32 or DType.Float64 or DType.Int64 or DType.Int32 or DType.Int8 or DType.UInt8 or DType.Bool or DType.Float16 or DType.BFloat16
            or DType.Int16 or DType.UInt16 or DType.UInt32 or DType.UInt64 => OnnxTypes.FromDType(t),
        _ => throw new NablaException($"onnx export: '{name}' has dtype {t.TorchName()}, which has no ONNX element type"),
    };

    static byte[] LittleEndian<T>(T[] values, int size) where T : struct
    {
        var bytes = MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        if (!BitConverter.IsLittleEndian)
            for (int i = 0; i < bytes.Length; i += size) bytes.AsSpan(i, size).Reverse();
        return bytes;
    }
}
