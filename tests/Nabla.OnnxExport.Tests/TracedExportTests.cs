using Microsoft.ML.OnnxRuntime;
using Nabla.Graph;
using Nabla.Interop.Onnx;
using Nabla.Interop.Onnx.Export;
using Nabla.IO;
using Nabla.Models.Zoo;
using Nabla.NN;
using Nabla.Training;
using Xunit;
using static Nabla.OnnxExport.Tests.ExportCheck;

namespace Nabla.OnnxExport.Tests;

/// <summary>The traced export: trace on a batch-1 example, then compare ONNX Runtime, Nabla's importer and the replayed IR with eager forward.</summary>
internal static class TraceCheck
{
    /// <summary>tests/fixtures/zoo, found by walking up from the test binaries.</summary>
    public static string Zoo(string name)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "tests", "fixtures", "zoo", name);
            if (Directory.Exists(candidate)) return candidate;
        }
        throw new DirectoryNotFoundException($"tests/fixtures/zoo/{name} not found above {AppContext.BaseDirectory}");
    }

    /// <summary>max |a − e| / max(1, |e|) over the elements.</summary>
    public static double Worst(Tensor expected, Tensor actual) =>
        expected.ToArray<float>().Zip(actual.ToArray<float>(), (e, a) => Math.Abs(e - a) / Math.Max(1, Math.Abs(e))).DefaultIfEmpty(0).Max();

    /// <summary>Exports with an example of batch 1 (dynamic axis 0) and checks batches 1 and 3 in every runtime.</summary>
    public static (string path, Nabla.Graph.Graph graph) Check(Module model, Func<int, Tensor> input, int opset = 17, Action<string>? log = null)
    {
        int[] batches = [1, 3];
        model.Eval();
        var path = Path.Combine(Path.GetTempPath(), $"nabla-traced-{Guid.NewGuid():N}.onnx");
        model.ExportOnnx(path, [input(1)], opset: opset);
        var graph = TracedOnnxExporter.Trace(model, xs => [model.Forward(xs[0])], [input(1)]);
        var replay = new GraphExecutor(graph, TracedOnnxExporter.Resolver);
        using var session = new InferenceSession(path);
        var imported = OnnxModel.Load(path);
        foreach (int n in batches)
        {
            var x = input(n);
            Tensor expected;
            using (GradMode.NoGrad()) expected = model.Forward(x);
            var (r, o, i) = (replay.Run(x)[0], RunOrt(session, x), imported.Run(x)[0]);
            AssertClose(expected, r, $"replayed trace, batch {n}");
            AssertClose(expected, o, $"ONNX Runtime, batch {n}");
            AssertClose(expected, i, $"Nabla OnnxModel, batch {n}");
            log?.Invoke($"{model.GetType().Name} batch {n}: worst relative difference to eager: replay {Worst(expected, r):g3}, ONNX Runtime {Worst(expected, o):g3}, OnnxModel {Worst(expected, i):g3}");
        }
        // `nabla run` optimizes the imported graph (constant folding, dead code): the result must not change.
        imported.Optimize();
        var x2 = input(2);
        using (GradMode.NoGrad()) AssertClose(model.Forward(x2), imported.Run(x2)[0], "optimized OnnxModel, batch 2");
        return (path, graph);
    }

    public static Func<int, Tensor> Ids(int vocab, int seq, ulong seed) =>
        n => Tensor.Randint(0, vocab, [n, seq], generator: new Generator(seed + (ulong)n));
}

public class TracedBuiltinModelTests
{
    [Theory]
    [InlineData("mlp")]
    [InlineData("lenet")]
    [InlineData("cnn")]
    [InlineData("resnet")]
    public void BuiltinModelExportsByTracing(string name)
    {
        Tensor.ManualSeed(31);
        var net = BuiltinModels.Create(name);
        RandomizeBatchNorms(net, 310);
        var (path, graph) = TraceCheck.Check(net, Images(1, 28, 300));
        // Every parameter and running statistic is an initializer under its state-dict name.
        var inits = FileGraph(path).Initializers;
        foreach (var (key, value) in net.StateDict())
        {
            if (key.EndsWith("num_batches_tracked", StringComparison.Ordinal)) continue;
            Assert.True(inits.TryGetValue(key, out var init), $"no initializer {key}");
            Assert.Equal(value.ToArray<float>(), init!.ToArray<float>());
        }
        Assert.Equal("batch", graph.Inputs[0].Shape![0].Name);
        Assert.Equal("batch", graph.Outputs[0].Shape![0].Name);
        if (name != "mlp") Assert.Contains(graph.Nodes, n => n.OpType == "Conv");
    }

    [Fact]
    public void ClassificationTaskTracesItsNet()
    {
        Tensor.ManualSeed(32);
        var task = new ClassificationTask(BuiltinModels.Create("lenet"), ps => new OptimizerConfig(new Nabla.Optim.SGD(ps)), "lenet");
        TraceCheck.Check(task, Images(1, 28, 320));
    }

    [Fact]
    public void ConvolutionsPoolingAndActivations()
    {
        // The model of the structural exporter's layer test, exported by tracing instead.
        Tensor.ManualSeed(35);
        var model = ExportCheck.ConvPoolActivationModel();
        RandomizeBatchNorms(model, 351);
        var (_, graph) = TraceCheck.Check(model, Images(3, 14, 350));
        Assert.Contains(graph.Nodes, n => n.OpType == "ConvTranspose");
        Assert.Contains(graph.Nodes, n => n.OpType == "AveragePool");
    }

    [Fact]
    public void Conv1dSoftplusFlattenAndUnflatten()
    {
        Tensor.ManualSeed(36);
        var model = new Sequential(
            new Conv1d(4, 6, 3, padding: 1), new BatchNorm1d(6), new Softplus(), new Flatten(1, 2), new Unflatten(1, 3, 20),
            new Linear(20, 10), new Softplus(beta: 2), new LayerNorm(10), new GELU("tanh"), new LogSoftmax(-1));
        RandomizeBatchNorms(model, 361);
        TraceCheck.Check(model, n => Tensor.Randn([n, 4, 10], generator: new Generator(360 + (ulong)n)));
    }

    [Theory]
    [InlineData("constant")]
    [InlineData("reflect")]
    [InlineData("replicate")]
    public void Padding(string mode)
    {
        Tensor.ManualSeed(37);
        var conv = new Conv2d(2, 3, 3);
        // Asymmetric pads on both spatial dims; the constant mode also crops one column (a negative pad).
        int[] pads = mode == "constant" ? [2, -1, 1, 0] : [2, 1, 1, 0];
        var model = new Lambda(x => conv.Forward(Functional.Pad(x, pads, mode, 0.5)));
        var (_, graph) = TraceCheck.Check(model, Images(2, 6, 370));
        Assert.Contains(graph.Nodes, n => n.OpType == "Pad");
    }

    sealed class Lambda(Func<Tensor, Tensor> f) : Module
    {
        public override Tensor Forward(Tensor input) => f(input);
    }

    [Fact]
    public void ComparisonsAndWhere()
    {
        Tensor.ManualSeed(34);
        // LeakyReLU, ELU, Softplus (threshold), Clamp and MaskedFill are built on comparisons and Where.
        var model = new Sequential(new Linear(6, 12), new LeakyReLU(0.2), new Linear(12, 12), new ELU(0.7), new Linear(12, 12), new Softplus(beta: 2, threshold: 1),
            new ClampAndMask());
        var (_, graph) = TraceCheck.Check(model, n => Tensor.Randn([n, 6], generator: new Generator(340 + (ulong)n)).Mul(3.0));
        Assert.Contains(graph.Nodes, n => n.OpType == "Where");
        Assert.Contains(graph.Nodes, n => n.OpType == "Greater");
    }

    sealed class ClampAndMask : Module
    {
        public override Tensor Forward(Tensor input) => input.Clamp(-0.5, 2.0).MaskedFill(input.Lt(-1.0), 7.0);
    }

    [Fact]
    public void LayersTheStructuralExporterDoesNotKnow()
    {
        Tensor.ManualSeed(33);
        // TransformerEncoderLayer has no structural converter; tracing needs none.
        var model = new Sequential(new Linear(8, 16), new TransformerEncoderLayer(16, 2, 32, dropout: 0, batchFirst: true), new Linear(16, 4));
        TraceCheck.Check(model, n => Tensor.Randn([n, 5, 8], generator: new Generator(330 + (ulong)n)));
    }
}

public class TracedZooTests(Xunit.Abstractions.ITestOutputHelper output)
{
    void Log(string line) => output.WriteLine(line);

    static Func<int, Tensor> Pixels(int c, int size, ulong seed) => n => Tensor.Randn([n, c, size, size], generator: new Generator(seed + (ulong)n));

    [Fact]
    public void Gpt2()
    {
        var model = Gpt2LMHeadModel.FromPretrained(TraceCheck.Zoo("gpt2"));
        var (_, graph) = TraceCheck.Check(model, TraceCheck.Ids(model.Config.VocabSize, 7, 400), log: Log);
        // The logits are [batch, 7, vocab]: the batch stays symbolic through every reshape of the heads.
        Assert.Equal("batch", graph.Outputs[0].Shape![0].Name);
        Assert.Equal(7, graph.Outputs[0].Shape![1].Value);
    }

    [Fact]
    public void BertSequenceClassifier()
    {
        var model = BertForSequenceClassification.FromPretrained(TraceCheck.Zoo("bert-cls"));
        TraceCheck.Check(model, TraceCheck.Ids(100, 9, 410), log: Log);
    }

    [Fact]
    public void BertMatchesTheTorchFixtureAfterExport()
    {
        // The exported file gives PyTorch's logits on the fixture's inputs (batch 2, traced at batch 1).
        var model = BertForSequenceClassification.FromPretrained(TraceCheck.Zoo("bert-cls"));
        var fx = SafeTensors.Load(Path.Combine(TraceCheck.Zoo("bert-cls"), "expected.safetensors"));
        var ids = fx["input_ids"];
        var mask = fx["attention_mask"];
        var types = fx["token_type_ids"];
        var path = Path.Combine(Path.GetTempPath(), $"nabla-traced-{Guid.NewGuid():N}.onnx");
        model.ExportOnnx(xs => [model.Forward(xs[0], xs[1], xs[2])], path, [ids.Narrow(0, 0, 1), mask.Narrow(0, 0, 1), types.Narrow(0, 0, 1)],
            inputNames: ["input_ids", "attention_mask", "token_type_ids"], outputNames: ["logits"]);
        var outputs = OnnxModel.Load(path).Run(new Dictionary<string, Tensor> { ["input_ids"] = ids, ["attention_mask"] = mask, ["token_type_ids"] = types });
        var expected = fx["logits"].ToArray<float>();
        var actual = outputs["logits"].ToArray<float>();
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-4 + 1e-4 * Math.Abs(expected[i]), $"logit {i}: {actual[i]} vs {expected[i]}");
    }

    [Fact]
    public void Llama()
    {
        var model = LlamaForCausalLM.FromPretrained(TraceCheck.Zoo("llama"));
        TraceCheck.Check(model, TraceCheck.Ids(model.VocabSize, 7, 420), log: Log);
    }

    [Fact]
    public void ViT()
    {
        var model = ViTForImageClassification.FromPretrained(TraceCheck.Zoo("vit"));
        TraceCheck.Check(model, Pixels(3, 16, 430), log: Log);
    }

    [Fact]
    public void ResNet18()
    {
        var model = ResNet.FromPretrained(TraceCheck.Zoo("resnet18"));
        TraceCheck.Check(model, Pixels(3, 32, 440), log: Log);
    }

    [Fact]
    public void ResNet50NarrowAtOpset18()
    {
        // Bottleneck blocks; opset 18 moves the reduction axes from attributes to inputs.
        var model = ResNet.FromPretrained(TraceCheck.Zoo("resnet50-narrow"));
        TraceCheck.Check(model, Pixels(3, 32, 450), opset: 18, log: Log);
    }

    [Fact]
    public void LlamaWithTiedEmbeddingsAtOpset21()
    {
        var model = LlamaForCausalLM.FromPretrained(TraceCheck.Zoo("llama-tied"));
        TraceCheck.Check(model, TraceCheck.Ids(model.VocabSize, 6, 460), opset: 21, log: Log);
    }

    [Fact]
    public void BertForMaskedLM()
    {
        var model = Nabla.Models.Zoo.BertForMaskedLM.FromPretrained(TraceCheck.Zoo("bert-mlm"));
        TraceCheck.Check(model, TraceCheck.Ids(100, 8, 470), log: Log);
    }
}

public class TracerTests
{
    [Fact]
    public void ReshapeOfTheBatchBecomesARuntimeShapeExpression()
    {
        // [B, 6] → [B·3, 2] → [B, 6]: the traced sizes 3 and 1 (at B=1) must follow the runtime batch.
        Func<Tensor[], Tensor[]> fn = xs => [xs[0].Reshape(xs[0].Size(0) * 3, 2).Mul(2.0).Reshape(xs[0].Size(0), 6).Sum(1)];
        var g = Tracer.Trace(fn, [Tensor.Randn([1, 6])], new TraceOptions { DynamicAxes = new Dictionary<int, int> { [0] = 0 }, VerifyWith = TracedOnnxExporter.Resolver });
        Assert.Contains(g.Nodes, n => n.OpType == "Shape");
        var x = Tensor.Randn([4, 6]);
        var y = new GraphExecutor(g, TracedOnnxExporter.Resolver).Run(x)[0];
        AssertClose(fn([x])[0], y, "batch 4");
        // Shape inference gives the symbolic sizes of the intermediate values.
        var info = ShapeInference.Infer(g);
        var reshaped = g.Nodes.First(n => n.OpType == "Mul" && info[n.Outputs[0]].Shape!.Length == 2);
        Assert.Equal("3*batch", info[reshaped.Outputs[0]].Shape![0].Name);
        Assert.Equal("batch", info["output"].Shape![0].Name);
    }

    [Fact]
    public void EmbeddingWithInt32AndInt64Indices()
    {
        var table = new Embedding(20, 4);
        foreach (var dtype in new[] { DType.Int32, DType.Int64 })
        {
            var ids = Tensor.Randint(0, 20, [2, 5], generator: new Generator(80)).To(dtype);
            var g = Tracer.Trace(table, ids, new TraceOptions { DynamicAxes = new Dictionary<int, int> { [0] = 0 }, VerifyWith = TracedOnnxExporter.Resolver });
            Assert.Equal(["Gather"], g.Nodes.Select(n => n.OpType));
            var more = Tensor.Randint(0, 20, [4, 5], generator: new Generator(81)).To(dtype);
            Tensor expected;
            using (GradMode.NoGrad()) expected = table.Forward(more);
            AssertClose(expected, new GraphExecutor(g, TracedOnnxExporter.Resolver).Run(more)[0], $"embedding with {dtype} ids");
        }
    }

    [Fact]
    public void StaticTraceKeepsTheExampleShapes()
    {
        var w = Tensor.Randn([4, 3]);
        var g = Tracer.Trace(xs => [xs[0].Matmul(w).Relu()], [Tensor.Randn([2, 4])]);
        Assert.Equal([2L, 3], g.Outputs[0].Shape!.Select(d => d.Value!.Value));
        Assert.Equal(["MatMul", "Relu"], g.Nodes.Select(n => n.OpType));
        // w was captured as a constant initializer with its values.
        Assert.Contains(g.Initializers.Values, t => t.ToArray<float>().SequenceEqual(w.ToArray<float>()));
    }

    [Fact]
    public void UntraceableOpIsNamed()
    {
        var e = Assert.Throws<TraceException>(() => Tracer.Trace(xs => [Functional.MaxPool2dWithIndices(xs[0], (2, 2)).output], [Tensor.Randn([1, 1, 4, 4])]));
        Assert.Contains("'max_pool2d'", e.Message);
        var e2 = Assert.Throws<TraceException>(() => Tracer.Trace(xs => [xs[0].Gather(1, Tensor.Zeros([2, 1], DType.Int64))], [Tensor.Randn([2, 3])]));
        Assert.Contains("'gather'", e2.Message);
        // A failed trace leaves nothing recording, and a trace cannot start inside another.
        Assert.False(Tracer.IsTracing);
        var e3 = Assert.Throws<TraceException>(() => Tracer.Trace(xs => Tracer.Trace(ys => [ys[0].Exp()], xs).Nodes.Count > 0 ? [xs[0]] : [], [Tensor.Randn([2])]));
        Assert.Contains("already running", e3.Message);
        Assert.False(Tracer.IsTracing);
    }

    [Fact]
    public void ValueComputedOutsideTheRecordedOpsIsCaught()
    {
        // argmax records nothing; its result feeds the output. At another batch the traced constant is wrong.
        Func<Tensor[], Tensor[]> fn = xs => [xs[0].Add(xs[0].Argmax(1, keepDim: true).To(DType.Float32))];
        // The two rows have different maxima, so the captured argmax is not a uniform (Full-like) constant.
        var e = Assert.Throws<TraceException>(() => Tracer.Trace(fn, [Tensor.FromArray(new float[] { 1, 0, 0, 0, 0, 1 }, 2, 3)],
            new TraceOptions { DynamicAxes = new Dictionary<int, int> { [0] = 0 }, VerifyWith = TracedOnnxExporter.Resolver }));
        Assert.Contains("const", e.Message);
    }

    [Fact]
    public void DataDependentControlFlowIsCaught()
    {
        var dynamic = new Dictionary<int, int> { [0] = 0 };
        // The two traces (batch 2 and 3) take different branches.
        Func<Tensor[], Tensor[]> parity = xs => [xs[0].Size(0) % 2 == 0 ? xs[0].Exp().Neg() : xs[0].Neg()];
        var e = Assert.Throws<TraceException>(() => Tracer.Trace(parity, [Tensor.Randn([2, 3])], new TraceOptions { DynamicAxes = dynamic }));
        Assert.Contains("depends on the input", e.Message);
        // Both traces (batch 2 and 3) agree, but the batch-1 example took the other branch: the replay catches it.
        Func<Tensor[], Tensor[]> single = xs => [xs[0].Size(0) > 1 ? xs[0].Exp() : xs[0].Neg()];
        var e2 = Assert.Throws<TraceException>(() => Tracer.Trace(single, [Tensor.Randn([1, 3])], new TraceOptions { DynamicAxes = dynamic, VerifyWith = TracedOnnxExporter.Resolver }));
        Assert.Contains("replaying the graph at the example inputs", e2.Message);
    }

    [Fact]
    public void BadDynamicAxisIsRejected()
    {
        var e = Assert.Throws<TraceException>(() => Tracer.Trace(xs => [xs[0].Exp()], [Tensor.Randn([2, 3])], new TraceOptions { DynamicAxes = new Dictionary<int, int> { [0] = 2 } }));
        Assert.Contains("axis 2", e.Message);
    }

    [Fact]
    public void TracingRecordsNothingOutsideATraceAndLeavesAutogradWorking()
    {
        Assert.False(Tracer.IsTracing);
        var x = Tensor.Randn([3]).RequiresGrad_();
        Tracer.Trace(xs => [xs[0].Mul(2.0)], [Tensor.Randn([3])]);
        x.Mul(x).Sum().Backward();
        AssertClose(x.Detach().Mul(2.0), x.Grad!, "gradient after a trace");
    }
}

public class ShapeInferenceTests
{
    /// <summary>Every value's inferred shape, with batch bound, equals the shape it has when the graph runs.</summary>
    static void InferredShapesMatchRuntime(Nabla.Graph.Graph traced, Func<int, Tensor> input)
    {
        var info = ShapeInference.Infer(traced);
        var values = traced.Nodes.SelectMany(n => n.Outputs).Where(o => o.Length > 0).ToList();
        // Run a copy that exposes every node output.
        var probe = new Nabla.Graph.Graph { Inputs = traced.Inputs, Initializers = traced.Initializers, Nodes = traced.Nodes, Opsets = traced.Opsets };
        foreach (var v in values) probe.Outputs.Add(new ValueInfo(v, null, null));
        var executor = new GraphExecutor(probe, TracedOnnxExporter.Resolver);
        int known = 0;
        foreach (int n in new[] { 1, 3 })
        {
            var actual = executor.Run(input(n));
            var symbols = new Dictionary<string, long> { ["batch"] = n };
            for (int i = 0; i < values.Count; i++)
            {
                var vi = info[values[i]];
                if (vi.DType is { } dt) Assert.Equal(dt, actual[i].DType);
                if (vi.Shape is null) continue;
                Assert.Equal(actual[i].Dim, vi.Shape.Length);
                for (int d = 0; d < vi.Shape.Length; d++)
                    if (ShapeInference.Evaluate(vi.Shape[d], symbols) is long size)
                    {
                        Assert.True(size == actual[i].Size(d), $"{values[i]}: inferred {ShapeInference.Format(vi.Shape)} at batch {n}, runs as [{string.Join(", ", actual[i].Shape)}]");
                        known++;
                    }
            }
        }
        // Inference must actually know most sizes, not skip them.
        Assert.True(known > values.Count, $"only {known} sizes inferred for {values.Count} values");
    }

    [Fact]
    public void TracedGpt2ShapesMatchRuntime()
    {
        var model = Gpt2LMHeadModel.FromPretrained(TraceCheck.Zoo("gpt2"));
        var ids = TraceCheck.Ids(model.Config.VocabSize, 7, 500);
        var g = TracedOnnxExporter.Trace(model, xs => [model.Forward(xs[0])], [ids(2)]);
        InferredShapesMatchRuntime(g, ids);
        Assert.All(ShapeInference.Infer(g).Values, v => Assert.NotNull(v.Shape));
    }

    [Fact]
    public void TracedResNetShapesMatchRuntime()
    {
        Tensor.ManualSeed(51);
        var net = BuiltinModels.Create("resnet");
        var g = TracedOnnxExporter.Trace(net, xs => [net.Forward(xs[0])], [Images(1, 28, 510)(2)]);
        InferredShapesMatchRuntime(g, Images(1, 28, 520));
    }

    static Node N(string op, string[] ins, string output, params NodeAttribute[] attrs)
    {
        var n = new Node { OpType = op, Inputs = ins, Outputs = [output] };
        foreach (var a in attrs) n.Attributes[a.Name] = a;
        return n;
    }

    [Fact]
    public void ContradictingShapesNameTheNode()
    {
        var g = new Nabla.Graph.Graph
        {
            Inputs = { new ValueInfo("a", DType.Float32, [SymbolicDim.Symbol("batch"), SymbolicDim.Fixed(3)]), new ValueInfo("b", DType.Float32, [SymbolicDim.Fixed(4)]) },
            Nodes = { N("Add", ["a", "b"], "c") },
        };
        var e = Assert.Throws<ShapeMismatchException>(() => ShapeInference.Infer(g));
        Assert.Contains("Add", e.Message);
        Assert.Contains("3 vs 4", e.Message);

        var mm = new Nabla.Graph.Graph
        {
            Inputs = { new ValueInfo("a", DType.Float32, [SymbolicDim.Symbol("batch"), SymbolicDim.Fixed(3)]) },
            Initializers = { ["w"] = Tensor.Zeros(5, 2) },
            Nodes = { N("MatMul", ["a", "w"], "c") },
        };
        Assert.Contains("inner dimensions", Assert.Throws<ShapeMismatchException>(() => ShapeInference.Infer(mm)).Message);
    }

    [Fact]
    public void DeclaredOutputThatDisagreesIsAnError()
    {
        var g = new Nabla.Graph.Graph
        {
            Inputs = { new ValueInfo("a", DType.Float32, [SymbolicDim.Fixed(2), SymbolicDim.Fixed(3)]) },
            Outputs = { new ValueInfo("t", DType.Float32, [SymbolicDim.Fixed(2), SymbolicDim.Fixed(3)]) },
            Nodes = { N("Transpose", ["a"], "t", new NodeAttribute { Name = "perm", Kind = AttributeKind.Ints, Ints = [1, 0] }) },
        };
        var e = Assert.Throws<ShapeMismatchException>(() => ShapeInference.Infer(g));
        Assert.Contains("'t'", e.Message);
    }

    [Fact]
    public void InfersThroughConvPoolReshapeAndCast()
    {
        var g = new Nabla.Graph.Graph
        {
            Inputs = { new ValueInfo("x", DType.Float32, [SymbolicDim.Symbol("batch"), SymbolicDim.Fixed(1), SymbolicDim.Fixed(28), SymbolicDim.Fixed(28)]) },
            Initializers = { ["w"] = Tensor.Zeros(6, 1, 5, 5), ["shape"] = Tensor.FromArray(new long[] { -1, 6 * 14 * 14 }, 2) },
            Nodes =
            {
                N("Conv", ["x", "w"], "c", new NodeAttribute { Name = "pads", Kind = AttributeKind.Ints, Ints = [2, 2, 2, 2] }),
                N("MaxPool", ["c"], "p", new NodeAttribute { Name = "kernel_shape", Kind = AttributeKind.Ints, Ints = [2, 2] }, new NodeAttribute { Name = "strides", Kind = AttributeKind.Ints, Ints = [2, 2] }),
                N("Reshape", ["p", "shape"], "r"),
                N("Cast", ["r"], "i", new NodeAttribute { Name = "to", Kind = AttributeKind.Int, Int = 7 }),
            },
        };
        var info = ShapeInference.Infer(g);
        Assert.Equal("[batch, 6, 28, 28]", ShapeInference.Format(info["c"].Shape));
        Assert.Equal("[batch, 6, 14, 14]", ShapeInference.Format(info["p"].Shape));
        Assert.Equal("[batch, 1176]", ShapeInference.Format(info["r"].Shape));
        Assert.Equal(DType.Int64, info["i"].DType);
    }
}

public class TracedExportApiTests
{
    static string TempPath() => Path.Combine(Path.GetTempPath(), $"nabla-traced-{Guid.NewGuid():N}.onnx");

    [Fact]
    public void StaticShapesWhenNoAxisIsDynamic()
    {
        Tensor.ManualSeed(60);
        var path = TempPath();
        BuiltinModels.Create("mlp").ExportOnnx(path, [Tensor.Randn([2, 1, 28, 28])], new Dictionary<int, int>());
        using var session = new InferenceSession(path);
        Assert.Equal([2, 1, 28, 28], session.InputMetadata["input"].Dimensions);
        Assert.Equal([2, 10], session.OutputMetadata["output"].Dimensions);
    }

    [Fact]
    public void SymbolicBatchInTheFile()
    {
        Tensor.ManualSeed(61);
        var path = TempPath();
        BuiltinModels.Create("lenet").ExportOnnx(path, [Tensor.Randn([1, 1, 28, 28])]);
        using var session = new InferenceSession(path);
        Assert.Equal("batch", session.InputMetadata["input"].SymbolicDimensions[0]);
        Assert.Equal("batch", session.OutputMetadata["output"].SymbolicDimensions[0]);
        Assert.Equal(17, FileGraph(path).Opsets[""]);
        // Shape inference annotated the intermediate values: the flattened activations are [batch, 400].
        var proto = Nabla.Interop.Onnx.Proto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        var graph = proto.Graph;
        Assert.True(graph.ValueInfo.Count >= graph.Node.Count - 1, $"{graph.ValueInfo.Count} value_info entries for {graph.Node.Count} nodes");
        var flat = graph.ValueInfo.Where(v => v.Type.TensorType.Shape.Dim.Count == 2 && v.Type.TensorType.Shape.Dim[1].DimValue == 400).ToList();
        Assert.NotEmpty(flat);
        Assert.All(flat, v => Assert.Equal("batch", v.Type.TensorType.Shape.Dim[0].DimParam));
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        var model = new Sequential(new Linear(4, 4));
        var e = Assert.Throws<NablaException>(() => model.ExportOnnx(TempPath(), [Tensor.Randn([1, 4])], opset: 16));
        Assert.Contains("opset 16", e.Message);
        var e2 = Assert.Throws<NablaException>(() => model.ExportOnnx(TempPath(), [Tensor.Randn([1, 4]), Tensor.Randn([1, 4])]));
        Assert.Contains("one input", e2.Message);
    }

    [Fact]
    public void FunctionOfTwoInputsWithOneDynamicAxis()
    {
        var w = Tensor.Randn([5, 3], generator: new Generator(62));
        Func<Tensor[], Tensor[]> fn = xs => [Functional.Softmax(xs[0].Matmul(w).Add(xs[1]), -1), xs[0].Sum(1)];
        var path = TempPath();
        TracedOnnxExporter.ExportOnnx(fn, path, [Tensor.Randn([2, 5]), Tensor.Randn([3])], new Dictionary<int, int> { [0] = 0 }, ["x", "bias"], ["probs", "total"]);
        using var session = new InferenceSession(path);
        Assert.Equal(["x", "bias"], session.InputNames);
        Assert.Equal(["probs", "total"], session.OutputNames);
        var x = Tensor.Randn([4, 5], generator: new Generator(63));
        var b = Tensor.Randn([3], generator: new Generator(64));
        using var xo = OrtValue.CreateTensorValueFromMemory(x.ToArray<float>(), [4, 5]);
        using var bo = OrtValue.CreateTensorValueFromMemory(b.ToArray<float>(), [3]);
        using var options = new RunOptions();
        using var outs = session.Run(options, ["x", "bias"], [xo, bo], ["probs", "total"]);
        var expected = fn([x, b]);
        AssertClose(expected[0], Tensor.FromArray(outs[0].GetTensorDataAsSpan<float>().ToArray(), 4, 3), "probs");
        AssertClose(expected[1], Tensor.FromArray(outs[1].GetTensorDataAsSpan<float>().ToArray(), 4), "total");
    }
}

public class ShapeInferenceOnImportedModelsTests
{
    static string? SharedOnnx()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "shared", "data", "onnx");
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>
    /// Valid models never contradict themselves: inference over every ONNX backend test case and real model that the
    /// importer loads must not report a contradiction, and where it gives an output shape, the expected output has it.
    /// </summary>
    [Fact]
    public void NoFalseContradictionsOnTheOnnxBackendCases()
    {
        var root = SharedOnnx();
        Assert.True(root is not null, "../shared/data/onnx not found above the test binaries");
        int models = 0, checkedShapes = 0;
        var failures = new List<string>();
        foreach (var file in Directory.EnumerateFiles(root!, "model.onnx", SearchOption.AllDirectories).Concat(Directory.EnumerateFiles(Path.Combine(root!, "models"), "*.onnx", SearchOption.AllDirectories)).Distinct())
        {
            Nabla.Graph.Graph g;
            try { g = FileGraph(file); }
            catch (NablaException) { continue; }   // not importable (unsupported operator or dtype): not this test's concern
            models++;
            Dictionary<string, ValueInfo> info;
            try { info = ShapeInference.Infer(g); }
            catch (ShapeMismatchException e) { failures.Add($"{file}: {e.Message}"); continue; }
            var dataSet = Path.Combine(Path.GetDirectoryName(file)!, "test_data_set_0");
            for (int i = 0; i < g.Outputs.Count; i++)
            {
                var pb = Path.Combine(dataSet, $"output_{i}.pb");
                if (!File.Exists(pb) || !info.TryGetValue(g.Outputs[i].Name, out var vi) || vi.Shape is null) continue;
                Tensor expected;
                try { expected = OnnxTensors.ReadTensorFile(pb); }
                catch (NablaException) { continue; }
                var actual = vi.Shape.Select(d => d.Value).ToArray();
                if (actual.Length != expected.Dim) { failures.Add($"{file}: output {i} inferred {ShapeInference.Format(vi.Shape)}, expected [{string.Join(", ", expected.Shape)}]"); continue; }
                for (int d = 0; d < actual.Length; d++)
                    if (actual[d] is long size && size != expected.Size(d))
                        failures.Add($"{file}: output {i} inferred {ShapeInference.Format(vi.Shape)}, expected [{string.Join(", ", expected.Shape)}]");
                checkedShapes++;
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} wrong inferences in {models} models:\n" + string.Join("\n", failures.Take(30)));
        Assert.True(models > 500 && checkedShapes > 200, $"only {models} models and {checkedShapes} output shapes checked");
    }
}
