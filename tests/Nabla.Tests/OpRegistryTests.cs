using Nabla.Autograd;
using Nabla.IO;
using Xunit;

namespace Nabla.Tests;

/// <summary>
/// Every primitive in <see cref="OpRegistry"/> must have a CPU kernel and a gradient rule (a finite-difference check
/// of a function whose graph contains it) and a golden fixture case. Adding a primitive without all three fails here.
/// </summary>
public class OpRegistryTests
{
    static Tensor R(Generator g, params int[] s) => GradCheck.Randn(g, s);

    // Second-order form: the gradient of f, built with create_graph, so backward-only primitives appear in the graph.
    static Func<Tensor[], Tensor> GradOf(Func<Tensor[], Tensor> f) => xs =>
    {
        using var _ = GradMode.EnableGrad();
        xs = xs.Select(x => x.RequiresGrad ? x : x.Detach().RequiresGrad_()).ToArray();
        var l = f(xs).Square().Sum();
        return AutogradFunctions.Grad([l], xs, createGraph: true, allowUnused: true)[0]!;
    };

    /// <summary>Marks a case whose primitive only appears in a gradient's graph: checked by second derivatives.</summary>
    sealed class SecondOrder(Func<Tensor[], Tensor> f)
    {
        public Func<Tensor[], Tensor> F { get; } = f;
    }

    static readonly Dictionary<Func<Tensor[], Tensor>, SecondOrder> SecondOrderCases = new();

    static Func<Tensor[], Tensor> Second(Func<Tensor[], Tensor> f)
    {
        Func<Tensor[], Tensor> marker = xs => GradOf(f)(xs);
        SecondOrderCases[marker] = new SecondOrder(f);
        return marker;
    }

    /// <summary>For each primitive: inputs and a function whose autograd graph records it.</summary>
    static readonly Dictionary<string, (Func<Generator, Tensor[]> inputs, Func<Tensor[], Tensor> f)> Cases = new()
    {
        ["add"] = (g => [R(g, 2, 3), R(g, 3)], x => x[0].Add(x[1])),
        ["sub"] = (g => [R(g, 2, 3), R(g, 3)], x => x[0].Sub(x[1])),
        ["mul"] = (g => [R(g, 2, 3), R(g, 2, 1)], x => x[0].Mul(x[1])),
        ["div"] = (g => [R(g, 2, 3), GradCheck.Uniform(g, [3], 0.5, 2)], x => x[0].Div(x[1])),
        ["pow"] = (g => [GradCheck.Uniform(g, [2, 3], 0.5, 2), R(g, 3)], x => x[0].Pow(x[1])),
        ["maximum"] = (g => [R(g, 4), R(g, 4)], x => x[0].Maximum(x[1])),
        ["minimum"] = (g => [R(g, 4), R(g, 4)], x => x[0].Minimum(x[1])),
        ["where"] = (g => [R(g, 5), R(g, 5)], x => Tensor.Where(x[0].Gt(0.0), x[0], x[1])),
        ["neg"] = (g => [R(g, 3)], x => x[0].Neg()),
        ["exp"] = (g => [R(g, 3)], x => x[0].Exp()),
        ["log"] = (g => [GradCheck.Uniform(g, [3], 0.5, 2)], x => x[0].Log()),
        ["log1p"] = (g => [GradCheck.Uniform(g, [3], 0.5, 2)], x => x[0].Log1p()),
        ["expm1"] = (g => [R(g, 3)], x => x[0].Expm1()),
        ["sqrt"] = (g => [GradCheck.Uniform(g, [3], 0.5, 2)], x => x[0].Sqrt()),
        ["abs"] = (g => [GradCheck.AwayFromZero(g, [4])], x => x[0].Abs()),
        ["sin"] = (g => [R(g, 3)], x => x[0].Sin()),
        ["cos"] = (g => [R(g, 3)], x => x[0].Cos()),
        ["tanh"] = (g => [R(g, 3)], x => x[0].Tanh()),
        ["sigmoid"] = (g => [R(g, 3)], x => x[0].Sigmoid()),
        ["relu"] = (g => [GradCheck.AwayFromZero(g, [5])], x => x[0].Relu()),
        ["relu_backward"] = (g => [GradCheck.AwayFromZero(g, [5])], Second(x => x[0].Relu().Mul(x[0]))),
        ["erf"] = (g => [R(g, 3)], x => x[0].Erf()),
        ["floor"] = (g => [R(g, 3)], x => x[0].Floor().Add(x[0])),
        ["ceil"] = (g => [R(g, 3)], x => x[0].Ceil().Add(x[0])),
        ["round"] = (g => [R(g, 3)], x => x[0].Round().Add(x[0])),
        ["to"] = (g => [R(g, 3)], x => x[0].To(DType.Float32).To(DType.Float64).Mul(x[0])),
        ["sum"] = (g => [R(g, 2, 3)], x => x[0].Sum(1)),
        ["prod"] = (g => [R(g, 2, 3)], x => x[0].Prod(1)),
        ["max"] = (g => [R(g, 2, 3)], x => x[0].Max(1).values),
        ["min"] = (g => [R(g, 2, 3)], x => x[0].Min(0).values),
        ["cumsum"] = (g => [R(g, 2, 3)], x => x[0].Cumsum(1)),
        ["reshape"] = (g => [R(g, 2, 3)], x => x[0].Reshape(3, 2)),
        ["view"] = (g => [R(g, 2, 3)], x => x[0].View(6)),
        ["unsqueeze"] = (g => [R(g, 2, 3)], x => x[0].Unsqueeze(1)),
        ["squeeze"] = (g => [R(g, 2, 1, 3)], x => x[0].Squeeze(1)),
        ["permute"] = (g => [R(g, 2, 3, 4)], x => x[0].Permute(2, 0, 1)),
        ["expand"] = (g => [R(g, 1, 3)], x => x[0].Expand(4, 3)),
        ["slice"] = (g => [R(g, 6, 2)], x => x[0].Slice(0, 1, 6, 2)),
        ["slice_backward"] = (g => [R(g, 6, 2)], Second(x => x[0].Slice(0, 1, 6, 2).Mul(x[0].Slice(0, 0, 3)))),
        ["contiguous"] = (g => [R(g, 3, 2)], x => x[0].T.Contiguous()),
        ["clone"] = (g => [R(g, 3)], x => x[0].Clone()),
        ["cat"] = (g => [R(g, 2, 3), R(g, 1, 3)], x => Tensor.Cat(x, 0)),
        ["index_select"] = (g => [R(g, 4, 3)], x => x[0].IndexSelect(0, Tensor.FromArray(new long[] { 3, 0, 3 }))),
        ["index_add"] = (g => [R(g, 4, 3), R(g, 2, 3)], x => x[0].IndexAdd(0, Tensor.FromArray(new long[] { 1, 1 }), x[1])),
        ["gather"] = (g => [R(g, 3, 4)], x => x[0].Gather(1, Tensor.FromArray(new long[] { 0, 3, 1, 1, 2, 2 }, 3, 2))),
        ["scatter_add"] = (g => [R(g, 3, 4), R(g, 3, 2)], x => x[0].ScatterAdd(1, Tensor.FromArray(new long[] { 0, 0, 1, 3, 2, 2 }, 3, 2), x[1])),
        ["scatter"] = (g => [R(g, 3, 4), R(g, 3, 2)], x => x[0].Scatter(1, Tensor.FromArray(new long[] { 0, 1, 1, 3, 2, 0 }, 3, 2), x[1])),
        ["matmul"] = (g => [R(g, 2, 3), R(g, 3, 4)], x => x[0].Matmul(x[1])),
        ["conv2d"] = (g => [R(g, 2, 2, 5, 4), R(g, 3, 2, 3, 2), R(g, 3)], x => Functional.Conv2d(x[0], x[1], x[2], (2, 1), (1, 1), (1, 2))),
        ["unfold"] = (g => [R(g, 1, 2, 4, 4)], x => Functional.Unfold(x[0], (2, 2))),
        ["fold"] = (g => [R(g, 1, 8, 9)], x => Functional.Fold(x[0], (4, 4), (2, 2))),
        ["max_pool2d"] = (g => [R(g, 1, 2, 4, 4)], x => Functional.MaxPool2d(x[0], 2)),
        ["max_pool2d_backward"] = (g => [R(g, 1, 2, 4, 4)], Second(x => Functional.MaxPool2d(x[0], 2).Square())),
        // The gradient of max_pool2d_backward is a gather: it appears one derivative further.
        ["max_pool2d_gather"] = (g => [R(g, 1, 2, 4, 4)], Second(GradOf(x => Functional.MaxPool2d(x[0], 2).Square()))),
        ["batch_norm"] = (g => [R(g, 3, 2, 2, 2)], x => Functional.BatchNorm(x[0], null, null, training: true)),
        ["constant_pad"] = (g => [R(g, 2, 3)], x => Functional.Pad(x[0], [1, 2])),
    };

    static HashSet<string> GraphOps(Tensor t)
    {
        var seen = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var names = new HashSet<string>();
        var stack = new Stack<Node>();
        if (t.gradFn is not null) stack.Push(t.gradFn);
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            if (!seen.Add(n)) continue;
            names.Add(n.Op);
            foreach (var i in n.Inputs) if (i?.gradFn is not null) stack.Push(i.gradFn);
        }
        return names;
    }

    [Fact]
    public void EveryRegisteredPrimitiveHasAGradientCheckCase()
    {
        var registered = OpRegistry.Primitives.Select(p => p.Name).ToHashSet();
        Assert.Empty(registered.Except(Cases.Keys));
        Assert.Empty(Cases.Keys.Except(registered));
        Assert.Equal(registered.Count, OpRegistry.Primitives.Length);
    }

    public static IEnumerable<object[]> Names() => OpRegistry.Primitives.Select(p => new object[] { p.Name });

    [Theory]
    [MemberData(nameof(Names))]
    public void KernelAndGradientRule(string op)
    {
        var gen = new Generator(7);
        var (inputs, f) = Cases[op];
        var xs = inputs(gen).Select(x => x.Detach().RequiresGrad_()).ToArray();
        var y = f(xs);
        Assert.Contains(op, GraphOps(y));
        if (SecondOrderCases.TryGetValue(f, out var second)) GradCheck.CheckSecondOrder(op, second.F, inputs(gen), gen);
        // NOTE: "to" passes through float32, so its finite differences carry float32 rounding.
        else if (op == "to") GradCheck.Check(op, f, inputs(gen), gen, atol: 1e-4, rtol: 1e-2);
        else GradCheck.Check(op, f, inputs(gen), gen);
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void HasFixtureCase(string op)
    {
        var fixture = OpRegistry.Primitives.Single(p => p.Name == op).Fixture;
        var parts = fixture.Split('/');
        var path = Path.Combine(AppContext.BaseDirectory, "fixtures", "core", parts[0] + ".safetensors");
        Assert.True(File.Exists(path), $"{op}: fixture file {path} is missing");
        var cases = SafeTensors.LoadWithMetadata(path).Metadata["cases"].Split(',');
        Assert.Contains(parts[1], cases);
    }

    [Fact]
    public void RecordingAnUnregisteredOpThrows()
    {
        var x = Tensor.Ones(2).RequiresGrad_();
        var e = Assert.Throws<InvalidOperationException>(() => Tensor.Record(Tensor.Ones(2), "not_an_op", [x], g => [g]));
        Assert.Contains("not_an_op", e.Message);
    }
}
