using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>
/// MatMul/Gemm, convolutions, pooling and normalizations. 2-D float convolutions run on Nabla's Conv2d; other ranks and
/// dtypes use a direct N-d reference loop.
/// </summary>
internal static class NnOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("MatMul", c => One(MatMul(c.Input(0), c.Input(1))));
        r.Add("Gemm", c =>
        {
            Tensor a = c.Input(0), b = c.Input(1);
            if (c.Node.GetInt("transA", 0) != 0) a = a.Transpose(0, 1);
            if (c.Node.GetInt("transB", 0) != 0) b = b.Transpose(0, 1);
            double alpha = c.Node.GetFloat("alpha", 1), beta = c.Node.GetFloat("beta", 1);
            var y = MatMul(a, b);
            if (alpha != 1) y = y.Mul(alpha);
            if (c.OptionalInput(2) is { } bias && beta != 0) y = y.Add(beta == 1 ? bias : bias.Mul(beta));
            return One(y.To(c.Input(0).DType));
        });
        r.Add("Conv", c => One(Conv(c)));
        r.Add("ConvInteger", c =>
        {
            // int32 conv of (x - x_zero_point) and (w - w_zero_point); w_zero_point may be one per output channel.
            Tensor x = c.Input(0).To(DType.Float64), w = c.Input(1).To(DType.Float64);
            if (c.OptionalInput(2) is { } xz) x = x.Sub(xz.To(DType.Float64).Reshape([]));
            if (c.OptionalInput(3) is { } wz)
            {
                var z = wz.To(DType.Float64);
                w = w.Sub(z.Shape.Aggregate(1, (p, d) => p * d) == 1 ? z.Reshape([]) : z.Reshape([z.Size(0), .. Enumerable.Repeat(1, w.Dim - 1)]));
            }
            return One(Conv(c, x, w, null).Round().To(DType.Int32));
        }, since: 10);
        r.Add("ConvTranspose", c => One(ConvTranspose(c)));
        r.Add("MaxPool", c => Pool(c, PoolKind.Max));
        r.Add("AveragePool", c => Pool(c, PoolKind.Average));
        r.Add("LpPool", c => Pool(c, PoolKind.Lp));
        r.Add("GlobalAveragePool", c =>
        {
            var x = c.Input(0);
            if (x.Dim == 4 && x.DType == DType.Float32 && x.Size(2) * x.Size(3) > 0)
            {
                var y = c.NewOutput([x.Size(0), x.Size(1), 1, 1], DType.Float32);
                InferencePool.GlobalAveragePool2d(x, y);
                return One(y);
            }
            return One(Global(x, t => t.Mean(Spatial(t), true)));
        });
        r.Add("GlobalMaxPool", c => One(Global(c.Input(0), x =>
        {
            var flat = x.Reshape(x.Size(0), x.Size(1), -1).Max(2, true).values;
            return flat.Reshape(x.Shape.Select((s, i) => i < 2 ? s : 1).ToArray());
        })));
        r.Add("GlobalLpPool", c =>
        {
            double p = c.Node.GetInt("p", 2);
            return One(Global(c.Input(0), x => x.Abs().Pow(p).Sum(Spatial(x), true).Pow(1 / p)));
        });
        r.Add("BatchNormalization", c =>
        {
            Tensor x = c.Input(0);
            var bshape = x.Shape.Select((s, i) => i == 1 ? s : 1).ToArray();
            double eps = c.Node.GetFloat("epsilon", 1e-5);
            if (c.Node.GetInt("training_mode", 0) != 0)
            {
                // Batch statistics (biased variance) normalize x; the running estimates move towards them by 1 - momentum.
                if (c.Opset < 14) throw Unsupported(c, "training_mode before opset 14");
                double momentum = c.Node.GetFloat("momentum", 0.9);
                var xd = x.To(DType.Float64);
                var dims = Enumerable.Range(0, x.Dim).Where(d => d != 1).ToArray();
                var bm = xd.Mean(dims, true);
                var bv = xd.Sub(bm).Square().Mean(dims, true);
                var yt = xd.Sub(bm).Div(bv.Add(eps).Sqrt()).Mul(c.Input(1).To(DType.Float64).Reshape(bshape)).Add(c.Input(2).To(DType.Float64).Reshape(bshape));
                int ch = x.Size(1);
                var runMean = c.Input(3).To(DType.Float64).Mul(momentum).Add(bm.Reshape(ch).Mul(1 - momentum));
                var runVar = c.Input(4).To(DType.Float64).Mul(momentum).Add(bv.Reshape(ch).Mul(1 - momentum));
                return Outputs(c, yt.To(x.DType), runMean.To(c.Input(3).DType), runVar.To(c.Input(4).DType));
            }
            Tensor scale = c.Input(1).Reshape(bshape), bias = c.Input(2).Reshape(bshape), mean = c.Input(3).Reshape(bshape), var = c.Input(4).Reshape(bshape);
            var y = x.Sub(mean).Div(var.Add(eps).Sqrt()).Mul(scale).Add(bias);
            return Outputs(c, y.To(x.DType), c.Input(3), c.Input(4));
        });
        r.Add("InstanceNormalization", c =>
        {
            var x = c.Input(0);
            var bshape = x.Shape.Select((s, i) => i == 1 ? s : 1).ToArray();
            double eps = c.Node.GetFloat("epsilon", 1e-5);
            var xd = x.To(DType.Float64);
            var dims = Spatial(x);
            var mean = xd.Mean(dims, true);
            var variance = xd.Sub(mean).Square().Mean(dims, true);
            var y = xd.Sub(mean).Div(variance.Add(eps).Sqrt()).Mul(c.Input(1).To(DType.Float64).Reshape(bshape)).Add(c.Input(2).To(DType.Float64).Reshape(bshape));
            return One(y.To(x.DType));
        });
        r.Add("LayerNormalization", c =>
        {
            var x = c.Input(0);
            int axis = Axis(c, c.Node.GetInt("axis", -1), x.Dim);
            double eps = c.Node.GetFloat("epsilon", 1e-5);
            var dims = Enumerable.Range(axis, x.Dim - axis).ToArray();
            var xd = x.To(DType.Float64);
            var mean = xd.Mean(dims, true);
            var variance = xd.Sub(mean).Square().Mean(dims, true);
            var inv = variance.Add(eps).Sqrt().Reciprocal();
            var y = xd.Sub(mean).Mul(inv).Mul(c.Input(1).To(DType.Float64));
            if (c.OptionalInput(2) is { } b) y = y.Add(b.To(DType.Float64));
            var statType = c.Node.GetInt("stash_type", 1) == 1 ? DType.Float32 : x.DType;
            return Outputs(c, y.To(x.DType), mean.To(statType), inv.To(statType));
        }, since: 17);
        r.Add("GroupNormalization", c =>
        {
            // x (N, C, ...); scale and bias (C) from opset 21, (num_groups) in opset 18.
            var x = c.Input(0);
            int groups = (int)(c.Node.GetIntOrNull("num_groups") ?? throw Invalid(c, "attribute 'num_groups' is required"));
            if (x.Dim < 2 || groups <= 0 || x.Size(1) % groups != 0)
                throw Invalid(c, $"num_groups {groups} does not divide the channels of input [{string.Join(", ", x.Shape)}]");
            double eps = c.Node.GetFloat("epsilon", 1e-5);
            int n = x.Size(0), ch = x.Size(1);
            var xd = x.To(DType.Float64).Reshape(n, groups, -1);
            var mean = xd.Mean([2], true);
            var variance = xd.Sub(mean).Square().Mean([2], true);
            var y = xd.Sub(mean).Div(variance.Add(eps).Sqrt()).Reshape(x.Shape);
            Tensor scale = c.Input(1).To(DType.Float64), bias = c.Input(2).To(DType.Float64);
            if (c.Opset < 21 && scale.Size(0) == groups && groups != ch)
            {
                // NOTE: opset 18 gives one scale per group; repeat it over the group's channels.
                scale = scale.Reshape(groups, 1).Expand(groups, ch / groups).Reshape(ch);
                bias = bias.Reshape(groups, 1).Expand(groups, ch / groups).Reshape(ch);
            }
            if (scale.Size(0) != ch || bias.Size(0) != ch)
                throw Invalid(c, $"scale [{string.Join(", ", scale.Shape)}] and bias [{string.Join(", ", bias.Shape)}] must have {ch} elements");
            var bshape = x.Shape.Select((s, i) => i == 1 ? s : 1).ToArray();
            return One(y.Mul(scale.Reshape(bshape)).Add(bias.Reshape(bshape)).To(x.DType));
        }, since: 18);
        r.Add("Col2Im", c =>
        {
            // (N, C·∏block, L) → (N, C, image...): each column is one block, summed back into the (padded) image.
            var x = c.Input(0);
            var image = Longs(c.Input(1)).Select(v => (int)v).ToArray();
            var block = Longs(c.Input(2)).Select(v => (int)v).ToArray();
            int k = image.Length;
            var strides = IntsAttr(c, "strides", k, 1);
            var dil = IntsAttr(c, "dilations", k, 1);
            var pads = c.Node.GetInts("pads") ?? new long[2 * k];
            int blockSize = block.Aggregate(1, (p, d) => p * d);
            if (x.Dim != 3 || block.Length != k || pads.Length != 2 * k || x.Size(1) % blockSize != 0)
                throw new ShapeMismatchException($"{c.Node.Describe()}: input [{string.Join(", ", x.Shape)}] does not fit block [{string.Join(", ", block)}] and image [{string.Join(", ", image)}]");
            var grid = new int[k];
            for (int i = 0; i < k; i++) grid[i] = (int)((image[i] + pads[i] + pads[k + i] - (dil[i] * (block[i] - 1) + 1)) / strides[i] + 1);
            int n = x.Size(0), ch = x.Size(1) / blockSize, l = x.Size(2);
            if (grid.Aggregate(1, (p, d) => p * d) != l) throw Invalid(c, $"{l} columns, expected {grid.Aggregate(1, (p, d) => p * d)} blocks");
            int imageSize = image.Aggregate(1, (p, d) => p * d);
            var v = x.ToDoubleArray();
            var o = new double[n * ch * imageSize];
            var gi = new int[k];
            var ki = new int[k];
            for (int b = 0; b < n; b++)
                for (int cc = 0; cc < ch; cc++)
                    for (int kk = 0; kk < blockSize; kk++)
                    {
                        for (int i = k - 1, rest = kk; i >= 0; rest /= block[i], i--) ki[i] = rest % block[i];
                        for (int col = 0; col < l; col++)
                        {
                            for (int i = k - 1, rest = col; i >= 0; rest /= grid[i], i--) gi[i] = rest % grid[i];
                            int at = 0;
                            bool inside = true;
                            for (int i = 0; i < k && inside; i++)
                            {
                                long p = (long)gi[i] * strides[i] - pads[i] + (long)ki[i] * dil[i];
                                inside = p >= 0 && p < image[i];
                                at = at * image[i] + (int)p;
                            }
                            if (inside) o[(b * ch + cc) * imageSize + at] += v[((long)b * x.Size(1) + cc * blockSize + kk) * l + col];
                        }
                    }
            return One(FromDoubles(o, [n, ch, .. image], x.DType));
        }, since: 18);
        r.Add("RMSNormalization", c =>
        {
            var x = c.Input(0);
            int axis = Axis(c, c.Node.GetInt("axis", -1), x.Dim);
            double eps = c.Node.GetFloat("epsilon", 1e-5);
            var dims = Enumerable.Range(axis, x.Dim - axis).ToArray();
            var xd = x.To(DType.Float64);
            var y = xd.Div(xd.Square().Mean(dims, true).Add(eps).Sqrt()).Mul(c.Input(1).To(DType.Float64));
            return One(y.To(x.DType));
        }, since: 23);
        r.Add("LpNormalization", c =>
        {
            var x = c.Input(0);
            int axis = Axis(c, c.Node.GetInt("axis", -1), x.Dim);
            long p = c.Node.GetInt("p", 2);
            var norm = p == 1 ? x.Abs().Sum([axis], true) : x.Square().Sum([axis], true).Sqrt();
            return One(x.Div(norm));
        });
        r.Add("MeanVarianceNormalization", c =>
        {
            var x = c.Input(0);
            var axes = (c.Node.GetInts("axes") ?? [0, 2, 3]).Select(a => Axis(c, a, x.Dim)).ToArray();
            var xd = x.To(DType.Float64);
            var mean = xd.Mean(axes, true);
            var variance = xd.Square().Mean(axes, true).Sub(mean.Square());
            return One(xd.Sub(mean).Div(variance.Sqrt().Add(1e-9)).To(x.DType));
        });
        r.Add("LRN", c =>
        {
            var x = c.Input(0);
            double alpha = c.Node.GetFloat("alpha", 1e-4), beta = c.Node.GetFloat("beta", 0.75), bias = c.Node.GetFloat("bias", 1);
            int size = (int)c.Node.GetInt("size", 1);
            var shape = x.Shape;
            int ch = shape[1], inner = shape.Skip(2).Aggregate(1, (p, d) => p * d);
            var v = x.ToDoubleArray();
            var o = new double[v.Length];
            int lo = (size - 1) / 2, hi = size - 1 - lo;
            for (int n = 0; n < shape[0]; n++)
                for (int cc = 0; cc < ch; cc++)
                    for (int i = 0; i < inner; i++)
                    {
                        double sq = 0;
                        for (int k = Math.Max(0, cc - lo); k <= Math.Min(ch - 1, cc + hi); k++)
                        {
                            double e = v[(n * ch + k) * inner + i];
                            sq += e * e;
                        }
                        int at = (n * ch + cc) * inner + i;
                        o[at] = v[at] / Math.Pow(bias + alpha / size * sq, beta);
                    }
            return One(FromDoubles(o, shape, x.DType));
        });
    }

    static int[] Spatial(Tensor x) => Enumerable.Range(2, x.Dim - 2).ToArray();

    static Tensor Global(Tensor x, Func<Tensor, Tensor> f) =>
        x.DType.IsFloatingPoint() && x.DType != DType.Float32 ? f(x.To(DType.Float32)).To(x.DType) : f(x);

    public static Tensor MatMul(Tensor a, Tensor b)
    {
        if (a.DType == b.DType && a.DType is DType.Float32 or DType.Float64) return a.Matmul(b);
        return a.To(DType.Float64).Matmul(b.To(DType.Float64)).To(a.DType);
    }

    /// <summary>Resolves auto_pad / pads into (begin, end) per spatial dim, as Conv and the pools define them.</summary>
    static (int[] begin, int[] end) Pads(OpContext c, int[] input, int[] kernel, int[] strides, int[] dilations)
    {
        int n = input.Length;
        var autoPad = c.Node.GetString("auto_pad", "NOTSET");
        var begin = new int[n];
        var end = new int[n];
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            for (int i = 0; i < n; i++)
            {
                int outLen = (input[i] + strides[i] - 1) / strides[i];
                int total = Math.Max(0, (outLen - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - input[i]);
                int small = total / 2, large = total - small;
                (begin[i], end[i]) = autoPad == "SAME_UPPER" ? (small, large) : (large, small);
            }
        }
        else if (autoPad is "NOTSET")
        {
            var pads = c.Node.GetInts("pads");
            if (pads is not null)
            {
                if (pads.Length != 2 * n) throw Invalid(c, $"{pads.Length} pads for {n} spatial dims");
                for (int i = 0; i < n; i++) { begin[i] = (int)pads[i]; end[i] = (int)pads[i + n]; }
            }
        }
        else if (autoPad != "VALID") throw Unsupported(c, $"auto_pad '{autoPad}'");
        return (begin, end);
    }

    static int[] IntsAttr(OpContext c, string name, int n, int fallback) =>
        c.Node.GetInts(name)?.Select(v => (int)v).ToArray() ?? Enumerable.Repeat(fallback, n).ToArray();

    static Tensor Conv(OpContext c) => Conv(c, c.Input(0), c.Input(1), c.OptionalInput(2));

    static Tensor Conv(OpContext c, Tensor x, Tensor w, Tensor? bias)
    {
        int sd = x.Dim - 2;
        var kernel = w.Shape.Skip(2).ToArray();
        var strides = IntsAttr(c, "strides", sd, 1);
        var dil = IntsAttr(c, "dilations", sd, 1);
        int group = (int)c.Node.GetInt("group", 1);
        var (pb, pe) = Pads(c, x.Shape.Skip(2).ToArray(), kernel, strides, dil);
        if (sd == 2 && x.DType == DType.Float32 && w.DType == DType.Float32)
        {
            if (pb[0] != pe[0] || pb[1] != pe[1])
            {
                x = Functional.Pad(x, [pb[1], pe[1], pb[0], pe[0]]);
                pb = [0, 0];
            }
            return Functional.Conv2d(x, w, bias, (strides[0], strides[1]), (pb[0], pb[1]), (dil[0], dil[1]), group);
        }
        return ConvReference(x, w, bias, strides, dil, pb, pe, group);
    }

    /// <summary>Direct N-d grouped convolution in double: out[n, o, p] = Σ x[n, g·C/g + i, p·s + k·d − pad] · w[o, i, k].</summary>
    static Tensor ConvReference(Tensor x, Tensor w, Tensor? bias, int[] strides, int[] dil, int[] pb, int[] pe, int group)
    {
        var xs = x.Shape;
        var ws = w.Shape;
        int sd = xs.Length - 2, n = xs[0], cin = xs[1], cout = ws[0], cpg = ws[1], opg = cout / group;
        var inSp = xs.Skip(2).ToArray();
        var k = ws.Skip(2).ToArray();
        var outSp = new int[sd];
        for (int i = 0; i < sd; i++) outSp[i] = (inSp[i] + pb[i] + pe[i] - ((k[i] - 1) * dil[i] + 1)) / strides[i] + 1;
        int inSize = inSp.Aggregate(1, (p, d) => p * d), outSize = outSp.Aggregate(1, (p, d) => p * d), kSize = k.Aggregate(1, (p, d) => p * d);
        var xv = x.ToDoubleArray();
        var wv = w.ToDoubleArray();
        var bv = bias?.ToDoubleArray();
        var o = new double[n * cout * outSize];
        var op = new int[sd];
        var kp = new int[sd];
        for (int b = 0; b < n; b++)
            for (int oc = 0; oc < cout; oc++)
            {
                int g = oc / opg;
                for (int oi = 0; oi < outSize; oi++)
                {
                    Unravel(oi, outSp, op);
                    double acc = bv?[oc] ?? 0;
                    for (int ic = 0; ic < cpg; ic++)
                    {
                        int xBase = (b * cin + g * cpg + ic) * inSize;
                        int wBase = (oc * cpg + ic) * kSize;
                        for (int ki = 0; ki < kSize; ki++)
                        {
                            Unravel(ki, k, kp);
                            int flat = 0;
                            bool inside = true;
                            for (int d = 0; d < sd; d++)
                            {
                                int pos = op[d] * strides[d] + kp[d] * dil[d] - pb[d];
                                if (pos < 0 || pos >= inSp[d]) { inside = false; break; }
                                flat = flat * inSp[d] + pos;
                            }
                            if (inside) acc += xv[xBase + flat] * wv[wBase + ki];
                        }
                    }
                    o[(b * cout + oc) * outSize + oi] = acc;
                }
            }
        return FromDoubles(o, [n, cout, .. outSp], x.DType);
    }

    static void Unravel(int index, int[] shape, int[] coord)
    {
        for (int d = shape.Length - 1; d >= 0; d--) { coord[d] = index % shape[d]; index /= shape[d]; }
    }

    static Tensor ConvTranspose(OpContext c)
    {
        Tensor x = c.Input(0), w = c.Input(1);
        var bias = c.OptionalInput(2);
        var xs = x.Shape;
        var ws = w.Shape;
        int sd = xs.Length - 2, n = xs[0], cin = xs[1], group = (int)c.Node.GetInt("group", 1);
        int opg = ws[1], cout = opg * group, ipg = cin / group;
        var k = c.Node.GetInts("kernel_shape")?.Select(v => (int)v).ToArray() ?? ws.Skip(2).ToArray();
        var strides = IntsAttr(c, "strides", sd, 1);
        var dil = IntsAttr(c, "dilations", sd, 1);
        var outPad = IntsAttr(c, "output_padding", sd, 0);
        var inSp = xs.Skip(2).ToArray();
        var pb = new int[sd];
        var pe = new int[sd];
        var outSp = new int[sd];
        var outputShape = c.Node.GetInts("output_shape");
        var autoPad = c.Node.GetString("auto_pad", "NOTSET");
        for (int i = 0; i < sd; i++)
        {
            int full = strides[i] * (inSp[i] - 1) + outPad[i] + (k[i] - 1) * dil[i] + 1;
            if (outputShape is not null || autoPad is "SAME_UPPER" or "SAME_LOWER")
            {
                int target = outputShape is not null ? (int)outputShape[outputShape.Length - sd + i] : inSp[i] * strides[i];
                int total = Math.Max(0, full - target);
                bool upper = autoPad != "SAME_LOWER";
                (pb[i], pe[i]) = upper ? (total / 2, total - total / 2) : (total - total / 2, total / 2);
            }
            else if (c.Node.GetInts("pads") is { } pads) { pb[i] = (int)pads[i]; pe[i] = (int)pads[i + sd]; }
            outSp[i] = full - pb[i] - pe[i];
        }
        int inSize = inSp.Aggregate(1, (p, d) => p * d), outSize = outSp.Aggregate(1, (p, d) => p * d), kSize = k.Aggregate(1, (p, d) => p * d);
        var xv = x.ToDoubleArray();
        var wv = w.ToDoubleArray();
        var o = new double[n * cout * outSize];
        var ip = new int[sd];
        var kp = new int[sd];
        for (int b = 0; b < n; b++)
            for (int ic = 0; ic < cin; ic++)
            {
                int g = ic / ipg;
                for (int ii = 0; ii < inSize; ii++)
                {
                    double xval = xv[(b * cin + ic) * inSize + ii];
                    if (xval == 0) continue;
                    Unravel(ii, inSp, ip);
                    for (int ki = 0; ki < kSize; ki++)
                    {
                        Unravel(ki, k, kp);
                        int flat = 0;
                        bool inside = true;
                        for (int d = 0; d < sd; d++)
                        {
                            int pos = ip[d] * strides[d] + kp[d] * dil[d] - pb[d];
                            if (pos < 0 || pos >= outSp[d]) { inside = false; break; }
                            flat = flat * outSp[d] + pos;
                        }
                        if (!inside) continue;
                        for (int oc = 0; oc < opg; oc++)
                            o[(b * cout + g * opg + oc) * outSize + flat] += xval * wv[(ic * opg + oc) * kSize + ki];
                    }
                }
            }
        if (bias is not null)
        {
            var bv = bias.ToDoubleArray();
            for (int b = 0; b < n; b++)
                for (int oc = 0; oc < cout; oc++)
                    for (int i = 0; i < outSize; i++) o[(b * cout + oc) * outSize + i] += bv[oc];
        }
        return FromDoubles(o, [n, cout, .. outSp], x.DType);
    }

    enum PoolKind { Max, Average, Lp }

    /// <summary>A pooled dimension's length with explicit pads (auto_pad NOTSET; VALID is no pads, floor mode), in floor or
    /// ceil mode; below 1 when the window does not fit.</summary>
    internal static int PoolOutputLength(int input, int kernel, int stride, int dilation, int padBegin, int padEnd, bool ceil)
    {
        long span = (long)(kernel - 1) * dilation + 1;
        double q = (double)((long)input + padBegin + padEnd - span) / stride;
        long len = (long)(ceil ? Math.Ceiling(q) : Math.Floor(q)) + 1;
        // A window that would start entirely inside the end padding is dropped (ceil mode).
        if (ceil && (len - 1) * stride >= (long)input + padBegin) len--;
        return (int)Math.Clamp(len, int.MinValue, int.MaxValue);
    }

    static Tensor?[] Pool(OpContext c, PoolKind kind)
    {
        var x = c.Input(0);
        var xs = x.Shape;
        int sd = xs.Length - 2;
        var k = c.Node.GetInts("kernel_shape")?.Select(v => (int)v).ToArray() ?? throw Invalid(c, "kernel_shape is missing");
        var strides = IntsAttr(c, "strides", sd, 1);
        var dil = IntsAttr(c, "dilations", sd, 1);
        bool ceil = c.Node.GetInt("ceil_mode", 0) != 0;
        bool includePad = c.Node.GetInt("count_include_pad", 0) != 0;
        double p = c.Node.GetInt("p", 2);
        var inSp = xs.Skip(2).ToArray();
        var (pb, pe) = Pads(c, inSp, k, strides, dil);
        var autoPad = c.Node.GetString("auto_pad", "NOTSET");
        var outSp = new int[sd];
        for (int i = 0; i < sd; i++)
        {
            if (autoPad is "SAME_UPPER" or "SAME_LOWER") outSp[i] = (inSp[i] + strides[i] - 1) / strides[i];
            else if (autoPad == "VALID") outSp[i] = PoolOutputLength(inSp[i], k[i], strides[i], dil[i], 0, 0, false);
            else outSp[i] = PoolOutputLength(inSp[i], k[i], strides[i], dil[i], pb[i], pe[i], ceil);
            // (SAME keeps an empty input empty; a window wider than the padded input is an error.)
            if (outSp[i] < 1 && !(autoPad is "SAME_UPPER" or "SAME_LOWER"))
                throw Invalid(c, $"pool window {string.Join("x", k)} does not fit the input [{string.Join(", ", xs)}] with pads [{string.Join(", ", pb.Concat(pe))}]");
        }
        int nc = xs[0] * xs[1];
        int inSize = inSp.Aggregate(1, (a, d) => a * d), outSize = outSp.Aggregate(1, (a, d) => a * d), kSize = k.Aggregate(1, (a, d) => a * d);
        bool colMajor = c.Node.GetInt("storage_order", 0) != 0;
        if (sd == 2 && x.DType == DType.Float32 && !c.WantsOutput(1))
        {
            // Float32 NCHW fast paths (no indices wanted): max pooling, and an average over whole planes.
            if (kind == PoolKind.Max)
            {
                var y = c.NewOutput([xs[0], xs[1], outSp[0], outSp[1]], DType.Float32);
                InferencePool.MaxPool2d(x, y, (k[0], k[1]), (strides[0], strides[1]), (pb[0], pb[1]), (dil[0], dil[1]));
                return One(y);
            }
            if (kind == PoolKind.Average && outSp[0] == 1 && outSp[1] == 1 && k[0] == inSp[0] && k[1] == inSp[1] && pb.All(v => v == 0) && pe.All(v => v == 0))
            {
                var y = c.NewOutput([xs[0], xs[1], 1, 1], DType.Float32);
                InferencePool.GlobalAveragePool2d(x, y);
                return One(y);
            }
        }
        var xv = x.ToDoubleArray();
        var o = new double[nc * outSize];
        var idx = new long[nc * outSize];
        var op = new int[sd];
        var kp = new int[sd];
        var pos = new int[sd];
        for (int b = 0; b < nc; b++)
            for (int oi = 0; oi < outSize; oi++)
            {
                Unravel(oi, outSp, op);
                double acc = kind == PoolKind.Max ? double.NegativeInfinity : 0;
                long arg = 0;
                int count = 0, padded = 0;
                for (int ki = 0; ki < kSize; ki++)
                {
                    Unravel(ki, k, kp);
                    bool inside = true, inPadded = true;
                    int flat = 0;
                    for (int d = 0; d < sd; d++)
                    {
                        pos[d] = op[d] * strides[d] + kp[d] * dil[d] - pb[d];
                        if (pos[d] < 0 || pos[d] >= inSp[d]) inside = false;
                        if (pos[d] < -pb[d] || pos[d] >= inSp[d] + pe[d]) inPadded = false;
                        flat = flat * inSp[d] + pos[d];
                    }
                    if (inPadded) padded++;
                    if (!inside) continue;
                    count++;
                    double v = xv[b * inSize + flat];
                    switch (kind)
                    {
                        case PoolKind.Max:
                            if (v > acc || double.IsNaN(v))
                            {
                                acc = v;
                                if (colMajor && sd == 2) arg = pos[0] + (long)pos[1] * inSp[0];
                                else arg = flat;
                                arg += (long)b * inSize;
                            }
                            break;
                        case PoolKind.Average: acc += v; break;
                        default: acc += Math.Pow(Math.Abs(v), p); break;
                    }
                }
                o[b * outSize + oi] = kind switch
                {
                    PoolKind.Max => acc,
                    PoolKind.Average => acc / (includePad ? padded : Math.Max(count, 1)),
                    _ => Math.Pow(acc, 1 / p),
                };
                idx[b * outSize + oi] = arg;
            }
        int[] shape = [xs[0], xs[1], .. outSp];
        return Outputs(c, FromDoubles(o, shape, x.DType), Tensor.FromArray(idx, idx.Length).Reshape(shape));
    }
}
