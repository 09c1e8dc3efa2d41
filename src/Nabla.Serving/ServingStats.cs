using System.Collections.Concurrent;
using System.Diagnostics;

namespace Nabla.Serving;

/// <summary>Why a request failed, as the <c>reason</c> label of <c>nabla_inference_request_failure</c> (Triton's reasons).</summary>
public enum FailureReason
{
    /// <summary>Refused by the queue: full, or the queue timeout passed before it started.</summary>
    Rejected,
    /// <summary>The client went away or its deadline passed before the request finished.</summary>
    Canceled,
    /// <summary>The model execution failed.</summary>
    Backend,
    /// <summary>Anything else (a bad input, a shape the model rejects before running).</summary>
    Other,
}

/// <summary>Cumulative durations of the executions of one batch size (Triton's batch_stats); nanoseconds.</summary>
public sealed class BatchSizeStats
{
    internal long Count, InputNs, InferNs, OutputNs;
}

/// <summary>
/// A cumulative histogram with fixed upper bounds (Prometheus buckets); the sum is kept in the observed unit.
/// </summary>
public sealed class Histogram(double[] bounds)
{
    readonly long[] counts = new long[bounds.Length + 1];
    readonly Lock gate = new();
    double sum;
    long total;

    public IReadOnlyList<double> Bounds => bounds;

    public void Observe(double value)
    {
        int i = 0;
        while (i < bounds.Length && value > bounds[i]) i++;
        lock (gate)
        {
            counts[i]++;
            sum += value;
            total++;
        }
    }

    /// <summary>Cumulative counts per bound (the last entry is +Inf), the sum and the count, read consistently.</summary>
    public (long[] Cumulative, double Sum, long Count) Read()
    {
        lock (gate)
        {
            var cum = new long[counts.Length];
            long run = 0;
            for (int i = 0; i < counts.Length; i++) cum[i] = run += counts[i];
            return (cum, sum, total);
        }
    }
}

/// <summary>
/// Cumulative counters of one loaded version (Triton's statistics extension and the Prometheus families); durations
/// in nanoseconds. One request counts once in success or fail whatever its batch; inference_count counts batch
/// elements, execution_count model executions.
/// </summary>
public sealed class VersionStats
{
    internal long SuccessCount, SuccessNs, FailCount, FailNs, QueueCount, QueueNs;
    internal long InputCount, InputNs, InferCount, InferNs, OutputCount, OutputNs;
    internal long InferenceCount, ExecutionCount, LastInferenceMs;
    internal readonly long[] FailByReason = new long[4];
    internal readonly ConcurrentDictionary<int, BatchSizeStats> Batches = new();

    /// <summary>Seconds a request waited in the queue (or for the execution slot).</summary>
    public Histogram QueueSeconds { get; } = new([0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
    /// <summary>Seconds one model execution took.</summary>
    public Histogram ComputeSeconds { get; } = new([0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
    /// <summary>Seconds a successful request took end to end (from its decoded body to its outputs).</summary>
    public Histogram RequestSeconds { get; } = new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
    /// <summary>Batch size of each model execution.</summary>
    public Histogram BatchSize { get; } = new([1, 2, 4, 8, 16, 32, 64, 128, 256]);

    public long Success => Interlocked.Read(ref SuccessCount);
    public long Failures => Interlocked.Read(ref FailCount);
    public long Inferences => Interlocked.Read(ref InferenceCount);
    public long Executions => Interlocked.Read(ref ExecutionCount);
    public long FailuresFor(FailureReason r) => Interlocked.Read(ref FailByReason[(int)r]);

    internal static long Ns(long ticks) => (long)(ticks * (1e9 / Stopwatch.Frequency));

    internal static void Add(ref long count, ref long ns, long ticks)
    {
        Interlocked.Increment(ref count);
        Interlocked.Add(ref ns, Ns(ticks));
    }

    internal void Fail(FailureReason reason, long ticks)
    {
        Add(ref FailCount, ref FailNs, ticks);
        Interlocked.Increment(ref FailByReason[(int)reason]);
    }

    /// <summary>One model execution of <paramref name="batch"/> elements: counts, batch_stats, histograms.</summary>
    internal void Execution(int batch, long inputTicks, long inferTicks, long outputTicks)
    {
        Interlocked.Increment(ref ExecutionCount);
        Interlocked.Add(ref InferenceCount, batch);
        var b = Batches.GetOrAdd(batch, _ => new BatchSizeStats());
        Interlocked.Increment(ref b.Count);
        Interlocked.Add(ref b.InputNs, Ns(inputTicks));
        Interlocked.Add(ref b.InferNs, Ns(inferTicks));
        Interlocked.Add(ref b.OutputNs, Ns(outputTicks));
        ComputeSeconds.Observe(inferTicks / (double)Stopwatch.Frequency);
        BatchSize.Observe(batch);
    }
}
