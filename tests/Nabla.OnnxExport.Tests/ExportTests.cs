using Microsoft.ML.OnnxRuntime;
using Nabla.Interop.Onnx;
using Nabla.Interop.Onnx.Export;
using Nabla.NN;
using Nabla.Optim;
using Nabla.Training;
using Xunit;
using static Nabla.OnnxExport.Tests.ExportCheck;

namespace Nabla.OnnxExport.Tests;

public class BuiltinModelExportTests
{
    [Fact]
    public void Mlp()
    {
        Tensor.ManualSeed(1);
        RoundTrip(BuiltinModels.Create("mlp"), Images(1, 28, 10));
    }

    [Fact]
    public void LeNet()
    {
        Tensor.ManualSeed(2);
        RoundTrip(BuiltinModels.Create("lenet"), Images(1, 28, 20));
    }

    [Fact]
    public void CnnInEvalMode()
    {
        Tensor.ManualSeed(3);
        var cnn = BuiltinModels.Create("cnn");
        RandomizeBatchNorms(cnn, 33);
        RoundTrip(cnn, Images(1, 28, 30));
    }

    [Fact]
    public void SmallResNet()
    {
        Tensor.ManualSeed(4);
        var net = BuiltinModels.Create("resnet");
        RandomizeBatchNorms(net, 44);
        var path = RoundTrip(net, Images(1, 28, 40));
        var ops = FileGraph(path).Nodes.Select(n => n.OpType).ToList();
        // 6 blocks each add their shortcut; 2 stride-2 blocks project it with a 1x1 conv.
        Assert.Equal(6, ops.Count(o => o == "Add"));
        Assert.Equal(1 + 6 * 2 + 2, ops.Count(o => o == "Conv"));
        Assert.Contains("ReduceMean", ops);
    }

    [Fact]
    public void SmallResNetAtOpset18UsesReduceMeanAxesInput()
    {
        Tensor.ManualSeed(5);
        var net = new SmallResNet(3, 4);
        RandomizeBatchNorms(net, 55);
        RoundTrip(net, Images(3, 16, 50), opset: 18);
    }

    [Fact]
    public void ClassificationTaskExportsItsNet()
    {
        Tensor.ManualSeed(6);
        var net = BuiltinModels.Create("lenet");
        var task = new ClassificationTask(net, ps => new OptimizerConfig(new SGD(ps)), "lenet");
        var path = RoundTrip(task, Images(1, 28, 60));
        // The initializers keep the task's state-dict names (net.*), so a checkpoint's keys find them.
        var inits = FileGraph(path).Initializers.Keys.ToHashSet();
        foreach (var key in task.StateDict().Keys) Assert.Contains(key, inits);
    }
}

public class LayerExportTests
{
    [Fact]
    public void LayerNormGeluSoftmaxOnSequences()
    {
        Tensor.ManualSeed(7);
        // Linear on a 3-D input exports as MatMul + Add, on a 2-D input as Gemm.
        var model = new Sequential(new Linear(16, 32), new LayerNorm(32), new GELU(), new Linear(32, 8), new Softmax(-1));
        using (GradMode.NoGrad())
        {
            var ln = (LayerNorm)model[1];
            ln.Weight!.Copy_(Tensor.Rand([32]).Add(0.5));
            ln.Bias!.Copy_(Tensor.Randn([32]).Mul(0.1));
        }
        var path = RoundTrip(model, n => Tensor.Randn([n, 7, 16], generator: new Generator(70 + (ulong)n)));
        var ops = FileGraph(path).Nodes.Select(n => n.OpType).ToList();
        Assert.Contains("LayerNormalization", ops);
        Assert.Contains("Erf", ops);
        Assert.DoesNotContain("Gelu", ops);
        Assert.Contains("MatMul", ops);
    }

    [Fact]
    public void GeluIsNativeFromOpset20()
    {
        Tensor.ManualSeed(8);
        var model = new Sequential(new Linear(12, 12), new GELU(), new Linear(12, 12), new GELU("tanh"), new LogSoftmax(1));
        var path = RoundTrip(model, n => Tensor.Randn([n, 12], generator: new Generator(80 + (ulong)n)), opset: 20);
        var ops = FileGraph(path).Nodes.Select(n => n.OpType).ToList();
        Assert.Equal(2, ops.Count(o => o == "Gelu"));
        Assert.Contains("Gemm", ops);
    }

    [Fact]
    public void TanhGeluExpandsBeforeOpset20()
    {
        Tensor.ManualSeed(9);
        RoundTrip(new Sequential(new Linear(12, 12), new GELU("tanh")), n => Tensor.Randn([n, 12], generator: new Generator(90 + (ulong)n)));
    }

    [Fact]
    public void Embedding()
    {
        Tensor.ManualSeed(10);
        var model = new Sequential(new Embedding(50, 16), new LayerNorm(16), new Linear(16, 8));
        var path = RoundTrip(model, n => Tensor.Randint(0, 50, [n, 6], generator: new Generator(100 + (ulong)n)));
        Assert.Contains("Gather", FileGraph(path).Nodes.Select(n => n.OpType));
    }

    [Fact]
    public void ConvolutionsPoolingAndActivations()
    {
        Tensor.ManualSeed(11);
        var model = ExportCheck.ConvPoolActivationModel();
        RandomizeBatchNorms(model, 111);
        RoundTrip(model, Images(3, 14, 110));
    }

    [Fact]
    public void Conv1dSoftplusFlattenAndUnflatten()
    {
        Tensor.ManualSeed(12);
        var model = new Sequential(
            new Conv1d(4, 6, 3, padding: 1), new BatchNorm1d(6), new Softplus(), new Flatten(1, 2), new Unflatten(1, 3, 20),
            new Linear(20, 10), new Softplus(beta: 2), new TimesTwo(), new Identity());
        RandomizeBatchNorms(model, 122);
        RoundTrip(model, n => Tensor.Randn([n, 4, 10], generator: new Generator(120 + (ulong)n)));
    }

    [Fact]
    public void AdaptiveAvgPoolWithEvenWindows()
    {
        Tensor.ManualSeed(13);
        RoundTrip(new Sequential(new Conv2d(2, 4, 1), new AdaptiveAvgPool2d(2, 3), new Flatten(), new LogSoftmax(-1)), Images(2, 6, 130));
    }

    /// <summary>A custom module: exported through a registered converter.</summary>
    sealed class TimesTwo : Module
    {
        public override Tensor Forward(Tensor input) => input.Mul(2.0);
    }

    static LayerExportTests() =>
        OnnxExporter.Register<TimesTwo>((b, m, path, x) =>
            new OnnxValue(b.Node("Mul", path + "/Mul", [x.Name, b.Scalar("two", 2f)]), m.Forward(x.Example)));
}

public class ExportFileTests
{
    sealed class Doubler : Module
    {
        public override Tensor Forward(Tensor input) => input.Mul(2.0);
    }

    [Fact]
    public void UnsupportedModuleNamesTypeAndPath()
    {
        var model = new Sequential(new Linear(4, 4), new Sequential(new ReLU(), new Doubler()));
        var e = Assert.Throws<NablaException>(() => OnnxExporter.ExportToBytes(model, Tensor.Randn([1, 4])));
        Assert.Contains("Doubler", e.Message);
        Assert.Contains("'1.1'", e.Message);
    }

    [Fact]
    public void UnsupportedLayerFromNablaNN()
    {
        var model = new Sequential(new Linear(4, 8), new TransformerEncoderLayer(8, 2, 16, batchFirst: true));
        var e = Assert.Throws<NablaException>(() => OnnxExporter.ExportToBytes(model, Tensor.Randn([1, 3, 4])));
        Assert.Contains("TransformerEncoderLayer", e.Message);
        Assert.Contains("'1'", e.Message);
    }

    [Fact]
    public void BadOpsetIsRejected()
    {
        var e = Assert.Throws<NablaException>(() => OnnxExporter.ExportToBytes(new Sequential(new ReLU()), Tensor.Randn([1, 4]), opset: 9));
        Assert.Contains("opset 9", e.Message);
        Assert.Throws<NablaException>(() => OnnxExporter.ExportToBytes(new Sequential(new LayerNorm(4)), Tensor.Randn([1, 4]), opset: 16));
    }

    [Fact]
    public void ModelHeaderInitializersAndDynamicBatch()
    {
        Tensor.ManualSeed(14);
        var model = BuiltinModels.Create("cnn");
        var path = Path.Combine(Path.GetTempPath(), $"nabla-export-{Guid.NewGuid():N}.onnx");
        OnnxExporter.Export(model, path, Tensor.Randn([2, 1, 28, 28]));
        var imported = OnnxModel.Load(path);
        var fileGraph = FileGraph(path);
        Assert.Equal(8, imported.IrVersion);
        Assert.Equal("nabla", imported.ProducerName);
        Assert.Equal(17, imported.Opsets[""]);
        // Every parameter and running statistic is an initializer under its state-dict name, with the same values.
        foreach (var (key, value) in model.StateDict())
        {
            if (key.EndsWith("num_batches_tracked", StringComparison.Ordinal)) continue;
            Assert.True(fileGraph.Initializers.TryGetValue(key, out var init), $"no initializer {key}");
            Assert.Equal(value.ToArray<float>(), init!.ToArray<float>());
        }
        using var session = new InferenceSession(path);
        var input = session.InputMetadata["input"];
        Assert.Equal([-1L, 1, 28, 28], input.Dimensions.Select(d => (long)d));
        Assert.Equal("batch", input.SymbolicDimensions[0]);
        Assert.Equal("batch", session.OutputMetadata["output"].SymbolicDimensions[0]);
        Assert.Equal("nabla", session.ModelMetadata.ProducerName);
    }

    [Fact]
    public void StaticBatchWhenAsked()
    {
        var path = Path.Combine(Path.GetTempPath(), $"nabla-export-{Guid.NewGuid():N}.onnx");
        OnnxExporter.Export(BuiltinModels.Create("mlp"), path, Tensor.Randn([3, 1, 28, 28]), dynamicBatch: false);
        using var session = new InferenceSession(path);
        Assert.Equal([3, 1, 28, 28], session.InputMetadata["input"].Dimensions);
        Assert.Equal([3, 10], session.OutputMetadata["output"].Dimensions);
    }

    [Fact]
    public void ExportRestoresTrainingModeAndLeavesStatisticsAlone()
    {
        var model = BuiltinModels.Create("cnn");
        model.Train();
        var bn = (BatchNorm)((Sequential)model)[1];
        var mean = bn.RunningMean!.ToArray<float>();
        OnnxExporter.ExportToBytes(model, Tensor.Randn([4, 1, 28, 28]));
        Assert.All(model.NamedModules(), m => Assert.True(m.module.Training));
        Assert.Equal(mean, bn.RunningMean!.ToArray<float>());
        Assert.Equal(0, bn.NumBatchesTracked!.Item());

        var mixed = new Sequential(new Linear(4, 4), new Dropout());
        mixed.Eval();
        mixed[1].Train();
        OnnxExporter.ExportToBytes(mixed, Tensor.Randn([1, 4]));
        Assert.False(mixed.Training);
        Assert.True(mixed[1].Training);
    }
}
