using Nabla.Autograd;
using Xunit;

namespace Nabla.Tests;

/// <summary>The autograd engine's contract: accumulation, grad modes, detaching, graph retention, higher order, the functional API and misuse.</summary>
public class AutogradTests
{
    static Tensor Vec(params double[] v) => Tensor.FromArray(v);

    static void Close(double[] expected, Tensor actual)
    {
        var a = actual.ToArray<double>();
        Assert.Equal(expected.Length, a.Length);
        for (int i = 0; i < a.Length; i++) Assert.Equal(expected[i], a[i], 12);
    }

    [Fact]
    public void BackwardAccumulatesIntoGradAcrossCalls()
    {
        var x = Vec(1, 2, 3).RequiresGrad_();
        x.Mul(x).Sum().Backward();
        Assert.Equal(new double[] { 2, 4, 6 }, x.Grad!.ToArray<double>());
        x.Mul(3.0).Sum().Backward();
        Assert.Equal(new double[] { 5, 7, 9 }, x.Grad!.ToArray<double>());
        Assert.Null(x.Grad!.GradFn);
        Assert.False(x.Grad!.RequiresGrad);
        x.Grad = null;
        x.Sum().Backward();
        Assert.Equal(new double[] { 1, 1, 1 }, x.Grad!.ToArray<double>());
    }

    [Fact]
    public void GradientsOfAReusedTensorAddUp()
    {
        // y = x·x + exp(x) uses x three times; broadcasting sums back to the leaf's shape.
        var x = Vec(0.5, -1).RequiresGrad_();
        var b = Tensor.FromArray(new double[] { 1, 2, 3, 4, 5, 6 }, 3, 2).RequiresGrad_();
        x.Mul(x).Add(x.Exp()).Mul(b).Sum().Backward();
        var xv = new[] { 0.5, -1 };
        for (int i = 0; i < 2; i++)
        {
            double colSum = i == 0 ? 1 + 3 + 5 : 2 + 4 + 6;
            Assert.Equal((2 * xv[i] + Math.Exp(xv[i])) * colSum, x.Grad!.ToArray<double>()[i], 12);
        }
        Assert.Equal(new[] { 3, 2 }, b.Grad!.Shape);
    }

    [Fact]
    public void NonScalarBackwardNeedsAGradient()
    {
        var x = Vec(1, 2).RequiresGrad_();
        var y = x.Mul(2.0);
        var e = Assert.Throws<AutogradException>(() => y.Backward());
        Assert.Contains("scalar outputs", e.Message);
        y.Backward(Vec(1, 10));
        Assert.Equal(new double[] { 2, 20 }, x.Grad!.ToArray<double>());
        Assert.Throws<ShapeMismatchException>(() => x.Mul(2.0).Backward(Vec(1, 2, 3)));
    }

    [Fact]
    public void NoGradScopeRecordsNothing()
    {
        var x = Vec(1, 2).RequiresGrad_();
        Tensor y, z;
        using (GradMode.NoGrad())
        {
            Assert.False(GradMode.IsEnabled);
            y = x.Mul(2.0).Exp();
            using (GradMode.EnableGrad()) z = x.Mul(2.0);
            Assert.False(GradMode.IsEnabled);
        }
        Assert.True(GradMode.IsEnabled);
        Assert.False(y.RequiresGrad);
        Assert.Null(y.GradFn);
        Assert.True(z.RequiresGrad);
        Assert.Equal("mul", z.GradFn);
        Assert.Throws<AutogradException>(() => y.Sum().Backward());
    }

    [Fact]
    public void DetachSharesStorageAndCutsTheGraph()
    {
        var x = Vec(1, 2, 3).RequiresGrad_();
        var y = x.Mul(2.0);
        var d = y.Detach();
        Assert.False(d.RequiresGrad);
        Assert.True(d.IsLeaf);
        Assert.Same(y.Storage, d.Storage);
        // The detached branch contributes no gradient.
        y.Mul(d).Sum().Backward();
        Assert.Equal(new double[] { 4, 8, 12 }, x.Grad!.ToArray<double>());
        d.Fill_(0);
        Assert.Equal(new double[] { 0, 0, 0 }, y.ToArray<double>());
    }

    [Fact]
    public void SecondBackwardNeedsRetainGraph()
    {
        var x = Vec(1, 2).RequiresGrad_();
        var y = x.Exp().Sum();
        y.Backward();
        var e = Assert.Throws<AutogradException>(() => y.Backward());
        Assert.Contains("second time", e.Message);
        Assert.Contains("retainGraph", e.Message);
        Assert.Contains("(at sum)", e.Message);   // the first freed node the engine reaches

        var x2 = Vec(1, 2).RequiresGrad_();
        var y2 = x2.Exp().Sum();
        y2.Backward(retainGraph: true);
        y2.Backward();
        Close([2 * Math.E, 2 * Math.Exp(2)], x2.Grad!);
    }

    [Fact]
    public void CreateGraphGivesDifferentiableGradients()
    {
        var x = Vec(2, -1).RequiresGrad_();
        x.Pow(3.0).Sum().Backward(createGraph: true);
        var g = x.Grad!;
        Assert.Equal(new double[] { 12, 3 }, g.ToArray<double>());
        Assert.True(g.RequiresGrad);
        Assert.NotNull(g.GradFn);
        var h = AutogradFunctions.Grad(g.Sum(), x);
        Assert.Equal(new double[] { 12, -6 }, h.ToArray<double>());   // 6x
    }

    [Fact]
    public void FunctionalGradOfAllInputs()
    {
        var a = Vec(1, 2).RequiresGrad_();
        var b = Vec(3, 4).RequiresGrad_();
        var unused = Vec(0).RequiresGrad_();
        var y = a.Mul(b).Sum();
        var gs = AutogradFunctions.Grad([y], [a, b, unused], retainGraph: true, allowUnused: true);
        Assert.Equal(new double[] { 3, 4 }, gs[0]!.ToArray<double>());
        Assert.Equal(new double[] { 1, 2 }, gs[1]!.ToArray<double>());
        Assert.Null(gs[2]);
        // Grad returns gradients and accumulates nothing.
        Assert.Null(a.Grad);
        var e = Assert.Throws<AutogradException>(() => AutogradFunctions.Grad([y], [unused]));
        Assert.Contains("not used", e.Message);
    }

    [Fact]
    public void NestedGradIsTheSecondDerivative()
    {
        Func<Tensor, Tensor> cube = x => x.Mul(x).Mul(x).Sum();
        var x0 = Vec(1.5, -2, 0.25);
        var d1 = AutogradFunctions.Grad(cube)(x0);
        var d2 = AutogradFunctions.Grad(z => AutogradFunctions.Grad(cube)(z).Sum())(x0);
        var d3 = AutogradFunctions.Grad(z => AutogradFunctions.Grad(w => AutogradFunctions.Grad(cube)(w).Sum())(z).Sum())(x0);
        for (int i = 0; i < 3; i++)
        {
            double v = x0.ToArray<double>()[i];
            Assert.Equal(3 * v * v, d1.ToArray<double>()[i], 12);
            Assert.Equal(6 * v, d2.ToArray<double>()[i], 12);
            Assert.Equal(6, d3.ToArray<double>()[i], 12);
        }
        Assert.False(d2.RequiresGrad);
        Assert.False(x0.RequiresGrad);
    }

    [Fact]
    public void ValueAndGradAndVjp()
    {
        var x = Vec(0.5, 1);
        var (value, grad) = AutogradFunctions.ValueAndGrad(t => t.Sin().Sum())(x);
        Assert.Equal(Math.Sin(0.5) + Math.Sin(1), value.Item(), 12);
        Close([Math.Cos(0.5), Math.Cos(1)], grad);
        Assert.False(value.RequiresGrad);

        var m = Tensor.FromArray(new double[] { 1, 2, 3, 4, 5, 6 }, 3, 2);
        var (output, vjp) = AutogradFunctions.Vjp(t => m.Matmul(t), x, Vec(1, 0, -1));
        Assert.Equal(new double[] { 2.5, 5.5, 8.5 }, output.ToArray<double>());
        Assert.Equal(new double[] { -4, -4 }, vjp.ToArray<double>());   // vᵀ·M
        Assert.Throws<ShapeMismatchException>(() => AutogradFunctions.Vjp(t => m.Matmul(t), x, Vec(1, 0)));

        // A function that ignores its input has a zero gradient.
        Assert.Equal(new double[] { 0, 0 }, AutogradFunctions.Grad(_ => Tensor.Scalar(3, DType.Float64))(x).ToArray<double>());
        Assert.Throws<ShapeMismatchException>(() => AutogradFunctions.Grad(t => t.Mul(2.0))(x));
    }

    [Fact]
    public void BackwardOnATensorThatDoesNotRequireGradThrows()
    {
        var e = Assert.Throws<AutogradException>(() => Vec(1, 2).Sum().Backward());
        Assert.Contains("does not require grad", e.Message);
        Assert.Throws<AutogradException>(() => AutogradFunctions.Grad([Vec(1).Sum()], [Vec(1).RequiresGrad_()]));
        Assert.Throws<AutogradException>(() => Tensor.FromArray(new long[] { 1 }).RequiresGrad_());
    }

    [Fact]
    public void InPlaceOnATensorThatRequiresGradIsRefused()
    {
        var x = Vec(1, 2).RequiresGrad_();
        var e = Assert.Throws<AutogradException>(() => x.Add_(Vec(1, 1)));
        Assert.Contains("add_", e.Message);
        Assert.Contains("leaf", e.Message);
        using (GradMode.NoGrad()) x.Add_(Vec(1, 1), alpha: -0.5);   // an optimizer step
        Assert.Equal(new[] { 0.5, 1.5 }, x.ToArray<double>());
    }

    [Fact]
    public void ModifyingASavedTensorInPlaceIsDetected()
    {
        var x = Vec(0, 1).RequiresGrad_();
        var y = x.Exp();                       // exp saves its output
        var loss = y.Sum();
        y.Detach().Add_(Vec(1, 1));            // same storage, version bumped
        var e = Assert.Throws<AutogradException>(() => loss.Backward());
        Assert.Contains("exp", e.Message);
        Assert.Contains("modified by an in-place operation", e.Message);

        // Modifying the input that mul saved is caught too.
        var a = Vec(1, 2).RequiresGrad_();
        var c = Vec(3, 4);
        var p = a.Mul(c).Sum();
        c.Mul_(2.0);
        e = Assert.Throws<AutogradException>(() => p.Backward());
        Assert.Contains("mul", e.Message);

        // Writes to a tensor nobody saved are fine.
        var u = Vec(1, 2).RequiresGrad_();
        var w = Vec(5, 5);
        var q = u.Add(w).Sum();
        w.Fill_(0);
        q.Backward();
        Assert.Equal(new double[] { 1, 1 }, u.Grad!.ToArray<double>());
    }

    [Fact]
    public void LongChainsDoNotOverflowTheStack()
    {
        var x = Vec(1).RequiresGrad_();
        var y = x;
        for (int i = 0; i < 20000; i++) y = y.Add(1.0);
        y.Sum().Backward();
        Assert.Equal(new double[] { 1 }, x.Grad!.ToArray<double>());
    }

    [Fact]
    public void GradFlowsThroughDTypeConversionsAndViews()
    {
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3).RequiresGrad_();
        var y = x.Double().T.Slice(0, 0, 3, 2).Mul(2.0).Sum();
        y.Backward();
        Assert.Equal(DType.Float32, x.Grad!.DType);
        Assert.Equal(new float[] { 2, 0, 2, 2, 0, 2 }, x.Grad!.ToArray<float>());
        Assert.Equal("tensor([[2., 0., 2.],\n        [2., 0., 2.]])", x.Grad!.ToString());
    }
}
