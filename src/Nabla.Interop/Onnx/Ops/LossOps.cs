using Nabla.Graph;
using static Nabla.Interop.Onnx.Ops.OpUtil;

namespace Nabla.Interop.Onnx.Ops;

/// <summary>NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, computed in double on a reference loop.</summary>
internal static class LossOps
{
    public static void Register(OnnxOps r)
    {
        r.Add("NegativeLogLikelihoodLoss", c =>
        {
            var x = c.Input(0);
            return One(Nll(c, x.ToDoubleArray(), x.Shape, x.DType, "mean"));
        }, since: 12);
        r.Add("SoftmaxCrossEntropyLoss", c =>
        {
            // scores (N, C, d1, ..., dk): log-softmax over C, then the NLL of the labels.
            var x = c.Input(0);
            if (x.Dim < 2) throw Invalid(c, $"scores [{string.Join(", ", x.Shape)}] need at least rank 2 (N, C)");
            var v = x.ToDoubleArray();
            int n = x.Size(0), classes = x.Size(1), inner = v.Length / Math.Max(n * classes, 1);
            var logp = new double[v.Length];
            for (int b = 0; b < n; b++)
                for (int i = 0; i < inner; i++)
                {
                    int at0 = b * classes * inner + i;
                    double max = double.NegativeInfinity;
                    for (int k = 0; k < classes; k++) max = Math.Max(max, v[at0 + k * inner]);
                    double sum = 0;
                    for (int k = 0; k < classes; k++) sum += Math.Exp(v[at0 + k * inner] - max);
                    double lse = max + Math.Log(sum);
                    for (int k = 0; k < classes; k++) logp[at0 + k * inner] = v[at0 + k * inner] - lse;
                }
            var loss = Nll(c, logp, x.Shape, x.DType, "mean");
            return Outputs(c, loss, c.WantsOutput(1) ? FromDoubles(logp, x.Shape, x.DType) : null);
        }, since: 12);
    }

    /// <summary>
    /// loss[n, d] = -logp[n, target[n, d], d] · weight[target]; 0 where target = ignore_index. Reduction none keeps
    /// (N, d1, ..., dk); sum adds; mean divides the sum by the total weight of the counted elements.
    /// </summary>
    /// <param name="logp">(N, C, d1, ..., dk) row-major</param>
    static Tensor Nll(OpContext c, double[] logp, int[] shape, DType dtype, string defaultReduction)
    {
        if (shape.Length < 2) throw Invalid(c, $"input [{string.Join(", ", shape)}] needs at least rank 2 (N, C)");
        var target = c.Input(1);
        int n = shape[0], classes = shape[1];
        var tshape = shape.Where((_, i) => i != 1).ToArray();
        if (!target.Shape.SequenceEqual(tshape))
            throw new ShapeMismatchException($"{c.Node.Describe()}: target [{string.Join(", ", target.Shape)}] does not match input [{string.Join(", ", shape)}] (expected [{string.Join(", ", tshape)}])");
        var labels = Longs(target);
        double[]? weight = c.OptionalInput(2)?.ToDoubleArray();
        if (weight is not null && weight.Length != classes) throw Invalid(c, $"weight has {weight.Length} elements, expected {classes} classes");
        long? ignore = c.Node.GetIntOrNull("ignore_index");
        string reduction = c.Node.GetString("reduction", defaultReduction);
        int inner = labels.Length / Math.Max(n, 1);
        var loss = new double[labels.Length];
        double weightSum = 0;
        for (int b = 0; b < n; b++)
            for (int i = 0; i < inner; i++)
            {
                int j = b * inner + i;
                long t = labels[j];
                if (ignore is { } ii && t == ii) continue;
                if (t < 0 || t >= classes) throw Invalid(c, $"target {t} at element {j} is outside [0, {classes})");
                double w = weight?[t] ?? 1;
                loss[j] = -logp[(b * classes + (int)t) * inner + i] * w;
                weightSum += w;
            }
        switch (reduction)
        {
            case "none": return FromDoubles(loss, tshape, dtype);
            case "sum": return FromDoubles([loss.Sum()], [], dtype);
            case "mean": return FromDoubles([loss.Sum() / weightSum], [], dtype);
            default: throw Unsupported(c, $"reduction '{reduction}'");
        }
    }
}
