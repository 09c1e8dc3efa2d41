namespace Nabla;

/// <summary>
/// A convolution and the max pooling that reads it, in one call (<see cref="RunMaxPooled"/>; the ONNX importer fuses
/// Conv → [BatchNormalization] → [Relu] → MaxPool into it). On the direct path the convolution's output never reaches
/// memory whole: for each group of eight channels it is computed a band of rows at a time into this thread's small buffer
/// and pooled from there while it is in cache. ResNet-18's first layer writes 3.2 MB that the pool reads back at once; in
/// the model that round trip cost as much as the data coming from DRAM (bench/README, sessions 12 and 13).
/// </summary>
public sealed partial class PackedConv2d
{
    /// <summary>Whether <see cref="RunMaxPooled"/> takes the banded direct path where it can (else it convolves whole, then
    /// pools). Settable by tests and measurements.</summary>
    internal static bool UseBandedPool = true;

    /// <summary>Floats in one band buffer: eight channels × the band's rows × the output width (128 KB: ResNet-18's first
    /// layer takes 36 rows of 112, 17 pooled rows per band). Settable by tests. ResNet-18 at one thread, fused against
    /// unfused in one process (scratch harness, 2026-11-27 09:40 UTC): the first layer and pool together 1652–1781 µs
    /// against 1894–2015 at 32, 64 and 256 KB alike.</summary>
    internal static int PoolBandFloats = 1 << 15;

    [ThreadStatic] static float[]? poolBand, pooledConv;

    /// <summary>Calls that took the banded path (for tests).</summary>
    internal static long BandedPoolCalls;

    /// <summary>
    /// Computes maxpool(act(conv(x) + bias)) into <paramref name="output"/>, a contiguous float32 [N, O, ph, pw] whose
    /// spatial size the caller chose (floor or ceil mode); the pooling is <see cref="InferencePool.MaxPool2d"/>'s, over
    /// the convolution's output. The result is the same, bit for bit, as <see cref="Run(Tensor, Tensor?, Tensor)"/> followed
    /// by <see cref="InferencePool.MaxPool2d"/>.
    /// </summary>
    public void RunMaxPooled(Tensor x, Tensor output, (int H, int W) kernel, (int H, int W) stride, (int Top, int Left) padding, (int H, int W) dilation)
    {
        if (x.DType != DType.Float32) throw new DTypeException($"packed conv2d + max pool: input must be float32, got {x.DType}");
        var (oh, ow) = OutputSize(x.shape);
        int n = x.shape[0], h = x.shape[2], w = x.shape[3], o = OutChannels;
        if (output.Dim != 4 || output.DType != DType.Float32 || !output.IsContiguous || output.shape[0] != n || output.shape[1] != o)
            throw new ShapeMismatchException($"packed conv2d + max pool: output must be a contiguous float32 [{n}, {o}, ph, pw], got {output.DType} {ShapeUtil.Format(output.shape)}");
        var g = InferencePool.MaxPoolGeometry(oh, ow, output.shape[2], output.shape[3], kernel, stride, padding, dilation);
        if (n == 0 || g.OH == 0 || g.OW == 0) return;
        var (xa, xo) = Flat(x);
        var ya = output.storage.As<float>();
        int yo = output.offset;
        if (UseBandedPool && directGroups is not null && TakesDirect(oh * ow))
        {
            Interlocked.Increment(ref BandedPoolCalls);
            if (n > 1 && Gemm.Threads > 1) PooledImagesSplit(n, xa, xo, ya, yo, h, w, oh, ow, g);
            else
                for (int b = 0; b < n; b++) PooledImage(b, xa, xo, ya, yo, h, w, oh, ow, g, serial: n > 1);
            return;
        }
        // The other paths: the whole convolution into this thread's scratch, then the pool.
        long len = (long)n * o * oh * ow;
        if (len > int.MaxValue) throw new NablaException($"packed conv2d + max pool: output of {len} elements is too large");
        var tmp = ThreadScratch.Grow(ref pooledConv, (int)len);
        RunImages(n, xa, xo, null, 0, tmp, 0, h, w, oh, ow, Activation);
        InferencePool.MaxPoolPlanes(n * o, tmp, 0, ya, yo, g);
    }

    void PooledImagesSplit(int n, float[] xa, int xo, float[] ya, int yo, int h, int w, int oh, int ow, InferencePool.PoolGeometry g) =>
        WorkerPool.For(n, Gemm.Threads, b => PooledImage(b, xa, xo, ya, yo, h, w, oh, ow, g, serial: true));

    /// <summary>Image <paramref name="b"/> on the banded path; at batch 1 the channel groups split over threads as in
    /// <see cref="DirectFlat"/>, each thread with its own padded planes and band buffer.</summary>
    void PooledImage(int b, float[] xa, int xo, float[] ya, int yo, int h, int w, int oh, int ow, InferencePool.PoolGeometry g, bool serial)
    {
        int o = OutChannels, groups = (o + 7) / 8, wp = ow + (KernelW - 1) / Stride.H;
        int threads = serial ? 1 : Math.Min(Gemm.Threads, groups);
        if (threads > 1 && (long)o * oh * wp * InChannels * KernelH * KernelW >= DirectThreadWork)
            PooledGroupsSplit(threads, groups, b, xa, xo, ya, yo, h, w, oh, ow, g);
        else PooledGroups(0, groups, PadPlanes(b, xa, xo, h, w, oh, ow), b, ya, yo, oh, ow, g);
    }

    void PooledGroupsSplit(int threads, int groups, int b, float[] xa, int xo, float[] ya, int yo, int h, int w, int oh, int ow, InferencePool.PoolGeometry g)
    {
        long call = Interlocked.Increment(ref splitCalls);
        WorkerPool.For(threads, threads, q => PooledGroups(groups * q / threads, groups * (q + 1) / threads,
            PadPlanes(b, xa, xo, h, w, oh, ow, call), b, ya, yo, oh, ow, g));
    }

    /// <summary>
    /// Channel groups [gFrom, gTo) of image <paramref name="b"/>: for each group of eight channels, the pooled rows in bands;
    /// a band's convolution rows go into this thread's buffer (eight planes of <c>cap</c> rows) and are pooled from there.
    /// The rows two bands' windows share (one for a 3×3 stride-2 pool) are moved to the buffer's start, not computed again.
    /// </summary>
    void PooledGroups(int gFrom, int gTo, float[] pad, int b, float[] ya, int yo, int oh, int ow, InferencePool.PoolGeometry g)
    {
        int o = OutChannels, span = (g.KH - 1) * g.DH + 1;
        int cap = Math.Max(span, PoolBandFloats / (8 * ow));
        int perBand = Math.Max(1, (cap - span) / g.SH + 1);   // pooled rows whose windows fit in cap rows
        var buf = ThreadScratch.Grow(ref poolBand, 8 * cap * ow);
        long cs = (long)cap * ow;
        int planeOut = g.OH * g.OW;
        for (int grp = gFrom; grp < gTo; grp++)
        {
            int channels = Math.Min(8, o - grp * 8), have0 = 0, have1 = 0;
            for (int py0 = 0; py0 < g.OH; py0 += perBand)
            {
                int py1 = Math.Min(g.OH, py0 + perBand);
                // Convolution rows [r0, r1) hold every row the band's windows reach inside the image.
                int r0 = Math.Clamp(py0 * g.SH - g.PH, 0, oh), r1 = Math.Clamp((py1 - 1) * g.SH - g.PH + span, r0, oh);
                int keep = r0 >= have0 && r0 < have1 ? Math.Min(have1, r1) - r0 : 0;
                if (keep > 0 && r0 > have0)
                    for (int j = 0; j < channels; j++) Array.Copy(buf, j * cs + (long)(r0 - have0) * ow, buf, j * cs, (long)keep * ow);
                if (r0 + keep < r1)
                    DirectFlatGroups(Stride.H, grp, grp + 1, pad, b, buf, keep * ow - grp * 8 * cs, cs, r0 + keep, r1, null, 0, oh, ow, Activation);
                (have0, have1) = (r0, r1);
                // The band as a pooling of its own: its input starts at row r0, so its top padding is what lies above r0.
                var band = g with { H = r1 - r0, OH = py1 - py0, PH = g.PH - py0 * g.SH + r0 };
                for (int j = 0; j < channels; j++)
                    InferencePool.MaxPoolPlane(buf, (int)(j * cs), ya, yo + (b * o + grp * 8 + j) * planeOut + py0 * g.OW, band);
            }
        }
    }
}
