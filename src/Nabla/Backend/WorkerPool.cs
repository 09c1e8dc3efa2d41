using System.Diagnostics;

namespace Nabla;

/// <summary>
/// The kernels' fork-join: <see cref="For"/> runs <c>body(0..count-1)</c> on the calling thread and on persistent
/// worker threads that spin for a short while after each job before they block, inside a <see cref="Scope"/> (graph
/// runs), for calls marked large (<see cref="LargeJobs"/>), or everywhere with <see cref="Enabled"/>; otherwise it hands
/// the call to Parallel.For.
/// </summary>
/// <remarks>
/// Why not <see cref="Parallel.For(int, int, Action{int})"/>: a ResNet-18 inference is about fifty fork-joins of
/// 20–800 µs each, and a thread-pool thread may have gone to sleep between two of them. Workers here spin for
/// <see cref="SpinMicroseconds"/> after their last job, so the next one starts at once, then block on a semaphore and
/// cost nothing. Measured at 2 threads (bench/README.md, "Fork-join"): 1024² matmul 452–462 GFLOP/s against 387–419
/// with Parallel.For (with <see cref="Enabled"/>), ResNet-18 batch 1 8.8–9.1 ms against 9.2–9.5.
/// <para>Each thread first runs its own block of indices, then takes what is left of the others' (see
/// <see cref="Job.Work"/>), so a worker that is late (or never wakes) only means the others run more of them; the caller
/// waits for the indices, not for the workers. One job runs at a time: a
/// <see cref="For"/> from inside a body, or from a second thread while a job runs, runs its indices inline on its own
/// thread, a choice made so that concurrent callers (a server's requests) add one thread each rather than a whole pool
/// each (an eager large GEMM goes to Parallel.For instead). Pooled or inline, every index runs even when one throws, and the first exception then reaches the caller inside
/// an <see cref="AggregateException"/> (Parallel.For would aggregate all of them).</para>
/// </remarks>
internal static class WorkerPool
{
    /// <summary>How long an idle worker keeps spinning for the next job before it blocks (NABLA_SPIN_US overrides; read
    /// on every wait).</summary>
    internal static int SpinMicroseconds = ReadSpin();

    /// <summary>Every call uses the pool: opt-in (<c>NABLA_WORKER_POOL=1</c>); off, calls go to Parallel.For unless
    /// inside a <see cref="Scope"/> or marked large. It stayed off by default in session 5 because the quickstart took
    /// more page faults with every eager op on the pool (one epoch at ConserveMemory 3: 18.5 s, 3.8 M faults, against
    /// 15.4–16.3 s with Parallel.For). With each batch in a dispose scope (the CLI's default since session 6) the faults
    /// are equal and the pool was faster over one epoch (13.0–13.1 s against 13.9 s; over 3 epochs equal within noise),
    /// batched attention 397 against 366 GFLOP/s, CNN step 10.4 against 10.8 ms; but the 1,000-step MLP process of
    /// <c>bench/Nabla.Startup</c> took 1.90–1.96 s against 1.39–1.75 s (its idle workers spin while the JIT and the GC
    /// want the second core), so the default stays (bench/README.md, "Session 6").</summary>
    internal static bool Enabled = Environment.GetEnvironmentVariable("NABLA_WORKER_POOL") == "1";

    /// <summary>Off: never use the pool, not even inside a <see cref="Scope"/> (<c>NABLA_WORKER_POOL=0</c>).</summary>
    static readonly bool Never = Environment.GetEnvironmentVariable("NABLA_WORKER_POOL") == "0";

    /// <summary>Whether calls marked large (<see cref="For"/>'s <c>large</c>: whole GEMMs of m·n·k ≥ 2^26, about
    /// 0.3 ms at two threads, and GEMVs of n·k ≥ 2^20, about 40 µs a thread but memory-bound and split into two long
    /// halves) use the pool outside graph runs too (<c>NABLA_POOL_LARGE=0</c> turns this off).</summary>
    internal static bool LargeJobs = Environment.GetEnvironmentVariable("NABLA_POOL_LARGE") != "0";

    [ThreadStatic] static int scopes;

    /// <summary>Calls on this thread use the pool until the returned value is disposed, whatever <see cref="Enabled"/>
    /// says: graph runs (<see cref="Graph.GraphExecutor"/>) take it, where it measured faster (ResNet-18 b1 at 2 threads
    /// 9.18 against 12.61 ms in the same minute, 07:27).</summary>
    internal static ScopeToken Scope()
    {
        scopes++;
        return default;
    }

    internal readonly struct ScopeToken : IDisposable
    {
        public void Dispose() => scopes--;
    }

    /// <summary>Whether threads start with their own block of indices (<c>NABLA_POOL_AFFINITY=0</c>: all take indices in
    /// ascending order, for A/B measurements).</summary>
    internal static bool Affinity = Environment.GetEnvironmentVariable("NABLA_POOL_AFFINITY") != "0";

    sealed class Job(Action<int> body, int count, int helpers)
    {
        public readonly Action<int> Body = body;
        public readonly int Count = count;
        /// <summary>Workers 0..Helpers-1 take part, besides the caller.</summary>
        public readonly int Helpers = helpers;
        /// <summary>Sequence number: workers remember the last one they saw, not the job (and the arrays its body holds).</summary>
        public readonly long Seq = Interlocked.Increment(ref jobs);
        public int Done;
        /// <summary>Set when every index has finished; the caller blocks on it after spinning.</summary>
        public readonly ManualResetEventSlim Finished = new(false, 0);
        public Exception? Error;
        // One claim cursor per block, 16 ints (a cache line) apart: block r = [Count·r/degree, Count·(r+1)/degree).
        readonly int[] next = new int[16 * (helpers + 1)];

        /// <summary>Runs indices until none are left: first the block that belongs to <paramref name="rank"/> (the caller is
        /// rank 0, worker w rank w + 1), in order, then whatever is left of the other blocks. The same index goes to the
        /// same thread from one job to the next unless a thread is late, so a split by rows or channels keeps its data in
        /// one core's cache across layers.</summary>
        public void Work(int rank)
        {
            int degree = Affinity ? Helpers + 1 : 1;
            if (!Affinity) rank = 0;
            // Indices are claimed a chunk at a time (an eighth of a block), and finished ones are counted once per thread:
            // per-index claims and counts on shared cache lines cost more than the bodies when there are thousands of
            // small ones (pooling and col2im over every plane of a training batch).
            int chunk = Math.Max(1, Count / (degree * 8)), mine = 0;
            for (int k = 0; k < degree; k++)
            {
                int r = (rank + k) % degree;
                int from = (int)((long)Count * r / degree), to = (int)((long)Count * (r + 1) / degree);
                while (true)
                {
                    int i0 = from + Interlocked.Add(ref next[16 * r], chunk) - chunk;
                    if (i0 >= to) break;
                    int i1 = Math.Min(to, i0 + chunk);
                    for (int i = i0; i < i1; i++) WorkerPool.Run(Body, i, ref Error);
                    mine += i1 - i0;
                }
            }
            if (mine > 0 && Interlocked.Add(ref Done, mine) == Count) Finished.Set();
        }
    }

    /// <summary>One index; an exception is kept (the first one) and the other indices still run.</summary>
    static void Run(Action<int> body, int i, ref Exception? error)
    {
        try { body(i); }
        catch (Exception e) { Interlocked.CompareExchange(ref error, e, null); }
    }

    sealed class Worker
    {
        public readonly SemaphoreSlim Wake = new(0);
        public int Sleeping;
        public long LastJob;
    }

    static readonly object grow = new();
    static Worker[] workers = [];
    static Job? current;
    static long jobs;   // the last job's sequence number

    /// <summary>Jobs started on the pool so far (tests read it to see whether a call went to the pool).</summary>
    internal static long JobCount => Volatile.Read(ref jobs);
    static int busy;

    static long SpinTicks => Stopwatch.Frequency * SpinMicroseconds / 1_000_000;

    static int ReadSpin() =>
        int.TryParse(Environment.GetEnvironmentVariable("NABLA_SPIN_US"), out var us) && us >= 0 ? us : 200;

    /// <summary>Test hook (<see cref="PoisonThreads"/>): the action a thread runs once, before the first index it runs after
    /// the hook was set, or null.</summary>
    static volatile Action? poison;
    static long poisonEpoch;
    [ThreadStatic] static long poisonSeen;

    /// <summary>For tests: runs <paramref name="action"/> on this thread now (filling its kernel scratch with NaN, say), and
    /// until called again with null every other thread (the pool's workers, Parallel.For's threads) runs it once before the
    /// first index it runs after this call, so a split that leaves part of a buffer unwritten shows up on every thread, not
    /// only on the calling one. The calling thread is done here, not at its first index: a staged split (Winograd's) hands
    /// the caller's buffers to the other threads, and the caller's first index may come after they have filled them.
    /// Process-wide: only for tests that run alone (the GEMM settings collection), since another test's staged split on
    /// another thread would be poisoned midway.</summary>
    internal static void PoisonThreads(Action? action)
    {
        long epoch = Interlocked.Increment(ref poisonEpoch);
        poisonSeen = epoch;
        action?.Invoke();
        poison = action;
    }

    static Action<int> Poisoned(Action<int> body, Action action)
    {
        long epoch = Volatile.Read(ref poisonEpoch);
        return i =>
        {
            if (poisonSeen != epoch)
            {
                poisonSeen = epoch;
                action();
            }
            body(i);
        };
    }

    public static void For(int count, int degree, Action<int> body, bool large = false)
    {
        if (count <= 0) return;
        if (poison is { } action) body = Poisoned(body, action);
        if (degree > count) degree = count;
        bool pooled = !Never && (Enabled || scopes > 0 || (large && LargeJobs));
        bool acquired = pooled && degree > 1 && Interlocked.CompareExchange(ref busy, 1, 0) == 0;
        // Parallel.For off the pool, and for an eager large call (a whole GEMM, outside graph runs) that finds the pool
        // taken (a second thread's GEMM, or one from inside a body): two threads rather than one.
        if (degree > 1 && !acquired && (!pooled || (large && scopes == 0)))
        {
            Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = degree }, body);
            return;
        }
        Exception? error = null;
        if (!acquired)
        {
            // Inline: same contract as the pooled path (every index runs, the first exception comes wrapped).
            for (int i = 0; i < count; i++) Run(body, i, ref error);
        }
        else
        {
            try
            {
                var job = new Job(body, count, degree - 1);
                var ws = Ensure(degree - 1);
                Volatile.Write(ref current, job);
                for (int w = 0; w < degree - 1; w++)
                    if (Interlocked.CompareExchange(ref ws[w].Sleeping, 0, 1) == 1) ws[w].Wake.Release();
                job.Work(0);
                // Spin for the last indices (without yielding the core), then block until they finish.
                long start = Stopwatch.GetTimestamp(), budget = SpinTicks;
                while (Volatile.Read(ref job.Done) < count && Stopwatch.GetTimestamp() - start < budget) Thread.SpinWait(20);
                if (Volatile.Read(ref job.Done) < count) job.Finished.Wait();
                error = job.Error;
            }
            finally
            {
                Volatile.Write(ref current, null);
                Volatile.Write(ref busy, 0);
            }
        }
        if (error is not null) throw new AggregateException(error);
    }

    static Worker[] Ensure(int n)
    {
        var ws = workers;
        if (ws.Length >= n) return ws;
        lock (grow)
        {
            ws = workers;
            if (ws.Length >= n) return ws;
            var grown = new Worker[n];
            Array.Copy(ws, grown, ws.Length);
            for (int w = ws.Length; w < n; w++)
            {
                var worker = grown[w] = new Worker();
                int index = w;
                new Thread(() => Loop(worker, index)) { IsBackground = true, Name = $"Nabla worker {w + 1}" }.Start();
            }
            Volatile.Write(ref workers, grown);
            return grown;
        }
    }

    /// <summary>A worker: wait for a job it has not seen (spinning, then blocked), run its share, repeat. A job it takes
    /// no part in (a smaller degree) does not restart its spin, so workers beyond the current degree go to sleep.</summary>
    static void Loop(Worker me, int index)
    {
        long start = Stopwatch.GetTimestamp();
        while (true)
        {
            Job? job = Volatile.Read(ref current);
            if (job is not null && job.Seq != me.LastJob)
            {
                me.LastJob = job.Seq;
                if (index < job.Helpers)
                {
                    job.Work(index + 1);
                    start = Stopwatch.GetTimestamp();
                }
                continue;
            }
            if (Stopwatch.GetTimestamp() - start < SpinTicks)
            {
                Thread.SpinWait(30);
                continue;
            }
            // Block. The caller clears Sleeping and releases the semaphore when it publishes a job; a job published
            // between the flag and the re-check is caught by the re-check.
            Interlocked.Exchange(ref me.Sleeping, 1);
            job = Volatile.Read(ref current);
            if (job is not null && job.Seq != me.LastJob && Interlocked.CompareExchange(ref me.Sleeping, 0, 1) == 1)
                continue;
            me.Wake.Wait();
            start = Stopwatch.GetTimestamp();
        }
    }
}
