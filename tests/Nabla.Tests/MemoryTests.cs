using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

namespace Nabla.Tests;

/// <summary>Memory measurements need the process to themselves: this collection runs after the parallel ones, alone.</summary>
[CollectionDefinition(nameof(MemoryCollection), DisableParallelization = true)]
public class MemoryCollection { }

[Collection(nameof(MemoryCollection))]
public class MemoryTests(ITestOutputHelper output)
{
    const int WarmUp = 1_000;
    const int Iterations = 10_000;

    /// <summary>
    /// A 32→64→10 MLP from raw tensors trained by hand (forward, backward, SGD under NoGrad) must not leak: the
    /// graph of each step, its saved tensors and the gradients must all become garbage once the step ends.
    /// </summary>
    [Fact]
    public void TrainingLoopKeepsMemoryFlat()
    {
        var g = new Generator(2024);
        var w1 = Tensor.Randn([32, 64], DType.Float32, g).Mul(0.15).RequiresGrad_();
        var b1 = Tensor.Zeros(64).RequiresGrad_();
        var w2 = Tensor.Randn([64, 10], DType.Float32, g).Mul(0.15).RequiresGrad_();
        var b2 = Tensor.Zeros(10).RequiresGrad_();
        Tensor[] parameters = [w1, b1, w2, b2];
        const int batches = 8;
        var xs = Enumerable.Range(0, batches).Select(_ => Tensor.Randn([16, 32], DType.Float32, g)).ToArray();
        var ys = Enumerable.Range(0, batches).Select(_ => Tensor.Randint(0, 10, [16], generator: g)).ToArray();

        double Step(int i)
        {
            var x = xs[i % batches];
            var h = x.Matmul(w1).Add(b1).Relu();
            var loss = Losses.CrossEntropy(h.Matmul(w2).Add(b2), ys[i % batches]);
            loss.Backward();
            using (GradMode.NoGrad())
            {
                foreach (var p in parameters)
                {
                    p.Add_(p.Grad!, alpha: -0.05);
                    p.Grad = null;
                }
            }
            return loss.Item();
        }

        var sw = Stopwatch.StartNew();
        double first = Step(0);
        for (int i = 1; i < WarmUp; i++) Step(i);
        long managed0 = GC.GetTotalMemory(forceFullCollection: true);
        long ws0 = Environment.WorkingSet;
        double last = 0;
        for (int i = WarmUp; i < Iterations; i++) last = Step(i);
        long managed1 = GC.GetTotalMemory(forceFullCollection: true);
        long ws1 = Environment.WorkingSet;
        output.WriteLine($"{Iterations} steps in {sw.Elapsed.TotalSeconds:F1} s; loss {first:F4} -> {last:F4}; " +
            $"managed {managed0 / 1024} KiB -> {managed1 / 1024} KiB; working set {ws0 >> 20} MiB -> {ws1 >> 20} MiB");

        Assert.True(last < first * 0.5, $"training did not progress: loss {first} -> {last}");
        // Bounds: the live state (~11 KiB of parameters and 8 batches) is allocated before the first measurement, so
        // the managed heap should not grow at all (measured: a few KiB). 4 MiB over 9,000 steps catches any leak of
        // ≥ 470 B per step, i.e. one retained tensor, node or gradient per step, let alone a step's whole graph
        // (tens of KiB). The working set also counts native runtime memory and heap segments the GC keeps around,
        // so it gets a looser 64 MiB.
        Assert.True(managed1 - managed0 < 4L << 20, $"managed heap grew by {(managed1 - managed0) >> 10} KiB over {Iterations - WarmUp} steps");
        Assert.True(ws1 - ws0 < 64L << 20, $"working set grew by {(ws1 - ws0) >> 20} MiB over {Iterations - WarmUp} steps");
    }
}
