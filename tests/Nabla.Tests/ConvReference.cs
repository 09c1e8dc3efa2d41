using Xunit;

namespace Nabla.Tests;

/// <summary>What the inference convolution tests compare against: the eager convolution in float64 (im2col and a double
/// GEMM), independent of <see cref="PackedConv2d"/>, which the float32 eager convolution itself runs on.</summary>
static class ConvReference
{
    public static Tensor Conv(Tensor x, Tensor w, Tensor? b, (int, int) stride, (int, int) pad, (int, int)? dil = null, int groups = 1) =>
        Functional.Conv2d(x.To(DType.Float64), w.To(DType.Float64), b?.To(DType.Float64), stride, pad, dil ?? (1, 1), groups).To(DType.Float32);

    /// <summary>
    /// A fast path of <paramref name="conv"/> against the float64 reference and against the path it replaces: with the
    /// path off (<paramref name="use"/>(false)) nothing is built; with it set to <paramref name="on"/> at 1 thread,
    /// <paramref name="built"/> says whether it ran, every element is overwritten and matches (bias, residual and ReLU, then
    /// no activation) within <paramref name="tol"/>; 2 threads give the same bits. The switch and the thread count are restored.
    /// </summary>
    public static void CheckPath(PackedConv2d conv, Tensor x, Tensor reference, Tensor residual, Action<bool> use, bool on, bool restore, Func<bool> built,
        double tol = 1e-4)
    {
        int savedThreads = Gemm.Threads;
        try
        {
            use(false);
            var other = conv.Run(x, residual);
            Assert.False(built());
            use(on);
            Gemm.Threads = 1;
            var y = Tensor.Full(reference.Shape, float.NaN);   // every element must be overwritten
            conv.Run(x, residual, y);
            Assert.Equal(on, built());
            Close(reference.Add(residual).Relu(), y, tol);
            Close(other, y, tol);
            var plain = Tensor.Full(reference.Shape, float.NaN);
            conv.Run(x, null, plain, FusedActivation.None);
            Close(reference, plain, tol);
            // Two threads split the work (channel blocks, positions, channels, the 16 products, images); each output is
            // computed the same way, so the results are bitwise equal.
            // First a whole run on other values, so that the per-thread scratch the paths reuse from call to call holds
            // other data, then every thread of the split fills the scratch it has with NaN before its first part (a buffer
            // grown during the call is new): a part of the split that is never written then shows instead of passing with
            // the values of an earlier run.
            conv.Run(x.Neg(), residual);
            Gemm.Threads = 2;
            WorkerPool.PoisonThreads(PackedConv2d.PoisonScratch);
            try { Assert.Equal(y.ToArray<float>(), conv.Run(x, residual).ToArray<float>()); }
            finally { WorkerPool.PoisonThreads(null); }
        }
        finally
        {
            use(restore);
            Gemm.Threads = savedThreads;
        }
    }

    /// <summary>
    /// A path of <paramref name="conv"/> switched by <paramref name="use"/> against the one it replaces, at 1 and 2 threads:
    /// with the switch off, then set to <paramref name="on"/> (after <paramref name="between"/>, e.g. poisoning a scratch),
    /// each run writes a NaN-filled output; the switched run matches <paramref name="expected"/> within 1e-4 and the other
    /// run bit for bit. The switch and the thread count are restored (the switch to <paramref name="restore"/>).
    /// </summary>
    public static void SameBitsAcrossSwitch(PackedConv2d conv, Tensor x, Tensor expected, Action<bool> use, bool on, bool restore,
        Action? between = null)
    {
        int savedThreads = Gemm.Threads;
        try
        {
            foreach (int threads in new[] { 1, 2 })
            {
                Gemm.Threads = threads;
                use(false);
                var before = Tensor.Full(expected.Shape, float.NaN);
                conv.Run(x, null, before);
                between?.Invoke();
                use(on);
                var after = Tensor.Full(expected.Shape, float.NaN);   // every element must be overwritten
                conv.Run(x, null, after);
                Close(expected, after);
                Assert.Equal(before.ToArray<float>(), after.ToArray<float>());
            }
        }
        finally
        {
            use(restore);
            Gemm.Threads = savedThreads;
        }
    }

    /// <summary>Same shape, and every element within <paramref name="tol"/> relative (absolute below 1).</summary>
    public static void Close(Tensor expected, Tensor actual, double tol = 1e-4)
    {
        Assert.Equal(expected.Shape, actual.Shape);
        var e = expected.Contiguous().ToArray<float>();
        var a = actual.Contiguous().ToArray<float>();
        for (int i = 0; i < e.Length; i++)
            Assert.True(Math.Abs(e[i] - a[i]) <= tol * Math.Max(1, Math.Abs(e[i])), $"element {i}: expected {e[i]}, got {a[i]}");
    }
}
