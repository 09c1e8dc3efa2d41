using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nabla;

/// <summary>Activation applied in a fused kernel's epilogue.</summary>
public enum FusedActivation { None, Relu }

/// <summary>
/// An inference-only float32 2-D convolution (NCHW) with its weights prepared once: reshaped to the
/// [O, C/groups·kh·kw] GEMM operand (with any folded BatchNorm already applied by the caller), and an epilogue that
/// adds the bias, an optional residual of the output's shape and applies an activation in one pass over each output
/// row while it is still in cache. The path is chosen per call by shape (docs/architecture.md, "Inference fast path"):
/// stride-1, undilated, ungrouped convolutions with few taps (C·kh·kw ≤ 32), or with AVX-512 few output channels on
/// small maps, run directly (<see cref="Direct"/>); 3×3 stride-1 padding-1 layers with 64+ input channels on maps of 14+ use
/// Winograd F(2×2, 3×3) (InferenceConvWinograd.cs); with AVX-512, layers with 64+ output channels and K ≥ 192 taps on
/// maps of at most 4096 positions take the channel-tiled path (InferenceConvChannelTiles.cs); the others go through
/// im2col (1×1 stride-1 unpadded convolutions read the input as the GEMM operand) into a per-thread scratch buffer that
/// is reused across calls, with the images of a batch side by side when each has few output positions and large maps in
/// blocks of output rows. Batch 1 runs threaded kernels; larger batches split the images over threads. Records no
/// autograd. One instance may serve concurrent calls (the only state built after construction, the channel panels, the
/// Winograd filters and, for a constant weight, the GEMM's packed copy, is built once under a lock).
/// </summary>
public sealed partial class PackedConv2d
{
    readonly float[]? weight;  // [O, Cg·kh·kw]: a copy without the fast path; a constant weight's own array (or a copy of a view)
    readonly float[]? bias;    // [O]
    readonly bool fastPath;    // the FMA GEMM: the packed copy and the layouts built from it
    PackedA[]? packed;         // one per group, in the GEMM's A layout: at construction, or on first use for a constant weight
    readonly bool direct;       // few input taps (C·kh·kw ≤ DirectMaxK), stride and dilation 1, no groups: direct convolution
    readonly bool narrowDirect; // few output channels, AVX-512: direct on maps of at most NarrowDirectMaxPositions
    readonly bool strideTwoDirect; // stride 2 with few taps (first layers: ResNet's 7×7 on RGB), AVX-512: direct over parity planes
    readonly float[]? directWeight; // [O, C·kh·kw]
    readonly float[]? directGroups; // [ceil(O/8)][C·kh·kw][8], the AVX-512 direct kernel's layout

    /// <summary>Largest C·kh·kw that runs as a direct convolution: first layers on 1–3 channels, where im2col would move
    /// more data than the GEMM computes on.</summary>
    const int DirectMaxK = 32;

    /// <summary>With AVX-512, narrow layers (at most this many output channels and taps) run directly too: LeNet's and
    /// mnist-8's second convolutions (16 channels, K = 150 and 200 on 10×10 and 14×14 maps) ran at 68–78 GFLOP/s in the
    /// 12 × 16 channel tile, whose every FMA needs a broadcast load.</summary>
    const int DirectNarrowMaxO = 32, DirectNarrowMaxK = 512;

    /// <summary>Largest map (output positions) on which narrow layers run directly: the direct kernel keeps an image on one
    /// thread, so larger maps at batch 1 keep the threaded paths.</summary>
    const int NarrowDirectMaxPositions = 4096;

    /// <summary>Most taps (C·kh·kw) and input channels for the stride-2 direct kernel: first layers on images (ResNet's
    /// 7×7×3 = 147: 1.45–1.49 → 1.26–1.28 ms at 1 thread). Its 64-channel 1×1 stride-2 layers were twice as slow this way
    /// (81 → 166 µs), hence the channel limit.</summary>
    const int DirectStrideTwoMaxK = 160, DirectStrideTwoMaxC = 4;

    public int OutChannels { get; }
    public int InChannels { get; }
    public int Groups { get; }
    public int KernelH { get; }
    public int KernelW { get; }
    public (int H, int W) Stride { get; }
    public (int H, int W) Dilation { get; }
    /// <summary>Padding at the start (top, left) and end (bottom, right) of each spatial dimension.</summary>
    public (int Top, int Left, int Bottom, int Right) Padding { get; }
    public FusedActivation Activation { get; }

    /// <param name="weight">[O, C/groups, kh, kw] float32</param>
    /// <param name="bias">[O] float32, or null</param>
    public PackedConv2d(Tensor weight, Tensor? bias, (int H, int W) stride, (int Top, int Left, int Bottom, int Right) padding,
        (int H, int W) dilation, int groups, FusedActivation activation)
        : this(weight, bias, stride, padding, dilation, groups, activation, constantWeight: false) { }

    /// <summary>As the constructor above; with <paramref name="constantWeight"/> a weight that covers its whole storage is
    /// shared, not copied.</summary>
    /// <param name="constantWeight">The caller never writes the weight's elements while this object lives (a model's
    /// initializer). Then the weight's own array is kept (its storage marked kept for good, so disposing the tensor never
    /// recycles it) and every layout, the GEMM's packed copy included, is built from it on first use: a layer holds only
    /// the layouts its shapes take, beside the one plain copy the model already has. ResNet-18 held a 45 MB packed copy
    /// that only the few GEMM-path layers read. A view (an offset, strides, or part of a larger storage) is copied once
    /// here instead. A write to a shared weight breaks the contract: layouts built before it keep the old values, later
    /// ones (and, without FMA, every call's GEMM) see the new. Otherwise (false) the weight is packed here, so later writes
    /// to it change nothing.</param>
    public PackedConv2d(Tensor weight, Tensor? bias, (int H, int W) stride, (int Top, int Left, int Bottom, int Right) padding,
        (int H, int W) dilation, int groups, FusedActivation activation, bool constantWeight)
    {
        if (weight.Dim != 4 || weight.DType != DType.Float32)
            throw new ShapeMismatchException($"packed conv2d: weight must be a 4-D float32 [O, C/groups, kh, kw], got {weight.DType} {ShapeUtil.Format(weight.shape)}");
        int o = weight.shape[0];
        if (groups < 1 || o % groups != 0)
            throw new ShapeMismatchException($"packed conv2d: groups {groups} must divide the {o} output channels");
        if (bias is not null && (bias.DType != DType.Float32 || bias.NumElements != o))
            throw new ShapeMismatchException($"packed conv2d: bias must be float32 with {o} elements, got {bias.DType} {ShapeUtil.Format(bias.shape)}");
        if (stride.H < 1 || stride.W < 1 || dilation.H < 1 || dilation.W < 1)
            throw new NablaException($"packed conv2d: strides {stride} and dilations {dilation} must be positive");
        if (padding.Top < 0 || padding.Left < 0 || padding.Bottom < 0 || padding.Right < 0)
            throw new NablaException($"packed conv2d: padding {padding} must not be negative");
        (direct, narrowDirect, strideTwoDirect) = DirectKinds(o, weight.shape[1], weight.shape[2], weight.shape[3], stride, dilation, groups);
        // The weight is read in place where only packed layouts are kept, or kept as it is when constant; a copy is made
        // only where this object keeps the weights as given (no FMA fast path, or the direct kernels without AVX-512) of a
        // weight the caller may change. ResNet-18's first run spent 160 ms of page faults on copies of its 45 MB of
        // weights made only to be packed.
        bool keepsPlain = !Gemm.UseFastPath || direct && !Avx512F.IsSupported;
        var w = keepsPlain && !constantWeight ? weight.Contiguous().ToArray<float>() : weight.ContiguousData<float>();
        if (constantWeight && ReferenceEquals(w, weight.storage.Data)) weight.storage.Keep();
        this.bias = bias?.Contiguous().ToArray<float>();
        OutChannels = o;
        InChannels = weight.shape[1] * groups;
        Groups = groups;
        KernelH = weight.shape[2];
        KernelW = weight.shape[3];
        Stride = stride;
        Padding = padding;
        Dilation = dilation;
        Activation = activation;
        fastPath = Gemm.UseFastPath;
        if (!fastPath || constantWeight) this.weight = w;
        else packed = PackGroups(w);
        if (direct && !Avx512F.IsSupported) directWeight = w;
        if ((direct || narrowDirect || strideTwoDirect) && Avx512F.IsSupported)
        {
            // [ceil(O/8)][K][8]: the eight channel weights of one tap side by side, zero for channels past O.
            int kdim = weight.shape[1] * KernelH * KernelW, groupsOf8 = (o + 7) / 8;
            directGroups = new float[groupsOf8 * kdim * 8];
            for (int oc = 0; oc < o; oc++)
                for (int t = 0; t < kdim; t++) directGroups[((oc / 8) * kdim + t) * 8 + oc % 8] = w[oc * kdim + t];
        }
    }

    PackedA[] PackGroups(float[] w)
    {
        int og = OutChannels / Groups, kdim = InChannels / Groups * KernelH * KernelW;
        var p = new PackedA[Groups];
        for (int g = 0; g < Groups; g++) p[g] = Gemm.PackAOnce(og, kdim, w, g * og * kdim, kdim, 1);
        return p;
    }

    /// <summary>The GEMM's packed weights (fast path only), packed on first use for a constant weight.</summary>
    PackedA[] Packed() => Volatile.Read(ref packed) ?? Once(ref packed, () => PackGroups(weight!));

    /// <summary>Which direct kernels a weight [O, C/groups, kh, kw] with these strides, dilations and groups may take.</summary>
    static (bool Direct, bool Narrow, bool StrideTwo) DirectKinds(int o, int cPerGroup, int kh, int kw, (int H, int W) stride,
        (int H, int W) dilation, int groups)
    {
        long taps = (long)cPerGroup * kh * kw;
        bool unitStride = groups == 1 && stride == (1, 1) && dilation == (1, 1) && Vector256.IsHardwareAccelerated;
        bool direct = unitStride && taps <= DirectMaxK;
        bool narrow = unitStride && !direct && Avx512F.IsSupported && o <= DirectNarrowMaxO && taps <= DirectNarrowMaxK;
        bool strideTwo = groups == 1 && stride == (2, 2) && dilation == (1, 1) && Avx512F.IsSupported && taps <= DirectStrideTwoMaxK
                         && cPerGroup <= DirectStrideTwoMaxC;
        return (direct, narrow, strideTwo);
    }

    /// <summary>
    /// Whether a convolution with this weight shape [O, C/groups, kh, kw], strides, dilations and groups takes the direct
    /// AVX-512 kernel, on which <see cref="RunMaxPooled"/> pools band by band without writing the convolution out whole
    /// (for maps of at most 4096 positions when the layer has few output channels and many taps). The ONNX importer fuses a
    /// MaxPool into a convolution only then: elsewhere the fused call would convolve whole into thread scratch and gain nothing.
    /// </summary>
    public static bool PoolsInBands(int outChannels, int inChannelsPerGroup, int kernelH, int kernelW, (int H, int W) stride,
        (int H, int W) dilation, int groups)
    {
        var (d, n, s) = DirectKinds(outChannels, inChannelsPerGroup, kernelH, kernelW, stride, dilation, groups);
        return Avx512F.IsSupported && (d || n || s);
    }

    /// <summary>The output shape for an input of shape <paramref name="x"/>; throws naming the mismatch.</summary>
    public int[] OutputShape(IReadOnlyList<int> x)
    {
        var (oh, ow) = OutputSize(x);
        return [x[0], OutChannels, oh, ow];
    }

    /// <summary>The output's height and width for an input of shape <paramref name="x"/> (no array: Run calls it on every
    /// call); throws naming the mismatch.</summary>
    (int OH, int OW) OutputSize(IReadOnlyList<int> x)
    {
        if (x.Count != 4)
            throw new ShapeMismatchException($"packed conv2d: expects a 4-D input [N, C, H, W], got rank {x.Count}");
        if (x[1] != InChannels)
            throw new ShapeMismatchException($"packed conv2d: input has {x[1]} channels, the weight expects {InChannels}");
        int oh = Cpu.ConvOut(x[2], KernelH, Stride.H, Padding.Top, Padding.Bottom, Dilation.H);
        int ow = Cpu.ConvOut(x[3], KernelW, Stride.W, Padding.Left, Padding.Right, Dilation.W);
        if (oh <= 0 || ow <= 0)
            throw new ShapeMismatchException($"packed conv2d: kernel {KernelH}x{KernelW} does not fit input [{string.Join(", ", x)}] with padding {Padding}");
        return (oh, ow);
    }

    /// <summary>Computes act(conv(x) + bias + residual) into a new tensor.</summary>
    public Tensor Run(Tensor x, Tensor? residual = null)
    {
        var y = Tensor.Empty(OutputShape(x.shape), DType.Float32);
        Run(x, residual, y);
        return y;
    }

    /// <summary>Computes act(conv(x) + bias + residual) into <paramref name="output"/> (contiguous, of <see cref="OutputShape"/>).</summary>
    public void Run(Tensor x, Tensor? residual, Tensor output) => Run(x, residual, output, Activation);

    /// <summary>As <see cref="Run(Tensor, Tensor?, Tensor)"/> with another activation than the one it was built with.</summary>
    public void Run(Tensor x, Tensor? residual, Tensor output, FusedActivation activation)
    {
        if (x.DType != DType.Float32) throw new DTypeException($"packed conv2d: input must be float32, got {x.DType}");
        var (oh, ow) = OutputSize(x.shape);
        int n = x.shape[0], h = x.shape[2], w = x.shape[3];
        if (!IsOutputShape(output.shape, n, oh, ow) || output.DType != DType.Float32 || !output.IsContiguous)
            throw new ShapeMismatchException($"packed conv2d: output must be a contiguous float32 {ShapeUtil.Format(OutputShape(x.shape))}, got {output.DType} {ShapeUtil.Format(output.shape)}");
        if (residual is not null && (!IsOutputShape(residual.shape, n, oh, ow) || residual.DType != DType.Float32))
            throw new ShapeMismatchException($"packed conv2d: residual must be float32 {ShapeUtil.Format(OutputShape(x.shape))}, got {residual.DType} {ShapeUtil.Format(residual.shape)}");
        var (xa, xo) = Flat(x);
        float[]? ra = null;
        int ro = 0;
        if (residual is not null) (ra, ro) = Flat(residual);
        RunImages(n, xa, xo, ra, ro, output.storage.As<float>(), output.offset, h, w, oh, ow, activation);
    }

    /// <summary>The direct path's condition, by output positions per image.</summary>
    bool TakesDirect(int l) => direct || (narrowDirect && l <= NarrowDirectMaxPositions) || strideTwoDirect;

    /// <summary>The <paramref name="n"/> images of a checked call: the path by shape, then the images over threads.</summary>
    void RunImages(int n, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow, FusedActivation activation)
    {
        int l = oh * ow;
        var path = TakesDirect(l) ? ImagePath.Direct
            : TakesWinograd(oh, ow) ? ImagePath.Winograd
            : l <= ChannelTileMaxColumns && UseChannelTiles && ChannelTilesPossible ? ImagePath.ChannelTiled
            : n > 1 && fastPath && Groups == 1 && l < FoldColumns / 2 ? ImagePath.Folded
            : ImagePath.Gemm;
        if (path == ImagePath.Folded)
        {
            // Small images: several images share one GEMM (their im2col columns side by side), so the register tiles
            // and packing work on thousands of columns instead of a few dozen.
            int nb = Math.Max(1, FoldColumns / l), chunks = (n + nb - 1) / nb;
            int threads = Math.Min(Gemm.Threads, chunks);
            if (threads > 1) FoldedSplit(chunks, threads, nb, n, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation);
            else
                for (int q = 0; q < chunks; q++) Folded(q * nb, Math.Min(nb, n - q * nb), xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, Gemm.Threads);
            return;
        }
        if (n > 1 && Gemm.Threads > 1) ImagesSplit(path, n, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation);
        else
            for (int b = 0; b < n; b++) OneImage(path, b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, parallelBatch: false, n);
    }

    bool IsOutputShape(int[] s, int n, int oh, int ow) => s.Length == 4 && s[0] == n && s[1] == OutChannels && s[2] == oh && s[3] == ow;

    /// <summary>The path a call of <see cref="Run(Tensor, Tensor?, Tensor, FusedActivation)"/> takes, by shape.</summary>
    enum ImagePath { Direct, Winograd, ChannelTiled, Folded, Gemm }

    /// <summary>Image <paramref name="b"/> through <paramref name="path"/>. With <paramref name="parallelBatch"/> the images
    /// run on several threads already, so each runs on one; otherwise the paths split an image themselves (the direct
    /// and channel-tiled paths only at batch 1).</summary>
    void OneImage(ImagePath path, int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow,
        FusedActivation activation, bool parallelBatch, int n)
    {
        switch (path)
        {
            case ImagePath.Direct:
                Direct(b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, serial: parallelBatch || n > 1);
                break;
            case ImagePath.Winograd:
                Winograd(b, xa, xo, ra, ro, ya, yo, h, w, activation, serial: parallelBatch);
                break;
            case ImagePath.ChannelTiled:
                ChannelTiled(b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, serial: parallelBatch || n > 1);
                break;
            default:
                Image(b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, serial: parallelBatch);
                break;
        }
    }

    // The threaded dispatches are methods of their own: a lambda's captured variables are allocated on entry to the method
    // that declares them, so with the lambdas in Run every call allocated, threaded or not (KernelAllocationTests).
    void ImagesSplit(ImagePath path, int n, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow,
        FusedActivation activation) =>
        WorkerPool.For(n, Gemm.Threads, b => OneImage(path, b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, parallelBatch: true, n));

    void FoldedSplit(int chunks, int threads, int nb, int n, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w,
        int oh, int ow, FusedActivation activation) =>
        WorkerPool.For(chunks, threads, q => Folded(q * nb, Math.Min(nb, n - q * nb), xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, 1));

    [ThreadStatic] static float[]? scratch, foldOut, padded;

    /// <summary>Fills the scratch buffers this thread has (im2col columns, padded planes, tile results, channels-last copies,
    /// Winograd transforms, pooling bands) with NaN, so that a test sees any element a path failed to write (with
    /// <see cref="WorkerPool.PoisonThreads"/>, on every thread of a split). A buffer grown during the next call is a new,
    /// uninitialized array: not NaN, but it cannot hold an earlier run's values either. The channels-last tiles' position
    /// offsets are left alone: they are rewritten in full just before each use.</summary>
    internal static void PoisonScratch()
    {
        foreach (var buffer in new[] { scratch, foldOut, padded, flatOut, tileOut, nhwcInput, poolBand, pooledConv, winogradV, winogradM, winogradPlanes })
            buffer?.AsSpan().Fill(float.NaN);
    }

    /// <summary>
    /// Direct convolution of one image: the input is copied once into zero-bordered planes, then each output row is
    /// accumulated 32 columns at a time in four 8-wide registers over all C·kh·kw taps, and the epilogue runs per row.
    /// </summary>
    unsafe void Direct(int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow, FusedActivation activation, bool serial = true)
    {
        if (directGroups is not null)
        {
            DirectFlat(b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, serial);
            return;
        }
        int c = InChannels, o = OutChannels, kh = KernelH, kw = KernelW, ph = Padding.Top, pw = Padding.Left, l = oh * ow;
        int blocks = (ow + 31) / 32, wp = blocks * 32 + kw - 1, hp = oh + kh - 1, kdim = c * kh * kw;
        int need = c * hp * wp;
        var pad = ThreadScratch.Grow(ref padded, need);
        paddedCall = 0;
        var wts = directWeight!;
        int yBase = yo + b * o * l;
        fixed (float* px = xa, pp = pad, pw8 = wts, py = ya)
        {
            for (int ci = 0; ci < c; ci++)
                for (int r = 0; r < hp; r++)
                {
                    float* dst = pp + ((long)ci * hp + r) * wp;
                    int iy = r - ph;
                    if ((uint)iy >= (uint)h) { new Span<float>(dst, wp).Clear(); continue; }
                    float* src = px + xo + ((long)(b * c + ci) * h + iy) * w;
                    for (int q = 0; q < wp; q++)
                    {
                        int ix = q - pw;
                        dst[q] = (uint)ix < (uint)w ? src[ix] : 0f;
                    }
                }
            float* tmp = stackalloc float[32];
            for (int oc = 0; oc < o; oc++)
            {
                float* wrow = pw8 + (long)oc * kdim;
                for (int y = 0; y < oh; y++)
                {
                    float* orow = py + yBase + ((long)oc * oh + y) * ow;
                    for (int xb = 0; xb < blocks; xb++)
                    {
                        Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
                        int t = 0;
                        for (int ci = 0; ci < c; ci++)
                            for (int ki = 0; ki < kh; ki++)
                            {
                                float* prow = pp + ((long)ci * hp + y + ki) * wp + xb * 32;
                                for (int kj = 0; kj < kw; kj++, t++)
                                {
                                    var wv = Vector256.Create(wrow[t]);
                                    float* p = prow + kj;
                                    a0 = Mad(Vector256.Load(p), wv, a0);
                                    a1 = Mad(Vector256.Load(p + 8), wv, a1);
                                    a2 = Mad(Vector256.Load(p + 16), wv, a2);
                                    a3 = Mad(Vector256.Load(p + 24), wv, a3);
                                }
                            }
                        int x0 = xb * 32, len = Math.Min(32, ow - x0);
                        float* dst = len == 32 ? orow + x0 : tmp;
                        a0.Store(dst);
                        a1.Store(dst + 8);
                        a2.Store(dst + 16);
                        a3.Store(dst + 24);
                        if (len < 32) new Span<float>(tmp, len).CopyTo(new Span<float>(orow + x0, len));
                    }
                }
            }
        }
        EpilogueRows(b, 0, o, l, ya, yBase, ra, ro, activation);
    }

    [ThreadStatic] static float[]? flatOut;

    /// <summary>
    /// The AVX-512 direct kernel, for stride 1 and 2. The input is copied into zero-bordered planes: one per channel at
    /// stride 1, four at stride 2 (the padded input split by row and column parity, plane (rp, cp)[i][j] = P[2i + rp][2j + cp]),
    /// each of width wp = ow + (kw − 1)/stride, so output (y, x) and its tap (ki, kj) are P = y·wp + x and P plus a fixed
    /// offset per tap (consecutive taps of one parity are consecutive columns: the tap loop keeps a running row pointer; a
    /// table of tap offsets instead made LeNet's second layer at batch 64 290 µs against 230). The output positions form one flat range (the columns past each row's end are
    /// computed and dropped), which keeps 32-wide vectors full on narrow maps (a 10×10 output is 140 flat positions, not
    /// 10 rows of 32). Eight output channels × 32 positions sit in sixteen registers, so each input load feeds eight FMAs
    /// (one channel at a time was load-bound: LeNet's first layer at batch 64 ran at 23 GFLOP/s). Bias and activation are
    /// applied in registers; without a residual each block then goes straight into the output rows with masked stores
    /// (<see cref="StoreRows"/>), else into a flat buffer whose rows are copied out and the residual added before the
    /// activation. At batch 1 (<paramref name="serial"/> false) threads take groups of eight channels, each filling its own
    /// padded planes.
    /// </summary>
    void DirectFlat(int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow, FusedActivation activation, bool serial)
    {
        int c = InChannels, o = OutChannels, kh = KernelH, kw = KernelW, st = Stride.H, kdim = c * kh * kw;
        int wp = ow + (kw - 1) / st, positions = oh * wp, groups = (o + 7) / 8;
        int threads = serial ? 1 : Math.Min(Gemm.Threads, groups);
        if (threads > 1 && (long)o * positions * kdim >= DirectThreadWork)
            DirectFlatSplit(threads, groups, st, b, xa, xo, h, w, ya, yo, ra, ro, oh, ow, activation);
        else DirectFlatGroups(st, 0, groups, PadPlanes(b, xa, xo, h, w, oh, ow), b, ya, yo, ra, ro, oh, ow, activation);
    }

    /// <summary>Copies image <paramref name="b"/> into this thread's zero-bordered planes (one per channel at stride 1, four at
    /// stride 2) for <see cref="DirectFlat"/>, and returns them.</summary>
    unsafe float[] PadPlanes(int b, float[] xa, int xo, int h, int w, int oh, int ow, long call = 0)
    {
        int c = InChannels, kh = KernelH, kw = KernelW, st = Stride.H, pt = Padding.Top, pl = Padding.Left;
        int wp = ow + (kw - 1) / st, hp = oh + (kh - 1) / st, plane = hp * wp, planes = c * st * st, positions = oh * wp, blocks = (positions + 31) / 32;
        // The last block's taps read up to blocks·32 + 15 past the last plane's largest tap offset: zeroed slack.
        int used = planes * plane, slack = blocks * 32 + plane + 64;
        var pad = ThreadScratch.Grow(ref padded, used + slack);
        if (call != 0 && paddedCall == call) return pad;   // this thread ran another part of this split call
        paddedCall = call;
        fixed (float* px = xa, pp = pad)
        {
            if (st == 2)
            {
                // Both column planes of an input row at once (a scalar strided copy took ~0.1 ms of ResNet's first layer).
                for (int ci = 0; ci < c; ci++)
                {
                    float* src = px + xo + (long)(b * c + ci) * h * w;
                    for (int rp = 0; rp < 2; rp++)
                    {
                        float* even = pp + (long)((ci * 2 + rp) * 2) * plane, odd = even + plane;
                        for (int i = 0; i < hp; i++, even += wp, odd += wp)
                        {
                            int iy = 2 * i + rp - pt;
                            Cpu.SplitPaddedRow((uint)iy < (uint)h ? src + (long)iy * w : null, w, pl, even, odd, wp);
                        }
                    }
                }
            }
            else
                for (int ci = 0; ci < c; ci++)
                {
                    float* src = px + xo + (long)(b * c + ci) * h * w;
                    int j1 = Math.Min(wp, pl + w);   // columns [pl, j1) hold the input row
                    for (int i = 0; i < hp; i++)
                    {
                        float* dst = pp + (long)ci * plane + (long)i * wp;
                        int iy = i - pt;
                        if ((uint)iy >= (uint)h || j1 <= pl) { new Span<float>(dst, wp).Clear(); continue; }
                        new Span<float>(dst, pl).Clear();
                        Buffer.MemoryCopy(src + (long)iy * w, dst + pl, (j1 - pl) * 4L, (j1 - pl) * 4L);
                        new Span<float>(dst + j1, wp - j1).Clear();
                    }
                }
            new Span<float>(pp + used, slack).Clear();
        }
        return pad;
    }

    void DirectFlatGroups(int st, int gFrom, int gTo, float[] pad, int b, float[] ya, int yo, float[]? ra, int ro, int oh, int ow, FusedActivation activation)
    {
        int l = oh * ow;
        DirectFlatGroups(st, gFrom, gTo, pad, b, ya, yo + b * OutChannels * l, l, 0, oh, ra, ro, oh, ow, activation);
    }

    /// <summary>Channel groups [gFrom, gTo) over output rows [y0, y1) (the whole image for <see cref="DirectFlat"/>, a band
    /// for the pooled path): channel oc's row y goes to <c>ya[yBase + oc·cs + (y − y0)·ow]</c>.</summary>
    void DirectFlatGroups(int st, int gFrom, int gTo, float[] pad, int b, float[] ya, long yBase, long cs, int y0, int y1, float[]? ra, int ro,
        int oh, int ow, FusedActivation activation)
    {
        if (st == 1) DirectFlatGroups<StrideOne>(gFrom, gTo, pad, b, ya, yBase, cs, y0, y1, ra, ro, oh, ow, activation);
        else DirectFlatGroups<StrideTwo>(gFrom, gTo, pad, b, ya, yBase, cs, y0, y1, ra, ro, oh, ow, activation);
    }

    /// <summary>Channel groups over threads, apart from <see cref="DirectFlat"/> so that only a split call allocates its closure.
    /// Each thread fills its own padded planes (the copy is done twice): with the caller's planes read by both threads,
    /// mnist-8's second layer took 1.06–1.19 times as long at two threads and ResNet-18's first layer 1.02 (paired in one
    /// process, scratch harness, 2026-11-27 07:50 UTC), the lines being written on one core while cached by the other.</summary>
    void DirectFlatSplit(int threads, int groups, int st, int b, float[] xa, int xo, int h, int w, float[] ya, int yo, float[]? ra, int ro, int oh, int ow,
        FusedActivation activation)
    {
        long call = Interlocked.Increment(ref splitCalls);
        WorkerPool.For(threads, threads, q => DirectFlatGroups(st, groups * q / threads, groups * (q + 1) / threads,
            PadPlanes(b, xa, xo, h, w, oh, ow, call), b, ya, yo, ra, ro, oh, ow, activation));
    }

    /// <summary>The split call whose padded planes this thread's <see cref="padded"/> holds (0: none known), so that a
    /// thread running two parts of one call fills them once.</summary>
    [ThreadStatic] static long paddedCall;

    /// <summary>Multiply-adds (o·positions·c·kh·kw) from which a batch-1 direct convolution splits its channel groups
    /// across threads. At 2^20, mnist-8's second layer (16 channels, 8·5·5 taps on 14×14: 0.8 M) ran on one thread, and
    /// the model took 17.4 µs a run at 2 threads against 14.5–15.3 µs at 2^18 (scratch harness, 12:48 UTC). LeNet-5's
    /// second layer (0.34 M) did not move in that harness (13.0–13.8 µs either way), and the bench's ONNX LeNet-5 row at
    /// 2 threads then read 0.95, 0.65, 0.95 and 1.01 of ORT's time (0.98, 0.48 and 1.01 unsplit in session 6): no gain, so the
    /// threshold is 2^19: mnist-8 splits (two groups of 8 channels, 2^18 or more each) and LeNet-5 stays on one thread.</summary>
    const long DirectThreadWork = 1 << 19;

    /// <summary>The direct kernel's stride as a type, so each instantiation is compiled with a constant stride (with the
    /// stride a variable, LeNet's second layer at batch 64 took 250 µs instead of 230).</summary>
    interface IStride { static abstract int Value { get; } }
    struct StrideOne : IStride { public static int Value => 1; }
    struct StrideTwo : IStride { public static int Value => 2; }

    /// <summary>Channel groups [gFrom, gTo) of <see cref="DirectFlat"/> over its filled planes, output rows [y0, y1) (see the
    /// non-generic overload for where they go). A band (rows other than the whole image) takes the straight stores: no
    /// residual.</summary>
    unsafe void DirectFlatGroups<S>(int gFrom, int gTo, float[] padArr, int b, float[] ya, long yBase, long cs, int y0, int y1, float[]? ra, int ro,
        int oh, int ow, FusedActivation activation)
        where S : struct, IStride
    {
        int c = InChannels, o = OutChannels, kh = KernelH, kw = KernelW, st = S.Value, kdim = c * kh * kw, l = oh * ow;
        int wp = ow + (kw - 1) / st, hp = oh + (kh - 1) / st, plane = hp * wp, pFrom = y0 * wp, pTo = y1 * wp, blocks = (pTo - pFrom + 31) / 32;
        bool band = y0 != 0 || y1 != oh;
        if (band && ra is not null) throw new InvalidOperationException("packed conv2d: a band of rows takes no residual");
        bool relu = activation == FusedActivation.Relu, reluInRegisters = relu && ra is null, straight = ra is null && (DirectStoreRows || band);
        var outBuf = straight ? null : ThreadScratch.Grow(ref flatOut, 8 * blocks * 32);   // the flat path's buffer only
        fixed (float* pp = padArr, pg = directGroups, py = ya, pb = bias, pr = ra, po = outBuf)
            for (int g = gFrom; g < gTo; g++)
            {
                float* wg = pg + (long)g * kdim * 8;
                int channels = Math.Min(8, o - g * 8);
                for (int blk = 0; blk < blocks; blk++)
                {
                    int p0 = pFrom + blk * 32;
                    float* at = pp + p0;
                    Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
                    Vector512<float> a40 = default, a41 = default, a50 = default, a51 = default, a60 = default, a61 = default, a70 = default, a71 = default;
                    for (int ci = 0; ci < c; ci++)
                    for (int ki = 0; ki < kh; ki++)
                    for (int cp = 0; cp < st; cp++)
                    {
                        // Taps kj = cp, cp + st, ... read consecutive columns of parity plane (ki % st, cp).
                        float* row = at + ((ci * st + ki % st) * st + cp) * plane + ki / st * wp;
                        float* wt = wg + ((ci * kh + ki) * kw + cp) * 8;
                        for (int kj = cp; kj < kw; kj += st, row++, wt += 8 * st)
                        {
                        var v0 = Vector512.Load(row);
                        var v1 = Vector512.Load(row + 16);
                        var w0 = Vector512.Create(wt[0]); a00 = Avx512F.FusedMultiplyAdd(v0, w0, a00); a01 = Avx512F.FusedMultiplyAdd(v1, w0, a01);
                        var w1 = Vector512.Create(wt[1]); a10 = Avx512F.FusedMultiplyAdd(v0, w1, a10); a11 = Avx512F.FusedMultiplyAdd(v1, w1, a11);
                        var w2 = Vector512.Create(wt[2]); a20 = Avx512F.FusedMultiplyAdd(v0, w2, a20); a21 = Avx512F.FusedMultiplyAdd(v1, w2, a21);
                        var w3 = Vector512.Create(wt[3]); a30 = Avx512F.FusedMultiplyAdd(v0, w3, a30); a31 = Avx512F.FusedMultiplyAdd(v1, w3, a31);
                        var w4 = Vector512.Create(wt[4]); a40 = Avx512F.FusedMultiplyAdd(v0, w4, a40); a41 = Avx512F.FusedMultiplyAdd(v1, w4, a41);
                        var w5 = Vector512.Create(wt[5]); a50 = Avx512F.FusedMultiplyAdd(v0, w5, a50); a51 = Avx512F.FusedMultiplyAdd(v1, w5, a51);
                        var w6 = Vector512.Create(wt[6]); a60 = Avx512F.FusedMultiplyAdd(v0, w6, a60); a61 = Avx512F.FusedMultiplyAdd(v1, w6, a61);
                        var w7 = Vector512.Create(wt[7]); a70 = Avx512F.FusedMultiplyAdd(v0, w7, a70); a71 = Avx512F.FusedMultiplyAdd(v1, w7, a71);
                        }
                    }
                    if (straight)
                    {
                        // Straight into the output rows (no residual): the flat positions past each row's end, and past the
                        // band's last row, are dropped here. The plane pointer is moved back by y0 rows, so row y lands at
                        // (y − y0)·ow.
                        float* yg = py + yBase + g * 8 * cs - (long)y0 * ow;
                        StoreRows(yg, p0, a00, a01, pb != null ? pb[g * 8] : 0f, relu, wp, ow, y1);
                        if (channels > 1) StoreRows(yg + cs, p0, a10, a11, pb != null ? pb[g * 8 + 1] : 0f, relu, wp, ow, y1);
                        if (channels > 2) StoreRows(yg + 2 * cs, p0, a20, a21, pb != null ? pb[g * 8 + 2] : 0f, relu, wp, ow, y1);
                        if (channels > 3) StoreRows(yg + 3 * cs, p0, a30, a31, pb != null ? pb[g * 8 + 3] : 0f, relu, wp, ow, y1);
                        if (channels > 4) StoreRows(yg + 4 * cs, p0, a40, a41, pb != null ? pb[g * 8 + 4] : 0f, relu, wp, ow, y1);
                        if (channels > 5) StoreRows(yg + 5 * cs, p0, a50, a51, pb != null ? pb[g * 8 + 5] : 0f, relu, wp, ow, y1);
                        if (channels > 6) StoreRows(yg + 6 * cs, p0, a60, a61, pb != null ? pb[g * 8 + 6] : 0f, relu, wp, ow, y1);
                        if (channels > 7) StoreRows(yg + 7 * cs, p0, a70, a71, pb != null ? pb[g * 8 + 7] : 0f, relu, wp, ow, y1);
                        continue;
                    }
                    int stride = blocks * 32;   // the flat path (never a band): p0 = blk·32
                    float* ob = po + blk * 32;
                    StoreFlat(ob, a00, a01, g * 8 < o && pb != null ? pb[g * 8] : 0f, reluInRegisters);
                    StoreFlat(ob + stride, a10, a11, g * 8 + 1 < o && pb != null ? pb[g * 8 + 1] : 0f, reluInRegisters);
                    StoreFlat(ob + 2 * stride, a20, a21, g * 8 + 2 < o && pb != null ? pb[g * 8 + 2] : 0f, reluInRegisters);
                    StoreFlat(ob + 3 * stride, a30, a31, g * 8 + 3 < o && pb != null ? pb[g * 8 + 3] : 0f, reluInRegisters);
                    StoreFlat(ob + 4 * stride, a40, a41, g * 8 + 4 < o && pb != null ? pb[g * 8 + 4] : 0f, reluInRegisters);
                    StoreFlat(ob + 5 * stride, a50, a51, g * 8 + 5 < o && pb != null ? pb[g * 8 + 5] : 0f, reluInRegisters);
                    StoreFlat(ob + 6 * stride, a60, a61, g * 8 + 6 < o && pb != null ? pb[g * 8 + 6] : 0f, reluInRegisters);
                    StoreFlat(ob + 7 * stride, a70, a71, g * 8 + 7 < o && pb != null ? pb[g * 8 + 7] : 0f, reluInRegisters);
                }
                if (straight) continue;
                for (int j = 0; j < channels; j++)
                {
                    int oc = g * 8 + j;
                    float* dstPlane = py + yBase + oc * cs, srcPlane = po + (long)j * blocks * 32;
                    for (int y = 0; y < oh; y++)
                    {
                        float* s = srcPlane + (long)y * wp, d = dstPlane + (long)y * ow;
                        int q = 0;
                        for (; q + 16 <= ow; q += 16) Vector512.Load(s + q).Store(d + q);
                        for (; q < ow; q++) d[q] = s[q];
                    }
                    // The bias went in with the stores; the residual and the activation here.
                    if (pr is not null) Gemm.RowEpilogue(dstPlane, l, pr + ro + (long)(b * o + oc) * l, 0f, relu);
                }
            }
    }

    /// <summary>Whether the direct kernel without a residual stores each block straight into the output rows (masked
    /// stores per row) instead of into a flat buffer that is then copied row by row. Settable by tests and measurements.</summary>
    /// <remarks>Both alternated in one process (scratch harness, 10 rounds, 2026-11-27 05:33 UTC), time with / without:
    /// LeNet-5's first layer at batch 64 0.71 (163 against 231 µs; 0.72 at 2 threads), its second layer at batch 1 0.87,
    /// mnist-8's second layer 0.86 (0.94 at 2 threads), ResNet-18's 7×7 stride-2 first layer 0.99–1.01.</remarks>
    internal static bool DirectStoreRows = true;

    /// <summary>
    /// One channel's 32 accumulated flat positions [p0, p0 + 32) plus its bias and, optionally, ReLU, stored into its output
    /// plane: flat position P is output (P / wp, P % wp), kept when the column is below <paramref name="ow"/> and the row
    /// below <paramref name="oh"/>. Each 16-lane half takes one masked store per output row it touches (one or two when a
    /// row is at least 16 wide).
    /// </summary>
    static unsafe void StoreRows(float* plane, int p0, Vector512<float> lo, Vector512<float> hi, float bias, bool relu, int wp, int ow, int oh)
    {
        BiasRelu(ref lo, ref hi, bias, relu);
        StoreHalf(plane, p0, lo, wp, ow, oh);
        StoreHalf(plane, p0 + 16, hi, wp, ow, oh);

        static void StoreHalf(float* plane, int p, Vector512<float> v, int wp, int ow, int oh)
        {
            var lanes = Vector512<int>.Indices;
            int yEnd = Math.Min(oh - 1, (p + 15) / wp);
            for (int y = p / wp; y <= yEnd; y++)
            {
                // Lanes i with y·wp ≤ p + i < y·wp + ow; lane i goes to plane[y·ow + p + i − y·wp].
                int first = y * wp - p;
                var mask = Vector512.GreaterThanOrEqual(lanes, Vector512.Create(first)) & Vector512.LessThan(lanes, Vector512.Create(first + ow));
                Avx512F.MaskStore(plane + (long)y * ow + (p - (long)y * wp), mask.AsSingle(), v);
            }
        }
    }

    /// <summary>Adds the bias to both halves of a channel's 32 positions and, optionally, applies ReLU (IEEE maximum).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static void BiasRelu(ref Vector512<float> lo, ref Vector512<float> hi, float bias, bool relu)
    {
        var bv = Vector512.Create(bias);
        lo += bv;
        hi += bv;
        if (relu)
        {
            lo = Vector512.Max(lo, Vector512<float>.Zero);
            hi = Vector512.Max(hi, Vector512<float>.Zero);
        }
    }

    /// <summary>Stores one channel's 32 accumulated positions plus its bias and, optionally, ReLU.</summary>
    static unsafe void StoreFlat(float* dst, Vector512<float> lo, Vector512<float> hi, float bias, bool relu)
    {
        BiasRelu(ref lo, ref hi, bias, relu);
        lo.Store(dst);
        hi.Store(dst + 16);
    }

    static Vector256<float> Mad(Vector256<float> a, Vector256<float> b, Vector256<float> c) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    /// <summary>Columns per GEMM when images are folded together.</summary>
    const int FoldColumns = 3072;

    /// <summary>Images [b0, b0 + nb) as one GEMM: im2col columns of image i at i·l, then the result rows scattered to NCHW.</summary>
    void Folded(int b0, int nb, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow, FusedActivation activation, int threads)
    {
        int cg = InChannels, o = OutChannels, l = oh * ow, kdim = cg * KernelH * KernelW, ncols = nb * l;
        int need = kdim * ncols;
        var cols = ThreadScratch.Grow(ref scratch, need);
        var tmp = ThreadScratch.Grow(ref foldOut, o * ncols);
        for (int i = 0; i < nb; i++) Im2Col(xa, xo + (b0 + i) * InChannels * h * w, 0, cg, h, w, cols, oh, ow, ncols, i * l);
        Gemm.SgemmPacked(Packed()[0], ncols, cols, 0, ncols, 1, tmp, 0, ncols, false, threads);
        for (int i = 0; i < nb; i++)
            for (int oc = 0; oc < o; oc++)
            {
                int dst = yo + ((b0 + i) * o + oc) * l;
                var row = ya.AsSpan(dst, l);
                tmp.AsSpan(oc * ncols + i * l, l).CopyTo(row);
                Epilogue(row, bias?[oc] ?? 0f, ra is null ? default : ra.AsSpan(ro + ((b0 + i) * o + oc) * l, l), ra is not null, activation);
            }
    }

    /// <summary>im2col floats per block of output rows on the blocked path (see <see cref="RowBlocks"/>).</summary>
    /// <remarks>ResNet's first layer at 1 thread with blocks of 32 K / 64 K / 128 K / 256 K floats: 1.75 / 1.43 / 1.37 /
    /// 1.41 ms (unblocked: 1.59 ms).</remarks>
    internal const int RowBlockFloats = 1 << 17;

    /// <summary>
    /// One image of a large map (a first layer on a full-size image: ResNet's 7×7 stride-2 convolution makes 12544
    /// positions from K = 147 taps, a 7.4 MB im2col buffer) in blocks of whole output rows: each block's im2col columns
    /// (<see cref="RowBlockFloats"/>, about 512 KB) stay in L2 while the GEMM packs them, and its output rows are still in
    /// cache for the epilogue. Threads take blocks (at batch 1), so there is one fork-join per call.
    /// </summary>
    void RowBlocks(int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow, FusedActivation activation, bool serial)
    {
        int kdim = InChannels * KernelH * KernelW;
        int rowsPer = Math.Max(1, RowBlockFloats / (kdim * ow)), blocks = (oh + rowsPer - 1) / rowsPer;
        int threads = serial ? 1 : Math.Min(Gemm.Threads, blocks);
        if (threads > 1) RowBlocksSplit(blocks, threads, rowsPer, b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation);
        else for (int q = 0; q < blocks; q++) RowBlock(q, rowsPer, b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation);
    }

    void RowBlocksSplit(int blocks, int threads, int rowsPer, int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w,
        int oh, int ow, FusedActivation activation) =>
        WorkerPool.For(blocks, threads, q => RowBlock(q, rowsPer, b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation));

    /// <summary>Output rows [q·rowsPer, (q + 1)·rowsPer) of image <paramref name="b"/>: im2col, GEMM, epilogue.</summary>
    void RowBlock(int q, int rowsPer, int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow, FusedActivation activation)
    {
        int c = InChannels, o = OutChannels, l = oh * ow, kdim = c * KernelH * KernelW;
        int xBase = xo + b * c * h * w, yBase = yo + b * o * l;
        int y0 = q * rowsPer, rows = Math.Min(rowsPer, oh - y0), cols = rows * ow, at = y0 * ow;
        var buf = ThreadScratch.Grow(ref scratch, kdim * cols);
        Im2Col(xa, xBase, 0, c, h, w, buf, rows, ow, cols, 0, y0);
        Gemm.SgemmPacked(Packed()[0], cols, buf, 0, cols, 1, ya, yBase + at, l, false, 1,
            bias, 0, ra, ro + b * o * l + at, activation == FusedActivation.Relu);
    }

    void Image(int b, float[] xa, int xo, float[]? ra, int ro, float[] ya, int yo, int h, int w, int oh, int ow, FusedActivation activation, bool serial)
    {
        int g = Groups, cg = InChannels / g, og = OutChannels / g, kh = KernelH, kw = KernelW, l = oh * ow, kdim = cg * kh * kw;
        bool pointwise = kh == 1 && kw == 1 && Stride == (1, 1) && Padding == (0, 0, 0, 0);
        if (!pointwise && g == 1 && fastPath && (long)kdim * l >= 4L * RowBlockFloats && (long)kdim * ow <= RowBlockFloats)
        {
            RowBlocks(b, xa, xo, ra, ro, ya, yo, h, w, oh, ow, activation, serial);
            return;
        }
        for (int gi = 0; gi < g; gi++)
        {
            int xBase = xo + (b * InChannels + gi * cg) * h * w;
            float[] cols;
            int colOff;
            if (pointwise)
            {
                cols = xa;
                colOff = xBase;
            }
            else
            {
                int need = kdim * l;
                cols = ThreadScratch.Grow(ref scratch, need);
                colOff = 0;
                int parts = serial ? 1 : Math.Min(Gemm.Threads, cg);
                // Batch 1 on several threads: split the im2col rows by input channel so it is not the serial part.
                if (parts > 1 && need >= 1 << 16) Im2ColSplit(parts, xa, xBase, cg, h, w, cols, oh, ow, l);
                else Im2Col(xa, xBase, 0, cg, h, w, cols, oh, ow, l, 0);
            }
            int yBase = yo + (b * OutChannels + gi * og) * l;
            if (fastPath)
            {
                // The epilogue runs inside the product, on each block of C after its last KC block, on the thread that
                // computed it (both threads when split).
                Gemm.SgemmPacked(Packed()[gi], l, cols, colOff, l, 1, ya, yBase, l, false, serial ? 1 : Gemm.Threads,
                    bias, gi * og, ra, ro + (b * OutChannels + gi * og) * l, activation == FusedActivation.Relu);
                continue;
            }
            if (serial) Gemm.SgemmSerial(og, l, kdim, weight!, gi * og * kdim, kdim, 1, cols, colOff, l, 1, ya, yBase, l, false);
            else Gemm.Sgemm(og, l, kdim, weight!, gi * og * kdim, kdim, 1, cols, colOff, l, 1, ya, yBase, l, false);
            EpilogueRows(b, gi, og, l, ya, yBase, ra, ro, activation);
        }
    }

    /// <summary>im2col of input channels [0, c) split by channel over <paramref name="parts"/> threads (rows of length
    /// <paramref name="ld"/>).</summary>
    void Im2ColSplit(int parts, float[] xa, int xBase, int c, int h, int w, float[] cols, int oh, int ow, int ld) =>
        WorkerPool.For(parts, parts, q => Im2Col(xa, xBase, c * q / parts, c * (q + 1) / parts, h, w, cols, oh, ow, ld, 0));

    void EpilogueRows(int b, int gi, int og, int l, float[] ya, int yBase, float[]? ra, int ro, FusedActivation activation)
    {
        for (int oc = 0; oc < og; oc++)
        {
            int oAbs = gi * og + oc;
            var row = ya.AsSpan(yBase + oc * l, l);
            Epilogue(row, bias?[oAbs] ?? 0f, ra is null ? default : ra.AsSpan(ro + (b * OutChannels + oAbs) * l, l), ra is not null, activation);
        }
    }

    /// <summary>The convolution epilogue on one output row: + residual, + bias (unless 0), then the activation, in one pass
    /// (<see cref="Gemm.RowEpilogue"/>, which the GEMM path also runs inside the product).</summary>
    internal static unsafe void Epilogue(Span<float> row, float bias, ReadOnlySpan<float> residual, bool hasResidual, FusedActivation act)
    {
        if (hasResidual && residual.Length != row.Length)
            throw new ArgumentException($"conv epilogue: residual row of {residual.Length} elements for an output row of {row.Length}");
        fixed (float* pr = row, ps = residual)
            Gemm.RowEpilogue(pr, row.Length, hasResidual ? ps : null, bias, act == FusedActivation.Relu);
    }

    /// <summary>
    /// im2col of input channels [chFrom, chTo) of one image's group: row (c, ki, kj) at colOff + row·ld in
    /// <paramref name="dst"/>, its oh·ow columns the output positions of output rows [y0, y0 + oh); zero in the padding.
    /// </summary>
    unsafe void Im2Col(float[] src, int srcBase, int chFrom, int chTo, int h, int w, float[] dst, int oh, int ow, int ld, int colOff, int y0 = 0)
    {
        int kh = KernelH, kw = KernelW, sh = Stride.H, sw = Stride.W, dh = Dilation.H, dw = Dilation.W, ph = Padding.Top, pw = Padding.Left;
        fixed (float* ps = src, pd = dst)
        {
            int r = chFrom * kh * kw;
            for (int ch = chFrom; ch < chTo; ch++)
            {
                float* plane = ps + srcBase + ch * h * w;
                for (int ki = 0; ki < kh; ki++)
                    for (int kj = 0; kj < kw; kj++, r++)
                    {
                        float* d = pd + colOff + (long)r * ld;
                        int ix0 = kj * dw - pw;
                        // Output columns whose input column lies inside [0, w).
                        int x0 = ix0 >= 0 ? 0 : Math.Min(ow, (-ix0 + sw - 1) / sw);
                        int x1 = w - ix0 <= 0 ? x0 : Math.Clamp((w - ix0 + sw - 1) / sw, x0, ow);
                        if (ow <= 32 && sw == 1 && UseMaskedIm2Col)
                        {
                            NarrowRows(plane, w, h, ix0, x0, x1, d, oh, ow, (y0 * sh) - ph + ki * dh, sh);
                            continue;
                        }
                        for (int y = 0; y < oh; y++, d += ow)
                        {
                            int iy = (y0 + y) * sh - ph + ki * dh;
                            if ((uint)iy >= (uint)h)
                            {
                                for (int q = 0; q < ow; q++) d[q] = 0;
                                continue;
                            }
                            float* s = plane + iy * w + ix0;
                            for (int q = 0; q < x0; q++) d[q] = 0;
                            if (sw == 1)
                            {
                                int len = x1 - x0;
                                if (len >= 32) Buffer.MemoryCopy(s + x0, d + x0, len * 4L, len * 4L);
                                else
                                {
                                    int q = x0;
                                    for (; q + 8 <= x1; q += 8) Vector256.Store(Vector256.Load(s + q), d + q);
                                    for (; q < x1; q++) d[q] = s[q];
                                }
                            }
                            else if (sw == 2)
                            {
                                int q = x0;
                                // Eight outputs from 16 loaded floats (the even ones), while the load stays inside the row.
                                if (Avx2.IsSupported)
                                    for (; q + 8 <= x1 && ix0 + 2 * q + 16 <= w; q += 8)
                                    {
                                        Cpu.EvenLanes(Vector256.Load(s + 2 * q), Vector256.Load(s + 2 * q + 8)).Store(d + q);
                                    }
                                for (; q < x1; q++) d[q] = s[2 * q];
                            }
                            else for (int q = x0; q < x1; q++) d[q] = s[q * sw];
                            for (int q = x1; q < ow; q++) d[q] = 0;
                        }
                    }
            }
        }
    }

    /// <summary>Whether <see cref="Im2Col"/> fills stride-1 rows of at most 32 outputs with AVX-512 masked loads and
    /// stores (on by default where AVX-512F is; tests turn it off to compare with the scalar rows).</summary>
    internal static bool UseMaskedIm2Col = Avx512F.IsSupported;

    /// <summary>
    /// One im2col row of a narrow map (ow ≤ 32, stride 1): output row y is one or two 16-lane stores, whose lanes outside
    /// [<paramref name="x0"/>, <paramref name="x1"/>) (padding) are zero, from masked loads that touch only input columns
    /// inside the row (a masked-off lane is not read, so reads never leave the plane).
    /// </summary>
    /// <remarks>
    /// ResNet-18's 7×7 layers (512 channels, 3×3): the scalar rows (7 floats each, with bounds and zero fills) took 142 µs
    /// of the layer's im2col and these 54 µs; in the whole model each of those five layers ran 5–10 % faster (paired rounds in
    /// one process, bench/README.md, "Sessions 10 and 11"). The same idea at stride 2 (even lanes of two loads) made the model's four
    /// stride-2 layers 11–14 % slower, so stride 2 keeps the scalar rows.
    /// </remarks>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    static unsafe void NarrowRows(float* plane, int w, int h, int ix0, int x0, int x1, float* d, int oh, int ow, int iyStart, int sh)
    {
        var idx = Vector512<int>.Indices;
        var z = Vector512<float>.Zero;
        // Lane masks per 16-output chunk: where to store (q < ow) and which outputs have an input column (x0 ≤ q < x1).
        var store0 = Vector512.LessThan(idx, Vector512.Create(ow)).AsSingle();
        var store1 = Vector512.LessThan(idx, Vector512.Create(ow - 16)).AsSingle();
        var load0 = (Vector512.GreaterThanOrEqual(idx, Vector512.Create(x0)) & Vector512.LessThan(idx, Vector512.Create(x1))).AsSingle();
        var load1 = (Vector512.GreaterThanOrEqual(idx, Vector512.Create(x0 - 16)) & Vector512.LessThan(idx, Vector512.Create(x1 - 16))).AsSingle();
        bool two = ow > 16;
        for (int y = 0, iy = iyStart; y < oh; y++, iy += sh, d += ow)
        {
            if ((uint)iy >= (uint)h)
            {
                Avx512F.MaskStore(d, store0, z);
                if (two) Avx512F.MaskStore(d + 16, store1, z);
                continue;
            }
            float* s = plane + (long)iy * w + ix0;
            Avx512F.MaskStore(d, store0, Avx512F.MaskLoad(s, load0, z));
            if (two) Avx512F.MaskStore(d + 16, store1, Avx512F.MaskLoad(s + 16, load1, z));
        }
    }

    static (float[] data, int offset) Flat(Tensor t) =>
        t.IsContiguous ? (t.storage.As<float>(), t.offset) : (t.ContiguousData<float>(), 0);
}

/// <summary>
/// An inference-only float32 fully connected layer y = act(x·W + b) for x [M, K], with W given as [K, N] or, with
/// <c>transposed</c>, as [N, K] (ONNX Gemm with transB, nn.Linear). The weight is packed once into the GEMM's B panels
/// (<see cref="Gemm.PackBOnce"/>), which every call then reads as they are, on every thread; the packed copy replaces the
/// weight rather than adding to it. The bias and activation are fused into the GEMM: each output tile gets them when its
/// last block of the inner dimension is done, while the tile is in L1, not in a second pass over the output. Immutable.
/// </summary>
public sealed class PackedLinear
{
    readonly PackedB weight;   // [K, N], packed
    readonly float[]? bias;    // [N]

    public int InFeatures { get; }
    public int OutFeatures { get; }
    public FusedActivation Activation { get; }

    public PackedLinear(Tensor weight, bool transposed, Tensor? bias, FusedActivation activation)
    {
        if (weight.Dim != 2 || weight.DType != DType.Float32)
            throw new ShapeMismatchException($"packed linear: weight must be a 2-D float32 matrix, got {weight.DType} {ShapeUtil.Format(weight.shape)}");
        InFeatures = transposed ? weight.shape[1] : weight.shape[0];
        OutFeatures = transposed ? weight.shape[0] : weight.shape[1];
        if (bias is not null && (bias.DType != DType.Float32 || bias.NumElements != OutFeatures))
            throw new ShapeMismatchException($"packed linear: bias must be float32 with {OutFeatures} elements, got {bias.DType} {ShapeUtil.Format(bias.shape)}");
        // B(p, j) is weight[j, p] when transposed ([N, K] rows read down their length), else weight[p, j].
        // Read in place when contiguous: the packing copies, so no copy of the plain weight is needed first.
        var source = weight.ContiguousData<float>();
        this.weight = transposed ? Gemm.PackBOnce(InFeatures, OutFeatures, source, 0, 1, InFeatures)
                                 : Gemm.PackBOnce(InFeatures, OutFeatures, source, 0, OutFeatures, 1);
        this.bias = bias?.Contiguous().ToArray<float>();
        Activation = activation;
    }

    /// <summary>Computes act(x·W + b) into <paramref name="output"/> ([M, N], contiguous float32).</summary>
    public void Run(Tensor x, Tensor output)
    {
        if (x.Dim != 2 || x.DType != DType.Float32 || x.shape[1] != InFeatures)
            throw new ShapeMismatchException($"packed linear: input must be float32 [M, {InFeatures}], got {x.DType} {ShapeUtil.Format(x.shape)}");
        int m = x.shape[0], n = OutFeatures, k = InFeatures;
        if (output.Dim != 2 || output.shape[0] != m || output.shape[1] != n || output.DType != DType.Float32 || !output.IsContiguous)
            throw new ShapeMismatchException($"packed linear: output must be a contiguous float32 [{m}, {n}], got {output.DType} {ShapeUtil.Format(output.shape)}");
        var (xa, xo) = x.IsContiguous ? (x.storage.As<float>(), x.offset) : (x.ContiguousData<float>(), 0);
        var ya = output.storage.As<float>();
        int yo = output.offset;
        if (m == 0) return;
        Gemm.SgemmPackedB(m, xa, xo, k, 1, weight, ya, yo, n, false, bias, Activation == FusedActivation.Relu);
    }
}

/// <summary>Inference-only float32 pooling kernels over NCHW, writing into a caller-given contiguous output.</summary>
public static class InferencePool
{
    /// <summary>
    /// Max pooling: out[n, c, y, x] = max over the window at (y·sh − top + i·dh, x·sw − left + j·dw) of the positions
    /// inside the input; NaN propagates. The output's spatial size is taken from <paramref name="output"/> (so ceil-mode
    /// windows past the end are allowed); a window with no input position gives -inf.
    /// </summary>
    /// <remarks>
    /// The max over a rectangle is the max over its columns of the max over its rows, so each output row is made in two
    /// vector passes: the elementwise max of its kh input rows goes into a scratch row padded with -inf (where the window
    /// leaves the input), then each output column takes kw entries of that row (8 outputs at a time for strides 1 and 2,
    /// one at a time otherwise). Every step uses IEEE maximum, which returns NaN when either argument is NaN.
    /// (ResNet-18's 3×3 stride-2 pool on 64×112×112: 1.1 ms with a per-window scalar loop, see bench/README.md.)
    /// </remarks>
    public static void MaxPool2d(Tensor x, Tensor output, (int H, int W) kernel, (int H, int W) stride, (int Top, int Left) padding, (int H, int W) dilation)
    {
        var (xa, xo, ya, yo, planes, h, w, oh, ow) = Check("max_pool2d", x, output);
        var geometry = MaxPoolGeometry(h, w, oh, ow, kernel, stride, padding, dilation);
        if (oh <= 0 || ow <= 0 || planes == 0) return;
        MaxPoolPlanes(planes, xa, xo, ya, yo, geometry);
    }

    /// <summary>The window geometry of <see cref="MaxPool2d"/> for an h×w input and an oh×ow output, with the length of the
    /// separable path's scratch row; throws on a non-positive kernel, stride or dilation, negative padding, or a window or
    /// scratch row too large for 32-bit indices.</summary>
    internal static PoolGeometry MaxPoolGeometry(int h, int w, int oh, int ow, (int H, int W) kernel, (int H, int W) stride, (int Top, int Left) padding, (int H, int W) dilation)
    {
        int kh = kernel.H, kw = kernel.W, sh = stride.H, sw = stride.W, ph = padding.Top, pw = padding.Left, dh = dilation.H, dw = dilation.W;
        if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1)
            throw new NablaException($"max_pool2d: kernel {kernel}, stride {stride} and dilation {dilation} must be positive");
        if (ph < 0 || pw < 0) throw new NablaException($"max_pool2d: padding {padding} must not be negative");
        if ((long)(kh - 1) * dh + 1 > int.MaxValue / 4 || (long)(kw - 1) * dw + 1 > int.MaxValue / 4)
            throw new NablaException($"max_pool2d: kernel {kernel} with dilation {dilation} spans too many rows or columns");
        // Scratch row: input column i sits at pw + i; the last window reaches (ow - 1)·sw + (kw - 1)·dw. 32 floats of slack
        // cover the 16-float loads of the stride-2 path.
        long span = Math.Max((long)pw + w, (long)(Math.Max(ow, 1) - 1) * sw + (long)(kw - 1) * dw + 1);
        if (span > int.MaxValue - 64) throw new NablaException($"max_pool2d: window span {span} is too large");
        // Two rows, even/odd columns: one pass, no scratch row (LeNet-sized 28-wide rows: 53 µs at batch 64 against 83 µs
        // through the separable path). Rows of fewer than 8 outputs too, all scalar: the separable path's scratch row and
        // span calls cost more than the windows (LeNet-5's 10×10 second pool; a batch-1 run of the ONNX LeNet-5 13.3–13.5
        // → 12.0 µs, scratch harness at 14:05 UTC).
        bool twoByTwo = kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && dh == 1 && dw == 1 && Avx2.IsSupported;
        return new PoolGeometry(h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, (int)span + 32, twoByTwo);
    }

    /// <summary>Max pooling of <paramref name="planes"/> consecutive planes (h·w apart in <paramref name="xa"/>, oh·ow apart in
    /// <paramref name="ya"/>), split over threads when there is enough work.</summary>
    internal static void MaxPoolPlanes(int planes, float[] xa, int xo, float[] ya, int yo, in PoolGeometry g)
    {
        long work = (long)planes * g.OH * g.OW * (g.TwoByTwo ? 1 : g.KH * g.KW);
        if (planes > 1 && Gemm.Threads > 1 && work > 1 << 16) MaxPlanesSplit(planes, xa, xo, ya, yo, g);
        else for (int p = 0; p < planes; p++) MaxPoolPlane(xa, xo + p * g.H * g.W, ya, yo + p * g.OH * g.OW, g);
    }

    /// <summary>One plane: the input's H×W at <paramref name="src"/>, the output's OH×OW at <paramref name="dst"/>.</summary>
    internal static void MaxPoolPlane(float[] xa, int src, float[] ya, int dst, in PoolGeometry g)
    {
        if (g.TwoByTwo) MaxPool2x2(xa, src, ya, dst, g.H, g.W, g.OH, g.OW);
        else MaxPlane(xa, src, ya, dst, g);
    }

    /// <summary>A pooling window's geometry and the scratch row's length, passed whole to the per-plane kernel;
    /// <paramref name="TwoByTwo"/>: the 2×2 stride-2 unpadded window, which takes its own one-pass kernel.</summary>
    internal readonly record struct PoolGeometry(int H, int W, int OH, int OW, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int RowLen, bool TwoByTwo);

    // The threaded split is a method of its own, so that a call on one thread allocates no closure.
    static void MaxPlanesSplit(int planes, float[] xa, int xo, float[] ya, int yo, PoolGeometry g) =>
        WorkerPool.For(planes, Gemm.Threads, p => MaxPoolPlane(xa, xo + p * g.H * g.W, ya, yo + p * g.OH * g.OW, g));

    /// <summary>One plane of the separable max pooling (see <see cref="MaxPool2d"/>).</summary>
    static unsafe void MaxPlane(float[] xa, int srcOff, float[] ya, int dstOff, in PoolGeometry g)
    {
        int h = g.H, w = g.W, oh = g.OH, ow = g.OW, kh = g.KH, kw = g.KW, sh = g.SH, sw = g.SW, ph = g.PH, pw = g.PW, dh = g.DH, dw = g.DW, rowLen = g.RowLen;
        // A row of up to 4096 floats on the stack, a wider one in this thread's scratch (grown once; a shared pool may be
        // trimmed by a collection and allocate again).
        Span<float> scratch = rowLen <= 4096 ? stackalloc float[rowLen] : ThreadScratch.Grow(ref wideRow, rowLen).AsSpan(0, rowLen);
        scratch.Fill(float.NegativeInfinity);
        var mid = scratch.Slice(pw, w);
        fixed (float* px = xa, py = ya, vb = scratch)
        {
            float* src = px + srcOff, dst = py + dstOff;
            float* m = vb + pw;
            for (int y = 0; y < oh; y++, dst += ow)
            {
                // The window's rows are taken up to four at a time in one pass over the columns (taller windows fold the
                // running max back in as the first of the next four), instead of one TensorPrimitives call per row.
                // ResNet-18's 3×3 stride-2 pool on 64×112×112, old and new build in alternating processes with JIT tiering
                // off (scratch harness, 2026-11-27 07:50 UTC): 160–250 against 200–310 µs at one thread, 77–105 against
                // 110–142 µs at two; 512-bit vectors measured 0.90–0.95 of the time of 256-bit ones.
                int iy0 = y * sh - ph, n = 0;
                float* r0 = null, r1 = null, r2 = null, r3 = null;
                for (int i = 0; i < kh; i++)
                {
                    int iy = iy0 + i * dh;
                    if ((uint)iy >= (uint)h) continue;
                    float* r = src + (long)iy * w;
                    if (n == 0) r0 = r; else if (n == 1) r1 = r; else if (n == 2) r2 = r; else r3 = r;
                    if (++n == 4)
                    {
                        MaxOfRows(m, w, 4, r0, r1, r2, r3);
                        r0 = m;
                        n = 1;
                    }
                }
                if (n == 0) mid.Fill(float.NegativeInfinity);
                else if (n > 1 || r0 != m) MaxOfRows(m, w, n, r0, r1, r2, r3);
                MaxAlongRow(vb, dst, ow, kw, sw, dw);
            }
        }
    }

    [ThreadStatic] static float[]? wideRow;

    /// <summary>dst[i] = max of the first <paramref name="rows"/> of r0..r3 at i, for i &lt; <paramref name="w"/> (dst may be
    /// r0: each column is read before it is written).</summary>
    static unsafe void MaxOfRows(float* dst, int w, int rows, float* r0, float* r1, float* r2, float* r3)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= w; i += 16)
            {
                var m = Vector512.Load(r0 + i);
                if (rows > 1) m = Vector512.Max(m, Vector512.Load(r1 + i));
                if (rows > 2) m = Vector512.Max(m, Vector512.Load(r2 + i));
                if (rows > 3) m = Vector512.Max(m, Vector512.Load(r3 + i));
                m.Store(dst + i);
            }
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= w; i += 8)
            {
                var m = Vector256.Load(r0 + i);
                if (rows > 1) m = Vector256.Max(m, Vector256.Load(r1 + i));
                if (rows > 2) m = Vector256.Max(m, Vector256.Load(r2 + i));
                if (rows > 3) m = Vector256.Max(m, Vector256.Load(r3 + i));
                m.Store(dst + i);
            }
        for (; i < w; i++)
        {
            float m = r0[i];
            if (rows > 1) m = MathF.Max(m, r1[i]);
            if (rows > 2) m = MathF.Max(m, r2[i]);
            if (rows > 3) m = MathF.Max(m, r3[i]);
            dst[i] = m;
        }
    }

    /// <summary>
    /// 2×2 stride-2 max pooling of one plane: eight windows at a time (vertical max of two rows, then the even/odd
    /// columns of the result); <see cref="Vector256.Max{T}"/> propagates NaN like the scalar rule. The rest of a row,
    /// rows of fewer than 8 outputs, and windows that reach past the input (ceil mode, end padding) take the scalar path;
    /// a window with no input position gives -inf.
    /// </summary>
    static unsafe void MaxPool2x2(float[] xa, int src, float[] ya, int dst, int h, int w, int oh, int ow)
    {
        fixed (float* px = xa, py = ya)
        {
            for (int y = 0; y < oh; y++)
            {
                float* d = py + dst + y * ow;
                if (2 * y >= h)
                {
                    // A window wholly below the input (end padding of 2 or more, which ONNX allows): no input, -inf.
                    new Span<float>(d, ow).Fill(float.NegativeInfinity);
                    continue;
                }
                float* r0 = px + src + 2 * y * w, r1 = r0 + w;
                bool second = 2 * y + 1 < h;
                int xq = 0;
                if (second)
                    for (; xq + 8 <= ow && 2 * xq + 16 <= w; xq += 8)
                    {
                        var m0 = Vector256.Max(Vector256.Load(r0 + 2 * xq), Vector256.Load(r1 + 2 * xq));
                        var m1 = Vector256.Max(Vector256.Load(r0 + 2 * xq + 8), Vector256.Load(r1 + 2 * xq + 8));
                        var even = Avx.Shuffle(m0, m1, 0x88);   // lanes: m0[0,2], m1[0,2], m0[4,6], m1[4,6]
                        var odd = Avx.Shuffle(m0, m1, 0xDD);
                        var m = Vector256.Max(even, odd);
                        Avx2.Permute4x64(m.AsDouble(), 0xD8).AsSingle().Store(d + xq);
                    }
                for (; xq < ow; xq++)
                {
                    int ix = 2 * xq;
                    float m = float.NegativeInfinity;
                    if (ix < w) m = MathF.Max(m, r0[ix]);
                    if (ix + 1 < w) m = MathF.Max(m, r0[ix + 1]);
                    if (second && ix < w) m = MathF.Max(m, r1[ix]);
                    if (second && ix + 1 < w) m = MathF.Max(m, r1[ix + 1]);
                    d[xq] = m;
                }
            }
        }
    }

    /// <summary>dst[x] = max over j &lt; kw of row[x·sw + j·dw] (row padded so every index is readable).</summary>
    static unsafe void MaxAlongRow(float* row, float* dst, int ow, int kw, int sw, int dw)
    {
        int xq = 0;
        if (sw == 1 && Vector256.IsHardwareAccelerated)
            for (; xq + 8 <= ow; xq += 8)
            {
                var m = Vector256.Load(row + xq);
                for (int j = 1; j < kw; j++) m = Vector256.Max(m, Vector256.Load(row + xq + j * dw));
                m.Store(dst + xq);
            }
        else if (sw == 2 && Avx2.IsSupported)
            for (; xq + 8 <= ow; xq += 8)
            {
                // Tap j of outputs xq..xq+7 is row[2·xq + j·dw + 2·i], i < 8: the even (or odd) lanes of 16 floats loaded
                // from the even offset below it. Shuffle keeps both halves in the same lane order, so the maxima are
                // taken shuffled and put in order once.
                Vector256<float> m = default;
                for (int j = 0; j < kw; j++)
                {
                    int o = j * dw;
                    float* r = row + 2 * xq + (o & ~1);
                    var lo = Vector256.Load(r);
                    var hi = Vector256.Load(r + 8);
                    var v = (o & 1) == 0 ? Avx.Shuffle(lo, hi, 0x88) : Avx.Shuffle(lo, hi, 0xDD);
                    m = j == 0 ? v : Vector256.Max(m, v);
                }
                Avx2.Permute4x64(m.AsDouble(), 0xD8).AsSingle().Store(dst + xq);
            }
        for (; xq < ow; xq++)
        {
            float* r = row + (long)xq * sw;
            float m = r[0];
            for (int j = 1; j < kw; j++) m = MathF.Max(m, r[j * dw]);
            dst[xq] = m;
        }
    }

    /// <summary>Mean over each whole H×W plane into output [N, C, 1, 1].</summary>
    public static void GlobalAveragePool2d(Tensor x, Tensor output)
    {
        var (xa, xo, ya, yo, planes, h, w, oh, ow) = Check("global_average_pool2d", x, output);
        if (oh != 1 || ow != 1) throw new ShapeMismatchException($"global_average_pool2d: output must be [N, C, 1, 1], got {ShapeUtil.Format(output.shape)}");
        int hw = h * w;
        for (int p = 0; p < planes; p++) ya[yo + p] = TensorPrimitives.Sum(xa.AsSpan(xo + p * hw, hw)) / hw;
    }

    static (float[] xa, int xo, float[] ya, int yo, int planes, int h, int w, int oh, int ow) Check(string op, Tensor x, Tensor output)
    {
        if (x.Dim != 4 || x.DType != DType.Float32)
            throw new ShapeMismatchException($"{op}: expects a 4-D float32 input [N, C, H, W], got {x.DType} {ShapeUtil.Format(x.shape)}");
        if (output.Dim != 4 || output.DType != DType.Float32 || !output.IsContiguous || output.shape[0] != x.shape[0] || output.shape[1] != x.shape[1])
            throw new ShapeMismatchException($"{op}: output must be a contiguous float32 [{x.shape[0]}, {x.shape[1]}, oh, ow], got {output.DType} {ShapeUtil.Format(output.shape)}");
        var (xa, xo) = x.IsContiguous ? (x.storage.As<float>(), x.offset) : (x.ContiguousData<float>(), 0);
        return (xa, xo, output.storage.As<float>(), output.offset, x.shape[0] * x.shape[1], x.shape[2], x.shape[3], output.shape[2], output.shape[3]);
    }
}
