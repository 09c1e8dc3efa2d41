namespace Nabla.Autograd;

/// <summary>
/// The functional face of autograd, in the spirit of JAX and <c>torch.autograd.grad</c>: gradients are returned,
/// never accumulated into <c>Grad</c>.
/// </summary>
public static class AutogradFunctions
{
    /// <summary>Gradients of <paramref name="outputs"/> with respect to <paramref name="inputs"/> (torch.autograd.grad).</summary>
    public static Tensor?[] Grad(Tensor[] outputs, Tensor[] inputs, Tensor[]? gradOutputs = null, bool retainGraph = false,
        bool createGraph = false, bool allowUnused = false)
    {
        var gs = new Tensor[outputs.Length];
        for (int i = 0; i < outputs.Length; i++)
        {
            if (!outputs[i].RequiresGrad)
                throw new AutogradException($"grad: output {i} does not require grad and has no grad_fn");
            gs[i] = gradOutputs?[i] ?? Tensor.ImplicitGrad(outputs[i], "grad");
        }
        foreach (var x in inputs)
            if (!x.RequiresGrad)
                throw new AutogradException($"grad: an input of shape {ShapeUtil.Format(x.shape)} does not require grad");
        return Engine.Run(outputs, gs, retainGraph || createGraph, createGraph, inputs, allowUnused)!;
    }

    public static Tensor Grad(Tensor output, Tensor input, bool createGraph = false) =>
        Grad([output], [input], null, createGraph, createGraph)[0] ?? Tensor.ZerosLike(input);

    /// <summary>
    /// Returns the function x ↦ ∇f(x) for a scalar-valued f. Nesting works: Grad(Grad(f)) is the second derivative,
    /// because the inner gradient is computed with a graph when the outer one records.
    /// </summary>
    public static Func<Tensor, Tensor> Grad(Func<Tensor, Tensor> f) => x => ValueAndGrad(f)(x).grad;

    public static Func<Tensor, (Tensor value, Tensor grad)> ValueAndGrad(Func<Tensor, Tensor> f) => x =>
    {
        bool outer = GradMode.IsEnabled && x.RequiresGrad;
        var xi = outer ? x : x.Detach().RequiresGrad_();
        Tensor y;
        using (GradMode.EnableGrad()) y = f(xi);
        if (y.NumElements != 1)
            throw new ShapeMismatchException($"grad: f must return a single value, got shape {ShapeUtil.Format(y.shape)}");
        if (!y.RequiresGrad) return (y, Tensor.ZerosLike(x));
        var g = Grad([y], [xi], null, outer, outer, allowUnused: true)[0] ?? Tensor.ZerosLike(x);
        return (outer ? y : y.Detach(), g);
    };

    /// <summary>Vector-Jacobian product: (f(x), vᵀ·∂f/∂x).</summary>
    public static (Tensor output, Tensor vjp) Vjp(Func<Tensor, Tensor> f, Tensor x, Tensor v)
    {
        var xi = x.Detach().RequiresGrad_();
        Tensor y;
        using (GradMode.EnableGrad()) y = f(xi);
        if (!ShapeUtil.Equal(y.shape, v.shape))
            throw new ShapeMismatchException($"vjp: v has shape {ShapeUtil.Format(v.shape)} but f(x) has shape {ShapeUtil.Format(y.shape)}");
        if (!y.RequiresGrad) return (y, Tensor.ZerosLike(x));
        var g = Grad([y], [xi], [v], false, false, allowUnused: true)[0] ?? Tensor.ZerosLike(x);
        return (y.Detach(), g);
    }
}
