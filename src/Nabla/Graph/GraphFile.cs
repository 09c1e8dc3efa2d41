using System.Text.Encodings.Web;
using System.Text.Json;
using Nabla.IO;

namespace Nabla.Graph;

/// <summary>
/// The saved Nabla graph: a JSON description (<c>model.nabla.json</c>: format, producer, opsets, inputs, outputs,
/// initializers and nodes with their attributes, subgraphs nested) beside a safetensors file (<c>model.safetensors</c>)
/// holding every initializer under its value name and every tensor attribute and subgraph initializer under a generated
/// key. Writing is deterministic; loading checks everything and throws <see cref="ModelFormatException"/> naming the
/// file and the item. The layout is documented in <c>docs/nabla-graph-format.md</c>.
/// <c>graph.Save("model.nabla.json"); var g = GraphFile.Load("model.nabla.json", resolver);</c>
/// </summary>
public static class GraphFile
{
    /// <summary>The value of the <c>format</c> field.</summary>
    public const string FormatName = "nabla.graph";

    /// <summary>The format version this code writes and the only one it reads.</summary>
    public const int FormatVersion = 1;

    /// <summary>The file name ending of a saved graph's JSON part.</summary>
    public const string Extension = ".nabla.json";

    /// <summary>Whether <paramref name="path"/> names a saved graph (ends in <c>.nabla.json</c>).</summary>
    public static bool IsGraphFile(string path) => path.EndsWith(Extension, StringComparison.OrdinalIgnoreCase);

    /// <summary>Where <see cref="Save"/> puts the weights of <paramref name="jsonPath"/>: <c>x.nabla.json</c> → <c>x.safetensors</c>.</summary>
    public static string WeightsPathFor(string jsonPath)
    {
        var name = Path.GetFileName(jsonPath);
        var stem = name.EndsWith(Extension, StringComparison.OrdinalIgnoreCase) ? name[..^Extension.Length]
            : name.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? name[..^".json".Length] : name;
        return Path.Combine(Path.GetDirectoryName(jsonPath) ?? "", stem + ".safetensors");
    }

    // ------------------------------------------------------------------ writing

    /// <summary>
    /// Writes <paramref name="graph"/> to <paramref name="path"/> (JSON) and <see cref="WeightsPathFor"/> (safetensors).
    /// The graph is checked first (undefined values, duplicate definitions, cycles), so a file that saves also loads.
    /// </summary>
    /// <param name="producer">free text recorded in the file (default "nabla VERSION")</param>
    public static void Save(this Graph graph, string path, string? producer = null)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(path);
        try { _ = new GraphExecutor(graph, AnyOp.Instance); }
        catch (ModelFormatException e) { throw new NablaException($"save graph {path}: {e.Message}", e); }
        var weightsPath = WeightsPathFor(path);
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        // Top-level initializers keep their value names; generated keys (subgraph initializers, tensor attributes) must not collide.
        foreach (var (k, t) in graph.Initializers)
        {
            if (k.Length == 0) throw new NablaException($"save graph {path}: an initializer has an empty name");
            weights[k] = t;
        }
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("format", FormatName);
            w.WriteNumber("format_version", FormatVersion);
            w.WriteString("producer", producer ?? $"nabla {typeof(GraphFile).Assembly.GetName().Version?.ToString(3) ?? ""}".TrimEnd());
            w.WriteString("weights", Path.GetFileName(weightsPath));
            w.WriteStartObject("opsets");
            foreach (var (domain, version) in graph.Opsets.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteNumber(domain, version);
            w.WriteEndObject();
            w.WritePropertyName("graph");
            new Writer(weights, path).WriteGraph(w, graph, "", topLevel: true);
            w.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        SafeTensors.Save(weightsPath, weights, new Dictionary<string, string> { ["format"] = FormatName });
        Nabla.IO.AtomicFile.WriteAllBytes(full, buffer.ToArray());
    }

    sealed class Writer(Dictionary<string, Tensor> weights, string path)
    {
        string AddWeight(string key, Tensor t)
        {
            var unique = key;
            for (int k = 2; weights.ContainsKey(unique); k++) unique = $"{key}#{k}";
            weights[unique] = t;
            return unique;
        }

        public void WriteGraph(Utf8JsonWriter w, Graph g, string scope, bool topLevel)
        {
            w.WriteStartObject();
            w.WriteString("name", g.Name);
            w.WriteStartArray("inputs");
            foreach (var v in g.Inputs) WriteValue(w, v);
            w.WriteEndArray();
            w.WriteStartArray("outputs");
            foreach (var v in g.Outputs) WriteValue(w, v);
            w.WriteEndArray();
            w.WriteStartArray("initializers");
            foreach (var (name, t) in g.Initializers.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                w.WriteStartObject();
                w.WriteString("name", name);
                WriteTensorRef(w, t, topLevel ? name : AddWeight($"{scope}initializers.{name}", t));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("nodes");
            for (int i = 0; i < g.Nodes.Count; i++)
            {
                var n = g.Nodes[i];
                w.WriteStartObject();
                w.WriteString("op", n.OpType);
                if (n.Domain.Length > 0) w.WriteString("domain", n.Domain);
                if (n.Name.Length > 0) w.WriteString("name", n.Name);
                WriteStrings(w, "inputs", n.Inputs);
                WriteStrings(w, "outputs", n.Outputs);
                if (n.Attributes.Count > 0)
                {
                    w.WriteStartArray("attributes");
                    foreach (var a in n.Attributes.Values.OrderBy(a => a.Name, StringComparer.Ordinal))
                        WriteAttribute(w, n, a, $"{scope}nodes.{i}.{a.Name}");
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }

        void WriteAttribute(Utf8JsonWriter w, Node n, NodeAttribute a, string key)
        {
            w.WriteStartObject();
            w.WriteString("name", a.Name);
            w.WriteString("type", KindName(a.Kind));
            string Missing() => throw new NablaException($"save graph {path}: {n.Describe()}: attribute '{a.Name}' of kind {a.Kind} has no value");
            switch (a.Kind)
            {
                case AttributeKind.Float: w.WritePropertyName("value"); WriteDouble(w, a.Float); break;
                case AttributeKind.Int: w.WriteNumber("value", a.Int); break;
                case AttributeKind.String: w.WriteString("value", a.String ?? Missing()); break;
                case AttributeKind.Tensor:
                    w.WriteStartObject("value");
                    var t = a.Tensor ?? throw new NablaException($"save graph {path}: {n.Describe()}: tensor attribute '{a.Name}' has no value");
                    WriteTensorRef(w, t, AddWeight(key, t));
                    w.WriteEndObject();
                    break;
                case AttributeKind.Graph:
                    w.WritePropertyName("value");
                    WriteGraph(w, a.Graph ?? throw new NablaException($"save graph {path}: {n.Describe()}: graph attribute '{a.Name}' has no value"), key + ".", topLevel: false);
                    break;
                case AttributeKind.Floats:
                    w.WriteStartArray("value");
                    foreach (var f in a.Floats ?? []) WriteDouble(w, f);
                    w.WriteEndArray();
                    break;
                case AttributeKind.Ints:
                    w.WriteStartArray("value");
                    foreach (var x in a.Ints ?? []) w.WriteNumberValue(x);
                    w.WriteEndArray();
                    break;
                case AttributeKind.Strings: WriteStrings(w, "value", a.Strings ?? []); break;
                case AttributeKind.Tensors:
                    w.WriteStartArray("value");
                    var ts = a.Tensors ?? [];
                    for (int j = 0; j < ts.Length; j++)
                    {
                        w.WriteStartObject();
                        WriteTensorRef(w, ts[j], AddWeight($"{key}.{j}", ts[j]));
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    break;
                case AttributeKind.Graphs:
                    w.WriteStartArray("value");
                    var gs = a.Graphs ?? [];
                    for (int j = 0; j < gs.Length; j++) WriteGraph(w, gs[j], $"{key}.{j}.", topLevel: false);
                    w.WriteEndArray();
                    break;
            }
            w.WriteEndObject();
        }
    }

    static void WriteTensorRef(Utf8JsonWriter w, Tensor t, string key)
    {
        w.WriteString("dtype", DTypeName(t.DType));
        w.WriteStartArray("shape");
        foreach (var d in t.Shape) w.WriteNumberValue(d);
        w.WriteEndArray();
        w.WriteString("weight", key);
    }

    static void WriteValue(Utf8JsonWriter w, ValueInfo v)
    {
        w.WriteStartObject();
        w.WriteString("name", v.Name);
        if (v.Kind != ValueKind.Tensor) w.WriteString("kind", v.Kind.ToString().ToLowerInvariant());
        if (v.DType is { } dt) w.WriteString("dtype", DTypeName(dt));
        if (v.Shape is { } shape)
        {
            w.WriteStartArray("shape");
            foreach (var d in shape)
            {
                if (d.Value is { } n) w.WriteNumberValue(n);
                else if (d.Name is { } s) w.WriteStringValue(s);
                else w.WriteNullValue();
            }
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    static void WriteStrings(Utf8JsonWriter w, string name, IEnumerable<string> values)
    {
        w.WriteStartArray(name);
        foreach (var s in values) w.WriteStringValue(s);
        w.WriteEndArray();
    }

    // JSON has no NaN or infinities: those are written as the strings "NaN", "Infinity", "-Infinity".
    static void WriteDouble(Utf8JsonWriter w, double x)
    {
        if (double.IsNaN(x)) w.WriteStringValue("NaN");
        else if (double.IsPositiveInfinity(x)) w.WriteStringValue("Infinity");
        else if (double.IsNegativeInfinity(x)) w.WriteStringValue("-Infinity");
        else w.WriteNumberValue(x);
    }

    static void WriteDouble(Utf8JsonWriter w, float x)
    {
        if (float.IsFinite(x)) w.WriteNumberValue(x);
        else WriteDouble(w, (double)x);
    }

    static string DTypeName(DType d) => d.ToString().ToLowerInvariant();

    static string KindName(AttributeKind k) => k.ToString().ToLowerInvariant();

    // ------------------------------------------------------------------ reading

    /// <summary>Loads a saved graph; see <see cref="Read"/>.</summary>
    public static Graph Load(string path, IOpResolver? resolver = null) => Read(path, resolver).Graph;

    /// <summary>
    /// Loads a saved graph and its weights. Checks the format name and version, every field's type, that the weights
    /// file holds exactly the tensors the JSON declares with the declared dtypes and shapes, and the graph itself
    /// (undefined values, duplicate definitions, cycles, and with a <paramref name="resolver"/> every operator).
    /// </summary>
    /// <exception cref="ModelFormatException">naming the file and the item that is wrong.</exception>
    public static (Graph Graph, string Producer) Read(string path, IOpResolver? resolver = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ModelFormatException($"{path}: {e.Message}", e); }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 256, AllowDuplicateProperties = false }); }
        catch (JsonException e) { throw new ModelFormatException($"{path}: not valid JSON: {e.Message}", e); }
        using (doc)
        {
            var root = doc.RootElement;
            var r = new Reader(path);
            r.Expect(root, JsonValueKind.Object, "the top level");
            var format = r.Str(root, "format", "the top level");
            if (format != FormatName) throw r.Error($"format is '{format}', expected '{FormatName}'");
            var versionElement = r.Prop(root, "format_version", "the top level");
            if (versionElement.ValueKind != JsonValueKind.Number || !versionElement.TryGetInt64(out long version))
                throw r.Error("format_version must be an integer");
            if (version != FormatVersion)
                throw r.Error($"unsupported format version {version} (this Nabla reads version {FormatVersion})");
            var producer = root.TryGetProperty("producer", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString()! : "";
            var weightsName = r.Str(root, "weights", "the top level");
            if (weightsName.Length == 0 || weightsName != Path.GetFileName(weightsName) || weightsName is "." or "..")
                throw r.Error($"weights '{weightsName}' must be a plain file name beside the graph file");
            var opsets = new Dictionary<string, long>();
            var opsetsElement = r.Prop(root, "opsets", "the top level");
            r.Expect(opsetsElement, JsonValueKind.Object, "opsets");
            foreach (var o in opsetsElement.EnumerateObject())
                opsets[o.Name] = r.Long(o.Value, $"opsets['{o.Name}']");

            var weightsPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, weightsName);
            if (!File.Exists(weightsPath)) throw r.Error($"the weights file {weightsName} is missing (expected at {weightsPath})");
            Graph graph;
            using (var file = OpenWeights(weightsPath))
            {
                r.Weights = file;
                r.WeightsName = weightsName;
                graph = r.ReadGraph(r.Prop(root, "graph", "the top level"), "graph", opsets, topLevel: true);
                var extra = file.Tensors.Select(t => t.Name).Where(k => !r.Used.Contains(k)).Order(StringComparer.Ordinal).ToList();
                if (extra.Count > 0)
                    throw r.Error($"{weightsName} holds {extra.Count} tensor(s) the graph does not declare: {string.Join(", ", extra.Take(5).Select(k => $"'{k}'"))}{(extra.Count > 5 ? ", ..." : "")}");
            }
            try { _ = new GraphExecutor(graph, resolver ?? AnyOp.Instance); }
            catch (ModelFormatException e) { throw new ModelFormatException($"{path}: {e.Message}", e); }
            return (graph, producer);
        }
    }

    static SafeTensorsFile OpenWeights(string path)
    {
        try { return SafeTensorsFile.Open(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ModelFormatException($"{path}: {e.Message}", e); }
    }

    sealed class Reader(string path)
    {
        public SafeTensorsFile? Weights;
        public string WeightsName = "";
        public readonly HashSet<string> Used = new(StringComparer.Ordinal);

        public ModelFormatException Error(string message) => new($"{path}: {message}");

        public JsonElement Prop(JsonElement obj, string name, string where)
        {
            if (obj.ValueKind != JsonValueKind.Object) throw Error($"{where} must be an object");
            return obj.TryGetProperty(name, out var v) ? v : throw Error($"{where}: field '{name}' is missing");
        }

        public void Expect(JsonElement e, JsonValueKind kind, string where)
        {
            if (e.ValueKind != kind) throw Error($"{where} must be {Article(kind)}, got {e.ValueKind.ToString().ToLowerInvariant()}");
        }

        static string Article(JsonValueKind k) => k switch
        {
            JsonValueKind.Object => "an object",
            JsonValueKind.Array => "an array",
            JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number",
            _ => k.ToString().ToLowerInvariant(),
        };

        public string Str(JsonElement obj, string name, string where)
        {
            var v = Prop(obj, name, where);
            Expect(v, JsonValueKind.String, $"{where}: '{name}'");
            return v.GetString()!;
        }

        string OptStr(JsonElement obj, string name, string where)
        {
            if (!obj.TryGetProperty(name, out var v)) return "";
            Expect(v, JsonValueKind.String, $"{where}: '{name}'");
            return v.GetString()!;
        }

        public long Long(JsonElement e, string where) =>
            e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out var x) ? x : throw Error($"{where} must be an integer");

        double Double(JsonElement e, string where) => e.ValueKind switch
        {
            JsonValueKind.Number => e.GetDouble(),
            JsonValueKind.String => e.GetString() switch
            {
                "NaN" => double.NaN,
                "Infinity" => double.PositiveInfinity,
                "-Infinity" => double.NegativeInfinity,
                var s => throw Error($"{where}: '{s}' is not a number"),
            },
            _ => throw Error($"{where} must be a number"),
        };

        JsonElement.ArrayEnumerator Array(JsonElement obj, string name, string where)
        {
            var v = Prop(obj, name, where);
            Expect(v, JsonValueKind.Array, $"{where}: '{name}'");
            return v.EnumerateArray();
        }

        string[] Strings(JsonElement obj, string name, string where)
        {
            var list = new List<string>();
            foreach (var s in Array(obj, name, where))
            {
                Expect(s, JsonValueKind.String, $"{where}: '{name}'[{list.Count}]");
                list.Add(s.GetString()!);
            }
            return [.. list];
        }

        DType ParseDType(string name, string where) =>
            name.Length > 0 && char.IsAsciiLetterLower(name[0]) && Enum.TryParse<DType>(name, ignoreCase: true, out var d) && Enum.IsDefined(d)
                ? d : throw Error($"{where}: unknown dtype '{name}'");

        public Graph ReadGraph(JsonElement e, string where, Dictionary<string, long> opsets, bool topLevel)
        {
            Expect(e, JsonValueKind.Object, where);
            var g = new Graph { Name = OptStr(e, "name", where), Opsets = opsets };
            where = g.Name.Length > 0 ? $"{where} '{g.Name}'" : where;
            int i = 0;
            foreach (var v in Array(e, "inputs", where)) g.Inputs.Add(ReadValue(v, $"{where}: inputs[{i++}]"));
            i = 0;
            foreach (var v in Array(e, "outputs", where)) g.Outputs.Add(ReadValue(v, $"{where}: outputs[{i++}]"));
            i = 0;
            foreach (var t in Array(e, "initializers", where))
            {
                var at = $"{where}: initializers[{i++}]";
                var name = Str(t, "name", at);
                if (name.Length == 0) throw Error($"{at}: the name is empty");
                at = $"{where}: initializer '{name}'";
                var tensor = ReadTensorRef(t, at);
                if (topLevel && KeyOf(t, at) != name) throw Error($"{at}: a top-level initializer's weight must be stored under its own name");
                if (!g.Initializers.TryAdd(name, tensor)) throw Error($"{at} appears twice");
            }
            i = 0;
            foreach (var n in Array(e, "nodes", where)) g.Nodes.Add(ReadNode(n, $"{where}: nodes[{i++}]", opsets));
            return g;
        }

        ValueInfo ReadValue(JsonElement v, string where)
        {
            var name = Str(v, "name", where);
            where = $"{where} ('{name}')";
            var kind = ValueKind.Tensor;
            if (v.TryGetProperty("kind", out var k))
            {
                Expect(k, JsonValueKind.String, $"{where}: 'kind'");
                var s = k.GetString()!;
                if (s.Length == 0 || !char.IsAsciiLetterLower(s[0]) || !Enum.TryParse(s, ignoreCase: true, out kind) || !Enum.IsDefined(kind))
                    throw Error($"{where}: unknown value kind '{s}'");
            }
            DType? dtype = null;
            if (v.TryGetProperty("dtype", out var dt) && dt.ValueKind != JsonValueKind.Null)
            {
                Expect(dt, JsonValueKind.String, $"{where}: 'dtype'");
                dtype = ParseDType(dt.GetString()!, where);
            }
            SymbolicDim[]? shape = null;
            if (v.TryGetProperty("shape", out var sh) && sh.ValueKind != JsonValueKind.Null)
            {
                Expect(sh, JsonValueKind.Array, $"{where}: 'shape'");
                var dims = new List<SymbolicDim>();
                foreach (var d in sh.EnumerateArray())
                {
                    dims.Add(d.ValueKind switch
                    {
                        // NOTE: declared sizes round-trip as given (some ONNX exporters write -1 for "unknown").
                        JsonValueKind.Number => SymbolicDim.Fixed(Long(d, $"{where}: shape[{dims.Count}]")),
                        JsonValueKind.String => SymbolicDim.Symbol(d.GetString()),
                        JsonValueKind.Null => SymbolicDim.Symbol(null),
                        _ => throw Error($"{where}: shape[{dims.Count}] must be an integer, a name or null"),
                    });
                }
                shape = [.. dims];
            }
            return new ValueInfo(name, dtype, shape, kind);
        }

        string KeyOf(JsonElement t, string where) => Str(t, "weight", where);

        /// <summary>A tensor stored in the weights file: the JSON's dtype and shape must match the file's entry.</summary>
        Tensor ReadTensorRef(JsonElement t, string where)
        {
            var dtype = ParseDType(Str(t, "dtype", where), where);
            var shape = new List<int>();
            foreach (var d in Array(t, "shape", where))
            {
                long n = Long(d, $"{where}: shape[{shape.Count}]");
                if (n is < 0 or > int.MaxValue) throw Error($"{where}: shape[{shape.Count}] = {n} is out of range");
                shape.Add((int)n);
            }
            var key = KeyOf(t, where);
            var file = Weights!;
            if (!file.Contains(key)) throw Error($"{where}: weight '{key}' is missing from {WeightsName}");
            var info = file.GetInfo(key);
            if (info.DType != dtype)
                throw Error($"{where}: weight '{key}' is {info.DTypeName} in {WeightsName}, but the graph declares {DTypeName(dtype)}");
            if (!info.Shape.AsSpan().SequenceEqual(shape.ToArray()))
                throw Error($"{where}: weight '{key}' has shape [{string.Join(", ", info.Shape)}] in {WeightsName}, but the graph declares [{string.Join(", ", shape)}]");
            Used.Add(key);
            return file.LoadTensor(key);
        }

        Node ReadNode(JsonElement n, string where, Dictionary<string, long> opsets)
        {
            Expect(n, JsonValueKind.Object, where);
            var op = Str(n, "op", where);
            if (op.Length == 0) throw Error($"{where}: 'op' is empty");
            var node = new Node
            {
                OpType = op,
                Domain = OptStr(n, "domain", where),
                Name = OptStr(n, "name", where),
                Inputs = Strings(n, "inputs", where),
                Outputs = Strings(n, "outputs", where),
            };
            where = $"{where}, {node.Describe()}";
            if (n.TryGetProperty("attributes", out var attrs))
            {
                Expect(attrs, JsonValueKind.Array, $"{where}: 'attributes'");
                foreach (var a in attrs.EnumerateArray())
                {
                    var attr = ReadAttribute(a, where, opsets);
                    if (!node.Attributes.TryAdd(attr.Name, attr)) throw Error($"{where}: attribute '{attr.Name}' appears twice");
                }
            }
            return node;
        }

        NodeAttribute ReadAttribute(JsonElement a, string where, Dictionary<string, long> opsets)
        {
            var name = Str(a, "name", $"{where}: an attribute");
            where = $"{where}: attribute '{name}'";
            var type = Str(a, "type", where);
            if (type.Length == 0 || !char.IsAsciiLetterLower(type[0]) || !Enum.TryParse<AttributeKind>(type, ignoreCase: true, out var kind) || !Enum.IsDefined(kind))
                throw Error($"{where}: unknown attribute type '{type}'");
            if (kind == AttributeKind.Other) return new NodeAttribute { Name = name, Kind = kind };
            var v = Prop(a, "value", where);
            List<T> Items<T>(JsonValueKind? kindOfItem, Func<JsonElement, string, T> read)
            {
                Expect(v, JsonValueKind.Array, $"{where}: 'value'");
                var list = new List<T>();
                foreach (var x in v.EnumerateArray())
                {
                    var at = $"{where}: value[{list.Count}]";
                    if (kindOfItem is { } k) Expect(x, k, at);
                    list.Add(read(x, at));
                }
                return list;
            }
            return kind switch
            {
                AttributeKind.Float => new NodeAttribute { Name = name, Kind = kind, Float = Double(v, where) },
                AttributeKind.Int => new NodeAttribute { Name = name, Kind = kind, Int = Long(v, where) },
                AttributeKind.String => new NodeAttribute
                {
                    Name = name, Kind = kind,
                    String = v.ValueKind == JsonValueKind.String ? v.GetString() : throw Error($"{where}: value must be a string"),
                },
                AttributeKind.Tensor => new NodeAttribute { Name = name, Kind = kind, Tensor = ReadTensorRef(v, where) },
                AttributeKind.Graph => new NodeAttribute { Name = name, Kind = kind, Graph = ReadGraph(v, $"{where}: graph", opsets, topLevel: false) },
                AttributeKind.Floats => new NodeAttribute { Name = name, Kind = kind, Floats = [.. Items(null, (x, at) => (float)Double(x, at))] },
                AttributeKind.Ints => new NodeAttribute { Name = name, Kind = kind, Ints = [.. Items(null, Long)] },
                AttributeKind.Strings => new NodeAttribute { Name = name, Kind = kind, Strings = [.. Items(JsonValueKind.String, (x, _) => x.GetString()!)] },
                AttributeKind.Tensors => new NodeAttribute { Name = name, Kind = kind, Tensors = [.. Items(JsonValueKind.Object, ReadTensorRef)] },
                _ => new NodeAttribute { Name = name, Kind = kind, Graphs = [.. Items(JsonValueKind.Object, (x, at) => ReadGraph(x, $"{at}: graph", opsets, topLevel: false))] },
            };
        }
    }

    /// <summary>Accepts every operator: the structural checks of <see cref="GraphExecutor"/> without kernels.</summary>
    sealed class AnyOp : IOpResolver
    {
        public static readonly AnyOp Instance = new();

        public OpKernel Resolve(Node node, long opset) =>
            _ => throw new NablaException($"{node.Describe()}: the graph was loaded without operator kernels");
    }
}
