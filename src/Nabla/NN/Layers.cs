using System.Globalization;

namespace Nabla.NN;

/// <summary>y = x·Wᵀ + b; weight [out, in], PyTorch's default init (uniform ±1/sqrt(in)).</summary>
public sealed class Linear : Module
{
    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    public int InFeatures { get; }
    public int OutFeatures { get; }

    public Linear(int inFeatures, int outFeatures, bool bias = true, DType dtype = DType.Float32)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        Weight = RegisterParameter("weight", Tensor.Zeros([outFeatures, inFeatures], dtype));
        Init.KaimingUniform(Weight, a: Math.Sqrt(5));
        double bound = inFeatures > 0 ? 1 / Math.Sqrt(inFeatures) : 0;
        if (bias) Bias = Init.Uniform(RegisterParameter("bias", Tensor.Zeros([outFeatures], dtype)), -bound, bound);
    }

    public override Tensor Forward(Tensor input) => Functional.Linear(input, Weight, Bias);
    protected override string ExtraRepr() => $"in_features={InFeatures}, out_features={OutFeatures}, bias={(Bias is not null ? "True" : "False")}";
}

/// <summary>2-D convolution over [N, C, H, W]; weight [out, in/groups, kh, kw].</summary>
public sealed class Conv2d : Module
{
    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    public (int h, int w) KernelSize { get; }
    public (int h, int w) Stride { get; }
    public (int h, int w) Padding { get; }
    public (int h, int w) Dilation { get; }
    public int Groups { get; }
    /// <summary>"same", "valid" or null (explicit Padding).</summary>
    public string? PaddingMode => paddingMode;
    readonly string? paddingMode;

    public Conv2d(int inChannels, int outChannels, int kernelSize, int stride = 1, int padding = 0, int dilation = 1, int groups = 1, bool bias = true, string? paddingMode = null)
        : this(inChannels, outChannels, (kernelSize, kernelSize), (stride, stride), (padding, padding), (dilation, dilation), groups, bias, paddingMode) { }

    public Conv2d(int inChannels, int outChannels, (int h, int w) kernelSize, (int h, int w) stride, (int h, int w) padding, (int h, int w) dilation,
        int groups = 1, bool bias = true, string? paddingMode = null)
    {
        if (inChannels % groups != 0 || outChannels % groups != 0)
            throw new ShapeMismatchException($"Conv2d: groups {groups} must divide in_channels {inChannels} and out_channels {outChannels}");
        KernelSize = kernelSize; Stride = stride; Padding = padding; Dilation = dilation; Groups = groups;
        this.paddingMode = paddingMode;
        Weight = RegisterParameter("weight", Tensor.Zeros([outChannels, inChannels / groups, kernelSize.h, kernelSize.w]));
        Init.KaimingUniform(Weight, a: Math.Sqrt(5));
        int fanIn = inChannels / groups * kernelSize.h * kernelSize.w;
        if (bias) Bias = Init.Uniform(RegisterParameter("bias", Tensor.Zeros([outChannels])), -1 / Math.Sqrt(fanIn), 1 / Math.Sqrt(fanIn));
    }

    public override Tensor Forward(Tensor input) => Functional.Conv2d(input, Weight, Bias, Stride, Padding, Dilation, Groups, paddingMode);
    protected override string ExtraRepr() => $"{Weight.Size(1) * Groups}, {Weight.Size(0)}, kernel_size=({KernelSize.h}, {KernelSize.w}), stride=({Stride.h}, {Stride.w})";
}

/// <summary>1-D convolution over [N, C, L]; weight [out, in/groups, k].</summary>
public sealed class Conv1d : Module
{
    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    readonly int stride, padding, dilation, groups;
    readonly string? paddingMode;
    public int Stride => stride;
    public int Padding => padding;
    public int Dilation => dilation;
    public int Groups => groups;
    public string? PaddingMode => paddingMode;

    public Conv1d(int inChannels, int outChannels, int kernelSize, int stride = 1, int padding = 0, int dilation = 1, int groups = 1, bool bias = true, string? paddingMode = null)
    {
        (this.stride, this.padding, this.dilation, this.groups, this.paddingMode) = (stride, padding, dilation, groups, paddingMode);
        Weight = RegisterParameter("weight", Tensor.Zeros([outChannels, inChannels / groups, kernelSize]));
        Init.KaimingUniform(Weight, a: Math.Sqrt(5));
        int fanIn = inChannels / groups * kernelSize;
        if (bias) Bias = Init.Uniform(RegisterParameter("bias", Tensor.Zeros([outChannels])), -1 / Math.Sqrt(fanIn), 1 / Math.Sqrt(fanIn));
    }

    public override Tensor Forward(Tensor input) => Functional.Conv1d(input, Weight, Bias, stride, padding, dilation, groups, paddingMode);
}

/// <summary>Transposed 2-D convolution; weight [in, out/groups, kh, kw].</summary>
public sealed class ConvTranspose2d : Module
{
    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    readonly (int, int) stride, padding, outputPadding, dilation;
    readonly int groups;
    public (int h, int w) Stride => stride;
    public (int h, int w) Padding => padding;
    public (int h, int w) OutputPadding => outputPadding;
    public (int h, int w) Dilation => dilation;
    public int Groups => groups;

    public ConvTranspose2d(int inChannels, int outChannels, int kernelSize, int stride = 1, int padding = 0, int outputPadding = 0, int groups = 1, bool bias = true, int dilation = 1)
    {
        (this.stride, this.padding, this.outputPadding, this.dilation, this.groups) = ((stride, stride), (padding, padding), (outputPadding, outputPadding), (dilation, dilation), groups);
        Weight = RegisterParameter("weight", Tensor.Zeros([inChannels, outChannels / groups, kernelSize, kernelSize]));
        Init.KaimingUniform(Weight, a: Math.Sqrt(5));
        // NOTE: PyTorch computes fan_in from weight dim 1 (out/groups) times the kernel, for the bias bound too.
        int fanIn = outChannels / groups * kernelSize * kernelSize;
        if (bias) Bias = Init.Uniform(RegisterParameter("bias", Tensor.Zeros([outChannels])), -1 / Math.Sqrt(fanIn), 1 / Math.Sqrt(fanIn));
    }

    public override Tensor Forward(Tensor input) => Functional.ConvTranspose2d(input, Weight, Bias, stride, padding, outputPadding, groups, dilation);
}

/// <summary>Batch normalization over dim 1 with running statistics as buffers (BatchNorm1d and BatchNorm2d).</summary>
public class BatchNorm : Module
{
    public Tensor? Weight { get; }
    public Tensor? Bias { get; }
    public Tensor? RunningMean { get; }
    public Tensor? RunningVar { get; }
    public Tensor? NumBatchesTracked { get; }
    public double Eps { get; }
    public double? Momentum { get; }
    readonly int[] ranks;

    protected BatchNorm(int numFeatures, double eps, double? momentum, bool affine, bool trackRunningStats, int[] ranks)
    {
        Eps = eps;
        Momentum = momentum;
        this.ranks = ranks;
        if (affine)
        {
            Weight = RegisterParameter("weight", Tensor.Ones([numFeatures]));
            Bias = RegisterParameter("bias", Tensor.Zeros([numFeatures]));
        }
        if (trackRunningStats)
        {
            RunningMean = RegisterBuffer("running_mean", Tensor.Zeros([numFeatures]));
            RunningVar = RegisterBuffer("running_var", Tensor.Ones([numFeatures]));
            NumBatchesTracked = RegisterBuffer("num_batches_tracked", Tensor.Zeros([], DType.Int64));
        }
    }

    public override Tensor Forward(Tensor input)
    {
        if (!ranks.Contains(input.Dim))
            throw new ShapeMismatchException($"{GetType().Name}: expected {string.Join(" or ", ranks.Select(r => r + "-D"))} input, got {ShapeUtil.Format(input.shape)}");
        double momentum = Momentum ?? 0;
        if (Training && NumBatchesTracked is not null)
        {
            using (GradMode.NoGrad()) NumBatchesTracked.Copy_(NumBatchesTracked.Add(1));
            // NOTE: momentum=None means a cumulative moving average, as in PyTorch.
            if (Momentum is null) momentum = 1.0 / NumBatchesTracked.Item();
        }
        bool useBatch = Training || RunningMean is null;
        return Functional.BatchNorm(input, useBatch && !Training ? null : RunningMean, useBatch && !Training ? null : RunningVar, Weight, Bias, useBatch, momentum, Eps);
    }
}

public sealed class BatchNorm1d : BatchNorm
{
    public BatchNorm1d(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true, bool trackRunningStats = true)
        : base(numFeatures, eps, momentum, affine, trackRunningStats, [2, 3]) { }
}

public sealed class BatchNorm2d : BatchNorm
{
    public BatchNorm2d(int numFeatures, double eps = 1e-5, double? momentum = 0.1, bool affine = true, bool trackRunningStats = true)
        : base(numFeatures, eps, momentum, affine, trackRunningStats, [4]) { }
}

public sealed class LayerNorm : Module
{
    public Tensor? Weight { get; }
    public Tensor? Bias { get; }
    readonly int[] shape;
    readonly double eps;
    public int[] NormalizedShape => (int[])shape.Clone();
    public double Eps => eps;

    public LayerNorm(int[] normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true)
    {
        shape = normalizedShape;
        this.eps = eps;
        if (elementwiseAffine)
        {
            Weight = RegisterParameter("weight", Tensor.Ones(normalizedShape));
            if (bias) Bias = RegisterParameter("bias", Tensor.Zeros(normalizedShape));
        }
    }

    public LayerNorm(int normalizedShape, double eps = 1e-5) : this([normalizedShape], eps) { }

    public override Tensor Forward(Tensor input) => Functional.LayerNorm(input, shape, Weight, Bias, eps);
}

public sealed class RMSNorm : Module
{
    public Tensor? Weight { get; }
    readonly int[] shape;
    readonly double eps;

    public RMSNorm(int[] normalizedShape, double eps = 1e-6, bool elementwiseAffine = true)
    {
        shape = normalizedShape;
        this.eps = eps;
        if (elementwiseAffine) Weight = RegisterParameter("weight", Tensor.Ones(normalizedShape));
    }

    public RMSNorm(int normalizedShape, double eps = 1e-6) : this([normalizedShape], eps) { }

    public override Tensor Forward(Tensor input) => Functional.RmsNorm(input, shape, Weight, eps);
}

public sealed class GroupNorm : Module
{
    public Tensor? Weight { get; }
    public Tensor? Bias { get; }
    readonly int groups;
    readonly double eps;

    public GroupNorm(int numGroups, int numChannels, double eps = 1e-5, bool affine = true)
    {
        if (numChannels % numGroups != 0) throw new ShapeMismatchException($"GroupNorm: num_channels {numChannels} must be divisible by num_groups {numGroups}");
        groups = numGroups;
        this.eps = eps;
        if (affine)
        {
            Weight = RegisterParameter("weight", Tensor.Ones([numChannels]));
            Bias = RegisterParameter("bias", Tensor.Zeros([numChannels]));
        }
    }

    public override Tensor Forward(Tensor input) => Functional.GroupNorm(input, groups, Weight, Bias, eps);
}

public sealed class Embedding : Module
{
    public Tensor Weight { get; }
    readonly int? paddingIdx;

    public Embedding(int numEmbeddings, int embeddingDim, int? paddingIdx = null)
    {
        this.paddingIdx = paddingIdx;
        Weight = RegisterParameter("weight", Tensor.Zeros([numEmbeddings, embeddingDim]));
        Init.Normal(Weight);
        if (paddingIdx is int p)
            using (GradMode.NoGrad()) Weight.Select(0, p).Detach().Fill_(0);
    }

    public override Tensor Forward(Tensor input) => Functional.Embedding(input, Weight, paddingIdx);
}

public sealed class Dropout : Module
{
    readonly double p;
    public Dropout(double p = 0.5) => this.p = p;
    public override Tensor Forward(Tensor input) => Functional.Dropout(input, p, Training);
    protected override string ExtraRepr() => "p=" + p.ToString(CultureInfo.InvariantCulture);
}

public sealed class MaxPool2d : Module
{
    readonly (int, int) kernel, stride, padding, dilation;
    readonly bool ceilMode;
    public (int h, int w) KernelSize => kernel;
    public (int h, int w) Stride => stride;
    public (int h, int w) Padding => padding;
    public (int h, int w) Dilation => dilation;
    public bool CeilMode => ceilMode;

    public MaxPool2d(int kernelSize, int? stride = null, int padding = 0, int dilation = 1, bool ceilMode = false)
    {
        kernel = (kernelSize, kernelSize);
        this.stride = (stride ?? kernelSize, stride ?? kernelSize);
        this.padding = (padding, padding);
        this.dilation = (dilation, dilation);
        this.ceilMode = ceilMode;
    }

    public override Tensor Forward(Tensor input) => Functional.MaxPool2d(input, kernel, stride, padding, dilation, ceilMode);
}

public sealed class AvgPool2d : Module
{
    readonly (int, int) kernel, stride, padding;
    public (int h, int w) KernelSize => kernel;
    public (int h, int w) Stride => stride;
    public (int h, int w) Padding => padding;

    public AvgPool2d(int kernelSize, int? stride = null, int padding = 0)
    {
        kernel = (kernelSize, kernelSize);
        this.stride = (stride ?? kernelSize, stride ?? kernelSize);
        this.padding = (padding, padding);
    }

    public override Tensor Forward(Tensor input) => Functional.AvgPool2d(input, kernel, stride, padding);
}

public sealed class AdaptiveAvgPool2d : Module
{
    readonly (int, int) output;
    public (int h, int w) OutputSize => output;
    public AdaptiveAvgPool2d(int h, int w) => output = (h, w);
    public AdaptiveAvgPool2d(int size) : this(size, size) { }
    public override Tensor Forward(Tensor input) => Functional.AdaptiveAvgPool2d(input, output);
}

public sealed class Flatten : Module
{
    readonly int start, end;
    public int StartDim => start;
    public int EndDim => end;
    public Flatten(int startDim = 1, int endDim = -1) => (start, end) = (startDim, endDim);
    public override Tensor Forward(Tensor input) => input.Flatten(start, end);
}

public sealed class Unflatten : Module
{
    readonly int dim;
    readonly int[] sizes;
    public int Dim => dim;
    public int[] Sizes => (int[])sizes.Clone();
    public Unflatten(int dim, params int[] sizes) => (this.dim, this.sizes) = (dim, sizes);
    public override Tensor Forward(Tensor input) => input.Unflatten(dim, sizes);
}

public sealed class Identity : Module
{
    public override Tensor Forward(Tensor input) => input;
}

public sealed class ReLU : Module { public override Tensor Forward(Tensor x) => x.Relu(); }
public sealed class Sigmoid : Module { public override Tensor Forward(Tensor x) => x.Sigmoid(); }
public sealed class Tanh : Module { public override Tensor Forward(Tensor x) => x.Tanh(); }
public sealed class SiLU : Module { public override Tensor Forward(Tensor x) => x.Silu(); }

public sealed class GELU : Module
{
    readonly string approximate;
    public string Approximate => approximate;
    public GELU(string approximate = "none") => this.approximate = approximate;
    public override Tensor Forward(Tensor x) => x.Gelu(approximate);
}

public sealed class LeakyReLU : Module
{
    readonly double slope;
    public double NegativeSlope => slope;
    public LeakyReLU(double negativeSlope = 0.01) => slope = negativeSlope;
    public override Tensor Forward(Tensor x) => x.LeakyRelu(slope);
}

public sealed class ELU : Module
{
    readonly double alpha;
    public double Alpha => alpha;
    public ELU(double alpha = 1) => this.alpha = alpha;
    public override Tensor Forward(Tensor x) => x.Elu(alpha);
}

public sealed class Softplus : Module
{
    readonly double beta, threshold;
    public double Beta => beta;
    public double Threshold => threshold;
    public Softplus(double beta = 1, double threshold = 20) => (this.beta, this.threshold) = (beta, threshold);
    public override Tensor Forward(Tensor x) => x.Softplus(beta, threshold);
}

public sealed class Softmax : Module
{
    readonly int dim;
    public int Dim => dim;
    public Softmax(int dim) => this.dim = dim;
    public override Tensor Forward(Tensor x) => Functional.Softmax(x, dim);
}

public sealed class LogSoftmax : Module
{
    readonly int dim;
    public int Dim => dim;
    public LogSoftmax(int dim) => this.dim = dim;
    public override Tensor Forward(Tensor x) => Functional.LogSoftmax(x, dim);
}
