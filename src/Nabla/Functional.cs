namespace Nabla;

/// <summary>
/// Stateless neural-network functions (torch.nn.functional). Everything here is composed from Tensor
/// primitives, so it needs no gradient rule of its own, except Unfold/Fold/Pad which are primitives.
/// </summary>
public static class Functional
{
    // ---------- activations and normalizers ----------

    public static Tensor Relu(Tensor x) => x.Relu();
    public static Tensor Sigmoid(Tensor x) => x.Sigmoid();
    public static Tensor Tanh(Tensor x) => x.Tanh();
    public static Tensor Gelu(Tensor x, string approximate = "none") => x.Gelu(approximate);
    public static Tensor Silu(Tensor x) => x.Silu();
    public static Tensor LeakyRelu(Tensor x, double negativeSlope = 0.01) => x.LeakyRelu(negativeSlope);
    public static Tensor Elu(Tensor x, double alpha = 1) => x.Elu(alpha);
    public static Tensor Softplus(Tensor x, double beta = 1, double threshold = 20) => x.Softplus(beta, threshold);

    public static Tensor Softmax(Tensor x, int dim)
    {
        var m = x.Max(dim, true).values.Detach();
        var e = x.Sub(m).Exp();
        return e.Div(e.Sum(dim, true));
    }

    public static Tensor LogSoftmax(Tensor x, int dim)
    {
        var m = x.Max(dim, true).values.Detach();
        var shifted = x.Sub(m);
        return shifted.Sub(shifted.Exp().Sum(dim, true).Log());
    }

    // ---------- linear, convolution, pooling ----------

    /// <summary>y = x·Wᵀ + b with W of shape [out, in] (PyTorch's layout).</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        if (x.Size(-1) != weight.Size(-1))
            throw new ShapeMismatchException($"linear: input features {x.Size(-1)} do not match weight in_features {weight.Size(-1)}; input {ShapeUtil.Format(x.shape)}, weight {ShapeUtil.Format(weight.shape)}");
        if (!x.DType.IsFloatingPoint() || !weight.DType.IsFloatingPoint())
            throw new DTypeException($"linear: needs floating point input and weight, got {x.DType.TorchName()} and {weight.DType.TorchName()}");
        var y = x.Matmul(weight.T);
        return bias is null ? y : y.Add(bias);
    }

    /// <summary>im2col as a differentiable primitive: [N, C, H, W] → [N, C·kh·kw, L].</summary>
    public static Tensor Unfold(Tensor x, (int h, int w) kernel, (int h, int w)? stride = null, (int h, int w)? padding = null, (int h, int w)? dilation = null)
    {
        if (x.Dim != 4) throw new ShapeMismatchException($"unfold: expects a 4-D input [N, C, H, W], got {ShapeUtil.Format(x.shape)}");
        var s = stride ?? (1, 1);
        var p = padding ?? (0, 0);
        var d = dilation ?? (1, 1);
        var xs = x.shape;
        var r = Cpu.Unfold(x, kernel.h, kernel.w, s.h, s.w, p.h, p.w, d.h, d.w);
        return Tensor.Record(r, "unfold", [x], g => [Fold(g, (xs[2], xs[3]), kernel, s, p, d)]);
    }

    /// <summary>im2col into [C·kh·kw, N·L] (batch inside the columns), so a convolution is one GEMM.</summary>
    internal static Tensor UnfoldBatchInner(Tensor x, (int h, int w) kernel, (int h, int w) s, (int h, int w) p, (int h, int w) d)
    {
        var xs = x.shape;
        var r = Cpu.Unfold(x, kernel.h, kernel.w, s.h, s.w, p.h, p.w, d.h, d.w, knl: true);
        return Tensor.Record(r, "unfold", [x], g => [FoldBatchInner(g, xs, kernel, s, p, d)]);
    }

    internal static Tensor FoldBatchInner(Tensor cols, int[] xs, (int h, int w) kernel, (int h, int w) s, (int h, int w) p, (int h, int w) d)
    {
        var r = Cpu.Fold(cols, xs[1], xs[2], xs[3], kernel.h, kernel.w, s.h, s.w, p.h, p.w, d.h, d.w, knl: true, n: xs[0]);
        return Tensor.Record(r, "fold", [cols], g => [UnfoldBatchInner(g, kernel, s, p, d)]);
    }

    /// <summary>col2im as a differentiable primitive: [N, C·kh·kw, L] → [N, C, H, W], summing overlaps.</summary>
    public static Tensor Fold(Tensor cols, (int h, int w) outputSize, (int h, int w) kernel, (int h, int w)? stride = null, (int h, int w)? padding = null, (int h, int w)? dilation = null)
    {
        if (cols.Dim != 3) throw new ShapeMismatchException($"fold: expects a 3-D input [N, C*kh*kw, L], got {ShapeUtil.Format(cols.shape)}");
        var s = stride ?? (1, 1);
        var p = padding ?? (0, 0);
        var d = dilation ?? (1, 1);
        int kk = kernel.h * kernel.w;
        if (cols.shape[1] % kk != 0)
            throw new ShapeMismatchException($"fold: dimension 1 of input {ShapeUtil.Format(cols.shape)} must be divisible by the kernel size {kernel.h}x{kernel.w}");
        var r = Cpu.Fold(cols, cols.shape[1] / kk, outputSize.h, outputSize.w, kernel.h, kernel.w, s.h, s.w, p.h, p.w, d.h, d.w);
        return Tensor.Record(r, "fold", [cols], g => [Unfold(g, kernel, s, p, d)]);
    }

    /// <summary>2-D convolution (cross-correlation, as PyTorch). weight [O, C/groups, kh, kw]; padding may be "same" or "valid".</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias = null, (int h, int w)? stride = null, (int h, int w)? padding = null,
        (int h, int w)? dilation = null, int groups = 1, string? paddingMode = null)
    {
        if (Graph.Tracer.Active is { } trace && x.Dim == 4) return Graph.Tracer.Conv2d(trace, x, weight, bias, stride ?? (1, 1), padding ?? (0, 0), dilation ?? (1, 1), groups, paddingMode);
        if (x.Dim != 4) throw new ShapeMismatchException($"conv2d: expects a 4-D input [N, C, H, W], got {ShapeUtil.Format(x.shape)}");
        if (weight.Dim != 4) throw new ShapeMismatchException($"conv2d: expects a 4-D weight [O, C/groups, kh, kw], got {ShapeUtil.Format(weight.shape)}");
        if (!x.DType.IsFloatingPoint() || !weight.DType.IsFloatingPoint())
            throw new DTypeException($"conv2d: needs floating point input and weight, got {x.DType.TorchName()} and {weight.DType.TorchName()}");
        int c = x.shape[1], o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3];
        if (groups < 1 || c % groups != 0 || o % groups != 0)
            throw new ShapeMismatchException($"conv2d: groups {groups} must divide input channels {c} and output channels {o}");
        if (weight.shape[1] * groups != c)
            throw new ShapeMismatchException($"conv2d: input {ShapeUtil.Format(x.shape)} has {c} channels but weight {ShapeUtil.Format(weight.shape)} with groups={groups} expects {weight.shape[1] * groups} (dimension 1)");
        var s = stride ?? (1, 1);
        var d = dilation ?? (1, 1);
        var p = padding ?? (0, 0);
        if (paddingMode == "same")
        {
            if (s != (1, 1)) throw new NablaException("conv2d: padding='same' is not supported for strided convolutions");
            int th = d.h * (kh - 1), tw = d.w * (kw - 1);
            if (th % 2 == 0 && tw % 2 == 0) p = (th / 2, tw / 2);
            else
            {
                x = Pad(x, [tw / 2, tw - tw / 2, th / 2, th - th / 2]);
                p = (0, 0);
            }
        }
        else if (paddingMode is not (null or "valid"))
            throw new NablaException($"conv2d: padding must be 'same', 'valid' or numbers, got '{paddingMode}'");
        int h = x.shape[2], w = x.shape[3];
        int oh = Cpu.ConvOut(h, kh, s.h, p.h, d.h), ow = Cpu.ConvOut(w, kw, s.w, p.w, d.w);
        if (oh <= 0 || ow <= 0)
            throw new ShapeMismatchException($"conv2d: kernel {kh}x{kw} (dilation {d.h}x{d.w}) is larger than the padded input {ShapeUtil.Format(x.shape)} with padding {p.h}x{p.w}");
        if (ConvTrain.Applies(x, weight, bias, groups)) return ConvTrain.Conv2d(x, weight, bias, s, p, d);
        return Conv2dComposite(x, weight, bias, s, p, d, groups);
    }

    /// <summary>conv2d written with differentiable primitives (unfold, matmul, views, add): the reference for <see cref="ConvTrain"/>.</summary>
    internal static Tensor Conv2dComposite(Tensor x, Tensor weight, Tensor? bias, (int h, int w) s, (int h, int w) p, (int h, int w) d, int groups)
    {
        int o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3];
        int oh = Cpu.ConvOut(x.shape[2], kh, s.h, p.h, d.h), ow = Cpu.ConvOut(x.shape[3], kw, s.w, p.w, d.w);
        Tensor y;
        if (groups == 1)
        {
            // One GEMM for the whole batch: [O, C·kh·kw] · [C·kh·kw, N·L] → [O, N·L], viewed back as [N, O, oh, ow].
            var cols = UnfoldBatchInner(x, (kh, kw), s, p, d);
            var y2 = weight.Reshape(o, -1).Matmul(cols);
            var yv = y2.Reshape(o, x.shape[0], oh, ow).Permute(1, 0, 2, 3);
            return bias is null ? yv.Contiguous() : yv.Add(bias.Reshape(1, o, 1, 1));
        }
        else
        {
            var xs = x.Chunk(groups, 1);
            var ws = weight.Chunk(groups, 0);
            var outs = new Tensor[groups];
            for (int gi = 0; gi < groups; gi++)
                outs[gi] = ws[gi].Reshape(o / groups, -1).Matmul(Unfold(xs[gi], (kh, kw), s, p, d));
            y = Tensor.Cat(outs, 1);
        }
        y = y.Reshape(x.shape[0], o, oh, ow);
        return bias is null ? y : y.Add(bias.Reshape(1, o, 1, 1));
    }

    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias, int stride, int padding = 0, int dilation = 1, int groups = 1) =>
        Conv2d(x, weight, bias, (stride, stride), (padding, padding), (dilation, dilation), groups);

    /// <summary>1-D convolution: x [N, C, L], weight [O, C/groups, k].</summary>
    public static Tensor Conv1d(Tensor x, Tensor weight, Tensor? bias = null, int stride = 1, int padding = 0, int dilation = 1, int groups = 1, string? paddingMode = null)
    {
        if (x.Dim != 3) throw new ShapeMismatchException($"conv1d: expects a 3-D input [N, C, L], got {ShapeUtil.Format(x.shape)}");
        if (weight.Dim != 3) throw new ShapeMismatchException($"conv1d: expects a 3-D weight [O, C/groups, k], got {ShapeUtil.Format(weight.shape)}");
        if (groups >= 1 && weight.shape[1] * groups != x.shape[1])
            throw new ShapeMismatchException($"conv1d: input {ShapeUtil.Format(x.shape)} has {x.shape[1]} channels but weight {ShapeUtil.Format(weight.shape)} with groups={groups} expects {weight.shape[1] * groups} (dimension 1)");
        var y = Conv2d(x.Unsqueeze(2), weight.Unsqueeze(2), bias, (1, stride), (0, padding), (1, dilation), groups, paddingMode);
        return y.Squeeze(2);
    }

    /// <summary>Transposed 2-D convolution. weight [C_in, C_out/groups, kh, kw] (PyTorch's layout).</summary>
    public static Tensor ConvTranspose2d(Tensor x, Tensor weight, Tensor? bias = null, (int h, int w)? stride = null, (int h, int w)? padding = null,
        (int h, int w)? outputPadding = null, int groups = 1, (int h, int w)? dilation = null)
    {
        if (Graph.Tracer.Active is { } trace && x.Dim == 4) return Graph.Tracer.ConvTranspose2d(trace, x, weight, bias, stride ?? (1, 1), padding ?? (0, 0), outputPadding ?? (0, 0), groups, dilation ?? (1, 1));
        if (x.Dim != 4) throw new ShapeMismatchException($"conv_transpose2d: expects a 4-D input [N, C, H, W], got {ShapeUtil.Format(x.shape)}");
        if (weight.Dim != 4) throw new ShapeMismatchException($"conv_transpose2d: expects a 4-D weight [C_in, C_out/groups, kh, kw], got {ShapeUtil.Format(weight.shape)}");
        int n = x.shape[0], cin = x.shape[1], h = x.shape[2], w = x.shape[3];
        if (weight.shape[0] != cin)
            throw new ShapeMismatchException($"conv_transpose2d: input {ShapeUtil.Format(x.shape)} has {cin} channels but weight {ShapeUtil.Format(weight.shape)} expects {weight.shape[0]} (dimension 0)");
        if (cin % groups != 0) throw new ShapeMismatchException($"conv_transpose2d: groups {groups} must divide input channels {cin}");
        int coutG = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3];
        var s = stride ?? (1, 1);
        var p = padding ?? (0, 0);
        var op = outputPadding ?? (0, 0);
        var d = dilation ?? (1, 1);
        if (op.h >= Math.Max(s.h, d.h) || op.w >= Math.Max(s.w, d.w))
            throw new NablaException($"conv_transpose2d: output_padding {op} must be smaller than stride or dilation");
        int ho = (h - 1) * s.h - 2 * p.h + d.h * (kh - 1) + op.h + 1;
        int wo = (w - 1) * s.w - 2 * p.w + d.w * (kw - 1) + op.w + 1;
        var xs = groups == 1 ? [x] : x.Chunk(groups, 1);
        var wsplit = groups == 1 ? [weight] : weight.Chunk(groups, 0);
        var outs = new Tensor[groups];
        for (int gi = 0; gi < groups; gi++)
        {
            int cg = cin / groups;
            var wm = wsplit[gi].Reshape(cg, coutG * kh * kw).T;            // [C_out·kh·kw, C_in/g]
            var cols = wm.Matmul(xs[gi].Reshape(n, cg, h * w));             // [N, C_out·kh·kw, H·W]
            outs[gi] = Fold(cols, (ho, wo), (kh, kw), s, p, d);
        }
        var y = groups == 1 ? outs[0] : Tensor.Cat(outs, 1);
        return bias is null ? y : y.Add(bias.Reshape(1, -1, 1, 1));
    }

    static int PoolOut(int size, int k, int s, int p, int d, bool ceil)
    {
        int num = size + 2 * p - d * (k - 1) - 1;
        int o = (ceil ? (num + s - 1) / s : num / s) + 1;
        // The last window must start inside the input or the left padding.
        if (ceil && (o - 1) * s >= size + p) o--;
        return o;
    }

    public static Tensor MaxPool2d(Tensor x, (int h, int w) kernel, (int h, int w)? stride = null, (int h, int w)? padding = null,
        (int h, int w)? dilation = null, bool ceilMode = false) =>
        Graph.Tracer.Active is { } trace && x.Dim == 4
            ? Graph.Tracer.MaxPool2d(trace, x, kernel, stride ?? kernel, padding ?? (0, 0), dilation ?? (1, 1), ceilMode)
            : MaxPool2dWithIndices(x, kernel, stride, padding, dilation, ceilMode).output;

    public static Tensor MaxPool2d(Tensor x, int kernel, int? stride = null, int padding = 0) =>
        MaxPool2d(x, (kernel, kernel), (stride ?? kernel, stride ?? kernel), (padding, padding));

    /// <summary>Max pooling that also returns the flat (H·W) index of each maximum, as return_indices=True does.</summary>
    public static (Tensor output, Tensor indices) MaxPool2dWithIndices(Tensor x, (int h, int w) kernel, (int h, int w)? stride = null,
        (int h, int w)? padding = null, (int h, int w)? dilation = null, bool ceilMode = false)
    {
        bool batched = x.Dim == 4;
        if (x.Dim == 3) x = x.Unsqueeze(0);
        if (x.Dim != 4) throw new ShapeMismatchException($"max_pool2d: expects a 3-D or 4-D input, got {ShapeUtil.Format(x.shape)}");
        var s = stride ?? kernel;
        var p = padding ?? (0, 0);
        var d = dilation ?? (1, 1);
        if (p.h * 2 > kernel.h || p.w * 2 > kernel.w)
            throw new NablaException($"max_pool2d: padding {p} should be at most half of the kernel size {kernel}");
        int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        int oh = PoolOut(h, kernel.h, s.h, p.h, d.h, ceilMode), ow = PoolOut(w, kernel.w, s.w, p.w, d.w, ceilMode);
        if (oh <= 0 || ow <= 0)
            throw new ShapeMismatchException($"max_pool2d: kernel {kernel} is larger than the input {ShapeUtil.Format(x.shape)} with padding {p}");
        var (y, ix) = Cpu.MaxPool(x.Detach(), kernel.h, kernel.w, s.h, s.w, p.h, p.w, d.h, d.w, oh, ow);
        y = Tensor.Record(y, "max_pool2d", [x], g => [MaxPoolBackward(g, ix, h, w)], ix);
        return batched ? (y, ix) : (y.Squeeze(0), ix.Squeeze(0));
    }

    // The gradient of max pooling (a scatter-add to the argmax positions) and its own gradient (a gather).
    static Tensor MaxPoolBackward(Tensor g, Tensor indices, int h, int w)
    {
        var r = Cpu.PlaneScatterAdd(g, indices, h, w);
        return Tensor.Record(r, "max_pool2d_backward", [g], gg => [MaxPoolGather(gg, indices, h, w)], indices);
    }

    static Tensor MaxPoolGather(Tensor x, Tensor indices, int h, int w)
    {
        var r = Cpu.PlaneGather(x, indices);
        return Tensor.Record(r, "max_pool2d_gather", [x], g => [MaxPoolBackward(g, indices, h, w)], indices);
    }

    /// <summary>Average pooling; zero padding counts toward the divisor (count_include_pad=True, PyTorch's default).</summary>
    public static Tensor AvgPool2d(Tensor x, (int h, int w) kernel, (int h, int w)? stride = null, (int h, int w)? padding = null)
    {
        if (Graph.Tracer.Active is { } trace && x.Dim == 4) return Graph.Tracer.AvgPool2d(trace, x, kernel, stride ?? kernel, padding ?? (0, 0));
        bool batched = x.Dim == 4;
        if (x.Dim == 3) x = x.Unsqueeze(0);
        if (x.Dim != 4) throw new ShapeMismatchException($"avg_pool2d: expects a 3-D or 4-D input, got {ShapeUtil.Format(x.shape)}");
        var s = stride ?? kernel;
        var p = padding ?? (0, 0);
        int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        int oh = Cpu.ConvOut(h, kernel.h, s.h, p.h, 1), ow = Cpu.ConvOut(w, kernel.w, s.w, p.w, 1);
        var cols = Unfold(x.Reshape(n * c, 1, h, w), kernel, s, p);     // [N·C, kh·kw, L]
        var y = cols.Mean(1).Reshape(n, c, oh, ow);
        return batched ? y : y.Squeeze(0);
    }

    public static Tensor AvgPool2d(Tensor x, int kernel, int? stride = null, int padding = 0) =>
        AvgPool2d(x, (kernel, kernel), (stride ?? kernel, stride ?? kernel), (padding, padding));

    /// <summary>
    /// Adaptive average pooling to a fixed output size: out = Pₕ·x·P_wᵀ with averaging matrices whose rows cover
    /// PyTorch's windows [floor(i·H/oh), ceil((i+1)·H/oh)).
    /// </summary>
    public static Tensor AdaptiveAvgPool2d(Tensor x, (int h, int w) output)
    {
        if (x.Dim is not (3 or 4)) throw new ShapeMismatchException($"adaptive_avg_pool2d: expects a 3-D or 4-D input, got {ShapeUtil.Format(x.shape)}");
        int h = x.Size(-2), w = x.Size(-1);
        var ph = AdaptiveMatrix(h, output.h, x.DType);
        var pw = AdaptiveMatrix(w, output.w, x.DType);
        return ph.Matmul(x).Matmul(pw.T);
    }

    static Tensor AdaptiveMatrix(int input, int output, DType dtype)
    {
        var m = new double[output * input];
        for (int i = 0; i < output; i++)
        {
            int start = i * input / output, end = ((i + 1) * input + output - 1) / output;
            for (int j = start; j < end; j++) m[i * input + j] = 1.0 / (end - start);
        }
        return Tensor.FromArray(m, output, input).To(dtype);
    }

    // ---------- normalization ----------

    public static Tensor LayerNorm(Tensor x, int[] normalizedShape, Tensor? weight = null, Tensor? bias = null, double eps = 1e-5)
    {
        int k = normalizedShape.Length;
        for (int i = 0; i < k; i++)
            if (x.Dim < k || x.shape[x.Dim - k + i] != normalizedShape[i])
                throw new ShapeMismatchException($"layer_norm: normalized_shape {ShapeUtil.Format(normalizedShape)} does not match the last dims of input {ShapeUtil.Format(x.shape)}");
        var dims = Enumerable.Range(x.Dim - k, k).ToArray();
        var mean = x.Mean(dims, true);
        var centered = x.Sub(mean);
        var var = centered.Mul(centered).Mean(dims, true);
        var y = centered.Mul(var.Add(eps).Rsqrt());
        if (weight is not null) y = y.Mul(weight);
        if (bias is not null) y = y.Add(bias);
        return y;
    }

    /// <summary>RMSNorm over the last dims: x / sqrt(mean(x²) + eps) · weight.</summary>
    public static Tensor RmsNorm(Tensor x, int[] normalizedShape, Tensor? weight = null, double eps = 1e-6)
    {
        var dims = Enumerable.Range(x.Dim - normalizedShape.Length, normalizedShape.Length).ToArray();
        var y = x.Mul(x.Mul(x).Mean(dims, true).Add(eps).Rsqrt());
        return weight is null ? y : y.Mul(weight);
    }

    /// <summary>
    /// Batch normalization over all dims but 1. In training, batch statistics normalize and the running
    /// statistics are updated in place (unbiased variance, as PyTorch); in eval the running statistics are used.
    /// </summary>
    public static Tensor BatchNorm(Tensor x, Tensor? runningMean, Tensor? runningVar, Tensor? weight = null, Tensor? bias = null,
        bool training = false, double momentum = 0.1, double eps = 1e-5)
    {
        if (x.Dim < 2) throw new ShapeMismatchException($"batch_norm: expects at least 2-D input [N, C, ...], got {ShapeUtil.Format(x.shape)}");
        int c = x.shape[1];
        var bshape = Enumerable.Repeat(1, x.Dim).ToArray();
        bshape[1] = c;
        var dims = Enumerable.Range(0, x.Dim).Where(i => i != 1).ToArray();
        Tensor y;
        if (training && x.DType is DType.Float32 or DType.Float64 && x.NumElements / Math.Max(c, 1) > 1)
            return BatchNormTrainFused(x, runningMean, runningVar, weight, bias, momentum, eps);
        if (training || runningMean is null || runningVar is null)
        {
            int count = x.NumElements / Math.Max(c, 1);
            if (training && count <= 1)
                throw new ShapeMismatchException($"batch_norm: expected more than 1 value per channel when training, got input {ShapeUtil.Format(x.shape)}");
            var mean = x.Mean(dims, true);
            var centered = x.Sub(mean);
            var var = centered.Mul(centered).Mean(dims, true);
            y = centered.Mul(var.Add(eps).Rsqrt());
            if (training && runningMean is not null && runningVar is not null)
            {
                using (GradMode.NoGrad())
                {
                    var m = mean.Detach().Reshape(c);
                    var v = var.Detach().Reshape(c).Mul((double)count / Math.Max(count - 1, 1));
                    runningMean.Copy_(runningMean.Mul(1 - momentum).Add(m.Mul(momentum)));
                    runningVar.Copy_(runningVar.Mul(1 - momentum).Add(v.Mul(momentum)));
                }
            }
        }
        else
        {
            y = x.Sub(runningMean.Reshape(bshape)).Mul(runningVar.Reshape(bshape).Add(eps).Rsqrt());
        }
        if (weight is not null) y = y.Mul(weight.Reshape(bshape));
        if (bias is not null) y = y.Add(bias.Reshape(bshape));
        return y;
    }

    /// <summary>
    /// Training-mode batch norm in fused kernels. Its backward uses the fused gradient kernel, or, when a graph of the
    /// gradient is being recorded (create_graph), the same formula written with differentiable ops.
    /// </summary>
    static Tensor BatchNormTrainFused(Tensor x, Tensor? runningMean, Tensor? runningVar, Tensor? weight, Tensor? bias, double momentum, double eps)
    {
        int c = x.shape[1], count = x.NumElements / c;
        var (y, mean, invstd, var) = Cpu.BatchNormTrain(x.Detach(), weight?.Detach(), bias?.Detach(), eps);
        if (runningMean is not null && runningVar is not null)
        {
            using (GradMode.NoGrad())
            {
                var m = Tensor.FromArray(mean).To(runningMean.DType);
                var v = Tensor.FromArray(var).Mul((double)count / Math.Max(count - 1, 1)).To(runningVar.DType);
                runningMean.Copy_(runningMean.Mul(1 - momentum).Add(m.Mul(momentum)));
                runningVar.Copy_(runningVar.Mul(1 - momentum).Add(v.Mul(momentum)));
            }
        }
        var inputs = new List<Tensor> { x };
        if (weight is not null) inputs.Add(weight);
        if (bias is not null) inputs.Add(bias);
        var bshape = Enumerable.Repeat(1, x.Dim).ToArray();
        bshape[1] = c;
        var dims = Enumerable.Range(0, x.Dim).Where(i => i != 1).ToArray();
        return Tensor.Record(y, "batch_norm", inputs.ToArray(), g =>
        {
            Tensor gx, gw, gb;
            if (!GradMode.IsEnabled) (gx, gw, gb) = Cpu.BatchNormBackward(g, x.Detach(), mean, invstd, weight?.Detach());
            else
            {
                var mu = x.Mean(dims, true);
                var xc = x.Sub(mu);
                var inv = xc.Mul(xc).Mean(dims, true).Add(eps).Rsqrt();
                var xhat = xc.Mul(inv);
                gw = g.Mul(xhat).Sum(dims);
                gb = g.Sum(dims);
                var gxhat = weight is null ? g : g.Mul(weight.Reshape(bshape));
                gx = gxhat.Mul(count).Sub(gxhat.Sum(dims, true)).Sub(xhat.Mul(gxhat.Mul(xhat).Sum(dims, true))).Mul(inv.Div(count));
            }
            var r = new List<Tensor?> { gx };
            if (weight is not null) r.Add(gw);
            if (bias is not null) r.Add(gb);
            return r.ToArray();
        }, x);
    }

    public static Tensor GroupNorm(Tensor x, int numGroups, Tensor? weight = null, Tensor? bias = null, double eps = 1e-5)
    {
        int n = x.shape[0], c = x.shape[1];
        if (c % numGroups != 0) throw new ShapeMismatchException($"group_norm: {c} channels are not divisible into {numGroups} groups (input {ShapeUtil.Format(x.shape)})");
        var g = x.Reshape(n, numGroups, -1);
        var mean = g.Mean(2, true);
        var centered = g.Sub(mean);
        var var = centered.Mul(centered).Mean(2, true);
        var y = centered.Mul(var.Add(eps).Rsqrt()).Reshape(x.shape);
        var bshape = Enumerable.Repeat(1, x.Dim).ToArray();
        bshape[1] = c;
        if (weight is not null) y = y.Mul(weight.Reshape(bshape));
        if (bias is not null) y = y.Add(bias.Reshape(bshape));
        return y;
    }

    // ---------- regularization, embedding, padding, resizing ----------

    /// <summary>Zeroes elements with probability p and scales the rest by 1/(1-p) in training; identity otherwise.</summary>
    public static Tensor Dropout(Tensor x, double p = 0.5, bool training = true, Generator? generator = null)
    {
        if (p < 0 || p > 1) throw new NablaException($"dropout: probability has to be between 0 and 1, but got {p}");
        if (!training || p == 0) return x;
        if (p == 1) return x.Mul(0.0);
        var mask = x.DType == DType.Float32 ? Tensor.Bernoulli(x.shape, 1 - p, generator) : Tensor.Full(x.shape, 1 - p, x.DType).Bernoulli(generator);
        return x.Mul(mask).Div(1 - p);
    }

    public static Tensor Embedding(Tensor indices, Tensor weight, int? paddingIdx = null)
    {
        if (Graph.Tracer.Active is { } trace) return Graph.Tracer.Embedding(trace, indices, weight, paddingIdx);
        if (weight.Dim != 2) throw new ShapeMismatchException($"embedding: weight must be 2-D [num_embeddings, dim], got {ShapeUtil.Format(weight.shape)}");
        var flat = indices.Reshape(-1);
        var rows = weight.IndexSelect(0, flat);
        if (paddingIdx is int pad)
        {
            // NOTE: the padding row gets no gradient, as in PyTorch.
            var keep = flat.Ne(pad).To(weight.DType).Unsqueeze(1);
            rows = Tensor.Where(keep.Ne(0.0), rows, rows.Detach());
        }
        return rows.Reshape(indices.shape.Concat(new[] { weight.shape[1] }).ToArray());
    }

    /// <summary>
    /// Pads the last dims: <paramref name="pads"/> = (left, right) for the last dim, then the one before, and so on.
    /// Modes: "constant" (with value), "reflect", "replicate". Negative constant pads crop.
    /// </summary>
    public static Tensor Pad(Tensor x, int[] pads, string mode = "constant", double value = 0)
    {
        if (pads.Length % 2 != 0 || pads.Length / 2 > x.Dim)
            throw new ShapeMismatchException($"pad: padding length {pads.Length} must be even and at most twice the rank of input {ShapeUtil.Format(x.shape)}");
        if (Graph.Tracer.Active is { } trace) return Graph.Tracer.Pad(trace, x, pads, mode, value);
        if (mode == "constant") return PadConstant(x, pads, value);
        if (mode is not ("reflect" or "replicate")) throw new NablaException($"pad: mode must be 'constant', 'reflect' or 'replicate', got '{mode}'");
        var r = x;
        for (int i = 0; i < pads.Length / 2; i++)
        {
            int d = x.Dim - 1 - i, left = pads[2 * i], right = pads[2 * i + 1], n = x.shape[d];
            if (left == 0 && right == 0) continue;
            if (mode == "reflect" && (left >= n || right >= n))
                throw new ShapeMismatchException($"pad: reflect padding ({left}, {right}) must be smaller than the input size {n} at dimension {d}");
            var idx = new long[left + n + right];
            for (int j = 0; j < idx.Length; j++)
            {
                int src = j - left;
                idx[j] = mode == "replicate" ? Math.Clamp(src, 0, n - 1) : src < 0 ? -src : src >= n ? 2 * (n - 1) - src : src;
            }
            r = r.IndexSelect(d, Tensor.FromArray(idx));
        }
        return r;
    }

    static Tensor PadConstant(Tensor x, int[] pads, double value)
    {
        var outShape = (int[])x.shape.Clone();
        var starts = new int[x.Dim];
        var src = x;
        for (int i = 0; i < pads.Length / 2; i++)
        {
            int d = x.Dim - 1 - i;
            int left = pads[2 * i], right = pads[2 * i + 1];
            // Negative pads crop the input first.
            if (left < 0) { src = src.Slice(d, -left, src.shape[d]); left = 0; }
            if (right < 0) { src = src.Slice(d, 0, src.shape[d] + right); right = 0; }
            outShape[d] = src.shape[d] + left + right;
            starts[d] = left;
        }
        var r = Tensor.Full(outShape, value, x.DType);
        int off = 0;
        for (int d = 0; d < x.Dim; d++) off += starts[d] * r.strides[d];
        new Tensor(r.storage, (int[])src.shape.Clone(), (int[])r.strides.Clone(), off).AssignFrom(src);
        var srcShape = src.shape;
        return Tensor.Record(r, "constant_pad", [src], g =>
        {
            var gi = g;
            for (int d = 0; d < srcShape.Length; d++)
                if (starts[d] != 0 || srcShape[d] != g.shape[d]) gi = gi.Slice(d, starts[d], starts[d] + srcShape[d]);
            return [gi];
        });
    }

    /// <summary>Resizes the last two dims of [N, C, H, W] by "nearest" or "bilinear" (align_corners as PyTorch).</summary>
    public static Tensor Interpolate(Tensor x, (int h, int w)? size = null, double? scaleFactor = null, string mode = "nearest", bool alignCorners = false)
    {
        if (x.Dim != 4) throw new ShapeMismatchException($"interpolate: expects a 4-D input [N, C, H, W], got {ShapeUtil.Format(x.shape)}");
        int h = x.shape[2], w = x.shape[3];
        var (oh, ow) = size ?? (scaleFactor is double sf ? ((int)Math.Floor(h * sf), (int)Math.Floor(w * sf)) : throw new NablaException("interpolate: either size or scaleFactor must be given"));
        double sh = scaleFactor is double f1 && size is null ? 1 / f1 : (double)h / oh;
        double sw = scaleFactor is double f2 && size is null ? 1 / f2 : (double)w / ow;
        if (mode == "nearest")
        {
            var ih = Enumerable.Range(0, oh).Select(i => (long)Math.Min((int)Math.Floor(i * sh), h - 1)).ToArray();
            var iw = Enumerable.Range(0, ow).Select(i => (long)Math.Min((int)Math.Floor(i * sw), w - 1)).ToArray();
            return x.IndexSelect(2, Tensor.FromArray(ih)).IndexSelect(3, Tensor.FromArray(iw));
        }
        if (mode != "bilinear") throw new NablaException($"interpolate: mode must be 'nearest' or 'bilinear', got '{mode}'");
        var y = LinearResize(x, 2, h, oh, sh, alignCorners);
        return LinearResize(y, 3, w, ow, sw, alignCorners);
    }

    static Tensor LinearResize(Tensor x, int dim, int input, int output, double scale, bool alignCorners)
    {
        var i0 = new long[output];
        var i1 = new long[output];
        var lam = new double[output];
        for (int i = 0; i < output; i++)
        {
            double src = alignCorners ? (output > 1 ? i * (double)(input - 1) / (output - 1) : 0) : Math.Max((i + 0.5) * scale - 0.5, 0);
            int lo = Math.Min((int)Math.Floor(src), input - 1);
            i0[i] = lo;
            i1[i] = Math.Min(lo + 1, input - 1);
            lam[i] = src - lo;
        }
        var shape = Enumerable.Repeat(1, x.Dim).ToArray();
        shape[dim] = output;
        var l = Tensor.FromArray(lam).To(x.DType).Reshape(shape);
        var a = x.IndexSelect(dim, Tensor.FromArray(i0));
        var b = x.IndexSelect(dim, Tensor.FromArray(i1));
        return a.Add(b.Sub(a).Mul(l));
    }
}
