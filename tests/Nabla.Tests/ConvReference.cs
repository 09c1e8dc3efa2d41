using Xunit;

namespace Nabla.Tests;

/// <summary>What the inference convolution tests compare against: the eager convolution in float64 (im2col and a double
/// GEMM), independent of <see cref="PackedConv2d"/>, which the float32 eager convolution itself runs on.</summary>
static class ConvReference
{
    public static Tensor Conv(Tensor x, Tensor w, Tensor? b, (int, int) stride, (int, int) pad, (int, int)? dil = null, int groups = 1) =>
        Functional.Conv2d(x.To(DType.Float64), w.To(DType.Float64), b?.To(DType.Float64), stride, pad, dil ?? (1, 1), groups).To(DType.Float32);

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
