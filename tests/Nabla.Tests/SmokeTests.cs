using Xunit;

namespace Nabla.Tests;

public class SmokeTests
{
    [Fact]
    public void AddMatmulBackward()
    {
        var a = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3).RequiresGrad_();
        var b = Tensor.FromArray(new float[] { 1, 0, 0, 1, 1, 1 }, 3, 2).RequiresGrad_();
        var y = a.Matmul(b);
        Assert.Equal(new float[] { 4, 5, 10, 11 }, y.ToArray<float>());
        y.Sum().Backward();
        Assert.Equal(new float[] { 1, 1, 2, 1, 1, 2 }, a.Grad!.ToArray<float>());
        Assert.Equal(new float[] { 5, 5, 7, 7, 9, 9 }, b.Grad!.ToArray<float>());
        Assert.Equal("tensor([[ 4.,  5.],\n        [10., 11.]], grad_fn=<MatmulBackward>)", y.ToString());
    }
}
