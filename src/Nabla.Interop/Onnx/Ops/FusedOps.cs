using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>
/// Nodes that only <see cref="OnnxFusion"/> creates, in the private domain <c>com.nabla</c>. <c>FusedConv</c>: inputs
/// X, W, optional B, optional residual R; attributes strides, pads (4: top, left, bottom, right), dilations, group,
/// activation ("" or "Relu"), auto_pad ("NOTSET", or "SAME_UPPER"/"SAME_LOWER": pads computed from the input size); Y = act(conv(X, W) + B + R). With the
/// <c>pool_*</c> attributes (kernel_shape, strides, pads, dilations, ceil_mode of a MaxPool that read Y) the node outputs
/// that max pooling of Y instead, with no residual. Its weights are prepared once (<see cref="PackedConv2d"/>)
/// the first time the node runs with a given weight and bias tensor, and again after an in-place write to either (their
/// storage versions are part of the key), and its output buffer comes from the run's memory plan. <c>FusedGemm</c> keeps
/// its packed weight the same way.
/// </summary>
internal static class FusedOps
{
    public const string Domain = "com.nabla";

    public static OpKernel Resolve(Node node) => node.OpType switch
    {
        "FusedConv" => FusedConv(node),
        "FusedGemm" => FusedGemm(node),
        _ => throw new ModelFormatException($"{node.Describe()}: unsupported operator {Domain}.{node.OpType}"),
    };

    /// <summary>The weight and bias tensors a prepared layer was made from: by identity, and by their storages' versions,
    /// which in-place writes bump, so a layer whose weight or bias was written to is prepared again.</summary>
    readonly record struct WeightKey(Tensor Weight, int Version, Tensor? Bias, int BiasVersion)
    {
        public static WeightKey Of(Tensor w, Tensor? b) => new(w, w.Storage.Version, b, b?.Storage.Version ?? 0);

        public bool Matches(Tensor w, Tensor? b) =>
            ReferenceEquals(Weight, w) && Version == w.Storage.Version && ReferenceEquals(Bias, b) && BiasVersion == (b?.Storage.Version ?? 0);
    }

    /// <summary>A node's prepared convolution, for its weight and bias and the input size (for auto_pad) it was made for.</summary>
    sealed record Packed(WeightKey Key, int H, int W, PackedConv2d Conv);

    /// <summary>The prepared convolution or linear layer a fused node holds now, or null (for tests: an unchanged weight
    /// must not be prepared again on every run).</summary>
    internal static object? Prepared(Node node) =>
        ConvCaches.TryGetValue(node, out var conv) ? conv.Value : GemmCaches.TryGetValue(node, out var fc) ? fc.Value : null;

    static OpKernel FusedConv(Node node)
    {
        var strides = node.GetInts("strides") ?? [1, 1];
        var pads = node.GetInts("pads") ?? [0, 0, 0, 0];
        var dil = node.GetInts("dilations") ?? [1, 1];
        int group = (int)node.GetInt("group", 1);
        var autoPad = node.GetString("auto_pad", "NOTSET");
        if (autoPad is not ("NOTSET" or "SAME_UPPER" or "SAME_LOWER"))
            throw new ModelFormatException($"{node.Describe()}: unknown auto_pad '{autoPad}'");
        var act = node.GetString("activation", "") switch
        {
            "" => FusedActivation.None,
            "Relu" => FusedActivation.Relu,
            var a => throw new ModelFormatException($"{node.Describe()}: unknown fused activation '{a}'"),
        };
        if (strides.Length != 2 || pads.Length != 4 || dil.Length != 2)
            throw new ModelFormatException($"{node.Describe()}: FusedConv needs 2 strides, 4 pads and 2 dilations");
        var pool = PoolAttributes(node);
        // Keyed on the node, which every instance of the model shares (OnnxModel.NewInstance), so the packed weights are
        // made once per model. Immutable; replaced whole, so concurrent runs see either the old or the new one.
        var cache = ConvCaches.GetValue(node, _ => new());
        return c =>
        {
            Tensor x = c.Input(0), w = c.Input(1);
            Tensor? b = c.OptionalInput(2), r = c.OptionalInput(3);
            if (x.DType != DType.Float32 || x.Dim != 4) throw Invalid(c, $"FusedConv expects a 4-D float32 input, got {x.DType} [{string.Join(", ", x.Shape)}]");
            var p = Volatile.Read(ref cache.Value);
            bool same = autoPad != "NOTSET";
            int h = same ? x.Size(2) : 0, wd = same ? x.Size(3) : 0;
            if (p is null || !p.Key.Matches(w, b) || p.H != h || p.W != wd)
            {
                var pd = same ? SamePads(autoPad, [h, wd], [w.Size(2), w.Size(3)], strides, dil) : pads;
                // The weight is taken as constant: its layouts are built from its own array on first use instead of from a
                // packed copy made here. An in-place write to it (a fed weight changed between runs) bumps its version,
                // and the check above then prepares it again.
                p = new Packed(WeightKey.Of(w, b), h, wd, new PackedConv2d(w, b, ((int)strides[0], (int)strides[1]),
                    ((int)pd[0], (int)pd[1], (int)pd[2], (int)pd[3]), ((int)dil[0], (int)dil[1]), group, act, constantWeight: true));
                Volatile.Write(ref cache.Value, p);
            }
            var shape = p.Conv.OutputShape(x.Shape);
            if (pool is { } q)
            {
                if (r is not null) throw Invalid(c, "a FusedConv that pools takes no residual");
                int ph = NnOps.PoolOutputLength(shape[2], q.K[0], q.S[0], q.D[0], q.P[0], q.P[2], q.Ceil);
                int pw = NnOps.PoolOutputLength(shape[3], q.K[1], q.S[1], q.D[1], q.P[1], q.P[3], q.Ceil);
                if (ph < 1 || pw < 1)
                    throw Invalid(c, $"max pool window {q.K[0]}x{q.K[1]} does not fit the convolution's {shape[2]}x{shape[3]} output with pads [{string.Join(", ", q.P)}]");
                var pooled = c.NewOutput([shape[0], shape[1], ph, pw], DType.Float32);
                p.Conv.RunMaxPooled(x, pooled, (q.K[0], q.K[1]), (q.S[0], q.S[1]), (q.P[0], q.P[1]), (q.D[0], q.D[1]));
                return One(pooled);
            }
            if (r is null || r.DType == DType.Float32 && r.Shape.SequenceEqual(shape))
            {
                var y = c.NewOutput(shape, DType.Float32);
                p.Conv.Run(x, r, y);
                return One(y);
            }
            // A residual that broadcasts: the plain Add semantics, then the activation.
            var z = c.NewOutput(shape, DType.Float32);
            p.Conv.Run(x, null, z, FusedActivation.None);
            var sum = z.Add(r);
            return One(act == FusedActivation.Relu ? sum.Relu() : sum);
        };
    }

    /// <summary>The max pooling a FusedConv applies to its result (kernel, strides, pads top/left/bottom/right, dilations).</summary>
    sealed record PoolSpec(int[] K, int[] S, int[] P, int[] D, bool Ceil);

    static PoolSpec? PoolAttributes(Node node)
    {
        var k = node.GetInts("pool_kernel_shape");
        if (k is null) return null;
        var s = node.GetInts("pool_strides") ?? [1, 1];
        var p = node.GetInts("pool_pads") ?? [0, 0, 0, 0];
        var d = node.GetInts("pool_dilations") ?? [1, 1];
        if (k.Length != 2 || s.Length != 2 || p.Length != 4 || d.Length != 2 || k.Concat(s).Concat(d).Any(v => v < 1 || v > 1 << 16) || p.Any(v => v < 0 || v > 1 << 16))
            throw new ModelFormatException($"{node.Describe()}: FusedConv's pool needs 2 positive kernel sizes, strides and dilations and 4 pads of at least 0");
        static int[] I(long[] v) => v.Select(x => (int)x).ToArray();
        return new PoolSpec(I(k), I(s), I(p), I(d), node.GetInt("pool_ceil_mode", 0) != 0);
    }

    sealed record PackedFc(WeightKey Key, PackedLinear Linear);

    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Node, System.Runtime.CompilerServices.StrongBox<Packed?>> ConvCaches = new();
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Node, System.Runtime.CompilerServices.StrongBox<PackedFc?>> GemmCaches = new();

    /// <summary>FusedGemm: inputs A [M, K], B ([K, N], or [N, K] with transB), optional C [N]; Y = act(A·B + C). With
    /// <c>matmul</c> = 1 (a fused MatMul), A is [..., K] of any rank and Y is [..., N].</summary>
    static OpKernel FusedGemm(Node node)
    {
        bool transB = node.GetInt("transB", 0) != 0;
        bool matmul = node.GetInt("matmul", 0) != 0;
        var act = node.GetString("activation", "") switch
        {
            "" => FusedActivation.None,
            "Relu" => FusedActivation.Relu,
            var a => throw new ModelFormatException($"{node.Describe()}: unknown fused activation '{a}'"),
        };
        var cache = GemmCaches.GetValue(node, _ => new());   // shared by the model's instances, as for FusedConv
        return c =>
        {
            Tensor a = c.Input(0), w = c.Input(1);
            var b = c.OptionalInput(2);
            if (matmul)
            {
                int k = transB ? w.Size(1) : w.Size(0);
                // A shape error, as the unfused MatMul reports it (so the exception does not depend on fusion).
                if (a.DType != DType.Float32 || a.Dim < 1 || a.Size(-1) != k)
                    throw new ShapeMismatchException($"{node.Describe()}: MatMul expects a float32 A of any rank whose last dimension is {k}, got {a.DType} [{string.Join(", ", a.Shape)}]");
                var linear = Packed(w, b);
                var shape = new int[a.Dim];
                int rows = 1;
                for (int i = 0; i < a.Dim - 1; i++) rows = checked(rows * (shape[i] = a.Size(i)));
                shape[^1] = linear.OutFeatures;
                var y = c.NewOutput(shape, DType.Float32);
                if (a.Dim == 2) linear.Run(a, y);
                else
                {
                    // The 2-D views are disposed: an undisposed view would count as an owner of y's buffer forever, and a
                    // graph output's buffer could then never go back to StorageCache when the caller disposes y.
                    using var a2d = a.Reshape(rows, k);
                    using var y2d = y.Reshape(rows, linear.OutFeatures);
                    linear.Run(a2d, y2d);
                }
                return One(y);
            }
            if (a.DType != DType.Float32 || a.Dim != 2) throw Invalid(c, $"FusedGemm expects a 2-D float32 A, got {a.DType} [{string.Join(", ", a.Shape)}]");
            var lin = Packed(w, b);
            var y2 = c.NewOutput([a.Size(0), lin.OutFeatures], DType.Float32);
            lin.Run(a, y2);
            return One(y2);
        };

        // The weight packed once per (weight, bias) pair; a model instance that swaps them, or writes to one in place,
        // gets a new packing.
        PackedLinear Packed(Tensor w, Tensor? b)
        {
            var p = Volatile.Read(ref cache.Value);
            if (p is null || !p.Key.Matches(w, b))
            {
                p = new PackedFc(WeightKey.Of(w, b), new PackedLinear(w, transB, b, act));
                Volatile.Write(ref cache.Value, p);
            }
            return p.Linear;
        }
    }

    /// <summary>Begin and end pads (top, left, bottom, right) of auto_pad SAME_UPPER / SAME_LOWER for this input size.</summary>
    static long[] SamePads(string autoPad, int[] input, int[] kernel, long[] strides, long[] dil)
    {
        var r = new long[4];
        for (int i = 0; i < 2; i++)
        {
            long outLen = (input[i] + strides[i] - 1) / strides[i];
            long total = Math.Max(0, (outLen - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - input[i]);
            long small = total / 2, large = total - small;
            (r[i], r[i + 2]) = autoPad == "SAME_UPPER" ? (small, large) : (large, small);
        }
        return r;
    }
}
