namespace Nabla.Graph;

/// <summary>Computes one node's outputs from its inputs (null entries are omitted optional inputs).</summary>
public delegate Tensor?[] OpKernel(OpContext context);

/// <summary>Finds the kernel for a node at its operator set version, or throws <see cref="ModelFormatException"/>
/// naming the node, the operator and the opset when it is not supported.</summary>
public interface IOpResolver
{
    OpKernel Resolve(Node node, long opset);
}

/// <summary>What a kernel sees: the node (attributes), the opset it was imported at, and its input values.</summary>
public sealed class OpContext
{
    readonly GraphExecutor executor;
    readonly Scope scope;
    /// <summary>Whether one of this node's outputs is an output of the run: see <see cref="NewOutput"/>.</summary>
    readonly bool escapes;

    internal OpContext(GraphExecutor executor, Scope scope, Node node, long opset, Tensor?[] inputs, bool escapes = false)
    {
        this.executor = executor;
        this.scope = scope;
        this.escapes = escapes;
        Node = node;
        Opset = opset;
        Inputs = inputs;
    }

    public Node Node { get; }
    public long Opset { get; }
    public IReadOnlyList<Tensor?> Inputs { get; }
    public int InputCount => Inputs.Count;
    public int OutputCount => Node.Outputs.Length;

    /// <summary>Whether output <paramref name="i"/> is consumed (present and named).</summary>
    public bool WantsOutput(int i) => i < Node.Outputs.Length && Node.Outputs[i].Length > 0;

    public Tensor Input(int i)
    {
        if (i >= Inputs.Count || Inputs[i] is null)
            throw new ModelFormatException($"{Node.Describe()}: required input {i} is missing");
        return Inputs[i]!;
    }

    public Tensor? OptionalInput(int i) => i < Inputs.Count ? Inputs[i] : null;

    /// <summary>
    /// A contiguous tensor for one of this node's outputs, uninitialized: the kernel must write every element. Inside a
    /// top-level run with buffer reuse on (<see cref="GraphExecutor.ReuseBuffers"/>) it comes from the run's memory plan,
    /// often the buffer of a value that has died; otherwise it is newly allocated.
    /// </summary>
    /// <remarks>A node that makes one of the run's outputs gets a new buffer, not the plan's: a pool buffer that leaves as an
    /// output is lost to the pool, and it is marked as held (so that disposing an intermediate never recycles it), so the
    /// caller's dispose could not recycle it either, and every run allocated its outputs afresh (a large one on the
    /// large-object heap, its pages faulted in again). A new buffer of 85,000 bytes or more goes back to
    /// <see cref="StorageCache"/> when the caller disposes the outputs, and the next run takes it from there, as ONNX
    /// Runtime's outputs go back to its arena. ONNX Gemm 16×768·768×3072 in one process (2026-11-27 11:50 UTC, 1 thread):
    /// the graph run took 832 µs where the packed product alone took 528; with the plan's buffers off, 556 against 578.</remarks>
    public Tensor NewOutput(int[] shape, DType dtype) => (escapes ? null : scope.Pool?.Rent(shape, dtype)) ?? Tensor.Empty(shape, dtype);

    /// <summary>The same node and scope with other input values, for a kernel that hands its work to another kernel.</summary>
    public OpContext WithInputs(Tensor?[] inputs) => new(executor, scope, Node, Opset, inputs, escapes);

    /// <summary>Runs a subgraph (an If branch or Loop body) with the given inputs; it can read this node's scope.</summary>
    public Tensor[] RunSubgraph(Graph graph, IReadOnlyList<Tensor> inputs) => executor.RunGraph(graph, inputs, scope);
}

/// <summary>Value bindings of one graph activation; lookups fall through to the enclosing graph's.</summary>
internal sealed class Scope(Scope? parent)
{
    public readonly Dictionary<string, Tensor> Values = new();
    readonly Scope? parent = parent;

    /// <summary>The run's buffer pool (top-level runs with reuse on); subgraph scopes have none.</summary>
    public BufferPool? Pool;

    public bool TryGet(string name, out Tensor value)
    {
        for (var s = this; s is not null; s = s.parent)
            if (s.Values.TryGetValue(name, out value!)) return true;
        value = null!;
        return false;
    }
}

/// <summary>
/// Runs a <see cref="Graph"/> on tensors. Construction checks the graph (every value defined once, every input
/// defined, no cycles, every operator supported) and orders the nodes; <see cref="Run"/> executes them in that order
/// and drops each intermediate value after its last use. Buffers that kernels take from <see cref="OpContext.NewOutput"/>
/// return to the run's pool when the last value viewing them dies, and later nodes (and later runs) reuse them.
/// </summary>
public sealed class GraphExecutor
{
    sealed class Plan
    {
        public required Node[] Order;
        public required OpKernel[] Kernels;
        public required long[] Opsets;
        public required string[][] Frees; // values to drop after each step
        public required bool[] Escapes;   // whether the step makes one of the graph's outputs
    }

    readonly Dictionary<Graph, Plan> plans = new(ReferenceEqualityComparer.Instance);
    readonly IOpResolver resolver;
    // Idle buffer pools: each Run leases one exclusively, so concurrent runs never share buffers.
    readonly System.Collections.Concurrent.ConcurrentBag<BufferPool> idlePools = new();

    /// <summary>
    /// Whether top-level runs reuse the buffers of dead values for the outputs of kernels that ask for them
    /// (<see cref="OpContext.NewOutput"/>). Each run leases a pool of its own (concurrent runs get different pools);
    /// between runs a pool keeps the buffers of the sizes its last run used. On by default.
    /// </summary>
    public bool ReuseBuffers { get; set; } = true;

    public Graph Graph { get; }

    /// <summary>When set, every node's kernel time is added to it (<see cref="NodeProfiler"/>); null (the default) times nothing.</summary>
    public NodeProfiler? Profiler { get; set; }

    /// <summary>Checked between nodes; cancel it to stop a run that takes too long.</summary>
    public CancellationToken CancellationToken { get; set; }

    public GraphExecutor(Graph graph, IOpResolver resolver)
    {
        Graph = graph;
        this.resolver = resolver;
        Prepare(graph, new HashSet<string>(), graph.Opsets);
    }

    /// <summary>Runs the graph with inputs bound by name and returns the outputs by name.</summary>
    public Dictionary<string, Tensor> Run(IReadOnlyDictionary<string, Tensor> inputs)
    {
        var ordered = new Tensor[Graph.Inputs.Count];
        int n = 0;
        foreach (var vi in Graph.Inputs)
        {
            if (inputs.TryGetValue(vi.Name, out var t)) ordered[n++] = t;
            else if (Graph.Initializers.ContainsKey(vi.Name)) ordered[n++] = null!; // initializer serves as default
            else throw new NablaException($"graph '{Graph.Name}': input '{vi.Name}' was not given");
        }
        foreach (var name in inputs.Keys)
            if (!Graph.Inputs.Any(v => v.Name == name))
                throw new NablaException($"graph '{Graph.Name}': '{name}' is not an input; inputs are {string.Join(", ", Graph.Inputs.Select(v => v.Name))}");
        var outputs = RunTop(ordered);
        var result = new Dictionary<string, Tensor>();
        for (int i = 0; i < outputs.Length; i++) result[Graph.Outputs[i].Name] = outputs[i];
        return result;
    }

    /// <summary>A context for running one node's kernel outside a graph run (constant folding).</summary>
    internal OpContext ContextFor(Node node, long opset, Tensor?[] inputs) => new(this, new Scope(null), node, opset, inputs);

    /// <summary>Runs the graph with inputs in declaration order; returns outputs in declaration order.</summary>
    public Tensor[] Run(params Tensor[] inputs) => RunTop(inputs);

    Tensor[] RunTop(IReadOnlyList<Tensor> inputs)
    {
        // Graph runs fork and join on WorkerPool (measured faster for inference; eager code keeps Parallel.For except for large GEMMs).
        using var forkJoin = WorkerPool.Scope();
        if (!ReuseBuffers) return RunGraph(Graph, inputs, null);
        var pool = idlePools.TryTake(out var p) ? p : new BufferPool();
        try { return RunGraph(Graph, inputs, null, pool); }
        finally
        {
            pool.EndRun();
            idlePools.Add(pool);
        }
    }

    internal Tensor[] RunGraph(Graph graph, IReadOnlyList<Tensor> inputs, Scope? parent, BufferPool? pool = null)
    {
        var plan = plans[graph];
        if (inputs.Count > graph.Inputs.Count)
            throw new NablaException($"graph '{graph.Name}': {inputs.Count} inputs given, it takes {graph.Inputs.Count}");
        var scope = new Scope(parent) { Pool = pool };
        // Live values per pooled buffer: a buffer goes back to the pool when the last value viewing it dies.
        var refs = pool is null ? null : new Dictionary<Storage, int>(ReferenceEqualityComparer.Instance);
        foreach (var (name, t) in graph.Initializers) scope.Values[name] = t;
        for (int i = 0; i < graph.Inputs.Count; i++)
        {
            var name = graph.Inputs[i].Name;
            if (i < inputs.Count && inputs[i] is not null) scope.Values[name] = inputs[i];
            else if (!graph.Initializers.ContainsKey(name))
                throw new NablaException($"graph '{graph.Name}': input '{name}' was not given");
        }
        using var _ = GradMode.NoGrad();
        var profiler = Profiler;
        for (int step = 0; step < plan.Order.Length; step++)
        {
            CancellationToken.ThrowIfCancellationRequested();
            var node = plan.Order[step];
            var args = new Tensor?[node.Inputs.Length];
            for (int i = 0; i < args.Length; i++)
            {
                var name = node.Inputs[i];
                if (name.Length == 0) continue;
                if (!scope.TryGet(name, out var v))
                    throw new NablaException($"{node.Describe()}: input '{name}' has no value");
                args[i] = v;
            }
            Tensor?[] results;
            try
            {
                long start = profiler is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();
                results = plan.Kernels[step](new OpContext(this, scope, node, plan.Opsets[step], args, plan.Escapes[step]));
                profiler?.Add(node, System.Diagnostics.Stopwatch.GetTimestamp() - start, results.Length > 0 ? results[0] : null);
            }
            catch (OperationCanceledException) { throw; }
            catch (ModelFormatException e) { throw new ModelFormatException(Prefix(node, e.Message), e); }
            catch (NablaException e) { throw new NablaException(Prefix(node, e.Message), e); }
            catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or InvalidCastException
                                           or OverflowException or InvalidOperationException or NullReferenceException
                                           or OutOfMemoryException or DivideByZeroException or NotSupportedException)
            {
                throw new ModelFormatException($"{node.Describe()}: {e.GetType().Name}: {e.Message}", e);
            }
            for (int i = 0; i < node.Outputs.Length; i++)
            {
                if (node.Outputs[i].Length == 0) continue;
                if (i >= results.Length || results[i] is null)
                    throw new ModelFormatException($"{node.Describe()}: output {i} ('{node.Outputs[i]}') was not produced");
                var result = results[i]!;
                scope.Values[node.Outputs[i]] = result;
                if (refs is not null && pool!.IsLent(result.Storage))
                    System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(refs, result.Storage, out bool _)++;
            }
            foreach (var dead in plan.Frees[step])
            {
                if (scope.Values.Remove(dead, out var t) && refs is not null && refs.TryGetValue(t.Storage, out int count))
                {
                    if (count > 1) refs[t.Storage] = count - 1;
                    else
                    {
                        refs.Remove(t.Storage);
                        pool!.Return(t.Storage);
                    }
                }
            }
        }
        var outputs = new Tensor[graph.Outputs.Count];
        for (int i = 0; i < outputs.Length; i++)
            if (!scope.TryGet(graph.Outputs[i].Name, out outputs[i]))
                throw new NablaException($"graph '{graph.Name}': output '{graph.Outputs[i].Name}' has no value");
        return outputs;
    }

    static string Prefix(Node node, string message) =>
        message.StartsWith(node.Describe(), StringComparison.Ordinal) ? message : $"{node.Describe()}: {message}";

    /// <summary>
    /// Orders the nodes (Kahn's algorithm, stable in file order), resolves kernels and computes where each value dies.
    /// <paramref name="outer"/> holds the names an enclosing graph makes visible.
    /// </summary>
    void Prepare(Graph graph, HashSet<string> outer, Dictionary<string, long> opsets)
    {
        // Weights and constants can come back as outputs (Identity, Constant): disposing such an output must never
        // recycle the model's own storage.
        foreach (var t in graph.Initializers.Values) t.storage.Keep();
        foreach (var node in graph.Nodes)
            foreach (var a in node.Attributes.Values)
            {
                a.Tensor?.storage.Keep();
                foreach (var t in a.Tensors ?? []) t.storage.Keep();
            }
        var defined = new HashSet<string>(graph.Initializers.Keys);
        foreach (var vi in graph.Inputs) defined.Add(vi.Name);
        var producer = new Dictionary<string, int>();
        for (int i = 0; i < graph.Nodes.Count; i++)
            foreach (var o in graph.Nodes[i].Outputs)
            {
                if (o.Length == 0) continue;
                if (producer.ContainsKey(o) || defined.Contains(o))
                    throw new ModelFormatException($"graph '{graph.Name}': value '{o}' is defined twice ({graph.Nodes[i].Describe()})");
                producer[o] = i;
            }

        // Every name a node reads: its inputs plus the free names of its subgraphs.
        var reads = new List<string>[graph.Nodes.Count];
        var visible = new HashSet<string>(outer);
        visible.UnionWith(defined);
        visible.UnionWith(producer.Keys);
        for (int i = 0; i < graph.Nodes.Count; i++)
        {
            var node = graph.Nodes[i];
            var r = new List<string>();
            foreach (var name in node.Inputs)
            {
                if (name.Length == 0) continue;
                if (!visible.Contains(name))
                    throw new ModelFormatException($"graph '{graph.Name}': {node.Describe()} reads '{name}', which no node, input or initializer defines");
                r.Add(name);
            }
            foreach (var a in node.Attributes.Values)
                foreach (var sub in a.Graph is not null ? [a.Graph] : a.Graphs ?? [])
                {
                    Prepare(sub, visible, opsets);
                    r.AddRange(FreeNames(sub).Where(visible.Contains));
                }
            reads[i] = r;
        }

        // Kahn's algorithm.
        int n = graph.Nodes.Count;
        var pending = new int[n];
        var consumers = new List<int>[n];
        for (int i = 0; i < n; i++) consumers[i] = [];
        for (int i = 0; i < n; i++)
            foreach (var name in reads[i].Distinct())
                if (producer.TryGetValue(name, out var p) && !defined.Contains(name))
                {
                    pending[i]++;
                    consumers[p].Add(i);
                }
        var ready = new PriorityQueue<int, int>();
        for (int i = 0; i < n; i++) if (pending[i] == 0) ready.Enqueue(i, i);
        var order = new List<int>(n);
        while (ready.TryDequeue(out int i, out _))
        {
            order.Add(i);
            foreach (var c in consumers[i]) if (--pending[c] == 0) ready.Enqueue(c, c);
        }
        if (order.Count != n)
        {
            var stuck = Enumerable.Range(0, n).First(i => pending[i] > 0);
            throw new ModelFormatException($"graph '{graph.Name}': the nodes form a cycle (through {graph.Nodes[stuck].Describe()})");
        }

        var lastUse = new Dictionary<string, int>();
        for (int s = 0; s < n; s++) foreach (var name in reads[order[s]]) lastUse[name] = s;
        var keep = new HashSet<string>(graph.Outputs.Select(o => o.Name));
        var frees = new List<string>[n];
        for (int s = 0; s < n; s++) frees[s] = [];
        foreach (var (name, s) in lastUse)
            if (!keep.Contains(name) && (producer.ContainsKey(name) || defined.Contains(name)) && !graph.Initializers.ContainsKey(name))
                frees[s].Add(name);
        // Outputs nobody reads die right after they are made.
        for (int s = 0; s < n; s++)
            foreach (var o in graph.Nodes[order[s]].Outputs)
                if (o.Length > 0 && !lastUse.ContainsKey(o) && !keep.Contains(o)) frees[s].Add(o);

        foreach (var o in graph.Outputs)
            if (!defined.Contains(o.Name) && !producer.ContainsKey(o.Name) && !outer.Contains(o.Name))
                throw new ModelFormatException($"graph '{graph.Name}': output '{o.Name}' is never computed");

        var nodes = order.Select(i => graph.Nodes[i]).ToArray();
        var kernels = new OpKernel[n];
        var versions = new long[n];
        for (int s = 0; s < n; s++)
        {
            var node = nodes[s];
            versions[s] = opsets.TryGetValue(node.Domain, out var v) ? v
                : node.Domain == "ai.onnx" && opsets.TryGetValue("", out var d) ? d : 0;
            kernels[s] = resolver.Resolve(node, versions[s]);
        }
        var escapes = nodes.Select(node => node.Outputs.Any(keep.Contains)).ToArray();
        plans[graph] = new Plan { Order = nodes, Kernels = kernels, Opsets = versions, Frees = frees.Select(f => f.ToArray()).ToArray(), Escapes = escapes };
    }

    /// <summary>Names a graph reads that it does not define itself (values of enclosing graphs).</summary>
    static IEnumerable<string> FreeNames(Graph g)
    {
        var own = new HashSet<string>(g.Initializers.Keys);
        foreach (var vi in g.Inputs) own.Add(vi.Name);
        foreach (var node in g.Nodes) foreach (var o in node.Outputs) own.Add(o);
        var free = new HashSet<string>();
        foreach (var node in g.Nodes)
        {
            foreach (var i in node.Inputs) if (i.Length > 0 && !own.Contains(i)) free.Add(i);
            foreach (var a in node.Attributes.Values)
                foreach (var sub in a.Graph is not null ? [a.Graph] : a.Graphs ?? [])
                    foreach (var f in FreeNames(sub)) if (!own.Contains(f)) free.Add(f);
        }
        foreach (var o in g.Outputs) if (!own.Contains(o.Name)) free.Add(o.Name);
        return free;
    }
}

/// <summary>
/// The buffers of one run's memory plan, pooled by element type and length. <see cref="Rent"/> hands out a free buffer
/// of the exact size or allocates one; the executor returns a buffer when the last value using it dies (its last
/// consumer ran). Buffers still lent at the end of a run (graph outputs) leave the pool for good. Not thread-safe: a
/// pool belongs to one run at a time.
/// </summary>
internal sealed class BufferPool
{
    readonly Dictionary<(DType, int), Stack<Storage>> free = new();
    readonly HashSet<Storage> lent = new(ReferenceEqualityComparer.Instance);
    readonly HashSet<(DType, int)> used = new();

    public bool IsLent(Storage s) => lent.Contains(s);

    public Tensor Rent(int[] shape, DType dtype)
    {
        int length = ShapeUtil.Numel(shape);
        used.Add((dtype, length));
        if (!free.TryGetValue((dtype, length), out var stack) || !stack.TryPop(out var s))
        {
            s = Storage.Allocate(dtype, length, uninitialized: true);
            // NOTE: the pool reuses its buffers itself; a dispose scope around a run must not hand them to StorageCache.
            s.Keep();
        }
        lent.Add(s);
        return new Tensor(s, shape);
    }

    public void Return(Storage s)
    {
        if (!lent.Remove(s)) return;
        var key = (s.DType, s.Length);
        if (!free.TryGetValue(key, out var stack)) free[key] = stack = new Stack<Storage>();
        stack.Push(s);
    }

    /// <summary>Forgets what is still lent (it escaped as outputs) and drops free buffers of sizes this run did not use.</summary>
    public void EndRun()
    {
        lent.Clear();
        foreach (var key in free.Keys.Where(k => !used.Contains(k)).ToList()) free.Remove(key);
        used.Clear();
    }
}
