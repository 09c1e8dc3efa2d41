namespace Nabla.Graph;

/// <summary>What <see cref="GraphOptimizer.Optimize"/> did.</summary>
public sealed record OptimizationReport(int FoldedNodes, int RemovedNodes, int RemovedInitializers);

/// <summary>
/// Inference-time graph passes on the IR: constant folding (a node whose inputs are all constants is evaluated
/// once with its own kernel and replaced by initializers) and dead-code elimination (nodes and initializers that
/// no graph output depends on are dropped). The graph is changed in place.
/// </summary>
public static class GraphOptimizer
{
    // Operators whose result is not a function of their inputs alone: never folded.
    static readonly HashSet<string> NonDeterministic = ["RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"];

    /// <param name="foldOverridableInitializers">
    /// Treat initializers that are also graph inputs as constants. Models before ONNX IR 4 list every weight as an
    /// input, so nothing folds without this; afterwards those weights can no longer be overridden by the caller.
    /// </param>
    public static OptimizationReport Optimize(Graph graph, IOpResolver resolver, bool foldOverridableInitializers = false)
    {
        // NOTE: an initializer that is also a graph input can be overridden by the caller, so by default it is not a constant.
        var originalInitializers = new HashSet<string>(graph.Initializers.Keys);
        var inputs = new HashSet<string>(graph.Inputs.Select(i => i.Name).Where(n => !foldOverridableInitializers || !originalInitializers.Contains(n)));
        bool hasSubgraphs = graph.Nodes.Any(n => n.Attributes.Values.Any(a => a.Kind is AttributeKind.Graph or AttributeKind.Graphs));
        int folded = 0;
        bool changed = true;
        while (changed)
        {
            changed = false;
            for (int i = 0; i < graph.Nodes.Count; i++)
            {
                var node = graph.Nodes[i];
                if (!Foldable(node, graph, inputs)) continue;
                Tensor?[] results;
                try
                {
                    var kernel = resolver.Resolve(node, graph.OpsetOf(node.Domain));
                    var args = node.Inputs.Select(n => n.Length == 0 ? null : graph.Initializers[n]).ToArray();
                    var executor = new GraphExecutor(new Graph { Name = "fold", Opsets = graph.Opsets }, resolver);
                    using var _ = GradMode.NoGrad();
                    results = kernel(executor.ContextFor(node, graph.OpsetOf(node.Domain), args));
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    continue;   // left for run time, where the error names the node with the real inputs
                }
                if (results.Length < node.Outputs.Length || node.Outputs.Where((o, k) => o.Length > 0 && results[k] is null).Any()) continue;
                for (int k = 0; k < node.Outputs.Length; k++)
                    if (node.Outputs[k].Length > 0) graph.Initializers[node.Outputs[k]] = results[k]!;
                graph.Nodes.RemoveAt(i--);
                folded++;
                changed = true;
            }
        }
        if (hasSubgraphs) return new OptimizationReport(folded, 0, 0);   // subgraphs read outer values by name; keep everything

        // Dead-code elimination: walk back from the outputs.
        var needed = new HashSet<string>(graph.Outputs.Select(o => o.Name));
        var keep = new bool[graph.Nodes.Count];
        // NOTE: nodes need not be in topological order, so the marking runs to a fixed point.
        bool grew = true;
        while (grew)
        {
            grew = false;
            for (int i = 0; i < graph.Nodes.Count; i++)
            {
                if (keep[i] || !graph.Nodes[i].Outputs.Any(needed.Contains)) continue;
                keep[i] = true;
                grew = true;
                foreach (var n in graph.Nodes[i].Inputs) if (n.Length > 0) needed.Add(n);
            }
        }
        int removedNodes = 0;
        for (int i = graph.Nodes.Count - 1; i >= 0; i--)
            if (!keep[i]) { graph.Nodes.RemoveAt(i); removedNodes++; }
        int removedInits = 0;
        foreach (var name in graph.Initializers.Keys.ToList())
            if (!needed.Contains(name) && !inputs.Contains(name)) { graph.Initializers.Remove(name); removedInits++; }
        // Weights that were listed as inputs and are gone no longer appear as inputs either.
        graph.Inputs.RemoveAll(vi => originalInitializers.Contains(vi.Name) && !graph.Initializers.ContainsKey(vi.Name) && !inputs.Contains(vi.Name));
        return new OptimizationReport(folded, removedNodes, removedInits);
    }

    static bool Foldable(Node node, Graph graph, HashSet<string> inputs) =>
        node.Inputs.Length > 0
        && !NonDeterministic.Contains(node.OpType)
        && node.Attributes.Values.All(a => a.Kind is not (AttributeKind.Graph or AttributeKind.Graphs))
        && node.Inputs.All(n => n.Length == 0 || (graph.Initializers.ContainsKey(n) && !inputs.Contains(n)));
}
