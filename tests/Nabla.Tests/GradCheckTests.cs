using Xunit;
using static Nabla.Tests.GradCheck;

namespace Nabla.Tests;

/// <summary>
/// Float64 finite-difference checks of every differentiable tensor primitive and composite, on random shapes
/// drawn from a seeded <see cref="Random"/> (a few trials per op). Functional ops and second derivatives are in
/// <see cref="GradCheckFunctionalTests"/>.
/// </summary>
public class GradCheckTests
{
    const int Trials = 3;

    // name → (input maker, op). Inputs avoid kinks and domain edges: abs/relu/leaky/elu away from 0, log/sqrt on positives.
    static readonly Dictionary<string, (Func<Generator, int[], Tensor> make, Func<Tensor, Tensor> op)> UnaryOps = new()
    {
        ["exp"] = (Randn, x => x.Exp()),
        ["log"] = ((g, s) => Uniform(g, s, 0.2, 3), x => x.Log()),
        ["log1p"] = ((g, s) => Uniform(g, s, -0.7, 3), x => x.Log1p()),
        ["expm1"] = (Randn, x => x.Expm1()),
        ["sqrt"] = ((g, s) => Uniform(g, s, 0.2, 3), x => x.Sqrt()),
        ["rsqrt"] = ((g, s) => Uniform(g, s, 0.2, 3), x => x.Rsqrt()),
        ["reciprocal"] = ((g, s) => AwayFromZero(g, s, 0.3), x => x.Reciprocal()),
        ["abs"] = ((g, s) => AwayFromZero(g, s), x => x.Abs()),
        ["neg"] = (Randn, x => x.Neg()),
        ["square"] = (Randn, x => x.Square()),
        ["pow_scalar"] = ((g, s) => Uniform(g, s, 0.2, 2), x => x.Pow(2.5)),
        ["sin"] = (Randn, x => x.Sin()),
        ["cos"] = (Randn, x => x.Cos()),
        ["tanh"] = (Randn, x => x.Tanh()),
        ["sigmoid"] = (Randn, x => x.Sigmoid()),
        ["relu"] = ((g, s) => AwayFromZero(g, s), x => x.Relu()),
        ["erf"] = (Randn, x => x.Erf()),
        ["gelu"] = (Randn, x => x.Gelu()),
        ["gelu_tanh"] = (Randn, x => x.Gelu("tanh")),
        ["silu"] = (Randn, x => x.Silu()),
        ["softplus"] = (Randn, x => x.Softplus()),
        ["softplus_beta"] = (Randn, x => x.Softplus(beta: 2, threshold: 1)),
        ["elu"] = ((g, s) => AwayFromZero(g, s), x => x.Elu(0.7)),
        ["leaky_relu"] = ((g, s) => AwayFromZero(g, s), x => x.LeakyRelu(0.2)),
        ["clamp"] = ((g, s) => AwayFromZero(g, s, 0.05), x => x.Clamp(-0.6, 0.7)),
        ["clamp_min"] = ((g, s) => AwayFromZero(g, s, 0.05), x => x.Clamp(min: 0.0)),
        ["hardtanh"] = ((g, s) => AwayFromZero(g, s, 0.05), x => x.Hardtanh()),
    };

    public static TheoryData<string> UnaryNames => new(UnaryOps.Keys);

    [Theory, MemberData(nameof(UnaryNames))]
    public void Unary(string name)
    {
        var (make, op) = UnaryOps[name];
        var rng = new Random(name.Length * 31 + 7);
        var gen = new Generator(11);
        for (int t = 0; t < Trials; t++)
        {
            var shape = RandomShape(rng);
            Check(name, xs => op(xs[0]), [make(gen, shape)], gen);
            // The same op on a transposed (non-contiguous) view of the input.
            if (shape.Length >= 2) Check(name + " (transposed)", xs => op(xs[0].Transpose(0, -1)), [make(gen, shape)], gen);
        }
    }

    static readonly Dictionary<string, (Func<Generator, int[], Tensor> makeB, Func<Tensor, Tensor, Tensor> op)> BinaryOps = new()
    {
        ["add"] = (Randn, (a, b) => a.Add(b)),
        ["add_alpha"] = (Randn, (a, b) => a.Add(b, 2.5)),
        ["sub"] = (Randn, (a, b) => a.Sub(b)),
        ["mul"] = (Randn, (a, b) => a.Mul(b)),
        ["div"] = ((g, s) => AwayFromZero(g, s, 0.5), (a, b) => a.Div(b)),
        ["pow"] = (Randn, (a, b) => a.Abs().Add(0.3).Pow(b)),
        ["maximum"] = (Randn, (a, b) => a.Maximum(b)),
        ["minimum"] = (Randn, (a, b) => a.Minimum(b)),
        ["where"] = (Randn, (a, b) => Tensor.Where(a.Detach().Gt(b.Detach()), a.Mul(2.0), b.Exp())),
    };

    public static TheoryData<string> BinaryNames => new(BinaryOps.Keys);

    /// <summary>A shape that broadcasts against <paramref name="s"/>: some dims set to 1, maybe fewer leading dims.</summary>
    static int[] BroadcastPartner(Random rng, int[] s)
    {
        var r = s.Select(d => rng.Next(3) == 0 ? 1 : d).ToArray();
        int drop = rng.Next(0, s.Length);
        return r[drop..];
    }

    [Theory, MemberData(nameof(BinaryNames))]
    public void BinaryWithBroadcasting(string name)
    {
        var (makeB, op) = BinaryOps[name];
        var rng = new Random(name.Length * 17 + 3);
        var gen = new Generator(12);
        for (int t = 0; t < Trials + 1; t++)
        {
            var sa = RandomShape(rng);
            var sb = BroadcastPartner(rng, sa);
            if (t % 2 == 1) (sa, sb) = (sb, sa);
            var a = name == "pow" ? Randn(gen, sa) : Randn(gen, sa);
            Check($"{name} {ShapeUtil.Format(sa)} {ShapeUtil.Format(sb)}", xs => op(xs[0], xs[1]), [a, makeB(gen, sb)], gen);
        }
        // One operand a C# scalar, one a 0-d tensor.
        Check(name + " (scalar)", xs => op(xs[0], Tensor.Scalar(1.3, DType.Float64)), [Randn(gen, 2, 3)], gen);
        Check(name + " (0-d)", xs => op(xs[0], xs[1]), [Randn(gen, 3, 2), name == "div" ? Tensor.Scalar(1.7, DType.Float64) : Randn(gen)], gen);
    }

    [Fact]
    public void CheckerRejectsAWrongGradient()
    {
        // A deliberately wrong rule (d/dx x² taken as x) must be caught, so a passing check means something.
        var gen = new Generator(10);
        static Tensor BadSquare(Tensor x) => Tensor.Record(x.Detach().Mul(x.Detach()), "bad_square", [x], g => [g.Mul(x)]);
        Assert.ThrowsAny<Exception>(() => Check("bad_square", xs => BadSquare(xs[0]), [Randn(gen, 3)], gen));
        Assert.ThrowsAny<Exception>(() => CheckSecondOrder("bad_square", xs => BadSquare(xs[0]).Mul(xs[0]), [Randn(gen, 3)], gen));
    }

    [Fact]
    public void ScalarOperators()
    {
        var gen = new Generator(13);
        Check("rsub", xs => 2.0 - xs[0], [Randn(gen, 3, 4)], gen);
        Check("rdiv", xs => 2.0 / xs[0], [AwayFromZero(gen, [3, 4], 0.5)], gen);
        Check("pow_zero_exponent", xs => xs[0].Pow(xs[1]), [Randn(gen, 4).Abs().Add(0.5), Tensor.Zeros([4], DType.Float64)], gen);
    }

    static readonly Dictionary<string, Func<Tensor, int, Tensor>> DimReductions = new()
    {
        ["sum"] = (x, d) => x.Sum(d),
        ["sum_keepdim"] = (x, d) => x.Sum(d, keepDim: true),
        ["sum_dims"] = (x, d) => x.Dim == 1 ? x.Sum([0]) : x.Sum([0, -1]),
        ["mean"] = (x, d) => x.Mean(d),
        ["prod"] = (x, d) => x.Prod(d),
        ["max"] = (x, d) => x.Max(d).values,
        ["min_keepdim"] = (x, d) => x.Min(d, keepDim: true).values,
        ["var"] = (x, d) => x.Var(d),
        ["var_correction0"] = (x, d) => x.Var(d, correction: 0),
        ["std"] = (x, d) => x.Std(d),
        ["std_keepdim"] = (x, d) => x.Std([d], correction: 1, keepDim: true),
        ["logsumexp"] = (x, d) => x.LogSumExp(d),
        ["norm2"] = (x, d) => x.Norm(2, d),
        ["norm1"] = (x, d) => x.Norm(1, d),
        ["norm3"] = (x, d) => x.Norm(3, d),
        ["norm_inf"] = (x, d) => x.Norm(double.PositiveInfinity, d),
        ["cumsum"] = (x, d) => x.Cumsum(d),
        ["softmax_like"] = (x, d) => x.Exp().Div(x.Exp().Sum(d, true)),
    };

    public static TheoryData<string> DimReductionNames => new(DimReductions.Keys);

    [Theory, MemberData(nameof(DimReductionNames))]
    public void ReductionOverDim(string name)
    {
        var op = DimReductions[name];
        var rng = new Random(name.Length * 13 + 1);
        var gen = new Generator(14);
        for (int t = 0; t < Trials; t++)
        {
            var shape = RandomShape(rng, 1, 3, 4);
            if (name.StartsWith("var") || name.StartsWith("std")) shape = shape.Select(s => s + 1).ToArray();   // n > correction
            int d = rng.Next(-shape.Length, shape.Length);
            var x = name is "prod" or "norm1" or "norm3" ? AwayFromZero(gen, shape, 0.2) : Randn(gen, shape);
            Check($"{name} {ShapeUtil.Format(shape)} dim {d}", xs => op(xs[0], d), [x], gen);
            if (shape.Length >= 2) Check($"{name} (permuted)", xs => op(xs[0].Transpose(0, 1), d), [x], gen);
        }
    }

    [Fact]
    public void FullReductions()
    {
        var gen = new Generator(15);
        var x = Randn(gen, 3, 4);
        Check("sum()", xs => xs[0].Sum(), [x], gen);
        Check("mean()", xs => xs[0].Mean(), [x], gen);
        Check("prod()", xs => xs[0].Prod(), [AwayFromZero(gen, [2, 3], 0.3)], gen);
        Check("max()", xs => xs[0].Max(), [x], gen);
        Check("min()", xs => xs[0].Min(), [x], gen);
        Check("var()", xs => xs[0].Var(), [x], gen);
        Check("std()", xs => xs[0].Std(correction: 0), [x], gen);
        Check("norm()", xs => xs[0].Norm(), [x], gen);
        Check("norm(1)", xs => xs[0].Norm(1), [AwayFromZero(gen, [3, 4])], gen);
        Check("norm(1.5)", xs => xs[0].Norm(1.5), [AwayFromZero(gen, [3, 4])], gen);
        Check("sum of 0-d", xs => xs[0].Sum().Mul(3.0).Sum(), [Randn(gen, 1)], gen);
        Check("dot", xs => xs[0].Dot(xs[1]), [Randn(gen, 5), Randn(gen, 5)], gen);
        Check("outer", xs => xs[0].Outer(xs[1]), [Randn(gen, 3), Randn(gen, 4)], gen);
    }

    [Fact]
    public void EdgeCases()
    {
        var gen = new Generator(20);
        // prod with exact zeros (one and two per slice): the rule must not divide by the element.
        Check("prod with zeros", xs => xs[0].Prod(1), [Tensor.FromArray(new double[] { 0, 2, 3, 0, 0, 5, 1.5, -2, 0.5 }, 3, 3)], gen);
        // 0-d inputs.
        Check("0-d exp", xs => xs[0].Exp().Mul(xs[0]), [Tensor.Scalar(0.7, DType.Float64)], gen);
        Check("0-d cumsum", xs => xs[0].Cumsum(0), [Tensor.Scalar(0.7, DType.Float64)], gen);
        Check("0-d max", xs => xs[0].Max(0).values, [Tensor.Scalar(0.7, DType.Float64)], gen);
        Check("0-d sum/mean", xs => xs[0].Sum(0).Add(xs[0].Mean()), [Tensor.Scalar(0.7, DType.Float64)], gen);
        // Empty tensors: gradients of the right (empty) shape, and a zero gradient for what feeds an empty sum.
        var e = Tensor.Zeros([0, 3], DType.Float64).RequiresGrad_();
        var w = Tensor.Ones([3], DType.Float64).RequiresGrad_();
        e.Mul(w).Exp().Sum().Backward();
        Assert.Equal([0, 3], e.Grad!.Shape);
        Assert.Equal(new double[3], w.Grad!.ToArray<double>());
        // The 2-norm at the zero vector has gradient 0 (PyTorch's subgradient), not NaN.
        var z = Tensor.Zeros([3], DType.Float64).RequiresGrad_();
        z.Norm().Backward();
        Assert.Equal(new double[3], z.Grad!.ToArray<double>());
        var z2 = Tensor.Zeros([2, 3], DType.Float64).RequiresGrad_();
        z2.Norm(2, 1).Sum().Backward();
        Assert.Equal(new double[6], z2.Grad!.ToArray<double>());
    }

    public static TheoryData<int[], int[]> MatmulShapes => new()
    {
        { [3, 4], [4, 5] },
        { [1, 7], [7, 1] },
        { [2, 3, 4], [4, 5] },          // batched · matrix
        { [3, 4], [2, 4, 5] },          // matrix · batched
        { [2, 3, 4], [2, 4, 2] },
        { [2, 1, 3, 4], [3, 4, 2] },    // broadcast batch dims
        { [5], [5] },                   // dot
        { [4], [4, 3] },                // vector · matrix
        { [3, 4], [4] },                // matrix · vector
        { [4], [2, 4, 3] },
        { [2, 3, 4], [4] },
    };

    [Theory, MemberData(nameof(MatmulShapes))]
    public void Matmul(int[] sa, int[] sb)
    {
        var gen = new Generator(16);
        Check($"matmul {ShapeUtil.Format(sa)} {ShapeUtil.Format(sb)}", xs => xs[0].Matmul(xs[1]), [Randn(gen, sa), Randn(gen, sb)], gen);
    }

    [Fact]
    public void MatmulOnTransposedOperands()
    {
        var gen = new Generator(17);
        Check("a.T·b", xs => xs[0].T.Matmul(xs[1]), [Randn(gen, 4, 3), Randn(gen, 4, 5)], gen);
        Check("a·b.T", xs => xs[0].Matmul(xs[1].T), [Randn(gen, 3, 4), Randn(gen, 5, 4)], gen);
        Check("batched mT", xs => xs[0].MT.Matmul(xs[1].Permute(1, 0, 2)), [Randn(gen, 2, 4, 3), Randn(gen, 4, 2, 5)], gen);
        Check("bmm", xs => xs[0].Bmm(xs[1]), [Randn(gen, 2, 3, 4), Randn(gen, 2, 4, 2)], gen);
        Check("einsum bij,bjk", xs => Tensor.Einsum("bij,bjk->bik", xs[0], xs[1]), [Randn(gen, 2, 3, 4), Randn(gen, 2, 4, 2)], gen);
    }

    static readonly Dictionary<string, (int[] shape, Func<Tensor, Tensor> op)> ViewOps = new()
    {
        ["permute"] = ([2, 3, 4], x => x.Permute(2, 0, 1).Mul(x.Permute(2, 0, 1))),
        ["transpose_exp"] = ([3, 4], x => x.Transpose(0, 1).Exp()),
        ["slice_step"] = ([7, 3], x => x.Slice(0, 1, 7, 2).Sin()),
        ["slice_step_dim1"] = ([3, 8], x => x.Slice(1, -6, 8, 3).Mul(2.0)),
        ["slice_of_transposed"] = ([5, 4], x => x.T.Slice(1, 0, 5, 2).Square()),
        ["expand"] = ([3, 1], x => x.Expand(2, 3, 4).Mul(Tensor.Arange(0, 24, 1, DType.Float64).Reshape(2, 3, 4))),
        ["select"] = ([3, 4, 2], x => x.Select(1, -2).Exp()),
        ["narrow"] = ([5, 3], x => x.Narrow(0, 1, 3).Square()),
        ["squeeze_unsqueeze"] = ([3, 1, 4], x => x.Squeeze(1).Unsqueeze(0).Unsqueeze(-1).Sin()),
        ["cat"] = ([3, 4], x => Tensor.Cat([x.T, x.T.Mul(x.T), x.Slice(0, 0, 2).T], 1)),
        ["cat_dim0"] = ([3, 4], x => Tensor.Cat([x, x.Slice(0, 0, 3, 2).Exp()], 0)),
        ["stack"] = ([3, 4], x => Tensor.Stack([x.T, x.T.Exp()], 1)),
        ["flip"] = ([3, 4, 2], x => x.Flip(0, 2).Mul(Tensor.Arange(0, 24, 1, DType.Float64).Reshape(3, 4, 2))),
        ["flip_transposed"] = ([3, 4], x => x.T.Flip(1).Sin()),
        ["reshape_transposed"] = ([3, 4], x => x.T.Reshape(2, 6).Mul(Tensor.Arange(0, 12, 1, DType.Float64).Reshape(2, 6))),
        ["flatten_permuted"] = ([2, 3, 4], x => x.Permute(1, 2, 0).Flatten(1).Exp()),
        ["contiguous"] = ([3, 4], x => x.T.Contiguous().Sin()),
        ["clone"] = ([3, 4], x => x.Clone().Mul(x)),
        ["split"] = ([5, 4], x => x.Split(2, 0)[2].Exp().Sum().Add(x.Split([1, 3], 1)[1].Sin().Sum())),
        ["chunk_unbind"] = ([4, 3], x => x.Chunk(2, 0)[1].Exp().Add(x.Unbind(0)[0])),
        ["mul_scalar"] = ([3], x => x.Mul(1.5)),
        ["view"] = ([2, 6], x => x.View(3, 4).T.Exp()),
        ["unflatten"] = ([2, 6], x => x.Unflatten(1, 2, 3).Permute(2, 0, 1).Sin()),
    };

    public static TheoryData<string> ViewNames => new(ViewOps.Keys);

    [Theory, MemberData(nameof(ViewNames))]
    public void ViewsOnNonContiguousInputs(string name)
    {
        var (shape, op) = ViewOps[name];
        var gen = new Generator(18);
        Check(name, xs => op(xs[0]), [Randn(gen, shape)], gen);
    }

    [Fact]
    public void IndexOps()
    {
        var gen = new Generator(19);
        var rng = new Random(19);
        for (int t = 0; t < Trials; t++)
        {
            int n = rng.Next(2, 5), m = rng.Next(2, 5), k = rng.Next(1, 6);
            var idx = Indices(gen, n, k);   // duplicates likely
            Check("index_select dim 0", xs => xs[0].IndexSelect(0, idx), [Randn(gen, n, m)], gen);
            Check("index_select dim 1 on transposed", xs => xs[0].T.IndexSelect(1, idx), [Randn(gen, n, m)], gen);
            var gi = Indices(gen, m, n, k);
            Check("gather dim 1", xs => xs[0].Gather(1, gi), [Randn(gen, n, m)], gen);
            var gi0 = Indices(gen, n, k, m);
            Check("gather dim 0", xs => xs[0].Gather(0, gi0), [Randn(gen, n, m)], gen);
            var si = Indices(gen, n, 2, m);
            Check("scatter_add", xs => xs[0].ScatterAdd(0, si, xs[1]), [Randn(gen, n, m), Randn(gen, 3, m)], gen);
            // scatter without duplicates along the dim (a permutation per column), so the written value is well defined.
            var perm = Tensor.Stack(Enumerable.Range(0, m).Select(_ => Tensor.FromArray(Enumerable.Range(0, n).OrderBy(_ => rng.Next()).Select(v => (long)v).ToArray())).ToList(), 1).Slice(0, 0, Math.Max(1, n - 1));
            Check("scatter", xs => xs[0].Scatter(0, perm, xs[1]), [Randn(gen, n, m), Randn(gen, n, m + 1)], gen);
            var mask = Tensor.Rand([n, m], DType.Float64, gen).Gt(0.5);
            Check("masked_fill", xs => xs[0].MaskedFill(mask, 2.5), [Randn(gen, n, m)], gen);
            Check("masked_fill broadcast", xs => xs[0].MaskedFill(mask.Select(0, 0), -1.0), [Randn(gen, n, m)], gen);
            var i0 = Indices(gen, n, 2, 3);
            var i1 = Indices(gen, m, 3);
            Check("index with tensors", xs => xs[0].Index(i0, i1), [Randn(gen, n, m, 2)], gen);
            Check("index with one tensor", xs => xs[0].Index(null, i1).Exp(), [Randn(gen, 2, m, 3)], gen);
            Check("index with bool mask", xs => xs[0].Index(mask), [Randn(gen, n, m)], gen);
            Check("masked_select", xs => xs[0].MaskedSelect(mask), [Randn(gen, n, m)], gen);
            Check("index_add", xs => xs[0].IndexAdd(0, idx, xs[1]), [Randn(gen, n, m), Randn(gen, k, m)], gen);
        }
        Check("sort values", xs => xs[0].Sort(1).values, [Randn(gen, 3, 5)], gen);
        Check("topk values", xs => xs[0].Topk(2, 0).values, [Randn(gen, 4, 3)], gen);
    }
}
