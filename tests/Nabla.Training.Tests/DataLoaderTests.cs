using Nabla.Data;
using Xunit;

namespace Nabla.Training.Tests;

public class DataLoaderTests
{
    /// <summary>n samples: input [n, 2] with row i = (i, -i), target i.</summary>
    static TensorDataset Numbers(int n)
    {
        var x = new float[n * 2];
        for (int i = 0; i < n; i++) { x[2 * i] = i; x[2 * i + 1] = -i; }
        return new TensorDataset(Tensor.FromArray(x, n, 2), Tensor.FromArray(Enumerable.Range(0, n).Select(i => (long)i).ToArray()));
    }

    static List<long[]> Targets(IEnumerable<Batch> loader) => loader.Select(b => b.Target.ToArray<long>()).ToList();

    /// <summary>A map-style dataset that is not a TensorDataset (so loaders use the per-sample collate path).</summary>
    sealed class ListDataset(int n, int throwAt = -1) : IDataset<Batch>
    {
        public int Count => n;
        public Batch this[int index] => index == throwAt
            ? throw new InvalidOperationException($"sample {index} is broken")
            : new Batch(Tensor.FromArray(new float[] { index, -index }, 2), Tensor.FromArray(new long[] { index }).Reshape([]));
    }

    [Theory]
    [InlineData(10, 3, false, 4, 1)]
    [InlineData(10, 3, true, 3, 3)]
    [InlineData(9, 3, false, 3, 3)]
    [InlineData(9, 3, true, 3, 3)]
    [InlineData(2, 5, true, 0, 0)]
    public void BatchCounts(int n, int batch, bool dropLast, int expectedBatches, int lastSize)
    {
        var loader = DataLoader.Create(Numbers(n), batch, dropLast: dropLast, prefetch: 0);
        Assert.Equal(expectedBatches, loader.Count);
        var batches = loader.ToList();
        Assert.Equal(expectedBatches, batches.Count);
        if (expectedBatches > 0)
        {
            Assert.Equal(lastSize, batches[^1].Target.Size(0));
            Assert.Equal([lastSize, 2], batches[^1].Input.Shape);
        }
    }

    [Fact]
    public void UnshuffledOrderIsSequential()
    {
        var t = Targets(DataLoader.Create(Numbers(7), 3, prefetch: 0)).SelectMany(a => a).ToArray();
        Assert.Equal([0L, 1, 2, 3, 4, 5, 6], t);
    }

    [Fact]
    public void SeededShuffleIsReproducibleAndChangesPerEpoch()
    {
        var a = DataLoader.Create(Numbers(50), 8, shuffle: true, seed: 42, prefetch: 0);
        var b = DataLoader.Create(Numbers(50), 8, shuffle: true, seed: 42, prefetch: 0);
        var a1 = Targets(a).SelectMany(x => x).ToArray();
        var a2 = Targets(a).SelectMany(x => x).ToArray();
        var b1 = Targets(b).SelectMany(x => x).ToArray();
        var b2 = Targets(b).SelectMany(x => x).ToArray();
        Assert.Equal(a1, b1);
        Assert.Equal(a2, b2);
        Assert.NotEqual(a1, a2);
        Assert.NotEqual(Enumerable.Range(0, 50).Select(i => (long)i).ToArray(), a1);
        var c1 = Targets(DataLoader.Create(Numbers(50), 8, shuffle: true, seed: 43, prefetch: 0)).SelectMany(x => x).ToArray();
        Assert.NotEqual(a1, c1);
    }

    [Fact]
    public void EverySampleSeenOncePerEpoch()
    {
        var loader = DataLoader.Create(Numbers(37), 5, shuffle: true, seed: 1);
        for (int epoch = 0; epoch < 3; epoch++)
        {
            var seen = loader.SelectMany(b => b.Target.ToArray<long>()).OrderBy(v => v).ToArray();
            Assert.Equal(Enumerable.Range(0, 37).Select(i => (long)i).ToArray(), seen);
        }
        // Inputs travel with their targets.
        foreach (var b in loader)
        {
            var x = b.Input.ToArray<float>();
            var y = b.Target.ToArray<long>();
            for (int i = 0; i < y.Length; i++) Assert.Equal([(float)y[i], -(float)y[i]], x[(2 * i)..(2 * i + 2)]);
        }
    }

    [Fact]
    public void DropLastWithShuffleStillSeesEachSampleAtMostOnce()
    {
        var loader = DataLoader.Create(Numbers(23), 5, shuffle: true, dropLast: true, seed: 3, prefetch: 0);
        var seen = loader.SelectMany(b => b.Target.ToArray<long>()).ToArray();
        Assert.Equal(20, seen.Length);
        Assert.Equal(20, seen.Distinct().Count());
    }

    [Fact]
    public void CustomCollate()
    {
        var ds = new ListDataset(10);
        var loader = new DataLoader<Batch, long[]>(ds, 4, items => items.Select(b => (long)b.Target.Item() * 10).ToArray(), prefetch: 0);
        var batches = loader.ToList();
        Assert.Equal(3, batches.Count);
        Assert.Equal([0L, 10, 20, 30], batches[0]);
        Assert.Equal([80L, 90], batches[2]);
    }

    [Fact]
    public void DefaultCollateStacksAndMatchesTheGatherPath()
    {
        // A generic dataset goes through Stack; a TensorDataset through one IndexSelect: same batches.
        var viaStack = DataLoader.Create(new ListDataset(11), 4, shuffle: true, seed: 9, prefetch: 0).ToList();
        var viaGather = DataLoader.Create(Numbers(11), 4, shuffle: true, seed: 9, prefetch: 0).ToList();
        Assert.Equal(viaGather.Count, viaStack.Count);
        for (int i = 0; i < viaStack.Count; i++)
        {
            Assert.Equal(viaGather[i].Input.Shape, viaStack[i].Input.Shape);
            Assert.Equal(viaGather[i].Input.ToArray<float>(), viaStack[i].Input.ToArray<float>());
            Assert.Equal(viaGather[i].Target.ToArray<long>(), viaStack[i].Target.ToArray<long>());
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(8)]
    public void PrefetchGivesTheSameBatchesAsSynchronousLoading(int prefetch)
    {
        var sync = DataLoader.Create(new ListDataset(53), 6, shuffle: true, seed: 5, prefetch: 0);
        var pre = DataLoader.Create(new ListDataset(53), 6, shuffle: true, seed: 5, prefetch: prefetch);
        for (int epoch = 0; epoch < 2; epoch++)
        {
            var s = sync.ToList();
            var p = pre.ToList();
            Assert.Equal(s.Count, p.Count);
            for (int i = 0; i < s.Count; i++)
            {
                Assert.Equal(s[i].Input.ToArray<float>(), p[i].Input.ToArray<float>());
                Assert.Equal(s[i].Target.ToArray<long>(), p[i].Target.ToArray<long>());
            }
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void ExceptionInDatasetSurfacesToTheConsumer(int prefetch)
    {
        var loader = DataLoader.Create(new ListDataset(20, throwAt: 13), 4, prefetch: prefetch);
        int received = 0;
        var e = Assert.Throws<InvalidOperationException>(() => { foreach (var _ in loader) received++; });
        Assert.Contains("sample 13 is broken", e.Message);
        Assert.Equal(3, received); // batches 0..2 are fine; batch 3 holds sample 13
    }

    [Fact]
    public async Task BreakingOutOfAPrefetchingLoopDoesNotHang()
    {
        var loader = DataLoader.Create(new ListDataset(200, throwAt: 150), 2, prefetch: 1);
        for (int k = 0; k < 5; k++)
        {
            var task = Task.Run(() => { foreach (var _ in loader) break; });
            var done = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(20)));
            Assert.True(done == task, "enumeration did not finish after break");
        }
    }

    [Fact]
    public void BadBatchSizeIsAnError()
    {
        Assert.Throws<NablaException>(() => DataLoader.Create(Numbers(4), 0));
    }
}

public class SubsetAndSplitTests
{
    static TensorDataset Numbers(int n) =>
        new(Tensor.FromArray(Enumerable.Range(0, n).Select(i => (float)i).ToArray(), n, 1), Tensor.FromArray(Enumerable.Range(0, n).Select(i => (long)i).ToArray()));

    static long Label(Batch b) => (long)b.Target.Item();

    [Fact]
    public void SubsetMapsIndices()
    {
        var s = Numbers(10).Subset([7, 2, 9]);
        Assert.Equal(3, s.Count);
        Assert.Equal(7, Label(s[0]));
        Assert.Equal(9, Label(s[2]));
        var e = Assert.Throws<IndexOutOfBoundsException>(() => Numbers(10).Subset([1, 10]));
        Assert.Contains("10", e.Message);
    }

    [Fact]
    public void RandomSplitByFractions()
    {
        var parts = DatasetUtils.RandomSplit(Numbers(10), [0.7, 0.3], new Generator(1));
        Assert.Equal([7, 3], parts.Select(p => p.Count).ToArray());
        AssertPartition(parts, 10);
        // Remainders are distributed round-robin, as in PyTorch.
        var thirds = DatasetUtils.RandomSplit(Numbers(10), [0.33, 0.33, 0.34], new Generator(1));
        Assert.Equal([4, 3, 3], thirds.Select(p => p.Count).ToArray());
        AssertPartition(thirds, 10);
    }

    [Fact]
    public void RandomSplitByCountsIsSeeded()
    {
        var a = DatasetUtils.RandomSplit(Numbers(20), [12, 8], new Generator(3));
        var b = DatasetUtils.RandomSplit(Numbers(20), [12, 8], new Generator(3));
        var c = DatasetUtils.RandomSplit(Numbers(20), [12, 8], new Generator(4));
        Assert.Equal([12, 8], a.Select(p => p.Count).ToArray());
        AssertPartition(a, 20);
        Assert.Equal(a[0].Indices, b[0].Indices);
        Assert.NotEqual(a[0].Indices, c[0].Indices);
    }

    [Fact]
    public void RandomSplitRejectsBadLengths()
    {
        var e = Assert.Throws<ShapeMismatchException>(() => DatasetUtils.RandomSplit(Numbers(10), [5, 4]));
        Assert.Contains("9", e.Message);
        Assert.Contains("10 samples", e.Message);
        // Negative lengths that happen to add up.
        Assert.Throws<ShapeMismatchException>(() => DatasetUtils.RandomSplit(Numbers(10), [11, -1]));
        // Fractions that do not add up to 1 are named as such.
        var f = Assert.Throws<ShapeMismatchException>(() => DatasetUtils.RandomSplit(Numbers(10), [0.5, 0.4]));
        Assert.Contains("0.9", f.Message);
    }

    static void AssertPartition<T>(Subset<T>[] parts, int n)
    {
        var all = parts.SelectMany(p => p.Indices).ToList();
        Assert.Equal(n, all.Count);
        Assert.Equal(Enumerable.Range(0, n), all.OrderBy(i => i));
    }
}

public class TransformsTests
{
    [Fact]
    public void NormalizePerChannel()
    {
        // [C=2, H=1, W=2]
        var x = Tensor.FromArray(new float[] { 1, 3, 10, 20 }, 2, 1, 2);
        var y = Transforms.Normalize(x, [1, 10], [2, 5]).ToArray<float>();
        Assert.Equal([0f, 1f, 0f, 2f], y);
        // Batched [N=1, C=2, H=1, W=2].
        var yb = Transforms.Normalize(x.Unsqueeze(0), [1, 10], [2, 5]);
        Assert.Equal([1, 2, 1, 2], yb.Shape);
        Assert.Equal(y, yb.ToArray<float>());
        var e = Assert.Throws<ShapeMismatchException>(() => Transforms.Normalize(x, [0.5, 0.5, 0.5], [1, 1, 1]));
        Assert.Contains("[2, 1, 2]", e.Message);
    }

    [Fact]
    public void ToTensorScalesAndMovesChannelsFirst()
    {
        var img = Tensor.FromArray(new byte[] { 0, 255, 51, 102, 0, 255 }, 1, 2, 3); // [H=1, W=2, C=3]
        var t = Transforms.ToTensor(img);
        Assert.Equal([3, 1, 2], t.Shape);
        Assert.Equal([0f, 102 / 255f, 1f, 0f, 51 / 255f, 1f], t.ToArray<float>());
    }

    [Fact]
    public void RandomCropWithPaddingKeepsShapeAndTakesAWindowOfThePaddedImage()
    {
        const int h = 4, w = 5, pad = 2;
        var data = Enumerable.Range(1, h * w).Select(i => (float)i).ToArray();
        var x = Tensor.FromArray(data, 1, h, w);
        float Padded(int r, int c) => r < pad || r >= h + pad || c < pad || c >= w + pad ? 0f : data[(r - pad) * w + (c - pad)];
        var g = new Generator(11);
        var offsets = new HashSet<(int, int)>();
        bool sawPadding = false;
        for (int trial = 0; trial < 60; trial++)
        {
            var y = Transforms.RandomCrop(x, 4, pad, g);
            Assert.Equal([1, 4, 4], y.Shape);
            var v = y.Contiguous().ToArray<float>();
            sawPadding |= v.Contains(0f);
            // Exactly one window of the padded image matches (values are distinct apart from the zeros).
            var matches = new List<(int, int)>();
            for (int top = 0; top <= h + 2 * pad - 4; top++)
                for (int left = 0; left <= w + 2 * pad - 4; left++)
                {
                    bool ok = true;
                    for (int r = 0; r < 4 && ok; r++)
                        for (int c = 0; c < 4 && ok; c++) ok = v[r * 4 + c] == Padded(top + r, left + c);
                    if (ok) matches.Add((top, left));
                }
            Assert.Single(matches);
            offsets.Add(matches[0]);
        }
        Assert.True(sawPadding);
        Assert.True(offsets.Count > 5, $"only {offsets.Count} distinct crop offsets in 60 draws");
        // Same generator seed, same crop.
        Assert.Equal(Transforms.RandomCrop(x, 4, pad, new Generator(5)).Contiguous().ToArray<float>(),
                     Transforms.RandomCrop(x, 4, pad, new Generator(5)).Contiguous().ToArray<float>());
        Assert.Throws<ShapeMismatchException>(() => Transforms.RandomCrop(x, 9, 0));
    }

    [Fact]
    public void RandomCropOnABatchCropsTheLastTwoDimensions()
    {
        var x = Tensor.Rand([3, 2, 8, 8], DType.Float32, new Generator(1));
        Assert.Equal([3, 2, 6, 6], Transforms.RandomCrop(x, 6, 1, new Generator(2)).Shape);
    }

    [Fact]
    public void HorizontalFlip()
    {
        var x = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 1, 2, 3);
        Assert.Equal([3f, 2, 1, 6, 5, 4], Transforms.RandomHorizontalFlip(x, 1.0).Contiguous().ToArray<float>());
        Assert.Equal([1f, 2, 3, 4, 5, 6], Transforms.RandomHorizontalFlip(x, 0.0).Contiguous().ToArray<float>());
        var g = new Generator(7);
        int flips = 0;
        for (int i = 0; i < 200; i++) if (Transforms.RandomHorizontalFlip(x, 0.5, g).Contiguous().ToArray<float>()[0] == 3f) flips++;
        Assert.InRange(flips, 60, 140);
    }
}
