using Nabla.Autograd;

namespace Nabla;

public sealed partial class Tensor
{
    /// <summary>
    /// Records <paramref name="result"/> as the output of <paramref name="op"/> when grad mode is on and an input
    /// requires grad. <paramref name="backward"/> maps the output's gradient to one gradient per input (null for none).
    /// </summary>
    internal static Tensor Record(Tensor result, string op, Tensor[] inputs, Func<Tensor, Tensor?[]> backward, params Tensor[] saved)
    {
        if (Graph.Tracer.Active is not null)
        {
            Graph.Tracer.OnRecord(result, op, inputs);   // graph tracing (Graph/Tracer.cs)
            Keep(result, inputs, saved);
        }
        if (!GradMode.IsEnabled) return result;
        bool any = false;
        foreach (var t in inputs) any |= t.requiresGrad;
        if (!any) return result;
        if (!Autograd.OpRegistry.IsRegistered(op))
            throw new InvalidOperationException($"op '{op}' records a gradient but is not in OpRegistry.Primitives; see docs/adding-an-op.md");
        var ins = new Tensor?[inputs.Length];
        for (int i = 0; i < inputs.Length; i++) ins[i] = inputs[i].requiresGrad ? inputs[i] : null;
        var node = new Node(op, ins, backward, saved);
        // The backward rule may read any input, the output or a saved tensor: none of them is recycled before it ran.
        node.Pin(result, inputs, saved);
        result.SetGradFn(node);
        return result;
    }

    // A traced graph keeps the tensors it saw for good.
    static void Keep(Tensor result, Tensor[] inputs, Tensor[] saved)
    {
        result.storage.Keep();
        foreach (var t in inputs) t.storage.Keep();
        foreach (var t in saved) t.storage.Keep();
    }

    /// <summary>
    /// Computes the gradient of this tensor with respect to the graph's leaves and accumulates it into their
    /// <see cref="Grad"/>. A non-scalar output needs <paramref name="gradient"/> (the vector of the VJP).
    /// </summary>
    public void Backward(Tensor? gradient = null, bool retainGraph = false, bool createGraph = false)
    {
        if (!requiresGrad)
            throw new AutogradException("backward: element 0 of tensors does not require grad and does not have a grad_fn");
        var g = gradient ?? ImplicitGrad(this, "backward");
        if (!ShapeUtil.Equal(g.shape, shape))
            throw new ShapeMismatchException($"backward: gradient has shape {ShapeUtil.Format(g.shape)} but the output has shape {ShapeUtil.Format(shape)}");
        Engine.Run([this], [g], retainGraph || createGraph, createGraph, null);
    }

    internal static Tensor ImplicitGrad(Tensor t, string op)
    {
        if (t.NumElements != 1)
            throw new AutogradException($"{op}: grad can be implicitly created only for scalar outputs, got shape {ShapeUtil.Format(t.shape)}");
        return OnesLike(t);
    }

    /// <summary>The NumPy broadcast of two shapes; throws <see cref="ShapeMismatchException"/> naming both shapes and the dimension.</summary>
    public static int[] BroadcastShapes(int[] a, int[] b) => ShapeUtil.Broadcast("broadcast", a, b);

    /// <summary>Sums a broadcast gradient back to <paramref name="target"/> (the inverse of broadcasting).</summary>
    public Tensor SumTo(int[] target)
    {
        if (ShapeUtil.Equal(shape, target)) return this;
        int lead = shape.Length - target.Length;
        if (lead < 0) throw new ShapeMismatchException($"sum_to: cannot reduce shape {ShapeUtil.Format(shape)} to the larger rank of {ShapeUtil.Format(target)}");
        var dims = new List<int>();
        for (int i = 0; i < shape.Length; i++)
            if (i < lead || (target[i - lead] == 1 && shape[i] != 1)) dims.Add(i);
        var r = dims.Count > 0 ? Sum(dims.ToArray(), keepDim: true) : this;
        return r.Reshape(target);
    }
}
