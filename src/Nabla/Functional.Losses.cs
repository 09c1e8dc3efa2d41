namespace Nabla;

/// <summary>How a loss combines per-element values.</summary>
public enum Reduction { Mean, Sum, None }

public static partial class Losses
{
    static Tensor Reduce(Tensor l, Reduction r) => r switch
    {
        Reduction.Mean => l.Mean(),
        Reduction.Sum => l.Sum(),
        _ => l,
    };

    static void SameShape(string op, Tensor input, Tensor target)
    {
        if (!ShapeUtil.Equal(input.shape, target.shape))
            throw new ShapeMismatchException($"{op}: input shape {ShapeUtil.Format(input.shape)} and target shape {ShapeUtil.Format(target.shape)} differ");
    }

    /// <summary>
    /// Cross entropy of logits [N, C] (or [N, C, d1, ...]) against class indices [N] (int64) or class
    /// probabilities with the logits' shape. Supports class weights, ignore_index and label smoothing, with
    /// PyTorch's definitions (a weighted mean divides by the summed weights of the non-ignored targets).
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor target, Tensor? weight = null, int ignoreIndex = -100,
        Reduction reduction = Reduction.Mean, double labelSmoothing = 0)
    {
        if (logits.Dim < 1) throw new ShapeMismatchException($"cross_entropy: input must have at least 1 dimension, got {ShapeUtil.Format(logits.shape)}");
        int classDim = logits.Dim == 1 ? 0 : 1;
        var logp = Functional.LogSoftmax(logits, classDim);
        int c = logits.shape[classDim];
        if (target.DType.IsFloatingPoint())
        {
            SameShape("cross_entropy", logits, target);
            var t = labelSmoothing > 0 ? target.Mul(1 - labelSmoothing).Add(labelSmoothing / c) : target;
            var wl = weight is null ? logp : logp.Mul(weight.Reshape(ClassShape(logits.Dim, c, classDim)));
            var per = wl.Mul(t).Sum(classDim).Neg();
            return reduction == Reduction.Mean ? per.Sum().Div(per.NumElements) : Reduce(per, reduction);
        }
        var nll = NllLoss(logp, target, weight, ignoreIndex, reduction);
        if (labelSmoothing <= 0) return nll;
        // Smoothing term: -sum_c w_c·logp_c / C per sample, ignoring the same samples.
        var wl2 = weight is null ? logp : logp.Mul(weight.Reshape(ClassShape(logits.Dim, c, classDim)));
        var smooth = wl2.Sum(classDim).Neg();
        var valid = target.Ne(ignoreIndex);
        smooth = Tensor.Where(valid, smooth, Tensor.ZerosLike(smooth));
        Tensor smoothRed;
        if (reduction == Reduction.Mean)
        {
            var denom = weight is null ? valid.To(logp.DType).Sum() : Tensor.Where(valid, weight.IndexSelect(0, Tensor.Where(valid, target, Tensor.ZerosLike(target)).Reshape(-1)).Reshape(target.shape), Tensor.Zeros(target.shape, logp.DType)).Sum();
            smoothRed = smooth.Sum().Div(denom);
        }
        else smoothRed = Reduce(smooth, reduction);
        return nll.Mul(1 - labelSmoothing).Add(smoothRed.Mul(labelSmoothing / c));
    }

    static int[] ClassShape(int rank, int c, int classDim)
    {
        var s = Enumerable.Repeat(1, rank).ToArray();
        s[classDim] = c;
        return s;
    }

    /// <summary>Negative log likelihood of log-probabilities [N, C, ...] at class indices [N, ...].</summary>
    public static Tensor NllLoss(Tensor logProbs, Tensor target, Tensor? weight = null, int ignoreIndex = -100, Reduction reduction = Reduction.Mean)
    {
        if (target.DType is not (DType.Int64 or DType.Int32))
            throw new DTypeException($"nll_loss: target must hold class indices (int64), got {target.DType.TorchName()}");
        int classDim = logProbs.Dim == 1 ? 0 : 1;
        int c = logProbs.shape[classDim];
        var expected = logProbs.shape.Where((_, i) => i != classDim).ToArray();
        if (!ShapeUtil.Equal(expected, target.shape))
            throw new ShapeMismatchException($"nll_loss: target shape {ShapeUtil.Format(target.shape)} does not match input {ShapeUtil.Format(logProbs.shape)} without its class dimension {classDim} ({ShapeUtil.Format(expected)})");
        var tv = target.To(DType.Int64).ToArray<long>();
        foreach (var t in tv)
            if (t != ignoreIndex && (t < 0 || t >= c))
                throw new IndexOutOfBoundsException($"nll_loss: target {t} is out of bounds for {c} classes");
        var valid = target.Ne(ignoreIndex);
        var safe = Tensor.Where(valid, target.To(DType.Int64), Tensor.Zeros(target.shape, DType.Int64));
        var picked = logProbs.Gather(classDim, safe.Unsqueeze(classDim)).Squeeze(classDim).Neg();
        var w = weight is null ? valid.To(logProbs.DType) : Tensor.Where(valid, weight.IndexSelect(0, safe.Reshape(-1)).Reshape(target.shape), Tensor.Zeros(target.shape, logProbs.DType));
        var per = picked.Mul(w);
        return reduction switch
        {
            Reduction.Mean => per.Sum().Div(w.Sum()),
            Reduction.Sum => per.Sum(),
            _ => per,
        };
    }

    public static Tensor MseLoss(Tensor input, Tensor target, Reduction reduction = Reduction.Mean)
    {
        SameShape("mse_loss", input, target);
        var d = input.Sub(target);
        return Reduce(d.Mul(d), reduction);
    }

    public static Tensor L1Loss(Tensor input, Tensor target, Reduction reduction = Reduction.Mean)
    {
        SameShape("l1_loss", input, target);
        return Reduce(input.Sub(target).Abs(), reduction);
    }

    /// <summary>0.5·d²/beta where |d| &lt; beta, |d| - 0.5·beta elsewhere.</summary>
    public static Tensor SmoothL1Loss(Tensor input, Tensor target, Reduction reduction = Reduction.Mean, double beta = 1.0)
    {
        SameShape("smooth_l1_loss", input, target);
        var d = input.Sub(target).Abs();
        if (beta == 0) return Reduce(d, reduction);
        return Reduce(Tensor.Where(d.Lt(beta), d.Mul(d).Mul(0.5 / beta), d.Sub(0.5 * beta)), reduction);
    }

    /// <summary>0.5·d² where |d| &lt; delta, delta·(|d| - 0.5·delta) elsewhere.</summary>
    public static Tensor HuberLoss(Tensor input, Tensor target, Reduction reduction = Reduction.Mean, double delta = 1.0)
    {
        SameShape("huber_loss", input, target);
        var d = input.Sub(target).Abs();
        return Reduce(Tensor.Where(d.Lt(delta), d.Mul(d).Mul(0.5), d.Sub(0.5 * delta).Mul(delta)), reduction);
    }

    /// <summary>Binary cross entropy of probabilities; the logs are clamped at -100 as PyTorch does.</summary>
    public static Tensor BinaryCrossEntropy(Tensor input, Tensor target, Tensor? weight = null, Reduction reduction = Reduction.Mean)
    {
        SameShape("binary_cross_entropy", input, target);
        var lo = input.Log().Clamp(min: -100);
        var l1 = input.Neg().Add(1.0).Log().Clamp(min: -100);
        var l = target.Mul(lo).Add(target.Neg().Add(1.0).Mul(l1)).Neg();
        if (weight is not null) l = l.Mul(weight);
        return Reduce(l, reduction);
    }

    /// <summary>Sigmoid + binary cross entropy in the stable form; posWeight scales the positive term per class.</summary>
    public static Tensor BinaryCrossEntropyWithLogits(Tensor input, Tensor target, Tensor? weight = null, Tensor? posWeight = null, Reduction reduction = Reduction.Mean)
    {
        SameShape("binary_cross_entropy_with_logits", input, target);
        // log(sigmoid(x)) = -softplus(-x); log(1 - sigmoid(x)) = -softplus(x)
        var logSig = input.Neg().Softplus().Neg();
        var logOneMinus = input.Softplus().Neg();
        var pos = target.Mul(logSig);
        if (posWeight is not null) pos = pos.Mul(posWeight);
        var l = pos.Add(target.Neg().Add(1.0).Mul(logOneMinus)).Neg();
        if (weight is not null) l = l.Mul(weight);
        return Reduce(l, reduction);
    }

    /// <summary>
    /// KL divergence with input as log-probabilities: target·(log target - input). "batchmean" (the
    /// mathematically correct mean) divides the sum by the batch size.
    /// </summary>
    public static Tensor KlDiv(Tensor input, Tensor target, string reduction = "mean", bool logTarget = false)
    {
        SameShape("kl_div", input, target);
        Tensor l;
        if (logTarget) l = target.Exp().Mul(target.Sub(input));
        else
        {
            var tlogt = Tensor.Where(target.Gt(0.0), target.Mul(Tensor.Where(target.Gt(0.0), target, Tensor.OnesLike(target)).Log()), Tensor.ZerosLike(target));
            l = tlogt.Sub(target.Mul(input));
        }
        return reduction switch
        {
            "mean" => l.Mean(),
            "sum" => l.Sum(),
            "batchmean" => l.Sum().Div(input.Dim > 0 ? input.shape[0] : 1),
            "none" => l,
            _ => throw new NablaException($"kl_div: reduction must be 'mean', 'sum', 'batchmean' or 'none', got '{reduction}'"),
        };
    }
}
