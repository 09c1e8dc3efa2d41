using Xunit;

namespace Nabla.Tests;

/// <summary>
/// <see cref="WorkerPool.For"/>: every index exactly once, work really on two threads at once (also after the workers
/// have gone to sleep), each thread starting with its own block, the degree respected, exceptions surfaced after the
/// other indices finish on the pooled and the inline path, nested and concurrent calls completing (inline), and the
/// Parallel.For switch. The class runs in the GEMM settings collection, which no other test class runs beside.
/// </summary>
[Collection(nameof(GemmSettingsCollection))]
public sealed class WorkerPoolTests : IDisposable
{
    // The pool is opt-in for eager code; these tests turn it on, and every setting a test changes is put back here.
    readonly bool wasEnabled = WorkerPool.Enabled, wasLargeJobs = WorkerPool.LargeJobs;
    readonly int wasThreads = Gemm.Threads;

    public WorkerPoolTests() => WorkerPool.Enabled = true;

    public void Dispose()
    {
        WorkerPool.Enabled = wasEnabled;
        WorkerPool.LargeJobs = wasLargeJobs;
        Gemm.Threads = wasThreads;
    }

    /// <summary>Small work stays on the calling thread even with two threads and every call on the pool: a fork-join
    /// costs microseconds, more than these ops take. The same kinds of op, large, do split (so the count can tell).</summary>
    [Fact]
    public void Small_ops_never_fork_and_large_ones_do()
    {
        Gemm.Threads = 2;
        var gen = new Generator(9);
        var small = new (string Name, Action Op)[]
        {
            ("matmul 32x32x32", () => Tensor.Randn([32, 32], DType.Float32, gen).Matmul(Tensor.Randn([32, 32], DType.Float32, gen))),
            ("gemv 1x256x256", () => Tensor.Randn([1, 256], DType.Float32, gen).Matmul(Tensor.Randn([256, 256], DType.Float32, gen))),
            ("add 32x32", () => Tensor.Randn([32, 32], DType.Float32, gen).Add(Tensor.Randn([32, 32], DType.Float32, gen))),
            ("relu 10000", () => Tensor.Randn([10000], DType.Float32, gen).Relu()),
            ("conv2d 1x3x8x8", () => Functional.Conv2d(Tensor.Randn([1, 3, 8, 8], DType.Float32, gen), Tensor.Randn([4, 3, 3, 3], DType.Float32, gen), null, (1, 1), (1, 1))),
        };
        foreach (var (name, op) in small)
        {
            op();   // warm-up; the second call is counted, its small random inputs included
            long before = WorkerPool.JobCount;
            op();
            Assert.True(WorkerPool.JobCount == before, $"{name} forked {WorkerPool.JobCount - before} time(s)");
        }
        var a = Tensor.Randn([512, 512], DType.Float32, gen);
        var x = Tensor.Randn([1 << 20], DType.Float32, gen);
        foreach (var (name, op) in new (string, Action)[] { ("matmul 512x512x512", () => a.Matmul(a)), ("relu 2^20", () => x.Relu()) })
        {
            // (Without FMA the matmul is the single-threaded reference loop, which never splits.)
            if (name.StartsWith("matmul", StringComparison.Ordinal) && !Gemm.UseFastPath) continue;
            long before = WorkerPool.JobCount;
            op();
            Assert.True(WorkerPool.JobCount > before, $"{name} did not split");
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Every_index_runs_exactly_once(bool pool)
    {
        WorkerPool.Enabled = pool;
        foreach (int degree in new[] { 1, 2, 3, 4 })
        foreach (int count in new[] { 1, 2, 3, 7, 64, 1000 })
        {
            var hits = new int[count];
            WorkerPool.For(count, degree, i => Interlocked.Increment(ref hits[i]));
            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    [Fact]
    public void Two_indices_run_at_the_same_time_with_degree_two()
    {
        // Each index waits for the other to start: only possible when two threads run them. A pool busy with another
        // test's job runs the call inline, so retry a few times before concluding.
        bool together = false;
        for (int attempt = 0; attempt < 20 && !together; attempt++)
        {
            using var both = new CountdownEvent(2);
            var met = new bool[2];
            WorkerPool.For(2, 2, i =>
            {
                both.Signal();
                met[i] = both.Wait(TimeSpan.FromSeconds(2));
            });
            together = met[0] && met[1];
        }
        Assert.True(together, "indices 0 and 1 never ran concurrently");
    }

    [Fact]
    public void Each_thread_starts_with_its_own_block_of_indices()
    {
        // Degree 2, four indices: blocks {0, 1} (the caller) and {2, 3} (the worker). Index 0 waits until 2 has started and
        // 3 until 1 has, so neither thread can finish early and take the other's second index: run in block order that
        // is quick; taken in ascending order it stalls until the waits time out, with index 1 on the worker.
        bool blocks = false;
        for (int attempt = 0; attempt < 5 && !blocks; attempt++)
        {
            var started = new int[4];
            var ran = new int[4];
            WorkerPool.For(4, 2, i =>
            {
                ran[i] = Environment.CurrentManagedThreadId;
                Volatile.Write(ref started[i], 1);
                int wait = i == 0 ? 2 : i == 3 ? 1 : -1;
                var clock = System.Diagnostics.Stopwatch.StartNew();
                while (wait >= 0 && Volatile.Read(ref started[wait]) == 0 && clock.ElapsedMilliseconds < 500) Thread.SpinWait(20);
            });
            int me = Environment.CurrentManagedThreadId;
            blocks = ran[0] == me && ran[1] == me && ran[2] != me && ran[3] != me;
        }
        Assert.True(blocks, "the caller never ran indices 0 and 1 while the worker ran 2 and 3");
    }

    [Fact]
    public void No_more_threads_than_the_degree_take_part()
    {
        // A degree-3 job whose indices wait for each other keeps both workers busy to its end, so both are still
        // spinning when the degree-2 job is published right after (usually: it is a race, hence the rounds); it must
        // still run on at most two threads.
        for (int attempt = 0; attempt < 20; attempt++)
        {
            using (var all = new CountdownEvent(3))
                WorkerPool.For(3, 3, _ =>
                {
                    all.Signal();
                    all.Wait(TimeSpan.FromSeconds(2));
                });
            var threads = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
            WorkerPool.For(32, 2, _ =>
            {
                threads[Environment.CurrentManagedThreadId] = true;
                Thread.Sleep(1);
            });
            Assert.InRange(threads.Count, 1, 2);
        }
    }

    [Fact]
    public void An_exception_reaches_the_caller_after_the_other_indices_finish_and_the_pool_still_works()
    {
        var hits = new int[50];
        var e = Assert.Throws<AggregateException>(() => WorkerPool.For(50, 2, i =>
        {
            Interlocked.Increment(ref hits[i]);
            if (i == 7) throw new InvalidOperationException("index 7 failed");
        }));
        Assert.Equal("index 7 failed", Assert.IsType<InvalidOperationException>(e.InnerException).Message);
        Assert.All(hits, h => Assert.Equal(1, h));

        // Inline (degree 1) keeps the same contract.
        var inline = new int[50];
        e = Assert.Throws<AggregateException>(() => WorkerPool.For(50, 1, i =>
        {
            Interlocked.Increment(ref inline[i]);
            if (i == 7) throw new InvalidOperationException("index 7 failed");
        }));
        Assert.IsType<InvalidOperationException>(e.InnerException);
        Assert.All(inline, h => Assert.Equal(1, h));

        var after = new int[50];
        WorkerPool.For(50, 2, i => Interlocked.Increment(ref after[i]));
        Assert.All(after, h => Assert.Equal(1, h));
    }

    [Fact]
    public void A_call_from_inside_a_body_runs_inline_and_completes()
    {
        var hits = new int[8 * 8];
        WorkerPool.For(8, 2, i => WorkerPool.For(8, 2, j => Interlocked.Increment(ref hits[i * 8 + j])));
        Assert.All(hits, h => Assert.Equal(1, h));
    }

    [Fact]
    public async Task Concurrent_callers_all_complete_with_every_index_once()
    {
        const int callers = 4, rounds = 200, count = 33;
        var totals = new long[callers];
        var tasks = Enumerable.Range(0, callers).Select(t => Task.Factory.StartNew(() =>
        {
            for (int r = 0; r < rounds; r++)
            {
                var hits = new int[count];
                WorkerPool.For(count, 2, i => Interlocked.Increment(ref hits[i]));
                if (hits.Any(h => h != 1)) throw new InvalidOperationException($"caller {t} round {r}: an index ran {hits.First(h => h != 1)} times");
                totals[t] += hits.Sum();
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.All(totals, s => Assert.Equal(rounds * count, s));
    }

    [Fact]
    public void Sleeping_workers_are_woken_and_Sgemm_on_the_pool_matches_the_reference()
    {
        // Workers block after SpinMicroseconds without a job; the next call must wake them (or run the indices itself).
        int m = 96, n = 80, k = 70;
        var (a, b, want) = Problem(3, m, n, k);
        Gemm.Threads = 2;
        for (int round = 0; round < 3; round++)
        {
            // Asleep now: a job whose two indices wait for each other needs the worker woken.
            Thread.Sleep(WorkerPool.SpinMicroseconds / 1000 + 20);
            using (var both = new CountdownEvent(2))
            {
                var met = new bool[2];
                WorkerPool.For(2, 2, i =>
                {
                    both.Signal();
                    met[i] = both.Wait(TimeSpan.FromSeconds(5));
                });
                Assert.True(met[0] && met[1], $"round {round}: the sleeping worker was not woken");
            }
            Thread.Sleep(WorkerPool.SpinMicroseconds / 1000 + 20);
            var c = new float[m * n];
            Gemm.Sgemm(m, n, k, a, 0, k, 1, b, 0, n, 1, c, 0, n, false);
            for (int i = 0; i < c.Length; i++) Assert.Equal(want[i], c[i], 1e-4f);
        }
    }

    [Theory]
    [InlineData(true, true, true)]
    [InlineData(true, false, false)]
    [InlineData(false, true, false)]
    public void Outside_graph_runs_only_calls_marked_large_use_the_pool(bool large, bool largeJobs, bool expectPool)
    {
        WorkerPool.Enabled = false;
        WorkerPool.LargeJobs = largeJobs;
        var names = new string?[2];
        using var both = new CountdownEvent(2);
        WorkerPool.For(2, 2, i =>
        {
            names[i] = Thread.CurrentThread.Name;
            both.Signal();
            Assert.True(both.Wait(TimeSpan.FromSeconds(5)), "the two indices did not run at the same time");
        }, large);
        bool onPool = names.Any(n => n?.StartsWith("Nabla worker", StringComparison.Ordinal) == true);
        Assert.Equal(expectPool, onPool);
    }

    [Theory]
    [InlineData(256, true)]
    [InlineData(255, false)]
    public void Sgemm_outside_graph_runs_uses_the_pool_from_2_to_the_26_and_matches_the_reference(int k, bool expectPool)
    {
        // 512·512·256 = 2^26, the threshold from which Gemm marks its split as large; 512·512·255 stays on Parallel.For.
        WorkerPool.Enabled = false;
        WorkerPool.LargeJobs = true;
        Gemm.Threads = 2;
        int m = 512, n = 512;
        var (a, b, want) = Problem(5, m, n, k);
        var c = new float[m * n];
        long jobs = WorkerPool.JobCount;
        Gemm.Sgemm(m, n, k, a, 0, k, 1, b, 0, n, 1, c, 0, n, false);
        // Without FMA (Gemm.UseFastPath off) the product is the single-threaded reference loop: no split, no job.
        Assert.Equal(expectPool && Gemm.UseFastPath ? jobs + 1 : jobs, WorkerPool.JobCount);
        for (int i = 0; i < c.Length; i++) Assert.Equal(want[i], c[i], 1e-3f);
    }

    [Theory]
    [InlineData(1024, 1024, true)]
    [InlineData(1024, 1023, false)]
    public void Gemv_outside_graph_runs_uses_the_pool_from_2_to_the_20_and_matches_the_reference(int n, int k, bool expectPool)
    {
        // A split one-row product of n·k ≥ 2^20 multiply-adds is marked large (the QKV projection of one token, 768·2304,
        // is); 1024·1023 stays on Parallel.For.
        WorkerPool.Enabled = false;
        WorkerPool.LargeJobs = true;
        Gemm.Threads = 2;
        var (a, b, want) = Problem(6, 1, n, k);
        var c = new float[n];
        long jobs = WorkerPool.JobCount;
        Gemm.Sgemm(1, n, k, a, 0, k, 1, b, 0, n, 1, c, 0, n, false);
        Assert.Equal(expectPool && Gemm.UseFastPath ? jobs + 1 : jobs, WorkerPool.JobCount);
        for (int i = 0; i < c.Length; i++) Assert.Equal(want[i], c[i], 1e-3f);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_large_call_that_finds_the_pool_taken_still_runs_on_two_threads(bool enabled)
    {
        // Inline (one thread) would leave index 0 waiting for index 1 until the timeout.
        WorkerPool.Enabled = enabled;
        WorkerPool.LargeJobs = true;
        var met = new bool[2];
        WorkerPool.For(2, 2, outer =>
        {
            if (outer != 0) return;
            using var both = new CountdownEvent(2);
            WorkerPool.For(2, 2, i =>
            {
                both.Signal();
                met[i] = both.Wait(TimeSpan.FromSeconds(5));
            }, large: true);
        }, large: true);
        Assert.True(met[0] && met[1], "the nested large call did not run its two indices at the same time");
    }

    static (float[] A, float[] B, float[] Want) Problem(int seed, int m, int n, int k)
    {
        var rng = new Random(seed);
        var a = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var b = Enumerable.Range(0, k * n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var want = new float[m * n];
        Gemm.Reference(m, n, k, a, 0, k, 1, b, 0, n, 1, want, 0, n, false);
        return (a, b, want);
    }
}
