using System.Text;
using Nabla.Autograd;
using Xunit;

namespace Nabla.Tests;

/// <summary>
/// Finite-difference gradient checks in float64, like torch.autograd.gradcheck / gradgradcheck. The output is
/// projected on a random vector v (L = Σ f(x)·v), so one backward pass checks the whole vector-Jacobian product.
/// </summary>
internal static class GradCheck
{
    public const double Eps = 1e-6;
    // PyTorch's gradcheck defaults: |analytic - numeric| <= atol + rtol·|numeric|.
    public const double Atol = 1e-5;
    public const double Rtol = 1e-3;

    /// <summary>Checks ∂(Σ f(xs)·v)/∂xs from autograd against central differences.</summary>
    /// <param name="f">the function of the differentiable inputs; constants (indices, targets) are captured.</param>
    /// <param name="inputs">float64 values; fresh contiguous leaves are made from them.</param>
    public static void Check(string name, Func<Tensor[], Tensor> f, Tensor[] inputs, Generator gen, double atol = Atol, double rtol = Rtol) =>
        Run(name, f, Leaves(inputs), gen, atol, rtol, numericNeedsGraph: false);

    /// <summary>
    /// Checks second derivatives: with h(xs) = Σᵢ ⟨∇ᵢ(Σ f(xs)·v), uᵢ⟩ built by Grad(createGraph: true), autograd's
    /// ∂h/∂xs (a Hessian-vector product) is compared against central differences of h.
    /// </summary>
    public static void CheckSecondOrder(string name, Func<Tensor[], Tensor> f, Tensor[] inputs, Generator gen, double atol = Atol, double rtol = Rtol)
    {
        var xs = Leaves(inputs);
        Tensor y;
        using (GradMode.NoGrad()) y = f(xs);
        var v = Tensor.Randn(y.Shape, DType.Float64, gen);
        var u = xs.Select(x => Tensor.Randn(x.Shape, DType.Float64, gen)).ToArray();
        Tensor H(Tensor[] args)
        {
            var l = f(args).Mul(v).Sum();
            var gs = AutogradFunctions.Grad([l], args, createGraph: true, allowUnused: true);
            var acc = Tensor.Scalar(0, DType.Float64);
            for (int i = 0; i < args.Length; i++)
                if (gs[i] is Tensor g) acc = acc.Add(g.Mul(u[i]).Sum());
            return acc;
        }
        Run(name + " (second order)", H, xs, gen, atol, rtol, numericNeedsGraph: true);
    }

    static Tensor[] Leaves(Tensor[] inputs)
    {
        var xs = new Tensor[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            Assert.Equal(DType.Float64, inputs[i].DType);
            xs[i] = new Tensor(new Storage(inputs[i].ToArray<double>(), DType.Float64), inputs[i].Shape).RequiresGrad_();
        }
        return xs;
    }

    static void Run(string name, Func<Tensor[], Tensor> f, Tensor[] xs, Generator gen, double atol, double rtol, bool numericNeedsGraph)
    {
        Tensor y;
        using (GradMode.NoGrad()) y = numericNeedsGraph ? Eval(f, xs) : f(xs);
        Assert.True(y.DType == DType.Float64, $"{name}: output dtype {y.DType} is not float64");
        var v = Tensor.Randn(y.Shape, DType.Float64, gen);

        // Analytic.
        var loss = f(xs).Mul(v).Sum();
        var analytic = new double[xs.Length][];
        Tensor?[] grads = loss.RequiresGrad ? AutogradFunctions.Grad([loss], xs, allowUnused: true) : new Tensor?[xs.Length];
        for (int i = 0; i < xs.Length; i++)
        {
            if (grads[i] is Tensor g)
            {
                Assert.True(ShapeUtil.Equal(g.shape, xs[i].shape), $"{name}: gradient of input {i} has shape {ShapeUtil.Format(g.shape)}, input {ShapeUtil.Format(xs[i].shape)}");
                analytic[i] = g.ToArray<double>();
            }
            else analytic[i] = new double[xs[i].NumElements];
        }

        // Numeric: central differences on each element of each input, written straight into the leaves' storage.
        double L()
        {
            if (numericNeedsGraph) return Eval(f, xs).Mul(v).Sum().Item();
            using (GradMode.NoGrad()) return f(xs).Mul(v).Sum().Item();
        }
        var errors = new StringBuilder();
        int bad = 0;
        for (int i = 0; i < xs.Length; i++)
        {
            var data = xs[i].storage.As<double>();
            for (int j = 0; j < data.Length; j++)
            {
                double orig = data[j];
                data[j] = orig + Eps;
                double lp = L();
                data[j] = orig - Eps;
                double lm = L();
                data[j] = orig;
                double numeric = (lp - lm) / (2 * Eps);
                double a = analytic[i][j];
                if (!(Math.Abs(a - numeric) <= atol + rtol * Math.Abs(numeric)))
                {
                    if (bad++ < 5) errors.Append($"\n  input {i} {ShapeUtil.Format(xs[i].shape)} element {j}: analytic {a:G10}, numeric {numeric:G10}");
                }
            }
        }
        Assert.True(bad == 0, $"{name}: {bad} gradient mismatches{errors}");
    }

    static Tensor Eval(Func<Tensor[], Tensor> f, Tensor[] xs)
    {
        using (GradMode.EnableGrad()) return f(xs).Detach();
    }

    // ---------- random inputs ----------

    public static int[] RandomShape(Random rng, int minRank = 1, int maxRank = 3, int maxSize = 4)
    {
        int rank = rng.Next(minRank, maxRank + 1);
        var s = new int[rank];
        for (int i = 0; i < rank; i++) s[i] = rng.Next(1, maxSize + 1);
        return s;
    }

    public static Tensor Randn(Generator g, params int[] shape) => Tensor.Randn(shape, DType.Float64, g);

    /// <summary>Values with |x| ≥ margin (for ops with a kink at 0).</summary>
    public static Tensor AwayFromZero(Generator g, int[] shape, double margin = 0.1)
    {
        var d = Tensor.Randn(shape, DType.Float64, g).ToArray<double>();
        for (int i = 0; i < d.Length; i++) d[i] = d[i] >= 0 ? d[i] + margin : d[i] - margin;
        return Tensor.FromArray(d, shape);
    }

    /// <summary>Values in [lo, hi).</summary>
    public static Tensor Uniform(Generator g, int[] shape, double lo, double hi)
    {
        var d = Tensor.Rand(shape, DType.Float64, g).ToArray<double>();
        for (int i = 0; i < d.Length; i++) d[i] = lo + (hi - lo) * d[i];
        return Tensor.FromArray(d, shape);
    }

    /// <summary>Random int64 indices in [0, high).</summary>
    public static Tensor Indices(Generator g, long high, params int[] shape) => Tensor.Randint(0, high, shape, DType.Int64, g);
}
