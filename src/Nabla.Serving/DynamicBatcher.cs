using System.Diagnostics;
using System.Globalization;
using Nabla.Interop.Onnx;

namespace Nabla.Serving;

/// <summary>What the batcher hands back to one request: its slice of every output and where the time went.</summary>
sealed record BatchOutcome(Dictionary<string, Tensor> Outputs, long QueueTicks, long InputTicks, long InferTicks, long OutputTicks);

/// <summary>
/// Triton's dynamic batcher for one model version: a bounded FIFO queue and one loop that merges compatible requests
/// (same inputs, same shapes after dim 0) along dim 0, runs one execution and splits the outputs back.
/// A batch leaves at once when it reaches max_batch_size or a preferred size, otherwise when the oldest request has
/// waited max_queue_delay_microseconds. A full queue rejects at once; a request whose queue timeout passes, or whose
/// caller cancels (disconnect, deadline), is dropped while still queued and never computed. Batches are formed only
/// while an instance is free (the version's <see cref="ModelVersion.Gate"/>), so with N instances up to N batches run
/// at once and requests arriving meanwhile gather into the next one.
/// </summary>
sealed class DynamicBatcher
{
    sealed class Request(Dictionary<string, Tensor> feeds, int batch, string key, long enqueued, long deadline)
    {
        public readonly Dictionary<string, Tensor> Feeds = feeds;
        public readonly int Batch = batch;
        public readonly string Key = key;
        public readonly long Enqueued = enqueued;
        /// <summary>Stopwatch timestamp after which the request may not start; long.MaxValue for none.</summary>
        public readonly long Deadline = deadline;
        public readonly TaskCompletionSource<BatchOutcome> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        /// <summary>0 queued, 1 started, 2 dropped; moves only once, by compare-exchange.</summary>
        public int State;
        public CancellationTokenRegistration Cancel;
        public Timer? Timer;

        public void Detach()
        {
            Cancel.Unregister();
            Timer?.Dispose();
        }
    }

    readonly ModelVersion mv;
    readonly int maxBatch, maxQueue;
    readonly int[] preferred;
    readonly long delayTicks, timeoutMicroseconds;
    readonly List<Request> queue = [];
    readonly Lock gate = new();
    readonly SemaphoreSlim signal = new(0);
    readonly CancellationTokenSource stop = new();
    readonly Task loop;
    readonly List<Task> running = [];
    int live;
    volatile bool stopping;

    public DynamicBatcher(ModelVersion mv)
    {
        this.mv = mv;
        var s = mv.Config.DynamicBatching ?? throw new ArgumentException("the model has no dynamic_batching block", nameof(mv));
        maxBatch = mv.Config.MaxBatchSize;
        preferred = [.. s.PreferredBatchSizes.Where(p => p <= maxBatch).Order()];
        delayTicks = (long)(s.MaxQueueDelayMicroseconds * (Stopwatch.Frequency / 1e6));
        maxQueue = s.DefaultQueuePolicy?.MaxQueueSize ?? 0;
        // NOTE: with timeout_action DELAY an expired request still runs, and since the queue is one FIFO it runs in its
        // turn anyway; so only REJECT arms a timeout. Timeouts are capped at 40 days (the longest Timer due time).
        timeoutMicroseconds = s.DefaultQueuePolicy is { TimeoutAction: "REJECT" } q ? Math.Min(q.DefaultTimeoutMicroseconds, 40L * 86_400_000_000) : 0;
        loop = Task.Run(RunAsync);
    }

    /// <summary>Requests queued and not started (the pending-request gauge).</summary>
    public int Pending => Volatile.Read(ref live);

    /// <summary>Finishes what is queued, then ends the loop.</summary>
    public void Stop()
    {
        stopping = true;
        signal.Release();
    }

    /// <summary>Completes when the loop ended and its last executions finished (after <see cref="Stop"/>).</summary>
    public Task Completion => loop;

    /// <summary>Queues one request of <paramref name="batch"/> elements.</summary>
    /// <param name="feeds">input name → tensor, dim 0 = <paramref name="batch"/></param>
    /// <exception cref="ServingException">503 when the queue is full (reason REJECTED) or the version is stopping</exception>
    public Task<BatchOutcome> SubmitAsync(Dictionary<string, Tensor> feeds, int batch, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        long now = Stopwatch.GetTimestamp();
        long deadline = timeoutMicroseconds > 0 ? now + (long)(timeoutMicroseconds * (Stopwatch.Frequency / 1e6)) : long.MaxValue;
        var p = new Request(feeds, batch, Key(feeds), now, deadline);
        lock (gate)
        {
            if (stopping) throw ServingException.Unavailable($"model '{mv.ModelName}' version {mv.Version} is being unloaded");
            if (maxQueue > 0 && Volatile.Read(ref live) >= maxQueue)
                throw new ServingException(ServingErrorKind.Unavailable,
                    $"exceeds maximum queue size: model '{mv.ModelName}' version {mv.Version} already has {maxQueue} requests queued (max_queue_size)")
                { Reason = FailureReason.Rejected };
            queue.Add(p);
            Interlocked.Increment(ref live);
        }
        if (ct.CanBeCanceled) p.Cancel = ct.Register(() => Drop(p, null));
        if (timeoutMicroseconds > 0)
        {
            var due = TimeSpan.FromTicks(Math.Max(1, timeoutMicroseconds * 10));
            p.Timer = new Timer(_ => Drop(p, TimedOut()), null, due, Timeout.InfiniteTimeSpan);
        }
        signal.Release();
        return p.Done.Task;
    }

    ServingException TimedOut() => new(ServingErrorKind.Unavailable,
        $"request timed out in the queue of model '{mv.ModelName}' version {mv.Version} after {timeoutMicroseconds.ToString(CultureInfo.InvariantCulture)} µs (default_timeout_microseconds)")
    { Reason = FailureReason.Rejected };

    /// <summary>Drops a request that has not started: <paramref name="error"/>, or cancelled when null.</summary>
    void Drop(Request p, Exception? error)
    {
        if (Interlocked.CompareExchange(ref p.State, 2, 0) != 0) return;
        Interlocked.Decrement(ref live);
        p.Detach();
        if (error is null) p.Done.TrySetCanceled();
        else p.Done.TrySetException(error);
        signal.Release();
    }

    /// <summary>Requests may share a batch when they feed the same inputs with the same dtypes and dims after dim 0.</summary>
    static string Key(Dictionary<string, Tensor> feeds) =>
        string.Join(";", feeds.OrderBy(f => f.Key, StringComparer.Ordinal)
            .Select(f => $"{f.Key}:{f.Value.DType}:{string.Join(",", f.Value.Shape.Skip(1))}"));

    async Task RunAsync()
    {
        try
        {
            while (true)
            {
                // An instance first: the batch is formed when it can start, so it takes every request that arrived meanwhile.
                try { await mv.Gate.WaitAsync(stop.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
                bool handed = false;
                try
                {
                    while (true)
                    {
                        List<Request>? batch;
                        TimeSpan wait;
                        lock (gate)
                        {
                            queue.RemoveAll(p => Volatile.Read(ref p.State) != 0);
                            if (queue.Count == 0 && stopping) return;
                            batch = Form(out wait);
                        }
                        if (batch is null)
                        {
                            try { await signal.WaitAsync(wait, stop.Token).ConfigureAwait(false); }
                            catch (OperationCanceledException) { return; }
                            continue;
                        }
                        if (batch.Count == 0) continue;
                        handed = true;
                        var run = Task.Run(async () =>
                        {
                            try { await ExecuteAsync(batch).ConfigureAwait(false); }
                            finally { mv.Gate.Release(); }
                        });
                        lock (running)
                        {
                            running.RemoveAll(t => t.IsCompleted);
                            running.Add(run);
                        }
                        break;
                    }
                }
                finally { if (!handed) mv.Gate.Release(); }
            }
        }
        finally
        {
            Task[] last;
            lock (running) last = [.. running];
            await Task.WhenAll(last).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Under the lock: the next batch to run (its requests marked started and removed), an empty list when only expired
    /// requests were found, or null with how long to wait.
    /// </summary>
    List<Request>? Form(out TimeSpan wait)
    {
        wait = Timeout.InfiniteTimeSpan;
        if (queue.Count == 0) return null;
        var head = queue[0];
        var candidates = new List<Request>();
        int total = 0, preferredCount = 0;
        bool full = false;
        foreach (var p in queue)
        {
            if (p.Key != head.Key) continue;
            if (total + p.Batch > maxBatch) { full = true; break; }
            candidates.Add(p);
            total += p.Batch;
            if (Array.IndexOf(preferred, total) >= 0) preferredCount = candidates.Count;
        }
        long now = Stopwatch.GetTimestamp();
        List<Request> take;
        if (full || total == maxBatch || stopping) take = candidates;
        else if (preferredCount > 0) take = candidates.GetRange(0, preferredCount);
        else if (now - head.Enqueued >= delayTicks) take = candidates;
        else
        {
            wait = TimeSpan.FromSeconds((delayTicks - (now - head.Enqueued)) / (double)Stopwatch.Frequency) + TimeSpan.FromTicks(1);
            return null;
        }
        var started = new List<Request>(take.Count);
        foreach (var p in take)
        {
            if (now > p.Deadline) { Drop(p, TimedOut()); continue; }
            if (Interlocked.CompareExchange(ref p.State, 1, 0) != 0) continue;
            Interlocked.Decrement(ref live);
            p.Detach();
            started.Add(p);
        }
        queue.RemoveAll(p => Volatile.Read(ref p.State) != 0);
        return started;
    }

    async Task ExecuteAsync(List<Request> batch)
    {
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            int total = batch.Sum(p => p.Batch);
            Dictionary<string, Tensor> feeds;
            if (batch.Count == 1) feeds = batch[0].Feeds;
            else
            {
                feeds = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                foreach (var name in batch[0].Feeds.Keys)
                    feeds[name] = StringTensor.IsCarrier(batch[0].Feeds[name])
                        ? StringTensor.Cat0([.. batch.Select(p => StringTensor.FromCarrier(p.Feeds[name])!)]).ToCarrier()
                        : Tensor.Cat([.. batch.Select(p => p.Feeds[name])], 0);
            }
            long t1 = Stopwatch.GetTimestamp();
            var (results, inferTicks) = await InferenceEngine.ExecuteAsync(mv, feeds, stop.Token).ConfigureAwait(false);
            long t2 = Stopwatch.GetTimestamp();
            var slices = batch.Select(_ => new Dictionary<string, Tensor>(StringComparer.Ordinal)).ToList();
            foreach (var (name, t) in results)
            {
                if (t.Dim == 0 || t.Shape[0] != total)
                    throw new ServingException(ServingErrorKind.Internal,
                        $"model '{mv.ModelName}' version {mv.Version}: output '{name}' has shape [{string.Join(", ", t.Shape)}], not a batch of {total} along dim 0, so a merged batch cannot be split")
                    { Reason = FailureReason.Backend };
                int offset = 0;
                var strings = StringTensor.FromCarrier(t);
                for (int i = 0; i < batch.Count; i++)
                {
                    slices[i][name] = batch.Count == 1 ? t
                        : strings is not null ? strings.Narrow0(offset, batch[i].Batch).ToCarrier()
                        : t.Narrow(0, offset, batch[i].Batch);
                    offset += batch[i].Batch;
                }
            }
            if (batch.Count > 1)
            {
                // The merged inputs and outputs are the batcher's own; the requests' slices (views) keep what they need.
                InferenceEngine.DisposeAllBut([.. feeds.Values, .. results.Values], []);
            }
            long t3 = Stopwatch.GetTimestamp();
            mv.Stats.Execution(total, t1 - t0, inferTicks, t3 - t2);
            for (int i = 0; i < batch.Count; i++)
                batch[i].Done.TrySetResult(new BatchOutcome(slices[i], t0 - batch[i].Enqueued, t1 - t0, inferTicks, t3 - t2));
        }
        catch (Exception e)
        {
            foreach (var p in batch) p.Done.TrySetException(e);
        }
    }
}
