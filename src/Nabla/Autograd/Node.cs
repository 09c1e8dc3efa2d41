using System.Runtime.CompilerServices;

namespace Nabla.Autograd;

/// <summary>
/// One recorded op in the graph: the inputs it reads (null where an input needs no gradient), the
/// tensors it saved (with their storage versions at save time) and its backward rule. The rule is
/// written with ordinary differentiable tensor ops, so gradients of gradients work.
/// </summary>
internal sealed class Node
{
    public readonly string Op;
    public Tensor?[] Inputs;
    Func<Tensor, Tensor?[]>? backward;
    readonly (Tensor tensor, int version)[] saved;
    Storage[]? pinned;

    public Node(string op, Tensor?[] inputs, Func<Tensor, Tensor?[]> backward, Tensor[] saved)
    {
        Op = op;
        Inputs = inputs;
        this.backward = backward;
        this.saved = new (Tensor, int)[saved.Length];
        for (int i = 0; i < saved.Length; i++) this.saved[i] = (saved[i], saved[i].storage.Version);
    }

    public Tensor?[] Apply(Tensor gradOutput)
    {
        if (backward is null)
            throw new AutogradException($"backward: trying to backward through the graph a second time (at {Op}); the saved tensors were freed after the first Backward(). Pass retainGraph: true to the first call");
        foreach (var (t, v) in saved)
        {
            if (t.storage.Version != v)
                throw new AutogradException($"backward: a tensor saved by {Op} (shape {ShapeUtil.Format(t.shape)}) was modified by an in-place operation after it was saved (version {t.storage.Version}, expected {v})");
        }
        return backward(gradOutput);
    }

    /// <summary>Keeps the storages the backward rule may read from recycling until <see cref="Release"/>.</summary>
    public void Pin(Tensor result, Tensor[] inputs, Tensor[] saved)
    {
        // NOTE: only recyclable storages need it (the others are left to the GC anyway), so most nodes allocate nothing
        // here; slots past the last pinned storage stay null.
        int total = 1 + inputs.Length + saved.Length, k = 0;
        Storage[]? p = null;
        for (int i = 0; i < total; i++)
        {
            var s = (i == 0 ? result : i <= inputs.Length ? inputs[i - 1] : saved[i - 1 - inputs.Length]).storage;
            if (!s.Recyclable) continue;
            s.Pin();
            (p ??= new Storage[total])[k++] = s;
        }
        pinned = p;
    }

    public void Release()
    {
        backward = null;
        // The rule can no longer run, so nothing it captured is read again.
        var p = Interlocked.Exchange(ref pinned, null);
        if (p is not null) foreach (var s in p) s?.Unpin();
    }
}

/// <summary>The reverse-mode engine: orders the graph topologically and runs each node's rule once.</summary>
internal static class Engine
{
    /// <summary>Whether a plain backward runs in a dispose scope of its own (see <see cref="Run"/>). Settable for tests and
    /// measurements.</summary>
    internal static bool EngineScope = true;

    /// <summary>
    /// Runs backward from <paramref name="roots"/>. When <paramref name="capture"/> is null, gradients of leaves
    /// accumulate into <c>Grad</c>; otherwise the gradients of exactly those tensors are returned and nothing accumulates.
    /// </summary>
    public static Tensor?[]? Run(Tensor[] roots, Tensor[] rootGrads, bool retainGraph, bool createGraph, Tensor[]? capture, bool allowUnused = true)
    {
        using var mode = createGraph ? GradMode.EnableGrad() : GradMode.NoGrad();
        // A plain backward (no graph of the gradient, nothing returned, the graph released) disposes what it makes on
        // this thread when it ends: the gradients that flow through the graph and the rules' temporaries. Only the leaves'
        // new gradients leave it (AccumulateLeaf hands them to the enclosing scope, where they would have been anyway).
        // Without a caller's scope their arrays were otherwise left to the GC, and so was every weight gradient, whose
        // array these intermediate tensors share.
        using var own = !createGraph && !retainGraph && capture is null && EngineScope ? DisposeScope.Begin() : null;
        var order = TopologicalOrder(roots);
        var grads = new Dictionary<Node, Tensor>(ReferenceEqualityComparer.Instance);
        Dictionary<Tensor, Tensor>? captured = capture is null ? null : new(ReferenceEqualityComparer.Instance);
        HashSet<Tensor>? captureSet = capture is null ? null : new(capture, ReferenceEqualityComparer.Instance);

        for (int i = 0; i < roots.Length; i++)
        {
            var r = roots[i];
            var g = createGraph ? rootGrads[i] : rootGrads[i].Detach();
            if (r.gradFn is null) AccumulateLeaf(r, g, captured, captureSet, createGraph, own);
            else Add(grads, r.gradFn, g);
        }

        // With explicit inputs, run only the nodes on a path to one of them (as torch.autograd.grad does).
        HashSet<Node>? needed = null;
        if (captureSet is not null)
        {
            needed = new HashSet<Node>(ReferenceEqualityComparer.Instance);
            for (int i = order.Count - 1; i >= 0; i--)
            {
                var n = order[i];
                foreach (var input in n.Inputs)
                {
                    if (input is null) continue;
                    if (captureSet.Contains(input) || (input.gradFn is not null && needed.Contains(input.gradFn))) { needed.Add(n); break; }
                }
            }
        }

        foreach (var node in order)
        {
            if (!grads.TryGetValue(node, out var g)) continue;
            if (needed is not null && !needed.Contains(node))
            {
                // Still record the gradient of a captured non-leaf tensor produced by this node.
                foreach (var c in captureSet!)
                    if (ReferenceEquals(c.gradFn, node)) captured![c] = captured.TryGetValue(c, out var prev0) ? prev0.Add(g) : g;
                grads.Remove(node);
                continue;
            }
            grads.Remove(node);
            if (captureSet is not null)
            {
                foreach (var c in captureSet)
                    if (ReferenceEquals(c.gradFn, node)) captured![c] = captured.TryGetValue(c, out var prev) ? prev.Add(g) : g;
            }
            var inGrads = node.Apply(g);
            if (!retainGraph) node.Release();
            for (int k = 0; k < node.Inputs.Length; k++)
            {
                var input = node.Inputs[k];
                var ig = inGrads[k];
                if (input is null || ig is null) continue;
                if (!ShapeUtil.Equal(ig.shape, input.shape))
                    throw new AutogradException($"backward: the rule of {node.Op} returned a gradient of shape {ShapeUtil.Format(ig.shape)} for input {k} of shape {ShapeUtil.Format(input.shape)}");
                if (input.gradFn is null) AccumulateLeaf(input, ig, captured, captureSet, createGraph, own);
                else Add(grads, input.gradFn, ig);
            }
        }

        if (capture is null) return null;
        var result = new Tensor?[capture.Length];
        for (int i = 0; i < capture.Length; i++)
        {
            captured!.TryGetValue(capture[i], out result[i]);
            if (result[i] is null && !allowUnused)
                throw new AutogradException($"grad: input {i} (shape {ShapeUtil.Format(capture[i].shape)}) was not used to compute the output");
        }
        return result;
    }

    static void Add(Dictionary<Node, Tensor> grads, Node n, Tensor g)
    {
        grads[n] = grads.TryGetValue(n, out var prev) ? prev.Add(g) : g;
    }

    static void AccumulateLeaf(Tensor leaf, Tensor g, Dictionary<Tensor, Tensor>? captured, HashSet<Tensor>? captureSet, bool createGraph, DisposeScope? own)
    {
        if (!leaf.RequiresGrad) return;
        if (captureSet is not null)
        {
            if (captureSet.Contains(leaf)) captured![leaf] = captured.TryGetValue(leaf, out var p) ? p.Add(g) : g;
            return;
        }
        // Without create_graph the gradient is a new detached tensor held by the leaf alone (private: recycled when the leaf
        // drops it, unless a caller reads it first; see Tensor.Grad). Its array is shared with the engine's g or the sum,
        // which the backward's own scope (or the caller's) disposes, so only the leaf's hold remains after backward.
        // Read, sum and replace under a lock per leaf, as PyTorch's accumulation does: two backward passes into shared
        // parameters on two threads then add both gradients, and neither reads a previous gradient the other just recycled.
        lock (LeafLocks[(RuntimeHelpers.GetHashCode(leaf) & 0x7fffffff) % LeafLocks.Length])
        {
            var prev = leaf.GradInternal;
            if (createGraph) leaf.Grad = prev is null ? g : prev.Add(g);
            else
            {
                var grad = prev is null ? g.Contiguous().Detach() : prev.Add(g).Detach();
                own?.MoveToOuter(grad);   // out of the backward's own scope, to where it would have been
                leaf.SetPrivateGrad(grad);
            }
        }
    }

    /// <summary>Striped locks for leaf accumulation (a lock object per tensor would cost every tensor a field).</summary>
    static readonly object[] LeafLocks = Enumerable.Range(0, 64).Select(_ => new object()).ToArray();

    static List<Node> TopologicalOrder(Tensor[] roots)
    {
        // Iterative DFS; emits nodes so that every node comes before the nodes of its inputs.
        var visited = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var post = new List<Node>();
        var stack = new Stack<(Node node, int next)>();
        foreach (var r in roots)
        {
            if (r.gradFn is null || !visited.Add(r.gradFn)) continue;
            stack.Push((r.gradFn, 0));
            while (stack.Count > 0)
            {
                var (n, next) = stack.Pop();
                if (next < n.Inputs.Length)
                {
                    stack.Push((n, next + 1));
                    var child = n.Inputs[next]?.gradFn;
                    if (child is not null && visited.Add(child)) stack.Push((child, 0));
                }
                else post.Add(n);
            }
        }
        post.Reverse();
        return post;
    }
}
