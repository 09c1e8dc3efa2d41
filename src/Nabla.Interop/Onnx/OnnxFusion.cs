using Nabla.Graph;
using Nabla.Interop.Onnx.Ops;
using G = Nabla.Graph.Graph;

namespace Nabla.Interop.Onnx;

/// <summary>What <see cref="OnnxFusion.Apply"/> did.</summary>
public sealed record FusionReport(int FusedConvs, int FoldedBatchNorms, int FoldedBiasAdds, int FusedResidualAdds, int FusedRelus, int FusedGemms = 0, int FusedMaxPools = 0);

/// <summary>
/// The inference fusion pass applied at load: each 2-D float32 <c>Conv</c> with constant weights becomes one
/// <c>com.nabla.FusedConv</c> node (<see cref="FusedOps"/>) that also absorbs the chain that follows it, as long as each
/// intermediate value has that single consumer and is not a graph output: an inference <c>BatchNormalization</c> with
/// constant parameters (folded into the weights and bias: w·γ/√(σ²+ε), (b−μ)·γ/√(σ²+ε)+β), an <c>Add</c> of a constant
/// per-channel bias (folded into the bias), an <c>Add</c> of another value (a residual, added in the epilogue), and a
/// final <c>Relu</c>, and then a 2-D <c>MaxPool</c> with explicit pads and no named indices output when there is no residual
/// and the convolution takes the direct AVX-512 kernel (<see cref="PackedConv2d.PoolsInBands"/>; the fused node pools its
/// own output band by band: <see cref="PackedConv2d.RunMaxPooled"/>). Likewise a float32 <c>Gemm</c> (no transA, alpha = beta = 1) with a constant B and per-column C
/// becomes <c>com.nabla.FusedGemm</c>, absorbing a following <c>Relu</c>; so does a <c>MatMul</c> with a constant 2-D float32
/// B (an input of any rank, its leading dimensions flattened into rows), absorbing an <c>Add</c> of a constant 1-D bias and
/// then a <c>Relu</c>. Weights listed as graph inputs count as constants only before IR version 4 (where every
/// initializer had to be listed; ONNX Runtime reads them the same way). Graphs with subgraphs are left alone.
/// </summary>
public static class OnnxFusion
{
    /// <summary>Whether a MaxPool after a fused convolution joins it (settable by tests and measurements).</summary>
    internal static bool FuseMaxPool = true;

    /// <summary>Rewrites <paramref name="graph"/> in place. Initializer tensors are not written: a folded weight is a new
    /// tensor, so a caller's tensors, or another graph sharing them, keep their values.</summary>
    public static FusionReport Apply(G graph, long irVersion) => Apply(graph, irVersion, foldInPlace: false);

    /// <param name="foldInPlace">the graph's initializers are arrays nobody else holds (the ONNX importer just decoded
    /// them): a weight that only its convolution reads is scaled in its own array (ResNet-18: a 45 MB copy fewer)</param>
    internal static FusionReport Apply(G graph, long irVersion, bool foldInPlace)
    {
        if (graph.Nodes.Any(n => n.Attributes.Values.Any(a => a.Kind is AttributeKind.Graph or AttributeKind.Graphs)))
            return new FusionReport(0, 0, 0, 0, 0);
        var inputNames = graph.Inputs.Select(i => i.Name).ToHashSet();
        var outputNames = graph.Outputs.Select(o => o.Name).ToHashSet();
        bool IsConst(string name) => name.Length > 0 && graph.Initializers.ContainsKey(name) && (irVersion < 4 || !inputNames.Contains(name));

        var uses = new Dictionary<string, int>();
        var consumer = new Dictionary<string, Node>();
        foreach (var n in graph.Nodes)
            foreach (var i in n.Inputs)
                if (i.Length > 0)
                {
                    uses[i] = uses.GetValueOrDefault(i) + 1;
                    consumer[i] = n;
                }
        Node? SoleConsumer(string value) =>
            uses.GetValueOrDefault(value) == 1 && !outputNames.Contains(value) && consumer.TryGetValue(value, out var c) ? c : null;

        int convs = 0, bns = 0, biases = 0, residuals = 0, relus = 0, pools = 0;
        var removed = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var replace = new Dictionary<Node, Node>(ReferenceEqualityComparer.Instance);
        foreach (var conv in graph.Nodes.ToList())
        {
            if (conv.OpType != "Conv" || conv.Domain.Length > 0 || removed.Contains(conv) || !TryConvAttributes(conv, graph, IsConst, out var attrs)) continue;
            var w = graph.Initializers[conv.Inputs[1]];
            int o = w.Size(0);
            bool hasBias = conv.Inputs.Length > 2 && conv.Inputs[2].Length > 0;
            if (hasBias && !(IsConst(conv.Inputs[2]) && graph.Initializers[conv.Inputs[2]] is { DType: DType.Float32 } bt && bt.NumElements == o)) continue;
            // Folded weights: each output channel's product of batch-norm scales (in double), applied once at the end to a
            // float copy of the weights. (Folding into a double copy cost three passes over 90 MB for ResNet-18.)
            double[]? wscale = null;
            double[]? bd = hasBias ? graph.Initializers[conv.Inputs[2]].ToDoubleArray() : null;
            bool biasChanged = false;
            string residual = "";
            string act = "";
            string cur = conv.Outputs[0];
            Node last = conv;
            var chain = new List<Node>();
            while (SoleConsumer(cur) is { } next && next.Domain.Length == 0 && act.Length == 0 && !removed.Contains(next))
            {
                if (next.OpType == "BatchNormalization" && residual.Length == 0 && TryBatchNorm(next, graph, IsConst, uses, outputNames, o, out var scale, out var shift))
                {
                    wscale ??= Enumerable.Repeat(1.0, o).ToArray();
                    bd ??= new double[o];
                    for (int oc = 0; oc < o; oc++)
                    {
                        wscale[oc] *= scale[oc];
                        bd[oc] = bd[oc] * scale[oc] + shift[oc];
                    }
                    biasChanged = true;
                    bns++;
                }
                else if (next.OpType == "Add" && next.Attributes.Count == 0 && next.Inputs.Length == 2 && next.Inputs[0] != next.Inputs[1] && residual.Length == 0)
                {
                    var other = next.Inputs[0] == cur ? next.Inputs[1] : next.Inputs[0];
                    if (IsConst(other) && PerChannel(graph.Initializers[other], o) is { } add)
                    {
                        bd ??= new double[o];
                        for (int oc = 0; oc < o; oc++) bd[oc] += add[oc];
                        biasChanged = true;
                        biases++;
                    }
                    else if (!graph.Initializers.ContainsKey(other) || !IsConst(other))
                    {
                        residual = other;
                        residuals++;
                    }
                    else break;
                }
                else if (next.OpType == "Relu" && next.Attributes.Count == 0)
                {
                    act = "Relu";
                    relus++;
                }
                else break;
                chain.Add(next);
                last = next;
                cur = next.Outputs[0];
            }

            // A MaxPool reading the result: the fused node pools too (no residual: the banded path has none).
            Dictionary<string, NodeAttribute>? pool = null;
            if (FuseMaxPool && residual.Length == 0 && SoleConsumer(cur) is { OpType: "MaxPool", Domain: "" } mp && !removed.Contains(mp)
                && PackedConv2d.PoolsInBands(o, w.Size(1), w.Size(2), w.Size(3), ((int)attrs.strides[0], (int)attrs.strides[1]),
                    ((int)attrs.dilations[0], (int)attrs.dilations[1]), (int)attrs.group)
                && TryMaxPool(mp, out pool))
            {
                chain.Add(mp);
                last = mp;
                cur = mp.Outputs[0];
                pools++;
            }

            string wName = conv.Inputs[1], bName = hasBias ? conv.Inputs[2] : "";
            if (wscale is not null)
            {
                // A weight only this convolution reads is scaled in place when the importer just decoded it; the old
                // name, then unread, is dropped below with the other unread initializers.
                bool own = foldInPlace && uses.GetValueOrDefault(wName) == 1 && !inputNames.Contains(wName) && !outputNames.Contains(wName);
                wName = AddInitializer(graph, wName + "_fused", ScaleRows(w, wscale, own));
            }
            if (biasChanged) bName = AddInitializer(graph, (hasBias ? bName : conv.Inputs[1]) + "_fused_bias", Tensor.FromArray(bd!, o).To(DType.Float32));
            var fused = new Node
            {
                OpType = "FusedConv",
                Domain = FusedOps.Domain,
                Name = conv.Name,
                Inputs = [conv.Inputs[0], wName, bName, residual],
                Outputs = [cur],
                Attributes = new()
                {
                    ["strides"] = Ints("strides", attrs.strides),
                    ["pads"] = Ints("pads", attrs.pads),
                    ["dilations"] = Ints("dilations", attrs.dilations),
                    ["group"] = new NodeAttribute { Name = "group", Kind = AttributeKind.Int, Int = attrs.group },
                    ["activation"] = new NodeAttribute { Name = "activation", Kind = AttributeKind.String, String = act },
                    ["auto_pad"] = new NodeAttribute { Name = "auto_pad", Kind = AttributeKind.String, String = attrs.autoPad },
                },
            };
            if (pool is not null)
                foreach (var (name, a) in pool) fused.Attributes[name] = a;
            removed.Add(conv);
            foreach (var n in chain) removed.Add(n);
            replace[last] = fused;
            convs++;
        }
        int gemms = 0;
        foreach (var gemm in graph.Nodes)
        {
            bool isGemm = gemm.OpType == "Gemm" && gemm.Domain.Length == 0 && TryGemm(gemm, graph, IsConst);
            bool isMatMul = !isGemm && gemm.OpType == "MatMul" && gemm.Domain.Length == 0 && TryMatMul(gemm, graph, IsConst);
            if (!isGemm && !isMatMul || removed.Contains(gemm)) continue;
            string act = "", output = gemm.Outputs[0];
            string bias = isGemm && gemm.Inputs.Length > 2 ? gemm.Inputs[2] : "";
            Node last = gemm;
            // A MatMul with a constant weight, then an Add of a constant 1-D bias (nn.Linear as PyTorch exports it for
            // inputs of any rank): the Add folds into the fused node. (A [1, N] bias would turn a 1-D product 2-D.)
            if (isMatMul && SoleConsumer(output) is { OpType: "Add", Domain: "" } add && add.Inputs.Length == 2 && add.Outputs.Length == 1
                && add.Attributes.Count == 0 && add.Inputs[0] != add.Inputs[1] && !removed.Contains(add))
            {
                string other = add.Inputs[0] == output ? add.Inputs[1] : add.Inputs[0];
                int n = graph.Initializers[gemm.Inputs[1]].Size(1);
                if (IsConst(other) && graph.Initializers[other] is { DType: DType.Float32, Dim: 1 } c && c.NumElements == n)
                {
                    bias = other;
                    biases++;
                    removed.Add(add);
                    last = add;
                    output = add.Outputs[0];
                }
            }
            if (SoleConsumer(output) is { OpType: "Relu", Domain: "" } relu && relu.Attributes.Count == 0 && !removed.Contains(relu))
            {
                act = "Relu";
                relus++;
                removed.Add(relu);
                last = relu;
                output = relu.Outputs[0];
            }
            replace[last] = new Node
            {
                OpType = "FusedGemm",
                Domain = FusedOps.Domain,
                Name = gemm.Name,
                Inputs = [gemm.Inputs[0], gemm.Inputs[1], bias],
                Outputs = [output],
                Attributes = new()
                {
                    ["transB"] = new NodeAttribute { Name = "transB", Kind = AttributeKind.Int, Int = isGemm ? gemm.GetInt("transB", 0) : 0 },
                    ["activation"] = new NodeAttribute { Name = "activation", Kind = AttributeKind.String, String = act },
                    ["matmul"] = new NodeAttribute { Name = "matmul", Kind = AttributeKind.Int, Int = isMatMul ? 1 : 0 },
                },
            };
            removed.Add(gemm);
            gemms++;
        }
        if (convs + gemms == 0) return new FusionReport(0, 0, 0, 0, 0);
        var nodes = new List<Node>(graph.Nodes.Count);
        foreach (var n in graph.Nodes)
            if (replace.TryGetValue(n, out var f)) nodes.Add(f);
            else if (!removed.Contains(n)) nodes.Add(n);
        graph.Nodes.Clear();
        graph.Nodes.AddRange(nodes);
        if (!graph.Opsets.ContainsKey(FusedOps.Domain)) graph.Opsets[FusedOps.Domain] = 1;
        // Initializers only the fused-away nodes read (the unfolded weights, BatchNorm statistics) are dropped, unless
        // they are graph inputs or outputs.
        var read = graph.Nodes.SelectMany(n => n.Inputs).ToHashSet();
        foreach (var name in graph.Initializers.Keys.ToList())
            if (!read.Contains(name) && !inputNames.Contains(name) && !outputNames.Contains(name)) graph.Initializers.Remove(name);
        return new FusionReport(convs, bns, biases, residuals, relus, gemms, pools);
    }

    static NodeAttribute Ints(string name, long[] v) => new() { Name = name, Kind = AttributeKind.Ints, Ints = v };

    /// <summary>A 2-D MaxPool the fused node can take over: explicit pads (auto_pad NOTSET), positive kernel, strides and
    /// dilations, and no indices output named (even an unread one). Its attributes become the fused node's <c>pool_*</c> ones, defaults filled in.</summary>
    static bool TryMaxPool(Node mp, out Dictionary<string, NodeAttribute>? attrs)
    {
        attrs = null;
        if (mp.Inputs.Length != 1 || mp.Outputs.Length < 1 || mp.Outputs.Skip(1).Any(o => o.Length > 0)) return false;
        var k = mp.GetInts("kernel_shape");
        var strides = mp.GetInts("strides") ?? [1, 1];
        var pads = mp.GetInts("pads") ?? [0, 0, 0, 0];
        var dil = mp.GetInts("dilations") ?? [1, 1];
        if (k is not { Length: 2 } || strides.Length != 2 || pads.Length != 4 || dil.Length != 2) return false;
        if (mp.GetString("auto_pad", "NOTSET") != "NOTSET") return false;
        if (k.Concat(strides).Concat(dil).Any(v => v < 1 || v > 1 << 16) || pads.Any(v => v < 0 || v > 1 << 16)) return false;
        if (mp.Attributes.Keys.Any(a => a is not ("kernel_shape" or "strides" or "pads" or "dilations" or "auto_pad" or "ceil_mode" or "storage_order")))
            return false;
        attrs = new()
        {
            ["pool_kernel_shape"] = Ints("pool_kernel_shape", k),
            ["pool_strides"] = Ints("pool_strides", strides),
            ["pool_pads"] = Ints("pool_pads", pads),
            ["pool_dilations"] = Ints("pool_dilations", dil),
            ["pool_ceil_mode"] = new NodeAttribute { Name = "pool_ceil_mode", Kind = AttributeKind.Int, Int = mp.GetInt("ceil_mode", 0) != 0 ? 1 : 0 },
        };
        return true;
    }

    /// <summary>Row oc of <paramref name="w"/> (one output channel) times scale[oc], each product in double, rounded once:
    /// in <paramref name="w"/>'s own array when <paramref name="inPlace"/> and it is a plain contiguous one (ResNet-18: a
    /// 45 MB copy fewer at load), else in a new tensor.</summary>
    static Tensor ScaleRows(Tensor w, double[] scale, bool inPlace)
    {
        var f = inPlace && w.IsContiguous && w.Offset == 0 && w.Storage.Data is float[] a && a.Length == w.NumElements ? a : w.ToArray<float>();
        int per = f.Length / scale.Length;
        for (int oc = 0; oc < scale.Length; oc++)
        {
            double sc = scale[oc];
            var row = f.AsSpan(oc * per, per);
            for (int k = 0; k < row.Length; k++) row[k] = (float)(row[k] * sc);
        }
        return ReferenceEquals(f, w.Storage.Data) ? w : Tensor.AsTensor(f, w.Shape);
    }

    static string AddInitializer(G graph, string baseName, Tensor t)
    {
        var name = baseName;
        for (int i = 1; graph.Initializers.ContainsKey(name) || graph.Nodes.Any(n => n.Outputs.Contains(name)) || graph.Inputs.Any(v => v.Name == name); i++)
            name = $"{baseName}_{i}";
        graph.Initializers[name] = t;
        return name;
    }

    /// <summary>A 2-D float32 Conv with a constant rank-4 weight and explicit (or no) padding.</summary>
    static bool TryConvAttributes(Node conv, G graph, Func<string, bool> isConst, out (long[] strides, long[] pads, long[] dilations, long group, string autoPad) attrs)
    {
        attrs = default;
        if (conv.Inputs.Length < 2 || conv.Outputs.Length != 1 || !isConst(conv.Inputs[1])) return false;
        var w = graph.Initializers[conv.Inputs[1]];
        if (w.DType != DType.Float32 || w.Dim != 4) return false;
        try
        {
            var autoPad = conv.GetString("auto_pad", "NOTSET");
            if (autoPad is not ("NOTSET" or "VALID" or "SAME_UPPER" or "SAME_LOWER")) return false;
            var kernel = conv.GetInts("kernel_shape");
            if (kernel is not null && (kernel.Length != 2 || kernel[0] != w.Size(2) || kernel[1] != w.Size(3))) return false;
            var strides = conv.GetInts("strides") ?? [1, 1];
            var dil = conv.GetInts("dilations") ?? [1, 1];
            var pads = autoPad != "NOTSET" ? [0, 0, 0, 0] : conv.GetInts("pads") ?? [0, 0, 0, 0];
            long group = conv.GetInt("group", 1);
            if (strides.Length != 2 || dil.Length != 2 || pads.Length != 4 || group < 1 || w.Size(0) % group != 0) return false;
            if (strides.Any(s => s < 1) || dil.Any(d => d < 1) || pads.Any(p => p < 0)) return false;
            foreach (var a in conv.Attributes.Keys)
                if (a is not ("auto_pad" or "kernel_shape" or "strides" or "dilations" or "pads" or "group")) return false;
            attrs = (strides, pads, dil, group, autoPad == "VALID" ? "NOTSET" : autoPad);
            return true;
        }
        catch (ModelFormatException) { return false; }   // an attribute of the wrong kind: left for run time to report
    }

    /// <summary>A MatMul whose second input is a constant 2-D float32 matrix (A may have any rank; ONNX requires it to
    /// be float32 too).</summary>
    static bool TryMatMul(Node mm, G graph, Func<string, bool> isConst) =>
        mm.Inputs.Length == 2 && mm.Outputs.Length == 1 && mm.Attributes.Count == 0 && mm.Inputs[0] != mm.Inputs[1] && isConst(mm.Inputs[1])
        && graph.Initializers[mm.Inputs[1]] is { DType: DType.Float32, Dim: 2 };

    /// <summary>A float32 Gemm without transA, alpha or beta, with a constant 2-D B and a constant C of one value per column (or none).</summary>
    static bool TryGemm(Node gemm, G graph, Func<string, bool> isConst)
    {
        if (gemm.Inputs.Length < 2 || gemm.Outputs.Length != 1 || !isConst(gemm.Inputs[1])) return false;
        var b = graph.Initializers[gemm.Inputs[1]];
        if (b.DType != DType.Float32 || b.Dim != 2) return false;
        try
        {
            foreach (var a in gemm.Attributes.Keys)
                if (a is not ("transA" or "transB" or "alpha" or "beta")) return false;
            if (gemm.GetInt("transA", 0) != 0 || gemm.GetFloat("alpha", 1) != 1 || gemm.GetFloat("beta", 1) != 1) return false;
            int n = gemm.GetInt("transB", 0) != 0 ? b.Size(0) : b.Size(1);
            if (gemm.Inputs.Length > 2 && gemm.Inputs[2].Length > 0)
            {
                if (!isConst(gemm.Inputs[2])) return false;
                var c = graph.Initializers[gemm.Inputs[2]];
                if (c.DType != DType.Float32 || c.NumElements != n || !(c.Dim == 1 || c.Dim == 2 && c.Size(0) == 1)) return false;
            }
            return true;
        }
        catch (ModelFormatException) { return false; }
    }

    /// <summary>An inference BatchNormalization over channels with constant parameters: y = x·scale + shift per channel.</summary>
    static bool TryBatchNorm(Node bn, G graph, Func<string, bool> isConst, Dictionary<string, int> uses, HashSet<string> outputs, int channels,
        out double[] scale, out double[] shift)
    {
        scale = shift = [];
        if (bn.Inputs.Length != 5 || bn.Inputs.Skip(1).Any(i => !isConst(i))) return false;
        for (int k = 1; k < bn.Outputs.Length; k++)
            if (bn.Outputs[k].Length > 0 && (uses.ContainsKey(bn.Outputs[k]) || outputs.Contains(bn.Outputs[k]))) return false;
        try
        {
            if (bn.GetInt("training_mode", 0) != 0 || bn.GetInt("spatial", 1) != 1 || bn.GetInt("is_test", 1) == 0) return false;
            foreach (var a in bn.Attributes.Keys)
                if (a is not ("epsilon" or "momentum" or "spatial" or "is_test" or "training_mode" or "consumed_inputs")) return false;
            double eps = bn.GetFloat("epsilon", 1e-5);
            var p = bn.Inputs.Skip(1).Select(i => graph.Initializers[i]).ToArray();
            if (p.Any(t => t.DType != DType.Float32 || t.NumElements != channels || t.Dim != 1)) return false;
            double[] g = p[0].ToDoubleArray(), beta = p[1].ToDoubleArray(), mean = p[2].ToDoubleArray(), var = p[3].ToDoubleArray();
            scale = new double[channels];
            shift = new double[channels];
            for (int c = 0; c < channels; c++)
            {
                scale[c] = g[c] / Math.Sqrt(var[c] + eps);
                shift[c] = beta[c] - mean[c] * scale[c];
            }
            return true;
        }
        catch (ModelFormatException) { return false; }
    }

    /// <summary>The values of a float32 constant that broadcasts over [N, C, H, W] as one value per channel ([C,1,1] or [1,C,1,1]).</summary>
    static double[]? PerChannel(Tensor t, int channels)
    {
        if (t.DType != DType.Float32 || t.NumElements != channels) return null;
        var s = t.Shape;
        bool ok = (s.Length == 3 && s[0] == channels && s[1] == 1 && s[2] == 1)
                  || (s.Length == 4 && s[0] == 1 && s[1] == channels && s[2] == 1 && s[3] == 1);
        return ok ? t.ToDoubleArray() : null;
    }
}
