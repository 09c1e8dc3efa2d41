using System.Diagnostics;
using System.Text.Json.Nodes;
using Nabla.Graph;
using Nabla.Interop.Onnx;
using Nabla.IO;
using Nabla.Training;
using Xunit;
using static Nabla.OnnxExport.Tests.ExportCheck;
using G = Nabla.Graph.Graph;

namespace Nabla.OnnxExport.Tests;

/// <summary>The saved Nabla graph (model.nabla.json + model.safetensors): round trips, conversion, and every load-time check.</summary>
public sealed class GraphFileTests : IDisposable
{
    readonly string dir = Path.Combine(Path.GetTempPath(), $"nabla-graphfile-{Guid.NewGuid():N}");

    public GraphFileTests() => Directory.CreateDirectory(dir);

    public void Dispose()
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
    }

    string PathOf(string name) => Path.Combine(dir, name);

    /// <summary>A folder of the repository (found upward from the test binaries) or of ../shared.</summary>
    internal static string RepoFile(params string[] parts)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine([d.FullName, .. parts]);
            if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException($"{Path.Combine(parts)} not found above {AppContext.BaseDirectory}");
    }

    static void AssertSame(Tensor expected, Tensor actual, string what, double tol = 0)
    {
        Assert.Equal(expected.DType, actual.DType);
        Assert.True(expected.Shape.SequenceEqual(actual.Shape), $"{what}: shape [{string.Join(", ", actual.Shape)}], expected [{string.Join(", ", expected.Shape)}]");
        var e = expected.To(DType.Float64).ToArray<double>();
        var a = actual.To(DType.Float64).ToArray<double>();
        for (int i = 0; i < e.Length; i++)
            Assert.True(e[i].Equals(a[i]) || Math.Abs(e[i] - a[i]) <= tol * Math.Max(1, Math.Abs(e[i])), $"{what}: element {i} is {a[i]}, expected {e[i]}");
    }

    // ------------------------------------------------------------- round trips

    [Theory]
    [InlineData("mlp")]
    [InlineData("lenet")]
    [InlineData("resnet")]
    public void TracedBuiltinModelRoundTripsAtTwoBatchSizes(string name)
    {
        Tensor.ManualSeed(7);
        var net = BuiltinModels.Create(name);
        RandomizeBatchNorms(net, 70);
        net.Eval();
        var images = Images(1, 28, 300);
        var path = PathOf(name + ".nabla.json");
        net.SaveGraph(path, [images(1)]);
        Assert.True(File.Exists(GraphFile.WeightsPathFor(path)));
        var fused = NablaGraphFiles.Load(path);
        var plain = NablaGraphFiles.Load(path, fuse: false);
        var viaOnnxModel = OnnxModel.Load(path);   // OnnxModel.Load dispatches on .nabla.json
        Assert.Equal("batch", plain.Graph.Inputs[0].Shape![0].Name);
        foreach (int n in new[] { 1, 5 })
        {
            var x = images(n);
            Tensor expected;
            using (GradMode.NoGrad()) expected = net.Forward(x);
            AssertClose(expected, plain.Run(x)[0], $"{name} unfused, batch {n}");
            AssertClose(expected, fused.Run(x)[0], $"{name} fused, batch {n}");
            AssertClose(expected, viaOnnxModel.Run(x)[0], $"{name} via OnnxModel.Load, batch {n}");
        }
        // Every parameter of the module is an initializer stored under its own name.
        var weights = SafeTensors.Load(GraphFile.WeightsPathFor(path));
        foreach (var (pname, p) in net.NamedParameters())
        {
            Assert.True(weights.ContainsKey(pname), $"weight '{pname}' is not in the safetensors file");
            AssertSame(p.Detach(), weights[pname], pname);
        }
    }

    [Fact]
    public void SavingIsDeterministic()
    {
        Tensor.ManualSeed(3);
        var net = BuiltinModels.Create("lenet");
        net.Eval();
        var x = Images(1, 28, 5)(1);
        var a = PathOf("a.nabla.json");
        var b = PathOf("b.nabla.json");
        net.SaveGraph(a, [x]);
        NablaGraphFiles.Load(a, fuse: false).Graph.Save(b, "nabla test");
        // Saving the loaded graph again gives the same bytes (the producer line aside), and saving twice is stable.
        var c = PathOf("c.nabla.json");
        GraphFile.Load(b).Save(c, "nabla test");
        Assert.Equal(File.ReadAllText(b).Replace("b.safetensors", "X"), File.ReadAllText(c).Replace("c.safetensors", "X"));
        Assert.Equal(File.ReadAllBytes(GraphFile.WeightsPathFor(b)).Length, File.ReadAllBytes(GraphFile.WeightsPathFor(c)).Length);
        var wb = SafeTensors.Load(GraphFile.WeightsPathFor(b));
        var wc = SafeTensors.Load(GraphFile.WeightsPathFor(c));
        Assert.Equal(wb.Keys.Order(), wc.Keys.Order());
        var a2 = PathOf("a2.nabla.json");
        net.SaveGraph(a2, [x]);
        Assert.Equal(File.ReadAllText(a).Replace("\"a.safetensors\"", "X"), File.ReadAllText(a2).Replace("\"a2.safetensors\"", "X"));
        Assert.Equal(File.ReadAllBytes(GraphFile.WeightsPathFor(a)), File.ReadAllBytes(GraphFile.WeightsPathFor(a2)));
    }

    /// <summary>A graph whose nodes carry every attribute kind, with tensors in attributes and in a nested subgraph.</summary>
    static G EveryAttributeKind()
    {
        var sub = new G
        {
            Name = "body",
            Inputs = [new ValueInfo("s_in", DType.Float32, [SymbolicDim.Fixed(2)])],
            Outputs = [new ValueInfo("s_out", DType.Float32, [SymbolicDim.Fixed(2)])],
            Initializers = { ["k"] = Tensor.FromArray(new float[] { 3, 4 }, 2) },
            Nodes = { new Node { OpType = "Add", Inputs = ["s_in", "k"], Outputs = ["s_out"] } },
        };
        var g = new G
        {
            Name = "every",
            Opsets = { [""] = 17, ["com.example"] = 2 },
            Inputs = [new ValueInfo("x", DType.Float32, [SymbolicDim.Symbol("batch"), SymbolicDim.Symbol(null), SymbolicDim.Symbol(""), SymbolicDim.Fixed(2)]),
                      new ValueInfo("seq", null, null, ValueKind.Sequence)],
            Outputs = [new ValueInfo("y", null, null)],
            Initializers = { ["w"] = Tensor.FromArray(new long[] { 1, -2, long.MaxValue }, 3), ["flag"] = Tensor.FromArray(new[] { true, false }, 2),
                             ["half"] = Tensor.FromArray(new float[] { 0.5f, -1 }, 2).To(DType.Float16), ["empty"] = Tensor.Zeros([0, 3]) },
        };
        g.Nodes.Add(new Node
        {
            OpType = "Custom", Domain = "com.example", Name = "every_kind", Inputs = ["x", "", "w", "flag", "half", "empty", "seq"], Outputs = ["y", ""],
            Attributes =
            {
                ["f"] = new NodeAttribute { Name = "f", Kind = AttributeKind.Float, Float = 0.1f },
                ["nan"] = new NodeAttribute { Name = "nan", Kind = AttributeKind.Float, Float = double.NaN },
                ["i"] = new NodeAttribute { Name = "i", Kind = AttributeKind.Int, Int = long.MinValue },
                ["s"] = new NodeAttribute { Name = "s", Kind = AttributeKind.String, String = "näme \"quoted\"" },
                ["t"] = new NodeAttribute { Name = "t", Kind = AttributeKind.Tensor, Tensor = Tensor.FromArray(new double[] { Math.PI }, 1) },
                ["scalar"] = new NodeAttribute { Name = "scalar", Kind = AttributeKind.Tensor, Tensor = Tensor.Scalar(2.5f) },
                ["g"] = new NodeAttribute { Name = "g", Kind = AttributeKind.Graph, Graph = sub },
                ["fs"] = new NodeAttribute { Name = "fs", Kind = AttributeKind.Floats, Floats = [1.5f, float.PositiveInfinity, float.NegativeInfinity, -0f] },
                ["is"] = new NodeAttribute { Name = "is", Kind = AttributeKind.Ints, Ints = [] },
                ["ss"] = new NodeAttribute { Name = "ss", Kind = AttributeKind.Strings, Strings = ["a", ""] },
                ["ts"] = new NodeAttribute { Name = "ts", Kind = AttributeKind.Tensors, Tensors = [Tensor.FromArray(new int[] { 7 }, 1), Tensor.FromArray(new byte[] { 1, 2 }, 2)] },
                ["gs"] = new NodeAttribute { Name = "gs", Kind = AttributeKind.Graphs, Graphs = [sub, sub] },
                ["o"] = new NodeAttribute { Name = "o", Kind = AttributeKind.Other },
            },
        });
        return g;
    }

    static void AssertSameGraph(G e, G a, string where)
    {
        Assert.Equal(e.Name, a.Name);
        Assert.Equal(e.Inputs, a.Inputs, ValueInfoEq);
        Assert.Equal(e.Outputs, a.Outputs, ValueInfoEq);
        Assert.Equal(e.Initializers.Keys.Order(StringComparer.Ordinal), a.Initializers.Keys.Order(StringComparer.Ordinal));
        foreach (var (k, t) in e.Initializers) AssertSame(t, a.Initializers[k], $"{where} initializer {k}");
        Assert.Equal(e.Nodes.Count, a.Nodes.Count);
        for (int i = 0; i < e.Nodes.Count; i++)
        {
            var (ne, na) = (e.Nodes[i], a.Nodes[i]);
            Assert.Equal((ne.OpType, ne.Domain, ne.Name), (na.OpType, na.Domain, na.Name));
            Assert.Equal(ne.Inputs, na.Inputs);
            Assert.Equal(ne.Outputs, na.Outputs);
            Assert.Equal(ne.Attributes.Keys.Order(StringComparer.Ordinal), na.Attributes.Keys.Order(StringComparer.Ordinal));
            foreach (var (k, x) in ne.Attributes)
            {
                var y = na.Attributes[k];
                var at = $"{where} {ne.Describe()} attribute {k}";
                Assert.Equal(x.Kind, y.Kind);
                Assert.True(x.Float.Equals(y.Float), $"{at}: {y.Float} != {x.Float}");
                Assert.Equal(x.Int, y.Int);
                Assert.Equal(x.String, y.String);
                Assert.Equal(x.Floats, y.Floats);
                Assert.Equal(x.Ints, y.Ints);
                Assert.Equal(x.Strings, y.Strings);
                if (x.Tensor is not null) AssertSame(x.Tensor, y.Tensor!, at);
                for (int j = 0; j < (x.Tensors?.Length ?? 0); j++) AssertSame(x.Tensors![j], y.Tensors![j], $"{at}[{j}]");
                if (x.Graph is not null) AssertSameGraph(x.Graph, y.Graph!, at);
                for (int j = 0; j < (x.Graphs?.Length ?? 0); j++) AssertSameGraph(x.Graphs![j], y.Graphs![j], $"{at}[{j}]");
            }
        }
    }

    static readonly IEqualityComparer<ValueInfo> ValueInfoEq = EqualityComparer<ValueInfo>.Create(
        (a, b) => a!.Name == b!.Name && a.DType == b.DType && a.Kind == b.Kind && (a.Shape is null ? b.Shape is null : b.Shape is not null && a.Shape.SequenceEqual(b.Shape)),
        v => v.Name.GetHashCode(StringComparison.Ordinal));

    [Fact]
    public void EveryAttributeKindRoundTrips()
    {
        var g = EveryAttributeKind();
        var path = PathOf("every.nabla.json");
        g.Save(path);
        var (loaded, producer) = GraphFile.Read(path);   // no resolver: structure only (Custom has no kernel)
        Assert.StartsWith("nabla", producer);
        Assert.Equal(g.Opsets, loaded.Opsets);
        AssertSameGraph(g, loaded, "graph");
        // Tensor attributes and subgraph initializers live in the weights file under generated keys.
        var keys = SafeTensors.Load(GraphFile.WeightsPathFor(path)).Keys.ToHashSet();
        Assert.Contains("w", keys);
        Assert.Contains("nodes.0.t", keys);
        Assert.Contains("nodes.0.g.initializers.k", keys);
        Assert.Contains("nodes.0.gs.1.initializers.k", keys);
        Assert.Contains("nodes.0.ts.1", keys);
        // Subgraphs share the top level's opsets.
        Assert.Same(loaded.Opsets, loaded.Nodes[0].GetGraph("g")!.Opsets);
    }

    [Theory]
    [InlineData("test_if")]
    [InlineData("test_loop11")]
    public void ControlFlowSubgraphsRoundTripAndMatchTheConformanceOutputs(string name)
    {
        var root = ConformanceData(name);
        var model = OnnxModel.Load(Path.Combine(root, "model.onnx"), fuse: false);
        Assert.Contains(model.Graph.Nodes, n => n.Attributes.Values.Any(a => a.Kind == AttributeKind.Graph));
        var path = PathOf(name + ".nabla.json");
        model.SaveGraph(path);
        var loaded = NablaGraphFiles.Load(path);
        var data = Path.Combine(root, "test_data_set_0");
        var inputs = Directory.GetFiles(data, "input_*.pb").Order(StringComparer.Ordinal).Select(OnnxModel.ReadTensor).ToArray();
        var outputs = loaded.Run(inputs);
        var expected = Directory.GetFiles(data, "output_*.pb").Order(StringComparer.Ordinal).Select(OnnxModel.ReadTensor).ToArray();
        Assert.Equal(expected.Length, outputs.Length);
        for (int i = 0; i < expected.Length; i++) AssertSame(expected[i], outputs[i], $"{name} output {i}", 1e-6);
    }

    static string ConformanceData(string name)
    {
        var env = Environment.GetEnvironmentVariable("NABLA_ONNX_DATA");
        if (env is not null && Directory.Exists(Path.Combine(env, "node", name))) return Path.Combine(env, "node", name);
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            foreach (var c in new[] { Path.Combine(d.FullName, "shared", "data", "onnx", "node", name), Path.Combine(d.FullName, "..", "shared", "data", "onnx", "node", name) })
                if (Directory.Exists(c)) return Path.GetFullPath(c);
        throw new DirectoryNotFoundException($"the ONNX conformance case {name} (shared/data/onnx/node) was not found");
    }

    // ------------------------------------------------------------- the CLI on real ONNX models

    static (int code, string stdout, string stderr) Nabla(string workDir, params string[] args) => CliConvertTests.Nabla(workDir, args);

    [Fact]
    public void Mnist8ConvertedByTheCliRunsLikeTheOnnxFile()
    {
        var src = RepoFile("tests", "fixtures", "serving", "mnist-8");
        var output = PathOf("mnist.nabla.json");
        var (code, stdout, stderr) = Nabla(dir, "convert", Path.Combine(src, "model.onnx"), output);
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Contains("wrote", stdout);
        var input = OnnxModel.ReadTensor(Path.Combine(src, "test_data_set_0", "input_0.pb"));
        var expected = OnnxModel.ReadTensor(Path.Combine(src, "test_data_set_0", "output_0.pb"));
        var original = OnnxModel.Load(Path.Combine(src, "model.onnx"));
        var converted = NablaGraphFiles.Load(output);
        // The IR-3 file lists its weights as inputs; the saved graph keeps only the image.
        Assert.Equal(new[] { "Input3" }, converted.Graph.Inputs.Select(v => v.Name));
        var y = converted.Run(input)[0];
        AssertSame(original.Run(input)[0], y, "converted vs ONNX", 1e-6);
        AssertClose(expected, y, "converted vs the test's expected output");

        // inspect and run accept the saved graph.
        (code, stdout, stderr) = Nabla(dir, "inspect", output);
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Contains("Nabla graph", stdout);
        Assert.Contains("Conv", stdout);
        Assert.Contains(OnnxModel.Load(Path.Combine(src, "model.onnx"), fuse: false).Graph.Nodes.Count + " nodes", stdout);
        (code, stdout, stderr) = Nabla(dir, "run", output, "--input", "Input3=" + Path.Combine(src, "test_data_set_0", "input_0.pb"), "--output-dir", PathOf("out"));
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        AssertClose(expected, Npy.Load(PathOf(Path.Combine("out", "Plus214_Output_0.npy"))), "nabla run output");
    }

    [Fact]
    public void ResNet18ConvertedByTheCliRunsLikeTheOnnxFile()
    {
        var onnx = Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");
        Assert.True(File.Exists(onnx), $"{onnx} is missing (Microsoft.ML.DnnImageFeaturizer.ResNet18 copies it)");
        var output = PathOf("resnet18.nabla.json");
        var (code, stdout, stderr) = Nabla(dir, "convert", onnx, output);
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        var original = OnnxModel.Load(onnx);
        var converted = NablaGraphFiles.Load(output);
        var plain = NablaGraphFiles.Load(output, fuse: false);
        Assert.Contains(converted.Graph.Nodes, n => n.OpType == "FusedConv");   // fusion applies to loaded graphs
        Assert.DoesNotContain(plain.Graph.Nodes, n => n.OpType == "FusedConv");
        var x = Tensor.Randn([2, 3, 224, 224], generator: new Generator(18));
        var expected = original.Run(x)[0];
        AssertSame(expected, converted.Run(x)[0], "converted (fused) vs ONNX (fused)", 1e-5);
        AssertClose(expected, plain.Run(x)[0], "converted (unfused) vs ONNX (fused)");
    }

    // ------------------------------------------------------------- validation

    /// <summary>x [batch, 4] → MatMul w → Add b → Relu → Mul by a Constant: every kind of weight, two runnable ops.</summary>
    string SmallGraph(string name = "small")
    {
        var g = new G
        {
            Name = "small",
            Opsets = { [""] = 17 },
            Inputs = [new ValueInfo("x", DType.Float32, [SymbolicDim.Symbol("batch"), SymbolicDim.Fixed(4)])],
            Outputs = [new ValueInfo("out", DType.Float32, [SymbolicDim.Symbol("batch"), SymbolicDim.Fixed(3)])],
            Initializers = { ["w"] = Tensor.Randn([4, 3], generator: new Generator(1)), ["b"] = Tensor.FromArray(new float[] { 1, -1, 0.5f }, 3) },
            Nodes =
            {
                new Node { OpType = "MatMul", Name = "mm", Inputs = ["x", "w"], Outputs = ["h"] },
                new Node { OpType = "Add", Name = "add", Inputs = ["h", "b"], Outputs = ["y"] },
                new Node { OpType = "Relu", Name = "relu", Inputs = ["y"], Outputs = ["r"] },
                new Node { OpType = "Constant", Name = "two", Inputs = [], Outputs = ["c"],
                    Attributes = { ["value"] = new NodeAttribute { Name = "value", Kind = AttributeKind.Tensor, Tensor = Tensor.FromArray(new float[] { 2, 2, 2 }, 3) } } },
                new Node { OpType = "Mul", Name = "scale", Inputs = ["r", "c"], Outputs = ["out"] },
            },
        };
        var path = PathOf(name + ".nabla.json");
        g.Save(path);
        return path;
    }

    [Fact]
    public void SmallGraphRunsAfterLoading()
    {
        var path = SmallGraph();
        var m = NablaGraphFiles.Load(path);
        var x = Tensor.Randn([3, 4], generator: new Generator(2));
        var g = GraphFile.Load(path);
        var expected = x.Matmul(g.Initializers["w"]).Add(g.Initializers["b"]).Relu().Mul(2f);
        AssertSame(expected, m.Run(x)[0], "small graph", 1e-6);
    }

    static void Edit(string path, Action<JsonNode> edit)
    {
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        edit(root);
        File.WriteAllText(path, root.ToJsonString());
    }

    static JsonNode NodeNamed(JsonNode root, string name) =>
        root["graph"]!["nodes"]!.AsArray().First(n => (string?)n!["name"] == name)!;

    ModelFormatException LoadFails(string path)
    {
        var e = Assert.Throws<ModelFormatException>(() => NablaGraphFiles.Load(path));
        Assert.Contains(Path.GetFileName(path), e.Message);
        return e;
    }

    [Fact]
    public void UnknownFormatVersionIsRefused()
    {
        var path = SmallGraph();
        Edit(path, r => r["format_version"] = 2);
        Assert.Contains("unsupported format version 2", LoadFails(path).Message);
        Edit(path, r => { r["format_version"] = 1; r["format"] = "onnx"; });
        Assert.Contains("format is 'onnx'", LoadFails(path).Message);
    }

    [Fact]
    public void MissingAndExtraWeightsAreRefused()
    {
        var path = SmallGraph();
        var weightsPath = GraphFile.WeightsPathFor(path);
        var weights = SafeTensors.Load(weightsPath);
        var without = new Dictionary<string, Tensor>(weights);
        without.Remove("b");
        SafeTensors.Save(weightsPath, without);
        var e = LoadFails(path);
        Assert.Contains("'b'", e.Message);
        Assert.Contains("missing", e.Message);

        var extra = new Dictionary<string, Tensor>(weights) { ["stowaway"] = Tensor.Zeros([2]) };
        SafeTensors.Save(weightsPath, extra);
        Assert.Contains("'stowaway'", LoadFails(path).Message);

        File.WriteAllBytes(weightsPath, [0x10, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'"']);
        Assert.Contains("small.safetensors", Assert.Throws<ModelFormatException>(() => NablaGraphFiles.Load(path)).Message);

        File.Delete(weightsPath);
        Assert.Contains("small.safetensors is missing", LoadFails(path).Message);
    }

    [Fact]
    public void WeightDTypeOrShapeDisagreeingWithTheJsonIsRefused()
    {
        var path = SmallGraph();
        Edit(path, r => r["graph"]!["initializers"]!.AsArray().First(t => (string?)t!["name"] == "w")!["dtype"] = "float64");
        var e = LoadFails(path);
        Assert.Contains("initializer 'w'", e.Message);
        Assert.Contains("F32", e.Message);

        path = SmallGraph("shape");
        Edit(path, r => r["graph"]!["initializers"]!.AsArray().First(t => (string?)t!["name"] == "w")!["shape"] = new JsonArray(3, 4));
        e = LoadFails(path);
        Assert.Contains("[4, 3]", e.Message);
        Assert.Contains("[3, 4]", e.Message);

        // A tensor attribute is checked the same way.
        path = SmallGraph("attr");
        Edit(path, r => NodeNamed(r, "two")["attributes"]![0]!["value"]!["shape"] = new JsonArray(4));
        e = LoadFails(path);
        Assert.Contains("node 'two' (Constant)", e.Message);
        Assert.Contains("attribute 'value'", e.Message);

        path = SmallGraph("dtype");
        Edit(path, r => r["graph"]!["inputs"]![0]!["dtype"] = "float128");
        Assert.Contains("unknown dtype 'float128'", LoadFails(path).Message);
    }

    [Fact]
    public void UnknownOperatorIsRefusedNamingTheNode()
    {
        var path = SmallGraph();
        Edit(path, r => NodeNamed(r, "relu")["op"] = "Frobnicate");
        var e = LoadFails(path);
        Assert.Contains("relu", e.Message);
        Assert.Contains("Frobnicate", e.Message);
        // Without kernels (GraphFile.Load), only the structure is checked, so the file still loads.
        Assert.Equal("Frobnicate", GraphFile.Load(path).Nodes[2].OpType);
    }

    [Fact]
    public void UndefinedValuesAndCyclesAreRefused()
    {
        var path = SmallGraph();
        Edit(path, r => NodeNamed(r, "add")["inputs"]![0] = "nowhere");
        var e = Assert.Throws<ModelFormatException>(() => GraphFile.Load(path));
        Assert.Contains("small.nabla.json", e.Message);
        Assert.Contains("'nowhere'", e.Message);
        Assert.Contains("node 'add'", e.Message);

        path = SmallGraph("cycle");
        Edit(path, r => NodeNamed(r, "mm")["inputs"]![0] = "r");   // mm → add → relu → mm
        e = Assert.Throws<ModelFormatException>(() => GraphFile.Load(path));
        Assert.Contains("cycle.nabla.json", e.Message);
        Assert.Contains("cycle", e.Message);

        path = SmallGraph("twice");
        Edit(path, r => NodeNamed(r, "relu")["outputs"]![0] = "h");
        Assert.Contains("defined twice", Assert.Throws<ModelFormatException>(() => GraphFile.Load(path)).Message);

        path = SmallGraph("output");
        Edit(path, r => r["graph"]!["outputs"]![0]!["name"] = "never");
        Assert.Contains("'never'", Assert.Throws<ModelFormatException>(() => GraphFile.Load(path)).Message);
    }

    [Fact]
    public void MalformedJsonIsRefusedNamingTheField()
    {
        var path = SmallGraph();
        var text = File.ReadAllText(path);
        File.WriteAllText(path, text[..(text.Length / 2)]);
        Assert.Contains("not valid JSON", LoadFails(path).Message);

        path = SmallGraph("fields");
        Edit(path, r => NodeNamed(r, "mm")["inputs"] = "x");
        Assert.Contains("'inputs' must be an array", LoadFails(path).Message);

        path = SmallGraph("attrtype");
        Edit(path, r => NodeNamed(r, "two")["attributes"]![0]!["type"] = "complex");
        Assert.Contains("unknown attribute type 'complex'", LoadFails(path).Message);

        path = SmallGraph("weightsname");
        Edit(path, r => r["weights"] = "../elsewhere.safetensors");
        Assert.Contains("plain file name", LoadFails(path).Message);

        path = SmallGraph("nograph");
        Edit(path, r => r.AsObject().Remove("graph"));
        Assert.Contains("field 'graph' is missing", LoadFails(path).Message);

        Assert.Throws<ModelFormatException>(() => NablaGraphFiles.Load(PathOf("absent.nabla.json")));
    }

    /// <summary>
    /// Every field of two saved graphs, one at a time, replaced by a value of each JSON type or removed: the load
    /// either succeeds or throws <see cref="ModelFormatException"/> naming the file, never anything else.
    /// </summary>
    [Fact]
    public void EveryFieldReplacedOrRemovedNeverCrashesTheLoader()
    {
        var small = SmallGraph("fuzz");
        var every = PathOf("fuzz_every.nabla.json");
        EveryAttributeKind().Save(every);
        JsonNode?[] replacements = [null, JsonValue.Create(-1), JsonValue.Create(1.5), JsonValue.Create(1e300), JsonValue.Create("x"),
            JsonValue.Create(""), JsonValue.Create(true), new JsonArray(), new JsonArray(JsonValue.Create(2)), new JsonObject()];
        int loads = 0, refused = 0;
        foreach (var (path, load) in new (string, Action<string>)[] { (small, p => NablaGraphFiles.Load(p)), (every, p => GraphFile.Load(p)) })
        {
            var original = File.ReadAllText(path);
            var paths = new List<List<object>>();
            void Collect(JsonNode? n, List<object> at)
            {
                if (at.Count > 0) paths.Add(at);
                if (n is JsonObject o) foreach (var (k, v) in o) Collect(v, [.. at, k]);
                else if (n is JsonArray a) for (int i = 0; i < a.Count; i++) Collect(a[i], [.. at, i]);
            }
            Collect(JsonNode.Parse(original), []);
            foreach (var at in paths)
                foreach (var mutation in replacements.Select(x => (r: x, remove: false)).Append((r: null, remove: true)))
                {
                    var root = JsonNode.Parse(original)!;
                    var parent = root;
                    foreach (var seg in at.SkipLast(1)) parent = seg is string k ? parent[k]! : parent[(int)seg]!;
                    var last = at[^1];
                    if (mutation.remove)
                    {
                        if (last is string k) parent.AsObject().Remove(k);
                        else parent.AsArray().RemoveAt((int)last);
                    }
                    else if (last is string k) parent[k] = mutation.r?.DeepClone();
                    else parent[(int)last] = mutation.r?.DeepClone();
                    File.WriteAllText(path, root.ToJsonString());
                    loads++;
                    try { load(path); }
                    catch (ModelFormatException e)
                    {
                        refused++;
                        Assert.Contains(Path.GetFileName(path), e.Message);
                    }
                    catch (Exception e)
                    {
                        Assert.Fail($"{Path.GetFileName(path)}, {string.Join("/", at)} {(mutation.remove ? "removed" : $"= {mutation.r?.ToJsonString() ?? "null"}")}: {e.GetType().Name}: {e.Message}");
                    }
                }
            File.WriteAllText(path, original);
        }
        Assert.True(refused > loads / 2, $"only {refused} of {loads} mutations were refused");
    }

    [Fact]
    public void SavingABrokenGraphIsRefused()
    {
        var g = new G
        {
            Name = "broken",
            Inputs = [new ValueInfo("x", DType.Float32, null)],
            Outputs = [new ValueInfo("y", DType.Float32, null)],
            Nodes = { new Node { OpType = "Relu", Inputs = ["undefined"], Outputs = ["y"] } },
        };
        var path = PathOf("broken.nabla.json");
        var e = Assert.Throws<NablaException>(() => g.Save(path));
        Assert.Contains("'undefined'", e.Message);
        Assert.False(File.Exists(path));
    }
}
