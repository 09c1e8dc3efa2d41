using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Nabla.Graph;

/// <summary>The time one node of a graph took over the runs a <see cref="NodeProfiler"/> watched.</summary>
/// <param name="Node">the node's name, or its first output's where it has none</param>
/// <param name="OpType">the operator, with its domain where that is not ai.onnx (e.g. <c>com.nabla.FusedConv</c>)</param>
/// <param name="Calls">how many times its kernel ran</param>
/// <param name="Total">the wall time of those calls together (the kernel only: not the executor's bookkeeping)</param>
/// <param name="OutputShape">the shape of its first output in the last call</param>
public readonly record struct NodeTiming(string Node, string OpType, long Calls, TimeSpan Total, int[] OutputShape)
{
    public TimeSpan Mean => Calls == 0 ? TimeSpan.Zero : Total / Calls;
}

/// <summary>
/// Per-node wall times of the graph runs it watches, like ONNX Runtime's session profiling or
/// <c>torch.profiler</c>'s per-operator table: set <see cref="GraphExecutor.Profiler"/> (or <c>OnnxModel.Profiler</c>), run,
/// then read <see cref="Timings"/> or print <see cref="Format"/>. Nodes of subgraphs (If, Loop) are timed too, and so their
/// time is also inside the time of the node that ran them. Safe to share between executors that run at the same time.
/// </summary>
/// <remarks>
/// Each node's time is its kernel's wall time, read with <see cref="Stopwatch.GetTimestamp"/> around the call, plus a
/// short lock to add it up; nothing is timed when no profiler is set. Kernels that split work over threads are timed on the
/// calling thread, which waits for them, so the time is the node's latency, not its CPU time. An executor rebuilt by
/// <c>OnnxModel.Optimize</c> keeps its profiler (call <see cref="Reset"/> after optimizing: nodes may have gone);
/// <c>OnnxModel.NewInstance</c> starts without one, like its cancellation token: give each instance the same profiler to
/// add their runs up.
/// </remarks>
public sealed class NodeProfiler
{
    sealed class Entry(Node node, int order)
    {
        public readonly Node Node = node;
        public readonly int Order = order;
        public long Calls, Ticks;
        public int[] Shape = [];
    }

    readonly Dictionary<Node, Entry> entries = new(ReferenceEqualityComparer.Instance);
    readonly object gate = new();

    internal void Add(Node node, long ticks, Tensor? firstOutput)
    {
        lock (gate)
        {
            if (!entries.TryGetValue(node, out var e)) entries[node] = e = new Entry(node, entries.Count);
            e.Calls++;
            e.Ticks += ticks;
            if (firstOutput is not null) e.Shape = firstOutput.Shape;
        }
    }

    /// <summary>Forgets every timing (e.g. after warm-up runs).</summary>
    public void Reset()
    {
        lock (gate) entries.Clear();
    }

    /// <summary>The timings so far, one per node, in the order the nodes first ran.</summary>
    public IReadOnlyList<NodeTiming> Timings
    {
        get
        {
            lock (gate)
                return entries.Values.OrderBy(e => e.Order)
                    .Select(e => new NodeTiming(e.Node.Name.Length > 0 ? e.Node.Name : e.Node.Outputs.FirstOrDefault() ?? "?",
                        (e.Node.Domain.Length > 0 ? e.Node.Domain + "." : "") + e.Node.OpType, e.Calls,
                        TimeSpan.FromSeconds(e.Ticks / (double)Stopwatch.Frequency), (int[])e.Shape.Clone()))
                    .ToList();
        }
    }

    /// <summary>
    /// A plain-text report: the <paramref name="top"/> nodes by total time (mean per call, share of all nodes' time,
    /// output shape), then the total per operator type. The totals add every timed node, so a subgraph's nodes count
    /// both on their own and inside the If or Loop node that ran them.
    /// </summary>
    public string Format(int top = 20)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(top);
        var t = Timings;
        double all = t.Sum(x => x.Total.TotalMilliseconds);
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(inv, $"{t.Count} nodes, {all:0.000} ms in kernels over all calls");
        sb.AppendLine("    ms/call   share  calls  op                    node  output");
        foreach (var x in t.OrderByDescending(x => x.Total).Take(top))
            sb.AppendLine(inv, $"{x.Mean.TotalMilliseconds,11:0.000} {Share(x.Total.TotalMilliseconds, all),6}  {x.Calls,5}  {x.OpType,-20}  {x.Node}  [{string.Join(", ", x.OutputShape)}]");
        sb.AppendLine("by operator (ms over all calls, share, nodes):");
        foreach (var g in t.GroupBy(x => x.OpType).Select(g => (op: g.Key, n: g.Count(), ms: g.Sum(x => x.Total.TotalMilliseconds)))
                           .OrderByDescending(g => g.ms))
            sb.AppendLine(inv, $"{g.ms,11:0.000} {Share(g.ms, all),6}  {g.n,5}  {g.op}");
        return sb.ToString();

        static string Share(double ms, double all) => all > 0 ? (ms / all).ToString("0.0%", CultureInfo.InvariantCulture) : "-";
    }
}
