using System.Collections.Concurrent;

namespace Nabla.Data;

/// <summary>A map-style dataset: a count and random access by index (torch.utils.data.Dataset).</summary>
public interface IDataset<out T>
{
    int Count { get; }
    T this[int index] { get; }
}

/// <summary>An iterable-style dataset: a stream of samples with no random access.</summary>
public interface IIterableDataset<out T> : IEnumerable<T> { }

/// <summary>A labelled sample or batch: input and target tensors.</summary>
public readonly record struct Batch(Tensor Input, Tensor Target);

/// <summary>Samples are rows of tensors that share their first dimension. Batches are gathered in one IndexSelect.</summary>
public sealed class TensorDataset : IDataset<Batch>
{
    public Tensor Inputs { get; }
    public Tensor Targets { get; }

    public TensorDataset(Tensor inputs, Tensor targets)
    {
        if (inputs.Size(0) != targets.Size(0))
            throw new ShapeMismatchException($"TensorDataset: inputs have {inputs.Size(0)} rows but targets have {targets.Size(0)} (shapes {ShapeUtil.Format(inputs.shape)} and {ShapeUtil.Format(targets.shape)})");
        Inputs = inputs;
        Targets = targets;
    }

    public int Count => Inputs.Size(0);
    public Batch this[int index] => new(Inputs.Select(0, index), Targets.Select(0, index));

    public Batch Gather(int[] indices)
    {
        var idx = Tensor.FromArray(Array.ConvertAll(indices, i => (long)i));
        return new Batch(Inputs.IndexSelect(0, idx), Targets.IndexSelect(0, idx));
    }
}

/// <summary>A view of a dataset at the given indices.</summary>
public sealed class Subset<T> : IDataset<T>
{
    public IDataset<T> Dataset { get; }
    public int[] Indices { get; }

    public Subset(IDataset<T> dataset, int[] indices)
    {
        foreach (var i in indices)
            if (i < 0 || i >= dataset.Count) throw new IndexOutOfBoundsException($"Subset: index {i} is out of range for a dataset of {dataset.Count} samples");
        Dataset = dataset;
        Indices = indices;
    }

    public int Count => Indices.Length;
    public T this[int index] => Dataset[Indices[index]];
}

/// <summary>A dataset whose samples pass through a transform when read.</summary>
public sealed class TransformedDataset<T, TOut> : IDataset<TOut>
{
    readonly IDataset<T> inner;
    readonly Func<T, TOut> transform;
    public TransformedDataset(IDataset<T> inner, Func<T, TOut> transform) => (this.inner, this.transform) = (inner, transform);
    public int Count => inner.Count;
    public TOut this[int index] => transform(inner[index]);
}

public static class DatasetUtils
{
    /// <summary>Splits a dataset into non-overlapping random subsets of the given lengths (or fractions summing to 1).</summary>
    public static Subset<T>[] RandomSplit<T>(IDataset<T> dataset, double[] lengths, Generator? generator = null)
    {
        int n = dataset.Count;
        int[] sizes;
        if (lengths.Any(l => l < 0 || !double.IsFinite(l)))
            throw new ShapeMismatchException($"random_split: lengths must be non-negative, got [{string.Join(", ", lengths)}]");
        bool fractions = lengths.All(l => l <= 1) && lengths.Any(l => l != Math.Floor(l));
        if (fractions && Math.Abs(lengths.Sum() - 1) >= 1e-9)
            throw new ShapeMismatchException($"random_split: the fractions [{string.Join(", ", lengths)}] add up to {lengths.Sum():G6}, not 1");
        if (fractions)
        {
            sizes = lengths.Select(f => (int)Math.Floor(f * n)).ToArray();
            // Distribute the remainder round-robin, as PyTorch does.
            for (int i = 0, rem = n - sizes.Sum(); rem > 0; i = (i + 1) % sizes.Length, rem--) sizes[i]++;
        }
        else sizes = lengths.Select(l => (int)l).ToArray();
        if (sizes.Sum() != n)
            throw new ShapeMismatchException($"random_split: the lengths [{string.Join(", ", sizes)}] add up to {sizes.Sum()}, but the dataset has {n} samples");
        var perm = Permutation(n, generator ?? Generator.Default);
        var result = new Subset<T>[sizes.Length];
        int start = 0;
        for (int i = 0; i < sizes.Length; i++) { result[i] = new Subset<T>(dataset, perm[start..(start + sizes[i])]); start += sizes[i]; }
        return result;
    }

    /// <summary>A uniformly random permutation of 0..n-1 (Fisher–Yates).</summary>
    public static int[] Permutation(int n, Generator g)
    {
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--)
        {
            int j = (int)g.NextLong(0, i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }

    public static Subset<T> Subset<T>(this IDataset<T> d, int[] indices) => new(d, indices);

    public static IDataset<TOut> Map<T, TOut>(this IDataset<T> d, Func<T, TOut> f) => new TransformedDataset<T, TOut>(d, f);
}

/// <summary>
/// Iterates a dataset in batches (torch.utils.data.DataLoader): batch size, seeded shuffle (a new permutation
/// each epoch from the loader's own generator), drop_last, a collate function, and prefetching of the next
/// batches on a background thread. The default collate stacks inputs and targets of <see cref="Batch"/> samples.
/// </summary>
public sealed class DataLoader<T, TBatch> : IEnumerable<TBatch>
{
    readonly IDataset<T> dataset;
    readonly Func<IReadOnlyList<T>, TBatch> collate;
    readonly Func<int[], TBatch>? gather;

    public int BatchSize { get; }
    public bool Shuffle { get; }
    public bool DropLast { get; }
    /// <summary>Batches prepared ahead on a background thread (0 loads in the caller's thread).</summary>
    public int Prefetch { get; }
    public Generator Generator { get; }

    public DataLoader(IDataset<T> dataset, int batchSize, Func<IReadOnlyList<T>, TBatch> collate, bool shuffle = false, bool dropLast = false,
        int prefetch = 2, ulong? seed = null, Func<int[], TBatch>? gather = null)
    {
        if (batchSize <= 0) throw new NablaException($"DataLoader: batch_size must be positive, got {batchSize}");
        this.dataset = dataset;
        this.collate = collate;
        this.gather = gather;
        BatchSize = batchSize;
        Shuffle = shuffle;
        DropLast = dropLast;
        Prefetch = prefetch;
        Generator = new Generator(seed ?? Generator.Default.NextUInt64());
    }

    public int Count => DropLast ? dataset.Count / BatchSize : (dataset.Count + BatchSize - 1) / BatchSize;

    public int DatasetCount => dataset.Count;

    IEnumerable<int[]> BatchIndices()
    {
        int n = dataset.Count;
        var order = Shuffle ? DatasetUtils.Permutation(n, Generator) : Enumerable.Range(0, n).ToArray();
        for (int s = 0; s < n; s += BatchSize)
        {
            int len = Math.Min(BatchSize, n - s);
            if (len < BatchSize && DropLast) yield break;
            yield return order[s..(s + len)];
        }
    }

    TBatch Make(int[] idx)
    {
        if (gather is not null) return gather(idx);
        var items = new T[idx.Length];
        for (int i = 0; i < idx.Length; i++) items[i] = dataset[idx[i]];
        return collate(items);
    }

    public IEnumerator<TBatch> GetEnumerator()
    {
        var batches = BatchIndices().ToList();
        return Prefetcher.Run(batches.Select(Make), Prefetch).GetEnumerator();
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>Runs a batch sequence on a background thread, keeping up to N batches ready; errors surface to the consumer.</summary>
internal static class Prefetcher
{
    public static IEnumerable<TBatch> Run<TBatch>(IEnumerable<TBatch> source, int prefetch)
    {
        if (prefetch <= 0)
        {
            foreach (var b in source) yield return b;
            yield break;
        }
        using var queue = new BlockingCollection<(TBatch? batch, Exception? error)>(prefetch);
        using var cts = new CancellationTokenSource();
        var worker = Task.Run(() =>
        {
            try
            {
                foreach (var b in source)
                {
                    if (cts.IsCancellationRequested) break;
                    queue.Add((b, null), cts.Token);
                }
            }
            catch (OperationCanceledException) { }
            catch (Exception e) { try { queue.Add((default, e), cts.Token); } catch (Exception ae) when (ae is InvalidOperationException or OperationCanceledException) { } }
            finally { queue.CompleteAdding(); }
        });
        try
        {
            foreach (var (batch, error) in queue.GetConsumingEnumerable())
            {
                if (error is not null) throw error;
                yield return batch!;
            }
        }
        finally
        {
            cts.Cancel();
            try { worker.Wait(); } catch (AggregateException) { }
        }
    }
}

/// <summary>
/// Batches an iterable-style dataset in stream order (no shuffling, as PyTorch refuses shuffle for iterable
/// datasets): consecutive samples are collated into batches, the last one partial unless drop_last.
/// </summary>
public sealed class IterableDataLoader<T, TBatch> : IEnumerable<TBatch>
{
    readonly IIterableDataset<T> dataset;
    readonly Func<IReadOnlyList<T>, TBatch> collate;
    public int BatchSize { get; }
    public bool DropLast { get; }
    public int Prefetch { get; }

    public IterableDataLoader(IIterableDataset<T> dataset, int batchSize, Func<IReadOnlyList<T>, TBatch> collate, bool dropLast = false, int prefetch = 2)
    {
        if (batchSize <= 0) throw new NablaException($"DataLoader: batch_size must be positive, got {batchSize}");
        (this.dataset, this.collate, BatchSize, DropLast, Prefetch) = (dataset, collate, batchSize, dropLast, prefetch);
    }

    IEnumerable<TBatch> Batches()
    {
        var items = new List<T>(BatchSize);
        foreach (var item in dataset)
        {
            items.Add(item);
            if (items.Count == BatchSize)
            {
                yield return collate(items.ToArray());
                items.Clear();
            }
        }
        if (items.Count > 0 && !DropLast) yield return collate(items.ToArray());
    }

    public IEnumerator<TBatch> GetEnumerator() => Prefetcher.Run(Batches(), Prefetch).GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>An iterable dataset over any sequence factory (called once per epoch).</summary>
public sealed class IterableDataset<T>(Func<IEnumerable<T>> stream) : IIterableDataset<T>
{
    public IEnumerator<T> GetEnumerator() => stream().GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

public static class DataLoader
{
    /// <summary>A loader over an iterable dataset of labelled samples with the default stacking collate.</summary>
    public static IterableDataLoader<Batch, Batch> Create(IIterableDataset<Batch> dataset, int batchSize, bool dropLast = false, int prefetch = 2) =>
        new(dataset, batchSize, Stack, dropLast, prefetch);

    /// <summary>A loader over labelled samples with the default stacking collate.</summary>
    public static DataLoader<Batch, Batch> Create(IDataset<Batch> dataset, int batchSize, bool shuffle = false, bool dropLast = false, int prefetch = 2, ulong? seed = null)
    {
        Func<int[], Batch>? gather = dataset is TensorDataset td ? td.Gather : null;
        return new DataLoader<Batch, Batch>(dataset, batchSize, Stack, shuffle, dropLast, prefetch, seed, gather);
    }

    /// <summary>The default collate: stacks inputs and targets along a new first dimension.</summary>
    public static Batch Stack(IReadOnlyList<Batch> items) =>
        new(Tensor.Stack(items.Select(b => b.Input).ToList()), Tensor.Stack(items.Select(b => b.Target).ToList()));
}
