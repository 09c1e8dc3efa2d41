using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>Loop and Scan over tensors: the body subgraph runs once per iteration in a scope that sees the outer graph.</summary>
internal static class LoopOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("Loop", Loop);
        // NOTE: Scan-8 has a batch axis and sequence_lens; only the opset-9 form is implemented.
        r.Add("Scan", Scan, since: 9);
    }

    /// <summary>
    /// Inputs (M, cond, v_initial...); body (iteration_num, cond, v...) → (cond, v..., scan_out...). Outputs: the final
    /// loop-carried values, then each scan output stacked over the iterations on a new axis 0.
    /// </summary>
    static Tensor?[] Loop(OpContext c)
    {
        var body = c.Node.GetGraph("body") ?? throw Invalid(c, "attribute 'body' is missing");
        long? maxTrips = c.OptionalInput(0) is { } m ? Longs(m)[0] : null;
        bool cond = c.OptionalInput(1) is not { } ct || ct.Reshape(-1).Item() != 0;
        var carried = new Tensor[Math.Max(c.InputCount - 2, 0)];
        for (int i = 0; i < carried.Length; i++) carried[i] = c.Input(i + 2);
        int scanCount = body.Outputs.Count - 1 - carried.Length;
        if (scanCount < 0) throw Invalid(c, $"body has {body.Outputs.Count} outputs for {carried.Length} loop-carried values");
        var scans = Enumerable.Range(0, scanCount).Select(_ => new List<Tensor>()).ToArray();
        for (long i = 0; (maxTrips is null || i < maxTrips) && cond; i++)
        {
            var outs = c.RunSubgraph(body, [Tensor.FromArray([i]).Reshape([]), Tensor.FromArray([cond]).Reshape([]), .. carried]);
            cond = outs[0].Reshape(-1).Item() != 0;
            for (int k = 0; k < carried.Length; k++) carried[k] = outs[1 + k];
            for (int k = 0; k < scanCount; k++) scans[k].Add(outs[1 + carried.Length + k]);
        }
        var result = new Tensor?[carried.Length + scanCount];
        carried.CopyTo(result, 0);
        for (int k = 0; k < scanCount; k++)
        {
            if (scans[k].Count == 0) throw Unsupported(c, "scan output of a loop that ran zero iterations (its element shape is unknown)");
            result[carried.Length + k] = Tensor.Stack(scans[k], 0);
        }
        return Outputs(c, result);
    }

    /// <summary>
    /// Inputs (state..., scan_input...); body (state..., one slice of each scan input) → (state..., scan_out element...).
    /// Outputs: the final states, then each scan output stacked along its scan_output_axes entry.
    /// </summary>
    static Tensor?[] Scan(OpContext c)
    {
        var body = c.Node.GetGraph("body") ?? throw Invalid(c, "attribute 'body' is missing");
        int m = (int)(c.Node.GetIntOrNull("num_scan_inputs") ?? throw Invalid(c, "attribute 'num_scan_inputs' is missing"));
        int n = c.InputCount - m;
        if (m <= 0 || n < 0) throw Invalid(c, $"num_scan_inputs {m} does not fit {c.InputCount} inputs");
        var inAxes = c.Node.GetInts("scan_input_axes") ?? new long[m];
        var inDirs = c.Node.GetInts("scan_input_directions") ?? new long[m];
        int k = body.Outputs.Count - n;
        var outAxes = c.Node.GetInts("scan_output_axes") ?? new long[k];
        var outDirs = c.Node.GetInts("scan_output_directions") ?? new long[k];
        if (inAxes.Length != m || inDirs.Length != m || outAxes.Length != k || outDirs.Length != k)
            throw Invalid(c, "scan axis/direction attributes do not match the number of scan inputs and outputs");
        var states = Enumerable.Range(0, n).Select(c.Input).ToArray();
        var scanIn = Enumerable.Range(0, m).Select(i => c.Input(n + i)).ToArray();
        var axes = scanIn.Select((t, i) => Axis(c, inAxes[i], t.Dim)).ToArray();
        int length = scanIn[0].Size(axes[0]);
        for (int i = 1; i < m; i++)
            if (scanIn[i].Size(axes[i]) != length)
                throw new ShapeMismatchException($"{c.Node.Describe()}: scan input {i} has {scanIn[i].Size(axes[i])} steps along axis {axes[i]}, input 0 has {length}");
        var collected = Enumerable.Range(0, k).Select(_ => new Tensor[length]).ToArray();
        for (int t = 0; t < length; t++)
        {
            var slices = scanIn.Select((x, i) => x.Select(axes[i], inDirs[i] != 0 ? length - 1 - t : t));
            var outs = c.RunSubgraph(body, [.. states, .. slices]);
            for (int s = 0; s < n; s++) states[s] = outs[s];
            for (int j = 0; j < k; j++) collected[j][outDirs[j] != 0 ? length - 1 - t : t] = outs[n + j];
        }
        var result = new Tensor?[n + k];
        states.CopyTo(result, 0);
        for (int j = 0; j < k; j++)
        {
            if (length == 0) throw Unsupported(c, "scan over zero steps (the output element shape is unknown)");
            int rank = collected[j][0].Dim + 1;
            result[n + j] = Tensor.Stack(collected[j], Axis(c, outAxes[j], rank));
        }
        return Outputs(c, result);
    }
}
