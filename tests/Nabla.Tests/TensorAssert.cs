using System.Globalization;
using Xunit;

namespace Nabla.Tests;

/// <summary>Elementwise comparison against a PyTorch reference: |actual - expected| ≤ atol + rtol·|expected|, NaN and
/// infinities matched exactly; integer tensors must match exactly. Fails naming the worst element.</summary>
internal static class TensorAssert
{
    public static void Close(string what, Tensor expected, Tensor actual, double rtol, double atol)
    {
        Assert.True(ShapeUtil.Equal(expected.Shape, actual.Shape),
            $"{what}: shape {ShapeUtil.Format(actual.Shape)}, PyTorch has {ShapeUtil.Format(expected.Shape)}");
        if (!expected.DType.IsFloatingPoint())
        {
            Assert.True(expected.DType == actual.DType, $"{what}: dtype {actual.DType}, PyTorch has {expected.DType}");
            Assert.Equal(expected.ToDoubleArray(), actual.ToDoubleArray());
            return;
        }
        Assert.True(actual.DType.IsFloatingPoint(), $"{what}: dtype {actual.DType}, expected floating point");
        var e = expected.ToDoubleArray();
        var a = actual.ToDoubleArray();
        int worst = -1;
        double worstExcess = 0;
        for (int i = 0; i < e.Length; i++)
        {
            double err = Math.Abs(a[i] - e[i]), allowed = atol + rtol * Math.Abs(e[i]);
            bool bad = double.IsNaN(e[i]) ? !double.IsNaN(a[i])
                : double.IsInfinity(e[i]) ? a[i] != e[i]
                : !(err <= allowed);
            if (bad && (worst < 0 || err - allowed > worstExcess)) { worst = i; worstExcess = err - allowed; }
        }
        if (worst >= 0)
        {
            var inv = CultureInfo.InvariantCulture;
            Assert.Fail($"{what}: element {worst} is {a[worst].ToString("R", inv)}, PyTorch has {e[worst].ToString("R", inv)} " +
                $"(|diff| {Math.Abs(a[worst] - e[worst]).ToString("G3", inv)} > atol {atol} + rtol {rtol}·|ref|)");
        }
    }
}
