using Xunit;
using F = Nabla.Functional;

namespace Nabla.Tests;

/// <summary>Misuse throws a typed exception whose message names the op, the shapes and the dimension involved.</summary>
public class ErrorTests
{
    static T Throws<T>(Action action, params string[] fragments) where T : NablaException
    {
        var e = Assert.Throws<T>(action);
        foreach (var f in fragments) Assert.Contains(f, e.Message);
        return e;
    }

    [Fact]
    public void MatmulInnerDimensionMismatchReadsExactly()
    {
        var e = Assert.Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Matmul(Tensor.Zeros(4, 5)));
        Assert.Equal("matmul: inner dimensions differ (3 vs 4); left [2, 3], right [4, 5]", e.Message);
        e = Assert.Throws<ShapeMismatchException>(() => Tensor.Zeros(3).Matmul(Tensor.Zeros(2, 4, 5)));
        Assert.Equal("matmul: inner dimensions differ (3 vs 4); left [3], right [2, 4, 5]", e.Message);
    }

    [Fact]
    public void MatmulOtherShapeErrors()
    {
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3, 4).Matmul(Tensor.Zeros(3, 4, 5)), "matmul", "[2, 3, 4]", "[3, 4, 5]", "dimension 0");
        Throws<ShapeMismatchException>(() => Tensor.Scalar(1).Matmul(Tensor.Zeros(2)), "matmul", "at least 1 dimension");
        Throws<DTypeException>(() => Tensor.Zeros([2, 2], DType.Int64).Matmul(Tensor.Zeros([2, 2], DType.Int64)), "matmul", "integer");
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Mm(Tensor.Zeros(3)), "mm", "[2, 3]", "[3]");
        Throws<ShapeMismatchException>(() => F.Linear(Tensor.Zeros(2, 3), Tensor.Zeros(4, 5)), "linear", "[2, 3]", "[4, 5]");
    }

    [Fact]
    public void BroadcastingErrorsNameBothShapesAndTheDimension()
    {
        var e = Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Add(Tensor.Zeros(4)));
        Assert.Equal("add: shapes [2, 3] and [4] cannot be broadcast: dimension 1 has sizes 3 and 4", e.Message);
        Throws<ShapeMismatchException>(() => Tensor.Zeros(5, 2, 3).Mul(Tensor.Zeros(4, 1, 3)), "mul", "[5, 2, 3]", "[4, 1, 3]", "dimension 0", "5 and 4");
        Throws<ShapeMismatchException>(() => Tensor.Where(Tensor.Zeros([3], DType.Bool), Tensor.Zeros(2, 1), Tensor.Zeros(2)), "where", "[3]", "[2, 2]");
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Expand(4, 3), "expand", "[2, 3]", "[4, 3]", "dimension 0");
        Throws<ShapeMismatchException>(() => Tensor.Zeros(3).Lt(Tensor.Zeros(2)), "lt", "[3]", "[2]");
    }

    [Fact]
    public void DimensionOutOfRange()
    {
        var e = Throws<DimensionOutOfRangeException>(() => Tensor.Zeros(2, 3).Sum(2));
        Assert.Equal("sum: dimension 2 out of range for a tensor of rank 2 (expected in [-2, 1])", e.Message);
        Throws<DimensionOutOfRangeException>(() => F.Softmax(Tensor.Zeros(2, 3), -3), "dimension -3", "rank 2");
        Throws<DimensionOutOfRangeException>(() => Tensor.Zeros(2, 3).Transpose(0, 5), "transpose", "dimension 5");
        Throws<DimensionOutOfRangeException>(() => Tensor.Zeros(2, 3).Size(3), "size");
        Throws<DimensionOutOfRangeException>(() => Tensor.Zeros(2).Unsqueeze(3), "unsqueeze");
        Throws<DimensionOutOfRangeException>(() => Tensor.Cat([Tensor.Zeros(2)], 1), "cat");
        Throws<DimensionOutOfRangeException>(() => Tensor.Zeros(2, 3).Max(2), "max");
        Throws<DimensionOutOfRangeException>(() => Tensor.Zeros(2, 3).Sum([0, -2]), "sum", "repeats");
    }

    [Fact]
    public void IndexOutOfBounds()
    {
        var e = Throws<IndexOutOfBoundsException>(() => Tensor.Zeros(3, 2).IndexSelect(0, Tensor.FromArray(new long[] { 0, 5 })));
        Assert.Equal("index_select: index 5 is out of bounds for dimension 0 with size 3", e.Message);
        Throws<IndexOutOfBoundsException>(() => Tensor.Zeros(3, 2).Select(1, 2), "select", "index 2", "dimension 1", "size 2", "[3, 2]");
        Throws<IndexOutOfBoundsException>(() => Tensor.Zeros(3, 2).Gather(1, Tensor.FromArray(new long[] { 0, 2 }, 1, 2)), "gather", "index 2", "dimension 1");
        Throws<IndexOutOfBoundsException>(() => Tensor.Zeros(3, 2).ScatterAdd(0, Tensor.FromArray(new long[] { -4 }, 1, 1), Tensor.Ones(1, 1)), "scatter_add", "-4");
        Throws<IndexOutOfBoundsException>(() => Tensor.Zeros(3, 2).Index(Tensor.FromArray(new long[] { 3 })), "index", "3", "size 3");
        Throws<IndexOutOfBoundsException>(() => Tensor.Zeros(3).Index(null, null), "too many indices");
        Throws<IndexOutOfBoundsException>(() => F.Embedding(Tensor.FromArray(new long[] { 7 }), Tensor.Zeros(4, 2)), "index 7", "size 4");
        Throws<IndexOutOfBoundsException>(() => Losses.CrossEntropy(Tensor.Zeros(2, 3), Tensor.FromArray(new long[] { 0, 3 })), "target 3", "3 classes");
        Throws<IndexOutOfBoundsException>(() => Tensor.Zeros(4).Narrow(0, 2, 3), "narrow", "size 4");
        Throws<IndexOutOfBoundsException>(() => Tensor.Zeros(4).Topk(5), "topk", "k (5)");
    }

    [Fact]
    public void CatAndStackMismatch()
    {
        var e = Throws<ShapeMismatchException>(() => Tensor.Cat([Tensor.Zeros(2, 3), Tensor.Zeros(2, 4)], 0));
        Assert.Equal("cat: sizes of tensors must match except in dimension 0; tensor 0 has shape [2, 3], tensor 1 has shape [2, 4] (dimension 1)", e.Message);
        Throws<ShapeMismatchException>(() => Tensor.Cat([Tensor.Zeros(2, 3), Tensor.Zeros(3)]), "cat", "rank", "[2, 3]", "[3]");
        Throws<ShapeMismatchException>(() => Tensor.Stack([Tensor.Zeros(2), Tensor.Zeros(3)]), "stack", "[2]", "[3]", "entry 1");
        Throws<NablaException>(() => Tensor.Cat(Array.Empty<Tensor>()), "cat", "non-empty");
    }

    [Fact]
    public void ConvolutionChannelMismatch()
    {
        var e = Throws<ShapeMismatchException>(() => F.Conv2d(Tensor.Zeros(1, 3, 5, 5), Tensor.Zeros(4, 2, 3, 3)));
        Assert.Equal("conv2d: input [1, 3, 5, 5] has 3 channels but weight [4, 2, 3, 3] with groups=1 expects 2 (dimension 1)", e.Message);
        Throws<ShapeMismatchException>(() => F.Conv2d(Tensor.Zeros(1, 4, 5, 5), Tensor.Zeros(3, 2, 3, 3), groups: 2), "groups 2", "output channels 3");
        Throws<ShapeMismatchException>(() => F.Conv2d(Tensor.Zeros(3, 5, 5), Tensor.Zeros(4, 3, 3, 3)), "conv2d", "4-D input", "[3, 5, 5]");
        Throws<ShapeMismatchException>(() => F.Conv2d(Tensor.Zeros(1, 1, 2, 2), Tensor.Zeros(1, 1, 3, 3)), "conv2d", "kernel 3x3", "[1, 1, 2, 2]");
        e = Throws<ShapeMismatchException>(() => F.Conv1d(Tensor.Zeros(1, 2, 8), Tensor.Zeros(4, 3, 3)));
        Assert.Equal("conv1d: input [1, 2, 8] has 2 channels but weight [4, 3, 3] with groups=1 expects 3 (dimension 1)", e.Message);
        Throws<ShapeMismatchException>(() => F.ConvTranspose2d(Tensor.Zeros(1, 3, 4, 4), Tensor.Zeros(2, 3, 3, 3)), "conv_transpose2d", "[1, 3, 4, 4]", "[2, 3, 3, 3]");
        Throws<ShapeMismatchException>(() => F.MaxPool2d(Tensor.Zeros(4, 4), 2), "max_pool2d", "[4, 4]");
    }

    [Fact]
    public void ViewAndReshapeErrors()
    {
        var t = Tensor.Zeros(2, 3).T;
        var e = Throws<ShapeMismatchException>(() => t.View(6));
        Assert.Equal("view: size [6] is not compatible with the strides of input of shape [3, 2], strides [1, 3]; use Reshape()", e.Message);
        Assert.Equal([6], t.Reshape(6).Shape);
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Reshape(4, 2), "reshape", "[4, 2]", "[2, 3]", "6 elements");
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Reshape(-1, -1), "only one dimension can be inferred");
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Reshape(-1, 4), "reshape", "[-1, 4]");
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Permute(0), "permute", "rank 2");
        Throws<ShapeMismatchException>(() => { _ = Tensor.Zeros(2, 3, 4).T; }, "T", "[2, 3, 4]");
    }

    [Fact]
    public void OtherMisuse()
    {
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2).Item(), "item", "[2]");
        Throws<DTypeException>(() => Tensor.Zeros(2).ToArray<double>(), "torch.float32", "Double");
        Throws<ShapeMismatchException>(() => Tensor.FromArray(new float[5], 2, 3), "5 values", "[2, 3]");
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, -1), "negative dimension");
        Throws<DTypeException>(() => Tensor.Zeros([2], DType.Bool).Add(Tensor.Zeros([2], DType.Bool)), "add", "bool");
        Throws<DTypeException>(() => Tensor.Zeros(3).Gather(0, Tensor.Zeros(3)), "gather", "int64");
        Throws<ShapeMismatchException>(() => Losses.MseLoss(Tensor.Zeros(2, 3), Tensor.Zeros(3, 2)), "mse_loss", "[2, 3]", "[3, 2]");
        Throws<ShapeMismatchException>(() => Losses.NllLoss(Tensor.Zeros(2, 3), Tensor.Zeros([3], DType.Int64)), "nll_loss", "[3]", "[2, 3]");
        Throws<NablaException>(() => Tensor.Arange(0, 1, 0), "arange", "step");
        Throws<NablaException>(() => Tensor.Full([2], 1.5).Bernoulli(), "bernoulli", "[0, 1]");
        Throws<NablaException>(() => F.Pad(Tensor.Zeros(3), [1, 1], "circular"), "pad", "circular");
        Throws<ShapeMismatchException>(() => F.Pad(Tensor.Zeros(1, 3), [3, 0], "reflect"), "reflect", "size 3", "dimension 1");
        Throws<ShapeMismatchException>(() => Tensor.Zeros(2, 3).Gather(1, Tensor.Zeros([2], DType.Int64)), "gather", "rank");
    }
}
