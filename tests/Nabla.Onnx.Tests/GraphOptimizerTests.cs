using Nabla.Graph;
using Nabla.Interop.Onnx;
using Xunit;

namespace Nabla.Onnx.Tests;

public class GraphOptimizerTests
{
    static string Mnist8 => Path.Combine(ConformanceRunner.DataRoot ?? throw new InvalidOperationException("../shared/data/onnx not found"), "models", "mnist-8");

    [Fact]
    public void Mnist8FoldsItsWeightReshapeAndGivesTheSameOutput()
    {
        var input = OnnxModel.ReadTensor(Path.Combine(Mnist8, "test_data_set_0", "input_0.pb"));
        var plain = OnnxModel.Load(Path.Combine(Mnist8, "model.onnx"));
        var before = plain.Run(input)[0];
        int nodes = plain.Graph.Nodes.Count;
        Assert.Equal(0, plain.Optimize().FoldedNodes);            // IR 3: the weights are inputs, so overridable
        var report = plain.Optimize(foldOverridableInitializers: true);
        Assert.True(report.FoldedNodes >= 1, $"nothing folded: {report}");
        Assert.Equal(nodes - report.FoldedNodes - report.RemovedNodes, plain.Graph.Nodes.Count);
        Assert.DoesNotContain(plain.Graph.Nodes, n => n.Inputs.All(i => i.Length == 0 || plain.Graph.Initializers.ContainsKey(i)));
        var after = plain.Run(input)[0];
        Assert.Equal(before.ToArray<float>(), after.ToArray<float>());
    }

    [Fact]
    public void FoldsConstantChainsAndRemovesDeadBranches()
    {
        // y = x + (c1 * c2); a dead branch d = Exp(x) feeds nothing.
        var g = new Graph.Graph
        {
            Name = "t",
            Opsets = new() { [""] = 17 },
            Inputs = [new ValueInfo("x", DType.Float32, [SymbolicDim.Fixed(3)])],
            Outputs = [new ValueInfo("y", DType.Float32, [SymbolicDim.Fixed(3)])],
            Initializers = new() { ["c1"] = Tensor.FromArray(new float[] { 1, 2, 3 }), ["c2"] = Tensor.FromArray(new float[] { 2, 2, 2 }), ["unused"] = Tensor.Zeros(4) },
            Nodes =
            [
                new Node { OpType = "Mul", Inputs = ["c1", "c2"], Outputs = ["c"] },
                new Node { OpType = "Add", Inputs = ["x", "c"], Outputs = ["y"] },
                new Node { OpType = "Exp", Inputs = ["x"], Outputs = ["d"] },
            ],
        };
        var before = new GraphExecutor(g, OnnxOps.Resolver).Run(Tensor.FromArray(new float[] { 1, 1, 1 }))[0].ToArray<float>();
        var report = GraphOptimizer.Optimize(g, OnnxOps.Resolver);
        Assert.Equal(new OptimizationReport(1, 1, 3), report);    // Mul folded; Exp removed; c1, c2, unused dropped
        Assert.Single(g.Nodes);
        Assert.Equal("Add", g.Nodes[0].OpType);
        Assert.Equal(new float[] { 2, 4, 6 }, g.Initializers["c"].ToArray<float>());
        var after = new GraphExecutor(g, OnnxOps.Resolver).Run(Tensor.FromArray(new float[] { 1, 1, 1 }))[0].ToArray<float>();
        Assert.Equal(before, after);
    }

    [Fact]
    public void AnInitializerThatIsAlsoAnInputIsNotFolded()
    {
        var g = new Graph.Graph
        {
            Name = "t",
            Opsets = new() { [""] = 17 },
            Inputs = [new ValueInfo("w", DType.Float32, [SymbolicDim.Fixed(2)])],
            Outputs = [new ValueInfo("y", DType.Float32, [SymbolicDim.Fixed(2)])],
            Initializers = new() { ["w"] = Tensor.FromArray(new float[] { 1, 2 }) },
            Nodes = [new Node { OpType = "Neg", Inputs = ["w"], Outputs = ["y"] }],
        };
        Assert.Equal(0, GraphOptimizer.Optimize(g, OnnxOps.Resolver).FoldedNodes);
        Assert.Equal(new float[] { -5, -6 }, new GraphExecutor(g, OnnxOps.Resolver).Run(Tensor.FromArray(new float[] { 5, 6 }))[0].ToArray<float>());
    }
}
