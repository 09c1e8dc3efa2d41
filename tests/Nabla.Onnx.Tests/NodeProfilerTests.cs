using Nabla.Graph;
using Nabla.Interop.Onnx;
using Xunit;

namespace Nabla.Onnx.Tests;

/// <summary><see cref="NodeProfiler"/> on real models: what it records per node, that it changes no result, and that a
/// subgraph's nodes are timed too.</summary>
public class NodeProfilerTests
{
    static string Data => ConformanceRunner.DataRoot ?? throw new InvalidOperationException("../shared/data/onnx not found");

    [Fact]
    public void TimesEveryNodeOfEachRunAndChangesNoResult()
    {
        var dir = Path.Combine(Data, "models", "mnist-8");
        var input = OnnxModel.ReadTensor(Path.Combine(dir, "test_data_set_0", "input_0.pb"));
        var model = OnnxModel.Load(Path.Combine(dir, "model.onnx"));
        var plain = model.Run(input)[0].ToArray<float>();

        var profiler = new NodeProfiler();
        model.Profiler = profiler;
        float[] profiled = [];
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < 3; i++) profiled = model.Run(input)[0].ToArray<float>();
        var wall = clock.Elapsed;
        Assert.Equal(plain, profiled);

        var t = profiler.Timings;
        Assert.Equal(model.Graph.Nodes.Count, t.Count);
        var names = model.Graph.Nodes.Select(n => n.Name.Length > 0 ? n.Name : n.Outputs[0]).ToHashSet();
        Assert.All(t, x =>
        {
            Assert.Contains(x.Node, names);
            Assert.Equal(3, x.Calls);
        });
        // The kernels ran inside the three runs: together they took some time, and no more than the runs' wall time.
        long kernels = t.Sum(x => x.Total.Ticks);
        Assert.InRange(kernels, 1, wall.Ticks);
        // The graph's output node comes last in execution order and produced the [1, 10] scores.
        var last = model.Graph.Nodes.Single(n => n.Outputs.Contains(model.Graph.Outputs[0].Name));
        Assert.Equal(last.Name.Length > 0 ? last.Name : last.Outputs[0], t[^1].Node);
        Assert.Equal(new[] { 1, 10 }, t[^1].OutputShape);
        // The returned shapes are copies.
        t[^1].OutputShape[0] = 99;
        Assert.Equal(new[] { 1, 10 }, profiler.Timings[^1].OutputShape);

        var report = profiler.Format(top: 2);
        Assert.Contains($"{t.Count} nodes", report);
        foreach (var op in t.Select(x => x.OpType).Distinct()) Assert.Contains(op, report);
        Assert.Equal(2 + 2 + 1 + t.Select(x => x.OpType).Distinct().Count(), report.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);

        profiler.Reset();
        Assert.Empty(profiler.Timings);
        model.Profiler = null;
        model.Run(input);
        Assert.Empty(profiler.Timings);
        Assert.Throws<ArgumentOutOfRangeException>(() => profiler.Format(-1));
    }

    [Fact]
    public void NodesInsideAnIfBranchAreTimedToo()
    {
        var dir = Path.Combine(Data, "node", "test_if");
        var model = OnnxModel.Load(Path.Combine(dir, "model.onnx"));
        var input = OnnxModel.ReadTensor(Path.Combine(dir, "test_data_set_0", "input_0.pb"));
        var profiler = new NodeProfiler();
        model.Profiler = profiler;
        model.Run(input);
        var t = profiler.Timings;
        var top = model.Graph.Nodes.Select(n => n.Name.Length > 0 ? n.Name : n.Outputs[0]).ToHashSet();
        var ifNode = Assert.Single(t, x => x.OpType == "If");
        // The branch that ran contributes its own nodes, beyond the top-level graph's, and their time lies inside the If's.
        var inner = t.Where(x => !top.Contains(x.Node)).ToList();
        Assert.True(inner.Count > 0, string.Join(", ", t.Select(x => $"{x.Node} ({x.OpType})")));
        Assert.True(ifNode.Total >= TimeSpan.FromTicks(inner.Sum(x => x.Total.Ticks)), $"If {ifNode.Total}, branch {string.Join(", ", inner.Select(x => x.Total))}");
    }
}
