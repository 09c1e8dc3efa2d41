using Xunit;
using static Nabla.Tests.GradCheck;
using F = Nabla.Functional;

namespace Nabla.Tests;

/// <summary>Float64 gradient checks of the functional ops (conv, pooling, norms, padding, resizing, losses) and second derivatives.</summary>
public class GradCheckFunctionalTests
{
    [Fact]
    public void Conv2d()
    {
        var gen = new Generator(21);
        var rng = new Random(21);
        for (int t = 0; t < 3; t++)
        {
            int n = rng.Next(1, 3), h = rng.Next(4, 7), w = rng.Next(4, 7), k = rng.Next(1, 4);
            Check($"conv2d k{k}", xs => F.Conv2d(xs[0], xs[1], xs[2]), [Randn(gen, n, 2, h, w), Randn(gen, 3, 2, k, k), Randn(gen, 3)], gen);
        }
        Check("conv2d stride/padding", xs => F.Conv2d(xs[0], xs[1], null, (2, 1), (1, 2)), [Randn(gen, 2, 2, 5, 4), Randn(gen, 3, 2, 3, 2)], gen);
        Check("conv2d dilation", xs => F.Conv2d(xs[0], xs[1], xs[2], (1, 1), (1, 1), (2, 2)), [Randn(gen, 1, 2, 6, 6), Randn(gen, 2, 2, 3, 3), Randn(gen, 2)], gen);
        Check("conv2d groups", xs => F.Conv2d(xs[0], xs[1], xs[2], 1, 1, 1, groups: 2), [Randn(gen, 2, 4, 4, 4), Randn(gen, 6, 2, 3, 3), Randn(gen, 6)], gen);
        Check("conv2d depthwise strided", xs => F.Conv2d(xs[0], xs[1], null, 2, 1, 1, groups: 3), [Randn(gen, 1, 3, 5, 5), Randn(gen, 3, 1, 3, 3)], gen);
        Check("conv2d same", xs => F.Conv2d(xs[0], xs[1], null, paddingMode: "same"), [Randn(gen, 1, 2, 4, 5), Randn(gen, 2, 2, 2, 3)], gen);
        Check("conv2d on permuted input", xs => F.Conv2d(xs[0].Permute(0, 3, 1, 2), xs[1]), [Randn(gen, 1, 5, 4, 2), Randn(gen, 3, 2, 2, 2)], gen);
    }

    [Fact]
    public void Conv1dAndTransposed()
    {
        var gen = new Generator(22);
        Check("conv1d", xs => F.Conv1d(xs[0], xs[1], xs[2], stride: 2, padding: 1, dilation: 1), [Randn(gen, 2, 3, 7), Randn(gen, 4, 3, 3), Randn(gen, 4)], gen);
        Check("conv1d dilation groups", xs => F.Conv1d(xs[0], xs[1], null, 1, 2, 2, groups: 2), [Randn(gen, 1, 4, 6), Randn(gen, 2, 2, 3)], gen);
        Check("conv_transpose2d", xs => F.ConvTranspose2d(xs[0], xs[1], xs[2]), [Randn(gen, 2, 3, 3, 3), Randn(gen, 3, 2, 2, 2), Randn(gen, 2)], gen);
        Check("conv_transpose2d stride/pad/outpad", xs => F.ConvTranspose2d(xs[0], xs[1], null, (2, 2), (1, 0), (1, 1)),
            [Randn(gen, 1, 2, 3, 4), Randn(gen, 2, 3, 3, 2)], gen);
        Check("conv_transpose2d groups dilation", xs => F.ConvTranspose2d(xs[0], xs[1], null, (1, 2), (0, 1), null, groups: 2, dilation: (2, 1)),
            [Randn(gen, 1, 4, 3, 3), Randn(gen, 4, 1, 2, 3)], gen);
    }

    [Fact]
    public void Pooling()
    {
        var gen = new Generator(23);
        Check("max_pool2d", xs => F.MaxPool2d(xs[0], 2), [Randn(gen, 2, 2, 4, 5)], gen);
        Check("max_pool2d stride/pad", xs => F.MaxPool2d(xs[0], (3, 3), (2, 2), (1, 1)), [Randn(gen, 1, 2, 5, 6)], gen);
        Check("max_pool2d dilation ceil", xs => F.MaxPool2d(xs[0], (2, 2), (2, 2), (0, 0), (2, 1), ceilMode: true), [Randn(gen, 1, 1, 7, 6)], gen);
        Check("max_pool2d 3-D input", xs => F.MaxPool2d(xs[0], 2, 1), [Randn(gen, 2, 3, 3)], gen);
        Check("avg_pool2d", xs => F.AvgPool2d(xs[0], 2), [Randn(gen, 2, 2, 4, 5)], gen);
        Check("avg_pool2d stride/pad", xs => F.AvgPool2d(xs[0], (3, 2), (2, 1), (1, 1)), [Randn(gen, 1, 2, 5, 4)], gen);
        Check("adaptive_avg_pool2d", xs => F.AdaptiveAvgPool2d(xs[0], (2, 3)), [Randn(gen, 2, 2, 5, 7)], gen);
        Check("adaptive_avg_pool2d to 1x1", xs => F.AdaptiveAvgPool2d(xs[0], (1, 1)), [Randn(gen, 1, 3, 4, 4)], gen);
    }

    [Fact]
    public void Normalization()
    {
        var gen = new Generator(24);
        Check("layer_norm", xs => F.LayerNorm(xs[0], [5], xs[1], xs[2]), [Randn(gen, 3, 5), Randn(gen, 5), Randn(gen, 5)], gen);
        Check("layer_norm 2 dims", xs => F.LayerNorm(xs[0], [3, 4]), [Randn(gen, 2, 3, 4)], gen);
        Check("rms_norm", xs => F.RmsNorm(xs[0], [4], xs[1]), [Randn(gen, 3, 4), Randn(gen, 4)], gen);
        Check("batch_norm training", xs => F.BatchNorm(xs[0], null, null, xs[1], xs[2], training: true), [Randn(gen, 4, 3, 2), Randn(gen, 3), Randn(gen, 3)], gen);
        var rm = Randn(gen, 3);
        var rv = Uniform(gen, [3], 0.5, 2);
        Check("batch_norm eval", xs => F.BatchNorm(xs[0], rm, rv, xs[1], xs[2], training: false), [Randn(gen, 2, 3, 2, 2), Randn(gen, 3), Randn(gen, 3)], gen);
        Check("group_norm", xs => F.GroupNorm(xs[0], 2, xs[1], xs[2]), [Randn(gen, 2, 4, 3), Randn(gen, 4), Randn(gen, 4)], gen);
        Check("softmax", xs => F.Softmax(xs[0], 1), [Randn(gen, 3, 4)], gen);
        Check("softmax dim 0 transposed", xs => F.Softmax(xs[0].T, 0), [Randn(gen, 3, 4)], gen);
        Check("log_softmax", xs => F.LogSoftmax(xs[0], -1), [Randn(gen, 2, 3, 4)], gen);
        Check("linear", xs => F.Linear(xs[0], xs[1], xs[2]), [Randn(gen, 2, 3, 4), Randn(gen, 5, 4), Randn(gen, 5)], gen);
    }

    [Fact]
    public void PadInterpolateEmbedding()
    {
        var gen = new Generator(25);
        Check("pad constant", xs => F.Pad(xs[0], [1, 2, 0, 1], value: 0.5), [Randn(gen, 2, 3, 4)], gen);
        Check("pad constant crop", xs => F.Pad(xs[0], [-1, 2]), [Randn(gen, 3, 4)], gen);
        Check("pad reflect", xs => F.Pad(xs[0], [2, 1, 1, 2], "reflect"), [Randn(gen, 1, 2, 4, 3)], gen);
        Check("pad replicate", xs => F.Pad(xs[0], [3, 1, 0, 2], "replicate"), [Randn(gen, 1, 2, 3, 3)], gen);
        Check("pad on transposed", xs => F.Pad(xs[0].T, [1, 1], "reflect"), [Randn(gen, 4, 3)], gen);
        Check("interpolate nearest up", xs => F.Interpolate(xs[0], scaleFactor: 2), [Randn(gen, 1, 2, 3, 2)], gen);
        Check("interpolate nearest size", xs => F.Interpolate(xs[0], size: (5, 3)), [Randn(gen, 2, 1, 3, 4)], gen);
        Check("interpolate bilinear", xs => F.Interpolate(xs[0], size: (5, 7), mode: "bilinear"), [Randn(gen, 1, 2, 3, 4)], gen);
        Check("interpolate bilinear down", xs => F.Interpolate(xs[0], size: (2, 3), mode: "bilinear"), [Randn(gen, 1, 1, 5, 5)], gen);
        Check("interpolate bilinear align", xs => F.Interpolate(xs[0], size: (4, 5), mode: "bilinear", alignCorners: true), [Randn(gen, 1, 2, 3, 3)], gen);
        var idx = Tensor.FromArray(new long[] { 0, 3, 3, 1, 4, 0 }, 2, 3);
        Check("embedding", xs => F.Embedding(idx, xs[0]), [Randn(gen, 5, 3)], gen);
        // padding_idx: the padding row gets no gradient (PyTorch's definition), so it is held constant here and checked to be zero.
        var padRow = Randn(gen, 1, 3);
        Check("embedding padding_idx", xs => F.Embedding(idx, Tensor.Cat([xs[0].Slice(0, 0, 3), padRow, xs[0].Slice(0, 3, 4)], 0), paddingIdx: 3),
            [Randn(gen, 4, 3)], gen);
        var table = Randn(gen, 5, 3).RequiresGrad_();
        F.Embedding(idx, table, paddingIdx: 3).Sum().Backward();
        Assert.Equal(new double[3], table.Grad!.Select(0, 3).ToArray<double>());
        Assert.Equal(new double[] { 2, 2, 2 }, table.Grad!.Select(0, 0).ToArray<double>());
        Check("unfold/fold", xs => F.Fold(F.Unfold(xs[0], (2, 2), (1, 1), (1, 0)).Exp(), (3, 4), (2, 2), (1, 1), (1, 0)), [Randn(gen, 1, 2, 3, 4)], gen);
        Check("dropout eval", xs => F.Dropout(xs[0], 0.5, training: false), [Randn(gen, 3)], gen);
    }

    [Fact]
    public void Losses_()
    {
        var gen = new Generator(26);
        var target = Tensor.FromArray(new long[] { 2, 0, 3, 1 });
        Check("cross_entropy", xs => Losses.CrossEntropy(xs[0], target), [Randn(gen, 4, 5)], gen);
        Check("cross_entropy sum", xs => Losses.CrossEntropy(xs[0], target, reduction: Reduction.Sum), [Randn(gen, 4, 5)], gen);
        Check("cross_entropy none", xs => Losses.CrossEntropy(xs[0], target, reduction: Reduction.None), [Randn(gen, 4, 5)], gen);
        var w = Uniform(gen, [5], 0.5, 2);
        var ignored = Tensor.FromArray(new long[] { 2, -100, 3, 1 });
        Check("cross_entropy weight ignore", xs => Losses.CrossEntropy(xs[0], ignored, w), [Randn(gen, 4, 5)], gen);
        Check("cross_entropy smoothing", xs => Losses.CrossEntropy(xs[0], ignored, w, labelSmoothing: 0.2), [Randn(gen, 4, 5)], gen);
        Check("cross_entropy smoothing unweighted", xs => Losses.CrossEntropy(xs[0], target, labelSmoothing: 0.1), [Randn(gen, 4, 5)], gen);
        var probs = F.Softmax(Randn(gen, 4, 5), 1);
        Check("cross_entropy probabilities", xs => Losses.CrossEntropy(xs[0], probs, labelSmoothing: 0.1), [Randn(gen, 4, 5)], gen);
        Check("cross_entropy spatial", xs => Losses.CrossEntropy(xs[0], Tensor.FromArray(new long[] { 0, 2, 1, 1, 2, 0 }, 2, 3)), [Randn(gen, 2, 3, 3)], gen);
        Check("nll_loss", xs => Losses.NllLoss(F.LogSoftmax(xs[0], 1), ignored, w), [Randn(gen, 4, 5)], gen);
        var y = Randn(gen, 3, 4);
        Check("mse", xs => Losses.MseLoss(xs[0], xs[1]), [Randn(gen, 3, 4), y], gen);
        Check("l1", xs => Losses.L1Loss(xs[0], y), [y.Add(AwayFromZero(gen, [3, 4]))], gen);
        Check("smooth_l1", xs => Losses.SmoothL1Loss(xs[0], y, beta: 0.5), [y.Add(AwayFromZero(gen, [3, 4], 0.05))], gen);
        Check("huber", xs => Losses.HuberLoss(xs[0], y, Reduction.Sum, 0.7), [y.Add(AwayFromZero(gen, [3, 4], 0.05))], gen);
        var p01 = Tensor.Rand([3, 4], DType.Float64, gen);
        Check("bce", xs => Losses.BinaryCrossEntropy(xs[0], p01), [Uniform(gen, [3, 4], 0.05, 0.95)], gen);
        Check("bce weight", xs => Losses.BinaryCrossEntropy(xs[0], p01, xs[1]), [Uniform(gen, [3, 4], 0.05, 0.95), Randn(gen, 4)], gen);
        Check("bce_with_logits", xs => Losses.BinaryCrossEntropyWithLogits(xs[0], p01, posWeight: xs[1]), [Randn(gen, 3, 4), Uniform(gen, [4], 0.5, 2)], gen);
        Check("bce_with_logits target grad", xs => Losses.BinaryCrossEntropyWithLogits(xs[1], xs[0]), [p01, Randn(gen, 3, 4)], gen);
        var logq = F.LogSoftmax(Randn(gen, 3, 4), 1);
        Check("kl_div", xs => Losses.KlDiv(xs[0], F.Softmax(xs[1], 1), "batchmean"), [logq, Randn(gen, 3, 4)], gen);
        Check("kl_div log_target", xs => Losses.KlDiv(xs[0], xs[1], "sum", logTarget: true), [logq, Randn(gen, 3, 4)], gen);
    }

    // ---------- second derivatives ----------

    static readonly Dictionary<string, (Func<Generator, int[], Tensor> make, Func<Tensor, Tensor> op)> SecondOrderUnary = new()
    {
        ["exp"] = (Randn, x => x.Exp()),
        ["log"] = ((g, s) => Uniform(g, s, 0.3, 3), x => x.Log()),
        ["log1p"] = ((g, s) => Uniform(g, s, -0.5, 3), x => x.Log1p()),
        ["expm1"] = (Randn, x => x.Expm1()),
        ["sqrt"] = ((g, s) => Uniform(g, s, 0.3, 3), x => x.Sqrt()),
        ["rsqrt"] = ((g, s) => Uniform(g, s, 0.3, 3), x => x.Rsqrt()),
        ["abs"] = ((g, s) => AwayFromZero(g, s), x => x.Abs().Mul(x)),
        ["sin"] = (Randn, x => x.Sin()),
        ["cos"] = (Randn, x => x.Cos()),
        ["tanh"] = (Randn, x => x.Tanh()),
        ["sigmoid"] = (Randn, x => x.Sigmoid()),
        ["relu"] = ((g, s) => AwayFromZero(g, s), x => x.Relu().Mul(x)),
        ["erf"] = (Randn, x => x.Erf()),
        ["gelu"] = (Randn, x => x.Gelu()),
        ["gelu_tanh"] = (Randn, x => x.Gelu("tanh")),
        ["silu"] = (Randn, x => x.Silu()),
        ["softplus"] = (Randn, x => x.Softplus()),
        ["elu"] = ((g, s) => AwayFromZero(g, s), x => x.Elu()),
        ["leaky_relu"] = ((g, s) => AwayFromZero(g, s), x => x.LeakyRelu(0.1).Square()),
        ["clamp"] = ((g, s) => AwayFromZero(g, s, 0.05), x => x.Clamp(-0.5, 0.5).Mul(x)),
        ["pow_scalar"] = ((g, s) => Uniform(g, s, 0.3, 2), x => x.Pow(3.5)),
        ["reciprocal"] = ((g, s) => AwayFromZero(g, s, 0.5), x => x.Reciprocal()),
    };

    public static TheoryData<string> SecondOrderUnaryNames => new(SecondOrderUnary.Keys);

    [Theory, MemberData(nameof(SecondOrderUnaryNames))]
    public void SecondOrderElementwiseUnary(string name)
    {
        var (make, op) = SecondOrderUnary[name];
        var gen = new Generator(27);
        CheckSecondOrder(name, xs => op(xs[0]), [make(gen, [2, 3])], gen);
    }

    [Fact]
    public void SecondOrderElementwiseBinary()
    {
        var gen = new Generator(28);
        CheckSecondOrder("add", xs => xs[0].Add(xs[1]).Square(), [Randn(gen, 2, 3), Randn(gen, 3)], gen);
        CheckSecondOrder("sub", xs => xs[0].Sub(xs[1]).Exp(), [Randn(gen, 2, 3), Randn(gen, 2, 1)], gen);
        CheckSecondOrder("mul", xs => xs[0].Mul(xs[1]), [Randn(gen, 2, 3), Randn(gen, 3)], gen);
        CheckSecondOrder("div", xs => xs[0].Div(xs[1]), [Randn(gen, 2, 3), AwayFromZero(gen, [2, 3], 0.5)], gen);
        CheckSecondOrder("pow", xs => xs[0].Pow(xs[1]), [Uniform(gen, [2, 3], 0.3, 2), Randn(gen, 2, 3)], gen);
        CheckSecondOrder("maximum", xs => xs[0].Maximum(xs[1]).Square(), [Randn(gen, 2, 3), Randn(gen, 2, 3)], gen);
        CheckSecondOrder("minimum", xs => xs[0].Minimum(xs[1]).Exp(), [Randn(gen, 2, 3), Randn(gen, 3)], gen);
        CheckSecondOrder("where", xs => Tensor.Where(xs[0].Detach().Gt(0.0), xs[0].Square(), xs[1].Exp()), [Randn(gen, 2, 3), Randn(gen, 2, 3)], gen);
    }

    [Fact]
    public void SecondOrderMatmulConvSoftmaxNorms()
    {
        var gen = new Generator(29);
        CheckSecondOrder("matmul", xs => xs[0].Matmul(xs[1]).Square(), [Randn(gen, 3, 4), Randn(gen, 4, 2)], gen);
        CheckSecondOrder("matmul batched", xs => xs[0].Matmul(xs[1]).Tanh(), [Randn(gen, 2, 2, 3), Randn(gen, 3, 2)], gen);
        CheckSecondOrder("matmul vector", xs => xs[0].Matmul(xs[1]).Exp(), [Randn(gen, 3), Randn(gen, 3, 2)], gen);
        CheckSecondOrder("conv2d", xs => F.Conv2d(xs[0], xs[1], xs[2], 1, 1).Square(), [Randn(gen, 1, 2, 4, 4), Randn(gen, 2, 2, 3, 3), Randn(gen, 2)], gen);
        CheckSecondOrder("conv2d strided groups", xs => F.Conv2d(xs[0], xs[1], null, 2, 1, 1, groups: 2).Sin(), [Randn(gen, 1, 2, 5, 5), Randn(gen, 2, 1, 2, 2)], gen);
        CheckSecondOrder("softmax", xs => F.Softmax(xs[0], 1), [Randn(gen, 2, 4)], gen);
        CheckSecondOrder("log_softmax", xs => F.LogSoftmax(xs[0], 0), [Randn(gen, 3, 2)], gen);
        CheckSecondOrder("max_pool2d", xs => F.MaxPool2d(xs[0], (2, 2), (1, 1)).Square(), [Randn(gen, 1, 2, 3, 3)], gen);
        CheckSecondOrder("avg_pool2d", xs => F.AvgPool2d(xs[0], 2).Exp(), [Randn(gen, 1, 2, 4, 4)], gen);
        CheckSecondOrder("batch_norm training", xs => F.BatchNorm(xs[0], null, null, xs[1], null, training: true), [Randn(gen, 3, 2, 2), Randn(gen, 2)], gen);
        CheckSecondOrder("layer_norm", xs => F.LayerNorm(xs[0], [4], xs[1], xs[2]), [Randn(gen, 2, 4), Randn(gen, 4), Randn(gen, 4)], gen);
        CheckSecondOrder("cross_entropy", xs => Losses.CrossEntropy(xs[0], Tensor.FromArray(new long[] { 1, 0, 2 })), [Randn(gen, 3, 4)], gen);
        CheckSecondOrder("sum/mean/var", xs => xs[0].Var(1).Add(xs[0].Mean(0).Sum()).Mul(xs[0].Sum()), [Randn(gen, 3, 4)], gen);
        CheckSecondOrder("logsumexp", xs => xs[0].LogSumExp(1), [Randn(gen, 3, 4)], gen);
        CheckSecondOrder("views", xs => xs[0].T.Slice(0, 0, 4, 2).Flip(1).Exp().Reshape(-1), [Randn(gen, 3, 4)], gen);
        CheckSecondOrder("max/gather", xs => xs[0].Max(1).values.Square().Add(xs[0].Gather(0, Tensor.FromArray(new long[] { 2, 0, 1, 1 }, 1, 4)).Exp().Sum()), [Randn(gen, 3, 4)], gen);
    }
}
