using Nabla.Data;
using Xunit;

namespace Nabla.Tests;

public class IterableDataTests
{
    static IterableDataset<Batch> Stream(int n) => new(() => Enumerable.Range(0, n).Select(i =>
        new Batch(Tensor.Full([2], i), Tensor.Scalar(i % 3, DType.Int64))));

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void BatchesAStreamInOrder(int prefetch)
    {
        var loader = DataLoader.Create(Stream(10), 4, prefetch: prefetch);
        var batches = loader.ToList();
        Assert.Equal(new[] { 4, 4, 2 }, batches.Select(b => b.Input.Size(0)));
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (float)i), batches.SelectMany(b => b.Input.Select(1, 0).ToArray<float>()));
        Assert.Equal(new[] { 4, 2 }, batches[0].Input.Shape);
        // Each enumeration restarts the stream (one epoch each).
        Assert.Equal(3, loader.Count());
        Assert.Equal(2, DataLoader.Create(Stream(10), 4, dropLast: true).Count());
    }

    [Fact]
    public void StreamErrorsReachTheConsumer()
    {
        var broken = new IterableDataset<Batch>(() => Enumerable.Range(0, 5).Select(i =>
            i < 3 ? new Batch(Tensor.Zeros(1), Tensor.Zeros(1)) : throw new DataFormatException($"bad record {i}")));
        var e = Assert.Throws<DataFormatException>(() => DataLoader.Create(broken, 2).ToList());
        Assert.Contains("bad record 3", e.Message);
    }
}
