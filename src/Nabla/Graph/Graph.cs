namespace Nabla.Graph;

/// <summary>One dimension of a declared shape: a fixed size, or a symbolic name (batch, seq) bound at run time.</summary>
public readonly record struct SymbolicDim(long? Value, string? Name)
{
    public static SymbolicDim Fixed(long value) => new(value, null);
    public static SymbolicDim Symbol(string? name) => new(null, name);
    public override string ToString() => Value?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? Name ?? "?";
}

/// <summary>What a graph value holds. Only tensors run today; the others are declared so importers can name them.</summary>
public enum ValueKind { Tensor, Sequence, Map, Optional, SparseTensor, Unknown }

/// <summary>A named graph input or output: element type and shape where known (a null shape means any rank).</summary>
public sealed record ValueInfo(string Name, DType? DType, SymbolicDim[]? Shape, ValueKind Kind = ValueKind.Tensor)
{
    public override string ToString() =>
        $"{Name}: {Kind} {DType?.ToString() ?? "?"}{(Shape is null ? "" : "[" + string.Join(", ", Shape) + "]")}";
}

public enum AttributeKind { Float, Int, String, Tensor, Graph, Floats, Ints, Strings, Tensors, Graphs, Other }

/// <summary>One node attribute; exactly the field matching <see cref="Kind"/> is set.</summary>
public sealed class NodeAttribute
{
    public required string Name { get; init; }
    public required AttributeKind Kind { get; init; }
    public double Float { get; init; }
    public long Int { get; init; }
    public string? String { get; init; }
    public Tensor? Tensor { get; init; }
    public Graph? Graph { get; init; }
    public float[]? Floats { get; init; }
    public long[]? Ints { get; init; }
    public string[]? Strings { get; init; }
    public Tensor[]? Tensors { get; init; }
    public Graph[]? Graphs { get; init; }

    public override string ToString() => Kind switch
    {
        AttributeKind.Float => $"{Name}={Float}",
        AttributeKind.Int => $"{Name}={Int}",
        AttributeKind.String => $"{Name}='{String}'",
        AttributeKind.Ints => $"{Name}=[{string.Join(", ", Ints ?? [])}]",
        AttributeKind.Floats => $"{Name}=[{string.Join(", ", Floats ?? [])}]",
        _ => $"{Name}: {Kind}",
    };
}

/// <summary>
/// One operator application. <see cref="Inputs"/> and <see cref="Outputs"/> are value names; an empty name is an
/// omitted optional input or an unused optional output.
/// </summary>
public sealed class Node
{
    public required string OpType { get; init; }
    public string Domain { get; init; } = "";
    public string Name { get; init; } = "";
    public required string[] Inputs { get; init; }
    public required string[] Outputs { get; init; }
    public Dictionary<string, NodeAttribute> Attributes { get; init; } = new();

    /// <summary>"name (OpType)" for error messages; unnamed nodes are named by their first output.</summary>
    public string Describe() => $"node '{(Name.Length > 0 ? Name : Outputs.FirstOrDefault() ?? "?")}' ({(Domain.Length > 0 ? Domain + "." : "")}{OpType})";

    public bool Has(string name) => Attributes.ContainsKey(name);

    NodeAttribute? Get(string name, AttributeKind kind)
    {
        if (!Attributes.TryGetValue(name, out var a)) return null;
        if (a.Kind != kind)
            throw new ModelFormatException($"{Describe()}: attribute '{name}' should be {kind}, got {a.Kind}");
        return a;
    }

    public long GetInt(string name, long fallback) => Get(name, AttributeKind.Int)?.Int ?? fallback;
    public long? GetIntOrNull(string name) => Get(name, AttributeKind.Int)?.Int;
    public double GetFloat(string name, double fallback) => Get(name, AttributeKind.Float)?.Float ?? fallback;
    public string GetString(string name, string fallback) => Get(name, AttributeKind.String)?.String ?? fallback;
    public long[]? GetInts(string name) => Get(name, AttributeKind.Ints)?.Ints;
    public float[]? GetFloats(string name) => Get(name, AttributeKind.Floats)?.Floats;
    public string[]? GetStrings(string name) => Get(name, AttributeKind.Strings)?.Strings;
    public Tensor? GetTensor(string name) => Get(name, AttributeKind.Tensor)?.Tensor;
    public Graph? GetGraph(string name) => Get(name, AttributeKind.Graph)?.Graph;

    public override string ToString() =>
        $"{Describe()}({string.Join(", ", Inputs)}) -> ({string.Join(", ", Outputs)}) {string.Join(" ", Attributes.Values)}";
}

/// <summary>
/// A static dataflow graph: named inputs and outputs, constant initializers, and nodes. The same IR serves ONNX
/// import, tracing and export. Subgraphs (If/Loop bodies) are graphs held in node attributes and may read values of
/// the enclosing graph by name.
/// </summary>
public sealed class Graph
{
    public string Name { get; init; } = "";
    public List<ValueInfo> Inputs { get; init; } = [];
    public List<ValueInfo> Outputs { get; init; } = [];
    public Dictionary<string, Tensor> Initializers { get; init; } = new();
    public List<Node> Nodes { get; init; } = [];

    /// <summary>Operator set version per domain ("" is the default domain); subgraphs share their parent's.</summary>
    public Dictionary<string, long> Opsets { get; init; } = new();

    public long OpsetOf(string domain) =>
        Opsets.TryGetValue(domain, out var v) ? v : domain == "ai.onnx" && Opsets.TryGetValue("", out var d) ? d : 0;
}
